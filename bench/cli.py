"""Command line: which workloads, which servers, what sizes; then run them side by side."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import report, workloads
from bench.servers import Chatnet, ChatnetNodes, Inspircd, Ngircd, Server, ensure_inspircd, ensure_ngircd, find_redis, raise_open_files
from bench.workloads import Sizes

logger = logging.getLogger("chatnet.bench")

# Run order: the idle and mail runs first, before throughput leaves the history
# archive busy behind it.
WORKLOADS = ("idle", "storm", "mail", "room", "latency", "throughput")
SERVERS = ("chatnet", "ngircd", "inspircd")
# The workloads --profile attaches py-spy to (chatnet only).
PROFILED = ("room", "throughput")
QUICK = Sizes(throughput_clients=(100, 1000), warmup=1.0, duration=3.0, grace=3.0, latency_clients=1000,
              idle_clients=2000, storm_clients=1000, mail_messages=1000, room_members=200)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)}")
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"comma list of {', '.join(SERVERS)}")
    parser.add_argument("--front", choices=("text", "irc", "both"), default="both",
                        help="chatnet's door for the load: text mode (as at nc), IRC (the adapter ngircd gets), or both (default)")  # fmt: skip
    parser.add_argument("--nodes", type=int, default=1,
                        help="with throughput chosen: also run it, and a paced run, against chatnet as 1 node and as N "
                             "nodes behind one port, joined by a redis-server of the bench's own (each chosen front; "
                             "default 1: no node rows)")  # fmt: skip
    parser.add_argument("--nodes-rate", type=float, help="--nodes: offered load of the paced run, msg/s (default 20000)")
    parser.add_argument("--nodes-clients", type=int, help="--nodes: clients of the paced run (default 1000)")
    parser.add_argument("--quick", action="store_true", help="short windows and smaller sizes (a minute, not ten)")
    parser.add_argument("--workers", type=int, help="generator processes (default 2)")
    parser.add_argument("--clients", help="throughput sizes, comma list (default 100,1000)")
    parser.add_argument("--window", type=int, help="in-flight messages per sender (default 16)")
    parser.add_argument("--warmup", type=float, help="seconds of load before each window (default 2)")
    parser.add_argument("--duration", type=float, help="measurement window in seconds (default 10)")
    parser.add_argument("--rate", type=float, help="offered load of the latency run, msg/s (default 5000)")
    parser.add_argument("--idle-clients", type=int, help="idle scale size (default 10000)")
    parser.add_argument("--storm-clients", type=int, help="logins at one moment (default 5000)")
    parser.add_argument("--mail", type=int, help="offline messages (default 10000)")
    parser.add_argument("--room-members", type=int, help="members of the room (default 1000; 200 with --quick)")
    parser.add_argument("--room-senders", type=int, help="members of the room that send (default 10)")
    parser.add_argument("--room-rate", type=float, help="messages/s offered to the room by all senders (default 100)")
    parser.add_argument("--mongo-url", help="use this MongoDB instead of the embedded store")
    parser.add_argument("--profile", type=Path,
                        help="py-spy the chatnet server during room and throughput; write here "
                             "(FILE.<workload> when both run, .irc appended for the IRC front when both fronts run)")  # fmt: skip
    parser.add_argument("--no-install", action="store_true", help="never apt-get install ngircd or inspircd")
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/<date>.json)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else Sizes()
    overrides: dict[str, Any] = {
        "workers": args.workers, "window": args.window, "warmup": args.warmup, "duration": args.duration,
        "latency_rate": args.rate, "idle_clients": args.idle_clients, "mail_messages": args.mail,
        "storm_clients": args.storm_clients, "room_members": args.room_members, "room_senders": args.room_senders,
        "room_rate": args.room_rate, "nodes_rate": args.nodes_rate, "nodes_clients": args.nodes_clients,
        "throughput_clients": tuple(int(n) for n in args.clients.split(",")) if args.clients else None,
    }  # fmt: skip
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")  # fmt: skip
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(only) - set(WORKLOADS) | set(names) - set(SERVERS)
    if unknown:
        raise SystemExit(f"unknown workload or server: {', '.join(sorted(unknown))}")
    if args.nodes < 1:
        raise SystemExit("--nodes wants 1 or more")
    if args.nodes > 1 and ("chatnet" not in names or "throughput" not in only):
        logger.warning("--nodes %d adds its runs beside chatnet's throughput: without chatnet in --servers and throughput in --only, none", args.nodes)
    elif args.nodes > 1 and find_redis() is None:
        raise SystemExit("--nodes needs redis-server: sudo apt-get install -y redis-server")
    sizes = sizes_from(args)
    raise_open_files(max(sizes.idle_clients, sizes.storm_clients, sizes.room_members, sizes.nodes_clients, max(sizes.throughput_clients)) * 2 + 1000)
    results = report.new_results(dataclasses.asdict(sizes))
    with tempfile.TemporaryDirectory(prefix="chatnet-bench-") as tmp:
        servers = build_servers(names, Path(tmp), args)
        fronts = sum(_is_front(server) for server in servers)
        failed: dict[str, str] = {}
        for server in servers:
            # One server (or front) that fails is reported, not the end of the others' runs.
            try:
                run_server(server, only, sizes, results, _front_profile(args.profile, server, fronts), failed)
            except Exception as exc:
                logger.exception("%s failed", server.name)
                failed[server.name] = _failure(exc)
    if failed:
        results["failed"] = failed
    print()
    print(report.header(results))
    print(report.table(results))
    if nodes_table := report.nodes_table(results):
        print()
        print(nodes_table)
    print(f"\nJSON: {report.write_json(results, args.out)}")
    if failed:
        raise SystemExit("\n".join(f"{name} failed: {why}" for name, why in failed.items()))


def build_servers(names: list[str], tmp: Path, args: argparse.Namespace) -> list[Server]:
    servers: list[Server] = []
    for name in names:
        if name == "ngircd":
            servers.append(Ngircd(tmp / "ngircd", binary=ensure_ngircd(install=not args.no_install)))
        elif name == "inspircd":
            servers.append(Inspircd(tmp / "inspircd", binary=ensure_inspircd(install=not args.no_install)))
        else:  # one fresh network per front, each over its own database
            for front in ("text", "irc") if args.front == "both" else (args.front,):
                servers.append(Chatnet(tmp / f"chatnet-{front}", front=front, mongo_url=args.mongo_url))
                servers += _node_servers(tmp, front, args)
    return servers


def _node_servers(tmp: Path, front: str, args: argparse.Namespace) -> list[Server]:
    """With --nodes N (N ≥ 2): this front's network as one node and as N nodes, each
    node with CLUSTER_URL, behind one port; each a fresh network (throughput only)."""
    only = {w.strip() for w in args.only.split(",")}
    if args.nodes < 2 or "throughput" not in only:
        return []
    return [ChatnetNodes(tmp / f"chatnet-{front}-nodes-{n}", front=front, mongo_url=args.mongo_url, nodes=n) for n in (1, args.nodes)]


def _is_front(server: Server) -> bool:
    """One of chatnet's regular runs (a front), not a node-scaling one."""
    return isinstance(server, Chatnet) and not isinstance(server, ChatnetNodes)


