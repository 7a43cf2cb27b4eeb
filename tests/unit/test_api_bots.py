"""The message API's bot definitions, the bot host's feed and status reports, and the
HTTP chat passed through to the bot host, in-process through FastAPI's TestClient over
the real embedded store (a fresh database per test). The bot host is stood in for by a
tiny aiohttp server on a loopback port; the ApiClient's bot methods are tested against
the API served by uvicorn on a loopback port."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
import uvicorn
from aiohttp import web
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from chatnet.api import create_app
from chatnet.api_bots import (
    MAX_API_KEY_CHARS,
    MAX_RATE_LIMIT,
    MAX_THREAD_CHARACTERS,
    MAX_THREAD_DAYS,
    MAX_THREAD_MESSAGES,
    MAX_TIMEOUT_SECONDS,
    MIN_THREAD_CHARACTERS,
)
from chatnet.api_client import ApiClient
from chatnet.config import Settings
from chatnet.errors import ApiRejected, StoreUnavailable
from chatnet.limits import BOT_STATUS_STALE_SECONDS, MAX_BOT_PROMPT_CHARS, MAX_BOTS, MAX_ROOMS_PER_USER
from chatnet.protocol import format_datetime, utcnow
from tests.support import HOST, eventually, unused_port
from tests.unit.test_api import AUTH, TOKEN, ok
from tests.unit.test_fuzz import FUZZ, json_values

SECRET = "sk-test-0123456789abcdef"
DEFAULTS = {
    "system": None,
    "personality": None,
    "model": None,
    "base_url": None,
    "has_api_key": False,
    "respond_to": [],
    "max_messages": 20,
    "max_characters": 8000,
    "max_days": 7.0,
    "rate_limit": 20,
    "timeout": 30.0,
    "rooms": [],
    "owner": None,
}
ANSWERED = {"id", "name", *DEFAULTS, "created_at", "updated_at", "version"}


def settings(store_url: str, **overrides: Any) -> Settings:
    return Settings(_env_file=None, mongo_url=store_url, mongo_db=f"u{uuid.uuid4().hex[:12]}", api_token=TOKEN, **overrides)


@pytest.fixture
def app(store_url: str) -> FastAPI:
    return create_app(settings(store_url))


@pytest.fixture
def api(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, headers=AUTH) as client:
        yield client


def put(api: TestClient, *definitions: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
    written: list[dict[str, Any]] = ok(api.put("/bots", json=list(definitions), params=params))
    return written


def bot(api: TestClient, name: str) -> dict[str, Any]:
    found: dict[str, Any] = ok(api.get(f"/bots/{name}"))
    return found


def names(api: TestClient) -> list[str]:
    return [b["name"] for b in ok(api.get("/bots"))]


def refused(response: Any, status: int, reason: str) -> Any:
    assert response.status_code == status, response.text
    assert reason in str(response.json()["detail"]), response.text
    return response.json()


# --- auth ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/bots"),
        ("GET", "/bots"),
        ("GET", "/bots/openai"),
        ("PATCH", "/bots/openai"),
        ("DELETE", "/bots/openai"),
        ("GET", "/bots/openai/status"),
        ("POST", "/bots/openai/chat"),
        ("POST", "/bots/openai/chat/simple"),
        ("GET", "/bot-host/definitions"),
        ("PUT", "/bot-host/status"),
    ],
)
def test_every_bot_route_needs_the_token(app: FastAPI, method: str, path: str) -> None:
    """Without the bearer token (or with a wrong one) every bot route answers 401."""
    with TestClient(app) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            assert anonymous.request(method, path, headers=headers).status_code == 401


# --- the default bot ---------------------------------------------------------------------------


def test_the_default_bot_is_one_definition_among_them(api: TestClient) -> None:
    """A new database has the default bot's definition, with the defaults; its account is made at its first login, as before."""
    (openai,) = ok(api.get("/bots"))
    assert openai == {**openai, **DEFAULTS, "name": "openai", "version": 1}
    assert set(openai) == ANSWERED and openai["id"].startswith("b_")
    assert api.get("/accounts/openai").status_code == 404


def test_no_person_may_register_a_bots_name(api: TestClient) -> None:
    """A definition's name is refused to a person's account (in any case) before the bot
    has logged in once; the bot's own account (kind bot, at its first login) is made."""
    put(api, {"name": "helper"})
    for name in ("openai", "HELPER"):
        refused(api.post("/accounts", json={"name": name, "kind": "person", "password": "long enough pw"}), 409, "is a bot's")
    assert api.post("/accounts", json={"name": "openai", "kind": "bot"}).status_code == 201


