"""Rooms over the real processes (embedded store, message API, chat server): what people
at `nc` and programs in JSON mode see, across logins and restarts."""

from __future__ import annotations

import re

from chatnet.api_client import ApiClient
from tests.support import JsonClient, Network, TextClient, eventually

ROOM_LINE = re.compile(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\]\[(#[^]]+)\]\[([^]]+)\] (.*)$")


async def said(client: TextClient, text: str) -> str:
    return await client.expect(lambda line: line == text)


async def room_line(client: TextClient, room: str, sender: str, text: str) -> str:
    return await client.expect(lambda line: line.endswith(f"[{room}][{sender}] {text}") and ROOM_LINE.match(line) is not None)


async def test_text_and_json_users_talk_in_one_room(chat: Network) -> None:
    alice = await chat.text_client("alice")
    bob = await chat.json_client("bob")
    carol = await chat.text_client("carol")
    await alice.send("!join #hiking")
    await said(alice, "Created #hiking; you are its owner.")
    await bob.command("!join #hiking")
    joined = await bob.expect(lambda m: m.metadata.get("event") == "joined")
    assert joined.metadata["room"] == "#hiking" and joined.metadata["members"] == 2
    await carol.send("!join #HIKING")
    await said(carol, "Joined #hiking (3 members, 3 online).")
    await alice.send("!topic #hiking Saturday, 9:00 at the lake")
    await said(carol, "Topic of #hiking set by alice: Saturday, 9:00 at the lake")
    await alice.send("#hiking: who's in?")
    await room_line(carol, "#hiking", "alice", "who's in?")
    heard = await bob.expect(lambda m: m.type == "chat")
    assert (heard.sender, heard.destination, heard.message) == ("alice", "#hiking", "who's in?")
    await bob.send("#hiking", "me!")
    await room_line(alice, "#hiking", "bob", "me!")
    await room_line(carol, "#hiking", "bob", "me!")
    await carol.send("!members #hiking")
    await said(carol, "Members of #hiking (3): alice (online), bob (online), carol (online)")
    await carol.send("!leave #hiking")
    await said(carol, "Left #hiking.")
    left = await bob.expect(lambda m: m.metadata.get("event") == "room_presence")
    assert (left.metadata["user"], left.metadata["presence"]) == ("carol", "left")
    await carol.send("#hiking: one more?")
    await said(carol, "Error: You are not in #hiking; !join #hiking first.")
    await carol.send("#nope: hello?")
    await said(carol, "Error: There is no room #nope; !join #nope creates it.")


async def test_catch_up_at_login_and_the_marker_holds_at_the_next(chat: Network) -> None:
    """Offline, bob misses three messages in #general: the next login shows them (after the
    welcome), and the login after that shows nothing again."""
    bob = await chat.text_client("bob")
    await bob.send("exit")
    await bob.closed()
    alice = await chat.text_client("alice")
    for text in ("one", "two", "three"):
        await alice.send(f"#general: {text}")
    async with ApiClient(chat.api_url, chat.token) as api:  # archived (in batches, off the routing path)
        await eventually(lambda: api.room_history("#general", "alice", 10), lambda page: len(page["messages"]) == 3, "3 in the history")
    bob = await chat.text_client()
    await bob.line()
    await bob.send("bob")
    assert (await bob.line()).startswith("Welcome, bob!")
    await said(bob, "#general: 3 new messages since you were last here:")
    for text in ("one", "two", "three"):
        await room_line(bob, "#general", "alice", text)
    await bob.send("!who")  # his TCP stack has acknowledged them once this is answered...
    await bob.expect(lambda line: line.startswith("Online"))
    await bob.send("exit")
    await bob.closed()
    again = await chat.text_client("bob")  # ...and the marker went to the store at the leave
    await again.send("!who")
    seen = await again.lines_until(lambda line: line.startswith("Online"))
    assert not [line for line in seen if "new message" in line]


async def test_rooms_and_membership_survive_a_restart(chat: Network) -> None:
    alice = await chat.text_client("alice")
    await alice.send("!join #keep")
    await said(alice, "Created #keep; you are its owner.")
    await alice.send("!topic #keep still here")
    await said(alice, "Topic of #keep set by alice: still here")
    await alice.close()
    chat.stop("server")
    chat.stop("api")
    chat.start_api()
    chat.start_server()
    back = await chat.text_client("alice")
    await back.send("#keep: hello again")  # back in the room without a !join
    await back.send("!rooms")
    rooms = await back.expect(lambda line: line.startswith("Rooms ("))
    assert "#keep (1 member)" in rooms and "#general" in rooms
    await back.send("!topic #keep")
    await said(back, "Topic of #keep: still here")
    assert not [line for line in back.seen if line.startswith("Error")]


async def test_a_private_room_is_invisible_and_closed_to_others(chat: Network) -> None:
    owner = await chat.text_client("olga")
    other = await chat.text_client("oscar")
    await owner.send("!join #secret")
    await said(owner, "Created #secret; you are its owner.")
    await owner.send("!private #secret")
    await said(owner, "#secret is private now: only members see it, and only invited people may join.")
    await other.send("!rooms")
    assert "#secret" not in await other.expect(lambda line: line.startswith("Rooms ("))
    await other.send("!join #secret")
    await said(other, "Error: That room is private: its owner must invite you first.")
    await other.send("!members #secret")
    await said(other, "Error: There is no such room; !join #name creates one.")
    await other.send("!topic #secret")
    await said(other, "Error: There is no such room; !join #name creates one.")
    await other.send("!history #secret")
    await other.expect(lambda line: line.startswith("Error: You are not in that room"))
    await owner.send("!invite #secret oscar")
    await said(owner, "Invited oscar to #secret.")
    await said(other, "olga invited you to #secret; !join #secret to come in.")
    await other.send("!join #secret")
    await said(other, "Joined #secret (2 members, 2 online).")
    await other.send("!kick #secret olga")
    await said(other, "Error: Only the room's operators may do that.")
    await owner.send("!kick #secret oscar")
    await said(owner, "Removed oscar from #secret.")
    await said(other, "olga removed you from #secret.")
    await owner.send("#secret: only me now")
    await other.send("!join #secret")
    await said(other, "Error: That room is private: its owner must invite you first.")


async def test_json_clients_get_the_room_notices(chat: Network) -> None:
    ann: JsonClient = await chat.json_client("ann")
    await ann.command("!rooms")
    rooms = await ann.expect(lambda m: m.metadata.get("event") == "rooms")
    assert [r["name"] for r in rooms.metadata["rooms"]] == ["#general"]
    await ann.command("!members #general")
    members = await ann.expect(lambda m: m.metadata.get("event") == "members")
    assert members.metadata["members"] == [{"name": "ann", "online": True}]
    await ann.command("!join #bad #b@d")  # two rooms, and the second is no room's name (a word without '#' would be a key)
    refused = await ann.expect(lambda m: m.type == "error")
    assert refused.message.startswith("Invalid room '#b@d'")
    await ann.command("!join general")
    refused = await ann.expect(lambda m: m.type == "error")
    assert refused.message.startswith("Invalid room 'general'")


async def test_room_settings_over_text_lines_survive_a_restart(chat: Network) -> None:
    """!mode sets a key, a limit, a ban, moderation and another operator; joins are
    refused for them in words; after a restart of the API and the chat server the room
    keeps every setting."""
    owner = await chat.text_client("mona")
    helper = await chat.text_client("mick")
    other = await chat.text_client("milo")
    await owner.send("!join #locked")
    await said(owner, "Created #locked; you are its owner.")
    await helper.send("!join #locked")
    await helper.expect(lambda line: line.startswith("Joined #locked"))
    await owner.send("!mode #locked +kmb beer milo")
    await said(helper, "mona set #locked +kmb beer milo (a key to join; moderated: only operators and voiced members write; milo banned)")
    await helper.send("#locked: may I?")
    await said(helper, "Error: #locked is moderated: only its operators and voiced members write to it.")
    await owner.send("!mode #locked +o mick")
    await said(helper, "mona set #locked +o mick (mick an operator)")
    await helper.send("#locked: now I may")
    await room_line(owner, "#locked", "mick", "now I may")
    await other.send("!join #locked beer")
    await said(other, "Error: You are banned from that room.")
    await helper.send("!mode #locked -b milo")
    await said(owner, "mick set #locked -b milo (milo no longer banned)")
    for client in (owner, helper, other):
        await client.close()
    chat.stop("server")
    chat.stop("api")
    chat.start_api()
    chat.start_server()
    back = await chat.text_client("mona")
    await back.send("!mode #locked")
    await said(back, "Settings of #locked: +mnk beer (operators: mona, mick)")
    milo = await chat.text_client("milo")
    await milo.send("!join #locked")
    await said(milo, "Error: That room has a key: !join #room <key>.")
    await milo.send("!join #locked beer")
    await milo.expect(lambda line: line.startswith("Joined #locked"))
    await milo.send("#locked: hello?")
    await said(milo, "Error: #locked is moderated: only its operators and voiced members write to it.")


async def test_json_clients_see_the_settings_and_a_secret_room_is_hidden(chat: Network) -> None:
    """A JSON member gets room_mode with the changes and the settings; +s hides the room
    from !rooms for people not in it."""
    owner = await chat.text_client("sara")
    watcher = await chat.json_client("sid")
    outsider = await chat.text_client("sam")
    await owner.send("!join #hush")
    await said(owner, "Created #hush; you are its owner.")
    await watcher.command("!join #hush")
    await watcher.expect(lambda m: m.metadata.get("event") == "joined")
    await owner.send("!mode #hush +s")
    told = await watcher.expect(lambda m: m.metadata.get("event") == "room_mode")
    assert told.metadata["changes"] == [["+s", None]] and told.metadata["settings"]["secret"] is True
    await outsider.send("!rooms")
    assert "#hush" not in await outsider.expect(lambda line: line.startswith("Rooms ("))
    await owner.send("!rooms")
    assert "#hush" in await owner.expect(lambda line: line.startswith("Rooms ("))
