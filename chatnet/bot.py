"""The bot-peer base: a named JSON-mode client that answers `<bot>: <command> <args>`.

    class EchoBot(Bot):
        @command("echo <text>")
        async def echo(self, req: Request) -> str:
            "Say <text> back."
            return req.args or "Echo what?"

    asyncio.run(serve(EchoBot(Settings(), name="echo")))

`Bot.run` connects and logs in, reconnects with capped, jittered exponential backoff
when the server goes away or refuses the login, and dispatches every chat message
addressed to the bot: the first word picks a `@command` handler, whatever it returns
goes back to the sender. Users are served concurrently, each user's messages in order
— but for an `immediate` command (`stop`), run the moment it arrives, beside the
request it is about. A handler's exception is logged once and becomes a polite reply;
the bot keeps going. `typing(destination, active)` tells a user or a room that an
answer is being written (the page shows it; text and IRC users see nothing).

What the bot sends goes through `outbox` (a bounded queue drained by the connection's
writer), so handlers never block on the socket and tests can read replies straight
from it after `await bot.handle(message)`. On stop the bot takes no new messages, lets
the handlers under way finish for a while (`SHUTDOWN_GRACE`) and sends their answers
before it closes the connection.

Acknowledged delivery. The bot logs in with the `ack` feature and acknowledges every
chat and subscription message (`{"type": "ack", "ids": [...]}`) once it is done with
it: its handler returned and the answer is queued (a handler that raised counts: its
apology is the answer, and mail that fails every time must not come back at every
login), it was refused (not allowed, rate limit, busy), or it is nothing the bot
answers (broadcasts, other bots). A message whose handler never finished (the bot was
killed or cancelled mid-way) is not acknowledged, so the server hands it over again
at the next login. Acks wait `ACK_DELAY` to share a frame and always leave after the
answers queued before them. Ids of recent messages are remembered, so a repeat (mail
handed over again after a reconnect) is acknowledged again, or, if it is still being
handled, when it is done, and never handled twice.

Rooms. Invited to a room (an `invited` notice), the bot joins it by itself (`!join`)
and says hello there once; kicked (a `left` notice), it is out until the next
invitation. A room message addressed to it (`@bot …`, `bot: …`) is handled like a
direct message once the address is stripped, and answered in the room, addressed to
the asker (`alice: …`). The server only hands a bot the room messages addressed to it,
and none from other bots; the bot checks both again (the catch-up at login is not
filtered, and a bot never answers a bot: `metadata.bot`, the `bot` login feature in
`sender_features`, names that presence and the welcome call bots). Each room has a
reply budget (`BOT_ROOM_REPLIES` a minute): past it the room hears
"busy" once a window, then nothing. A room's requests are served in order, apart from
the asker's direct messages, so a slow room costs that room only.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from chatnet.bot_limits import Budget, RateLimiter, RoomBudget
from chatnet.cli import stop_on_signals
from chatnet.config import Settings
from chatnet.dialects.json import client_frame
from chatnet.errors import ChatError, LoginInterrupted, LoginRefused
from chatnet.limits import ACK_IDS_PER_FRAME, MAIL_PAGE, MAX_MESSAGE_CHARS
from chatnet.message import Message
from chatnet.peer import Peer
from chatnet.protocol import ACK_FEATURE, BOT_FEATURE, SERVER_NAME, Ack, Chat, Command, Event, MessageType, Typing, is_room, strip_address

logger = logging.getLogger("chatnet.bot")

# Backoff between connection attempts: 0.5 s, 1 s, 2 s ... capped, each times a random
# factor in [0.5, 1] so bots restarted together don't hammer the server in step.
BACKOFF_START: Final = 0.5
BACKOFF_CAP: Final = 15.0
# Frames waiting for the server; beyond this the oldest are dropped (a long outage
# must not grow memory without bound).
OUTBOX_LIMIT: Final = 1000
# Requests one user may have queued before the bot says it is busy.
USER_QUEUE_LIMIT: Final = 20
# How long a stopping bot lets the handlers under way finish; below the launcher's
# wait before it kills a child (10 s), so their answers still go out.
SHUTDOWN_GRACE: Final = 5.0
# What the bot acknowledges (the server's notices are not acknowledged).
ACKED_TYPES: Final = frozenset({MessageType.CHAT, MessageType.SUBSCRIPTION})
# How long a handled message's ack waits for others to share its frame.
ACK_DELAY: Final = 0.05
# Ids of recent messages remembered to drop repeats: a whole page of stored mail.
SEEN_LIMIT: Final = MAIL_PAGE
# What a room hears once a window when its reply budget is spent (chatnet.bot_limits).
BUSY_IN_ROOM: Final = "busy in this room, try again in a minute"
# Names of bots learned from presence and welcome notices (bounded: they are few).
KNOWN_BOTS_LIMIT: Final = 10_000

Handler = Callable[["Bot", "Request"], Awaitable[str | None]]
# A subclass's handler takes the subclass as `self`: the decorator keeps its type.
AnyHandler = TypeVar("AnyHandler", bound=Callable[..., Awaitable[str | None]])


@dataclass(frozen=True, slots=True)
class Request:
    """One chat message addressed to the bot, split into its command word and the rest.
    In a room, `room` is the room and `body` the message without its address."""

    sender: str
    command: str  # first word, lower-cased ("" for an empty message)
    args: str  # the rest, stripped
    message: Message
    body: str = ""  # what the sender wrote to the bot, stripped (in a room: after the address)
    room: str | None = None  # the room it was said in; None: a direct message

    @property
    def text(self) -> str:
        return self.body

    @property
    def features(self) -> frozenset[str]:
        """What the sender's client announced at login (e.g. "stream")."""
        raw = self.message.metadata.get("sender_features") or ()
        return frozenset(f for f in raw if isinstance(f, str))

    @property
    def conversation(self) -> str:
        """Whose conversation this is: the room's, or the sender's own."""
        return self.room or self.sender

    @property
    def answer_to(self) -> str:
        """Where the answer goes: the room, or the sender."""
        return self.room or self.sender

    @property
    def lead(self) -> str:
        """What an answer in a room starts with: whom it answers."""
        return f"{self.sender}: " if self.room else ""

    @classmethod
    def parse(cls, message: Message, bot: str | None = None) -> Request:
        """`bot`: the bot's name, to strip the address from a room message."""
        text = message.message.strip()
        room = message.destination if message.destination and is_room(message.destination) else None
        if room is not None and bot is not None:
            text = strip_address(bot, text) or ""
        word, _, rest = text.partition(" ")
        return cls(message.sender or "", word.lower(), rest.strip(), message, text, room)


