"""Logins in process: accounts in text and JSON mode, lines held while a login is
checked, several sessions of one account, !register and !password, the flood bucket —
real sessions on recording transports, the message API in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chatnet.errors import ApiRejected
from chatnet.flood import FloodBucket, flood_buckets
from chatnet.identity import LoginRate, password_problem
from chatnet.router import Router
from tests.unit.fakes import Client, FakeApi, json_client, running_router, settings, text_client, until


@pytest.fixture
def api() -> FakeApi:
    api = FakeApi()
    api.accounts["alice"] = ("Alice", "person", "correct horse battery")
    api.accounts["helper"] = ("helper", "bot", None)
    return api


@pytest.fixture
async def router(api: FakeApi) -> AsyncIterator[Router]:
    async with running_router(api, settings(api_token="service-secret")) as started:
        yield started


async def test_an_account_is_asked_for_its_password_in_text_mode(router: Router) -> None:
    """Name, then `Password:`; a wrong one says so and prompts again; the right one welcomes under the account's spelling."""
    client = Client(router)
    client.send("alice")
    assert await client.expect("Password:")
    client.send("guess")
    assert await client.expect("Wrong password for 'alice'.")
    client.send("ALICE")
    assert await client.expect("Password:")
    client.send("correct horse battery")
    assert await client.expect("Welcome, Alice! No stored messages.")


async def test_lines_sent_before_the_welcome_wait_their_turn(router: Router) -> None:
    """A login and a message in one write: the message is routed after the login, not refused or lost."""
    bob = await text_client(router, "bob")
    client = Client(router)
    client.send("carol\nbob: right after logging in\n!who")
    assert await client.expect("Online (2): bob, carol")
    assert await bob.expect(lambda line: line.endswith("[carol] right after logging in"))


async def test_json_refusals_say_the_reason(router: Router) -> None:
    """No password, a bot's name, the server's name: login_failed frames with metadata.reason."""
    for login, reason in [
        ({"user": "alice"}, "password_required"),
        ({"user": "alice", "password": "nope"}, "wrong_password"),
        ({"user": "helper"}, "reserved"),
        ({"user": "helper", "service_token": "guess"}, "wrong_password"),
        ({"user": "Server"}, "reserved"),
    ]:
        client = Client(router)
        client.send_json({"type": "login", **login})
        refusal = await client.expect_frame(lambda f: f["metadata"].get("event") == "login_failed")
        assert refusal["metadata"]["reason"] == reason, (login, refusal)


async def test_a_bot_logs_in_with_the_service_token(router: Router) -> None:
    """The service token admits a bot, whose presence and !who say so; its flood bucket is gone."""
    watcher = await json_client(router, "watcher")
    bot = Client(router)
    bot.send_json({"type": "login", "user": "helper", "service_token": "service-secret"})
    welcome = await bot.expect_frame(lambda f: f["metadata"].get("event") == "welcome")
    assert welcome["metadata"]["bot"] is True
    came = await watcher.expect_frame(lambda f: f["metadata"].get("event") == "presence")
    assert came["metadata"] == {"event": "presence", "presence": "online", "user": "helper", "bot": True}
    watcher.send_json({"type": "command", "message": "!who"})
    who = await watcher.expect_frame(lambda f: f["metadata"].get("event") == "who")
    assert who["message"] == "Online (2): helper (bot), watcher" and who["metadata"]["bots"] == ["helper"]


async def test_two_sessions_of_an_account_each_get_messages_and_see_echoes(router: Router) -> None:
    """Both sessions receive; the JSON one gets a copy of what the other sent; the name goes offline with the last."""
    first = Client(router)
    first.send_json({"type": "login", "user": "alice", "password": "correct horse battery"})
    await first.expect_frame(lambda f: f["metadata"].get("event") == "welcome")
    second = Client(router)
    second.send("alice\ncorrect horse battery")
    await second.expect("Welcome, Alice! No stored messages.")
    bob = await json_client(router, "bob")
    bob.send_json({"type": "chat", "destination": "ALICE", "message": "hi both"})
    assert (await first.expect_frame(lambda f: f["type"] == "chat"))["message"] == "hi both"
    assert await second.expect(lambda line: line.endswith("[bob] hi both"))
    second.send("bob: from the terminal")
    echo = await first.expect_frame(lambda f: f["type"] == "chat")
    assert (echo["sender"], echo["destination"], echo["metadata"]) == ("Alice", "bob", {"echo": True})
    second.transport.disconnect()
    await second.wait_closed()
    bob.send_json({"type": "command", "message": "!who"})
    assert (await bob.expect_frame(lambda f: f["metadata"].get("event") == "who"))["metadata"]["users"] == ["Alice", "bob"]


