"""What every process shares about messages: their vocabulary and their shapes.

Pure: no I/O, and no pydantic (the chat server imports this; the `Message` model that
checks a message's fields is `chatnet.message`). The wire formats themselves (text
lines, JSON frames) are the dialects' (`chatnet.dialects`); this module owns what they
have in common:

- the name rules, ids and timestamps;
- `MessageType` and `Event` (every `metadata.event` value), one enum each;
- what a client can say (`Login`, `Chat`, `Command`, `Quit`) and what the server
  delivers (`Delivery`);
- one encoder per shape a message takes between the socket and the store:
  `message_dict` (the JSON shape the API and clients see), `message_text` (that shape
  as JSON text, built directly: the history archive's, and a JSON-mode line's),
  `mail_document` / `from_mail_document` (pending mail in MongoDB) and `history_entry`
  / `from_history_entry` (a message inside a history bucket).

Where bytes from a socket become lines is `chatnet.lines`.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from enum import StrEnum
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias

from chatnet.errors import ProtocolError
from chatnet.limits import (
    INT64_MAX,
    INT64_MIN,
    MAX_MESSAGE_CHARS,
    MAX_METADATA_DEPTH,
    NAME_PATTERN,
    NAME_RULE,
    ROOM_PATTERN,
    ROOM_RULE,
)

NAME_RE: Final = re.compile(NAME_PATTERN.strip("^$"))
ROOM_RE: Final = re.compile(ROOM_PATTERN.strip("^$"))
# Sender of what the server itself says; nobody can log in under this name.
SERVER_NAME: Final = "server"
# Everyone's host in a `nick!user@host` mask (IRC prefixes, room bans): addresses are
# nobody's business, so a ban matches names only.
USER_HOST: Final = "chatnet"
# Metadata only the server writes (what a notice is; what the sender announced at login;
# mail handed over from the store; a copy of one's own message): a client that sends
# them has them dropped, so nobody can fake a notice, another peer's features, a stored
# message or an echo.
SERVER_METADATA: Final = frozenset({"event", "sender_features", "stored", "echo"})


def not_dots_alone(name: str) -> str:
    if not name.strip("."):
        raise ValueError(f"use {NAME_RULE}")
    return name


def name_or_room(value: str) -> str:
    if not (is_valid_name(value) or is_room(value)):
        raise ValueError(f"use {NAME_RULE}, or for a room {ROOM_RULE}")
    return value


class MessageType(StrEnum):
    CHAT = "chat"
    COMMAND = "command"
    NOTIFICATION = "notification"
    SUBSCRIPTION = "subscription"
    ERROR = "error"


# The routing path reads these once per message: an enum member read off its class
# costs ~70 ns in Python 3.11, a module constant a quarter of that.
CHAT_TYPE: Final = MessageType.CHAT
SUBSCRIPTION_TYPE: Final = MessageType.SUBSCRIPTION


class Event(StrEnum):
    """What a notice is: its `metadata.event`. The page gets this list from /config.json."""

    # from the chat server
    WELCOME = "welcome"  # login accepted: user, pending (None: the store is unavailable), online
    PRESENCE = "presence"  # someone came online or left: user, presence
    SAVED = "saved"  # offline mail stored: destination, id (unknown: nobody has used the name yet)
    UNKNOWN_NAME = "unknown_name"  # after "saved": nobody has logged in under that name yet
    NOT_SAVED = "not_saved"  # offline mail could not be stored: destination, id
    WHO = "who"  # answer to !who: users
    HELP = "help"  # answer to !help
    CHECK = "check"  # answer to !check: pending
    GOODBYE = "goodbye"  # the server closes this connection
    SHUTDOWN = "shutdown"  # the server is stopping
    LOGIN_FAILED = "login_failed"  # a refused login: reason (LoginReason), retry_after
    REGISTERED = "registered"  # !register made the name an account
    PASSWORD_CHANGED = "password_changed"  # !password changed it; other sessions signed out
    BAD_INPUT = "bad_input"  # a line or frame was refused; the text says why
    PING = "ping"  # the client has been silent a while: answer {"type": "pong"} (or send anything)
    RENAMED = "renamed"  # !nick changed your name: old, user
    WHOIS = "whois"  # answer to !whois: user, online, kind, ident [username, realname], away
    WHOWAS = "whowas"  # answer to !whowas: user, seen [{name, ident, left}] (newest first; [] = nobody)
    AWAY = "away"  # !away answered (user is you), or the one you wrote to is away: user, away ("" = back)
    TYPING = "typing"  # a peer is working on an answer to you (or in a room): user, active, room (None in a DM)
    OPER = "oper"  # !oper made you a network operator: user, name (refused: reason, an OperReason; retry_after)
    WALLOPS = "wallops"  # !wallops from a network operator, for operators and +w: user, message (refused: reason)
    USER_MODE = "user_mode"  # your user modes (!mode <you>): user, modes ("+ow"), changes (None: asked)
    # rooms
    JOINED = "joined"  # you are in a room now: room, created, members, online, topic
    LEFT = "left"  # you left a room (or were removed: by): room
    ROOM_PRESENCE = "room_presence"  # a member joined, left, came online, went offline or was renamed (old): room, user, presence
    TOPIC = "topic"  # a room's topic, at a join or as it changes: room, topic, by
    ROOMS = "rooms"  # answer to !rooms: rooms [{name, members, private, topic}]
    MEMBERS = "members"  # answer to !members: room, members [{name, online}]
    CATCHUP = "catchup"  # at login, before a room's unseen messages: room, unread, shown
    HISTORY = "history"  # answer to !history, before its messages: room, shown, next
    INVITED = "invited"  # someone invited you (or, to the inviter: the invitation is made): room, by, user
    ROOM_MODE = "room_mode"  # a room's settings changed (by, changes) or asked (!mode): room, private, modes, settings, bans
    # from the web adapter
    STATUS = "status"  # the adapter's chat-server connection: state, retry_in
    SESSION = "session"  # the page's session token after a login: token
    NOT_SENT = "not_sent"  # a frame from the page could not reach the chat server


# `reason` of the error about a line longer than the wire format allows.
TOO_LONG: Final = "too_long"


class RoomReason(StrEnum):
    """Why the message API refused a room request (its answer's `reason`)."""

    PRIVATE = "private"  # a private room, and no invitation to it
    NOT_OWNER = "not_owner"  # only the room's operators (its owner, and whom it made +o) may do that
    NOT_MEMBER = "not_member"  # only the room's members may do that
    NO_ROOM = "no_room"  # there is no room of that name
    TOO_MANY_ROOMS = "too_many_rooms"  # the user is in MAX_ROOMS_PER_USER rooms already
    NOT_IN_ROOM = "not_in_room"  # the one to remove (!kick), op or voice (!mode) is no member
    BAD_KEY = "bad_key"  # the room has a key (+k) and it was not given
    FULL = "full"  # the room has its member limit (+l)
    BANNED = "banned"  # a ban (+b) matches the user
    MODERATED = "moderated"  # the room is moderated (+m) and the sender has no voice (+v)
    BAD_MODE = "bad_mode"  # a !mode change chatnet does not know, or its value is not valid (details: mode)


class OperReason(StrEnum):
    """Why an operator's request was refused (`!oper`, `!wallops`): its error's `reason`."""

    NO_OPERATORS = "no_operators"  # no API_TOKEN is set: this network has no operators
    WRONG_PASSWORD = "wrong_password"  # not the API token (counted: LOGIN_ATTEMPTS lock it)
    LOCKED = "locked"  # too many wrong ones from the name or the address: retry_after
    NOT_OPERATOR = "not_operator"  # only network operators may do that


def address_counter(source: str) -> str:
    """An address as the wrong-password lockouts count it (the message API's for logins,
    the chat server's for !oper): IPv4 as it is (also when mapped into IPv6), IPv6 by its /64,
    which one subscriber usually holds whole."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return f"addr:{source.lower()}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is None:
            return f"addr:{ipaddress.ip_network((address, 64), strict=False)}"
        address = address.ipv4_mapped
    return f"addr:{address}"


def lowered(text: str) -> str:
    """`text` in lower case: the same object when it already is. str.lower() always makes
    a copy, and a name or room kept as a key by every session costs 57 bytes each."""
    low = text.lower()
    return text if low == text else low


def is_valid_name(name: str) -> bool:
    return NAME_RE.fullmatch(name) is not None and bool(name.strip("."))


def check_name(name: str, what: str = "name") -> str:
    if not is_valid_name(name):
        raise ProtocolError(f"Invalid {what} {quote(name)}: use {NAME_RULE}.")
    return name


def is_room(name: str) -> bool:
    return name[:1] == "#" and ROOM_RE.fullmatch(name) is not None


# Destinations already seen to be valid names or rooms: a set lookup is a sixth of the
# regex's cost, and the routing path checks one per message. Bounded: emptied when full.
KNOWN_DESTINATIONS: set[str] = set()
_KNOWN_DESTINATIONS_MAX: Final = 10_000


def valid_destination(name: str) -> bool:
    """A person's name or a room's, exactly as written: the routing path's check,
    remembered (`KNOWN_DESTINATIONS`)."""
    if name in KNOWN_DESTINATIONS:
        return True
    if (NAME_RE.fullmatch(name) is None or not name.strip(".")) and not is_room(name):
        return False
    if len(KNOWN_DESTINATIONS) >= _KNOWN_DESTINATIONS_MAX:
        KNOWN_DESTINATIONS.clear()
    KNOWN_DESTINATIONS.add(name)
    return True


def check_room(name: str) -> str:
    if not is_room(name):
        raise ProtocolError(f"Invalid room {quote(name)}: use {ROOM_RULE}.")
    return name


def check_destination(name: str) -> str:
    """A person's name or a room's."""
    return check_room(name) if name[:1] == "#" else check_name(name, "destination")


def check_message(text: str) -> str:
    if not text:
        raise ProtocolError("Empty message: write 'name: message'.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ProtocolError(f"Message too long ({len(text)} characters; the limit is {MAX_MESSAGE_CHARS}).")
    return text


def unstorable(value: Any, depth: int = 0) -> str | None:
    """Why the store can't hold this JSON value (a message's metadata), or None. The
    JSON dialect and the API both ask, so one sender's bad value is refused to it alone
    instead of failing a batch of other people's mail."""
    if depth > MAX_METADATA_DEPTH:
        return f"nesting deeper than {MAX_METADATA_DEPTH}"
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if INT64_MIN <= value <= INT64_MAX else "an integer wider than 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else "NaN or Infinity"
    if isinstance(value, str):
        return unencodable(value)
    if isinstance(value, list):
        return next((p for item in value if (p := unstorable(item, depth + 1))), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or "\0" in key or key.startswith("$"):
                return "a key with a NUL or a leading '$'"
            if problem := unencodable(key) or unstorable(item, depth + 1):
                return problem
        return None
    return f"a {type(value).__name__}"


def unencodable(text: str) -> str | None:
    """Why this text is no UTF-8 (a lone surrogate, from a \\u escape), or None."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return "text that is not UTF-8 (a lone surrogate)"
    return None


def quote(value: str, limit: int = 40) -> str:
    """A peer's value, shortened, for an error message."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


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
    """UTC ISO 8601 with milliseconds, `2026-11-21T10:00:05.123Z`, from epoch seconds."""
    second, millis = divmod(int(epoch * 1000), 1000)
    return f"{_second_prefix(second)}.{millis:03d}Z"


# The API turns every message it stores from text to datetime and back (~1.3 and ~1.9 µs
# each), and a batch's messages share few milliseconds (the chat server stamps them
# from one clock reading per loop pass): the last few thousand of each are remembered.
TIMESTAMP_CACHE: Final = 4096


@lru_cache(maxsize=TIMESTAMP_CACHE)
def format_datetime(value: datetime) -> str:
    """The same format from a datetime (naive ones are UTC), exact: no float in
    between. (Equal datetimes are the same instant, which formats the same.)"""
    if value.utcoffset():
        value = value.astimezone(timezone.utc)
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def short_timestamp(timestamp: str) -> str:
    """What a person reads: `2026-11-21T10:00:05Z` (seconds are enough on screen)."""
    return f"{timestamp[:19]}Z" if len(timestamp) > 20 else timestamp


def parse_timestamp(value: str | datetime) -> datetime:
    """An aware UTC datetime, to the millisecond (what MongoDB keeps), from an ISO
    string or a (possibly naive, then UTC) datetime."""
    if isinstance(value, str):
        return _parse_text(value)
    return _in_utc(value)


@lru_cache(maxsize=TIMESTAMP_CACHE)
def _parse_text(value: str) -> datetime:
    return _in_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))