@dataclass(frozen=True, slots=True)
class CommandInfo:
    name: str
    usage: str
    summary: str
    takes_args: bool
    handler: Handler
    immediate: bool = False  # handled the moment it arrives, not queued behind the user's other requests


def command(usage: str | None = None, *, name: str | None = None, args: bool | None = None, immediate: bool = False) -> Callable[[AnyHandler], AnyHandler]:
    """Mark a method as a command. The docstring's first line is its help text.

    `usage` is shown in help (default: the name). `args=False` means the command takes
    none, so in a bot with its own `default` "help me with this" goes there instead
    (default: whether the usage mentions an argument). `immediate`: run at once, beside
    whatever the user's queue is busy with (`stop` must not wait for what it stops)."""

    def mark(func: AnyHandler) -> AnyHandler:
        word = name or func.__name__.removeprefix("cmd_")
        shown = usage or word
        takes = args if args is not None else (" " in shown)
        summary = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else ""
        func.__chatnet_command__ = CommandInfo(word, shown, summary, takes, func, immediate)  # type: ignore[attr-defined]
        return func

    return mark


def split_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """Pieces of at most `limit` characters, cut at a paragraph, line or word break
    when there is one in the second half of a piece."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(" "))
        if cut < limit // 2:
            cut = limit
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not pieces:
        pieces.append(rest)
    return pieces


class Bot:
    """Base of every bot peer. Subclasses add `@command` methods and may override
    `default` (text that is no command), `on_connected` and `background`."""

    description: str = ""  # first line of help; default: the class docstring's first line
    features: tuple[str, ...] = ()
    commands: dict[str, CommandInfo] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.commands = _collect_commands(cls)

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        allow: Iterable[str] | None = None,
        rate_limit: RateLimiter | None = None,
        room_budget: RoomBudget | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.allow = frozenset(user.lower() for user in allow) if allow else None  # names match in any case
        self.rate_limit = rate_limit
        replies = settings.bot_room_replies
        self.room_budget = room_budget if room_budget is not None else RoomBudget(replies)
        self.known_bots: set[str] = set()  # lower-cased names presence and the welcome said are bots
        self._greet: set[str] = set()  # rooms (keys) joined on an invitation, hello not said yet
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.connected = asyncio.Event()
        # Requests wait while `on_connected` runs (a login's own setup, such as loading
        # what the bot keeps, comes before the first answer); set whenever it is not.
        self._settled = asyncio.Event()
        self._settled.set()
        self._queues: dict[str, asyncio.Queue[Message]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._acks: list[str] = []  # ids of messages done with, not acknowledged yet
        self._seen: dict[str, bool] = {}  # recent message ids -> done with (False: being handled)
        self._wake = asyncio.Event()  # the writer has something to send
        self._ack_timer: asyncio.TimerHandle | None = None
        self.log = logging.getLogger(f"chatnet.bot.{type(self).__name__.lower()}")

    # --- what subclasses override ------------------------------------------------------

    async def default(self, req: Request) -> str | None:
        """A message whose first word is no command."""
        if not req.command:
            return "Say something: try 'help'."
        return f"Unknown command '{req.command}'. Try 'help'."

    async def on_connected(self) -> None:
        """Called after every (re)login."""

    async def background(self) -> None:
        """Work that runs for the bot's whole life, connected or not (e.g. a ticker)."""

    def on_joined(self, room: str) -> None:
        """The bot is in `room` now (a `joined` notice)."""

    def on_left(self, room: str, by: str | None) -> None:
        """The bot is out of `room` (a `left` notice; `by`: who removed it)."""

    def hello(self, room: str) -> str:
        """What the bot says in a room it joined on an invitation."""
        return f"Hello {room}! I'm {self.name}. Write '@{self.name} help' to see what I can do."

    # --- the built-in help -------------------------------------------------------------

    @command("help", args=False)
    async def cmd_help(self, req: Request) -> str:
        """Show the commands."""
        return self.help_text()

    def help_text(self) -> str:
        doc = (type(self).__doc__ or "").strip()
        intro = self.description or (doc.splitlines()[0] if doc else "")
        width = max(len(info.usage) for info in self.commands.values())
        lines = [f"{self.name}: {intro}" if intro else f"{self.name} commands:"]
        lines += [f"  {info.usage:<{width}}  {info.summary}" for info in self.commands.values()]
        lines.append(f"Write '{self.name}: <command>', e.g. '{self.name}: help'; in a room, '@{self.name} <command>'.")
        return "\n".join(lines)

    # --- sending -----------------------------------------------------------------------

    def send(self, destination: str, text: str, metadata: dict[str, Any] | None = None, type: str = MessageType.CHAT) -> None:
        """Queue one frame for the server. Every frame says it comes from a bot, so
        other bots never answer it (no bot-to-bot loops)."""
        self._queue(client_frame(Chat(destination, text, {**(metadata or {}), "bot": self.name}, type)))

    def _queue(self, frame: dict[str, Any]) -> None:
        if self.outbox.qsize() >= OUTBOX_LIMIT:
            dropped = self.outbox.get_nowait()
            self.log.warning("outbox full; dropped a frame to %s", dropped.get("destination", "the server"))
        self.outbox.put_nowait(frame)
        self._wake.set()

    def reply(self, req: Request, text: str, metadata: dict[str, Any] | None = None) -> None:
        """Answer the sender — in a room, in the room, addressed to the sender — split
        into several messages when it is long."""
        lead = req.lead
        for piece in split_text(text, MAX_MESSAGE_CHARS - len(lead)):
            self.send(req.answer_to, lead + piece, {"reply_to": req.message.id, **(metadata or {})})

    def typing(self, destination: str, active: bool) -> None:
        """Tell `destination` (a user or a room) that an answer is being written to it, or
        no longer is (the page shows "… is working")."""
        self._queue(client_frame(Typing(destination, active)))

    def send_command(self, name: str, args: str = "") -> None:
        """Queue a server command (`send_command("join", "#hiking")` is `!join #hiking`)."""
        self._queue(client_frame(Command(name, args)))

    def spawn(self, work: Awaitable[Any], name: str) -> None:
        """Run `work` beside the handlers (awaited by `drain`, cancelled with the bot)."""

        async def run() -> None:
            try:
                await work
            except Exception:
                self.log.exception("%s failed", name)

        task = asyncio.create_task(run(), name=f"{self.name}-{name}")
        self._workers.add(task)
        task.add_done_callback(self._workers.discard)

    # --- receiving ---------------------------------------------------------------------

    async def receive(self, message: Message) -> None:
        """One frame from the server: a person's chat goes to the queue of its
        conversation (the sender's, or the room's); room notices are acted on; the rest
        (other notices, broadcasts, other bots) is ignored. A repeat of a message already
        received is not handled again."""
        if not self._first_time(message):
            return
        if message.sender == SERVER_NAME and message.type in (MessageType.NOTIFICATION, MessageType.ERROR):
            self._notice(message)
            return
        if not self._wants(message):
            self._done(message)
            return
        req = Request.parse(message, self.name)
        if req.room is not None:
            if strip_address(self.name, message.message) is None:
                self._done(message)  # the catch-up at login hands over the room's every message
                return
            verdict = self.room_budget.take(req.room)
            if verdict is not Budget.REPLY:
                if verdict is Budget.BUSY:
                    self.reply(req, BUSY_IN_ROOM)
                self._done(message)
                return
        if not self.allows(req.sender):
            self.reply(req, f"Sorry, {self.name} only talks to its allowed users.")
            self._done(message)
            return
        info = self.command_for(req)
        if info is not None and info.immediate:
            self.spawn(self._handle_now(message), f"{info.name}-{req.sender}")
            return
        if self.rate_limit is not None and not self.rate_limit.allow(req.sender):
            self.reply(req, "Slow down, please: too many messages in a minute. Try again shortly.")
            self._done(message)
            return
        self._enqueue(req.room.lower() if req.room else req.sender, message)

    def allows(self, user: str) -> bool:
        """Whether the allow-list (if any) lets `user` talk to the bot."""
        return self.allow is None or user.lower() in self.allow

    async def _handle_now(self, message: Message) -> None:
        await self._settled.wait()
        await self.handle(message)
        self._done(message)

    @property
    def queued(self) -> int:
        """Requests waiting for their turn (not those being handled)."""
        return sum(queue.qsize() for queue in self._queues.values())

    def _wants(self, message: Message) -> bool:
        # Only chat from a person: never our own frames, the server's, another bot's
        # replies or stream chunks, subscription broadcasts, or an IRC NOTICE (which, by
        # IRC's oldest rule, is never answered automatically).
        features = message.metadata.get("sender_features") or ()
        return (
            message.type == MessageType.CHAT
            and message.sender not in (None, self.name, SERVER_NAME)
            and not message.metadata.get("bot")
            and not message.metadata.get("notice")
            and "stream" not in message.metadata
            and not (isinstance(features, list | tuple) and BOT_FEATURE in features)
            and (message.sender or "").lower() not in self.known_bots
        )

    def _notice(self, message: Message) -> None:
        """What the server says that the bot acts on: invitations, joins and leaves,
        and which peers are bots."""
        meta = message.metadata
        event, room = meta.get("event"), meta.get("room")
        if event == Event.PRESENCE and isinstance(meta.get("user"), str):
            self._learn_bot(meta["user"], bool(meta.get("bot")))
        if not isinstance(room, str) or not is_room(room):
            return
        if event == Event.INVITED and str(meta.get("user", "")).lower() == self.name.lower() and meta.get("by") != self.name:
            self.log.info("invited to %s by %s; joining", room, meta.get("by"))
            self._greet.add(room.lower())
            self.send_command("join", room)
        elif event == Event.JOINED:
            if room.lower() in self._greet:
                self._greet.discard(room.lower())
                self.send(room, self.hello(room))
            self.on_joined(room)
        elif event == Event.LEFT:
            by = meta.get("by")
            self._greet.discard(room.lower())
            self.log.info("out of %s%s", room, f" (removed by {by})" if by else "")
            self.on_left(room, by if isinstance(by, str) else None)

    def _learn_bot(self, name: str, bot: bool) -> None:
        if bot and len(self.known_bots) < KNOWN_BOTS_LIMIT:
            self.known_bots.add(name.lower())
        elif not bot:
            self.known_bots.discard(name.lower())

    def learn_welcome(self, welcome: Message | None) -> None:
        """The bots the welcome names as online."""
        bots = welcome.metadata.get("bots") if welcome is not None else None
        for name in bots if isinstance(bots, list) else ():
            if isinstance(name, str) and name.lower() != self.name.lower():
                self._learn_bot(name, True)

    def _enqueue(self, key: str, message: Message) -> None:
        """Into the queue of `key`: a sender (direct messages) or a room (its key)."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            task = asyncio.create_task(self._serve_user(key, queue), name=f"bot-user-{key}")
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        if queue.qsize() >= USER_QUEUE_LIMIT:
            self.reply(Request.parse(message, self.name), "I'm still working on the earlier messages; please wait a moment.")
            self._done(message)
            return
        queue.put_nowait(message)

    async def _serve_user(self, sender: str, queue: asyncio.Queue[Message]) -> None:
        # One task per user with work queued: their messages in order, users concurrently.
        # It ends when the queue is empty (no await between the check and the removal).
        while True:
            try:
                message = queue.get_nowait()
            except asyncio.QueueEmpty:
                del self._queues[sender]
                return
            await self._settled.wait()
            await self.handle(message)  # a cancellation (the bot stopped mid-way) skips the ack
            self._done(message)

    async def handle(self, message: Message) -> None:
        """Dispatch one message and send the handler's answer back to the sender (in a
        room: to the room)."""
        req = Request.parse(message, self.name)
        info = self.command_for(req)
        if info is not None:
            call: Callable[[], Awaitable[str | None]] = lambda: info.handler(self, req)  # noqa: E731
            what = req.command
        else:
            call, what = (lambda: self.default(req)), "message"
        try:
            answer = await call()
        except Exception:
            self.log.exception("%s failed on %s from %s", what, req.command or "(empty)", req.sender)
            answer = f"Sorry, something went wrong with that {what}. Please try again later."
        if answer:
            self.reply(req, answer)

    def command_for(self, req: Request) -> CommandInfo | None:
        """The command `req` runs, or None: free text for `default`. An argless command
        given arguments ("help me write a poem") is free text when the bot has its own
        default handler; otherwise the extra words are ignored."""
        info = self.commands.get(req.command)
        if info is not None and (info.takes_args or not req.args or type(self).default is Bot.default):
            return info
        return None

    async def drain(self) -> None:
        """Wait until every queued user message has been handled (shutdown)."""
        while self._workers:
            await asyncio.gather(*list(self._workers), return_exceptions=True)

    # --- acknowledgements --------------------------------------------------------------

    def _first_time(self, message: Message) -> bool:
        """False for a repeat of a message received before (mail handed over again):
        one done with is acknowledged again; one still being handled will be when done."""
        if message.type not in ACKED_TYPES:
            return True
        done = self._seen.get(message.id)
        if done is None:
            self._seen[message.id] = False
            if len(self._seen) > SEEN_LIMIT:
                del self._seen[next(iter(self._seen))]  # the oldest (dicts keep insertion order)
            return True
        if done:
            self._ack(message.id)
        return False

    def _done(self, message: Message) -> None:
        """The bot will do nothing more with `message`: acknowledge it (soon)."""
        if message.type in ACKED_TYPES:
            self._seen[message.id] = True
            self._ack(message.id)

    def _ack(self, id: str) -> None:
        self._acks.append(id)
        if self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._ack_due)

    def _ack_due(self) -> None:
        self._ack_timer = None
        self._wake.set()

    def take_acks(self) -> list[dict[str, Any]]:
        """The ack frames of what the bot is done with since the last call (what the
        connection's writer sends; tests read them here)."""
        ids, self._acks = self._acks, []
        return [client_frame(Ack(tuple(ids[i : i + ACK_IDS_PER_FRAME]))) for i in range(0, len(ids), ACK_IDS_PER_FRAME)]

    # --- the connection ----------------------------------------------------------------

    @property
    def service_token(self) -> str | None:
        """Bots are service accounts: they log in with the network's service token (the
        API token), which reserves their name; without one, as a guest."""
        token = self.settings.api_token
        return token.get_secret_value() if token is not None else None

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Stay connected until `stop` is set: log in, serve, reconnect with backoff."""
        stop = stop or asyncio.Event()
        background = asyncio.create_task(self.background(), name=f"{self.name}-background")
        attempt = 0
        try:
            while not stop.is_set():
                try:
                    peer = await Peer.connect(
                        self.settings.chat_host, self.settings.chat_port, self.name,
                        features={*self.features, ACK_FEATURE, BOT_FEATURE}, service_token=self.service_token,
                    )  # fmt: skip
                except (OSError, TimeoutError, LoginRefused, LoginInterrupted, ChatError) as exc:
                    attempt += 1
                    delay = backoff(attempt)
                    self.log.warning("cannot log in as %s (%s); retrying in %.1f s", self.name, exc or type(exc).__name__, delay)
                    await _sleep_unless(stop, delay)
                    continue
                attempt = 0
                await self._session(peer, stop)
        finally:
            if self._ack_timer is not None:
                self._ack_timer.cancel()
                self._ack_timer = None
            background.cancel()
            for task in list(self._workers):
                task.cancel()
            await asyncio.gather(background, *self._workers, return_exceptions=True)

    async def _session(self, peer: Peer, stop: asyncio.Event) -> None:
        self.learn_welcome(peer.welcome)
        self.connected.set()
        self.log.info("online as %s on %s:%s", self.name, self.settings.chat_host, self.settings.chat_port)
        self._settled.clear()  # the reader takes frames from now on; their handlers wait
        writer = asyncio.create_task(self._write(peer), name=f"{self.name}-writer")
        reader = asyncio.create_task(self._read(peer), name=f"{self.name}-reader")
        stopper = asyncio.create_task(stop.wait())
        try:
            try:
                await self.on_connected()
            finally:
                self._settled.set()
            await asyncio.wait({writer, reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set() and not writer.done():
                await self._finish(peer, reader, writer)
        except Exception:
            self.log.exception("on_connected failed")
        finally:
            self.connected.clear()
            for task in (writer, reader, stopper):
                task.cancel()
            await asyncio.gather(writer, reader, stopper, return_exceptions=True)
            await peer.close()
        if not stop.is_set():
            self.log.warning("lost the connection to the chat server; reconnecting")

    async def _finish(self, peer: Peer, reader: asyncio.Task[None], writer: asyncio.Task[None]) -> None:
        """Stopping: no new messages; the handlers under way finish and what they
        answered is sent, within SHUTDOWN_GRACE."""
        reader.cancel()
        try:
            async with asyncio.timeout(SHUTDOWN_GRACE):
                await self.drain()
                # A frame the writer was sending is in the socket's buffer already.
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
                while not self.outbox.empty():
                    await peer.send_frame(self.outbox.get_nowait())
                for frame in self.take_acks():  # after the answers, as the writer sends them
                    await peer.send_frame(frame)
        except TimeoutError:
            self.log.warning("stopping with requests still being handled")
        except (OSError, RuntimeError) as exc:
            self.log.warning("could not send the last answers: %s", exc)

    async def _read(self, peer: Peer) -> None:
        try:
            async for message in peer:
                self.log.debug("< %s %s: %s", message.type, message.sender, message.message[:80])
                await self.receive(message)
        except (OSError, ChatError) as exc:
            self.log.warning("read failed: %s", exc)

    async def _write(self, peer: Peer) -> None:
        """Send the outbox, then the acks. The acks are taken the moment the outbox is
        empty, and each was queued after the answer to its message: an answer always
        reaches the server before the ack that lets its question go."""
        self._wake.set()  # what was queued while disconnected goes first
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not self.outbox.empty():
                frame = self.outbox.get_nowait()
                try:
                    await peer.send_frame(frame)  # cancelled (stopping): it is in the socket's buffer already
                except (OSError, RuntimeError) as exc:
                    # The server went away: keep the frame for the next connection.
                    requeue = [frame]
                    while not self.outbox.empty():
                        requeue.append(self.outbox.get_nowait())
                    for item in requeue:
                        self.outbox.put_nowait(item)
                    self.log.warning("write failed: %s", exc)
                    return
            acks = self.take_acks()
            for i, frame in enumerate(acks):
                try:
                    await peer.send_frame(frame)
                except (OSError, RuntimeError) as exc:
                    # Lost with the connection: what they acknowledge comes again, and is
                    # acknowledged as a repeat.
                    self.log.warning("write failed: %s", exc)
                    return
                except asyncio.CancelledError:  # stopping: _finish sends the rest
                    self._acks[:0] = [id for rest in acks[i + 1 :] for id in rest["ids"]]
                    raise


def _collect_commands(cls: type) -> dict[str, CommandInfo]:
    """The class's `@command` methods (a subclass's override wins), in definition order."""
    found: dict[str, CommandInfo] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            info = getattr(value, "__chatnet_command__", None)
            if info is not None:
                found[info.name] = info
    return found


Bot.commands = _collect_commands(Bot)


def backoff(attempt: int, start: float = BACKOFF_START, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before connection attempt `attempt` (1, 2, ...): exponential,
    capped, with jitter. The exponent is bounded too: a bot retries for as long as the
    server is away, and 2.0 ** 1024 is past what a float holds."""
    return min(cap, start * 2.0 ** min(attempt - 1, 64)) * random.uniform(0.5, 1.0)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def serve(bot: Bot) -> None:
    """Run `bot` until SIGINT or SIGTERM: what a bot's entry script calls."""
    stop = stop_on_signals()
    await bot.run(stop)
    logger.info("%s stopped", bot.name)
