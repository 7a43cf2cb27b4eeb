"""The router in process: real sessions on recording transports, the message API in
memory. What users are sent, and what the API was asked, line by line."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatnet import delivery
from chatnet import handover as handover_module
from chatnet import router as router_module
from chatnet import session as session_module
from chatnet.dialects import JSON, TEXT
from chatnet.errors import ApiRejected
from chatnet.protocol import help_lines, short_timestamp
from chatnet.router import Router
from chatnet.session import SENT_LIMIT
from tests.unit.fakes import Client, FakeApi, json_client, running_router, settings, text_client, turns, until

NOT_SAVED = "Error: Message to 'joe' was NOT saved: the message store is unavailable. Please try again later."
STORED = re.compile(r"^\[Stored\] \[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\]\[(\S+)\] '(.*)'$")


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries and the archiver's pauses in milliseconds, not seconds."""
    monkeypatch.setattr(delivery, "MAIL_RETRY_DELAYS", (0.001, 0.002, 0.003))
    monkeypatch.setattr(delivery, "ARCHIVE_PAUSE", 0.001)
    monkeypatch.setattr(delivery, "ARCHIVE_RETRY_PAUSE", 0.005)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
async def router(api: FakeApi) -> AsyncIterator[Router]:
    async with running_router(api) as started:
        yield started


def live(router: Router, sender: str, text: str) -> str:
    """A live message as a text reader sees it, stamped with the router's last clock reading."""
    return f"[{short_timestamp(router.clock.text)}][{sender}] {text}"


def stored_texts(lines: list[str]) -> list[str]:
    return [m.group(3) for m in map(STORED.match, lines) if m]


def chats(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "chat"]


# --- routing -------------------------------------------------------------------------------


async def test_text_to_text_is_one_timestamped_line(router: Router) -> None:
    """`bob: hi` from alice reaches bob as `[ts][alice] hi`, and alice is sent nothing."""
    alice = await text_client(router, "alice")
    bob = await text_client(router, "bob")
    alice.send("bob: hi")
    assert await bob.settle() == [live(router, "alice", "hi")]
    assert alice.take() == []


async def test_text_to_json_gets_a_frame_with_server_set_fields(router: Router) -> None:
    """A text line reaches a JSON reader as a chat frame whose id, sender and timestamp the server set."""
    alice = await text_client(router, "alice")
    web = await json_client(router, "web")
    alice.send("web: hello there")
    [frame] = chats(web.frames(await web.settle()))
    assert frame["id"]
    assert {k: frame[k] for k in ("sender", "destination", "message", "timestamp", "type", "metadata")} == {
        "sender": "alice", "destination": "web", "message": "hello there",
        "timestamp": router.clock.text, "type": "chat", "metadata": {},
    }  # fmt: skip


async def test_json_to_text_and_json_cannot_forge_fields(router: Router) -> None:
    """A JSON client's frame reaches text as `[ts][sender] text`; forged id/sender/timestamp are replaced."""
    alice = await text_client(router, "alice")
    web = await json_client(router, "web", features=("stream",))
    bob = await json_client(router, "bob")
    web.send_json({"type": "chat", "destination": "alice", "message": "to text", "sender": "mallory"})
    assert await alice.settle() == [live(router, "web", "to text")]
    bob.take()
    web.send_json({
        "type": "chat", "destination": "bob", "message": "to json", "sender": "mallory", "id": "forged",
        "timestamp": "2000-01-01T00:00:00.000Z", "metadata": {"stored": True, "mood": "calm"},
    })  # fmt: skip
    [frame] = chats(bob.frames(await bob.settle()))
    assert frame["sender"] == "web" and frame["id"] not in ("", "forged")
    assert frame["timestamp"] == router.clock.text
    assert frame["metadata"] == {"mood": "calm", "sender_features": ["stream"]}


async def test_a_burst_keeps_its_order(router: Router) -> None:
    """Many lines in one chunk arrive in the order they were sent."""
    alice = await text_client(router, "alice")
    bob = await text_client(router, "bob")
    alice.send(*(f"bob: {i}" for i in range(50)))
    assert [line.rsplit(" ", 1)[1] for line in await bob.settle()] == [str(i) for i in range(50)]


# --- offline mail -----------------------------------------------------------------------------


async def test_offline_mail_is_confirmed_only_after_the_store_took_it(router: Router, api: FakeApi) -> None:
    """'Message saved.' comes after the API stored the message, never before."""
    gate = api.hold("store_mail")
    alice = await text_client(router, "alice")
    alice.send("joe: hello!!")
    await until(lambda: gate.waiting == 1, "the store request")
    await turns(10)
    assert alice.take() == []
    assert api.mail["joe"] == []
    gate.open()
    assert await alice.expect("User 'joe' is offline. Message saved.")
    [doc] = api.stored
    assert (doc["sender"], doc["destination"], doc["message"], doc["type"]) == ("alice", "joe", "hello!!", "chat")
    assert [m.message for m in api.mail["joe"]] == ["hello!!"]


async def test_json_sender_gets_a_saved_frame_with_the_stored_id(router: Router, api: FakeApi) -> None:
    """A JSON sender's confirmation names the destination and the id the message was stored under."""
    web = await json_client(router, "web")
    web.chat("joe", "later")
    saved = await web.expect_frame(lambda f: f["metadata"].get("event") == "saved")
    assert saved["type"] == "notification" and saved["sender"] == "server"
    assert saved["metadata"]["destination"] == "joe"
    assert saved["metadata"]["id"] == api.mail["joe"][0].id


async def test_store_down_means_not_saved_after_the_retries(router: Router, api: FakeApi) -> None:
    """With the store down the sender is told plainly it was NOT saved, after every retry."""
    api.fail("store_mail")
    alice = await text_client(router, "alice")
    alice.send("joe: are you there?")
    assert await alice.expect(lambda line: "NOT saved" in line) == NOT_SAVED
    assert len(api.requests("store_mail")) == len(delivery.MAIL_RETRY_DELAYS) + 1
    assert api.mail["joe"] == []
    assert all("saved." not in line for line in alice.lines())


async def test_a_store_that_comes_back_within_the_retries_saves(router: Router, api: FakeApi) -> None:
    """Two failures then success: the sender hears 'saved', once."""
    api.fail("store_mail", times=2)
    alice = await text_client(router, "alice")
    alice.send("joe: third time lucky")
    assert await alice.expect(lambda line: "saved" in line.lower()) == "User 'joe' is offline. Message saved."
    assert [c.outcome for c in api.requests("store_mail")] == ["StoreUnavailable", "StoreUnavailable", "ok"]
    assert len(api.mail["joe"]) == 1


