"""Flood control: a token bucket per connection (FLOOD_RATE lines a second, FLOOD_BURST
at once). The session asks it how many of the lines it read may be acted on now and
holds the rest, so a flooder is slowed, never cut off, and loses nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial


class FloodBucket:
    """`rate` lines a second, `burst` at once: a token bucket, kept as the one instant
    it will be full again (`full_at`), so an idle connection's bucket is a single number.
    The tokens at `now` are `burst - (full_at - now) * rate`, never more than `burst`."""

    __slots__ = ("rate", "burst", "full_at")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.full_at = 0.0  # long ago: full

    def _tokens(self, now: float) -> float:
        return self.burst - max(0.0, self.full_at - now) * self.rate

    def take(self, wanted: int) -> int:
        """How many of `wanted` lines may be read now (and takes them)."""
        now = time.monotonic()
        granted = min(wanted, int(self._tokens(now)))
        if granted:
            self.full_at = max(self.full_at, now) + granted / self.rate
        return granted

    def wait(self) -> float:
        """Seconds until the next line may be read."""
        return max(0.0, (1.0 - self._tokens(time.monotonic())) / self.rate)


def flood_buckets(rate: float, burst: int) -> Callable[[], FloodBucket | None]:
    """How each new connection gets its bucket (FLOOD_RATE, FLOOD_BURST): all of them
    share the two numbers; None for each when flood control is off."""
    if rate <= 0:
        return lambda: None
    return partial(FloodBucket, float(rate), float(max(burst, 1)))
