"""The message API's rooms, read markers, conversation lists and gap-free history
paging, in-process through FastAPI's TestClient over the real embedded store (a fresh
database per test). The same routes through the ApiClient, as a process, are in
tests/integration/test_api.py; the in-memory stand-in's parity with them too."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from chatnet import rooms_store
from chatnet.api import create_app
from chatnet.config import Settings
from chatnet.limits import MAX_CATCHUP, MAX_MARKERS, MAX_ROOM_LOGINS, MAX_TOPIC_CHARS, MAX_UNREAD
from chatnet.message import Message
from chatnet.protocol import format_datetime, utcnow
from tests.unit.test_api import AUTH, TOKEN, app, ok  # noqa: F401  (app: the fixture)
from tests.unit.test_fuzz import FUZZ, json_values


@pytest.fixture
def api(app: FastAPI) -> Iterator[TestClient]:  # noqa: F811
    with TestClient(app, headers=AUTH) as client:
        yield client


def path(room: str) -> str:
    """A room in a URL path: '#' is %23."""
    return f"/rooms/{quote(room, safe='')}"


def said(sender: str, destination: str, text: str, *, ms_ago: int = 0, stamp: str | None = None, id: str | None = None) -> dict[str, Any]:
    """A message dict to a person or a room, `ms_ago` milliseconds ago (or at `stamp`)."""
    fields: dict[str, Any] = {"sender": sender, "destination": destination, "message": text, "timestamp": stamp or utcnow() - timedelta(milliseconds=ms_ago)}
    if id is not None:
        fields["id"] = id
    doc: dict[str, Any] = Message(**fields).model_dump(mode="json")
    return doc


def archive(api: TestClient, *messages: dict[str, Any]) -> None:
    assert ok(api.post("/history", json={"messages": list(messages)}), 201) == {"stored": len(messages)}


# A room's settings as a new room has them (RoomInfo's fields beside name, owner, topic).
SETTINGS: dict[str, Any] = {
    "moderated": False, "no_external": True, "secret": False, "topic_lock": False, "key": None, "limit": None, "bans": [], "voiced": [],
}  # fmt: skip


def join(api: TestClient, room: str, user: str) -> dict[str, Any]:
    answer: dict[str, Any] = ok(api.put(f"{path(room)}/members/{user}"))
    return answer


def refused(response: Any, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["reason"] == reason, response.text


def logins(api: TestClient, *users: str, catchup: int = 20, defaults: tuple[str, ...] = ()) -> dict[str, list[dict[str, Any]]]:
    answer: dict[str, list[dict[str, Any]]] = ok(api.post("/rooms/logins", json={"users": list(users), "catchup": catchup, "defaults": list(defaults)}))["logins"]
    return answer


def mark(api: TestClient, user: str, conversation: str, message: dict[str, Any]) -> int:
    body = {"markers": [{"user": user, "conversation": conversation, "id": message["id"], "timestamp": message["timestamp"]}]}
    moved: int = ok(api.post("/markers", json=body))["advanced"]
    return moved


def conversations(api: TestClient, user: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ok(api.get(f"/conversations/{user}"))["conversations"]
    return found


def read_back(api: TestClient, route: str, limit: int, **params: Any) -> tuple[list[str], int]:
    """Every message a route pages back through by cursor (oldest first), and the pages it took."""
    ids: list[str] = []
    cursor, pages = None, 0
    while True:
        body = ok(api.get(route, params=params | {"limit": limit} | ({"cursor": cursor} if cursor else {})))
        pages += 1
        messages = body["messages"]
        if route.startswith("/history/"):
            messages = messages[::-1]  # the direct history answers newest first
        ids = [m["id"] for m in messages] + ids
        if (cursor := body["next"]) is None:
            return ids, pages
        assert pages < 100, "paging does not end"


# --- rooms and members ------------------------------------------------------------------


def test_join_creates_a_room_once_and_keeps_its_spelling(api: TestClient) -> None:
    """The first join creates the room, owned by the joiner, spelled as they spelled it;
    later joins in any case reach the same room; joining again changes nothing."""
    assert join(api, "#Hiking", "Alice") == {
        "room": {"name": "#Hiking", "owner": "Alice", "topic": None, "topic_by": None, "private": False, "members": 1, **SETTINGS, "ops": ["Alice"]},
        "created": True,
    }
    second = join(api, "#hiking", "bob")
    assert (second["room"]["name"], second["room"]["owner"], second["room"]["members"], second["created"]) == ("#Hiking", "Alice", 2, False)
    assert join(api, "#HIKING", "BOB")["room"]["members"] == 2
    assert ok(api.get(path("#hIkInG"))) == {
        "name": "#Hiking", "owner": "Alice", "topic": None, "topic_by": None, "private": False, "members": 2, "member_names": ["Alice", "bob"],
        **SETTINGS, "ops": ["Alice"],
    }  # fmt: skip


def test_leave_is_false_for_non_members_and_the_room_outlives_its_owner(api: TestClient) -> None:
    """Leaving answers whether the user was a member; the owner may leave, the room stays theirs."""
    join(api, "#hiking", "alice")
    join(api, "#hiking", "bob")
    assert ok(api.delete(f"{path('#hiking')}/members/carol")) == {"left": False}
    assert ok(api.delete(f"{path('#hiking')}/members/Alice")) == {"left": True}
    assert ok(api.delete(f"{path('#hiking')}/members/alice")) == {"left": False}
    room = ok(api.get(path("#hiking")))
    assert (room["owner"], room["members"], room["member_names"]) == ("alice", 1, ["bob"])


def test_a_room_nobody_made_is_404(api: TestClient) -> None:
    """GET of a missing room is 404 with reason no_room; so are changes to it."""
    refused(api.get(path("#nope")), 404, "no_room")
    refused(api.patch(path("#nope"), json={"by": "alice", "topic": "x"}), 404, "no_room")
    refused(api.post(f"{path('#nope')}/invitations", json={"by": "alice", "user": "bob"}), 404, "no_room")
    refused(api.post(f"{path('#nope')}/kicks", json={"by": "alice", "user": "bob"}), 404, "no_room")
    refused(api.get(f"{path('#nope')}/history", params={"user": "alice"}), 404, "no_room")


def test_rooms_lists_public_ones_and_ones_own_private_ones(api: TestClient) -> None:
    """The list holds every public room and the private rooms the user is in, by name (in lower case)."""
    join(api, "#zoo", "alice")
    join(api, "#Attic", "bob")
    join(api, "#secret", "alice")
    ok(api.patch(path("#secret"), json={"by": "alice", "private": True}))
    assert [r["name"] for r in ok(api.get("/rooms", params={"user": "bob"}))["rooms"]] == ["#Attic", "#zoo"]
    assert [r["name"] for r in ok(api.get("/rooms", params={"user": "ALICE"}))["rooms"]] == ["#Attic", "#secret", "#zoo"]
    assert ok(api.get("/rooms", params={"user": "alice"}))["rooms"][1]["private"] is True


def test_a_private_room_takes_the_owner_and_those_invited(api: TestClient) -> None:
    """A private room refuses a stranger (reason private); the owner's invitation lets one
    in; the owner may always come back; only the owner may invite to it."""
    join(api, "#secret", "alice")
    join(api, "#secret", "bob")
    ok(api.patch(path("#secret"), json={"by": "alice", "private": True}))
    refused(api.put(f"{path('#secret')}/members/carol"), 403, "private")
    refused(api.post(f"{path('#secret')}/invitations", json={"by": "bob", "user": "carol"}), 403, "not_owner")
    refused(api.post(f"{path('#secret')}/invitations", json={"by": "dave", "user": "carol"}), 403, "not_member")
    invited = ok(api.post(f"{path('#secret')}/invitations", json={"by": "Alice", "user": "Carol"}))
    assert (invited["user"], invited["created"], invited["member"], invited["room"]["private"]) == ("Carol", True, False, True)
    assert ok(api.post(f"{path('#secret')}/invitations", json={"by": "alice", "user": "carol"}))["created"] is False
    assert ok(api.post(f"{path('#secret')}/invitations", json={"by": "alice", "user": "bob"}))["member"] is True
    assert join(api, "#secret", "carol")["room"]["members"] == 3
    ok(api.delete(f"{path('#secret')}/members/alice"))
    assert join(api, "#secret", "alice")["room"]["members"] == 3


def test_any_member_invites_to_a_public_room(api: TestClient) -> None:
    """In a public room any member may invite, and the invitation is recorded; a non-member may not."""
    join(api, "#open", "alice")
    join(api, "#open", "bob")
    assert ok(api.post(f"{path('#open')}/invitations", json={"by": "bob", "user": "carol"}))["created"] is True
    refused(api.post(f"{path('#open')}/invitations", json={"by": "carol", "user": "dave"}), 403, "not_member")


def test_topic_by_members_privacy_by_the_owner(api: TestClient) -> None:
    """Any member sets the topic ("" clears it); only the owner makes the room private or
    public; a non-member changes nothing."""
    join(api, "#hiking", "alice")
    join(api, "#hiking", "Bob")
    info = ok(api.patch(path("#hiking"), json={"by": "bob", "topic": "Saturday, 9:00 at the lake"}))
    assert (info["topic"], info["topic_by"]) == ("Saturday, 9:00 at the lake", "bob")
    refused(api.patch(path("#hiking"), json={"by": "bob", "private": True}), 403, "not_owner")
    refused(api.patch(path("#hiking"), json={"by": "bob", "topic": "x", "private": True}), 403, "not_owner")
    refused(api.patch(path("#hiking"), json={"by": "carol", "topic": "mine now"}), 403, "not_member")
    assert ok(api.get(path("#hiking")))["topic"] == "Saturday, 9:00 at the lake"
    assert ok(api.patch(path("#hiking"), json={"by": "alice", "private": True}))["private"] is True
    assert ok(api.patch(path("#hiking"), json={"by": "alice", "private": False}))["private"] is False
    info = ok(api.patch(path("#hiking"), json={"by": "alice", "topic": ""}))
    assert (info["topic"], info["topic_by"]) == (None, None)
    assert ok(api.patch(path("#hiking"), json={"by": "alice"}))["name"] == "#hiking"  # nothing asked, nothing changed


def test_kick_is_the_owners_and_takes_the_invitation_too(api: TestClient) -> None:
    """Only the owner kicks; a kick removes membership and invitation (a kicked user is
    out of a private room for good), and says whether there was either."""
    join(api, "#secret", "alice")
    join(api, "#secret", "bob")
    ok(api.patch(path("#secret"), json={"by": "alice", "private": True}))
    ok(api.post(f"{path('#secret')}/invitations", json={"by": "alice", "user": "carol"}))
    refused(api.post(f"{path('#secret')}/kicks", json={"by": "bob", "user": "alice"}), 403, "not_owner")
    refused(api.post(f"{path('#secret')}/kicks", json={"by": "zed", "user": "bob"}), 403, "not_member")
    assert ok(api.post(f"{path('#secret')}/kicks", json={"by": "alice", "user": "BOB"})) == {"kicked": True}
    assert ok(api.post(f"{path('#secret')}/kicks", json={"by": "alice", "user": "carol"})) == {"kicked": True}
    assert ok(api.post(f"{path('#secret')}/kicks", json={"by": "alice", "user": "carol"})) == {"kicked": False}
    refused(api.put(f"{path('#secret')}/members/bob"), 403, "private")
    refused(api.put(f"{path('#secret')}/members/carol"), 403, "private")
    assert ok(api.get(path("#secret")))["member_names"] == ["alice"]


# --- room settings (IRC's channel modes, for every client) ------------------------------------


def change(api: TestClient, room: str, by: str, **fields: Any) -> dict[str, Any]:
    answer: dict[str, Any] = ok(api.patch(path(room), json={"by": by, **fields}))
    return answer


def test_settings_are_the_operators_and_the_owner_makes_more(api: TestClient) -> None:
    """Flags, key, limit, bans and roles change by an operator only; +o makes one; the
    owner who gave up +o may take it back; a role needs a member (not_in_room)."""
    join(api, "#hiking", "alice")
    join(api, "#hiking", "bob")
    refused(api.patch(path("#hiking"), json={"by": "bob", "moderated": True}), 403, "not_owner")
    info = change(api, "#hiking", "alice", moderated=True, secret=True, topic_lock=True, no_external=False, key="beer", limit=5, voice=["BOB"])
    assert {name: info[name] for name in SETTINGS if name != "bans"} == {
        "moderated": True, "no_external": False, "secret": True, "topic_lock": True, "key": "beer", "limit": 5, "voiced": ["bob"],
    }  # fmt: skip
    refused(api.patch(path("#hiking"), json={"by": "alice", "op": ["carol"]}), 403, "not_in_room")
    assert change(api, "#hiking", "alice", op=["bob"])["ops"] == ["alice", "bob"]
    assert change(api, "#hiking", "bob", deop=["alice"])["ops"] == ["bob"]
    refused(api.patch(path("#hiking"), json={"by": "alice", "limit": 9}), 403, "not_owner")
    assert change(api, "#hiking", "alice", op=["alice"])["ops"] == ["bob", "alice"]
    info = change(api, "#hiking", "alice", key="", limit=0, moderated=False)
    assert (info["key"], info["limit"], info["moderated"]) == (None, None, False)
    assert ok(api.get(path("#hiking")))["ops"] == ["bob", "alice"]  # stored: the next look says the same


def test_a_topic_lock_leaves_the_topic_to_operators(api: TestClient) -> None:
    """+t: a member who is no operator may not set the topic; -t: any member may."""
    join(api, "#hiking", "alice")
    join(api, "#hiking", "bob")
    change(api, "#hiking", "alice", topic_lock=True)
    refused(api.patch(path("#hiking"), json={"by": "bob", "topic": "mine"}), 403, "not_owner")
    assert change(api, "#hiking", "alice", topic="ours")["topic"] == "ours"
    change(api, "#hiking", "alice", topic_lock=False)
    assert change(api, "#hiking", "bob", topic="mine")["topic"] == "mine"


def test_joins_are_refused_by_a_key_a_limit_and_a_ban(api: TestClient) -> None:
    """bad_key without the key (or with a wrong one); full at the limit (the invited
    come in without a key, past the limit); banned for a matching mask (nick!user@host,
    * and ?, any case), invited or not; an operator and a member joining again always
    come in."""
    join(api, "#hiking", "alice")
    change(api, "#hiking", "alice", key="beer", limit=2, ban=["Car?l", "*!*@*.example"])
    refused(api.put(f"{path('#hiking')}/members/bob"), 403, "bad_key")
    refused(api.put(f"{path('#hiking')}/members/bob", json={"key": "wine"}), 403, "bad_key")
    assert ok(api.put(f"{path('#hiking')}/members/bob", json={"key": "beer"}))["room"]["members"] == 2
    assert join(api, "#hiking", "bob")["room"]["members"] == 2  # a member: no key asked again
    refused(api.put(f"{path('#hiking')}/members/dave", json={"key": "beer"}), 403, "full")
    ok(api.post(f"{path('#hiking')}/invitations", json={"by": "alice", "user": "dave"}))
    assert ok(api.put(f"{path('#hiking')}/members/dave"))["room"]["members"] == 3  # invited: no key, no limit
    change(api, "#hiking", "alice", limit=0)
    refused(api.put(f"{path('#hiking')}/members/CAROL", json={"key": "beer"}), 403, "banned")
    ok(api.post(f"{path('#hiking')}/invitations", json={"by": "bob", "user": "carol"}))
    refused(api.put(f"{path('#hiking')}/members/carol"), 403, "banned")  # a ban outweighs an invitation
    bans = ok(api.get(path("#hiking")))["bans"]
    assert [ban["mask"] for ban in bans] == ["Car?l!*@*", "*!*@*.example"] and bans[0]["by"] == "alice"
    change(api, "#hiking", "alice", unban=["car?l"])
    assert ok(api.put(f"{path('#hiking')}/members/carol", json={"key": "beer"}))["room"]["members"] == 4
    ok(api.delete(f"{path('#hiking')}/members/alice"))
    assert join(api, "#hiking", "alice")["room"]["members"] == 4  # an operator: no key needed


def test_a_secret_room_is_listed_to_its_members_only(api: TestClient) -> None:
    """+s: GET /rooms?user= leaves it out for anyone not in it."""
    join(api, "#hiking", "alice")
    change(api, "#hiking", "alice", secret=True)
    assert [room["name"] for room in ok(api.get("/rooms", params={"user": "bob"}))["rooms"]] == []
    assert [room["name"] for room in ok(api.get("/rooms", params={"user": "alice"}))["rooms"]] == ["#hiking"]


def test_a_kick_takes_the_roles_too(api: TestClient) -> None:
    """An operator kicks (the owner too); the kicked lose +o and +v."""
    join(api, "#hiking", "alice")
    join(api, "#hiking", "bob")
    join(api, "#hiking", "carol")
    change(api, "#hiking", "alice", op=["bob"], voice=["carol"])
    assert ok(api.post(f"{path('#hiking')}/kicks", json={"by": "bob", "user": "carol"})) == {"kicked": True}
    assert ok(api.post(f"{path('#hiking')}/kicks", json={"by": "bob", "user": "alice"})) == {"kicked": True}
    info = ok(api.get(path("#hiking")))
    assert (info["ops"], info["voiced"], info["member_names"]) == (["bob"], [], ["bob"])


@pytest.mark.parametrize(
    "fields",
    [{"key": "two words"}, {"key": "x" * 24}, {"limit": -1}, {"ban": ["a b"]}, {"op": ["b@d"]}, {"moderated": "maybe"}],
)
def test_a_setting_it_cannot_take_is_422(api: TestClient, fields: dict[str, Any]) -> None:
    """A key is one word of at most 23 characters, a limit not negative, a mask one word."""
    join(api, "#hiking", "alice")
    assert api.patch(path("#hiking"), json={"by": "alice", **fields}).status_code == 422


def test_ban_masks_match_names_as_irc_does() -> None:
    """A bare nick is nick!*@*; * and ? wildcards; any case; everyone's host is chatnet."""
    assert rooms_store.normal_mask("bob") == "bob!*@*" and rooms_store.normal_mask("*@x") == "*!*@x" and rooms_store.normal_mask("b!u") == "b!u@*"
    bans = [{"mask": "BA?!*@*"}]
    assert rooms_store.banned(bans, "bar") and rooms_store.banned(bans, "Baz") and not rooms_store.banned(bans, "barn")
    assert rooms_store.banned([{"mask": "*!*@chatnet"}], "anyone") and not rooms_store.banned([{"mask": "*!*@elsewhere"}], "anyone")


