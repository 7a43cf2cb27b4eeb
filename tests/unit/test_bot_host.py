"""The bot host's pure parts (a definition as a config, the plan from definitions, the
status figures) and, in process, its keeping in line and its HTTP chat — with a fake
API and scripted models, no network."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chatnet.assistant import AssistantConfig, ModelStats, OpenAIModel
from chatnet.bot_host import NO_PROVIDER, BotHost, Plan, config_from_definition, plan
from chatnet.bot_http import make_app, turn_documents
from chatnet.config import Settings
from chatnet.errors import ApiRejected
from chatnet.limits import MAX_MESSAGE_CHARS
from chatnet.personalities import PERSONALITIES
from tests.memory_store import MemoryStore
from tests.unit.test_assistant import ScriptedModel

TOKEN = "t0ken"


def definition(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "version": 1, **fields}


# --- a definition as a config --------------------------------------------------------------


def test_a_definition_falls_back_to_the_hosts_settings() -> None:
    """What a definition leaves null is the host's: model, provider, bounds, rate limit, timeout."""
    settings = Settings(_env_file=None, openai_model="host-model", openai_base_url="http://host/v1", openai_api_key="host-key", bot_timeout=7.0)
    config = config_from_definition(definition("helper", model=None, base_url=None, max_messages=5, max_days=2, rooms=["#r"]), settings)
    assert (config.name, config.model, config.base_url, config.api_key) == ("helper", "host-model", "http://host/v1", "host-key")
    assert config.bounds.max_messages == 5 and config.bounds.max_age == 2 * 86400 and config.bounds.max_chars == 8000
    assert config.timeout == 7.0 and config.rooms == ("#r",) and config.version == 1 and config.has_provider


def test_the_hosts_key_never_goes_to_a_url_a_definition_chose() -> None:
    """A definition with a base_url of its own gets its own key or none: the host's OPENAI_API_KEY stays with the host's provider."""
    settings = Settings(_env_file=None, openai_api_key="host-key")
    elsewhere = config_from_definition(definition("b", base_url="http://elsewhere/v1"), settings)
    assert elsewhere.api_key is None and elsewhere.has_provider
    own = config_from_definition(definition("b", base_url="http://elsewhere/v1", api_key="own"), settings)
    assert own.api_key == "own"
    assert "own" not in repr(own) and "host-key" not in repr(config_from_definition(definition("c"), settings))


def test_a_definition_with_no_provider_anywhere_has_none() -> None:
    """No base_url or key in the definition nor in the host's settings: no provider."""
    assert not config_from_definition(definition("b"), Settings(_env_file=None)).has_provider


@pytest.mark.parametrize(("given", "default"), [("angry", "angry"), ("ANGRY", "angry"), ("bored", None), (None, None)])
def test_a_definitions_personality(given: str | None, default: str | None) -> None:
    """A known personality (any case) is the bot's default; an unknown one is the host's default."""
    assert config_from_definition(definition("b", personality=given), Settings(_env_file=None)).personality == default


def test_respond_to_and_system() -> None:
    """The allow-list is case-insensitive; `system` is kept as given."""
    config = config_from_definition(definition("b", respond_to=["Alice"], system="Be terse."), Settings(_env_file=None))
    assert config.respond_to == frozenset({"alice"}) and config.system == "Be terse."


# --- the plan ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("running", "wanted", "expected"),
    [
        ({}, {"a": 1, "b": 1}, Plan(start=["a", "b"])),
        ({"a": 1, "b": 1}, {"a": 1, "b": 1}, Plan()),
        ({"a": 1, "b": 1}, {"a": 2, "b": 1}, Plan(restart=["a"])),
        ({"a": 1, "b": 1}, {"b": 1, "c": 1}, Plan(start=["c"], stop=["a"])),
        ({"a": 1}, {}, Plan(stop=["a"])),
    ],
)
def test_plan_touches_only_what_changed(running: dict[str, int], wanted: dict[str, int], expected: Plan) -> None:
    """New definitions start, changed versions restart, deleted ones stop; the others are left alone."""
    assert plan(running, wanted) == expected
    assert bool(plan(running, wanted)) == bool(expected.start or expected.restart or expected.stop)


# --- the figures ---------------------------------------------------------------------------


