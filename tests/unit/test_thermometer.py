"""The thermometer's sensor and commands, with subscriptions in memory."""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import pytest

from chatnet.config import Settings
from chatnet.errors import StoreUnavailable
from chatnet.message import Message
from chatnet.protocol import Event, MessageType
from chatnet.thermometer import ROOMS_KEY, Sensor, Thermometer
from tests.memory_store import MemoryStore


class RoomStore(MemoryStore):
    """Subscriptions and state in memory, and rooms as the message API describes them (`room`)."""

    def __init__(self) -> None:
        super().__init__()
        self.rooms: dict[str, dict[str, Any]] = {}

    def add_room(self, name: str, owner: str, *members: str, private: bool = False) -> None:
        names = [owner, *members]
        self.rooms[name.lower()] = {"name": name, "owner": owner, "private": private, "topic": None, "members": len(names), "member_names": names}

    async def room(self, room: str) -> dict[str, Any] | None:
        return self.rooms.get(room.lower())


class DownStore(RoomStore):
    """A subscription store that can't be reached."""

    async def subscribers(self, service: str) -> list[str]:
        raise StoreUnavailable("API down")

    async def subscribe(self, service: str, user: str) -> bool:
        raise StoreUnavailable("API down")


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, thermometer_name="thermo", thermometer_interval=5, thermometer_min=10, thermometer_max=20, **overrides)


def sent(bot: Thermometer) -> list[dict[str, Any]]:
    frames = []
    while not bot.outbox.empty():
        frames.append(bot.outbox.get_nowait())
    return frames


async def ask(bot: Thermometer, text: str, sender: str = "alice") -> str:
    await bot.receive(Message(sender=sender, destination=bot.name, message=text))
    await bot.drain()
    [frame] = sent(bot)
    assert frame["destination"] == sender
    return frame["message"]


@pytest.fixture
def store() -> RoomStore:
    return RoomStore()


@pytest.fixture
def thermo(store: RoomStore) -> Thermometer:
    return Thermometer(settings(), store, rng=random.Random(7))


def test_sensor_is_a_bounded_random_walk() -> None:
    """Readings stay in range and move by at most one step: weather, not white noise."""
    sensor = Sensor(10.0, 12.0, step=0.5, rng=random.Random(1))
    values = [sensor.value] + [sensor.read() for _ in range(2000)]
    assert all(10.0 <= v <= 12.0 for v in values)
    assert all(abs(b - a) <= 0.5 + 0.1 for a, b in pairwise(values))
    assert len(set(values)) > 10  # it does move
    assert min(values) < 10.5 and max(values) > 11.5  # and wanders across the range


def test_sensor_tracks_min_max_and_reboot_resets() -> None:
    """min/max since boot follow the readings; a reboot forgets them."""
    sensor = Sensor(0.0, 30.0, rng=random.Random(3))
    values = [sensor.read() for _ in range(50)]
    assert (sensor.seen_min, sensor.seen_max, sensor.readings) == (min(values), max(values), 50)
    sensor.reboot()
    assert (sensor.seen_min, sensor.seen_max, sensor.readings) == (None, None, 0)


def test_sensor_rejects_an_empty_range() -> None:
    """A range whose minimum is not below its maximum is a configuration error."""
    with pytest.raises(ValueError):
        Sensor(5.0, 5.0)


async def test_subscribe_is_stored_and_readings_reach_subscribers(thermo: Thermometer, store: RoomStore) -> None:
    """subscribe keeps the user in the store; each broadcast sends every subscriber a subscription frame."""
    assert "Subscribed to thermo" in await ask(thermo, "subscribe", "alice")
    assert "already subscribed" in await ask(thermo, "subscribe", "alice")
    await ask(thermo, "subscribe", "bob")
    assert await store.subscribers("thermo") == ["alice", "bob"]
    value = thermo.broadcast()
    frames = sent(thermo)
    assert [f["destination"] for f in frames] == ["alice", "bob"]
    for frame in frames:
        assert frame["type"] == "subscription"
        assert frame["message"] == f"{value:.1f} °C"
        meta = frame["metadata"]
        assert (meta["value"], meta["unit"], meta["sensor"]) == (value, "°C", "thermo")
        assert meta["mail"] == {"keep_latest": 20, "ttl_seconds": 86400}


async def test_unsubscribe_stops_readings(thermo: Thermometer, store: RoomStore) -> None:
    """After unsubscribe the user gets no more readings; a second unsubscribe says so."""
    await ask(thermo, "subscribe")
    assert "Unsubscribed" in await ask(thermo, "unsubscribe")
    assert "were not subscribed" in await ask(thermo, "unsubscribe")
    thermo.broadcast()
    assert sent(thermo) == []
    assert await store.subscribers("thermo") == []


