"""The message API as a real process, over HTTP: auth, validation, mail, history,
subscriptions, state, health, and a database that goes away and comes back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatnet.api_client import ApiClient
from chatnet.errors import ApiRejected, StoreUnavailable
from chatnet.keys import decode_cursor
from chatnet.message import Message
from chatnet.protocol import utcnow
from tests.support import HOST, Network, eventually, own_store, unused_port
from tests.unit.fakes import FakeApi


@pytest.fixture
def api_net(network: Network) -> Network:
    network.start_api()
    return network


@pytest.fixture
async def http(api_net: Network) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(api_net.api_url, timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
async def api(api_net: Network) -> AsyncIterator[ApiClient]:
    async with ApiClient(api_net.api_url, api_net.token) as client:
        yield client


def chat(sender: str, destination: str, text: str, seconds_ago: float = 0) -> dict[str, Any]:
    timestamp = utcnow() - timedelta(seconds=seconds_ago)
    return Message(sender=sender, destination=destination, message=text, timestamp=timestamp).model_dump(mode="json")


async def call(http: aiohttp.ClientSession, method: str, path: str, headers: dict[str, str], **kw: Any) -> tuple[int, Any]:
    async with http.request(method, path, headers=headers, **kw) as response:
        return response.status, await response.json(content_type=None)


async def test_docs_are_served(http: aiohttp.ClientSession) -> None:
    """The OpenAPI description lists the routes."""
    status, schema = await call(http, "GET", "/openapi.json", {})
    assert status == 200
    assert {"/mail", "/mail/{user}", "/mail/{user}/ack", "/history/{user}/{peer}"} <= set(schema["paths"])


# --- behaviour through the ApiClient ----------------------------------------------------------------


async def test_mail_round_trip(api: ApiClient) -> None:
    """Stored mail is pending oldest first, is gone once acknowledged, and a retry never duplicates."""
    first, second = chat("alice", "bob", "first", seconds_ago=1), chat("carol", "bob", "second")
    assert await api.store_mail([first, Message.model_validate(second)]) == [first["id"], second["id"]]
    assert await api.store_mail([first]) == [first["id"]]
    messages, total = await api.pending("bob")
    assert [m["message"] for m in messages] == ["first", "second"]
    assert total == 2
    assert Message.model_validate(messages[0]) == Message.model_validate(first)
    page, total = await api.pending("bob", limit=1)
    assert ([m["message"] for m in page], total) == (["first"], 2)
    assert await api.ack("bob", [first["id"]]) == 1
    assert await api.ack("bob", [first["id"], second["id"]]) == 1
    assert await api.pending("bob") == ([], 0)


async def history_texts(api: ApiClient, user: str, peer: str) -> list[str]:
    messages, _ = await api.history(user, peer)
    return [m["message"] for m in messages]


async def test_big_pages_of_mail(api: ApiClient) -> None:
    """A user's mail comes in pages of thousands, oldest first with ties in sending
    order, each page acknowledged at once, until none is left; all of it then reads back
    in the history."""
    base = utcnow() - timedelta(minutes=5)
    sent = [
        Message(sender=f"s{i % 7}", destination="bob", message=f"n{i}", timestamp=base + timedelta(milliseconds=i // 3))
        for i in range(2500)
    ]
    for start in range(0, len(sent), 1000):
        await api.store_mail(sent[start : start + 1000])
    received: list[str] = []
    totals = []
    while True:
        page, total = await api.pending("bob", limit=1200)
        totals.append(total)
        if not page:
            break
        received += [m["id"] for m in page]
        assert await api.ack("bob", [m["id"] for m in page]) == len(page)
    assert received == [m.id for m in sent]
    assert totals == [2500, 1300, 100, 0]
    counts: dict[str, int] = {}
    for _ in range(100):  # the copy to the history follows the acks
        counts = (await api.health_detailed())["counts"]
        if counts["messages"] == 2500:
            break
        await asyncio.sleep(0.1)
    assert counts == {"pending": 0, "messages": 2500, "subscriptions": 0}
    newest, _ = await api.history("bob", "s0", limit=2)
    assert [m["id"] for m in newest] == [m.id for m in sent if m.sender == "s0"][-1:-3:-1]


async def test_mail_acknowledged_before_a_restart_is_in_the_history(api_net: Network) -> None:
    """Mail acknowledged just before the API stops is in the history after it starts
    again: an ack is answered once its mail is there."""
    base = utcnow() - timedelta(minutes=1)
    sent = [
        Message(sender="alice", destination="bob", message=f"n{i}", timestamp=base + timedelta(milliseconds=i))
        for i in range(1500)
    ]
    async with ApiClient(api_net.api_url, api_net.token, timeout=30) as api:
        for start in range(0, len(sent), 1000):
            await api.store_mail(sent[start : start + 1000])
        page, _ = await api.pending("bob", limit=len(sent))
        assert await api.ack("bob", [m["id"] for m in page]) == len(sent)
    api_net.stop("api")
    api_net.start_api()
    async with ApiClient(api_net.api_url, api_net.token, timeout=30) as api:
        assert (await api.health_detailed())["counts"] == {"pending": 0, "messages": len(sent), "subscriptions": 0}
        history, _ = await api.history("bob", "alice", limit=1000)
        assert [m["id"] for m in history] == [m.id for m in reversed(sent)][:1000]


async def test_keep_latest_and_ttl_through_the_api(api: ApiClient) -> None:
    """keep_latest caps a sender's pending mail; ttl_seconds makes it expire."""
    for degrees in range(5):
        await api.store_mail([chat("thermo", "bob", f"{degrees} C", seconds_ago=5 - degrees)], keep_latest=2)
    await api.store_mail([chat("thermo", "carol", "soon gone")], ttl_seconds=1)
    await api.store_mail([chat("thermo", "carol", "lasting")], ttl_seconds=600)
    messages, _ = await api.pending("bob")
    assert [m["message"] for m in messages] == ["3 C", "4 C"]
    assert sorted(m["message"] for m in (await api.pending("carol"))[0]) == ["lasting", "soon gone"]
    assert await history_texts(api, "bob", "thermo") == ["4 C", "3 C"]
    messages, total = await eventually(lambda: api.pending("carol"), lambda found: found[1] < 2, "carol's pending mail")
    assert ([m["message"] for m in messages], total) == (["lasting"], 1)
    assert await history_texts(api, "carol", "thermo") == ["lasting"]


