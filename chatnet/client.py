"""The terminal client: text mode over TCP, with /commands, a current target, Tab
completion, local times and reconnection.

    Joined #hiking (3 members, 2 online).              (typed: /join #hiking)
    Talking to #hiking now: plain lines go there (/query alone stops).
    10:05 #hiking <alice> who's in?                    (typed: who's in?)
    10:06 #hiking <bob> me
    10:06 [to carol] are you coming?                   (typed: /msg carol are you coming?)
    10:07 [carol] yes!
    [#hiking]> _

On a terminal the input line is a prompt_toolkit prompt: incoming lines are printed
above it (`patch_stdout`), so a line being typed is never mangled; the prompt shows the
current target (`[#hiking]> `) and Tab completes /commands, !commands, names and rooms.
When stdin is a pipe or a file, lines are read plainly, so scripts and tests can drive
the client; everything but the prompt and completion works the same.

What the server says is shown as it says it, except chat lines: their UTC ISO
timestamps become local times (`10:05`, with the date when it is not today), and stored
mail is marked `[stored]`. What the person sends is shown back, since the server echoes
nothing to a text session.

After a first login the client stays: when the connection breaks (the server restarts,
the network drops) it says so and connects again after 1, 2, 4 … 30 s, logging in again
with the same name and password, until it is back or the person leaves. The session ends
on `/quit` (or `exit`), end of input (Ctrl-D), Ctrl-C or SIGTERM, with exit status 0;
failing to reach the server at the very start, or being closed before any login, is
status 1. Each says so in one line, never with a traceback.

With `tls` it connects to CHAT_TLS_PORT and verifies the server's certificate (against
`cafile`; by default the system's CAs plus DATA_DIR/tls/cert.pem, the launcher's
self-signed one). A registered name makes the server ask `Password:`: the answer is
CHATNET_PASSWORD when set, else typed without echo. The password that logged in is kept
in memory for logging in again (and follows `!register` / `!password`); it is never
shown, logged, or kept in the input history.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import re
import signal
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from chatnet.config import Settings
from chatnet.dialects.text import PASSWORD_PROMPT, PROMPT, SECRET_COMMANDS
from chatnet.protocol import COMMANDS, NAME_RE, QUIT_WORDS, is_room
from chatnet.tls import CERT_FILE, client_context

if TYPE_CHECKING:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

logger = logging.getLogger("chatnet.client")

# The server's question for a name (the text dialect's prompt, as a line read back).
SERVER_PROMPT: Final = PROMPT.rstrip("\n")
SERVER_PASSWORD_PROMPT: Final = PASSWORD_PROMPT.rstrip("\n")
# For scripts: the answer to the first `Password:`, so nothing needs typing.
PASSWORD_VARIABLE: Final = "CHATNET_PASSWORD"
# Server lines can be long (a bot's reply); this only bounds memory.
READ_LIMIT: Final = 1 << 20
# How long to wait for the server's goodbye after we said `exit`.
GOODBYE_WAIT: Final = 2.0
CONNECT_TIMEOUT: Final = 10.0
# Reconnecting: the first wait, doubled after each failure up to the last. A restarted
# server is usually back within a second or two; 30 s keeps a long outage cheap.
RECONNECT_FIRST: Final = 1.0
RECONNECT_MAX: Final = 30.0
# The server's welcome, with the name as it is spelled there.
WELCOME: Final = re.compile(r"Welcome, ([^!\s]+)!")
# What the server says when a guest name is still held by the session that broke.
NAME_TAKEN: Final = "is already online"

# The client's own commands, for /help and Tab; everything else starting with `/` is
# refused locally (a typo must not reach someone as a message).
CLIENT_COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "/join": ("#room", "join a room (it is created if new) and talk there"),
    "/part": ("[#room]", "leave a room (default: the current one); /leave too"),
    "/msg": ("<name|#room> <text>", "send one message, the current target unchanged"),
    "/query": ("[<name|#room>]", "plain lines go there from now on; alone: nowhere"),
    "/who": ("", "who is online"),
    "/rooms": ("", "the rooms there are"),
    "/members": ("[#room]", "a room's members"),
    "/topic": ("[#room] [text]", "show or set a room's topic"),
    "/history": ("[#room] [n]", "a room's last n messages"),
    "/invite": ("[#room] <name>", "invite someone (the room's owner)"),
    "/kick": ("[#room] <name>", "remove someone (the room's owner)"),
    "/check": ("", "stored messages not seen yet"),
    "/help": ("", "this list"),
    "/quit": ("", "leave (so do exit, Ctrl-D and Ctrl-C)"),
}
ALIASES: Final[dict[str, str]] = {"/leave": "/part", "/exit": "/quit"}
SERVER_COMMANDS: Final = tuple(f"!{name}" for name in COMMANDS)

# Chat lines as the text dialect writes them (names and rooms never hold `]`).
_TIME = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)"
ROOM_LINE: Final = re.compile(rf"\[{_TIME}\]\[(#[^\]\s]+)\]\[([^\]]+)\] ?(.*)", re.S)
CHAT_LINE: Final = re.compile(rf"\[{_TIME}\]\[([^\]\s]+)\] ?(.*)", re.S)
STORED_LINE: Final = re.compile(rf"\[Stored\] \[{_TIME}\]\[([^\]]+)\] '(.*)'", re.S)
_ROOM_IN_TEXT: Final = re.compile(r"#[A-Za-z0-9_.-]{1,32}")
_JOINED: Final = re.compile(r"(?:Joined (#\S+) \(|Created (#\S+); you are its owner\.$)")
_LEFT: Final = re.compile(r"(?:Left (#\S+)\.$|\S+ removed you from (#\S+)\.$)")
_CATCHUP: Final = re.compile(r"(#\S+): \d+ new messages? since you were last here:$")
_OFFLINE: Final = re.compile(r"User '([^']+)' is offline\. Message saved\.$")
_NOBODY: Final = re.compile(r"Note: nobody named '([^']+)' has logged in here yet\.$")
_INVITED: Final = re.compile(r"(\S+) invited you to (#\S+);")
_TOPIC_BY: Final = re.compile(r"Topic of (#\S+) set by ([^:]+):")


def local_time(timestamp: str, now: datetime | None = None) -> str:
    """`2026-12-01T10:00:05Z` as a person here reads it: `11:00` (in UTC+1), with the
    date in front when that is not today."""
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return timestamp
    today = (now or datetime.now().astimezone()).date()
    return moment.strftime("%H:%M") if moment.date() == today else moment.strftime("%Y-%m-%d %H:%M")


def now_time() -> str:
    return datetime.now().astimezone().strftime("%H:%M")


def is_name(text: str) -> bool:
    return NAME_RE.fullmatch(text) is not None and bool(text.strip("."))


def is_target(text: str) -> bool:
    """Something a message can go to: a name or a #room."""
    return is_room(text) if text[:1] == "#" else is_name(text)


