"""The pure protocol: line splitting, parsing, formatting, the Message model."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from chatnet.errors import BadEncoding, BadFrame, LineTooLong, ProtocolError
from chatnet.protocol import (
    MAX_MESSAGE_CHARS,
    Chat,
    Command,
    LineBuffer,
    Login,
    Message,
    MessageType,
    Quit,
    decode_line,
    format_datetime,
    format_json,
    format_text,
    format_timestamp,
    json_line,
    new_id,
    parse_json_frame,
    parse_message,
    parse_text_line,
    short_timestamp,
)

# --- LineBuffer ------------------------------------------------------------------------


def test_lines_split_on_newline_and_strip_cr() -> None:
    """Complete lines come out without their line ending; the rest waits."""
    buffer = LineBuffer()
    assert buffer.feed(b"alice\r\nbob: hi\npart") == [b"alice", b"bob: hi"]
    assert buffer.pending == 4
    assert buffer.feed(b"ial\n") == [b"partial"]


def test_one_byte_at_a_time_gives_the_same_lines() -> None:
    """Feeding a byte at a time yields exactly what one big feed yields."""
    data = b"alice\nbob: hello there\r\n!who\n\nexit\n"
    whole = LineBuffer().feed(data)
    buffer = LineBuffer()
    pieces: list[bytes | LineTooLong] = []
    for i in range(len(data)):
        pieces += buffer.feed(data[i : i + 1])
    assert pieces == whole == [b"alice", b"bob: hello there", b"!who", b"", b"exit"]


@pytest.mark.parametrize("chunk", [1, 7, 100, 10_000])
def test_overlong_line_is_reported_once_and_never_buffered(chunk: int) -> None:
    """A line over the limit becomes one LineTooLong; the buffer stays bounded; the next line is fine."""
    buffer = LineBuffer(limit=64)
    data = b"x" * 5000 + b"\nbob: after\n"
    out: list[bytes | LineTooLong] = []
    for i in range(0, len(data), chunk):
        out += buffer.feed(data[i : i + chunk])
        assert buffer.pending <= 64
    assert len(out) == 2
    assert isinstance(out[0], LineTooLong)
    assert out[1] == b"bob: after"


def test_line_exactly_at_the_limit_is_accepted() -> None:
    """The limit is inclusive."""
    assert LineBuffer(limit=8).feed(b"12345678\n") == [b"12345678"]


def test_invalid_utf8_is_a_protocol_error() -> None:
    """Bytes that are not UTF-8 are refused with a clear reason."""
    with pytest.raises(BadEncoding, match="UTF-8"):
        decode_line(b"bob: \xff\xfe")
    assert decode_line("bob: h\u00e9llo".encode()) == "bob: h\u00e9llo"


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
    assert parse_text_line(line) == expected


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
        parse_text_line(line)


# --- JSON mode -------------------------------------------------------------------------


def test_login_frame() -> None:
    """A login frame carries the user and optional features."""
    event = parse_json_frame('{"type": "login", "user": "alice", "features": ["stream"]}')
    assert event == Login("alice", frozenset({"stream"}))


def test_chat_frame_ignores_fields_a_client_may_not_set() -> None:
    """id, sender and timestamp from a client are not part of the parsed event."""
    frame = {"type": "chat", "destination": "bob", "message": "hi", "sender": "mallory", "id": "x", "timestamp": "2000-01-01T00:00:00Z", "metadata": {"k": 1}}
    assert parse_json_frame(json.dumps(frame)) == Chat("bob", "hi", {"k": 1})


def test_chat_frame_drops_metadata_only_the_server_writes() -> None:
    """A client can't claim another's features or pass its message off as stored mail."""
    frame = {"type": "chat", "destination": "bob", "message": "hi", "metadata": {"stored": True, "sender_features": ["stream"], "note": 1}}
    assert parse_json_frame(json.dumps(frame)) == Chat("bob", "hi", {"note": 1})


def test_subscription_frame_keeps_its_type() -> None:
    """A service's broadcast is routed like chat but stays a subscription."""
    event = parse_json_frame('{"type": "subscription", "destination": "al", "message": "21.5 C"}')
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
    ],
)
def test_bad_frames_say_what_is_wrong(line: str, reason: str) -> None:
    """Malformed frames raise BadFrame/ProtocolError with a reason."""
    with pytest.raises(ProtocolError, match=reason):
        parse_json_frame(line)


def test_command_frame() -> None:
    """Commands travel as command frames."""
    assert parse_json_frame('{"type": "command", "message": "!who"}') == Command("who")
    assert parse_json_frame('{"type": "command", "message": "exit"}') == Quit()
    with pytest.raises(BadFrame):
        parse_json_frame('{"type": "command", "message": "  "}')


# --- Message model and formatting ---------------------------------------------------------


def test_message_round_trips_through_json() -> None:
    """format_json and parse_message are inverses."""
    message = Message(sender="alice", destination="bob", message="h\u00e9 \U0001f600 \"q\"", metadata={"a": [1, 2]})
    assert parse_message(format_json(message)) == message


def test_message_rejects_bad_names_and_long_text() -> None:
    """An invalid Message can't be built."""
    with pytest.raises(ValidationError):
        Message(sender="a b", destination="bob", message="hi")
    with pytest.raises(ValidationError):
        Message(sender="alice", destination="bob", message="x" * (MAX_MESSAGE_CHARS + 1))


def test_message_is_frozen() -> None:
    """Nobody can change a message after it was made."""
    message = Message(sender="alice", destination="bob", message="hi")
    with pytest.raises(ValidationError):
        message.sender = "mallory"  # type: ignore[misc]


def test_naive_timestamps_are_utc_to_the_millisecond() -> None:
    """A naive datetime is taken as UTC; precision is what MongoDB keeps."""
    message = Message(timestamp=datetime(2026, 11, 21, 10, 0, 5, 123456))
    assert message.timestamp == datetime(2026, 11, 21, 10, 0, 5, 123000, tzinfo=timezone.utc)
    assert format_datetime(message.timestamp) == "2026-11-21T10:00:05.123Z"


def test_timestamp_formats() -> None:
    """Machines get milliseconds; people get seconds."""
    epoch = datetime(2026, 11, 21, 10, 0, 5, 7000, tzinfo=timezone.utc).timestamp()
    assert format_timestamp(epoch) == "2026-11-21T10:00:05.007Z"
    assert short_timestamp("2026-11-21T10:00:05.007Z") == "2026-11-21T10:00:05Z"


def test_text_formats_keep_the_original_phrases() -> None:
    """Live and stored lines read exactly as the design names them."""
    when = datetime(2026, 11, 21, 10, 0, 0, tzinfo=timezone.utc)
    live = Message(sender="alice", destination="bob", message="hi", timestamp=when)
    stored = Message(sender="bob", destination="alice", message="hello!!", timestamp=when, metadata={"stored": True})
    assert format_text(live) == "[2026-11-21T10:00:00Z][alice] hi\n"
    assert format_text(stored) == "[Stored] [2026-11-21T10:00:00Z][bob] 'hello!!'\n"


def test_json_line_matches_the_model() -> None:
    """The hot-path formatter produces what the model would parse back."""
    line = json_line("abc", "alice", "bob", "hi", "2026-11-21T10:00:00.000Z", "chat", None)
    message = parse_message(line)
    assert (message.id, message.sender, message.destination, message.message, message.metadata) == ("abc", "alice", "bob", "hi", {})


def test_ids_are_unique() -> None:
    """Ids never repeat within a process."""
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
