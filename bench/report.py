"""Results as a table (chatnet text, chatnet IRC, ngircd and InspIRCd side by side, each
chatnet front's ratio to each peer, the issues' goals), the node-scaling table (--nodes N: chatnet
alone, as 1 node and as N nodes behind one port), and as JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release(), "loop": _loop_name()}  # fmt: skip


def _loop_name() -> str:
    try:
        import uvloop

        return f"uvloop {getattr(uvloop, '__version__', '?')}"
    except ImportError:
        return "asyncio"


# Where each server's runs are kept in the results, in the table's column order: chatnet
# through its text mode, chatnet through its IRC front, ngircd (the reference of the
# goals), InspIRCd (the faster peer, the goal beyond).
SERVERS: Final = ("chatnet", "chatnet-irc", "ngircd", "inspircd")
FRONTS: Final = ("chatnet", "chatnet-irc")  # each compared with the peers
REFERENCE: Final = "ngircd"
PEERS: Final = ("ngircd", "inspircd")
LABELS: Final = {"chatnet": "chatnet text", "chatnet-irc": "chatnet IRC", "ngircd": "ngircd", "inspircd": "InspIRCd"}
SHORT: Final = {"chatnet": "text", "chatnet-irc": "IRC"}
# The per-CPU goals of each front against ngircd by clients (issue 15: at N = 1,000
# 1.5×, at N = 100 level), on text mode and on the identical IRC workload.
THROUGHPUT_GOAL: Final = {1000: 1.5, 100: 1.0}
# Issue 15's other goals.
P99_GOAL_MS: Final = 1.0
IDLE_RSS_GOAL_MB: Final = 48.0
LOGIN_ALL_GOAL_S: Final = 10.0  # 10,000 logins, each with its mail lookup
MAIL_STORED_GOAL: Final = 20_000.0  # msg/s, each confirmed
PENDING_ACKED_GOAL_S: Final = 0.5  # 10,000 pending handed over and acknowledged

Runs = dict[str, dict[str, Any] | None]  # server → its run of one workload (None: not run)


@dataclass(frozen=True)
class Row:
    workload: str
    metric: str
    values: dict[str, float | None]  # server → figure
    unit: str
    goals: dict[str, tuple[str, bool | None]] = field(default_factory=dict)  # front → (goal, met)
    higher_is_better: bool = True

    def value(self, server: str) -> float | None:
        return self.values.get(server)

    def ratio(self, front: str, peer: str = REFERENCE) -> float | None:
        """This front's figure against a peer's (ngircd's unless told)."""
        mine, theirs = self.values.get(front), self.values.get(peer)
        if mine is None or theirs is None or theirs == 0:
            return None
        return mine / theirs

    @property
    def chatnet(self) -> float | None:
        return self.value("chatnet")

    @property
    def ngircd(self) -> float | None:
        return self.value("ngircd")


def _by_clients(runs: list[dict[str, Any]] | None, clients: int) -> dict[str, Any] | None:
    return next((r for r in runs or [] if r["clients"] == clients), None)


def _runs(results: dict[str, Any], workload: str) -> Runs:
    return {server: results.get(server, {}).get(workload) for server in SERVERS}


def _row(workload: str, metric: str, runs: Runs, key: str, unit: str, higher_is_better: bool = True,
         goals: dict[str, tuple[str, bool | None]] | None = None) -> Row:  # fmt: skip
    values = {server: (run.get(key) if run else None) for server, run in runs.items()}
    return Row(workload, metric, values, unit, goals or {}, higher_is_better)


def _per_cpu_goals(runs: Runs, wanted: dict[str, float]) -> dict[str, tuple[str, bool | None]]:
    """Each front's delivered-per-server-CPU-second figure against ngircd's × its target."""
    reference = runs.get(REFERENCE)
    goals: dict[str, tuple[str, bool | None]] = {}
    for front, factor in wanted.items():
        run = runs.get(front)
        if run is None:
            continue
        met = None
        if reference and run["delivered_per_cpu_s"] and reference["delivered_per_cpu_s"]:
            met = run["delivered_per_cpu_s"] >= factor * reference["delivered_per_cpu_s"]
        goals[front] = (f"≥ {factor:.1f}× ngircd", met)
    return goals


def _p99_goals(runs: Runs, key: str) -> dict[str, tuple[str, bool | None]]:
    """p99 at most ngircd's in the same run, and at most P99_GOAL_MS."""
    theirs = (runs.get(REFERENCE) or {}).get(key)

    def met(run: dict[str, Any]) -> bool:
        return run[key] is not None and run[key] <= P99_GOAL_MS and (theirs is None or run[key] <= theirs)

    return _each_front(runs, f"≤ ngircd's, ≤ {P99_GOAL_MS:.0f} ms", met)


def _each_front(runs: Runs, goal: str, test: Callable[[dict[str, Any]], bool]) -> dict[str, tuple[str, bool | None]]:
    """The same goal for every front that ran."""
    return {front: (goal, test(run)) for front in FRONTS if (run := runs.get(front))}


def rows(results: dict[str, Any]) -> list[Row]:
    """The table: one row per figure the issues ask for, every server side by side."""
    out: list[Row] = []
    throughput = {server: results.get(server, {}).get("throughput") or [] for server in SERVERS}
    for n in sorted({r["clients"] for runs in throughput.values() for r in runs}):
        runs: Runs = {server: _by_clients(throughput[server], n) for server in SERVERS}
        name = f"throughput N={n}"
        goals = _per_cpu_goals(runs, {front: THROUGHPUT_GOAL[n] for front in FRONTS}) if n in THROUGHPUT_GOAL else {}
        out += [
            _row(name, "delivered msg/s", runs, "delivered_per_s", "msg/s"),
            _row(name, "delivered msg per server-CPU-s", runs, "delivered_per_cpu_s", "msg/cpu-s", goals=goals),
            _row(name, "server CPU share", runs, "server_cpu_share", "cores"),
            _row(name, "generator CPU share", runs, "generator_cpu_share", "cores"),
            _lost_row(name, runs),
            _row(name, "history kept (archived of sent)", runs, "history_kept_pct", "%"),
        ]  # fmt: skip
    out.extend(_room_rows(_runs(results, "room")))
    runs = _runs(results, "latency")
    if first := _first(runs):
        name = f"latency N={first['clients']} @ {first['offered_per_s']:.0f} msg/s"
        for key, label in (("latency_p50_ms", "p50"), ("latency_p99_ms", "p99"), ("latency_max_ms", "max")):
            goals = _p99_goals(runs, key) if label == "p99" else {}
            out.append(_row(name, label, runs, key, "ms", higher_is_better=False, goals=goals))
        out.append(_row(name, "delivered msg/s", runs, "delivered_per_s", "msg/s"))
        out.append(_lost_row(name, runs))
        out.append(_row(name, "history kept (archived of sent)", runs, "history_kept_pct", "%"))
    runs = _runs(results, "idle")
    if first := _first(runs):
        name = f"idle N={first['clients']}"
        rss_goal = _each_front(runs, f"≤ {IDLE_RSS_GOAL_MB:.0f} MB", lambda r: r["rss_mb"] <= IDLE_RSS_GOAL_MB)
        login_goal = _each_front(runs, f"≤ {LOGIN_ALL_GOAL_S:.0f} s", lambda r: r["login_all_s"] <= LOGIN_ALL_GOAL_S)
        out.append(_row(name, "server RSS", runs, "rss_mb", "MB", False, rss_goal))
        out.append(_row(name, "time to log all in", runs, "login_all_s", "s", False, login_goal))
    runs = _runs(results, "storm")
    if first := _first(runs):
        name = f"login storm N={first['clients']}"
        out.append(_row(name, "time to the last welcome", runs, "login_all_s", "s", higher_is_better=False))
        if text := runs.get("chatnet"):  # a mail count is text mode's welcome
            unavailable = text.get("mail_unavailable", 0)
            out.append(Row(name, "welcomed without a mail count", {"chatnet": unavailable}, "logins",
                           {"chatnet": ("0", unavailable == 0)}, higher_is_better=False))  # fmt: skip
    m = results.get("chatnet", {}).get("mail")
    if m:
        name = f"offline mail {m['messages']}"
        stored_goal = m["confirmed"] == m["messages"] and m["stored_per_s"] >= MAIL_STORED_GOAL
        text_only = {"chatnet": (f"≥ {MAIL_STORED_GOAL:,.0f}/s, all confirmed", stored_goal)}
        out.append(Row(name, "stored/s (each confirmed)", {"chatnet": m["stored_per_s"]}, "msg/s", text_only))
        out.append(Row(name, "login: last [Stored] line", {"chatnet": m["last_line_s"]}, "s", higher_is_better=False))
        acked = m["acked_s"]
        out.append(Row(name, "login: all delivered + acked", {"chatnet": acked}, "s",
                       {"chatnet": (f"≤ {PENDING_ACKED_GOAL_S} s", acked is not None and acked <= PENDING_ACKED_GOAL_S)},
                       higher_is_better=False))  # fmt: skip
        out.append(Row(name, "lost", {"chatnet": m["lost"]}, "msgs", {"chatnet": ("0", m["lost"] == 0)}, higher_is_better=False))
    return out


def _first(runs: Runs) -> dict[str, Any] | None:
    return next((run for run in runs.values() if run), None)


def _room_rows(runs: Runs) -> list[Row]:
    """The room fan-out (issue 11): deliveries, per server-CPU-second (the goal), p99."""
    first = _first(runs)
    if first is None:
        return []
    name = f"room N={first['clients']} @ {first['offered_per_s']:.0f} msg/s"
    goals = _per_cpu_goals(runs, {front: 1.0 for front in FRONTS})
    return [
        _row(name, "deliveries/s", runs, "delivered_per_s", "deliveries/s"),
        _row(name, "deliveries per server-CPU-s", runs, "delivered_per_cpu_s", "deliveries/cpu-s", goals=goals),
        _row(name, "server CPU share", runs, "server_cpu_share", "cores"),
        _row(name, "generator CPU share", runs, "generator_cpu_share", "cores"),
        _row(name, "p50 send → receive", runs, "latency_p50_ms", "ms", higher_is_better=False),
        _row(name, "p99 send → receive", runs, "latency_p99_ms", "ms", higher_is_better=False),
        _lost_row(name, runs),
        _row(name, "log in + join, all members", runs, "login_all_s", "s", higher_is_better=False),
    ]  # fmt: skip


def _lost_row(name: str, runs: Runs) -> Row:
    values: dict[str, float | None] = {server: _lost(run) for server, run in runs.items()}
    goals = _each_front(runs, "0", lambda run: _lost(run) == 0)
    return Row(name, "lost (+ out of order)", values, "msgs", goals, higher_is_better=False)


def _lost(run: dict[str, Any] | None) -> int | None:
    return run["lost"] + run["out_of_order"] if run else None


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "cores":
        return f"{value:.2f}"
    if unit == "%":
        return f"{value:.1f}"
    if unit in ("ms", "s", "MB"):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return f"{value:,.0f}"


_MET: Final = {True: "met", False: "**not met**", None: ""}


def _goal_cells(row: Row) -> tuple[str, str]:
    """The goal and whether it is met; per front ("text …; IRC …") where they differ."""
    goals = {front: goal for front, goal in row.goals.items() if goal[0] or goal[1] is not None}
    if not goals:
        return "", ""
    texts = {text for text, _ in goals.values()}
    verdicts = {met for _, met in goals.values()}
    goal = texts.pop() if len(texts) == 1 else "; ".join(f"{SHORT[f]} {text}" for f, (text, _) in goals.items())
    met = _MET[verdicts.pop()] if len(verdicts) == 1 else ", ".join(f"{SHORT[f]} {_MET[m]}" for f, (_, m) in goals.items())
    return goal, met


def columns(results: dict[str, Any]) -> list[str]:
    """The servers that have figures in these results (a server not run has no column)."""
    return [server for server in SERVERS if results.get(server)]


def table(results: dict[str, Any]) -> str:
    """A Markdown table (what bench/README.md keeps as the record): every server that ran,
    then each chatnet front's ratio to each peer that ran, the goal and whether it is met."""
    shown = columns(results) or ["chatnet", "ngircd"]
    ratios = [(front, peer) for peer in PEERS if peer in shown for front in FRONTS if front in shown]
    head = ["workload", "metric", *(LABELS[s] for s in shown), *(f"{LABELS[f]} / {LABELS[p]}" for f, p in ratios), "goal", "met"]
    align = ["---", "---", *("---:" for _ in shown), *("---:" for _ in ratios), "---", "---"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for row in rows(results):
        cells = [row.workload, f"{row.metric} ({row.unit})", *(_fmt(row.value(s), row.unit) for s in shown)]
        cells += [f"{r:.2f}×" if (r := row.ratio(f, p)) is not None else "—" for f, p in ratios]
        cells += _goal_cells(row)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- chatnet as several nodes (--nodes N) --------------------------------------------

# Each front's baseline (chatnet alone, no Redis: the regular run) and its node runs
# ("chatnet-nodes-1", "chatnet-nodes-2", …), in the results under those names.
NODE_FRONTS: Final = {"chatnet": "text", "chatnet-irc": "IRC"}
NODE_WORKLOADS: Final = ("paced", "throughput")  # in the table's order

NodeRun = dict[str, Any]
# (metric, unit, figure of a run given the 1-node run of its front and workload)
NodeMetric = tuple[str, str, Callable[[NodeRun, NodeRun | None], float | None]]


def node_runs(results: dict[str, Any]) -> dict[str, list[tuple[int, str]]]:
    """Per front that has node runs: (node count, results key), fewest nodes first."""
    found: dict[str, list[tuple[int, str]]] = {}
    for key, value in results.items():
        for front in NODE_FRONTS:
            prefix = f"{front}-nodes-"
            if key.startswith(prefix) and key[len(prefix) :].isdigit() and isinstance(value, dict) and value:
                found.setdefault(front, []).append((int(key[len(prefix) :]), key))
    return {front: sorted(runs) for front, runs in found.items()}


def _node_columns(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(results key, label, front) per column: each front's regular run (one node, no
    Redis) when it ran throughput, then its node runs."""
    columns: list[tuple[str, str, str]] = []
    for front, runs in node_runs(results).items():
        if results.get(front, {}).get("throughput"):
            columns.append((front, f"{NODE_FRONTS[front]}, 1 node, no Redis", front))
        columns += [(key, f"{NODE_FRONTS[front]}, {n} node{'s' if n > 1 else ''}", front) for n, key in runs]
    return columns


def _key(name: str) -> Callable[[NodeRun, NodeRun | None], float | None]:
    return lambda run, one: run.get(name)


def _per_msg_us(run: NodeRun, one: NodeRun | None) -> float | None:
    per_cpu = run.get("delivered_per_cpu_s")
    return 1e6 / per_cpu if per_cpu else None


def _cross_cost_us(run: NodeRun, one: NodeRun | None) -> float | None:
    """Node CPU per cross-node message (all nodes: the sender's publish, the other's
    receive and delivery), estimated: this run's node CPU less its local messages at
    the 1-node run's cost per message, over its cross-node messages."""
    cross = run.get("cross_node_delivered")
    if not cross or one is None or run.get("nodes", 1) < 2 or not one.get("delivered_in_window"):
        return None
    local_cost = one["server_cpu_s"] / one["delivered_in_window"]
    local = run["delivered_in_window"] - cross
    return float((run["server_cpu_s"] - local * local_cost) / cross * 1e6)


def _percent(name: str) -> Callable[[NodeRun, NodeRun | None], float | None]:
    def get(run: NodeRun, one: NodeRun | None) -> float | None:
        value = run.get(name)
        if value is None:
            return 0.0 if "nodes" not in run or run.get("nodes") == 1 else None
        return 100 * float(value)

    return get


NODE_METRICS: Final[list[NodeMetric]] = [
    ("delivered msg/s", "msg/s", _key("delivered_per_s")),
    ("delivered msg per node-CPU-s (all nodes)", "msg/cpu-s", _key("delivered_per_cpu_s")),
    ("delivered msg per CPU-s, nodes + Redis", "msg/cpu-s", lambda r, one: r.get("delivered_per_cpu_s_with_redis", r.get("delivered_per_cpu_s"))),
    ("node CPU per delivered msg", "µs", _per_msg_us),
    ("node CPU per cross-node msg (est.)", "µs", _cross_cost_us),
    ("node CPU share, all nodes", "cores", _key("server_cpu_share")),
    ("Redis CPU share", "cores", _key("redis_cpu_share")),
    ("Redis CPU per cross-node msg", "µs", _key("redis_cpu_us_per_cross_msg")),
    ("cross-node msgs per Redis PUBLISH", "msgs/publish", _key("cross_node_msgs_per_publish")),
    ("generator CPU share", "cores", _key("generator_cpu_share")),
    ("clients per node", "clients", lambda r, one: None),  # a list: see _node_cell
    ("cross-node share of pairs", "%", _percent("cross_node_pair_share")),
    ("cross-node share of deliveries", "%", _percent("cross_node_share")),
    ("p50 send → receive, local / cross-node", "ms", lambda r, one: None),  # two figures: see _node_cell
    ("p99 send → receive, local / cross-node", "ms", lambda r, one: None),
    ("lost (+ out of order)", "msgs", lambda r, one: r["lost"] + r["out_of_order"]),
]  # fmt: skip


def _node_cell(run: NodeRun | None, one: NodeRun | None, metric: str, unit: str, get: Callable[[NodeRun, NodeRun | None], float | None]) -> str:
    if run is None:
        return "—"
    if metric == "clients per node":
        counts = run.get("clients_per_node")
        return " / ".join(f"{c:,}" for c in counts.values()) if counts else f"{run['clients']:,}"
    if metric.startswith(("p50 ", "p99 ")):
        q = metric[:3]
        local, cross = run.get(f"local_latency_{q}_ms"), run.get(f"cross_node_latency_{q}_ms")
        if local is None and cross is None:  # a run without the split: all of it is local
            local = run.get(f"latency_{q}_ms")
        return f"{_fmt(local, unit)} / {_fmt(cross, unit)}"
    value = get(run, one)
    if unit == "%":
        return "—" if value is None else f"{value:.1f} %"
    if unit == "µs":
        return "—" if value is None else f"{value:.2f}"
    if unit == "msgs/publish":
        return "—" if value is None else f"{value:.1f}"
    return _fmt(value, unit)


def nodes_table(results: dict[str, Any]) -> str:
    """The node-scaling rows (--nodes N) as a Markdown table, "" without node runs: per
    workload (the paced run, then throughput per size), each front alone (no Redis), as
    1 node and as N nodes (CLUSTER_URL, one port), and N nodes' figure against 1 node's."""
    columns = _node_columns(results)
    if not columns:
        return ""
    fronts = node_runs(results)
    ratios = [(front, runs[0][1], runs[-1]) for front, runs in fronts.items() if len(runs) > 1 and runs[0][0] == 1]
    head = ["workload", "metric", *(label for _, label, _ in columns),
            *(f"{NODE_FRONTS[f]}: {last[0]} nodes / 1 node" for f, _, last in ratios)]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---", *("---:" for _ in head[2:])]) + "|"]
    for workload, clients, label in _node_workloads(results, columns):
        runs = {key: _node_run(results, key, workload, clients) for key, _, _ in columns}
        ones = {front: _node_run(results, runs_[0][1], workload, clients) if runs_[0][0] == 1 else None for front, runs_ in fronts.items()}
        for metric, unit, get in NODE_METRICS:
            cells = [label, f"{metric} ({unit})"]
            cells += [_node_cell(runs[key], ones.get(front), metric, unit, get) for key, _, front in columns]
            for front, one_key, (_, last_key) in ratios:
                one, last = runs.get(one_key), runs.get(last_key)
                va = get(one, ones.get(front)) if one else None
                vb = get(last, ones.get(front)) if last else None
                useful = unit in ("msg/s", "msg/cpu-s", "cores") or metric == "node CPU per delivered msg"
                cells.append(f"{vb / va:.2f}×" if useful and va and vb is not None else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _node_run(results: dict[str, Any], key: str, workload: str, clients: int) -> NodeRun | None:
    found = results.get(key, {}).get(workload)
    if isinstance(found, list):
        return _by_clients(found, clients)
    return found if found and found.get("clients") == clients else None


def _node_workloads(results: dict[str, Any], columns: list[tuple[str, str, str]]) -> list[tuple[str, int, str]]:
    """(workload, clients, label) for each block of rows, in the table's order."""
    blocks: list[tuple[str, int, str]] = []
    for workload in NODE_WORKLOADS:
        seen: dict[int, str] = {}
        for key, _, _ in columns:
            found = results.get(key, {}).get(workload)
            for run in found if isinstance(found, list) else [found] if found else []:
                rate = f" @ {run['offered_per_s']:,.0f} msg/s" if run.get("offered_per_s") else ""
                seen.setdefault(run["clients"], f"{workload} N={run['clients']}{rate}")
        blocks += [(workload, n, seen[n]) for n in sorted(seen)]
    return blocks


def header(results: dict[str, Any]) -> str:
    m = results["machine"]
    versions = results["versions"]
    chatnet = versions.get("chatnet") or versions.get("chatnet-irc", "")
    fronts = ", ".join(SHORT[f] for f in FRONTS if results.get(f))
    parts = [f"{results['date']} — {m['nproc']} × {m['cpu']}", f"Python {m['python']} ({m['loop']})",
             *(versions.get(peer, f"{peer} not run") for peer in PEERS),
             f"{chatnet or 'chatnet not run'}{f' ({fronts})' if fronts else ''}"]  # fmt: skip
    return ", ".join(parts)


def write_json(results: dict[str, Any], path: Path | None = None) -> Path:
    path = path or RESULTS_DIR / f"{results['date'].replace(':', '-')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def new_results(args: dict[str, Any]) -> dict[str, Any]:
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine(),
            "argv": sys.argv[1:], "settings": args, "versions": {}, **{server: {} for server in SERVERS}}  # fmt: skip
