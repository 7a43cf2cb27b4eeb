"""One timer for the liveness of every pinged session (IRC, JSON mode).

A session silent for PING_INTERVAL seconds is pinged, and dropped when PING_TIMEOUT
more pass without a word (`Session.check_alive` decides; this module only keeps time).
A timer per session costs about half a kilobyte under uvloop (its handle, a libuv
timer, the bound method): for ten thousand idle IRC clients, 5 MB. Here the sessions
wait in buckets of `tick` seconds (a quarter of the shorter of the two times), and one
timer walks the buckets that are due: a ping goes out up to a tick late, never early.
A bucket is a list, and each session holds the bucket it is in (`Session.ping_bucket`):
a set per bucket and a map from sessions to bucket numbers cost 80 to 130 bytes for
each idle IRC client, a list entry 8 (and the session's slot 8).
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from chatnet.session import Session

MIN_TICK: Final = 0.01  # seconds: tests ping every few tens of milliseconds


class PingBucket:
    """The sessions due at one tick. A session forgotten (closed, or moved to another
    bucket) stays in the list, no longer pointing here, and is skipped; once half the
    list is such, it is compacted, so a closed session is not kept alive for long."""

    __slots__ = ("sessions", "forgotten")

    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self.forgotten = 0


class Pinger:
    def __init__(self, liveness: tuple[float, float] | None) -> None:
        # (seconds of silence before a ping, seconds to answer it), for dialects that ping.
        self.liveness = liveness
        shortest = min(liveness) if liveness is not None else 4.0
        self.tick = max(shortest / 4, MIN_TICK)
        self._due: dict[int, PingBucket] = {}  # by number (time // tick)
        self._timer: asyncio.TimerHandle | None = None

    def __contains__(self, session: Session) -> bool:
        return session.ping_bucket is not None

    def __len__(self) -> int:
        return sum(session.ping_bucket is bucket for bucket in self._due.values() for session in bucket.sessions)

    def watch(self, session: Session, delay: float) -> None:
        """Look at `session` again once `delay` seconds have passed (`check_alive`)."""
        loop = asyncio.get_running_loop()
        number = math.ceil((loop.time() + delay) / self.tick)
        bucket = self._due.get(number)
        if bucket is None:
            bucket = self._due[number] = PingBucket()
        elif session.ping_bucket is bucket:
            return
        self.forget(session)
        bucket.sessions.append(session)
        session.ping_bucket = bucket
        if self._timer is None:
            self._timer = loop.call_later(self.tick, self._walk)

    def forget(self, session: Session) -> None:
        """The session is gone (or is to be looked at another time)."""
        bucket = session.ping_bucket
        if bucket is None:
            return
        session.ping_bucket = None
        bucket.forgotten += 1
        if 2 * bucket.forgotten > len(bucket.sessions):
            bucket.sessions = [other for other in bucket.sessions if other.ping_bucket is bucket]
            bucket.forgotten = 0

    def _walk(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        now = loop.time() / self.tick
        for number in sorted(n for n in self._due if n <= now):
            bucket = self._due.pop(number)
            for session in bucket.sessions:
                if session.ping_bucket is bucket:
                    session.ping_bucket = None
                    delay = session.check_alive()
                    if delay is not None:
                        self.watch(session, delay)
        if self._due and self._timer is None:
            self._timer = loop.call_later(self.tick, self._walk)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for bucket in self._due.values():
            for session in bucket.sessions:
                session.ping_bucket = None
        self._due.clear()
