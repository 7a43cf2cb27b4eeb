"""A long fuzz against the real processes (`make fuzz`): the embedded store, the message
API, the chat server and the web adapter on free loopback ports, fed random and
adversarial lines from several connections (text mode, JSON mode, the page's
WebSocket) and random bodies to the API; optionally (`--api`) schemathesis against the
API's OpenAPI. Then it prints what was sent and what must be 0, and exits non-zero when
any of those isn't:

    python -m bench.fuzz [--lines 50000] [--connections 8] [--seed N] [--api]

Bounded in count (`--lines`, `--api-requests`, `--api-examples`) and time
(`--time-limit`); everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from bench.servers import HOST, Chatnet
from chatnet.limits import MAX_LINE_BYTES
from chatnet.process import free_port, http_ok, script

TRACEBACK: Final = "Traceback (most recent call last)"
# How long a connection waits for the answer to its last line before it closes anyway
# (a connection still at the login prompt takes the `!who` for a name and never answers).
LINGER: Final = 5.0
# Names the fuzz sends to: its own connections (online), some nobody uses (offline mail),
# bots' kind of names, and invalid ones.
TARGETS: Final = [f"fz{i}" for i in range(8)] + ["ghost", "Ghost", "nobody.ever", "server", "openai", "", " ", "a" * 40, "x:y", "ü", "\x00"]
FRAME_TYPES: Final = ["chat", "command", "notification", "subscription", "error", "login", "ack", "nope", "", None, 5, ["chat"]]
COMMANDS: Final = ["!who", "!check", "!help", "!register", "!register short", "!register correct horse battery", "!password a b",
                   "!password", "!nope", "!", "!!", "!who " + "x" * 100, "exit", "EXIT", "!check now"]  # fmt: skip
SERVER_ONLY_KEYS: Final = ["event", "stream", "mail", "echo", "sender_features", "token", "bot", "reason", "retry_after", "saved"]
TIMESTAMPS: Final = ["0999-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-13-45T99:99:99Z", "", "yesterday", 0, -1, 1e308]


class Fuzz:
    """Random and adversarial lines; `rng` makes a run repeatable (`--seed`)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def text(self, size: int = 20) -> str:
        r = self.rng
        alphabet = 'abcXYZ019 _.-:!{}[]"\\\t\r\x00\x7fé€😀\u202e\ufeff'
        return "".join(r.choice(alphabet) for _ in range(r.randint(0, size)))

    def name(self) -> str:
        r = self.rng
        online = f"fz{r.randint(0, 7)}_{r.randint(1, 30)}"  # the workers' names
        return r.choice([r.choice(TARGETS), online, f"fz{r.randint(0, 99)}", self.text(10), "a" * r.randint(30, 40), "..", "-", "_" * 32])

    def value(self, depth: int = 0) -> Any:
        """A JSON value of any kind, including the ones a store can't hold."""
        r = self.rng
        kind = r.randint(0, 11 if depth < 3 else 7)
        if kind == 0:
            return None
        if kind == 1:
            return r.choice([True, False])
        if kind == 2:
            return r.choice([0, -1, 2**63 - 1, -(2**63), 2**63, 2**64 + 1, -(2**70), 10 ** r.randint(19, 400)])
        if kind == 3:
            return r.choice([float("nan"), float("inf"), float("-inf"), -0.0, 1e-320, 1.5e308])
        if kind == 4:
            return r.choice(["\ud800", "\udfff", "a\ud83dz", "\x00", "\u2028"])  # lone surrogates and friends
        if kind in (5, 6, 7):
            return self.text()
        if kind in (8, 9):
            return [self.value(depth + 1) for _ in range(r.randint(0, 4))]
        keys = SERVER_ONLY_KEYS + ["type", "message", "destination", "id", "n", "", "$where", "a.b", "$gt"]
        return {r.choice(keys) if r.random() < 0.7 else self.text(8): self.value(depth + 1) for _ in range(r.randint(0, 4))}

    def dumps(self, value: Any) -> str:
        text = json.dumps(value, allow_nan=True)  # NaN and Infinity as their bare literals
        return text.replace("1.5e+308", "1e999") if self.rng.random() < 0.5 else text

    def frame(self) -> dict[str, Any]:
        r = self.rng
        frame: dict[str, Any] = {"type": r.choice(FRAME_TYPES)}
        if r.random() < 0.8:
            frame["destination"] = self.name() if r.random() < 0.8 else self.value()
        if r.random() < 0.8:
            frame["message"] = r.choice([self.text(40), r.choice(COMMANDS)]) if r.random() < 0.8 else self.value()
        if r.random() < 0.6:
            frame["metadata"] = self.value() if r.random() < 0.3 else {r.choice(SERVER_ONLY_KEYS + ["n", "x"]): self.value() for _ in range(r.randint(1, 3))}
        if frame["type"] == "ack" or r.random() < 0.1:
            frame["ids"] = [self.text(30) for _ in range(r.randint(0, 5))] if r.random() < 0.8 else self.value()
        for key in ("user", "password", "token", "service_token", "want_token", "features", "id", "sender", "timestamp"):
            if r.random() < 0.05:
                frame[key] = self.value()
        return frame

    def adversarial(self) -> bytes:
        r = self.rng
        depth = r.choice([100, 1000, 5000])
        return r.choice([
            b"[" * depth + b"]" * depth,
            b'{"a":' * depth + b"1" + b"}" * depth,
            b'{"type":"chat","destination":"ghost","message":"x","metadata":{"n":' + b"9" * r.choice([30, 5000]) + b"}}",
            b'{"type":"chat","destination":"ghost","message":"x","metadata":{"n":NaN}}',
            b'{"type":"chat","destination":"fz1","message":"x","metadata":{"n":-Infinity}}',
            b'{"type":"chat","destination":"ghost","message":"\\ud800"}',
            b'{"type":"chat","destination":"ghost","message":"\xff\xfe"}',
            b'{"type":"chat","destination":"ghost","message":"x","metadata":{"event":"saved"}}',
            b'{"type":"chat","destination":"ghost","message":"x","timestamp":"0999-01-01T00:00:00Z"}',
            b"x" * r.choice([MAX_LINE_BYTES - 1, MAX_LINE_BYTES, MAX_LINE_BYTES + 1, 100_000, 1_000_000]),
            b"ghost: " + b"y" * r.choice([1999, 2000, 2001, 5000]),
            b"\xed\xa0\x80 ghost: lone surrogate as UTF-8",
            b"\xff\xfe\xfd\xc0\x80",
            b"\r\r\r\r",
            b"\x00" * 100,
            bytes(r.randrange(256) for _ in range(r.randint(1, 300))),
            b":" * 100,
            b"{" + b"\n" * 5,
        ])  # fmt: skip

    def text_line(self) -> bytes:
        r = self.rng
        roll = r.random()
        if roll < 0.15:
            return self.adversarial()
        if roll < 0.3:
            return r.choice(COMMANDS).encode()
        if roll < 0.4:
            return self.dumps(self.frame()).encode("utf-8", "surrogatepass")
        return f"{self.name()}: {self.text(60)}".encode("utf-8", "surrogatepass")

    def json_line(self) -> bytes:
        r = self.rng
        roll = r.random()
        if roll < 0.15:
            return self.adversarial()
        if roll < 0.2:
            return self.text_line()
        if roll < 0.25:
            return self.dumps(self.value())[: MAX_LINE_BYTES * 2].encode("utf-8", "surrogatepass")
        return self.dumps(self.frame()).encode("utf-8", "surrogatepass")

    def text_login(self, own: str) -> bytes:
        r = self.rng
        return (own if r.random() < 0.8 else self.name()).encode("utf-8", "surrogatepass") if r.random() < 0.9 else self.adversarial()

    def json_login(self, own: str) -> bytes:
        r = self.rng
        features = r.choice([["stream", "ack"], [], ["x"] * 50, "stream", None])
        login: dict[str, Any] = {"type": "login", "user": own if r.random() < 0.8 else self.name(), "features": features}
        for key, odd in (("password", self.text(200)), ("token", self.text(70)), ("service_token", self.text(32)), ("want_token", self.value())):
            if r.random() < 0.15:
                login[key] = odd if r.random() < 0.7 else self.value()
        return self.dumps(login).encode("utf-8", "surrogatepass") if r.random() < 0.9 else self.adversarial()

    def api_body(self) -> Any:
        r = self.rng
        message = {"id": self.text(40) or "x", "sender": self.name(), "destination": self.name(),
                   "message": self.text(40) if r.random() < 0.8 else self.value(), "metadata": self.value(),
                   "timestamp": r.choice(TIMESTAMPS) if r.random() < 0.5 else "2026-01-01T00:00:00Z", "type": r.choice(FRAME_TYPES)}  # fmt: skip
        return r.choice([
            self.value(),
            {"messages": [message for _ in range(r.randint(0, 3))], "ttl_seconds": self.value(), "keep_latest": self.value()},
            {"messages": [message]},
            {"ids": [self.text(30) for _ in range(r.randint(0, 3))]},
            {"name": self.value(), "password": self.value(), "kind": self.value()},
            {"source": self.value(), "password": self.text(20), "token": self.value()},
            {"value": self.value()},
        ])  # fmt: skip


