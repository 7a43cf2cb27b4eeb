"""Rooms in process: the router with recording sessions over the in-memory message API.
What members are sent, line by line, in text and JSON."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from chatnet import rooms as rooms_module
from chatnet import session as session_module
from chatnet.dialects.text import TextDialect
from chatnet.protocol import Delivery
from chatnet.router import Router
from tests.unit.fakes import Client, FakeApi, json_client, running_router, settings, text_client, until

SERVICE_TOKEN = "service-token-for-the-bots"
ROOM_LINE = re.compile(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\]\[(#[^]]+)\]\[([^]]+)\] (.*)$")


@pytest.fixture(autouse=True)
def quick_markers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rooms_module, "MARKER_FLUSH", 0.01)
    monkeypatch.setattr(session_module, "SENT_SWEEP", 0.01)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
async def router(api: FakeApi) -> AsyncIterator[Router]:
    async with running_router(api, settings(default_rooms="#general", api_token=SERVICE_TOKEN)) as started:
        yield started


def room_lines(client: Client) -> list[tuple[str, str, str]]:
    return [match.groups() for line in client.lines() if (match := ROOM_LINE.match(line))]  # type: ignore[misc]


async def test_join_creates_a_room_and_members_talk_in_it(router: Router) -> None:
    alice, bob, carol = [await text_client(router, name) for name in ("alice", "bob", "carol")]
    alice.send("!join #hiking")
    await alice.expect("Created #hiking; you are its owner.")
    bob.send("!join #Hiking")
    await bob.expect("Joined #hiking (2 members, 2 online).")
    bob.send("#hiking: who's in?")
    assert (await alice.expect(lambda line: "who's in?" in line)).endswith("[#hiking][bob] who's in?")
    carol.send("!who")
    await carol.expect(lambda line: line.startswith("Online"))
    assert room_lines(carol) == []  # not a member: nothing
    assert [line for line in room_lines(bob)] == []  # its own line is not sent back


async def test_a_room_line_in_json_says_the_room(router: Router) -> None:
    alice = await text_client(router, "alice")
    joe = await json_client(router, "joe")
    alice.send("!join #hiking")
    await alice.expect("Created #hiking; you are its owner.")
    joe.send_json({"type": "command", "message": "!join #hiking"})
    joined = await joe.expect_frame(lambda f: f["metadata"].get("event") == "joined")
    assert joined["metadata"] | {} == joined["metadata"] and joined["metadata"]["room"] == "#hiking"
    alice.send("#hiking: hi all")
    frame = await joe.expect_frame(lambda f: f["type"] == "chat")
    assert (frame["sender"], frame["destination"], frame["message"]) == ("alice", "#hiking", "hi all")
    joe.chat("#hiking", "hello")
    await alice.expect(lambda line: line.endswith("[#hiking][joe] hello"))


async def test_sending_to_a_room_one_is_not_in_or_that_does_not_exist(router: Router) -> None:
    alice, bob = await text_client(router, "alice"), await text_client(router, "bob")
    alice.send("!join #hiking")
    await alice.expect("Created #hiking; you are its owner.")
    bob.send("#hiking: let me in")
    await bob.expect("Error: You are not in #hiking; !join #hiking first.")
    bob.send("#nope: anyone?")
    await bob.expect("Error: There is no room #nope; !join #nope creates it.")
    assert room_lines(alice) == []


async def test_a_room_line_is_rendered_once_per_dialect(router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five text members, one JSON member: the text line is made once, not five times."""
    members = [await text_client(router, f"t{i}") for i in range(5)]
    joe = await json_client(router, "joe")
    sender = await text_client(router, "sender")
    for client in [*members, sender]:
        client.send("!join #general")  # everyone is in it already (the default room); joining again changes nothing
    joe.send_json({"type": "command", "message": "!join #general"})
    await joe.expect_frame(lambda f: f["metadata"].get("event") == "joined")
    for client in members:
        await client.expect(lambda line: line.startswith("Joined #general"))
    rendered: list[Delivery] = []
    original = TextDialect.delivery
    monkeypatch.setattr(TextDialect, "delivery", lambda self, message: rendered.append(message) or original(self, message))
    sender.send("#general: one line for all")
    for client in members:
        await client.expect(lambda line: line.endswith("[#general][sender] one line for all"))
    await joe.expect_frame(lambda f: f["type"] == "chat" and f["message"] == "one line for all")
    assert len(rendered) == 1


