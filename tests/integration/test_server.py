"""The chat server as users meet it: raw TCP text lines and JSON frames against the
real processes (embedded store, message API, chat server)."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from chatnet.api_client import ApiClient
from chatnet.message import Message
from chatnet.protocol import MessageType
from chatnet.session import BOGUS_BUDGET
from tests.support import HOST, Network, TextClient, eventually, own_store

LIVE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\]\[(\S+)\] (.*)$")
STORED = re.compile(r"^\[Stored\] \[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\]\[(\S+)\] '(.*)'$")


async def test_design_transcript(chat: Network) -> None:
    """The whole text-mode transcript of the design, line by line."""
    alice = await chat.text_client()
    assert await alice.line() == "Enter username:"
    await alice.send("alice")
    assert await alice.line() == "Welcome, alice! No stored messages."

    await alice.send("joe: hello!!")
    assert await alice.line() == "User 'joe' is offline. Message saved."
    assert await alice.line() == "Note: nobody named 'joe' has logged in here yet."  # mail to a name nobody has used is kept too

    bob = await chat.text_client("bob")
    await alice.send("bob: hi")
    line = await bob.expect(lambda text: text.startswith("["))
    when, sender, text = LIVE.match(line).groups()  # type: ignore[union-attr]
    assert (sender, text) == ("alice", "hi")
    assert abs(datetime.fromisoformat(when.replace("Z", "+00:00")) - datetime.now(timezone.utc)) < timedelta(minutes=1)

    await alice.send("!who")
    assert await alice.line() == "Online (2): alice, bob"
    await alice.send("!help")
    await alice.send("!who")  # the end of the help text: whatever comes before its answer
    help_text = (await alice.lines_until(lambda line: line.startswith("Online (")))[:-1]
    assert all(any(word in line for line in help_text) for word in ("!check", "!who", "exit"))
    await alice.send("!check")
    assert await alice.line() == "No stored messages."

    joe = await chat.text_client()
    assert await joe.line() == "Enter username:"
    await joe.send("joe")
    assert await joe.line() == "Welcome, joe! 1 stored message."
    _, sender, text = STORED.match(await joe.line()).groups()  # type: ignore[union-attr]
    assert (sender, text) == ("alice", "hello!!")

    await alice.send("exit")
    assert await alice.line() == "Goodbye, alice!"
    assert await alice.closed()


async def test_stored_mail_is_handed_over_once(chat: Network) -> None:
    """Mail comes oldest first at login; a second !check finds nothing new."""
    alice = await chat.text_client("alice")
    for i in range(5):
        await alice.send(f"joe: note {i}")
        assert await alice.line() == "User 'joe' is offline. Message saved."
        assert await alice.line() == "Note: nobody named 'joe' has logged in here yet."
    joe = await chat.text_client()
    assert await joe.line() == "Enter username:"
    await joe.send("joe")
    assert await joe.line() == "Welcome, joe! 5 stored messages."
    stored = [STORED.match(await joe.line()).group(3) for _ in range(5)]  # type: ignore[union-attr]
    assert stored == [f"note {i}" for i in range(5)]
    await joe.send("!check")
    assert await joe.line() == "No stored messages."
    await joe.close()
    again = await chat.text_client()
    assert await again.line() == "Enter username:"
    await again.send("joe")
    assert await again.line() == "Welcome, joe! No stored messages."


async def test_check_delivers_mail_stored_since_login(chat: Network) -> None:
    """!check hands over mail stored for you since login (here by another writer of the store), once."""
    joe = await chat.text_client()
    assert await joe.line() == "Enter username:"
    await joe.send("joe")
    assert await joe.line() == "Welcome, joe! No stored messages."
    note = Message(sender="alice", destination="joe", message="while you were online")
    async with ApiClient(chat.api_url, chat.token) as api:
        await api.store_mail([note])
    await joe.send("!check")
    assert await joe.line() == "1 stored message:"
    _, sender, text = STORED.match(await joe.line()).groups()  # type: ignore[union-attr]
    assert (sender, text) == ("alice", "while you were online")
    await joe.send("!check")
    assert await joe.line() == "No stored messages."


async def test_json_mode_sets_sender_id_and_time(chat: Network) -> None:
    """A JSON client can't speak as someone else or back-date a message."""
    bob = await chat.json_client("bob")
    mallory = await chat.json_client("mallory")
    await mallory.send_raw({
        "type": "chat", "destination": "bob", "message": "trust me", "sender": "alice", "id": "forged",
        "timestamp": "2000-01-01T00:00:00Z", "metadata": {"stored": True, "sender_features": ["stream"], "mood": "calm"},
    })  # fmt: skip
    got = await bob.expect(lambda m: m.type == MessageType.CHAT)
    assert got.sender == "mallory"
    assert got.id != "forged"
    assert got.metadata == {"mood": "calm"}  # no fake stored mail, no borrowed features
    assert abs(got.timestamp - datetime.now(timezone.utc)) < timedelta(minutes=1)
    assert got.message == "trust me"


