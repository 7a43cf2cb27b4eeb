"""The servers under test (chatnet through each of its fronts, ngircd and InspIRCd),
started the same way: own config, free loopback port, foreground process whose CPU time and memory
we read from /proc. `ChatnetNodes` is chatnet as several nodes behind one port (one
Redis of its own joining them), for the node-scaling rows (`--nodes N`)."""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from chatnet import native
from chatnet.process import CHAT_LISTENING, IRC_LISTENING, Child, Probe, embedded_store_argv, free_port, http_ok, on_port, port_open, script

logger = logging.getLogger("chatnet.bench")

HOST: Final = "127.0.0.1"
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
NGIRCD_PATHS: Final = ("/usr/sbin/ngircd", "/usr/bin/ngircd")
INSPIRCD_PATHS: Final = ("/usr/sbin/inspircd", "/usr/bin/inspircd")
REDIS_PATHS: Final = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")


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
    # Logins the generator keeps in progress per worker at the least (see Inspircd).
    min_connect_concurrency: int = 0

    @property
    def pid(self) -> int:
        raise NotImplementedError

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def counters(self) -> dict[str, float]:
        """Anything else read at the window's edges (its change is in the results)."""
        return {}

    def rss(self) -> float:
        return rss_mb(self.pid)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError


def find_binary(name: str, paths: tuple[str, ...]) -> str | None:
    return shutil.which(name) or next((p for p in paths if os.access(p, os.X_OK)), None)


def find_ngircd() -> str | None:
    return find_binary("ngircd", NGIRCD_PATHS)


def find_inspircd() -> str | None:
    return find_binary("inspircd", INSPIRCD_PATHS)


