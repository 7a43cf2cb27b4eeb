"""irctest controller for chatnet: `--controller chatnet_controller` (with this folder on
PYTHONPATH; see run.sh beside it).

It starts chatnet the way a user does, `launcher.py --no-web --no-thermometer
--no-openai`, for every test: a fresh DATA_DIR and LOG_DIR in a temporary folder, free
ports for every listener, the IRC port being the one irctest chose, and a MONGO_URL
where nothing answers, so the launcher starts its own embedded store under that
DATA_DIR. It waits until the IRC port takes connections and at the end stops the
launcher (which stops its children in order) and then kills whatever of the launcher's
process tree is left.

chatnet has no server password (`PASS` is an account's password) and no services, so
tests that need either are skipped as not implemented by the controller, as irctest
controllers declare unsupported features. Its network operators' password is the API
token: API_TOKEN is `operpassword`, what irctest's tests send (`OPER operuser
operpassword`; the other controllers write it into their servers' configurations).

This file runs in irctest's virtual environment, not chatnet's: it imports irctest and
nothing from chatnet. It is not a test module; the repository's own pytest run never
collects it (see conftest.py here).
"""

from __future__ import annotations

import ast
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from irctest.basecontrollers import BaseServerController, DirectoryBasedController
from irctest.runner import NotImplementedByController

REPO = Path(__file__).resolve().parents[2]
# CHATNET_ROOT: run another copy of the tree (say, a snapshot taken before a run, so
# edits made meanwhile can't change the network half-way); the venv stays this repo's.
ROOT = Path(os.environ.get("CHATNET_ROOT") or REPO).resolve()
PYTHON = Path(os.environ.get("CHATNET_PYTHON") or REPO / ".venv" / "bin" / "python")
LAUNCHER = ROOT / "launcher.py"
# Set to keep each test's DATA_DIR and logs (printed at the end of the test).
KEEP = os.environ.get("CHATNET_IRCTEST_KEEP", "").lower() in ("1", "true", "yes")
# How long the launcher gets to stop its children cleanly before the rest is killed.
STOP_PATIENCE = 20.0
# How long the launcher may take until its chat server listens for IRC.
READY_TIMEOUT = 60.0
# What irctest's tests send as OPER's password (irctest's own controllers configure it).
OPER_PASSWORD = "operpassword"


