"""The servers under test (chatnet through each of its fronts, and ngircd), started the
same way: own config, free loopback port, foreground process whose CPU time and memory
we read from /proc."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from chatnet.process import Child, Probe, embedded_store_argv, free_port, http_ok, port_open, script

logger = logging.getLogger("chatnet.bench")

HOST: Final = "127.0.0.1"
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
NGIRCD_PATHS: Final = ("/usr/sbin/ngircd", "/usr/bin/ngircd")


# --- /proc ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may hold spaces and parentheses: split after its last ')'.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def raise_open_files(wanted: int) -> int:
    """Lift the soft limit on open files to the hard one (children inherit it);
    root may also lift the hard one. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            logger.warning("open files limited to %d (wanted %d): the largest runs may fail", hard, wanted)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- the servers ---------------------------------------------------------------------


class Server:
    """What the benchmark needs of a server: a name, a port, the pid that does the work."""

    name: str
    protocol: str
    port: int

    @property
    def pid(self) -> int:
        raise NotImplementedError

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> float:
        return rss_mb(self.pid)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError


def find_ngircd() -> str | None:
    return shutil.which("ngircd") or next((p for p in NGIRCD_PATHS if os.access(p, os.X_OK)), None)


def ensure_ngircd(install: bool = True) -> str:
    """The ngircd binary; installed from Debian when missing and we are root."""
    found = find_ngircd()
    if found:
        return found
    if not install or os.geteuid() != 0:
        hint = "the benchmark does this itself when run as root"
        raise SystemExit(f"ngircd is not installed. Install it with `sudo apt-get install -y ngircd` ({hint}), or run with --servers chatnet.")
    logger.info("installing ngircd from Debian (apt-get install -y ngircd)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "ngircd"], check=False, env=env)
    found = find_ngircd()
    if not found:
        subprocess.run(["apt-get", "update"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "ngircd"], check=True, env=env)
        found = find_ngircd()
    if not found:
        raise SystemExit("apt-get could not install ngircd")
    # Debian starts the system service on install; it listens on 6667, we never use it.
    return found


# Flood protection off and every count limit raised: we measure routing, not throttling
# (bench/README.md, "Fairness"). chatnet has no per-client penalty to match.
NGIRCD_CONF: Final = """\
[Global]
    Name = irc.bench.local
    Info = chatnet benchmark peer
    AdminInfo1 = chatnet benchmark
    AdminInfo2 = loopback only
    AdminEMail = bench@localhost
    Listen = {host}
    Ports = {port}
    MotdPhrase = "benchmark"
    PidFile = {tmp}/ngircd.pid
    HelpFile = {tmp}/help.txt
[Limits]
    MaxPenaltyTime = 0
    MaxConnections = 0
    MaxConnectionsIP = 0
    MaxJoins = 0
    MaxNickLength = 30
    MaxListSize = 100000
    PingTimeout = 3600
    PongTimeout = 3600
    IdleTimeout = 0
    ConnectRetry = 60
[Options]
    DNS = no
    Ident = no
    PAM = no
    RequireAuthPing = no
    IncludeDir = {tmp}/conf.d
"""


@dataclass
class Ngircd(Server):
    tmp: Path
    binary: str = field(default_factory=lambda: find_ngircd() or "ngircd")
    name: str = "ngircd"
    protocol: str = "irc"
    port: int = field(default_factory=free_port)
    child: Child | None = None

    @property
    def pid(self) -> int:
        assert self.child is not None and self.child.pid is not None
        return self.child.pid

    def write_config(self) -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True)
        (self.tmp / "conf.d").mkdir(exist_ok=True)
        # ngircd drops root for "nobody": let it write its pid file.
        pid_file = self.tmp / "ngircd.pid"
        pid_file.touch()
        pid_file.chmod(0o666)
        (self.tmp / "help.txt").touch()
        config = self.tmp / "ngircd.conf"
        config.write_text(NGIRCD_CONF.format(host=HOST, port=self.port, tmp=self.tmp))
        return config

    def start(self) -> None:
        config = self.write_config()
        self.child = Child("ngircd", [self.binary, "--nodaemon", "-f", str(config)], port_open(HOST, self.port),
                           log_path=self.tmp / "ngircd.log")  # fmt: skip
        self.child.start()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=False).stdout
        return out.splitlines()[0] if out else "unknown"