async def test_api_refusal_is_not_saved_at_once(router: Router, api: FakeApi) -> None:
    """A refused request (ApiRejected) is not retried: NOT saved after one attempt."""
    api.fail("store_mail", ApiRejected(422, "bad document"))
    alice = await text_client(router, "alice")
    alice.send("joe: hi")
    assert await alice.expect(lambda line: "NOT saved" in line) == NOT_SAVED
    assert len(api.requests("store_mail")) == 1


async def test_json_sender_gets_a_not_saved_error_frame(router: Router, api: FakeApi) -> None:
    """A JSON sender's failure is an error frame with event not_saved."""
    api.fail("store_mail")
    web = await json_client(router, "web")
    web.chat("joe", "hi")
    error = await web.expect_frame(lambda f: f["type"] == "error")
    assert error["metadata"]["event"] == "not_saved" and error["metadata"]["destination"] == "joe"


async def test_a_sender_gone_before_the_store_answered_is_not_written_to(router: Router, api: FakeApi) -> None:
    """The confirmation for a sender that left is dropped; the mail is still stored."""
    gate = api.hold("store_mail")
    alice = await text_client(router, "alice")
    alice.send("joe: bye")
    await until(lambda: gate.waiting == 1, "the store request")
    alice.transport.disconnect()
    await alice.wait_closed()
    gate.open()
    await until(lambda: api.mail["joe"], "the mail stored")
    await turns(5)
    assert alice.transport.written_after_close == []
    assert all("saved" not in line for line in alice.lines())


# --- presence and commands ---------------------------------------------------------------------


async def test_presence_goes_to_json_sessions_only(router: Router) -> None:
    """JSON sessions hear who comes and goes (not about themselves); text sessions never do."""
    watcher = await json_client(router, "watcher")
    texter = await text_client(router, "texter")
    came = await watcher.expect_frame(lambda f: f["metadata"].get("event") == "presence")
    assert (came["metadata"]["user"], came["metadata"]["presence"], came["message"]) == ("texter", "online", "texter is online")
    other = await json_client(router, "other")
    carol = await text_client(router, "carol")
    carol.transport.disconnect()
    left = await watcher.expect_frame(lambda f: f["metadata"].get("presence") == "offline")
    assert left["metadata"]["user"] == "carol"
    await other.expect_frame(lambda f: f["metadata"].get("presence") == "offline")
    assert all(f["metadata"].get("user") != "other" for f in other.frames() if f["metadata"].get("event") == "presence")
    assert await texter.settle() == []


async def test_who_lists_everyone_online(router: Router) -> None:
    """!who answers text with `Online (n): a, b` and JSON with the users in metadata."""
    bob = await text_client(router, "bob")
    web = await json_client(router, "alice")
    bob.send("!who")
    assert await bob.settle() == ["Online (2): alice, bob"]
    web.take()
    web.send_json({"type": "command", "message": "!who"})
    [who] = web.frames(await web.settle())
    assert who["metadata"] == {"event": "who", "users": ["alice", "bob"], "bots": []}


async def test_help_lists_the_commands(router: Router) -> None:
    """!help answers with the help text, one line each."""
    alice = await text_client(router, "alice")
    alice.send("!help")
    assert await alice.settle() == help_lines()


async def test_check_with_nothing_stored(router: Router) -> None:
    """!check with an empty mailbox says so."""
    alice = await text_client(router, "alice")
    alice.send("!check")
    assert await alice.expect("No stored messages.")


async def test_check_hands_over_mail_stored_since_login(router: Router, api: FakeApi) -> None:
    """!check counts and hands over what arrived for you since you logged in."""
    alice = await text_client(router, "alice")
    api.put_mail("alice", "one", "two", sender="joe")
    alice.send("!check")
    assert await alice.expect("2 stored messages:")
    await until(lambda: len(api.acked) == 1, "the acknowledgement")
    assert stored_texts(alice.take()) == ["one", "two"]
    assert api.mail["alice"] == []


async def test_duplicate_and_reserved_names_are_refused_with_the_prompt_again(router: Router) -> None:
    """A name online already, or 'server' in any case, gets the reason and the prompt; the next name works."""
    first = await text_client(router, "alice")
    client = Client(router)
    assert await client.settle() == ["Enter username:"]
    client.send("alice")
    assert await client.expect("The name 'alice' is already online; choose another.")
    assert await client.settle() == ["Enter username:"]
    client.send("Server")
    assert await client.expect("The name 'Server' is reserved; choose another.")
    assert await client.settle() == ["Enter username:"]
    client.send("bob")
    assert await client.expect("Welcome, bob! No stored messages.")
    client.send("alice: still you?")
    assert await first.settle() == [live(router, "bob", "still you?")]


async def test_duplicate_json_login_is_an_error_frame(router: Router) -> None:
    """A JSON login under a taken name is answered with a login_failed error frame."""
    await text_client(router, "alice")
    client = Client(router)
    client.send_json({"type": "login", "user": "alice"})
    refusal = await client.expect_frame(lambda f: f["type"] == "error")
    assert refusal["metadata"] == {"event": "login_failed", "reason": "name_taken"}
    assert "already online" in refusal["message"]
    assert client.frames(await client.settle()) == []  # nothing else: no welcome


# --- login and hand-over ----------------------------------------------------------------------


@pytest.mark.parametrize(("count", "welcome"), [(0, "No stored messages"), (1, "1 stored message"), (3, "3 stored messages")])
async def test_welcome_counts_stored_mail(router: Router, api: FakeApi, count: int, welcome: str) -> None:
    """The welcome line says how much mail is waiting, then it follows oldest first."""
    api.put_mail("joe", *(f"note {i}" for i in range(count)))
    joe = Client(router)
    joe.send("joe")
    assert await joe.expect(lambda line: line.startswith("Welcome")) == f"Welcome, joe! {welcome}."
    await until(lambda: len(api.acked) == (1 if count else 0) and not api.mail["joe"], "the hand-over")
    lines = await joe.settle()
    assert stored_texts(lines) == [f"note {i}" for i in range(count)]
    assert all(STORED.match(line).group(2) == "alice" for line in lines)  # type: ignore[union-attr]


async def test_json_welcome_has_pending_and_online(router: Router, api: FakeApi) -> None:
    """A JSON welcome carries the user, the pending count and who is online; stored mail is marked stored."""
    await text_client(router, "alice")
    [message] = api.put_mail("zed", "later")
    zed = Client(router)
    zed.send_json({"type": "login", "user": "zed"})
    welcome = await zed.expect_frame(lambda f: f["metadata"].get("event") == "welcome")
    assert welcome["message"] == "Welcome, zed! 1 stored message."
    assert {k: welcome["metadata"][k] for k in ("user", "pending", "online")} == {"user": "zed", "pending": 1, "online": ["alice", "zed"]}
    stored = await zed.expect_frame(lambda f: f["type"] == "chat")
    assert (stored["id"], stored["sender"], stored["message"], stored["metadata"]) == (message.id, "alice", "later", {"stored": True})


