"""One connection: bytes in and out, and nothing about what they mean.

A `Session` is an asyncio protocol and a `LineBuffer`: it splits what arrives into lines,
has its **dialect** parse each one, and hands the event to the router; what the router
wants said goes through `deliver` / `deliver_stored` / `notice` / `error`, which the
dialect renders. The session itself never formats a protocol line.

What a line means depends on the session's state, looked up in one table:

    State.LOGIN    -> Session.read_login     (the port's picker may choose the dialect)
    State.PASSWORD -> Session.read_password  (text mode, after a registered name)
    State.WAITING  -> (held: the router is checking a login with the message API)
    State.ACTIVE   -> Session.read_line
    State.CLOSING  -> (nothing more is read: we said goodbye, or gave up on the peer)
    State.CLOSED   -> (the connection is gone)

Lines that arrive while a login is checked, or past the flood bucket, are held in order
(and the transport stops reading) until the session may go on: nothing is dropped.

Output is queued and flushed once per event-loop pass, so a burst to one peer costs
one syscall. Past WRITE_HIGH_WATER the session is `paused`: the router stores what it
would have delivered as mail instead, and hears `writable()` once the peer reads again.

A live message is not done when it leaves our buffers: until the reader has it, the
session remembers it (`unreceived`), and if the connection breaks first the router
stores it as mail (a room's message stays unread instead: the router hears of the
room messages a reader has, `received`, and moves its read markers). An `ack` reader says what it has by id; for every other reader the
peer's TCP stack says it, in bytes: each remembered line carries its end offset in the
output, and the socket tells how far the peer acknowledged.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import fcntl
import logging
import socket
import struct
import sys
import termios
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Protocol

from mypy_extensions import mypyc_attr

from chatnet.dialects import Dialect
from chatnet.errors import BadEncoding, ChatError, LineTooLong, LoginFailed, ProtocolError
from chatnet.flood import FloodBucket
from chatnet.lines import LineBuffer
from chatnet.protocol import (
    ACK_FEATURE,
    TOO_LONG,
    Ack,
    Authenticate,
    Chat,
    ClientEvent,
    Clock,
    Command,
    Delivery,
    Event,
    Login,
    LoginReason,
    MessageJson,
    Pong,
    Quit,
    Reply,
    Typing,
    lowered,
    partial_chunk,
)  # fmt: skip

if TYPE_CHECKING:
    from chatnet.identity import Admission
    from chatnet.liveness import PingBucket, Pinger

logger = logging.getLogger("chatnet.server")

# A client sending nothing but garbage is cut off after this many bad lines in a row.
BOGUS_BUDGET: Final = 25
# A connection must log in within this time; an idle socket that never does is dropped.
LOGIN_TIMEOUT = 120.0  # not Final: the unit tests shorten it (chatnet/native.py)
# Output a session may have queued in its transport before we stop writing to it and
# divert its messages to offline mail instead (one slow client must not cost memory
# without bound, nor stall anyone).
WRITE_HIGH_WATER: Final = 1 << 20
WRITE_LOW_WATER: Final = 1 << 18
# Past this, even server notices can't be queued: the peer is dropped as too slow.
WRITE_HARD_LIMIT: Final = 16 << 20
# Below the high-water mark asyncio does not say when the buffer empties: `drained`
# polls this often (it only runs while stored mail is handed over).
DRAIN_POLL: Final = 0.005
# After the peer is done sending, how long its answers (a login's check, "Message
# saved.") may take before the connection is closed anyway.
EOF_GRACE: Final = 10.0
# Live messages kept for an `ack` reader until it acknowledges them; past this many the
# oldest are forgotten (a reader that never acknowledges must not cost memory without end).
UNACKED_LIMIT: Final = 2000
# Live lines kept for any other reader until its TCP stack has acknowledged them: the
# socket is asked when this many are kept, and once a second while any are. A reader
# this far behind is `paused` (its messages are stored) until it has half of them.
SENT_LIMIT: Final = 1024
SENT_SWEEP = 1.0  # not Final: the unit tests shorten it (chatnet/native.py)
# ... and every PRUNE_BYTES of output, so what is kept is little more than what is in
# flight: every line kept longer costs the routing path (bench.routing: 400 kept per
# reader, +0.5 µs a routed line; a few dozen, +0.1 µs), and asking costs a syscall.
PRUNE_BYTES: Final = 4 << 10
# A session closing with lines its peer has not acknowledged yet waits this long for
# them before the socket is closed (what is still unacknowledged then is stored).
CLOSE_LINGER: Final = 2.0
# struct tcp_info (linux/tcp.h): tcpi_bytes_acked, a u64, since Linux 4.1.
_TCP_INFO_BYTES_ACKED: Final = 120
# A peer that vanished without a word (a dead host, a cut cable) is found out by TCP
# keepalive: probes after this many idle seconds, every KEEPALIVE_INTERVAL, dropped
# after KEEPALIVE_PROBES unanswered — about two minutes.
KEEPALIVE_IDLE: Final = 60
KEEPALIVE_INTERVAL: Final = 10
KEEPALIVE_PROBES: Final = 6
# Flushes run in this one context: they read no context variables, and copying the
# current context for each one (what call_soon does unasked) costs a flush a third more.
_FLUSH_CONTEXT: Final = contextvars.Context()
# From this many sessions with output in one loop pass, the flush waits one more pass.
WIDE_FLUSH = 100  # not Final: the unit tests tune it (chatnet/native.py)


class Flushes:
    """The sessions with output queued, flushed by one callback: a room's line to a
    thousand members costs one scheduled call, not a thousand. A wide flush (a room's
    line, a busy pass) first waits for one more look at the sockets (a loop pass that
    polls without blocking), so what arrived while this pass ran (a second room line,
    sent at the same moment by someone else) is read first and goes out in the same
    send to each member, not in one more: in the room benchmark 0.53 sends per
    delivery instead of 0.88. A narrow one goes at once (its extra pass would cost a
    lightly loaded server a tenth more CPU, to save a send or two)."""

    __slots__ = ("waiting", "scheduled", "looked")

    def __init__(self) -> None:
        self.waiting: list[Session] = []
        self.scheduled = False
        self.looked = False  # this flush has waited its one pass

    def add(self, session: Session) -> None:
        self.waiting.append(session)
        if not self.scheduled:
            self.scheduled = True
            session.loop.call_soon(self.run, context=_FLUSH_CONTEXT)

    def run(self) -> None:
        if len(self.waiting) >= WIDE_FLUSH and not self.looked:
            self.looked = True
            asyncio.get_running_loop().call_soon(self.run, context=_FLUSH_CONTEXT)  # after the poll between
            return
        self.scheduled = self.looked = False
        waiting, self.waiting = self.waiting, []
        for session in waiting:
            session.flush()


class State(StrEnum):  # a str: its hash is C's, and the line table is looked up per line
    LOGIN = "login"
    PASSWORD = "password"
    WAITING = "waiting"
    ACTIVE = "active"
    CLOSING = "closing"
    CLOSED = "closed"


OPEN: Final = frozenset({State.LOGIN, State.PASSWORD, State.WAITING, State.ACTIVE})
# An enum member read off its class costs ~70 ns in Python 3.11 (a global, ~10): the
# per-delivery path reads this one.
_CLOSED: Final = State.CLOSED


class Router(Protocol):
    """What a session tells the router (`chatnet.router.Router`)."""

    clock: Clock
    flushes: Flushes
    pinger: Pinger

    def connected(self, session: Session) -> None: ...
    def login(self, session: Session, login: Login) -> None: ...  # answers through logged_in / refused / ask_password
    def authenticate(self, session: Session, credentials: Authenticate) -> None: ...  # answers through authenticated / refused
    def route(self, session: Session, chat: Chat) -> None: ...
    def act(self, session: Session, event: Command | Quit | Login | Ack | Typing) -> None: ...  # Typing: relayed, never kept
    def writable(self, session: Session) -> None: ...
    def received(self, session: Session, messages: list[Delivery]) -> None: ...  # live messages the reader has, oldest first
    def input_ended(self, session: Session) -> None: ...
    def disconnected(self, session: Session, was_logged_in: bool) -> None: ...


def _tune(sock: Any) -> None:
    """Keepalive finds dead peers. Nagle stays on (the event loop turns it off): a line
    written while the peer's stack has not yet acknowledged the last one waits in the
    kernel and leaves with the next, so a room's lines to a member who reads in bursts
    cost one send, not one each. Everything queued in one loop pass is one write anyway,
    so a lone answer never waits; ngircd and most IRC servers run the same way."""
    if sock is None:
        return
    try:
        # uvloop's socket builds a socket object for every call: one, borrowed, for all five.
        own = socket.socket(fileno=sock.fileno())
    except (OSError, ValueError, AttributeError):  # not a socket we can borrow
        return
    try:
        own.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        own.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        own.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        own.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    except OSError:  # not TCP, or a platform without these options
        pass
    finally:
        own.detach()  # the transport's descriptor stays open: it is the transport's


# `sent_ends` of a session that has tracked nothing yet (most idle ones): shared, never
# appended to, so ten thousand of them cost no list each. `_track` gives a session its own.
_NO_ENDS: Final[list[int]] = []


# Compiled (chatnet/native.py), and still open to subclasses in Python: the unit tests'
# RecordingSession answers what a fake socket can't be asked.
@mypyc_attr(allow_interpreted_subclasses=True)
class Session(LineBuffer):
    """One connection. Only moves data; the router decides what it means. It has
    asyncio.Protocol's methods, not its base class (see server.protocol_factory)."""

    # No per-instance dict: ten thousand idle sessions should cost little memory.
    __slots__ = (
        "router", "dialect", "pick", "shows_ids", "state", "name", "key", "features", "kind", "group",
        "transport", "loop", "port", "address", "bogus", "paused", "debug", "flood", "_held", "_pending_name",
        "unacked", "forgotten", "sent", "sent_ends", "_prune_at", "written", "flushed", "ended_input", "_out", "_flush_scheduled", "_resumed",
        "_login_timer", "_flood_timer", "_sweep_timer", "heard", "_pinged", "ping_bucket", "_writing_paused",
        "verified", "_waits", "quit_reason", "away", "echoes_own", "operator", "hears_wallops",
    )  # fmt: skip
    # The flags, declared side by side (a new one belongs here too): compiled, each is one
    # byte, and one set between two pointers in __init__'s order would take eight (≈ 0.3 MB
    # over 10,000 sessions).
    shows_ids: bool
    echoes_own: bool
    hears_wallops: bool
    heard: bool
    _pinged: bool
    ended_input: bool
    paused: bool
    _writing_paused: bool
    debug: bool
    _flush_scheduled: bool

    def __init__(
        self,
        router: Router,
        dialect: Dialect,
        pick: Callable[[str], Dialect] | None = None,
        flood: FloodBucket | None = None,
    ) -> None:
        # What every session shares (the clock, the flushes, the ping times) is asked of
        # the router, not kept in a slot each: 8 bytes a connection apiece.
        self.router = router
        self.dialect = dialect
        # On a port shared by several dialects, each login line picks the one it is in.
        self.pick = pick
        # Whether the reader is shown message ids: the router asks once per message, so
        # it is kept beside the dialect rather than looked up through it.
        self.shows_ids = dialect.shows_ids
        self.echoes_own = dialect.echoes_own  # likewise (IRC's echo-message)
        self.state = State.LOGIN
        self.name = ""  # as its owner spells it; set at login, and only then
        self.key = ""  # the name for identity (lower case)
        self.features: tuple[str, ...] = ()  # as announced at login, sorted: sent along as they are
        self.kind = ""  # "guest", "person" (an account) or "bot", once logged in
        # The other sessions of the same account, when there are any (the router's).
        self.group: Any = None
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop  # the one it was connected on (connection_made)
        self.address = "?"  # the peer's IP address: per-address limits
        self.port = 0  # and its port (`peer` joins them only when a log line asks)
        LineBuffer.__init__(self)  # its lines (a base, not an object of its own)
        self.flood = flood  # None: not limited (bots, or FLOOD_RATE=0)
        self._held: list[bytes | LineTooLong] | None = None  # lines read but not yet acted on
        self._pending_name = ""  # text mode: the name whose password is asked
        # The account whose credentials the router checked before the login (IRC's SASL):
        # set by the router only, so a login under that name needs no password again.
        self.verified: Admission | None = None
        self._waits = 0  # commands the next lines wait for (hold_lines)
        self.quit_reason = ""  # what the client said when it left (IRC's QUIT :reason)
        self.away = ""  # !away: whoever writes to it is told this
        self.operator = ""  # a network operator (!oper): the name it gave, for the log and WHOIS
        self.hears_wallops = False  # user mode +w: sent !wallops (operators are, whatever it says)
        # An `ack` reader's live messages not yet acknowledged, oldest first (None for
        # others): what it never had goes to its stored mail if the connection breaks.
        self.unacked: OrderedDict[str, Delivery] | None = None
        # Any other reader's live lines not yet acknowledged by its TCP stack, oldest
        # first (None until the first), and beside them where each ends in `written`:
        # two lists of references, so a delivery allocates nothing here.
        self.sent: list[Delivery] | None = None
        self.sent_ends = _NO_ENDS  # a list of its own from the first line tracked
        self._prune_at = 0  # the offset in `written` past which the next line asks the socket
        self.forgotten = 0  # unreceived messages past the limits above
        self.written = 0  # bytes queued for the peer since the connection opened
        self.flushed = 0  # of those, bytes handed to the transport
        self._sweep_timer: asyncio.TimerHandle | None = None
        self.heard = False  # something arrived since the last look
        self._pinged = False
        self.ping_bucket: PingBucket | None = None  # the router's pinger's, while it watches this one
        self.ended_input = False  # the peer half-closed: it sends nothing more
        self._flood_timer: asyncio.TimerHandle | None = None
        self.bogus = 0
        # The transport's buffer is over its high-water mark, or the peer's TCP stack is
        # SENT_LIMIT lines behind: the router stores instead of delivering.
        self.paused = False
        self._writing_paused = False  # the transport's part of it
        # `--debug`: every line in and out is logged (asked once per connection, not per line).
        self.debug = logger.isEnabledFor(logging.DEBUG)
        # Written this loop pass, until the flush: one piece as it is (a room's line, one
        # to each member a pass), a list from the second piece on.
        self._out: bytes | list[bytes] | None = None
        self._flush_scheduled = False
        # Created only while someone waits for the transport to resume: most sessions
        # never need one, and ten thousand idle sessions should cost little memory.
        self._resumed: asyncio.Future[None] | None = None
        self._login_timer: asyncio.TimerHandle | None = None

    @property
    def peer(self) -> str:
        """address:port, for log lines (built when asked: most sessions never are)."""
        return f"{self.address}:{self.port}" if self.port else self.address

    def __repr__(self) -> str:
        return f"<Session {self.name or '-'} {self.peer} {self.dialect.name} {self.state}>"

    @property
    def is_open(self) -> bool:
        """Still being read and written: not closed, nor closing."""
        return self.state in OPEN

    @property
    def echoes(self) -> bool:
        return self.dialect.echoes

    @property
    def asks_password(self) -> bool:
        """The dialect asks for a password after the name (text), rather than expecting
        it in the login (JSON)."""
        return self.dialect.asks_password

    @property
    def who(self) -> str:
        """The peer as the log names it."""
        return f"{self.name} ({self.peer})" if self.name else self.peer

    @property
    def ident(self) -> tuple[str, str]:
        """The username and real name its client gave (IRC's USER), asked when needed: the
        dialect holds them already."""
        return self.dialect.ident()

    @property
    def wants_presence(self) -> bool:
        return self.dialect.wants_presence

    @property
    def follows_network(self) -> bool:
        return self.dialect.follows_network

    # --- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's isn't an asyncio.Transport subclass
        # Asked once: Python 3.11's get_running_loop() makes a getpid() system call each
        # time (1.3 % of a room fan-out's CPU, from the once-a-second sweeps).
        self.loop = asyncio.get_running_loop()
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        if peer:
            # One string per address however many connect from it (58 bytes a connection).
            self.address, self.port = sys.intern(str(peer[0])), peer[1]
        _tune(transport.get_extra_info("socket"))
        self.router.connected(self)
        self._login_timer = self.loop.call_later(LOGIN_TIMEOUT, self._login_timeout)
        self.write(self.dialect.greeting())

    def data_received(self, data: bytes) -> None:
        self.router.clock.tick()  # one clock reading for every line of this chunk
        self.heard = True
        items = self.feed(data)
        if self._held is not None:
            self._held.extend(items)  # read before the transport paused: after those held
        else:
            self._process(items)

    def _process(self, items: list[bytes | LineTooLong]) -> None:
        if self.flood is not None:
            self._metered(items)
        else:
            self._handle(items)

    def _metered(self, items: list[bytes | LineTooLong]) -> None:
        """The flood bucket's share of `items` now, the rest held until it refills."""
        assert self.flood is not None
        granted = self.flood.take(len(items))
        self._handle(items[:granted] if granted < len(items) else items)
        if granted < len(items):
            self._hold(items[granted:])  # after whatever the lines let through held (a login check)
            if self._flood_timer is None:
                self._flood_timer = self.loop.call_later(self.flood.wait(), self._refilled)

    def _refilled(self) -> None:
        self._flood_timer = None
        held, self._held = self._held or [], None
        if self.transport is not None and self.state in OPEN:
            self.transport.resume_reading()
            self._process(held)

    def _handle(self, items: list[bytes | LineTooLong]) -> None:
        debug = self.debug
        handlers = LINE_HANDLERS
        lines = iter(items)
        for item in lines:
            handler = handlers.get(self.state)
            if handler is None:
                if self.state is State.WAITING:
                    self._hold([item, *lines])
                return  # closing: the rest is not acted on
            if isinstance(item, LineTooLong):
                self.reject(item)  # in place of the line
                continue
            try:
                line = item.decode()
                if debug:
                    logger.debug("%s < %s", self.who, self.dialect.loggable(line, self.state is State.PASSWORD))
                handler(self, line)
            except UnicodeDecodeError:
                self.reject(BadEncoding("Invalid UTF-8 in that line; it was ignored."))
            except ProtocolError as exc:
                self.reject(exc)
            except Exception:
                # Our bug, not the peer's: it costs this connection, never anyone else's.
                logger.exception("%s: handling a line failed; closing the connection", self.who)
                self.fail()
                return
            else:
                self.bogus = 0

    def eof_received(self) -> bool | None:
        """The peer is done sending (`printf 'alice\nbob: hi\n' | nc -N`): our side stays
        open until what it sent is answered — the router closes it then, or the grace."""
        self.ended_input = True
        self.loop.call_later(EOF_GRACE, self.close)
        self.router.input_ended(self)
        return True

    @property
    def busy(self) -> bool:
        """Lines are held, or a login is being checked."""
        return self.state is State.WAITING or self._held is not None

    def connection_lost(self, exc: Exception | None) -> None:
        was_logged_in = bool(self.name)  # the name is set at login, and only then
        if self.sent:
            self._settle()  # the socket is still open here: asked before it closes
        self.state = State.CLOSED
        self._held = None
        for timer in (self._login_timer, self._flood_timer, self._sweep_timer):
            if timer is not None:
                timer.cancel()
        self.router.pinger.forget(self)
        self._out = None
        self._wake()
        self.router.disconnected(self, was_logged_in)

    def pause_writing(self) -> None:
        self._writing_paused = self.paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake()
        self._resume_if_caught_up()

    def _resume_if_caught_up(self) -> None:
        """Not paused any more once the transport's buffer is low and the peer's TCP stack
        has acknowledged most of the lines kept for it."""
        if not self.paused or self._writing_paused or (self.sent is not None and len(self.sent) > SENT_LIMIT // 2):
            return
        self.paused = False
        if self.state in OPEN:
            self.router.writable(self)

    # --- lines in: one handler per state ---------------------------------------------

    def read_login(self, line: str) -> None:
        if self.pick is not None:
            self.dialect = self.pick(line)
            self.shows_ids, self.echoes_own = self.dialect.shows_ids, self.dialect.echoes_own
        try:
            login = self.dialect.parse_login(line)
        except ProtocolError as exc:
            raise LoginFailed(str(exc), LoginReason.INVALID_NAME) from None
        if type(login) is Login:
            self.state = State.WAITING
            self.router.login(self, login)
        elif type(login) is Reply:  # a login of several lines (IRC's registration) goes on
            self.write(login.text)
        elif type(login) is Authenticate:
            self.state = State.WAITING
            self.router.authenticate(self, login)
        else:
            self.close("Goodbye.")

    def read_password(self, line: str) -> None:
        self.state = State.WAITING
        self.router.login(self, Login(self._pending_name, password=line))

    def read_line(self, line: str) -> None:
        event = self.dialect.parse(line)
        if type(event) is Chat:
            self.router.route(self, event)
        elif type(event) is list:  # IRC: `JOIN #a,#b`, `PRIVMSG bob,carol :hi`
            for each in event:
                if self.state not in OPEN:
                    break
                self._act(each)
        else:
            self._act(event)  # type: ignore[arg-type]

    def _act(self, event: ClientEvent | Reply) -> None:
        if type(event) is Chat:
            self.router.route(self, event)
        elif type(event) is Reply:
            self.write(event.text)  # the dialect's own answer (IRC's PONG, a numeric)
            self.shows_ids, self.echoes_own = self.dialect.shows_ids, self.dialect.echoes_own  # a CAP REQ may change them
        elif type(event) is not Pong:  # a pong has done its work: something arrived
            self.router.act(self, event)  # type: ignore[arg-type]

    # --- the router's answers to a login ---------------------------------------------

    def logged_in(self, name: str, features: frozenset[str], kind: str = "guest") -> None:
        """The router accepted the login: lines are messages and commands from now on."""
        if self._login_timer:
            self._login_timer.cancel()
            self._login_timer = None
        self.name, self.key, self.kind = name, lowered(name), kind
        # `ack` is about this connection, not news for whom it writes to: left out of the
        # features sent along with its messages.
        self.features, self.state = tuple(sorted(features - {ACK_FEATURE})), State.ACTIVE
        if self.dialect.in_order:
            self.state = State.WAITING  # until `settled`: its answers come in order
        if ACK_FEATURE in features:
            self.unacked = OrderedDict()
        if kind == "bot":
            self.flood = None  # service sessions are exempt from flood limits
        liveness = self.router.pinger.liveness
        if liveness is not None and self.dialect.pings:
            self.router.pinger.watch(self, liveness[0])
        self.shows_ids = self.dialect.shows_ids  # IRC's depend on what it negotiated
        self.echoes_own = self.dialect.echoes_own
        self.write(self.dialect.logged_in(name, kind != "guest"))

    def authenticated(self, admission: Admission) -> None:
        """Credentials checked before the login were good: the login under that name
        will need no password (IRC's SASL, ahead of the end of registration)."""
        self.verified = admission
        self.state = State.LOGIN
        self.write(self.dialect.authenticated(admission.name))
        self._release()

    def renamed(self, name: str) -> None:
        """A guest's new name (`!nick`)."""
        self.name, self.key = name, lowered(name)

    def registered(self) -> None:
        """The guest's name became an account (`!register`)."""
        self.kind = "person"

    def ask_password(self, name: str) -> None:
        """Text mode: the name is an account's; its password is the next line."""
        self._pending_name = name
        self.state = State.PASSWORD
        self.write(self.dialect.password_prompt())
        self._release()

    def refused(self, exc: LoginFailed) -> None:
        """The login was refused: say why, and ask again."""
        self.state = State.LOGIN
        self.reject(exc)
        self._release()

    def resume_lines(self) -> None:
        """After logged_in: act on what arrived meanwhile."""
        self._release()

    def settled(self) -> None:
        """The login has settled (rooms, welcome, mail, catch-up): for dialects whose
        answers come in order, lines are acted on from now."""
        if self.dialect.in_order and self.state is State.WAITING and self.name and not self._waits:
            self.state = State.ACTIVE
            self._release()

    def hold_lines(self) -> None:
        """Lines after this one wait for `lines_go_on` (a `!join`: what the client says in
        the room next must find it in there; IRC clients send both at once)."""
        self._waits += 1
        if self.state is State.ACTIVE:
            self.state = State.WAITING

    def held_until(self, work: Awaitable[None]) -> Coroutine[Any, Any, None]:
        """`work`, with the lines after this one waiting until it is done (a command whose
        answer must come before what the client says next): the hold starts now, and ends
        when the returned coroutine (to be spawned) finishes, whatever happens."""
        self.hold_lines()
        return self._then_lines_go_on(work)

    async def _then_lines_go_on(self, work: Awaitable[None]) -> None:
        try:
            await work
        finally:
            self.lines_go_on()

    def lines_go_on(self) -> None:
        self._waits -= 1
        if self._waits <= 0 and self.state is State.WAITING and self.name:
            self._waits = 0
            self.state = State.ACTIVE
            self._release()

    def _hold(self, items: list[bytes | LineTooLong]) -> None:
        self._held = items if self._held is None else [*self._held, *items]
        if self.transport is not None:
            self.transport.pause_reading()

    def _release(self) -> None:
        if self.state not in OPEN or self.state is State.WAITING or self._flood_timer is not None:
            return
        held, self._held = self._held, None
        if held is not None and self.transport is not None:
            self.transport.resume_reading()
            self._process(held)

    # --- what the router says ----------------------------------------------------------

    def deliver(self, message: Delivery) -> None:
        """A live message (the routing path)."""
        text = self.dialect.delivery(message)
        if text:
            self.deliver_line(text.encode(), message)

    def deliver_line(self, data: bytes, message: Delivery) -> None:
        """A live message already rendered and encoded for this session's dialect (a
        room's fan-out renders each message once per dialect, not once per member)."""
        if data:
            self.send(data)
            metadata = message[6]
            sent = self.sent
            if metadata is None and sent and self.written < self._prune_at and len(sent) < SENT_LIMIT - 1:
                sent.append(message)  # _track, for a reader with lines in flight already
                self.sent_ends.append(self.written)
            elif metadata is None or not partial_chunk(metadata):
                if self.unacked is not None:
                    self._remember(message)
                else:
                    self._track(message)

    def _remember(self, message: Delivery) -> None:
        """An `ack` reader: keep what it was sent until it says it has it."""
        assert self.unacked is not None and message[0] is not None  # `ack` readers are shown ids
        self.unacked[message[0]] = message
        if len(self.unacked) > UNACKED_LIMIT:
            self.unacked.popitem(last=False)
            self.forgotten += 1

    def acknowledged(self, ids: tuple[str, ...]) -> None:
        if self.unacked is not None:
            pop = self.unacked.pop
            rooms = [message for message in (pop(msg_id, None) for msg_id in ids) if message is not None and message[2][:1] == "#"]
            if rooms:
                self.router.received(self, rooms)

    def _track(self, message: Delivery) -> None:
        """Any other reader: keep the line until the peer's TCP stack has it."""
        sent = self.sent
        if sent is None:
            self.sent, self.sent_ends = (sent := []), []
        if not sent and self._sweep_timer is None:
            self._sweep_timer = self.loop.call_later(SENT_SWEEP, self._sweep)
        sent.append(message)
        self.sent_ends.append(self.written)
        if self.written >= self._prune_at or len(sent) >= SENT_LIMIT:
            self._prune()
            self._prune_at = self.written + PRUNE_BYTES
            if len(sent) >= SENT_LIMIT:  # this far behind: what comes next is stored as mail
                self.paused = True
            if len(sent) >= 2 * SENT_LIMIT:  # written still (to an account's other sessions): the oldest go
                excess = len(sent) - 2 * SENT_LIMIT + 1
                del sent[:excess], self.sent_ends[:excess]
                self.forgotten += excess

    def _prune(self) -> None:
        """Forget the lines the peer's TCP stack has acknowledged."""
        sent, transport = self.sent, self.transport
        if not sent or transport is None:
            return
        # What reached the socket less what its send queue still holds: over plain TCP
        # exactly TCP_INFO's count, for one ioctl, where asking TCP_INFO through uvloop's
        # socket builds a socket object each time (py-spy, room fan-out: 5.6 % of the
        # samples with its `getsockname`, 3.0 % this way). Under TLS the queue holds
        # encrypted bytes, more than ours: a line is forgotten late rather than early.
        acked = self.flushed - transport.get_write_buffer_size() - self.unacknowledged_bytes()
        cut = bisect.bisect_right(self.sent_ends, acked)
        if cut:
            had = sent[:cut]
            del sent[:cut], self.sent_ends[:cut]
            self.router.received(self, had)

    def _sweep(self) -> None:
        self._sweep_timer = None
        if self.state in OPEN or self.state is State.CLOSING:
            self._prune()
            if self.sent:
                self._sweep_timer = self.loop.call_later(SENT_SWEEP, self._sweep)
            elif self.sent is not None:  # all received: an idle connection keeps no lists (112 bytes)
                self.sent, self.sent_ends = None, _NO_ENDS
            self._resume_if_caught_up()

    def _settle(self) -> None:
        """The connection is gone: keep only what the peer's TCP stack never acknowledged
        (its count survives a reset). Under TLS everything not yet pruned counts as
        unreceived."""
        assert self.sent is not None
        acked = self._tcp_acked()
        if acked is not None:
            cut = bisect.bisect_right(self.sent_ends, acked)
            del self.sent[:cut], self.sent_ends[:cut]

    def _tcp_acked(self) -> int | None:
        """How many of our bytes the peer's TCP stack has acknowledged (TCP_INFO), or None
        where that does not count our bytes (TLS) or can't be asked."""
        if self.transport is None or self.transport.get_extra_info("sslcontext") is not None:
            return None
        sock = self.transport.get_extra_info("socket")
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES_ACKED + 8)
            acked: int = struct.unpack_from("Q", info, _TCP_INFO_BYTES_ACKED)[0]
        except (OSError, AttributeError, ValueError, struct.error):  # not TCP, closed, or an older kernel
            return None
        return acked

    def take_unreceived(self) -> list[Delivery]:
        """Live messages the reader is not known to have (after the connection is lost),
        forgotten here as they are handed out."""
        if self.unacked is not None:
            taken = list(self.unacked.values())
            self.unacked.clear()
            return taken
        taken, self.sent, self.sent_ends = self.sent or [], None, _NO_ENDS
        return taken

    def check_alive(self) -> float | None:
        """A ping after `liveness[0]` s of silence; dropped after `liveness[1]` more. The
        router's pinger asks; the answer is when to ask again (None: no more)."""
        liveness = self.router.pinger.liveness
        assert liveness is not None
        if self.state not in OPEN:
            return None
        interval, timeout = liveness
        if self.heard:
            self.heard = self._pinged = False
            return interval
        if not self._pinged:
            self._pinged = True
            self.write(self.dialect.ping(self.name, self.router.clock.tick()))
            return timeout
        logger.info("%s did not answer a ping in %.0f s; disconnecting", self.who, timeout)
        self.notice("No answer to ping; disconnecting.", Event.GOODBYE)
        self.flush()
        self.abort()  # a dead peer takes nothing more: the socket is not waited on
        return None

    def deliver_stored(self, message: MessageJson) -> None:
        self.write(self.dialect.stored(message))

    def notice(self, text: str, event: Event, **details: Any) -> None:
        self.write(self.dialect.notice(text, event, details, self.name, self.router.clock.tick()))

    def error(self, text: str, event: Event = Event.BAD_INPUT, **details: Any) -> None:
        self.write(self.dialect.error(text, event, details, self.name, self.router.clock.tick()))

    def reject(self, exc: ChatError) -> None:
        """A bad line: tell the peer, keep the session — unless it only sends garbage."""
        if isinstance(exc, LoginFailed):  # with a new prompt
            details: dict[str, Any] = {"reason": exc.reason}
            if exc.retry_after is not None:
                details["retry_after"] = exc.retry_after
            self.write(self.dialect.login_failed(str(exc), details, self.router.clock.tick()))
        elif self.state in (State.LOGIN, State.PASSWORD):
            self.state = State.LOGIN
            self.write(self.dialect.login_failed(str(exc), {"reason": LoginReason.INVALID_NAME, "line": True}, self.router.clock.tick()))
        elif isinstance(exc, LineTooLong):
            self.error(str(exc), reason=TOO_LONG)
        else:
            self.error(str(exc))
        self.bogus += 1
        if self.bogus >= BOGUS_BUDGET:
            self.close("Too many invalid lines; disconnecting.")

    def close(self, goodbye: str | None = None, event: Event = Event.GOODBYE) -> None:
        """Say `goodbye`, send what is queued, close; nothing more is read or acted on."""
        if self.state not in OPEN or self.transport is None:
            return
        if goodbye:
            self.notice(goodbye, event)
        self.flush()
        self.state = State.CLOSING
        if self.sent:
            self._prune()
        if self.sent:  # lines on their way: the socket is closed once they are acknowledged
            self._linger(self.loop.time() + CLOSE_LINGER)
        else:
            self.transport.close()

    def _linger(self, deadline: float) -> None:
        if self.state is State.CLOSED or self.transport is None:
            return
        self._prune()
        if self.sent and self.loop.time() < deadline:
            self.loop.call_later(DRAIN_POLL, self._linger, deadline)
        else:
            self.transport.close()

    def fail(self) -> None:
        """Close after a fault of ours: say so if we still can, close in any case."""
        try:
            self.close("Internal server error; disconnecting.")
        except Exception:
            logger.exception("%s: could not say goodbye", self.who)
            self.abort()

    def abort(self) -> None:
        """Drop the connection at once, unsent output and all."""
        if self.state in OPEN:
            self.state = State.CLOSING
        if self.transport is not None:
            self.transport.abort()

    def _login_timeout(self) -> None:
        if self.state in (State.LOGIN, State.PASSWORD, State.WAITING):
            self.close("No username given in time; disconnecting.")

    # --- bytes out -----------------------------------------------------------------------

    def write(self, text: str) -> None:
        """Queue text; everything queued in one loop pass goes out in one write."""
        self.send(text.encode())

    def send(self, data: bytes) -> None:
        """Queue encoded text (a room's line is encoded once for all its members)."""
        if self.state is _CLOSED or not data:
            return
        if self.paused and self.transport is not None and self.transport.get_write_buffer_size() > WRITE_HARD_LIMIT:
            logger.warning("%s is not reading; disconnecting", self.who)
            self.abort()
            return
        out = self._out
        if out is None:
            self._out = data  # no list made and freed per member per line (bench.routing --room 1000: 265–274 → 247–249 ns a delivery)
        elif isinstance(out, bytes):
            self._out = [out, data]
        else:
            out.append(data)
        self.written += len(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.router.flushes.add(self)

    def flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if out and self.transport is not None and not self.transport.is_closing():
            data = out if isinstance(out, bytes) else b"".join(out)
            self._out = None
            if self.debug:
                for line in data.decode(errors="replace").splitlines():
                    logger.debug("%s > %s", self.who, line)
            # Everything queued is handed over now; one int for both counters (past 256
            # they are objects: 32 bytes a connection kept for each).
            self.flushed = self.written
            self.transport.write(data)

    async def drained(self) -> None:
        """Wait until what was written so far has left our buffers for the socket."""
        self.flush()
        while self.transport is not None and not self.transport.is_closing() and self.transport.get_write_buffer_size():
            if self.paused:
                self._resumed = self.loop.create_future()
                await self._resumed
            else:
                await asyncio.sleep(DRAIN_POLL)

    async def delivered(self) -> bool:
        """Wait until the peer's TCP stack has acknowledged every byte written so far
        (not merely our buffers or the kernel's send queue emptying toward it); False
        when the connection closes first."""
        await self.drained()
        while self.state in OPEN:
            if not self.unacknowledged_bytes():
                return True
            await asyncio.sleep(DRAIN_POLL)
        return False

    def unacknowledged_bytes(self) -> int:
        """Bytes in the socket's send queue the peer has not acknowledged (Linux's
        SIOCOUTQ); 0 where that can't be asked."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return 0
        try:
            answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except (OSError, ValueError):
            return 0
        queued: int = struct.unpack("i", answer)[0]
        return queued

    def _wake(self) -> None:
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self._resumed = None


# Where a line goes, by the session's state (h11's table, in small).
LINE_HANDLERS: Final[dict[State, Callable[[Session, str], None]]] = {
    State.LOGIN: Session.read_login,
    State.PASSWORD: Session.read_password,
    State.ACTIVE: Session.read_line,
}
