"""The IRC dialect in process: registration (CAP, PASS, SASL PLAIN, NICK/USER), the
commands an IRC client sends turned into chatnet events, and what the server says
rendered as the lines and numerics IRC clients expect (RFC 1459/2812 as
modern.ircdocs.horse describes them, IRCv3 server-time, message-tags, echo-message,
sasl). Every line the dialect renders must parse back with `ircline.parse`."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatnet.dialects import ircline
from chatnet.dialects.irc import IrcDialect
from chatnet.dialects.ircline import IrcLine
from chatnet.message import Message
from chatnet.protocol import Authenticate, Chat, Command, Delivery, Event, Login, LoginReason, MessageType, OperReason, Pong, Quit, Reply, RoomReason, message_json
from chatnet.router import Router
from tests.unit.fakes import Client, FakeApi, running_router, settings

NOW = "2026-11-21T10:00:05.123Z"
THEN = datetime(2026, 11, 20, 8, 30, 1, 250000, tzinfo=timezone.utc)
CAPS_302 = ":chatnet CAP * LS :echo-message message-tags sasl=PLAIN server-time"


# --- helpers ---------------------------------------------------------------------------


def split(text: str) -> list[str]:
    """The lines of what the dialect rendered, each of which must end with CR LF and hold
    no other CR, LF or NUL (a bare CR would end the line early in a client)."""
    if not text:
        return []
    assert text.endswith("\r\n"), f"not CR LF terminated: {text!r}"
    lines = text[:-2].split("\r\n")
    for line in lines:
        assert not {"\r", "\n", "\0"} & set(line), f"a CR, LF or NUL inside a line: {line!r}"
    return lines


def parsed(text: str) -> list[IrcLine]:
    """What an IRC client reads from `text`: every line parsed back by the tokenizer."""
    return [ircline.parse(line) for line in split(text)]


def numerics(text: str) -> list[str]:
    return [line.command for line in parsed(text)]


def reply(event: object) -> str:
    assert type(event) is Reply, f"expected a Reply, got {event!r}"
    return event.text


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def registering(*lines: str) -> tuple[IrcDialect, list[object]]:
    """A fresh dialect fed `lines` before registration; what each one returned."""
    dialect = IrcDialect()
    return dialect, [dialect.parse_login(line) for line in lines]


def registered(*caps: str, nick: str = "alice") -> IrcDialect:
    """A dialect through a whole registration (with `caps` negotiated), logged in as `nick`."""
    lines = ["CAP LS 302", f"NICK {nick}", f"USER {nick} 0 * :{nick.title()}"]
    if caps:
        lines.append(f"CAP REQ :{' '.join(caps)}")
    lines.append("CAP END")
    dialect, answers = registering(*lines)
    assert answers[-1] == Login(nick), answers
    dialect.logged_in(nick, False)
    return dialect


def delivery(text: str, sender: str = "bob", destination: str = "alice", msg_id: str | None = "m1", kind: str = MessageType.CHAT,
             metadata: dict[str, Any] | None = None, timestamp: str = NOW) -> Delivery:  # fmt: skip
    return (msg_id, sender, destination, text, timestamp, kind, metadata, ())


def events(result: object) -> list[object]:
    """What a line became, as a list (one event, or several for `JOIN #a,#b`)."""
    return result if isinstance(result, list) else [result]


# --- registration ----------------------------------------------------------------------------


def test_cap_ls_302_req_end_registers_at_cap_end_with_the_capabilities() -> None:
    """CAP LS 302 lists the capabilities with values; NICK and USER wait for CAP END; the
    ACK names what was asked and the connection then shows tags."""
    dialect, answers = registering("CAP LS 302", "NICK alice", "USER alice 0 * :Alice Liddell", "CAP REQ :server-time message-tags", "CAP END")
    ls, nick, user, ack, end = answers
    assert split(reply(ls)) == [CAPS_302]
    assert (nick, user) == (Reply(""), Reply(""))  # negotiating: registration waits
    assert split(reply(ack)) == [":chatnet CAP alice ACK :server-time message-tags"]
    assert end == Login("alice")
    assert dialect.caps == {"server-time", "message-tags"}
    assert dialect.shows_ids and not dialect.echoes
    assert dialect.name == "irc+server-time+message-tags"  # room lines are rendered once per variant


def test_cap_ls_without_302_lists_the_names_alone() -> None:
    """A client of the old CAP (no version) is offered names without values."""
    _, [ls] = registering("CAP LS")
    assert parsed(reply(ls)) == [IrcLine("CAP", ("*", "LS", "echo-message message-tags sasl server-time"), "chatnet")]


def test_cap_req_of_an_unknown_capability_is_refused_whole() -> None:
    """CAP REQ is all or nothing: one unknown capability NAKs the lot and changes nothing."""
    dialect, [_, nak] = registering("CAP REQ :server-time", "CAP REQ :echo-message draft/nope")
    assert parsed(reply(nak)) == [IrcLine("CAP", ("*", "NAK", "echo-message draft/nope"), "chatnet")]
    assert dialect.caps == {"server-time"}


def test_cap_list_and_dropping_a_capability() -> None:
    """CAP LIST says what is enabled; `-cap` in a REQ drops it."""
    dialect, [_, _, listed] = registering("CAP REQ :server-time echo-message", "CAP REQ -server-time", "CAP LIST")
    assert dialect.caps == {"echo-message"} and dialect.echoes and dialect.echoes_own
    assert parsed(reply(listed))[0].params == ("*", "LIST", "echo-message")


@pytest.mark.parametrize("order", [("NICK alice", "USER alice 0 * :Alice"), ("USER alice 0 * :Alice", "NICK alice")])
def test_a_client_that_never_sends_cap_registers_at_nick_and_user_in_either_order(order: tuple[str, str]) -> None:
    """Without CAP, the second of NICK and USER completes the registration."""
    _, [first, second] = registering(*order)
    assert first == Reply("")
    assert second == Login("alice")


def test_pass_is_the_accounts_password_and_goes_with_the_login() -> None:
    """PASS before NICK/USER is sent with the login (chatnet has no server password)."""
    _, answers = registering("PASS correct-horse", "NICK alice", "USER alice 0 * :Alice")
    assert answers == [Reply(""), Reply(""), Login("alice", password="correct-horse")]


def test_sasl_plain_checks_the_credentials_then_registers_as_the_account() -> None:
    """AUTHENTICATE PLAIN → `AUTHENTICATE +`; the payload becomes credentials to check; once
    they are good 900 and 903 follow, and CAP END logs in as the account."""
    payload = b64("\0alice\0correct horse")
    dialect, answers = registering("CAP LS 302", "NICK alice", "USER alice 0 * :Alice", "CAP REQ :sasl", "AUTHENTICATE PLAIN", f"AUTHENTICATE {payload}")
    *_, ack, plus, credentials = answers
    assert parsed(reply(ack))[0].params == ("alice", "ACK", "sasl")
    assert reply(plus) == "AUTHENTICATE +\r\n"
    assert credentials == Authenticate("alice", "correct horse")
    said = parsed(dialect.authenticated("alice"))
    assert [line.command for line in said] == ["900", "903"]
    assert said[0].params[:3] == ("alice", "alice!alice@chatnet", "alice")
    assert dialect.parse_login("CAP END") == Login("alice")
    # The account is known to be logged in: the burst does not say 900 again.
    assert "900" not in numerics(dialect.logged_in("alice", True))


def test_sasl_plain_with_the_authzid_given_too() -> None:
    """`alice\\0alice\\0pw` is the same as `\\0alice\\0pw`; another authzid is refused."""
    dialect, [*_, same] = registering("CAP REQ sasl", "AUTHENTICATE PLAIN", "AUTHENTICATE " + b64("alice\0alice\0pw-pw-pw-pw"))
    assert same == Authenticate("alice", "pw-pw-pw-pw")
    _, [*_, other] = registering("CAP REQ sasl", "AUTHENTICATE PLAIN", "AUTHENTICATE " + b64("mallory\0alice\0pw-pw-pw-pw"))
    assert numerics(reply(other)) == ["904"]


def test_a_sasl_payload_comes_in_pieces_of_400() -> None:
    """A payload of 400 base64 characters says more follows; `AUTHENTICATE +` ends one whose
    length is an exact multiple of 400."""
    payload = b64("\0alice\0" + "p" * 293)  # 300 bytes: 400 base64 characters
    assert len(payload) == 400
    _, [*_, first, last] = registering("CAP REQ sasl", "AUTHENTICATE PLAIN", f"AUTHENTICATE {payload}", "AUTHENTICATE +")
    assert first == Reply("")
    assert last == Authenticate("alice", "p" * 293)
    password = "p" * 490
    longer = b64("\0alice\0" + password)
    pieces = [longer[i : i + 400] for i in range(0, len(longer), 400)]
    assert len(pieces) == 2 and len(pieces[-1]) < 400
    _, answers = registering("CAP REQ sasl", "AUTHENTICATE PLAIN", *(f"AUTHENTICATE {piece}" for piece in pieces))
    assert answers[2:-1] == [Reply("")] * (len(pieces) - 1)
    assert answers[-1] == Authenticate("alice", password)


@pytest.mark.parametrize("payload", ["!!!not base64!!!", b64("alice\0only-two-parts"), b64("\0\0"), "gA==", b64("\0bad name\0password")])
def test_a_bad_sasl_payload_is_904_and_registration_goes_on_without_it(payload: str) -> None:
    """Bad base64, not PLAIN's three fields, invalid UTF-8 or an invalid name: 904, and the
    connection may still register (as a guest) at CAP END."""
    dialect, answers = registering("CAP LS 302", "NICK alice", "USER alice 0 * :Alice", "CAP REQ :sasl", "AUTHENTICATE PLAIN", f"AUTHENTICATE {payload}", "CAP END")
    failed, end = answers[-2:]
    assert numerics(reply(failed)) == ["904"]
    assert end == Login("alice")


def test_authenticate_star_aborts_and_registration_goes_on() -> None:
    """`AUTHENTICATE *` aborts the exchange (906); CAP END then registers without SASL."""
    _, answers = registering("CAP LS 302", "NICK alice", "USER alice 0 * :Alice", "CAP REQ :sasl", "AUTHENTICATE PLAIN", "AUTHENTICATE *", "CAP END")
    assert numerics(reply(answers[-2])) == ["906"]
    assert answers[-1] == Login("alice")


def test_an_unknown_sasl_mechanism_is_908_with_the_mechanisms_then_904() -> None:
    """Only PLAIN is offered: another mechanism is told which there are (908) and fails (904)."""
    _, [*_, answer] = registering("NICK alice", "CAP REQ :sasl", "AUTHENTICATE EXTERNAL")
    lines = parsed(reply(answer))
    assert [line.command for line in lines] == ["908", "904"]
    assert lines[0].params[:2] == ("alice", "PLAIN")


def test_authenticate_without_the_sasl_capability_fails() -> None:
    """SASL needs `CAP REQ sasl` first."""
    _, [answer] = registering("AUTHENTICATE PLAIN")
    assert numerics(reply(answer)) == ["904"]


def test_refused_sasl_credentials_are_904_and_the_nick_is_kept() -> None:
    """The check said no (a wrong password): 904, and CAP END registers the nick given
    without the account (the router decides whether that name may be a guest)."""
    dialect, _ = registering("CAP LS 302", "NICK alice", "USER alice 0 * :Alice", "CAP REQ :sasl", "AUTHENTICATE PLAIN", "AUTHENTICATE " + b64("\0alice\0wrong-password"))
    said = dialect.login_failed("Wrong password for 'alice'.", {"reason": LoginReason.WRONG_PASSWORD}, NOW)
    assert numerics(said) == ["904"]
    assert dialect.parse_login("CAP END") == Login("alice")


@pytest.mark.parametrize("line", ["JOIN #hiking", "PRIVMSG bob :hi", "WHO *", "MODE alice"])
def test_commands_before_registration_are_451(line: str) -> None:
    """Anything but registration, PING and QUIT before the end of registration: 451."""
    _, [answer] = registering(line)
    assert parsed(reply(answer)) == [IrcLine("451", ("*", "You have not registered"), "chatnet")]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["NICK"], IrcLine("431", ("*", "No nickname given"), "chatnet")),
        (["NICK :"], IrcLine("431", ("*", "No nickname given"), "chatnet")),
        (["NICK b@d!nick"], IrcLine("432", ("*", "b@d!nick", "Erroneous nickname"), "chatnet")),
        (["NICK " + "a" * 33], IrcLine("432", ("*", "a" * 33, "Erroneous nickname"), "chatnet")),
        (["USER alice 0 *"], IrcLine("461", ("*", "USER", "Not enough parameters"), "chatnet")),
        (["PASS"], IrcLine("461", ("*", "PASS", "Not enough parameters"), "chatnet")),
        (["CAP LS 302", "USER alice 0 * :Alice", "USER alice 0 * :Alice"], IrcLine("462", ("*", "You may not reregister"), "chatnet")),
    ],
)
def test_registration_mistakes_get_their_numerics(lines: list[str], expected: IrcLine) -> None:
    """431 no nick, 432 an invalid one, 461 too few parameters, 462 USER twice."""
    _, answers = registering(*lines)
    assert parsed(reply(answers[-1])) == [expected]


def test_ping_and_quit_before_registration() -> None:
    """PING is answered before registration; QUIT ends the connection."""
    _, [pong, pong_alone, quit_] = registering("PING :abc", "PONG :chatnet", "QUIT :bye")
    assert parsed(reply(pong)) == [IrcLine("PONG", ("chatnet", "abc"), "chatnet")]
    assert pong_alone == Reply("")
    assert type(quit_) is Quit


def test_a_line_that_is_no_irc_during_registration_is_answered_and_forgotten() -> None:
    """A malformed line before registration is answered (never raised) and changes nothing."""
    dialect, [nick, bad, user] = registering("NICK alice", "@=bad PING", "USER alice 0 * :Alice")
    assert nick == Reply("")
    assert numerics(reply(bad)) == ["NOTICE"]
    assert user == Login("alice")


@pytest.mark.parametrize(
    ("reason", "numeric"),
    [
        (LoginReason.NAME_TAKEN, "433"),
        (LoginReason.PASSWORD_REQUIRED, "433"),
        (LoginReason.WRONG_PASSWORD, "464"),
        (LoginReason.RESERVED, "432"),
        (LoginReason.INVALID_NAME, "432"),
    ],
)
def test_a_refused_login_is_its_numeric_and_a_new_nick_registers(reason: LoginReason, numeric: str) -> None:
    """433 (in use, or an account's without its password), 464 (wrong password), 432
    (reserved); the nick is forgotten, and the next NICK registers."""
    dialect, [_, login] = registering("NICK alice", "USER alice 0 * :Alice")
    assert login == Login("alice")
    [line] = parsed(dialect.login_failed("No.", {"reason": reason}, NOW))
    assert line.command == numeric and line.params[0] == "*"
    if numeric in ("433", "432"):
        assert line.params[1] == "alice"
    assert dialect.parse_login("NICK alice2") == Login("alice2")


def test_the_registration_burst_says_001_to_005_and_no_motd() -> None:
    """001-004, 005s with the ISUPPORT tokens DESIGN names (and the channel modes), each
    within 15 parameters, and 422: all to the nick."""
    dialect = registered()
    lines = parsed(dialect.logged_in("alice", False))
    assert [line.command for line in lines] == ["001", "002", "003", "004", "005", "005", "422"]
    assert all(line.params[0] == "alice" and line.source == "chatnet" for line in lines)
    assert "alice!alice@chatnet" in lines[0].params[-1]
    tokens = {token for line in lines[4:6] for token in line.params[1:-1]}
    assert {"CASEMAPPING=ascii", "CHANTYPES=#", "NICKLEN=32", "CHANNELLEN=33", "PREFIX=(ov)@+", "NETWORK=chatnet", "CHANMODES=b,k,l,imnst"} <= tokens
    assert all(line.params[-1] == "are supported by this server" and len(line.params) <= 15 for line in lines[4:6])


def test_the_burst_renames_a_nick_to_the_accounts_spelling_and_says_900_for_an_account() -> None:
    """NICK ALICE logging into the account `alice`: a NICK line to the account's spelling,
    and (PASS, not SASL) 900 logged in as the account."""
    dialect, [_, login] = registering("NICK ALICE", "USER alice 0 * :Alice")
    assert login == Login("ALICE")
    lines = parsed(dialect.logged_in("alice", True))
    assert lines[0] == IrcLine("NICK", ("alice",), "ALICE!ALICE@chatnet")
    assert [line.command for line in lines if line.command == "900"] == ["900"]
    assert dialect.nick == "alice"


# --- what a registered client says ---------------------------------------------------------


def test_privmsg_to_several_targets_is_one_chat_each() -> None:
    """PRIVMSG bob,#hiking,carol :hi is three messages (in #hiking: once one is in it)."""
    dialect = registered()
    dialect.notice("Joined #hiking", Event.JOINED, {"room": "#hiking", "names": ["alice"], "owner": "bob"}, "alice", NOW)
    assert events(dialect.parse("PRIVMSG bob,#hiking,carol :hi there")) == [Chat("bob", "hi there"), Chat("#hiking", "hi there"), Chat("carol", "hi there")]
    assert events(dialect.parse("PRIVMSG bob hi")) == [Chat("bob", "hi")]


def test_privmsg_past_four_targets_is_407_for_the_rest() -> None:
    """TARGMAX=PRIVMSG:4: the fifth target is refused with 407."""
    dialect = registered()
    result = events(dialect.parse("PRIVMSG a,b,c,d,e,f :hi"))
    assert result[:4] == [Chat(name, "hi") for name in "abcd"]
    assert [numerics(reply(event)) for event in result[4:]] == [["407"]]
    assert parsed(reply(result[4]))[0].params[:2] == ("alice", "e")


def test_notice_is_a_chat_marked_notice_and_never_answered_with_an_error() -> None:
    """NOTICE goes as a message marked notice (to a channel one is not in too: the room's
    -n may take it); a NOTICE nobody can get (a bad name) is dropped silently."""
    dialect = registered()
    assert events(dialect.parse("NOTICE #hiking :not in it")) == [Chat("#hiking", "not in it", {"notice": True})]
    dialect.notice("Joined #hiking", Event.JOINED, {"room": "#hiking", "names": ["alice"], "owner": "bob"}, "alice", NOW)
    assert events(dialect.parse("NOTICE bob,#hiking :ping!")) == [Chat("bob", "ping!", {"notice": True}), Chat("#hiking", "ping!", {"notice": True})]
    assert all(reply(event) == "" for event in events(dialect.parse("NOTICE b@d :x")) if type(event) is Reply)
    assert reply(dialect.parse("NOTICE")) == ""


@pytest.mark.parametrize(
    ("line", "numeric"),
    [("PRIVMSG", "411"), ("PRIVMSG bob", "412"), ("PRIVMSG bob :", "412"), ("PRIVMSG b@d :hi", "401"), ("PRIVMSG #b@d :hi", "403")],
)
def test_privmsg_mistakes_get_their_numerics(line: str, numeric: str) -> None:
    """411 no recipient, 412 no text, 401 no such nick, 403 no such channel."""
    dialect = registered()
    assert [numerics(reply(event)) for event in events(dialect.parse(line))] == [[numeric]]


def test_privmsg_to_a_channel_one_is_not_in_goes_to_the_router() -> None:
    """Whether a room takes lines from outside (-n) is the room's business: the PRIVMSG
    goes on, and a refusal comes back as 404 (+m: 404 too)."""
    dialect = registered()
    assert dialect.parse("PRIVMSG #hiking :hi") == Chat("#hiking", "hi")
    for reason in (RoomReason.NOT_MEMBER, RoomReason.MODERATED):
        said = parsed(dialect.error("no", Event.BAD_INPUT, {"room": "#hiking", "reason": reason, "sending": True}, "alice", NOW))
        assert [(line.command, line.params[1]) for line in said] == [("404", "#hiking")]


def test_join_of_several_channels_with_keys_is_one_join_of_them_in_order() -> None:
    """JOIN #a,#b key1,key2: one !join of both, each with its key, answered in the order
    given; a channel one is in is not joined again; 0 and bad names are answered."""
    dialect = registered()
    assert events(dialect.parse("JOIN #hiking,#Climbing secret,other")) == [Command("join", "#hiking secret #Climbing other")]
    assert events(dialect.parse("JOIN #hiking,#Climbing ,other")) == [Command("join", "#hiking #Climbing other")]
    dialect.notice("Created #hiking", Event.JOINED, {"room": "#hiking", "names": ["alice"], "owner": "alice"}, "alice", NOW)
    assert events(dialect.parse("JOIN #HIKING,#lake")) == [Command("join", "#lake")]
    assert [numerics(reply(event)) for event in events(dialect.parse("JOIN nochannel"))] == [["403"]]
    assert numerics(reply(dialect.parse("JOIN"))) == ["461"]


def test_join_of_more_than_ten_channels_is_407_for_the_rest() -> None:
    """TARGMAX=JOIN:10."""
    dialect = registered()
    result = events(dialect.parse("JOIN " + ",".join(f"#r{i}" for i in range(12))))
    assert result[0] == Command("join", " ".join(f"#r{i}" for i in range(10)))
    assert [numerics(reply(event)) for event in result[1:]] == [["407"]]


def test_part_of_several_channels_with_a_reason() -> None:
    """PART #a,#b :reason leaves each, the reason said to who stays; a bad name is 403."""
    dialect = registered()
    assert events(dialect.parse("PART #hiking,#lake :see you")) == [Command("leave", "#hiking see you"), Command("leave", "#lake see you")]
    result = events(dialect.parse("PART nochannel"))
    assert [numerics(reply(event)) for event in result] == [["403"]]
    assert numerics(reply(dialect.parse("PART"))) == ["461"]


def test_topic_query_and_topic_set() -> None:
    """TOPIC #a asks; TOPIC #a :text sets."""
    dialect = registered()
    assert dialect.parse("TOPIC #hiking") == Command("topic", "#hiking")
    assert dialect.parse("TOPIC #hiking :Saturday, 9:00 at the lake") == Command("topic", "#hiking Saturday, 9:00 at the lake")
    assert dialect.parse("TOPIC #hiking :") == Command("topic", "#hiking -")  # clears it
    assert numerics(reply(dialect.parse("TOPIC"))) == ["461"]
    assert numerics(reply(dialect.parse("TOPIC nochannel :x"))) == ["403"]


def test_user_mode_query_and_changes() -> None:
    """MODE <own nick> asks the router (!mode alice, answered by 221 with +i, everyone's);
    +w/-w/-o are the router's, +i alone is nothing to change; another's 502; an unknown flag 501."""
    dialect = registered()
    assert dialect.parse("MODE alice") == Command("mode", "alice")
    assert dialect.parse("MODE ALICE") == Command("mode", "alice")
    asked = {"user": "alice", "modes": "+ow", "changes": None}
    assert parsed(dialect.notice("Your modes: +ow", Event.USER_MODE, asked, "alice", NOW)) == [IrcLine("221", ("alice", "+iow"), "chatnet")]
    assert parsed(dialect.notice("Your modes: +", Event.USER_MODE, {**asked, "modes": "+"}, "alice", NOW)) == [IrcLine("221", ("alice", "+i"), "chatnet")]
    assert dialect.parse("MODE alice +iw") == Command("mode", "alice +w")
    assert dialect.parse("MODE alice -o") == Command("mode", "alice -o")
    changed = {"user": "alice", "modes": "+w", "changes": ["+w", "-o"]}
    assert parsed(dialect.notice("Your modes: +w", Event.USER_MODE, changed, "alice", NOW)) == [IrcLine("MODE", ("alice", "+w-o"), "alice!alice@chatnet")]
    assert dialect.notice("Your modes: +w", Event.USER_MODE, {**changed, "changes": []}, "alice", NOW) == ""  # nothing changed
    assert numerics(reply(dialect.parse("MODE bob"))) == ["502"]
    assert reply(dialect.parse("MODE alice +i")) == ""
    assert numerics(reply(dialect.parse("MODE alice +x"))) == ["501"]
    assert numerics(reply(dialect.parse("MODE"))) == ["461"]


def test_oper_is_the_routers_oper_and_its_answers_are_381_491_464() -> None:
    """OPER name password: !oper (461 without both); 381 and MODE +o when it worked, 491
    without operators, 464 for a wrong password or a lockout (which says how long)."""
    dialect = registered()
    assert dialect.parse("OPER operuser operpassword") == Command("oper", "operuser operpassword")
    assert dialect.parse("OPER operuser :pass word") == Command("oper", "operuser pass word")
    assert numerics(reply(dialect.parse("OPER operuser"))) == ["461"]
    lines = parsed(dialect.notice("You are a network operator now.", Event.OPER, {"user": "alice", "name": "operuser"}, "alice", NOW))
    assert lines == [IrcLine("381", ("alice", "You are now an IRC operator"), "chatnet"), IrcLine("MODE", ("alice", "+o"), "alice!alice@chatnet")]
    assert numerics(dialect.error("No operators.", Event.OPER, {"reason": OperReason.NO_OPERATORS}, "alice", NOW)) == ["491"]
    assert numerics(dialect.error("Wrong operator password.", Event.OPER, {"reason": OperReason.WRONG_PASSWORD}, "alice", NOW)) == ["464"]
    locked_out = {"reason": OperReason.LOCKED, "retry_after": 600}
    [locked] = parsed(dialect.error("Too many wrong operator passwords; try again in 600 s.", Event.OPER, locked_out, "alice", NOW))
    assert locked.command == "464" and "600 s" in locked.params[-1]


def test_wallops_is_the_routers_and_arrives_as_a_wallops_line_from_the_sender() -> None:
    """WALLOPS :text is !wallops (461 without text); what the router sends is a WALLOPS
    line from the operator, one per line of it; a non-operator is 481."""
    dialect = registered()
    assert dialect.parse("WALLOPS :hi everyone") == Command("wallops", "hi everyone")
    assert numerics(reply(dialect.parse("WALLOPS"))) == ["461"]
    said = {"user": "bob", "message": "hi everyone\nsecond"}
    assert parsed(dialect.notice("Wallops from bob: hi everyone", Event.WALLOPS, said, "alice", NOW)) == [
        IrcLine("WALLOPS", ("hi everyone",), "bob!bob@chatnet"), IrcLine("WALLOPS", ("second",), "bob!bob@chatnet")
    ]
    long = parsed(dialect.notice("x", Event.WALLOPS, {"user": "bob", "message": "é" * 400}, "alice", NOW))
    assert len(long) == 2 and "".join(line.params[0] for line in long) == "é" * 400
    assert numerics(dialect.error("Only network operators may send !wallops.", Event.WALLOPS, {"reason": OperReason.NOT_OPERATOR}, "alice", NOW)) == ["481"]


def test_info_is_371_lines_then_374() -> None:
    """INFO, anyone's: lines about chatnet (371), then 374."""
    lines = parsed(reply(registered().parse("INFO")))
    assert [line.command for line in lines] == ["371"] * (len(lines) - 1) + ["374"] and len(lines) > 1
    assert all(line.params[0] == "alice" for line in lines)


def test_channel_mode_forms() -> None:
    """MODE #a asks (!mode #a, answered by 324); changes are chatnet's !mode with the
    same letters and values (the router knows them); e and I lists are empty (349, 347);
    a value that is no word (empty, spaces) is 696 at once."""
    dialect = registered()
    assert dialect.parse("MODE #hiking") == Command("mode", "#hiking")
    assert events(dialect.parse("MODE #hiking +i")) == [Command("mode", "#hiking +i")]
    assert events(dialect.parse("MODE #hiking +kl-m beer 5")) == [Command("mode", "#hiking +kl-m beer 5")]
    assert events(dialect.parse("MODE #hiking -l+o bob")) == [Command("mode", "#hiking -l+o bob")]
    assert events(dialect.parse("MODE #hiking b")) == [Command("mode", "#hiking b")]
    assert events(dialect.parse("MODE #hiking +b bar!*@*")) == [Command("mode", "#hiking +b bar!*@*")]
    assert [numerics(reply(event)) for event in events(dialect.parse("MODE #hiking e"))] == [["349"]]
    assert [numerics(reply(event)) for event in events(dialect.parse("MODE #hiking I"))] == [["347"]]
    for line in ("MODE #hiking +k :", "MODE #hiking +k :two words"):
        [refused] = events(dialect.parse(line))
        assert parsed(reply(refused))[0].params[:4] == ("alice", "#hiking", "k", "*")
        assert parsed(reply(refused))[0].command == "696"
    assert events(dialect.parse("MODE #hiking +")) == []
    assert numerics(reply(dialect.parse("MODE #b@d"))) == ["403"]


def test_room_mode_notices_are_mode_lines_324_and_the_ban_list() -> None:
    """A change is a MODE line from whoever made it, its letters grouped by sign; the
    answer to MODE #a is 324 with the values; the ban list 367s and 368; a refused
    change 472 (unknown) or 696 (a bad value)."""
    dialect = registered()
    change = {"room": "#hiking", "by": "bob", "changes": [["+k", "beer"], ["+l", "5"], ["-m", None], ["+o", "alice"]], "private": False}
    assert parsed(dialect.notice("bob set #hiking", Event.ROOM_MODE, change, "alice", NOW)) == [
        IrcLine("MODE", ("#hiking", "+kl-m+o", "beer", "5", "alice"), "bob!bob@chatnet")
    ]
    dialect.parse("MODE #hiking")
    answer = dialect.notice("Settings", Event.ROOM_MODE, {"room": "#hiking", "modes": "+kln beer 5", "private": False}, "alice", NOW)
    assert parsed(answer) == [IrcLine("324", ("alice", "#hiking", "+kln", "beer", "5"), "chatnet")]
    bans = {"room": "#hiking", "list": "b", "bans": [{"mask": "bar!*@*", "by": "bob", "at": 7}]}
    assert [line.params for line in parsed(dialect.notice("Bans", Event.ROOM_MODE, bans, "alice", NOW))] == [
        ("alice", "#hiking", "bar!*@*", "bob", "7"),
        ("alice", "#hiking", "End of channel ban list"),
    ]
    assert numerics(dialect.error("x", Event.BAD_INPUT, {"room": "#hiking", "reason": RoomReason.BAD_MODE, "mode": "z"}, "alice", NOW)) == ["472"]
    bad = dialect.error("x", Event.BAD_INPUT, {"room": "#hiking", "reason": RoomReason.BAD_MODE, "mode": "l", "value": "abc"}, "alice", NOW)
    assert parsed(bad)[0].params[:4] == ("alice", "#hiking", "l", "*")


@pytest.mark.parametrize(("reason", "numeric"), [(RoomReason.BANNED, "474"), (RoomReason.BAD_KEY, "475"), (RoomReason.FULL, "471"), (RoomReason.NOT_OWNER, "482")])
def test_join_and_operator_refusals_are_their_numerics(reason: RoomReason, numeric: str) -> None:
    """+b 474, +k 475, +l 471; what only operators may do 482."""
    dialect = registered()
    assert numerics(dialect.error("no", Event.BAD_INPUT, {"room": "#hiking", "reason": reason}, "alice", NOW)) == [numeric]


def test_names_show_operators_voices_and_a_secret_channel() -> None:
    """NAMES: @ for each operator, + for the voiced; a secret channel's symbol is @;
    a JOIN's topic comes with who set it (333)."""
    dialect = registered()
    dialect.parse("NAMES #hiking")
    lines = parsed(members_notice(dialect, ops=["bob", "carol"], voiced=["alice"], secret=True))
    assert lines[0].params == ("alice", "@", "#hiking", "+alice @bob")
    joined = {"room": "#lake", "names": ["alice", "bob"], "owner": "bob", "ops": ["bob"], "topic": "swim", "topic_by": "bob"}
    assert numerics(dialect.notice("Joined #lake", Event.JOINED, joined, "alice", NOW)) == ["JOIN", "332", "333", "353", "366"]


def test_chatnet_commands_pass_through_by_name() -> None:
    """REGISTER <password>, CHECK, HISTORY #room 5: chatnet's own commands by their names."""
    dialect = registered()
    assert dialect.parse("REGISTER correct-horse") == Command("register", "correct-horse")
    assert dialect.parse("CHECK") == Command("check", "")
    assert dialect.parse("HISTORY #hiking 5") == Command("history", "#hiking 5")
    assert dialect.parse("LIST") == Command("rooms")
    assert dialect.parse("HELP") == Command("help")


def test_other_commands_after_registration() -> None:
    """PING → PONG, PONG, QUIT, unknown → 421, NICK to another name asks the router, USER/PASS 462,
    AWAY 306/305, MOTD 422."""
    dialect = registered()
    assert parsed(reply(dialect.parse("PING :token 1"))) == [IrcLine("PONG", ("chatnet", "token 1"), "chatnet")]
    assert numerics(reply(dialect.parse("PING"))) == ["409"]
    assert dialect.parse("PONG :chatnet") == Pong()
    assert dialect.parse("QUIT :off to bed") == Quit("off to bed")
    assert parsed(reply(dialect.parse("FROB x"))) == [IrcLine("421", ("alice", "FROB", "Unknown command"), "chatnet")]
    assert reply(dialect.parse("NICK alice")) == ""
    assert dialect.parse("NICK bob") == Command("nick", "bob")  # the router decides (a guest may, an account may not)
    assert numerics(reply(dialect.parse("NICK b@d"))) == ["432"]
    assert numerics(reply(dialect.parse("NICK"))) == ["431"]
    assert numerics(reply(dialect.parse("USER a 0 * :b"))) == ["462"]
    assert numerics(reply(dialect.parse("PASS x"))) == ["462"]
    assert dialect.parse("AWAY :lunch") == Command("away", "lunch")  # the router keeps it: whoever writes is told (301)
    assert dialect.parse("AWAY") == Command("away", "")
    assert numerics(dialect.notice("You are marked away: lunch", Event.AWAY, {"user": "alice", "away": "lunch"}, "alice", NOW)) == ["306"]
    assert numerics(dialect.notice("You are back.", Event.AWAY, {"user": "alice", "away": ""}, "alice", NOW)) == ["305"]
    assert numerics(dialect.notice("bob is away: gone", Event.AWAY, {"user": "bob", "away": "gone"}, "alice", NOW)) == ["301"]
    assert numerics(reply(dialect.parse("MOTD"))) == ["422"]
    with pytest.raises(ircline.IrcLineError):
        dialect.parse("PRIVMSG bob :" + "x" * 600)


# --- questions (WHO, WHOIS, ISON, USERHOST, LUSERS) answered from a WHO notice -------------------


def who_notice(dialect: IrcDialect, users: list[str], bots: list[str] | None = None) -> str:
    bots = bots or []
    return dialect.notice(f"Online ({len(users) + len(bots)})", Event.WHO, {"users": users, "bots": bots}, "alice", NOW)


def test_ison_is_a_who_answered_by_303() -> None:
    """ISON lists those of the names that are online, as they spell themselves."""
    dialect = registered()
    assert dialect.parse("ISON bob CAROL dave") == Command("who")
    assert parsed(who_notice(dialect, ["alice", "bob", "Carol"])) == [IrcLine("303", ("alice", "bob Carol"), "chatnet")]


def test_userhost_is_a_who_answered_by_302() -> None:
    dialect = registered()
    assert dialect.parse("USERHOST bob nobody") == Command("who")
    assert parsed(who_notice(dialect, ["alice", "bob"])) == [IrcLine("302", ("alice", "bob=+bob@chatnet"), "chatnet")]


def test_whois_of_someone_online_is_311_312_318() -> None:
    """WHOIS bob: the router's !whois; 311 with the username and real name bob's client
    gave (or the name), 312 the server, 301 if away, 330 for an account, 318 the end."""
    dialect = registered()
    assert dialect.parse("WHOIS bob") == Command("whois", "bob")
    bob = {"user": "bob", "online": True, "kind": "guest", "ident": ["bobby", "Bob B."], "away": ""}
    lines = parsed(dialect.notice("bob is online (a guest).", Event.WHOIS, bob, "alice", NOW))
    assert [line.command for line in lines] == ["311", "312", "318"]
    assert lines[0].params == ("alice", "bob", "bobby", "chatnet", "*", "Bob B.")
    bot = {"user": "openai", "online": True, "kind": "bot", "ident": ["", ""], "away": "busy"}
    lines = parsed(dialect.notice("openai is online (a bot).", Event.WHOIS, bot, "alice", NOW))
    assert [line.command for line in lines] == ["311", "312", "301", "330", "318"]
    assert "bot" in lines[0].params[-1]
    lines = parsed(dialect.notice("bob is online.", Event.WHOIS, {**bob, "operator": True}, "alice", NOW))
    assert [line.command for line in lines] == ["311", "312", "313", "318"]


def test_whois_of_someone_offline_is_401_then_318() -> None:
    dialect = registered()
    assert numerics(dialect.notice("nobody is not online.", Event.WHOIS, {"user": "nobody", "online": False}, "alice", NOW)) == ["401", "318"]
    assert numerics(reply(dialect.parse("WHOIS <unregistered>"))) == ["401", "318"]  # no name anyone could have: at once
    assert numerics(reply(dialect.parse("WHOIS"))) == ["431"]


def test_whowas_is_314_each_then_369_or_406() -> None:
    dialect = registered()
    assert dialect.parse("WHOWAS bob") == Command("whowas", "bob")
    seen = {"user": "bob", "seen": [{"name": "bob", "ident": ["bobby", "Bob B."], "left": NOW}]}
    lines = parsed(dialect.notice("bob left at ...", Event.WHOWAS, seen, "alice", NOW))
    assert [(line.command, line.params[1:]) for line in lines] == [("314", ("bob", "bobby", "chatnet", "*", "Bob B.")), ("369", ("bob", "End of WHOWAS"))]
    assert numerics(dialect.notice("Nobody named zed left here lately.", Event.WHOWAS, {"user": "zed", "seen": []}, "alice", NOW)) == ["406", "369"]
    assert dialect.parse("WHOWAS bob 1") == Command("whowas", "bob")  # the newest one only
    twice = {"user": "bob", "seen": [{"name": "bob", "ident": ["b2", "Second"], "left": NOW}, {"name": "bob", "ident": ["b1", "First"], "left": NOW}]}
    assert [line.params[-1] for line in parsed(dialect.notice("...", Event.WHOWAS, twice, "alice", NOW))] == ["Second", "End of WHOWAS"]


def test_who_of_everyone_is_352_each_then_315() -> None:
    dialect = registered()
    assert dialect.parse("WHO *") == Command("who")
    lines = parsed(who_notice(dialect, ["alice", "bob"]))
    assert [line.command for line in lines] == ["352", "352", "315"]
    assert lines[1].params == ("alice", "*", "bob", "chatnet", "chatnet", "bob", "H", "0 bob")
    assert lines[2].params[:2] == ("alice", "*")


def test_lusers_is_251_and_255() -> None:
    dialect = registered()
    assert dialect.parse("LUSERS") == Command("who")
    lines = parsed(who_notice(dialect, ["alice", "bob"], ["openai"]))
    assert [line.command for line in lines] == ["251", "255"]
    assert "3 users" in lines[0].params[-1]


def test_a_who_notice_nobody_asked_for_is_a_server_notice() -> None:
    """`WHO` passed through as chatnet's `!who` (or an unasked answer): the text as a NOTICE."""
    dialect = registered()
    assert parsed(who_notice(dialect, ["alice"])) == [IrcLine("NOTICE", ("alice", "Online (1)"), "chatnet")]


def test_who_about_a_channel_waits_for_its_members_while_other_questions_are_answered() -> None:
    """irssi's JOIN is followed by `MODE #a` and `WHO #a` (answered by the members, later)
    and ISON now and then (answered by a WHO notice, at once): each answer must go to its
    own question, whatever the order they come back in."""
    dialect = registered()
    assert dialect.parse("WHO #hiking") == Command("members", "#hiking")
    assert dialect.parse("ISON bob") == Command("who")
    assert dialect.parse("LUSERS") == Command("who")
    # The router answers the two WHO commands at once, before the members come from the store.
    assert parsed(who_notice(dialect, ["alice", "bob"])) == [IrcLine("303", ("alice", "bob"), "chatnet")]
    assert numerics(who_notice(dialect, ["alice", "bob"])) == ["251", "255"]
    members = {"room": "#hiking", "members": [{"name": "alice", "online": True}, {"name": "bob", "online": True}], "owner": "alice", "private": False}
    assert numerics(dialect.notice("Members of #hiking (2)", Event.MEMBERS, members, "alice", NOW)) == ["352", "352", "315"]


# --- notices rendered ------------------------------------------------------------------------


def joined(dialect: IrcDialect, room: str = "#hiking", topic: str = "", names: list[str] | None = None, owner: str = "bob") -> str:
    details = {"room": room, "created": False, "members": 3, "online": 2, "topic": topic, "owner": owner, "names": names if names is not None else ["alice", "bob"]}
    return dialect.notice(f"Joined {room}", Event.JOINED, details, "alice", NOW)


def test_joined_is_join_topic_and_names_with_the_owner_as_operator() -> None:
    """JOINED: the JOIN from oneself, 332 with the topic, 353 with `@owner`, 366."""
    dialect = registered()
    lines = parsed(joined(dialect, topic="Saturday, 9:00 at the lake"))
    assert lines == [
        IrcLine("JOIN", ("#hiking",), "alice!alice@chatnet"),
        IrcLine("332", ("alice", "#hiking", "Saturday, 9:00 at the lake"), "chatnet"),
        IrcLine("353", ("alice", "=", "#hiking", "alice @bob"), "chatnet"),
        IrcLine("366", ("alice", "#hiking", "End of /NAMES list"), "chatnet"),
    ]
    # The topic notice that follows a join says nothing more: the 332 said it.
    assert dialect.notice("Topic of #hiking: ...", Event.TOPIC, {"room": "#hiking", "topic": "Saturday, 9:00 at the lake", "by": "bob"}, "alice", NOW) == ""


def test_joined_without_a_topic_has_no_332_and_many_names_take_several_353s() -> None:
    dialect = registered()
    names = [f"user{i:03d}-with-a-long-name" for i in range(60)]
    lines = parsed(joined(dialect, topic="", names=names, owner="user000-with-a-long-name"))
    assert "332" not in [line.command for line in lines]
    named = [line for line in lines if line.command == "353"]
    assert len(named) > 1 and all(len(ircline.render(line.command, *line.params, source=line.source).encode()) <= 512 for line in named)
    listed = [name for line in named for name in line.params[-1].split()]
    assert listed == ["@" + names[0], *names[1:]]
    assert lines[-1].command == "366"


def test_left_is_part_and_a_removal_is_kick() -> None:
    """LEFT: PART from oneself; with `by`, a KICK from that member."""
    dialect = registered()
    joined(dialect)
    assert parsed(dialect.notice("Left #hiking.", Event.LEFT, {"room": "#hiking"}, "alice", NOW)) == [IrcLine("PART", ("#hiking",), "alice!alice@chatnet")]
    assert events(dialect.parse("JOIN #hiking")) == [Command("join", "#hiking")]  # not in it any more
    kicked = parsed(dialect.notice("bob removed you", Event.LEFT, {"room": "#hiking", "by": "bob"}, "alice", NOW))
    assert [(line.command, line.params[:2], line.source) for line in kicked] == [("KICK", ("#hiking", "alice"), "bob!bob@chatnet")]


@pytest.mark.parametrize(
    ("presence", "by", "expected"),
    [
        ("joined", None, IrcLine("JOIN", ("#hiking",), "carol!carol@chatnet")),
        ("online", None, IrcLine("JOIN", ("#hiking",), "carol!carol@chatnet")),
        ("left", None, IrcLine("PART", ("#hiking",), "carol!carol@chatnet")),
        ("offline", None, IrcLine("QUIT", ("Connection closed",), "carol!carol@chatnet")),
        ("left", "bob", IrcLine("KICK", ("#hiking", "carol", "bob"), "bob!bob@chatnet")),  # no comment: the kicker's nick (RFC 2812)
    ],
)
def test_room_presence_is_join_part_or_kick(presence: str, by: str | None, expected: IrcLine) -> None:
    dialect = registered()
    details: dict[str, Any] = {"room": "#hiking", "user": "carol", "presence": presence}
    if by:
        details["by"] = by
    assert parsed(dialect.notice("carol ...", Event.ROOM_PRESENCE, details, "alice", NOW)) == [expected]


def test_someone_going_offline_is_one_quit_with_their_reason_whatever_the_channels_shared() -> None:
    """QUIT :reason from a member of two channels one shares: one QUIT line, with it; and
    when they come back and go again, another."""
    dialect = registered()

    def presence(room: str, state: str, **more: str) -> str:
        return dialect.notice(f"carol {state}", Event.ROOM_PRESENCE, {"room": room, "user": "carol", "presence": state, **more}, "alice", NOW)

    gone = parsed(presence("#general", "offline", reason="off to bed") + presence("#hiking", "offline", reason="off to bed"))
    assert gone == [IrcLine("QUIT", ("Quit: off to bed",), "carol!carol@chatnet")]
    back = parsed(presence("#general", "online") + presence("#hiking", "online"))
    assert back == [IrcLine("JOIN", ("#general",), "carol!carol@chatnet"), IrcLine("JOIN", ("#hiking",), "carol!carol@chatnet")]
    assert numerics(presence("#general", "offline") + presence("#hiking", "offline")) == ["QUIT"]


def test_a_topic_change_is_a_topic_line_and_a_topic_query_is_332_or_331() -> None:
    dialect = registered()
    changed = {"room": "#hiking", "topic": "Sunday instead", "by": "bob", "changed": True}
    assert parsed(dialect.notice("Topic set", Event.TOPIC, changed, "alice", NOW)) == [IrcLine("TOPIC", ("#hiking", "Sunday instead"), "bob!bob@chatnet")]
    dialect.parse("TOPIC #hiking")
    lines = parsed(dialect.notice("Topic of #hiking", Event.TOPIC, {"room": "#hiking", "topic": "Sunday instead", "by": "bob"}, "alice", NOW))
    assert [line.command for line in lines] == ["332", "333"]
    assert lines[0].params == ("alice", "#hiking", "Sunday instead") and lines[1].params[:3] == ("alice", "#hiking", "bob")
    dialect.parse("TOPIC #lake")
    assert parsed(dialect.notice("#lake has no topic", Event.TOPIC, {"room": "#lake", "topic": ""}, "alice", NOW)) == [
        IrcLine("331", ("alice", "#lake", "No topic is set"), "chatnet")
    ]


MEMBERS = {
    "room": "#hiking",
    "members": [{"name": "alice", "online": True}, {"name": "bob", "online": True}, {"name": "carol", "online": False}],
    "owner": "bob",
    "private": False,
}


def members_notice(dialect: IrcDialect, **changes: Any) -> str:
    return dialect.notice("Members of #hiking (3)", Event.MEMBERS, {**MEMBERS, **changes}, "alice", NOW)


def test_members_answer_names_who_or_mode_as_asked() -> None:
    """The members of a room are 353/366 for NAMES (those online), 352/315 for WHO (the
    owner H@)."""
    dialect = registered()
    assert dialect.parse("NAMES #hiking") == Command("members", "#hiking")
    assert parsed(members_notice(dialect)) == [
        IrcLine("353", ("alice", "=", "#hiking", "alice @bob"), "chatnet"),
        IrcLine("366", ("alice", "#hiking", "End of /NAMES list"), "chatnet"),
    ]
    dialect.parse("WHO #hiking")
    lines = parsed(members_notice(dialect))
    assert [line.command for line in lines] == ["352", "352", "315"]
    assert lines[1].params == ("alice", "#hiking", "bob", "chatnet", "chatnet", "bob", "H@", "0 bob")


def test_questions_about_two_rooms_get_their_own_answers() -> None:
    """WHO #a then NAMES #b: the members of #b answer NAMES, whatever came first."""
    dialect = registered()
    dialect.parse("WHO #lake")
    dialect.parse("NAMES #hiking")
    assert numerics(members_notice(dialect)) == ["353", "366"]
    assert numerics(members_notice(dialect, room="#lake"))[-1] == "315"


def test_names_without_a_channel_ends_at_once() -> None:
    dialect = registered()
    assert numerics(reply(dialect.parse("NAMES"))) == ["366"]


def test_rooms_are_321_322_323() -> None:
    """LIST: 321, one 322 per room with its members and topic, 323."""
    dialect = registered()
    rooms = [{"name": "#general", "members": 12, "private": False, "topic": ""}, {"name": "#hiking", "members": 3, "private": False, "topic": "Saturday"}]
    lines = parsed(dialect.notice("Rooms (2)", Event.ROOMS, {"rooms": rooms}, "alice", NOW))
    assert [line.command for line in lines] == ["321", "322", "322", "323"]
    assert lines[1].params == ("alice", "#general", "12", "")
    assert lines[2].params == ("alice", "#hiking", "3", "Saturday")


def test_invited_is_invite_for_the_invitee_and_341_for_the_inviter() -> None:
    dialect = registered()
    to_me = {"room": "#hiking", "user": "alice", "by": "bob"}
    assert parsed(dialect.notice("bob invited you", Event.INVITED, to_me, "alice", NOW)) == [IrcLine("INVITE", ("alice", "#hiking"), "bob!bob@chatnet")]
    mine = {"room": "#hiking", "user": "carol", "by": "alice"}
    assert parsed(dialect.notice("Invited carol", Event.INVITED, mine, "alice", NOW)) == [IrcLine("341", ("alice", "carol", "#hiking"), "chatnet")]


def test_room_mode_is_a_mode_line_from_the_owner() -> None:
    dialect = registered()
    made = parsed(dialect.notice("#hiking is private now", Event.ROOM_MODE, {"room": "#hiking", "private": True, "by": "bob"}, "alice", NOW))
    assert made == [IrcLine("MODE", ("#hiking", "+i"), "bob!bob@chatnet")]
    unmade = parsed(dialect.notice("#hiking is public now", Event.ROOM_MODE, {"room": "#hiking", "private": False, "by": "bob"}, "alice", NOW))
    assert unmade == [IrcLine("MODE", ("#hiking", "-i"), "bob!bob@chatnet")]


@pytest.mark.parametrize(
    ("reason", "numeric"),
    [
        (RoomReason.NOT_MEMBER, "442"),
        (RoomReason.NO_ROOM, "403"),
        (RoomReason.NOT_OWNER, "482"),
        (RoomReason.PRIVATE, "473"),
        (RoomReason.TOO_MANY_ROOMS, "405"),
    ],
)
def test_room_refusals_are_their_numerics_about_the_channel(reason: RoomReason, numeric: str) -> None:
    dialect = registered()
    [line] = parsed(dialect.error("Refused.", Event.BAD_INPUT, {"room": "#hiking", "reason": reason}, "alice", NOW))
    assert line.command == numeric and line.params[:2] == ("alice", "#hiking")


def test_kicking_someone_not_in_the_room_is_441() -> None:
    dialect = registered()
    details = {"room": "#hiking", "user": "carol", "reason": RoomReason.NOT_IN_ROOM}
    assert parsed(dialect.error("carol is not in #hiking.", Event.BAD_INPUT, details, "alice", NOW)) == [
        IrcLine("441", ("alice", "carol", "#hiking", "They aren't on that channel"), "chatnet")
    ]


def test_a_refusal_about_a_room_answers_the_question_asked_about_it() -> None:
    """NAMES #private-room refused (403): the question is forgotten, so the next NAMES's
    answer is rendered as NAMES again and not as what was asked before."""
    dialect = registered()
    dialect.parse("MODE #secret")
    dialect.error("No such room", Event.BAD_INPUT, {"room": "#secret", "reason": RoomReason.NO_ROOM}, "alice", NOW)
    dialect.parse("NAMES #secret")
    assert numerics(members_notice(dialect, room="#secret")) == ["353", "366"]


@pytest.mark.parametrize(
    "refusal",
    [
        {"reason": RoomReason.NOT_OWNER},  # `MODE #hiking +i` or `KICK` by a member who is not its owner
        {"reason": RoomReason.NOT_MEMBER},  # `PART #hiking` or `TOPIC #hiking :x` by someone not in it
        {"reason": RoomReason.NOT_MEMBER, "sending": True},  # `PRIVMSG #hiking` by someone not in it
    ],
)
def test_a_refusal_of_a_command_leaves_a_question_about_the_same_room_waiting(refusal: dict[str, Any]) -> None:
    """`MODE #hiking +i` and `WHO #hiking` sent together: the refusal of the first may come
    back before the members that answer the second; the WHO must still end in 352…315
    (a client waits for its 315), not be taken for NAMES."""
    dialect = registered()
    assert dialect.parse("WHO #hiking") == Command("members", "#hiking")
    refused = parsed(dialect.error("Only the room's owner may do that.", Event.BAD_INPUT, {"room": "#hiking", **refusal}, "alice", NOW))
    assert [line.command for line in refused] in (["482"], ["442"], ["404"])
    assert numerics(members_notice(dialect)) == ["352", "352", "315"]


def test_other_notices_and_errors() -> None:
    """The welcome and other server words are NOTICEs (one per line); goodbye is ERROR; a
    name nobody has used is 401 saying the message was saved; presence is not shown."""
    dialect = registered()
    assert parsed(dialect.notice("Welcome, alice! No stored messages.", Event.WELCOME, {}, "alice", NOW)) == [
        IrcLine("NOTICE", ("alice", "Welcome, alice! No stored messages."), "chatnet")
    ]
    assert parsed(dialect.notice("User 'bob' is offline. Message saved.", Event.SAVED, {"destination": "bob"}, "alice", NOW)) == [
        IrcLine("NOTICE", ("alice", "User 'bob' is offline. Message saved."), "chatnet")
    ]
    assert numerics(dialect.notice("line one\nline two", Event.HELP, {}, "alice", NOW)) == ["NOTICE", "NOTICE"]
    assert parsed(dialect.notice("Goodbye, alice!", Event.GOODBYE, {}, "alice", NOW)) == [IrcLine("ERROR", ("Closing link: Goodbye, alice!",))]
    assert dialect.notice("Note: nobody named 'zed'", Event.UNKNOWN_NAME, {"destination": "zed"}, "alice", NOW) == ""  # the 401 said it
    saved = {"destination": "zed", "id": "m1", "unknown": True}
    [unknown] = parsed(dialect.notice("User 'zed' is offline. Message saved.", Event.SAVED, saved, "alice", NOW))
    assert unknown.command == "401" and unknown.params[:2] == ("alice", "zed") and "saved" in unknown.params[-1]
    assert dialect.notice("bob is online", Event.PRESENCE, {"user": "bob", "presence": "online"}, "alice", NOW) == ""
    assert dialect.notice("Still there?", Event.PING, {}, "alice", NOW) == ""
    assert parsed(dialect.error("Empty message.", Event.BAD_INPUT, {}, "alice", NOW)) == [IrcLine("NOTICE", ("alice", "Error: Empty message."), "chatnet")]
    not_saved = "Message to 'bob' was NOT saved: the message store is unavailable."
    assert parsed(dialect.error(not_saved, Event.NOT_SAVED, {"destination": "bob"}, "alice", NOW)) == [IrcLine("NOTICE", ("alice", not_saved), "chatnet")]


def test_a_rename_is_a_nick_line_and_later_lines_go_to_the_new_nick() -> None:
    """`NICK vic2` accepted: a NICK line from the old prefix; numerics address the new nick."""
    dialect = registered(nick="vic")
    said = parsed(dialect.notice("You are vic2 now (were vic).", Event.RENAMED, {"old": "vic", "user": "vic2"}, "vic2", NOW))
    assert said == [IrcLine("NICK", ("vic2",), "vic!vic@chatnet")]
    assert dialect.parse("MODE vic2") == Command("mode", "vic2")
    assert parsed(reply(dialect.parse("VERSION")))[0].params[0] == "vic2"


@pytest.mark.parametrize(
    ("reason", "numeric"),
    [(LoginReason.NAME_TAKEN, "433"), (LoginReason.PASSWORD_REQUIRED, "433"), (LoginReason.RESERVED, "432"), (None, "447")],
)
def test_a_refused_rename_is_its_numeric(reason: LoginReason | None, numeric: str) -> None:
    """In use or an account's: 433; reserved: 432; an account's own name stays: 447."""
    dialect = registered(nick="vic")
    details: dict[str, Any] = {"user": "taken"}
    if reason is not None:
        details["reason"] = reason
    [line] = parsed(dialect.error("No.", Event.RENAMED, details, "vic", NOW))
    assert line.command == numeric and line.params[0] == "vic"
    if numeric != "447":
        assert line.params[1] == "taken"


def test_someone_renamed_in_two_shared_channels_is_one_nick_line() -> None:
    """IRC says a nick change once, not once per channel one shares with them."""
    dialect = registered()
    out = "".join(
        dialect.notice("carol is carla now", Event.ROOM_PRESENCE, {"room": room, "user": "carla", "old": "carol", "presence": "renamed"}, "alice", NOW)
        for room in ("#general", "#hiking")
    )
    assert parsed(out) == [IrcLine("NICK", ("carla",), "carol!carol@chatnet")]


def test_catch_up_and_history_announcements_are_notices_in_the_channel() -> None:
    dialect = registered()
    said = parsed(dialect.notice("#hiking: 3 new messages since you were last here:", Event.CATCHUP, {"room": "#hiking", "unread": 3, "shown": 3}, "alice", NOW))
    assert said == [IrcLine("NOTICE", ("#hiking", "#hiking: 3 new messages since you were last here:"), "chatnet")]


def test_the_server_pings_with_its_name() -> None:
    dialect = registered()
    assert parsed(dialect.ping("alice", NOW)) == [IrcLine("PING", ("chatnet",))]


# --- deliveries ---------------------------------------------------------------------------


def test_a_delivery_without_tags_is_a_privmsg_from_the_sender() -> None:
    dialect = registered()
    assert split(dialect.delivery(delivery("hello there"))) == [":bob!bob@chatnet PRIVMSG alice :hello there"]
    assert parsed(dialect.delivery(delivery("who's in?", destination="#hiking"))) == [IrcLine("PRIVMSG", ("#hiking", "who's in?"), "bob!bob@chatnet")]
    assert not dialect.shows_ids


@pytest.mark.parametrize(
    ("caps", "tags"),
    [
        (("server-time", "message-tags"), {"time": NOW, "msgid": "m1"}),
        (("server-time",), {"time": NOW}),
        (("message-tags",), {"msgid": "m1"}),
        (("echo-message",), {}),
    ],
)
def test_a_delivery_carries_the_tags_that_were_negotiated(caps: tuple[str, ...], tags: dict[str, str]) -> None:
    """server-time: `time`; message-tags: `msgid`; neither: no tags at all."""
    dialect = registered(*caps)
    [line] = parsed(dialect.delivery(delivery("hi")))
    assert line == IrcLine("PRIVMSG", ("alice", "hi"), "bob!bob@chatnet", tags)
    assert dialect.shows_ids == ("message-tags" in caps)


def test_subscriptions_and_notices_arrive_as_notice() -> None:
    dialect = registered()
    assert parsed(dialect.delivery(delivery("21.5 C", sender="thermometer1", kind=MessageType.SUBSCRIPTION)))[0].command == "NOTICE"
    assert parsed(dialect.delivery(delivery("ping!", metadata={"notice": True})))[0].command == "NOTICE"


def test_a_streamed_reply_reaches_irc_as_its_final_frame_only() -> None:
    dialect = registered()
    assert dialect.delivery(delivery("Hel", sender="openai", metadata={"stream": {"id": "s", "seq": 0, "done": False}})) == ""
    final = parsed(dialect.delivery(delivery("Hello!", sender="openai", metadata={"stream": {"id": "s", "seq": 3, "done": True}})))
    assert final == [IrcLine("PRIVMSG", ("alice", "Hello!"), "openai!openai@chatnet")]


def test_multi_line_text_is_one_privmsg_per_line() -> None:
    dialect = registered("server-time")
    lines = parsed(dialect.delivery(delivery("first\nsecond\r\nthird")))
    assert [line.params for line in lines] == [("alice", "first"), ("alice", "second"), ("alice", "third")]
    assert all(line.tags == {"time": NOW} for line in lines)


@pytest.mark.parametrize("text", ["a\rb", "a\0b", "ok\r:mallory!mallory@chatnet PRIVMSG alice :send me your password"])
def test_a_cr_or_nul_inside_a_message_never_starts_a_line_of_its_own(text: str) -> None:
    """A text or JSON user can put a bare CR (or NUL) in a message; to an IRC client a CR
    ends the line, so it must never reach the wire as one: no line a sender can forge."""
    dialect = registered()
    lines = parsed(dialect.delivery(delivery(text)))
    assert all(line.source == "bob!bob@chatnet" and line.command == "PRIVMSG" for line in lines)


def test_a_long_topic_of_wide_characters_still_fits_in_512_bytes() -> None:
    """TOPICLEN counts characters here (300), and 300 characters of Japanese or emoji are
    far more than 512 bytes: the TOPIC, 332 and 322 lines must still fit, cut at a
    character boundary."""
    topic = "日本" * 150
    dialect = registered()
    rendered = [
        dialect.notice("Topic set", Event.TOPIC, {"room": "#hiking", "topic": topic, "by": "b" * 32, "changed": True}, "alice", NOW),
        joined(dialect, topic=topic),
        dialect.notice("Rooms (1)", Event.ROOMS, {"rooms": [{"name": "#" + "h" * 32, "members": 3, "private": False, "topic": topic}]}, "alice", NOW),
    ]
    for text in rendered:
        assert max(byte_lengths(text)) <= 512, byte_lengths(text)
        parsed(text)


def test_a_cr_inside_a_topic_never_starts_a_line_of_its_own() -> None:
    """Topics come from any user too (`!topic #a x\\ry` from a terminal)."""
    dialect = registered()
    forged = "x\r:chatnet 464 alice :Password incorrect"
    for said in (
        dialect.notice("Topic set", Event.TOPIC, {"room": "#hiking", "topic": forged, "by": "bob", "changed": True}, "alice", NOW),
        joined(dialect, topic=forged),
    ):
        assert "464" not in numerics(said)


def byte_lengths(text: str) -> list[int]:
    """Each line's length in bytes as IRC counts it: CR LF included, tags left out."""
    out = []
    for line in split(text):
        body = line.split(" ", 1)[1] if line.startswith("@") else line
        out.append(len(body.encode()) + 2)
    return out


@pytest.mark.parametrize("caps", [(), ("server-time", "message-tags")])
@pytest.mark.parametrize(
    "text",
    [
        "word " * 300,
        "x" * 1500,
        "é" * 700,
        "日本語のテキスト" * 60,
        "🙂 " * 400,
        "x" * 478 + " " + "y" * 100,  # a space exactly at the end of the room a line has
        "x" * 477 + " " + "y" * 100,
    ],
)
def test_a_long_message_is_cut_into_lines_of_at_most_512_bytes_at_character_boundaries(text: str, caps: tuple[str, ...]) -> None:
    """Every line fits IRC's 512 bytes (CR LF in, tags out), no character is cut in half,
    and the pieces put together are the message."""
    dialect = registered(*caps)
    rendered = dialect.delivery(delivery(text))
    assert max(byte_lengths(rendered)) <= 512, byte_lengths(rendered)
    lines = parsed(rendered)  # decoding each line on its own: text, not half characters
    assert len(lines) > 1
    assert "".join(line.params[-1] for line in lines) == text


@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=2000), st.sampled_from(["alice", "#hiking", "a" * 32]))
def test_any_message_renders_as_lines_that_fit_and_parse(text: str, destination: str) -> None:
    """Whatever the text: lines of at most 512 bytes, each parsing back as a PRIVMSG from
    the sender to the destination (a round trip)."""
    dialect = registered("server-time", "message-tags")
    rendered = dialect.delivery(delivery(text, sender="b" * 32, destination=destination))
    assert max(byte_lengths(rendered)) <= 512
    for line in parsed(rendered):
        assert (line.command, line.params[0], line.source, line.tags["msgid"]) == ("PRIVMSG", destination, f"{'b' * 32}!{'b' * 32}@chatnet", "m1")