def secret_line(text: str) -> bool:
    """A typed line carrying a password (`!register …`, `!password …`)."""
    return text.lstrip().split(" ", 1)[0].lower() in SECRET_COMMANDS


def help_lines() -> list[str]:
    return [
        "Client commands (Tab completes them, names and #rooms):",
        *(f"  {f'{name} {args}':<28} {text}" for name, (args, text) in CLIENT_COMMANDS.items()),
        "[#room] means the current room when it is left out. Plain lines go to the current target;",
        "without one write name: text. #room: text always goes to that room, and !commands go to the",
        "server as typed (!help lists them).",
    ]


@dataclass
class Book:
    """What the client knows of the network: who it is, the names and rooms it has
    seen (for Tab), the rooms it is in, and where plain lines go."""

    me: str | None = None
    target: str | None = None
    names: dict[str, str] = field(default_factory=dict)  # lowered → as shown
    rooms: dict[str, str] = field(default_factory=dict)
    joined: set[str] = field(default_factory=set)  # lowered room names

    def name(self, name: str) -> None:
        name = name.strip()
        if is_name(name) and name.lower() != "server":
            self.names[name.lower()] = name

    def room(self, room: str) -> None:
        room = room.strip().rstrip(".,;:")
        if is_room(room):
            self.rooms[room.lower()] = room

    def spelled(self, target: str) -> str:
        """A target as the network spells it, when seen."""
        return (self.rooms if target[:1] == "#" else self.names).get(target.lower(), target)

    def other_names(self) -> list[str]:
        me = (self.me or "").lower()
        return sorted((shown for key, shown in self.names.items() if key != me), key=str.lower)

    def room_names(self) -> list[str]:
        return sorted(self.rooms.values(), key=str.lower)