def _in_utc(value: datetime) -> datetime:
    try:
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except OverflowError:  # 9999-12-31T23:59-10:00 is past the last representable UTC instant
        raise ValueError("timestamp out of range once in UTC") from None
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def utcnow() -> datetime:
    return parse_timestamp(datetime.now(timezone.utc))


class Clock:
    """The routing path's clock: read once per chunk of input (`tick`), so a burst of
    lines shares one reading, and formatted once per millisecond at most."""

    __slots__ = ("_ms", "text")

    def __init__(self) -> None:
        self._ms = -1
        self.text = ""  # the last reading, UTC ISO 8601 with milliseconds

    def tick(self) -> str:
        ms = int(time.time() * 1000)
        if ms != self._ms:
            self._ms = ms
            self.text = format_timestamp(ms / 1000)
        return self.text


# --- what a client can say, what the server delivers ---------------------------------

# Events are NamedTuples: immutable like frozen dataclasses, and several times cheaper
# to build, which matters on the routing path (one per line).


class Login(NamedTuple):
    user: str
    features: frozenset[str] = frozenset()
    password: str | None = None
    token: str | None = None  # a session token from an earlier login's want_token
    want_token: bool = False  # the welcome is to carry a new session token
    service_token: str | None = None  # a bot: the network's service token instead of a password
    # A relay (the web adapter) logging a user in: the service token, and the address of
    # the user's browser, which per-address limits then count instead of the relay's.
    relay_token: str | None = None
    address: str | None = None