async def test_the_default_room_is_joined_at_the_first_login_and_a_leave_sticks(router: Router, api: FakeApi) -> None:
    alice = await text_client(router, "alice")
    alice.send("!rooms")
    await alice.expect("Rooms (1): #general (1 member)")
    alice.send("!leave #general")
    await alice.expect("Left #general.")
    alice.send("exit")
    await alice.wait_closed()
    again = await text_client(router, "alice")
    again.send("#general: back?")
    await again.expect("Error: You are not in #general; !join #general first.")


async def test_unseen_room_messages_come_at_login_and_the_marker_moves_as_they_arrive(router: Router, api: FakeApi) -> None:
    alice, bob = await text_client(router, "alice"), await text_client(router, "bob")
    bob.send("exit")
    await bob.wait_closed()
    alice.send("#general: one", "#general: two", "#general: three")
    await until(lambda: len(api.room_log["#general"]) == 3, "the room's history archived")
    bob = await text_client(router, "bob")
    await bob.expect("#general: 3 new messages since you were last here:")
    for text in ("one", "two", "three"):
        await bob.expect(lambda line, text=text: line.endswith(f"[#general][alice] {text}"))
    # bob's TCP stack has them (the fake's default): his marker moves past them
    await until(lambda: api.read_markers.get(("bob", "#general"), ("", ""))[1] in api.room_log["#general"], "bob's marker moved")
    bob.send("exit")
    await bob.wait_closed()
    again = await text_client(router, "bob")
    again.send("!who")
    await again.expect(lambda line: line.startswith("Online"))
    assert not [line for line in again.lines() if "new message" in line]


async def test_a_reader_that_never_had_them_sees_them_again(router: Router, api: FakeApi) -> None:
    alice, bob = await text_client(router, "alice"), await text_client(router, "bob")
    bob.transport.acked = sum(map(len, bob.transport.writes))  # bob's kernel takes nothing more
    alice.send("#general: lost in the wire")
    await bob.expect(lambda line: line.endswith("lost in the wire"))
    await until(lambda: api.room_log["#general"], "the room's history archived")
    bob.transport.disconnect()
    await bob.wait_closed()
    assert api.stored == []  # a room message is never copied into mail
    again = await text_client(router, "bob")
    await again.expect("#general: 1 new message since you were last here:")
    await again.expect(lambda line: line.endswith("[#general][alice] lost in the wire"))


async def test_bots_get_only_what_is_addressed_to_them_and_never_from_bots(router: Router, api: FakeApi) -> None:
    api.accounts["helper"] = ("helper", "bot", None)
    api.accounts["other"] = ("other", "bot", None)
    bots = []
    for name in ("helper", "other"):
        bot = Client(router)
        bot.send_json({"type": "login", "user": name, "service_token": SERVICE_TOKEN})
        bots.append(bot)
    helper, other = bots
    for bot in bots:
        await bot.expect_frame(lambda f: f["metadata"].get("event") == "welcome")
    alice = await text_client(router, "alice")
    alice.send("#general: just chatting", "#general: @helper what's the time?", "#general: helper: and the date?")
    first = await helper.expect_frame(lambda f: f["type"] == "chat")
    second = await helper.expect_frame(lambda f: f["type"] == "chat")
    assert [first["message"], second["message"]] == ["@helper what's the time?", "helper: and the date?"]
    other.chat("#general", "@helper ping from a bot")
    await alice.expect(lambda line: line.endswith("[#general][other] @helper ping from a bot"))
    assert [f["message"] for f in helper.frames() if f["type"] == "chat"] == ["@helper what's the time?", "helper: and the date?"]
    assert not [f for f in other.frames() if f["type"] == "chat"]


async def test_topic_members_and_history(router: Router) -> None:
    alice, bob = await text_client(router, "alice"), await text_client(router, "bob")
    alice.send("!topic #general Saturday, 9:00 at the lake")
    await bob.expect("Topic of #general set by alice: Saturday, 9:00 at the lake")
    bob.send("!members #general")
    await bob.expect("Members of #general (2): alice (online), bob (online)")
    alice.send("#general: first", "#general: second")
    await bob.expect(lambda line: line.endswith("second"))
    await until(lambda: len(router.rooms.api.room_log["#general"]) == 2, "archived")  # type: ignore[attr-defined]
    bob.send("!history #general 5")
    await bob.expect("Last 2 messages in #general:")
    assert (await bob.expect(lambda line: line.endswith("first"))).endswith("[#general][alice] first")


