"""The workloads: each starts worker processes against one server, runs a measurement
window, and returns plain numbers (a dict per run, JSON-ready)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.loadgen import RoomShare, Schedule, worker_main
from bench.profiling import ATTACH_LEAD, spying
from bench.servers import HOST, Chatnet, ChatnetNodes, Server, cpu_seconds

logger = logging.getLogger("chatnet.bench")

_run_ids = itertools.count(1)
# After a run, the history's count is read until it stops growing: every this many
# seconds (the archive sends a batch at least every 0.2 s while it has any), for at most
# HISTORY_SETTLE.
HISTORY_SETTLE_POLL = 1.0
HISTORY_SETTLE = 60.0


@dataclass(frozen=True)
class Sizes:
    """Every size and duration, so `--quick` and the smoke test can shrink them."""

    workers: int = 2
    throughput_clients: tuple[int, ...] = (100, 1000)
    window: int = 16
    warmup: float = 2.0
    duration: float = 10.0
    grace: float = 5.0
    latency_clients: int = 1000
    latency_rate: float = 5000.0
    idle_clients: int = 10_000
    storm_clients: int = 5000  # all logging in at once
    mail_messages: int = 10_000
    mail_senders: int = 10
    mail_window: int = 50
    connect_concurrency: int = 32  # logins in progress per worker
    # The room: members, senders among them, total offered msg/s (bench/README.md says
    # why 100: both servers busy, neither saturated, on 2 cores), and one member in
    # `room_sample_every` checking order and latency on every line.
    room_members: int = 1000
    room_senders: int = 10
    room_rate: float = 100.0
    room_sample_every: int = 10
    # --nodes N: besides throughput, a paced run at a load the nodes carry without
    # queueing, so every pair sends alike and the cross-node share of messages is the
    # share of pairs split over the nodes (≈ (N − 1)/N): the cost of a cross-node DM.
    nodes_clients: int = 1000
    nodes_rate: float = 20_000.0


def pair_names(count: int, tag: str) -> list[tuple[str, str]]:
    """`count` clients as count/2 pairs; names unique per run so no login collides."""
    return [(f"{tag}a{i}", f"{tag}b{i}") for i in range(count // 2)]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Workers:
    """The generator's processes for one run, each with a slice of the pairs."""

    def __init__(self, server: Server, pairs: list[tuple[str, str]], count: int, rooms: list[RoomShare] | None = None) -> None:
        count = len(rooms) if rooms else max(1, min(count, len(pairs)))
        context = mp.get_context("fork")
        self.pipes: list[Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        for index in range(count):
            mine, theirs = context.Pipe()
            args = (theirs, server.protocol, HOST, server.port, pairs[index::count], rooms[index] if rooms else None)
            proc = context.Process(target=worker_main, args=args, daemon=True, name=f"bench-worker-{index}")
            proc.start()
            self.pipes.append(mine)
            self.procs.append(proc)

    def ask(self, command: str, argument: Any, timeout: float) -> list[Any]:
        for pipe in self.pipes:
            pipe.send((command, argument))
        answers = []
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            if not pipe.poll(timeout):
                raise RuntimeError(f"{proc.name} did not answer {command!r} within {timeout:.0f} s")
            answers.append(pipe.recv()[1])
        return answers

    def cpu(self) -> float:
        return sum(cpu_seconds(proc.pid) for proc in self.procs if proc.pid)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError, EOFError):  # a worker already gone
            self.ask("stop", None, 10)
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()