def test_stored_mail_with_server_time_keeps_its_time_in_the_tag() -> None:
    """Mail handed over at registration: a PRIVMSG from the original sender, its time in
    `@time=` and its id in `msgid`."""
    dialect = registered("server-time", "message-tags")
    mail = message_json(Message(id="mail-1", sender="bob", destination="alice", message="hello!!", timestamp=THEN))
    assert parsed(dialect.stored(mail)) == [IrcLine("PRIVMSG", ("alice", "hello!!"), "bob!bob@chatnet", {"time": "2026-11-20T08:30:01.250Z", "msgid": "mail-1"})]


@pytest.mark.parametrize(
    ("kind", "metadata"),
    [(MessageType.SUBSCRIPTION, {}), (MessageType.CHAT, {"notice": True})],
)
def test_stored_mail_that_was_a_notice_stays_a_notice(kind: MessageType, metadata: dict[str, Any]) -> None:
    """A thermometer's reading or a NOTICE kept for someone offline arrives as NOTICE, as it
    would have live (clients and bots never answer a NOTICE automatically)."""
    dialect = registered("server-time")
    mail = Message(sender="thermometer1", destination="alice", message="21.5 C", timestamp=THEN, type=kind, metadata=metadata)
    assert [line.command for line in parsed(dialect.stored(message_json(mail)))] == ["NOTICE"]


