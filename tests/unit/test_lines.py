"""Line splitting: bytes from a socket become bounded lines."""

from __future__ import annotations

import pytest

from chatnet.errors import LineTooLong
from chatnet.lines import LineBuffer


def limited(limit: int) -> LineBuffer:
    """A LineBuffer with its own line limit (a session's is MAX_LINE_BYTES)."""
    return type("Limited", (LineBuffer,), {"__slots__": (), "limit": limit})()


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
    buffer = limited(64)
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
    assert limited(8).feed(b"12345678\n") == [b"12345678"]