def test_the_default_bot_is_made_when_absent_and_never_overwritten(app: FastAPI) -> None:
    """A changed default bot stays as changed across restarts of the API; one deleted comes back, with the defaults."""
    with TestClient(app, headers=AUTH) as api:
        ok(api.patch("/bots/openai", json={"model": "llama3.2"}))
    with TestClient(app, headers=AUTH) as api:
        assert bot(api, "openai")["model"] == "llama3.2" and bot(api, "openai")["version"] == 2
        ok(api.delete("/bots/openai"))
    with TestClient(app, headers=AUTH) as api:
        assert bot(api, "openai") == {**bot(api, "openai"), **DEFAULTS, "version": 1}


def test_the_default_bot_takes_the_bot_settings(store_url: str) -> None:
    """The default bot is made with BOT_NAME, BOT_ALLOW, BOT_RATE_LIMIT, BOT_TIMEOUT and the thread bounds."""
    given = settings(store_url, bot_name="Assistant", bot_allow="alice, Bob", bot_rate_limit=5, bot_timeout=12.5, bot_max_messages=8)
    with TestClient(create_app(given), headers=AUTH) as api:
        found = bot(api, "assistant")
    assert found == {**found, "name": "Assistant", "respond_to": ["alice", "Bob"], "rate_limit": 5, "timeout": 12.5, "max_messages": 8}


# --- create, read, replace, change, delete -------------------------------------------------------


def test_bots_are_created_listed_and_read(api: TestClient) -> None:
    """PUT /bots creates each bot with the defaults for what it leaves out and a bot account; GET lists them by name, finds one in any case."""
    written = put(api, {"name": "Helper", "system": "You help.", "model": "llama3.2", "base_url": "http://127.0.0.1:11434/v1"}, {"name": "critic"})
    assert [(w["name"], w["created"]) for w in written] == [("Helper", True), ("critic", True)]
    assert all(w["id"].startswith("b_") for w in written) and written[0]["id"] != written[1]["id"]
    assert names(api) == ["critic", "Helper", "openai"]
    helper = bot(api, "helper")
    assert helper == {
        **DEFAULTS,
        "id": written[0]["id"],
        "name": "Helper",
        "system": "You help.",
        "model": "llama3.2",
        "base_url": "http://127.0.0.1:11434/v1",
        "created_at": helper["created_at"],
        "updated_at": helper["created_at"],
        "version": 1,
    }
    assert ok(api.get("/accounts/HELPER")) == {"name": "Helper", "kind": "bot"}
    refused(api.get("/bots/nobody"), 404, "no bot named 'nobody'")


def test_a_put_replaces_a_definition_whole(api: TestClient) -> None:
    """PUT of an existing name replaces it whole (id and creation kept, version +1, left-out fields back to the defaults); the same PUT again changes nothing."""
    (first,) = put(api, {"name": "helper", "system": "You help.", "rate_limit": 3, "rooms": ["#general"]})
    before = bot(api, "helper")
    (again,) = put(api, {"name": "helper", "personality": "Happy"})
    assert again == {"name": "helper", "id": first["id"], "created": False}
    after = bot(api, "helper")
    assert after == {**before, **DEFAULTS, "personality": "happy", "version": 2, "updated_at": after["updated_at"]}
    put(api, {"name": "helper", "personality": "happy"})
    assert bot(api, "helper")["version"] == 2


def test_a_put_that_may_only_create_refuses_an_existing_bot(api: TestClient) -> None:
    """With replace=false a name that is a bot already is a 409, and nothing is applied."""
    put(api, {"name": "helper", "system": "You help."})
    answer = refused(api.put("/bots", params={"replace": "false"}, json=[{"name": "fresh"}, {"name": "HELPER"}]), 409, "exists already")
    assert answer["name"] == "HELPER"
    assert names(api) == ["helper", "openai"] and bot(api, "helper")["version"] == 1


