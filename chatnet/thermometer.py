"""thermometer1: a subscription service broadcasting a simulated temperature.

The sensor is a bounded random walk (each reading a small step from the last, reflected
at the range's edges), so readings look like weather, not white noise. Subscriptions
live in the message API (`subscribers/subscribe/unsubscribe`), so they survive a restart
of the bot; the bot keeps a copy to broadcast from. Every reading carries offline-mail
hints, so the server keeps only the newest few for a subscriber who is away, and lets
them expire.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from chatnet.api_client import ApiClient
from chatnet.bot import Bot, Request, command, serve
from chatnet.config import Settings
from chatnet.errors import ApiRejected, StoreUnavailable
from chatnet.protocol import MessageType, format_datetime, utcnow

UNIT: Final = "°C"
# Readings faster than this would only flood subscribers (tests use 0.1 s).
MIN_INTERVAL: Final = 0.05


class Subscriptions(Protocol):
    """Where subscriptions are kept: the message API's subscription routes (ApiClient)."""

    async def subscribers(self, service: str) -> list[str]: ...
    async def subscribe(self, service: str, user: str) -> bool: ...
    async def unsubscribe(self, service: str, user: str) -> bool: ...


@dataclass
class Sensor:
    """A simulated thermometer: a random walk inside [low, high], to 0.1 degree."""

    low: float
    high: float
    step: float = 0.3
    rng: random.Random = field(default_factory=random.Random)
    value: float = 0.0
    seen_min: float | None = None
    seen_max: float | None = None
    readings: int = 0

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"empty range {self.low}..{self.high}")
        self.reboot()

    def reboot(self) -> None:
        """Start over: a fresh value in the middle half of the range, no history."""
        span = self.high - self.low
        self.value = round(self.rng.uniform(self.low + span / 4, self.high - span / 4), 1)
        self.seen_min = self.seen_max = None
        self.readings = 0

    def read(self) -> float:
        value = self.value + self.rng.uniform(-self.step, self.step)
        # Reflect at the edges: the walk stays inside without sticking to a bound.
        if value > self.high:
            value = 2 * self.high - value
        if value < self.low:
            value = 2 * self.low - value
        self.value = round(min(max(value, self.low), self.high), 1)
        self.readings += 1
        self.seen_min = self.value if self.seen_min is None else min(self.seen_min, self.value)
        self.seen_max = self.value if self.seen_max is None else max(self.seen_max, self.value)
        return self.value


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} {UNIT}"


def seconds(value: float) -> str:
    return f"{value:g} s"


def reading_frame_metadata(value: float, sensor: str, keep: int, ttl: int) -> dict[str, Any]:
    """What a subscriber's client gets beside the text, and the offline-mail caps."""
    return {"value": value, "unit": UNIT, "sensor": sensor, "mail": {"keep_latest": keep, "ttl_seconds": ttl}}


