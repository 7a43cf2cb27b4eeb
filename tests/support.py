"""What the integration tests share: the network as real processes, and clients that
talk to it the way users do (raw TCP text lines, JSON frames)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from chatnet.message import Message
from chatnet.peer import Peer
from chatnet.process import (
    API_LISTENING,
    CHAT_LISTENING,
    IRC_LISTENING,
    IRC_TLS_LISTENING,
    ROOT,
    STORE_LISTENING,
    WEB_LISTENING,
    Child,
    embedded_store_argv,
    http_ok,
    mongo_reachable,
    port_open,
    script,
)

HOST = "127.0.0.1"
TIMEOUT = 10.0

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str, timeout: float = TIMEOUT) -> T:
    """Poll `probe()` until `done` holds for its result; return that result. Fails after
    `timeout` showing the last result (for conditions no event announces)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await probe()
        if done(result):
            return result
        if loop.time() > deadline:
            raise AssertionError(f"{what} never became what was wanted within {timeout} s; last: {result!r}")
        await asyncio.sleep(0.05)


# The ports a test picks before something binds them (a launcher's settings, a fake
# provider, a Redis to restart): below the kernel's ephemeral range (32768 and up), so
# no port-0 server or outgoing connection of another process takes one meanwhile, and a
# range of their own for each pytest-xdist worker, so two workers never pick the same.
TEST_PORTS: Final = 20_000
TEST_PORTS_PER_WORKER: Final = 2_000
_port_picks = itertools.count()


def _worker() -> int:
    """This pytest-xdist worker's number (gw0, gw1, ...); 0 in a run without workers."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name[2:].isdigit() else 0


def free_port(host: str = HOST) -> int:
    """A port nobody is bound to now, from this worker's range, a new one each call
    (until the range comes round again)."""
    first = TEST_PORTS + _worker() % 6 * TEST_PORTS_PER_WORKER  # six ranges below 32768
    for _ in range(TEST_PORTS_PER_WORKER):
        port = first + next(_port_picks) % TEST_PORTS_PER_WORKER
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue  # in use (or lingering): the next one
            return port
    raise RuntimeError(f"no free port in {first}-{first + TEST_PORTS_PER_WORKER - 1}")


@contextmanager
def unused_port() -> Iterator[int]:
    """A port where connecting is refused while the block runs: bound but not
    listening, so no other process can start listening there meanwhile."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]