async def test_subscriptions_survive_a_new_bot(store: RoomStore) -> None:
    """A new thermometer over the same store broadcasts to the earlier subscribers."""
    first = Thermometer(settings(), store)
    await ask(first, "subscribe", "carol")
    second = Thermometer(settings(), store)
    await second.on_connected()
    second.broadcast()
    assert [f["destination"] for f in sent(second)] == ["carol"]


async def test_range_reports_bounds_and_seen_extremes(thermo: Thermometer) -> None:
    """range gives the configured range and the min/max of the readings so far."""
    values = [thermo.broadcast() for _ in range(5)]
    text = await ask(thermo, "range")
    assert "Range 10.0 °C to 20.0 °C" in text
    assert f"min {min(values):.1f} °C" in text and f"max {max(values):.1f} °C" in text
    assert "(5 readings)" in text


async def test_reboot_restarts_sensor_and_rereads_subscriptions(thermo: Thermometer, store: RoomStore) -> None:
    """reboot clears the sensor's history and picks up subscriptions added elsewhere."""
    thermo.broadcast()
    await store.subscribe("thermo", "dave")
    text = await ask(thermo, "reboot")
    assert text.startswith("Rebooted the sensor") and "1 subscriber(s)" in text
    assert thermo.sensor.readings == 0
    assert "(0 readings)" in await ask(thermo, "range")


async def test_status_tells_interval_subscribers_and_last_reading(thermo: Thermometer) -> None:
    """status reports the interval, the number of subscribers and the last reading."""
    assert "last reading none yet" in await ask(thermo, "status")
    await ask(thermo, "subscribe")
    value = thermo.broadcast()
    sent(thermo)
    text = await ask(thermo, "status")
    assert "Interval 5 s" in text and "1 subscriber(s) (you are subscribed)" in text
    assert f"last reading {value:.1f} °C" in text


async def test_help_lists_the_commands(thermo: Thermometer) -> None:
    """help names every thermometer command."""
    text = await ask(thermo, "help")
    for word in ("subscribe", "unsubscribe", "reboot", "range", "status", "help"):
        assert f"  {word}" in text


async def test_store_down_gives_a_plain_answer_and_no_false_promise() -> None:
    """When subscriptions can't be saved the user is told so, not told they are subscribed."""
    thermo = Thermometer(settings(), DownStore())
    assert not await thermo.load_subscribers()
    text = await ask(thermo, "subscribe")
    assert text.startswith("Sorry, I could not save your subscription")
    assert thermo.subscribed == set()


async def test_subscribe_trusts_the_store_over_its_own_copy(store: RoomStore) -> None:
    """A user the store already has is told so, even by a bot that has not read the list yet."""
    await store.subscribe("thermo", "alice")
    thermo = Thermometer(settings(), store)
    assert "already subscribed" in await ask(thermo, "subscribe", "alice")


# --- rooms ------------------------------------------------------------------------------


@pytest.fixture
def rooms() -> RoomStore:
    store = RoomStore()
    store.add_room("#hiking", "alice", "bob")
    store.add_room("#secret", "alice", "bob", private=True)
    return store


def joined(room: str) -> Message:
    return Message(sender="server", destination="thermo", message=f"Joined {room}", type=MessageType.NOTIFICATION, metadata={"event": Event.JOINED, "room": room})


def left(room: str, by: str) -> Message:
    metadata = {"event": Event.LEFT, "room": room, "by": by}
    return Message(sender="server", destination="thermo", message=f"removed from {room}", type=MessageType.NOTIFICATION, metadata=metadata)


async def test_the_owner_subscribes_a_room_the_bot_joins_and_posts_there(rooms: RoomStore) -> None:
    """`subscribe #hiking` from its owner: the bot joins (`!join`), and once in, each reading goes to the room as a subscription frame."""
    thermo = Thermometer(settings(), rooms, rng=random.Random(1))
    await thermo.receive(Message(sender="alice", destination="thermo", message="subscribe #Hiking"))
    await thermo.drain()
    command, answer = sent(thermo)
    assert command == {"type": "command", "message": "!join #hiking"}
    assert answer["destination"] == "alice" and answer["message"].startswith("Subscribed #hiking to thermo")
    assert rooms.state[("thermo", ROOMS_KEY)] == ["#hiking"]
    thermo.broadcast()
    assert sent(thermo) == []  # not in the room yet: its readings would be refused
    await thermo.receive(joined("#hiking"))
    value = thermo.broadcast()
    [frame] = sent(thermo)
    assert (frame["destination"], frame["type"], frame["message"]) == ("#hiking", "subscription", f"{value:.1f} °C")
    assert frame["metadata"] == {"value": value, "unit": "°C", "sensor": "thermo", "bot": "thermo"}  # no mail hints: a room keeps history
    assert "1 room(s)" in await ask(thermo, "status")


