"""The bot-peer base: parsing, dispatch, replies, limits, acknowledgements — driven
without a network; and its shutdown and acknowledged stored mail, against a chat
server in process (with the real message API over the embedded store for the mail)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import uvicorn

from chatnet.api import create_app
from chatnet.api_client import ApiClient
from chatnet.bot import ACK_DELAY, BACKOFF_CAP, BUSY_IN_ROOM, USER_QUEUE_LIMIT, Bot, Request, backoff, command, split_text
from chatnet.bot_limits import KEYS_BEFORE_SWEEP, Budget, RateLimiter, RoomBudget
from chatnet.config import Settings
from chatnet.limits import ACK_IDS_PER_FRAME, MAX_LINE_BYTES, MAX_MESSAGE_CHARS
from chatnet.message import Message
from chatnet.peer import Peer, encode_frame
from chatnet.protocol import BOT_FEATURE, Event, MessageType, strip_address
from chatnet.server import ChatServer

HOST = "127.0.0.1"
TOKEN = "bot-unit-test-token"
TIMEOUT = 10.0


class EchoBot(Bot):
    """Repeats what you say."""

    @command("echo <text>")
    async def echo(self, req: Request) -> str:
        """Say <text> back."""
        return req.args or "Echo what?"

    @command("boom", args=False)
    async def boom(self, req: Request) -> str:
        """Fail on purpose."""
        raise RuntimeError("kaboom")

    @command("slow <seconds> <word>")
    async def slow(self, req: Request) -> str:
        """Answer after a pause."""
        seconds, _, word = req.args.partition(" ")
        await asyncio.sleep(float(seconds))
        return word

    @command("wait", args=False)
    async def wait(self, req: Request) -> str:
        """Answer once the test lets it."""
        self.waiting.set()
        await self.release.wait()
        return "done waiting"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = asyncio.Event()  # a `wait` handler has started
        self.release = asyncio.Event()  # ... and may finish


def chat(text: str, sender: str = "alice", **metadata: Any) -> Message:
    return Message(sender=sender, destination="echo", message=text, metadata=metadata)


def sent(bot: Bot) -> list[dict[str, Any]]:
    frames = []
    while not bot.outbox.empty():
        frames.append(bot.outbox.get_nowait())
    return frames


def acked(bot: Bot) -> list[str]:
    """The ids the bot has acknowledged since the last look, in order."""
    frames = bot.take_acks()
    assert all(frame["type"] == "ack" and set(frame) == {"type", "ids"} for frame in frames)
    return [id for frame in frames for id in frame["ids"]]


async def ask(bot: Bot, text: str, sender: str = "alice") -> list[str]:
    await bot.receive(chat(text, sender))
    await bot.drain()
    return [frame["message"] for frame in sent(bot)]


@pytest.fixture
def bot() -> EchoBot:
    return EchoBot(Settings(_env_file=None), name="echo")


async def test_command_reply_goes_to_the_sender(bot: EchoBot) -> None:
    """A command's answer is sent back to whoever asked, marked as a bot reply to that message."""
    message = chat("echo hello world", "bob")
    await bot.receive(message)
    await bot.drain()
    [frame] = sent(bot)
    assert frame["destination"] == "bob" and frame["message"] == "hello world" and frame["type"] == "chat"
    assert frame["metadata"] == {"reply_to": message.id, "bot": "echo"}


async def test_command_word_is_case_insensitive(bot: EchoBot) -> None:
    """`ECHO hi` works like `echo hi`."""
    assert await ask(bot, "ECHO hi") == ["hi"]


async def test_help_is_built_from_the_handlers(bot: EchoBot) -> None:
    """help lists every command with its usage and docstring."""
    [text] = await ask(bot, "help")
    assert "Repeats what you say." in text
    for line in ("echo <text>", "Say <text> back.", "boom", "Fail on purpose.", "help", "Show the commands."):
        assert line in text


async def test_unknown_command_gets_a_polite_hint(bot: EchoBot) -> None:
    """An unknown first word is answered with a pointer to help."""
    assert await ask(bot, "dance now") == ["Unknown command 'dance'. Try 'help'."]


async def test_argless_command_ignores_extra_words(bot: EchoBot) -> None:
    """In a bot without its own default handler, `help please` is still help."""
    [text] = await ask(bot, "help please")
    assert "Say <text> back." in text


async def test_argless_command_with_arguments_goes_to_own_default() -> None:
    """In a bot with its own default handler, `help me write` is free text, not the command."""

    class Chatty(EchoBot):
        async def default(self, req: Request) -> str:
            return f"chat: {req.text}"

    bot = Chatty(Settings(_env_file=None), name="chatty")
    assert await ask(bot, "help me write") == ["chat: help me write"]
    assert "Show the commands." in (await ask(bot, "help"))[0]


