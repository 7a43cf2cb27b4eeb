"""Small real stand-ins for driving the chat server's core in process, fast.

- `RecordingTransport`: what a `Session` uses of an asyncio transport. It records the
  bytes written, can be made to look full (pausing the session like asyncio would) and
  closes the way asyncio does: `connection_lost` comes later, on the loop, and only
  once the buffer is empty after a graceful `close()`.
- `Client`: a `Session` connected through one, fed lines, read back as lines or frames.
- `FakeApi`: the message API in memory (`store_mail`, `pending`, `ack`,
  `archive_encoded`, the rooms, read markers and conversation lists); it records every
  request and can be told to fail or to hold requests until released.

No mocking library: these are plain classes with real behaviour.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from chatnet.api_client import Account, LoginCheck, MailReceipt, PasswordChange
from chatnet.config import Settings
from chatnet.dialects import TEXT, Dialect, pick_text_or_json
from chatnet.errors import ApiRejected, StoreUnavailable
from chatnet.flood import flood_buckets
from chatnet.keys import Key, decode_cursor, encode_cursor
from chatnet.limits import MAX_ROOMS_PER_USER, MAX_UNREAD
from chatnet.message import Message
from chatnet.protocol import SERVER_NAME, MessageJson, format_datetime, is_room, message_json, parse_timestamp, utcnow
from chatnet.rooms_store import banned, normal_mask
from chatnet.router import Router
from chatnet.session import WRITE_HIGH_WATER, Session

DEADLINE = 2.0  # seconds any single wait in these tests may take before it fails

_ports = itertools.count(40_000)


def settings(**overrides: Any) -> Settings:
    """Defaults (and `overrides`) only: a developer's .env can't change what the tests
    see. Flood control off unless asked for: its own tests ask."""
    return Settings(_env_file=None, **{"flood_rate": 0, **overrides})


async def turns(count: int = 1) -> None:
    """Let the event loop run `count` passes (call_soon callbacks, ready tasks)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def until(condition: Callable[[], object], what: str = "the condition", timeout: float = DEADLINE) -> None:
    """Run the loop until `condition()` is true; fail after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


# --- the transport ---------------------------------------------------------------------


class FakeSocket:
    """What `Session` asks of a transport's socket: TCP_INFO's count of acknowledged bytes."""

    def __init__(self, transport: RecordingTransport) -> None:
        self.transport = transport

    def fileno(self) -> int:
        return -1  # no SIOCOUTQ on it: RecordingSession answers that from the transport

    def getsockopt(self, level: int, option: int, size: int = 0) -> bytes:
        assert (level, option) == (socket.IPPROTO_TCP, socket.TCP_INFO)
        acked = self.transport.acked
        if acked is None:
            acked = sum(map(len, self.transport.writes))
        return bytes(120) + struct.pack("Q", acked) + bytes(max(0, size - 128))


class RecordingSession(Session):
    """A session whose socket's send queue (SIOCOUTQ, which a fake socket can't be asked)
    is what Linux would report of the transport's fake kernel: the bytes it took (all
    written, less the buffer) that the peer's TCP stack has not acknowledged."""

    def unacknowledged_bytes(self) -> int:
        transport = self.transport
        if not isinstance(transport, RecordingTransport) or transport.acked is None:
            return 0
        return max(0, sum(map(len, transport.writes)) - transport.buffer_size - transport.acked)


