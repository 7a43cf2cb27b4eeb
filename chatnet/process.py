"""Child processes: start one, wait until it is ready, stop it politely.

Used by the launcher, the integration tests and the benchmark, so all three start the
network the same way. Synchronous on purpose: it runs beside event loops, not in them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from chatnet.errors import ChildFailed

ROOT = Path(__file__).resolve().parent.parent

Probe = Callable[[], bool]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> Probe:
    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return probe


def http_ok(url: str) -> Probe:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    return probe


def mongo_reachable(url: str, timeout: float = 1.5) -> bool:
    """True when a MongoDB (or a wire-compatible server) answers a ping at `url`."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient = MongoClient(url, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=int(timeout * 1000))
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


def embedded_store_argv(port: int, data_dir: Path, host: str = "127.0.0.1") -> list[str]:
    """argv of the embedded MongoDB-wire server (nx-27017), one SQLite file per database
    under `data_dir`. Its own log file is unused: the child's output is the log."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable, "-c", "from nx_27017.nx_27017 import main; main()",
        "--host", host, "--port", str(port),
        "--data-dir", str(data_dir),
        "--pid-file", str(data_dir / f"nx-27017-{port}.pid"),
        "--log-file", os.devnull,
    ]  # fmt: skip


@dataclass
class Child:
    """One process of the network: how to start it and how to know it is ready."""

    name: str
    argv: Sequence[str]
    ready: Probe
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None
    # In its own session, a terminal's Ctrl-C reaches only the parent, which then
    # stops its children in order (the launcher does).
    new_session: bool = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 30.0) -> None:
        """Start and block until `ready()` answers, or raise ChildFailed."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            list(self.argv),
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=self._log if self._log else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=self.new_session,
        )
        deadline = time.monotonic() + timeout
        while not self.ready():
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