async def test_handler_exception_becomes_polite_reply_and_bot_goes_on(bot: EchoBot) -> None:
    """A failing handler yields an apology; the next message is served normally."""
    [apology] = await ask(bot, "boom")
    assert apology.startswith("Sorry, something went wrong")
    assert "kaboom" not in apology
    assert await ask(bot, "echo still here") == ["still here"]


@pytest.mark.parametrize(
    "message",
    [
        Message(sender="echo", destination="echo", message="echo loop"),
        Message(sender="server", destination="echo", message="echo x", type=MessageType.NOTIFICATION),
        Message(sender="server", destination="echo", message="echo x", type=MessageType.ERROR),
        Message(sender="thermo", destination="echo", message="echo 21.0", type=MessageType.SUBSCRIPTION),
        Message(sender="otherbot", destination="echo", message="echo hi", metadata={"bot": "otherbot"}),
        Message(sender="otherbot", destination="echo", message="echo hi", metadata={"stream": {"id": "s", "seq": 0, "done": False}}),
    ],
    ids=["itself", "notification", "error", "subscription", "another-bot", "stream-chunk"],
)
async def test_frames_that_are_not_a_persons_chat_are_ignored(bot: EchoBot, message: Message) -> None:
    """Own frames, server notices, broadcasts and other bots' replies never get an answer."""
    await bot.receive(message)
    await bot.drain()
    assert sent(bot) == []


async def test_long_reply_is_split_into_messages(bot: EchoBot) -> None:
    """A reply over the message limit arrives as several messages, none over the limit."""
    text = " ".join(["word"] * 900)  # 4499 characters
    bot.reply(Request.parse(chat("x")), text)
    pieces = [frame["message"] for frame in sent(bot)]
    assert len(pieces) == 3
    assert all(len(piece) <= MAX_MESSAGE_CHARS for piece in pieces)
    assert " ".join(pieces) == text


async def test_users_are_served_concurrently_each_in_order(bot: EchoBot) -> None:
    """A slow request of one user doesn't hold up another; one user's answers keep their order."""
    await bot.receive(chat("slow 0.3 first", "alice"))
    await bot.receive(chat("slow 0 second", "alice"))
    await bot.receive(chat("slow 0 quick", "bob"))
    await bot.drain()
    order = [(frame["destination"], frame["message"]) for frame in sent(bot)]
    assert order == [("bob", "quick"), ("alice", "first"), ("alice", "second")]


async def test_allow_list_refuses_others_politely() -> None:
    """With an allow-list, other users get a refusal and their command is not run."""
    bot = EchoBot(Settings(_env_file=None), name="echo", allow=["alice"])
    assert await ask(bot, "echo hi", "alice") == ["hi"]
    [refusal] = await ask(bot, "echo hi", "mallory")
    assert "only talks to its allowed users" in refusal


async def test_allow_list_ignores_case() -> None:
    """Names on the allow-list match in any case, as chat names do."""
    bot = EchoBot(Settings(_env_file=None), name="echo", allow=["Alice"])
    assert await ask(bot, "echo hi", "alice") == ["hi"] and await ask(bot, "echo hi", "ALICE") == ["hi"]


class StoppableBot(EchoBot):
    @command("cancel", args=False, immediate=True)
    async def cancel(self, req: Request) -> str:
        """Let the waiting handler go."""
        self.release.set()
        return "released"


async def test_an_immediate_command_is_not_queued_behind_the_users_request() -> None:
    """An immediate command runs while the same user's earlier request is still being handled (else `stop` would wait for what it stops)."""
    bot = StoppableBot(Settings(_env_file=None), name="echo")
    await bot.receive(chat("wait"))
    await asyncio.wait_for(bot.waiting.wait(), TIMEOUT)
    await bot.receive(chat("cancel"))
    await asyncio.wait_for(bot.drain(), TIMEOUT)
    assert [frame["message"] for frame in sent(bot)] == ["released", "done waiting"]


async def test_rate_limit_says_slow_down() -> None:
    """Past the per-user limit the bot answers 'slow down' instead; other users are unaffected."""
    bot = EchoBot(Settings(_env_file=None), name="echo", rate_limit=RateLimiter(3, 60.0))
    answers = [await ask(bot, f"echo {i}") for i in range(4)]
    assert answers[:3] == [["0"], ["1"], ["2"]]
    assert answers[3][0].startswith("Slow down")
    assert await ask(bot, "echo mine", "bob") == ["mine"]


