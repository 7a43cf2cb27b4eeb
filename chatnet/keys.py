"""Where a message stands, pure (no database): the keys, cursors and times that the
store, its callers and the API share.

A message's place in a conversation is its key, (timestamp, id) (`message_key`): history
pages by key, so a page boundary inside a burst of messages sharing one millisecond
skips and repeats nothing. `seq_of` makes a key one text the store compares exactly,
`encode_cursor` an opaque cursor for clients; `Page` gathers a page of history by key.
`pair_key` names a conversation between two people, and `epoch_ms` / `ms_text` turn
times into the whole milliseconds a bucket's span is kept in, and back.
"""

from __future__ import annotations

import base64
import heapq
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from chatnet.protocol import format_datetime, parse_timestamp

# A message id, at most (as the Message model has it).
MAX_ID_CHARS: Final = 64


def pair_key(a: str, b: str) -> str:
    """The same key for both directions of a conversation, whatever the case of the
    names ('|' is not a name character)."""
    a, b = a.lower(), b.lower()
    return f"{a}|{b}" if a <= b else f"{b}|{a}"


EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
MILLISECOND: Final = timedelta(milliseconds=1)


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch (exact, no float), rounded up: stored times have
    milliseconds, so `epoch_ms(t) < epoch_ms(before)` is exactly "t earlier than before".

    A bucket's span is kept in these: the embedded store compares datetimes (and
    date-like text) through SQLite's datetime(), to the second, so a page boundary
    inside a second would lose messages; whole numbers compare exactly everywhere."""
    return -((EPOCH - value) // MILLISECOND)


def ms_text(value: int) -> str:
    """Milliseconds since the epoch as protocol text."""
    return format_datetime(EPOCH + value * MILLISECOND)


# --- where a message stands in a conversation ----------------------------------------------

# A message's place in a conversation: (timestamp as protocol text, id). Ties within a
# millisecond fall back to the id, which the chat server makes in sending order, so a
# conversation reads back in the order it was written, and a page boundary inside a
# burst of messages sharing one millisecond neither skips nor repeats any of them.
Key = tuple[str, str]
# The protocol text of a timestamp is fixed width (`format_datetime`): 24 characters.
STAMP_CHARS: Final = 24
SEQ_PREFIX: Final = "t"


def message_key(message: Mapping[str, Any]) -> Key:
    """A message's place (a message in its JSON shape, or a history entry)."""
    return message["timestamp"], message["id"]


def seq_of(key: Key) -> str:
    """A key as one text that sorts as the key does (the timestamp is fixed width), for
    a field the store compares: read markers, the newest message of a conversation.
    It starts with a letter: the embedded store compares text that looks like a date
    through SQLite's datetime(), to the second."""
    return f"{SEQ_PREFIX}{key[0]}|{key[1]}"


def key_of(seq: str) -> Key:
    """The key a `seq_of` text holds (ids may hold '|': the timestamp is cut by width)."""
    return seq[1 : 1 + STAMP_CHARS], seq[2 + STAMP_CHARS :]


def encode_cursor(key: Key) -> str:
    """A page boundary as an opaque cursor (URL-safe text): what a client hands back
    for the next page, and never reads."""
    return base64.urlsafe_b64encode(seq_of(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Key:
    """The key a cursor holds; ValueError for anything `encode_cursor` did not make.
    The id may be empty: the start of a millisecond (a read marker set at a join)."""
    try:
        seq = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not a cursor this API gave") from None
    stamp, message_id = key_of(seq)
    if not seq.startswith(SEQ_PREFIX) or seq[1 + STAMP_CHARS : 2 + STAMP_CHARS] != "|" or len(message_id) > MAX_ID_CHARS:
        raise ValueError("not a cursor this API gave")
    try:
        if format_datetime(parse_timestamp(stamp)) != stamp:
            raise ValueError
    except ValueError:
        raise ValueError("not a cursor this API gave") from None
    return stamp, message_id


def stamp_ms(stamp: str) -> int:
    """Protocol text of a timestamp as epoch milliseconds (see `epoch_ms`)."""
    return epoch_ms(parse_timestamp(stamp))


def newest_first(doc: Mapping[str, Any]) -> Key:
    return doc["timestamp"], doc["id"]


class Page:
    """A page of history being gathered: the newest `limit` distinct messages placed
    before `before` and after `after` (keys, either bound optional), kept as a min-heap
    of keys so the page's oldest is at hand."""

    def __init__(self, limit: int, before: Key | None = None, after: Key | None = None) -> None:
        self.limit = limit
        self.before = before
        self.after = after
        self.messages: dict[str, dict[str, Any]] = {}
        self.heap: list[Key] = []

    def add(self, messages: Iterable[dict[str, Any]]) -> None:
        before, after = self.before, self.after
        for message in messages:
            key = (message["timestamp"], message["id"])
            if key[1] in self.messages or (before is not None and key >= before) or (after is not None and key <= after):
                continue
            if len(self.heap) < self.limit:
                heapq.heappush(self.heap, key)
            elif key > self.heap[0]:
                del self.messages[heapq.heapreplace(self.heap, key)[1]]
            else:
                continue
            self.messages[key[1]] = message

    def complete_before(self, latest: str) -> bool:
        """Full, and nothing at or before `latest` could enter it any more."""
        return len(self.heap) == self.limit and self.heap[0][0] > latest

    def result(self) -> list[dict[str, Any]]:
        """The page, newest first."""
        return sorted(self.messages.values(), key=newest_first, reverse=True)
