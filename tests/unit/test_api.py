"""The message API in-process, through FastAPI's TestClient, over the real embedded
MongoDB-wire store (a fresh database per test): auth, validation against the shared
limits, mail, history, subscriptions, bot state. What needs the API as a process (the
database going away, shutdown, big pages over HTTP) is in tests/integration/test_api.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from chatnet.api import MAX_STATE_BYTES, create_app
from chatnet.config import Settings
from chatnet.limits import (
    HISTORY_PAGE,
    MAIL_PAGE,
    MAX_ACK_IDS,
    MAX_BATCH,
    MAX_KEEP_LATEST,
    MAX_MAIL_TTL_SECONDS,
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
)
from chatnet.message import Message
from chatnet.protocol import utcnow

TOKEN = "unit-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app(store_url: str) -> FastAPI:
    settings = Settings(_env_file=None, mongo_url=store_url, mongo_db=f"u{uuid.uuid4().hex[:12]}", api_token=TOKEN)
    return create_app(settings)


@pytest.fixture
def api(app: FastAPI) -> Iterator[TestClient]:
    """The app with its lifespan running (store opened, indexes made), sending the token."""
    with TestClient(app, headers=AUTH) as client:
        yield client


def chat(sender: str, destination: str, text: str, seconds_ago: float = 0) -> dict[str, Any]:
    timestamp = utcnow() - timedelta(seconds=seconds_ago)
    return Message(sender=sender, destination=destination, message=text, timestamp=timestamp).model_dump(mode="json")


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def pending(api: TestClient, user: str, **params: Any) -> tuple[list[str], int]:
    page = ok(api.get(f"/mail/{user}", params=params))
    return [m["message"] for m in page["messages"]], page["total"]


def history(api: TestClient, user: str, peer: str, **params: Any) -> tuple[list[str], str | None]:
    page = ok(api.get(f"/history/{user}/{peer}", params=params))
    return [m["message"] for m in page["messages"]], page["next_before"]


# --- auth ------------------------------------------------------------------------------


PROTECTED = [
    ("GET", "/health/detailed"),
    ("GET", "/mail/bob"),
    ("POST", "/mail"),
    ("POST", "/mail/bob/ack"),
    ("POST", "/history"),
    ("GET", "/history/alice/bob"),
    ("DELETE", "/history/alice"),
    ("GET", "/subscriptions/thermo"),
    ("PUT", "/subscriptions/thermo/bob"),
    ("DELETE", "/subscriptions/thermo/bob"),
    ("GET", "/state/openai/bob"),
    ("PUT", "/state/openai/bob"),
    ("DELETE", "/state/openai/bob"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_route_but_health_needs_the_token(app: FastAPI, method: str, path: str) -> None:
    """Without the bearer token, with a wrong one or without "Bearer", a route answers 401 and says how to authenticate."""
    with TestClient(app) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = anonymous.request(method, path, headers=headers)
            assert response.status_code == 401, (headers, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer"


def test_health_is_open_and_the_token_lets_in(app: FastAPI) -> None:
    """/health answers without a token; with the token a protected route answers."""
    with TestClient(app) as anonymous:
        assert ok(anonymous.get("/health")) == {"status": "ok"}
        assert ok(anonymous.get("/mail/bob", headers=AUTH)) == {"user": "bob", "messages": [], "total": 0}


# --- validation --------------------------------------------------------------------------


def mail(*messages: dict[str, Any], **hints: Any) -> dict[str, Any]:
    return {"messages": list(messages), **hints}


HI = chat("alice", "bob", "hi")
TOO_LONG_NAME = "x" * (MAX_NAME_CHARS + 1)

BAD_BODIES = [
    ("POST", "/mail", {}, "messages"),
    ("POST", "/mail", mail(), "at least 1"),
    ("POST", "/mail", mail(HI) | {"messages": [HI] * (MAX_BATCH + 1)}, f"at most {MAX_BATCH}"),
    ("POST", "/mail", mail({"destination": "bob", "message": "hi"}), "sender"),
    ("POST", "/mail", mail(HI | {"message": "x" * (MAX_MESSAGE_CHARS + 1)}), f"at most {MAX_MESSAGE_CHARS}"),
    ("POST", "/mail", mail(HI | {"destination": "no spaces"}), "pattern"),
    ("POST", "/mail", mail(HI | {"sender": TOO_LONG_NAME}), "pattern"),
    ("POST", "/mail", mail(HI | {"type": "shout"}), "chat"),
    ("POST", "/mail", mail(HI, ttl_seconds=0), "greater than or equal to 1"),
    ("POST", "/mail", mail(HI, ttl_seconds=MAX_MAIL_TTL_SECONDS + 1), f"less than or equal to {MAX_MAIL_TTL_SECONDS}"),
    ("POST", "/mail", mail(HI, keep_latest=0), "greater than or equal to 1"),
    ("POST", "/mail", mail(HI, keep_latest=MAX_KEEP_LATEST + 1), f"less than or equal to {MAX_KEEP_LATEST}"),
    ("POST", "/mail/bob/ack", {"ids": []}, "at least 1"),
    ("POST", "/mail/bob/ack", {"ids": [f"id{i}" for i in range(MAX_ACK_IDS + 1)]}, f"at most {MAX_ACK_IDS}"),
    ("POST", "/history", {"messages": "nope"}, "list"),
    ("POST", "/history", {"messages": [HI] * (MAX_BATCH + 1)}, f"at most {MAX_BATCH}"),
    ("PUT", "/state/openai/bob", {}, "value"),
]


@pytest.mark.parametrize(("method", "path", "body", "reason"), BAD_BODIES)
def test_bad_bodies_get_422_with_a_reason(api: TestClient, method: str, path: str, body: Any, reason: str) -> None:
    """An invalid body (shape, names, sizes, mail hints out of the shared bounds) is refused with 422 saying what is wrong."""
    response = api.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert reason in str(response.json()["detail"])


def test_the_bounds_themselves_are_accepted(api: TestClient) -> None:
    """The largest batch, TTL, keep_latest and page the limits allow are taken."""
    assert ok(api.post("/mail", json=mail(HI, ttl_seconds=MAX_MAIL_TTL_SECONDS, keep_latest=MAX_KEEP_LATEST)), 201)["stored"] == 1
    batch = [chat("alice", "carol", f"m{i}") for i in range(MAX_BATCH)]
    assert ok(api.post("/mail", json=mail(*batch)), 201)["stored"] == MAX_BATCH
    assert pending(api, "bob", limit=MAIL_PAGE) == (["hi"], 1)
    assert history(api, "alice", "bob", limit=HISTORY_PAGE) == (["hi"], None)


def test_a_body_that_is_not_json_gets_422(api: TestClient) -> None:
    """A body that is not JSON is refused with 422 saying so."""
    response = api.post("/mail", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "JSON" in str(response.json()["detail"])


@pytest.mark.parametrize(
    "path",
    ["/mail/bad%20name", f"/mail/{TOO_LONG_NAME}", "/history/alice/b%21b", "/subscriptions/th%3Aermo", "/state/o/%C3%A9"],
)
def test_bad_names_in_paths_get_422(api: TestClient, path: str) -> None:
    """A name in a path that breaks the name rule is refused with 422."""
    response = api.get(path)
    assert response.status_code == 422
    assert "pattern" in str(response.json()["detail"])


@pytest.mark.parametrize(
    "path", ["/mail/bob?limit=0", f"/mail/bob?limit={MAIL_PAGE + 1}", "/history/alice/bob?limit=0", f"/history/alice/bob?limit={HISTORY_PAGE + 1}"]
)
def test_page_sizes_out_of_bounds_get_422(api: TestClient, path: str) -> None:
    """A page of mail holds 1..MAIL_PAGE messages, a page of history 1..HISTORY_PAGE; other sizes are refused."""
    assert api.get(path).status_code == 422


# --- mail ----------------------------------------------------------------------------------


def test_mail_round_trip_is_idempotent_by_id(api: TestClient) -> None:
    """Stored mail is pending oldest first; a retried store (even mixed with new mail)
    stores nothing twice; an ack takes it away once."""
    first, second = chat("alice", "bob", "first", seconds_ago=2), chat("carol", "bob", "second", seconds_ago=1)
    stored = {"stored": 2, "ids": [first["id"], second["id"]], "unknown": ["bob"]}  # nobody has logged in as bob
    assert ok(api.post("/mail", json=mail(first, second)), 201) == stored
    third = chat("alice", "bob", "third")
    assert ok(api.post("/mail", json=mail(first, third)), 201)["ids"] == [first["id"], third["id"]]
    page = ok(api.get("/mail/bob"))
    assert [m["message"] for m in page["messages"]] == ["first", "second", "third"] and page["total"] == 3
    assert page["messages"][0] == first
    assert pending(api, "bob", limit=1) == (["first"], 3)
    assert ok(api.post("/mail/bob/ack", json={"ids": [first["id"]]})) == {"acknowledged": 1}
    assert ok(api.post("/mail/bob/ack", json={"ids": [first["id"], second["id"]]})) == {"acknowledged": 1}
    assert pending(api, "bob") == (["third"], 1)


def test_pending_for_many_users_answers_those_with_mail_and_what_fits(api: TestClient) -> None:
    """POST /mail/pending names only the users with mail (in any case), each with its
    total and, smallest first while they fit the limit, all its mail oldest first; the
    pages it served are acknowledged like GET's."""
    bobs = [chat("alice", "Bob", f"b{i}", seconds_ago=3 - i) for i in range(3)]
    carols = [chat("alice", "carol", f"c{i}", seconds_ago=3 - i) for i in range(2)]
    ok(api.post("/mail", json=mail(*bobs, *carols, chat("alice", "dave", "d0"))), 201)
    users = ["bob", "Carol", "nobody", *(f"quiet{i}" for i in range(50))]
    answer = ok(api.post("/mail/pending", json={"users": users, "limit": 4}))["pending"]
    by_user = {entry["user"]: entry for entry in answer}
    assert set(by_user) == {"bob", "Carol"}  # dave wasn't asked; nobody and the quiet have none
    assert by_user["Carol"] == {"user": "Carol", "total": 2, "messages": carols}
    assert by_user["bob"] == {"user": "bob", "total": 3, "messages": None}  # 2 + 3 > 4: ask GET /mail/bob
    ok(api.post("/mail/carol/ack", json={"ids": [m["id"] for m in carols]}))
    assert ok(api.post("/mail/pending", json={"users": ["carol", "bob"], "limit": 10}))["pending"] == [
        {"user": "bob", "total": 3, "messages": bobs}
    ]


