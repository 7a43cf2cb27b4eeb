"""Rooms in process: the router with recording sessions over the in-memory message API.
What members are sent, line by line, in text and JSON."""

from __future__ import annotations

import asyncio
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


async def test_a_member_of_two_rooms_has_each_marker_moved_to_the_newest_it_has(router: Router, api: FakeApi) -> None:
    """What the reader's TCP stack has is looked through from the newest: each of its
    rooms' markers lands on that room's newest line, whatever came between (a DM)."""
    alice, bob = await text_client(router, "alice"), await text_client(router, "bob")
    alice.send("!join #a", "!join #b")
    await alice.expect("Created #b; you are its owner.")
    bob.send("!join #a", "!join #b")
    await bob.expect(lambda line: line.startswith("Joined #b"))
    alice.send("#a: a1", "#b: b1", "#a: a2", "bob: just you", "#general: g1")
    await bob.expect(lambda line: line.endswith("[#general][alice] g1"))
    await until(lambda: len(api.room_log["#a"]) == 2 and len(api.room_log["#b"]) == 1, "the rooms' history archived")
    newest = {room: max(api.room_log[room].values(), key=lambda doc: doc["timestamp"] + doc["id"])["message"] for room in ("#a", "#b", "#general")}
    assert newest == {"#a": "a2", "#b": "b1", "#general": "g1"}

    def marked(room: str) -> str | None:
        key = api.read_markers.get(("bob", room))
        return api.room_log[room][key[1]]["message"] if key and key[1] in api.room_log[room] else None

    await until(lambda: all(marked(room) == text for room, text in newest.items()), "bob's markers on the newest of each room")


@pytest.mark.parametrize("wide", [True, False])
async def test_a_wide_flush_waits_a_pass_so_lines_arriving_meanwhile_share_its_send(router: Router, monkeypatch: pytest.MonkeyPatch, wide: bool) -> None:
    """A room's line to many members waits one more loop pass before it is written:
    a line that arrives in that pass goes out in the same write to each member. A
    narrow flush (below WIDE_FLUSH sessions) goes at once."""
    monkeypatch.setattr(session_module, "WIDE_FLUSH", 3 if wide else 100)
    alice, bob, carol, dave = [await text_client(router, name) for name in ("alice", "bob", "carol", "dave")]
    await until(lambda: all(any("Welcome" in line for line in c.lines()) for c in (alice, bob, carol, dave)), "all logged in")
    writes = {c: len(c.transport.writes) for c in (carol, dave)}
    alice.send("#general: one")  # to bob, carol and dave: three sessions to flush
    asyncio.get_running_loop().call_soon(bob.send, "#general: two")  # read in the next pass
    for c in (carol, dave):
        await c.expect(lambda line: line.endswith("[#general][bob] two"))
        lines = [data.decode() for data in c.transport.writes[writes[c]:]]
        if wide:
            assert len(lines) == 1 and "[alice] one" in lines[0] and "[bob] two" in lines[0]
        else:
            assert len(lines) == 2 and "[alice] one" in lines[0] and "[bob] two" in lines[1]


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
    await bob.expect("Error: Only the room's operators may do that.")
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


# --- room settings (!mode: IRC's channel modes, for every client) ---------------------------


async def joined_room(router: Router, *names: str, room: str = "#hiking") -> list[Client]:
    """Text clients, the first the room's owner, all in it."""
    clients = [await text_client(router, name) for name in names]
    for client in clients:
        client.send(f"!join {room}")
        await client.expect(lambda line: line.startswith(("Created", "Joined")) and room in line)
    return clients


