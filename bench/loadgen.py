"""The load generator: logged-in clients in pairs, private messages both ways; or the
members of one room, a few of them sending to it.

One worker process drives a slice of the pairs on its own event loop; the parent
(`bench.workloads`) starts several of them and talks to each over a Pipe:

    parent -> worker   ("connect", None)         connect and log every client in
    worker -> parent   ("ready", {...})          all logged in (or how many failed)
    parent -> worker   ("go", Schedule)          send load on that schedule
    worker -> parent   ("done", WorkerResult)    counts and latencies

A protocol is an adapter: how to log in, how a private message is written, how a
delivered one is recognised. The data path is the same for both servers, so a
difference in the figures is the server's.

Every payload is `<seq> <send time ns>`: the receiver checks the sequence (pairs are
one sender each way, and TCP through one server keeps order) and takes the latency.
In a room (`RoomShare`) it is `<sender index> <seq> <send time ns>`: the sampled
members read each line as it comes, check the order per sender and take its latency;
every other member only counts its lines, read in batches (ROOM_READ_EVERY).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Final

try:  # the same loop for both servers, whichever it is
    import uvloop
except ImportError:  # pragma: no cover - platforms without uvloop
    uvloop = None  # type: ignore[assignment]

LOGIN_TIMEOUT: Final = 120.0  # a slow login is measured, not retried
# A room member that only counts is read every ROOM_READ_EVERY, a slice of them per
# ROOM_READ_TICK, instead of at each line: a read per delivery would cost the
# generator as much as the server's write (mostly the kernel's recv), and what the
# server does is the same whenever its lines are read (the receiving kernel acknowledges
# them on arrival). The members that sample latency still read at once.
ROOM_READ_EVERY: Final = 0.1  # 50 ms: generator ≈ 0.27 cores at N = 1,000 @ 100 msg/s; 100 ms: ≈ 0.2
ROOM_READ_TICK: Final = 0.005
ROOM_READ_BYTES: Final = 1 << 16


@dataclass(frozen=True, slots=True)
class Schedule:
    """Absolute times on the shared monotonic clock (CLOCK_MONOTONIC is system-wide)."""

    start: float  # sending begins
    window_start: float  # warm-up over: receipts from here on are counted
    window_end: float  # sending stops; counting stops
    grace: float  # how long to wait for in-flight messages after window_end
    mode: str  # "throughput" | "latency" | "idle" | "room"
    window: int = 8  # in-flight messages per sender (throughput)
    rate: float = 0.0  # messages/s offered by this worker (latency)
    sends: int = 0  # room: messages this worker sends, evenly from start to window_end
    expect: int = 0  # room: deliveries this worker's members should get (the drain's target)


@dataclass(frozen=True, slots=True)
class RoomShare:
    """One worker's part of a room workload."""

    room: str  # "#bench-r3"
    members: tuple[str, ...]  # this worker's members
    senders: dict[str, int]  # the members of this worker that send, with their index in the room
    sampled: frozenset[str]  # the members that check every line (order per sender, latency)
    sender_count: int  # senders in the whole room


@dataclass(slots=True)
class WorkerResult:
    sent: int = 0
    received: int = 0
    delivered_in_window: int = 0
    out_of_order: int = 0
    disconnected: int = 0
    mail_unavailable: int = 0  # chatnet logins welcomed without their mail count
    latencies_us: list[float] = field(default_factory=list)
    # Private messages (throughput, latency): what each receiver got inside the window,
    # and the latencies it sampled, by name, so the parent can tell the messages that
    # crossed from node to node from the others.
    by_receiver: dict[str, int] = field(default_factory=dict)
    latencies_by_receiver: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- protocol adapters ---------------------------------------------------------------


