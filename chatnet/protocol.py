"""The wire protocol: bytes meet text here and nowhere else.

Pure functions and small types, no I/O. A connection handler feeds raw bytes to a
`LineBuffer`, decodes each line, parses it with `parse_text_line` or
`parse_json_frame`, and writes what `format_text` / `format_json` return.

Text mode (people, netcat):  `bob: hi`, `!check`, `!who`, `!help`, `exit`.
JSON mode (programs): one `Message`-shaped object per line; the first is
`{"type": "login", "user": "alice", "features": ["stream"]}`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from datetime import datetime, timezone
from enum import StrEnum
from functools import lru_cache, partial
from typing import Annotated, Any, Final, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_serializer, field_validator

from chatnet.errors import BadEncoding, BadFrame, LineTooLong, ProtocolError

# A line longer than this is read away and answered with an error, never buffered whole.
MAX_LINE_BYTES: Final = 8192
# Long enough for a paragraph, short enough that a JSON frame of it fits in one line.
MAX_MESSAGE_CHARS: Final = 2000
MAX_NAME_CHARS: Final = 32
NAME_RE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
# Sender of what the server itself says; nobody can log in under this name.
SERVER_NAME: Final = "server"

NAME_RULE: Final = "1-32 letters, digits, '_', '.' or '-'"
# Metadata only the server writes (what the sender announced at login; mail handed
# over from the store): a client that sends them has them dropped, so nobody can fake
# another peer's features or a stored message.
SERVER_METADATA: Final = frozenset({"sender_features", "stored"})

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,32}$")]


def is_valid_name(name: str) -> bool:
    return NAME_RE.fullmatch(name) is not None


class MessageType(StrEnum):
    CHAT = "chat"
    COMMAND = "command"
    NOTIFICATION = "notification"
    SUBSCRIPTION = "subscription"
    ERROR = "error"


# --- ids and time ------------------------------------------------------------------

# Ids are unique across processes and restarts (random prefix) and cheap to make
# (a counter): the routing path makes one per message.
_ID_PREFIX: Final = os.urandom(5).hex()
_id_counter = itertools.count(1)


def new_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):010x}"


@lru_cache(maxsize=4)
def _second_prefix(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def format_timestamp(epoch: float) -> str:
    """UTC ISO 8601 with milliseconds: `2026-11-21T10:00:05.123Z`."""
    second, millis = divmod(int(epoch * 1000), 1000)
    return f"{_second_prefix(second)}.{millis:03d}Z"


def format_datetime(value: datetime) -> str:
    """The same format from an aware datetime (exact: no float in between)."""
    value = value.astimezone(timezone.utc)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


def short_timestamp(timestamp: str) -> str:
    """What a person reads: `2026-11-21T10:00:05Z` (seconds are enough on screen)."""
    return f"{timestamp[:19]}Z" if len(timestamp) > 20 else timestamp


def parse_timestamp(value: str | datetime) -> datetime:
    """An aware UTC datetime, to the millisecond (what MongoDB keeps), from an ISO
    string or a (possibly naive, then UTC) datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def utcnow() -> datetime:
    return parse_timestamp(datetime.now(timezone.utc))


# --- the Message model ---------------------------------------------------------------