def test_a_rooms_message_from_before_keeps_its_time() -> None:
    """Catch-up lines (`replayed`): the original time in `@time=` with server-time, else
    leading the text."""
    old = delivery("tents up", sender="ola", destination="#camp", timestamp="2026-11-20T08:30:01.250Z")
    assert parsed(registered("server-time").replayed(old)) == [IrcLine("PRIVMSG", ("#camp", "tents up"), "ola!ola@chatnet", {"time": "2026-11-20T08:30:01.250Z"})]
    assert parsed(registered().replayed(old)) == [IrcLine("PRIVMSG", ("#camp", "[2026-11-20T08:30:01Z] tents up"), "ola!ola@chatnet")]


def test_stored_mail_without_server_time_has_the_timestamp_lead_the_text() -> None:
    dialect = registered()
    mail = Message(id="mail-1", sender="bob", destination="alice", message="hello!!", timestamp=THEN)
    assert parsed(dialect.stored(message_json(mail))) == [IrcLine("PRIVMSG", ("alice", "[2026-11-20T08:30:01Z] hello!!"), "bob!bob@chatnet")]


# --- the debug log -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "PASS hunter2-hunter2",
        "pass :hunter2-hunter2",
        "@label=1 PASS hunter2-hunter2",
        " PASS hunter2-hunter2",  # a leading space is no command of its own: the tokenizer reads PASS
        "AUTHENTICATE " + b64("\0alice\0hunter2-hunter2"),
        "REGISTER hunter2-hunter2",
        "PASSWORD hunter2-hunter2 new-secret-1",
        "OPER operuser hunter2-hunter2",
        "oper operuser :hunter2-hunter2",
    ],
)
def test_loggable_hides_passwords_and_sasl_payloads(line: str) -> None:
    dialect = IrcDialect()
    shown = dialect.loggable(line, False)
    assert "hunter2" not in shown and b64("\0alice\0hunter2-hunter2") not in shown
    assert "<hidden>" in shown