def test_rate_limiter_window_slides() -> None:
    """Events older than the window stop counting."""
    now = [0.0]
    limiter = RateLimiter(2, 10.0, clock=lambda: now[0])
    assert limiter.allow("a") and limiter.allow("a") and not limiter.allow("a")
    now[0] = 10.5
    assert limiter.allow("a")


def test_backoff_grows_is_capped_and_jittered() -> None:
    """Waits double per attempt up to the cap, each scaled by a random factor in [0.5, 1]."""
    for attempt in range(1, 20):
        top = min(BACKOFF_CAP, 0.5 * 2 ** (attempt - 1))
        assert all(top * 0.5 <= backoff(attempt) <= top for _ in range(20))
    assert len({backoff(10) for _ in range(20)}) > 1
    assert BACKOFF_CAP * 0.5 <= backoff(5000) <= BACKOFF_CAP  # hours of outage later


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, ["short"]),
        ("", 10, [""]),
        ("aaaa bbbb cccc", 10, ["aaaa bbbb", "cccc"]),
        ("line one\nline two", 12, ["line one", "line two"]),
        ("x" * 25, 10, ["x" * 10, "x" * 10, "x" * 5]),
    ],
)
def test_split_text(text: str, limit: int, expected: list[str]) -> None:
    """Long text is cut at line or word breaks when possible, hard otherwise."""
    assert split_text(text, limit) == expected


def test_request_reads_sender_features() -> None:
    """The server-provided sender_features become the request's features."""
    req = Request.parse(chat("  Echo   a b  ", sender_features=["stream"]))
    assert (req.command, req.args, req.features) == ("echo", "a b", frozenset({"stream"}))


class HoldingBot(Bot):
    """Holds every request until told to stop."""

    def __init__(self, settings: Settings, stop: asyncio.Event) -> None:
        super().__init__(settings, name="holder")
        self.stop = stop
        self.holding = asyncio.Event()

    @command("hold", args=False)
    async def hold(self, req: Request) -> str:
        """Answer a while after the bot was told to stop."""
        self.holding.set()
        await self.stop.wait()
        await asyncio.sleep(0.1)  # the rest of the work: the connection would be closed by now
        return "finished"


async def test_stopping_finishes_the_requests_under_way() -> None:
    """A bot told to stop takes no new messages, but finishes the one it is handling and
    sends the answer before it leaves."""
    with socket.socket() as no_api:  # bound, not listening: the message API is away
        no_api.bind(("127.0.0.1", 0))
        settings = Settings(_env_file=None, chat_host="127.0.0.1", chat_port=0, irc=False, api_port=no_api.getsockname()[1])
        async with ApiClient.from_settings(settings) as api:
            server = ChatServer(settings, api)
            # With no API, the server lets nobody in unchecked until it has learned which
            # names are accounts; here none are.
            server.router.identity.loaded = True
            await server.start()
            try:
                settings = replace(settings, chat_port=server.port)
                stop = asyncio.Event()
                bot = HoldingBot(settings, stop)
                running = asyncio.create_task(bot.run(stop))
                alice = await Peer.connect("127.0.0.1", server.port, "alice")
                async with asyncio.timeout(10):
                    await bot.connected.wait()
                    await alice.send("holder", "hold")
                    await bot.holding.wait()
                    stop.set()
                    while (message := await alice.recv()) is not None and message.type != MessageType.CHAT:
                        pass
                    await running
                assert message is not None and (message.sender, message.message) == ("holder", "finished")
                await alice.close()
            finally:
                await server.stop()