async def test_subscriptions(api: ApiClient) -> None:
    """Subscribing is idempotent, lists are per service, removal works once."""
    assert await api.subscribe("thermo", "bob") is True
    assert await api.subscribe("thermo", "bob") is False
    assert await api.subscribe("thermo", "alice") is True
    assert await api.subscribers("thermo") == ["alice", "bob"]
    assert await api.unsubscribe("thermo", "bob") is True
    assert await api.unsubscribe("thermo", "bob") is False
    assert await api.subscribers("thermo") == ["alice"]


async def test_client_errors(api_net: Network) -> None:
    """The client raises ApiRejected on a refusal and StoreUnavailable when nobody answers."""
    async with ApiClient(api_net.api_url, "wrong") as api:
        with pytest.raises(ApiRejected) as refused:
            await api.pending("bob")
        assert refused.value.status == 401
    async with ApiClient(api_net.api_url, api_net.token) as api:
        with pytest.raises(ApiRejected, match="pattern"):
            await api.pending("not a name")
    with unused_port() as port:
        async with ApiClient(f"http://{HOST}:{port}", api_net.token, timeout=2) as api:
            with pytest.raises(StoreUnavailable):
                await api.store_mail([chat("alice", "bob", "lost?")])


# --- the database goes away ---------------------------------------------------------------------------


