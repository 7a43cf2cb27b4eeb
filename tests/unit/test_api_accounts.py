"""Accounts in the message API, in-process through FastAPI's TestClient over the real
embedded store (a fresh database per test): creating and looking up accounts, the
login check (guests, passwords, session tokens), the throttle and its lockouts,
changing passwords, deleting, revoking tokens, secrets kept out of answers and logs,
names that are the same in any case (mail, history, subscriptions, state, and the
migration of data stored before), and the ApiClient's methods for all of it."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import uvicorn
from argon2 import Type, extract_parameters
from fastapi import FastAPI
from fastapi.testclient import TestClient
from motor.motor_asyncio import AsyncIOMotorClient

from chatnet.accounts import (
    ARGON2_MEMORY_KIB,
    ARGON2_PARALLELISM,
    ARGON2_TIME_COST,
    Accounts,
    Granted,
    Hasher,
    Refused,
    Throttle,
    address_counter,
    retry_after,
)
from chatnet.accounts_store import AccountStore
from chatnet.api import create_app, loggable
from chatnet.api_client import ApiClient
from chatnet.config import Settings
from chatnet.errors import ApiRejected
from chatnet.message import Message
from chatnet.protocol import Kind, LoginReason, utcnow
from chatnet.store import Store, connect

TOKEN = "unit-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ATTEMPTS = 3
SECRET = "correct horse battery"
OTHER = "tr0ub4dor&3 staple"
HERE, THERE, ELSEWHERE = "192.0.2.10", "198.51.100.20", "203.0.113.30"


def settings_for(store_url: str, db: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"login_attempts": ATTEMPTS} | overrides
    return Settings(_env_file=None, mongo_url=store_url, mongo_db=db or f"u{uuid.uuid4().hex[:12]}", api_token=TOKEN, **values)


@contextmanager
def running(settings: Settings) -> Iterator[TestClient]:
    """The app with its lifespan running (store opened, migrations done), sending the token."""
    with TestClient(create_app(settings), headers=AUTH) as client:
        yield client


@pytest.fixture
def api(store_url: str) -> Iterator[TestClient]:
    with running(settings_for(store_url)) as client:
        yield client


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def create(api: TestClient, name: str, password: str | None = SECRET, kind: str = "person") -> Any:
    body: dict[str, Any] = {"name": name, "kind": kind} | ({} if password is None else {"password": password})
    return api.post("/accounts", json=body)


def login(api: TestClient, name: str, source: str = HERE, **body: Any) -> Any:
    return api.post(f"/accounts/{name}/login", json={"source": source, **body})


def refused(response: Any, reason: LoginReason) -> Any:
    """The answer is a refusal for that reason (401, or 429 when locked)."""
    assert response.status_code == (429 if reason is LoginReason.LOCKED else 401), response.text
    answer = response.json()
    assert answer["reason"] == reason, answer
    return answer


def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll until `condition()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def chat(sender: str, destination: str, text: str, seconds_ago: float = 0) -> dict[str, Any]:
    timestamp = utcnow() - timedelta(seconds=seconds_ago)
    return Message(sender=sender, destination=destination, message=text, timestamp=timestamp).model_dump(mode="json")


def texts(page: dict[str, Any]) -> list[str]:
    return [m["message"] for m in page["messages"]]


# --- auth and validation -------------------------------------------------------------------


ACCOUNT_ROUTES = [
    ("POST", "/accounts"),
    ("GET", "/accounts/alice"),
    ("DELETE", "/accounts/alice"),
    ("POST", "/accounts/alice/login"),
    ("PUT", "/accounts/alice/password"),
    ("DELETE", "/accounts/alice/tokens/abc"),
]


@pytest.mark.parametrize(("method", "path"), ACCOUNT_ROUTES)
def test_account_routes_need_the_token(store_url: str, method: str, path: str) -> None:
    """Every account route answers 401 without the bearer token (the admin and service token)."""
    with TestClient(create_app(settings_for(store_url))) as anonymous:
        response = anonymous.request(method, path, json={"name": "alice", "password": SECRET, "source": HERE})
        assert response.status_code == 401 and "reason" not in response.json()


def test_create_and_look_up_an_account(api: TestClient) -> None:
    """An account keeps its owner's spelling and is found under any case; an unknown name is 404."""
    assert ok(create(api, "Alice"), 201) == {"name": "Alice", "kind": "person"}
    for spelling in ("Alice", "alice", "ALICE"):
        assert ok(api.get(f"/accounts/{spelling}")) == {"name": "Alice", "kind": "person"}
    assert api.get("/accounts/nobody").status_code == 404