async def test_mode_shows_and_changes_a_rooms_settings_and_members_are_told(router: Router) -> None:
    """!mode #room: the settings (+n for a new room); an operator's change is told to
    every member in words; the settings are the store's."""
    alice, bob = await joined_room(router, "alice", "bob")
    alice.send("!mode #hiking")
    await alice.expect("Settings of #hiking: +n (operators: alice)")
    alice.send("!mode #hiking +ml 5")
    said = "alice set #hiking +ml 5 (moderated: only operators and voiced members write; at most 5 members)"
    await alice.expect(said)
    await bob.expect(said)
    bob.send("!mode #hiking")
    await bob.expect("Settings of #hiking: +mnl 5 (operators: alice)")


async def test_only_operators_change_settings_and_the_owner_makes_more(router: Router) -> None:
    """A member who is no operator is refused; +o makes one (and !members says so)."""
    alice, bob = await joined_room(router, "alice", "bob")
    bob.send("!mode #hiking +t")
    await bob.expect("Error: Only the room's operators may do that.")
    alice.send("!mode #hiking +o bob")
    await bob.expect("alice set #hiking +o bob (bob an operator)")
    bob.send("!mode #hiking +t")
    await alice.expect("bob set #hiking +t (only operators set the topic)")


async def test_a_bad_mode_is_refused_in_words(router: Router) -> None:
    """An unknown letter, a limit that is no number, a key with no value."""
    (alice,) = await joined_room(router, "alice")
    alice.send("!mode #hiking +x")
    await alice.expect("Error: Unknown setting 'x'; !help lists them.")
    alice.send("!mode #hiking +l many")
    await alice.expect(lambda line: line.startswith("Error: Not a valid +l: a member limit is a number"))
    alice.send("!mode #hiking +k")
    await alice.expect(lambda line: line.startswith("Error: Not a valid +k: a key is one word"))


async def test_a_key_a_limit_and_a_ban_refuse_joins(router: Router) -> None:
    """+k: a join needs the key (`!join #room key`); +l: no more than that many members;
    +b: a matching name is refused, -b lets it in."""
    alice, bob = await joined_room(router, "alice", "bob")
    carol = await text_client(router, "carol")
    alice.send("!mode #hiking +k beer")
    await alice.expect(lambda line: line.startswith("alice set #hiking +k beer"))
    carol.send("!join #hiking")
    await carol.expect("Error: That room has a key: !join #room <key>.")
    carol.send("!join #hiking wine")
    await carol.expect("Error: That room has a key: !join #room <key>.")
    alice.send("!mode #hiking -k+l 2")
    await alice.expect(lambda line: line.startswith("alice set #hiking -k+l 2"))
    carol.send("!join #hiking")
    await carol.expect("Error: That room is full.")
    alice.send("!mode #hiking -l+b car*")
    await alice.expect(lambda line: line.startswith("alice set #hiking -l+b car*"))
    carol.send("!join #hiking")
    await carol.expect("Error: You are banned from that room.")
    alice.send("!mode #hiking +b")
    await alice.expect(lambda line: line.startswith("Bans in #hiking (1): car*!*@* (by alice)"))
    alice.send("!mode #hiking -b car*")
    await alice.expect(lambda line: line.startswith("alice set #hiking -b car*"))
    carol.send("!join #hiking")
    await carol.expect("Joined #hiking (3 members, 3 online).")


async def test_a_moderated_room_takes_lines_from_operators_and_voices_only(router: Router) -> None:
    """+m: a member without voice is refused; +v lets them write; the owner always writes."""
    alice, bob = await joined_room(router, "alice", "bob")
    alice.send("!mode #hiking +m")
    await bob.expect(lambda line: line.startswith("alice set #hiking +m"))
    bob.send("#hiking: may I?")
    await bob.expect("Error: #hiking is moderated: only its operators and voiced members write to it.")
    alice.send("#hiking: I may")
    await bob.expect(lambda line: line.endswith("[#hiking][alice] I may"))
    alice.send("!mode #hiking +v bob")
    await bob.expect(lambda line: line.startswith("alice set #hiking +v bob"))
    bob.send("#hiking: now I may")
    await alice.expect(lambda line: line.endswith("[#hiking][bob] now I may"))


