"""A small run of the benchmark's load generator against the real chat server, so the
benchmark can't rot: every message sent arrives, in order, and nobody is dropped; in a
room, at every other member. The same through chatnet's IRC front, with the adapter the
benchmark gives ngircd; chatnet as two nodes behind one port (`--nodes 2`), with which
node each client landed on; and the tables that set the fronts beside ngircd and the
nodes beside one node."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bench import report, workloads
from bench.loadgen import Load, RoomShare, Schedule
from bench.servers import ChatnetNodes, find_redis
from bench.workloads import Sizes, pair_names
from chatnet.process import port_open
from tests.support import HOST, Network, eventually, free_port


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
    """The message API and the chat server, its IRC front on a port of its own (as the
    bench gives it one): that port."""
    irc_port = network.port("irc")
    network.start_api()
    network.start_server(DEFAULT_ROOMS="")
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


def test_table_sets_each_front_beside_the_peers() -> None:
    """A column per server that ran, each chatnet front's ratio to each peer that ran, and
    the goals against ngircd (issue 15: 1.5× at N = 1,000, level at N = 100); a server not
    run has no column."""
    results = report.new_results({})
    results["chatnet"]["throughput"] = [_run_figures(1000, 160.0), _run_figures(100, 90.0)]
    results["chatnet-irc"]["throughput"] = [_run_figures(1000, 115.0)]
    results["ngircd"]["throughput"] = [_run_figures(1000, 100.0), _run_figures(100, 100.0)]
    results["inspircd"]["throughput"] = [_run_figures(1000, 200.0)]
    lines = report.table(results).splitlines()
    assert lines[0] == ("| workload | metric | chatnet text | chatnet IRC | ngircd | InspIRCd | chatnet text / ngircd | "
                        "chatnet IRC / ngircd | chatnet text / InspIRCd | chatnet IRC / InspIRCd | goal | met |")  # fmt: skip
    per_cpu = [line for line in lines if "per server-CPU-s" in line]
    assert "| 160 | 115 | 100 | 200 | 1.60× | 1.15× | 0.80× | 0.57× | ≥ 1.5× ngircd | text met, IRC **not met** |" in per_cpu[1]
    assert "| 90 | — | 100 | — | 0.90× | — | — | — | ≥ 1.0× ngircd | **not met** |" in per_cpu[0]
    results["chatnet"] = {}
    results["inspircd"] = {}
    irc_only = report.table(results).splitlines()
    assert irc_only[0] == "| workload | metric | chatnet IRC | ngircd | chatnet IRC / ngircd | goal | met |"
    assert any("| 115 | 100 | 1.15× | ≥ 1.5× ngircd | **not met** |" in line for line in irc_only)


@pytest.mark.skipif(find_redis() is None, reason="redis-server is not installed")
def test_two_nodes_behind_one_port_lose_nothing(store_url: str, tmp_path: Path) -> None:
    """The bench's two-node target (both nodes on one port, a redis-server of its own):
    a tiny throughput run loses nothing, the nodes' logs place every client, both nodes
    got some, and the DMs of pairs split over the nodes are counted as cross-node."""
    server = ChatnetNodes(
        tmp_path / "nodes", mongo_url=store_url, nodes=2,
        chat_port=free_port(), irc_port=free_port(), irc_tls_port=free_port(), api_port=free_port(), redis_port=free_port(),
    )  # fmt: skip
    sizes = Sizes(workers=1, throughput_clients=(40,), window=1, warmup=0.2, duration=0.5, grace=5.0)
    try:
        server.start()
        (run,) = workloads.throughput(server, sizes)
    finally:
        server.stop()
    assert run["server"] == "chatnet-nodes-2" and run["nodes"] == 2
    assert run["lost"] == 0 and run["out_of_order"] == 0 and run["disconnected"] == 0
    assert run["sent"] > 100 and run["delivered_in_window"] > 0
    assert run["unplaced"] == 0 and run["placed_twice"] == 0
    assert sum(run["clients_per_node"].values()) == 40 and min(run["clients_per_node"].values()) > 0
    assert run["placed_delivered"] == run["delivered_in_window"]
    # 20 pairs spread by the kernel: all of them on one node is a 1-in-a-million chance.
    assert run["cross_node_pairs"] > 0 and 0 < run["cross_node_share"] < 1
    assert run["cross_node_latency_p50_ms"] is not None and run["local_latency_p50_ms"] is not None
    assert set(run["node_cpu_s"]) == {"server", "server2"} and run["server_cpu_s"] > 0
    assert run["redis_cpu_s"] >= 0 and "redis" in run["cpu_by_process_s"]
    assert run["redis_publishes"] > 0 and run["cross_node_msgs_per_publish"] >= 1  # the forwards went through Redis
    assert not run["node_log_problems"], run["node_log_problems"]
    assert run["history_archived"] == run["sent"] and run["history_kept_pct"] == 100  # a light load: history has it all


def test_nodes_table_sets_nodes_beside_one_node() -> None:
    """--nodes 2: each front alone, as 1 node and as 2 nodes, and 2 nodes against 1; the
    node CPU a cross-node message costs, estimated from the 1-node run's cost per message."""
    results = report.new_results({})
    results["chatnet"]["throughput"] = [_run_figures(1000, 100.0)]
    one = {**_run_figures(1000, 90.0), "nodes": 1, "clients_per_node": {"server": 1000}, "cross_node_share": 0.0,
           "cross_node_pair_share": 0.0, "redis_cpu_share": 0.05, "redis_cpu_us_per_cross_msg": None,
           "delivered_per_cpu_s_with_redis": 85.0, "delivered_in_window": 1_000_000, "server_cpu_s": 4.0,
           "local_latency_p50_ms": 0.3, "cross_node_latency_p50_ms": None}  # fmt: skip
    two = {**one, "nodes": 2, "delivered_per_s": 135.0, "delivered_per_cpu_s": 72.0, "server_cpu_share": 1.9,
           "clients_per_node": {"server": 480, "server2": 520}, "cross_node_share": 0.1, "cross_node_pair_share": 0.5,
           "redis_cpu_us_per_cross_msg": 1.5, "cross_node_delivered": 100_000, "server_cpu_s": 4.9,
           "cross_node_latency_p50_ms": 2.5}  # fmt: skip
    results["chatnet-nodes-1"] = {"throughput": [one], "paced": {**one, "offered_per_s": 20000.0}}
    results["chatnet-nodes-2"] = {"throughput": [two], "paced": {**two, "offered_per_s": 20000.0}}
    assert report.table(results).splitlines()[0].startswith("| workload | metric | chatnet text |")
    lines = report.nodes_table(results).splitlines()
    assert lines[0] == ("| workload | metric | text, 1 node, no Redis | text, 1 node | text, 2 nodes | "
                        "text: 2 nodes / 1 node |")  # fmt: skip
    assert lines[2].startswith("| paced N=1000 @ 20,000 msg/s | delivered msg/s (msg/s) | — | 90 | 135 | 1.50× |")
    assert "| throughput N=1000 | delivered msg/s (msg/s) | 100 | 90 | 135 | 1.50× |" in lines
    assert "| throughput N=1000 | cross-node share of pairs (%) | 0.0 % | 0.0 % | 50.0 % |  |" in lines
    assert "| throughput N=1000 | cross-node share of deliveries (%) | 0.0 % | 0.0 % | 10.0 % |  |" in lines
    assert "| throughput N=1000 | clients per node (clients) | 1,000 | 1,000 | 480 / 520 |  |" in lines
    # 900,000 local messages at the 1-node run's 4 µs: 3.6 s; the other 1.3 s over 100,000 cross-node ones.
    assert "| throughput N=1000 | node CPU per cross-node msg (est.) (µs) | — | — | 13.00 |  |" in lines
    assert "| throughput N=1000 | p50 send → receive, local / cross-node (ms) | — / — | 0.300 / — | 0.300 / 2.500 |  |" in lines
    assert report.nodes_table(report.new_results({})) == ""
