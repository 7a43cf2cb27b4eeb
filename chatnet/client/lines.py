"""What the terminal client shows: the server's lines read back (chat, room and stored
lines, with local times), what it learns from them for completion (`Book`), and the
settings and command table the other parts share."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final

from chatnet.dialects.text import PASSWORD_PROMPT, PROMPT, SECRET_COMMANDS, read_chat_line
from chatnet.protocol import COMMANDS, NAME_RE, is_room

if TYPE_CHECKING:
    pass

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
    line = read_chat_line(text)
    if line is None:
        note(text, book)
        return text
    book.name(line.sender)
    when = local_time(line.timestamp)
    if line.room is not None:
        book.room(line.room)
        return f"{when} {book.spelled(line.room)} <{line.sender}> {line.message}"
    if line.stored:
        return f"{when} [stored] [{line.sender}] {line.message}"
    return f"{when} [{line.sender}] {line.message}"


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