@pytest.mark.parametrize(
    "body",
    [{"users": []}, {"users": ["bad name"]}, {"users": ["bob"], "limit": 0}, {"users": ["bob"], "limit": MAIL_PAGE + 1}],
)
def test_pending_for_many_users_refuses_bad_bodies(api: TestClient, body: dict[str, Any]) -> None:
    """No users, a bad name or a limit out of bounds gets 422."""
    assert api.post("/mail/pending", json=body).status_code == 422


def test_acknowledged_mail_moves_to_the_history(api: TestClient) -> None:
    """Acknowledged mail is no longer pending, only the user's own is taken, and it
    shows in the history in the order it was sent as soon as the ack is answered;
    clearing the history keeps pending mail."""
    mine = [chat("alice", "bob", f"m{i}", seconds_ago=3 - i) for i in range(3)]
    carols = chat("alice", "carol", "for carol")
    ok(api.post("/mail", json=mail(*mine, carols)), 201)
    ids = [mine[0]["id"], mine[1]["id"], carols["id"]]
    assert ok(api.post("/mail/bob/ack", json={"ids": ids})) == {"acknowledged": 2}
    assert pending(api, "bob") == (["m2"], 1)
    assert pending(api, "carol") == (["for carol"], 1)
    assert history(api, "bob", "alice") == (["m2", "m1", "m0"], None)
    assert ok(api.delete("/history/bob")) == {"deleted": 2}  # m0 and m1 were delivered; m2 is still pending
    assert history(api, "bob", "alice") == (["m2"], None)
    assert history(api, "alice", "carol") == (["for carol"], None)