class Thermometer(Bot):
    """A subscription service broadcasting a simulated temperature."""

    description = "a thermometer. Subscribe to get a temperature reading every interval."

    def __init__(self, settings: Settings, subscriptions: Subscriptions, *, name: str | None = None, rng: random.Random | None = None) -> None:
        super().__init__(settings, name or settings.thermometer_name)
        self.store = subscriptions
        self.interval = max(settings.thermometer_interval, MIN_INTERVAL)
        if self.interval != settings.thermometer_interval:
            self.log.warning("interval %s s is too short; using %s s", settings.thermometer_interval, MIN_INTERVAL)
        self.sensor = Sensor(settings.thermometer_min, settings.thermometer_max, settings.thermometer_step, rng or random.Random())
        self.subscribed: set[str] = set()
        self.loaded = False  # the subscriber list has been read from the store
        self.last: tuple[float, str] | None = None  # (value, timestamp)

    # --- subscriptions ---------------------------------------------------------------

    async def load_subscribers(self) -> bool:
        """Read the subscriber list from the store; False (and keep the old list) when
        it can't be reached — the ticker tries again."""
        try:
            users = await self.store.subscribers(self.name)
        except (StoreUnavailable, ApiRejected) as exc:
            self.log.warning("cannot read subscriptions: %s", exc)
            return False
        self.subscribed = set(users)
        self.loaded = True
        self.log.info("%d subscriber(s)", len(self.subscribed))
        return True

    async def on_connected(self) -> None:
        await self.load_subscribers()

    # --- commands -------------------------------------------------------------------

    @command("subscribe", args=False)
    async def cmd_subscribe(self, req: Request) -> str:
        """Get a reading every interval (kept as mail while you are offline)."""
        try:
            created = await self.store.subscribe(self.name, req.sender)
        except (StoreUnavailable, ApiRejected):
            return "Sorry, I could not save your subscription right now. Please try again later."
        self.subscribed.add(req.sender)
        if not created:
            return f"You are already subscribed: a reading every {seconds(self.interval)}."
        return f"Subscribed to {self.name}: a reading every {seconds(self.interval)}. Send 'unsubscribe' to stop."

    @command("unsubscribe", args=False)
    async def cmd_unsubscribe(self, req: Request) -> str:
        """Stop the readings."""
        try:
            removed = await self.store.unsubscribe(self.name, req.sender)
        except (StoreUnavailable, ApiRejected):
            return "Sorry, I could not cancel your subscription right now. Please try again later."
        self.subscribed.discard(req.sender)
        if not removed:
            return "You were not subscribed."
        return f"Unsubscribed from {self.name}. No more readings."

    @command("range", args=False)
    async def cmd_range(self, req: Request) -> str:
        """The sensor's range and the lowest/highest reading since boot."""
        sensor = self.sensor
        return (
            f"Range {fmt(sensor.low)} to {fmt(sensor.high)}. "
            f"Since boot ({sensor.readings} readings): min {fmt(sensor.seen_min)}, max {fmt(sensor.seen_max)}."
        )

    @command("reboot", args=False)
    async def cmd_reboot(self, req: Request) -> str:
        """Restart the sensor and re-read the subscriptions."""
        self.sensor.reboot()
        self.last = None
        reloaded = await self.load_subscribers()
        note = "" if reloaded else " (subscriptions could not be re-read; using the ones I had)"
        return f"Rebooted the sensor: starting at {fmt(self.sensor.value)}, {len(self.subscribed)} subscriber(s){note}."

    @command("status", args=False)
    async def cmd_status(self, req: Request) -> str:
        """Interval, number of subscribers, last reading."""
        last = f"{fmt(self.last[0])} at {self.last[1]}" if self.last else "none yet"
        mine = "you are subscribed" if req.sender in self.subscribed else "you are not subscribed"
        return f"Interval {seconds(self.interval)}, {len(self.subscribed)} subscriber(s) ({mine}), last reading {last}."

    # --- broadcasting ---------------------------------------------------------------

    def broadcast(self) -> float:
        """Take one reading and queue it for every subscriber."""
        value = self.sensor.read()
        self.last = (value, format_datetime(utcnow()))
        metadata = reading_frame_metadata(value, self.name, self.settings.thermometer_keep, self.settings.thermometer_ttl)
        for user in sorted(self.subscribed):
            self.send(user, fmt(value), metadata, type=MessageType.SUBSCRIPTION)
        return value

    async def background(self) -> None:
        # A fixed schedule (start + k * interval) so readings don't drift, and no catching
        # up after an outage: missed ticks are skipped, not burst out.
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.interval
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            next_tick += self.interval
            if next_tick < loop.time():
                next_tick = loop.time() + self.interval
            if not self.connected.is_set():
                continue
            if not self.loaded:
                await self.load_subscribers()
            self.broadcast()


async def run_thermometer(settings: Settings) -> None:
    """The thermometer as a process: subscriptions through the API, until a signal."""
    async with ApiClient.from_settings(settings) as api:
        await serve(Thermometer(settings, api))
