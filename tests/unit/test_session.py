"""One connection in process: what a `Session` does with bytes in and out, its limits
and its failures, on a recording transport in front of the real router."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from chatnet import session as session_module
from chatnet.dialects.text import TextDialect
from chatnet.limits import MAX_LINE_BYTES
from chatnet.liveness import PingBucket, Pinger
from chatnet.protocol import Chat, Command, Login, Quit, short_timestamp
from chatnet.router import Router
from chatnet.session import BOGUS_BUDGET, WRITE_HARD_LIMIT, WRITE_HIGH_WATER, WRITE_LOW_WATER
from tests.unit.fakes import Client, FakeApi, json_client, running_router, settings, text_client, turns, until

TOO_MANY = "Too many invalid lines; disconnecting."


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    async with running_router(FakeApi()) as started:
        yield started


class ExplodingDialect(TextDialect):
    """Text, except that the line `boom` hits a bug in our own code."""

    def parse_login(self, line: str) -> Login:
        if line == "boom":
            raise RuntimeError("a bug while reading a login")
        return super().parse_login(line)

    def parse(self, line: str) -> Chat | Command | Quit | Login:  # type: ignore[override]
        if line == "boom":
            raise RuntimeError("a bug while reading a line")
        return super().parse(line)


def is_open(client: Client) -> bool:
    return not client.transport.is_closing() and not client.closed


# --- connecting ------------------------------------------------------------------------------


async def test_a_new_connection_gets_the_prompt_and_buffer_limits(router: Router) -> None:
    """On connect the session sets the transport's write limits and sends the prompt."""
    client = Client(router)
    assert await client.settle() == ["Enter username:"]
    assert client.transport.limits == (WRITE_HIGH_WATER, WRITE_LOW_WATER)


# --- the bogus budget -------------------------------------------------------------------------


async def test_a_peer_sending_only_garbage_is_cut_off_after_the_budget(router: Router) -> None:
    """BOGUS_BUDGET bad lines in a row: an error each, then the goodbye, then the connection closes."""
    alice = await text_client(router, "alice")
    alice.send(*["hello"] * (BOGUS_BUDGET - 1))
    errors = await alice.settle()
    assert len(errors) == BOGUS_BUDGET - 1 and all(line.startswith("Error: ") for line in errors)
    assert is_open(alice)
    alice.send("hello")
    assert (await alice.settle())[-2:] == ["Error: Write 'name: message' to send a message, or !help for the commands.", TOO_MANY]
    await alice.wait_closed()
    assert alice.transport.written_after_close == []


async def test_a_good_line_resets_the_bogus_count(router: Router) -> None:
    """A valid line between bad ones starts the count again."""
    alice = await text_client(router, "alice")
    alice.send(*[b"\xff"] * (BOGUS_BUDGET - 1), "!who", *[b"\xff"] * (BOGUS_BUDGET - 1))
    lines = await alice.settle()
    assert "Online (1): alice" in lines and TOO_MANY not in lines
    assert is_open(alice)
    alice.send(b"\xff")
    assert await alice.expect(TOO_MANY)
    await alice.wait_closed()


async def test_bad_logins_count_against_the_budget_too(router: Router) -> None:
    """A peer that never gets a name right is cut off like any other garbage."""
    client = Client(router)
    client.send(*["no spaces allowed"] * BOGUS_BUDGET)
    assert await client.expect(TOO_MANY)
    await client.wait_closed()


# --- the login timeout ------------------------------------------------------------------------