def render(text: str, book: Book) -> str:
    """A server line as it is shown, noting in `book` the names and rooms it mentions."""
    if match := ROOM_LINE.fullmatch(text):
        when, room, sender, message = match.groups()
        book.room(room)
        book.name(sender)
        return f"{local_time(when)} {book.spelled(room)} <{sender}> {message}"
    if match := STORED_LINE.fullmatch(text):
        when, sender, message = match.groups()
        book.name(sender)
        return f"{local_time(when)} [stored] [{sender}] {message}"
    if match := CHAT_LINE.fullmatch(text):
        when, sender, message = match.groups()
        book.name(sender)
        return f"{local_time(when)} [{sender}] {message}"
    note(text, book)
    return text


def note(text: str, book: Book) -> None:
    """Names and rooms a notice tells of."""
    if text.startswith("Error: "):
        return
    head, _, listed = text.partition("): ")
    if text.startswith("Online (") and listed:
        for entry in listed.split(", "):
            book.name(entry.removesuffix(" (bot)"))
    elif text.startswith("Members of ") and listed:
        book.room(head.removeprefix("Members of ").split(" ", 1)[0])
        for entry in listed.split(", "):
            book.name(entry.removesuffix(" (online)"))
    elif text.startswith("Rooms (") and listed:
        for room in _ROOM_IN_TEXT.findall(listed):
            book.room(room)
    elif match := _JOINED.match(text):
        room = match.group(1) or match.group(2)
        book.room(room)
        book.joined.add(room.lower())
    elif match := _LEFT.match(text):
        book.joined.discard((match.group(1) or match.group(2)).lower())
    elif match := _CATCHUP.match(text):
        book.room(match.group(1))
        book.joined.add(match.group(1).lower())
    elif match := _OFFLINE.match(text):
        book.name(match.group(1))
    elif match := _NOBODY.match(text):
        book.names.pop(match.group(1).lower(), None)
    elif match := _INVITED.match(text):
        book.name(match.group(1))
        book.room(match.group(2))
    elif match := _TOPIC_BY.match(text):
        book.room(match.group(1))
        book.name(match.group(2))


# --- what a typed line means --------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Lines for the server, and what to show for them (None: its answer will say)."""

    lines: tuple[str, ...]
    echo: str | None = None
    join: tuple[str, ...] = ()  # rooms asked to join: the answer makes one current


@dataclass(frozen=True)
class Say:
    """Only for the person: nothing is sent."""

    text: str


@dataclass(frozen=True)
class Target:
    """Where plain lines go from now on (None: nowhere)."""

    target: str | None


@dataclass(frozen=True)
class Leave:
    pass


Action = Send | Say | Target | Leave


def message_to(target: str, text: str, book: Book) -> Send:
    """`text` to a name or a room, and how it is shown here."""
    target = book.spelled(target)
    echo = f"{now_time()} {target} <{book.me or 'you'}> {text}" if target[:1] == "#" else f"{now_time()} [to {target}] {text}"
    return Send((f"{target}: {text}",), echo)


def interpret(line: str, book: Book) -> Action | None:
    """A line typed after login: what to do with it (None: nothing, an empty line)."""
    text = line.strip()
    if not text:
        return None
    if text.lower() in QUIT_WORDS:
        return Leave()
    if text.startswith("/"):
        return command(text, book)
    if text.startswith("!"):
        word = text.split(" ", 1)[0].lower()
        rooms = tuple(text.split()[1:2]) if word == "!join" else ()
        return Send((text,), join=rooms)
    destination, colon, message = text.partition(":")
    destination = destination.strip()
    if colon and is_room(destination) and message.strip():
        return message_to(destination, message.strip(), book)  # a room named always goes there
    if book.target is not None:
        return message_to(book.target, text, book)
    if colon and is_name(destination) and message.strip():
        return message_to(destination, message.strip(), book)
    return Say("Not sent: say to whom. Write name: text, /msg <name|#room> text, or /query <name|#room> to talk to one (/help).")


