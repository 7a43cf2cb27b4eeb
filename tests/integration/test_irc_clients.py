"""chatnet's IRC port checked by IRC code nobody here wrote: pydle (a client library
from PyPI, driven through its own event callbacks) and, where Debian's irssi is
installed, a real irssi at a pty whose screen is read back through pyte. Text-mode
users (tests/support.py TextClient) share the rooms, so every line crosses dialects.

One network serves the whole module; each test has names and rooms of its own."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydle
import pytest

from tests.integration.test_client_pty import Terminal, terminal_env
from tests.support import HOST, TIMEOUT, Network, TextClient, eventually

SERVER_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
PASSWORD = "irc horse battery staple"


@pytest.fixture(scope="module")
def irc_net(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The message API and the chat server with its IRC front, for the whole module."""
    network = Network(store_url=store_url, tmp=tmp_path_factory.mktemp("irc"))
    try:
        network.start_api()
        network.start_server()
        assert network.irc_port  # fails here, plainly, if the server opened no IRC port
        yield network
        assert "Traceback" not in network.log("server"), network.log("server")[-3000:]
    finally:
        network.stop_all()


class LibraryClient(pydle.Client):
    """A pydle client that keeps what its callbacks were told, in order, so a test can
    wait for one. It never reconnects by itself: a closed connection is what a test sees."""

    RECONNECT_ON_ERROR = False

    def __init__(self, nickname: str, **kwargs: Any) -> None:
        super().__init__(nickname, **kwargs)
        self.events: list[tuple[Any, ...]] = []
        self.raw_lines: list[Any] = []  # every parsed line the server sent (with its tags)
        self.changed = asyncio.Event()

    def _record(self, *event: Any) -> None:
        self.events.append(event)
        self.changed.set()

    async def until(self, wanted: Callable[[tuple[Any, ...]], bool], what: str, timeout: float = TIMEOUT) -> tuple[Any, ...]:
        """The first event (seen already or still to come) for which `wanted` holds."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    found = next((event for event in self.events if wanted(event)), None)
                    if found is not None:
                        return found
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self.nickname}: never saw {what} within {timeout} s; events: {self.events[-20:]}") from None

    async def on_raw(self, message: Any) -> None:
        self.raw_lines.append(message)
        await super().on_raw(message)

    async def on_connect(self) -> None:
        await super().on_connect()
        self._record("connect", self.nickname)

    async def on_nick_change(self, old: str, new: str) -> None:
        await super().on_nick_change(old, new)
        self._record("nick", old, new)

    async def on_join(self, channel: str, user: str) -> None:
        await super().on_join(channel, user)
        self._record("join", channel, user)

    async def on_part(self, channel: str, user: str, message: str | None = None) -> None:
        await super().on_part(channel, user, message)
        self._record("part", channel, user, message)

    async def on_quit(self, user: str, message: str | None = None) -> None:
        await super().on_quit(user, message)
        self._record("quit", user, message)

    async def on_channel_message(self, target: str, by: str, message: str) -> None:
        await super().on_channel_message(target, by, message)
        self._record("channel", target, by, message)

    async def on_private_message(self, target: str, by: str, message: str) -> None:
        await super().on_private_message(target, by, message)
        self._record("private", target, by, message)

    async def on_notice(self, target: str, by: str, message: str) -> None:
        await super().on_notice(target, by, message)
        self._record("notice", target, by, message)

    async def on_raw_pong(self, message: Any) -> None:
        await super().on_raw_pong(message)
        self._record("pong", message.params[-1])

    async def settled(self, token: str) -> None:
        """Until the server has answered everything sent before now: a PING's PONG."""
        await self.rawmsg("PING", token)
        await self.until(lambda event: event == ("pong", token), f"the PONG for {token}")

    async def logged_in(self) -> None:
        """Until chatnet's login burst is over: its welcome NOTICE (with the stored-mail
        count) has come, and so has everything the server sent before a PING after it."""
        await self.until(lambda event: event[0] == "notice" and event[3].startswith(f"Welcome, {self.nickname}!"), "chatnet's welcome notice")
        await self.settled("after-login")

    async def on_raw_error(self, message: Any) -> None:
        self._record("error", *message.params)
        await super().on_raw_error(message)

    async def on_raw_903(self, message: Any) -> None:
        await super().on_raw_903(message)
        self._record("sasl-ok", *message.params)

    async def on_raw_904(self, message: Any) -> None:
        self._record("sasl-failed", *message.params)
        await super().on_raw_904(message)

    async def on_disconnect(self, expected: bool) -> None:
        await super().on_disconnect(expected)
        self._record("disconnect", expected)