class SettlingBot(EchoBot):
    """An echo bot whose login setup waits until the test lets it finish."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, name="settler")
        self.gate = asyncio.Event()
        self.events: list[str] = []

    async def on_connected(self) -> None:
        await self.gate.wait()
        self.events.append("settled")

    async def handle(self, message: Message) -> None:
        self.events.append(f"handled {message.message}")
        await super().handle(message)


async def test_requests_wait_for_the_logins_own_setup() -> None:
    """A request that arrives while `on_connected` is still running (a thermometer's
    subscriptions being loaded) is answered after it, not from a half-set-up bot."""
    with socket.socket() as no_api:  # bound, not listening: the message API is away
        no_api.bind(("127.0.0.1", 0))
        settings = Settings(_env_file=None, chat_host="127.0.0.1", chat_port=0, irc=False, api_port=no_api.getsockname()[1])
        async with ApiClient.from_settings(settings) as api:
            server = ChatServer(settings, api)
            server.router.identity.loaded = True  # no accounts (see the test above)
            await server.start()
            try:
                stop = asyncio.Event()
                bot = SettlingBot(replace(settings, chat_port=server.port))
                running = asyncio.create_task(bot.run(stop))
                alice = await Peer.connect("127.0.0.1", server.port, "alice")
                async with asyncio.timeout(TIMEOUT):
                    while server.router.directory.sessions("settler") == []:
                        await asyncio.sleep(0.01)
                    await alice.send("settler", "echo early")
                    while not bot._seen:  # the bot has it (being handled or waiting)
                        await asyncio.sleep(0.01)
                    bot.gate.set()
                    while (message := await alice.recv()) is not None and message.type != MessageType.CHAT:
                        pass
                assert message is not None and message.message == "early"
                assert bot.events == ["settled", "handled echo early"]
                stop.set()
                await running
                await alice.close()
            finally:
                await server.stop()


# --- rooms -------------------------------------------------------------------------------


def in_room(text: str, sender: str = "alice", room: str = "#hiking", **metadata: Any) -> Message:
    return Message(sender=sender, destination=room, message=text, metadata=metadata)


def notice(event: Event, **metadata: Any) -> Message:
    return Message(sender="server", destination="echo", message=str(event), type=MessageType.NOTIFICATION, metadata={"event": event, **metadata})


async def room_answers(bot: Bot, *messages: Message) -> list[tuple[str, str]]:
    for message in messages:
        await bot.receive(message)
    await bot.drain()
    return [(frame["destination"], frame["message"]) for frame in sent(bot)]


@pytest.mark.parametrize(
    ("text", "rest"),
    [
        ("@echo echo hi", "echo hi"),
        ("@ECHO: echo hi", "echo hi"),
        ("@echo, echo hi", "echo hi"),
        ("@echo:echo hi", "echo hi"),
        ("Echo: echo hi", "echo hi"),
        ("@echo", ""),
        ("  @echo   help  ", "help"),
        ("@echoes hi", None),
        ("echo hi", None),
        ("echo, hi", None),
        ("hi @echo", None),
        ("@ec hi", None),
    ],
)
def test_strip_address(text: str, rest: str | None) -> None:
    """`@bot`, `@bot:`, `@bot,` and `bot:` (any case) address the bot and are stripped; nothing else does."""
    assert strip_address("echo", text) == rest


def test_request_in_a_room_knows_its_room_and_body() -> None:
    """A room request's command is the first word after the address; it answers to the room, addressed to the sender."""
    req = Request.parse(in_room("@echo Echo a b", "bob"), "echo")
    assert (req.room, req.command, req.args, req.text) == ("#hiking", "echo", "a b", "Echo a b")
    assert (req.answer_to, req.lead, req.conversation) == ("#hiking", "bob: ", "#hiking")
    direct = Request.parse(chat("echo a"), "echo")
    assert (direct.room, direct.answer_to, direct.lead, direct.conversation) == (None, "alice", "", "alice")


async def test_a_room_message_addressed_to_the_bot_is_answered_in_the_room(bot: EchoBot) -> None:
    """`@echo echo hi` in a room: handled like a direct message, answered in the room to the asker."""
    message = in_room("@echo echo hi there", "bob")
    await bot.receive(message)
    await bot.drain()
    [frame] = sent(bot)
    assert (frame["destination"], frame["message"], frame["type"]) == ("#hiking", "bob: hi there", "chat")
    assert frame["metadata"] == {"reply_to": message.id, "bot": "echo"}
    assert acked(bot) == [message.id]


async def test_commands_work_in_a_room_with_any_address_form(bot: EchoBot) -> None:
    """help, unknown commands and every address form behave in a room as in a direct message."""
    [(where, text)] = await room_answers(bot, in_room("echo: help"))
    assert where == "#hiking" and text.startswith("alice: echo") and "Say <text> back." in text
    assert await room_answers(bot, in_room("@Echo, dance")) == [("#hiking", "alice: Unknown command 'dance'. Try 'help'.")]
    assert await room_answers(bot, in_room("@echo")) == [("#hiking", "alice: Say something: try 'help'.")]


async def test_a_room_message_not_addressed_to_the_bot_is_acknowledged_unanswered(bot: EchoBot) -> None:
    """The catch-up at login hands a bot the room's every message: what is not for it gets no answer."""
    messages = [in_room("echo hi"), in_room("hello @echo"), in_room("@echoes echo hi")]
    assert await room_answers(bot, *messages) == []
    assert acked(bot) == [m.id for m in messages]