async def test_a_room_subscription_asked_in_the_room_is_answered_there(rooms: RoomStore) -> None:
    """`@thermo subscribe #hiking` in the room, by its owner, with the bot a member already: answered in the room, no join needed."""
    rooms.rooms["#hiking"]["member_names"].append("thermo")
    thermo = Thermometer(settings(), rooms)
    await thermo.receive(Message(sender="alice", destination="#hiking", message="@thermo subscribe #hiking"))
    await thermo.drain()
    [answer] = sent(thermo)
    assert answer["destination"] == "#hiking" and answer["message"].startswith("alice: Subscribed #hiking to thermo")
    thermo.broadcast()
    assert [f["destination"] for f in sent(thermo)] == ["#hiking"]
    assert "already" in await ask(thermo, "subscribe #hiking")


@pytest.mark.parametrize(
    ("sender", "text", "expected"),
    [
        ("bob", "subscribe #hiking", "Only the owner of #hiking can subscribe it"),
        ("bob", "unsubscribe #hiking", "Only the owner of #hiking can subscribe it"),
        ("carol", "subscribe #secret", "There is no room #secret."),  # not a member of the private room
        ("alice", "subscribe #nowhere", "There is no room #nowhere."),
        ("alice", "subscribe hiking", "Write 'subscribe' for yourself, or 'subscribe #room'"),
        ("alice", "subscribe #secret", "#secret is private: invite me first ('!invite #secret thermo')"),
    ],
)
async def test_room_subscriptions_are_refused_plainly(rooms: RoomStore, sender: str, text: str, expected: str) -> None:
    """Non-owners, unknown or hidden rooms, a non-room, and a private room the bot was not invited to get a clear refusal."""
    thermo = Thermometer(settings(), rooms)
    assert (await ask(thermo, text, sender)).startswith(expected)
    assert ("thermo", ROOMS_KEY) not in rooms.state and thermo.rooms == {}


async def test_an_invited_private_room_can_be_subscribed(rooms: RoomStore) -> None:
    """Once the bot is a member of a private room (invited, joined), its owner may subscribe it."""
    rooms.rooms["#secret"]["member_names"].append("thermo")
    thermo = Thermometer(settings(), rooms)
    assert (await ask(thermo, "subscribe #secret")).startswith("Subscribed #secret")
    thermo.broadcast()
    assert [f["destination"] for f in sent(thermo)] == ["#secret"]


async def test_the_owner_unsubscribes_a_room(rooms: RoomStore) -> None:
    """`unsubscribe #hiking` from its owner stops the readings there, and is kept."""
    rooms.rooms["#hiking"]["member_names"].append("thermo")
    thermo = Thermometer(settings(), rooms)
    await ask(thermo, "subscribe #hiking")
    assert (await ask(thermo, "unsubscribe #hiking")).startswith("Unsubscribed #hiking")
    assert "was not subscribed" in await ask(thermo, "unsubscribe #hiking")
    thermo.broadcast()
    assert sent(thermo) == [] and rooms.state[("thermo", ROOMS_KEY)] == []


async def test_room_subscriptions_survive_a_new_bot_unless_it_was_removed(rooms: RoomStore) -> None:
    """A new thermometer posts to the rooms subscribed before; one it was removed from meanwhile is dropped."""
    for room in ("#hiking", "#secret"):
        rooms.rooms[room]["member_names"].append("thermo")
    first = Thermometer(settings(), rooms)
    await ask(first, "subscribe #hiking")
    await ask(first, "subscribe #secret")
    rooms.rooms["#secret"]["member_names"].remove("thermo")  # kicked while the bot was away
    second = Thermometer(settings(), rooms)
    await second.on_connected()
    second.broadcast()
    assert [f["destination"] for f in sent(second)] == ["#hiking"]
    assert rooms.state[("thermo", ROOMS_KEY)] == ["#hiking"]


async def test_kicked_from_a_room_its_subscription_ends(rooms: RoomStore) -> None:
    """A `left` notice (the owner kicked the bot) ends the room's readings, and the store forgets it."""
    rooms.rooms["#hiking"]["member_names"].append("thermo")
    thermo = Thermometer(settings(), rooms)
    await ask(thermo, "subscribe #hiking")
    await thermo.receive(left("#hiking", "alice"))
    await thermo.drain()
    thermo.broadcast()
    assert sent(thermo) == [] and rooms.state[("thermo", ROOMS_KEY)] == []


async def test_room_subscription_store_down_gives_a_plain_answer() -> None:
    """When the room subscriptions can't be read or saved, the owner is told so, and nothing is promised."""
    store = DownStore()
    store.add_room("#hiking", "alice", "thermo")

    async def down(owner: str, key: str, value: Any = None) -> Any:
        raise StoreUnavailable("API down")

    store.get_state = down  # type: ignore[method-assign]
    thermo = Thermometer(settings(), store)
    assert (await ask(thermo, "subscribe #hiking")).startswith("Sorry, I could not save the room's subscription")
    assert thermo.rooms == {}