def test_model_stats_count_and_take_the_median() -> None:
    """Requests, errors, the last error with its time, the last outcome and the p50 of recent latencies."""
    stats = ModelStats(clock=lambda: 1_700_000_000.0)
    assert stats.report("b", False, 0) == {
        "name": "b", "online": False, "model_ok": None, "last_error": None, "last_error_at": None,
        "requests": 0, "errors": 0, "p50_ms": None, "queued": 0,
    }  # fmt: skip
    for ms in (10.0, 30.0, 20.0):
        stats.ok(ms)
    stats.failed("timeout")
    stats.stopped()
    report = stats.report("b", True, 2)
    assert report["requests"] == 5 and report["errors"] == 1 and report["p50_ms"] == 20.0 and report["queued"] == 2
    assert report["model_ok"] is False and report["last_error"] == "timeout" and report["last_error_at"] == "2023-11-14T22:13:20.000Z"
    stats.ok(40.0)
    assert stats.report("b", True, 0)["model_ok"] is True and stats.report("b", True, 0)["last_error"] == "timeout"


def test_p50_is_over_the_recent_calls_only() -> None:
    """Old latencies leave the window: a provider that became fast shows it."""
    stats = ModelStats()
    for _ in range(200):
        stats.ok(1000.0)
    for _ in range(100):
        stats.ok(5.0)
    assert stats.p50_ms == 5.0


# --- the host, in process --------------------------------------------------------------------