async def test_register_makes_the_guest_name_an_account(router: Router, api: FakeApi) -> None:
    """!register checks the length, then the name needs its password."""
    carol = await text_client(router, "carol")
    carol.send("!register short")
    assert await carol.expect("Error: A password has 8 to 128 characters.")
    carol.send("!register long enough now")
    assert await carol.expect("Account 'carol' registered.")
    assert api.accounts["carol"] == ("carol", "person", "long enough now")
    carol.send("!register again please")
    assert await carol.expect(lambda line: line.startswith("Error: 'carol' is an account already"))


async def test_registration_closed_leaves_accounts_to_the_api(api: FakeApi) -> None:
    """REGISTRATION=closed: !register says who creates accounts."""
    async with running_router(api, settings(registration="closed")) as router:
        dave = await text_client(router, "dave")
        dave.send("!register long enough now")
        assert await dave.expect("Error: Registration is closed here; an administrator creates accounts.")


async def test_no_guests_means_accounts_only(api: FakeApi) -> None:
    """GUESTS=false: a name nobody registered is refused with the reason; an account still logs in."""
    async with running_router(api, settings(guests=False)) as router:
        client = Client(router)
        client.send_json({"type": "login", "user": "eve"})
        refusal = await client.expect_frame(lambda f: f["metadata"].get("event") == "login_failed")
        assert refusal["metadata"]["reason"] == "guests_not_allowed"
        alice = Client(router)
        alice.send("alice\ncorrect horse battery")
        assert await alice.expect("Welcome, Alice! No stored messages.")


async def test_a_name_known_as_an_account_is_refused_while_the_api_is_away(router: Router, api: FakeApi) -> None:
    """Once the server has seen that a name is an account, it won't let a guest take it when it can't ask."""
    client = Client(router)
    client.send("alice")
    assert await client.expect("Password:")
    api.fail("check_login")
    api.fail("guest_logins")
    client.send("anything at all")
    assert await client.expect("Accounts can't be checked right now; try 'alice' again shortly.")
    other = Client(router)
    other.send("frank")
    assert await other.expect("Welcome, frank! No stored messages.")  # any other name: a guest, as before accounts


async def test_a_burst_of_guests_is_one_question_and_an_account_among_them_is_asked_alone(router: Router, api: FakeApi) -> None:
    """Logins without credentials that arrive together are asked as one window: twenty
    guests cost one request. An account made after the server loaded the names is in
    the same window, left out by the answer, and asked for its password as ever."""
    await until(lambda: router.identity.loaded, "the account names loaded")
    api.accounts["grace"] = ("Grace", "person", "another horse battery")
    guests = [Client(router) for _ in range(20)]
    for number, guest in enumerate(guests):
        guest.send(f"guest{number}")
    grace = Client(router)
    grace.send("grace")
    for number, guest in enumerate(guests):
        assert await guest.expect(f"Welcome, guest{number}! No stored messages.")
    assert await grace.expect("Password:")
    asked = [call for call in api.calls if call.method == "guest_logins"]
    assert len(asked) == 1 and set(asked[0].args["names"]) == {*(f"guest{n}" for n in range(20)), "grace"}
    assert [call.args["name"] for call in api.calls if call.method == "check_login"] == ["grace"]


async def test_a_window_the_api_refuses_is_checked_login_by_login(router: Router, api: FakeApi) -> None:
    """The API refusing a window's request (a 422) costs nobody their login: each is then
    checked alone."""
    api.fail("guest_logins", ApiRejected(422, "names: bad (test)"))
    clients = [Client(router) for _ in range(3)]
    for number, client in enumerate(clients):
        client.send(f"pat{number}")
    for number, client in enumerate(clients):
        assert await client.expect(f"Welcome, pat{number}! No stored messages.")
    assert sorted(call.args["name"] for call in api.calls if call.method == "check_login") == ["pat0", "pat1", "pat2"]


def test_password_rule() -> None:
    """8 to 128 characters."""
    assert password_problem("x" * 7) and password_problem("x" * 129)
    assert password_problem("x" * 8) is None and password_problem("x" * 128) is None