@dataclass
class Network:
    """chatnet's processes for one test, on loopback ports picked for it, over one database.

    The message API's, the chat server's (text and IRC), the web adapter's and the bot
    host's ports are picked here, from this worker's range (`free_port`), before
    anything starts; each server logs the port it bound, and a restart binds the same
    one, so clients and peers find the server back. (A port the kernel hands out, port
    0's, could be taken by another process's connection while its server restarts.)
    Any other port a server gets by binding 0 is learned from its log."""

    store_url: str
    tmp: Path
    db: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:12]}")
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    ports: dict[str, int] = field(default_factory=dict)  # name → its port (picked here, or learned at its first start)
    children: dict[str, Child] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("api", "server", "irc", "web", "bots"):
            self.ports.setdefault(name, free_port(HOST))

    @property
    def api_port(self) -> int:
        return self.port("api")

    @property
    def chat_port(self) -> int:
        return self.port("server")

    @property
    def web_port(self) -> int:
        return self.port("web")

    def port(self, name: str) -> int:
        if name not in self.ports:
            raise AssertionError(f"{name} has not been started, so its port is not known yet")
        return self.ports[name]

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def bots_url(self) -> str:
        return f"http://{HOST}:{self.port('bots')}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def env(self) -> dict[str, str]:
        port = {name: str(self.ports.get(name, 0)) for name in ("api", "server", "web")}
        return {
            "CHAT_HOST": HOST, "CHAT_PORT": port["server"],
            "IRC_PORT": str(self.ports.get("irc", 0)), "IRC_TLS_PORT": str(self.ports.get("irc_tls", 0)),
            "API_HOST": HOST, "API_PORT": port["api"], "API_TOKEN": self.token,
            "WEB_HOST": HOST, "WEB_PORT": port["web"],
            "BOTS_HOST": HOST, "BOTS_PORT": str(self.ports["bots"]),
            "MONGO_URL": self.store_url, "MONGO_DB": self.db,
            "DATA_DIR": str(self.tmp / "data"), "LOG_DIR": str(self.tmp / "logs"),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }  # fmt: skip

    def start(self, name: str, argv: list[str], ready: Callable[[], bool], timeout: float = 30.0, **env: str) -> Child:
        child = Child(name, argv, ready, env={**self.env(), **env}, log_path=self.tmp / "logs" / f"{name}.log")
        self.children[name] = child
        child.start(timeout)
        return child

    def serve(self, name: str, script_name: str, listening: str, probe: Callable[[int], bool], **env: str) -> Child:
        """Start a server: on port 0 at first, on the port it got then at every restart;
        ready once `probe(port)` passes."""
        child = Child(
            name, script(script_name), lambda: probe(child.port or 0),
            env={**self.env(), **env}, log_path=self.tmp / "logs" / f"{name}.log", listening=listening,
        )  # fmt: skip
        self.children[name] = child
        child.start()
        assert child.port is not None
        if self.ports.setdefault(name, child.port) != child.port:
            raise AssertionError(f"{name} came back on port {child.port}, not {self.ports[name]}")
        return child

    @classmethod
    def over_own_store(cls, tmp: Path) -> Network:
        """A network over an embedded store of its own, started now as children["store"]
        (first, so stop_all stops it last): for a test that kills the store, which the
        session's shared one must never be. `restart_store` brings it back."""
        store = own_store(tmp / "store", tmp / "logs" / "store.log")
        store.start()
        network = cls(store_url=f"mongodb://{HOST}:{store.port}", tmp=tmp)
        network.children["store"] = store
        return network

    def restart_store(self) -> None:
        """Start the network's own store again (after a kill or a stop) on its port and
        its data dir; returns once it answers a ping."""
        store = self.children["store"]
        store.stop()  # reaps it and closes its log; nothing to signal once it is dead
        store.start()

    def start_api(self, **env: str) -> Child:
        return self.serve("api", "message_api.py", API_LISTENING, lambda port: http_ok(f"http://{HOST}:{port}/health")(), **env)

    def start_server(self, **env: str) -> Child:
        child = self.serve("server", "async_server.py", CHAT_LISTENING, lambda port: port_open(HOST, port)(), **env)
        for name, pattern in (("irc", IRC_LISTENING), ("irc_tls", IRC_TLS_LISTENING)):
            found = re.findall(pattern, self.log("server"), re.M)
            if found:  # the last start's: a restart binds the port learned at the first
                self.ports.setdefault(name, int(found[-1]))
        return child

    @property
    def irc_port(self) -> int:
        return self.port("irc")

    def start_web(self, **env: str) -> Child:
        return self.serve("web", "websocket_adapter.py", WEB_LISTENING, lambda port: http_ok(f"http://{HOST}:{port}/")(), **env)

    def start_bot(self, name: str, script_name: str, **env: str) -> Child:
        """Start a bot script; ready once `name` is online on the chat server (as the
        launcher sees it). The child is registered under `name`."""
        from chatnet.launcher import peer_online

        return self.start(name, script(script_name), peer_online(HOST, self.chat_port, name, self.token), **env)

    def start_bot_host(self, online: tuple[str, ...] = (), **env: str) -> Child:
        """Start the bot host (openai_bot.py) as children["bots"]; ready once its HTTP
        chat answers and every bot named in `online` is online on the chat server."""
        from chatnet.launcher import BOTS_LISTENING, peer_online

        probes = [peer_online(HOST, self.chat_port, name, self.token) for name in online]
        return self.serve(
            "bots", "openai_bot.py", BOTS_LISTENING,
            lambda port: http_ok(f"http://{HOST}:{port}/health")() and all(probe() for probe in probes), **env,
        )  # fmt: skip

    def stop(self, name: str) -> None:
        child = self.children.pop(name, None)
        if child is not None:
            child.stop()

    def stop_all(self) -> None:
        for name in reversed(list(self.children)):
            self.stop(name)

    def log(self, name: str) -> str:
        path = self.tmp / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- clients -------------------------------------------------------------------

    async def text_client(self, user: str | None = None) -> TextClient:
        client = await TextClient.connect(HOST, self.chat_port)
        if user is not None:
            await client.login(user)
        return client

    async def json_client(self, user: str, features: tuple[str, ...] = ()) -> JsonClient:
        peer = await Peer.connect(HOST, self.chat_port, user, features=features)
        return JsonClient(peer)