@pytest.mark.parametrize(
    "message",
    [
        in_room("@echo echo hi", "otherbot", bot="otherbot"),
        in_room("@echo echo hi", "otherbot", sender_features=[BOT_FEATURE]),
        in_room("@echo echo hi", "otherbot", stream={"id": "s", "seq": 0, "done": False}),
        in_room("@echo echo hi", "echo"),
    ],
    ids=["metadata-bot", "sender-features-bot", "stream-chunk", "itself"],
)
async def test_a_bots_room_message_is_never_answered(bot: EchoBot, message: Message) -> None:
    """Another bot's room message gets no answer, even addressed to this bot (no bot-to-bot storms)."""
    assert await room_answers(bot, message) == []
    assert acked(bot) == [message.id]


async def test_names_presence_and_the_welcome_call_bots_are_never_answered(bot: EchoBot) -> None:
    """A sender that presence or the welcome said is a bot is ignored, in a room and directly."""
    bot.learn_welcome(notice(Event.WELCOME, bots=["Thermo", "echo"], online=["alice", "Thermo", "echo"]))
    await bot.receive(notice(Event.PRESENCE, user="openai", presence="online", bot=True))
    await bot.receive(notice(Event.PRESENCE, user="carol", presence="online", bot=False))
    assert bot.known_bots == {"thermo", "openai"}
    assert await room_answers(bot, in_room("@echo echo hi", "thermo"), in_room("@echo echo hi", "OpenAI"), chat("echo hi", "openai")) == []
    assert await room_answers(bot, in_room("@echo echo hi", "carol")) == [("#hiking", "carol: hi")]


async def test_the_bots_login_says_it_is_a_bot() -> None:
    """Every bot announces the `bot` feature, so whoever gets its messages can tell."""
    captured: dict[str, Any] = {}

    async def fake_connect(host: str, port: int, user: str, **kwargs: Any) -> Peer:
        captured.update(kwargs)
        raise OSError("no server here")

    bot = EchoBot(Settings(_env_file=None), name="echo")
    stop = asyncio.Event()
    original = Peer.connect
    Peer.connect = fake_connect  # type: ignore[method-assign]
    try:
        running = asyncio.create_task(bot.run(stop))
        async with asyncio.timeout(TIMEOUT):
            while not captured:
                await asyncio.sleep(0.01)
        stop.set()
        await running
    finally:
        Peer.connect = original  # type: ignore[method-assign]
    assert {BOT_FEATURE, "ack"} <= set(captured["features"])


async def test_an_invitation_makes_the_bot_join_and_say_hello_once(bot: EchoBot) -> None:
    """`invited` → `!join #room`; its `joined` → one hello in the room; a repeated `joined` says nothing."""
    await bot.receive(notice(Event.INVITED, room="#hiking", user="echo", by="alice"))
    assert sent(bot) == [{"type": "command", "message": "!join #hiking"}]
    await bot.receive(notice(Event.JOINED, room="#hiking", created=False, members=3, online=2, topic=""))
    [hello] = sent(bot)
    assert hello["destination"] == "#hiking" and hello["type"] == "chat" and "@echo help" in hello["message"]
    await bot.receive(notice(Event.JOINED, room="#hiking", created=False, members=3, online=2, topic=""))
    assert sent(bot) == []
    assert acked(bot) == []  # notices are never acknowledged


async def test_an_invitation_for_someone_else_is_not_taken(bot: EchoBot) -> None:
    """The inviter's copy of an invitation (another user's) makes the bot do nothing."""
    await bot.receive(notice(Event.INVITED, room="#hiking", user="bob", by="echo"))
    await bot.receive(notice(Event.INVITED, room="not-a-room", user="echo", by="alice"))
    assert sent(bot) == []


async def test_kicked_then_invited_again_the_bot_comes_back(bot: EchoBot) -> None:
    """A `left` notice (kicked) puts the bot out; a later invitation brings it back, with a hello."""
    left: list[tuple[str, str | None]] = []
    bot.on_left = lambda room, by: left.append((room, by))  # type: ignore[method-assign]
    await bot.receive(notice(Event.INVITED, room="#hiking", user="echo", by="alice"))
    await bot.receive(notice(Event.LEFT, room="#hiking", by="alice"))  # kicked before the join was answered
    assert left == [("#hiking", "alice")]
    await bot.receive(notice(Event.JOINED, room="#hiking"))
    assert [f["type"] for f in sent(bot)] == ["command"]  # no hello: that invitation was taken back
    await bot.receive(notice(Event.INVITED, room="#Hiking", user="ECHO", by="alice"))
    await bot.receive(notice(Event.JOINED, room="#Hiking"))
    assert [(f["type"], f.get("destination")) for f in sent(bot)] == [("command", None), ("chat", "#Hiking")]