def _seen(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class Client(asyncio.Protocol):
    """One logged-in user. Subclasses say how the protocol looks on the wire."""

    NEWLINE: bytes = b"\n"

    def __init__(self, name: str, partner: str, stats: WorkerResult) -> None:
        self.name = name
        self.partner = partner
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.logged_in: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.closing = False
        # Set by the worker: the client that sends to this one (its credits come back here).
        self.peer: Client | None = None
        self.sent = 0  # sequence number of the last message this client sent
        self.received = 0  # messages received from the partner
        self.in_window = 0  # of them, inside the measurement window
        self.latencies: list[float] = []  # the latency samples of those (µs)
        self.in_flight = 0
        # (receiver, count, lines): every chat line of a read, or only its last one.
        self.on_delivered: Callable[[Client, int, list[bytes]], None] | None = None
        self.fast = False  # count without splitting; off when every line's latency counts
        self.joined: asyncio.Future[None] | None = None  # a room join awaiting its answer
        self.index = -1  # a room sender's index (in its payloads)
        self.last_seq: list[int] | None = None  # a sampled room member: the last seq per sender

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.on_connect()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.stats.disconnected += 1
        if not self.logged_in.done():
            self.logged_in.set_exception(ConnectionError(f"{self.name}: closed before login"))
        if self.joined is not None and not self.joined.done():
            self.joined.set_exception(ConnectionError(f"{self.name}: closed before the join"))

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        newline = self.NEWLINE
        end = data.rfind(newline)
        if end < 0:
            self.buffer = data
            return
        self.buffer = data[end + len(newline) :]
        if self.fast and self.on_delivered is not None:
            # Reads that hold only chat lines (nearly all of them under load) are
            # counted without splitting: the generator must stay cheaper than a server.
            count = self.count_chat(data, end)
            if count == data.count(newline, 0, end) + 1:
                last = data[data.rfind(newline, 0, end) + len(newline) : end] if count > 1 else data[:end]
                self.on_delivered(self, count, [last])
                return
        self._lines(data[:end].split(newline))

    def _lines(self, lines: list[bytes]) -> None:
        if not self.logged_in.done():
            lines = self._login_lines(lines)
        chat = []
        is_chat = self.is_chat
        for line in lines:
            if is_chat(line):
                chat.append(line)
            else:
                if self.joined is not None:
                    self._join_line(line)
                self.on_other(line)
        if chat and self.on_delivered is not None:
            self.on_delivered(self, len(chat), chat)

    def _login_lines(self, lines: list[bytes]) -> list[bytes]:
        for index, line in enumerate(lines):
            if self.on_login_line(line):
                self.logged_in.set_result(None)
                return lines[index + 1 :]
        return []

    def _join_line(self, line: bytes) -> None:
        joined = self.joined
        assert joined is not None
        try:
            done = self.on_join_line(line)
        except ConnectionError as exc:
            if not joined.done():
                joined.set_exception(exc)
            done = True
        if done:
            if not joined.done():
                joined.set_result(None)
            self.joined = None

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    # -- what a protocol defines
    def on_connect(self) -> None: ...

    def on_login_line(self, line: bytes) -> bool:
        """True when this line completes the login."""
        raise NotImplementedError

    def join(self) -> bytes:
        """The line that joins the room named by `partner`."""
        raise NotImplementedError

    def on_join_line(self, line: bytes) -> bool:
        """True when this line says the join is done; ConnectionError when refused."""
        raise NotImplementedError

    def is_chat(self, line: bytes) -> bool:
        raise NotImplementedError

    def count_chat(self, data: bytes, end: int) -> int:
        """How many lines of data[:end] are chat lines (an estimate is fine when the
        read also holds other lines: then the count differs and the slow path runs)."""
        raise NotImplementedError

    def payload(self, line: bytes) -> bytes:
        raise NotImplementedError

    def message(self, payload: bytes) -> bytes:
        """The bytes that send `payload` to the partner, newline included."""
        raise NotImplementedError

    def on_other(self, line: bytes) -> None: ...


class IrcClient(Client):
    """RFC 2812 client: NICK/USER, wait for 001, PRIVMSG, answer PING."""

    NEWLINE = b"\r\n"

    def on_connect(self) -> None:
        name = self.name.encode()
        self.write(b"NICK %s\r\nUSER %s 0 * :%s\r\n" % (name, name, name))
        self._prefix = b"PRIVMSG %s :" % self.partner.encode()

    def on_login_line(self, line: bytes) -> bool:
        if line.startswith(b"PING"):
            self.on_other(line)
            return False
        return line.split(b" ", 2)[1:2] == [b"001"]

    def join(self) -> bytes:
        return b"JOIN %s\r\n" % self.partner.encode()

    def on_join_line(self, line: bytes) -> bool:
        code = line.split(b" ", 2)[1:2]
        if code == [b"366"]:  # end of NAMES: the join is complete
            return True
        if code and code[0][:1] in (b"4", b"5") and code[0].isdigit():
            raise ConnectionError(f"{self.name}: JOIN refused: {line!r}")
        return False

    def is_chat(self, line: bytes) -> bool:
        return b" PRIVMSG " in line

    def count_chat(self, data: bytes, end: int) -> int:
        return data.count(b" PRIVMSG ", 0, end)

    def payload(self, line: bytes) -> bytes:
        return line.split(b" :", 1)[1]

    def message(self, payload: bytes) -> bytes:
        return self._prefix + payload + b"\r\n"

    def on_other(self, line: bytes) -> None:
        if line.startswith(b"PING"):
            self.write(b"PONG" + line[4:] + b"\r\n")


class ChatnetClient(Client):
    """chatnet text mode, as at `nc`: the name at the prompt, `bob: hi`, `[ts][alice] hi`."""

    def on_connect(self) -> None:
        self._prefix = self.partner.encode() + b": "

    def on_login_line(self, line: bytes) -> bool:
        if line.startswith(b"Enter username"):
            self.write(self.name.encode() + b"\n")
            return False
        if line.startswith(b"Welcome, "):
            self.stats.mail_unavailable += b"unavailable" in line
            return True
        return False

    def join(self) -> bytes:
        return b"!join %s\n" % self.partner.encode()

    def on_join_line(self, line: bytes) -> bool:
        room = self.partner.encode()
        if line.startswith((b"Created " + room + b";", b"Joined " + room + b" ")):
            return True
        if line.startswith(b"Error"):
            raise ConnectionError(f"{self.name}: !join refused: {line!r}")
        return False

    def is_chat(self, line: bytes) -> bool:
        return line[:1] == b"[" and not line.startswith(b"[Stored]")

    def count_chat(self, data: bytes, end: int) -> int:
        starts = data.count(b"\n[", 0, end) + (data[:1] == b"[")
        return starts - data.count(b"[Stored]", 0, end)

    def payload(self, line: bytes) -> bytes:
        return line.split(b"] ", 1)[1]

    def message(self, payload: bytes) -> bytes:
        return self._prefix + payload + b"\n"


ADAPTERS: Final[dict[str, type[Client]]] = {"irc": IrcClient, "chatnet": ChatnetClient}


# --- one worker ----------------------------------------------------------------------


class Load:
    """The clients of one worker and the traffic between them."""

    def __init__(self, protocol: str, host: str, port: int, pairs: list[tuple[str, str]], room: RoomShare | None = None) -> None:
        self.adapter = ADAPTERS[protocol]
        self.host = host
        self.port = port
        self.pairs = pairs
        self.room = room
        self.stats = WorkerResult()
        self.clients: list[Client] = []
        self.schedule: Schedule | None = None
        self.sending = False
        self.sample_every_line = False
        self.retries = 0

    async def connect(self, concurrency: int = 32) -> dict[str, Any]:
        """Connect and log in every client, at most `concurrency` logins at once (a
        burst beyond the server's listen backlog only measures SYN retransmits)."""
        gate = asyncio.Semaphore(concurrency)
        started = time.monotonic()

        async def one(name: str, partner: str) -> Client:
            async with gate:  # a room's join is paced with the login
                client = await self._login(name, partner)
                return client if self.room is None else await self._join(client)

        room = self.room  # a room member's partner is the room
        everyone = [(name, room.room) for name in room.members] if room else [*self.pairs, *((b, a) for a, b in self.pairs)]
        made = await asyncio.gather(*(one(name, partner) for name, partner in everyone), return_exceptions=True)
        failures = [repr(c) for c in made if isinstance(c, BaseException)]
        self.clients = [c for c in made if isinstance(c, Client)]
        if room is not None:
            self._room_roles(room)
        else:
            by_name = {c.name: c for c in self.clients}
            for client in self.clients:
                client.peer = by_name.get(client.partner)
                client.on_delivered = self._delivered
        return {"login_s": time.monotonic() - started, "clients": len(self.clients), "failed": len(failures),
                "retries": self.retries, "errors": failures[:5]}  # fmt: skip

    async def _login(self, name: str, partner: str, attempts: int = 3) -> Client:
        """One client logged in; a login that stalls is retried on a new connection."""
        loop = asyncio.get_running_loop()
        for attempt in range(attempts):
            _, client = await loop.create_connection(lambda: self.adapter(name, partner, self.stats), self.host, self.port)
            try:
                await asyncio.wait_for(asyncio.shield(client.logged_in), LOGIN_TIMEOUT)
                return client
            except (TimeoutError, ConnectionError):
                client.close()
                # Its "closed before login" is seen, now or when the close completes: no
                # "Future exception was never retrieved" for each (770 in one ngircd storm).
                client.logged_in.add_done_callback(_seen)
                if attempt == attempts - 1:
                    raise
                self.retries += 1
                await asyncio.sleep(0.1)
        raise AssertionError("unreachable")

    async def _join(self, client: Client) -> Client:
        """A logged-in client into the room (its partner), once the server says it is in."""
        client.joined = joined = asyncio.get_running_loop().create_future()
        client.write(client.join())
        await asyncio.wait_for(joined, LOGIN_TIMEOUT)
        return client

    def _room_roles(self, room: RoomShare) -> None:
        for client in self.clients:
            client.on_delivered = self._room_delivered
            client.index = room.senders.get(client.name, -1)
            if client.name in room.sampled:
                client.last_seq = [0] * room.sender_count

    def _send(self, client: Client, count: int) -> None:
        """`count` messages from `client` to its partner, in one write."""
        seq = client.sent
        template = client.message(b"%%d %d" % time.monotonic_ns())  # one send time per batch
        client.write(b"".join([template % i for i in range(seq + 1, seq + count + 1)]))
        client.sent = seq + count
        client.in_flight += count
        self.stats.sent += count

    def _delivered(self, receiver: Client, count: int, lines: list[bytes]) -> None:
        """`count` chat lines arrived at `receiver` in one read; credit their sender."""
        now = time.monotonic()
        first = receiver.received + 1
        receiver.received += count
        self.stats.received += count
        schedule = self.schedule
        if schedule is not None and schedule.window_start <= now < schedule.window_end:
            self.stats.delivered_in_window += count
            receiver.in_window += count
            if self.sample_every_line:
                for offset, line in enumerate(lines):
                    self._check(receiver, line, now, first + offset)
            else:  # throughput: one latency sample per read keeps the generator light
                self._check(receiver, lines[-1], now, receiver.received)
        sender = receiver.peer
        if sender is None:
            return
        sender.in_flight -= count
        if self.sending and schedule is not None and schedule.mode == "throughput":
            self._send(sender, count)

    def _room_delivered(self, receiver: Client, count: int, lines: list[bytes]) -> None:
        """`count` room lines arrived at `receiver` in one read. A sampled member gets
        every line (no fast path): order per sender, and the latency of each."""
        now = time.monotonic()
        receiver.received += count
        stats = self.stats
        stats.received += count
        schedule = self.schedule
        in_window = schedule is not None and schedule.window_start <= now < schedule.window_end
        if in_window:
            stats.delivered_in_window += count
        last = receiver.last_seq
        if last is None:
            return
        now_ns = now * 1e9
        latencies = stats.latencies_us
        for line in lines:
            sender, seq, sent_ns = receiver.payload(line).split(b" ")
            index, number = int(sender), int(seq)
            if number != last[index] + 1:
                stats.out_of_order += 1
            last[index] = number
            if in_window:
                latencies.append((now_ns - int(sent_ns)) / 1000)

    def _check(self, receiver: Client, line: bytes, now: float, expected_seq: int) -> None:
        seq, sent_ns = receiver.payload(line).split(b" ")
        if int(seq) != expected_seq:
            self.stats.out_of_order += 1
        latency = (now * 1e9 - int(sent_ns)) / 1000
        self.stats.latencies_us.append(latency)
        receiver.latencies.append(latency)

    async def run(self, schedule: Schedule) -> WorkerResult:
        self.schedule = schedule
        self.sample_every_line = schedule.mode == "latency"
        for client in self.clients:
            client.fast = not self.sample_every_line and client.last_seq is None
        await _sleep_until(schedule.start)
        if schedule.mode == "room":
            reader = asyncio.create_task(self._read_quiet_members([c for c in self.clients if c.last_seq is None]))
            self.sending = True
            await self._room_paced(schedule)
            self.sending = False
            await self._drain(schedule.window_end + schedule.grace, schedule.expect)
            reader.cancel()
        elif schedule.mode != "idle":
            self.sending = True
            if schedule.mode == "throughput":
                for client in self.clients:
                    if client.peer is not None:
                        self._send(client, schedule.window)
                await _sleep_until(schedule.window_end)
            else:
                await self._paced(schedule)
            self.sending = False
            await self._drain(schedule.window_end + schedule.grace, self.stats.sent)
            paired = [c for c in self.clients if c.peer is not None]
            self.stats.by_receiver = {c.name: c.in_window for c in paired}
            self.stats.latencies_by_receiver = {c.name: c.latencies for c in paired}
        else:
            await _sleep_until(schedule.window_end)
        return self.stats

    async def _paced(self, schedule: Schedule) -> None:
        """Offer `rate` messages/s, round robin over the clients, in 1 ms ticks."""
        senders = [c for c in self.clients if c.peer is not None]
        if not senders or schedule.rate <= 0:
            await _sleep_until(schedule.window_end)
            return
        offered = 0
        turn = 0
        while (now := time.monotonic()) < schedule.window_end:
            due = int((now - schedule.start) * schedule.rate) - offered
            for _ in range(due):
                self._send(senders[turn], 1)
                turn = (turn + 1) % len(senders)
            offered += due
            await asyncio.sleep(0.001)

    async def _room_paced(self, schedule: Schedule) -> None:
        """Exactly `sends` room messages, evenly spaced from start to window_end, round
        robin over this worker's senders (sleeping until each is due: no idle ticks)."""
        senders = [c for c in self.clients if c.index >= 0]
        if not senders or schedule.sends <= 0:
            await _sleep_until(schedule.window_end)
            return
        span = schedule.window_end - schedule.start
        for number in range(schedule.sends):
            await _sleep_until(schedule.start + number * span / schedule.sends)
            sender = senders[number % len(senders)]
            sender.sent += 1
            sender.write(sender.message(b"%d %d %d" % (sender.index, sender.sent, time.monotonic_ns())))
            self.stats.sent += 1
        await _sleep_until(schedule.window_end)

    async def _read_quiet_members(self, quiet: list[Client]) -> None:
        """Read the members that only count in batches: their transports stop reading, and
        each ROOM_READ_TICK one slice of them is read directly, so each is read once per
        ROOM_READ_EVERY (in slices, so the sampled members never wait behind them all)."""
        fds: list[tuple[Client, int]] = []
        for client in quiet:
            assert client.transport is not None
            client.transport.pause_reading()
            fds.append((client, client.transport.get_extra_info("socket").fileno()))
        slices = max(1, round(ROOM_READ_EVERY / ROOM_READ_TICK))
        read = os.read
        for tick in itertools.count():
            await asyncio.sleep(ROOM_READ_TICK)
            for client, fd in fds[tick % slices :: slices]:
                while not client.closing:
                    try:
                        data = read(fd, ROOM_READ_BYTES)
                    except BlockingIOError:
                        break
                    except OSError:
                        data = b""
                    if not data:  # the server closed it: the transport, not reading, can't tell
                        client.closing = True
                        self.stats.disconnected += 1
                        break
                    client.data_received(data)
                    if len(data) < ROOM_READ_BYTES:
                        break

    async def _drain(self, deadline: float, target: int) -> None:
        """Wait until `target` messages have arrived, or the deadline."""
        while time.monotonic() < deadline and self.stats.received < target:
            await asyncio.sleep(0.01)

    def close(self) -> None:
        for client in self.clients:
            client.close()


async def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _serve_parent(conn: Connection, load: Load) -> None:
    loop = asyncio.get_running_loop()
    while True:
        command, argument = await loop.run_in_executor(None, conn.recv)
        if command == "connect":
            conn.send(("ready", await load.connect(argument or 32)))
        elif command == "go":
            result = await load.run(argument)
            conn.send(("done", result.as_dict()))
        elif command == "stop":
            load.close()
            await asyncio.sleep(0.05)
            conn.send(("stopped", None))
            return


def worker_main(conn: Connection, protocol: str, host: str, port: int, pairs: list[tuple[str, str]],
                room: RoomShare | None = None) -> None:  # fmt: skip
    """Entry point of a worker process."""
    if uvloop is not None:
        uvloop.install()

    async def main() -> None:
        await _serve_parent(conn, Load(protocol, host, port, pairs, room))

    asyncio.run(main())
