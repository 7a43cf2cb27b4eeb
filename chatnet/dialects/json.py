"""The JSON dialect: programs (the web adapter, bots, tests).

One `Message`-shaped object per line each way. The first line from the client logs in:

    {"type": "login", "user": "alice", "features": ["stream"]}

then `chat`, `subscription` and `command` frames, `ack` and `pong`, and `typing`
(`{"type": "typing", "destination": "bob", "active": true}`: relayed to whoever shows
it, never kept). The server sets `id`, `sender` and `timestamp` itself (whatever the
client put there is ignored) and drops metadata only it may write (`SERVER_METADATA`).
Its notices are `notification` / `error` frames from sender `server` whose
`metadata.event` says what they are (`Event`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, ClassVar, Final

from chatnet.dialects.base import OneLineLogin
from chatnet.errors import BadFrame
from chatnet.limits import INT64_MAX, INT64_MIN, MAX_BATCH
from chatnet.protocol import (
    SERVER_METADATA,
    SERVER_NAME,
    Ack,
    Chat,
    ClientEvent,
    Command,
    Delivery,
    Event,
    Login,
    MessageJson,
    MessageType,
    Pong,
    Typing,
    check_destination,
    check_message,
    check_name,
    dumps,
    message_text,
    new_id,
    parse_command,
    quote,
    unstorable,
)

# What the debug log must not show: secret fields, and the arguments of commands that
# carry passwords.
_SECRET_FIELD: Final = re.compile(r'"(password|token|service_token|relay_token)"\s*:\s*"(?:[^"\\]|\\.)*"')
_SECRET_COMMAND: Final = re.compile(r'"!(register|password|oper) (?:[^"\\]|\\.)*"', re.IGNORECASE)

PONG: Final = Pong()
# What a ping says to whoever reads the raw frames.
PING_TEXT: Final = 'Still there? Answer {"type": "pong"}.'

# Longer than any password (128), token or address a login frame may carry.
MAX_SECRET_CHARS: Final = 512


def parse_frame(line: str) -> ClientEvent:
    """A frame from a client. Fields a client may not set (id, sender, timestamp) are ignored."""
    try:
        frame = json.loads(line, parse_constant=_no_constant, parse_int=_int64, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise BadFrame(f"Malformed JSON: {exc.msg} at position {exc.pos}.") from None
    except (ValueError, RecursionError):  # a number of thousands of digits; nesting a thousand deep
        raise BadFrame("Malformed JSON: a number too long or nesting too deep.") from None
    if not isinstance(frame, dict):
        raise BadFrame("A frame must be a JSON object.")
    if "\\u" in line:  # an escape may make a lone surrogate, which no line can carry on
        try:
            dumps(frame).encode()
        except UnicodeEncodeError:
            raise BadFrame("Malformed JSON: a \\u escape that is not a character (a lone surrogate).") from None
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
        if metadata and (problem := unstorable(metadata)):
            raise BadFrame(f"Metadata the store can't hold: {problem}.")
        return Chat(check_destination(destination), check_message(message), metadata or None, kind)
    if kind == "ack":
        ids = frame.get("ids")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_BATCH or not all(isinstance(i, str) and 0 < len(i) <= 64 for i in ids):
            raise BadFrame(f"An ack frame needs 'ids': a list of 1 to {MAX_BATCH} message ids.")
        return Ack(tuple(ids))
    if kind == "pong":
        return PONG
    if kind == MessageType.COMMAND:
        message = frame.get("message")
        if not isinstance(message, str) or not message.strip():
            raise BadFrame("A command frame needs a 'message' such as '!who'.")
        return parse_command(message.strip())
    if kind == "typing":
        destination, active = frame.get("destination"), frame.get("active")
        if not isinstance(destination, str) or not destination:
            raise BadFrame("A typing frame needs a 'destination'.")
        if not isinstance(active, bool):
            raise BadFrame("A typing frame needs 'active': true or false.")
        return Typing(check_destination(destination), active)
    raise BadFrame(f"Unknown frame type {quote(str(kind))}; expected 'chat', 'subscription', 'command', 'ack', 'pong' or 'typing'.")


def _no_constant(name: str) -> Any:
    raise BadFrame(f"Malformed JSON: {name} is not a JSON number.")


def _finite(digits: str) -> float:
    value = float(digits)
    if math.isinf(value):
        raise BadFrame(f"Number out of range: {quote(digits, 24)}.")
    return value


def _int64(digits: str) -> int:
    """Integers the store can hold (MongoDB's are 64-bit): a wider one is refused here,
    to its sender, rather than failing a batch of other people's mail later."""
    value = int(digits)
    if not INT64_MIN <= value <= INT64_MAX:
        raise BadFrame(f"Number out of range: {quote(digits, 24)} (integers are 64-bit).")
    return value


def _parse_login(frame: dict[str, Any]) -> Login:
    user, features, want_token = frame.get("user"), frame.get("features", []), frame.get("want_token", False)
    if not isinstance(user, str):
        raise BadFrame("A login frame needs a 'user' string.")
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise BadFrame("'features' must be a list of strings.")
    if not isinstance(want_token, bool):
        raise BadFrame("'want_token' must be true or false.")
    given = []
    for key in ("password", "token", "service_token", "relay_token", "address"):
        value = frame.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_SECRET_CHARS):
            raise BadFrame(f"'{key}' must be a string of at most {MAX_SECRET_CHARS} characters.")
        given.append(value)
    password, token, service_token, relay_token, address = given
    return Login(check_name(user, "username"), frozenset(features), password, token, want_token, service_token, relay_token, address)