class Kind(StrEnum):
    """Who is logged in under a name: an account's person or bot, or a guest."""

    PERSON = "person"
    BOT = "bot"
    GUEST = "guest"


class LoginReason(StrEnum):
    """Why a login was refused: `metadata.reason` of a `login_failed` frame."""

    PASSWORD_REQUIRED = "password_required"
    WRONG_PASSWORD = "wrong_password"
    LOCKED = "locked"  # too many failures (or logins) for the name or the address: retry_after
    NAME_TAKEN = "name_taken"
    INVALID_NAME = "invalid_name"
    RESERVED = "reserved"  # the server's name, or a bot's
    GUESTS_NOT_ALLOWED = "guests_not_allowed"
    UNAVAILABLE = "unavailable"  # accounts can't be checked right now (the store is away)


class Chat(NamedTuple):
    destination: str
    message: str
    metadata: dict[str, Any] | None = None
    type: str = MessageType.CHAT  # or SUBSCRIPTION: a service's broadcast, routed alike


class Command(NamedTuple):
    name: str  # without the "!": "check", "who", "help"
    args: str = ""


class Quit(NamedTuple):
    reason: str = ""  # IRC's `QUIT :reason`, which the others in its rooms are shown


class Ack(NamedTuple):
    """A client with the `ack` feature has handled these messages (by id)."""

    ids: tuple[str, ...]