def _front_profile(profile: Path | None, server: Server, fronts: int) -> Path | None:
    """With both chatnet fronts profiled, the IRC one's stacks go to FILE.irc (then
    FILE.irc.<workload>), so neither overwrites the other."""
    if profile is None or fronts < 2 or not _is_front(server) or not isinstance(server, Chatnet) or server.front != "irc":
        return profile
    return profile.with_name(f"{profile.name}.irc")


def run_server(server: Server, only: list[str], sizes: Sizes, results: dict[str, Any], profile: Path | None,
               failed: dict[str, str]) -> None:
    """Every chosen workload against one server, each on the server freshly started:
    what one workload leaves in a process must not weigh on the next (ngircd walks its
    whole connection table every loop pass, and after the 10,000 clients of the idle
    run that table stays large: its room figure fell 19 %). The other servers are not
    running meanwhile; chatnet's database is kept from one workload to the next. A
    workload that fails goes into `failed` and the server's other workloads still run
    (ngircd's login storm can outlast the generator's patience: see bench/README.md)."""
    mine = results.setdefault(server.name, {})
    profiles = _profile_paths(profile, only)
    if isinstance(server, ChatnetNodes):  # the node-scaling rows, never profiled
        with _running(server, results):
            # The paced run first: throughput leaves the history archive busy behind it.
            for name, step in (("paced", workloads.paced), ("throughput", workloads.throughput)):
                logger.info("%s: %s", server.name, name)
                mine[name] = step(server, sizes)
        return
    steps: dict[str, Callable[[], Any]] = {
        "throughput": lambda: workloads.throughput(server, sizes, _fresh(profiles.get("throughput"))),
        "room": lambda: workloads.room(server, sizes, _fresh(profiles.get("room"))),
        "latency": lambda: workloads.latency(server, sizes),
        "idle": lambda: workloads.idle(server, sizes),
        "storm": lambda: workloads.storm(server, sizes),
    }
    if isinstance(server, Chatnet) and server.front == "text":  # offline mail is text mode's
        steps["mail"] = lambda: workloads.offline_mail(server, sizes)
    for name in WORKLOADS:
        if name in only and name in steps:
            try:
                with _running(server, results):
                    logger.info("%s: %s", server.name, name)
                    mine[name] = steps[name]()
            except Exception as exc:
                logger.exception("%s %s failed", server.name, name)
                failed[f"{server.name} {name}"] = _failure(exc)


@contextmanager
def _running(server: Server, results: dict[str, Any]) -> Iterator[None]:
    logger.info("starting %s", server.name)
    try:
        server.start()  # inside the try: what did start (chatnet's store, its API) is stopped too
        results["versions"][server.name] = server.version()
        yield
    finally:
        server.stop()


def _profile_paths(profile: Path | None, only: list[str]) -> dict[str, Path]:
    """Where each profiled workload's stacks go: FILE itself when one of them runs,
    FILE.<workload> when several do."""
    chosen = [name for name in PROFILED if name in only]
    if profile is None:
        return {}
    if len(chosen) == 1:
        return {chosen[0]: profile}
    return {name: profile.with_name(f"{profile.name}.{name}") for name in chosen}


def _failure(exc: Exception) -> str:
    """What the JSON's `failed` says of a server or workload that failed."""
    return f"{type(exc).__name__}: {exc}"


def _fresh(profile: Path | None) -> Path | None:
    """A profile file emptied for this run (its windows are appended to it)."""
    if profile is not None:
        profile.unlink(missing_ok=True)
    return profile
