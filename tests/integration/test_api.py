"""The message API as a real process, over HTTP: auth, validation, mail, history,
subscriptions, state, health, and a database that goes away and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatnet.api_client import ApiClient
from chatnet.errors import ApiRejected, StoreUnavailable
from chatnet.process import Child, embedded_store_argv, free_port, port_open
from chatnet.protocol import MAX_MESSAGE_CHARS, Message, utcnow
from tests.support import Network


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


# --- auth ------------------------------------------------------------------------------------


async def test_health_is_open(http: aiohttp.ClientSession) -> None:
    """/health answers without a token."""
    assert await call(http, "GET", "/health", {}) == (200, {"status": "ok"})


@pytest.mark.parametrize("path", ["/mail/bob", "/health/detailed", "/subscriptions/thermo", "/history/a/b", "/state/o/k"])
async def test_routes_need_the_token(http: aiohttp.ClientSession, api_net: Network, path: str) -> None:
    """Without the bearer token, or with a wrong one, a route answers 401; with it, 200."""
    assert (await call(http, "GET", path, {}))[0] == 401
    assert (await call(http, "GET", path, {"Authorization": "Bearer wrong"}))[0] == 401
    assert (await call(http, "GET", path, {"Authorization": api_net.token}))[0] == 401
    assert (await call(http, "GET", path, api_net.auth))[0] == 200


async def test_docs_are_served(http: aiohttp.ClientSession) -> None:
    """The OpenAPI description lists the routes."""
    status, schema = await call(http, "GET", "/openapi.json", {})
    assert status == 200
    assert {"/mail", "/mail/{user}", "/mail/{user}/ack", "/history/{user}/{peer}"} <= set(schema["paths"])


# --- validation ------------------------------------------------------------------------------------

BAD_BODIES = [
    ("POST", "/mail", {}, "messages"),
    ("POST", "/mail", {"messages": []}, "at least 1"),
    ("POST", "/mail", {"messages": [{"destination": "bob", "message": "hi"}]}, "sender"),
    ("POST", "/mail", {"messages": [chat("alice", "bob", "hi") | {"message": "x" * (MAX_MESSAGE_CHARS + 1)}]}, "at most 2000"),
    ("POST", "/mail", {"messages": [chat("alice", "bob", "hi") | {"destination": "no spaces"}]}, "pattern"),
    ("POST", "/mail", {"messages": [chat("alice", "bob", "hi") | {"type": "shout"}]}, "chat"),
    ("POST", "/mail", {"messages": [chat("alice", "bob", "hi")], "ttl_seconds": 0}, "greater than or equal to 1"),
    ("POST", "/mail", {"messages": [chat("alice", "bob", "hi")] * 1001}, "at most 1000"),
    ("POST", "/mail/bob/ack", {"ids": []}, "at least 1"),
    ("POST", "/mail/bob/ack", {"ids": [f"id{i}" for i in range(10_001)]}, "at most 10000"),
    ("POST", "/history", {"messages": "nope"}, "list"),
    ("PUT", "/state/openai/bob", {}, "value"),
]


@pytest.mark.parametrize(("method", "path", "body", "reason"), BAD_BODIES)
async def test_bad_bodies_get_422_with_a_reason(
    http: aiohttp.ClientSession, api_net: Network, method: str, path: str, body: Any, reason: str
) -> None:
    """An invalid body is refused with 422 and a detail saying what is wrong."""
    status, answer = await call(http, method, path, api_net.auth, json=body)
    assert status == 422
    assert reason in str(answer["detail"])


async def test_non_json_body_gets_422(http: aiohttp.ClientSession, api_net: Network) -> None:
    """A body that is not JSON is refused with 422 saying so."""
    headers = api_net.auth | {"Content-Type": "application/json"}
    status, answer = await call(http, "POST", "/mail", headers, data=b"{not json")
    assert status == 422
    assert "JSON" in str(answer["detail"])


@pytest.mark.parametrize(
    "path", ["/mail/bad%20name", "/mail/" + "x" * 33, "/history/alice/b%21b", "/subscriptions/th%3Aermo", "/state/o/%C3%A9"]
)
async def test_bad_names_in_paths_get_422(http: aiohttp.ClientSession, api_net: Network, path: str) -> None:
    """A name in a path that breaks the name rule is refused with 422."""
    status, answer = await call(http, "GET", path, api_net.auth)
    assert status == 422
    assert "pattern" in str(answer["detail"])


async def test_bad_limit_gets_422(http: aiohttp.ClientSession, api_net: Network) -> None:
    """A page of mail holds 1..10000, a page of history 1..1000; other sizes are refused."""
    assert (await call(http, "GET", "/mail/bob?limit=0", api_net.auth))[0] == 422
    assert (await call(http, "GET", "/mail/bob?limit=10000", api_net.auth))[0] == 200
    assert (await call(http, "GET", "/mail/bob?limit=10001", api_net.auth))[0] == 422
    assert (await call(http, "GET", "/history/alice/bob?limit=1001", api_net.auth))[0] == 422


# --- behaviour through the ApiClient ----------------------------------------------------------------


async def test_mail_round_trip(api: ApiClient) -> None:
    """Stored mail is pending oldest first, is gone once acknowledged, and a retry never duplicates."""
    first, second = chat("alice", "bob", "first", seconds_ago=1), chat("carol", "bob", "second")
    assert await api.store_mail([first, Message.model_validate(second)]) == [first["id"], second["id"]]
    assert await api.store_mail([first]) == [first["id"]]
    messages, total = await api.pending("bob")
    assert [m.message for m in messages] == ["first", "second"]
    assert total == 2
    assert messages[0] == Message.model_validate(first)
    page, total = await api.pending("bob", limit=1)
    assert ([m.message for m in page], total) == (["first"], 2)
    assert await api.ack("bob", [first["id"]]) == 1
    assert await api.ack("bob", [first["id"], second["id"]]) == 1
    assert await api.pending("bob") == ([], 0)


async def history_texts(api: ApiClient, user: str, peer: str) -> list[str]:
    messages, _ = await api.history(user, peer)
    return [m.message for m in messages]


async def eventually_in_history(api: ApiClient, user: str, peer: str, wanted: list[str]) -> None:
    """History reads `wanted` within a few seconds (acknowledged mail is copied there
    after the ack has been answered)."""
    texts: list[str] = []
    for _ in range(50):
        texts = await history_texts(api, user, peer)
        if texts == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"history of {user} and {peer} is {texts}, not {wanted}")


async def test_acknowledged_mail_moves_to_history(api: ApiClient) -> None:
    """Acknowledged mail is no longer pending, only the user's own is taken, and it
    shows in the history, delivered, in the order it was sent."""
    mine = [chat("alice", "bob", f"m{i}", seconds_ago=3 - i) for i in range(3)]
    carols = chat("alice", "carol", "for carol")
    await api.store_mail([*mine, carols])
    assert await api.ack("bob", [mine[0]["id"], mine[1]["id"], carols["id"]]) == 2
    messages, total = await api.pending("bob")
    assert ([m.message for m in messages], total) == (["m2"], 1)
    assert [m.message for m in (await api.pending("carol"))[0]] == ["for carol"]
    await eventually_in_history(api, "bob", "alice", ["m2", "m1", "m0"])
    assert await api.clear_history("bob") == 2  # m0 and m1 were delivered; m2 is still pending
    assert await history_texts(api, "bob", "alice") == ["m2"]
    assert await history_texts(api, "alice", "carol") == ["for carol"]


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
        received += [m.id for m in page]
        assert await api.ack("bob", [m.id for m in page]) == len(page)
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
    assert [m.id for m in newest] == [m.id for m in sent if m.sender == "s0"][-1:-3:-1]


async def test_shutdown_finishes_the_history_copy(api_net: Network) -> None:
    """Mail acknowledged just before the API stops still reaches the history: the API
    finishes copying it before it exits."""
    base = utcnow() - timedelta(minutes=1)
    sent = [
        Message(sender="alice", destination="bob", message=f"n{i}", timestamp=base + timedelta(milliseconds=i))
        for i in range(1500)
    ]
    async with ApiClient(api_net.api_url, api_net.token, timeout=30) as api:
        for start in range(0, len(sent), 1000):
            await api.store_mail(sent[start : start + 1000])
        page, _ = await api.pending("bob", limit=len(sent))
        assert await api.ack("bob", [m.id for m in page]) == len(sent)
    api_net.stop("api")
    api_net.start_api()
    async with ApiClient(api_net.api_url, api_net.token, timeout=30) as api:
        assert (await api.health_detailed())["counts"] == {"pending": 0, "messages": len(sent), "subscriptions": 0}
        history, _ = await api.history("bob", "alice", limit=1000)
        assert [m.id for m in history] == [m.id for m in reversed(sent)][:1000]


async def test_retried_mail_is_stored_once(api: ApiClient) -> None:
    """A POST /mail sent again (a retry) stores nothing twice, even mixed with new mail."""
    first = [chat("alice", "bob", f"m{i}", seconds_ago=3 - i) for i in range(2)]
    assert await api.store_mail(first) == [m["id"] for m in first]
    again = [*first, chat("alice", "bob", "new")]
    assert await api.store_mail(again) == [m["id"] for m in again]
    messages, total = await api.pending("bob")
    assert ([m.message for m in messages], total) == (["m0", "m1", "new"], 3)
    assert await history_texts(api, "alice", "bob") == ["new", "m1", "m0"]


async def test_keep_latest_and_ttl_through_the_api(api: ApiClient) -> None:
    """keep_latest caps a sender's pending mail; ttl_seconds makes it expire."""
    for degrees in range(5):
        await api.store_mail([chat("thermo", "bob", f"{degrees} C", seconds_ago=5 - degrees)], keep_latest=2)
    await api.store_mail([chat("thermo", "carol", "soon gone")], ttl_seconds=1)
    await api.store_mail([chat("thermo", "carol", "lasting")], ttl_seconds=600)
    messages, _ = await api.pending("bob")
    assert [m.message for m in messages] == ["3 C", "4 C"]
    assert await history_texts(api, "bob", "thermo") == ["4 C", "3 C"]
    await asyncio.sleep(1.2)
    messages, total = await api.pending("carol")
    assert ([m.message for m in messages], total) == (["lasting"], 1)
    assert await history_texts(api, "carol", "thermo") == ["lasting"]