def test_the_account_names_and_kinds_are_listed(api: TestClient) -> None:
    """GET /accounts: every account's name (lower case) and kind, for a chat server to know whom not to admit unchecked."""
    assert api.get("/accounts").json() == {"kinds": {}}
    api.post("/accounts", json={"name": "Alice", "password": "correct horse"})
    api.post("/accounts", json={"name": "helper", "kind": "bot"})
    assert api.get("/accounts").json() == {"kinds": {"alice": "person", "helper": "bot"}}


def test_a_name_is_taken_in_any_case(api: TestClient) -> None:
    """Registering a name held in any case answers 409 saying it is taken, for people and bots."""
    ok(create(api, "Alice"), 201)
    for name, kind in (("alice", "person"), ("ALICE", "bot")):
        response = create(api, name, None if kind == "bot" else OTHER, kind)
        assert response.status_code == 409 and "taken" in response.json()["detail"]
    assert ok(api.get("/accounts/alice"))["name"] == "Alice"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"name": "alice", "password": "x" * 7}, "8-128 characters"),
        ({"name": "alice", "password": "x" * 129}, "8-128 characters"),
        ({"name": "alice"}, "needs a password"),
        ({"name": "alice", "password": None}, "needs a password"),
        ({"name": "openai", "kind": "bot", "password": "x" * 20}, "no password"),
        ({"name": "no spaces", "password": "x" * 20}, "pattern"),
        ({"name": "x" * 33, "password": "x" * 20}, "pattern"),
        ({"name": "alice", "password": "x" * 20, "kind": "admin"}, "person"),
    ],
)
def test_bad_accounts_get_422_without_the_password(api: TestClient, body: dict[str, Any], reason: str) -> None:
    """A password outside 8-128 characters, a person without one, a bot with one, a bad
    name or kind: 422 saying why, and the password is not echoed."""
    response = api.post("/accounts", json=body)
    assert response.status_code == 422, response.text
    assert reason in response.text
    if body.get("password"):
        assert body["password"] not in response.text


def test_the_password_bounds_are_accepted(api: TestClient) -> None:
    """Passwords of exactly 8 and 128 characters are taken, and log in."""
    for name, password in (("short", "8" * 8), ("long", "é" * 128)):
        ok(create(api, name, password), 201)
        assert ok(login(api, name, password=password))["registered"] is True


def test_a_bot_account_has_no_password_and_its_name_is_reserved(api: TestClient) -> None:
    """A bot account is made without a password; logging in by name or password is
    refused as reserved, and it has no password to change."""
    assert ok(create(api, "OpenAI", None, "bot"), 201) == {"name": "OpenAI", "kind": "bot"}
    assert ok(api.get("/accounts/openai")) == {"name": "OpenAI", "kind": "bot"}
    assert "bot" in refused(login(api, "openai"), LoginReason.RESERVED)["detail"]
    refused(login(api, "openai", password=SECRET), LoginReason.RESERVED)
    refused(api.put("/accounts/openai/password", json={"old": SECRET, "new": OTHER}), LoginReason.RESERVED)


# --- the login check ------------------------------------------------------------------------


def test_a_guest_logs_in_under_a_free_name_and_it_is_recorded(api: TestClient) -> None:
    """A name nobody registered is a guest's, as spelled, with no token even when one
    is asked for; from then on mail to it (in any case) is not to someone unknown."""
    assert ok(login(api, "Carol", want_token=True)) == {"name": "Carol", "kind": "guest", "registered": False}
    stored = ok(api.post("/mail", json={"messages": [chat("bob", "carol", "hi"), chat("bob", "Dave", "hi")]}), 201)
    assert stored["unknown"] == ["Dave"]