def test_room_budget_replies_then_says_busy_once_a_window() -> None:
    """N replies a window per room; past it one BUSY, then QUIET until the window has passed; rooms apart."""
    now = [0.0]
    budget = RoomBudget(2, 60.0, clock=lambda: now[0])
    assert [budget.take("#a") for _ in range(4)] == [Budget.REPLY, Budget.REPLY, Budget.BUSY, Budget.QUIET]
    assert budget.take("#b") is Budget.REPLY
    assert budget.take("#A") is Budget.QUIET  # rooms are case-insensitive
    now[0] = 30.0
    assert budget.take("#a") is Budget.QUIET
    now[0] = 60.5
    assert [budget.take("#a") for _ in range(4)] == [Budget.REPLY, Budget.REPLY, Budget.BUSY, Budget.QUIET]


async def test_past_the_room_budget_one_busy_line_then_silence() -> None:
    """Over its reply budget a bot says "busy" in the room once, then nothing; other rooms and direct messages go on."""
    bot = EchoBot(Settings(_env_file=None), name="echo", room_budget=RoomBudget(2, 60.0), rate_limit=RateLimiter(20, 60.0))
    messages = [in_room(f"@echo echo {i}", "bob" if i % 2 else "alice") for i in range(5)]
    assert await room_answers(bot, *messages) == [
        ("#hiking", f"alice: {BUSY_IN_ROOM}"),  # said at once, while the answers are being worked on
        ("#hiking", "alice: 0"),
        ("#hiking", "bob: 1"),
    ]
    assert acked(bot) == [messages[2].id, messages[3].id, messages[4].id, messages[0].id, messages[1].id]
    assert await room_answers(bot, in_room("@echo echo there", room="#other"), chat("echo direct")) == [
        ("#other", "alice: there"),
        ("alice", "direct"),
    ]


async def test_a_rooms_requests_go_in_order_apart_from_the_askers_direct_messages(bot: EchoBot) -> None:
    """A slow request in a room holds up that room only: the asker's direct message is answered first."""
    answers = await room_answers(bot, in_room("@echo slow 0.3 first"), in_room("@echo slow 0 second", "bob"), chat("slow 0 direct"))
    assert answers == [("alice", "direct"), ("#hiking", "alice: first"), ("#hiking", "bob: second")]


async def test_a_long_answer_in_a_room_is_split_each_piece_addressed(bot: EchoBot) -> None:
    """Each piece of a long room answer starts with the asker's name and fits a message."""
    text = " ".join(["word"] * 900)
    bot.reply(Request.parse(in_room("@echo x", "bob"), "echo"), text)
    pieces = [frame["message"] for frame in sent(bot)]
    assert len(pieces) >= 3 and all(p.startswith("bob: ") and len(p) <= MAX_MESSAGE_CHARS for p in pieces)
    assert " ".join(p.removeprefix("bob: ") for p in pieces) == text


async def test_a_failing_handler_in_a_room_apologizes_in_the_room(bot: EchoBot) -> None:
    """A handler's exception on a room request becomes the apology, in that room."""
    [(where, text)] = await room_answers(bot, in_room("@echo boom"))
    assert where == "#hiking" and text.startswith("alice: Sorry, something went wrong")


# --- acknowledgements ----------------------------------------------------------------


async def test_a_message_is_acknowledged_after_it_was_answered_not_before(bot: EchoBot) -> None:
    """Nothing is acknowledged while the handler runs; after it returned, the answer is queued, then the ack."""
    message = chat("wait")
    await bot.receive(message)
    async with asyncio.timeout(TIMEOUT):
        await bot.waiting.wait()
    assert acked(bot) == [] and sent(bot) == []
    bot.release.set()
    await bot.drain()
    [answer] = sent(bot)
    assert answer["message"] == "done waiting"
    assert acked(bot) == [message.id]
    assert acked(bot) == []  # taken once


async def test_a_handler_that_raised_is_acknowledged_with_its_apology(bot: EchoBot) -> None:
    """A handler's exception ends in an apology and an ack, so failing mail doesn't return at every login."""
    message = chat("boom")
    await bot.receive(message)
    await bot.drain()
    [apology] = sent(bot)
    assert apology["message"].startswith("Sorry, something went wrong")
    assert acked(bot) == [message.id]


async def test_a_handler_cut_off_mid_way_is_not_acknowledged(bot: EchoBot) -> None:
    """A handler cancelled mid-way (a crash, a kill) leaves its message unacknowledged."""
    message = chat("wait")
    await bot.receive(message)
    draining = asyncio.create_task(bot.drain())
    async with asyncio.timeout(TIMEOUT):
        await bot.waiting.wait()
    draining.cancel()  # cancels the gather, and with it the worker, mid-handler
    await asyncio.gather(draining, return_exceptions=True)
    bot.release.set()
    assert sent(bot) == [] and acked(bot) == []