class Pong(NamedTuple):
    """A client's answer to the server's ping (any line proves it alive; this one says nothing else)."""


class Reply(NamedTuple):
    """What a dialect answers by itself, without the router (IRC's PONG, CAP, numerics)."""

    text: str


class Authenticate(NamedTuple):
    """Credentials to check now, for a login that comes later (IRC's SASL, before
    registration ends): answered by `Session.authenticated` or a refusal."""

    user: str
    password: str


class Typing(NamedTuple):
    """A client is writing (a bot: its model is working) to `destination`, or has stopped."""

    destination: str
    active: bool


ClientEvent = Login | Chat | Command | Quit | Ack | Pong | Typing

# The login feature of clients that acknowledge what they have handled.
ACK_FEATURE: Final = "ack"
# The login feature every bot announces: other bots never answer what it says.
BOT_FEATURE: Final = "bot"
# The login feature of clients that show a streamed reply as it grows (its pieces).
STREAM_FEATURE: Final = "stream"
# The login feature of clients that show "… is typing" (the page): only they are sent TYPING notices.
TYPING_FEATURE: Final = "typing"


def strip_address(bot: str, text: str) -> str | None:
    """The rest of a room message addressed to `bot` — `@bot …`, `@bot: …`, `@bot, …`
    or `bot: …`, any case — or None when it is not addressed to it. The server gives a
    bot only the room messages addressed to it, by this rule, and the bot reads them by it."""
    match = _address_re(bot).match(text.lstrip())
    return None if match is None else text.lstrip()[match.end() :].strip()


@lru_cache(maxsize=256)
def _address_re(bot: str) -> re.Pattern[str]:
    name = re.escape(bot)
    return re.compile(rf"(?:@{name}(?![^\s:,])[:,]?|{name}:)", re.IGNORECASE)