def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def run_load(server: Server, mode: str, clients: int, sizes: Sizes, rate: float = 0.0, profile: Path | None = None) -> dict[str, Any]:
    """Log `clients` in, then warm up and measure one window of `mode` traffic (py-spy
    on the server during it, with `profile`)."""
    pairs = pair_names(clients, f"r{next(_run_ids)}")
    history = server.history_count() if isinstance(server, Chatnet) and mode != "idle" else None
    workers = Workers(server, pairs, sizes.workers)
    placement: dict[str, list[str]] | None = None
    try:
        login_s, rss_logged_in = _log_in(server, workers, sizes)
        if isinstance(server, ChatnetNodes):  # which node each client landed on
            placement = server.placement({name for pair in pairs for name in pair})
        duration = sizes.duration if mode != "idle" else 1.0
        start = time.monotonic() + 0.3
        window_start = start + (sizes.warmup if mode != "idle" else 0.0)
        per_worker_rate = rate / len(workers.procs)
        schedule = Schedule(start, window_start, window_start + duration, sizes.grace, mode, sizes.window, per_worker_rate)
        window = _measure(server, workers, [schedule] * len(workers.pipes), sizes, profile)
    finally:
        workers.close()
    summary = _summarise(server, mode, clients, duration=duration, login_s=login_s, rss_logged_in=rss_logged_in, rate=rate, **window)
    if isinstance(server, Chatnet) and history is not None:
        summary.update(_history_kept(server, history, summary["sent"]))
    if isinstance(server, ChatnetNodes) and placement is not None:
        summary.update(_across_nodes(server, pairs, placement, window, summary))
        logger.info("%s %s N=%d: %s", server.name, mode, clients, _brief_nodes(summary))
        summary["in_flight_per_sender"] = sizes.window if mode == "throughput" else None
    return summary


def _history_kept(server: Chatnet, before: int, sent: int) -> dict[str, Any]:
    """How much of what was sent the history view kept: the archive's count once it
    stopped growing (two readings HISTORY_SETTLE_POLL apart agree, or HISTORY_SETTLE
    passed). chatnet archives every delivered message; under overload its archive
    drops the oldest it could not store (README, "Delivery")."""
    deadline = time.monotonic() + HISTORY_SETTLE
    last = server.history_count()
    while last is not None and time.monotonic() < deadline:
        time.sleep(HISTORY_SETTLE_POLL)
        now = server.history_count()
        if now == last:
            break
        last = now
    archived = (last or before) - before
    kept = 100 * archived / sent if sent else None
    logger.info("%s: history kept %d of %d messages sent (%s %%)", server.name, archived, sent, f"{kept:.1f}" if kept is not None else "—")
    return {"history_archived": archived, "history_kept_pct": kept}