API_ROUTES: Final = [("POST", "/mail"), ("POST", "/history"), ("POST", "/mail/bob/ack"), ("POST", "/accounts"), ("POST", "/accounts/bob/login"),
                     ("PUT", "/state/bot/key"), ("PUT", "/accounts/bob/password"), ("GET", "/mail/bob"), ("GET", "/history/bob/alice")]  # fmt: skip


@dataclass
class Tally:
    sent: int = 0  # lines the server is known to have read
    unconfirmed: int = 0  # lines written to a connection the server closed (it may not have read them)
    received: int = 0
    connections: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    api_requests: int = 0
    api_statuses: Counter[int] = field(default_factory=Counter)
    api_5xx_samples: list[str] = field(default_factory=list)


@dataclass
class FuzzedNetwork(Chatnet):
    """bench.servers' chatnet (store, API, chat server) plus the web adapter."""

    web_port: int = field(default_factory=free_port)

    def env(self) -> dict[str, str]:
        return {**super().env(), "WEB_HOST": HOST, "WEB_PORT": str(self.web_port)}

    def start(self) -> None:
        super().start()
        self._start("web", script("websocket_adapter.py"), http_ok(f"http://{HOST}:{self.web_port}/"))

    def pids(self) -> dict[str, int | None]:
        return {name: child.pid if child.running else None for name, child in self.children.items()}

    def tracebacks(self) -> dict[str, int]:
        logs = self.tmp / "logs"
        return {name: (logs / f"{name}.log").read_text(errors="replace").count(TRACEBACK) for name in self.children}