# --- history -------------------------------------------------------------------------------


def test_history_pages_newest_first_in_both_directions(api: TestClient) -> None:
    """History holds both directions and pending mail, newest first, in pages that follow `next_before`."""
    archived = [chat("alice", "bob", "one", seconds_ago=3), chat("bob", "alice", "two", seconds_ago=2)]
    assert ok(api.post("/history", json={"messages": archived}), 201) == {"stored": 2}
    ok(api.post("/mail", json=mail(chat("alice", "bob", "three", seconds_ago=1))), 201)
    texts, next_before = history(api, "alice", "bob", limit=2)
    assert texts == ["three", "two"] and next_before is not None
    assert history(api, "bob", "alice", limit=2, before=next_before) == (["one"], None)
    assert history(api, "alice", "carol") == ([], None)


def test_retried_archive_and_paging_across_batches(api: TestClient) -> None:
    """A POST /history sent again (a retry) shows nothing twice; a conversation archived
    in many batches among others' pages back whole, newest first, even where pages end
    inside a second; clearing takes only that user's messages out of shared batches."""
    base = utcnow() - timedelta(minutes=1)
    ours: list[dict[str, Any]] = []
    for b in range(8):
        stamp = base + timedelta(milliseconds=b * 100)
        pair = [
            Message(sender="alice", destination="bob", message=f"p{b}.{i}", timestamp=stamp + timedelta(milliseconds=i))
            for i in range(3)
        ]
        noise = [Message(sender="carol", destination="dave", message=f"n{b}.{i}", timestamp=stamp) for i in range(5)]
        batch = {"messages": [m.model_dump(mode="json") for m in (*noise, *pair)]}
        ours += batch["messages"][5:]
        assert ok(api.post("/history", json=batch), 201) == {"stored": 8}
        assert ok(api.post("/history", json=batch), 201) == {"stored": 8}  # the retry
    read: list[str] = []
    before = None
    for _ in range(20):
        page = ok(api.get("/history/bob/alice", params={"limit": 5} | ({"before": before} if before else {})))
        read += [m["id"] for m in page["messages"]]
        if (before := page["next_before"]) is None:
            break
    assert read == [m["id"] for m in reversed(ours)]
    assert ok(api.get("/health/detailed"))["counts"]["messages"] == 64
    assert ok(api.delete("/history/bob")) == {"deleted": 24}
    assert history(api, "alice", "bob") == ([], None)
    assert len(ok(api.get("/history/dave/carol", params={"limit": 100}))["messages"]) == 40