class Message(BaseModel):
    """One message, as every process sees it. Invalid ones can't be built."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(default_factory=new_id)
    sender: Name | None = None
    destination: Name | None = None
    message: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)] = ""
    timestamp: datetime = Field(default_factory=utcnow)
    type: MessageType = MessageType.CHAT
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        return parse_timestamp(value) if isinstance(value, (str, datetime)) else value

    @field_serializer("timestamp")
    def _iso(self, value: datetime) -> str:
        return format_datetime(value)


# --- what a client can say -----------------------------------------------------------


# Client events are NamedTuples: immutable like frozen dataclasses, and several times
# cheaper to build, which matters on the routing path (one per line).


class Login(NamedTuple):
    user: str
    features: frozenset[str] = frozenset()
    password: str | None = None


class Chat(NamedTuple):
    destination: str
    message: str
    metadata: dict[str, Any] | None = None
    type: str = MessageType.CHAT  # or SUBSCRIPTION: a service's broadcast, routed alike


# Chat(...) goes through a Python-level __new__; the routing path builds one per line,
# so it calls tuple.__new__ directly (same object, a third of the cost).
_new_chat = partial(tuple.__new__, Chat)


class Command(NamedTuple):
    name: str  # without the "!": "check", "who", "help"
    args: str = ""


class Quit(NamedTuple):
    pass


ClientEvent = Login | Chat | Command | Quit

COMMANDS: Final[dict[str, str]] = {
    "check": "show stored messages you have not seen yet",
    "who": "list who is online",
    "help": "show this help",
}

QUIT_WORDS: Final = frozenset({"exit", "quit", "/quit"})


def help_lines() -> list[str]:
    return [
        "Send a message: <name>: <message>   (e.g. bob: hello)",
        *(f"!{name:<6} {text}" for name, text in COMMANDS.items()),
        "exit    disconnect",
    ]


def check_name(name: str, what: str = "name") -> str:
    if not is_valid_name(name):
        raise ProtocolError(f"Invalid {what} {_quote(name)}: use {NAME_RULE}.")
    return name


def check_message(text: str) -> str:
    if not text:
        raise ProtocolError("Empty message: write 'name: message'.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ProtocolError(f"Message too long ({len(text)} characters; the limit is {MAX_MESSAGE_CHARS}).")
    return text


def _quote(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _parse_command(text: str) -> Command | Quit:
    if text.lower() in QUIT_WORDS:
        return Quit()
    if not text.startswith("!"):
        raise ProtocolError(f"Unknown command {_quote(text)}; try !help.")
    name, _, args = text[1:].partition(" ")
    name = name.lower()
    if name not in COMMANDS:
        raise ProtocolError(f"Unknown command {_quote(text)}; try !help.")
    return Command(name, args.strip())


def parse_text_line(line: str) -> Chat | Command | Quit:
    """A text-mode line after login: `name: message`, `!command` or `exit`."""
    destination, colon, message = line.partition(":")
    if colon and not destination.lstrip().startswith("!"):
        # The common case first, kept lean: it runs once per routed message.
        if NAME_RE.fullmatch(destination) is None:
            destination = destination.strip()
            if not destination:
                raise ProtocolError("No destination: write 'name: message'.")
            check_name(destination, "destination")
        message = message.strip()
        if not message or len(message) > MAX_MESSAGE_CHARS:
            check_message(message)  # raises with the reason
        return _new_chat((destination, message, None, MessageType.CHAT))
    text = line.strip()
    if not text:
        raise ProtocolError("Empty line: write 'name: message', or !help.")
    if text.startswith("!") or text.lower() in QUIT_WORDS:
        return _parse_command(text)
    raise ProtocolError("Write 'name: message' to send a message, or !help for the commands.")


def parse_json_frame(line: str) -> ClientEvent:
    """A JSON-mode frame. Fields a client may not set (id, sender, timestamp) are ignored."""
    try:
        frame = json.loads(line)
    except ValueError as exc:
        raise BadFrame(f"Malformed JSON: {exc.msg} at position {exc.pos}.") from None
    if not isinstance(frame, dict):
        raise BadFrame("A frame must be a JSON object.")
    kind = frame.get("type")
    if kind == "login":
        return _parse_login(frame)
    if kind in (MessageType.CHAT, MessageType.SUBSCRIPTION):
        destination, message, metadata = frame.get("destination"), frame.get("message"), frame.get("metadata")
        if not isinstance(destination, str) or not destination:
            raise BadFrame("A chat frame needs a 'destination'.")
        if not isinstance(message, str):
            raise BadFrame("A chat frame needs a 'message' string.")
        if metadata is not None and not isinstance(metadata, dict):
            raise BadFrame("'metadata' must be an object.")
        if metadata and not SERVER_METADATA.isdisjoint(metadata):
            metadata = {key: value for key, value in metadata.items() if key not in SERVER_METADATA}
        return Chat(check_name(destination, "destination"), check_message(message), metadata or None, kind)
    if kind == MessageType.COMMAND:
        message = frame.get("message")
        if not isinstance(message, str) or not message.strip():
            raise BadFrame("A command frame needs a 'message' such as '!who'.")
        return _parse_command(message.strip())
    raise BadFrame(f"Unknown frame type {_quote(str(kind))}; expected 'chat', 'subscription' or 'command'.")


def _parse_login(frame: dict[str, Any]) -> Login:
    user, features, password = frame.get("user"), frame.get("features", []), frame.get("password")
    if not isinstance(user, str):
        raise BadFrame("A login frame needs a 'user' string.")
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise BadFrame("'features' must be a list of strings.")
    if password is not None and not isinstance(password, str):
        raise BadFrame("'password' must be a string.")
    return Login(check_name(user, "username"), frozenset(features), password)


def is_json_login(line: str) -> bool:
    """The first line picks the mode: a JSON object means a program is talking."""
    return line.lstrip().startswith("{")


# --- bytes in ------------------------------------------------------------------------


class LineBuffer:
    """Splits a byte stream into lines, bounded by `limit` bytes per line.

    `feed` returns complete lines (without the newline, `\\r` stripped); an over-long
    line comes out once as a `LineTooLong` instance in its place, and its bytes are
    dropped as they arrive, so a peer can't make us buffer more than `limit`.
    """

    __slots__ = ("limit", "_rest", "_discarding")

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self._rest = b""
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | LineTooLong]:
        if self._discarding:
            end = data.find(b"\n")
            if end < 0:
                return []
            self._discarding = False
            data = data[end + 1 :]
        if self._rest:
            data = self._rest + data  # at most `limit` bytes carried over
        lines: list[Any] = data.split(b"\n")  # splitting in C beats a loop per line
        rest = lines.pop()
        limit = self.limit
        if lines and max(map(len, lines)) > limit:
            lines = [line if len(line) <= limit else self._too_long() for line in lines]
        if b"\r" in data:
            lines = [line[:-1] if type(line) is bytes and line.endswith(b"\r") else line for line in lines]
        if len(rest) > limit:
            self._rest = b""
            self._discarding = True
            lines.append(self._too_long())
        else:
            self._rest = rest
        return lines

    def _too_long(self) -> LineTooLong:
        return LineTooLong(f"Line too long (the limit is {self.limit} bytes); it was ignored.")

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held right now."""
        return len(self._rest)


