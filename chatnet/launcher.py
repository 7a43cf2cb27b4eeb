"""The launcher: the whole network from one command, supervised.

    embedded store (only when nothing answers at MONGO_URL)
      → message API → chat server → web adapter → thermometer → bot host (openai_bot.py)

Before anything starts, every port the network will listen on is checked free: a taken
one is an error naming the port and the setting that chooses it, never a false
"ready". Each child is started only once the one before it is ready — and ready counts
only after the child itself logged that it listens, so another program answering on
its port never passes for it. Each logs to LOG_DIR/<name>.log and gets the launcher's
whole environment (one set of variables configures the network), including the TLS
certificate (self-signed under DATA_DIR/tls/ unless TLS_CERT/TLS_KEY are given) and
the API token (kept in DATA_DIR/api_token, owner-only, unless API_TOKEN is given). A
child that dies is restarted with backoff. SIGINT/SIGTERM stop the children
in reverse order — the store last, after everyone who writes to it has finished — and a
second one only hurries that along; nothing is left running.

`CHILDREN` is the table of what runs; a new process is one more row.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import secrets
import shutil
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import FrameType
from typing import Final

from chatnet.config import Secret, Settings
from chatnet.errors import ChildFailed, StartFailed
from chatnet.process import (
    API_LISTENING,
    CHAT_LISTENING,
    CHAT_TLS_LISTENING,
    IRC_LISTENING,
    IRC_TLS_LISTENING,
    ROOT,
    STORE_LISTENING,
    WEB_LISTENING,
    Child,
    Probe,
    embedded_store_argv,
    free_port,
    http_ok,
    mongo_reachable,
    on_port,
    port_open,
    script,
)
from chatnet.tls import ADDRESSES, CERT_FILE, HOSTNAMES, KEY_FILE, ensure_certificate, server_context, write_file

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
# Under DATA_DIR: the generated API token (owner-only) and the self-signed certificate.
TOKEN_FILE: Final = "api_token"
TLS_DIR: Final = "tls"
# A kept token shorter than this, or with anything but visible ASCII, is made anew.
TOKEN_RE: Final = re.compile(r"[!-~]{16,}")
# How far above a taken port to look for a free one to suggest.
SUGGEST_SPAN: Final = 100


class Shutdown(Exception):
    """SIGINT/SIGTERM arrived: stop starting things and wind down."""


@dataclass(frozen=True)
class Listener:
    """A port a child binds: the setting that chooses it, and the line (a pattern of
    chatnet.process) the child logs once it listens there."""

    setting: str
    host: str
    port: int
    logged: str


@dataclass(frozen=True)
class ChildSpec:
    """One row of the table: a root script, what it listens on, when it is ready, and
    what to tell people."""

    name: str  # also the log file's name and the --no-<flag>
    title: str
    script: str
    # Polled only once the child has logged every listener's line; gets the child, so
    # a probe can read the port it learned.
    ready: Callable[[Settings, Child], Probe]
    address: Callable[[Settings], str]
    listeners: Callable[[Settings], Sequence[Listener]] = lambda settings: ()
    optional: bool = False  # has a --no-<name> flag
    # Why it can't run with these settings (None: it can).
    unmet: Callable[[Settings], str | None] = lambda settings: None


# The name the launcher's probes log in under, as a service (so GUESTS=false can't stop them).
PROBE_NAME: Final = "_launcher"


def peer_online(host: str, port: int, name: str, service_token: str | None = None) -> Probe:
    """Ready when `name` is online on the chat server: a short JSON-mode login whose
    welcome frame lists who is online (with the service token when there is one: a
    guest probe would be refused on a network that takes no guests)."""
    last = 0.0

    def probe() -> bool:
        nonlocal last
        if time.monotonic() - last < PEER_PROBE_INTERVAL:
            return False
        last = time.monotonic()
        login: dict[str, str] = {"type": "login", "user": f"_probe.{secrets.token_hex(4)}"}
        if service_token is not None:
            login = {"type": "login", "user": PROBE_NAME, "service_token": service_token}
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


# The line the bot host logs once its HTTP chat listens (chatnet.bot_http.LISTENING).
BOTS_LISTENING: Final = r"bot chat API on http://\S*:(\d+) "


def _bots_ready(settings: Settings) -> Probe:
    """The bot host is ready once its HTTP chat answers and, when the host's settings
    give the default bot a provider, that bot is online. Without OPENAI_* it starts
    all the same: the bots defined through the API may bring their own provider."""
    answers = http_ok(f"{settings.bots_url}/health")
    if settings.openai_api_key is None and settings.openai_base_url is None:
        return answers
    online = peer_online(settings.chat_host, settings.chat_port, settings.bot_name, _secret(settings.api_token))
    return lambda: answers() and online()


def tls_enabled(settings: Settings) -> bool:
    return settings.tls_cert is not None and settings.tls_key is not None


def _chat_listeners(s: Settings) -> list[Listener]:
    listeners = [Listener("CHAT_PORT", s.chat_host, s.chat_port, CHAT_LISTENING)]
    if tls_enabled(s):
        listeners.append(Listener("CHAT_TLS_PORT", s.chat_host, s.chat_tls_port, CHAT_TLS_LISTENING))
    if s.irc:
        listeners.append(Listener("IRC_PORT", s.chat_host, s.irc_port, IRC_LISTENING))
        if tls_enabled(s):
            listeners.append(Listener("IRC_TLS_PORT", s.chat_host, s.irc_tls_port, IRC_TLS_LISTENING))
    return listeners


def web_url(settings: Settings) -> str:
    scheme = "https" if settings.web_tls and tls_enabled(settings) else "http"
    return f"{scheme}://{settings.web_host}:{settings.web_port}"


CHILDREN: tuple[ChildSpec, ...] = (
    ChildSpec(
        "api", "message API", "message_api.py",
        ready=lambda s, child: http_ok(f"{s.api_url}/health"),
        address=lambda s: s.api_url,
        listeners=lambda s: [Listener("API_PORT", s.api_host, s.api_port, API_LISTENING)],
    ),
    ChildSpec(
        "server", "chat server", "async_server.py",
        ready=lambda s, child: port_open(s.chat_host, s.chat_port),
        address=lambda s: f"{s.chat_host}:{s.chat_port}" + (f", TLS on {s.chat_host}:{s.chat_tls_port}" if tls_enabled(s) else ""),
        listeners=_chat_listeners,
    ),
    ChildSpec(
        "web", "web adapter", "websocket_adapter.py", optional=True,
        ready=lambda s, child: port_open(s.web_host, s.web_port),
        address=web_url,
        listeners=lambda s: [Listener("WEB_PORT", s.web_host, s.web_port, WEB_LISTENING)],
    ),
    ChildSpec(
        "thermometer", "thermometer bot", "thermometer.py", optional=True,
        ready=lambda s, child: peer_online(s.chat_host, s.chat_port, s.thermometer_name, _secret(s.api_token)),
        address=lambda s: f"peer '{s.thermometer_name}'",
    ),
    ChildSpec(
        "openai", "bot host", "openai_bot.py", optional=True,
        ready=lambda s, child: _bots_ready(s),
        address=lambda s: f"{s.bots_url} (peer '{s.bot_name}' and the API's bots)",
        listeners=lambda s: [Listener("BOTS_PORT", s.bots_host, s.bots_port, BOTS_LISTENING)],
    ),
)  # fmt: skip


def optional_children() -> list[ChildSpec]:
    """The children a --no-<name> flag can leave out."""
    return [spec for spec in CHILDREN if spec.optional]


def child_env(settings: Settings) -> dict[str, str]:
    """Every setting as the environment variable a child reads it from."""
    env = {"PYTHONUNBUFFERED": "1"}
    for item in fields(settings):
        value = getattr(settings, item.name)
        if value is None:
            continue
        if isinstance(value, Secret):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, dict):
            value = json.dumps(value)  # how Settings reads a dict
        env[item.name.upper()] = str(value)
    return env


def redact_url(url: str) -> str:
    """A MongoDB URL fit for the console: the password hidden."""
    return re.sub(r"(//[^:/@]+:)[^@/]+@", r"\1***@", url)


# --- the port rule -------------------------------------------------------------------


def port_problems(listeners: Sequence[Listener]) -> list[str]:
    """One sentence per listener that could not listen now (none: all free). Each is
    bound and listened on, with SO_REUSEADDR as the servers do, and all are held until
    the end, so two settings naming one port are caught as well."""
    problems: list[str] = []
    chosen: dict[tuple[str, int], str] = {}
    with ExitStack() as held:
        for listener in listeners:
            if listener.port == 0:
                continue  # the system picks a free one
            first = chosen.setdefault((listener.host, listener.port), listener.setting)
            if first != listener.setting:
                problems.append(f"{first} and {listener.setting} are both port {listener.port}: give each its own.")
                continue
            try:
                for sock in _listen(listener.host, listener.port):
                    held.callback(sock.close)
            except OSError as exc:
                problems.append(_port_problem(listener, exc, {port for _, port in chosen}))
    return problems


def _listen(host: str, port: int) -> list[socket.socket]:
    """Sockets listening on every address `host` names (as asyncio's create_server binds
    them), or OSError with none left open."""
    opened: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            opened.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen()
    except OSError:
        for sock in opened:
            sock.close()
        raise
    return opened


def _port_problem(listener: Listener, exc: OSError, avoid: set[int]) -> str:
    where = f"{listener.setting}={_free_port_near(listener, avoid)}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"Port {listener.port} ({listener.setting}) is already in use: another chatnet, or something else, "
            f"is listening there. Stop it or choose another port, e.g. {where}."
        )
    return f"Cannot listen on {listener.host}:{listener.port} ({listener.setting}): {exc.strerror or exc}. Choose another port, e.g. {where}, or another host."


def _free_port_near(listener: Listener, avoid: set[int]) -> int:
    """The first port above the taken one that is free now and no other setting names."""
    for port in range(listener.port + 1, min(listener.port + SUGGEST_SPAN, 65536)):
        if port in avoid:
            continue
        try:
            for sock in _listen(listener.host, port):
                sock.close()
        except OSError:
            continue
        return port
    return listener.port + 1


def kept_token(path: Path) -> tuple[str, bool]:
    """The API token kept in `path` (owner-only), made and written there when there is
    none yet; and whether it was made now."""
    try:
        text = path.read_text(errors="replace").strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise StartFailed(f"Cannot read the API token file {path}: {exc.strerror or exc}. Fix or delete it, or set API_TOKEN.") from None
    if TOKEN_RE.fullmatch(text):
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # widened by someone since: it grants every route of the API
        return text, False
    token = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, token.encode() + b"\n", 0o600)
    except OSError as exc:
        raise StartFailed(f"Cannot write the API token file {path}: {exc.strerror or exc}. Set API_TOKEN instead.") from None
    return token, True


@dataclass
class Running:
    """A started child and its restart bookkeeping."""

    spec_title: str
    child: Child
    started_at: float = field(default_factory=time.monotonic)
    failures: int = 0
    restart_at: float | None = None


class Launcher:
    def __init__(self, settings: Settings, skip: set[str], nodes: int = 1) -> None:
        self.settings = replace(settings, data_dir=settings.data_dir.resolve(), log_dir=settings.log_dir.resolve())
        self.skip = skip
        self.nodes = max(1, nodes)  # chat-server nodes sharing the chat and IRC ports
        self.redis_started = False  # CLUSTER_URL is the Redis we started
        self.given_mongo_url = settings.mongo_url
        # Where the generated token is kept (None: it came from API_TOKEN).
        self.token_file: Path | None = None
        self.token_made = False  # made on this start (else read back from token_file)
        self.tls_generated = False  # the certificate is our self-signed one
        self.store_path: Path | None = None
        self.plan: list[ChildSpec] = []
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
            self._prepare()
            self._start_store()
            self._start_redis()
            self._start_children()
            logger.info(self.banner())
            self._supervise()
        except Shutdown:
            pass
        except StartFailed as exc:
            logger.error("Could not start chatnet:\n%s", exc)
            code = 1
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

    def _prepare(self) -> None:
        """What must hold before any child starts: what will run, TLS files named, every
        port free, the token and the certificate in place. Raises StartFailed."""
        for spec in CHILDREN:
            reason = self._skip_reason(spec)
            if reason:
                self.skipped[spec.name] = reason
            else:
                self.plan.append(spec)
                if spec.name == "server":  # the other nodes share its ports (SO_REUSEPORT)
                    self.plan.extend(replace(spec, name=f"server{n}", title=f"chat server node {n}") for n in range(2, self.nodes + 1))
        self._name_tls_files()
        first_nodes = [spec for spec in self.plan if not _another_node(spec)]
        problems = port_problems([listener for spec in first_nodes for listener in spec.listeners(self.settings)])
        if problems:
            raise StartFailed("\n".join(problems))
        if self.settings.api_token is None:
            self.token_file = self.settings.data_dir / TOKEN_FILE
            token, self.token_made = kept_token(self.token_file)
            self.settings = replace(self.settings, api_token=Secret(token))
        self._make_tls_files()

    def _name_tls_files(self) -> None:
        """TLS_CERT and TLS_KEY as absolute paths (children run elsewhere): the given
        pair, or where the self-signed pair lives. Both or neither must be given."""
        s = self.settings
        if (s.tls_cert is None) != (s.tls_key is None):
            given, missing = ("TLS_CERT", "TLS_KEY") if s.tls_cert is not None else ("TLS_KEY", "TLS_CERT")
            raise StartFailed(f"{given} is set but {missing} is not: set both, or neither for a self-signed certificate under {s.data_dir / TLS_DIR}.")
        self.tls_generated = s.tls_cert is None
        if s.tls_cert is None or s.tls_key is None:
            cert, key = s.data_dir / TLS_DIR / CERT_FILE, s.data_dir / TLS_DIR / KEY_FILE
        else:
            cert, key = s.tls_cert.resolve(), s.tls_key.resolve()
        self.settings = replace(s, tls_cert=cert, tls_key=key)

    def _make_tls_files(self) -> None:
        """The self-signed pair made (or kept), and whichever pair loaded once here, so
        a bad file is one clear error instead of a chat server that keeps crashing."""
        if self.tls_generated:
            try:
                ensure_certificate(self.settings.data_dir / TLS_DIR)
            except OSError as exc:
                raise StartFailed(f"Cannot write the TLS certificate under {self.settings.data_dir / TLS_DIR}: {exc.strerror or exc}.") from None
        try:
            server_context(self.settings)
        except (OSError, ssl.SSLError) as exc:
            raise StartFailed(f"TLS_CERT/TLS_KEY ({self.settings.tls_cert}, {self.settings.tls_key}) can't be used: {exc.strerror or exc}.") from None

    def _start_store(self) -> None:
        """The embedded store, unless a MongoDB already answers at MONGO_URL. It binds a
        port the system picks and says which; restarts bind that one again."""
        if mongo_reachable(self.settings.mongo_url):
            logger.info("Using the MongoDB at %s", redact_url(self.settings.mongo_url))
            return
        self._check_stop()
        store_path = self.store_path = self.settings.data_dir / "store"
        spec = ChildSpec("store", "embedded store", "", ready=lambda s, child: lambda: port_open("127.0.0.1", child.port or 0)(), address=lambda s: s.mongo_url)
        child = self._start(spec, lambda port: embedded_store_argv(port, store_path), listening=STORE_LISTENING)
        self.settings = replace(self.settings, mongo_url=f"mongodb://127.0.0.1:{child.port}")
        logger.info("%s ready at %s (pid %s)", spec.title, spec.address(self.settings), child.pid)

    def _start_redis(self) -> None:
        """Several nodes without CLUSTER_URL: a Redis of our own, on loopback, keeping
        nothing on disk (nothing durable rides on it)."""
        if self.nodes == 1 or self.settings.cluster_url or "server" not in {spec.name for spec in self.plan}:
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise StartFailed(
                f"--nodes {self.nodes} needs Redis: install Debian's redis-server (sudo apt-get install -y redis-server), "
                "or set CLUSTER_URL to a Redis you run."
            )
        self._check_stop()
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        spec = ChildSpec("redis", "Redis (for the nodes)", "", ready=lambda s, child: port_open("127.0.0.1", port), address=lambda s: f"127.0.0.1:{port}")
        child = self._start(spec, argv)
        self.settings = replace(self.settings, cluster_url=f"redis://127.0.0.1:{port}/0")
        self.redis_started = True
        logger.info("%s ready at %s (pid %s)", spec.title, spec.address(self.settings), child.pid)

    def _start_children(self) -> None:
        for spec in self.plan:
            self._check_stop()
            child = self._start(spec, script(spec.script))
            logger.info("%s ready at %s (pid %s)", spec.title, spec.address(self.settings), child.pid)

    def _skip_reason(self, spec: ChildSpec) -> str | None:
        if spec.name in self.skip:
            return f"skipped (--no-{spec.name})"
        if not (ROOT / spec.script).exists():
            return f"skipped: {spec.script} is not there"
        unmet = spec.unmet(self.settings)
        return f"skipped: {unmet}" if unmet else None

    def _start(self, spec: ChildSpec, argv: list[str] | Callable[[int], Sequence[str]], listening: str | None = None) -> Child:
        """Start one child and wait until it is ready. The lines its listeners log are
        made exact for the configured ports: the first is `listening` (its port is
        learned), the others must appear too, at every start, before `ready` is polled."""
        said = [on_port(listener.logged, listener.port) for listener in spec.listeners(self.settings)]
        if listening is None and said:
            listening, *said = said

        def ready() -> bool:
            self._check_stop()  # a Ctrl-C while waiting ends the wait
            return probe()

        child = Child(
            spec.name, argv, ready,
            env=child_env(self.settings),
            log_path=self.settings.log_dir / f"{spec.name}.log",
            new_session=True,
            listening=listening, also_logged=said,
        )  # fmt: skip
        probe = spec.ready(self.settings, child)
        self.running.append(Running(spec.title, child))
        logger.info("Starting %s …", spec.title)
        child.start(START_TIMEOUT)
        return child

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
        # A dataclass keeps each default as the class attribute: Settings.chat_port is 5000.
        port_flag = "" if s.chat_port == Settings.chat_port else f" --port {s.chat_port}"
        host_flag = "" if s.chat_host == Settings.chat_host else f" --host {s.chat_host}"
        web = web_url(s) if self._started("web") else f"(web adapter {self.skipped.get('web', 'not running')})"
        if self.store_path is not None:
            store = f"embedded, data in {self.store_path} (nothing answered at {redact_url(self.given_mongo_url)})"
        else:
            store = f"MongoDB at {redact_url(s.mongo_url)}, database '{s.mongo_db}'"
        if self.token_file is None:
            token = "from API_TOKEN"
        else:
            made = "generated now" if self.token_made else "generated at the first start"
            token = f"in {self.token_file} ({made}; set API_TOKEN to choose one)"
        lines = [
            "",
            "chatnet is running.",
            f"  Browser:           {web}",
            f"  Terminal client:   {_python()} async_client.py{host_flag}{port_flag}   or   nc {s.chat_host} {s.chat_port}",
            *self._tls_lines(host_flag),
            *self._irc_lines(),
            f"  Message API docs:  {s.api_url}/docs",
            *self._bot_lines(),
            f"  API token:         {token}",
            f"  Store:             {store}",
            *self._node_lines(),
            f"  Logs:              {s.log_dir}",
            "  Processes:",
        ]
        for entry in self.running:
            lines.append(f"    {entry.child.name:<12} pid {entry.child.pid:<8} {entry.spec_title}")
        for name, reason in self.skipped.items():
            lines.append(f"    {name:<12} {reason}")
        lines.append("Press Ctrl-C to stop.")
        return "\n".join(lines)

    def _tls_lines(self, host_flag: str) -> list[str]:
        s = self.settings
        if not self._started("server") or not tls_enabled(s):
            return []
        port_flag = "" if s.chat_tls_port == Settings.chat_tls_port else f" --port {s.chat_tls_port}"
        if self.tls_generated:
            # The client trusts DATA_DIR/tls/cert.pem by itself; elsewhere it must be told.
            cafile_flag = "" if s.tls_cert == ROOT / "data" / TLS_DIR / CERT_FILE else f" --cafile {s.tls_cert}"
            names = ", ".join((*HOSTNAMES, *ADDRESSES))
            cert = f"{s.tls_cert} (self-signed for {names}; set TLS_CERT/TLS_KEY to use your own)"
        else:
            cafile_flag = ""
            cert = f"{s.tls_cert} (from TLS_CERT; the client checks it against the system's CAs, or --cafile)"
        client = f"{_python()} async_client.py --tls{host_flag}{port_flag}{cafile_flag}"
        return [
            f"  With TLS:          {client}   or   openssl s_client -connect {s.chat_host}:{s.chat_tls_port} -quiet",
            f"  TLS certificate:   {cert}",
        ]

    def _node_lines(self) -> list[str]:
        s = self.settings
        if self.nodes == 1 and not s.cluster_url:
            return []
        redis = f"Redis at {redact_url(s.cluster_url or '')}" + (" (started here, nothing kept on disk)" if self.redis_started else "")
        return [f"  Nodes:             {self.nodes} sharing the chat and IRC ports, through {redis}"]

    def _irc_lines(self) -> list[str]:
        s = self.settings
        if not self._started("server"):
            return []
        if not s.irc:
            return ["  IRC:               off (--no-irc)"]
        tls = f", TLS on {s.chat_host}:{s.irc_tls_port}" if tls_enabled(s) else ""
        return [f"  IRC:               {s.chat_host}:{s.irc_port}{tls}   (irssi: /connect {s.chat_host} {s.irc_port})"]

    def _bot_lines(self) -> list[str]:
        s = self.settings
        if not self._started("openai"):
            return []
        provider = "" if s.openai_api_key is not None or s.openai_base_url is not None else " (no OPENAI_*: only bots with a provider of their own answer)"
        return [f"  Bot API:           {s.api_url}/bots (chat: POST /bots/<name>/chat; the bot host serves it on {s.bots_url}){provider}"]

    def _started(self, name: str) -> bool:
        return any(entry.child.name == name for entry in self.running)


def _another_node(spec: ChildSpec) -> bool:
    """A chat-server node after the first: it listens where the first does."""
    return spec.name.startswith("server") and spec.name != "server"


def _secret(value: Secret | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _python() -> str:
    """How to name this interpreter to someone in the repository: the venv's when it is
    one (a bare `python` may lack the dependencies)."""
    try:
        return str(Path(sys.executable).relative_to(ROOT))
    except ValueError:
        return "python"


def run(settings: Settings, skip: set[str], nodes: int = 1) -> int:
    """Run the network until SIGINT/SIGTERM; the exit code."""
    return Launcher(settings, skip, nodes).run()
