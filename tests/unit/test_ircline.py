"""IRC lines: the tokenizer against the cases of the parser test suite clients share
(tags, source, params, trailing), its limits, and render ∘ parse round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatnet.dialects.ircline import MAX_LINE_BYTES, IrcLine, IrcLineError, escape_tag, parse, render, unescape_tag


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("PING", IrcLine("PING")),
        ("ping :token here", IrcLine("PING", ("token here",))),
        ("NICK alice", IrcLine("NICK", ("alice",))),
        ("USER alice 0 * :Alice Liddell", IrcLine("USER", ("alice", "0", "*", "Alice Liddell"))),
        ("PRIVMSG #hiking :who's in? :)", IrcLine("PRIVMSG", ("#hiking", "who's in? :)"))),
        ("PRIVMSG bob :", IrcLine("PRIVMSG", ("bob", ""))),
        ("PRIVMSG   bob   hi", IrcLine("PRIVMSG", ("bob", "hi"))),
        (":alice!a@h PRIVMSG bob :hi", IrcLine("PRIVMSG", ("bob", "hi"), "alice!a@h")),
        ("@label=1;+draft/reply=ab PRIVMSG bob :hi", IrcLine("PRIVMSG", ("bob", "hi"), None, {"label": "1", "+draft/reply": "ab"})),
        (r"@k=a\sb\:c\\d\re\nf\x;flag CAP LS", IrcLine("CAP", ("LS",), None, {"k": "a b;c\\d\re\nfx", "flag": ""})),
        ("CAP REQ :server-time echo-message", IrcLine("CAP", ("REQ", "server-time echo-message"))),
        ("001 alice :Welcome", IrcLine("001", ("alice", "Welcome"))),
    ],
)
def test_lines_are_split_as_the_protocol_says(line: str, expected: IrcLine) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("", "No command"),
        ("   ", "No command"),
        (":alice", "No command"),
        ("@a=b", "no command"),
        ("PRIV MSG", None),  # two words: a command and a parameter, which is fine
        ("PRIVMSG! bob hi", "Bad command"),
        ("12 bob", "Bad command"),
        ("@=x PING", "Bad message tag"),
        ("PRIVMSG bob :" + "x" * MAX_LINE_BYTES, "Line too long"),
        ("@" + "k=" + "v" * 5000 + " PING", "tags too long"),
        ("A " + " ".join(["p"] * 16), "Too many parameters"),
        ("PRIVMSG bob :a\0b", "NUL"),
    ],
)
def test_bad_lines_are_refused_with_the_reason(line: str, why: str | None) -> None:
    if why is None:
        assert parse(line).command == "PRIV"
        return
    with pytest.raises(IrcLineError, match=why):
        parse(line)


def test_rendering_puts_a_colon_before_the_last_parameter_only_when_needed() -> None:
    assert render("PING", "abc") == "PING abc\r\n"
    assert render("PRIVMSG", "#hiking", "who's in?", source="alice!alice@chatnet") == ":alice!alice@chatnet PRIVMSG #hiking :who's in?\r\n"
    assert render("PRIVMSG", "bob", "") == "PRIVMSG bob :\r\n"
    assert render("PRIVMSG", "bob", ":)") == "PRIVMSG bob ::)\r\n"
    assert render("CAP", "*", "LS", tags={"time": "2026-12-01T10:00:05.123Z", "flag": ""}) == "@time=2026-12-01T10:00:05.123Z;flag CAP * LS\r\n"


@given(st.text())
def test_tag_values_escape_and_unescape_to_themselves(value: str) -> None:
    assert unescape_tag(escape_tag(value)) == value
    assert not {" ", ";", "\r", "\n"} & set(escape_tag(value))


middle = st.text(st.characters(blacklist_characters=" \0\r\n:", blacklist_categories=("Cs",)), min_size=1, max_size=20)
trailing = st.text(st.characters(blacklist_characters="\0\r\n", blacklist_categories=("Cs",)), max_size=60)
tag_key = st.from_regex(r"\A\+?[a-z][a-z0-9/.-]{0,10}\Z")


@given(
    st.sampled_from(["PRIVMSG", "NOTICE", "JOIN", "001", "433"]),
    st.lists(middle, max_size=5),
    trailing,
    st.dictionaries(tag_key, st.text(max_size=20).filter(lambda v: "\0" not in v), max_size=3),
)
def test_parse_reads_back_what_render_wrote(command: str, params: list[str], last: str, tags: dict[str, str]) -> None:
    line = render(command, *params, last, source="alice!alice@chatnet", tags=tags)
    assert line.endswith("\r\n")
    assert parse(line[:-2]) == IrcLine(command, (*params, last), "alice!alice@chatnet", tags)