async def test_private_rooms_need_an_invitation_and_the_owner_kicks(router: Router) -> None:
    alice, bob, carol = [await text_client(router, name) for name in ("alice", "bob", "carol")]
    alice.send("!join #secret")
    await alice.expect("Created #secret; you are its owner.")
    alice.send("!private #secret")
    await alice.expect("#secret is private now: only members see it, and only invited people may join.")
    bob.send("!join #secret")
    await bob.expect("Error: That room is private: its owner must invite you first.")
    carol.send("!rooms")
    await carol.expect(lambda line: line.startswith("Rooms (1): #general"))
    alice.send("!invite #secret bob")
    await alice.expect("Invited bob to #secret.")
    await bob.expect("alice invited you to #secret; !join #secret to come in.")
    bob.send("!join #secret")
    await bob.expect("Joined #secret (2 members, 2 online).")
    bob.send("!kick #secret alice")
    await bob.expect("Error: Only the room's owner may do that.")
    alice.send("!kick #secret bob")
    await alice.expect("Removed bob from #secret.")
    await bob.expect("alice removed you from #secret.")
    bob.send("#secret: still here?")
    await bob.expect("Error: You are not in #secret; !join #secret first.")


async def test_pieces_of_a_streamed_reply_go_only_to_members_that_asked_for_them(router: Router) -> None:
    streaming = await json_client(router, "sam", features=("stream",))
    plain = await json_client(router, "pat")
    text = await text_client(router, "tom")
    writer = await json_client(router, "wes")
    writer.chat("#general", "Hel", {"stream": {"id": "s1", "seq": 0, "done": False}})
    writer.chat("#general", "Hello", {"stream": {"id": "s1", "seq": 1, "done": True}})
    for client in (streaming, plain):
        await client.expect_frame(lambda f: f["type"] == "chat" and f["message"] == "Hello")
    await text.expect(lambda line: line.endswith("[#general][wes] Hello"))
    assert [f["message"] for f in streaming.frames() if f["type"] == "chat"] == ["Hel", "Hello"]
    assert [f["message"] for f in plain.frames() if f["type"] == "chat"] == ["Hello"]
    assert not [line for line in text.lines() if line.endswith("] Hel")]


def bot_login(router: Router, name: str) -> Client:
    bot = Client(router)
    bot.send_json({"type": "login", "user": name, "service_token": SERVICE_TOKEN})
    return bot


async def test_a_bot_invited_while_offline_is_made_a_member(router: Router, api: FakeApi) -> None:
    api.accounts["helper"] = ("helper", "bot", None)
    router.identity.known["helper"] = "bot"
    alice = await text_client(router, "alice")
    alice.send("!join #hiking")
    await alice.expect("Created #hiking; you are its owner.")
    alice.send("!invite #hiking helper")
    await alice.expect("helper (a bot) is in #hiking now.")
    assert "helper" in api.room_members["#hiking"]


async def test_a_bots_catch_up_holds_only_what_was_addressed_to_it(router: Router, api: FakeApi) -> None:
    api.accounts["helper"] = ("helper", "bot", None)
    first = bot_login(router, "helper")  # its first login: into #general
    await first.expect_frame(lambda f: f["metadata"].get("event") == "welcome")
    first.transport.disconnect()
    await first.wait_closed()
    alice = await text_client(router, "alice")
    alice.send("#general: just chatting", "#general: @helper what's the time?")
    await until(lambda: len(api.room_log["#general"]) == 2, "archived")
    again = bot_login(router, "helper")
    catchup = await again.expect_frame(lambda f: f["metadata"].get("event") == "catchup")
    assert catchup["metadata"]["shown"] == 1
    await again.expect_frame(lambda f: f["type"] == "chat" and f["message"] == "@helper what's the time?")
    assert [f["message"] for f in again.frames() if f["type"] == "chat"] == ["@helper what's the time?"]


async def test_ones_own_room_messages_are_never_news_at_the_next_login(router: Router, api: FakeApi) -> None:
    """alice talks in #general and leaves: her next login shows no catch-up of her own lines."""
    alice = await text_client(router, "alice")
    alice.send("#general: my own words", "#general: and more")
    await until(lambda: len(api.room_log["#general"]) == 2, "archived")
    await until(lambda: ("alice", "#general") in api.read_markers and api.read_markers[("alice", "#general")][1] in api.room_log["#general"], "her marker moved")
    alice.send("exit")
    await alice.wait_closed()
    again = await text_client(router, "alice")
    again.send("!who")
    await again.expect(lambda line: line.startswith("Online"))
    assert not [line for line in again.lines() if "new message" in line or "my own words" in line]