def command(text: str, book: Book) -> Action:
    word, _, rest = text.partition(" ")
    name = ALIASES.get(word.lower(), word.lower())
    rest = rest.strip()
    room = book.target if book.target is not None and book.target[:1] == "#" else None

    def room_first(usage: str) -> tuple[str, str] | Say:
        """`[#room] rest`: the room given, or the current one."""
        head, _, tail = rest.partition(" ")
        if head[:1] == "#":
            return (head, tail.strip()) if is_room(head) else Say(f"'{head}' is not a room name: # and 1-32 letters, digits, _ . -.")
        if room is None:
            return Say(f"Which room? {usage} (or /query #room first).")
        return room, rest

    if name == "/quit":
        return Leave()
    if name == "/help":
        return Say("\n".join(help_lines()))
    if name == "/join":
        rooms = tuple(each if each[:1] == "#" else f"#{each}" for each in rest.split())
        if not rooms:
            return Say("Write /join #room.")
        bad = [each for each in rooms if not is_room(each)]
        if bad:
            return Say(f"'{bad[0]}' is not a room name: # and 1-32 letters, digits, _ . -.")
        return Send(tuple(f"!join {each}" for each in rooms), join=rooms)
    if name == "/part":
        given = rest.split(" ", 1)[0] if rest else room
        if given is None:
            return Say("Which room? /part #room (or /query #room first).")
        given = given if given[:1] == "#" else f"#{given}"
        if not is_room(given):
            return Say(f"'{given}' is not a room name: # and 1-32 letters, digits, _ . -.")
        return Send((f"!leave {book.spelled(given)}",))
    if name == "/msg":
        target, _, message = rest.partition(" ")
        if not target or not message.strip():
            return Say("Write /msg <name|#room> <text>.")
        if not is_target(target):
            return Say(f"'{target}' is not a name or a #room.")
        return message_to(target, message.strip(), book)
    if name == "/query":
        if not rest:
            return Target(None)
        if not is_target(rest):
            return Say(f"'{rest}' is not a name or a #room.")
        return Target(book.spelled(rest))
    if name in ("/who", "/rooms", "/check"):
        return Send((f"!{name[1:]}",))
    if name == "/members":
        given = rest.split(" ", 1)[0] if rest else room
        if given is None:
            return Say("Which room? /members #room (or /query #room first).")
        return Send((f"!members {book.spelled(given)}",))
    if name in ("/topic", "/history"):
        parsed = room_first(f"{name} #room {'[text]' if name == '/topic' else '[n]'}")
        if isinstance(parsed, Say):
            return parsed
        return Send((f"!{name[1:]} {book.spelled(parsed[0])} {parsed[1]}".rstrip(),))
    if name in ("/invite", "/kick"):
        parsed = room_first(f"{name} #room <name>")
        if isinstance(parsed, Say):
            return parsed
        if not is_name(parsed[1]):
            return Say(f"Write {name} [#room] <name>.")
        return Send((f"!{name[1:]} {book.spelled(parsed[0])} {parsed[1]}",))
    return Say(f"Unknown command {word}; /help lists the client's commands (the server's start with !, !help).")


# --- Tab completion -------------------------------------------------------------------


def completions(before: str, book: Book) -> Iterator[tuple[str, int]]:
    """What Tab offers for the text before the cursor: (replacement, how many characters
    back it starts). At the start of a line a name becomes `name: `, a command `/cmd `."""
    word = before.rsplit(" ", 1)[-1]
    first = " " not in before.lstrip()
    lowered = word.lower()

    def matching(candidates: Iterable[str], suffix: str = "") -> Iterator[tuple[str, int]]:
        for candidate in candidates:
            if candidate.lower().startswith(lowered) and candidate.lower() != lowered + suffix.rstrip():
                yield candidate + suffix, len(word)

    if first and word.startswith("/"):
        yield from matching([*CLIENT_COMMANDS, "/leave"], " ")
    elif first and word.startswith("!"):
        yield from matching(SERVER_COMMANDS, " ")
    elif word.startswith("#"):
        yield from matching(book.room_names(), ": " if first else "")
    elif first:
        yield from matching(book.other_names(), ": ")
    else:
        head = before.split(" ", 1)[0].lower()
        yield from matching(book.other_names())
        if ALIASES.get(head, head) in ("/msg", "/query") and before.count(" ") == 1:
            yield from matching(book.room_names())


# --- consoles -------------------------------------------------------------------------


class Console(Protocol):
    """Where the person is: lines in, lines out."""

    async def read_line(self) -> str | None:
        """The next typed line, or None when the person is done (EOF, Ctrl-C)."""
        ...

    def show(self, text: str) -> None: ...

    def ask_name(self) -> None:
        """The server wants a username: make that clear to the person."""
        ...

    def ask_password(self) -> None:
        """The server wants a password: the next line read is one, so it is not echoed."""
        ...

    def set_prompt(self, text: str) -> None:
        """What the input line starts with from now on (`[#hiking]> `)."""
        ...

    async def close(self) -> None:
        """Done reading: the terminal is given back as it was."""
        ...