async def test_database_down_gives_503_and_recovers(network: Network, tmp_path: Path) -> None:
    """While the database is unreachable the API answers 503 and reports "degraded";
    once it is back, requests work again and nothing stored is lost."""
    store = own_store(tmp_path / "own", tmp_path / "own-store.log", "own-store")
    store.start()
    try:
        network.start_api(MONGO_URL=f"mongodb://{HOST}:{store.port}")
        async with ApiClient(network.api_url, network.token, timeout=10) as api:
            kept = chat("alice", "bob", "kept")
            await api.store_mail([kept])
            store.stop()

            with pytest.raises(StoreUnavailable, match="503"):
                await api.pending("bob")
            with pytest.raises(StoreUnavailable, match="503"):
                await api.store_mail([chat("alice", "bob", "not now")])
            health = await api.health_detailed()
            assert health["status"] == "degraded"
            assert health["database"]["ok"] is False and health["database"]["error"]
            assert await api.health() == {"status": "ok"}

            store.start()
            messages: list[Message] = []
            for _ in range(50):  # the client library notices the database within seconds
                try:
                    messages, _ = await api.pending("bob")
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.2)
            assert [m["message"] for m in messages] == ["kept"]
            assert (await api.health_detailed())["status"] == "ok"
    finally:
        store.stop()


# --- rooms, markers, conversations, paging by cursor -----------------------------------------------------


def message_to(sender: str, destination: str, text: str, stamp: datetime, id: str) -> dict[str, Any]:
    """A message dict to a person or a room."""
    shape: dict[str, Any] = Message(id=id, sender=sender, destination=destination, message=text, timestamp=stamp).model_dump(mode="json")
    return shape


async def outcome(call: Awaitable[Any]) -> Any:
    """What a call answered, or the refusal it raised, as (status, reason)."""
    try:
        return await call
    except ApiRejected as exc:
        return ("refused", exc.status, exc.reason)


async def read_all(page: Callable[[str | None], Awaitable[dict[str, Any]]]) -> tuple[list[str], int]:
    """Every message id a paged read gives, oldest first, and the pages it took."""
    ids: list[str] = []
    cursor: str | None = None
    for pages in range(1, 100):
        answer = await page(cursor)
        ids = [m["id"] for m in answer["messages"]] + ids
        if (cursor := answer["next"]) is None:
            return ids, pages
    raise AssertionError("paging does not end")


async def rooms_scenario(api: Any, later: datetime) -> list[Any]:
    """Every room method, its refusals included, on `api` (the ApiClient or the stand-in);
    what each answered, made comparable (markers by the id they hold). The messages are
    stamped `later`, after every join of the run."""
    burst = [message_to("alice", "#hiking", f"m{i}", later, f"burst{i:03d}") for i in range(60)]
    dms = [message_to("bob" if i % 2 else "alice", "alice" if i % 2 else "bob", f"d{i}", later, f"dm{i:03d}") for i in range(60)]
    seen: list[Any] = [
        await api.join_room("#Hiking", "Alice"),
        await api.join_room("#hiking", "bob"),
        await api.set_room("#hiking", "Bob", topic="at the lake"),
        await outcome(api.set_room("#hiking", "bob", private=True)),
        await api.set_room("#HIKING", "alice", private=True),
        await outcome(api.join_room("#hiking", "carol")),
        await outcome(api.invite("#hiking", "bob", "carol")),
        await api.invite("#hiking", "alice", "Carol"),
        await api.join_room("#hiking", "carol"),
        await api.rooms("dave"),
        await api.rooms("carol"),
        await api.archive_encoded(json.dumps([*burst[:30], *burst[:5], *dms[:30]])),
        await api.archive_encoded(json.dumps([*burst[30:], *dms[30:]])),
        await read_all(lambda cursor: api.room_history("#hiking", "carol", 10, cursor)),
        await outcome(api.room_history("#hiking", "dave", 10)),
        await read_all(lambda cursor: api.history_page("bob", "Alice", 10, cursor)),
        await api.advance_markers([("bob", "#hiking", burst[49]["id"], burst[49]["timestamp"]), ("alice", "bob", dms[58]["id"], later)]),
        await api.advance_markers([("bob", "#hiking", burst[10]["id"], burst[10]["timestamp"]), ("dave", "#hiking", burst[59]["id"], later)]),
    ]
    logins = await api.room_logins(["bob", "Carol", "erin"], 3, ["#general"])
    for entries in logins.values():
        for entry in entries:
            entry["marker"] = None if entry["marker"] is None else decode_cursor(entry["marker"])[1]
    seen += [
        logins,
        await api.conversations("alice"),
        await api.conversations("bob"),
        await outcome(api.kick("#hiking", "bob", "carol")),
        await api.kick("#hiking", "alice", "carol"),
        await api.kick("#hiking", "alice", "carol"),
        await api.leave_room("#hiking", "bob"),
        await api.leave_room("#hiking", "bob"),
        await api.room("#hiking"),
        await api.room("#nope"),
        await outcome(api.set_room("#nope", "alice", topic="x")),
        await outcome(api.kick("#hiking", "zed", "alice")),
    ]
    return seen