def test_patch_changes_only_what_it_names(api: TestClient) -> None:
    """PATCH changes the fields given (null clears a nullable one), keeps the rest, moves the version; an empty one changes nothing."""
    put(api, {"name": "helper", "system": "You help.", "model": "llama3.2", "respond_to": ["alice"]})
    changed: dict[str, Any] = ok(api.patch("/bots/helper", json={"system": None, "personality": "angry", "max_days": 1}))
    assert changed == {**bot(api, "helper"), "system": None, "personality": "angry", "max_days": 1.0, "model": "llama3.2", "respond_to": ["alice"], "version": 2}
    assert ok(api.patch("/bots/helper", json={}))["version"] == 2
    refused(api.patch("/bots/nobody", json={"model": "x"}), 404, "no bot named 'nobody'")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"name": "other"}, "Extra inputs"),
        ({"max_messages": None}, "valid integer"),
        ({"respond_to": None}, "valid list"),
        ({"personality": "happy"}, "not both"),
        ({"personality": "pirate", "system": None}, "no personality 'pirate'"),
        ({"timeout": 0}, "greater than 0"),
        ({"base_url": "ftp://example.org"}, "http:// or https://"),
    ],
)
def test_a_patch_must_leave_a_valid_definition(api: TestClient, change: dict[str, Any], reason: str) -> None:
    """A PATCH is checked as the definition it makes (no name change, no null where a value is needed, system or personality): 422 and why; nothing changes."""
    put(api, {"name": "helper", "system": "You help."})
    refused(api.patch("/bots/helper", json=change), 422, reason)
    assert bot(api, "helper")["version"] == 1


def test_a_deleted_bot_takes_its_account_and_threads(api: TestClient) -> None:
    """DELETE removes the definition, the bot account and the bot's threads; then the bot is unknown (404) and the name free."""
    put(api, {"name": "helper"})
    ok(api.put("/state/helper/alice", json={"value": ["a thread"]}))
    ok(api.put("/state/openai/alice", json={"value": ["another"]}))
    assert ok(api.delete("/bots/Helper")) == {"deleted": True}
    assert names(api) == ["openai"]
    refused(api.get("/bots/helper"), 404, "no bot")
    refused(api.delete("/bots/helper"), 404, "no bot")
    assert api.get("/accounts/helper").status_code == 404
    assert ok(api.get("/state/helper/alice")) == {"value": None}
    assert ok(api.get("/state/openai/alice")) == {"value": ["another"]}
    assert put(api, {"name": "helper"})[0]["created"] is True


# --- validation -------------------------------------------------------------------------------------


BAD = [
    ({"name": "two words"}, "name", "pattern"),
    ({"name": ".."}, "name", "not dots alone"),
    ({"max_messages": 0}, "max_messages", "greater than or equal to 1"),
    ({"max_messages": MAX_THREAD_MESSAGES + 1}, "max_messages", f"less than or equal to {MAX_THREAD_MESSAGES}"),
    ({"max_characters": MIN_THREAD_CHARACTERS - 1}, "max_characters", f"greater than or equal to {MIN_THREAD_CHARACTERS}"),
    ({"max_characters": MAX_THREAD_CHARACTERS + 1}, "max_characters", f"less than or equal to {MAX_THREAD_CHARACTERS}"),
    ({"max_days": 0}, "max_days", "greater than 0"),
    ({"max_days": MAX_THREAD_DAYS + 1}, "max_days", f"less than or equal to {MAX_THREAD_DAYS:g}"),
    ({"rate_limit": 0}, "rate_limit", "greater than or equal to 1"),
    ({"rate_limit": MAX_RATE_LIMIT + 1}, "rate_limit", f"less than or equal to {MAX_RATE_LIMIT}"),
    ({"timeout": 0}, "timeout", "greater than 0"),
    ({"timeout": MAX_TIMEOUT_SECONDS + 1}, "timeout", f"less than or equal to {MAX_TIMEOUT_SECONDS:g}"),
    ({"base_url": "ftp://example.org/v1"}, "base_url", "http:// or https://"),
    ({"base_url": "localhost:11434/v1"}, "base_url", "http:// or https://"),
    ({"base_url": "http:///v1"}, "base_url", "with a host"),
    ({"base_url": "http://me:pw@example.org/v1"}, "base_url", "no credentials in the URL"),
    ({"base_url": "http://example.org:port/v1"}, "base_url", "not a URL"),
    ({"base_url": "http://example.org/v 1"}, "base_url", "no spaces"),
    ({"system": "You help.", "personality": "happy"}, None, "not both"),
    ({"system": ""}, "system", "at least 1 character"),
    ({"system": "x" * (MAX_BOT_PROMPT_CHARS + 1)}, "system", f"at most {MAX_BOT_PROMPT_CHARS} characters"),
    ({"personality": "pirate"}, "personality", "no personality 'pirate' here; there are happy, angry, spanish"),
    ({"model": "two words"}, "model", "pattern"),
    ({"respond_to": ["no spaces"]}, "respond_to", "pattern"),
    ({"rooms": ["general"]}, "rooms", "pattern"),
    ({"rooms": [f"#r{i}" for i in range(MAX_ROOMS_PER_USER + 1)]}, "rooms", f"at most {MAX_ROOMS_PER_USER}"),
    ({"owner": "no spaces"}, "owner", "pattern"),
    ({"prompt": "You help."}, "prompt", "Extra inputs are not permitted"),
    ({"api_key": "sk two"}, "api_key", "printable ASCII without spaces"),
    ({"api_key": "k" * (MAX_API_KEY_CHARS + 1)}, "api_key", f"at most {MAX_API_KEY_CHARS} characters"),
]