async def test_frames_the_bot_does_not_answer_are_acknowledged_notices_are_not(bot: EchoBot) -> None:
    """Broadcasts, bots' replies, stream chunks and own frames are acked at once; server notices never."""
    done = [
        Message(sender="thermo", destination="echo", message="21.0", type=MessageType.SUBSCRIPTION),
        Message(sender="otherbot", destination="echo", message="echo hi", metadata={"bot": "otherbot"}),
        Message(sender="otherbot", destination="echo", message="ec", metadata={"stream": {"id": "s", "seq": 0, "done": False}}),
        Message(sender="echo", destination="echo", message="echo loop"),
    ]
    notices = [
        Message(sender="server", destination="echo", message="Welcome", type=MessageType.NOTIFICATION, metadata={"event": Event.WELCOME}),
        Message(sender="server", destination="echo", message="Bad", type=MessageType.ERROR, metadata={"event": Event.BAD_INPUT}),
    ]
    for message in done + notices:
        await bot.receive(message)
    await bot.drain()
    assert sent(bot) == []
    assert acked(bot) == [message.id for message in done]


async def test_refused_messages_are_acknowledged_with_their_refusal() -> None:
    """Not allowed, rate-limited or busy: the refusal is the answer, and the message is acked after it."""
    bot = EchoBot(Settings(_env_file=None), name="echo", allow=["alice", "bob"], rate_limit=RateLimiter(USER_QUEUE_LIMIT + 2, 60.0))
    stranger = chat("echo hi", "mallory")
    await bot.receive(stranger)
    assert acked(bot) == [stranger.id]
    held = chat("wait", "bob")
    await bot.receive(held)  # bob's worker is busy with this one ...
    async with asyncio.timeout(TIMEOUT):
        await bot.waiting.wait()
    queued = [chat(f"echo {i}", "bob") for i in range(USER_QUEUE_LIMIT)]
    for message in queued:
        await bot.receive(message)
    busy = chat("echo one too many", "bob")
    await bot.receive(busy)  # ... with a full queue behind it
    assert acked(bot) == [busy.id]
    over = chat("echo over the limit", "bob")
    await bot.receive(over)
    assert acked(bot) == [over.id]
    bot.release.set()
    await bot.drain()
    assert acked(bot) == [held.id, *(message.id for message in queued)]
    answers = [frame["message"] for frame in sent(bot)]
    assert "only talks to its allowed users" in answers[0] and "still working" in answers[1] and answers[2].startswith("Slow down")


async def test_a_repeat_is_not_handled_again_and_is_acknowledged_again(bot: EchoBot) -> None:
    """A repeat (same id) is never handled twice: acked again if done, once when done if still in hand."""
    message = chat("echo once")
    await bot.receive(message)
    await bot.drain()
    assert [frame["message"] for frame in sent(bot)] == ["once"] and acked(bot) == [message.id]
    await bot.receive(message.model_copy(update={"metadata": {"stored": True}}))
    await bot.drain()
    assert sent(bot) == [] and acked(bot) == [message.id]

    slow = chat("wait")
    await bot.receive(slow)
    await bot.receive(slow)
    async with asyncio.timeout(TIMEOUT):
        await bot.waiting.wait()
    assert acked(bot) == []
    bot.release.set()
    await bot.drain()
    assert [frame["message"] for frame in sent(bot)] == ["done waiting"] and acked(bot) == [slow.id]


async def test_acks_are_batched_in_frames_that_fit_a_line(bot: EchoBot) -> None:
    """Acks share frames of at most ACK_IDS_PER_FRAME ids, each within the server's line limit."""
    messages = [Message(id=f"{i:064d}", sender="thermo", destination="echo", message="1", type=MessageType.SUBSCRIPTION) for i in range(250)]
    for message in messages:
        await bot.receive(message)
    frames = bot.take_acks()
    assert [len(frame["ids"]) for frame in frames] == [ACK_IDS_PER_FRAME, ACK_IDS_PER_FRAME, 50]
    assert [id for frame in frames for id in frame["ids"]] == [message.id for message in messages]
    assert all(len(encode_frame(frame)) <= MAX_LINE_BYTES for frame in frames)


# --- acknowledged stored mail, with a chat server and the message API -------------------


