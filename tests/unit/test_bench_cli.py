"""The benchmark's sequencing, without servers: each workload gets its server freshly
started, so what one leaves in a process (a connection table grown by the idle run)
does not weigh on the next."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import cli, report, workloads
from bench.servers import Server
from bench.workloads import Sizes


class Recorded(Server):
    """A server that only records when it is started and stopped."""

    name = "ngircd"
    protocol = "irc"
    port = 0

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def start(self) -> None:
        self.events.append("start")

    def stop(self) -> None:
        self.events.append("stop")

    def version(self) -> str:
        return "recorded"


def test_each_workload_runs_on_a_freshly_started_server(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    for name in ("idle", "room", "latency"):

        def step(server: Server, sizes: Sizes, profile: Path | None = None, name: str = name) -> dict[str, Any]:
            events.append(name)
            return {}

        monkeypatch.setattr(workloads, name, step)
    results = report.new_results({})
    cli.run_server(Recorded(events), ["latency", "idle", "room"], Sizes(), results, None, {})
    assert events == ["start", "idle", "stop", "start", "room", "stop", "start", "latency", "stop"]
    assert set(results["ngircd"]) == {"idle", "room", "latency"}


def test_a_failing_workload_stops_its_server_and_the_next_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []

    def broken(server: Server, sizes: Sizes) -> dict[str, Any]:
        events.append("storm")
        raise RuntimeError("the load generator fell over")

    def room(server: Server, sizes: Sizes, profile: Path | None = None) -> dict[str, Any]:
        events.append("room")
        return {"delivered": 1}

    monkeypatch.setattr(workloads, "storm", broken)
    monkeypatch.setattr(workloads, "room", room)
    results, failed = report.new_results({}), {}
    cli.run_server(Recorded(events), ["storm", "room"], Sizes(), results, None, failed)
    assert events == ["start", "storm", "stop", "start", "room", "stop"]
    assert failed == {"ngircd storm": "RuntimeError: the load generator fell over"}
    assert results["ngircd"] == {"room": {"delivered": 1}}