async def test_minus_n_lets_non_members_write_to_the_room(router: Router) -> None:
    """A room takes lines from its members only (+n) until an operator sets -n."""
    (alice,) = await joined_room(router, "alice")
    bob = await text_client(router, "bob")
    bob.send("#hiking: hello from outside")
    await bob.expect("Error: You are not in #hiking; !join #hiking first.")
    alice.send("!mode #hiking -n")
    await alice.expect(lambda line: line.startswith("alice set #hiking -n"))
    bob.send("#hiking: hello from outside")
    await alice.expect(lambda line: line.endswith("[#hiking][bob] hello from outside"))


async def test_a_secret_room_is_listed_to_its_members_only(router: Router) -> None:
    """+s: !rooms and !members of others do not show it."""
    (alice,) = await joined_room(router, "alice")
    bob = await text_client(router, "bob")
    alice.send("!mode #hiking +s")
    await alice.expect(lambda line: line.startswith("alice set #hiking +s"))
    bob.send("!rooms")
    listed = await bob.expect(lambda line: line.startswith("Rooms ("))
    assert "#hiking" not in listed
    bob.send("!members #hiking")
    await bob.expect("Error: There is no such room; !join #name creates one.")
    alice.send("!rooms")
    assert "#hiking" in await alice.expect(lambda line: line.startswith("Rooms ("))


async def test_a_topic_lock_and_clearing_the_topic(router: Router) -> None:
    """-t (a new room): any member sets the topic; +t: operators only; `!topic #room -` clears it."""
    alice, bob = await joined_room(router, "alice", "bob")
    bob.send("!topic #hiking lake at nine")
    await alice.expect("Topic of #hiking set by bob: lake at nine")
    alice.send("!mode #hiking +t")
    await bob.expect(lambda line: line.startswith("alice set #hiking +t"))
    bob.send("!topic #hiking lake at ten")
    await bob.expect("Error: Only the room's operators may do that.")
    alice.send("!topic #hiking -")
    await bob.expect("Topic of #hiking cleared by alice.")
    bob.send("!topic #hiking")
    await bob.expect("#hiking has no topic; !topic #hiking <text> sets one.")


async def test_json_members_are_told_the_settings(router: Router) -> None:
    """The room_mode notice carries the changes and the settings (a client's own view)."""
    (alice,) = await joined_room(router, "alice")
    joe = await json_client(router, "joe")
    joe.send_json({"type": "command", "message": "!join #hiking"})
    await joe.expect_frame(lambda f: f["metadata"].get("event") == "joined")
    alice.send("!mode #hiking +l 9")
    frame = await joe.expect_frame(lambda f: f["metadata"].get("event") == "room_mode")
    meta = frame["metadata"]
    assert meta["changes"] == [["+l", "9"]] and meta["by"] == "alice"
    assert meta["settings"]["limit"] == 9 and meta["settings"]["ops"] == ["alice"] and meta["settings"]["no_external"] is True


async def test_settings_told_by_another_node_apply_here(router: Router) -> None:
    """A room_mode from another node (its settings) is what this node's fan-out checks:
    +m there, and here the unvoiced are refused."""
    alice, bob = await joined_room(router, "alice", "bob")
    settings = {
        "private": False,
        "moderated": True,
        "no_external": True,
        "secret": False,
        "topic_lock": False,
        "key": None,
        "limit": None,
        "ops": ["alice"],
        "voiced": [],
    }
    details = {"room": "#hiking", "by": "alice", "changes": [["+m", None]], "private": False, "settings": settings}
    router.rooms.told_here("#hiking", "", "alice set #hiking +m", "room_mode", details)
    await bob.expect("alice set #hiking +m")
    bob.send("#hiking: still?")
    await bob.expect("Error: #hiking is moderated: only its operators and voiced members write to it.")
