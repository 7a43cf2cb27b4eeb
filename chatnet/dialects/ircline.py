"""IRC lines: the tokenizer and the renderer, nothing else (modern.ircdocs.horse, IRCv3
message-tags). Pure: no I/O, no state.

    @time=2026-12-01T10:00:05.123Z;msgid=ab12 :alice!alice@chatnet PRIVMSG #hiking :who's in?
    └─ tags ────────────────────────────────┘ └─ source ─────────┘ └command┘ └params┘ └trailing┘

`parse` turns a line (without its CR LF) into an `IrcLine`, or raises `IrcLineError`
saying what is wrong; `render` is its inverse for what the server sends. Limits are
the usual ones: 512 bytes for the line without tags (CR LF included), 4,094 bytes of
tags from a client, 8,191 in all.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from chatnet.errors import LineTooLong, ProtocolError

# The line without its tags, CR LF included (RFC 1459), and the tags (IRCv3).
MAX_LINE_BYTES: Final = 512
MAX_CLIENT_TAG_BYTES: Final = 4094
MAX_TAG_BYTES: Final = 8191
# Parameters a command may have, the trailing one included (RFC 2812).
MAX_PARAMS: Final = 15

_ONE_LINE: Final = re.compile(r"[\r\n\0]+")
_UNESCAPE: Final = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPE: Final = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})


class IrcLineError(ProtocolError):
    """A line that is not IRC; the text says why (the dialect answers with a numeric)."""


class IrcLineTooLong(IrcLineError, LineTooLong):
    """Past IRC's 512 bytes (or its tags past theirs)."""


class IrcLine(NamedTuple):
    command: str  # upper case: "PRIVMSG", "001"
    params: tuple[str, ...] = ()
    source: str | None = None
    tags: dict[str, str] = {}  # noqa: RUF012  # never mutated: a fresh dict when there are tags


def unescape_tag(value: str) -> str:
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            following = next(chars, "")  # a lone trailing backslash is dropped
            out.append(_UNESCAPE.get(following, following))
        else:
            out.append(char)
    return "".join(out)


def escape_tag(value: str) -> str:
    return value.translate(_ESCAPE)


def _parse_tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in text.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if not key or key == "+" or any(c in key for c in " \0\r\n"):
            raise IrcLineError(f"Bad message tag {key!r}.")
        tags[key] = unescape_tag(value)  # the last of a repeated key wins
    return tags


def parse(line: str) -> IrcLine:
    """One line from a client, CR LF already gone."""
    rest = line
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        text, space, rest = rest[1:].partition(" ")
        if len(text.encode()) + 1 > MAX_CLIENT_TAG_BYTES:
            raise IrcLineTooLong(f"Message tags too long (at most {MAX_CLIENT_TAG_BYTES} bytes).")
        tags = _parse_tags(text)
        if not space:
            raise IrcLineError("Message tags and no command.")
    rest = rest.lstrip(" ")
    if len(rest.encode()) + 2 > MAX_LINE_BYTES:
        raise IrcLineTooLong(f"Line too long (at most {MAX_LINE_BYTES} bytes with CR LF, tags apart).")
    source = None
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    if "\0" in rest or "\r" in rest or "\n" in rest:
        raise IrcLineError("NUL, CR or LF inside a line.")
    params: list[str] = []
    head, colon, trailing = rest.partition(" :")
    if rest.startswith(":"):  # no command, only a trailing parameter
        head, colon, trailing = "", ":", rest[1:]
    words = [word for word in head.split(" ") if word]  # only spaces separate (str.split() takes \x1f too)
    if not words:
        raise IrcLineError("No command.")
    command, params = words[0].upper(), words[1:]
    if colon:
        params.append(trailing)
    if len(params) > MAX_PARAMS:
        raise IrcLineError(f"Too many parameters (at most {MAX_PARAMS}).")
    if not (command.isalpha() and command.isascii()) and not (len(command) == 3 and command.isdigit()):
        raise IrcLineError(f"Bad command {command[:20]!r}.")
    return IrcLine(command, tuple(params), source, tags)


def render(command: str, *params: str, source: str | None = None, tags: dict[str, str] | None = None, text: bool = False) -> str:
    """A line the server sends, CR LF included. The last parameter goes after ':' when
    it must (empty, a space, or a leading ':'), or when it is `text` (a message, a
    numeric's words: clients have long expected the colon there)."""
    if any("\r" in param or "\n" in param or "\0" in param for param in params):
        params = tuple(_ONE_LINE.sub(" ", param) for param in params)  # never a second line smuggled in
    parts: list[str] = []
    if tags:
        parts.append("@" + ";".join(f"{key}={escape_tag(value)}" if value else key for key, value in tags.items()))
    if source:
        parts.append(":" + source)
    parts.append(command)
    if params:
        *middle, last = params
        parts.extend(middle)
        parts.append(":" + last if text or not last or " " in last or last.startswith(":") else last)
    return " ".join(parts) + "\r\n"