async def test_every_room_method_through_the_client(api: ApiClient) -> None:
    """The ApiClient's room methods against the API as a process: rooms made, joined,
    changed, refused with their reasons; 60 messages sharing a millisecond page back
    whole in pages of 10 for a room and a DM; markers, logins, conversation lists."""
    seen = await rooms_scenario(api, utcnow() + timedelta(hours=1))
    hiking = {"name": "#Hiking", "owner": "Alice", "topic": None, "topic_by": None, "private": False, "members": 1}
    hiking |= {"moderated": False, "no_external": True, "secret": False, "topic_lock": False, "key": None, "limit": None}
    hiking |= {"bans": [], "ops": ["Alice"], "voiced": []}  # a new room's settings (channel modes)
    assert seen[0] == {"room": hiking, "created": True}
    assert seen[2]["topic"] == "at the lake" and seen[2]["topic_by"] == "Bob"
    assert seen[3] == ("refused", 403, "not_owner") and seen[5] == ("refused", 403, "private") and seen[6] == ("refused", 403, "not_owner")
    assert seen[7]["created"] is True and seen[8]["room"]["members"] == 3
    assert seen[9] == [] and [r["name"] for r in seen[10]] == ["#Hiking"]
    assert seen[11:13] == [65, 60]
    assert seen[13] == ([f"burst{i:03d}" for i in range(60)], 6)
    assert seen[14] == ("refused", 403, "not_member")
    assert seen[15] == ([f"dm{i:03d}" for i in range(60)], 6)
    assert seen[16:18] == [2, 0]
    logins = seen[18]
    assert set(logins) == {"bob", "carol", "erin"}
    assert [(e["room"]["name"], e["unread"], [m["message"] for m in e["messages"]], e["marker"]) for e in logins["bob"]] == [
        ("#general", 0, [], ""),
        ("#Hiking", 10, ["m57", "m58", "m59"], "burst049"),
    ]
    assert [e["room"]["name"] for e in logins["erin"]] == ["#general"]
    assert [(c["kind"], c["name"], c["unread"]) for c in seen[19]] == [("dm", "bob", 1), ("room", "#Hiking", 0)]
    assert seen[19][0]["last"]["id"] == "dm059"
    assert [(c["kind"], c["name"], c["unread"]) for c in seen[20]] == [("dm", "alice", 30), ("room", "#Hiking", 10), ("room", "#general", 0)]
    assert seen[21:26] == [("refused", 403, "not_owner"), True, False, True, False]
    assert seen[26] == {**hiking, "private": True, "topic": "at the lake", "topic_by": "Bob", "member_names": ["Alice"]}
    assert seen[27:] == [None, ("refused", 404, "no_room"), ("refused", 403, "not_member")]


async def test_the_in_memory_stand_in_answers_as_the_api_does(api: ApiClient) -> None:
    """tests.unit.fakes.FakeApi, which the router's unit tests use, gives the same
    answers as the API through the client, refusals included."""
    later = utcnow() + timedelta(hours=1)
    assert await rooms_scenario(FakeApi(), later) == await rooms_scenario(api, later)