# --- room history ---------------------------------------------------------------------------


def test_a_room_message_is_stored_once_and_only_members_read_it(api: TestClient) -> None:
    """A message to a room is archived once however often a batch (or a retry) holds it;
    only members read the room's history (oldest first); DM history never holds it."""
    join(api, "#hiking", "alice")
    join(api, "#hiking", "bob")
    first, second = said("alice", "#hiking", "who's in?", ms_ago=5), said("bob", "#Hiking", "me", ms_ago=1)
    archive(api, first, first, second, said("alice", "bob", "a DM"))
    archive(api, first, second)  # the retry
    page = ok(api.get(f"{path('#hiking')}/history", params={"user": "Bob"}))
    assert page == {"messages": [first, second], "next": None}
    refused(api.get(f"{path('#hiking')}/history", params={"user": "carol"}), 403, "not_member")
    assert [m["message"] for m in ok(api.get("/history/alice/bob"))["messages"]] == ["a DM"]


def test_a_private_rooms_history_is_for_its_members_only(api: TestClient) -> None:
    """Nobody outside a private room reads its history, an old member once kicked included."""
    join(api, "#secret", "alice")
    join(api, "#secret", "bob")
    ok(api.patch(path("#secret"), json={"by": "alice", "private": True}))
    archive(api, said("alice", "#secret", "the plan"))
    assert len(ok(api.get(f"{path('#secret')}/history", params={"user": "bob"}))["messages"]) == 1
    refused(api.get(f"{path('#secret')}/history", params={"user": "mallory"}), 403, "not_member")
    ok(api.post(f"{path('#secret')}/kicks", json={"by": "alice", "user": "bob"}))
    refused(api.get(f"{path('#secret')}/history", params={"user": "bob"}), 403, "not_member")