async def test_json_and_text_users_talk(chat: Network) -> None:
    """Frames and lines are two views of the same messages."""
    web = await chat.json_client("webuser", features=("stream",))
    assert web.peer.welcome is not None and web.peer.welcome.metadata["event"] == "welcome"
    tcp = await chat.text_client("tcpuser")
    await web.send("tcpuser", "from json")
    assert LIVE.match(await tcp.expect("from json")).group(2) == "webuser"  # type: ignore[union-attr]
    await tcp.send("webuser: from text")
    got = await web.expect(lambda m: m.type == MessageType.CHAT)
    assert (got.sender, got.destination, got.message) == ("tcpuser", "webuser", "from text")


async def test_presence_goes_to_json_clients_only(chat: Network) -> None:
    """JSON clients see who comes and goes; text users are not flooded."""
    watcher = await chat.json_client("watcher")
    text_user = await chat.text_client("texter")
    came = await watcher.expect(lambda m: m.metadata.get("event") == "presence")
    assert came.metadata["presence"] == "online" and came.metadata["user"] == "texter"
    carol = await chat.text_client("carol")
    await carol.close()
    left = await watcher.expect(lambda m: m.metadata.get("presence") == "offline")
    assert left.metadata["user"] == "carol"
    await text_user.nothing_more()


async def test_json_who_and_check(chat: Network) -> None:
    """Commands answer JSON clients with typed notifications."""
    alice = await chat.json_client("alice")
    await chat.text_client("bob")
    await alice.command("!who")
    who = await alice.expect(lambda m: m.metadata.get("event") == "who")
    assert who.metadata["users"] == ["alice", "bob"]
    await alice.send("zed", "later")
    saved = await alice.expect(lambda m: m.metadata.get("event") == "saved")
    assert saved.metadata["destination"] == "zed"
    zed = await chat.json_client("zed")
    assert zed.peer.welcome is not None and zed.peer.welcome.metadata["pending"] == 1
    stored = await zed.expect(lambda m: m.type == MessageType.CHAT)
    assert stored.metadata.get("stored") is True and stored.message == "later" and stored.sender == "alice"


# --- bad input -----------------------------------------------------------------------------


async def test_bad_usernames_are_refused_and_prompted_again(chat: Network) -> None:
    """Empty, invalid and reserved names get a reason and the prompt again."""
    client = await chat.text_client()
    assert await client.line() == "Enter username:"
    for bad, reason in [("", "Invalid username"), ("no spaces", "Invalid username"), ("x" * 40, "Invalid username"), ("server", "reserved")]:
        await client.send(bad)
        assert reason in await client.line()
        assert await client.line() == "Enter username:"
    await client.send("fine")
    assert (await client.line()).startswith("Welcome, fine!")


async def test_duplicate_login_is_refused_and_first_session_keeps_working(chat: Network) -> None:
    """A name already online is refused; the first session is untouched."""
    first = await chat.text_client("alice")
    second = await chat.text_client()
    await second.line()
    await second.send("alice")
    assert "already online" in await second.line()
    json_second = await TextClient.connect(HOST, chat.chat_port)
    await json_second.line()
    await json_second.send('{"type": "login", "user": "alice"}')
    assert '"login_failed"' in await json_second.line()
    bob = await chat.text_client("bob")
    await bob.send("alice: still there?")
    assert (await first.expect("still there?")).endswith("still there?")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"hello", "name: message"),
        (b": no destination", "No destination"),
        (b"b@d: hi", "Invalid destination"),
        (b"bob:", "Empty message"),
        (b"!dance", "Unknown command"),
        (b"bob: \xff\xfe broken", "UTF-8"),
    ],
)
async def test_bad_lines_get_an_error_and_the_session_goes_on(chat: Network, line: bytes, reason: str) -> None:
    """Each bad line is answered with its reason; the next good line works."""
    alice = await chat.text_client("alice")
    bob = await chat.text_client("bob")
    await alice.send(line)
    answer = await alice.line()
    assert answer.startswith("Error:") and reason in answer
    await alice.send("bob: after the error")
    await bob.expect("after the error")