async def test_history_and_clear(api: ApiClient) -> None:
    """History shows both directions newest first in pages; clearing keeps pending mail."""
    await api.archive([chat("alice", "bob", "one", seconds_ago=2), chat("bob", "alice", "two", seconds_ago=1)])
    await api.store_mail([chat("alice", "bob", "three")])
    messages, next_before = await api.history("alice", "bob", limit=2)
    assert [m.message for m in messages] == ["three", "two"]
    older, last = await api.history("bob", "alice", limit=2, before=next_before)
    assert ([m.message for m in older], last) == (["one"], None)
    assert await api.clear_history("alice") == 2
    messages, _ = await api.history("alice", "bob")
    assert [m.message for m in messages] == ["three"]


async def test_retried_archive_and_paging_across_batches(api: ApiClient) -> None:
    """A POST /history sent again (a retry) shows nothing twice; a conversation archived
    in many batches among others' pages back whole, newest first, even where pages end
    inside a second; clearing takes only that user's messages out of shared batches."""
    base = utcnow() - timedelta(minutes=1)
    ours: list[Message] = []
    for b in range(8):
        stamp = base + timedelta(milliseconds=b * 100)
        pair = [
            Message(sender="alice", destination="bob", message=f"p{b}.{i}", timestamp=stamp + timedelta(milliseconds=i))
            for i in range(3)
        ]
        noise = [Message(sender="carol", destination="dave", message=f"n{b}.{i}", timestamp=stamp) for i in range(5)]
        ours += pair
        assert await api.archive([*noise, *pair]) == 8
        assert await api.archive([*noise, *pair]) == 8  # the retry
    read: list[str] = []
    before = None
    for _ in range(20):
        page, before = await api.history("bob", "alice", limit=5, before=before)
        read += [m.id for m in page]
        if before is None:
            break
    assert read == [m.id for m in reversed(ours)]
    assert (await api.health_detailed())["counts"]["messages"] == 64
    assert await api.clear_history("bob") == 24
    assert await history_texts(api, "alice", "bob") == []
    assert len((await api.history("dave", "carol", limit=100))[0]) == 40