@pytest.mark.parametrize("kind", ["room", "dm"])
def test_sixty_messages_in_one_millisecond_page_back_whole(api: TestClient, kind: str) -> None:
    """A burst of 60 messages sharing one timestamp pages back in pages of 10 by cursor:
    every message once, in order, none skipped at a page boundary (a room and a DM)."""
    stamp = format_datetime(utcnow() - timedelta(seconds=5))
    destination = "#burst" if kind == "room" else "bob"
    burst = [said("alice", destination, f"m{i}", stamp=stamp, id=f"burst{i:03d}") for i in range(60)]
    before = said("alice", destination, "before", stamp=format_datetime(utcnow() - timedelta(seconds=6)))
    if kind == "room":
        join(api, "#burst", "alice")
        join(api, "#burst", "bob")
        archive(api, before, *burst[:25])
        archive(api, *burst[25:])
        ids, pages = read_back(api, f"{path('#burst')}/history", 10, user="bob")
    else:
        archive(api, before, *burst[:25])
        ok(api.post("/mail", json={"messages": burst[25:]}), 201)  # the rest still pending: history holds both
        ids, pages = read_back(api, "/history/bob/alice", 10)
    assert ids == [before["id"], *(m["id"] for m in burst)]
    assert pages == 7


def test_the_old_before_still_pages_a_dm(api: TestClient) -> None:
    """`before` (a timestamp) and `next_before` keep working beside the cursor, and the two can't be mixed."""
    archive(api, said("alice", "bob", "one", ms_ago=3000), said("bob", "alice", "two", ms_ago=2000), said("alice", "bob", "three", ms_ago=1000))
    page = ok(api.get("/history/alice/bob", params={"limit": 2}))
    assert [m["message"] for m in page["messages"]] == ["three", "two"] and page["next"] is not None
    older = ok(api.get("/history/alice/bob", params={"limit": 2, "before": page["next_before"]}))
    assert ([m["message"] for m in older["messages"]], older["next_before"], older["next"]) == (["one"], None, None)
    by_cursor = ok(api.get("/history/alice/bob", params={"limit": 2, "cursor": page["next"]}))
    assert [m["message"] for m in by_cursor["messages"]] == ["one"]
    assert api.get("/history/alice/bob", params={"before": page["next_before"], "cursor": page["next"]}).status_code == 422