async def test_overlong_line_is_read_away_not_buffered(chat: Network) -> None:
    """A line far over the limit is refused once and the session continues."""
    alice = await chat.text_client("alice")
    bob = await chat.text_client("bob")
    alice.writer.write(b"bob: " + b"x" * 1_000_000 + b"\n")
    await alice.writer.drain()
    assert "Line too long" in await alice.line()
    await alice.send("bob: short one")
    assert "short one" in await bob.expect("short one")
    assert all("xxxx" not in line for line in bob.seen)


async def test_malformed_json_gets_an_error_frame(chat: Network) -> None:
    """Broken JSON is answered with an error frame; the connection stays usable."""
    alice = await chat.json_client("alice")
    bob = await chat.text_client("bob")
    for raw in ["{oops", '{"type": "chat", "destination": "bob"}', '{"type": "login", "user": "again"}', "[]"]:
        await alice.send_raw(raw)
        error = await alice.expect(lambda m: m.type == MessageType.ERROR)
        assert error.metadata["event"] == "bad_input" and error.message
    await alice.send("bob", "still fine")
    await bob.expect("still fine")


async def test_garbage_only_peer_is_cut_off(chat: Network) -> None:
    """A peer that sends nothing but bad lines is disconnected after its budget."""
    pest = await chat.text_client("pest")
    # Exactly the budget: a line sent after the server closed would make its kernel
    # answer with a reset, and a reset may discard the goodbye before it is read.
    pest.writer.write(b"\xff\xff\n" * BOGUS_BUDGET)
    await pest.writer.drain()
    said = await pest.lines_until_closed()
    assert said[-1] == "Too many invalid lines; disconnecting.", said
    assert len(said) == BOGUS_BUDGET + 1 and all(line.startswith("Error:") and "UTF-8" in line for line in said[:-1]), said
    ok = await chat.text_client("ok")
    assert await ok.until_online(lambda users: "pest" not in users) == ["ok"]


async def test_vanishing_clients_and_connect_floods_do_not_hurt_others(chat: Network) -> None:
    """Clients that close mid-line, mid-login or at once leave everyone else served."""
    alice = await chat.text_client("alice")
    bob = await chat.text_client("bob")

    async def hit_and_run(i: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, chat.chat_port)
        if i % 3 == 1:
            writer.write(b"half a name")
        elif i % 3 == 2:
            writer.write(f"u{i}\nbob: partial line without newl".encode())
        writer.close()

    for _ in range(4):
        await asyncio.gather(*(hit_and_run(i) for i in range(100)))
    await alice.send("bob: still routing")
    await bob.expect("still routing")
    # The closed connections leave the online list as soon as the server reads their EOF.
    await alice.until_online(lambda users: users == ["alice", "bob"])


async def test_a_burst_of_a_thousand_connects_is_accepted(chat: Network) -> None:
    """A thousand simultaneous connects all get the prompt (the backlog holds them)."""

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(HOST, chat.chat_port)
        return reader, writer

    pairs = await asyncio.gather(*(connect() for _ in range(1000)))
    prompts = await asyncio.gather(*(asyncio.wait_for(reader.readline(), 30) for reader, _ in pairs))
    assert all(p == b"Enter username:\n" for p in prompts)
    for _, writer in pairs:
        writer.close()


# --- the store going away, restarts --------------------------------------------------------


async def test_api_down_means_not_saved_and_recovery_after(chat: Network) -> None:
    """With the API down the sender hears NOT saved (never a false 'saved'); when it's back, saving works again."""
    alice = await chat.text_client("alice")
    chat.stop("api")
    await alice.send("joe: are you there?")
    answer = await alice.line(timeout=20)
    assert "NOT saved" in answer and "joe" in answer
    chat.start_api()
    await alice.send("joe: second try")
    assert await alice.line(timeout=20) == "User 'joe' is offline. Message saved."
    assert await alice.line() == "Note: nobody named 'joe' has logged in here yet."
    joe = await chat.text_client()
    await joe.line()
    await joe.send("joe")
    assert await joe.line() == "Welcome, joe! 1 stored message."
    assert "second try" in await joe.line()


async def test_login_while_api_down_still_lets_you_chat(chat: Network) -> None:
    """Without the store you can still log in and talk live; !check says why it can't."""
    chat.stop("api")
    alice = await chat.text_client()
    await alice.line()
    await alice.send("alice")
    welcome = await alice.line(timeout=20)
    assert welcome.startswith("Welcome, alice!") and "unavailable" in welcome
    bob = await chat.text_client()
    await bob.line()
    await bob.send("bob")
    await bob.line(timeout=20)
    await alice.send("bob: live still works")
    await bob.expect("live still works")