class RecordingTransport:
    """Just what `Session` uses of `asyncio.Transport`, recording what it is given."""

    def __init__(self, protocol: asyncio.Protocol, peer: tuple[str, int] | None = None) -> None:
        self.protocol = protocol
        self.peer = peer if peer is not None else ("127.0.0.1", next(_ports))
        self.writes: list[bytes] = []  # one entry per write() call
        self.written_after_close: list[bytes] = []
        self.buffer_size = 0  # what get_write_buffer_size() reports
        self.reading = True  # pause_reading / resume_reading
        self.limits: tuple[int | None, int | None] | None = None
        self.closing = False
        self.aborted = False
        self.lost = False  # connection_lost was called
        self.paused = False  # we told the protocol to pause writing
        # Bytes the peer's TCP stack has acknowledged (TCP_INFO); None: all written.
        self.acked: int | None = None
        self._lost_scheduled = False
        self._loop = asyncio.get_running_loop()

    # --- what asyncio.Transport offers --------------------------------------------------

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes), f"write() takes bytes, got {type(data).__name__}"
        (self.written_after_close if self.closing else self.writes).append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        """Graceful: like asyncio, connection_lost follows once the buffer is empty."""
        if self.closing:
            return
        self.closing = True
        if not self.buffer_size:
            self._schedule_lost(None)

    def abort(self) -> None:
        """At once: the buffer is dropped and connection_lost follows on the loop."""
        self.aborted = True
        self.closing = True
        self.buffer_size = 0
        self._schedule_lost(None)

    def get_write_buffer_size(self) -> int:
        return self.buffer_size

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return FakeSocket(self)
        return self.peer if name == "peername" else default

    # --- what a test makes happen -------------------------------------------------------

    def fill(self, size: int = WRITE_HIGH_WATER + 1) -> None:
        """The peer stopped reading: the buffer holds `size` bytes; past the high-water
        mark the protocol is paused, as asyncio does."""
        self.buffer_size = size
        high = self.limits[0] if self.limits and self.limits[0] is not None else WRITE_HIGH_WATER
        if size > high and not self.paused:
            self.paused = True
            self.protocol.pause_writing()

    def drain(self) -> None:
        """The peer read everything: the buffer is empty; a paused protocol resumes;
        a close that waited for the buffer completes."""
        self.buffer_size = 0
        if self.paused:
            self.paused = False
            self.protocol.resume_writing()
        if self.closing:
            self._schedule_lost(None)

    def disconnect(self, exc: Exception | None = None) -> None:
        """The peer went away."""
        self.closing = True
        self.buffer_size = 0
        self._schedule_lost(exc)

    def _schedule_lost(self, exc: Exception | None) -> None:
        if not self._lost_scheduled:
            self._lost_scheduled = True
            self._loop.call_soon(self._call_lost, exc)

    def _call_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.protocol.connection_lost(exc)

    # --- what was written --------------------------------------------------------------

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


# --- a connected session -------------------------------------------------------------