@pytest.mark.parametrize("cursor", ["nonsense", "dGhpcyBpcyBub3QgYSBjdXJzb3I", "", "=" * 3, "x" * 201])
def test_a_cursor_the_api_did_not_give_is_422(api: TestClient, cursor: str) -> None:
    """A made-up or damaged cursor is refused with 422 (never a 500), for rooms and DMs."""
    join(api, "#hiking", "alice")
    assert api.get("/history/alice/bob", params={"cursor": cursor}).status_code == 422
    assert api.get(f"{path('#hiking')}/history", params={"user": "alice", "cursor": cursor}).status_code == 422


# --- read markers and unread counts ------------------------------------------------------------


def test_markers_move_forward_only_and_count_the_unread(api: TestClient) -> None:
    """Unread is what lies after the user's marker, not counting their own messages; a
    marker never moves back; one in a room the user is not in is ignored."""
    join(api, "#hiking", "alice")
    join(api, "#hiking", "bob")
    messages = [said("alice", "#hiking", f"m{i}", ms_ago=-10 - i) for i in range(5)]  # after the joins
    archive(api, *messages, said("bob", "#hiking", "mine", ms_ago=-20))
    assert logins(api, "bob")["bob"][0]["unread"] == 5
    assert mark(api, "bob", "#Hiking", messages[2]) == 1
    assert logins(api, "bob")["bob"][0]["unread"] == 2
    assert mark(api, "bob", "#hiking", messages[0]) == 0  # back: no
    assert mark(api, "bob", "#hiking", messages[2]) == 0  # the same: no move
    assert logins(api, "bob")["bob"][0]["unread"] == 2
    assert mark(api, "carol", "#hiking", messages[4]) == 0  # not a member
    assert mark(api, "bob", "#hiking", messages[4]) == 1
    assert logins(api, "bob")["bob"][0]["unread"] == 0


