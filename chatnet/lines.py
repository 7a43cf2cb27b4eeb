"""Where bytes from a socket become lines (`LineBuffer`), bounded per line. Pure."""

from __future__ import annotations

from typing import Any, ClassVar

from mypy_extensions import mypyc_attr

from chatnet.errors import LineTooLong
from chatnet.limits import MAX_LINE_BYTES


@mypyc_attr(allow_interpreted_subclasses=True)  # Session, its subclass, allows them: so must its base
class LineBuffer:
    """Splits a byte stream into lines, bounded by `limit` bytes per line.

    `feed` returns complete lines (without the newline, `\\r` stripped); an over-long
    line comes out once as a `LineTooLong` instance in its place, and its bytes are
    dropped as they arrive, so a peer can't make us buffer more than `limit`.

    It is a base of `chatnet.session.Session`, so splitting a connection's stream costs
    the session one slot, not an object of its own (56 bytes a connection).
    """

    __slots__ = ("_rest",)
    limit: ClassVar[int] = MAX_LINE_BYTES

    def __init__(self) -> None:
        self._rest: bytes | None = b""  # an unfinished line; None while an over-long one is dropped

    def feed(self, data: bytes) -> list[bytes | LineTooLong]:
        rest = self._rest
        if rest is None:
            end = data.find(b"\n")
            if end < 0:
                return []
            data = data[end + 1 :]
        elif rest:
            data = rest + data  # at most `limit` bytes carried over
        lines: list[Any] = data.split(b"\n")  # splitting in C beats a loop per line
        rest = lines.pop()
        limit = self.limit
        if lines and max(map(len, lines)) > limit:
            lines = [line if len(line) <= limit else self._too_long() for line in lines]
        # find, not `in`: bytes.__contains__ first tries its argument as an int, and the
        # TypeError it formats and clears costs more than the search (≈ 1,800 instructions).
        if data.find(b"\r") >= 0:
            lines = [line[:-1] if type(line) is bytes and line.endswith(b"\r") else line for line in lines]
        if len(rest) > limit:
            self._rest = None
            lines.append(self._too_long())
        else:
            self._rest = rest
        return lines

    def _too_long(self) -> LineTooLong:
        return LineTooLong(f"Line too long (the limit is {self.limit} bytes); it was ignored.")

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held right now."""
        return len(self._rest or b"")