def test_a_window_of_guest_logins_is_one_request(api: TestClient) -> None:
    """POST /logins/guests: the names no account holds come back as given and are
    recorded as used (mail to them is not to someone unknown); an account's name and a
    bot's are left out, their logins checked one by one; bad input is a 422."""
    ok(create(api, "Alice"), 201)
    ok(create(api, "OpenAI", None, "bot"), 201)
    answer = ok(api.post("/logins/guests", json={"names": ["Carol", "alice", "Dave", "OPENAI", "carol"]}))
    assert answer == {"guests": ["Carol", "Dave"]}  # one per name in any case, as first spelled
    stored = ok(api.post("/mail", json={"messages": [chat("bob", "CAROL", "hi"), chat("bob", "dave", "hi"), chat("bob", "Erin", "hi")]}), 201)
    assert stored["unknown"] == ["Erin"]
    refused(login(api, "alice"), LoginReason.PASSWORD_REQUIRED)  # the account's own check is unchanged
    for body in ({"names": []}, {"names": ["not a name"]}, {"names": ["x"] * 1001}, {}):
        assert api.post("/logins/guests", json=body).status_code == 422, body
    assert api.post("/logins/guests", json={"names": ["zed"]}, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_login_with_a_password(api: TestClient) -> None:
    """A registered name needs its password: none is password_required, a wrong one
    wrong_password, the right one lets in under the registered spelling, from any case."""
    ok(create(api, "Alice"), 201)
    refused(login(api, "alice"), LoginReason.PASSWORD_REQUIRED)
    refused(login(api, "alice", password=OTHER), LoginReason.WRONG_PASSWORD)
    assert ok(login(api, "ALICE", password=SECRET)) == {"name": "Alice", "kind": "person", "registered": True}


def test_login_with_a_session_token(api: TestClient) -> None:
    """want_token gives a session token that logs the account in without a password,
    from any address and case; a token of another account, or a made-up one, does not."""
    ok(create(api, "Alice"), 201)
    ok(create(api, "Bob"), 201)
    token = ok(login(api, "alice", password=SECRET, want_token=True))["token"]
    assert isinstance(token, str) and len(token) >= 43
    assert ok(login(api, "ALICE", ELSEWHERE, token=token)) == {"name": "Alice", "kind": "person", "registered": True}
    again = ok(login(api, "alice", token=token, want_token=True))["token"]
    assert again != token
    assert "not valid" in refused(login(api, "bob", token=token), LoginReason.PASSWORD_REQUIRED)["detail"]
    refused(login(api, "alice", token="made-up"), LoginReason.PASSWORD_REQUIRED)
    assert ok(login(api, "alice", token="made-up", password=SECRET))["registered"] is True  # the password still counts


def test_over_long_offers_are_refusals_not_bad_requests(api: TestClient) -> None:
    """A login needs a source address (422 without one), but a password or token longer
    than any can be is an answer, never a 422 a caller might take for "no account":
    wrong_password (counted), password_required for the token."""
    ok(create(api, "Alice"), 201)
    assert api.post("/accounts/alice/login", json={"password": SECRET}).status_code == 422
    refused(login(api, "alice", password="x" * 5000), LoginReason.WRONG_PASSWORD)
    refused(login(api, "alice", token="t" * 5000), LoginReason.PASSWORD_REQUIRED)
    refused(api.put("/accounts/alice/password", json={"old": "x" * 5000, "new": OTHER}), LoginReason.WRONG_PASSWORD)
    refused(login(api, "alice", password=OTHER), LoginReason.WRONG_PASSWORD)
    refused(login(api, "alice", password=SECRET), LoginReason.LOCKED)  # the long guesses counted too


# --- the throttle ----------------------------------------------------------------------------


def test_a_name_is_locked_after_too_many_wrong_passwords(api: TestClient) -> None:
    """LOGIN_ATTEMPTS wrong passwords for one name, from any addresses, lock it: then
    even the right password is refused with 429 and retry_after, from every address."""
    ok(create(api, "Alice"), 201)
    for source in (HERE, THERE, ELSEWHERE):
        refused(login(api, "alice", source, password=OTHER), LoginReason.WRONG_PASSWORD)
    for source in (HERE, "2001:db8::1"):
        response = login(api, "ALICE", source, password=SECRET)
        answer = refused(response, LoginReason.LOCKED)
        assert 0 < answer["retry_after"] <= 600 and response.headers["Retry-After"] == str(answer["retry_after"])
    refused(login(api, "alice"), LoginReason.LOCKED)  # said at once, before the password prompt


def test_an_address_is_locked_across_names(api: TestClient) -> None:
    """LOGIN_ATTEMPTS wrong passwords from one address, each for another name, lock that
    address for every account; the names themselves, and other addresses, are not locked."""
    for name in ("alice", "bob", "carol", "dave"):
        ok(create(api, name), 201)
    for name in ("alice", "bob", "carol"):
        refused(login(api, name, HERE, password=OTHER), LoginReason.WRONG_PASSWORD)
    refused(login(api, "dave", HERE, password=SECRET), LoginReason.LOCKED)
    assert ok(login(api, "dave", THERE, password=SECRET))["registered"] is True
    assert ok(login(api, "alice", THERE, password=SECRET))["registered"] is True
    assert ok(login(api, "newcomer", HERE))["kind"] == "guest"  # guests need no password to check


def test_a_right_password_clears_the_names_count(api: TestClient) -> None:
    """A successful login starts the name's count afresh: wrong, wrong, right, wrong,
    wrong is not a lockout; a third wrong one in a row is."""
    ok(create(api, "Alice"), 201)
    sources = iter(f"192.0.2.{i}" for i in range(1, 100))
    for _ in range(ATTEMPTS - 1):
        refused(login(api, "alice", next(sources), password=OTHER), LoginReason.WRONG_PASSWORD)
    ok(login(api, "alice", next(sources), password=SECRET))
    for _ in range(ATTEMPTS - 1):
        refused(login(api, "alice", next(sources), password=OTHER), LoginReason.WRONG_PASSWORD)
    refused(login(api, "alice", next(sources), password=OTHER), LoginReason.WRONG_PASSWORD)
    refused(login(api, "alice", next(sources), password=SECRET), LoginReason.LOCKED)


def test_right_passwords_from_one_address_do_not_lock_it(api: TestClient) -> None:
    """Many right logins from one address (people behind one router) never count against it."""
    for name in ("alice", "bob", "carol", "dave"):
        ok(create(api, name), 201)
        ok(login(api, name, HERE, password=SECRET))
    refused(login(api, "alice", HERE, password=OTHER), LoginReason.WRONG_PASSWORD)
    assert ok(login(api, "bob", HERE, password=SECRET))["registered"] is True


def test_a_lockout_ends_after_login_lockout(store_url: str) -> None:
    """A locked name may try again once LOGIN_LOCKOUT has passed, with a fresh count."""
    with running(settings_for(store_url, login_lockout=1.0)) as api:
        ok(create(api, "Alice"), 201)
        for _ in range(ATTEMPTS):
            refused(login(api, "alice", password=OTHER), LoginReason.WRONG_PASSWORD)
        assert refused(login(api, "alice"), LoginReason.LOCKED)["retry_after"] == 1
        until(lambda: login(api, "alice").json()["reason"] != LoginReason.LOCKED, "the lockout to end")
        refused(login(api, "alice"), LoginReason.PASSWORD_REQUIRED)
        for _ in range(ATTEMPTS - 1):
            refused(login(api, "alice", password=OTHER), LoginReason.WRONG_PASSWORD)
        assert ok(login(api, "alice", password=SECRET))["registered"] is True


def test_a_wrong_old_password_counts_against_the_name(api: TestClient) -> None:
    """Guessing through a password change counts like a login: the name gets locked."""
    ok(create(api, "Alice"), 201)
    for _ in range(ATTEMPTS):
        refused(api.put("/accounts/alice/password", json={"old": OTHER, "new": "n" * 10}), LoginReason.WRONG_PASSWORD)
    refused(api.put("/accounts/alice/password", json={"old": SECRET, "new": "n" * 10}), LoginReason.LOCKED)
    refused(login(api, "alice", password=SECRET), LoginReason.LOCKED)


class CountingHasher(Hasher):
    """The real hasher, counting its verifications."""

    def __init__(self) -> None:
        super().__init__()
        self.verified = 0

    async def verify(self, hashed: str, password: str) -> bool:
        self.verified += 1
        return await super().verify(hashed, password)


async def test_a_burst_of_guesses_checks_at_most_login_attempts(store_url: str) -> None:
    """Wrong passwords sent all at once are counted before any is checked: at most
    LOGIN_ATTEMPTS are verified, the rest are refused as locked."""
    store = Store(connect(store_url), f"u{uuid.uuid4().hex[:12]}")
    try:
        await store.ensure_indexes()
        hasher = CountingHasher()
        accounts = Accounts(store, Throttle(ATTEMPTS, 600, 600), 30, hasher)
        await accounts.create("alice", Kind.PERSON, SECRET)
        answers = await asyncio.gather(*(accounts.login("alice", f"192.0.2.{i}", password=OTHER) for i in range(12)))
        reasons = [a.reason for a in answers if isinstance(a, Refused)]
        assert len(reasons) == 12 and set(reasons) <= {LoginReason.WRONG_PASSWORD, LoginReason.LOCKED}
        assert hasher.verified <= ATTEMPTS and reasons.count(LoginReason.WRONG_PASSWORD) == hasher.verified
        assert isinstance(await accounts.login("alice", "192.0.2.99", password=SECRET), Refused)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("192.0.2.1", "::ffff:192.0.2.1", True),
        ("192.0.2.1", "192.0.2.2", False),
        ("2001:db8::1", "2001:db8::ffff:2", True),  # one /64
        ("2001:db8::1", "2001:db8:0:1::1", False),
        ("unix", "UNIX", True),  # not an address: kept as given
    ],
)
def test_addresses_are_counted_by_what_one_holds(a: str, b: str, same: bool) -> None:
    """An IPv4 address counts as itself (also mapped into IPv6), an IPv6 one by its /64."""
    assert (address_counter(a) == address_counter(b)) is same