def decode_line(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEncoding("Invalid UTF-8 in that line; it was ignored.") from None


# --- text out ------------------------------------------------------------------------


def text_chat_line(shown: str, sender: str, message: str) -> str:
    """A live message as a person reads it: `[2026-11-21T10:00:05Z][alice] hi`.
    `shown` is the timestamp as people read it (`short_timestamp`)."""
    return f"[{shown}][{sender}] {message}\n"


def text_stored_line(shown: str, sender: str, message: str) -> str:
    """Stored mail as a person reads it: `[Stored] [<ts>][<sender>] '<message>'`."""
    return f"[Stored] [{shown}][{sender}] '{message}'\n"


def format_text(msg: Message) -> str:
    """A Message as one text-mode line (with its newline)."""
    timestamp = short_timestamp(format_datetime(msg.timestamp))
    if msg.type in (MessageType.CHAT, MessageType.SUBSCRIPTION) and msg.sender:
        if msg.metadata.get("stored"):
            return text_stored_line(timestamp, msg.sender, msg.message)
        return text_chat_line(timestamp, msg.sender, msg.message)
    return f"{msg.message}\n"


def json_line(
    id: str,
    sender: str | None,
    destination: str | None,
    message: str,
    timestamp: str,
    type: str = MessageType.CHAT,
    metadata: dict[str, Any] | None = None,
) -> str:
    """A JSON-mode frame from its fields, without building a Message (hot path)."""
    return json.dumps(
        {
            "id": id,
            "sender": sender,
            "destination": destination,
            "message": message,
            "timestamp": timestamp,
            "type": type,
            "metadata": metadata or {},
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ) + "\n"


def format_json(msg: Message) -> str:
    """A Message as one JSON-mode line (with its newline)."""
    return msg.model_dump_json() + "\n"


def parse_message(line: str | bytes) -> Message:
    """A server frame (JSON mode) as a Message; for clients, bots and the adapter."""
    try:
        return Message.model_validate_json(line)
    except ValueError as exc:
        raise BadFrame(f"Malformed frame from the server: {exc}") from None