def test_a_batch_of_markers_keeps_the_newest_of_each(api: TestClient) -> None:
    """In one batch several markers of one conversation leave it at the newest of them."""
    join(api, "#hiking", "bob")
    messages = [said("alice", "#hiking", f"m{i}", ms_ago=-10 - i) for i in range(4)]
    archive(api, *messages)
    body = {"markers": [{"user": "bob", "conversation": "#hiking", "id": m["id"], "timestamp": m["timestamp"]} for m in (messages[2], messages[1])]}
    assert ok(api.post("/markers", json=body)) == {"advanced": 1}
    assert logins(api, "bob")["bob"][0]["unread"] == 1


def test_joining_later_does_not_make_the_past_unread(api: TestClient) -> None:
    """What was said before a user joined is not unread for them."""
    join(api, "#hiking", "alice")
    archive(api, said("alice", "#hiking", "old news", ms_ago=50))
    join(api, "#hiking", "bob")
    assert logins(api, "bob")["bob"][0]["unread"] == 0


def test_unread_counts_stop_at_the_cap(api: TestClient) -> None:
    """A room far past the marker counts MAX_UNREAD, no more."""
    join(api, "#busy", "bob")
    stamp = utcnow() + timedelta(seconds=1)
    for start in range(0, MAX_UNREAD + 50, 1000):
        batch = [said("alice", "#busy", f"m{i}", stamp=format_datetime(stamp + timedelta(milliseconds=i))) for i in range(start, min(start + 1000, MAX_UNREAD + 50))]
        archive(api, *batch)
    assert logins(api, "bob", catchup=2)["bob"][0]["unread"] == MAX_UNREAD


# --- logins --------------------------------------------------------------------------------------