def test_login_rate_per_address() -> None:
    """A burst per address, then one a second at rate 1; other addresses are not affected."""
    rate = LoginRate(1.0, 3.0)
    assert [rate.wait("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rate.wait("10.0.0.1") > 0
    assert rate.wait("10.0.0.2") == 0.0
    assert LoginRate(0, 0).wait("10.0.0.1") == 0.0


def test_flood_bucket_grants_a_burst_then_a_rate() -> None:
    """The bucket lets `burst` lines through at once and says how long until the next."""
    bucket = FloodBucket(rate=10.0, burst=5)
    assert bucket.take(8) == 5
    assert bucket.take(1) == 0
    assert 0 < bucket.wait() <= 0.1


def test_flood_bucket_refills_at_its_rate_and_no_further_than_its_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("chatnet.flood.time.monotonic", lambda: now[0])
    bucket = FloodBucket(rate=10.0, burst=5)
    assert bucket.take(5) == 5 and bucket.wait() == pytest.approx(0.1)
    now[0] += 0.25  # two and a half lines' worth
    assert bucket.take(5) == 2 and bucket.wait() == pytest.approx(0.05)
    now[0] += 60.0  # idle for a minute: full, not 600 lines deep
    assert bucket.take(100) == 5
    assert flood_buckets(0, 5)() is None


async def test_a_flooder_is_held_not_dropped(api: FakeApi) -> None:
    """Past the burst, lines wait in order and all arrive; the flooder is never disconnected."""
    async with running_router(api, settings(flood_rate=200.0, flood_burst=5)) as router:
        sink = await text_client(router, "sink")
        flooder = Client(router)
        flooder.send("flooder")
        await flooder.expect("Welcome, flooder! No stored messages.")
        flooder.send("\n".join(f"sink: {i}" for i in range(40)))
        for i in range(40):
            assert await sink.expect(lambda line, i=i: line.endswith(f"[flooder] {i}"))
        assert not flooder.closed


async def test_lines_held_by_a_login_and_by_the_flood_bucket_keep_their_order(api: FakeApi) -> None:
    """A login and a burst in one write, past the bucket: every line is acted on, in the order sent."""
    async with running_router(api, settings(flood_rate=500.0, flood_burst=3)) as router:
        sink = await text_client(router, "sink")
        client = Client(router)
        client.send("carol\n" + "\n".join(f"sink: {i}" for i in range(12)))
        for i in range(12):
            assert await sink.expect(lambda line, i=i: line.endswith(f"[carol] {i}"))


async def test_a_relay_reports_each_browsers_address(api: FakeApi) -> None:
    """The web adapter logs users in with the service token and each browser's address: per-address limits count browsers, not the adapter."""
    async with running_router(api, settings(api_token="service-secret", login_rate=0.2)) as router:  # one login per address at once
        for user, address in [("u1", "198.51.100.1"), ("u2", "198.51.100.2")]:
            client = Client(router)
            client.send_json({"type": "login", "user": user, "relay_token": "service-secret", "address": address})
            assert (await client.expect_frame(lambda f: f["metadata"].get("event") in ("welcome", "login_failed")))["metadata"]["event"] == "welcome"
        again = Client(router)
        again.send_json({"type": "login", "user": "u3", "relay_token": "service-secret", "address": "198.51.100.1"})
        refusal = await again.expect_frame(lambda f: f["metadata"].get("event") == "login_failed")
        assert refusal["metadata"]["reason"] == "locked" and "your address" in refusal["message"]
        forged = Client(router)
        forged.send_json({"type": "login", "user": "u4", "relay_token": "a guess", "address": "203.0.113.9"})
        refusal = await forged.expect_frame(lambda f: f["metadata"].get("event") == "login_failed")
        assert refusal["metadata"]["reason"] == "wrong_password"


async def test_nobody_goes_unchecked_before_the_account_names_are_known(api: FakeApi) -> None:
    """With the API away from the start a login is refused (it could be an account's); once the
    account names are loaded, a name that is none may chat as a guest while the API is away."""
    api.fail("account_kinds")
    api.fail("check_login")
    api.fail("guest_logins")
    async with running_router(api) as router:
        client = Client(router)
        client.send("alice")
        assert await client.expect("Accounts can't be checked right now; try 'alice' again shortly.")
        client.send("frank")
        assert await client.expect("Accounts can't be checked right now; try 'frank' again shortly.")
        api.heal("account_kinds")
        await until(lambda: router.identity.loaded, "the account names loaded", timeout=10)
        assert router.identity.known["alice"] == "person"
        client.send("frank")
        assert await client.expect("Welcome, frank! No stored messages.")
        other = Client(router)
        other.send("ALICE")
        assert await other.expect("Accounts can't be checked right now; try 'ALICE' again shortly.")
