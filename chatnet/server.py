"""The chat server: logins, presence, routing of `user: message` lines, commands.

One `Session` (an asyncio Protocol) per connection moves bytes: it feeds a
`LineBuffer`, parses each line with the pure protocol functions and hands the result
to the `ChatServer`, which routes it. Writes are queued per session and flushed once
per event-loop pass, so a burst to one peer costs one syscall.

Delivery, in order of preference:
- destination online and keeping up: written to its session at once (no database,
  no task, no log line on this path); archived for history later, in batches;
- destination offline, or its output buffer is full: handed to the `MailWriter`,
  which stores it through the message API in batches and only then tells the sender
  "Message saved." — or plainly that it was NOT saved when the API stays down.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from chatnet.api_client import ApiClient
from chatnet.config import Settings
from chatnet.errors import BadEncoding, ChatError, ProtocolError, StoreUnavailable
from chatnet.protocol import (
    COMMANDS,
    SERVER_NAME,
    Chat,
    Command,
    Login,
    MessageType,
    Quit,
    LineBuffer,
    Message,
    check_name,
    format_datetime,
    format_timestamp,
    help_lines,
    is_json_login,
    json_line,
    new_id,
    parse_json_frame,
    parse_text_line,
    short_timestamp,
    text_chat_line,
    text_stored_line,
)

logger = logging.getLogger("chatnet.server")

PROMPT: Final = "Enter username:\n"
# A client sending nothing but garbage is cut off after this many bad lines in a row.
BOGUS_BUDGET: Final = 25
# A connection must log in within this time; an idle socket that never does is dropped.
LOGIN_TIMEOUT: Final = 120.0
# Output a session may have queued in its transport before we stop writing to it and
# divert its messages to offline mail instead (one slow client must not cost memory
# without bound, nor stall anyone).
WRITE_HIGH_WATER: Final = 1 << 20
WRITE_LOW_WATER: Final = 1 << 18
# Past this, even server notices can't be queued: the peer is dropped as too slow.
WRITE_HARD_LIMIT: Final = 16 << 20
# Stored mail is handed over in pages: written, drained, acknowledged, next page. The
# API's largest page: each page costs a fetch and an acknowledgement, and a login with
# thousands waiting should take one of each.
MAIL_PAGE: Final = 10_000
MAIL_BATCH: Final = 1000
# How long the server keeps trying to store a message before telling the sender it
# was NOT saved.
MAIL_RETRY_DELAYS: Final = (0.2, 0.5, 1.0)
# History goes out in few, large requests, built in small slices. Each request costs
# this process about a millisecond of loop time in the HTTP client, and many small
# requests were what delayed routing (p99 3.5 ms at 5,000 msg/s with batches of 200;
# 0.9 ms without the requests); building a large batch in one go stalls it too. So a
# batch gathers for ARCHIVE_PAUSE, is encoded ARCHIVE_SLICE documents at a time with
# routing in between, and goes out as one request of up to ARCHIVE_BATCH.
ARCHIVE_BATCH: Final = 1000
ARCHIVE_SLICE: Final = 100
ARCHIVE_PAUSE: Final = 0.2
# History is best effort: when the store can't keep up, the oldest unarchived entries
# are dropped. Mail is never dropped.
ARCHIVE_BACKLOG: Final = 50_000
SHUTDOWN_GRACE: Final = 5.0


class LoginFailed(ProtocolError):
    """A refused login; the peer may try again."""

    def __init__(self, text: str, json_mode: bool) -> None:
        super().__init__(text)
        self.json_mode = json_mode


class State(Enum):
    LOGIN = "login"
    TEXT = "text"
    JSON = "json"
    CLOSED = "closed"


@dataclass(slots=True)
class Outcome:
    """A message the MailWriter holds, and whom to tell when it is stored (or not)."""

    doc: dict[str, Any]
    sender: Session | None
    notice: str  # "offline" or "busy": how the sender's confirmation reads


class Session(asyncio.Protocol):
    """One connection. Only moves data; the ChatServer decides what it means."""

    # No per-instance dict: ten thousand idle sessions should cost little memory.
    __slots__ = (
        "server", "state", "on_line", "name", "features", "transport", "peer", "buffer", "bogus",
        "paused", "diverted", "_out", "_flush_scheduled", "_resumed", "mail_busy", "mail_again", "_login_timer",
    )  # fmt: skip

    def __init__(self, server: ChatServer) -> None:
        self.server = server
        self.state = State.LOGIN
        # What a line means depends on the state: the login line, a text line or a
        # JSON frame. The server swaps the handler at login, so lines need no state test.
        self.on_line: Callable[[Session, str], None] = server.read_login
        self.name = ""
        self.features: tuple[str, ...] = ()  # as announced at login, sorted: sent along as they are
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.buffer = LineBuffer()
        self.bogus = 0
        self.paused = False  # the transport's buffer is over its high-water mark
        self.diverted = False  # something went to mail while paused: hand it over later
        self._out: list[str] = []
        self._flush_scheduled = False
        # Created only while someone waits for the transport to resume: most sessions
        # never need one, and ten thousand idle sessions should cost little memory.
        self._resumed: asyncio.Future[None] | None = None
        self.mail_busy = False  # a hand-over of stored mail is running
        self.mail_again: bool | None = None  # look once more when done (True: someone asked, answer even if empty)
        self._login_timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's isn't an asyncio.Transport subclass
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.server.sessions.add(self)
        self._login_timer = asyncio.get_running_loop().call_later(LOGIN_TIMEOUT, self._login_timeout)
        self.write(PROMPT)

    def data_received(self, data: bytes) -> None:
        server = self.server
        server.tick()  # one clock reading for every line of this chunk
        for item in self.buffer.feed(data):
            if self.state is State.CLOSED:
                return
            if type(item) is not bytes:
                self.reject(item)  # a LineTooLong in place of the line
                continue
            try:
                self.on_line(self, item.decode())
            except UnicodeDecodeError:
                self.reject(BadEncoding("Invalid UTF-8 in that line; it was ignored."))
            except ProtocolError as exc:
                self.reject(exc)
            else:
                self.bogus = 0

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        previous, self.state = self.state, State.CLOSED
        if self._login_timer:
            self._login_timer.cancel()
        self._out.clear()
        self._wake()
        self.server.sessions.discard(self)
        if previous in (State.TEXT, State.JSON):
            self.server.logout(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()
        if self.diverted and self.state is not State.CLOSED:
            self.diverted = False
            self.server.spawn(self.server.hand_over_mail(self, quiet=True))

    # --- output ------------------------------------------------------------------

    def write(self, text: str) -> None:
        """Queue text; everything queued in one loop pass goes out in one write."""
        if self.state is State.CLOSED:
            return
        if self.paused and self.transport is not None and self.transport.get_write_buffer_size() > WRITE_HARD_LIMIT:
            logger.warning("%s is not reading; disconnecting", self.name or self.peer)
            self.transport.abort()
            return
        self._out.append(text)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            data = "".join(self._out).encode()
            self._out.clear()
            self.transport.write(data)

    async def drained(self) -> None:
        """Wait until what was written so far has left our buffers for the socket."""
        self.flush()
        while self.transport is not None and not self.transport.is_closing() and self.transport.get_write_buffer_size():
            if self.paused:
                self._resumed = asyncio.get_running_loop().create_future()
                await self._resumed
            else:
                # Below the high-water mark asyncio does not tell us when the buffer
                # empties; poll briefly (this only runs while handing over mail).
                await asyncio.sleep(0.005)

    def _wake(self) -> None:
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self._resumed = None

    def notice(self, text: str, event: str, **metadata: Any) -> None:
        """Something the server says: a plain line in text mode, a frame in JSON mode."""
        if self.state is State.JSON:
            self._server_frame(MessageType.NOTIFICATION, text, event, metadata)
        else:
            self.write(text + "\n")

    def error(self, text: str, event: str = "bad_input", **metadata: Any) -> None:
        if self.state is State.JSON:
            self._server_frame(MessageType.ERROR, text, event, metadata)
        else:
            self.write(f"Error: {text}\n")

    def _server_frame(self, kind: MessageType, text: str, event: str, metadata: dict[str, Any]) -> None:
        """A frame from the server itself: `metadata.event` says what it is."""
        self.write(json_line(new_id(), SERVER_NAME, self.name or None, text, self.server.now(), kind, {"event": event, **metadata}))

    def reject(self, exc: ChatError) -> None:
        """A bad line: tell the peer, keep the session — unless it only sends garbage."""
        if isinstance(exc, LoginFailed) and exc.json_mode:
            self._server_frame(MessageType.ERROR, str(exc), "login_failed", {})
        elif isinstance(exc, LoginFailed):
            self.write(f"{exc}\n{PROMPT}")
        else:
            self.error(str(exc))
        self.bogus += 1
        if self.bogus >= BOGUS_BUDGET:
            self.close("Too many invalid lines; disconnecting.")

    def close(self, goodbye: str | None = None, event: str = "goodbye") -> None:
        if self.state is State.CLOSED or self.transport is None:
            return
        if goodbye:
            self.notice(goodbye, event)
        self.flush()
        self.transport.close()

    def _login_timeout(self) -> None:
        if self.state is State.LOGIN:
            self.close("No username given in time; disconnecting.")


@dataclass
class MailWriter:
    """Stores offline mail through the API in batches; confirms only what was stored.

    One task drains the queue, so messages are stored in the order they were sent,
    and a burst of N offline messages costs N/MAIL_BATCH requests, not N.
    """

    api: ApiClient
    priority: Priority
    queue: deque[tuple[tuple[int | None, int | None], Outcome]] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    saved: int = 0
    failed: int = 0

    def submit(self, outcome: Outcome, ttl_seconds: int | None = None, keep_latest: int | None = None) -> None:
        self.queue.append(((ttl_seconds, keep_latest), outcome))
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            await self.drain()

    async def drain(self) -> None:
        """Store everything queued (also at shutdown)."""
        while self.queue:
            await self._store(self._next_batch())

    def _next_batch(self) -> tuple[tuple[int | None, int | None], list[Outcome]]:
        options, first = self.queue.popleft()
        batch = [first]
        while self.queue and len(batch) < MAIL_BATCH and self.queue[0][0] == options:
            batch.append(self.queue.popleft()[1])
        return options, batch

    async def _store(self, job: tuple[tuple[int | None, int | None], list[Outcome]]) -> None:
        (ttl_seconds, keep_latest), batch = job
        docs = [outcome.doc for outcome in batch]
        for delay in (*MAIL_RETRY_DELAYS, None):
            try:
                with self.priority:
                    await self.api.store_mail(docs, ttl_seconds=ttl_seconds, keep_latest=keep_latest)
            except StoreUnavailable as exc:
                if delay is None:
                    logger.warning("could not store %d message(s): %s", len(batch), exc)
                    return self._give_up(batch)
                await asyncio.sleep(delay)
            except ChatError as exc:  # the API refused the batch: our bug, say so loudly
                logger.error("message API refused %d message(s): %s", len(batch), exc)
                return self._give_up(batch)
            else:
                self.saved += len(batch)
                for outcome in batch:
                    _tell_saved(outcome)
                return

    def _give_up(self, batch: list[Outcome]) -> None:
        self.failed += len(batch)
        for outcome in batch:
            _tell_not_saved(outcome)


def _tell_saved(outcome: Outcome) -> None:
    sender, doc = outcome.sender, outcome.doc
    if sender is None or sender.state is State.CLOSED or doc["type"] != MessageType.CHAT:
        return
    how = "is offline" if outcome.notice == "offline" else "is not keeping up"
    sender.notice(f"User '{doc['destination']}' {how}. Message saved.", "saved", destination=doc["destination"], id=doc["id"])


def _tell_not_saved(outcome: Outcome) -> None:
    sender, doc = outcome.sender, outcome.doc
    if sender is None or sender.state is State.CLOSED:
        return
    sender.error(
        f"Message to '{doc['destination']}' was NOT saved: the message store is unavailable. Please try again later.",
        "not_saved",
        destination=doc["destination"],
        id=doc["id"],
    )


class Priority:
    """Mail and logins go before history: while a mail request is in flight, the
    archiver waits, so a busy store answers the people who are waiting first."""

    def __init__(self) -> None:
        self.active = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def __enter__(self) -> None:
        self.active += 1
        self.idle.clear()

    def __exit__(self, *exc_info: object) -> None:
        self.active -= 1
        if not self.active:
            self.idle.set()


# What the routing path keeps of a delivered message for history: a plain tuple
# (id, sender, destination, message, timestamp, type, metadata). The document is made
# later, by the archiver, so a message costs one append here. The id is the one the
# recipient saw (so history and live frames match), or None when the recipient saw
# none (a text-mode line): then the archiver makes it.
ArchiveEntry = tuple[str | None, str, str, str, str, str, dict[str, Any] | None]


@dataclass
class Archiver:
    """Copies delivered live messages to the history store, in batches, off the
    routing path. Bounded: under sustained overload the oldest entries are dropped."""

    api: ApiClient
    priority: Priority
    backlog: deque[ArchiveEntry] = field(default_factory=lambda: deque(maxlen=ARCHIVE_BACKLOG))
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    retry: str = ""  # an encoded batch the API didn't take yet
    # True while run() waits for work. The routing path appends to `backlog` itself
    # (one C call) and calls wake() only when this is set.
    asleep: bool = False

    def wake(self) -> None:
        self.asleep = False
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            self.wakeup.clear()
            self.asleep = True
            await self.wakeup.wait()
            await self.drain(pace=ARCHIVE_PAUSE)

    async def drain(self, pace: float = 0.0) -> None:
        """Send the backlog. In the background (`pace` > 0) a batch gathers for `pace`
        seconds, is built in slices, and waits while mail requests are in flight; at
        shutdown everything goes at once."""
        while self.retry or self.backlog:
            if pace:
                await asyncio.sleep(pace)
            batch = self.retry or await self._encode_batch(yield_between=bool(pace))
            if pace:
                await self.priority.idle.wait()
            try:
                await self.api.archive_encoded(batch)
            except ChatError as exc:
                # Keep the batch (same ids: the retry can't duplicate) and pause; if the
                # backlog overflows meanwhile the deque drops its oldest entries.
                logger.warning("history archive paused: %s", exc)
                self.retry = batch
                await asyncio.sleep(1.0)
                return
            self.retry = ""

    async def _encode_batch(self, yield_between: bool) -> str:
        """Up to ARCHIVE_BATCH entries as a JSON array, ARCHIVE_SLICE at a time."""
        slices: list[str] = []
        taken = 0
        while self.backlog and taken < ARCHIVE_BATCH:
            count = min(ARCHIVE_SLICE, len(self.backlog), ARCHIVE_BATCH - taken)
            docs = [_doc(*self.backlog.popleft()) for _ in range(count)]
            slices.append(json.dumps(docs, ensure_ascii=False, separators=(",", ":"))[1:-1])
            taken += count
            if yield_between:
                await asyncio.sleep(0)  # let routing run between slices
        return f"[{','.join(slices)}]"


class ChatServer:
    """Who is online, and what happens to each line they send."""

    def __init__(self, settings: Settings, api: ApiClient) -> None:
        self.settings = settings
        self.api = api
        self.users: dict[str, Session] = {}
        self.json_users: dict[str, Session] = {}  # they get presence notifications
        self.sessions: set[Session] = set()
        self.priority = Priority()
        self.mail = MailWriter(api, self.priority)
        self.archiver = Archiver(api, self.priority)
        self._archive = self.archiver.backlog.append  # the routing path's one step for history
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.Server | None = None
        self._clock_ms = -1
        self._clock_text = ""
        self._clock_short = ""  # the same to the second, as people read it
        self._commands: dict[str, Callable[[Session, str], None]] = {
            "check": self._cmd_check,
            "who": self._cmd_who,
            "help": self._cmd_help,
        }
        assert self._commands.keys() == COMMANDS.keys()

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: Session(self),
            self.settings.chat_host,
            self.settings.chat_port,
            backlog=4096,  # a burst of connects waits in the kernel instead of failing
            reuse_address=True,
        )
        self.spawn(self.mail.run())
        self.spawn(self.archiver.run())
        logger.info("listening on %s:%d", self.settings.chat_host, self.port)

    @property
    def port(self) -> int:
        assert self._listener is not None
        return self._listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting, say goodbye, store what is queued, close everyone."""
        if self._listener is not None:
            self._listener.close()
        for session in list(self.sessions):
            session.notice("Server shutting down. Goodbye.", "shutdown")
            session.flush()
        try:
            async with asyncio.timeout(SHUTDOWN_GRACE):
                await self.mail.drain()
                await self.archiver.drain()
        except TimeoutError:
            logger.warning("shutdown: %d message(s) could not be stored in time", len(self.mail.queue))
        for session in list(self.sessions):
            session.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        logger.info("stopped (mail saved: %d, not saved: %d)", self.mail.saved, self.mail.failed)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """A tracked background task: kept alive, awaited at shutdown, errors logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task failed", exc_info=task.exception())

    def tick(self) -> None:
        """Read the clock; its text is formatted once per millisecond at most. Called
        once per chunk read, so a burst of lines shares one reading."""
        ms = int(time.time() * 1000)
        if ms != self._clock_ms:
            self._clock_ms = ms
            self._clock_text = format_timestamp(ms / 1000)
            self._clock_short = short_timestamp(self._clock_text)

    def now(self) -> str:
        """The current timestamp (UTC ISO 8601, milliseconds)."""
        self.tick()
        return self._clock_text

    # --- lines in ----------------------------------------------------------------

    def read_text(self, session: Session, line: str) -> None:
        event = parse_text_line(line)
        if type(event) is Chat:
            self.route(session, event)
        else:
            self._act(session, event)

    def read_json(self, session: Session, line: str) -> None:
        event = parse_json_frame(line)
        if type(event) is Chat:
            self.route(session, event)
        else:
            self._act(session, event)

    def _act(self, session: Session, event: Command | Quit | Login) -> None:
        if type(event) is Command:
            self._commands[event.name](session, event.args)
        elif type(event) is Quit:
            session.close(f"Goodbye, {session.name}!")
        else:
            raise ProtocolError("You are already logged in.")

    # --- login / logout ----------------------------------------------------------

    def read_login(self, session: Session, line: str) -> None:
        """The first line picks the mode: a JSON login frame, or a username."""
        json_mode = is_json_login(line)
        try:
            if json_mode:
                event = parse_json_frame(line)
                if not isinstance(event, Login):
                    raise ProtocolError('Log in first: {"type": "login", "user": "<name>"}.')
                self.login(session, event.user, State.JSON, event.features)
            else:
                self.login(session, line.strip(), State.TEXT)
        except ProtocolError as exc:
            raise LoginFailed(str(exc), json_mode) from None

    def login(self, session: Session, name: str, mode: State, features: frozenset[str] = frozenset()) -> None:
        check_name(name, "username")
        if name.lower() == SERVER_NAME:
            raise ProtocolError(f"The name '{name}' is reserved; choose another.")
        if name in self.users:
            raise ProtocolError(f"The name '{name}' is already online; choose another.")
        if session._login_timer:
            session._login_timer.cancel()
        session.name, session.state, session.features = name, mode, tuple(sorted(features))
        session.on_line = self.read_json if mode is State.JSON else self.read_text
        self.users[name] = session
        logger.info("%s logged in from %s (%s mode)", name, session.peer, mode.value)
        self._announce(name, "online")
        if mode is State.JSON:
            self.json_users[name] = session
        self.spawn(self.hand_over_mail(session, announce=True))

    def logout(self, session: Session) -> None:
        if self.users.get(session.name) is session:
            del self.users[session.name]
            self.json_users.pop(session.name, None)
            logger.info("%s left", session.name)
            self._announce(session.name, "offline")

    def _announce(self, name: str, presence: str) -> None:
        for other in self.json_users.values():
            if other.name != name:
                other.notice(f"{name} is {presence}", "presence", presence=presence, user=name)

    # --- routing (the hot path) --------------------------------------------------

    def route(self, sender: Session, chat: Chat) -> None:
        """Deliver now if the destination is online and keeping up, else store.
        Runs inside data_received, after tick(): the clock fields are current."""
        destination, message, metadata, kind = chat
        now = self._clock_text
        target = self.users.get(destination)
        partial = False
        if metadata is not None:
            stream = metadata.get("stream")
            partial = isinstance(stream, dict) and not stream.get("done", True)
        if target is not None and not target.paused:
            msg_id = None
            if target.state is State.TEXT:
                if not partial:
                    target.write(text_chat_line(self._clock_short, sender.name, message))
            else:
                msg_id = new_id()
                out = metadata
                if sender.features:
                    out = {**(metadata or {}), "sender_features": sender.features}
                target.write(json_line(msg_id, sender.name, destination, message, now, kind, out))
            if not partial:
                self._archive((msg_id, sender.name, destination, message, now, kind, metadata))
                if self.archiver.asleep:
                    self.archiver.wake()
            return
        if partial:
            return  # chunks of a streamed reply are for live readers only; the final frame follows
        doc = _doc(new_id(), sender.name, destination, message, now, kind, metadata)
        ttl_seconds, keep_latest = _mail_options(metadata)
        if target is not None:
            target.diverted = True
        self.mail.submit(Outcome(doc, sender, "offline" if target is None else "busy"), ttl_seconds, keep_latest)

    # --- stored mail ---------------------------------------------------------------

    async def hand_over_mail(self, session: Session, announce: bool = False, quiet: bool = False) -> None:
        """Write pending mail oldest first, page by page; acknowledge each page only
        once it has left for the socket. A drop midway leaves the rest pending.
        `announce`: the welcome line; `quiet`: say nothing when there is nothing."""
        if session.mail_busy:
            # The running hand-over looks once more at its end (and answers if asked).
            session.mail_again = bool(session.mail_again) or not quiet
            return
        session.mail_busy = True
        try:
            await self._hand_over(session, announce, quiet)
            while session.mail_again is not None and session.state is not State.CLOSED:
                asked, session.mail_again = session.mail_again, None
                await self._hand_over(session, announce=False, quiet=not asked)
        finally:
            session.mail_busy = False

    async def _hand_over(self, session: Session, announce: bool, quiet: bool = False) -> None:
        first = True
        delivered = 0
        while session.state is not State.CLOSED:
            try:
                with self.priority:
                    messages, total = await self.api.pending(session.name, MAIL_PAGE)
            except ChatError as exc:
                logger.warning("pending mail for %s unavailable: %s", session.name, exc)
                self._say_mail_unavailable(session, announce and first)
                return
            if first and not (quiet and total == 0):
                self._say_mail_count(session, total, announce)
            first = False
            if not messages:
                break
            for message in messages:
                self._write_stored(session, message)
            await session.drained()
            if session.state is State.CLOSED:
                return
            try:
                with self.priority:
                    await self.api.ack(session.name, [m.id for m in messages])
            except ChatError as exc:
                logger.warning("could not acknowledge mail of %s: %s", session.name, exc)
                return  # it stays pending: the worst case is a repeat, never a loss
            delivered += len(messages)
            if len(messages) >= total:
                break
        if delivered:
            logger.info("handed %d stored message(s) to %s", delivered, session.name)

    def _say_mail_count(self, session: Session, total: int, announce: bool) -> None:
        if announce:
            counted = "No stored messages" if total == 0 else f"{total} stored message{'s' if total != 1 else ''}"
            online = sorted(self.users)
            session.notice(f"Welcome, {session.name}! {counted}.", "welcome", user=session.name, pending=total, online=online)
        elif total == 0:
            session.notice("No stored messages.", "check", pending=0)
        else:
            session.notice(f"{total} stored message{'s' if total != 1 else ''}:", "check", pending=total)

    def _say_mail_unavailable(self, session: Session, welcome: bool) -> None:
        text = "Stored messages are unavailable right now (the message store can't be reached); try !check later."
        if welcome:
            session.notice(f"Welcome, {session.name}! {text}", "welcome", user=session.name, pending=None, online=sorted(self.users))
        else:
            session.error(text, "check")

    def _write_stored(self, session: Session, message: Message) -> None:
        timestamp = format_datetime(message.timestamp)
        if session.state is State.JSON:
            metadata = {**message.metadata, "stored": True}
            session.write(json_line(message.id, message.sender, message.destination, message.message, timestamp, message.type, metadata))
        else:
            session.write(text_stored_line(short_timestamp(timestamp), message.sender or SERVER_NAME, message.message))

    # --- commands ----------------------------------------------------------------

    def _cmd_check(self, session: Session, args: str) -> None:
        self.spawn(self.hand_over_mail(session))

    def _cmd_who(self, session: Session, args: str) -> None:
        users = sorted(self.users)
        session.notice(f"Online ({len(users)}): {', '.join(users)}", "who", users=users)

    def _cmd_help(self, session: Session, args: str) -> None:
        session.notice("\n".join(help_lines()), "help")


def _doc(msg_id: str | None, sender: str, destination: str, message: str, timestamp: str, type: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
    """A message in the API's JSON shape (a dict: cheaper than a model here)."""
    if metadata and "mail" in metadata:
        metadata = {k: v for k, v in metadata.items() if k != "mail"}
    return {"id": msg_id or new_id(), "sender": sender, "destination": destination, "message": message, "timestamp": timestamp, "type": type, "metadata": metadata or {}}


def _mail_options(metadata: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """The sender's hints for storing offline mail (a service capping its readings)."""
    hints = metadata.get("mail") if metadata else None
    if not isinstance(hints, dict):
        return None, None
    ttl, keep = hints.get("ttl_seconds"), hints.get("keep_latest")
    ttl = ttl if isinstance(ttl, int) and 0 < ttl <= 30 * 86400 else None
    keep = keep if isinstance(keep, int) and 0 < keep <= 1000 else None
    return ttl, keep


async def serve(settings: Settings) -> None:
    """Run the chat server until SIGINT/SIGTERM."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with ApiClient.from_settings(settings) as api:
        server = ChatServer(settings, api)
        await server.start()
        # Everything made so far lives as long as the process: keep it out of the
        # garbage collector's full passes, which would otherwise pause routing.
        gc.freeze()
        await stop.wait()
        logger.info("shutting down")
        await server.stop()