def test_logins_join_the_defaults_once_and_a_leave_sticks(api: TestClient) -> None:
    """A user's first room login joins the default rooms (made if missing, owned by the
    server); once ever: after a leave the next login does not join again."""
    first = logins(api, "Alice", "bob", defaults=("#General", "#news"))
    assert set(first) == {"alice", "bob"}
    assert [entry["room"]["name"] for entry in first["alice"]] == ["#General", "#news"]
    assert first["bob"][0]["room"] == {
        "name": "#General", "owner": "server", "topic": None, "topic_by": None, "private": False, "members": 2, **SETTINGS, "ops": ["server"],
    }  # fmt: skip
    assert ok(api.delete(f"{path('#general')}/members/alice")) == {"left": True}
    again = logins(api, "alice", "bob", "carol", defaults=("#general", "#news"))
    assert [entry["room"]["name"] for entry in again["alice"]] == ["#news"]
    assert [entry["room"]["members"] for entry in again["carol"]] == [2, 3]


def test_a_private_default_room_is_not_joined(api: TestClient) -> None:
    """A default room its owner made private is left out of first logins."""
    join(api, "#staff", "alice")
    ok(api.patch(path("#staff"), json={"by": "alice", "private": True}))
    assert logins(api, "bob", defaults=("#staff", "#general"))["bob"][0]["room"]["name"] == "#general"


def test_logins_bring_the_newest_unread_of_each_room(api: TestClient) -> None:
    """Each room a user is in comes with its unread count, up to `catchup` of the newest
    unread messages (oldest first) and the marker, for many users in one request."""
    join(api, "#hiking", "alice")
    join(api, "#hiking", "bob")
    join(api, "#chess", "bob")
    hiking = [said("alice", "#hiking", f"h{i}", ms_ago=-10 - i) for i in range(6)]
    archive(api, *hiking, said("carol", "#chess", "e4", ms_ago=-10))
    mark(api, "alice", "#hiking", hiking[5])
    mark(api, "bob", "#hiking", hiking[1])
    answer = logins(api, "alice", "Bob", "nobody", catchup=3)
    assert answer["nobody"] == []
    assert [(e["room"]["name"], e["unread"], [m["message"] for m in e["messages"]]) for e in answer["bob"]] == [
        ("#chess", 1, ["e4"]),
        ("#hiking", 4, ["h3", "h4", "h5"]),
    ]
    assert answer["bob"][1]["messages"][0] == hiking[3]
    assert answer["alice"][0]["unread"] == 0 and answer["alice"][0]["messages"] == []
    # The marker pages back from where the user stopped reading.
    marker = answer["bob"][1]["marker"]
    assert [m["message"] for m in ok(api.get(f"{path('#hiking')}/history", params={"user": "bob", "cursor": marker}))["messages"]] == ["h0"]
    assert logins(api, "bob", catchup=0)["bob"][1] | {"marker": None} == {"room": answer["bob"][1]["room"], "unread": 4, "messages": [], "marker": None}