# --- the fuzzing connections ---------------------------------------------------------------


async def drain(reader: asyncio.StreamReader, tally: Tally, answered: asyncio.Event) -> None:
    """Read everything the server says (so it never holds output for us) until it
    closes; `answered` is set at each answer to `!who`."""
    try:
        while chunk := await reader.read(65536):
            tally.received += chunk.count(b"\n")
            if b"Online (" in chunk:
                answered.set()
    except (ConnectionError, OSError):
        pass


async def answered_who(mode: str, writer: asyncio.StreamWriter, reading: asyncio.Task[None], answered: asyncio.Event) -> bool:
    """Send `!who` and wait for its answer: the server has then read every line before it."""
    answered.clear()
    writer.write(b"!who\n" if mode == "text" else b'{"type": "command", "message": "!who"}\n')
    await writer.drain()
    waiting = asyncio.create_task(answered.wait())
    await asyncio.wait([reading, waiting], timeout=LINGER, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    return answered.is_set()


async def tcp_worker(index: int, mode: str, port: int, budget: int, deadline: float, fuzz: Fuzz, tally: Tally) -> None:
    """One connection at a time: log in (oddly, sometimes), send random lines, reconnect
    whenever the server closes it or after a random number of lines. Most connections
    mix in a good line now and then, so the server's budget of consecutive bad lines
    (it disconnects after 25) doesn't end them; some don't, to meet that budget."""
    loop = asyncio.get_running_loop()
    while tally.sent < budget and loop.time() < deadline:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            tally.by_kind["connect_failed"] += 1
            await asyncio.sleep(0.1)  # the server is gone or full: the final checks will say
            continue
        tally.connections += 1
        own = f"fz{index}_{tally.connections}"  # fresh: a name the fuzz registered earlier needs its password
        answered = asyncio.Event()
        reading = asyncio.create_task(drain(reader, tally, answered))
        lines = [fuzz.text_login(own) if mode == "text" else fuzz.json_login(own)]
        good_every = fuzz.rng.choice([0, 5, 10, 20])
        unconfirmed = 0
        try:
            for count in range(1, fuzz.rng.randint(1, 2000) + 1):
                if reading.done() or tally.sent + unconfirmed >= budget or loop.time() > deadline:
                    break
                if good_every and count % good_every == 0:
                    line = f"{own}: ok".encode() if mode == "text" else b'{"type": "command", "message": "!help"}'
                else:
                    line = lines.pop() if lines else (fuzz.text_line() if mode == "text" else fuzz.json_line())
                writer.write(line + b"\n")
                unconfirmed += 1
                await writer.drain()
                # Count lines once the server has shown it read them (closing with unread
                # input resets the connection, dropping them unparsed; a half-close makes
                # the server stop answering at once).
                if count % 200 == 0 and await answered_who(mode, writer, reading, answered):
                    tally.sent, tally.by_kind[mode], unconfirmed = tally.sent + unconfirmed, tally.by_kind[mode] + unconfirmed, 0
            if not reading.done() and await answered_who(mode, writer, reading, answered):
                tally.sent, tally.by_kind[mode], unconfirmed = tally.sent + unconfirmed, tally.by_kind[mode] + unconfirmed, 0
        except (ConnectionError, OSError):
            pass
        finally:
            tally.unconfirmed += unconfirmed  # sent, but the server may have closed before reading them
            writer.close()
            reading.cancel()


async def web_worker(index: int, port: int, budget: int, deadline: float, fuzz: Fuzz, tally: Tally) -> None:
    """The page's side: WebSocket frames (text and binary) to the adapter, which reads
    them in order (a closed socket ends the connection's frames)."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        while tally.sent < budget and loop.time() < deadline:
            try:
                async with http.ws_connect(f"http://{HOST}:{port}/ws", max_msg_size=0) as ws:
                    tally.connections += 1
                    own = f"fz{index}_{tally.connections}"
                    reading = asyncio.create_task(drain_ws(ws, tally))
                    await ws.send_str(fuzz.json_login(own).decode("utf-8", "replace"))
                    tally.sent += 1
                    for _ in range(fuzz.rng.randint(1, 1000)):
                        if reading.done() or tally.sent >= budget or loop.time() > deadline:
                            break
                        line = fuzz.json_line() if fuzz.rng.random() < 0.9 else b'{"type": "command", "message": "!who"}'
                        if fuzz.rng.random() < 0.1:
                            await ws.send_bytes(line)
                        else:
                            await ws.send_str(line.decode("utf-8", "replace"))
                        tally.sent += 1
                        tally.by_kind["web"] += 1
                    await ws.close()
                    reading.cancel()
            except (aiohttp.ClientError, ConnectionError, OSError):
                tally.by_kind["web_cut"] += 1  # e.g. an oversized frame closes the socket


async def drain_ws(ws: aiohttp.ClientWebSocketResponse, tally: Tally) -> None:
    async for _ in ws:
        tally.received += 1


async def api_worker(url: str, token: str, count: int, deadline: float, fuzz: Fuzz, tally: Tally) -> None:
    """Random bodies straight to the API's routes: any answer but a 5xx is fine."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(count):
            if loop.time() > deadline:
                return
            method, path = fuzz.rng.choice(API_ROUTES)
            body = fuzz.dumps(fuzz.api_body()).encode("utf-8", "surrogatepass")
            try:
                async with http.request(method, url + path, data=body, headers={"Content-Type": "application/json"}) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.by_kind[f"api_{type(exc).__name__}"] += 1
                continue
            tally.api_requests += 1
            tally.api_statuses[status] += 1
            if status >= 500 and len(tally.api_5xx_samples) < 5:
                tally.api_5xx_samples.append(f"{method} {path} {status} {body[:200]!r}")


async def fuzz_all(net: FuzzedNetwork, args: argparse.Namespace, tally: Tally) -> None:
    fuzz = Fuzz(random.Random(args.seed))
    deadline = asyncio.get_running_loop().time() + args.time_limit
    workers = []
    for index in range(args.connections):
        kind = ("text", "json", "web")[index % 3]
        worker_fuzz = Fuzz(random.Random(fuzz.rng.random()))  # own stream per worker: a seed still repeats the run
        if kind == "web":
            workers.append(web_worker(index, net.web_port, args.lines, deadline, worker_fuzz, tally))
        else:
            workers.append(tcp_worker(index, kind, net.port, args.lines, deadline, worker_fuzz, tally))
    workers.append(api_worker(net.api_url, net.token, args.api_requests, deadline, Fuzz(random.Random(fuzz.rng.random())), tally))
    await asyncio.gather(*workers)


# --- afterwards: can a normal user still chat? ---------------------------------------------


async def normal_users_chat(port: int) -> str | None:
    """Two fresh users log in over text mode and one's message reaches the other; None when so, else what went wrong."""
    alice, bob = f"ok{uuid.uuid4().hex[:8]}", f"ok{uuid.uuid4().hex[:8]}"
    try:
        async with asyncio.timeout(15):
            readers = {}
            for name in (alice, bob):
                reader, writer = await asyncio.open_connection(HOST, port)
                if (await reader.readline()).strip() != b"Enter username:":
                    return "no username prompt"
                writer.write(name.encode() + b"\n")
                while not (line := await reader.readline()).startswith(b"Welcome"):
                    if not line:
                        return f"{name}: closed before the welcome"
                readers[name] = (reader, writer)
            readers[alice][1].write(f"{bob}: hello after the fuzz\n".encode())
            while b"hello after the fuzz" not in (line := await readers[bob][0].readline()):
                if not line:
                    return "bob's connection closed"
            for _, writer in readers.values():
                writer.close()
        return None
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return repr(exc)


# --- schemathesis ------------------------------------------------------------------------------


SCHEMATHESIS_CHECKS: Final = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# What must not happen: a server error, a response that doesn't match its schema. An
# undocumented status (401 without the token, say) is listed but doesn't fail the run.
SCHEMATHESIS_FATAL: Final = ("ST101", "ST108")


@dataclass(frozen=True, order=True)
class Finding:
    operation: str
    code: str
    title: str
    status: str

    def __str__(self) -> str:
        return f"{self.code} {self.title}: {self.operation} answered {self.status}"


def schemathesis(net: FuzzedNetwork, examples: int, timeout: float, report_dir: Path) -> tuple[int, list[Finding]]:
    """Run schemathesis against the API's OpenAPI with the bearer token; its exit code
    and its unique failures, one per (operation, check, status)."""
    argv = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{net.api_url}/openapi.json", "-H", f"Authorization: Bearer {net.token}",
            "--checks", SCHEMATHESIS_CHECKS, "--max-examples", str(examples), "--seed", "1", "--no-color",
            "--generation-database", "none"]  # nothing left in the working tree  # fmt: skip
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=report_dir)  # its replay files go there
    except subprocess.TimeoutExpired:
        return 124, [Finding("(all)", "timeout", f"schemathesis did not finish within {timeout:.0f} s", "-")]
    (report_dir / "schemathesis.out").write_text(run.stdout + run.stderr)
    return run.returncode, unique_failures(run.stdout)