def client_frame(event: Chat | Command | Login | Ack | Pong | Typing) -> dict[str, Any]:
    """The frame a client sends for an event (`parse_frame` is its inverse)."""
    if isinstance(event, Pong):
        return {"type": "pong"}
    if isinstance(event, Typing):
        return {"type": "typing", "destination": event.destination, "active": event.active}
    if isinstance(event, Ack):
        return {"type": "ack", "ids": list(event.ids)}
    if isinstance(event, Command):
        return {"type": MessageType.COMMAND, "message": f"!{event.name} {event.args}".strip()}
    if isinstance(event, Login):
        frame: dict[str, Any] = {"type": "login", "user": event.user, "features": sorted(event.features)}
        for key in ("password", "token", "service_token", "relay_token", "address"):
            if getattr(event, key) is not None:
                frame[key] = getattr(event, key)
        if event.want_token:
            frame["want_token"] = True
        return frame
    frame = {"type": event.type, "destination": event.destination, "message": event.message}
    if event.metadata:
        frame["metadata"] = event.metadata
    return frame


def server_frame(kind: MessageType, text: str, event: Event, details: dict[str, Any], recipient: str | None, timestamp: str, sender: str = SERVER_NAME) -> str:
    """A frame the server (or the adapter, as `sender`) says itself: `metadata.event`
    says what it is."""
    return message_text(new_id(), sender, recipient or None, text, timestamp, kind, {"event": event, **details}) + "\n"


class JsonDialect(OneLineLogin):
    name: ClassVar[str] = "json"
    shows_ids: ClassVar[bool] = True
    wants_presence: ClassVar[bool] = True
    follows_network: ClassVar[bool] = True
    asks_password: ClassVar[bool] = False
    echoes: ClassVar[bool] = True
    pings: ClassVar[bool] = True

    def greeting(self) -> str:
        return ""  # JSON clients connect on the text port and read its prompt

    def parse_login(self, line: str) -> Login:
        event = parse_frame(line)
        if not isinstance(event, Login):
            raise BadFrame('Log in first: {"type": "login", "user": "<name>"}.')
        return event

    parse = staticmethod(parse_frame)

    def delivery(self, message: Delivery) -> str:
        id, sender, destination, text, timestamp, kind, metadata, sender_features = message
        if sender_features:
            metadata = {**(metadata or {}), "sender_features": sender_features}
        return message_text(id or new_id(), sender, destination, text, timestamp, kind, metadata) + "\n"

    replayed = delivery  # the frames carry their time already

    def stored(self, message: MessageJson) -> str:
        metadata = {**(message.get("metadata") or {}), "stored": True}
        return message_text(message["id"], message["sender"], message["destination"], message["message"], message["timestamp"], message["type"], metadata) + "\n"

    def notice(self, text: str, event: Event, details: dict[str, Any], recipient: str, timestamp: str) -> str:
        return server_frame(MessageType.NOTIFICATION, text, event, details, recipient, timestamp)

    def error(self, text: str, event: Event, details: dict[str, Any], recipient: str, timestamp: str) -> str:
        return server_frame(MessageType.ERROR, text, event, details, recipient, timestamp)

    def password_prompt(self) -> str:
        return ""  # the password comes in the login frame

    def ping(self, recipient: str, timestamp: str) -> str:
        return server_frame(MessageType.NOTIFICATION, PING_TEXT, Event.PING, {}, recipient, timestamp)

    def loggable(self, line: str, secret: bool) -> str:
        return _SECRET_FIELD.sub(r'"\1":"<hidden>"', _SECRET_COMMAND.sub(r'"!\1 <hidden>"', line))

    def login_failed(self, text: str, details: dict[str, Any], timestamp: str) -> str:
        return server_frame(MessageType.ERROR, text, Event.LOGIN_FAILED, details, None, timestamp)


JSON: Final = JsonDialect()