def test_a_login_storm_costs_a_bounded_number_of_queries(api: TestClient, app: FastAPI) -> None:  # noqa: F811
    """A thousand users logging in at once, all in the same rooms, are answered in one
    request whose store queries do not grow with the number of users."""
    rooms = app.state.rooms
    counted = {"n": 0}
    for collection in (rooms.rooms, rooms.members, rooms.room_history, rooms.markers, rooms.users):
        for method in ("find", "find_one", "insert_many", "update_one", "bulk_write"):
            original = getattr(collection, method)

            def counting(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                counted["n"] += 1
                return _original(*args, **kwargs)

            setattr(collection, method, counting)
    users = [f"u{i}" for i in range(MAX_ROOM_LOGINS)]
    first = logins(api, *users[:10], defaults=("#general", "#news"))
    archive(api, *(said("u1", "#general", f"g{i}", ms_ago=-10 - i) for i in range(5)))
    counted["n"] = 0
    small = logins(api, *users[:10], defaults=("#general", "#news"))
    few = counted["n"]
    counted["n"] = 0
    storm = logins(api, *users, defaults=("#general", "#news"))
    assert counted["n"] <= few + 20, (few, counted["n"])  # the 990 new users' first logins: a few queries more, not thousands
    assert len(first["u0"]) == len(small["u0"]) == len(storm["u999"]) == 2
    assert storm["u0"][0]["unread"] == 5 and storm["u1"][0]["unread"] == 0  # u1's own messages
    assert storm["u999"][0]["room"]["members"] == MAX_ROOM_LOGINS


# --- conversations -----------------------------------------------------------------------------


def test_conversations_list_people_and_rooms_latest_first(api: TestClient) -> None:
    """A user's conversations: DM peers (archived or pending) and rooms, each with its
    newest message and unread count, the most recent first; markers clear the counts."""
    join(api, "#hiking", "alice")
    join(api, "#quiet", "alice")
    join(api, "#hiking", "bob")
    to_bob = said("Alice", "bob", "hi bob", ms_ago=-100)  # after the joins
    from_bob = said("bob", "alice", "hi alice", ms_ago=-200)
    in_hiking = said("bob", "#hiking", "who's in?", ms_ago=-300)
    archive(api, to_bob, from_bob, in_hiking)
    pending = said("Carol", "alice", "are you there?", ms_ago=-400)
    ok(api.post("/mail", json={"messages": [pending]}), 201)
    listed = conversations(api, "ALICE")
    assert [(c["kind"], c["name"], c["unread"]) for c in listed] == [("dm", "Carol", 1), ("room", "#hiking", 1), ("dm", "bob", 1), ("room", "#quiet", 0)]
    assert listed[0]["last"] == pending and listed[1]["last"] == in_hiking and listed[3]["last"] is None
    mark(api, "alice", "bob", from_bob)
    mark(api, "alice", "#hiking", in_hiking)
    assert [c["unread"] for c in conversations(api, "alice")] == [1, 0, 0, 0]
    reply = said("alice", "Carol", "yes", ms_ago=-500)
    archive(api, reply)
    assert [(c["name"], c["unread"], c["last"]["message"] if c["last"] else None) for c in conversations(api, "alice")][:1] == [("Carol", 1, "yes")]
    assert [(c["kind"], c["name"], c["unread"]) for c in conversations(api, "bob")] == [("room", "#hiking", 0), ("dm", "alice", 1)]
    assert conversations(api, "nobody") == []


def test_a_conversation_keeps_its_newest_message(api: TestClient) -> None:
    """A batch archived late (older messages) does not replace the newest message of a conversation."""
    newest = said("bob", "alice", "newest", ms_ago=10)
    archive(api, newest)
    archive(api, said("bob", "alice", "older", ms_ago=500))
    assert conversations(api, "alice")[0]["last"] == newest


# --- validation -------------------------------------------------------------------------------------


BAD = [
    ("PUT", "/rooms/hiking/members/alice", None),  # no '#'
    ("PUT", "/rooms/%23hi%20king/members/alice", None),
    ("PUT", f"/rooms/%23{'x' * 33}/members/alice", None),
    ("PUT", "/rooms/%23hiking/members/al%21ce", None),
    ("GET", "/rooms", None),  # no user
    ("GET", "/rooms/%23hiking/history?user=bad%20name", None),
    ("GET", "/rooms/%23hiking/history?user=bob&limit=0", None),
    ("PATCH", "/rooms/%23hiking", {"topic": "x"}),  # no `by`
    ("PATCH", "/rooms/%23hiking", {"by": "alice", "topic": "x" * (MAX_TOPIC_CHARS + 1)}),
    ("PATCH", "/rooms/%23hiking", {"by": "alice", "topic": "two\nlines"}),
    ("PATCH", "/rooms/%23hiking", {"by": "alice", "topic": "\ud800"}),
    ("PATCH", "/rooms/%23hiking", {"by": "alice", "private": "maybe"}),
    ("POST", "/rooms/%23hiking/invitations", {"by": "alice"}),
    ("POST", "/rooms/%23hiking/kicks", {"by": "alice", "user": "#room"}),
    ("POST", "/rooms/logins", {"users": []}),
    ("POST", "/rooms/logins", {"users": ["u"] * (MAX_ROOM_LOGINS + 1)}),
    ("POST", "/rooms/logins", {"users": ["bob"], "catchup": MAX_CATCHUP + 1}),
    ("POST", "/rooms/logins", {"users": ["bob"], "defaults": ["general"]}),
    ("POST", "/markers", {"markers": []}),
    ("POST", "/markers", {"markers": [{"user": "bob", "conversation": "#hiking", "id": "x", "timestamp": "yesterday"}]}),
    ("POST", "/markers", {"markers": [{"user": "bob", "conversation": "not a name", "id": "x", "timestamp": "2026-01-01T00:00:00Z"}]}),
    ("POST", "/markers", {"markers": [{"user": "bob", "conversation": "bob", "id": "x", "timestamp": "2026-01-01T00:00:00Z"}] * (MAX_MARKERS + 1)}),
    ("GET", "/conversations/%23hiking", None),
    ("POST", "/history", {"messages": [{"id": "x", "sender": "#room", "destination": "bob", "message": "m"}]}),
    ("POST", "/history", {"messages": [{"id": "x", "sender": "alice", "destination": "#no room", "message": "m"}]}),
    ("POST", "/history", {"messages": [{"id": "x", "sender": "alice", "destination": "#" + "x" * 33, "message": "m"}]}),
    ("POST", "/mail", {"messages": [{"id": "x", "sender": "alice", "destination": "#hiking", "message": "m"}]}),  # no mail to rooms
]


@pytest.mark.parametrize(("method", "route", "body"), BAD)
def test_what_the_rooms_cant_take_is_422(api: TestClient, method: str, route: str, body: Any) -> None:
    """Bad room or user names, bodies out of bounds, made-up values: 422, never a 500."""
    join(api, "#hiking", "alice")
    content = None if body is None else json.dumps(body)  # as JSON escapes it: a lone surrogate too
    response = api.request(method, route, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text


ROUTES = [
    ("PUT", "/rooms/%23hiking/members/alice"),
    ("DELETE", "/rooms/%23hiking/members/alice"),
    ("GET", "/rooms/%23hiking"),
    ("GET", "/rooms?user=alice"),
    ("PATCH", "/rooms/%23hiking"),
    ("POST", "/rooms/%23hiking/invitations"),
    ("POST", "/rooms/%23hiking/kicks"),
    ("GET", "/rooms/%23hiking/history?user=alice"),
    ("POST", "/rooms/logins"),
    ("POST", "/markers"),
    ("GET", "/conversations/alice"),
]


@pytest.mark.parametrize(("method", "route"), ROUTES)
def test_the_room_routes_need_the_token(app: FastAPI, method: str, route: str) -> None:  # noqa: F811
    """Without the bearer token every room route answers 401."""
    with TestClient(app) as anonymous:
        assert anonymous.request(method, route).status_code == 401


def test_the_room_routes_are_documented(api: TestClient) -> None:
    """OpenAPI lists the room routes under the tag "rooms", with their refusals."""
    schema = ok(api.get("/openapi.json"))
    paths = schema["paths"]
    rooms = ["/rooms", "/rooms/{room}", "/rooms/{room}/members/{user}", "/rooms/{room}/history", "/rooms/logins", "/rooms/{room}/invitations", "/rooms/{room}/kicks"]
    for route in rooms:
        for operation in paths[route].values():
            assert "rooms" in operation["tags"], route
    assert "403" in paths["/rooms/{room}/history"]["get"]["responses"]
    assert {"/markers", "/conversations/{user}"} <= set(paths)
    assert "next" in schema["components"]["schemas"]["HistoryPage"]["properties"]


# --- fuzzed ----------------------------------------------------------------------------------------

fuzz_names = st.sampled_from(["alice", "Bob", "#hiking", "#Hiking", "x.y-z_1", "..", "#.."]) | st.text(max_size=40)
fuzz_stamps = st.sampled_from(["0001-01-01T00:00:00+10:00", "9999-12-31T23:59:59-10:00", "9999-12-31T23:59:59.999Z", "2026-01-01"]) | st.text(max_size=30)
fuzz_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"by": fuzz_names}, optional={"topic": json_values | st.text(max_size=400), "private": json_values, "user": fuzz_names}),
    st.fixed_dictionaries({"users": st.lists(fuzz_names, max_size=3)}, optional={"catchup": json_values, "defaults": st.lists(fuzz_names, max_size=3)}),
    st.fixed_dictionaries(
        {"markers": st.lists(st.fixed_dictionaries({"user": fuzz_names, "conversation": fuzz_names, "id": st.text(max_size=70), "timestamp": fuzz_stamps}), max_size=3)}
    ),
)
fuzz_routes = st.sampled_from([
    ("PUT", "/rooms/{room}/members/{user}"), ("DELETE", "/rooms/{room}/members/{user}"), ("GET", "/rooms/{room}"),
    ("PATCH", "/rooms/{room}"), ("POST", "/rooms/{room}/invitations"), ("POST", "/rooms/{room}/kicks"),
    ("GET", "/rooms/{room}/history?user={user}&cursor={cursor}"), ("GET", "/history/{user}/bob?cursor={cursor}"),
    ("GET", "/history/{user}/bob?before={cursor}"), ("POST", "/rooms/logins"), ("POST", "/markers"),
    ("GET", "/conversations/{user}"), ("GET", "/rooms?user={user}"),
])  # fmt: skip