def ensure_package(name: str, paths: tuple[str, ...], install: bool = True) -> str:
    """A peer server's binary (Debian's package of that name); installed when missing
    and we are root. Debian enables its system service on install; it listens on 6667
    where a system has one running, and the benchmark never uses it."""
    found = find_binary(name, paths)
    if found:
        return found
    if not install or os.geteuid() != 0:
        hint = "the benchmark does this itself when run as root"
        raise SystemExit(f"{name} is not installed. Install it with `sudo apt-get install -y {name}` ({hint}), or leave it out of --servers.")
    logger.info("installing %s from Debian (apt-get install -y %s)", name, name)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", name], check=False, env=env)
    found = find_binary(name, paths)
    if not found:
        subprocess.run(["apt-get", "update"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", name], check=True, env=env)
        found = find_binary(name, paths)
    if not found:
        raise SystemExit(f"apt-get could not install {name}")
    return found


def ensure_ngircd(install: bool = True) -> str:
    return ensure_package("ngircd", NGIRCD_PATHS, install)


def ensure_inspircd(install: bool = True) -> str:
    return ensure_package("inspircd", INSPIRCD_PATHS, install)


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


class PeerServer(Server):
    """A peer IRC server: one foreground process of a Debian binary."""

    binary: str
    child: Child | None

    @property
    def pid(self) -> int:
        assert self.child is not None and self.child.pid is not None
        return self.child.pid

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        return out.splitlines()[0] if out else "unknown"


@dataclass
class Ngircd(PeerServer):
    tmp: Path
    binary: str = field(default_factory=lambda: find_ngircd() or "ngircd")
    name: str = "ngircd"
    protocol: str = "irc"
    port: int = field(default_factory=free_port)
    child: Child | None = None

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


# InspIRCd 3 as a fair peer (bench/README.md, "Fairness"): loopback only; no DNS or
# ident lookups (resolvehostnames, useident); flood control off as for ngircd and chatnet
# (fakelag off, and a penalty threshold no client reaches, drained at a million commands
# a second: threshold 0 is not "off", it quits a client after 20 lines); clone and
# connection limits, send and receive queues and channels per user raised past any
# workload; nothing linked, no services, WHOWAS off (it keeps a record per quit).
INSPIRCD_CONF: Final = """\
<server name="irc.bench.local" description="chatnet benchmark peer" network="bench">
<admin name="chatnet benchmark" nick="bench" email="bench@localhost">
<bind address="{host}" port="{port}" type="clients">
<connect name="bench" allow="*" timeout="3600" pingfreq="3600" threshold="1000000000" commandrate="1000000000" fakelag="off"
         hardsendq="1048576" softsendq="1048576" recvq="1048576" localmax="1000000" globalmax="1000000"
         limit="1000000" maxconnwarn="no" resolvehostnames="no" useident="no" uniqueusername="no">
<performance netbuffersize="10240" somaxconn="4096" softlimit="1000000" clonesonconnect="no" quietbursts="yes">
<channels users="1000000" opers="1000000">
<limits maxnick="30" maxchan="64" maxtopic="307">
<security maxtargets="20" hideserver="" userstats="Pu">
<dns timeout="1">
<pid file="{tmp}/inspircd.pid">
<files motd="{tmp}/motd">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{tmp}/inspircd-events.log">
<options prefixquit="Quit: " syntaxhints="no">
<whowas groupsize="0" maxgroups="0">
"""


@dataclass
class Inspircd(PeerServer):
    """InspIRCd (Debian's), in the foreground. It completes registrations in a pass it
    makes once a second, so a login waits up to a second for its 001: the generator
    starts more logins at once for it (`min_connect_concurrency`), or logging in 10,000
    clients would take minutes; that is the server's pace, not the load's."""

    tmp: Path
    binary: str = field(default_factory=lambda: find_inspircd() or "inspircd")
    name: str = "inspircd"
    protocol: str = "irc"
    port: int = field(default_factory=free_port)
    min_connect_concurrency: int = 1000
    child: Child | None = None

    def write_config(self) -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True)
        (self.tmp / "motd").write_text("benchmark\n")
        config = self.tmp / "inspircd.conf"
        config.write_text(INSPIRCD_CONF.format(host=HOST, port=self.port, tmp=self.tmp))
        return config

    def start(self) -> None:
        config = self.write_config()
        # --runasroot: the benchmark runs as root (it installs the peers); InspIRCd
        # refuses root without it. --nofork keeps it the child whose CPU we read.
        argv = [self.binary, "--nofork", "--runasroot", f"--config={config}"]
        self.child = Child("inspircd", argv, port_open(HOST, self.port), log_path=self.tmp / "inspircd.log")
        self.child.start()


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

    def history_count(self) -> int | None:
        """Direct messages the history view holds (what the archive stored), from the
        message API's detailed health; None when it can't be asked."""
        request = urllib.request.Request(f"{self.api_url}/health/detailed", headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                counts = json.load(response)["counts"]
        except (OSError, ValueError, KeyError):
            return None
        if counts.get("messages") is None:
            return None
        return int(counts["messages"]) - int(counts.get("pending") or 0)

    def version(self) -> str:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
        # The server runs from this tree and interpreter, so it runs the build this process does.
        build = "compiled" if native.active else "Python"
        return f"chatnet {head.stdout.strip() or 'unknown'} {build}"


# --- chatnet as several nodes --------------------------------------------------------


def find_redis() -> str | None:
    return shutil.which("redis-server") or next((p for p in REDIS_PATHS if os.access(p, os.X_OK)), None)


# What a node logs when it admits someone (chatnet.router's `_admit`, e.g. "… INFO
# chatnet.server: r3a12 logged in from 127.0.0.1:52864 (text mode, guest)"): which node
# each client landed on, so which messages crossed from node to node is counted, not guessed.
LOGGED_IN: Final = re.compile(r"^\S+ \S+ INFO \S+: (\S+) logged in from \S+ \(", re.M)


@dataclass
class ChatnetNodes(Chatnet):
    """chatnet as `nodes` chat-server nodes sharing CHAT_PORT and IRC_PORT (SO_REUSEPORT:
    the kernel spreads the connections), joined by a redis-server of its own on a free
    loopback port, keeping nothing on disk; the store and the message API as for
    `Chatnet`. Every node runs with CLUSTER_URL, even a single one (so one node here
    pays what a node of a network pays: its claims in Redis, its presence)."""

    nodes: int = 2
    redis_port: int = field(default_factory=free_port)
    redis_binary: str = field(default_factory=lambda: find_redis() or "redis-server")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nodes < 1:
            raise ValueError("a network needs at least one node")

    @property  # type: ignore[override]
    def name(self) -> str:
        return f"{FRONTS[self.front][0]}-nodes-{self.nodes}"

    @property
    def node_names(self) -> list[str]:
        """The nodes' child names (and log files): server, server2, server3, …"""
        return ["server", *(f"server{n}" for n in range(2, self.nodes + 1))]

    @property
    def node_pids(self) -> list[int]:
        return [pid for name in self.node_names if (pid := self.children[name].pid) is not None]

    @property
    def redis_pid(self) -> int | None:
        child = self.children.get("redis")
        return child.pid if child else None

    def cpu(self) -> float:
        """CPU seconds of every node together (Redis's is apart: `cpu_all()["redis"]`)."""
        return sum(cpu_seconds(pid) for pid in self.node_pids)

    def cpu_all(self) -> dict[str, float]:
        """As for `Chatnet`, with Redis's CPU from its own `INFO cpu` (microseconds) when
        it answers: it uses a few hundredths of a core, a few clock ticks in a window."""
        found = super().cpu_all()
        if "redis" in found and (precise := self.redis_cpu()) is not None:
            found["redis"] = precise
        return found

    def redis_cpu(self) -> float | None:
        """used_cpu_sys + used_cpu_user of `INFO cpu` (the process, all its threads)."""
        fields = self.redis_info("cpu")
        try:
            return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])
        except (KeyError, ValueError):
            return None

    def counters(self) -> dict[str, float]:
        """Redis's PUBLISH calls so far (`INFO commandstats`): the forwards between nodes
        (one per batch) and the presence events; with the deliveries that crossed they
        say how many messages one publish carried."""
        stats = self.redis_info("commandstats").get("cmdstat_publish", "")
        calls = dict(item.split("=", 1) for item in stats.split(",") if "=" in item).get("calls")
        return {"redis_publish_calls": float(calls)} if calls and calls.isdigit() else {}

    def redis_info(self, section: str) -> dict[str, str]:
        """One section of Redis's INFO as field → value ({} when Redis does not answer)."""
        try:
            with socket.create_connection((HOST, self.redis_port), timeout=2.0) as sock:
                sock.sendall(b"INFO %s\r\n" % section.encode())
                data = b""
                while b"\r\n" not in data or len(data) < _bulk_end(data):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return {}
        lines = data.decode(errors="replace").splitlines()[1:]
        return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))

    def rss(self) -> float:
        return sum(rss_mb(pid) for pid in self.node_pids)

    def env(self) -> dict[str, str]:
        return {**super().env(), "CLUSTER_URL": f"redis://{HOST}:{self.redis_port}/0"}

    def start(self) -> None:
        if self.mongo_url is None:
            self._start("store", embedded_store_argv(self.store_port, self.tmp / "data"), port_open(HOST, self.store_port))
        self._start_redis()
        self._start("api", script("message_api.py"), http_ok(f"{self.api_url}/health"))
        for name in self.node_names:
            self._start_node(name)

    def _start_redis(self) -> None:
        if not os.access(self.redis_binary, os.X_OK) and shutil.which(self.redis_binary) is None:
            raise RuntimeError("chatnet's nodes need redis-server: sudo apt-get install -y redis-server")
        argv = [self.redis_binary, "--port", str(self.redis_port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--dir", str(self.tmp)]  # fmt: skip
        self._start("redis", argv, port_open(HOST, self.redis_port))

    def _start_node(self, name: str) -> None:
        """One node; ready once it says it listens on the shared ports itself (another
        node answering there proves nothing)."""
        child = Child(
            name, script("async_server.py"), port_open(HOST, self.chat_port), env=self.env(),
            log_path=self.tmp / "logs" / f"{name}.log",
            listening=on_port(CHAT_LISTENING, self.chat_port), also_logged=[on_port(IRC_LISTENING, self.irc_port)],
        )  # fmt: skip
        self.children[name] = child
        child.start(60)

    def stop(self) -> None:
        """Every node told to stop at once (each may spend its shutdown grace on the
        history backlog), then everything in reverse order, Redis and the store last."""
        for name in self.node_names:
            child = self.children.get(name)
            if child is not None and child.process is not None and child.running:
                child.process.send_signal(signal.SIGTERM)
        super().stop()

    def placement(self, names: set[str]) -> dict[str, list[str]]:
        """Which node(s) logged each of `names` in (from the nodes' logs). A client seen on
        two nodes (a login retried on a new connection) has both."""
        where: dict[str, list[str]] = {}
        for node in self.node_names:
            log = self.tmp / "logs" / f"{node}.log"
            for name in LOGGED_IN.findall(log.read_text(errors="replace")):
                if name in names and node not in where.setdefault(name, []):
                    where[name].append(node)
        return where

    def log_problems(self) -> dict[str, list[str]]:
        """Each node's (and Redis's) lines at WARNING and above, and tracebacks."""
        found: dict[str, list[str]] = {}
        for name in [*self.node_names, "api"]:
            log = self.tmp / "logs" / f"{name}.log"
            if log.exists():
                lines = [line for line in log.read_text(errors="replace").splitlines()
                         if re.search(r" (WARNING|ERROR|CRITICAL) |Traceback", line)]  # fmt: skip
                if lines:
                    found[name] = lines[:20]
        return found


def _bulk_end(data: bytes) -> int:
    """Where a RESP bulk string (`$<length>\\r\\n<bytes>\\r\\n`) that starts `data` ends."""
    head, _, _ = data.partition(b"\r\n")
    try:
        return len(head) + 2 + int(head[1:]) + 2
    except ValueError:
        return len(data)