class FakeApi(MemoryStore):
    """The host feed, the status reports and the history, in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.definitions: list[dict[str, Any]] = []
        self.reports: list[list[dict[str, Any]]] = []
        self.archived: list[dict[str, Any]] = []
        self.feed_missing = False

    async def bot_definitions(self) -> list[dict[str, Any]]:
        if self.feed_missing:
            raise ApiRejected(404, "Not Found")
        return [dict(d) for d in self.definitions]

    async def report_bot_status(self, statuses: list[dict[str, Any]]) -> None:
        self.reports.append(statuses)

    async def archive_encoded(self, messages_json: str) -> int:
        docs = json.loads(messages_json)
        self.archived.extend(docs)
        return len(docs)


class ClosingModel(ScriptedModel):
    def __init__(self, config: AssistantConfig) -> None:
        super().__init__()
        self.config = config
        self.closed = False

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
async def host(unused_tcp_port: int) -> AsyncIterator[tuple[BotHost, FakeApi, dict[str, ClosingModel]]]:
    """A host over the fake API whose bots try a chat server where nothing listens (they
    never get online here: what is tested is the host's side)."""
    api = FakeApi()
    models: dict[str, ClosingModel] = {}

    def make_model(config: AssistantConfig) -> ClosingModel:
        models[config.name] = ClosingModel(config)
        return models[config.name]

    settings = Settings(_env_file=None, chat_port=unused_tcp_port, openai_base_url="http://host/v1", api_token=TOKEN)
    bot_host = BotHost(settings, api, make_model=make_model)
    yield bot_host, api, models
    stop = asyncio.Event()
    stop.set()
    await bot_host.run(stop)  # stops every bot


async def test_sync_starts_restarts_and_stops_only_what_changed(host: tuple[BotHost, FakeApi, dict[str, ClosingModel]]) -> None:
    """A new definition starts a bot, a new version restarts that one alone, a deleted one stops; a bot without a provider is reported, not started."""
    bot_host, api, models = host
    api.definitions = [definition("a"), definition("b"), definition("c", base_url=None)]
    assert await bot_host.sync() == Plan(start=["a", "b", "c"])
    first_a, first_b = bot_host.hosted["a"].bot, bot_host.hosted["b"].bot
    api.definitions = [definition("a", version=2, system="new"), definition("b")]
    assert await bot_host.sync() == Plan(restart=["a"], stop=["c"])
    assert bot_host.hosted["b"].bot is first_b and bot_host.hosted["a"].bot is not first_a
    assert bot_host.hosted["a"].config.system == "new" and models["a"].config.system == "new"
    assert set(bot_host.hosted) == {"a", "b"}
    assert await bot_host.sync() == Plan()


async def test_status_reports_every_bot(host: tuple[BotHost, FakeApi, dict[str, ClosingModel]]) -> None:
    """Each report holds every bot's figures; one with no provider at all says so."""
    bot_host, api, _ = host
    bot_host.settings = replace(bot_host.settings, openai_base_url=None)
    api.definitions = [definition("a", base_url="http://own/v1"), definition("lonely")]
    await bot_host.sync()
    await bot_host.report()
    [report] = api.reports
    by = {status["name"]: status for status in report}
    assert by["a"]["online"] is False and by["a"]["requests"] == 0 and by["a"]["last_error"] is None
    assert by["lonely"]["last_error"] == NO_PROVIDER and bot_host.hosted["lonely"].bot is None


async def test_an_api_without_the_bot_routes_runs_the_settings_bot(host: tuple[BotHost, FakeApi, dict[str, ClosingModel]]) -> None:
    """A 404 on the feed: the one bot of the host's settings runs, as before the bot API."""
    bot_host, api, _ = host
    api.feed_missing = True
    assert await bot_host.sync() == Plan(start=["openai"])


@pytest.fixture
async def client(host: tuple[BotHost, FakeApi, dict[str, ClosingModel]]) -> AsyncIterator[TestClient[Any, Any]]:
    bot_host, api, _ = host
    api.definitions = [definition("helper"), definition("picky", respond_to=["alice"], rate_limit=1), definition("none", base_url=None)]
    bot_host.settings = replace(bot_host.settings, openai_base_url=None)
    api.definitions[0]["base_url"] = api.definitions[1]["base_url"] = "http://own/v1"
    await bot_host.sync()
    async with TestClient(TestServer(make_app(bot_host, TOKEN))) as test_client:
        yield test_client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def events(body: str) -> list[Any]:
    return [json.loads(data) if data != "[DONE]" else data for data in re.findall(r"^data: (.*)$", body, re.M)]


async def test_sse_chat_streams_chunks_then_done(client: TestClient[Any, Any], host: tuple[BotHost, FakeApi, dict[str, ClosingModel]]) -> None:
    """POST /bots/{name}/chat: one event per chunk, the done event, [DONE]; both messages archived as the DM history."""
    _, api, models = host
    response = await client.post("/bots/helper/chat", json={"user": "alice", "message": "hello there"}, headers=AUTH)
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    got = events(await response.text())
    assert got[-2:] == [{"content": "", "done": True}, "[DONE]"]
    assert "".join(e["content"] for e in got[:-2]) == "echo: hello there" and len(got) > 3
    assert models["helper"].calls[-1][-1] == {"role": "user", "content": "hello there"}
    await until_archived(api, 2)
    question, answer = api.archived
    assert (question["sender"], question["destination"], question["message"]) == ("alice", "helper", "hello there")
    assert (answer["sender"], answer["destination"], answer["message"]) == ("helper", "alice", "echo: hello there")
    assert answer["metadata"]["reply_to"] == question["id"] and answer["timestamp"] >= question["timestamp"]


async def until_archived(api: FakeApi, count: int) -> None:
    async with asyncio.timeout(5):
        while len(api.archived) < count:
            await asyncio.sleep(0.01)


async def test_simple_chat_and_a_failure(client: TestClient[Any, Any], host: tuple[BotHost, FakeApi, dict[str, ClosingModel]]) -> None:
    """POST /bots/{name}/chat/simple answers one JSON object; a model failure is 502 there and an error event in SSE."""
    _, _, models = host
    response = await client.post("/bots/helper/chat/simple", json={"user": "bob", "message": "hi"}, headers=AUTH)
    assert response.status == 200 and await response.json() == {"content": "echo: hi", "bot": "helper", "user": "bob"}
    models["helper"].fail = True
    response = await client.post("/bots/helper/chat/simple", json={"user": "bob", "message": "hi"}, headers=AUTH)
    assert response.status == 502 and "Sorry" in (await response.json())["error"]
    response = await client.post("/bots/helper/chat", json={"user": "bob", "message": "hi"}, headers=AUTH)
    got = events(await response.text())
    assert response.status == 200 and got[-2]["done"] is True and "Sorry" in got[-2]["error"] and got[-1] == "[DONE]"


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/bots/nobody/chat", {"user": "alice", "message": "hi"}, AUTH, 404),
        ("/bots/none/chat", {"user": "alice", "message": "hi"}, AUTH, 503),
        ("/bots/helper/chat", {"user": "alice", "message": "hi"}, {}, 401),
        ("/bots/helper/chat", {"user": "alice", "message": "hi"}, {"Authorization": "Bearer wrong"}, 401),
        ("/bots/helper/chat", {"user": "alice"}, AUTH, 422),
        ("/bots/helper/chat", {"user": "no spaces", "message": "hi"}, AUTH, 422),
        ("/bots/helper/chat/simple", {"user": "alice", "message": "x" * (MAX_MESSAGE_CHARS + 1)}, AUTH, 422),
        ("/bots/helper/chat/simple", ["not", "an", "object"], AUTH, 422),
        ("/bots/picky/chat", {"user": "eve", "message": "hi"}, AUTH, 403),
    ],
)
async def test_refusals(client: TestClient[Any, Any], path: str, body: Any, headers: dict[str, str], status: int) -> None:
    """Unknown bot 404, no provider 503, no token 401, a bad body 422, a user the allow-list refuses 403."""
    response = await client.post(path, json=body, headers=headers)
    assert response.status == status and "detail" in await response.json()