@pytest.mark.parametrize("line", ["AUTHENTICATE PLAIN", "AUTHENTICATE *", "PRIVMSG bob :hi", "NICK alice", "CAP REQ :sasl"])
def test_loggable_keeps_what_is_no_secret(line: str) -> None:
    assert IrcDialect().loggable(line, False) == line


# --- round trips: every line rendered parses back ---------------------------------------------------


def everything_rendered() -> list[str]:
    """One of everything the dialect says, from registration to the last notice."""
    dialect, answers = registering("CAP LS 302", "CAP LS", "NICK alice", "USER alice 0 * :Alice", "CAP REQ :sasl server-time message-tags echo-message",
                                   "CAP REQ :nope", "CAP LIST", "AUTHENTICATE PLAIN", "AUTHENTICATE *", "JOIN #a", "PING :x y", "NICK b@d", "PASS")  # fmt: skip
    out = [reply(answer) for answer in answers if type(answer) is Reply]
    out.append(dialect.authenticated("alice"))
    dialect.parse_login("CAP END")
    out.append(dialect.logged_in("alice", True))
    many_joins = "JOIN " + ",".join(f"#r{i}" for i in range(11))
    for line in ("PRIVMSG a,b,c,d,e :x", many_joins, "MODE alice", "MODE #a b", "MODE #a +o x", "FROB", "PING :p q", "VERSION", "AWAY :x", "INFO", "OPER x"):
        out.extend(event.text for event in events(dialect.parse(line)) if type(event) is Reply)
    for line in ("WHO *", "ISON bob", "USERHOST bob", "LUSERS"):
        dialect.parse(line)
        out.append(who_notice(dialect, ["alice", "bob"], ["openai"]))
    out.append(joined(dialect, topic="a topic: with colons", names=["alice", "bob"]))
    for line in ("NAMES #hiking", "WHO #hiking", "MODE #hiking"):
        dialect.parse(line)
        out.append(members_notice(dialect))
    out.append(dialect.delivery(delivery(":starts with a colon")))
    out.append(dialect.delivery(delivery(" ")))
    out.append(dialect.delivery(delivery("multi\n\nline")))
    out.append(dialect.stored(message_json(Message(sender="bob", destination="alice", message="x", timestamp=THEN))))
    out.append(dialect.ping("alice", NOW))
    out.append(dialect.notice("x", Event.OPER, {"user": "alice", "name": "op"}, "alice", NOW))
    out.append(dialect.notice("x", Event.WALLOPS, {"user": "bob", "message": ":a colon\n"}, "alice", NOW))
    out.append(dialect.notice("x", Event.USER_MODE, {"user": "alice", "modes": "+ow", "changes": None}, "alice", NOW))
    out.append(dialect.notice("x", Event.USER_MODE, {"user": "alice", "modes": "+w", "changes": ["+w"]}, "alice", NOW))
    return out