@pytest.fixture
async def network(store_url: str) -> AsyncIterator[Settings]:
    """The message API (in process, over the embedded store) and a chat server; settings that reach both."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen()  # connections wait in the backlog until uvicorn has started
    settings = Settings(
        _env_file=None, chat_host=HOST, chat_port=0, irc=False, api_host=HOST, api_port=sock.getsockname()[1], api_token=TOKEN,
        mongo_url=store_url, mongo_db=f"b{uuid.uuid4().hex[:12]}",
    )  # fmt: skip
    api_server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    serving = asyncio.create_task(api_server.serve(sockets=[sock]))
    try:
        async with ApiClient.from_settings(settings) as api:
            server = ChatServer(settings, api)
            await server.start()
            try:
                yield replace(settings, chat_port=server.port)
            finally:
                await server.stop()
    finally:
        api_server.should_exit = True
        await serving
        sock.close()


async def pending_ids(settings: Settings, user: str) -> list[str]:
    async with ApiClient.from_settings(settings) as api:
        messages, _ = await api.pending(user)
        return [message["id"] for message in messages]


async def until_pending(settings: Settings, user: str, wanted: list[str]) -> None:
    """Wait (to a deadline) until `user`'s pending mail is `wanted`: the server
    acknowledges to the API after the client acknowledged, off the client's path."""
    async with asyncio.timeout(TIMEOUT):
        while (found := await pending_ids(settings, user)) != wanted:
            await asyncio.sleep(ACK_DELAY)
    assert found == wanted


async def test_stored_mail_is_answered_then_acknowledged_and_stays_handled(network: Settings) -> None:
    """Stored mail is answered and acknowledged at the bot's login, so its next login finds none."""
    settings = network
    mail = [Message(sender="alice", destination="echo", message=f"echo note {i}") for i in range(3)]
    async with ApiClient.from_settings(settings) as api:
        await api.store_mail(mail)
    alice = await Peer.connect(HOST, settings.chat_port, "alice")
    stop = asyncio.Event()
    running = asyncio.create_task(EchoBot(settings, name="echo").run(stop))
    try:
        answers: list[str] = []
        async with asyncio.timeout(TIMEOUT):
            while len(answers) < 3 and (message := await alice.recv()) is not None:
                if message.type == MessageType.CHAT:
                    answers.append(message.message)
        assert answers == ["note 0", "note 1", "note 2"]
        await until_pending(settings, "echo", [])
    finally:
        stop.set()
        await running
        await alice.close()
    again = await Peer.connect(HOST, settings.chat_port, "echo", service_token=TOKEN, features={"ack"})
    assert again.welcome is not None and again.welcome.metadata["pending"] == 0
    await again.close()


async def test_mail_a_bot_crashed_on_comes_again(network: Settings) -> None:
    """Stored mail a bot died while handling comes again at the next login, under the same id."""
    settings = network
    [mail] = [Message(sender="alice", destination="echo", message="wait")]
    async with ApiClient.from_settings(settings) as api:
        await api.store_mail([mail])
    bot = EchoBot(settings, name="echo")
    running = asyncio.create_task(bot.run())
    async with asyncio.timeout(TIMEOUT):
        await bot.waiting.wait()
    running.cancel()  # the crash: nothing after this point runs
    await asyncio.gather(running, return_exceptions=True)
    again = await Peer.connect(HOST, settings.chat_port, "echo", service_token=TOKEN, features={"ack"})
    try:
        assert again.welcome is not None and again.welcome.metadata["pending"] == 1
        async with asyncio.timeout(TIMEOUT):
            while (message := await again.recv()) is not None and message.type != MessageType.CHAT:
                pass
        assert message is not None and (message.id, message.metadata.get("stored")) == (mail.id, True)
    finally:
        await again.close()


def test_a_rate_limiter_forgets_the_idle_keys() -> None:
    """Every user ever seen must not cost memory for ever: past KEYS_BEFORE_SWEEP keys the idle ones go, the limits hold."""
    now = [0.0]
    limiter = RateLimiter(1, window=10.0, clock=lambda: now[0])
    for i in range(KEYS_BEFORE_SWEEP - 1):
        assert limiter.allow(f"u{i}")
    assert not limiter.allow("u0")  # limited within its window
    now[0] = 11.0
    for i in range(KEYS_BEFORE_SWEEP, 2 * KEYS_BEFORE_SWEEP):  # the map doubles: the next sweep is due
        limiter.allow(f"u{i}")
    assert limiter.allow("fresh")  # the keys idle since t=0 went at a sweep; the recent ones are kept
    assert len(limiter._events) == KEYS_BEFORE_SWEEP + 1
    assert limiter.allow("u0")  # forgotten, so allowed again (its window was over anyway)