class Client:
    """A `Session` on a `RecordingTransport`: feed it lines, read what it was sent."""

    def __init__(
        self,
        router: Any,
        dialect: Dialect = TEXT,
        pick: Callable[[str], Dialect] | None = pick_text_or_json,
        peer: tuple[str, int] | None = None,
    ) -> None:
        given = router.settings
        self.session = RecordingSession(router, dialect, pick, flood_buckets(given.flood_rate, given.flood_burst)())
        self.transport = RecordingTransport(self.session, peer)
        self.session.connection_made(self.transport)  # type: ignore[arg-type]  # duck-typed, as uvloop's is
        self._taken = 0  # lines already returned by take() / expect()

    def __repr__(self) -> str:
        return f"<Client {self.session!r}>"

    @property
    def peer(self) -> str:
        host, port = self.transport.peer
        return f"{host}:{port}"

    # --- in ----------------------------------------------------------------------------

    def send(self, *lines: str | bytes) -> None:
        """Everything in one chunk, each with its newline, as one data_received."""
        self.send_raw(b"".join((line.encode() if isinstance(line, str) else line) + b"\n" for line in lines))

    def send_raw(self, data: bytes) -> None:
        self.session.data_received(data)

    def send_json(self, *frames: dict[str, Any]) -> None:
        self.send(*(json.dumps(frame) for frame in frames))

    def chat(self, destination: str, message: str, metadata: dict[str, Any] | None = None) -> None:
        """A JSON chat frame."""
        frame: dict[str, Any] = {"type": "chat", "destination": destination, "message": message}
        if metadata is not None:
            frame["metadata"] = metadata
        self.send_json(frame)

    # --- out ---------------------------------------------------------------------------

    def lines(self) -> list[str]:
        """Every line sent to this connection so far."""
        return self.transport.data.decode().splitlines()

    def take(self) -> list[str]:
        """The lines sent since the last take() / expect()."""
        lines = self.lines()
        new, self._taken = lines[self._taken :], len(lines)
        return new

    def frames(self, lines: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The JSON frames among `lines` (default: every line so far)."""
        return [json.loads(line) for line in (self.lines() if lines is None else lines) if line.startswith("{")]

    def take_frames(self) -> list[dict[str, Any]]:
        return self.frames(self.take())

    async def expect(self, match: str | Callable[[str], bool], timeout: float = DEADLINE) -> str:
        """The next unread line equal to `match` (or for which it is true); the lines
        before it are read past."""
        test = match if callable(match) else (lambda line: line == match)
        found: list[str] = []

        def seen() -> bool:
            lines = self.lines()
            for index in range(self._taken, len(lines)):
                if test(lines[index]):
                    self._taken = index + 1
                    found.append(lines[index])
                    return True
            return False

        try:
            await until(seen, f"{match!r}", timeout)
        except AssertionError:
            raise AssertionError(f"{self!r}: no line {match!r} in time; unread: {self.lines()[self._taken :]}") from None
        return found[0]

    async def expect_frame(self, match: Callable[[dict[str, Any]], bool], timeout: float = DEADLINE) -> dict[str, Any]:
        """The next unread JSON frame for which `match` is true."""
        line = await self.expect(lambda line: line.startswith("{") and match(json.loads(line)), timeout)
        frame: dict[str, Any] = json.loads(line)
        return frame

    async def settle(self) -> list[str]:
        """Let the pending flush run (one loop pass is enough) and take the new lines."""
        await turns(2)
        return self.take()

    # --- state -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """connection_lost has reached the session."""
        return self.transport.lost

    async def wait_closed(self, timeout: float = DEADLINE) -> None:
        await until(lambda: self.transport.lost, f"{self!r} to close", timeout)


async def text_client(router: Any, name: str) -> Client:
    """A text-mode user, logged in, the welcome read."""
    client = Client(router)
    client.send(name)
    await client.expect(lambda line: line.startswith(f"Welcome, {name}!"))
    return client


async def json_client(router: Any, name: str, features: Iterable[str] = ()) -> Client:
    """A JSON-mode program, logged in, the welcome frame read."""
    client = Client(router)
    client.send_json({"type": "login", "user": name, "features": list(features)})
    await client.expect_frame(lambda frame: frame["metadata"].get("event") == "welcome")
    return client


@asynccontextmanager
async def running_router(api: Any, given: Settings | None = None) -> AsyncIterator[Router]:
    """A started router over `api`; stopped (goodbyes, drains, tasks awaited) after."""
    router = Router(given or settings(), api)
    router.start()
    try:
        yield router
    finally:
        await router.stop(1.0)


# --- the message API ------------------------------------------------------------------


class Gate:
    """Holds calls to one API method until let through: `allow(n)` lets the next n
    through, `open()` all from now on."""

    def __init__(self) -> None:
        self.arrived = 0  # calls that reached the gate
        self.waiting = 0  # calls held right now
        self._permits = 0
        self._open = False
        self._changed = asyncio.Event()

    async def passage(self) -> None:
        self.arrived += 1
        self.waiting += 1
        try:
            while not self._open and self._permits <= 0:
                self._changed.clear()
                await self._changed.wait()
            if not self._open:
                self._permits -= 1
        finally:
            self.waiting -= 1

    def allow(self, count: int = 1) -> None:
        self._permits += count
        self._changed.set()

    def open(self) -> None:
        self._open = True
        self._changed.set()


@dataclass
class Call:
    """One request the stand-in received."""

    method: str
    args: dict[str, Any]
    outcome: str = "pending"  # then "ok" or the exception's class name
    started: int = 0  # order of arrival and of completion among all calls
    finished: int = -1


@dataclass
class _Failure:
    error: Exception
    times: int | None  # None: until healed


@dataclass
class FakeApi:
    """`chatnet.api_client.ApiClient` in memory, for what the router and delivery use."""

    mail: dict[str, list[Message]] = field(default_factory=lambda: defaultdict(list))
    # Accounts by key (lower case): (name as registered, kind, password); session tokens.
    accounts: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    _failures: dict[str, _Failure] = field(default_factory=dict)
    _gates: dict[str, Gate] = field(default_factory=dict)
    _clock: itertools.count[int] = field(default_factory=itertools.count)
    # Rooms by key (name lower-cased): their fields; members and invitations (key → name
    # as spelled); their history (id → message dict). Archived direct messages by id;
    # read markers by (user, conversation) keys; the users whose default rooms were joined.
    room_docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    room_members: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    room_invited: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    room_log: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    direct_log: dict[str, dict[str, Any]] = field(default_factory=dict)
    read_markers: dict[tuple[str, str], Key] = field(default_factory=dict)
    rooms_set_up: set[str] = field(default_factory=set)

    # --- steering ----------------------------------------------------------------------

    def fail(self, method: str, error: Exception | None = None, times: int | None = None) -> None:
        """Make `method` raise `error` (default StoreUnavailable) `times` times, or until healed."""
        self._failures[method] = _Failure(error or StoreUnavailable("message API unreachable (test)"), times)

    def heal(self, method: str | None = None) -> None:
        if method is None:
            self._failures.clear()
        else:
            self._failures.pop(method, None)

    def hold(self, method: str) -> Gate:
        """Hold calls to `method` at a gate until it lets them through."""
        gate = self._gates[method] = Gate()
        return gate

    def put_room(self, room: str, owner: str = SERVER_NAME, members: Iterable[str] = (), private: bool = False, topic: str | None = None) -> None:
        """A room already in the store before the test (not a request)."""
        self.room_docs[room.lower()] = {
            "name": room, "owner": owner, "topic": topic, "topic_by": owner if topic else None, "private": private,
            "moderated": False, "no_external": True, "secret": False, "topic_lock": False, "key": None, "limit": None,
            "bans": [], "ops": [owner], "voiced": [],
        }  # fmt: skip
        for user in members:
            self.room_members[room.lower()][user.lower()] = user
            self.read_markers[(user.lower(), room.lower())] = (format_datetime(utcnow()), "")

    def put_room_history(self, room: str, *texts: str, sender: str = "alice") -> list[dict[str, Any]]:
        """Room messages already archived before the test (not a request)."""
        docs = [message_shape(sender, room, text) for text in texts]
        for doc in docs:
            self.room_log[room.lower()][doc["id"]] = doc
        return docs

    def put_mail(self, user: str, *texts: str, sender: str = "alice") -> list[Message]:
        """Mail already in the store before the test (not a request)."""
        messages = [Message(sender=sender, destination=user, message=text, timestamp=utcnow()) for text in texts]
        self.mail[user].extend(messages)
        return messages

    # --- what was asked -----------------------------------------------------------------

    def requests(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    @property
    def stored(self) -> list[dict[str, Any]]:
        """Every document a successful store_mail took, in order."""
        return [doc for call in self.requests("store_mail") if call.outcome == "ok" for doc in call.args["docs"]]

    @property
    def acked(self) -> list[list[str]]:
        """The ids of each successful acknowledgement, in order."""
        return [call.args["ids"] for call in self.requests("ack") if call.outcome == "ok"]

    @property
    def archived(self) -> list[list[dict[str, Any]]]:
        """The documents of each successful archive request, in order."""
        return [call.args["docs"] for call in self.requests("archive_encoded") if call.outcome == "ok"]

    async def _request(self, method: str, **args: Any) -> Call:
        call = Call(method, args, started=next(self._clock))
        self.calls.append(call)
        await asyncio.sleep(0)  # a real request always yields to the loop
        gate = self._gates.get(method)
        if gate is not None:
            await gate.passage()
        failure = self._failures.get(method)
        if failure is not None:
            if failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    del self._failures[method]
            call.outcome, call.finished = type(failure.error).__name__, next(self._clock)
            raise failure.error
        return call

    def _validate(self, call: Call, docs: list[dict[str, Any]], rooms: bool = False) -> list[Message]:
        """The request's messages; like the API, one invalid document refuses the whole
        request. `rooms`: a destination may be a room (the archive takes them, mail not)."""
        try:
            checked = [Message.model_validate(doc) for doc in docs]
        except ValidationError as exc:
            call.outcome, call.finished = "ApiRejected", next(self._clock)
            raise ApiRejected(422, str(exc).splitlines()[0]) from None
        if not rooms and any(is_room(m.destination or "") for m in checked):
            call.outcome, call.finished = "ApiRejected", next(self._clock)
            raise ApiRejected(422, "destination: mail goes to people; a room's messages are archived")
        return checked

    @staticmethod
    def _done(call: Call, clock: itertools.count[int]) -> None:
        call.outcome, call.finished = "ok", next(clock)

    # --- ApiClient ----------------------------------------------------------------------

    async def account_kinds(self) -> dict[str, str]:
        call = await self._request("account_kinds")
        self._done(call, self._clock)
        return {key: kind for key, (_, kind, _) in self.accounts.items()}

    async def guest_logins(self, names: Iterable[str]) -> dict[str, bool]:
        """The API's answer for a window of logins without credentials: the guests' keys."""
        names = list(names)
        call = await self._request("guest_logins", names=names)
        self._done(call, self._clock)
        return {name.lower(): True for name in names if name.lower() not in self.accounts}

    async def check_login(self, name: str, source: str, password: str | None = None, token: str | None = None, want_token: bool = False) -> LoginCheck:
        """The API's login rules (without its counters of wrong passwords)."""
        call = await self._request("check_login", name=name, source=source)
        self._done(call, self._clock)
        account = self.accounts.get(name.lower())
        if account is None:
            return LoginCheck(name)
        shown, kind, secret = account
        if kind == "bot":
            return LoginCheck(name, reason="reserved")
        if password is None and token is None:
            return LoginCheck(name, reason="password_required")
        if (password is not None and password != secret) or (token is not None and self.tokens.get(token) != name.lower()):
            return LoginCheck(name, reason="wrong_password")
        new_token = None
        if want_token:
            new_token = f"token-{len(self.tokens)}"
            self.tokens[new_token] = name.lower()
        return LoginCheck(shown, kind, True, new_token)

    async def create_account(self, name: str, password: str | None = None, kind: str = "person") -> Account:
        call = await self._request("create_account", name=name, kind=kind)
        self._done(call, self._clock)
        if name.lower() in self.accounts:
            raise ApiRejected(409, f"the name {name!r} is taken")
        self.accounts[name.lower()] = (name, kind, password)
        return Account(name, kind)

    async def change_password(self, name: str, old: str, new: str) -> PasswordChange:
        call = await self._request("change_password", name=name)
        self._done(call, self._clock)
        shown, kind, secret = self.accounts[name.lower()]
        if old != secret:
            return PasswordChange(reason="wrong_password")
        self.accounts[name.lower()] = (shown, kind, new)
        revoked = [t for t, key in self.tokens.items() if key == name.lower()]
        for t in revoked:
            del self.tokens[t]
        return PasswordChange(revoked=len(revoked))

    async def store_mail(self, messages: Iterable[Any], ttl_seconds: int | None = None, keep_latest: int | None = None) -> list[str]:
        docs = [m.model_dump(mode="json") if isinstance(m, Message) else dict(m) for m in messages]
        call = await self._request("store_mail", docs=docs, ttl_seconds=ttl_seconds, keep_latest=keep_latest)
        stored = self._validate(call, docs)  # what the API would refuse (422), this refuses
        for message in stored:
            assert message.destination is not None
            box = self.mail[message.destination]
            box.append(message)
            if keep_latest is not None:
                same = [m for m in box if (m.sender, m.type) == (message.sender, message.type)]
                for old in same[:-keep_latest]:
                    box.remove(old)
        self._done(call, self._clock)
        return [m.id for m in stored]

    async def store_mail_receipt(self, messages: Iterable[Any], ttl_seconds: int | None = None, keep_latest: int | None = None) -> MailReceipt:
        """store_mail, and the destinations nobody has logged in as (every name the
        test has not logged in, here: the stand-in knows no logins)."""
        ids = await self.store_mail(messages, ttl_seconds, keep_latest)
        return MailReceipt(ids, [])

    async def pending(self, user: str, limit: int = 100) -> tuple[list[MessageJson], int]:
        """In the JSON shape, as the API answers (the stand-in keeps Messages)."""
        call = await self._request("pending", user=user, limit=limit)
        box = self.mail.get(user, [])
        page = [message_json(m) for m in box[:limit]]
        self._done(call, self._clock)
        return page, len(box)

    async def pending_many(self, users: Iterable[str], limit: int) -> dict[str, tuple[list[MessageJson] | None, int]]:
        """As the API's POST /mail/pending: one request (recorded as `pending_many`) that
        `fail("pending")` and `hold("pending")` steer too, being a look at pending mail."""
        users = list(users)
        call = Call("pending_many", {"users": users, "limit": limit}, started=next(self._clock))
        self.calls.append(call)
        await asyncio.sleep(0)  # a real request always yields to the loop
        if (gate := self._gates.get("pending_many") or self._gates.get("pending")) is not None:
            await gate.passage()
        for method in ("pending_many", "pending"):
            if (failure := self._failures.get(method)) is not None:
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        del self._failures[method]
                call.outcome, call.finished = type(failure.error).__name__, next(self._clock)
                raise failure.error
        answer: dict[str, tuple[list[MessageJson] | None, int]] = {}
        budget = limit
        boxes = {user.lower(): box for user in users if (box := self.mail.get(user))}
        for key, box in sorted(boxes.items(), key=lambda item: len(item[1])):
            fits = len(box) <= budget
            budget -= len(box) if fits else 0
            answer[key] = ([message_json(m) for m in box] if fits else None, len(box))
        self._done(call, self._clock)
        return answer

    async def ack(self, user: str, ids: list[str]) -> int:
        call = await self._request("ack", user=user, ids=list(ids))
        box = self.mail.get(user, [])
        wanted = set(ids)
        kept = [m for m in box if m.id not in wanted]
        count = len(box) - len(kept)
        if user in self.mail:
            self.mail[user] = kept
        self._done(call, self._clock)
        return count

    async def archive_encoded(self, messages_json: str) -> int:
        docs = json.loads(messages_json)  # must be a JSON array of messages
        assert isinstance(docs, list), "archive_encoded takes a JSON array"
        call = await self._request("archive_encoded", docs=docs, text=messages_json)
        self._validate(call, docs, rooms=True)
        for doc in docs:
            if doc["destination"].startswith("#"):
                self.room_log[doc["destination"].lower()].setdefault(doc["id"], doc)  # once, however many copies
            else:
                self.direct_log[doc["id"]] = doc
        self._done(call, self._clock)
        return len(docs)

    # --- rooms (the API's rules, in memory) -------------------------------------------------

    def _info(self, key: str) -> dict[str, Any]:
        return {**self.room_docs[key], "members": len(self.room_members[key])}

    def _refuse(self, call: Call, status: int, reason: str, detail: str) -> ApiRejected:
        call.outcome, call.finished = "ApiRejected", next(self._clock)
        return ApiRejected(status, detail, reason)

    def _check(self, call: Call, room: str, by: str | None = None, owner_for: str | None = None) -> str:
        """The room's key, once it exists (no_room), `by` is in it (not_member) and, with
        `owner_for`, owns it (not_owner)."""
        key = room.lower()
        if key not in self.room_docs:
            raise self._refuse(call, 404, "no_room", f"There is no room {room}.")
        if by is not None and by.lower() not in self.room_members[key]:
            raise self._refuse(call, 403, "not_member", f"{by} is not in {room}.")
        if by is not None and owner_for is not None and by.lower() not in {op.lower() for op in self.room_docs[key]["ops"]}:
            raise self._refuse(call, 403, "not_owner", f"Only the operators of {room} may {owner_for}.")
        return key

    def _enrol(self, key: str, user: str) -> bool:
        if user.lower() in self.room_members[key]:
            return False
        self.room_members[key][user.lower()] = user
        self.room_invited[key].pop(user.lower(), None)
        self._forward(user, key, (format_datetime(utcnow()), ""))
        return True

    def _forward(self, user: str, conversation: str, key: Key) -> bool:
        held = self.read_markers.get((user.lower(), conversation.lower()))
        if held is not None and held >= key:
            return False
        self.read_markers[(user.lower(), conversation.lower())] = key
        return True

    async def join_room(self, room: str, user: str, key: str | None = None) -> dict[str, Any]:
        call = await self._request("join_room", room=room, user=user, **({"key": key} if key is not None else {}))
        key, created = room.lower(), False
        held = sum(1 for members in self.room_members.values() if user.lower() in members)
        if held >= MAX_ROOMS_PER_USER and user.lower() not in self.room_members.get(key, {}):
            raise self._refuse(call, 403, "too_many_rooms", f"{user} is in {MAX_ROOMS_PER_USER} rooms already; leave one first.")
        if key not in self.room_docs:
            self.put_room(room, owner=user)
            created = True
        doc = self.room_docs[key]
        privileged = user.lower() in {n.lower() for n in [doc["owner"], *doc["ops"]]} or user.lower() in self.room_members[key]
        invited = user.lower() in self.room_invited[key]
        if not privileged and banned(doc["bans"], user):
            raise self._refuse(call, 403, "banned", f"You are banned from {doc['name']}.")
        privileged = privileged or invited
        if doc["private"] and not privileged:
            raise self._refuse(call, 403, "private", f"{doc['name']} is private: only people invited may join.")
        if not privileged and doc["key"] and key != doc["key"]:
            raise self._refuse(call, 403, "bad_key", f"{doc['name']} needs its key.")
        if not privileged and doc["limit"] and len(self.room_members[key]) >= doc["limit"]:
            raise self._refuse(call, 403, "full", f"{doc['name']} is full.")
        self._enrol(key, user)
        self._done(call, self._clock)
        return {"room": self._info(key), "created": created}

    async def leave_room(self, room: str, user: str) -> bool:
        call = await self._request("leave_room", room=room, user=user)
        left = self.room_members[room.lower()].pop(user.lower(), None) is not None
        self._done(call, self._clock)
        return left

    async def room(self, room: str) -> dict[str, Any] | None:
        call = await self._request("room", room=room)
        self._done(call, self._clock)
        key = room.lower()
        if key not in self.room_docs:
            return None
        return {**self._info(key), "member_names": [name for _, name in sorted(self.room_members[key].items())]}

    async def rooms(self, user: str) -> list[dict[str, Any]]:
        call = await self._request("rooms", user=user)
        self._done(call, self._clock)
        return [
            self._info(key) for key in sorted(self.room_docs)
            if not (self.room_docs[key]["private"] or self.room_docs[key]["secret"]) or user.lower() in self.room_members[key]
        ]  # fmt: skip

    async def set_room(self, room: str, by: str, *, topic: str | None = None, private: bool | None = None, **settings: Any) -> dict[str, Any]:
        settings = {name: value for name, value in settings.items() if value is not None}
        call = await self._request("set_room", room=room, by=by, topic=topic, private=private, **settings)
        doc = self.room_docs.get(room.lower(), {})
        selfop = settings.keys() == {"op"} and private is None and [n.lower() for n in settings["op"]] == [str(doc.get("owner", "")).lower()]
        changing = (private is not None or bool(settings)) and not selfop
        key = self._check(call, room, by, "change its settings" if changing or (topic is not None and doc.get("topic_lock")) else None)
        for name in (*settings.get("op", []), *settings.get("voice", [])):
            if name.lower() not in self.room_members[key]:
                raise self._refuse(call, 403, "not_in_room", f"{name} is not in {room}.")
        if topic is not None:
            doc["topic"], doc["topic_by"] = (topic, by) if topic else (None, None)
        if private is not None:
            doc["private"] = private
        for name in ("moderated", "no_external", "secret", "topic_lock"):
            if name in settings:
                doc[name] = settings[name]
        if "key" in settings:
            doc["key"] = settings["key"] or None
        if "limit" in settings:
            doc["limit"] = settings["limit"] or None
        gone = {normal_mask(m).lower() for m in settings.get("unban", [])}
        doc["bans"] = [b for b in doc["bans"] if b["mask"].lower() not in gone]
        doc["bans"] += [{"mask": normal_mask(m), "by": by, "at": 0} for m in settings.get("ban", [])]
        for role, add, remove in (("ops", "op", "deop"), ("voiced", "voice", "devoice")):
            dropped = {n.lower() for n in settings.get(remove, [])}
            doc[role] = [n for n in doc[role] if n.lower() not in dropped]
            doc[role] += [n for n in settings.get(add, []) if n.lower() not in {m.lower() for m in doc[role]}]
        self._done(call, self._clock)
        return self._info(key)

    async def invite(self, room: str, by: str, user: str) -> dict[str, Any]:
        call = await self._request("invite", room=room, by=by, user=user)
        key = self._check(call, room, by)
        if self.room_docs[key]["private"]:
            self._check(call, room, by, "invite people to it")
        member = user.lower() in self.room_members[key]
        created = not member and user.lower() not in self.room_invited[key]
        if created:
            self.room_invited[key][user.lower()] = user
        self._done(call, self._clock)
        return {"room": self._info(key), "user": user, "created": created, "member": member}

    async def kick(self, room: str, by: str, user: str) -> bool:
        call = await self._request("kick", room=room, by=by, user=user)
        key = self._check(call, room, by, "remove people from it")
        for role in ("ops", "voiced"):
            self.room_docs[key][role] = [n for n in self.room_docs[key][role] if n.lower() != user.lower()]
        member = self.room_members[key].pop(user.lower(), None) is not None
        invited = self.room_invited[key].pop(user.lower(), None) is not None
        self._done(call, self._clock)
        return member or invited

    async def room_logins(self, users: Iterable[str], catchup: int, defaults: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        users, defaults = list(users), list(defaults)
        call = await self._request("room_logins", users=users, catchup=catchup, defaults=defaults)
        for user in users:  # first logins first: the answer counts every join of the batch
            if user.lower() not in self.rooms_set_up:
                for room in defaults:
                    if room.lower() not in self.room_docs:
                        self.put_room(room)
                    if not self.room_docs[room.lower()]["private"]:
                        self._enrol(room.lower(), user)
                self.rooms_set_up.add(user.lower())
        answer: dict[str, list[dict[str, Any]]] = {}
        for user in users:
            entries = []
            for key in sorted(k for k, members in self.room_members.items() if user.lower() in members and k in self.room_docs):
                mark = self.read_markers.get((user.lower(), key))
                newer = [m for m in by_key(self.room_log[key].values()) if mark is None or message_key(m) > mark][-MAX_UNREAD:]
                unread = sum(1 for m in newer if m["sender"].lower() != user.lower() and m.get("type", "chat") == "chat")
                shown = newer[-catchup:] if catchup else []
                entries.append({"room": self._info(key), "unread": unread, "messages": shown, "marker": None if mark is None else encode_cursor(mark)})
            answer[user.lower()] = entries
        self._done(call, self._clock)
        return answer

    async def room_history(self, room: str, user: str, limit: int, cursor: str | None = None) -> dict[str, Any]:
        call = await self._request("room_history", room=room, user=user, limit=limit, cursor=cursor)
        key = self._check(call, room, user)
        self._done(call, self._clock)
        return page_back(self.room_log[key].values(), limit, cursor)

    async def history_page(self, user: str, peer: str, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        call = await self._request("history_page", user=user, peer=peer, limit=limit, cursor=cursor)
        self._done(call, self._clock)
        return page_back(self._between(user, peer), limit or 50, cursor)

    def _direct(self) -> list[dict[str, Any]]:
        """Every direct message: archived, and pending mail."""
        pending = [m.model_dump(mode="json") for box in self.mail.values() for m in box]
        return list({m["id"]: m for m in [*self.direct_log.values(), *pending]}.values())

    def _between(self, user: str, peer: str) -> list[dict[str, Any]]:
        pair = {user.lower(), peer.lower()}
        return [m for m in self._direct() if {m["sender"].lower(), m["destination"].lower()} == pair]

    async def advance_markers(self, markers: Iterable[tuple[str, str, str, Any]]) -> int:
        markers = list(markers)
        call = await self._request("advance_markers", markers=markers)
        moved = 0
        for user, conversation, message_id, stamp in markers:
            if conversation.startswith("#") and user.lower() not in self.room_members.get(conversation.lower(), {}):
                continue  # not a member: ignored
            moved += self._forward(user, conversation, (format_datetime(parse_timestamp(stamp)), message_id))
        self._done(call, self._clock)
        return moved

    async def conversations(self, user: str) -> list[dict[str, Any]]:
        call = await self._request("conversations", user=user)
        me = user.lower()
        items: list[tuple[str, str, str, list[dict[str, Any]]]] = []  # (kind, key, name, messages oldest first)
        peers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in by_key(self._direct()):
            if me in (m["sender"].lower(), m["destination"].lower()):
                peers[m["destination"].lower() if m["sender"].lower() == me else m["sender"].lower()].append(m)
        for peer, messages in peers.items():
            name = next((m[f] for m in reversed(messages) for f in ("sender", "destination") if m[f].lower() == peer), peer)
            items.append(("dm", peer, name, messages))
        for key, members in self.room_members.items():
            if me in members and key in self.room_docs:
                items.append(("room", key, self.room_docs[key]["name"], by_key(self.room_log[key].values())))
        items.sort(key=lambda item: item[1])
        items.sort(key=lambda item: message_key(item[3][-1]) if item[3] else ("", ""), reverse=True)
        answer = []
        for kind, key, name, messages in items:
            mark = self.read_markers.get((me, key))
            newer = [m for m in messages if mark is None or message_key(m) > mark][-MAX_UNREAD:]
            unread = sum(1 for m in newer if m["sender"].lower() != me and m.get("type", "chat") == "chat")
            answer.append({"kind": kind, "name": name, "last": messages[-1] if messages else None, "unread": unread})
        self._done(call, self._clock)
        return answer


def message_shape(sender: str, destination: str, text: str) -> dict[str, Any]:
    """A message dict in the JSON shape, to a person or a room."""
    shape: dict[str, Any] = Message(sender=sender, destination=destination, message=text).model_dump(mode="json")
    return shape


def message_key(message: dict[str, Any]) -> Key:
    return message["timestamp"], message["id"]


def by_key(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(messages, key=message_key)


def page_back(messages: Iterable[dict[str, Any]], limit: int, cursor: str | None) -> dict[str, Any]:
    """The page of `limit` before the cursor, oldest first, and the cursor before it."""
    ordered = by_key(messages)
    if cursor is not None:
        try:
            before = decode_cursor(cursor)
        except ValueError:
            raise ApiRejected(422, "cursor: not a cursor this API gave") from None
        ordered = [m for m in ordered if message_key(m) < before]
    page = ordered[-limit:]
    return {"messages": page, "next": encode_cursor(message_key(page[0])) if len(ordered) > limit else None}
