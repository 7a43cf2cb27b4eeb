"""A small run of the benchmark's load generator against the real chat server, so the
benchmark can't rot: every message sent arrives, in order, and nobody is dropped; in a
room, at every other member."""

from __future__ import annotations

import time
from typing import Any

from bench.loadgen import Load, RoomShare, Schedule
from bench.workloads import pair_names
from tests.support import HOST, Network


async def _run(network: Network, mode: str, pairs: int, window: int = 8, rate: float = 0.0) -> tuple[Load, dict[str, Any]]:
    load = Load("chatnet", HOST, network.chat_port, pair_names(pairs * 2, f"smoke{mode[:3]}"))
    ready = await load.connect(concurrency=4)
    assert ready["failed"] == 0, ready["errors"]
    start = time.monotonic() + 0.1
    plan = Schedule(start=start, window_start=start + 0.2, window_end=start + 1.0, grace=10.0, mode=mode,
                    window=window, rate=rate)  # fmt: skip
    result = await load.run(plan)
    load.close()
    # Closed is closed once the server has let every one of them go.
    watcher = await network.text_client("smokewatch")
    await watcher.until_online(lambda users: users == ["smokewatch"])
    await watcher.close()
    return load, result.as_dict()


async def test_throughput_run_loses_nothing(chat: Network) -> None:
    """Two pairs with windows of in-flight messages: every message sent is delivered, in order."""
    load, result = await _run(chat, "throughput", pairs=2, window=8)
    assert result["sent"] >= 200
    assert result["received"] == result["sent"]
    assert result["out_of_order"] == 0
    assert result["disconnected"] == 0
    assert result["delivered_in_window"] > 0 and result["latencies_us"]
    assert all(client.received == client.peer.sent for client in load.clients if client.peer)


async def test_paced_run_measures_every_message(chat: Network) -> None:
    """At a fixed offered load, every message arrives and each one in the window has a latency."""
    _, result = await _run(chat, "latency", pairs=2, rate=300.0)
    assert result["sent"] >= 250
    assert result["received"] == result["sent"]
    assert result["out_of_order"] == 0
    assert len(result["latencies_us"]) == result["delivered_in_window"] > 0
    assert all(latency > 0 for latency in result["latencies_us"])


async def test_room_run_reaches_every_other_member(network: Network) -> None:
    """A room of five, two of them sending: every message reaches every other member, in order per sender."""
    network.start_api()
    network.start_server(DEFAULT_ROOMS="")
    names = tuple(f"smokeroom{i}" for i in range(5))
    share = RoomShare("#smoke-room", names, {names[0]: 0, names[1]: 1}, frozenset(names[1:]), sender_count=2)
    load = Load("chatnet", HOST, network.chat_port, [], share)
    ready = await load.connect(concurrency=2)
    assert ready["failed"] == 0, ready["errors"]
    start = time.monotonic() + 0.1
    sends = 100
    plan = Schedule(start=start, window_start=start + 0.2, window_end=start + 1.0, grace=10.0, mode="room",
                    sends=sends, expect=sends * (len(names) - 1))  # fmt: skip
    result = (await load.run(plan)).as_dict()
    load.close()
    assert result["sent"] == sends
    assert result["received"] == sends * (len(names) - 1)
    assert result["out_of_order"] == 0 and result["disconnected"] == 0
    assert all(client.received == sends - client.sent for client in load.clients)
    assert result["delivered_in_window"] > 0 and result["latencies_us"]