class ServerTimeClient(LibraryClient):
    """Also asks for IRCv3 server-time (pydle requests only the capabilities it has a
    handler for; this is how pydle is extended for another one)."""

    async def on_capability_server_time_available(self, value: str | None) -> bool:
        return True


@pytest.fixture
async def irc_clients(irc_net: Network) -> AsyncIterator[Callable[..., Any]]:
    """Connect pydle clients to the IRC port; each is registered (its on_connect ran)
    when `connect` returns. Whatever is still connected at the end is disconnected."""
    started: list[LibraryClient] = []

    async def connect(nick: str, cls: type[LibraryClient] = LibraryClient, channels: tuple[str, ...] = (), **kwargs: Any) -> LibraryClient:
        """`channels`: pydle's autojoin, JOINed as soon as registration ends; `kwargs`: the client's (SASL)."""
        client = cls(nick, realname=f"{nick} via pydle", **kwargs)
        started.append(client)
        await client.connect(HOST, irc_net.irc_port, tls=False, channels=list(channels))
        await client.until(lambda event: event[0] == "connect", "the end of registration (001 ... 422)")
        # pydle takes its nick from 422's target in a task of its own: it may lag on_connect.
        await client.until(lambda event: client.nickname == nick, f"pydle's nickname becoming {nick}")
        return client

    yield connect
    for client in started:
        if client.connected:
            await client.disconnect(expected=True)


async def members(client: LibraryClient, channel: str) -> set[str]:
    """Who pydle's own bookkeeping has in `channel` (from NAMES, JOIN, PART, QUIT)."""
    return set(client.channels[channel]["users"]) if channel in client.channels else set()


async def text_user(network: Network, name: str, room: str) -> TextClient:
    user = await network.text_client(name)
    await user.send(f"!join {room}")
    await user.expect(lambda line: room in line and ("Created" in line or "Joined" in line))
    return user


async def test_pydle_clients_chat_with_each_other_and_a_text_user_then_quit(irc_net: Network, irc_clients) -> None:
    """Two pydle clients register, JOIN a channel a text user made, and talk: a channel
    message reaches the other client and the text user, a private message the other
    client only, the text user's channel and private lines arrive through pydle's
    callbacks; QUIT (pydle's own, and one answered by ERROR) leaves the network."""
    room = "#pydle-room"
    tess = await text_user(irc_net, "tess", room)
    ada = await irc_clients("ada")
    bert = await irc_clients("bert")
    assert ada.nickname == "ada" and bert.nickname == "bert"
    assert ada.network == "chatnet"  # pydle read 005's NETWORK=chatnet

    await ada.join(room)
    await ada.until(lambda event: event == ("join", room, "ada"), f"its own JOIN of {room}")
    await bert.join(room)
    await bert.until(lambda event: event == ("join", room, "bert"), f"its own JOIN of {room}")
    await ada.until(lambda event: event == ("join", room, "bert"), f"bert joining {room}")
    # NAMES at the JOIN: pydle's own channel bookkeeping has everyone who is in the room
    # (it files the 353 in a task of its own, after the JOIN's callback).
    await eventually(lambda: members(bert, room), lambda names: {"ada", "bert", "tess"} <= names, f"bert's NAMES of {room}")

    await ada.message(room, "hello from ada")
    assert await bert.until(lambda event: event[0] == "channel" and event[3] == "hello from ada", "ada's channel message") == (
        "channel", room, "ada", "hello from ada",
    )  # fmt: skip
    line = await tess.expect("hello from ada")
    assert line.endswith(f"[{room}][ada] hello from ada"), line

    await ada.message("bert", "psst, bert")
    assert await bert.until(lambda event: event[0] == "private", "ada's private message") == ("private", "bert", "ada", "psst, bert")

    await tess.send(f"{room}: hi from the text side")
    for client in (ada, bert):
        event = await client.until(lambda event: event[0] == "channel" and event[2] == "tess", "tess's channel line")
        assert event == ("channel", room, "tess", "hi from the text side"), event
    await tess.send("ada: just for you")
    event = await ada.until(lambda event: event[0] == "private" and event[2] == "tess", "tess's private line")
    assert event == ("private", "ada", "tess", "just for you"), event
    assert not any(event[0] == "private" and event[2] == "tess" for event in bert.events), bert.events

    await bert.quit("off to bed")  # pydle's QUIT: it sends it and closes at once
    assert not bert.connected
    await eventually(lambda: members(ada, room), lambda names: "bert" not in names, f"bert gone from {room} in ada's pydle")
    await tess.until_online(lambda names: "bert" not in names)

    await ada.rawmsg("QUIT", "done here")  # a QUIT whose answer is read: ERROR, then the close
    error = await ada.until(lambda event: event[0] == "error", "ERROR after QUIT")
    assert "Closing link" in error[1], error
    await ada.until(lambda event: event[0] == "disconnect", "the server closing the connection")
    assert await tess.until_online(lambda names: "ada" not in names and "bert" not in names)
    await tess.close()