# A live message as the router hands it to a session, and as it is archived: a plain
# tuple (the routing path builds one per message; a literal is the cheapest thing to build)
#     (id, sender, destination, message, timestamp, type, metadata, sender_features)
# `id` is None when the recipient is shown none (a text line): the archiver makes one
# then. `sender_features` is what the sender announced at login, for JSON readers.
Delivery = tuple[str | None, str, str, str, str, str, dict[str, Any] | None, tuple[str, ...]]

# Chat(...) goes through a Python-level __new__; the routing path builds one per line,
# so it calls tuple.__new__ directly (same object, a third of the cost).
new_chat = partial(tuple.__new__, Chat)


COMMANDS: Final[dict[str, str]] = {
    "check": "show stored messages you have not seen yet",
    "who": "list who is online",
    "join": "#room [key]  join a room (creates it if there is none: you are its owner)",
    "leave": "#room  leave a room",
    "rooms": "list the rooms",
    "members": "#room  list a room's members",
    "topic": "#room [text|-]  show, set or (-) clear a room's topic",
    "history": "#room [n]  the last n messages of a room (default 20)",
    "invite": "#room <name>  invite someone (a bot joins by itself)",
    "kick": "#room <name>  remove someone (operators)",
    "private": "#room  only invited people may join (operators)",
    "public": "#room  anyone may join (operators)",
    "mode": "#room [+-modes [args]]  show or change a room's settings (operators): +k key, +l n, +b mask, +o/+v name, +m +n +s +t +i;"
    "  !mode <you> [+w|-w|-o]: your modes (+o operator, +w hear !wallops)",
    "away": "[text]  say you are away: whoever writes to you is told; alone: you are back",
    "whois": "<name>  who someone is: online or not, an account or a bot",
    "whowas": "<name>  who was here under that name lately",
    "nick": "<name>  change your name (guests: to a free name that is no account)",
    "register": "<password>  make your name an account (8-128 characters)",
    "password": "<old> <new>  change your password (signs your other sessions out)",
    "oper": "<name> <password>  become a network operator (the password is the API token)",
    "wallops": "<text>  a message for every network operator and +w user (operators)",
    "help": "show this help",
}

QUIT_WORDS: Final = frozenset({"exit", "quit", "/quit"})


def help_lines() -> list[str]:
    return [
        "Send a message: <name>: <message>   (e.g. bob: hello)",
        "To a room:      #<room>: <message>  (e.g. #general: hi all)",
        *(f"!{name:<8} {text}" for name, text in COMMANDS.items()),
        "exit    disconnect",
    ]


def parse_command(text: str) -> Command | Quit:
    """`!who`, `!check`, `!help`, or a quit word (`exit`)."""
    if text.lower() in QUIT_WORDS:
        return Quit()
    if not text.startswith("!"):
        raise ProtocolError(f"Unknown command {quote(text)}; try !help.")
    name, _, args = text[1:].partition(" ")
    name = name.lower()
    if name not in COMMANDS:
        raise ProtocolError(f"Unknown command {quote(text)}; try !help.")
    return Command(name, args.strip())


def partial_chunk(metadata: dict[str, Any] | None) -> bool:
    """A chunk of a streamed reply that is not the last (for live readers only)."""
    if metadata is None:
        return False
    stream = metadata.get("stream")
    return isinstance(stream, dict) and not stream.get("done", True)


def mail_hints(metadata: dict[str, Any] | None, max_ttl: int, max_keep: int) -> tuple[int | None, int | None]:
    """The sender's hints for storing its offline mail, `metadata.mail = {ttl_seconds,
    keep_latest}` (a service capping its readings); out-of-range values are ignored."""
    hints = metadata.get("mail") if metadata else None
    if not isinstance(hints, dict):
        return None, None
    ttl, keep = hints.get("ttl_seconds"), hints.get("keep_latest")
    ttl = ttl if type(ttl) is int and 0 < ttl <= max_ttl else None
    keep = keep if type(keep) is int and 0 < keep <= max_keep else None
    return ttl, keep


# --- one encoder per shape -----------------------------------------------------------

if TYPE_CHECKING:
    from chatnet.message import Message

# What the encoders below take: a Message, or a mapping already in the JSON shape (a
# Message is never a Mapping, which is how they tell; this module never imports it).
MessageLike: TypeAlias = "Message | Mapping[str, Any]"
# A message in its JSON shape (`message_dict`'s keys, the timestamp as protocol text):
# stored mail and history as the API serves them, which is how the chat server takes them.
MessageJson: TypeAlias = Mapping[str, Any]