class PipeConsole:
    """Plain line reading for pipes and files.

    A daemon thread reads fd 0 with os.read (no buffered-object lock a daemon thread
    could hold at exit) and hands lines to the loop, so any kind of stdin works.
    """

    def __init__(self) -> None:
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        # A terminal's settings while its echo is off for a password (stdin a terminal,
        # stdout not: `async_client.py | tee`); put back after that line, or at exit.
        self._echoing: list[Any] | None = None
        threading.Thread(target=self._pump, name="stdin", daemon=True).start()

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                data = os.read(sys.stdin.fileno(), 65536)
            except OSError:
                data = b""
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._put(line)
        if pending:
            self._put(pending)
        self._loop.call_soon_threadsafe(self._lines.put_nowait, None)

    def _put(self, raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip("\r")
        self._loop.call_soon_threadsafe(self._lines.put_nowait, text)

    async def read_line(self) -> str | None:
        line = await self._lines.get()
        if self._echoing is not None:
            self._echo_on()
            print(flush=True)  # the Enter that was not echoed
        return line

    def show(self, text: str) -> None:
        print(text, flush=True)

    def ask_name(self) -> None:
        self.show(SERVER_PROMPT)

    def ask_password(self) -> None:
        self.show(SERVER_PASSWORD_PROMPT)
        if self._echoing is None and os.isatty(sys.stdin.fileno()):
            import termios

            fd = sys.stdin.fileno()
            self._echoing = termios.tcgetattr(fd)
            quiet = termios.tcgetattr(fd)
            quiet[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSADRAIN, quiet)
            atexit.register(self._echo_on)

    def _echo_on(self) -> None:
        if self._echoing is not None:
            import termios

            with suppress(OSError, termios.error):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._echoing)
            self._echoing = None
            atexit.unregister(self._echo_on)

    def set_prompt(self, text: str) -> None:
        pass  # no prompt on a pipe: /query says where lines go in a line of its own

    async def close(self) -> None:
        pass  # the reading thread is a daemon: it ends with the process


class TerminalConsole:
    """A prompt_toolkit prompt; output printed while it runs goes above the input line.
    The typed line is erased once sent (the client shows what it sent, or the answer
    says); while a password is asked the prompt shows stars; passwords never enter the
    history that the up arrow brings back. Tab completes from `book`."""

    def __init__(self, book: Book) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import Completer, Completion
        from prompt_toolkit.filters import Condition
        from prompt_toolkit.history import InMemoryHistory

        console = self

        class History(InMemoryHistory):
            def append_string(self, string: str) -> None:
                if not console._secret and not secret_line(string):
                    super().append_string(string)

        class BookCompleter(Completer):
            def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
                if console._secret:
                    return
                for text, back in completions(document.text_before_cursor, book):
                    yield Completion(text, start_position=-back, display=text.rstrip(": "))

        self._secret = False
        self._session: PromptSession[str] = PromptSession(
            history=History(),
            is_password=Condition(lambda: self._secret),
            completer=BookCompleter(),
            complete_while_typing=False,
            erase_when_done=True,
            reserve_space_for_menu=4,
        )
        self._prompt = "Username: "
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._prompting: asyncio.Task[None] | None = None

    async def read_line(self) -> str | None:
        if self._prompting is None:
            self._prompting = asyncio.create_task(self._prompt_lines())
        return await self._lines.get()

    async def _prompt_lines(self) -> None:
        """Prompt again as soon as a line is in: between two prompts the terminal is
        back in its cooked mode, where a key typed would be echoed raw (or, Ctrl-D,
        lost), so that gap must not wait for the line to be sent."""
        while True:
            try:
                line = await self._session.prompt_async(lambda: self._prompt)
            except (EOFError, KeyboardInterrupt):
                self._lines.put_nowait(None)
                return
            finally:
                self._secret = False  # one line only; the server's next line sets the prompt
            self._lines.put_nowait(line)

    async def close(self) -> None:
        if self._prompting is not None:
            self._prompting.cancel()
            with suppress(asyncio.CancelledError):
                await self._prompting

    def show(self, text: str) -> None:
        print(text, flush=True)

    def ask_name(self) -> None:
        self.set_prompt("Username: ")

    def ask_password(self) -> None:
        self._secret = True
        self.set_prompt("Password: ")

    def set_prompt(self, text: str) -> None:
        self._prompt = text
        if self._session.app.is_running:
            self._session.app.invalidate()