def test_every_line_the_dialect_renders_parses_back() -> None:
    """Registration answers, numerics, notices, deliveries: each is a valid IRC line (CR LF,
    at most 512 bytes without tags) that the tokenizer reads back to what was rendered."""
    rendered = everything_rendered()
    assert sum(len(split(text)) for text in rendered) > 40
    for text in rendered:
        for line in split(text):
            assert len(line.split(" ", 1)[1] if line.startswith("@") else line) + 2 <= 512
            again = ircline.parse(line)
            assert ircline.parse(ircline.render(again.command, *again.params, source=again.source, tags=again.tags or None)[:-2]) == again


# --- in process: the dialect behind a session and the router -------------------------------------


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
async def router(api: FakeApi) -> AsyncIterator[Router]:
    async with running_router(api, settings(default_rooms="#general")) as started:
        yield started


async def irc_client(router: Router, nick: str, *caps: str) -> Client:
    client = Client(router, IrcDialect(), None)
    client.send("CAP LS 302", f"NICK {nick}", f"USER {nick} 0 * :{nick}", *([f"CAP REQ :{' '.join(caps)}"] if caps else []), "CAP END")
    await client.expect(lambda line: " 001 " in line)
    await client.expect(lambda line: line.startswith(":chatnet NOTICE") and "Welcome" in line)
    return client