def test_retry_after_is_whole_seconds_of_the_last_lock() -> None:
    """retry_after rounds the longest lock still holding up to whole seconds (at least 1); none holding: None."""
    now = utcnow()
    assert retry_after([now + timedelta(seconds=1.2), now + timedelta(seconds=0.3)], now) == 2
    assert retry_after([now + timedelta(milliseconds=1)], now) == 1
    assert retry_after([now - timedelta(seconds=1)], now) is None
    assert retry_after([], now) is None


# --- changing passwords, deleting, revoking ---------------------------------------------------


def test_changing_the_password_revokes_every_token(api: TestClient) -> None:
    """A password change needs the old one, checks the new one's length, revokes every
    session token of the account, and only the new password works after it."""
    ok(create(api, "Alice"), 201)
    tokens = [ok(login(api, "alice", password=SECRET, want_token=True))["token"] for _ in range(2)]
    refused(api.put("/accounts/alice/password", json={"old": OTHER, "new": "n" * 10}), LoginReason.WRONG_PASSWORD)
    assert api.put("/accounts/alice/password", json={"old": SECRET, "new": "short"}).status_code == 422
    assert ok(api.put("/accounts/ALICE/password", json={"old": SECRET, "new": OTHER})) == {"changed": True, "revoked": 2}
    for token in tokens:
        refused(login(api, "alice", token=token), LoginReason.PASSWORD_REQUIRED)
    refused(login(api, "alice", THERE, password=SECRET), LoginReason.WRONG_PASSWORD)
    assert ok(login(api, "alice", password=OTHER))["registered"] is True
    assert api.put("/accounts/nobody/password", json={"old": SECRET, "new": OTHER}).status_code == 404