async def test_rate_limit_is_429(client: TestClient[Any, Any]) -> None:
    """Past the bot's rate limit a user gets 429 (the budget their chat shares)."""
    first = await client.post("/bots/picky/chat/simple", json={"user": "alice", "message": "hi"}, headers=AUTH)
    second = await client.post("/bots/picky/chat/simple", json={"user": "alice", "message": "hi"}, headers=AUTH)
    assert (first.status, second.status) == (200, 429)


async def test_health_needs_no_token(client: TestClient[Any, Any]) -> None:
    """GET /health answers without the token (the launcher's probe)."""
    response = await client.get("/health")
    assert response.status == 200 and (await response.json())["status"] == "ok"


def test_a_long_answer_is_archived_in_pieces() -> None:
    """The archived answer is split within the message limit, each piece replying to the question."""
    docs = turn_documents("helper", "alice", "q", 1.0, "word " * 2000, 2.0)
    assert len(docs) >= 4 and all(len(d["message"]) <= MAX_MESSAGE_CHARS for d in docs)
    assert {d["metadata"].get("reply_to") for d in docs[1:]} == {docs[0]["id"]}


def test_openai_model_uses_the_configs_provider() -> None:
    """Each bot's SDK client has its own URL, key, model and timeout."""
    model = OpenAIModel(AssistantConfig(name="b", model="m1", base_url="http://own/v1", api_key="k", timeout=3.0, retries=0))
    assert (model.model, str(model.client.base_url), model.client.api_key, model.client.timeout, model.client.max_retries) == ("m1", "http://own/v1/", "k", 3.0, 0)


def test_personalities_are_the_hosts() -> None:
    """A definition's bot offers the host's personalities."""
    config = config_from_definition(definition("b"), Settings(_env_file=None, bot_personalities={"pirate": "Arr."}))
    assert set(config.personalities) == {*PERSONALITIES, "pirate"}


async def test_a_chat_stop_ends_an_sse_answer(client: TestClient[Any, Any], host: tuple[BotHost, FakeApi, dict[str, ClosingModel]]) -> None:
    """`stop` from the user's chat ends the answer streaming over HTTP: a done event with "stopped", and the thread keeps the part."""
    bot_host, api, models = host
    models["helper"].deltas = [f"w{i} " for i in range(300)]
    models["helper"].stall = 0.02
    response = await client.post("/bots/helper/chat", json={"user": "alice", "message": "long"}, headers=AUTH)
    await response.content.readuntil(b"\n\n")  # a first chunk
    bot = bot_host.hosted["helper"].bot
    assert bot is not None and bot.stop("alice")
    got = events("data: {}\n\n" + (await response.content.read()).decode())[1:]
    assert got[-2] == {"content": "", "done": True, "stopped": True} and got[-1] == "[DONE]"
    turns = api.state[("helper", "alice")]["turns"]
    assert turns[-1]["role"] == "assistant" and 0 < len(turns[-1]["content"]) < len("".join(models["helper"].deltas))


async def test_the_client_going_away_stops_the_model(client: TestClient[Any, Any], host: tuple[BotHost, FakeApi, dict[str, ClosingModel]]) -> None:
    """An SSE client that disconnects mid-answer cancels the model call; the thread keeps what came."""
    bot_host, api, models = host
    models["helper"].deltas = [f"w{i} " for i in range(300)]
    models["helper"].stall = 0.02
    response = await client.post("/bots/helper/chat", json={"user": "alice", "message": "long"}, headers=AUTH)
    await response.content.readuntil(b"\n\n")
    response.close()
    bot = bot_host.hosted["helper"].bot
    assert bot is not None
    async with asyncio.timeout(3):  # long before the 6 s the whole answer takes
        while ("helper", "alice") not in api.state or bot._running:
            await asyncio.sleep(0.01)
    turns = api.state[("helper", "alice")]["turns"]
    assert [t["role"] for t in turns] == ["user", "assistant"] and 0 < len(turns[-1]["content"]) < 300 * 4


def test_a_providers_url_is_logged_without_credentials() -> None:
    """Credentials in a base_url (user:password@, a query) stay out of the log."""
    from chatnet.bot_host import _shown_url

    assert _shown_url("http://user:secret@models.local:8000/v1?key=k") == "http://models.local:8000/v1" and _shown_url(None) == "OpenAI"