# --- connections ----------------------------------------------------------------------


class Unreachable(Exception):
    """Connecting failed; the message says why, for the person."""


class Link:
    """One connection to the server, and how far its login got."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str | None, password: str | None, again: bool) -> None:
        self.reader = reader
        self.writer = writer
        self.auto_name = name  # answers the first `Enter username:`, then the person types
        # Answers the first `Password:`; after a refusal the person types one, so a wrong
        # one is never sent again.
        self.auto_password = password
        self.again = again  # logging in again by itself after a break
        self.sent_password: str | None = None  # the answer to this login's `Password:`
        self.logged_in = False
        self.name_taken = False
        self.ended = asyncio.Event()

    async def send(self, text: str) -> None:
        self.writer.write(text.encode() + b"\n")
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with suppress(OSError):
            await self.writer.wait_closed()


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Client:
    """The person's session across connections: typed lines to the server (through
    `interpret`), server lines to the console (through `render`), and a new connection
    whenever one breaks after a login."""

    def __init__(self, console: Console, book: Book, open_link: Callable[[], Awaitable[Streams]], user: str | None, password: str | None) -> None:
        self.console = console
        self.book = book
        self.open_link = open_link  # an awaitable (reader, writer); raises Unreachable
        self.name = user
        self.password = password
        self.link: Link | None = None
        self.ever_logged_in = False
        self.expecting: str | None = None  # "name" or "password": what the person was asked
        self.quitting = False
        self.said_goodbye = False
        self.retry_at = ""  # while disconnected: when the next attempt is, for the prompt
        self.hidden: dict[str, int] = {}  # answers to ask quietly (for Tab) → how many
        self.joining: set[str] = set()  # rooms asked to join: the answer makes one current
        self.new_password: str | None = None  # from a !register / !password in flight

    async def run(self, stop: asyncio.Event) -> int:
        """Until the person leaves (0) or the first connection can't be made or ends
        before a login (1)."""
        typing = asyncio.create_task(self._from_user())
        stopped = asyncio.create_task(stop.wait())
        links = asyncio.create_task(self._links())
        await asyncio.wait({typing, stopped, links}, return_when=asyncio.FIRST_COMPLETED)
        typing.cancel()
        stopped.cancel()
        if links.done():
            return links.result()
        await self._leave(links)
        return 0

    async def _leave(self, links: asyncio.Task[int]) -> None:
        """Tell the server we leave and let its goodbye line through, briefly."""
        self.quitting = True
        link = self.link
        if link is not None:
            try:
                await link.send("exit")
                await asyncio.wait_for(link.ended.wait(), GOODBYE_WAIT)
            except (OSError, TimeoutError):
                pass
        links.cancel()
        with suppress(asyncio.CancelledError):
            await links
        if not self.said_goodbye:
            self.console.show("Goodbye.")
        if link is not None:
            await link.close()

    async def _links(self) -> int:
        delay = RECONNECT_FIRST
        first = True
        while True:
            try:
                reader, writer = await self.open_link()
            except Unreachable as exc:
                if first:
                    self.console.show(str(exc))
                    return 1
                self.console.show(f"{exc}; trying again in {delay:g} s.")
                await self._wait(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            link = Link(reader, writer, self.name, self.password, again=not first)
            if not first:
                self.console.show(f"Connected again; logging in as {self.name}." if self.name else "Connected again.")
            first = False
            self.link = link
            self._update_prompt()
            try:
                await self._read(link)
            finally:
                self.link = None
                self.expecting = None
                link.ended.set()
            await link.close()
            if self.quitting:
                return 0
            if not self.ever_logged_in:
                self.console.show("The server closed the connection.")
                return 1
            if link.logged_in:
                delay = RECONNECT_FIRST
            if link.name_taken:
                self.console.show(f"The name '{self.name}' is still online from the connection that broke; trying again in {delay:g} s.")
            else:
                self.console.show(f"Lost the connection to the chat server; reconnecting in {delay:g} s.")
            await self._wait(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _wait(self, delay: float) -> None:
        self.retry_at = f"reconnecting in {delay:g} s"
        self._update_prompt()
        await asyncio.sleep(delay)
        self.retry_at = "connecting"
        self._update_prompt()

    async def _read(self, link: Link) -> None:
        while not link.name_taken:
            try:
                raw = await link.reader.readline()
            except ValueError:  # a line over READ_LIMIT: skip it, keep the session
                self.console.show("(a line too long to show was skipped)")
                continue
            except OSError:
                return
            if not raw:
                return
            await self._on_server_line(link, raw.decode(errors="replace").rstrip("\r\n"))

    async def _on_server_line(self, link: Link, text: str) -> None:
        if not link.logged_in and await self._on_login_line(link, text):
            return
        if self.quitting and text.startswith("Goodbye"):
            self.said_goodbye = True
        for kind, count in self.hidden.items():
            if count and text.startswith(kind):
                self.hidden[kind] = count - 1
                render(text, self.book)
                return
        self.console.show(render(text, self.book))
        self._after_notice(text)

    async def _on_login_line(self, link: Link, text: str) -> bool:
        """A line before the welcome; True when it is handled (not shown)."""
        if text == SERVER_PROMPT:
            self.expecting = None
            link.sent_password = None  # a new login: a password before it was for another name
            if link.auto_name:
                name, link.auto_name = link.auto_name, None
                await self._log_in(link, name)
            else:
                self.expecting = "name"
                self.console.ask_name()
            return True
        if text == SERVER_PASSWORD_PROMPT:
            if link.auto_password:
                password, link.auto_password = link.auto_password, None
                await self._log_in(link, password, secret=True)
            else:
                self.expecting = "password"
                self.console.ask_password()
            return True
        if link.again and NAME_TAKEN in text:
            link.name_taken = True  # the broken session still holds it: try again later
            return True
        if welcome := WELCOME.match(text):
            link.logged_in = self.ever_logged_in = True
            self.expecting = None
            self.name, self.password = welcome.group(1), link.sent_password  # what logs in again
            self.book.me = self.name
            self.book.name(self.name)
            self.retry_at = ""
            self._update_prompt()
            for kind, ask in (("Online (", "!who"), ("Rooms (", "!rooms")):  # names and rooms for Tab
                self.hidden[kind] = self.hidden.get(kind, 0) + 1
                with suppress(OSError):
                    await link.send(ask)
        return False

    async def _log_in(self, link: Link, answer: str, secret: bool = False) -> None:
        """A name or a password for the server's question."""
        if secret:
            link.sent_password = answer
        with suppress(OSError):
            await link.send(answer)

    def _after_notice(self, text: str) -> None:
        """What a server answer changes here: the current target, the kept password."""
        if match := _JOINED.match(text):
            room = match.group(1) or match.group(2)
            if room.lower() in self.joining:
                self.joining.clear()
                self._set_target(self.book.spelled(room))
        elif match := _LEFT.match(text):
            room = match.group(1) or match.group(2)
            if self.book.target is not None and self.book.target.lower() == room.lower():
                self._set_target(None)
        elif self.new_password is not None and (text.startswith("Account '") and text.endswith("' registered.") or text.startswith("Password changed")):
            self.password, self.new_password = self.new_password, None

    def _set_target(self, target: str | None) -> None:
        self.book.target = target
        self._update_prompt()
        if target is None:
            self.console.show("No current target: write name: text, or /query <name|#room>.")
        else:
            self.console.show(f"Talking to {target} now: plain lines go there (/query alone stops).")

    def _update_prompt(self) -> None:
        if self.link is not None and not self.link.logged_in:
            return  # the login questions set it
        where = f"[{self.book.target}]" if self.book.target else ""
        offline = f"({self.retry_at})" if self.retry_at else ""
        self.console.set_prompt(" ".join(part for part in (where, offline) if part) + "> ")

    async def _from_user(self) -> None:
        while (line := await self.console.read_line()) is not None:
            if self.expecting == "password" and self.link is not None and not self.link.logged_in:
                self.expecting = None
                await self._log_in(self.link, line.strip(), secret=True)
                continue
            text = line.strip()
            if not text:
                continue
            if text.lower() in QUIT_WORDS:
                return
            link = self.link
            if link is None:
                self.console.show(f"Not sent: not connected ({self.retry_at or 'connecting'}); /quit leaves.")
                continue
            if not link.logged_in:
                if link.again and self.expecting is None:  # the client is answering itself
                    self.console.show(f"Not sent: logging in again as {self.name}; a moment.")
                    continue
                self.expecting = None
                await self._log_in(link, text)
                continue
            action = interpret(text, self.book)
            if action is None:
                continue
            if isinstance(action, Leave):
                return
            if isinstance(action, Say):
                self.console.show(action.text)
            elif isinstance(action, Target):
                self._set_target(action.target)
            else:
                await self._send(link, action)

    async def _send(self, link: Link, action: Send) -> None:
        self.joining.update(room.lower() for room in action.join)
        for line in action.lines:
            word, _, args = line.partition(" ")
            if word.lower() == "!register":
                self.new_password = args.strip() or None
            elif word.lower() == "!password":
                self.new_password = args.split()[-1] if len(args.split()) == 2 else None
            try:
                await link.send(line)
            except OSError:
                self.console.show("Not sent: the connection broke.")
                return
        if action.echo is not None:
            self.console.show(action.echo)