async def test_mail_survives_a_restart_of_every_process(network: Network, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Stop the store, the API and the server; start them again; the mail is there."""
    store = own_store(tmp_path / "own-data", tmp_path / "own-store.log", "own-store")
    store.start()
    network.store_url = f"mongodb://{HOST}:{store.port}"
    try:
        network.start_api()
        network.start_server()
        alice = await network.text_client("alice")
        await alice.send("joe: survive this")
        assert await alice.line() == "User 'joe' is offline. Message saved."
        assert await alice.line() == "Note: nobody named 'joe' has logged in here yet."
        network.stop_all()
        store.stop()
        assert not store.running

        store.start()
        network.start_api()
        network.start_server()
        joe = await network.text_client()
        await joe.line()
        await joe.send("joe")
        assert await joe.line() == "Welcome, joe! 1 stored message."
        assert STORED.match(await joe.line()).group(3) == "survive this"  # type: ignore[union-attr]
    finally:
        network.stop_all()
        store.stop()


async def test_sigterm_tells_users_and_exits_cleanly(chat: Network) -> None:
    """Stopping the server says goodbye to everyone and exits with code 0."""
    alice = await chat.text_client("alice")
    web = await chat.json_client("web")
    server = chat.children["server"]
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert await alice.expect("shutting down") == "Server shutting down. Goodbye."
    bye = await web.expect(lambda m: m.metadata.get("event") == "shutdown")
    assert bye.type == MessageType.NOTIFICATION
    assert await alice.closed()
    assert server.process.wait(10) == 0


async def test_a_reader_that_stops_reading_stalls_nobody_and_loses_nothing(chat: Network) -> None:
    """A client that doesn't read gets its overflow as stored mail; others are served meanwhile."""
    # 8,000 lines from one sender: flood control (tested on its own) would spread them
    # over minutes, so this server runs without it.
    chat.stop("server")
    chat.start_server(FLOOD_RATE="0")
    sleepy = await TextClient.connect(HOST, chat.chat_port, receive_buffer=4096)
    await sleepy.login("sleepy")
    flooder = await chat.text_client("flooder")
    other = await chat.text_client("other")
    # ~15 MB: more than the server's 1 MiB output buffer plus the kernel's socket buffers.
    total = 8_000
    payload = "y" * 1900
    for start in range(0, total, 500):
        flooder.writer.write("".join(f"sleepy: {i} {payload}\n" for i in range(start, start + 500)).encode())
        await flooder.writer.drain()
    # Someone else is served while sleepy's buffers are full.
    await flooder.send("other: are you served?")
    await other.expect("are you served?", timeout=30)
    busy = await flooder.expect("Message saved.", timeout=60)
    assert busy == "User 'sleepy' is not keeping up. Message saved."
    # Now sleepy reads everything, live and stored: every number exactly once.
    seen: set[int] = set()
    number = re.compile(r"(?:\]\[flooder\] |')(\d+) y")
    deadline = time.monotonic() + 120
    asked = False
    while len(seen) < total and time.monotonic() < deadline:
        try:
            line = await sleepy.line(timeout=3)
        except AssertionError:
            if asked:
                break
            await sleepy.send("!check")
            asked = True
            continue
        match = number.search(line)
        if match:
            seen.add(int(match.group(1)))
        elif line.startswith("No stored messages"):
            asked = False
    assert len(seen) == total, f"missing {total - len(seen)} messages"


async def test_history_keeps_the_ids_recipients_saw(chat: Network) -> None:
    """A delivered message is archived under the id its recipient got, so a client can
    drop the copy it sees again in history."""
    bob = await chat.json_client("bob")
    alice = await chat.text_client("alice")
    await alice.send("bob: remember me")
    live = await bob.expect(lambda m: m.type == MessageType.CHAT)
    async with ApiClient(chat.api_url, chat.token) as api:
        messages, _ = await eventually(lambda: api.history("alice", "bob"), lambda found: bool(found[0]), "history of alice and bob")
    assert [(m["id"], m["message"]) for m in messages] == [(live.id, "remember me")]


async def test_a_peer_that_is_done_sending_still_gets_its_answers(chat: Network) -> None:
    """`printf 'alice\\njoe: hi\\n' | nc -N`: the login, the offline note and its confirmation all arrive, then the server closes."""
    reader, writer = await asyncio.open_connection(HOST, chat.chat_port)
    writer.write(b"alice\njoe: left before you answered\n!who\n")
    await writer.drain()
    writer.write_eof()  # half-close: nothing more from us
    said = (await asyncio.wait_for(reader.read(), 30)).decode().splitlines()
    assert said[:3] == ["Enter username:", "Welcome, alice! No stored messages.", "Online (1): alice"], said
    assert "User 'joe' is offline. Message saved." in said
    writer.close()
