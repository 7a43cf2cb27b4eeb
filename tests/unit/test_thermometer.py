"""The thermometer's sensor and commands, with subscriptions in memory."""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import pytest

from chatnet.config import Settings
from chatnet.errors import StoreUnavailable
from chatnet.protocol import Message
from chatnet.thermometer import Sensor, Thermometer
from tests.memory_store import MemoryStore


class DownStore(MemoryStore):
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
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def thermo(store: MemoryStore) -> Thermometer:
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


async def test_subscribe_is_stored_and_readings_reach_subscribers(thermo: Thermometer, store: MemoryStore) -> None:
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


async def test_unsubscribe_stops_readings(thermo: Thermometer, store: MemoryStore) -> None:
    """After unsubscribe the user gets no more readings; a second unsubscribe says so."""
    await ask(thermo, "subscribe")
    assert "Unsubscribed" in await ask(thermo, "unsubscribe")
    assert "were not subscribed" in await ask(thermo, "unsubscribe")
    thermo.broadcast()
    assert sent(thermo) == []
    assert await store.subscribers("thermo") == []


async def test_subscriptions_survive_a_new_bot(store: MemoryStore) -> None:
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


async def test_reboot_restarts_sensor_and_rereads_subscriptions(thermo: Thermometer, store: MemoryStore) -> None:
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


async def test_subscribe_trusts_the_store_over_its_own_copy(store: MemoryStore) -> None:
    """A user the store already has is told so, even by a bot that has not read the list yet."""
    await store.subscribe("thermo", "alice")
    thermo = Thermometer(settings(), store)
    assert "already subscribed" in await ask(thermo, "subscribe", "alice")
