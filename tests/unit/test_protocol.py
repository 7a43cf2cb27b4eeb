"""The shared protocol: the Message model, time, ids and the encoders."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from chatnet.limits import MAX_MESSAGE_CHARS
from chatnet.message import Message, parse_message
from chatnet.protocol import (
    Clock,
    Event,
    dumps,
    format_datetime,
    format_timestamp,
    from_history_entry,
    from_mail_document,
    history_entry,
    lowered,
    mail_document,
    mail_hints,
    message_dict,
    message_json,
    message_text,
    new_id,
    parse_timestamp,
    short_timestamp,
)

# --- Message model and formatting ---------------------------------------------------------


def test_message_round_trips_through_json() -> None:
    """A Message's JSON shape, written as a line, parses back to the same Message."""
    message = Message(sender="alice", destination="bob", message="h\u00e9 \U0001f600 \"q\"", metadata={"a": [1, 2]})
    shape = message_json(message)
    assert parse_message(message_text(**shape)) == message


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


def test_message_text_matches_the_model() -> None:
    """The hot-path formatter produces what the model would parse back."""
    line = message_text("abc", "alice", "bob", "hi", "2026-11-21T10:00:00.000Z", "chat", None)
    message = parse_message(line)
    assert (message.id, message.sender, message.destination, message.message, message.metadata) == ("abc", "alice", "bob", "hi", {})


# Any code point, lone surrogates and controls included: the two must escape alike.
_any_text = st.text(st.characters(blacklist_categories=()), max_size=40)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_any_text, inner, max_size=3),
    max_leaves=8,
)


@given(
    id=_any_text,
    sender=st.none() | _any_text,
    destination=st.none() | _any_text,
    message=_any_text,
    timestamp=_any_text,
    kind=_any_text,
    metadata=st.none() | st.dictionaries(_any_text, _json_values, max_size=3),
)
def test_message_text_is_the_dict_encoded(
    id: str, sender: str | None, destination: str | None, message: str, timestamp: str, kind: str, metadata: dict[str, object] | None
) -> None:
    """The message shape written out directly is, character for character, the dict encoded."""
    fields = (id, sender, destination, message, timestamp, kind, metadata)
    assert message_text(*fields) == dumps(message_dict(*fields))


def test_ids_are_unique() -> None:
    """Ids never repeat within a process."""
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000


def test_datetime_formatter_is_exact_for_every_offset() -> None:
    """One formatter: naive (UTC), UTC and other offsets all give the same UTC text."""
    from datetime import timedelta

    naive = datetime(2026, 11, 21, 10, 0, 5, 123999)
    aware = naive.replace(tzinfo=timezone.utc)
    shifted = aware.astimezone(timezone(timedelta(hours=-5, minutes=-30)))
    assert {format_datetime(naive), format_datetime(aware), format_datetime(shifted)} == {"2026-11-21T10:00:05.123Z"}
    assert format_datetime(parse_timestamp("2026-11-21T10:00:05.123Z")) == "2026-11-21T10:00:05.123Z"


def test_clock_reads_once_per_tick() -> None:
    """The clock's text is the protocol's format and stays put between ticks."""
    clock = Clock()
    first = clock.tick()
    assert parse_timestamp(first) and clock.text is first
    assert format_timestamp(parse_timestamp(first).timestamp()) == first


def test_mail_document_round_trip() -> None:
    """A message stored as pending mail reads back as the same JSON shape."""
    message = Message(sender="alice", destination="bob", message="later", metadata={"k": 1})
    doc = mail_document(message)
    assert doc["_id"] == message.id and isinstance(doc["timestamp"], datetime)
    assert from_mail_document(doc) == message_json(message)
    assert "metadata" not in mail_document(Message(sender="a", destination="b"))  # lean documents


def test_history_entry_round_trip() -> None:
    """A message in a history bucket reads back as its JSON shape, from any of its shapes."""
    message = Message(sender="alice", destination="bob", message="hi")
    shape = message_json(message)
    for source in (message, shape, mail_document(message)):
        assert from_history_entry(history_entry(source)) == shape


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        (None, (None, None)),
        ({"mail": {"ttl_seconds": 60, "keep_latest": 5}}, (60, 5)),
        ({"mail": {"ttl_seconds": 0, "keep_latest": 10**9}}, (None, None)),
        ({"mail": {"ttl_seconds": True, "keep_latest": "5"}}, (None, None)),
        ({"mail": "soon"}, (None, None)),
    ],
)
def test_mail_hints_are_bounded(hints: dict | None, expected: tuple) -> None:  # type: ignore[type-arg]
    """A sender's storing hints count only within the bounds the API accepts."""
    assert mail_hints(hints, 3600, 100) == expected


def test_events_are_one_vocabulary() -> None:
    """Every notice name is an Event, and each value is written once."""
    values = [event.value for event in Event]
    assert len(values) == len(set(values)) and "welcome" in values and "login_failed" in values


def test_lowered_keeps_the_text_itself_when_it_is_lower_case_already() -> None:
    name = "".join(["ali", "ce"])  # built at run time: not a constant shared by the compiler
    assert lowered(name) is name
    assert lowered("Alice") == "alice" and lowered("#Hiking") == "#hiking"
