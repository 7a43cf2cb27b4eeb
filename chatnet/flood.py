"""Flood control: a token bucket per connection (FLOOD_RATE lines a second, FLOOD_BURST
at once). The session asks it how many of the lines it read may be acted on now and
holds the rest, so a flooder is slowed, never cut off, and loses nothing."""

from __future__ import annotations

import time


class FloodBucket:
    """`rate` lines a second, `burst` at once (a token bucket)."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self, wanted: int) -> int:
        """How many of `wanted` lines may be read now (and takes them)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted

    def wait(self) -> float:
        """Seconds until the next line may be read."""
        return max(0.0, (1.0 - self.tokens) / self.rate)


def flood_bucket(rate: float, burst: int) -> FloodBucket | None:
    """A new connection's bucket (FLOOD_RATE, FLOOD_BURST); None when flood control is off."""
    return FloodBucket(rate, burst) if rate > 0 else None