def message_dict(
    id: str,
    sender: str | None,
    destination: str | None,
    message: str,
    timestamp: str,
    type: str = MessageType.CHAT,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A message in its JSON shape (what the API takes and serves, what clients read),
    from its fields, without building a Message (hot path)."""
    return {
        "id": id,
        "sender": sender,
        "destination": destination,
        "message": message,
        "timestamp": timestamp,
        "type": type,
        "metadata": metadata or {},
    }


def message_text(
    id: str,
    sender: str | None,
    destination: str | None,
    message: str,
    timestamp: str,
    type: str = MessageType.CHAT,
    metadata: dict[str, Any] | None = None,
) -> str:
    """`dumps(message_dict(...))`, the same text, written out directly: no dict made and
    walked (1.6 µs a message against 3.5, uncompiled). The history archive encodes every
    delivered message in the chat server's loop, and a JSON reader gets each this way
    (with a newline: a JSON-mode line)."""
    return (
        f'{{"id":{_quoted(id)},"sender":{_quoted_or_null(sender)},"destination":{_quoted_or_null(destination)},'
        f'"message":{_quoted(message)},"timestamp":{_quoted(timestamp)},"type":{_quoted(type)},'
        f'"metadata":{dumps(metadata) if metadata else "{}"}}}'
    )


# json.dumps with options builds an encoder per call: 4.1 µs for a message's shape,
# against 2.4 through one made once (a JSON reader's every line, a preview per pair).
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# The escaper that encoder uses for every string (C; ensure_ascii off), quotes included.
_quoted: Final[Callable[[str], str]] = json.encoder.encode_basestring


def _quoted_or_null(value: str | None) -> str:
    return "null" if value is None else _quoted(value)


def dumps(value: Any) -> str:
    """JSON as chatnet writes it everywhere: compact, UTF-8 as is."""
    return _ENCODER.encode(value)


def message_json(message: MessageLike) -> Any:
    """A Message, or a dict already in its JSON shape, as that shape."""
    return message if isinstance(message, Mapping) else message.model_dump(mode="json")


def mail_document(message: MessageLike, expires_at: datetime | None = None) -> dict[str, Any]:
    """A message as a pending-mail document: only what mail needs (the embedded store
    reads a page of smaller documents markedly faster), the id as `_id`."""
    data = message if isinstance(message, Mapping) else message.model_dump()
    doc = {
        "_id": data["id"],
        "sender": data["sender"],
        "destination": data["destination"],
        "message": data.get("message", ""),
        "timestamp": parse_timestamp(data["timestamp"]),
        "type": str(data.get("type", MessageType.CHAT)),
    }
    if data.get("metadata"):
        doc["metadata"] = data["metadata"]
    if expires_at is not None:
        doc["expires_at"] = expires_at
    return doc


def from_mail_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A pending-mail document as the JSON shape (plain dict: no model on the hot path)."""
    return message_dict(
        doc["_id"],
        doc.get("sender"),
        doc.get("destination"),
        doc.get("message", ""),
        format_datetime(doc["timestamp"]),
        doc.get("type", MessageType.CHAT),
        doc.get("metadata"),
    )


def history_entry(message: MessageLike) -> dict[str, Any]:
    """A message as a history bucket holds it: its JSON shape, the timestamp as protocol
    text (fixed width, so text order is time order), no empty metadata. Takes a Message,
    the JSON shape, or a mail document."""
    doc: dict[str, Any]
    metadata: dict[str, Any] | None
    if not isinstance(message, Mapping):  # a Message
        doc = {
            "id": message.id,
            "sender": message.sender,
            "destination": message.destination,
            "message": message.message,
            "timestamp": format_datetime(message.timestamp),
            "type": message.type.value,
        }
        metadata = message.metadata
    else:
        stamp = message["timestamp"]
        doc = {
            "id": message.get("id", message.get("_id")),
            "sender": message["sender"],
            "destination": message["destination"],
            "message": message.get("message", ""),
            "timestamp": format_datetime(stamp if isinstance(stamp, datetime) else parse_timestamp(stamp)),
            "type": str(message.get("type", MessageType.CHAT)),
        }
        metadata = message.get("metadata")
    if metadata:
        doc["metadata"] = metadata
    return doc


def from_history_entry(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A bucket's entry as the JSON shape."""
    return {**doc, "metadata": doc.get("metadata") or {}}