async def test_channels_joined_at_once_after_registration_are_announced_once(irc_net: Network, irc_clients) -> None:
    """pydle's autojoin (as bots and irssi's autojoin do) sends JOIN as soon as 422 ends
    registration, before chatnet's login burst (its welcome NOTICE, the JOINs of rooms
    one is already in). Each client must be told of its own JOIN of a channel once, and
    of someone else's JOIN of a channel only after its own."""
    room = "#autojoin-room"
    clients = await asyncio.gather(*(irc_clients(nick, channels=(room,)) for nick in ("abel", "bela", "cleo")))
    for client in clients:
        await client.logged_in()
        await client.until(lambda event, client=client: event == ("join", room, client.nickname), f"its own JOIN of {room}")
    problems: list[str] = []
    for client in clients:
        await client.settled("after-joins")
        told: dict[str, int] = {}  # channel → how often it was told of its own JOIN
        for line in client.raw_lines:
            nick, said = str(line.source).split("!")[0], str(line).strip()
            if line.command == "JOIN" and nick == client.nickname:
                told[line.params[0]] = told.get(line.params[0], 0) + 1
                if told[line.params[0]] > 1:
                    problems.append(f"{client.nickname} was told again {said!r}")
            elif "!" in str(line.source) and line.params and str(line.params[0]).startswith("#") and not told.get(line.params[0]):
                problems.append(f"{client.nickname} was sent {said!r} before its own JOIN of {line.params[0]}")
    assert not problems, "\n".join(problems)


async def test_a_quit_reaches_the_others_as_quit_with_its_reason(irc_net: Network, irc_clients) -> None:
    """Someone who QUITs leaves every shared channel at once: the others get one
    `QUIT :Quit: <reason>` from them (modern.ircdocs.horse, QUIT), which clients show as
    "has quit (reason)", rather than a PART in each channel with the reason lost."""
    room = "#quit-room"
    quinn = await irc_clients("quinn")
    rory = await irc_clients("rory")
    for client in (quinn, rory):
        await client.logged_in()
        await client.join(room)
    await eventually(lambda: members(quinn, room), lambda names: {"quinn", "rory"} <= names, f"quinn and rory in {room} in quinn's pydle")
    await rory.quit("off to bed")
    await eventually(lambda: members(quinn, room), lambda names: "rory" not in names, f"rory gone from {room} in quinn's pydle")
    await quinn.settled("after-quit")
    said = [str(line).strip() for line in quinn.raw_lines if str(line.source).startswith("rory!")]
    left = [event for event in quinn.events if event[0] in ("part", "quit") and "rory" in event[1:3]]
    assert [event[0] for event in left] == ["quit"], f"expected one QUIT from rory, got {said}"
    assert "off to bed" in (left[0][2] or ""), f"the reason rory gave is lost: {said}"


async def test_pydle_sasl_login_gets_stored_mail_with_server_time(irc_net: Network, irc_clients) -> None:
    """An account logs in with SASL PLAIN (pydle + pure-sasl) and server-time: the mail a
    text user left while it was away arrives as a PRIVMSG from that user, its time in
    the @time tag and the text as written."""
    answer = httpx.post(f"{irc_net.api_url}/accounts", json={"name": "sasha", "password": PASSWORD}, headers=irc_net.auth, timeout=10)
    assert answer.status_code == 201, answer.text
    tess = await irc_net.text_client("tessa")
    await tess.send("sasha: left while you were away")
    await tess.expect("Message saved")

    sasha = await irc_clients("sasha", ServerTimeClient, sasl_username="sasha", sasl_password=PASSWORD)
    await sasha.until(lambda event: event[0] == "sasl-ok", "903 (SASL authentication successful)")
    assert sasha._capabilities.get("sasl") and sasha._capabilities.get("server-time"), sasha._capabilities
    assert not any(event[0] == "sasl-failed" for event in sasha.events), sasha.events
    assert any(line.command == 900 and "sasha" in line.params for line in sasha.raw_lines), [str(line) for line in sasha.raw_lines]

    event = await sasha.until(lambda event: event[0] == "private" and event[2] == "tessa", "the stored mail")
    assert event == ("private", "sasha", "tessa", "left while you were away"), event
    stored = next(line for line in sasha.raw_lines if line.command == "PRIVMSG" and line.params[-1] == "left while you were away")
    assert SERVER_TIME.match(stored.tags.get("time") or ""), stored.tags

    await tess.send("sasha: and now live")  # a live one carries the tag too
    await sasha.until(lambda event: event[0] == "private" and event[3] == "and now live", "the live message")
    live = next(line for line in sasha.raw_lines if line.command == "PRIVMSG" and line.params[-1] == "and now live")
    assert SERVER_TIME.match(live.tags.get("time") or ""), live.tags
    await sasha.quit("bye")
    await tess.close()


