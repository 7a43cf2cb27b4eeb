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
from chatnet.protocol import Message, utcnow
from tests.support import HOST, Network, eventually, own_store, unused_port


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


async def test_keep_latest_and_ttl_through_the_api(api: ApiClient) -> None:
    """keep_latest caps a sender's pending mail; ttl_seconds makes it expire."""
    for degrees in range(5):
        await api.store_mail([chat("thermo", "bob", f"{degrees} C", seconds_ago=5 - degrees)], keep_latest=2)
    await api.store_mail([chat("thermo", "carol", "soon gone")], ttl_seconds=1)
    await api.store_mail([chat("thermo", "carol", "lasting")], ttl_seconds=600)
    messages, _ = await api.pending("bob")
    assert [m.message for m in messages] == ["3 C", "4 C"]
    assert sorted(m.message for m in (await api.pending("carol"))[0]) == ["lasting", "soon gone"]
    assert await history_texts(api, "bob", "thermo") == ["4 C", "3 C"]
    messages, total = await eventually(lambda: api.pending("carol"), lambda found: found[1] < 2, "carol's pending mail")
    assert ([m.message for m in messages], total) == (["lasting"], 1)
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
            assert [m.message for m in messages] == ["kept"]
            assert (await api.health_detailed())["status"] == "ok"
    finally:
        store.stop()