def test_a_malformed_before_gets_422(api: TestClient) -> None:
    """`before` must be a timestamp."""
    assert api.get("/history/alice/bob", params={"before": "yesterday"}).status_code == 422


# --- subscriptions and state ---------------------------------------------------------------


def test_subscriptions_are_idempotent_and_per_service(api: TestClient) -> None:
    """Subscribing twice creates one subscription; lists are per service; removal works once."""
    assert ok(api.put("/subscriptions/thermo/bob")) == {"subscribed": True, "created": True}
    assert ok(api.put("/subscriptions/thermo/bob")) == {"subscribed": True, "created": False}
    ok(api.put("/subscriptions/thermo/alice"))
    ok(api.put("/subscriptions/other/carol"))
    assert ok(api.get("/subscriptions/thermo")) == {"service": "thermo", "users": ["alice", "bob"]}
    assert ok(api.delete("/subscriptions/thermo/bob")) == {"removed": True}
    assert ok(api.delete("/subscriptions/thermo/bob")) == {"removed": False}
    assert ok(api.get("/subscriptions/thermo"))["users"] == ["alice"]


def test_state_reads_back_as_written_until_deleted(api: TestClient) -> None:
    """Bot state is null until put, reads back exactly, and is gone once deleted (once)."""
    value = {"thread": [{"role": "user", "content": "héllo"}], "stream": True, "n": 1.5}
    assert ok(api.get("/state/openai/bob")) == {"value": None}
    assert ok(api.put("/state/openai/bob", json={"value": value})) == {"value": value}
    assert ok(api.get("/state/openai/bob")) == {"value": value}
    assert ok(api.get("/state/openai/alice")) == {"value": None}
    assert ok(api.delete("/state/openai/bob")) == {"deleted": True}
    assert ok(api.delete("/state/openai/bob")) == {"deleted": False}
    assert ok(api.get("/state/openai/bob")) == {"value": None}