async def test_pydle_sasl_with_a_wrong_password_is_refused(irc_net: Network, irc_clients) -> None:
    """A wrong SASL password: 904, and the nick of an account is not handed out without it."""
    answer = httpx.post(f"{irc_net.api_url}/accounts", json={"name": "wanda", "password": PASSWORD}, headers=irc_net.auth, timeout=10)
    assert answer.status_code == 201, answer.text
    client = LibraryClient("wanda", sasl_username="wanda", sasl_password="not the password")
    try:
        await client.connect(HOST, irc_net.irc_port, tls=False)
        failed = await client.until(lambda event: event[0] == "sasl-failed", "904 (SASL authentication failed)")
        assert "wanda" in failed[-1], failed  # its text says why (the router's words)
        # Registration goes on without the account: 433 for its nick, and pydle's next choice gets in.
        await client.until(lambda event: event[0] == "nick" and event[2] == "wanda_", "registration as wanda_ after 433")
        assert any(line.command == 433 and "wanda" in line.params for line in client.raw_lines), [str(line) for line in client.raw_lines]
        assert not any(line.command == 1 and line.params[0] == "wanda" for line in client.raw_lines)
    finally:
        if client.connected:
            await client.disconnect(expected=True)


# --- irssi at a pty ------------------------------------------------------------------------

IRSSI = shutil.which("irssi")


def irssi_config(port: int) -> str:
    """A config of its own: one server (this chatnet), no other networks, nothing
    autojoined. irssi's flood queue (after 5 commands, one each 2.2 s) is made quick: it
    only delays what irssi sends (about 7 s here), whatever the server."""
    return f"""
servers = ( {{ address = "{HOST}"; chatnet = "chatnet"; port = "{port}"; use_tls = "no"; autoconnect = "no"; }} );
chatnets = {{ chatnet = {{ type = "IRC"; }}; }};
channels = ( );
settings = {{
  core = {{ real_name = "Iris at irssi"; user_name = "iris"; nick = "iris"; settings_autosave = "no"; }};
  "fe-common/core" = {{ timestamps = "yes"; autocreate_query_level = "MSGS"; }};
  "irc/core" = {{ cmd_queue_speed = "10msec"; cmds_max_at_once = "50"; }};
}};
"""


@pytest.mark.skipif(IRSSI is None, reason="Debian's irssi is not installed (.ci/run installs it as root)")
async def test_irssi_joins_and_talks_with_a_text_user(irc_net: Network, tmp_path: Path) -> None:
    """A real irssi registers, /joins a room, says a line a text user there receives,
    shows the text user's line in its channel window, and /quit ends it with status 0."""
    assert IRSSI is not None
    room = "#irssi-room"
    home = tmp_path / "irssi"
    home.mkdir()
    (home / "config").write_text(irssi_config(irc_net.irc_port))
    tess = await text_user(irc_net, "tesi", room)
    env = terminal_env(HOME=str(home), LANG="C.UTF-8", LC_ALL="C.UTF-8")
    iris = Terminal([IRSSI, f"--home={home}", "--noconnect"], env)
    try:
        await iris.until("Irssi")  # it drew its screen
        iris.type(f"/connect {HOST} {irc_net.irc_port}\r")
        await iris.until("Welcome to the chatnet IRC network")
        await tess.until_online(lambda names: "iris" in names)

        iris.type(f"/join {room}\r")
        await iris.until(lambda terminal: re.search(rf"iris \S* has joined {room}", terminal.display()) is not None)
        iris.type("hello from irssi\r")
        line = await tess.expect("hello from irssi")
        assert line.endswith(f"[{room}][iris] hello from irssi"), line

        await tess.send(f"{room}: hello back from the text side")
        await iris.until(lambda terminal: re.search(r"<[ @+]?tesi> hello back from the text side", terminal.display()) is not None)

        iris.type("/quit see you\r")
        assert await iris.exit_code() == 0, iris.display()
        await tess.until_online(lambda names: "iris" not in names)
    finally:
        iris.close()
        await tess.close()