async def test_a_connection_that_never_logs_in_is_dropped(router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a username within LOGIN_TIMEOUT the peer is told why and disconnected; a logged-in one stays."""
    monkeypatch.setattr(session_module, "LOGIN_TIMEOUT", 0.05)
    user = Client(router)  # its timer is due first
    idle = Client(router)
    user.send("alice")
    await idle.wait_closed()
    assert idle.lines() == ["Enter username:", "No username given in time; disconnecting."]
    await turns(5)
    assert is_open(user)
    user.send("!who")
    assert await user.expect("Online (1): alice")


async def test_a_connection_gone_before_its_timeout_is_left_alone(router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that left before the timeout fired is not written to again."""
    monkeypatch.setattr(session_module, "LOGIN_TIMEOUT", 0.05)
    gone = Client(router)
    await gone.settle()
    gone.transport.disconnect()
    await gone.wait_closed()
    later = Client(router)
    await later.wait_closed()  # the timeout has fired for both by now
    assert gone.transport.written_after_close == []
    assert gone.lines() == ["Enter username:"]


# --- bad bytes --------------------------------------------------------------------------------


async def test_an_overlong_line_is_refused_once_and_the_session_goes_on(router: Router) -> None:
    """A line over MAX_LINE_BYTES, even in pieces, gets one error; the next line is routed."""
    alice = await text_client(router, "alice")
    bob = await text_client(router, "bob")
    data = b"bob: " + b"x" * (3 * MAX_LINE_BYTES) + b"\n"
    for start in range(0, len(data), 1000):
        alice.send_raw(data[start : start + 1000])
    assert await alice.settle() == [f"Error: Line too long (the limit is {MAX_LINE_BYTES} bytes); it was ignored."]
    alice.send("bob: short one")
    assert await bob.settle() == [f"[{short_timestamp(router.clock.text)}][alice] short one"]


async def test_invalid_utf8_is_refused_and_the_session_goes_on(router: Router) -> None:
    """A line that is not UTF-8 gets an error; the next line is routed."""
    alice = await text_client(router, "alice")
    bob = await text_client(router, "bob")
    alice.send(b"bob: \xff\xfe broken")
    assert await alice.settle() == ["Error: Invalid UTF-8 in that line; it was ignored."]
    alice.send("bob: fine")
    assert (await bob.settle())[0].endswith("[alice] fine")


async def test_quit_says_goodbye_and_closes(router: Router) -> None:
    """`exit` is answered with the goodbye and the connection closes."""
    alice = await text_client(router, "alice")
    alice.send("exit")
    assert await alice.settle() == ["Goodbye, alice!"]
    await alice.wait_closed()


async def test_nothing_is_acted_on_after_the_goodbye(router: Router) -> None:
    """Lines that follow `exit` in the same chunk are not acted on."""
    alice = await text_client(router, "alice")
    bob = await text_client(router, "bob")
    alice.send("exit", "bob: after my goodbye")
    await alice.wait_closed()
    assert await bob.settle() == []


# --- bytes out --------------------------------------------------------------------------------


async def test_writes_in_one_loop_pass_go_out_in_one_transport_write(router: Router) -> None:
    """Several answers queued in one pass cost one transport.write."""
    alice = await text_client(router, "alice")
    bob = await text_client(router, "bob")
    before_alice, before_bob = len(alice.transport.writes), len(bob.transport.writes)
    alice.send("hello", "!who", "bob: one", "bob: two", "bob: three")
    await turns(2)
    assert len(alice.transport.writes) == before_alice + 1
    assert len(bob.transport.writes) == before_bob + 1
    assert len(alice.take()) == 2 and len(bob.take()) == 3


async def test_a_paused_session_still_gets_notices_below_the_hard_limit(router: Router) -> None:
    """Over the high-water mark a session is paused, but what the server says still goes out."""
    bob = await text_client(router, "bob")
    bob.transport.fill(WRITE_HIGH_WATER + 1)
    assert bob.session.paused
    bob.send("!who")
    assert await bob.settle() == ["Online (1): bob"]
    assert not bob.transport.aborted


async def test_a_peer_over_the_hard_limit_is_aborted(router: Router, caplog: pytest.LogCaptureFixture) -> None:
    """Paused with more than WRITE_HARD_LIMIT queued, the next write drops the peer; others go on."""
    alice = await text_client(router, "alice")
    bob = await text_client(router, "bob")
    bob.transport.fill(WRITE_HARD_LIMIT + 1)
    bob.send("!who")
    await bob.wait_closed()
    assert bob.transport.aborted
    assert any(r.name == "chatnet.server" and r.getMessage() == f"bob ({bob.peer}) is not reading; disconnecting" for r in caplog.records)
    alice.send("!who")
    assert await alice.expect("Online (1): alice")


# --- our own bugs -------------------------------------------------------------------------------


async def test_a_bug_in_a_line_handler_costs_only_that_connection(router: Router, caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected exception is logged with the traceback, closes that session, and nobody else notices."""
    alice = await text_client(router, "alice")
    bob = await text_client(router, "bob")
    victim = Client(router, ExplodingDialect(), pick=None)
    victim.send("victim")
    await victim.expect(lambda line: line.startswith("Welcome, victim!"))
    victim.send("boom", "bob: never routed")
    assert await victim.settle() == ["Internal server error; disconnecting."]
    await victim.wait_closed()
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "chatnet.server" and "victim" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    alice.send("bob: still routing", "!who")
    assert (await bob.settle())[-1].endswith("[alice] still routing")
    assert await alice.expect("Online (2): alice, bob")


async def test_a_bug_during_login_is_logged_with_the_peer(router: Router, caplog: pytest.LogCaptureFixture) -> None:
    """Before login the log line names the peer's address; the connection is closed."""
    other = await text_client(router, "other")
    victim = Client(router, ExplodingDialect(), pick=None)
    victim.send("boom")
    await victim.wait_closed()
    assert victim.lines()[-1] == "Internal server error; disconnecting."
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "chatnet.server" and victim.peer in record.getMessage()
    other.send("!who")
    assert await other.expect("Online (1): other")


# --- --debug ------------------------------------------------------------------------------------


async def test_debug_logs_every_line_in_and_out(router: Router, caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG on chatnet.server, lines in are logged as `< line` and lines out as `> line`, by name or peer."""
    caplog.set_level(logging.DEBUG, logger="chatnet.server")
    alice = Client(router)
    assert await alice.settle() == ["Enter username:"]
    alice.send("alice")
    await alice.expect("Welcome, alice! No stored messages.")
    bob = await text_client(router, "bob")
    alice.send("bob: hi")
    await bob.settle()
    logged = [r.getMessage() for r in caplog.records if r.name == "chatnet.server" and r.levelno == logging.DEBUG]
    for expected in (
        f"{alice.peer} > Enter username:",
        f"{alice.peer} < alice",
        f"alice ({alice.peer}) > Welcome, alice! No stored messages.",
        f"alice ({alice.peer}) < bob: hi",
        f"bob ({bob.peer}) > [{short_timestamp(router.clock.text)}][alice] hi",
    ):
        assert expected in logged, f"{expected!r} not in {logged}"


async def test_without_debug_lines_are_not_logged(router: Router, caplog: pytest.LogCaptureFixture) -> None:
    """At INFO nothing per line is logged."""
    caplog.set_level(logging.INFO, logger="chatnet.server")
    alice = await text_client(router, "alice")
    alice.send("!who")
    await alice.settle()
    assert not [r for r in caplog.records if " < " in r.getMessage() or " > " in r.getMessage()]


def test_tcp_keepalive_finds_peers_that_vanished_and_nagle_is_on() -> None:
    """An accepted TCP socket gets keepalive probes, so a dead peer is dropped in about two minutes."""
    import socket

    from chatnet import session as session_module

    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as _client:
        accepted, _ = server.accept()
        with accepted:
            accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the event loop leaves it
            session_module._tune(accepted)
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # Nagle on: see _tune
            assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == session_module.KEEPALIVE_IDLE
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == session_module.KEEPALIVE_PROBES


# --- liveness --------------------------------------------------------------------------------


@pytest.fixture
async def pinging() -> AsyncIterator[Router]:
    async with running_router(FakeApi(), settings(ping_interval=0.05, ping_timeout=0.1)) as started:
        yield started


def pings(client: Client) -> list[dict[str, object]]:
    return [f for f in client.frames() if f["metadata"].get("event") == "ping"]


async def test_a_silent_json_client_is_pinged_and_its_pong_keeps_it(pinging: Router) -> None:
    """Silence is answered by a ping; a pong (or any line) keeps the connection, and the next silence is pinged again."""
    joe = await json_client(pinging, "joe")
    await until(lambda: len(pings(joe)) == 1, "a ping")
    ping = pings(joe)[0]
    assert (ping["type"], ping["sender"], ping["destination"]) == ("notification", "server", "joe")
    joe.send_json({"type": "pong"})
    await until(lambda: len(pings(joe)) == 2, "a second ping after more silence")
    assert is_open(joe)
    assert not [f for f in joe.frames() if f["type"] == "error"]  # the pong was no bad frame


async def test_a_json_client_that_does_not_answer_a_ping_is_dropped(pinging: Router) -> None:
    """No answer within the timeout: told why, and the connection is gone; the others stay."""
    joe = await json_client(pinging, "joe")
    ann = await json_client(pinging, "ann")
    await until(lambda: pings(ann), "ann pinged")
    ann.send_json({"type": "command", "message": "!who"})  # ann answers with anything
    await joe.wait_closed()
    assert joe.frames()[-1]["message"] == "No answer to ping; disconnecting."
    assert is_open(ann)


async def test_pinged_sessions_wait_on_the_routers_one_timer_and_leave_it_as_they_go(pinging: Router) -> None:
    """Every pinged session is the pinger's (no timer of its own: ten thousand idle IRC
    clients would hold 5 MB of them); one that closes is forgotten at once."""
    joe, ann = await json_client(pinging, "joe"), await json_client(pinging, "ann")
    bob = await text_client(pinging, "bob")
    assert joe.session in pinging.pinger and ann.session in pinging.pinger
    assert bob.session not in pinging.pinger  # text mode is never pinged
    joe.transport.close()
    await joe.wait_closed()
    assert joe.session not in pinging.pinger and ann.session in pinging.pinger


class Watched:
    """A session as the pinger sees it: when it was asked, and what it answers."""

    def __init__(self, loop: asyncio.AbstractEventLoop, answers: list[float | None]) -> None:
        self.loop, self.answers, self.asked = loop, answers, []
        self.ping_bucket: PingBucket | None = None  # the pinger's

    def check_alive(self) -> float | None:
        self.asked.append(self.loop.time())
        return self.answers.pop(0)


async def test_the_pinger_asks_each_session_when_its_time_is_up_never_before() -> None:
    loop = asyncio.get_running_loop()
    pinger = Pinger((0.08, 0.04))  # ticks of 10 ms
    quick, slow = Watched(loop, [0.04, None]), Watched(loop, [None])
    start = loop.time()
    pinger.watch(quick, 0.02)  # type: ignore[arg-type]
    pinger.watch(slow, 0.1)  # type: ignore[arg-type]
    await until(lambda: len(quick.asked) == 2 and len(slow.asked) == 1, "both asked")
    assert quick.asked[0] - start >= 0.02 and quick.asked[1] - quick.asked[0] >= 0.04
    assert slow.asked[0] - start >= 0.1
    assert len(pinger) == 0  # both answered None at the last: nothing left to time
    pinger.close()


async def test_a_forgotten_session_is_not_asked_nor_kept_by_the_pinger() -> None:
    """A closed session leaves its bucket's list lazily: never asked, and gone from the
    list once most of the list is such, so the pinger does not keep it alive."""
    loop = asyncio.get_running_loop()
    pinger = Pinger((0.08, 0.04))
    gone, kept = [Watched(loop, [None]) for _ in range(3)], Watched(loop, [None])
    for watched in [*gone, kept]:
        pinger.watch(watched, 0.02)  # type: ignore[arg-type]
    for watched in gone:
        pinger.forget(watched)  # type: ignore[arg-type]
    assert kept.ping_bucket is not None and kept.ping_bucket.sessions == [kept]
    assert len(pinger) == 1
    await until(lambda: kept.asked, "the one still watched asked")
    assert not any(watched.asked for watched in gone)
    pinger.close()


async def test_text_clients_are_never_pinged(pinging: Router) -> None:
    """netcat can't answer a ping: text mode relies on TCP keepalive."""
    joe = await text_client(pinging, "joe")
    ann = await json_client(pinging, "ann")
    await ann.wait_closed()  # pinged and dropped meanwhile: a text client would have been too
    assert is_open(joe)
    assert joe.take() == []