@pytest.mark.parametrize(("fields", "where", "reason"), BAD)
def test_bad_definitions_get_422_with_the_reason(api: TestClient, fields: dict[str, Any], where: str | None, reason: str) -> None:
    """A definition out of bounds, with a base_url that is no http(s) URL, with system and personality, ... is a 422 saying what and where; nothing is applied."""
    answer = refused(api.put("/bots", json=[{"name": "fine"}, {"name": "helper", **fields}]), 422, reason)
    located = [e for e in answer["detail"] if reason in e["msg"]]
    assert located and located[0]["loc"][:2] == ["body", 1] and (where is None or where in located[0]["loc"]), answer
    assert names(api) == ["openai"]


def test_the_bounds_themselves_are_accepted(api: TestClient) -> None:
    """The largest and smallest values the bounds allow are taken."""
    most = {
        "system": "x" * MAX_BOT_PROMPT_CHARS,
        "max_messages": MAX_THREAD_MESSAGES,
        "max_characters": MAX_THREAD_CHARACTERS,
        "max_days": MAX_THREAD_DAYS,
        "rate_limit": MAX_RATE_LIMIT,
        "timeout": MAX_TIMEOUT_SECONDS,
        "rooms": [f"#r{i}" for i in range(MAX_ROOMS_PER_USER)],
        "api_key": "k" * MAX_API_KEY_CHARS,
        "base_url": "https://api.example.org:8443/v1",
    }
    least = {"max_messages": 1, "max_characters": MIN_THREAD_CHARACTERS, "max_days": 0.01, "rate_limit": 1, "timeout": 0.1}
    put(api, {"name": "most", **most}, {"name": "least", **least})
    assert bot(api, "most") == {**bot(api, "most"), **{k: v for k, v in most.items() if k != "api_key"}, "has_api_key": True}
    assert bot(api, "least") == {**bot(api, "least"), **least}


def test_names_given_twice_are_refused(api: TestClient) -> None:
    """The same name twice in one PUT (in any case) is a 422 at the second; nothing is applied."""
    answer = refused(api.put("/bots", json=[{"name": "helper"}, {"name": "other"}, {"name": "HELPER"}]), 422, "given twice")
    assert answer["detail"][0]["loc"] == ["body", 2, "name"]
    assert names(api) == ["openai"]


@pytest.mark.parametrize("body", [[], {"name": "helper"}, "helper"])
def test_a_put_takes_a_list_of_at_least_one(api: TestClient, body: Any) -> None:
    """PUT /bots takes a JSON list of definitions, at least one."""
    assert api.put("/bots", json=body).status_code == 422


def test_there_are_at_most_max_bots(api: TestClient) -> None:
    """One PUT holds at most MAX_BOTS definitions (422), and there are at most MAX_BOTS bots (409 for the one too many)."""
    assert api.put("/bots", json=[{"name": f"b{i}"} for i in range(MAX_BOTS + 1)]).status_code == 422
    put(api, *({"name": f"b{i}"} for i in range(MAX_BOTS - 1)))  # and openai
    refused(api.put("/bots", json=[{"name": "b0"}, {"name": "straw"}]), 409, f"at most {MAX_BOTS} bots")
    assert len(names(api)) == MAX_BOTS and put(api, {"name": "b0", "model": "x"})[0]["created"] is False


def test_a_name_held_by_a_person_or_a_service_is_refused(api: TestClient) -> None:
    """A name a person's account holds, a service's (a bot account that is no definition, thermometer1) or a reserved one is 409 with the name; nothing is applied."""
    ok(api.post("/accounts", json={"name": "Alice", "password": "correct horse battery"}), 201)
    ok(api.post("/accounts", json={"name": "echo", "kind": "bot"}), 201)
    for name, reason in [("alice", "a person's account"), ("Echo", "a service that is not a bot definition"), ("thermometer1", "reserved"), ("server", "reserved")]:
        answer = refused(api.put("/bots", json=[{"name": "fine"}, {"name": name}]), 409, reason)
        assert answer["name"] == name
    assert names(api) == ["openai"]
    assert ok(api.get("/accounts/alice"))["kind"] == "person"