def unique_failures(output: str) -> list[Finding]:
    """Read schemathesis' console report: `___ METHOD /path ___` headings, then per test
    case `- STxxx Title` lines and the `[status] Reason:` line of its response."""
    found: set[Finding] = set()
    operation, pending = "?", []
    for line in output.splitlines():
        if heading := re.match(r"^_{3,} (\S+ \S+) _{3,}$", line):
            operation, pending = heading.group(1), []
        elif re.match(r"^\d+\. Test Case ID", line):
            pending = []
        elif check := re.match(r"^- (ST\d+) (.+)$", line):
            pending.append((check.group(1), check.group(2).strip()))
        elif (status := re.match(r"^\[(\d{3})\] ", line)) and pending:
            found.update(Finding(operation, code, title, status.group(1)) for code, title in pending)
            pending = []
    return sorted(found)


# --- main ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000, help="lines and frames to send over the chat connections (default 50,000)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections: text, JSON and WebSocket in turn (default 8)")
    parser.add_argument("--api-requests", type=int, default=2000, help="random bodies sent straight to the API (default 2,000)")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds the line fuzz may take at most (default 900)")
    parser.add_argument("--seed", type=int, default=None, help="repeat a run (default: a new one, printed)")
    parser.add_argument("--api", action="store_true", help="also run schemathesis against the API's OpenAPI")
    parser.add_argument("--api-examples", type=int, default=50, help="schemathesis examples per operation (default 50)")
    parser.add_argument("--api-timeout", type=float, default=900.0, help="seconds schemathesis may take at most (default 900)")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directory (its path is printed)")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)

    tmp = Path(tempfile.mkdtemp(prefix="chatnet-fuzz-"))
    net = FuzzedNetwork(tmp)
    tally = Tally()
    failures: list[str] = []
    print(f"chatnet fuzz: seed {args.seed}, {args.lines:,} lines over {args.connections} connections, logs in {tmp / 'logs'}", flush=True)
    try:
        net.start()
        before = net.pids()
        started = time.monotonic()
        asyncio.run(fuzz_all(net, args, tally))
        took = time.monotonic() - started
        print(f"lines sent:          {tally.sent:,} in {took:.0f} s ({', '.join(f'{k} {v:,}' for k, v in sorted(tally.by_kind.items()))})")
        print(f"lines not read:      {tally.unconfirmed:,} (written after the server had closed the connection, e.g. for 25 bad lines in a row)")
        print(f"lines received:      {tally.received:,} over {tally.connections:,} connections")
        print(f"API requests:        {tally.api_requests:,} random bodies ({', '.join(f'{s}: {n}' for s, n in sorted(tally.api_statuses.items()))})")
        if args.api:
            code, found = schemathesis(net, args.api_examples, args.api_timeout, tmp)
            fatal = [finding for finding in found if finding.code in SCHEMATHESIS_FATAL or finding.code == "timeout"]
            print(f"schemathesis:        exit {code}, {len(found)} unique failures, {len(fatal)} of them 5xx or schema mismatches  must be 0")
            print(f"  (its report: {tmp / 'schemathesis.out'})")
            for finding in found:
                print(f"  - {finding}")
            if fatal or (code != 0 and not found):
                failures.append("schemathesis found server errors or schema mismatches" if fatal else f"schemathesis exited {code}")
        problem = asyncio.run(normal_users_chat(net.port))
        api_5xx = sum(n for status, n in tally.api_statuses.items() if status >= 500)
        tracebacks = net.tracebacks()
        after = net.pids()
        changed = [name for name in before if after[name] != before[name]]
        print(f"tracebacks:          {sum(tracebacks.values())} ({', '.join(f'{name} {n}' for name, n in tracebacks.items())})  must be 0")
        print(f"API 500s:            {api_5xx}  must be 0")
        for sample in tally.api_5xx_samples:
            print(f"  - {sample}")
        print(f"restarts/pid change: {len(changed)}{' (' + ', '.join(changed) + ')' if changed else ''}  must be 0")
        print(f"normal user chats:   {'yes' if problem is None else 'NO: ' + problem}")
        if sum(tracebacks.values()):
            failures.append("tracebacks in the logs")
        if api_5xx:
            failures.append("API answered 5xx")
        if changed:
            failures.append("a process died or restarted")
        if problem is not None:
            failures.append("a normal user could not chat")
    finally:
        net.stop()
    print("fuzz: " + ("FAILED: " + "; ".join(failures) if failures else "passed"))
    if failures or args.keep:
        print(f"logs kept in {tmp / 'logs'}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
