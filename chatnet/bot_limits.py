"""How much a bot answers: a sliding-window rate limit per user, and a reply budget per
room (past it the room hears "busy" once a window, then nothing). Both forget the keys
that went idle, so everyone a bot ever heard from does not cost memory for ever."""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from typing import Final

# The window of a room's reply budget, seconds.
ROOM_WINDOW: Final = 60.0
# Keys a rate limiter keeps before it forgets the idle ones.
KEYS_BEFORE_SWEEP: Final = 10_000


class RateLimiter:
    """At most `limit` events per `window` seconds for each key (a sliding window)."""

    def __init__(self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, deque[float]] = {}
        self._sweep_at = KEYS_BEFORE_SWEEP  # past this many keys, the idle ones are forgotten

    def allow(self, key: str) -> bool:
        now = self.clock()
        if len(self._events) >= self._sweep_at:
            self.forget_idle(now)
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True

    def forget_idle(self, now: float) -> None:
        """Drop the keys with nothing in the window (every user ever seen must not cost
        memory for ever); the next sweep waits until the map has doubled."""
        horizon = now - self.window
        self._events = {key: events for key, events in self._events.items() if events and events[-1] > horizon}
        self._sweep_at = max(KEYS_BEFORE_SWEEP, 2 * len(self._events))


class Budget(enum.Enum):
    """What a room's budget says about one more request."""

    REPLY = "reply"  # within the budget: answer it
    BUSY = "busy"  # past it: say so (once a window)
    QUIET = "quiet"  # past it, and said so already: nothing


class RoomBudget:
    """At most `limit` replies per room per `window` seconds; past it one "busy" line
    per window, then silence. Apart from the per-user rate limit: a room with many
    people is still one room."""

    def __init__(self, limit: int, window: float = ROOM_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._replies = RateLimiter(limit, window, clock)
        self._warned: dict[str, float] = {}  # room key -> when "busy" was said

    def take(self, room: str) -> Budget:
        key = room.lower()
        if self._replies.allow(key):
            return Budget.REPLY
        now = self.clock()
        warned = self._warned.get(key)
        if warned is not None and now - warned < self.window:
            return Budget.QUIET
        if len(self._warned) >= KEYS_BEFORE_SWEEP:
            self._warned = {room: when for room, when in self._warned.items() if now - when < self.window}
        self._warned[key] = now
        return Budget.BUSY
