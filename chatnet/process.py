"""Child processes: start one, wait until it is ready, stop it politely.

Used by the launcher, the integration tests and the benchmark, so all three start the
network the same way. Synchronous on purpose: it runs beside event loops, not in them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from chatnet.errors import ChildFailed

# prctl(2): the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1
# Set in the environment of the children Child starts (and only theirs: a script run
# by hand has no supervising parent to die with).
CHILD_ENV = "CHATNET_SUPERVISED"

ROOT = Path(__file__).resolve().parent.parent

Probe = Callable[[], bool]

# The line each server logs once it listens, group 1 the port it really got: started on
# port 0, a child tells its port itself (no free port picked here that another process
# could take first).
STORE_LISTENING = r"Listening on \S*:(\d+)$"  # nx-27017 (asyncio mode)
API_LISTENING = r"Uvicorn running on \w+://\S*:(\d+) "  # uvicorn logs the real port of port 0
CHAT_LISTENING = r"listening on \S*:(\d+)$"  # chatnet.server
CHAT_TLS_LISTENING = r"listening with TLS on \S*:(\d+)$"  # chatnet.server, with TLS_CERT/TLS_KEY
IRC_LISTENING = r"listening for IRC on \S*:(\d+)$"  # chatnet.server, unless IRC=false
IRC_TLS_LISTENING = r"listening for IRC with TLS on \S*:(\d+)$"
WEB_LISTENING = r"web page on https?://\S*:(\d+) "  # chatnet.web (https with WEB_TLS)


def on_port(pattern: str, port: int) -> str:
    """One of the patterns above matching only `port` (any port for 0): a child that was
    told its port must say it listens on exactly that one."""
    return pattern if port == 0 else pattern.replace(r"(\d+)", f"({port})", 1)


def die_with_parent() -> None:
    """Called first thing by every child: on Linux it gets SIGTERM when its parent dies,
    even by `kill -9`, so no child outlives the launcher (or a test run) holding its
    ports. A child whose parent is already gone by then stops at once. Elsewhere
    nothing is done."""
    if not sys.platform.startswith("linux") or os.environ.get(CHILD_ENV) != "1":
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # orphaned before the line above: the parent died meanwhile
        raise SystemExit(0)


def yield_cpu(mode: str) -> None:
    """Called by the processes behind live chat (the message API, the embedded store)
    before they start a thread, which inherits it: with `mode` "idle" (BACKGROUND_CPU)
    this process joins the idle scheduling class, where a waking chat server or client
    takes the core at once. Without it, their bursts of store work (a history batch of
    1,000, the conversation previews) held two shared cores often enough to double the
    chat server's p99 (bench/README.md). Where the class does not exist, nothing is done."""
    if mode == "idle" and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> Probe:
    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return probe


def http_ok(url: str) -> Probe:
    # Imported here, not with the module: urllib.request brings http.client, email and
    # tempfile, megabytes the chat server (which imports this module) never uses.
    import urllib.error
    import urllib.request

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    return probe


def mongo_reachable(url: str, timeout: float = 1.5) -> bool:
    """True when a MongoDB (or a wire-compatible server) answers a ping at `url`."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=int(timeout * 1000))
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def script(name: str, *args: str) -> list[str]:
    """argv running one of the root scripts with this interpreter."""
    return [sys.executable, str(ROOT / name), *args]


# The embedded store's process: supervised like every child, in the background class
# unless BACKGROUND_CPU says otherwise (read from its environment as every process reads it).
EMBEDDED_STORE_MAIN = (
    "from chatnet.process import die_with_parent, yield_cpu; from chatnet.config import Settings; "
    "die_with_parent(); yield_cpu(Settings().background_cpu); "
    "from nx_27017.nx_27017 import main; main()"
)


def embedded_store_argv(port: int, data_dir: Path, host: str = "127.0.0.1") -> list[str]:
    """argv of the embedded MongoDB-wire server (nx-27017), one SQLite file per database
    under `data_dir`. Its own log file is unused: the child's output is the log."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable, "-c", EMBEDDED_STORE_MAIN,
        "--host", host, "--port", str(port),
        "--data-dir", str(data_dir),
        "--pid-file", str(data_dir / f"nx-27017-{port}.pid"),
        "--log-file", os.devnull,
    ]  # fmt: skip


@dataclass
class Child:
    """One process of the network: how to start it and how to know it is ready.

    With `listening` (a regex whose group 1 is a port) the port is learned from the
    child's log at each start, before `ready` is polled, so a probe may read `port`.
    `argv` may be a function of the port to bind: 0 at the first start, the learned
    port at a restart, so whoever knew the address finds the child there again."""

    name: str
    argv: Sequence[str] | Callable[[int], Sequence[str]]
    ready: Probe
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None
    # In its own session, a terminal's Ctrl-C reaches only the parent, which then
    # stops its children in order (the launcher does).
    new_session: bool = False
    listening: str | None = None
    port: int | None = None
    # More lines each start must log before `ready` is polled (regexes, like
    # `listening`; no port learned): a second listener, say.
    also_logged: Sequence[str] = ()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 30.0) -> None:
        """Start and block until `ready()` answers (and, with `listening`, the child has
        said its port), or raise ChildFailed."""
        if (self.listening is not None or self.also_logged) and self.log_path is None:
            raise ValueError(f"{self.name}: reading what the child logs needs a log_path")
        scanned = 0  # how far this start's output has been searched for the port
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it until stop()
            scanned = self.log_path.stat().st_size  # a restart appends: older lines don't count
        argv = self.argv(self.port or 0) if callable(self.argv) else self.argv
        learned = self.listening is None
        unseen = set(self.also_logged)
        self.process = subprocess.Popen(
            list(argv),
            env={**os.environ, **self.env, CHILD_ENV: "1"},
            stdin=subprocess.DEVNULL,
            stdout=self._log if self._log else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=self.new_session,
        )
        deadline = time.monotonic() + timeout
        while True:
            if not learned or unseen:
                port, scanned = self._scan_log(scanned, unseen)
                if port == 0:
                    self.stop()
                    raise ChildFailed(f"{self.name} logged port 0, not the port it got.{self._log_tail()}")
                if port is not None and not learned:
                    self.port, learned = port, True
            if learned and not unseen and self.ready():
                return
            if self.process.poll() is not None:
                raise ChildFailed(f"{self.name} exited with code {self.process.returncode}.{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ChildFailed(f"{self.name} was not ready after {timeout:.0f} s.{self._log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log:
            self._log.close()
            self._log = None
        return process.returncode

    def _scan_log(self, offset: int, unseen: set[str]) -> tuple[int | None, int]:
        """The port of the first `listening` line after `offset` (None: not yet), and
        where the next search starts (after the last complete line read). Patterns of
        `unseen` that a line matches are taken out of it."""
        if self.log_path is None:
            raise ValueError(f"{self.name}: reading what the child logs needs a log_path")
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        port = None
        for line in complete.decode(errors="replace").splitlines():
            line = line.rstrip()
            unseen.difference_update([pattern for pattern in unseen if re.search(pattern, line)])
            match = re.search(self.listening, line) if self.listening is not None and port is None else None
            if match:
                port = int(match.group(1))
        return port, offset + len(complete)

    def kill(self) -> None:
        """Die without a word (tests of crashes)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        if self._log:
            self._log.flush()
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- last lines of " + str(self.log_path) + " ---\n" + "\n".join(tail)
