"""The dialects: parsing lines into events and rendering what the server says, both
ways, for text and JSON mode. Pure: no sockets, no loop."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from chatnet.dialects import JSON, TEXT, pick_text_or_json
from chatnet.dialects.json import client_frame, parse_frame
from chatnet.dialects.text import PROMPT, ChatLine, chat_line, parse_line, read_chat_line, room_line, stored_line
from chatnet.errors import BadFrame, ProtocolError
from chatnet.limits import MAX_MESSAGE_CHARS
from chatnet.message import Message, parse_message
from chatnet.protocol import Chat, Command, Event, Login, MessageType, Quit, Typing, message_json

NOW = "2026-11-21T10:00:05.123Z"


# --- text mode -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("bob: hi", Chat("bob", "hi")),
        ("  joe:   hello!!  ", Chat("joe", "hello!!")),
        ("bob: a: b", Chat("bob", "a: b")),
        ("x.y-z_1: ok", Chat("x.y-z_1", "ok")),
        ("!check", Command("check")),
        ("!WHO", Command("who")),
        ("!help", Command("help")),
        ("exit", Quit()),
        ("EXIT", Quit()),
    ],
)
def test_text_lines_parse(line: str, expected: object) -> None:
    """Valid text-mode lines become typed events."""
    assert parse_line(line) == expected


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "Empty line"),
        (": hi", "No destination"),
        ("hello", "name: message"),
        ("b@d: hi", "Invalid destination"),
        ("a" * 33 + ": hi", "Invalid destination"),
        ("bob:", "Empty message"),
        ("bob: " + "x" * (MAX_MESSAGE_CHARS + 1), "too long"),
        ("!nope", "Unknown command"),
    ],
)
def test_bad_text_lines_say_what_is_wrong(line: str, reason: str) -> None:
    """Each mistake gets its own plain explanation."""
    with pytest.raises(ProtocolError, match=reason):
        parse_line(line)


# --- JSON mode -------------------------------------------------------------------------


def test_login_frame() -> None:
    """A login frame carries the user and optional features."""
    event = parse_frame('{"type": "login", "user": "alice", "features": ["stream"]}')
    assert event == Login("alice", frozenset({"stream"}))


def test_chat_frame_ignores_fields_a_client_may_not_set() -> None:
    """id, sender and timestamp from a client are not part of the parsed event."""
    frame = {"type": "chat", "destination": "bob", "message": "hi", "sender": "mallory", "id": "x", "timestamp": "2000-01-01T00:00:00Z", "metadata": {"k": 1}}
    assert parse_frame(json.dumps(frame)) == Chat("bob", "hi", {"k": 1})


def test_chat_frame_drops_metadata_only_the_server_writes() -> None:
    """A client can't fake a notice, claim another's features, or pass its message off as stored mail or an echo."""
    frame = {
        "type": "chat", "destination": "bob", "message": "hi",
        "metadata": {"stored": True, "sender_features": ["stream"], "event": "shutdown", "echo": True, "note": 1},
    }  # fmt: skip
    assert parse_frame(json.dumps(frame)) == Chat("bob", "hi", {"note": 1})


def test_subscription_frame_keeps_its_type() -> None:
    """A service's broadcast is routed like chat but stays a subscription."""
    event = parse_frame('{"type": "subscription", "destination": "al", "message": "21.5 C"}')
    assert isinstance(event, Chat) and event.type == MessageType.SUBSCRIPTION


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "Malformed JSON"),
        ("[1, 2]", "JSON object"),
        ('{"type": "dance"}', "Unknown frame type"),
        ('{"type": "chat", "message": "hi"}', "destination"),
        ('{"type": "chat", "destination": "bob"}', "message"),
        ('{"type": "chat", "destination": "b b", "message": "hi"}', "Invalid destination"),
        ('{"type": "chat", "destination": "bob", "message": "hi", "metadata": [1]}', "metadata"),
        ('{"type": "command"}', "command"),
        ('{"type": "login", "user": 5}', "user"),
        ('{"type": "login", "user": "ok", "features": "stream"}', "features"),
        ('{"type": "chat", "destination": "bob", "message": "hi", "metadata": {"n": ' + "9" * 5000 + "}}", "number too long"),
        ('{"metadata": ' * 2000 + "1" + "}" * 2000, "nesting too deep"),
        ('{"type": "chat", "destination": "bob", "message": "\\ud800 half"}', "lone surrogate"),
        ('{"type": "chat", "destination": "bob", "message": "hi", "metadata": {"x": NaN}}', "NaN is not a JSON number"),
        ('{"type": "typing", "active": true}', "A typing frame needs a 'destination'"),
        ('{"type": "typing", "destination": "", "active": true}', "A typing frame needs a 'destination'"),
        ('{"type": "typing", "destination": "b b", "active": true}', "Invalid destination"),
        ('{"type": "typing", "destination": "#", "active": true}', "Invalid room"),
        ('{"type": "typing", "destination": "bob"}', "'active': true or false"),
        ('{"type": "typing", "destination": "bob", "active": 1}', "'active': true or false"),
        ('{"type": "typing", "destination": "bob", "active": "yes"}', "'active': true or false"),
    ],
)
def test_bad_frames_say_what_is_wrong(line: str, reason: str) -> None:
    """Malformed frames raise BadFrame/ProtocolError with a reason."""
    with pytest.raises(ProtocolError, match=reason):
        parse_frame(line)