# --- connecting -----------------------------------------------------------------------


def default_cafile(settings: Settings) -> Path | None:
    """The launcher's self-signed certificate, DATA_DIR/tls/cert.pem, when it is there."""
    path = settings.data_dir / "tls" / CERT_FILE
    return path if path.is_file() else None


def tls_context(settings: Settings, cafile: Path | None) -> tuple[ssl.SSLContext, str]:
    """The verifying context for `--tls`, and what it trusts (for an error message).
    Raises OSError when `cafile` can't be read."""
    if cafile is not None:
        return client_context(cafile), str(cafile)
    local = default_cafile(settings)
    context = client_context(local)
    if local is None:
        return context, "the system's CAs"
    context.load_default_certs()  # a real certificate verifies as well
    return context, f"the system's CAs and {local}"


def opener(host: str, port: int, context: ssl.SSLContext | None, trusted: str) -> Callable[[], Awaitable[Streams]]:
    """A function that connects, raising Unreachable with the reason in plain words."""

    async def open_link() -> Streams:
        try:
            opened = asyncio.open_connection(host, port, limit=READ_LIMIT, ssl=context)
            return await asyncio.wait_for(opened, CONNECT_TIMEOUT)
        except ssl.SSLCertVerificationError as exc:
            untrusted = f"its certificate is not trusted ({exc.verify_message}; trusted: {trusted}). --cafile names the one to trust."
            raise Unreachable(f"Cannot connect to the chat server at {host}:{port} with TLS: {untrusted}") from None
        except ssl.SSLError as exc:
            raise Unreachable(
                f"Cannot connect to the chat server at {host}:{port} with TLS: the handshake failed ({exc.reason or exc}). Is {port} its TLS port (CHAT_TLS_PORT)?"
            ) from None
        except (OSError, TimeoutError) as exc:
            raise Unreachable(f"Cannot connect to the chat server at {host}:{port}{' with TLS' if context else ''}: {exc.strerror or exc or 'timed out'}") from None

    return open_link