async def test_in_process_irc_users_talk_in_a_channel_and_directly(router: Router) -> None:
    """Two IRC sessions over the router: JOIN, a channel line, a PRIVMSG, with tags for
    the one that asked for them."""
    alice = await irc_client(router, "alice", "server-time", "message-tags")
    bob = await irc_client(router, "bob")
    alice.send("JOIN #hiking")
    await alice.expect(":alice!alice@chatnet JOIN #hiking")
    names = ircline.parse(await alice.expect(lambda line: " 353 " in line))
    assert names.params == ("alice", "=", "#hiking", "@alice")
    bob.send("JOIN #hiking", "PRIVMSG #hiking :who's in?", "PRIVMSG alice :just you and me")
    await bob.expect(lambda line: line.startswith(":chatnet 366 bob #hiking"))
    await alice.expect(":bob!bob@chatnet JOIN #hiking")
    line = await alice.expect(lambda line: "PRIVMSG #hiking" in line)
    said = ircline.parse(line)
    assert said.params == ("#hiking", "who's in?") and set(said.tags) == {"time", "msgid"}
    direct = ircline.parse(await alice.expect(lambda line: "PRIVMSG alice" in line))
    assert (direct.source, direct.params) == ("bob!bob@chatnet", ("alice", "just you and me"))