def test_deleting_an_account(api: TestClient) -> None:
    """A deleted account takes its tokens with it; its name is a guest's again and may be registered anew."""
    ok(create(api, "Alice"), 201)
    token = ok(login(api, "alice", password=SECRET, want_token=True))["token"]
    assert ok(api.delete("/accounts/alice")) == {"deleted": True}
    assert ok(api.delete("/accounts/alice")) == {"deleted": False}
    assert api.get("/accounts/alice").status_code == 404
    assert ok(login(api, "alice", token=token))["kind"] == "guest"
    ok(create(api, "aLiCe", OTHER), 201)
    refused(login(api, "alice", token=token), LoginReason.PASSWORD_REQUIRED)


def test_revoking_one_token(api: TestClient) -> None:
    """Revoking a token ends that one only, once, and only under its own account."""
    ok(create(api, "Alice"), 201)
    ok(create(api, "Bob"), 201)
    first, second = (ok(login(api, "alice", password=SECRET, want_token=True))["token"] for _ in range(2))
    assert ok(api.delete(f"/accounts/bob/tokens/{first}")) == {"revoked": False}
    assert ok(api.delete(f"/accounts/Alice/tokens/{first}")) == {"revoked": True}
    assert ok(api.delete(f"/accounts/alice/tokens/{first}")) == {"revoked": False}
    refused(login(api, "alice", token=first), LoginReason.PASSWORD_REQUIRED)
    assert ok(login(api, "alice", token=second))["registered"] is True