async def run_client(
    settings: Settings,
    user: str | None,
    console: Console | None = None,
    *,
    tls: bool = False,
    cafile: Path | None = None,
    password: str | None = None,
    book: Book | None = None,
) -> int:
    """Connect, chat until done (reconnecting after breaks); the exit code (0 when the
    person left, 1 when the server could not be reached or closed before a login)."""
    console = console or PipeConsole()
    host = settings.chat_host
    port = settings.chat_tls_port if tls else settings.chat_port
    context: ssl.SSLContext | None = None
    trusted = ""
    if tls:
        try:
            context, trusted = tls_context(settings, cafile)
        except OSError as exc:  # ssl.SSLError too: a file that holds no certificate
            console.show(f"Cannot read the certificates in {cafile or default_cafile(settings)}: {exc.strerror or exc}")
            return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        client = Client(console, book or Book(), opener(host, port, context, trusted), user, password)
        return await client.run(stop)
    finally:
        await console.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(settings: Settings, user: str | None, *, tls: bool = False, cafile: Path | None = None) -> int:
    """Run the client on this terminal (or pipe); returns the exit code."""
    password = os.environ.get(PASSWORD_VARIABLE) or None
    if sys.stdin.isatty() and sys.stdout.isatty():
        from prompt_toolkit.patch_stdout import patch_stdout

        async def interactive() -> int:
            book = Book()
            with patch_stdout():
                return await run_client(settings, user, TerminalConsole(book), tls=tls, cafile=cafile, password=password, book=book)

        return asyncio.run(interactive())
    return asyncio.run(run_client(settings, user, tls=tls, cafile=cafile, password=password))