async def test_in_process_who_of_a_channel_and_ison_sent_together_get_their_own_answers(router: Router) -> None:
    """What irssi sends after a JOIN (`MODE #a`, `WHO #a`) with an ISON between: 324,
    352/315 and 303, each to its own question."""
    alice = await irc_client(router, "alice")
    await irc_client(router, "bob")
    alice.send("JOIN #hiking")
    await alice.expect(lambda line: line.startswith(":chatnet 366 alice #hiking"))
    alice.take()
    alice.send("MODE #hiking", "WHO #hiking", "ISON bob carol")
    await alice.expect(lambda line: " 303 " in line)  # the last question's answer: each comes in order
    got = [ircline.parse(line) for line in alice.lines()]
    assert [line.command for line in got if line.command in ("324", "315", "303")] == ["324", "315", "303"]
    assert [line.params for line in got if line.command == "303"] == [("alice", "bob")]
    assert [line.params[:3] for line in got if line.command == "324"] == [("alice", "#hiking", "+n")]
    assert [line.params[:3] for line in got if line.command == "352"] == [("alice", "#hiking", "alice")]


def test_names_of_several_channels_end_with_one_366() -> None:
    """NAMES #a,#b: each channel's 353s, then one 366 naming both (TARGMAX NAMES:4); a
    channel of them nobody may see adds nothing."""
    dialect = registered()
    assert events(dialect.parse("NAMES #hiking,#lake")) == [Command("members", "#hiking"), Command("members", "#lake")]
    assert numerics(members_notice(dialect)) == ["353"]
    lines = parsed(members_notice(dialect, room="#lake"))
    assert [line.command for line in lines] == ["353", "366"] and lines[-1].params[1] == "#hiking,#lake"
    dialect.parse("NAMES #gone,#lake")
    assert dialect.error("no", Event.BAD_INPUT, {"room": "#gone", "reason": RoomReason.NO_ROOM}, "alice", NOW) == ""
    assert parsed(dialect.error("no", Event.BAD_INPUT, {"room": "#lake", "reason": RoomReason.NO_ROOM}, "alice", NOW))[0].params[1] == "#gone,#lake"