def own_store(data_dir: Path, log_path: Path, name: str = "store") -> Child:
    """An embedded store: on port 0 at its first start, on the port it got at a restart
    (so a MONGO_URL built from `port` stays right)."""
    store: Child = Child(
        name, lambda port: embedded_store_argv(port, data_dir, HOST),
        lambda: mongo_reachable(f"mongodb://{HOST}:{store.port}"),
        log_path=log_path, listening=STORE_LISTENING,
    )  # fmt: skip
    return store


class TextClient:
    """A person at `nc`: sends lines, reads lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.seen: list[str] = []

    @classmethod
    async def connect(cls, host: str, port: int, receive_buffer: int | None = None) -> TextClient:
        """`receive_buffer` shrinks the socket's SO_RCVBUF (to play a slow reader)."""
        if receive_buffer is None:
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
            return cls(reader, writer)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode()
        self.writer.write(data if data.endswith(b"\n") else data + b"\n")
        await self.writer.drain()

    async def line(self, timeout: float = TIMEOUT) -> str:
        """The next line, without its newline; fails the test on timeout or close."""
        try:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
        except TimeoutError:
            raise AssertionError(f"no line within {timeout} s; seen so far: {self.seen[-10:]}") from None
        if not raw:
            raise AssertionError(f"connection closed; seen so far: {self.seen[-10:]}")
        text = raw.decode().rstrip("\n")
        self.seen.append(text)
        return text

    async def expect(self, wanted: str | Callable[[str], bool], timeout: float = TIMEOUT) -> str:
        """Read lines until one contains `wanted` (or satisfies it); return that line."""
        match = wanted if callable(wanted) else (lambda line: wanted in line)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"never saw {wanted!r}; seen: {self.seen[-15:]}")
            line = await self.line(remaining)
            if match(line):
                return line

    async def lines_until(self, wanted: Callable[[str], bool], timeout: float = TIMEOUT) -> list[str]:
        """Every line up to and including the first that satisfies `wanted`."""
        start = len(self.seen)
        await self.expect(wanted, timeout)
        return self.seen[start:]

    async def lines_until_closed(self, timeout: float = TIMEOUT) -> list[str]:
        """Every line the server sends before it closes the connection."""
        lines: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while raw := await self.reader.readline():
                    lines.append(raw.decode(errors="replace").rstrip("\n"))
        except TimeoutError:
            raise AssertionError(f"still open after {timeout} s; it said: {lines[-10:]}") from None
        except ConnectionError as exc:
            raise AssertionError(f"{exc!r} instead of a clean close; it said: {lines[-10:]}") from None
        self.seen.extend(lines)
        return lines

    async def who(self) -> list[str]:
        """Ask `!who`; the names it lists."""
        await self.send("!who")
        line = await self.expect(lambda text: text.startswith("Online ("))
        names = line.split(": ", 1)[1] if ": " in line else ""
        return names.split(", ") if names else []

    async def until_online(self, wanted: Callable[[list[str]], bool], timeout: float = TIMEOUT) -> list[str]:
        """Ask `!who` until the names it lists satisfy `wanted`."""
        return await eventually(self.who, wanted, "the online list", timeout)

    async def nothing_more(self, seconds: float = 0.3) -> None:
        """Fail if anything arrives: within `seconds`, or before the answer to a `!who`
        sent after them (so a late line is seen, not missed)."""
        late = await self.quiet(seconds)
        await self.send("!who")
        answer = await self.line()
        assert not late and answer.startswith("Online ("), f"expected nothing before the !who answer, got {[*late, answer]}"

    async def quiet(self, seconds: float = 0.5) -> list[str]:
        """Every line that arrives until the connection has been silent for `seconds`."""
        lines = []
        while True:
            try:
                raw = await asyncio.wait_for(self.reader.readline(), seconds)
            except TimeoutError:
                return lines
            if not raw:
                return lines
            lines.append(raw.decode().rstrip("\n"))
            self.seen.append(lines[-1])

    async def login(self, user: str) -> str:
        """Answer the prompt; return the welcome line."""
        assert await self.line() == "Enter username:"
        await self.send(user)
        return await self.expect(lambda line: line.startswith("Welcome"))

    async def closed(self, timeout: float = TIMEOUT) -> bool:
        """True once the server has closed the connection (reads what is left)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
            return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


class JsonClient:
    """A program in JSON mode: a Peer plus waiting for a frame that matches."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.seen: list[Message] = []

    async def send(self, destination: str, message: str, **metadata: Any) -> None:
        await self.peer.send(destination, message, metadata or None)

    async def send_raw(self, frame: dict[str, Any] | str) -> None:
        line = frame if isinstance(frame, str) else json.dumps(frame)
        self.peer.writer.write(line.encode() + b"\n")
        await self.peer.writer.drain()

    async def command(self, text: str) -> None:
        await self.peer.command(text)

    async def expect(self, match: Callable[[Message], bool], timeout: float = TIMEOUT) -> Message:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await self.peer.recv()
                    if message is None:
                        raise AssertionError(f"connection closed; seen: {self.seen[-10:]}")
                    self.seen.append(message)
                    if match(message):
                        return message
        except TimeoutError:
            raise AssertionError(f"no matching frame within {timeout} s; seen: {self.seen[-10:]}") from None

    async def next(self, timeout: float = TIMEOUT) -> Message:
        """The very next frame, whatever it is."""
        return await self.expect(lambda message: True, timeout)

    async def quiet(self, seconds: float = 0.5) -> list[Message]:
        messages = []
        while True:
            try:
                message = await asyncio.wait_for(self.peer.recv(), seconds)
            except TimeoutError:
                return messages
            if message is None:
                return messages
            messages.append(message)
            self.seen.append(message)

    async def close(self) -> None:
        await self.peer.close()


