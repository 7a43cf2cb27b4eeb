"""thermometer1: a subscription service broadcasting a simulated temperature.

The sensor is a bounded random walk (each reading a small step from the last, reflected
at the range's edges), so readings look like weather, not white noise. Subscriptions
live in the message API (`subscribers/subscribe/unsubscribe`), so they survive a restart
of the bot; the bot keeps a copy to broadcast from. Every reading carries offline-mail
hints, so the server keeps only the newest few for a subscriber who is away, and lets
them expire.

A room's owner may subscribe the room (`subscribe #hiking`, directly or in the room):
the thermometer joins it (a private room must invite it first) and posts its readings
there, where the room's history keeps them. Room subscriptions are kept in the bot's
state (`rooms`), checked at every login (a room the bot was removed from meanwhile is
dropped) and end when the owner unsubscribes the room or the bot is kicked.
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
from chatnet.protocol import MessageType, format_datetime, is_room, utcnow

UNIT: Final = "°C"
# Readings faster than this would only flood subscribers (tests use 0.1 s).
MIN_INTERVAL: Final = 0.05
# The bot's state key for its room subscriptions. The subscription routes take a
# person's name only (chatnet.api: `user` a PathName); once they take a '#room' too,
# room subscriptions can live there beside the users'.
ROOMS_KEY: Final = "rooms"


class Subscriptions(Protocol):
    """Where subscriptions are kept, and rooms looked up: the message API (ApiClient)."""

    async def subscribers(self, service: str) -> list[str]: ...
    async def subscribe(self, service: str, user: str) -> bool: ...
    async def unsubscribe(self, service: str, user: str) -> bool: ...
    async def get_state(self, owner: str, key: str) -> Any: ...
    async def put_state(self, owner: str, key: str, value: Any) -> None: ...
    async def room(self, room: str) -> dict[str, Any] | None: ...


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
        self.rooms: dict[str, str] = {}  # subscribed rooms: key -> name as spelled
        self.rooms_loaded = False  # the room subscriptions have been read from the store
        self.joining: set[str] = set()  # rooms (keys) subscribed, the bot's `!join` not answered yet
        self._rooms_saved = asyncio.Lock()  # one write at a time: the last one written is the newest
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
        return await self.load_rooms()

    async def load_rooms(self) -> bool:
        """Read the room subscriptions; False (and keep the old ones) when they can't be read."""
        try:
            value = await self.store.get_state(self.name, ROOMS_KEY)
        except (StoreUnavailable, ApiRejected) as exc:
            self.log.warning("cannot read the room subscriptions: %s", exc)
            return False
        names = [name for name in value if isinstance(name, str) and is_room(name)] if isinstance(value, list) else []
        self.rooms = {name.lower(): name for name in names}
        self.rooms_loaded = True
        if self.rooms:
            self.log.info("%d room subscription(s)", len(self.rooms))
        return True

    async def save_rooms(self) -> bool:
        async with self._rooms_saved:
            try:
                await self.store.put_state(self.name, ROOMS_KEY, sorted(self.rooms.values()))
            except (StoreUnavailable, ApiRejected) as exc:
                self.log.warning("cannot save the room subscriptions: %s", exc)
                return False
        return True

    async def on_connected(self) -> None:
        self.joining.clear()  # at login the server puts the bot back in all its rooms
        await self.load_subscribers()
        await self.check_rooms()

    async def check_rooms(self) -> None:
        """Drop the room subscriptions of rooms the bot is no longer in (removed while
        it was away, or the room is gone)."""
        dropped = False
        for key, name in list(self.rooms.items()):
            try:
                info = await self.store.room(name)
            except (StoreUnavailable, ApiRejected) as exc:
                self.log.warning("cannot look up %s: %s", name, exc)
                continue
            if info is None or not _is_member(info, self.name):
                self.log.info("no longer in %s: its subscription ends", name)
                self.rooms.pop(key, None)
                dropped = True
        if dropped:
            await self.save_rooms()

    def on_joined(self, room: str) -> None:
        self.joining.discard(room.lower())

    def on_left(self, room: str, by: str | None) -> None:
        key = room.lower()
        self.joining.discard(key)
        if self.rooms.pop(key, None) is not None:
            self.log.info("out of %s: its subscription ends", room)
            self.spawn(self.save_rooms(), "save-rooms")

    # --- commands -------------------------------------------------------------------

    @command("subscribe [#room]", args=True)
    async def cmd_subscribe(self, req: Request) -> str:
        """Get a reading every interval (kept as mail while you are offline); a room's owner: readings in the room."""
        if req.args:
            return await self.subscribe_room(req, req.args)
        try:
            created = await self.store.subscribe(self.name, req.sender)
        except (StoreUnavailable, ApiRejected):
            return "Sorry, I could not save your subscription right now. Please try again later."
        self.subscribed.add(req.sender)
        if not created:
            return f"You are already subscribed: a reading every {seconds(self.interval)}."
        return f"Subscribed to {self.name}: a reading every {seconds(self.interval)}. Send 'unsubscribe' to stop."

    @command("unsubscribe [#room]", args=True)
    async def cmd_unsubscribe(self, req: Request) -> str:
        """Stop the readings (a room's owner: in the room)."""
        if req.args:
            return await self.unsubscribe_room(req, req.args)
        try:
            removed = await self.store.unsubscribe(self.name, req.sender)
        except (StoreUnavailable, ApiRejected):
            return "Sorry, I could not cancel your subscription right now. Please try again later."
        self.subscribed.discard(req.sender)
        if not removed:
            return "You were not subscribed."
        return f"Unsubscribed from {self.name}. No more readings."

    async def owned_room(self, req: Request, arg: str) -> dict[str, Any] | str:
        """The room `arg` names if `req.sender` owns it; otherwise why not, as the answer."""
        room = arg.split()[0]
        if not is_room(room):
            return "Write 'subscribe' for yourself, or 'subscribe #room' for a room you own."
        try:
            info = await self.store.room(room)
        except (StoreUnavailable, ApiRejected):
            return f"Sorry, I could not look up {room} right now. Please try again later."
        if info is None or (info.get("private") and not _is_member(info, req.sender)):
            return f"There is no room {room}."  # a private room is nobody else's business
        if str(info.get("owner", "")).lower() != req.sender.lower():
            return f"Only the owner of {info['name']} can subscribe it to readings or unsubscribe it."
        return info

    async def subscribe_room(self, req: Request, arg: str) -> str:
        info = await self.owned_room(req, arg)
        if isinstance(info, str):
            return info
        name: str = info["name"]
        key = name.lower()
        member = _is_member(info, self.name)
        if not member and info.get("private"):
            return f"{name} is private: invite me first ('!invite {name} {self.name}'), then subscribe it again."
        if not self.rooms_loaded and not await self.load_rooms():
            return "Sorry, I could not save the room's subscription right now. Please try again later."
        if key in self.rooms:
            return f"{name} is subscribed already: a reading every {seconds(self.interval)}."
        self.rooms[key] = name
        if not await self.save_rooms():
            self.rooms.pop(key, None)
            return "Sorry, I could not save the room's subscription right now. Please try again later."
        if not member:
            self.joining.add(key)  # readings wait for the server's `joined`
            self.send_command("join", name)
        return f"Subscribed {name} to {self.name}: a reading there every {seconds(self.interval)}. 'unsubscribe {name}' stops it."

    async def unsubscribe_room(self, req: Request, arg: str) -> str:
        info = await self.owned_room(req, arg)
        if isinstance(info, str):
            return info
        name: str = info["name"]
        if not self.rooms_loaded and not await self.load_rooms():
            return "Sorry, I could not cancel the room's subscription right now. Please try again later."
        if self.rooms.pop(name.lower(), None) is None:
            return f"{name} was not subscribed."
        if not await self.save_rooms():
            self.rooms[name.lower()] = name
            return "Sorry, I could not cancel the room's subscription right now. Please try again later."
        return f"Unsubscribed {name} from {self.name}. No more readings there."

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
        if not (self.loaded and self.rooms_loaded):  # the login's load failed (the store was away): read them now
            await self.load_subscribers()
        last = f"{fmt(self.last[0])} at {self.last[1]}" if self.last else "none yet"
        mine = "you are subscribed" if req.sender in self.subscribed else "you are not subscribed"
        rooms = f", {len(self.rooms)} room(s)" if self.rooms else ""
        return f"Interval {seconds(self.interval)}, {len(self.subscribed)} subscriber(s) ({mine}){rooms}, last reading {last}."

    # --- broadcasting ---------------------------------------------------------------

    def broadcast(self) -> float:
        """Take one reading and queue it for every subscriber and subscribed room."""
        value = self.sensor.read()
        self.last = (value, format_datetime(utcnow()))
        metadata = reading_frame_metadata(value, self.name, self.settings.thermometer_keep, self.settings.thermometer_ttl)
        for user in sorted(self.subscribed):
            self.send(user, fmt(value), metadata, type=MessageType.SUBSCRIPTION)
        in_room = {k: v for k, v in metadata.items() if k != "mail"}  # a room keeps its history, not mail
        for key, room in sorted(self.rooms.items()):
            if key not in self.joining:
                self.send(room, fmt(value), in_room, type=MessageType.SUBSCRIPTION)
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
            elif not self.rooms_loaded:
                await self.load_rooms()
            self.broadcast()


def _is_member(info: dict[str, Any], name: str) -> bool:
    return name.lower() in {str(member).lower() for member in info.get("member_names") or ()}


async def run_thermometer(settings: Settings) -> None:
    """The thermometer as a process: subscriptions through the API, until a signal."""
    async with ApiClient.from_settings(settings) as api:
        await serve(Thermometer(settings, api))
