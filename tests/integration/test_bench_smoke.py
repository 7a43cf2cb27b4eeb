"""A small run of the benchmark's load generator against the real chat server, so the
benchmark can't rot: every message sent arrives, in order, and nobody is dropped; in a
room, at every other member. The same through chatnet's IRC front, with the adapter the
benchmark gives ngircd; and the table that sets the fronts beside ngircd."""

from __future__ import annotations

import time
from typing import Any

from bench import report
from bench.loadgen import Load, RoomShare, Schedule
from bench.workloads import pair_names
from chatnet.process import free_port, port_open
from tests.support import HOST, Network, eventually


async def _run(network: Network, mode: str, pairs: int, window: int = 8, rate: float = 0.0,
               protocol: str = "chatnet", port: int | None = None) -> tuple[Load, dict[str, Any]]:  # fmt: skip
    tag = f"smoke{protocol[:3]}{mode[:3]}"
    load = Load(protocol, HOST, port or network.chat_port, pair_names(pairs * 2, tag))
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


def _start_with_irc(network: Network) -> int:
    """The message API and the chat server, its IRC front on a free port (as the bench
    gives it one): that port."""
    irc_port = free_port()
    network.start_api()
    network.start_server(IRC_PORT=str(irc_port), DEFAULT_ROOMS="")
    answers, deadline = port_open(HOST, irc_port), time.monotonic() + 5
    while not answers():  # it opens beside the text port
        assert time.monotonic() < deadline, f"nothing answers IRC on IRC_PORT={irc_port}"
        time.sleep(0.05)
    return irc_port


async def test_irc_front_run_loses_nothing(network: Network) -> None:
    """The bench's IRC adapter (NICK/USER, PRIVMSG) against chatnet's IRC front: every
    message sent is delivered, in order, as through the text mode."""
    irc_port = _start_with_irc(network)
    load, result = await _run(network, "throughput", pairs=2, window=8, protocol="irc", port=irc_port)
    assert result["sent"] >= 200
    assert result["received"] == result["sent"]
    assert result["out_of_order"] == 0 and result["disconnected"] == 0
    assert result["delivered_in_window"] > 0 and result["latencies_us"]
    assert all(client.received == client.peer.sent for client in load.clients if client.peer)


async def test_irc_front_room_reaches_every_other_member(network: Network) -> None:
    """JOIN and PRIVMSG #room through the IRC front: every message at every other member."""
    irc_port = _start_with_irc(network)
    names = tuple(f"smokeircroom{i}" for i in range(4))
    share = RoomShare("#smoke-irc-room", names, {names[0]: 0, names[1]: 1}, frozenset(names[1:]), sender_count=2)
    load = Load("irc", HOST, irc_port, [], share)
    ready = await load.connect(concurrency=2)
    assert ready["failed"] == 0, ready["errors"]
    start = time.monotonic() + 0.1
    sends = 60
    plan = Schedule(start=start, window_start=start + 0.2, window_end=start + 1.0, grace=10.0, mode="room",
                    sends=sends, expect=sends * (len(names) - 1))  # fmt: skip
    result = (await load.run(plan)).as_dict()
    load.close()
    assert result["sent"] == sends
    assert result["received"] == sends * (len(names) - 1)
    assert result["out_of_order"] == 0 and result["disconnected"] == 0
    assert all(client.received == sends - client.sent for client in load.clients)
    watcher = await network.text_client("smokeircwatch")
    await eventually(watcher.who, lambda users: users == ["smokeircwatch"], "everyone gone but the watcher")
    await watcher.close()


def _run_figures(clients: int, per_cpu: float, lost: int = 0) -> dict[str, Any]:
    return {"clients": clients, "delivered_per_s": per_cpu, "delivered_per_cpu_s": per_cpu, "server_cpu_share": 1.0,
            "generator_cpu_share": 0.3, "lost": lost, "out_of_order": 0}  # fmt: skip


def test_table_sets_each_front_beside_ngircd() -> None:
    """A column per server that ran, each chatnet front's ratio to ngircd, and each
    front's own goal at N = 1,000 (text ≥ 1.0×, IRC ≥ 1.2× ngircd); a front not run has
    no column."""
    results = report.new_results({})
    results["chatnet"]["throughput"] = [_run_figures(1000, 110.0)]
    results["chatnet-irc"]["throughput"] = [_run_figures(1000, 115.0)]
    results["ngircd"]["throughput"] = [_run_figures(1000, 100.0)]
    lines = report.table(results).splitlines()
    assert lines[0] == ("| workload | metric | chatnet text | chatnet IRC | ngircd | chatnet text / ngircd | "
                        "chatnet IRC / ngircd | goal | met |")  # fmt: skip
    per_cpu = next(line for line in lines if "per server-CPU-s" in line)
    assert "| 110 | 115 | 100 | 1.10× | 1.15× | text ≥ 1.0× ngircd; IRC ≥ 1.2× ngircd | text met, IRC **not met** |" in per_cpu
    results["chatnet-irc"]["throughput"] = [_run_figures(1000, 121.0)]
    assert "| 1.10× | 1.21× | text ≥ 1.0× ngircd; IRC ≥ 1.2× ngircd | met |" in report.table(results)
    results["chatnet"] = {}
    irc_only = report.table(results).splitlines()
    assert irc_only[0] == "| workload | metric | chatnet IRC | ngircd | chatnet IRC / ngircd | goal | met |"
    assert any("| 121 | 100 | 1.21× | ≥ 1.2× ngircd | met |" in line for line in irc_only)
