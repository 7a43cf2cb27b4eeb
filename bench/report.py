"""Results as a table (side by side, with the ratio and the issue's goals) and as JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Row:
    workload: str
    metric: str
    chatnet: float | None
    ngircd: float | None
    unit: str
    goal: str = ""
    met: bool | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if self.chatnet is None or self.ngircd is None or self.ngircd == 0:
            return None
        return self.chatnet / self.ngircd


def _by_clients(runs: list[dict[str, Any]] | None, clients: int) -> dict[str, Any] | None:
    return next((r for r in runs or [] if r["clients"] == clients), None)


def rows(results: dict[str, Any]) -> list[Row]:
    """The table: one row per figure the issue asks for."""
    out: list[Row] = []
    chat, irc = results.get("chatnet", {}), results.get("ngircd", {})
    for n in sorted({r["clients"] for r in chat.get("throughput", []) + irc.get("throughput", [])}):
        c, i = _by_clients(chat.get("throughput"), n), _by_clients(irc.get("throughput"), n)
        out.append(Row(f"throughput N={n}", "delivered msg/s", _figure(c, "delivered_per_s"), _figure(i, "delivered_per_s"), "msg/s"))
        ratio_goal = None
        if c and i and c["delivered_per_cpu_s"] and i["delivered_per_cpu_s"]:
            ratio_goal = c["delivered_per_cpu_s"] / i["delivered_per_cpu_s"] >= 1.0
        out.append(Row(f"throughput N={n}", "delivered msg per server-CPU-s", _figure(c, "delivered_per_cpu_s"),
                       _figure(i, "delivered_per_cpu_s"), "msg/cpu-s", "≥ 1.0× ngircd" if n == 1000 else "",
                       ratio_goal if n == 1000 else None))  # fmt: skip
        out.append(Row(f"throughput N={n}", "server CPU share", _figure(c, "server_cpu_share"), _figure(i, "server_cpu_share"), "cores"))
        out.append(Row(f"throughput N={n}", "generator CPU share", _figure(c, "generator_cpu_share"), _figure(i, "generator_cpu_share"), "cores"))
        out.append(_lost_row(f"throughput N={n}", c, i))
    out.extend(_room_rows(chat.get("room"), irc.get("room")))
    c, i = chat.get("latency"), irc.get("latency")
    if c or i:
        name = f"latency N={(c or i)['clients']} @ {(c or i)['offered_per_s']:.0f} msg/s"
        for key, label in (("latency_p50_ms", "p50"), ("latency_p99_ms", "p99"), ("latency_max_ms", "max")):
            goal, met = ("≤ 1 ms", c[key] <= 1.0) if key == "latency_p99_ms" and c and c[key] is not None else ("", None)
            out.append(Row(name, label, c and c[key], i and i[key], "ms", goal, met, higher_is_better=False))
        out.append(Row(name, "delivered msg/s", c and c["delivered_per_s"], i and i["delivered_per_s"], "msg/s"))
        out.append(_lost_row(name, c, i))
    c, i = chat.get("idle"), irc.get("idle")
    if c or i:
        name = f"idle N={(c or i)['clients']}"
        out.append(Row(name, "server RSS", c and c["rss_mb"], i and i["rss_mb"], "MB", "≤ 80 MB",
                       c["rss_mb"] <= 80 if c else None, higher_is_better=False))  # fmt: skip
        out.append(Row(name, "time to log all in", c and c["login_all_s"], i and i["login_all_s"], "s", higher_is_better=False))
    c, i = chat.get("storm"), irc.get("storm")
    if c or i:
        name = f"login storm N={(c or i)['clients']}"
        out.append(Row(name, "time to the last welcome", c and c["login_all_s"], i and i["login_all_s"], "s", higher_is_better=False))
        if c:
            unavailable = c.get("mail_unavailable", 0)
            out.append(Row(name, "welcomed without a mail count", unavailable, None, "logins", "0", unavailable == 0, higher_is_better=False))
    m = chat.get("mail")
    if m:
        name = f"offline mail {m['messages']}"
        out.append(Row(name, "stored/s (each confirmed)", m["stored_per_s"], None, "msg/s", "",
                       m["confirmed"] == m["messages"] or None))  # fmt: skip
        out.append(Row(name, "login: last [Stored] line", m["last_line_s"], None, "s", higher_is_better=False))
        acked = m["acked_s"]
        out.append(Row(name, "login: all delivered + acked", acked, None, "s", "≤ 1 s",
                       acked is not None and acked <= 1.0, higher_is_better=False))  # fmt: skip
        out.append(Row(name, "lost", m["lost"], None, "msgs", "0", m["lost"] == 0, higher_is_better=False))
    return out


def _room_rows(c: dict[str, Any] | None, i: dict[str, Any] | None) -> list[Row]:
    """The room fan-out (issue 11): deliveries, per server-CPU-second (the goal), p99."""
    if not (c or i):
        return []
    either = c or i
    assert either is not None
    name = f"room N={either['clients']} @ {either['offered_per_s']:.0f} msg/s"
    met = None
    if c and i and c["delivered_per_cpu_s"] and i["delivered_per_cpu_s"]:
        met = c["delivered_per_cpu_s"] >= i["delivered_per_cpu_s"]
    return [
        Row(name, "deliveries/s", _figure(c, "delivered_per_s"), _figure(i, "delivered_per_s"), "deliveries/s"),
        Row(name, "deliveries per server-CPU-s", _figure(c, "delivered_per_cpu_s"), _figure(i, "delivered_per_cpu_s"),
            "deliveries/cpu-s", "≥ 1.0× ngircd", met),
        Row(name, "server CPU share", _figure(c, "server_cpu_share"), _figure(i, "server_cpu_share"), "cores"),
        Row(name, "generator CPU share", _figure(c, "generator_cpu_share"), _figure(i, "generator_cpu_share"), "cores"),
        Row(name, "p50 send → receive", _figure(c, "latency_p50_ms"), _figure(i, "latency_p50_ms"), "ms", higher_is_better=False),
        Row(name, "p99 send → receive", _figure(c, "latency_p99_ms"), _figure(i, "latency_p99_ms"), "ms", higher_is_better=False),
        _lost_row(name, c, i),
        Row(name, "log in + join, all members", _figure(c, "login_all_s"), _figure(i, "login_all_s"), "s", higher_is_better=False),
    ]  # fmt: skip


def _figure(run: dict[str, Any] | None, key: str) -> float | None:
    return run[key] if run else None


def _lost_row(name: str, c: dict[str, Any] | None, i: dict[str, Any] | None) -> Row:
    met = (_lost(c) == 0) if c else None
    return Row(name, "lost (+ out of order)", _lost(c), _lost(i), "msgs", "0", met, higher_is_better=False)


def _lost(run: dict[str, Any] | None) -> int | None:
    return run["lost"] + run["out_of_order"] if run else None


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "cores":
        return f"{value:.2f}"
    if unit in ("ms", "s", "MB"):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return f"{value:,.0f}"


def table(results: dict[str, Any]) -> str:
    """A Markdown table (what bench/README.md keeps as the record)."""
    lines = ["| workload | metric | chatnet | ngircd | chatnet / ngircd | goal | met |",
             "|---|---|---:|---:|---:|---|---|"]  # fmt: skip
    for row in rows(results):
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "—"
        met = {True: "met", False: "**not met**", None: ""}[row.met]
        lines.append(f"| {row.workload} | {row.metric} ({row.unit}) | {_fmt(row.chatnet, row.unit)} | "
                     f"{_fmt(row.ngircd, row.unit)} | {ratio} | {row.goal} | {met} |")  # fmt: skip
    return "\n".join(lines)


def header(results: dict[str, Any]) -> str:
    m = results["machine"]
    return (f"{results['date']} — {m['nproc']} × {m['cpu']}, Python {m['python']} ({m['loop']}), "
            f"{results['versions'].get('ngircd', 'ngircd not run')}, {results['versions'].get('chatnet', '')}")  # fmt: skip


def write_json(results: dict[str, Any], path: Path | None = None) -> Path:
    path = path or RESULTS_DIR / f"{results['date'].replace(':', '-')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def new_results(args: dict[str, Any]) -> dict[str, Any]:
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine(),
            "argv": sys.argv[1:], "settings": args, "versions": {}, "chatnet": {}, "ngircd": {}}  # fmt: skip