async def test_subscriptions(api: ApiClient) -> None:
    """Subscribing is idempotent, lists are per service, removal works once."""
    assert await api.subscribe("thermo", "bob") is True
    assert await api.subscribe("thermo", "bob") is False
    assert await api.subscribe("thermo", "alice") is True
    assert await api.subscribers("thermo") == ["alice", "bob"]
    assert await api.unsubscribe("thermo", "bob") is True
    assert await api.unsubscribe("thermo", "bob") is False
    assert await api.subscribers("thermo") == ["alice"]


async def test_state(api: ApiClient) -> None:
    """Bot state reads back exactly as written until deleted."""
    value = {"thread": [{"role": "user", "content": "hi"}], "stream": True}
    assert await api.get_state("openai", "bob") is None
    await api.put_state("openai", "bob", value)
    assert await api.get_state("openai", "bob") == value
    assert await api.delete_state("openai", "bob") is True
    assert await api.get_state("openai", "bob") is None


async def test_detailed_health_counts(api: ApiClient) -> None:
    """/health/detailed reports a working database and the counts of what is stored."""
    await api.store_mail([chat("alice", "bob", "a"), chat("alice", "carol", "b")])
    await api.archive([chat("alice", "dave", "c")])
    await api.subscribe("thermo", "bob")
    health = await api.health_detailed()
    assert health["status"] == "ok"
    assert health["database"]["ok"] is True and health["database"]["error"] is None
    assert health["counts"] == {"pending": 2, "messages": 3, "subscriptions": 1}
    assert health["uptime_seconds"] > 0