def test_kick_of_several_nicks_and_of_pairs() -> None:
    """KICK #a x,y kicks both from #a; KICK #a,#b x,y kicks x from #a and y from #b;
    channels and nicks that do not pair up are 461."""
    dialect = registered()
    assert events(dialect.parse("KICK #a bob,carol :bye")) == [Command("kick", "#a bob bye"), Command("kick", "#a carol bye")]
    assert events(dialect.parse("KICK #a,#b bob,carol")) == [Command("kick", "#a bob"), Command("kick", "#b carol")]
    assert numerics(reply(dialect.parse("KICK #a,#b bob"))) == ["461"]


def test_links_and_the_invite_list_end_at_once() -> None:
    """LINKS: 365 (one name for every node, no links shown); INVITE alone: 337."""
    dialect = registered()
    assert parsed(reply(dialect.parse("LINKS"))) == [IrcLine("365", ("alice", "*", "End of /LINKS list"), "chatnet")]
    assert numerics(reply(dialect.parse("INVITE"))) == ["337"]


async def test_in_process_oper_wallops_reach_operators_and_plus_w_only(api: FakeApi) -> None:
    """What irctest's testWallops does, over the router: OPER with the API token is 381,
    WALLOPS reaches the operator itself and a +w user, not a -w one; MODE shows +o/+w;
    WHOIS says 313; INFO is 371s and 374."""
    async with running_router(api, settings(api_token="operpassword")) as router:
        nick1, nick2, nick3 = [await irc_client(router, nick) for nick in ("nick1", "nick2", "nick3")]
        nick2.send("MODE nick2 -w")
        nick3.send("MODE nick3 +w")
        await nick3.expect(":nick3!nick3@chatnet MODE nick3 :+w")
        nick1.send("OPER operuser operpassword")
        await nick1.expect(lambda line: " 381 nick1 " in line)
        nick1.send("WALLOPS :hi everyone")
        assert await nick1.expect(lambda line: " WALLOPS " in line) == ":nick1!nick1@chatnet WALLOPS :hi everyone"
        assert await nick3.expect(lambda line: " WALLOPS " in line) == ":nick1!nick1@chatnet WALLOPS :hi everyone"
        nick2.send("MODE nick2", "WHOIS nick1", "INFO")
        await nick2.expect(lambda line: " 374 " in line)
        got = [ircline.parse(line) for line in nick2.lines()]
        assert not [line for line in got if line.command == "WALLOPS"]
        assert [line.params for line in got if line.command == "221"] == [("nick2", "+i")]
        assert "313" in [line.command for line in got]
        nick1.send("MODE nick1")
        assert ircline.parse(await nick1.expect(lambda line: " 221 " in line)).params == ("nick1", "+io")