class ConsoleProcess:
    """A program run over pipes (the terminal client, the launcher): what it prints,
    stdout and stderr as one stream, read line by line."""

    def __init__(self, process: asyncio.subprocess.Process, timeout: float = TIMEOUT) -> None:
        self.process = process
        self.timeout = timeout
        self.seen: list[str] = []

    @classmethod
    async def start(cls, argv: list[str], env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> ConsoleProcess:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=ROOT,
            env=env if env is not None else {**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return cls(process, timeout)

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def expect(self, wanted: str, timeout: float | None = None) -> str:
        """Read output lines until one contains `wanted`; return it."""
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout or self.timeout):
                while True:
                    raw = await self.process.stdout.readline()
                    if not raw:
                        raise AssertionError(f"process ended before {wanted!r}; output:\n" + "\n".join(self.seen[-30:]))
                    self.seen.append(raw.decode().rstrip("\n"))
                    if wanted in self.seen[-1]:
                        return self.seen[-1]
        except TimeoutError:
            raise AssertionError(f"never saw {wanted!r}; output:\n" + "\n".join(self.seen[-30:])) from None

    async def finish(self, timeout: float | None = None) -> tuple[int, str]:
        """Wait for the exit; the exit code and everything printed."""
        out, _ = await asyncio.wait_for(self.process.communicate(), timeout or self.timeout)
        self.seen.extend(out.decode().splitlines())
        return self.process.returncode or 0, "\n".join(self.seen)

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


# A redis-server of Debian's (several nodes share one); tests that need it skip without.
REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """A redis-server of our own on a loopback port, nothing saved; killed and started
    again on the same port when a test wants Redis to go away."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None, "redis-server is not installed"
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(self.tmp), "--loglevel", "warning"]
        with open(self.tmp / "redis.log", "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(self.tmp / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.02)

    def pause(self) -> None:
        """Redis hangs: connections open, nothing answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """What kill -9 does: no goodbye to anyone."""
        if self.process is not None:
            self.process.kill()  # a stopped process dies of SIGKILL as well
            self.process.wait()
            self.process = None

    def answers(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