def test_escaped_characters_are_welcome() -> None:
    """Escapes that make real characters (a pair of surrogates included) parse as text."""
    assert parse_frame('{"type": "chat", "destination": "bob", "message": "\\u00e9 \\ud83d\\ude00"}') == Chat("bob", "é 😀")


def test_unknown_frame_types_name_every_type_there_is() -> None:
    """The refusal of an unknown type lists the ones a client may send, typing among them."""
    with pytest.raises(BadFrame, match="'chat', 'subscription', 'command', 'ack', 'pong' or 'typing'"):
        parse_frame('{"type": "dance"}')


@pytest.mark.parametrize(("destination", "active"), [("bob", True), ("bob", False), ("#hiking", True)])
def test_typing_frame(destination: str, active: bool) -> None:
    """A typing frame, to a person or a room, becomes a Typing event."""
    event = parse_frame(json.dumps({"type": "typing", "destination": destination, "active": active}))
    assert type(event) is Typing and event == Typing(destination, active)


def test_command_frame() -> None:
    """Commands travel as command frames."""
    assert parse_frame('{"type": "command", "message": "!who"}') == Command("who")
    assert parse_frame('{"type": "command", "message": "exit"}') == Quit()
    with pytest.raises(BadFrame):
        parse_frame('{"type": "command", "message": "  "}')


# --- rendering ------------------------------------------------------------------------


def delivery(message: str = "hi", metadata: dict | None = None, msg_id: str | None = None, features: tuple[str, ...] = ()):  # type: ignore[no-untyped-def, type-arg]
    return (msg_id, "alice", "bob", message, NOW, MessageType.CHAT, metadata, features)


def test_text_lines_keep_the_original_phrases() -> None:
    """Live and stored lines read exactly as the design names them."""
    when = datetime(2026, 11, 21, 10, 0, 0, tzinfo=timezone.utc)
    stored = Message(sender="bob", destination="alice", message="hello!!", timestamp=when)
    assert TEXT.delivery(delivery()) == "[2026-11-21T10:00:05Z][alice] hi\n"
    assert TEXT.stored(message_json(stored)) == "[Stored] [2026-11-21T10:00:00Z][bob] 'hello!!'\n"
    assert TEXT.notice("Online (1): alice", Event.WHO, {"users": ["alice"]}, "alice", NOW) == "Online (1): alice\n"
    assert TEXT.error("No destination.", Event.BAD_INPUT, {}, "alice", NOW) == "Error: No destination.\n"
    assert TEXT.login_failed("The name 'bob' is already online; choose another.", {"reason": "name_taken"}, NOW) == (
        "The name 'bob' is already online; choose another.\n" + PROMPT
    )
    assert TEXT.greeting() == "Enter username:\n"


@pytest.mark.parametrize("destination", ["bob", "x.y-z_1", "B0b"])
def test_text_chat_round_trip(destination: str) -> None:
    """What a person types reaches the reader as the same words, signed by the sender."""
    chat = parse_line(f"{destination}: hello there")
    assert chat == Chat(destination, "hello there")
    line = TEXT.delivery(("id", "alice", chat.destination, chat.message, NOW, chat.type, chat.metadata, ()))
    assert line == "[2026-11-21T10:00:05Z][alice] hello there\n"


def test_a_destination_seen_valid_is_still_checked_when_spaced() -> None:
    """The cache of valid destinations never lets a bad one through."""
    assert parse_line("bob: one") == Chat("bob", "one")
    assert parse_line(" bob : two") == Chat("bob", "two")
    with pytest.raises(ProtocolError, match="Invalid destination"):
        parse_line("bo b: three")


def test_streamed_chunks_reach_text_readers_only_whole() -> None:
    """A partial chunk of a streamed reply renders as nothing in text mode; the final one shows."""
    chunk = {"stream": {"id": "s1", "seq": 1, "done": False}}
    final = {"stream": {"id": "s1", "seq": 2, "done": True}}
    assert TEXT.delivery(delivery("Hel", chunk)) == ""
    assert TEXT.delivery(delivery("Hello", final)) == "[2026-11-21T10:00:05Z][alice] Hello\n"
    assert parse_message(JSON.delivery(delivery("Hel", chunk, "m1"))).metadata == chunk