def test_state_is_bounded(api: TestClient) -> None:
    """A value whose JSON is over MAX_STATE_BYTES is refused with 422; one at the bound is kept."""
    overhead = len('""')
    response = api.put("/state/openai/bob", json={"value": "x" * (MAX_STATE_BYTES - overhead + 1)})
    assert response.status_code == 422 and "too large" in response.text
    at_bound = "é" * ((MAX_STATE_BYTES - overhead) // 2)  # two bytes each: the bound is in bytes
    assert ok(api.put("/state/openai/bob", json={"value": at_bound})) == {"value": at_bound}


def test_detailed_health_counts(api: TestClient) -> None:
    """/health/detailed reports a working database and the counts of what is stored."""
    ok(api.post("/mail", json=mail(chat("alice", "bob", "a"), chat("alice", "carol", "b"))), 201)
    ok(api.post("/history", json={"messages": [chat("alice", "dave", "c")]}), 201)
    ok(api.put("/subscriptions/thermo/bob"))
    health = ok(api.get("/health/detailed"))
    assert health["status"] == "ok"
    assert health["database"]["ok"] is True and health["database"]["error"] is None
    assert health["counts"] == {"pending": 2, "messages": 3, "subscriptions": 1}
    assert health["uptime_seconds"] > 0


@pytest.mark.parametrize(
    "metadata",
    [{"n": 2**63}, {"a\u0000b": 1}, {"$set": 1}, {"x": float("nan")}],
)
def test_values_the_store_cant_hold_are_422_not_500(api: TestClient, metadata: dict) -> None:  # type: ignore[type-arg]
    """A message whose metadata the store can't hold is refused with 422 and a reason: never a 500."""
    body = {"messages": [{"id": "x1", "sender": "alice", "destination": "bob", "message": "m", "metadata": metadata}]}
    for route in ("/mail", "/history"):
        response = api.post(route, content=json.dumps(body, allow_nan=True), headers={"Content-Type": "application/json"})
        assert response.status_code == 422, (route, metadata, response.text)


def test_a_timestamp_past_the_last_utc_instant_is_a_422_not_a_500(api: TestClient) -> None:
    """9999-12-31T23:59:59-10:00 is valid ISO 8601 but overflows once in UTC."""
    body = {"messages": [{"sender": "alice", "destination": "bob", "message": "hi", "timestamp": "9999-12-31T23:59:59-10:00"}]}
    for route in ("/mail", "/history"):
        assert api.post(route, json=body).status_code == 422


def test_a_bots_state_may_be_kept_under_a_room(api: TestClient) -> None:
    """A bot's thread for a room: the state's key may be '#room' (as %23 in the path); a bad key is a 422."""
    assert api.put("/state/openai/%23hiking", json={"value": {"turns": 1}}).status_code == 200
    assert api.get("/state/openai/%23hiking").json() == {"value": {"turns": 1}}
    assert api.get("/state/openai/%23").status_code == 422
