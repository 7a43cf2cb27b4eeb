"""The text dialect: people at a terminal or `nc`.

    S: Enter username:
    C: alice
    S: Welcome, alice! 1 stored message.
    S: [Stored] [2026-11-21T10:00:05Z][joe] 'hello!!'
    C: bob: hi
    S: [2026-11-21T10:00:09Z][bob] hello back
    C: #hiking: who's in?
    S: [2026-11-21T10:00:12Z][#hiking][carol] me
    C: !who
    S: Online (2): alice, bob
    C: exit
    S: Goodbye, alice!

Notices are plain lines, errors start with `Error: `; presence is not shown (text
users are not flooded with comings and goings) and streamed replies arrive whole.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Final, NamedTuple

from mypy_extensions import mypyc_attr

from chatnet.dialects.base import OneLineLogin
from chatnet.errors import ProtocolError
from chatnet.limits import MAX_MESSAGE_CHARS
from chatnet.protocol import (
    CHAT_TYPE,
    KNOWN_DESTINATIONS,
    QUIT_WORDS,
    SERVER_NAME,
    Chat,
    Command,
    Delivery,
    Event,
    Login,
    MessageJson,
    Quit,
    check_destination,
    check_message,
    check_name,
    new_chat,
    parse_command,
    partial_chunk,
    short_timestamp,
    valid_destination,
)

PROMPT: Final = "Enter username:\n"
PASSWORD_PROMPT: Final = "Password:\n"
# Commands whose arguments are passwords: never in a log.
SECRET_COMMANDS: Final = frozenset({"!register", "!password", "!oper"})


def chat_line(shown: str, sender: str, message: str) -> str:
    """A live message as a person reads it: `[2026-11-21T10:00:05Z][alice] hi`.
    `shown` is the timestamp as people read it (`short_timestamp`)."""
    return f"[{shown}][{sender}] {message}\n"


def room_line(shown: str, room: str, sender: str, message: str) -> str:
    """A room message: `[2026-11-21T10:00:05Z][#hiking][alice] who's in?`."""
    return f"[{shown}][{room}][{sender}] {message}\n"


def stored_line(shown: str, sender: str, message: str) -> str:
    """Stored mail as a person reads it: `[Stored] [<ts>][<sender>] '<message>'`."""
    return f"[Stored] [{shown}][{sender}] '{message}'\n"


class ChatLine(NamedTuple):
    """A chat line read back by a client (`read_chat_line`): the inverse of the writers above."""

    timestamp: str  # as written: UTC ISO 8601, to the second
    room: str | None  # "#hiking" for a room line
    sender: str
    message: str
    stored: bool  # handed over from stored mail


# What chat_line, room_line and stored_line write (names and rooms never hold `]`).
_SHOWN_TIME: Final = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)"
_ROOM_LINE: Final = re.compile(rf"\[{_SHOWN_TIME}\]\[(#[^\]\s]+)\]\[([^\]]+)\] ?(.*)", re.S)
_CHAT_LINE: Final = re.compile(rf"\[{_SHOWN_TIME}\]\[([^\]\s]+)\] ?(.*)", re.S)
_STORED_LINE: Final = re.compile(rf"\[Stored\] \[{_SHOWN_TIME}\]\[([^\]]+)\] '(.*)'", re.S)


def read_chat_line(line: str) -> ChatLine | None:
    """A line from the server (without its newline), if it is a chat line: live, in a
    room, or stored mail."""
    if match := _ROOM_LINE.fullmatch(line):
        when, room, sender, message = match.groups()
        return ChatLine(when, room, sender, message, False)
    if match := _STORED_LINE.fullmatch(line):
        when, sender, message = match.groups()
        return ChatLine(when, None, sender, message, True)
    if match := _CHAT_LINE.fullmatch(line):
        when, sender, message = match.groups()
        return ChatLine(when, None, sender, message, False)
    return None


def parse_line(line: str) -> Chat | Command | Quit:
    """A line after login: `name: message`, `!command` or `exit`."""
    destination, colon, message = line.partition(":")
    if colon and not destination.lstrip().startswith("!"):
        # The common case first, kept lean: it runs once per routed message.
        if destination not in KNOWN_DESTINATIONS and not valid_destination(destination):
            destination = destination.strip()
            if not destination:
                raise ProtocolError("No destination: write 'name: message'.")
            check_destination(destination)
        message = message.strip()
        if not message or len(message) > MAX_MESSAGE_CHARS:
            check_message(message)  # raises with the reason
        return new_chat((destination, message, None, CHAT_TYPE))
    text = line.strip()
    if not text:
        raise ProtocolError("Empty line: write 'name: message', or !help.")
    if text.startswith("!") or text.lower() in QUIT_WORDS:
        return parse_command(text)
    raise ProtocolError("Write 'name: message' to send a message, or !help for the commands.")


# Compiled (chatnet/native.py), and open to subclasses in Python: the unit tests make one
# that fails on purpose.
@mypyc_attr(allow_interpreted_subclasses=True)
class TextDialect(OneLineLogin):
    name: ClassVar[str] = "text"
    shows_ids: ClassVar[bool] = False
    wants_presence: ClassVar[bool] = False
    follows_network: ClassVar[bool] = False  # "Welcome, ann! No stored messages." (!who lists them)
    asks_password: ClassVar[bool] = True
    echoes: ClassVar[bool] = False
    pings: ClassVar[bool] = False  # netcat can't answer one: TCP keepalive finds dead peers

    def greeting(self) -> str:
        return PROMPT

    def parse_login(self, line: str) -> Login:
        return Login(check_name(line.strip(), "username"))

    def parse(self, line: str) -> Chat | Command | Quit:
        return parse_line(line)

    def delivery(self, message: Delivery) -> str:
        _, sender, destination, text, timestamp, _, metadata, _ = message
        if metadata is not None and partial_chunk(metadata):
            return ""  # text readers get a streamed reply whole, from its final frame
        if destination[:1] == "#":
            return f"[{timestamp[:19]}Z][{destination}][{sender}] {text}\n"  # room_line, inlined
        return f"[{timestamp[:19]}Z][{sender}] {text}\n"  # chat_line, inlined: once per message

    def replayed(self, message: Delivery) -> str:
        return self.delivery(message)  # the lines carry their time already

    def stored(self, message: MessageJson) -> str:
        return stored_line(short_timestamp(message["timestamp"]), message["sender"] or SERVER_NAME, message["message"])

    def notice(self, text: str, event: Event, details: dict[str, Any], recipient: str, timestamp: str) -> str:
        return text + "\n"

    def error(self, text: str, event: Event, details: dict[str, Any], recipient: str, timestamp: str) -> str:
        return f"Error: {text}\n"

    def password_prompt(self) -> str:
        return PASSWORD_PROMPT

    def ping(self, recipient: str, timestamp: str) -> str:
        return ""  # never asked (`pings` is False)

    def loggable(self, line: str, secret: bool) -> str:
        if secret:
            return "<password>"
        word = line.lstrip().split(" ", 1)[0]
        return f"{word} <hidden>" if word.lower() in SECRET_COMMANDS else line

    def login_failed(self, text: str, details: dict[str, Any], timestamp: str) -> str:
        return f"{text}\n{PROMPT}"


TEXT: Final = TextDialect()
