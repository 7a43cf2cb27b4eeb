"""The thermometer bot on a real network: subscriptions, readings, commands, restarts."""

from __future__ import annotations

import re
import statistics

import pytest

from chatnet.api_client import ApiClient
from chatnet.message import Message
from chatnet.protocol import MessageType
from tests.support import JsonClient, Network, eventually

NAME = "thermo"
INTERVAL = 0.3


def is_reading(message: Message) -> bool:
    return message.type == MessageType.SUBSCRIPTION and message.sender == NAME


def reply_from_bot(message: Message) -> bool:
    return message.type == MessageType.CHAT and message.sender == NAME


def start_thermometer(net: Network, interval: float = INTERVAL, **env: str) -> None:
    net.start_bot(NAME, "thermometer.py", THERMOMETER_NAME=NAME, THERMOMETER_INTERVAL=str(interval),
                  THERMOMETER_MIN="15", THERMOMETER_MAX="25", **env)  # fmt: skip


async def ask(client: JsonClient, text: str) -> str:
    await client.send(NAME, text)
    return (await client.expect(reply_from_bot)).message


async def readings(client: JsonClient, count: int) -> list[Message]:
    return [await client.expect(is_reading) for _ in range(count)]


@pytest.fixture
def thermo(chat: Network) -> Network:
    start_thermometer(chat)
    return chat


async def test_subscribe_brings_readings_at_the_interval(thermo: Network) -> None:
    """After subscribe, readings arrive as subscription frames with value and unit, one per interval."""
    alice = await thermo.json_client("alice")
    assert (await ask(alice, "subscribe")).startswith(f"Subscribed to {NAME}")
    got = await readings(alice, 6)
    for reading in got:
        meta = reading.metadata
        assert reading.message == f"{meta['value']:.1f} °C"
        assert meta["unit"] == "°C" and meta["sensor"] == NAME and 15 <= meta["value"] <= 25
    values = [r.metadata["value"] for r in got]
    assert all(abs(b - a) <= 0.4 for a, b in zip(values, values[1:], strict=False))  # a walk, not noise
    gaps = [(b.timestamp - a.timestamp).total_seconds() for a, b in zip(got, got[1:], strict=False)]
    assert INTERVAL / 2 <= statistics.mean(gaps) <= INTERVAL * 3
    await alice.close()


async def test_text_client_subscribes_and_reads_lines(thermo: Network) -> None:
    """A netcat-style user types `thermo: subscribe` and sees readings as chat lines."""
    bob = await thermo.text_client("bob")
    await bob.send(f"{NAME}: subscribe")
    await bob.expect(f"[{NAME}] Subscribed to {NAME}")
    line = await bob.expect(lambda text: f"[{NAME}]" in text and text.endswith("°C"))
    assert float(line.rsplit(" ", 2)[-2]) >= 15
    await bob.close()


async def test_unsubscribe_stops_readings(thermo: Network) -> None:
    """Once unsubscribe is answered, no further reading arrives."""
    alice = await thermo.json_client("alice")
    await ask(alice, "subscribe")
    await readings(alice, 2)
    assert (await ask(alice, "unsubscribe")).startswith("Unsubscribed")
    # A few intervals of nothing, then a marker through the bot: its answer must be the
    # very next frame, so a reading sent late would be seen before it.
    later = await alice.quiet(INTERVAL * 4)
    await alice.send(NAME, "status")
    answer = await alice.next()
    assert later == [] and reply_from_bot(answer), [*later, answer]
    assert "you are not subscribed" in answer.message
    await alice.close()


async def test_range_status_reboot_and_help_answer(thermo: Network) -> None:
    """range, status, reboot and help each get a plain answer."""
    alice = await thermo.json_client("alice")
    await ask(alice, "subscribe")
    await readings(alice, 2)
    rng = await ask(alice, "range")
    assert rng.startswith("Range 15.0 °C to 25.0 °C. Since boot (") and "min " in rng and "max " in rng
    status = await ask(alice, "status")
    assert f"Interval {INTERVAL:g} s, 1 subscriber(s) (you are subscribed), last reading " in status
    reboot = await ask(alice, "reboot")
    assert reboot.startswith("Rebooted the sensor: starting at ") and "1 subscriber(s)" in reboot
    assert (await ask(alice, "help")).count("\n") >= 6
    assert await ask(alice, "dance") == "Unknown command 'dance'. Try 'help'."
    await readings(alice, 1)  # still broadcasting after the reboot
    await alice.close()


async def test_subscriptions_survive_a_bot_restart(thermo: Network) -> None:
    """A restarted thermometer keeps sending to the users who subscribed before."""
    alice = await thermo.json_client("alice")
    await ask(alice, "subscribe")
    await readings(alice, 1)
    thermo.stop(NAME)
    await alice.expect(lambda m: m.metadata.get("event") == "presence" and m.metadata.get("presence") == "offline" and m.metadata.get("user") == NAME)
    start_thermometer(thermo)
    await alice.expect(lambda m: m.metadata.get("event") == "presence" and m.metadata.get("presence") == "online" and m.metadata.get("user") == NAME)
    await readings(alice, 2)
    assert "you are subscribed" in await ask(alice, "status")
    await alice.close()


async def test_offline_subscriber_gets_capped_stored_readings(chat: Network) -> None:
    """A subscriber who is away finds at most THERMOMETER_KEEP readings waiting, as stored mail."""
    start_thermometer(chat, interval=0.1, THERMOMETER_KEEP="3")
    watcher = await chat.json_client("watcher")
    await ask(watcher, "subscribe")
    dora = await chat.text_client("dora")
    await dora.send(f"{NAME}: subscribe")
    await dora.expect(f"[{NAME}] Subscribed")
    await dora.close()
    await readings(watcher, 12)  # plenty of readings went out while dora was away
    chat.stop(NAME)  # no reading in flight while dora logs in
    await watcher.expect(lambda m: m.metadata.get("presence") == "offline" and m.metadata.get("user") == NAME)
    async with ApiClient(chat.api_url, chat.token) as api:  # the server stores mail in batches
        await eventually(lambda: api.pending("dora"), lambda found: found[1] >= 1, "dora's pending mail")
    dora = await chat.text_client()
    welcome = await dora.login("dora")
    count = re.fullmatch(r"Welcome, dora! (\d+) stored messages?\.", welcome)
    assert count and 1 <= int(count.group(1)) <= 3, welcome
    stored = [await dora.line() for _ in range(int(count.group(1)))]
    assert all(line.startswith("[Stored] ") and f"][{NAME}] '" in line and line.endswith("°C'") for line in stored), stored
    await dora.nothing_more()
    await dora.close()
    await watcher.close()