def test_secrets_are_never_answered_nor_logged(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """Through every account route, at DEBUG: no password appears in any answer or log
    record, and a token only in the answer that issued it (the test's own HTTP client,
    which logs the URLs it requests, is left out: that is not the API)."""
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []

    def call(method: str, path: str, body: Any = None) -> Any:
        response = api.request(method, path, json=body)
        answers.append(response.text)
        return response

    short, long = "s3cr!t7", "L" * 129
    call("POST", "/accounts", {"name": "alice", "password": short})
    call("POST", "/accounts", {"name": "alice", "password": long})
    call("POST", "/accounts", {"name": "alice", "password": SECRET})
    call("POST", "/accounts/alice/login", {"source": HERE, "password": OTHER})
    issued = api.post("/accounts/alice/login", json={"source": HERE, "password": SECRET, "want_token": True})
    token = issued.json()["token"]
    call("POST", "/accounts/alice/login", {"source": HERE, "token": token})
    call("POST", "/accounts/alice/login", {"source": HERE, "token": "t" * 129})
    call("PUT", "/accounts/alice/password", {"old": SECRET, "new": short})
    call("PUT", "/accounts/alice/password", {"old": SECRET, "new": OTHER})
    call("DELETE", f"/accounts/alice/tokens/{token}")
    assert issued.text.count(token) == 1 and SECRET not in issued.text
    for secret in (SECRET, OTHER, short, long, token, "t" * 129):
        assert not [a for a in answers if secret in a], secret
        assert not [r for r in caplog.records if not r.name.startswith("httpx") and secret in f"{r.getMessage()} {r.exc_text or ''}"], secret
    assert loggable(f"/accounts/alice/tokens/{token}") == "/accounts/alice/tokens/..."


# --- names in any case ------------------------------------------------------------------------


def test_mail_and_history_are_the_same_in_any_case(api: TestClient) -> None:
    """Mail stored for "Bob" is bob's (paged, counted, acknowledged and capped under any
    spelling, shown as sent); history between Alice and bob is one conversation."""
    hi = chat("Alice", "Bob", "hi", seconds_ago=3)
    ok(api.post("/mail", json={"messages": [hi, chat("alice", "BOB", "again", seconds_ago=2)]}), 201)
    page = ok(api.get("/mail/bob"))
    assert texts(page) == ["hi", "again"] and page["total"] == 2
    assert page["messages"][0]["destination"] == "Bob" and page["messages"][0]["sender"] == "Alice"
    ok(api.post("/history", json={"messages": [chat("bob", "alice", "reply", seconds_ago=1)]}), 201)
    for user, peer in (("alice", "bob"), ("BOB", "Alice")):
        assert texts(ok(api.get(f"/history/{user}/{peer}"))) == ["reply", "again", "hi"]
    assert ok(api.post("/mail/BoB/ack", json={"ids": [hi["id"]]})) == {"acknowledged": 1}
    assert texts(ok(api.get("/mail/BOB"))) == ["again"]
    readings = [chat("thermo", spelling, f"{i} C", seconds_ago=1 - i / 10) for i, spelling in enumerate(("Carol", "carol", "CAROL"))]
    ok(api.post("/mail", json={"messages": readings, "keep_latest": 1}), 201)
    assert texts(ok(api.get("/mail/carol"))) == ["2 C"]
    assert ok(api.delete("/history/ALICE")) == {"deleted": 2}  # "reply" and "hi"; "again" is still pending
    assert texts(ok(api.get("/history/alice/bob"))) == ["again"]


def test_subscriptions_and_state_are_the_same_in_any_case(api: TestClient) -> None:
    """A subscription is one under any spelling of the service and the user (the user
    shown as first subscribed); bot state for "Bob" is bob's."""
    assert ok(api.put("/subscriptions/Thermo/Bob"))["created"] is True
    assert ok(api.put("/subscriptions/thermo/bob"))["created"] is False
    assert ok(api.get("/subscriptions/THERMO")) == {"service": "THERMO", "users": ["Bob"]}
    assert ok(api.delete("/subscriptions/thermo/BOB")) == {"removed": True}
    assert ok(api.get("/subscriptions/thermo"))["users"] == []
    ok(api.put("/state/OpenAI/Bob", json={"value": {"thread": ["hi"]}}))
    assert ok(api.get("/state/openai/bob")) == {"value": {"thread": ["hi"]}}
    assert ok(api.delete("/state/openai/BOB")) == {"deleted": True}


def test_mail_says_which_destinations_nobody_has_logged_in_as(api: TestClient) -> None:
    """POST /mail's `unknown` lists, once each and as first spelled, the destinations no
    guest or account has used in any case (an account counts as used from its creation)."""
    ok(login(api, "carol"))
    ok(create(api, "Dave"), 201)
    ok(create(api, "openai", None, "bot"), 201)
    destinations = ["CAROL", "dave", "erin", "Erin", "openai", "Frank"]
    stored = ok(api.post("/mail", json={"messages": [chat("alice", d, "hi") for d in destinations]}), 201)
    assert stored["stored"] == 6 and stored["unknown"] == ["erin", "Frank"]
    ok(login(api, "ERIN"))
    assert ok(api.post("/mail", json={"messages": [chat("alice", "erin", "hi")]}), 201)["unknown"] == []


def test_data_stored_in_mixed_case_is_migrated_at_start(store_url: str) -> None:
    """Mail, history buckets, subscriptions and state written as before (names as
    spelled, no keys) are found under lower-case names once the API has started; the
    names in them count as used; the old mailbox indexes are gone and its mail is in bundles."""
    settings = settings_for(store_url)
    asyncio.run(write_old_layout(store_url, settings.mongo_db))
    with running(settings) as api:
        assert texts(ok(api.get("/mail/bob"))) == ["kept for Bob"]
        assert texts(ok(api.get("/history/BOB/alice"))) == ["kept for Bob", "delivered"]
        assert ok(api.get("/subscriptions/thermo"))["users"] == ["bob"]  # two spellings met: one is kept
        assert ok(api.get("/state/openai/bob")) == {"value": "newer"}
        stored = ok(api.post("/mail", json={"messages": [chat("x", "alice", "."), chat("x", "carol", "."), chat("x", "zed", ".")]}), 201)
        assert stored["unknown"] == ["zed"]
        assert api.portal is not None
        # Those on names as spelled are gone; the mail moved into bundles, with indexes of their own.
        assert api.portal.call(index_fields, api.app, "mailbox") == [["_id"]]
        expected = [["_id"], ["destination_key"], ["expires_at"], ["senders", "destination_key"]]
        assert api.portal.call(index_fields, api.app, "mail") == expected
    with running(settings) as api:  # a second start finds it done
        assert texts(ok(api.get("/mail/BOB"))) == ["kept for Bob"]


async def index_fields(app: FastAPI, collection: str) -> list[list[str]]:
    store: Store = app.state.store
    return sorted([list(index["key"]) async for index in store.db[collection].list_indexes()])


async def write_old_layout(url: str, db_name: str) -> None:
    """What the store held before names were folded: spellings only."""
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(url, tz_aware=True)
    db = client[db_name]
    try:
        await db.mailbox.create_index([("destination", 1), ("timestamp", 1)], name="pending")
        stamp = utcnow() - timedelta(seconds=10)
        await db.mailbox.insert_one({"_id": "old-0", "sender": "Alice", "destination": "Bob", "message": "kept for Bob", "timestamp": stamp, "type": "chat"})
        entry = {"id": "old-1", "sender": "Carol", "destination": "Bob", "message": "delivered", "timestamp": "2020-01-01T00:00:00.000Z", "type": "chat"}
        entry2 = entry | {"id": "old-2", "sender": "Bob", "destination": "Alice"}
        millis = 1577836800000
        await db.history.insert_one(
            {
                "_id": "bucket-1",
                "first": millis,
                "last": millis,
                "count": 2,
                "pairs": ["Alice|Bob", "Bob|Carol"],
                "users": ["Alice", "Bob", "Carol"],
                "archived_at": stamp,
                "messages": [entry, entry2],
            }
        )
        await db.subscriptions.insert_many(
            [{"_id": "Thermo|Bob", "service": "Thermo", "user": "Bob"}, {"_id": "thermo|bob", "service": "thermo", "user": "bob"}]
        )
        await db.state.insert_many(
            [
                {"_id": "openai|bob", "owner": "openai", "key": "bob", "value": '"older"', "updated_at": stamp},
                {"_id": "OpenAI|Bob", "owner": "OpenAI", "key": "Bob", "value": '"newer"', "updated_at": stamp + timedelta(seconds=1)},
            ]
        )
    finally:
        client.close()


def test_login_rehashes_a_password_made_with_other_parameters(api: TestClient) -> None:
    """A hash made with older parameters still logs in, and is replaced by one with ours."""
    assert api.portal is not None
    store: Store = api.app.state.store
    old = api.portal.call(Hasher(time_cost=1, memory_kib=8 * 1024).hash, SECRET)
    assert api.portal.call(AccountStore(store).insert_account, "zed", "Zed", "person", old)
    assert ok(login(api, "zed", password=SECRET))["name"] == "Zed"
    rehashed = api.portal.call(AccountStore(store).find_account, "zed")["password_hash"]
    assert rehashed != old and not Hasher().needs_rehash(rehashed)
    assert ok(login(api, "zed", password=SECRET))["registered"] is True


def test_the_argon2_parameters_are_the_documented_ones() -> None:
    """argon2id, 19 MiB, two passes, one lane: the figures the comment beside them measured."""
    assert (ARGON2_TIME_COST, ARGON2_MEMORY_KIB, ARGON2_PARALLELISM) == (2, 19 * 1024, 1)
    hashed = asyncio.run(Hasher().hash(SECRET))
    parameters = extract_parameters(hashed)
    assert parameters.type is Type.ID
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == (2, 19 * 1024, 1)
    assert SECRET not in hashed


def test_granted_never_shows_its_token() -> None:
    """The login outcome's repr leaves the token out (it may end up in a log line)."""
    assert "tok" not in repr(Granted("alice", Kind.PERSON, True, token="tok-123"))


# --- the ApiClient -------------------------------------------------------------------------------


@pytest.fixture
async def client(store_url: str) -> AsyncIterator[ApiClient]:
    """An ApiClient talking HTTP to the app served by uvicorn in this process, on a free port."""
    config = uvicorn.Config(create_app(settings_for(store_url)), host="127.0.0.1", port=0, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with ApiClient(f"http://127.0.0.1:{port}", TOKEN) as api:
            yield api
    finally:
        server.should_exit = True
        await serving


async def test_the_client_manages_accounts(client: ApiClient) -> None:
    """create_account, account, change_password, revoke_token and delete_account do what
    the routes do; a taken name raises ApiRejected 409, a bad password 422."""
    created = await client.create_account("Alice", SECRET)
    assert (created.name, created.kind) == ("Alice", "person")
    assert (await client.create_account("openai", kind="bot")).kind == "bot"
    with pytest.raises(ApiRejected) as taken:
        await client.create_account("ALICE", OTHER)
    assert taken.value.status == 409 and "taken" in taken.value.detail
    with pytest.raises(ApiRejected) as bad:
        await client.create_account("bob", "short")
    assert bad.value.status == 422 and "short" not in str(bad.value)
    assert await client.account("alice") == created
    assert await client.account("nobody") is None
    token = (await client.check_login("alice", HERE, password=SECRET, want_token=True)).token
    assert token is not None and await client.revoke_token("alice", token) is True
    assert await client.revoke_token("alice", token) is False
    wrong = await client.change_password("alice", OTHER, "n" * 10)
    assert not wrong.changed and wrong.reason == LoginReason.WRONG_PASSWORD
    changed = await client.change_password("alice", SECRET, OTHER)
    assert changed.changed and changed.revoked == 0
    with pytest.raises(ApiRejected) as missing:
        await client.change_password("nobody", SECRET, OTHER)
    assert missing.value.status == 404
    assert await client.delete_account("alice") is True
    assert await client.delete_account("alice") is False


async def test_the_client_checks_logins(client: ApiClient) -> None:
    """check_login answers a LoginCheck: reason None and the name as registered (or the
    guest's spelling) when let in, else the reason (with retry_after when locked)."""
    guest = await client.check_login("Carol", HERE)
    assert (guest.ok, guest.name, guest.kind, guest.registered, guest.token) == (True, "Carol", "guest", False, None)
    await client.create_account("Alice", SECRET)
    assert (await client.check_login("alice", HERE)).reason == LoginReason.PASSWORD_REQUIRED
    let_in = await client.check_login("alice", HERE, password=SECRET, want_token=True)
    assert (let_in.ok, let_in.name, let_in.kind, let_in.registered) == (True, "Alice", "person", True)
    assert let_in.token is not None and let_in.token not in repr(let_in)
    assert (await client.check_login("ALICE", THERE, token=let_in.token)).ok
    for _ in range(ATTEMPTS):
        assert (await client.check_login("alice", HERE, password=OTHER)).reason == LoginReason.WRONG_PASSWORD
    locked = await client.check_login("alice", THERE, password=SECRET)
    assert locked.reason == LoginReason.LOCKED and locked.retry_after is not None and locked.retry_after > 0
    with pytest.raises(ApiRejected) as bad:
        await client.check_login("not a name", HERE)
    assert bad.value.status == 422
    async with ApiClient(client.base_url, "wrong") as stranger:
        with pytest.raises(ApiRejected) as unauthorized:
            await stranger.check_login("alice", HERE, password=SECRET)
        assert unauthorized.value.status == 401


async def test_the_client_asks_for_a_window_of_guests(client: ApiClient) -> None:
    """guest_logins answers by key, True for each guest; an account's name is not in it."""
    await client.create_account("Alice", SECRET)
    assert await client.guest_logins(["Carol", "ALICE", "dave"]) == {"carol": True, "dave": True}
    with pytest.raises(ApiRejected) as bad:
        await client.guest_logins(["not a name"])
    assert bad.value.status == 422


async def test_the_client_hears_of_unknown_destinations(client: ApiClient) -> None:
    """store_mail still returns the ids; store_mail_receipt also says which destinations nobody has logged in as."""
    await client.check_login("bob", HERE)
    messages = [chat("alice", "Bob", "hi"), chat("alice", "zed", "hi")]
    assert await client.store_mail(messages[:1]) == [messages[0]["id"]]
    receipt = await client.store_mail_receipt(messages)
    assert receipt.ids == [m["id"] for m in messages] and receipt.unknown == ["zed"]
