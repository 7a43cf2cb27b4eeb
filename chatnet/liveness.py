"""One timer for the liveness of every pinged session (IRC, JSON mode).

A session silent for PING_INTERVAL seconds is pinged, and dropped when PING_TIMEOUT
more pass without a word (`Session.check_alive` decides; this module only keeps time).
A timer per session costs about half a kilobyte under uvloop (its handle, a libuv
timer, the bound method): for ten thousand idle IRC clients, 5 MB. Here the sessions
wait in buckets of `tick` seconds (a quarter of the shorter of the two times), and one
timer walks the buckets that are due: a ping goes out up to a tick late, never early.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from chatnet.session import Session

MIN_TICK: Final = 0.01  # seconds: tests ping every few tens of milliseconds


class Pinger:
    def __init__(self, liveness: tuple[float, float] | None) -> None:
        shortest = min(liveness) if liveness is not None else 4.0
        self.tick = max(shortest / 4, MIN_TICK)
        self._due: dict[int, set[Session]] = {}  # bucket (time // tick) -> its sessions
        self._bucket: dict[Session, int] = {}  # and each session's bucket
        self._timer: asyncio.TimerHandle | None = None

    def __contains__(self, session: Session) -> bool:
        return session in self._bucket

    def __len__(self) -> int:
        return len(self._bucket)

    def watch(self, session: Session, delay: float) -> None:
        """Look at `session` again once `delay` seconds have passed (`check_alive`)."""
        loop = asyncio.get_running_loop()
        self.forget(session)
        bucket = math.ceil((loop.time() + delay) / self.tick)
        self._due.setdefault(bucket, set()).add(session)
        self._bucket[session] = bucket
        if self._timer is None:
            self._timer = loop.call_later(self.tick, self._walk)

    def forget(self, session: Session) -> None:
        """The session is gone (or looked at now): out of its bucket at once."""
        bucket = self._bucket.pop(session, None)
        if bucket is not None:
            waiting = self._due[bucket]
            waiting.discard(session)
            if not waiting:
                del self._due[bucket]

    def _walk(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        now = loop.time() / self.tick
        for bucket in sorted(b for b in self._due if b <= now):
            for session in self._due.pop(bucket):
                del self._bucket[session]
                delay = session.check_alive()
                if delay is not None:
                    self.watch(session, delay)
        if self._due and self._timer is None:
            self._timer = loop.call_later(self.tick, self._walk)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
        self._bucket.clear()