# chatnet's fronts: the text mode of `nc` on CHAT_PORT, and IRC on IRC_PORT (the same
# chat server, driven by the same IRC adapter as ngircd).
FRONTS: Final = {"text": ("chatnet", "chatnet"), "irc": ("chatnet-irc", "irc")}  # front → (name, adapter)


@dataclass
class Chatnet(Server):
    """The embedded store, the message API and the chat server, as tests/support.py's
    Network starts them. `front` is the door the load generator uses: text mode on
    CHAT_PORT ("chatnet") or IRC on IRC_PORT ("chatnet-irc"); both listen either way, as
    in a deployment, each on a free port."""

    tmp: Path
    front: str = "text"
    chat_port: int = field(default_factory=free_port)
    irc_port: int = field(default_factory=free_port)
    irc_tls_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    store_port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    db: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:8]}")
    mongo_url: str | None = None  # an existing MongoDB instead of the embedded store
    children: dict[str, Child] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.front not in FRONTS:
            raise ValueError(f"unknown chatnet front {self.front!r} (one of {', '.join(FRONTS)})")

    @property  # type: ignore[override]
    def name(self) -> str:
        return FRONTS[self.front][0]

    @property  # type: ignore[override]
    def protocol(self) -> str:
        return FRONTS[self.front][1]

    @property  # type: ignore[override]
    def port(self) -> int:
        """Where the load generator connects: the front's port."""
        return self.irc_port if self.front == "irc" else self.chat_port

    @property
    def pid(self) -> int:
        pid = self.children["server"].pid
        assert pid is not None
        return pid

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    def env(self) -> dict[str, str]:
        return {
            "CHAT_HOST": HOST, "CHAT_PORT": str(self.chat_port), "IRC_PORT": str(self.irc_port),
            "IRC_TLS_PORT": str(self.irc_tls_port),  # only opened with a certificate; never the default 6697
            "API_HOST": HOST, "API_PORT": str(self.api_port), "API_TOKEN": self.token,
            "MONGO_URL": self.mongo_url or f"mongodb://{HOST}:{self.store_port}", "MONGO_DB": self.db,
            "DATA_DIR": str(self.tmp / "data"), "LOG_DIR": str(self.tmp / "logs"),
            "PYTHONUNBUFFERED": "1",
            # Flood control and the per-address limits off, as ngircd's penalties and
            # connection limits are (README, "Fairness"): every client comes from 127.0.0.1.
            # The same settings hold for the IRC front.
            "FLOOD_RATE": "0", "LOGIN_RATE": "0", "MAX_CONNECTIONS_PER_IP": "0",
            # No room joined at a first login: bench users would all pile into #general
            # (the room workload makes its own room).
            "DEFAULT_ROOMS": "",
        }  # fmt: skip

    def _start(self, name: str, argv: list[str], ready: Probe, timeout: float = 60) -> None:
        child = Child(name, argv, ready, env=self.env(), log_path=self.tmp / "logs" / f"{name}.log")
        self.children[name] = child
        child.start(timeout)

    def start(self) -> None:
        if self.mongo_url is None:
            self._start("store", embedded_store_argv(self.store_port, self.tmp / "data"), port_open(HOST, self.store_port))
        self._start("api", script("message_api.py"), http_ok(f"{self.api_url}/health"))
        self._start("server", script("async_server.py"), port_open(HOST, self.chat_port))
        if self.front == "irc":
            self._wait_for_irc()

    def _wait_for_irc(self, timeout: float = 10.0) -> None:
        """The chat server is up on CHAT_PORT; its IRC front opens beside it, or we stop."""
        irc = port_open(HOST, self.irc_port)
        deadline = time.monotonic() + timeout
        while not irc():
            if time.monotonic() > deadline:
                self.stop()
                log = self.tmp / "logs" / "server.log"
                tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
                raise RuntimeError(f"chatnet's chat server runs but nothing answers IRC on IRC_PORT={self.irc_port} "
                                   f"within {timeout:.0f} s (run with --front text to leave it out). Its log ends:\n"
                                   + "\n".join(tail))  # fmt: skip
            time.sleep(0.05)

    def stop(self) -> None:
        for name in reversed(list(self.children)):
            self.children.pop(name).stop()

    def cpu_all(self) -> dict[str, float]:
        """CPU seconds of every process of the network (the store and API should idle
        while chat flows: no database work on the online path)."""
        return {name: cpu_seconds(child.pid) for name, child in self.children.items() if child.pid and child.running}

    def version(self) -> str:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
        return f"chatnet {head.stdout.strip() or 'unknown'}"