async def test_welcome_when_the_store_is_down_still_logs_in(router: Router, api: FakeApi) -> None:
    """Without the store the welcome says stored mail is unavailable; live chat still works."""
    api.fail("pending")
    alice = Client(router)
    alice.send("alice")
    welcome = await alice.expect(lambda line: line.startswith("Welcome"))
    assert "unavailable" in welcome
    bob = await text_client(router, "bob")
    bob.send("alice: live")
    assert await alice.expect(live(router, "bob", "live"))


async def test_hand_over_is_paged_oldest_first_and_acknowledged_page_by_page(router: Router, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """With pages of 2, five messages come in order and each page is acknowledged after it was written."""
    monkeypatch.setattr(router_module, "MAIL_PAGE", 2)
    monkeypatch.setattr(handover_module, "MAIL_PAGE", 2)
    messages = api.put_mail("joe", *(f"m{i}" for i in range(5)))
    acks = api.hold("ack")
    joe = Client(router)
    joe.send("joe")
    assert await joe.expect(lambda line: line.startswith("Welcome")) == "Welcome, joe! 5 stored messages."
    for page in ([0, 1], [2, 3], [4]):
        await until(lambda: acks.waiting == 1, "an acknowledgement")
        assert stored_texts(joe.lines()) == [f"m{i}" for i in range(page[-1] + 1)]  # this page written, no more
        acks.allow(1)
        ids = [messages[i].id for i in page]
        await until(lambda ids=ids: api.acked and api.acked[-1] == ids, f"page {page} acknowledged")  # type: ignore[misc]
    assert [call.args["limit"] for call in api.requests("pending")] == [2, 2, 2]
    assert api.mail["joe"] == []
    assert sum(1 for line in joe.lines() if line.startswith("Welcome")) == 1


async def test_a_close_midway_leaves_the_rest_pending(router: Router, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session that closes during the hand-over has only what was written acknowledged."""
    monkeypatch.setattr(router_module, "MAIL_PAGE", 2)
    monkeypatch.setattr(handover_module, "MAIL_PAGE", 2)
    messages = api.put_mail("joe", *(f"m{i}" for i in range(5)))
    pages = api.hold("pending")
    pages.allow(2)  # the login's look (pending_many: 5 don't fit a page of 2) and its first page
    joe = Client(router)
    joe.send("joe")
    await until(lambda: len(api.acked) == 1 and pages.waiting == 1, "the first page acknowledged")
    joe.transport.disconnect()
    await joe.wait_closed()
    pages.open()
    await until(lambda: all(c.outcome != "pending" for c in api.calls), "the second page read")
    await turns(10)
    assert api.acked == [[messages[0].id, messages[1].id]]
    assert [m.message for m in api.mail["joe"]] == ["m2", "m3", "m4"]
    written = joe.transport.data.decode()
    assert all(m.message in written for m in messages[:2])


async def test_a_session_closing_with_a_full_buffer_gets_nothing_acknowledged_unwritten(router: Router, api: FakeApi) -> None:
    """A hand-over that resumes after its session was told to close (buffer still draining) acknowledges nothing it didn't write."""
    messages = api.put_mail("joe", "m0", "m1")
    pages = api.hold("pending")
    joe = Client(router)
    joe.send("joe")
    await until(lambda: pages.waiting == 1, "the mail request")
    joe.transport.fill(100)  # a few bytes still on their way: asyncio delays connection_lost until they left
    joe.send("exit")
    pages.open()
    await until(lambda: all(c.outcome != "pending" for c in api.calls), "the page read")
    await turns(20)
    written = joe.transport.data.decode()
    acked = {i for ids in api.acked for i in ids}
    unwritten = [m.message for m in messages if m.id in acked and f"'{m.message}'" not in written]
    assert unwritten == [], f"acknowledged {unwritten}, never written; the session was sent {written!r}"


async def test_check_during_a_running_hand_over_is_answered(router: Router, api: FakeApi) -> None:
    """!check sent while the login hand-over is still running gets its own answer after it."""
    api.put_mail("joe", "waiting")
    pages = api.hold("pending")
    joe = Client(router)
    joe.send("joe")
    await until(lambda: pages.waiting == 1, "the login's mail request")
    joe.send("!check")
    pages.open()
    assert await joe.expect("Welcome, joe! 1 stored message.")
    assert STORED.match(await joe.expect(lambda line: line.startswith("[Stored]")))
    assert await joe.expect("No stored messages.")
    assert len(api.acked) == 1


# --- a reader that is not keeping up --------------------------------------------------------


async def test_a_paused_target_gets_mail_handed_over_when_it_resumes(router: Router, api: FakeApi) -> None:
    """Mail to a session whose buffer is full is stored ('not keeping up') and handed over when it reads again."""
    alice = await text_client(router, "alice")
    bob = await text_client(router, "bob")
    bob.transport.fill()
    alice.send("bob: are you there?")
    assert await alice.expect(lambda line: "saved" in line) == "User 'bob' is not keeping up. Message saved."
    assert bob.take() == []
    assert [m.message for m in api.mail["bob"]] == ["are you there?"]
    bob.transport.drain()
    assert await bob.expect("1 stored message:")
    assert stored_texts([await bob.expect(lambda line: line.startswith("[Stored]"))]) == ["are you there?"]
    await until(lambda: api.mail["bob"] == [], "the acknowledgement")
    alice.send("bob: and now live")
    assert await bob.expect(live(router, "alice", "and now live"))


async def test_a_target_resuming_before_its_mail_is_stored_still_gets_it(router: Router, api: FakeApi) -> None:
    """Mail diverted from a paused reader reaches it even when it resumes while the store is still writing."""
    gate = api.hold("store_mail")
    alice = await text_client(router, "alice")
    bob = await text_client(router, "bob")
    bob.transport.fill()
    alice.send("bob: in flight")
    await until(lambda: gate.waiting == 1, "the store request")
    bob.transport.drain()

    def bobs_looks() -> int:
        looks = [*api.requests("pending_many"), *api.requests("pending")]
        return sum(1 for c in looks if "bob" in c.args.get("users", [c.args.get("user")]) and c.outcome == "ok")

    await until(lambda: bobs_looks() == 2, "the resume's look at bob's mail")  # login, resume
    gate.open()
    assert await alice.expect("User 'bob' is not keeping up. Message saved.")
    assert await bob.expect(lambda line: line.startswith("[Stored]"), timeout=0.5)


# --- streamed replies ---------------------------------------------------------------------------


def chunk(seq: int, done: bool) -> dict[str, Any]:
    return {"stream": {"id": "s1", "seq": seq, "done": done}}


async def test_partial_chunks_reach_json_readers_only(router: Router, api: FakeApi) -> None:
    """Streamed chunks go to live JSON readers; text readers get only the final frame, whole."""
    bot = await json_client(router, "bot", features=("stream",))
    web = await json_client(router, "web")
    texter = await text_client(router, "texter")
    web.take()
    for target in ("web", "texter"):
        bot.chat(target, "Hel", chunk(0, False))
        bot.chat(target, "Hello", chunk(1, True))
    got = chats(web.frames(await web.settle()))
    assert [(f["message"], f["metadata"]["stream"]["done"]) for f in got] == [("Hel", False), ("Hello", True)]
    assert await texter.settle() == [live(router, "bot", "Hello")]


async def test_partial_chunks_are_never_stored_or_archived(router: Router, api: FakeApi) -> None:
    """A chunk for an offline reader is dropped silently; chunks delivered live are not archived."""
    bot = await json_client(router, "bot", features=("stream",))
    await json_client(router, "web")
    bot.take()
    bot.chat("nobody", "Hel", chunk(0, False))
    bot.chat("web", "Hel", chunk(0, False))
    bot.chat("web", "Hello", chunk(1, True))
    await until(lambda: api.archived, "the archive request")
    await turns(10)
    assert api.requests("store_mail") == []
    assert bot.take_frames() == []
    assert [doc["message"] for batch in api.archived for doc in batch] == ["Hello"]


def strict_json(line: str) -> Any:
    """A line as standards-conforming JSON (what a browser's JSON.parse accepts)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(line, parse_constant=refuse)


async def test_non_finite_numbers_are_refused_not_relayed(router: Router, api: FakeApi) -> None:
    """A frame with NaN or Infinity is refused to its sender; readers only ever get standard JSON."""
    web = await json_client(router, "web")
    bob = await json_client(router, "bob")
    bob.take()
    web.send('{"type": "chat", "destination": "bob", "message": "hi", "metadata": {"x": NaN, "y": -Infinity}}')
    for line in await bob.settle():
        strict_json(line)
    error = await web.expect_frame(lambda f: f["type"] == "error", timeout=0.5)
    assert error["metadata"]["event"] == "bad_input"


# --- history --------------------------------------------------------------------------------------


async def test_delivered_messages_are_archived_in_one_batch_with_the_ids_readers_saw(router: Router, api: FakeApi) -> None:
    """A burst of live messages is archived in one request, under the ids the JSON reader was shown."""
    alice = await text_client(router, "alice")
    web = await json_client(router, "web")
    web.take()
    alice.send("web: one", "web: two", "web: three")
    seen = chats(web.frames(await web.settle()))
    await until(lambda: api.archived, "the archive request")
    [batch] = api.archived
    assert [(d["id"], d["sender"], d["destination"], d["message"], d["timestamp"]) for d in batch] == [
        (f["id"], "alice", "web", f["message"], f["timestamp"]) for f in seen
    ]
    assert [d["message"] for d in batch] == ["one", "two", "three"]


async def test_messages_to_text_readers_are_archived_with_fresh_ids(router: Router, api: FakeApi) -> None:
    """A text reader is shown no id: the archive makes a distinct one per message."""
    alice = await text_client(router, "alice")
    await text_client(router, "bob")
    alice.send("bob: a", "bob: b")
    await until(lambda: api.archived, "the archive request")
    ids = [d["id"] for d in api.archived[0]]
    assert len(set(ids)) == 2 and all(ids)


async def test_archive_backlog_is_bounded_and_what_comes_when_full_is_not_archived(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """When more is delivered than the backlog holds before the archiver runs, what
    comes while it is full is not archived, and the log says how much."""
    monkeypatch.setattr(delivery, "ARCHIVE_BACKLOG", 3)
    async with running_router(api) as router:
        alice = await text_client(router, "alice")
        bob = await text_client(router, "bob")
        alice.send(*(f"bob: {i}" for i in range(6)))
        assert len(await bob.settle()) == 6  # delivery itself loses nothing
        await until(lambda: api.archived, "the archive request")
        await turns(10)
        assert [d["message"] for batch in api.archived for d in batch] == ["0", "1", "2"]
        assert "history archive fell 3 behind: 3 message(s) delivered meanwhile not archived" in caplog.text


async def test_a_failed_archive_batch_is_sent_again_unchanged(router: Router, api: FakeApi) -> None:
    """The batch the API failed on goes again byte for byte (same ids: no duplicates), then what came after."""
    api.fail("archive_encoded", times=1)
    alice = await text_client(router, "alice")
    await text_client(router, "bob")
    alice.send("bob: first", "bob: second")
    await until(lambda: api.requests("archive_encoded"), "the first archive attempt")
    await until(lambda: router.archiver.asleep, "the archiver's pause after the failure")
    alice.send("bob: third")  # the next delivery wakes the archiver
    await until(lambda: sum(len(b) for b in api.archived) == 3, "everything archived")
    attempts = api.requests("archive_encoded")
    assert attempts[0].outcome == "StoreUnavailable"
    assert attempts[1].args["text"] == attempts[0].args["text"]
    assert [d["message"] for d in attempts[1].args["docs"]] == ["first", "second"]
    assert [d["message"] for batch in api.archived for d in batch] == ["first", "second", "third"]


async def test_a_failed_archive_batch_is_retried_without_new_traffic(router: Router, api: FakeApi) -> None:
    """After a failed archive request the batch is tried again even if nobody sends anything more."""
    api.fail("archive_encoded", times=1)
    alice = await text_client(router, "alice")
    await text_client(router, "bob")
    alice.send("bob: last words")
    await until(lambda: api.archived, "the retry", timeout=0.5)


async def test_the_archiver_waits_while_a_mail_request_is_in_flight(router: Router, api: FakeApi) -> None:
    """Priority: history is sent only once no mail request is running."""
    gate = api.hold("store_mail")
    alice = await text_client(router, "alice")
    await text_client(router, "bob")
    alice.send("joe: offline", "bob: live")
    await until(lambda: gate.waiting == 1, "the store request")
    await until(lambda: not router.archiver.backlog, "the archiver to take its batch")
    await turns(20)
    assert api.requests("archive_encoded") == []
    gate.open()
    await until(lambda: api.archived, "the archive request")
    [store] = api.requests("store_mail")
    [archive] = api.requests("archive_encoded")
    assert archive.started > store.finished


# --- shutdown ---------------------------------------------------------------------------------------


async def test_stop_says_goodbye_stores_what_is_queued_and_closes(api: FakeApi) -> None:
    """Stopping tells everyone, stores queued mail (and confirms it) before closing, and closes every connection."""
    async with running_router(api) as router:
        alice = await text_client(router, "alice")
        web = await json_client(router, "web")
        alice.send("joe: before the end")  # queued; the mail writer has not run yet
    await until(lambda: alice.closed and web.closed, "the connections to close")
    assert alice.take()[:2] == ["Server shutting down. Goodbye.", "User 'joe' is offline. Message saved."]
    assert any(f["metadata"].get("event") == "shutdown" for f in web.frames())
    assert [m.message for m in api.mail["joe"]] == ["before the end"]


async def test_stop_finishes_the_mail_request_in_flight(api: FakeApi) -> None:
    """Mail whose store request is running when the server stops is still stored and confirmed within the grace."""
    gate = api.hold("store_mail")
    router = Router(settings(), api)  # type: ignore[arg-type]  # the stand-in
    router.start()
    alice = await text_client(router, "alice")
    alice.send("joe: in flight at shutdown")
    await until(lambda: gate.waiting == 1, "the store request")
    stopping = asyncio.create_task(router.stop(1.0))
    await turns(3)
    gate.open()
    await stopping
    assert [m.message for m in api.mail["joe"]] == ["in flight at shutdown"]
    assert "User 'joe' is offline. Message saved." in alice.lines()


# --- acknowledged hand-over (the `ack` feature) -------------------------------------------


async def test_a_client_with_ack_has_only_what_it_acknowledged_taken_off_the_mailbox(router: Router, api: FakeApi) -> None:
    """Stored mail to an `ack` client is acknowledged to the API as the client acknowledges it; what it didn't stays pending."""
    messages = api.put_mail("joe", "one", "two", "three")
    joe = await json_client(router, "joe", features=("ack",))
    frames = [await joe.expect_frame(lambda f: f["type"] == "chat") for _ in messages]
    assert [f["message"] for f in frames] == ["one", "two", "three"] and api.acked == []
    joe.send_json({"type": "ack", "ids": [frames[0]["id"], frames[1]["id"]]})
    joe.transport.disconnect()  # gone before acknowledging the third
    await until(lambda: api.acked, "the acknowledgement of what joe acknowledged")
    assert api.acked == [[messages[0].id, messages[1].id]]
    assert [m.message for m in api.mail["joe"]] == ["three"]  # comes again next time


async def test_a_client_with_ack_that_acknowledges_everything_empties_its_mailbox(router: Router, api: FakeApi) -> None:
    """All acknowledged: all taken off, in one acknowledgement to the API."""
    messages = api.put_mail("joe", "one", "two")
    joe = await json_client(router, "joe", features=("ack",))
    frames = [await joe.expect_frame(lambda f: f["type"] == "chat") for _ in messages]
    joe.send_json({"type": "ack", "ids": [f["id"] for f in frames]})
    await until(lambda: api.acked, "the acknowledgement")
    assert api.acked == [[m.id for m in messages]] and api.mail["joe"] == []


async def test_acks_for_what_nobody_waits_for_are_ignored(router: Router) -> None:
    """An ack of unknown ids (or of live messages) gets no answer and harms nothing."""
    joe = await json_client(router, "joe", features=("ack",))
    joe.send_json({"type": "ack", "ids": ["nope"]})
    joe.send_json({"type": "command", "message": "!who"})
    who = await joe.expect_frame(lambda f: f["type"] != "chat")
    assert who["metadata"]["event"] == "who"


async def test_live_messages_an_ack_reader_never_acknowledged_go_to_its_mail(router: Router, api: FakeApi) -> None:
    """A JSON `ack` reader that drops before acknowledging: what it had not acknowledged is stored for it, under the same ids."""
    joe = await json_client(router, "joe", features=("ack",))
    alice = await text_client(router, "alice")
    alice.send("joe: first", "joe: second")
    first = await joe.expect_frame(lambda f: f["type"] == "chat")
    second = await joe.expect_frame(lambda f: f["type"] == "chat")
    joe.send_json({"type": "ack", "ids": [first["id"]]})
    await turns(2)
    joe.transport.disconnect()
    await until(lambda: api.stored, "the unacknowledged message stored")
    assert [(d["id"], d["message"], d["destination"]) for d in api.stored] == [(second["id"], "second", "joe")]
    assert alice.take() == []  # the sender was told nothing more: it had been delivered


async def test_mail_stored_while_its_reader_logs_in_again_comes_after_the_welcome(router: Router, api: FakeApi) -> None:
    """A reader that drops with a message unacknowledged and logs straight back in (a
    page reloaded): when that message is stored between the new login and its welcome
    (the rooms are looked at first), the welcome still comes, counting it, and then the
    message. (A hand-over started by the store's answer used to go first, and the
    welcome never came.)"""
    joe = await json_client(router, "joe", features=("ack",))
    alice = await text_client(router, "alice")
    alice.send("joe: are you there?")
    sent = await joe.expect_frame(lambda f: f["type"] == "chat")
    stored, rooms = api.hold("store_mail"), api.hold("room_logins")
    joe.transport.disconnect()
    await until(lambda: stored.waiting == 1, "the unacknowledged message on its way to the store")
    again = Client(router)
    again.send_json({"type": "login", "user": "joe", "features": ["ack"]})
    await until(lambda: rooms.waiting == 1, "the new login looking at its rooms")
    stored.open()
    await until(lambda: [d["id"] for d in api.stored] == [sent["id"]], "the message stored")
    await turns(3)
    rooms.open()
    welcome = await again.expect_frame(lambda f: f["metadata"].get("event") == "welcome")
    assert welcome["message"] == "Welcome, joe! 1 stored message."
    assert (await again.expect_frame(lambda f: f["type"] == "chat"))["id"] == sent["id"]


async def test_a_login_looks_at_its_mail_and_its_rooms_at_once(router: Router, api: FakeApi) -> None:
    """One round trip to the API per login, not two: the first look at the mail goes
    out while the rooms' look is still unanswered, and the welcome waits for both."""
    rooms = api.hold("room_logins")
    bob = Client(router)
    bob.send("bob")
    await until(lambda: rooms.waiting == 1, "the rooms' look")
    await until(lambda: any("bob" in c.args["users"] for c in api.requests("pending_many")), "the mail's look, beside it")
    assert not [line for line in bob.take() if line.startswith("Welcome")]
    rooms.open()
    assert await bob.expect("Welcome, bob! No stored messages.")


async def test_mail_stored_for_someone_who_logged_in_while_it_was_stored_is_handed_over(router: Router, api: FakeApi) -> None:
    """A message to someone offline whose store request is still under way when they log
    in (and look at their mail) reaches them at once, not at their next login."""
    stored = api.hold("store_mail")
    alice = await text_client(router, "alice")
    alice.send("bob: are you there?")
    await until(lambda: stored.waiting == 1, "the message on its way to the store")
    bob = await text_client(router, "bob")  # "No stored messages": the store has not answered
    stored.open()
    assert await alice.expect("User 'bob' is offline. Message saved.")
    assert stored_texts([await bob.expect(lambda line: line.startswith("[Stored]"))]) == ["are you there?"]
    await until(lambda: api.mail["bob"] == [], "the acknowledgement")


async def test_a_reader_without_ack_whose_tcp_stack_had_everything_leaves_nothing_behind(router: Router, api: FakeApi) -> None:
    """Without the `ack` feature the peer's TCP stack is asked: all it acknowledged counts as received."""
    joe = await json_client(router, "joe")
    alice = await text_client(router, "alice")
    alice.send("joe: hi")
    await joe.expect_frame(lambda f: f["type"] == "chat")
    assert joe.session.unacked is None
    joe.transport.disconnect()
    await joe.wait_closed()
    await turns(3)
    assert api.stored == []


async def test_live_lines_the_peers_tcp_stack_never_acknowledged_go_to_its_mail(router: Router, api: FakeApi) -> None:
    """A text reader whose connection breaks: the lines past what its TCP stack acknowledged are stored for it; the ones before are not."""
    joe = await text_client(router, "joe")
    alice = await text_client(router, "alice")
    alice.send("joe: first")
    await joe.expect(lambda line: line.endswith("[alice] first"))
    joe.transport.acked = sum(map(len, joe.transport.writes))  # the first line reached joe's kernel
    alice.send("joe: second", "joe: third")
    await joe.expect(lambda line: line.endswith("[alice] third"))
    joe.transport.disconnect()
    await until(lambda: len(api.stored) == 2, "the unacknowledged lines stored")
    assert [(d["message"], d["destination"], d["sender"]) for d in api.stored] == [("second", "joe", "alice"), ("third", "joe", "alice")]
    assert alice.take() == []  # the sender is not told: it was delivered live


async def test_a_reader_whose_tcp_stack_falls_far_behind_gets_the_rest_as_mail(router: Router, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """SENT_LIMIT lines unacknowledged by joe's TCP stack: what comes next is stored (alice is
    told he is not keeping up), and handed over once his stack has caught up."""
    monkeypatch.setattr(session_module, "SENT_SWEEP", 0.01)
    joe = await text_client(router, "joe")
    joe.transport.acked = 0  # joe's kernel takes nothing more
    alice = await text_client(router, "alice")
    alice.send(*(f"joe: line {i}" for i in range(SENT_LIMIT + 3)))
    await alice.expect("User 'joe' is not keeping up. Message saved.")
    assert joe.session.paused
    joe.transport.acked = None  # everything written has arrived now
    await joe.expect(lambda line: line.startswith("[Stored]") and line.endswith(f"'line {SENT_LIMIT + 2}'"))
    assert not joe.session.paused


async def test_echoes_are_never_stored_as_mail(router: Router, api: FakeApi) -> None:
    """An echo (a copy of what the reader's own account sent) that never arrived is not anybody's mail."""
    api.accounts["ann"] = ("ann", "person", "correct horse")  # an account: it may have two sessions
    first, second = Client(router), Client(router)
    for client in (first, second):
        client.send_json({"type": "login", "user": "ann", "password": "correct horse", "features": ["ack"]})
        await client.expect_frame(lambda frame: frame["metadata"].get("event") == "welcome")
    await text_client(router, "bob")
    first.send_json({"type": "chat", "destination": "bob", "message": "hi"})
    echo = await second.expect_frame(lambda f: f["type"] == "chat")
    assert echo["metadata"]["echo"] is True
    second.transport.disconnect()
    await second.wait_closed()
    await turns(3)
    assert api.stored == []


# --- a login storm -------------------------------------------------------------------------------


async def test_logins_arriving_together_share_one_look_at_their_mail(router: Router, api: FakeApi) -> None:
    """Twenty logins at once cost one pending_many, none a pending of its own, and each
    welcome counts its own mail; a later !check asks pending as before."""
    names = [f"u{i}" for i in range(20)]
    for i, name in enumerate(names[:5]):
        api.put_mail(name, *(f"{name} note {n}" for n in range(i + 1)))
    clients = [Client(router) for _ in names]
    for client, name in zip(clients, names, strict=True):
        client.send(name)
    welcomes = [await client.expect(lambda line: line.startswith("Welcome")) for client in clients]
    counted = [f"{i + 1} stored message{'s' if i else ''}" for i in range(5)] + ["No stored messages"] * 15
    assert welcomes == [f"Welcome, {name}! {count}." for name, count in zip(names, counted, strict=True)]
    [look] = api.requests("pending_many")
    assert sorted(look.args["users"]) == sorted(names)
    assert api.requests("pending") == []
    await until(lambda: not any(api.mail[name] for name in names[:5]), "the hand-overs acknowledged")
    clients[0].send("!check")
    assert await clients[0].expect("No stored messages.")
    assert [call.args["user"] for call in api.requests("pending")] == ["u0"]


async def test_a_storm_goes_in_bounded_batches_with_few_in_flight(router: Router, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """With batches of 3 and 2 requests in flight, 10 logins make 4 requests; what
    arrives while both are held waits for a slot and goes together."""
    router.first_look.batch = 3
    looks = api.hold("pending_many")
    clients = [Client(router) for _ in range(10)]
    for i, client in enumerate(clients):
        client.send(f"u{i}")
    await until(lambda: looks.waiting == 2, "two looks in flight")
    await turns(20)
    assert looks.arrived == 2  # the rest wait for a slot, not the store
    looks.open()
    for client in clients:
        assert (await client.expect(lambda line: line.startswith("Welcome"))).endswith("No stored messages.")
    assert [len(call.args["users"]) for call in api.requests("pending_many")] == [3, 3, 3, 1]


async def test_a_failed_look_says_unavailable_to_its_logins_only(router: Router, api: FakeApi) -> None:
    """A pending_many that fails twice (asked once more) tells each login of its batch
    that stored mail is unavailable; the next login's look is a new request and counts its mail."""
    api.fail("pending_many", times=2)
    first = [Client(router) for _ in range(3)]
    for i, client in enumerate(first):
        client.send(f"u{i}")
    for client in first:
        assert "unavailable" in await client.expect(lambda line: line.startswith("Welcome"))
    api.put_mail("late", "hello")
    late = Client(router)
    late.send("late")
    assert await late.expect(lambda line: line.startswith("Welcome")) == "Welcome, late! 1 stored message."
    assert [call.outcome for call in api.requests("pending_many")] == ["StoreUnavailable", "StoreUnavailable", "ok"]


async def test_a_look_that_fails_once_is_asked_again(router: Router, api: FakeApi) -> None:
    """One failed pending_many is asked once more, and its logins get their count."""
    api.fail("pending_many", times=1)
    api.put_mail("joe", "hello")
    joe = Client(router)
    joe.send("joe")
    assert await joe.expect(lambda line: line.startswith("Welcome")) == "Welcome, joe! 1 stored message."
    assert [call.outcome for call in api.requests("pending_many")] == ["StoreUnavailable", "ok"]


# --- typing ------------------------------------------------------------------------------


def typing_frame(destination: str, active: bool) -> dict[str, Any]:
    return {"type": "typing", "destination": destination, "active": active}


def typing_notices(client: Client) -> list[dict[str, Any]]:
    return [f["metadata"] for f in client.frames() if f["metadata"].get("event") == "typing"]


async def join_room(client: Client, room: str) -> None:
    client.send_json({"type": "command", "message": f"!join {room}"})
    await client.expect_frame(lambda f: f["metadata"].get("event") == "joined" and f["metadata"]["room"] == room)


async def test_typing_reaches_the_sessions_that_show_it_and_is_never_kept(router: Router, api: FakeApi) -> None:
    """A typing frame to a person becomes a `typing` notice for that person's sessions
    that announced the typing feature; nothing is stored, archived or answered."""
    web = await json_client(router, "web", features=("typing", "stream"))
    plain = await json_client(router, "plain")
    terminal = await text_client(router, "terminal")
    bot = await json_client(router, "helper", features=("bot",))
    await turns(5)
    asked = len(api.calls)
    for client in (web, plain, terminal, bot):
        client.take()
    bot.send_json(typing_frame("web", True), typing_frame("plain", True), typing_frame("terminal", True), typing_frame("joe", True))
    notice = await web.expect_frame(lambda f: f["metadata"].get("event") == "typing")
    assert (notice["type"], notice["sender"], notice["destination"]) == ("notification", "server", "web")
    assert notice["metadata"] == {"event": "typing", "user": "helper", "active": True, "room": None}
    bot.send_json(typing_frame("web", False))
    await web.expect_frame(lambda f: f["metadata"].get("event") == "typing" and f["metadata"]["active"] is False)
    await turns(10)
    assert plain.take() == [] and terminal.take() == []
    assert bot.take() == []  # no answer, not even for the one offline
    assert len(api.calls) == asked  # no mail, no archive, no lookup


async def test_typing_in_a_room_reaches_its_members_with_the_feature_but_the_sender(router: Router) -> None:
    """In a room the notice says the room and goes to the members online that show it,
    never back to the sender; someone not in the room is not relayed at all."""
    alice = await json_client(router, "alice", features=("typing",))
    bob = await json_client(router, "bob", features=("typing",))
    carol = await json_client(router, "carol")
    helper = await json_client(router, "helper", features=("bot", "typing"))
    outsider = await json_client(router, "outsider", features=("typing",))
    for client in (alice, bob, carol, helper):
        await join_room(client, "#hiking")
    await turns(5)
    for client in (alice, bob, carol, helper, outsider):
        client.take()
    helper.send_json(typing_frame("#Hiking", True))
    for member in (alice, bob):
        notice = await member.expect_frame(lambda f: f["metadata"].get("event") == "typing")
        assert notice["metadata"] == {"event": "typing", "user": "helper", "active": True, "room": "#hiking"}
    outsider.send_json(typing_frame("#hiking", True))
    await turns(10)
    assert carol.take() == [] and helper.take() == [] and outsider.take() == []
    assert [n["user"] for n in typing_notices(alice)] == ["helper"]


async def test_typing_to_oneself_goes_nowhere(router: Router) -> None:
    """A typing frame to one's own name is dropped."""
    web = await json_client(router, "web", features=("typing",))
    web.take()
    web.send_json(typing_frame("web", True))
    await turns(10)
    assert web.take() == []


class RecordingNodes:
    """The other nodes, as far as the typing relay uses them: who holds a name, and what was told."""

    def __init__(self, held: dict[str, list[str]]) -> None:
        self.held = held
        self.told: list[tuple[str, dict[str, Any]]] = []

    def where(self, key: str) -> list[str]:
        return self.held.get(key, [])

    def tell_user(self, key: str, payload: dict[str, Any]) -> None:
        self.told.append((key, payload))

    def online(self) -> list[tuple[str, str]]:
        return [(name, "guest") for name in self.held]


async def test_typing_for_a_name_on_another_node_goes_there_and_is_shown_there(router: Router) -> None:
    """With other nodes, a typing frame for a name held elsewhere is told to that node;
    a node told one shows it to the name's sessions there that show typing."""
    helper = await json_client(router, "helper")
    nodes = RecordingNodes({"bob": ["node2"]})
    router.nodes = nodes  # type: ignore[assignment]
    try:
        helper.send_json(typing_frame("Bob", True), typing_frame("nobody", True))
        await until(lambda: nodes.told, "the tell to bob's node")
        details = {"user": "helper", "active": True, "room": None}
        assert nodes.told == [("bob", {"do": "typing", "text": "helper is typing…", "details": details})]
    finally:
        router.nodes = None

    web = await json_client(router, "web", features=("typing",))
    plain = await json_client(router, "plain")
    web.take()
    plain.take()
    for name in ("web", "plain"):
        router.user_here(name, {"do": "typing", "text": "helper is typing…", "details": details})
    notice = await web.expect_frame(lambda f: f["metadata"].get("event") == "typing")
    assert notice["metadata"] == {"event": "typing", **details}
    await turns(5)
    assert plain.take() == []


# --- network operators: !oper with the API token, !wallops ----------------------------------------

TOKEN = "the-api-token-1"


def noticed(frames: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["metadata"].get("event") == event]


@pytest.fixture
async def oper_router(api: FakeApi) -> AsyncIterator[Router]:
    async with running_router(api, settings(api_token=TOKEN, login_attempts=3)) as started:
        yield started


async def test_oper_with_the_api_token_makes_an_operator_and_wallops_reach_operators_and_plus_w(oper_router: Router) -> None:
    """`!oper <name> <API token>`: an operator; its `!wallops` reaches every operator (itself
    too) and whoever set +w, as a notice with event `wallops`, and nobody else."""
    alice = await text_client(oper_router, "alice")
    bob = await text_client(oper_router, "bob")
    carol = await json_client(oper_router, "carol")
    dave = await text_client(oper_router, "dave")
    alice.send(f"!oper admin {TOKEN}")
    assert await alice.settle() == ["You are a network operator now (as admin)."]
    carol.send_json({"type": "command", "message": f"!oper root {TOKEN}"})
    [made] = noticed(carol.frames(await carol.settle()), "oper")
    assert made["metadata"] == {"event": "oper", "user": "carol", "name": "root"}
    bob.send("!mode bob +w")
    assert await bob.settle() == ["Your modes: +w"]
    alice.send("!wallops the network restarts at noon")
    said = "Wallops from alice: the network restarts at noon"
    assert await alice.settle() == [said]
    assert await bob.settle() == [said]
    [frame] = noticed(carol.frames(await carol.settle()), "wallops")
    assert frame["message"] == said and frame["metadata"] == {"event": "wallops", "user": "alice", "message": "the network restarts at noon"}
    assert await dave.settle() == []


async def test_wallops_from_someone_no_operator_is_refused_and_reaches_nobody(oper_router: Router) -> None:
    """A `!wallops` from a non-operator (even one with +w) is an error, sent to nobody."""
    alice = await text_client(oper_router, "alice")
    bob = await text_client(oper_router, "bob")
    bob.send("!mode bob +w")
    await bob.settle()
    alice.send("!mode alice +w", "!wallops hello?")
    assert await alice.settle() == ["Your modes: +w", "Error: Only network operators may send !wallops."]
    assert await bob.settle() == []


async def test_user_modes_are_shown_changed_and_minus_o_ends_being_an_operator(oper_router: Router) -> None:
    """`!mode <you>` shows +o/+w; -o ends the operator (then its !wallops is refused); +o
    is !oper's alone; another's modes or an unknown letter are errors."""
    alice = await text_client(oper_router, "alice")
    await text_client(oper_router, "bob")
    alice.send("!mode alice", f"!oper admin {TOKEN}", "!mode alice", "!mode alice -o+w", "!mode alice +o", "!wallops x")
    assert await alice.settle() == [
        "Your modes: +", "You are a network operator now (as admin).", "Your modes: +o", "Your modes: +w", "Your modes: +w",
        "Error: Only network operators may send !wallops.",
    ]  # fmt: skip
    alice.send("!mode bob", "!mode alice +x")
    lines = await alice.settle()
    assert len(lines) == 2 and all(line.startswith("Error: ") for line in lines)


async def test_whois_says_who_is_an_operator(oper_router: Router) -> None:
    """!whois of an operator (on this node) says so, in its text and `operator`."""
    alice = await text_client(oper_router, "alice")
    bob = await json_client(oper_router, "bob")
    alice.send(f"!oper admin {TOKEN}")
    await alice.settle()
    bob.send_json({"type": "command", "message": "!whois alice"})
    [frame] = noticed(bob.frames(await bob.settle()), "whois")
    assert frame["metadata"]["operator"] is True and "a network operator" in frame["message"]


async def test_a_wrong_operator_password_is_refused_and_enough_of_them_lock_the_name_and_address(oper_router: Router) -> None:
    """Wrong passwords count as wrong login passwords do (LOGIN_ATTEMPTS, here 3): past
    them even the right one is refused for a while, for the name and for its address
    (another name from there too); another address is not locked."""
    alice = await text_client(oper_router, "alice")
    alice.send(*(f"!oper admin guess{i}" for i in range(3)), f"!oper admin {TOKEN}")
    lines = await alice.settle()
    assert lines[:3] == ["Error: Wrong operator password."] * 3
    assert lines[3].startswith("Error: Too many wrong operator passwords; try again in ") and not alice.session.operator
    same_address = Client(oper_router, peer=(alice.transport.peer[0], 50_001))
    same_address.send("mallory")
    await same_address.expect(lambda line: line.startswith("Welcome, mallory!"))
    same_address.send(f"!oper admin {TOKEN}")
    assert (await same_address.settle())[0].startswith("Error: Too many wrong operator passwords")
    elsewhere = Client(oper_router, peer=("192.0.2.7", 50_002))
    elsewhere.send("zoe")
    await elsewhere.expect(lambda line: line.startswith("Welcome, zoe!"))
    elsewhere.send(f"!oper admin {TOKEN}")
    assert await elsewhere.settle() == ["You are a network operator now (as admin)."]


async def test_oper_without_an_api_token_is_refused_and_counts_nothing(router: Router) -> None:
    """No API_TOKEN: the network has no operators; !oper says so (reason no_operators)."""
    web = await json_client(router, "web")
    web.send_json({"type": "command", "message": "!oper admin anything"})
    [frame] = noticed(web.frames(await web.settle()), "oper")
    assert frame["type"] == "error" and frame["metadata"] == {"event": "oper", "reason": "no_operators"}
    assert not web.session.operator
    web.send_json({"type": "command", "message": "!oper admin"})
    [frame] = noticed(web.frames(await web.settle()), "bad_input")
    assert frame["type"] == "error" and "!oper <name> <password>" in frame["message"]


def test_the_debug_log_never_shows_an_operator_password() -> None:
    """`!oper <name> <password>` is logged as `!oper <hidden>` by the text and JSON dialects."""
    assert TEXT.loggable("!oper admin s3cret-token", False) == "!oper <hidden>"
    shown = JSON.loggable('{"type":"command","message":"!OPER admin s3cret-token"}', False)
    assert "s3cret" not in shown and "<hidden>" in shown


async def test_wallops_go_to_the_names_on_other_nodes_and_come_from_them_to_listeners_only(oper_router: Router) -> None:
    """With other nodes, !wallops is told to every name online elsewhere; told one from
    another node, a name's sessions here show it if they hear wallops (+w, operators)."""
    alice = await text_client(oper_router, "alice")
    carol = await text_client(oper_router, "carol")
    dave = await text_client(oper_router, "dave")
    nodes = RecordingNodes({"bob": ["node2"]})
    oper_router.operators.nodes = nodes  # type: ignore[assignment]
    try:
        alice.send(f"!oper admin {TOKEN}", "!wallops hello all")
        await alice.settle()
        details = {"user": "alice", "message": "hello all"}
        assert nodes.told == [("bob", {"do": "wallops", "text": "Wallops from alice: hello all", "details": details})]
        carol.send("!mode carol +w")
        await carol.settle()
        for name in ("carol", "dave"):
            oper_router.user_here(name, {"do": "wallops", "text": "Wallops from bob: hi", "details": {"user": "bob", "message": "hi"}})
        assert await carol.settle() == ["Wallops from bob: hi"]
        assert await dave.settle() == []
    finally:
        oper_router.operators.nodes = None