async def test_client_errors(api_net: Network) -> None:
    """The client raises ApiRejected on a refusal and StoreUnavailable when nobody answers."""
    async with ApiClient(api_net.api_url, "wrong") as api:
        with pytest.raises(ApiRejected) as refused:
            await api.pending("bob")
        assert refused.value.status == 401
    async with ApiClient(api_net.api_url, api_net.token) as api:
        with pytest.raises(ApiRejected, match="pattern"):
            await api.pending("not a name")
    async with ApiClient(f"http://127.0.0.1:{free_port()}", api_net.token, timeout=2) as api:
        with pytest.raises(StoreUnavailable):
            await api.store_mail([chat("alice", "bob", "lost?")])


# --- the database goes away ---------------------------------------------------------------------------


async def test_database_down_gives_503_and_recovers(network: Network, tmp_path: Path) -> None:
    """While the database is unreachable the API answers 503 and reports "degraded";
    once it is back, requests work again and nothing stored is lost."""
    port = free_port()
    store = Child("own-store", embedded_store_argv(port, tmp_path / "own"), port_open("127.0.0.1", port))
    store.start()
    try:
        network.start_api(MONGO_URL=f"mongodb://127.0.0.1:{port}")
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
            assert [m.message for m in messages] == ["kept"]
            assert (await api.health_detailed())["status"] == "ok"
    finally:
        store.stop()