def _across_nodes(server: ChatnetNodes, pairs: list[tuple[str, str]], placement: dict[str, list[str]],
                  window: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The node-scaling figures of one run: where the clients landed (from the nodes'
    logs), the share of the window's deliveries whose sender and receiver were on
    different nodes, every node's CPU and Redis's apart."""
    by_receiver: dict[str, int] = {}
    latencies: dict[str, list[float]] = {}
    for result in window["results"]:
        by_receiver.update(result.get("by_receiver", {}))
        latencies.update(result.get("latencies_by_receiver", {}))
    node_of = {name: nodes[0] for name, nodes in placement.items() if len(nodes) == 1}
    cross = local = 0
    cross_pairs = local_pairs = 0
    cross_lat: list[float] = []
    local_lat: list[float] = []
    for a, b in pairs:
        if a not in node_of or b not in node_of:
            continue  # unplaced or on two nodes: counted apart, in neither share
        split = node_of[a] != node_of[b]
        got = by_receiver.get(a, 0) + by_receiver.get(b, 0)
        sampled = latencies.get(a, []) + latencies.get(b, [])
        if split:
            cross, cross_pairs = cross + got, cross_pairs + 1
            cross_lat += sampled
        else:
            local, local_pairs = local + got, local_pairs + 1
            local_lat += sampled
    counted = cross + local
    names = [name for pair in pairs for name in pair]
    cpu = window["cpu_by_process"]
    nodes_cpu = summary["server_cpu_s"]
    redis_cpu = cpu.get("redis", 0.0)
    delivered = summary["delivered_in_window"]
    duration = summary["window_s"]
    return {
        "nodes": server.nodes,
        "clients_per_node": {node: sum(1 for n in names if node_of.get(n) == node) for node in server.node_names},
        "unplaced": sum(1 for n in names if n not in placement),
        "placed_twice": sum(1 for n in names if len(placement.get(n, ())) > 1),
        "pairs": len(pairs), "cross_node_pairs": cross_pairs, "local_pairs": local_pairs,
        "cross_node_pair_share": cross_pairs / (cross_pairs + local_pairs) if cross_pairs + local_pairs else None,
        "cross_node_delivered": cross, "placed_delivered": counted,
        "cross_node_share": cross / counted if counted else None,
        # Each direction of a pair: its deliveries a second (throughput: `window` always
        # in flight, so by Little's law its mean send → receive time is window / this).
        "cross_node_per_sender_per_s": cross / duration / (2 * cross_pairs) if cross_pairs else None,
        "local_per_sender_per_s": local / duration / (2 * local_pairs) if local_pairs else None,
        "cross_node_latency_p50_ms": _ms(cross_lat, 0.50), "cross_node_latency_p99_ms": _ms(cross_lat, 0.99),
        "local_latency_p50_ms": _ms(local_lat, 0.50), "local_latency_p99_ms": _ms(local_lat, 0.99),
        "node_cpu_s": {node: cpu.get(node, 0.0) for node in server.node_names},
        "redis_cpu_s": redis_cpu, "redis_cpu_share": redis_cpu / duration,
        "delivered_per_cpu_s_with_redis": delivered / (nodes_cpu + redis_cpu) if nodes_cpu + redis_cpu > 0 else None,
        "redis_cpu_us_per_cross_msg": redis_cpu / cross * 1e6 if cross else None,
        "redis_publishes": (publishes := window.get("counters", {}).get("redis_publish_calls")),
        "cross_node_msgs_per_publish": cross / publishes if cross and publishes else None,
        "node_log_problems": server.log_problems(),
    }  # fmt: skip


def _ms(latencies_us: list[float], q: float) -> float | None:
    return percentile(latencies_us, q) / 1000 if latencies_us else None


def _brief_nodes(s: dict[str, Any]) -> str:
    share = s["cross_node_share"]
    p50, p99 = s["cross_node_latency_p50_ms"], s["cross_node_latency_p99_ms"]
    return (f"{s['nodes']} node(s), clients per node {list(s['clients_per_node'].values())}, "
            f"cross-node {share if share is not None else float('nan'):.1%} of deliveries "
            f"({s['cross_node_pairs']} of {s['pairs']} pairs, p50/p99 {p50 or float('nan'):.3f}/{p99 or float('nan'):.3f} ms), "
            f"redis cpu {s['redis_cpu_share']:.0%}, {s['delivered_per_cpu_s_with_redis'] or 0:.0f} per cpu-s with redis")  # fmt: skip


def _log_in(server: Server, workers: Workers, sizes: Sizes) -> tuple[float, float]:
    """Every worker's clients logged in (and into the room, for a room run): the time it
    took, and the server's RSS then."""
    started = time.monotonic()
    ready = workers.ask("connect", max(sizes.connect_concurrency, server.min_connect_concurrency), 300)
    login_s = time.monotonic() - started
    failed = sum(r["failed"] for r in ready)
    if failed:
        raise RuntimeError(f"{server.name}: {failed} clients could not log in: {[e for r in ready for e in r['errors']][:5]}")
    return login_s, server.rss()


def _measure(server: Server, workers: Workers, schedules: list[Schedule], sizes: Sizes, profile: Path | None = None) -> dict[str, Any]:
    """Send each worker its schedule; read the CPU times at the window's edges (py-spy
    on the server in between, with `profile`); collect."""
    for pipe, schedule in zip(workers.pipes, schedules, strict=True):
        pipe.send(("go", schedule))
    _sleep_until(schedules[0].window_start - ATTACH_LEAD)
    with spying(server, profile):
        _sleep_until(schedules[0].window_start)
        cpu0, gen0, all0, count0 = server.cpu(), workers.cpu(), _cpu_all(server), server.counters()
        _sleep_until(schedules[0].window_end)
        cpu1, gen1, all1, count1 = server.cpu(), workers.cpu(), _cpu_all(server), server.counters()
    rss = server.rss()
    results = []
    for pipe, proc in zip(workers.pipes, workers.procs, strict=True):
        if not pipe.poll(sizes.grace + 60):
            raise RuntimeError(f"{proc.name} did not finish")
        results.append(pipe.recv()[1])
    return {"results": results, "server_cpu": cpu1 - cpu0, "generator_cpu": gen1 - gen0, "rss": rss,
            "cpu_by_process": {k: all1[k] - all0.get(k, 0.0) for k in all1},
            "counters": {k: count1[k] - count0[k] for k in count1 if k in count0}}  # fmt: skip


def _cpu_all(server: Server) -> dict[str, float]:
    return server.cpu_all() if isinstance(server, Chatnet) else {server.name: server.cpu()}


def _summarise(server: Server, mode: str, clients: int, *, results: list[dict[str, Any]], duration: float,
               server_cpu: float, generator_cpu: float, login_s: float, rss: float, rss_logged_in: float,
               cpu_by_process: dict[str, float], rate: float, expected: int | None = None,
               counters: dict[str, float] | None = None) -> dict[str, Any]:  # fmt: skip
    """One run's figures. `expected`: deliveries that should have arrived (default: one
    per message sent; a room's is sent × (members − 1))."""
    sent = sum(r["sent"] for r in results)
    received = sum(r["received"] for r in results)
    delivered = sum(r["delivered_in_window"] for r in results)
    latencies = [x for r in results for x in r["latencies_us"]]
    expected = sent if expected is None else expected
    summary = {
        "server": server.name, "mode": mode, "clients": clients, "window_s": duration,
        "sent": sent, "received": received, "expected": expected, "lost": expected - received,
        "out_of_order": sum(r["out_of_order"] for r in results),
        "disconnected": sum(r["disconnected"] for r in results),
        "mail_unavailable": sum(r.get("mail_unavailable", 0) for r in results),
        "delivered_in_window": delivered,
        "delivered_per_s": delivered / duration,
        "server_cpu_s": server_cpu,
        "server_cpu_share": server_cpu / duration,
        "delivered_per_cpu_s": delivered / server_cpu if server_cpu > 0 else None,
        "generator_cpu_s": generator_cpu,
        "generator_cpu_share": generator_cpu / duration,
        "cpu_by_process_s": cpu_by_process,
        **({"counters": counters} if counters else {}),
        "login_all_s": login_s,
        "rss_mb": rss, "rss_logged_in_mb": rss_logged_in,
        "offered_per_s": rate or None,
        "latency_samples": len(latencies),
        "latency_p50_ms": percentile(latencies, 0.50) / 1000 if latencies else None,
        "latency_p99_ms": percentile(latencies, 0.99) / 1000 if latencies else None,
        "latency_max_ms": max(latencies) / 1000 if latencies else None,
        "latency_mean_ms": statistics.fmean(latencies) / 1000 if latencies else None,
    }  # fmt: skip
    logger.info("%s %s N=%d: %s", server.name, mode, clients, _brief(summary))
    return summary


def _brief(s: dict[str, Any]) -> str:
    cpu = s["delivered_per_cpu_s"]
    p99 = s["latency_p99_ms"]
    return (f"{s['delivered_per_s']:.0f} deliveries/s, {cpu or 0:.0f} per cpu-s, lost {s['lost']}, "
            f"server cpu {s['server_cpu_share']:.0%}, generator cpu {s['generator_cpu_share']:.0%}, "
            f"p99 {p99 if p99 is not None else float('nan'):.3f} ms, rss {s['rss_mb']:.1f} MB, login {s['login_all_s']:.2f} s")  # fmt: skip


def throughput(server: Server, sizes: Sizes, profile: Path | None = None) -> list[dict[str, Any]]:
    return [run_load(server, "throughput", n, sizes, profile=profile) for n in sizes.throughput_clients]


def latency(server: Server, sizes: Sizes) -> dict[str, Any]:
    return run_load(server, "latency", sizes.latency_clients, sizes, rate=sizes.latency_rate)


def paced(server: Server, sizes: Sizes) -> dict[str, Any]:
    """--nodes: `nodes_clients` in pairs at a fixed `nodes_rate` (round robin over the
    senders, every line's latency taken), the nodes' CPU per message at a known load."""
    return run_load(server, "latency", sizes.nodes_clients, sizes, rate=sizes.nodes_rate)


def room(server: Server, sizes: Sizes, profile: Path | None = None) -> dict[str, Any]:
    """One room of `room_members`; `room_senders` of them offer `room_rate` msg/s in all,
    evenly spaced; every other member must get every message."""
    tag = f"r{next(_run_ids)}"
    name = f"#bench-{tag}"
    members = [f"{tag}m{i}" for i in range(sizes.room_members)]
    senders = min(sizes.room_senders, len(members))
    count = max(1, min(sizes.workers, senders))  # every worker has senders
    shares = [
        RoomShare(name, tuple(members[k::count]), {members[i]: i for i in range(k, senders, count)},
                  frozenset(members[k::count][:: sizes.room_sample_every]), senders)
        for k in range(count)
    ]  # fmt: skip
    workers = Workers(server, [], count, shares)
    try:
        login_s, rss_logged_in = _log_in(server, workers, sizes)
        start = time.monotonic() + 0.3
        window_start = start + sizes.warmup
        plain = Schedule(start, window_start, window_start + sizes.duration, sizes.grace, "room")
        span = plain.window_end - plain.start
        # Each worker sends its senders' part of the load: a count known in advance, so
        # each knows how many deliveries to wait for before it reports.
        sends = [round(sizes.room_rate * len(share.senders) / senders * span) for share in shares]
        total = sum(sends)
        schedules = [dataclasses.replace(plain, rate=n / span, sends=n, expect=total * len(share.members) - n)
                     for share, n in zip(shares, sends, strict=True)]  # fmt: skip
        window = _measure(server, workers, schedules, sizes, profile)
    finally:
        workers.close()
    summary = _summarise(server, "room", len(members), duration=sizes.duration, login_s=login_s, rss_logged_in=rss_logged_in,
                         rate=sizes.room_rate, expected=total * (len(members) - 1), **window)  # fmt: skip
    summary.update(room=name, senders=senders, sampled_members=sum(len(s.sampled) for s in shares))
    return summary


def idle(server: Server, sizes: Sizes) -> dict[str, Any]:
    return run_load(server, "idle", sizes.idle_clients, sizes)


def storm(server: Server, sizes: Sizes) -> dict[str, Any]:
    """`storm_clients` logins started at the same moment: the time to the last welcome."""
    at_once = -(-sizes.storm_clients // sizes.workers)  # every worker's share, none held back
    return run_load(server, "idle", sizes.storm_clients, dataclasses.replace(sizes, connect_concurrency=at_once))


# --- offline mail (chatnet only) -----------------------------------------------------


def offline_mail(server: Chatnet, sizes: Sizes) -> dict[str, Any]:
    """Store `mail_messages` for one offline user, then log that user in."""
    from bench.mail import run_mail  # the aiohttp client is only needed here

    result = asyncio.run(run_mail(server, sizes.mail_messages, sizes.mail_senders, sizes.mail_window, f"m{next(_run_ids)}"))
    logger.info("chatnet offline mail: %s", result)
    return result
