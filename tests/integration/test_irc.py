"""IRC over the real processes (embedded store, message API, chat server): raw IRC lines
over TCP to the server's IRC port, as irssi or an IRC bot would send them, beside
terminal users (text mode) and programs (JSON mode) on the chat port.

One network serves the whole module (each test has its own nicks and channels); the
test of the server's own pings starts a second chat server with short ping settings."""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import datetime
from pathlib import Path

import pytest

from chatnet.api_client import ApiClient
from chatnet.dialects import ircline
from chatnet.dialects.ircline import IrcLine
from chatnet.process import API_LISTENING, CHAT_LISTENING, IRC_LISTENING, Child, http_ok, port_open, script
from chatnet.protocol import MessageType
from tests.fake_openai import FakeOpenAI
from tests.support import HOST, REDIS_SERVER, TIMEOUT, Network, RedisServer, TextClient, eventually

LIVE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\]\[(\S+)\] (.*)$")
ROOM = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\]\[(#\S+)\]\[(\S+)\] (.*)$")
LEADING_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\] (.*)$")

Wanted = str | Callable[[IrcLine], bool]


@pytest.fixture(scope="module")
def net(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The message API and the chat server (with its IRC port), shared by the module."""
    network = Network(store_url=store_url, tmp=tmp_path_factory.mktemp("irc"))
    try:
        network.start_api()
        network.start_server()
        yield network
    finally:
        network.stop_all()


# --- an IRC client that talks the way a user's does -----------------------------------------


class Irc:
    """One IRC connection: sends lines, reads every line the server sends (each must be a
    valid IRC line of at most 512 bytes without its tags), waits for the one wanted."""

    _tokens = itertools.count(1)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer_pings: bool = True) -> None:
        self.reader = reader
        self.writer = writer
        self.answer_pings = answer_pings
        self.seen: list[str] = []
        self.nick = ""

    @classmethod
    async def connect(cls, port: int, answer_pings: bool = True) -> Irc:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
        return cls(reader, writer, answer_pings)

    async def send(self, *lines: str | bytes) -> None:
        for line in lines:
            data = line if isinstance(line, bytes) else line.encode()
            self.writer.write(data + b"\r\n")
        await self.writer.drain()

    async def read(self, timeout: float = TIMEOUT) -> IrcLine | None:
        """The next line from the server (None once it has closed)."""
        try:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
        except TimeoutError:
            raise AssertionError(f"nothing from the server within {timeout} s; seen so far: {self.seen[-15:]}") from None
        except ConnectionError:
            return None
        if not raw:
            return None
        assert raw.endswith(b"\r\n"), f"a line not ended by CR LF: {raw!r}"
        text = raw[:-2].decode()  # the server speaks UTF-8 only
        self.seen.append(text)
        try:
            line = ircline.parse(text)
        except ircline.IrcLineError as exc:
            raise AssertionError(f"the server sent a line that is no valid IRC ({exc}): {text!r}") from None
        if line.command == "PING" and self.answer_pings:
            await self.send(f"PONG :{line.params[-1] if line.params else ''}")
        return line

    async def expect(self, wanted: Wanted, timeout: float = TIMEOUT) -> IrcLine:
        """Read until a line is `wanted` (a command or numeric, or a test of the line)."""
        match = wanted if callable(wanted) else (lambda line: line.command == wanted)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"never saw {getattr(wanted, 'what', wanted)!r}; seen: {self.seen[-15:]}")
            line = await self.read(remaining)
            if line is None:
                raise AssertionError(f"connection closed before {getattr(wanted, 'what', wanted)!r}; seen: {self.seen[-15:]}")
            if match(line):
                return line

    async def lines_until_all(self, *wanted: Callable[[IrcLine], bool], timeout: float = TIMEOUT) -> list[IrcLine]:
        """Every line up to the one by which each of `wanted` has been seen (in any order)."""
        start, waiting = len(self.seen), list(wanted)
        while waiting:
            tests = tuple(waiting)

            def any_of(line: IrcLine, tests: tuple[Callable[[IrcLine], bool], ...] = tests) -> bool:
                return any(test(line) for test in tests)

            line = await self.expect(any_of, timeout)
            waiting = [test for test in waiting if not test(line)]
        return [ircline.parse(text) for text in self.seen[start:]]

    async def lines_until(self, wanted: Wanted, timeout: float = TIMEOUT) -> list[IrcLine]:
        """Every line up to and including the first that is `wanted`."""
        start = len(self.seen)
        await self.expect(wanted, timeout)
        return [ircline.parse(text) for text in self.seen[start:]]

    async def sync(self) -> list[IrcLine]:
        """Every line the server sends before it answers a PING sent now (the server
        answers a connection's lines in order: whatever a line before it caused at once
        has been said then)."""
        token = f"sync-{next(self._tokens)}"
        await self.send(f"PING :{token}")
        lines = await self.lines_until(lambda line: line.command == "PONG" and line.params[-1] == token)
        return lines[:-1]

    async def until_closed(self, timeout: float = TIMEOUT) -> list[IrcLine]:
        """Every line the server sends before it closes the connection."""
        lines: list[IrcLine] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (line := await self.read(max(0.0, deadline - loop.time()))) is not None:
            lines.append(line)
        return lines

    async def register(self, nick: str, *caps: str, password: str | None = None, sasl: str | None = None) -> list[IrcLine]:
        """Register as `nick` (negotiating `caps`, logging into an account with PASS or
        SASL PLAIN); every line up to the server's welcome notice."""
        start = len(self.seen)
        wanted = [*caps, *(["sasl"] if sasl is not None else [])]
        if wanted:
            await self.send("CAP LS 302")
        if password is not None:
            await self.send(f"PASS :{password}")
        await self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick.title()} Test")
        if wanted:
            await self.send(f"CAP REQ :{' '.join(wanted)}")
            ack = await self.expect(lambda line: line.command == "CAP" and line.params[1] in ("ACK", "NAK"))
            assert ack.params[1:] == ("ACK", " ".join(wanted)), ack
        if sasl is not None:
            await self.send("AUTHENTICATE PLAIN")
            assert await self.expect("AUTHENTICATE") == IrcLine("AUTHENTICATE", ("+",))
            await self.send("AUTHENTICATE " + base64.b64encode(f"\0{nick}\0{sasl}".encode()).decode())
            done = await self.expect(lambda line: line.command in ("903", "904"))
            assert done.command == "903", f"SASL failed: {self.seen[-5:]}"
        if wanted:
            await self.send("CAP END")
        await self.expect(welcome(nick))
        self.nick = nick
        return [ircline.parse(text) for text in self.seen[start:]]

    async def in_channel(self, room: str) -> None:
        """Until the names of `room` have ended (366): told at registration (before or
        after the welcome) or after a JOIN, already or still to come."""
        ended = numeric("366", room)
        if not any(ended(ircline.parse(text)) for text in self.seen):
            await self.expect(ended)

    async def quit(self) -> list[IrcLine]:
        await self.send("QUIT :bye")
        return await self.until_closed()

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def welcome(nick: str) -> Callable[[IrcLine], bool]:
    """The router's welcome, after the registration burst."""
    return lambda line: line.command == "NOTICE" and line.source == "chatnet" and line.params[-1].startswith(f"Welcome, {nick}!")


def numeric(code: str, *params: str) -> Callable[[IrcLine], bool]:
    """A numeric whose parameters (after the client's nick) start with `params`."""
    return lambda line: line.command == code and line.params[1 : 1 + len(params)] == params


def from_(nick: str, command: str, *params: str) -> Callable[[IrcLine], bool]:
    """A line from the user `nick` (`nick!nick@chatnet`) with these parameters."""
    return lambda line: line.source == f"{nick}!{nick}@chatnet" and line.command == command and line.params[: len(params)] == params


def server_notice(containing: str) -> Callable[[IrcLine], bool]:
    return lambda line: line.command == "NOTICE" and line.source == "chatnet" and containing in line.params[-1]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def irc(network: Network, nick: str, *caps: str, password: str | None = None, sasl: str | None = None) -> Irc:
    client = await Irc.connect(network.irc_port)
    await client.register(nick, *caps, password=password, sasl=sasl)
    return client


async def make_account(network: Network, nick: str, password: str) -> None:
    """An account made the way a user makes one: log in as a guest over IRC, REGISTER."""
    client = await irc(network, nick)
    await client.send(f"REGISTER {password}")
    await client.expect(server_notice(f"Account '{nick}' registered."))
    await client.quit()


# --- registration -------------------------------------------------------------------------------


async def test_registration_without_cap_is_the_burst_the_welcome_and_the_default_channel(net: Network) -> None:
    """NICK and USER alone: 001-005 and 422 to the nick, the welcome notice, and a JOIN
    of #general (everyone's) with its names."""
    ann = await Irc.connect(net.irc_port)
    await ann.send("NICK ann", "USER ann 0 * :Ann Example")
    lines = await ann.lines_until(welcome("ann"))
    assert [line.command for line in lines[:7]] == ["001", "002", "003", "004", "005", "005", "422"]
    assert all(line.params[0] == "ann" and line.source == "chatnet" for line in lines[:7])
    tokens = {*lines[4].params, *lines[5].params}
    assert {"CASEMAPPING=ascii", "CHANTYPES=#", "NICKLEN=32", "CHANNELLEN=33", "PREFIX=(ov)@+", "NETWORK=chatnet"} <= tokens
    await ann.in_channel("#general")
    lines = [ircline.parse(text) for text in ann.seen]
    joins = [index for index, line in enumerate(lines) if from_("ann", "JOIN", "#general")(line)]
    names = [index for index, line in enumerate(lines) if numeric("353", "=", "#general")(line)]
    assert len(joins) == 1 and names and joins[0] < names[0], ann.seen  # the JOIN, then its names
    assert "ann" in [name.lstrip("@") for index in names for name in lines[index].params[-1].split()]
    await ann.quit()


async def test_registration_with_cap_waits_for_cap_end_and_tags_come_as_negotiated(net: Network) -> None:
    """CAP LS 302 lists sasl=PLAIN, server-time, message-tags, echo-message; NICK and USER
    wait for CAP END; then a message from a terminal user carries `time` and `msgid`."""
    ben = await Irc.connect(net.irc_port)
    await ben.send("CAP LS 302", "NICK ben", "USER ben 0 * :Ben")
    listed = await ben.expect("CAP")
    assert listed.params[:2] == ("*", "LS")
    assert {"sasl=PLAIN", "server-time", "message-tags", "echo-message"} <= set(listed.params[-1].split())
    assert "001" not in [line.command for line in await ben.sync()]  # still negotiating
    await ben.send("CAP REQ :server-time message-tags")
    ack = await ben.expect("CAP")
    assert ack.params[1:] == ("ACK", "server-time message-tags")
    await ben.send("CAP END")
    await ben.expect("001")
    await ben.expect(welcome("ben"))
    teo = await net.text_client("teo")
    await teo.send("ben: tagged?")
    said = await ben.expect(from_("teo", "PRIVMSG", "ben"))
    assert said.params[-1] == "tagged?"
    assert set(said.tags) == {"time", "msgid"} and abs(time.time() - parse_time(said.tags["time"]).timestamp()) < 60
    await ben.quit()
    await teo.close()


async def test_pass_logs_into_an_account_whose_nick_is_refused_without_it(net: Network) -> None:
    """An account's nick without credentials is 433 (registration goes on under another
    nick); with PASS it registers as the account (900)."""
    await make_account(net, "cora", "cora-secret-1")
    guest = await Irc.connect(net.irc_port)
    await guest.send("NICK cora", "USER cora 0 * :Cora")
    refused = await guest.expect(lambda line: line.command in ("433", "001"))
    assert refused.command == "433" and refused.params[:2] == ("*", "cora")
    await guest.send("NICK cora_guest")
    await guest.expect(welcome("cora_guest"))
    await guest.quit()
    cora = await Irc.connect(net.irc_port)
    lines = await cora.register("cora", password="cora-secret-1")
    assert [line.params[2] for line in lines if line.command == "900"] == ["cora"]
    await cora.quit()


async def test_sasl_plain_logs_in_and_a_wrong_password_is_904_then_a_guest_nick_registers(net: Network) -> None:
    """SASL PLAIN with the password of an account made in text mode (`!register`): 900,
    903, registered as it. A wrong password: 904; CAP END then finds the nick an
    account's (433) and another nick registers as a guest."""
    dan = await net.text_client("dan")
    await dan.send("!register dan-secret-1")
    await dan.expect("Account 'dan' registered.")
    await dan.send("exit")
    await dan.closed()
    good = await Irc.connect(net.irc_port)
    lines = await good.register("dan", sasl="dan-secret-1")
    assert [line.command for line in lines if line.command in ("900", "903")] == ["900", "903"]
    assert lines[-1].params[0] == "dan"
    await good.quit()
    bad = await Irc.connect(net.irc_port)
    await bad.send("CAP LS 302", "NICK dan", "USER dan 0 * :Dan", "CAP REQ :sasl", "AUTHENTICATE PLAIN")
    await bad.expect("AUTHENTICATE")
    await bad.send("AUTHENTICATE " + base64.b64encode(b"\0dan\0not-his-password").decode())
    failed = await bad.expect(lambda line: line.command in ("903", "904"))
    assert failed.command == "904"
    await bad.send("CAP END")
    refused = await bad.expect(lambda line: line.command in ("433", "001"))
    assert refused.command == "433"
    await bad.send("NICK dan_guest")
    await bad.expect(welcome("dan_guest"))
    await bad.send("WHOIS dan_guest")
    await bad.expect(numeric("311", "dan_guest"))
    await bad.quit()


async def test_an_account_on_two_connections_gets_each_message_on_both(net: Network) -> None:
    """An account logged in twice (SASL on one, PASS on the other, as two devices would):
    a message to it arrives on both."""
    await make_account(net, "abe", "abe-secret-1")
    one = await irc(net, "abe", sasl="abe-secret-1")
    two = await irc(net, "abe", password="abe-secret-1")
    cy = await net.text_client("cy")
    await cy.send("abe: to both of you")
    for each in (one, two):
        assert (await each.expect(from_("cy", "PRIVMSG", "abe"))).params[-1] == "to both of you"
    await one.quit()
    await two.quit()
    await cy.close()


async def test_invalid_utf8_and_garbage_during_registration_leave_the_nick_alone(net: Network) -> None:
    """Lines that are no IRC between NICK and USER are answered, and registration still
    completes under the nick given."""
    gil = await Irc.connect(net.irc_port)
    await gil.send("NICK gil", b"PRIVMSG x :\xff\xfe", "@=bad PING", "USER gil 0 * :Gil")
    lines = await gil.sync()  # a PING after the registration is answered after its welcome
    assert [line.params[0] for line in lines if line.command == "001"] == ["gil"], lines
    assert "432" not in [line.command for line in lines]
    await gil.quit()


# --- talking across dialects --------------------------------------------------------------------


async def test_direct_messages_between_irc_text_and_json_users(net: Network) -> None:
    """An IRC user, a terminal user and a program exchange direct messages, each seeing
    the others' in its own format."""
    eve = await irc(net, "eve", "server-time")
    fay = await net.text_client("fay")
    gus = await net.json_client("gus")
    await eve.send("PRIVMSG fay :hello fay")
    line = await fay.expect(lambda text: "hello fay" in text)
    assert LIVE.match(line) is not None and LIVE.match(line).groups()[1:] == ("eve", "hello fay")  # type: ignore[union-attr]
    await fay.send("eve: hi eve, from a terminal")
    said = await eve.expect(from_("fay", "PRIVMSG", "eve"))
    assert said.params[-1] == "hi eve, from a terminal" and "time" in said.tags
    await gus.send("eve", "hi eve, from a program")
    said = await eve.expect(from_("gus", "PRIVMSG", "eve"))
    assert said.params[-1] == "hi eve, from a program"
    await eve.send("PRIVMSG gus :back at you")
    frame = await gus.expect(lambda m: m.type == MessageType.CHAT)
    assert (frame.sender, frame.destination, frame.message) == ("eve", "gus", "back at you")
    await eve.send("PRIVMSG fay,gus :to you both")
    await fay.expect(lambda text: text.endswith("[eve] to you both"))
    frame = await gus.expect(lambda m: m.type == MessageType.CHAT)
    assert frame.message == "to you both"
    await eve.quit()
    await fay.close()
    await gus.close()


async def test_a_channel_with_irc_text_and_json_members(net: Network) -> None:
    """#trio: an IRC user, a terminal user (`!join`, `#trio: ...`) and a program: each
    sees the others come in and speak; the IRC user sees JOIN, TOPIC, NAMES, PART."""
    hal = await irc(net, "hal")
    ivy = await net.text_client("ivy")
    jon = await net.json_client("jon")
    await hal.send("JOIN #trio")
    await hal.expect(from_("hal", "JOIN", "#trio"))
    assert (await hal.expect(numeric("353", "=", "#trio"))).params[-1] == "@hal"
    await ivy.send("!join #trio")
    await ivy.expect("Joined #trio (2 members, 2 online).")
    await hal.expect(from_("ivy", "JOIN", "#trio"))
    await jon.command("!join #trio")
    await jon.expect(lambda m: m.metadata.get("event") == "joined")
    await hal.expect(from_("jon", "JOIN", "#trio"))
    await hal.send("TOPIC #trio :plans for Saturday")
    await ivy.expect("Topic of #trio set by hal: plans for Saturday")
    await hal.expect(from_("hal", "TOPIC", "#trio", "plans for Saturday"))
    await hal.send("PRIVMSG #trio :from irc")
    line = await ivy.expect(lambda text: text.endswith("from irc"))
    assert ROOM.match(line) is not None and ROOM.match(line).groups()[1:] == ("#trio", "hal", "from irc")  # type: ignore[union-attr]
    frame = await jon.expect(lambda m: m.type == MessageType.CHAT)
    assert (frame.sender, frame.destination, frame.message) == ("hal", "#trio", "from irc")
    await ivy.send("#trio: from text")
    assert (await hal.expect(from_("ivy", "PRIVMSG", "#trio"))).params[-1] == "from text"
    await jon.send("#trio", "from json")
    assert (await hal.expect(from_("jon", "PRIVMSG", "#trio"))).params[-1] == "from json"
    await ivy.expect(lambda text: text.endswith("[#trio][jon] from json"))
    await hal.send("NAMES #trio")
    names = await hal.expect(numeric("353", "=", "#trio"))
    assert sorted(names.params[-1].split()) == ["@hal", "ivy", "jon"]
    await hal.expect(numeric("366", "#trio"))
    await ivy.send("!leave #trio")
    await hal.expect(from_("ivy", "PART", "#trio"))
    await hal.send("PART #trio :off to pack")
    await hal.expect(from_("hal", "PART", "#trio"))
    await jon.expect(lambda m: m.metadata.get("event") == "room_presence" and m.metadata.get("user") == "hal")
    await hal.quit()
    await ivy.close()
    await jon.close()


async def test_a_quit_is_seen_once_with_its_reason_by_those_sharing_channels(net: Network) -> None:
    """Two IRC users in #general and #porch: when one quits with a reason, the other sees
    one QUIT line with it (not a PART per channel), and a JOIN per channel when it is back."""
    pia = await irc(net, "pia")
    rex = await irc(net, "rex")
    for each in (pia, rex):
        await each.send("JOIN #porch")
        await each.in_channel("#porch")
    await rex.send("QUIT :off to bed")
    await rex.until_closed()
    gone = await pia.expect(from_("rex", "QUIT"))
    assert gone.params[-1].endswith("off to bed")
    assert not [line for line in await pia.sync() if line.source == "rex!rex@chatnet"]
    rex = await irc(net, "rex")
    back = [(await pia.expect(from_("rex", "JOIN"))).params[0] for _ in range(2)]
    assert sorted(back) == ["#general", "#porch"]
    await rex.quit()
    await pia.quit()


async def test_what_irssi_sends_after_a_join_gets_its_answers(net: Network) -> None:
    """After a JOIN irssi asks `MODE #chan` and `WHO #chan`, and ISON now and then: 324,
    352…315 for the channel's members and 303, each answer to its own question."""
    kai = await irc(net, "kai")
    friend = await irc(net, "kai_friend")
    await kai.send("JOIN #irssi")
    await kai.expect(numeric("366", "#irssi"))
    await kai.send("MODE #irssi", "WHO #irssi", "ISON kai_friend nobody_here")
    lines = await kai.lines_until_all(lambda line: line.command == "303", numeric("324", "#irssi"), numeric("315", "#irssi"))
    assert [line.params for line in lines if line.command == "303"] == [("kai", "kai_friend")]
    assert [line.params[1:3] for line in lines if line.command == "324"] == [("#irssi", "+n")]
    assert [line.params[1:3] for line in lines if line.command == "352"] == [("#irssi", "kai")]
    await kai.quit()
    await friend.quit()


async def test_channel_owner_commands_over_irc(net: Network) -> None:
    """The creator is operator (@): MODE +i makes the channel invite-only (473 for
    others), INVITE lets someone in (341, INVITE), KICK removes them; TOPIC asks; LIST
    lists."""
    lia = await irc(net, "lia")
    max_ = await irc(net, "max")
    await lia.send("JOIN #den")
    await lia.expect(numeric("366", "#den"))
    await lia.send("TOPIC #den")
    await lia.expect(numeric("331", "#den"))
    await lia.send("MODE #den +i")
    await lia.expect(from_("lia", "MODE", "#den", "+i"))
    await max_.send("JOIN #den")
    await max_.expect(numeric("473", "#den"))
    await max_.send("MODE #den +i")
    await max_.expect(lambda line: line.command in ("482", "442"))
    await lia.send("INVITE max #den")
    await lia.expect(numeric("341", "max", "#den"))
    await max_.expect(from_("lia", "INVITE", "max", "#den"))
    await max_.send("JOIN #den")
    await max_.expect(from_("max", "JOIN", "#den"))
    await lia.expect(from_("max", "JOIN", "#den"))
    await lia.send("LIST")
    listed = await lia.lines_until("323")
    assert "#den" in [line.params[1] for line in listed if line.command == "322"]
    await lia.send("KICK #den max :enough")
    await max_.expect(from_("lia", "KICK", "#den", "max"))
    await lia.send("KICK #den max")
    await lia.expect(numeric("441", "max", "#den"))
    await lia.quit()
    await max_.quit()


async def test_privmsg_to_a_channel_one_is_not_in_or_that_does_not_exist(net: Network) -> None:
    """404 for a channel one is not in; for one that does not exist any of the numerics
    IRC clients know for it (401, 403, 404), and the line goes nowhere."""
    ned = await irc(net, "ned_outside")
    owner = await irc(net, "ned_owner")
    await owner.send("JOIN #closed")
    await owner.expect(numeric("366", "#closed"))
    await ned.send("PRIVMSG #closed :let me in")
    await ned.expect(numeric("404", "#closed"))
    await ned.send("PRIVMSG #never-made :anyone?")
    refused = await ned.expect(lambda line: line.command in ("401", "403", "404"))
    assert refused.params[1] == "#never-made"
    await ned.quit()
    await owner.quit()


async def test_notice_is_never_answered_with_an_error(net: Network) -> None:
    """modern.ircdocs.horse: servers must not send any error back on receipt of a NOTICE
    (so two bots can never loop). A NOTICE to a channel one is not in, or to a nick nobody
    has used, gets no 404 or 401; the same as PRIVMSG does."""
    oli = await irc(net, "oli")
    keeper = await irc(net, "oli_keeper")
    await keeper.send("JOIN #quiet")
    await keeper.in_channel("#quiet")
    await oli.send("NOTICE #quiet :psst", "NOTICE never_used_by_anyone :psst", "PRIVMSG #quiet :first", "PRIVMSG #quiet :second")
    lines = await oli.lines_until(numeric("404", "#quiet"))
    lines += await oli.lines_until(numeric("404", "#quiet"))  # the PRIVMSGs' (and, wrongly, the NOTICE's)
    await oli.send("TOPIC #quiet")  # one more answer from the store, after those
    lines += await oli.lines_until(lambda line: line.command in ("331", "332"))
    lines += await oli.sync()
    assert [line.command for line in lines].count("404") == 2, lines
    assert "401" not in [line.command for line in lines], lines
    await oli.quit()
    await keeper.quit()


async def test_a_guest_changes_its_nick(net: Network) -> None:
    """NICK after registration: a guest becomes the new name (a NICK line from the old
    one, to itself and once to those it shares channels with) and is reached under it;
    a name online already is 433."""
    vic = await irc(net, "vic")
    taken = await irc(net, "vic_taken")
    for each in (vic, taken):
        await each.send("JOIN #nicks")
        await each.expect(numeric("366", "#nicks"))
    await vic.send("NICK vic_taken")
    await vic.expect(numeric("433", "vic_taken"))
    await vic.send("NICK vic2")
    await vic.expect(from_("vic", "NICK", "vic2"))
    await taken.expect(from_("vic", "NICK", "vic2"))  # a member of two channels with vic: told once
    assert not [line for line in await taken.sync() if line.command == "NICK"]
    wes = await net.text_client("wes")
    await wes.send("vic2: found you")
    assert (await vic.expect(from_("wes", "PRIVMSG", "vic2"))).params[-1] == "found you"
    await vic.quit()
    await taken.quit()
    await wes.close()


# --- offline mail and catch-up -------------------------------------------------------------------


async def test_offline_mail_is_saved_and_arrives_at_the_next_registration(net: Network) -> None:
    """PRIVMSG to a nick that has been here but is offline: `User '<nick>' is offline.
    Message saved.`; at its next registration it arrives as a PRIVMSG from the sender —
    the time leading the text without server-time, in `@time=` with it."""
    kim = await irc(net, "kim")
    await kim.quit()
    lee = await irc(net, "lee")
    await lee.send("PRIVMSG kim :are you there?")
    await lee.expect(server_notice("User 'kim' is offline. Message saved."))
    kim = await Irc.connect(net.irc_port)
    lines = await kim.register("kim")
    assert lines[-1].params[-1] == "Welcome, kim! 1 stored message."
    stored = await kim.expect(from_("lee", "PRIVMSG", "kim"))
    match = LEADING_TIME.match(stored.params[-1])
    assert match is not None and match.group(2) == "are you there?", stored
    assert "time" not in stored.tags
    async with ApiClient(net.api_url, net.token) as api:  # its TCP stack has the mail: it counts as delivered
        await eventually(lambda: api.pending("kim", 10), lambda page: page[1] == 0, "kim's mail delivered")
    await kim.quit()
    before = time.time()
    await lee.send("PRIVMSG kim :second try")
    await lee.expect(server_notice("User 'kim' is offline. Message saved."))
    kim = await Irc.connect(net.irc_port)
    lines = await kim.register("kim", "server-time")
    assert lines[-1].params[-1] == "Welcome, kim! 1 stored message."
    stored = await kim.expect(from_("lee", "PRIVMSG", "kim"))
    assert stored.params[-1] == "second try"
    assert before - 1 <= parse_time(stored.tags["time"]).timestamp() <= time.time()
    await kim.quit()
    await lee.quit()


async def test_privmsg_to_a_nick_nobody_has_used_is_401_saying_it_was_saved(net: Network) -> None:
    """IRC clients expect 401 for a nick that is nowhere; chatnet keeps the mail, and says so."""
    mo = await irc(net, "mo")
    await mo.send("PRIVMSG never_seen_nick :hello?")
    answer = await mo.expect(numeric("401", "never_seen_nick"))
    assert "saved" in answer.params[-1]
    await mo.quit()
    nobody = await Irc.connect(net.irc_port)
    await nobody.register("never_seen_nick")
    assert (await nobody.expect(from_("mo", "PRIVMSG", "never_seen_nick"))).params[-1].endswith("hello?")
    await nobody.quit()


async def test_a_channels_unseen_messages_come_at_registration_in_the_channel(net: Network) -> None:
    """Offline, a member misses lines in #camp: at the next registration the JOIN, a notice
    in the channel, then the lines as PRIVMSGs to #camp from their senders with their
    original times (in `@time=`, or leading the text without server-time); HISTORY alike."""
    nia = await irc(net, "nia")
    await nia.send("JOIN #camp")
    await nia.expect(numeric("366", "#camp"))
    await nia.quit()
    ola = await net.text_client("ola")
    await ola.send("!join #camp")
    await ola.expect("Joined #camp (2 members, 1 online).")
    before = time.time()
    for text in ("tents up", "fire at eight"):
        await ola.send(f"#camp: {text}")
    async with ApiClient(net.api_url, net.token) as api:  # archived in batches, off the routing path
        await eventually(lambda: api.room_history("#camp", "ola", 10), lambda page: len(page["messages"]) == 2, "two in #camp's history")
    nia = await Irc.connect(net.irc_port)
    await nia.register("nia", "server-time")
    await nia.in_channel("#camp")
    said = await nia.expect(lambda line: line.command == "NOTICE" and line.params[0] == "#camp")
    assert "2 new messages" in said.params[-1]
    for text in ("tents up", "fire at eight"):
        line = await nia.expect(from_("ola", "PRIVMSG", "#camp"))
        assert line.params[-1] == text
        assert before - 1 <= parse_time(line.tags["time"]).timestamp() <= time.time()
    await nia.sync()
    await nia.quit()
    await ola.send("#camp: marshmallows")
    async with ApiClient(net.api_url, net.token) as api:
        await eventually(lambda: api.room_history("#camp", "ola", 10), lambda page: len(page["messages"]) == 3, "three in #camp's history")
    nia = await Irc.connect(net.irc_port)
    await nia.register("nia")
    await nia.in_channel("#camp")
    notice = await nia.expect(lambda line: line.command == "NOTICE" and line.params[0] == "#camp")
    assert "1 new message" in notice.params[-1]
    line = await nia.expect(from_("ola", "PRIVMSG", "#camp"))
    match = LEADING_TIME.match(line.params[-1])
    assert match is not None and match.group(2) == "marshmallows", line
    await nia.send("HISTORY #camp 3")  # chatnet's !history, by its name
    await nia.expect(lambda line: line.command == "NOTICE" and line.params[0] == "#camp" and "Last 3" in line.params[-1])
    told = [await nia.expect(from_("ola", "PRIVMSG", "#camp")) for _ in range(3)]
    assert [LEADING_TIME.match(line.params[-1]).group(2) for line in told] == ["tents up", "fire at eight", "marshmallows"]  # type: ignore[union-attr]
    await nia.quit()
    await ola.close()


# --- IRCv3 ------------------------------------------------------------------------------------


async def test_echo_message_sends_ones_own_messages_back_and_only_to_who_asked(net: Network) -> None:
    """With echo-message a PRIVMSG (direct or to a channel) comes back to its sender as the
    others see it; without it, it does not."""
    pat = await irc(net, "pat", "echo-message", "message-tags")
    quin = await irc(net, "quin")
    await pat.send("PRIVMSG quin :hi quin")
    echo = await pat.expect(from_("pat", "PRIVMSG", "quin"))
    assert echo.params[-1] == "hi quin" and "msgid" in echo.tags
    await quin.expect(from_("pat", "PRIVMSG", "quin"))
    await pat.send("JOIN #echo")
    await pat.expect(numeric("366", "#echo"))
    await pat.send("PRIVMSG #echo :anyone?")
    assert (await pat.expect(from_("pat", "PRIVMSG", "#echo"))).params[-1] == "anyone?"
    await quin.send("PRIVMSG pat :no echo for me")
    assert not [line for line in await quin.sync() if line.command == "PRIVMSG"]
    await pat.expect(from_("quin", "PRIVMSG", "pat"))
    await pat.quit()
    await quin.quit()


async def test_capabilities_asked_for_after_registration_take_effect(net: Network) -> None:
    """CAP REQ after registration (clients do, after a reconnect): the tags come from then on."""
    ada = await irc(net, "ada")
    await ada.send("CAP REQ :server-time message-tags")
    ack = await ada.expect("CAP")
    assert ack.params[1:] == ("ACK", "server-time message-tags")
    bea = await net.text_client("bea")
    await bea.send("ada: tags now?")
    said = await ada.expect(from_("bea", "PRIVMSG", "ada"))
    assert said.params[-1] == "tags now?"
    assert set(said.tags) == {"time", "msgid"}, said
    await ada.quit()
    await bea.close()


async def test_away_is_said_to_whoever_messages_the_away_user(net: Network) -> None:
    """AWAY :reason (306): a PRIVMSG to the away user still arrives, and its sender is told
    301 with the reason; AWAY alone (305) ends it."""
    cal = await irc(net, "cal")
    dee = await irc(net, "dee")
    await dee.send("AWAY :gone fishing")
    await dee.expect("306")
    await cal.send("PRIVMSG dee :you there?")
    assert (await dee.expect(from_("cal", "PRIVMSG", "dee"))).params[-1] == "you there?"
    away = await cal.expect(lambda line: line.command == "301", timeout=3)
    assert away.params == ("cal", "dee", "gone fishing")
    await dee.send("AWAY")
    await dee.expect("305")
    await cal.send("PRIVMSG dee :back yet?")
    await dee.expect(from_("cal", "PRIVMSG", "dee"))
    assert "301" not in [line.command for line in await cal.sync()]
    await cal.quit()
    await dee.quit()


# --- errors and limits ---------------------------------------------------------------------------


async def test_empty_lines_are_silently_ignored(net: Network) -> None:
    """RFC 1459 2.3.1: empty messages are silently ignored (CR LF between messages is no
    mistake) — not answered, and not counted as garbage that ends the connection."""
    eli = await irc(net, "eli")
    await eli.in_channel("#general")
    await eli.send(*[""] * 30)
    said = await eli.sync()
    assert not [line for line in said if line.source == "chatnet" and line.command not in ("PONG",) and line.params[:1] == ("eli",)], said
    await eli.quit()


async def test_a_line_over_512_bytes_is_417_and_the_connection_goes_on(net: Network) -> None:
    """512 bytes with CR LF, tags apart: a longer line is refused (417), the next works;
    a line that is long only in its tags goes through."""
    ray = await irc(net, "ray")
    sue = await irc(net, "sue")
    await ray.send("PRIVMSG sue :" + "x" * 600)
    await ray.expect("417")
    await ray.send("PRIVMSG sue :short one")
    assert (await sue.expect(from_("ray", "PRIVMSG", "sue"))).params[-1] == "short one"
    await ray.send("@+example/tag=" + "v" * 3000 + " PRIVMSG sue :tags are not counted")
    assert (await sue.expect(from_("ray", "PRIVMSG", "sue"))).params[-1] == "tags are not counted"
    await ray.quit()
    await sue.quit()


async def test_invalid_utf8_unknown_commands_and_garbage_are_answered_and_the_connection_goes_on(net: Network) -> None:
    """Invalid UTF-8 is refused with a notice, an unknown command is 421, lines that are no
    IRC get a notice; PING is answered with PONG, and messages still go through."""
    sam = await irc(net, "sam")
    tia = await net.text_client("tia")
    await sam.send(b"PRIVMSG tia :\xff\xfe broken")
    assert "UTF-8" in (await sam.expect(lambda line: line.command == "NOTICE" and line.source == "chatnet")).params[-1]
    await sam.send("FROBNICATE now")
    assert (await sam.expect("421")).params[1] == "FROBNICATE"
    for garbage in (":only-a-source", "@=bad PING", "\x01\x02\x03", "PRIV!MSG tia :x"):
        await sam.send(garbage)
        await sam.expect(lambda line: line.command == "NOTICE" and line.source == "chatnet")
    await sam.send("PING :are you there")
    assert await sam.expect("PONG") == IrcLine("PONG", ("chatnet", "are you there"), "chatnet")
    await sam.send("PRIVMSG tia :still here")
    await tia.expect(lambda text: text.endswith("[sam] still here"))
    await sam.quit()
    await tia.close()


async def test_quit_is_answered_with_error_and_the_connection_closes(net: Network) -> None:
    """QUIT: an ERROR line, then the server closes the connection (before registration too)."""
    una = await irc(net, "una")
    await una.in_channel("#general")
    lines = await una.quit()
    assert [line.command for line in lines] == ["ERROR"]
    assert lines[0].params[-1].startswith("Closing link")
    early = await Irc.connect(net.irc_port)
    await early.send("NICK early")
    assert [line.command for line in await early.quit()] == ["ERROR"]


async def test_the_server_pings_an_idle_client_and_drops_one_that_never_answers(net: Network, tmp_path: Path) -> None:
    """A chat server with PING_INTERVAL=1 and PING_TIMEOUT=1: a silent client is sent PING
    and, answering, stays; one that never answers gets ERROR and is closed."""
    name = "server_pings"
    net.serve(name, "async_server.py", CHAT_LISTENING, lambda port: port_open(HOST, port)(),
              CHAT_PORT="0", IRC_PORT="0", IRC_TLS_PORT="0", PING_INTERVAL="1", PING_TIMEOUT="1")  # fmt: skip
    try:
        port = int(re.findall(IRC_LISTENING, net.log(name), re.M)[-1])
        alive = await Irc.connect(port, answer_pings=True)
        await alive.register("pinged_alive")
        silent = await Irc.connect(port, answer_pings=False)
        await silent.register("pinged_silent")

        async def never_answers() -> None:
            ping = await silent.expect("PING", timeout=5)
            assert ping.params == ("chatnet",)
            lines = await silent.until_closed(timeout=5)
            assert [line.command for line in lines][-1:] == ["ERROR"], lines

        async def answers() -> None:
            await alive.expect("PING", timeout=5)  # answered (answer_pings) ...
            await alive.expect("PING", timeout=5)  # ... so it was not dropped: a second one comes

        await asyncio.gather(never_answers(), answers())
        await alive.send("PING :still")
        await alive.expect("PONG")
        await alive.quit()
    finally:
        net.stop(name)


async def test_a_stopping_server_says_error_to_its_irc_clients(net: Network) -> None:
    """At shutdown an IRC client is told why the link closes with an ERROR line (after the
    notice), as IRC servers do before they close a connection."""
    name = "server_stops"
    net.serve(name, "async_server.py", CHAT_LISTENING, lambda port: port_open(HOST, port)(), CHAT_PORT="0", IRC_PORT="0", IRC_TLS_PORT="0")
    try:
        port = int(re.findall(IRC_LISTENING, net.log(name), re.M)[-1])
        fin = await Irc.connect(port)
        await fin.register("fin")
        await fin.in_channel("#general")
        await asyncio.to_thread(net.stop, name)
        lines = await fin.until_closed()
        assert [line.command for line in lines][-1:] == ["ERROR"], lines
    finally:
        net.stop(name)


# --- bots ---------------------------------------------------------------------------------------


async def test_the_openai_bot_answers_an_irc_user(net: Network) -> None:
    """`/msg openai hello` from an IRC client: the bot's answer comes back as one PRIVMSG
    from openai (the whole reply, never the pieces of a stream); WHOIS says it is a bot;
    invited into a channel it joins and answers there what is addressed to it."""
    with FakeOpenAI() as fake:
        net.start_bot("openai", "openai_bot.py", BOT_NAME="openai", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="test", BOT_RETRIES="0")
        try:
            zoe = await irc(net, "zoe")
            await zoe.send("PRIVMSG openai :hello")
            answer = await zoe.expect(from_("openai", "PRIVMSG", "zoe"), timeout=15)
            assert answer.params[-1] == "echo: hello"
            assert not [line for line in await zoe.sync() if line.command == "PRIVMSG"]
            await zoe.send("WHOIS openai")
            whois = await zoe.expect(numeric("311", "openai"))
            assert "bot" in whois.params[-1]
            await zoe.send("JOIN #botroom")
            await zoe.expect(numeric("366", "#botroom"))
            await zoe.send("INVITE openai #botroom")
            await zoe.expect(from_("openai", "JOIN", "#botroom"))  # a bot joins by itself
            await zoe.send("PRIVMSG #botroom :@openai hello room")
            answer = await zoe.expect(lambda line: from_("openai", "PRIVMSG", "#botroom")(line) and "hello room" in line.params[-1], timeout=15)
            assert answer.params[-1] == "zoe: echo: zoe: hello room"  # addressed to its asker, as in text mode
            await zoe.quit()
        finally:
            net.stop("openai")


# --- channel modes: chatnet's room settings over IRC --------------------------------------------


async def test_channel_modes_key_limit_and_ban_refuse_joins_with_their_numerics(net: Network) -> None:
    """MODE +k is echoed and JOIN without the key is 475 (with it: JOIN); +l is 471 once
    full; +b is 474 for a matching nick, the list 367/368, -b lets it in."""
    kim = await irc(net, "kim_op")
    kai = await irc(net, "kai_in")
    await kim.send("JOIN #vault")
    await kim.in_channel("#vault")
    await kim.send("MODE #vault +k beer")
    await kim.expect(from_("kim_op", "MODE", "#vault", "+k", "beer"))
    await kai.send("JOIN #vault")
    await kai.expect(numeric("475", "#vault"))
    await kai.send("JOIN #vault wine")
    await kai.expect(numeric("475", "#vault"))
    await kai.send("JOIN #vault beer")
    await kai.expect(from_("kai_in", "JOIN", "#vault"))
    await kim.send("MODE #vault -k+l beer 2")  # -k takes the key (RFC 2812), which it needs no more
    await kim.expect(from_("kim_op", "MODE", "#vault", "-k+l", "2"))
    third = await irc(net, "kit_out")
    await third.send("JOIN #vault")
    await third.expect(numeric("471", "#vault"))
    await kim.send("MODE #vault -l+b kit*", "MODE #vault +b")
    await kim.expect(from_("kim_op", "MODE", "#vault", "-l+b", "kit*"))
    listed = await kim.lines_until(numeric("368", "#vault"))
    assert [line.params[2] for line in listed if line.command == "367"] == ["kit*!*@*"]
    await third.send("JOIN #vault")
    await third.expect(numeric("474", "#vault"))
    await kim.send("MODE #vault -b kit*")
    await kim.expect(from_("kim_op", "MODE", "#vault", "-b", "kit*"))
    await third.send("JOIN #vault")
    await third.expect(from_("kit_out", "JOIN", "#vault"))
    await kim.send("MODE #vault")
    assert (await kim.expect(numeric("324", "#vault"))).params[2] == "+n"
    for client in (kim, kai, third):
        await client.quit()


async def test_moderated_no_external_and_secret_channels(net: Network) -> None:
    """+m: 404 for the unvoiced, +v lets them speak; -n lets someone outside write in;
    +s hides the channel from LIST for non-members, and NAMES shows it as @."""
    mod = await irc(net, "mod_op")
    talker = await irc(net, "mod_talker")
    outside = await irc(net, "mod_outside")
    await mod.send("JOIN #stage")
    await mod.in_channel("#stage")
    await talker.send("JOIN #stage")
    await talker.in_channel("#stage")
    await mod.send("MODE #stage +m")
    await talker.expect(from_("mod_op", "MODE", "#stage", "+m"))
    await talker.send("PRIVMSG #stage :hello?")
    await talker.expect(numeric("404", "#stage"))
    await mod.send("MODE #stage +v mod_talker")
    await talker.expect(from_("mod_op", "MODE", "#stage", "+v", "mod_talker"))
    await talker.send("PRIVMSG #stage :now?")
    await mod.expect(from_("mod_talker", "PRIVMSG", "#stage", "now?"))
    await mod.send("MODE #stage -m")
    await mod.expect(from_("mod_op", "MODE", "#stage", "-m"))
    await outside.send("PRIVMSG #stage :knock knock")
    await outside.expect(numeric("404", "#stage"))
    await mod.send("MODE #stage -n")
    await mod.expect(from_("mod_op", "MODE", "#stage", "-n"))
    await outside.send("PRIVMSG #stage :knock knock")
    await mod.expect(from_("mod_outside", "PRIVMSG", "#stage", "knock knock"))
    await mod.send("MODE #stage +s", "NAMES #stage")
    names = await mod.expect(numeric("353"))
    assert names.params[1:3] == ("@", "#stage") and "@mod_op" in names.params[-1].split() and "+mod_talker" in names.params[-1].split()
    await outside.send("LIST")
    assert "#stage" not in [line.params[1] for line in await outside.lines_until("323") if line.command == "322"]
    await mod.send("LIST")
    assert "#stage" in [line.params[1] for line in await mod.lines_until("323") if line.command == "322"]
    for client in (mod, talker, outside):
        await client.quit()


async def test_operators_topic_lock_and_clearing_the_topic(net: Network) -> None:
    """+o makes another operator (@ in NAMES) who may kick; +t leaves the topic to
    operators (482 for others); TOPIC #c : clears it (an empty TOPIC, then 331)."""
    top = await irc(net, "top_owner")
    sub = await irc(net, "top_sub")
    low = await irc(net, "top_low")
    for client in (top, sub, low):
        await client.send("JOIN #tower")
        await client.in_channel("#tower")
    await low.send("KICK #tower top_sub")
    await low.expect(numeric("482", "#tower"))
    await top.send("MODE #tower +o top_sub")
    await sub.expect(from_("top_owner", "MODE", "#tower", "+o", "top_sub"))
    await sub.send("NAMES #tower")
    names = (await sub.expect(numeric("353"))).params[-1].split()
    assert "@top_owner" in names and "@top_sub" in names and "top_low" in names
    await top.send("MODE #tower +t")
    await low.expect(from_("top_owner", "MODE", "#tower", "+t"))
    await low.send("TOPIC #tower :mine")
    await low.expect(numeric("482", "#tower"))
    await sub.send("TOPIC #tower :ours")
    await low.expect(from_("top_sub", "TOPIC", "#tower", "ours"))
    await sub.send("TOPIC #tower :")
    await low.expect(from_("top_sub", "TOPIC", "#tower", ""))
    await low.send("TOPIC #tower")
    await low.expect(numeric("331", "#tower"))
    await sub.send("KICK #tower top_low :enough")
    await low.expect(from_("top_sub", "KICK", "#tower", "top_low"))
    for client in (top, sub, low):
        await client.quit()


# --- network operators: OPER with the API token, WALLOPS, INFO ------------------------------------


def debug_server(net: Network, name: str, **env: str) -> tuple[int, int]:
    """A second chat server over the module's API, logging every line (`--debug`): its
    chat and IRC ports."""
    child = Child(
        name, script("async_server.py", "--debug"), lambda: port_open(HOST, child.port or 0)(),
        env={**net.env(), "CHAT_PORT": "0", "IRC_PORT": "0", "IRC_TLS_PORT": "0", **env},
        log_path=net.tmp / "logs" / f"{name}.log", listening=CHAT_LISTENING,
    )  # fmt: skip
    net.children[name] = child
    child.start()
    assert child.port is not None
    return child.port, int(re.findall(IRC_LISTENING, net.log(name), re.M)[-1])


async def test_oper_wallops_info_and_the_lockout_over_irc(net: Network) -> None:
    """OPER <name> <API token> is 381 (+o in MODE and WHOIS's 313); WALLOPS reaches the
    operator and +w users (IRC, and a text user's notice), not a -w one; INFO is 371s and
    374; a wrong password is 464, and LOGIN_ATTEMPTS of them lock out even the right one;
    the debug log never shows the password."""
    name = "server_opers"
    chat_port, irc_port = debug_server(net, name, LOGIN_ATTEMPTS="3")
    try:
        op, hears, deaf = [await Irc.connect(irc_port) for _ in range(3)]
        for client, nick in ((op, "op_one"), (hears, "op_hears"), (deaf, "op_deaf")):
            await client.register(nick)
        text = await TextClient.connect(HOST, chat_port)
        await text.login("op_text")
        await hears.send("MODE op_hears +w")
        await hears.expect(from_("op_hears", "MODE", "op_hears", "+w"))
        await deaf.send("MODE op_deaf -w")
        await text.send("!mode op_text +w")
        await text.expect("Your modes: +w")
        await op.send("WALLOPS :too early")
        await op.expect(numeric("481"))
        await op.send(f"OPER admin {net.token}")
        await op.expect(numeric("381"))
        await op.send("MODE op_one")
        assert (await op.expect(numeric("221"))).params == ("op_one", "+io")
        await op.send("WALLOPS :hi everyone")
        for client in (op, hears):
            await client.expect(from_("op_one", "WALLOPS", "hi everyone"))
        await text.expect("Wallops from op_one: hi everyone")
        await deaf.send("WHOIS op_one", "INFO")
        lines = await deaf.sync()
        assert "WALLOPS" not in [line.command for line in lines]
        assert "313" in [line.command for line in lines]
        info = [line.command for line in lines if line.command in ("371", "374")]
        assert info[-1] == "374" and set(info[:-1]) == {"371"} and len(info) > 1
        await deaf.send("OPER admin wrong-guess")
        assert (await deaf.expect(lambda line: line.command in ("381", "464"))).command == "464"
        await deaf.send("OPER admin wrong-guess-2", "OPER admin wrong-guess-3", f"OPER admin {net.token}")
        answers = [line for line in await deaf.sync() if line.command in ("381", "464")]
        assert [line.command for line in answers] == ["464", "464", "464"] and "try again in" in answers[-1].params[-1]
        for client in (op, hears, deaf):
            await client.quit()
        await text.send("exit")
    finally:
        net.stop(name)
    log = net.log(name)
    assert "OPER <hidden>" in log and "!mode op_text +w" in log  # the lines were logged ...
    assert net.token not in log and "wrong-guess" not in log  # ... never the passwords
    assert "op_one (" in log and "is a network operator now (as 'admin')" in log


async def test_oper_on_a_network_without_an_api_token_is_491(net: Network) -> None:
    """Without API_TOKEN the network has no operators: OPER is 491, whatever the password."""
    api = Child(
        "api_open", script("message_api.py"), lambda: http_ok(f"http://{HOST}:{api.port or 0}/health")(),
        env={**net.env(), "API_TOKEN": "", "API_PORT": "0"}, log_path=net.tmp / "logs" / "api_open.log", listening=API_LISTENING,
    )  # fmt: skip
    net.children["api_open"] = api
    api.start()
    try:
        _, irc_port = debug_server(net, "server_open", API_TOKEN="", API_PORT=str(api.port))
        client = await Irc.connect(irc_port)
        await client.register("op_none")
        await client.send("OPER admin anything")
        assert (await client.expect(lambda line: line.command in ("381", "464", "491"))).command == "491"
        await client.quit()
    finally:
        net.stop("server_open")
        net.stop("api_open")


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
async def test_wallops_reach_the_listeners_on_the_other_nodes(net: Network, tmp_path: Path) -> None:
    """Two nodes through Redis: an operator's WALLOPS on one reaches a +w user on the
    other, and not a user there without +w."""
    redis = RedisServer(tmp_path)
    redis.start()
    cluster = {"CLUSTER_URL": redis.url, "CLUSTER_TTL": "3", "CLUSTER_PREFIX": f"w{time.monotonic_ns()}"}
    try:
        _, first = debug_server(net, "wallops_a", **cluster)
        _, second = debug_server(net, "wallops_b", **cluster)
        op, hears, deaf = await Irc.connect(first), await Irc.connect(second), await Irc.connect(second)
        for client, nick in ((op, "far_op"), (hears, "far_hears"), (deaf, "far_deaf")):
            await client.register(nick)
        await hears.send("MODE far_hears +w")
        await hears.expect(from_("far_hears", "MODE", "far_hears", "+w"))
        await op.send(f"OPER admin {net.token}")
        await op.expect(numeric("381"))

        async def ison() -> list[str]:
            await op.send("ISON far_hears far_deaf")
            return (await op.expect(numeric("303"))).params[-1].split()

        await eventually(ison, lambda online: online == ["far_hears", "far_deaf"], "both users of the other node seen from the first")
        await op.send("WALLOPS :across the network")
        await hears.expect(from_("far_op", "WALLOPS", "across the network"))
        assert "WALLOPS" not in [line.command for line in await deaf.sync()]
        for client in (op, hears, deaf):
            await client.quit()
    finally:
        net.stop("wallops_b")
        net.stop("wallops_a")
        redis.kill()