def test_json_delivery_round_trip() -> None:
    """A live JSON frame carries every field, the id the router chose, and the sender's features."""
    frame = parse_message(JSON.delivery(delivery('hé "q"', {"k": [1]}, "m1", ("stream",))))
    assert (frame.id, frame.sender, frame.destination, frame.message) == ("m1", "alice", "bob", 'hé "q"')
    assert frame.metadata == {"k": [1], "sender_features": ["stream"]}
    assert frame.timestamp == datetime(2026, 11, 21, 10, 0, 5, 123000, tzinfo=timezone.utc)


def test_json_stored_mail_is_marked_stored() -> None:
    """Mail handed over from the store keeps its id and time and says it was stored."""
    original = Message(sender="joe", destination="alice", message="later", metadata={"k": 1})
    frame = parse_message(JSON.stored(message_json(original)))
    assert frame.model_copy(update={"metadata": original.metadata}) == original
    assert frame.metadata == {"k": 1, "stored": True}


@pytest.mark.parametrize(
    ("render", "kind"),
    [(JSON.notice, MessageType.NOTIFICATION), (JSON.error, MessageType.ERROR)],
)
def test_json_notices_say_what_they_are(render, kind) -> None:  # type: ignore[no-untyped-def]
    """A server notice is a frame from `server` to its reader, named by metadata.event."""
    frame = parse_message(render("Online (1): alice", Event.WHO, {"users": ["alice"]}, "alice", NOW))
    assert (frame.sender, frame.destination, frame.type) == ("server", "alice", kind)
    assert frame.metadata == {"event": "who", "users": ["alice"]}
    refused = parse_message(JSON.login_failed("Too many failed logins", {"reason": "locked", "retry_after": 30}, NOW))
    assert refused.type == MessageType.ERROR and refused.metadata == {"event": "login_failed", "reason": "locked", "retry_after": 30}


@pytest.mark.parametrize(
    "event",
    [
        Chat("bob", "hi"),
        Chat("bob", "hi", {"k": 1}),
        Chat("svc", "21.5 C", None, MessageType.SUBSCRIPTION),
        Command("who"),
        Command("check"),
        Login("alice", frozenset({"stream", "ack"})),
        Login("alice", frozenset(), "secret words"),
        Typing("bob", True),
        Typing("#hiking", False),
    ],
)
def test_client_frames_round_trip(event: object) -> None:
    """What a client sends for an event parses back to that event."""
    assert parse_frame(json.dumps(client_frame(event))) == event  # type: ignore[arg-type]


def test_first_line_picks_the_dialect() -> None:
    """A JSON object means a program; anything else is a person."""
    assert pick_text_or_json('{"type": "login", "user": "bot"}') is JSON
    assert pick_text_or_json('  {"type": "login"}') is JSON
    assert pick_text_or_json("alice") is TEXT
    assert TEXT.parse_login("  alice ") == Login("alice")
    with pytest.raises(BadFrame, match="Log in first"):
        JSON.parse_login('{"type": "chat", "destination": "bob", "message": "hi"}')
    with pytest.raises(ProtocolError, match="Invalid username"):
        TEXT.parse_login("no spaces")


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({"a\u0000b": 1}, "NUL"),
        ({"$where": 1}, "leading '\\$'"),
        ({"deep": json.loads('{"a":' * 40 + "1" + "}" * 40)}, "nesting deeper"),
    ],
)
def test_metadata_the_store_cant_hold_is_refused(metadata: dict, reason: str) -> None:  # type: ignore[type-arg]
    """Keys with a NUL or a leading '$', and nesting past the limit, are refused to their sender."""
    frame = json.dumps({"type": "chat", "destination": "bob", "message": "hi", "metadata": metadata})
    with pytest.raises(BadFrame, match=reason):
        parse_frame(frame)


@pytest.mark.parametrize("name", [".", "..", "..."])
def test_dots_alone_are_no_name(name: str) -> None:
    """'.' and '..' mean something else in a URL path: no user, no destination."""
    with pytest.raises(ProtocolError, match="not dots alone"):
        TEXT.parse_login(name)
    with pytest.raises(ProtocolError, match="Invalid destination"):
        parse_line(f"{name}: hi")


def test_a_client_reads_back_the_chat_lines_the_text_dialect_writes() -> None:
    """read_chat_line is the inverse of the writers: a client parses what the dialect renders, and nothing else."""
    shown = "2026-12-01T10:00:05Z"
    assert read_chat_line(chat_line(shown, "alice", "hi: there").rstrip("\n")) == ChatLine(shown, None, "alice", "hi: there", False)
    assert read_chat_line(room_line(shown, "#hiking", "bob", "who's in?").rstrip("\n")) == ChatLine(shown, "#hiking", "bob", "who's in?", False)
    assert read_chat_line(stored_line(shown, "joe", "hello!!").rstrip("\n")) == ChatLine(shown, None, "joe", "hello!!", True)
    live = TEXT.delivery(("1", "carol", "#hiking", "me", "2026-12-01T10:00:05.123Z", "chat", None, ()))
    assert read_chat_line(live.rstrip("\n")) == ChatLine(shown, "#hiking", "carol", "me", False)
    assert read_chat_line("Joined #hiking (3 members, 2 online).") is None