def _setting_names() -> set[str]:
    """The environment variables chatnet's Settings read (field names upper-cased),
    taken from chatnet/config.py without importing it (pydantic is not installed here):
    the caller's environment must not change the network under test."""
    tree = ast.parse((ROOT / "chatnet" / "config.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Settings":
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id.upper())
    return names


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, from Linux /proc; None when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[19]


def _descendants(pid: int) -> list[tuple[int, str]]:
    """Every process below `pid` now, as (pid, start time): a pid is killed later only
    while it still names the same process."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    found: list[tuple[int, str]] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


class ChatnetController(BaseServerController, DirectoryBasedController):
    software_name = "chatnet"
    supported_sasl_mechanisms = {"PLAIN"}  # for accounts; without services no test can register one
    supports_sts = False

    def run(
        self,
        hostname: str,
        port: int,
        *,
        password: str | None,
        ssl: bool,
        run_services: bool,
        faketime: str | None,
        websocket_hostname: str | None,
        websocket_port: int | None,
    ) -> None:
        if websocket_hostname is not None or websocket_port is not None:
            raise NotImplementedByController("Websocket")
        if password is not None:
            raise NotImplementedByController("server password (chatnet's PASS is an account's password)")
        if run_services:
            raise NotImplementedByController("Services")
        assert self.proc is None
        self.port = port
        self.hostname = hostname
        self.ssl = ssl
        self.create_config()
        assert self.directory is not None

        # Every other listener gets a free port of its own; MONGO_URL names one where
        # nothing answers, so the launcher starts the embedded store in DATA_DIR.
        other = {name: self.get_hostname_and_port()[1] for name in ("CHAT_PORT", "CHAT_TLS_PORT", "API_PORT", "IRC_PORT", "IRC_TLS_PORT", "WEB_PORT", "NO_MONGO")}
        if ssl:
            other["IRC_TLS_PORT"] = port
        else:
            other["IRC_PORT"] = port

        env = {key: value for key, value in os.environ.items() if key not in _setting_names()}
        env.update(
            {
                "CHAT_HOST": "127.0.0.1",  # irctest says 0.0.0.0; loopback is enough
                "CHAT_PORT": str(other["CHAT_PORT"]),
                "CHAT_TLS_PORT": str(other["CHAT_TLS_PORT"]),
                "API_HOST": "127.0.0.1",
                "API_PORT": str(other["API_PORT"]),
                "WEB_PORT": str(other["WEB_PORT"]),
                "IRC": "true",
                "IRC_PORT": str(other["IRC_PORT"]),
                "IRC_TLS_PORT": str(other["IRC_TLS_PORT"]),
                "MONGO_URL": f"mongodb://127.0.0.1:{other['NO_MONGO']}",
                "DATA_DIR": str(self.directory / "data"),
                "LOG_DIR": str(self.directory / "logs"),
                # irctest opens many connections at once and sends fast.
                "FLOOD_RATE": "0",
                "LOGIN_RATE": "0",
                # No room joined behind the test's back.
                "DEFAULT_ROOMS": "",
                # The operators' password (`OPER <name> <API token>`), and the API's admin token.
                "API_TOKEN": OPER_PASSWORD,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if faketime and shutil.which("faketime"):
            command: list[str | Path] = ["faketime", "-f", faketime]
            self.faketime_enabled = True
        else:
            command = []
        command += [PYTHON, LAUNCHER, "--no-web", "--no-thermometer", "--no-openai"]
        self.proc = self.execute(command, proc_name="chatnet", cwd=self.directory, env=env)

    def wait_for_port(self) -> None:
        """Ready once the chat server logged that it listens for IRC on our port, and
        then the port answers. Only the port would not do: the launcher's own check
        that every port is free binds and listens on it for a moment, and a connection
        in that moment passes irctest's probe while nothing serves IRC yet."""
        if self.port_open:
            return
        assert self.directory is not None
        log = self.directory / "logs" / "server.log"
        said = f"listening for IRC{' with TLS' if self.ssl else ''} on 127.0.0.1:{self.port}"
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while not (log.exists() and f"{said}\n" in log.read_text(errors="replace")):
                self.check_is_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"chatnet did not log {said!r} within {READY_TIMEOUT:.0f} s")
                time.sleep(0.05)
            super().wait_for_port()
        except Exception:
            self._show_logs()
            raise

    def kill_proc(self) -> None:
        """SIGTERM to the launcher's process group (it stops its children in reverse
        order of start), then SIGKILL to whatever of its tree is still there: the
        launcher starts each child in a session of its own."""
        assert self.proc
        tree = _descendants(self.proc.pid)
        try:
            os.killpg(os.getpgid(self.proc.pid), signal.SIGTERM)
        except OSError:
            self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(STOP_PATIENCE)
        if self.proc.poll() is None:
            try:
                os.killpg(os.getpgid(self.proc.pid), signal.SIGKILL)
            except OSError:
                self.proc.kill()
        self.proc.wait(10)
        for pid, started in tree:
            stat = _stat(pid)
            if stat is not None and stat[1] == started:
                # Each child leads a session (and process group) of its own.
                for kill in (os.killpg, os.kill):
                    with contextlib.suppress(OSError):
                        kill(pid, signal.SIGKILL)
        self.proc = None

    def kill(self) -> None:
        if KEEP and self.directory is not None:
            kept = Path(tempfile.mkdtemp(prefix="chatnet-irctest-"))
            if self.proc:
                self.kill_proc()
            shutil.copytree(self.directory, kept, dirs_exist_ok=True)
            print(f"chatnet's data and logs kept in {kept}", file=sys.stderr)
        super().kill()

    def _show_logs(self) -> None:
        if self.directory is None:
            return
        for log in sorted((self.directory / "logs").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}", file=sys.stderr)


def get_irctest_controller_class() -> type[ChatnetController]:
    return ChatnetController
