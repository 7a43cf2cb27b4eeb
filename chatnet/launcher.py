"""The launcher: the whole network from one command, supervised.

    embedded store (only when nothing answers at MONGO_URL)
      → message API → chat server → web adapter → thermometer → openai bot

Each child is started only once the one before it is ready, logs to LOG_DIR/<name>.log,
and gets the launcher's whole environment (one set of variables configures the
network). A child that dies is restarted with backoff. SIGINT/SIGTERM stop the children
in reverse order — the store last, after everyone who writes to it has finished — and a
second one only hurries that along; nothing is left running.

`CHILDREN` is the table of what runs; a new process is one more row.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import SecretStr
from pydantic_core import to_jsonable_python

from chatnet.config import Settings
from chatnet.errors import ChildFailed
from chatnet.process import ROOT, Child, Probe, embedded_store_argv, free_port, http_ok, mongo_reachable, port_open, script

logger = logging.getLogger("chatnet.launcher")

START_TIMEOUT = 30.0
# Restart delays: 1, 2, 4 … seconds, capped; a child that stayed up this long
# starts again from the shortest delay.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
# How long a child may take to finish after SIGTERM before it is killed. The store
# gets longer: everything it holds must reach its file.
STOP_PATIENCE = 10.0
STORE_PATIENCE = 15.0
# After a second Ctrl-C: a moment to flush, then killed.
HURRY_PATIENCE = 1.0
# A bot probe logs in, so it is not repeated at the 50 ms pace of port probes.
PEER_PROBE_INTERVAL = 0.5


class Shutdown(Exception):
    """SIGINT/SIGTERM arrived: stop starting things and wind down."""


@dataclass(frozen=True)
class ChildSpec:
    """One row of the table: a root script, when it is ready, and what to tell people."""

    name: str  # also the log file's name and the --no-<flag>
    title: str
    script: str
    ready: Callable[[Settings], Probe]
    address: Callable[[Settings], str]
    optional: bool = False  # has a --no-<name> flag
    # Why it can't run with these settings (None: it can).
    unmet: Callable[[Settings], str | None] = lambda settings: None


def peer_online(host: str, port: int, name: str) -> Probe:
    """Ready when `name` is online on the chat server: a short JSON-mode login whose
    welcome frame lists who is online."""
    last = 0.0

    def probe() -> bool:
        nonlocal last
        if time.monotonic() - last < PEER_PROBE_INTERVAL:
            return False
        last = time.monotonic()
        login = {"type": "login", "user": f"_probe.{secrets.token_hex(4)}"}
        try:
            with socket.create_connection((host, port), timeout=2.0) as sock, sock.makefile("rwb") as stream:
                stream.readline()  # the prompt for people
                stream.write(json.dumps(login).encode() + b"\n")
                stream.flush()
                welcome = json.loads(stream.readline() or b"{}")
        except (OSError, ValueError):
            return False
        return name in (welcome.get("metadata", {}).get("online") or [])

    return probe


def _openai_unmet(settings: Settings) -> str | None:
    if settings.openai_api_key is None and settings.openai_base_url is None:
        return "set OPENAI_API_KEY or OPENAI_BASE_URL to start it"
    return None


CHILDREN: tuple[ChildSpec, ...] = (
    ChildSpec(
        "api", "message API", "message_api.py",
        ready=lambda s: http_ok(f"{s.api_url}/health"),
        address=lambda s: s.api_url,
    ),
    ChildSpec(
        "server", "chat server", "async_server.py",
        ready=lambda s: port_open(s.chat_host, s.chat_port),
        address=lambda s: f"{s.chat_host}:{s.chat_port}",
    ),
    ChildSpec(
        "web", "web adapter", "websocket_adapter.py", optional=True,
        ready=lambda s: port_open(s.web_host, s.web_port),
        address=lambda s: f"http://{s.web_host}:{s.web_port}",
    ),
    ChildSpec(
        "thermometer", "thermometer bot", "thermometer.py", optional=True,
        ready=lambda s: peer_online(s.chat_host, s.chat_port, s.thermometer_name),
        address=lambda s: f"peer '{s.thermometer_name}'",
    ),
    ChildSpec(
        "openai", "openai bot", "openai_bot.py", optional=True,
        ready=lambda s: peer_online(s.chat_host, s.chat_port, s.bot_name),
        address=lambda s: f"peer '{s.bot_name}'",
        unmet=_openai_unmet,
    ),
)  # fmt: skip


def optional_children() -> list[ChildSpec]:
    """The children a --no-<name> flag can leave out."""
    return [spec for spec in CHILDREN if spec.optional]


def child_env(settings: Settings) -> dict[str, str]:
    """Every setting as the environment variable a child reads it from."""
    env = {"PYTHONUNBUFFERED": "1"}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Path):
            value = str(value)
        elif not isinstance(value, str | int | float):
            value = json.dumps(to_jsonable_python(value))  # how pydantic-settings reads complex values
        env[name.upper()] = str(value)
    return env


def redact_url(url: str) -> str:
    """A MongoDB URL fit for the console: the password hidden."""
    return re.sub(r"(//[^:/@]+:)[^@/]+@", r"\1***@", url)


@dataclass
class Running:
    """A started child and its restart bookkeeping."""

    spec_title: str
    child: Child
    started_at: float = field(default_factory=time.monotonic)
    failures: int = 0
    restart_at: float | None = None


class Launcher:
    def __init__(self, settings: Settings, skip: set[str]) -> None:
        updates: dict[str, Any] = {"data_dir": settings.data_dir.resolve(), "log_dir": settings.log_dir.resolve()}
        self.token_generated = settings.api_token is None
        if self.token_generated:
            updates["api_token"] = SecretStr(secrets.token_urlsafe(32))
        self.settings = settings.model_copy(update=updates)
        self.skip = skip
        self.given_mongo_url = settings.mongo_url
        self.store_path: Path | None = None
        self.running: list[Running] = []
        self.skipped: dict[str, str] = {}
        self.stopping = False
        self.hurry = False

    # --- the whole run -------------------------------------------------------------

    def run(self) -> int:
        """Start, supervise until a signal, stop. The exit code."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        code = 0
        try:
            self._start_store()
            self._start_children()
            logger.info(self.banner())
            self._supervise()
        except Shutdown:
            pass
        except ChildFailed as exc:
            logger.error("Could not start chatnet: %s", exc)
            code = 1
        finally:
            self._stop_all()
        return code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            logger.info("Stopping chatnet (Ctrl-C again to hurry) …")
        else:
            self.hurry = True
            logger.info("Hurrying: children get %.0f s, then are killed; the store still closes cleanly.", HURRY_PATIENCE)

    def _check_stop(self) -> None:
        if self.stopping:
            raise Shutdown

    # --- starting ------------------------------------------------------------------

    def _start_store(self) -> None:
        """The embedded store, unless a MongoDB already answers at MONGO_URL."""
        if mongo_reachable(self.settings.mongo_url):
            logger.info("Using the MongoDB at %s", redact_url(self.settings.mongo_url))
            return
        self._check_stop()
        port = free_port()
        self.store_path = self.settings.data_dir / "store"
        self.settings = self.settings.model_copy(update={"mongo_url": f"mongodb://127.0.0.1:{port}"})
        argv = embedded_store_argv(port, self.store_path)
        self._start(ChildSpec("store", "embedded store", "", ready=lambda s: port_open("127.0.0.1", port), address=lambda s: s.mongo_url), argv)

    def _start_children(self) -> None:
        for spec in CHILDREN:
            reason = self._skip_reason(spec)
            if reason:
                self.skipped[spec.name] = reason
                continue
            self._check_stop()
            self._start(spec, script(spec.script))

    def _skip_reason(self, spec: ChildSpec) -> str | None:
        if spec.name in self.skip:
            return f"skipped (--no-{spec.name})"
        if not (ROOT / spec.script).exists():
            return f"skipped: {spec.script} is not there"
        unmet = spec.unmet(self.settings)
        return f"skipped: {unmet}" if unmet else None

    def _start(self, spec: ChildSpec, argv: list[str]) -> None:
        probe = spec.ready(self.settings)

        def ready() -> bool:
            self._check_stop()  # a Ctrl-C while waiting ends the wait
            return probe()

        child = Child(
            spec.name, argv, ready,
            env=child_env(self.settings),
            log_path=self.settings.log_dir / f"{spec.name}.log",
            new_session=True,
        )  # fmt: skip
        self.running.append(Running(spec.title, child))
        logger.info("Starting %s …", spec.title)
        child.start(START_TIMEOUT)
        logger.info("%s ready at %s (pid %s)", spec.title, spec.address(self.settings), child.pid)

    # --- supervising ---------------------------------------------------------------

    def _supervise(self) -> None:
        while not self.stopping:
            for entry in self.running:
                self._tend(entry)
                self._check_stop()
            time.sleep(0.2)

    def _tend(self, entry: Running) -> None:
        """Notice a death, restart when its backoff has passed."""
        now = time.monotonic()
        if entry.restart_at is None:
            if entry.child.running:
                return
            code = entry.child.stop()  # reaps it and closes its log
            self._schedule_restart(entry, f"{entry.spec_title} exited with code {code}")
        elif now >= entry.restart_at:
            entry.restart_at = None
            try:
                entry.child.start(START_TIMEOUT)
            except ChildFailed as exc:
                entry.child.stop()
                logger.debug("restart failed: %s", exc)
                self._schedule_restart(entry, f"{entry.spec_title} did not come back")
                return
            entry.started_at = time.monotonic()
            logger.info("%s restarted (pid %s)", entry.spec_title, entry.child.pid)

    def _schedule_restart(self, entry: Running, what: str) -> None:
        if time.monotonic() - entry.started_at > STABLE_AFTER:
            entry.failures = 0
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2**entry.failures)
        entry.failures += 1
        entry.restart_at = time.monotonic() + delay
        logger.warning("%s; restarting in %.0f s (see %s)", what, delay, entry.child.log_path)

    # --- stopping ------------------------------------------------------------------

    def _stop_all(self) -> None:
        """Reverse order of start: the store, started first, stops last."""
        self.stopping = True
        for entry in reversed(self.running):
            code = self._stop(entry.child)
            if code in (0, -signal.SIGTERM):
                # Ending on the SIGTERM we sent is a clean stop too: uvicorn shuts down
                # gracefully and then re-raises the signal it caught.
                logger.info("Stopped %s", entry.spec_title)
            elif code is not None:
                logger.info("Stopped %s (exit code %s)", entry.spec_title, code)
        logger.info("chatnet stopped.")

    def _stop(self, child: Child) -> int | None:
        process = child.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            since = time.monotonic()
            while process.poll() is None and time.monotonic() - since < self._patience(child):
                time.sleep(0.05)
        return child.stop(timeout=0)  # kills what is still there, closes the log

    def _patience(self, child: Child) -> float:
        if child.name == "store":
            return STORE_PATIENCE
        return HURRY_PATIENCE if self.hurry else STOP_PATIENCE

    # --- what people read ----------------------------------------------------------

    def banner(self) -> str:
        s = self.settings
        port_flag = "" if s.chat_port == 5000 else f" --port {s.chat_port}"
        host_flag = "" if s.chat_host == "127.0.0.1" else f" --host {s.chat_host}"
        web = f"http://{s.web_host}:{s.web_port}" if self._started("web") else f"(web adapter {self.skipped.get('web', 'not running')})"
        if self.store_path is not None:
            store = f"embedded, data in {self.store_path} (nothing answered at {redact_url(self.given_mongo_url)})"
        else:
            store = f"MongoDB at {redact_url(s.mongo_url)}, database '{s.mongo_db}'"
        token = "generated for this run (set API_TOKEN to choose one)" if self.token_generated else "from API_TOKEN"
        lines = [
            "",
            "chatnet is running.",
            f"  Browser:           {web}",
            f"  Terminal client:   {_python()} async_client.py{host_flag}{port_flag}   or   nc {s.chat_host} {s.chat_port}",
            f"  Message API docs:  {s.api_url}/docs",
            f"  API token:         {token}",
            f"  Store:             {store}",
            f"  Logs:              {s.log_dir}",
            "  Processes:",
        ]
        for entry in self.running:
            lines.append(f"    {entry.child.name:<12} pid {entry.child.pid:<8} {entry.spec_title}")
        for name, reason in self.skipped.items():
            lines.append(f"    {name:<12} {reason}")
        lines.append("Press Ctrl-C to stop.")
        return "\n".join(lines)

    def _started(self, name: str) -> bool:
        return any(entry.child.name == name for entry in self.running)


def _python() -> str:
    """How to name this interpreter to someone in the repository: the venv's when it is
    one (a bare `python` may lack the dependencies)."""
    try:
        return str(Path(sys.executable).relative_to(ROOT))
    except ValueError:
        return "python"


def run(settings: Settings, skip: set[str]) -> int:
    """Run the network until SIGINT/SIGTERM; the exit code."""
    return Launcher(settings, skip).run()