@pytest.fixture(scope="module")
def fuzzed(store_url: str) -> Iterator[TestClient]:
    settings_ = Settings(_env_file=None, mongo_url=store_url, mongo_db=f"fuzz{uuid.uuid4().hex[:8]}", api_token=TOKEN)
    with TestClient(create_app(settings_), headers=AUTH) as client:
        client.put("/rooms/%23hiking/members/alice")
        yield client


@FUZZ
@given(route=fuzz_routes, room=fuzz_names, user=fuzz_names, cursor=fuzz_stamps, body=fuzz_bodies)
def test_the_room_routes_never_answer_500(fuzzed: TestClient, route: tuple[str, str], room: str, user: str, cursor: str, body: Any) -> None:
    """Any name, cursor or body to the room routes is answered or refused with a 4xx: never a server error."""
    method, template = route
    target = template.format(room=quote(room, safe=""), user=quote(user, safe=""), cursor=quote(cursor, safe=""))
    response = fuzzed.request(method, target, content=json.dumps(body, allow_nan=True), headers={"Content-Type": "application/json"})
    assert response.status_code < 500, (method, target, str(body)[:300], response.status_code, response.text[:300])


def test_a_user_in_the_most_rooms_allowed_is_refused_another(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_ROOMS_PER_USER a join is refused (and makes no room); joining a room again still works."""
    monkeypatch.setattr(rooms_store, "MAX_ROOMS_PER_USER", 2)
    join(api, "#one", "alice")
    join(api, "#two", "alice")
    refused(api.put(f"{path('#three')}/members/alice"), 403, "too_many_rooms")
    assert api.get(path("#three")).status_code == 404
    assert api.put(f"{path('#one')}/members/alice").status_code == 200
    api.delete(f"{path('#two')}/members/alice")
    join(api, "#three", "alice")


def test_readings_are_not_unread(api: TestClient) -> None:
    """A service's readings (subscription messages) in a room or a DM are never counted unread; chat is."""
    join(api, "#lab", "alice")
    join(api, "#lab", "thermo")
    reading = {**said("thermo", "#lab", "21.5 °C"), "type": "subscription"}
    direct = {**said("thermo", "alice", "21.6 °C"), "type": "subscription"}
    archive(api, reading, direct, said("thermo", "#lab", "hello"))
    unread = {c["name"]: c["unread"] for c in conversations(api, "alice")}
    assert unread == {"#lab": 1, "thermo": 0}
    (entry,) = logins(api, "alice")["alice"]
    assert entry["unread"] == 1