# --- the api_key is write-only ------------------------------------------------------------------------


def test_the_api_key_is_never_answered_nor_logged(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """No answer carries the api_key (PUT, GET, list, PATCH, a 422 for it or for another field), no log line holds it; only the host's feed has it."""
    caplog.set_level(logging.DEBUG)
    answers = [api.put("/bots", json=[{"name": "helper", "api_key": SECRET}])]
    answers += [api.get("/bots/helper"), api.get("/bots"), api.patch("/bots/helper", json={"model": "llama3.2"})]
    answers += [api.put("/bots", json=[{"name": "helper", "api_key": SECRET, "max_messages": 0}])]
    answers += [api.patch("/bots/helper", json={"api_key": SECRET + " \n", "timeout": -1})]
    answers += [
        api.put("/bots", json=[{"name": "bad name", "api_key": SECRET}]),
        api.put("/bots", content=f'[{{"api_key": "{SECRET}"', headers={"Content-Type": "application/json"}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 422, 422, 422, 422]
    for answer in answers:
        assert SECRET not in answer.text, answer.text
    assert bot(api, "helper")["has_api_key"] is True
    assert SECRET not in caplog.text
    feed = {d["name"]: d for d in ok(api.get("/bot-host/definitions"))}
    assert feed["helper"]["api_key"] == SECRET and feed["openai"]["api_key"] is None
    assert set(feed["helper"]) == ANSWERED | {"api_key"}


def test_an_api_key_is_changed_and_removed_by_patch(api: TestClient) -> None:
    """PATCH with an api_key sets it, with "" or null removes it; a PATCH without one keeps it."""
    put(api, {"name": "helper", "api_key": SECRET})

    def key() -> str | None:
        found: str | None = {d["name"]: d for d in ok(api.get("/bot-host/definitions"))}["helper"]["api_key"]
        return found

    ok(api.patch("/bots/helper", json={"model": "llama3.2"}))
    assert key() == SECRET
    assert ok(api.patch("/bots/helper", json={"api_key": "sk-new"}))["has_api_key"] is True and key() == "sk-new"
    assert ok(api.patch("/bots/helper", json={"api_key": ""}))["has_api_key"] is False and key() is None
    ok(api.patch("/bots/helper", json={"api_key": "sk-again"}))
    assert ok(api.patch("/bots/helper", json={"api_key": None}))["has_api_key"] is False and key() is None


# --- status ---------------------------------------------------------------------------------------------


REPORT = {
    "name": "helper",
    "online": True,
    "model_ok": False,
    "last_error": "APIConnectionError",
    "last_error_at": "2026-12-01T10:00:00.250+01:00",
    "requests": 7,
    "errors": 2,
    "p50_ms": 812.5,
    "queued": 1,
}


def test_status_is_the_hosts_last_report_until_it_goes_stale(api: TestClient, app: FastAPI) -> None:
    """A bot's status is the host's last report on it; once that report is older than BOT_STATUS_STALE_SECONDS it says online false, figures kept."""
    put(api, {"name": "helper"}, {"name": "quiet"})
    never = {"name": "helper", "online": False, "model_ok": None, "last_error": None, "last_error_at": None}
    never |= {"requests": 0, "errors": 0, "p50_ms": None, "queued": 0, "reported_at": None}
    assert ok(api.get("/bots/helper/status")) == never
    now = utcnow()
    clock = [now]
    app.state.bots.clock = lambda: clock[0]
    assert api.put("/bot-host/status", json=[REPORT, {"name": "gone", "online": True}]).status_code == 204
    fresh = {**REPORT, "last_error_at": "2026-12-01T09:00:00.250Z", "reported_at": format_datetime(now)}
    assert ok(api.get("/bots/HELPER/status")) == fresh
    assert ok(api.get("/bots/quiet/status")) == never | {"name": "quiet"}
    clock[0] = now + timedelta(seconds=BOT_STATUS_STALE_SECONDS)
    assert ok(api.get("/bots/helper/status"))["online"] is True
    clock[0] = now + timedelta(seconds=BOT_STATUS_STALE_SECONDS + 0.001)
    assert ok(api.get("/bots/helper/status")) == fresh | {"online": False}
    refused(api.get("/bots/gone/status"), 404, "no bot named 'gone'")


@pytest.mark.parametrize(
    "report",
    [{"online": True}, {"name": "helper"}, {"name": "helper", "online": True, "requests": -1}, {"name": "helper", "online": True, "last_error": "x" * 201}],
)
def test_a_bad_status_report_gets_422(api: TestClient, report: dict[str, Any]) -> None:
    """A report without a name or online, or with figures out of bounds, is refused."""
    assert api.put("/bot-host/status", json=[report]).status_code == 422


# --- anything at all ---------------------------------------------------------------------------------


BOT_FIELDS = ["name", "system", "personality", "model", "base_url", "api_key", "respond_to", "max_messages", "max_characters"]
BOT_FIELDS += ["max_days", "rate_limit", "timeout", "rooms", "owner", "version"]
definitions = st.dictionaries(st.sampled_from(BOT_FIELDS), json_values, max_size=6).map(lambda d: {"name": "fuzzed", **d})
reports = st.dictionaries(st.sampled_from([*REPORT, "reported_at"]), json_values, max_size=6)
fuzzed_bodies = st.one_of(
    st.tuples(st.just("PUT"), st.just("/bots"), st.lists(definitions, max_size=3) | json_values),
    st.tuples(st.just("PATCH"), st.just("/bots/openai"), definitions.map(lambda d: {k: v for k, v in d.items() if k != "name"}) | json_values),
    st.tuples(st.just("PUT"), st.just("/bot-host/status"), st.lists(reports, max_size=3) | json_values),
    st.tuples(st.just("POST"), st.just("/bots/openai/chat/simple"), st.fixed_dictionaries({"user": json_values, "message": json_values})),
)


@pytest.fixture(scope="module")
def fuzzed(store_url: str) -> Iterator[TestClient]:
    with unused_port() as port, TestClient(create_app(settings(store_url, bots_port=port)), headers=AUTH) as client:
        yield client


@FUZZ
@given(request=fuzzed_bodies)
def test_the_bot_routes_never_answer_500(fuzzed: TestClient, request: tuple[str, str, Any]) -> None:
    """Any body to the bot routes is taken or refused with a 4xx (a chat with no bot host aside: 503), never a server error."""
    method, path, body = request
    content = json.dumps(body, allow_nan=True)
    response = fuzzed.request(method, path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code < 500 or (path.endswith("/chat/simple") and response.status_code == 503), (method, path, content[:300], response.text[:300])


# --- history -------------------------------------------------------------------------------------------------


def test_clearing_a_users_history_forgets_their_threads_with_every_bot(api: TestClient) -> None:
    """DELETE /history/{user} also deletes the user's thread with every bot (state owner=<bot>, key=<user>); other users', rooms' and services' state stays."""
    put(api, {"name": "helper"})
    kept = [("helper", "bob"), ("helper", "#general"), ("thermometer1", "alice")]
    for owner, key in [("helper", "alice"), ("openai", "Alice"), *kept]:
        ok(api.put(f"/state/{owner}/{quote(key, safe='')}", json={"value": {"thread": [owner, key]}}))
    ok(api.delete("/history/ALICE"))
    for owner, key in [("helper", "alice"), ("openai", "alice")]:
        assert ok(api.get(f"/state/{owner}/{key}")) == {"value": None}
    for owner, key in kept:
        assert ok(api.get(f"/state/{owner}/{quote(key, safe='')}")) == {"value": {"thread": [owner, key]}}


# --- HTTP chat through the API to the bot host -----------------------------------------------------------------


def event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


DONE = b"data: [DONE]\n\n"
FIRST, SECOND, LAST = event({"content": "Hel", "done": False}), event({"content": "lo!", "done": False}), event({"content": "", "done": True})


@dataclass
class FakeHost:
    """The bot host's HTTP chat, standing in: records what it is asked; streams its first
    event, then the rest once `go` is set; notes a reader that went away (`gone`)."""

    asked: list[tuple[str, str | None, Any]] = field(default_factory=list)
    go: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, sock: socket.socket) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/bots/{name}/chat", self.chat)
        app.router.add_post("/bots/{name}/chat/simple", self.simple)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        return runner

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.asked.append((request.path, request.headers.get("Authorization"), await request.json()))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            await response.write(FIRST)
            await self.go.wait()
            for chunk in (SECOND, LAST, DONE):
                await response.write(chunk)
        except (asyncio.CancelledError, ConnectionResetError):
            self.gone.set()
            raise
        return response

    async def simple(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.asked.append((request.path, request.headers.get("Authorization"), body))
        if body["user"] == "mallory":
            return web.json_response({"error": "not for you"}, status=403)
        if body["user"] == "hasty":
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "12"})
        return web.json_response({"content": "Hello!", "bot": request.match_info["name"], "user": body["user"]})


@pytest.fixture
def host_socket() -> Iterator[socket.socket]:
    """A loopback port for the bot host: bound, so nothing else takes it; refusing until the host listens."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        yield sock


@pytest.fixture
def proxied(store_url: str, host_socket: socket.socket) -> Iterator[tuple[TestClient, FakeHost]]:
    """The API (TestClient) with the bot host standing in on a loopback port, in the API's loop."""
    app = create_app(settings(store_url, bots_port=host_socket.getsockname()[1]))
    host = FakeHost()
    with TestClient(app, headers=AUTH) as api:
        assert api.portal is not None
        runner = api.portal.call(host.start, host_socket)
        try:
            put(api, {"name": "Helper", "timeout": 5})
            yield api, host
        finally:
            api.portal.call(host.go.set)
            api.portal.call(runner.cleanup)


def read_until(chunks: Iterator[bytes], wanted: bytes) -> bytes:
    """What the stream gives until `wanted` has come whole (a chunk may be a part of it)."""
    got = b""
    while len(got) < len(wanted):
        got += next(chunks)
    return got


@pytest.mark.timeout(30)
def test_a_streamed_chat_passes_through_chunk_by_chunk(proxied: tuple[TestClient, FakeHost]) -> None:
    """POST /bots/{name}/chat is the host's event stream: each event reaches the reader while the host still holds the rest; the host is asked with the API token."""
    api, host = proxied
    assert api.portal is not None
    with api.stream("POST", "/bots/helper/chat", json={"user": "alice", "message": "hi"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = response.iter_raw()
        assert read_until(chunks, FIRST) == FIRST  # the host is waiting: nothing held it back
        api.portal.call(host.go.set)
        assert b"".join(chunks) == SECOND + LAST + DONE
    assert host.asked == [("/bots/Helper/chat", f"Bearer {TOKEN}", {"user": "alice", "message": "hi"})]


@pytest.mark.timeout(30)
def test_a_reader_going_away_ends_the_hosts_stream(proxied: tuple[TestClient, FakeHost]) -> None:
    """A reader who leaves mid-answer closes the connection to the host (which stops generating)."""
    api, host = proxied
    assert api.portal is not None
    with api.stream("POST", "/bots/helper/chat", json={"user": "alice", "message": "hi"}) as response:
        assert read_until(response.iter_raw(), FIRST) == FIRST

    async def host_sees_it() -> None:
        await asyncio.wait_for(host.gone.wait(), 10)

    api.portal.call(host_sees_it)


def test_a_simple_chat_and_the_hosts_refusals_pass_through(proxied: tuple[TestClient, FakeHost]) -> None:
    """POST /bots/{name}/chat/simple is the host's JSON answer, its refusals too (status, body, Retry-After)."""
    api, host = proxied
    assert ok(api.post("/bots/helper/chat/simple", json={"user": "alice", "message": "hi"})) == {"content": "Hello!", "bot": "Helper", "user": "alice"}
    refusal = api.post("/bots/helper/chat/simple", json={"user": "mallory", "message": "hi"})
    assert (refusal.status_code, refusal.json()) == (403, {"error": "not for you"})
    limited = api.post("/bots/helper/chat/simple", json={"user": "hasty", "message": "hi"})
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "12")
    assert [path for path, _, _ in host.asked] == ["/bots/Helper/chat/simple"] * 3


def test_chat_with_an_unknown_bot_is_404_and_a_bad_body_422(proxied: tuple[TestClient, FakeHost]) -> None:
    """The API answers for a bot it has no definition of, and for a body that is no chat turn, without asking the host."""
    api, host = proxied
    for route in ("chat", "chat/simple"):
        refused(api.post(f"/bots/nobody/{route}", json={"user": "alice", "message": "hi"}), 404, "no bot named 'nobody'")
        for body in ({"user": "alice"}, {"user": "two words", "message": "hi"}, {"user": "alice", "message": ""}):
            assert api.post(f"/bots/helper/{route}", json=body).status_code == 422
    assert host.asked == []


def test_chat_without_a_bot_host_is_503(store_url: str) -> None:
    """With no bot host listening, chat answers 503 "the bot host is not running"."""
    with unused_port() as port, TestClient(create_app(settings(store_url, bots_port=port)), headers=AUTH) as api:
        put(api, {"name": "helper"})
        for route in ("chat", "chat/simple"):
            refused(api.post(f"/bots/helper/{route}", json={"user": "alice", "message": "hi"}), 503, "the bot host is not running")


# --- the ApiClient's bot methods, against the API served on a loopback port ---------------------------------------


@pytest.fixture
async def served(store_url: str, host_socket: socket.socket) -> AsyncIterator[tuple[ApiClient, FakeHost]]:
    """The API served by uvicorn on a loopback port, the bot host standing in beside it, and an ApiClient."""
    host = FakeHost()
    host.go.set()
    runner = await host.start(host_socket)
    app = create_app(settings(store_url, bots_port=host_socket.getsockname()[1]))
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=0, log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started or serving.done()

    await eventually(started, bool, "the API started")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with ApiClient(f"http://{HOST}:{port}", TOKEN) as api:
            yield api, host
    finally:
        server.should_exit = True
        await serving
        await runner.cleanup()


async def test_the_api_client_speaks_the_bot_routes(served: tuple[ApiClient, FakeHost]) -> None:
    """put_bots, bots, bot, patch_bot, bot_status, report_bot_status, bot_definitions, delete_bot, bot_chat and bot_chat_simple do what the routes do."""
    api, host = served
    (written,) = await api.put_bots([{"name": "helper", "api_key": SECRET, "system": "You help."}])
    assert written == {"name": "helper", "id": written["id"], "created": True}
    assert [b["name"] for b in await api.bots()] == ["helper", "openai"]
    found = await api.bot("helper")
    assert found is not None and found["has_api_key"] is True and "api_key" not in found
    assert await api.bot("nobody") is None
    assert (await api.patch_bot("helper", {"model": "llama3.2"}))["version"] == 2
    with pytest.raises(ApiRejected) as refusal:
        await api.put_bots([{"name": "helper"}], replace=False)
    assert refusal.value.status == 409
    with pytest.raises(ApiRejected) as invalid:
        await api.put_bots([{"name": "helper", "timeout": 0}])
    assert invalid.value.status == 422 and "greater than 0" in invalid.value.detail
    assert {d["name"]: d["api_key"] for d in await api.bot_definitions()} == {"helper": SECRET, "openai": None}
    await api.report_bot_status([{"name": "helper", "online": True, "requests": 3}])
    status = await api.bot_status("helper")
    assert status is not None and status["online"] is True and status["requests"] == 3
    assert await api.bot_status("nobody") is None
    assert [e async for e in api.bot_chat("helper", "alice", "hi")] == [
        {"content": "Hel", "done": False},
        {"content": "lo!", "done": False},
        {"content": "", "done": True},
    ]
    assert await api.bot_chat_simple("helper", "alice", "hi") == {"content": "Hello!", "bot": "helper", "user": "alice"}
    with pytest.raises(ApiRejected) as forbidden:
        await api.bot_chat_simple("helper", "mallory", "hi")
    assert forbidden.value.status == 403
    with pytest.raises(ApiRejected) as unknown:
        _ = [e async for e in api.bot_chat("nobody", "alice", "hi")]
    assert unknown.value.status == 404
    assert await api.delete_bot("helper") is True
    assert await api.delete_bot("helper") is False
    assert [path for path, _, _ in host.asked] == ["/bots/helper/chat", "/bots/helper/chat/simple", "/bots/helper/chat/simple"]


async def test_the_api_client_says_when_there_is_no_bot_host(store_url: str) -> None:
    """Chat through the ApiClient with no bot host running raises StoreUnavailable saying so."""
    with unused_port() as port:
        app = create_app(settings(store_url, bots_port=port))
        server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=0, log_config=None, access_log=False))
        serving = asyncio.create_task(server.serve())

        async def started() -> bool:
            return server.started or serving.done()

        await eventually(started, bool, "the API started")
        try:
            async with ApiClient(f"http://{HOST}:{server.servers[0].sockets[0].getsockname()[1]}", TOKEN) as api:
                await api.put_bots([{"name": "helper"}])
                with pytest.raises(StoreUnavailable, match="the bot host is not running"):
                    _ = [e async for e in api.bot_chat("helper", "alice", "hi")]
                with pytest.raises(StoreUnavailable, match="the bot host is not running"):
                    await api.bot_chat_simple("helper", "alice", "hi")
        finally:
            server.should_exit = True
            await serving
