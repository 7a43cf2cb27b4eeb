"""The bot host on a real network: bots defined through the API, one local
OpenAI-compatible server behind them all behaving by model (one fails, one stalls, one
wants another key, one is fine), the HTTP chat through the API's front door."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from chatnet.api_client import ApiClient
from chatnet.errors import ApiRejected
from chatnet.message import Message
from chatnet.protocol import MessageType
from tests.fake_openai import FakeOpenAI, echo_reply
from tests.support import JsonClient, Network, TextClient, eventually

STALL_TIMEOUT = 1.0  # the stalling bot's timeout
STORY = " ".join(f"word{i}" for i in range(120))


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        server.modes = {"m-fail": "fail", "m-stall": "stall"}
        server.keys = {"m-key": "the-right-key"}
        server.reply = lambda body: STORY if "story" in str(body["messages"][-1]["content"]) else echo_reply(body)
        yield server


def bot(name: str, model: str, fake: FakeOpenAI, **fields: Any) -> dict[str, Any]:
    return {"name": name, "model": model, "base_url": fake.base_url, **fields}


@pytest.fixture
async def api(chat: Network) -> AsyncIterator[ApiClient]:
    async with ApiClient(chat.api_url, chat.token, timeout=15.0) as client:
        yield client


@pytest.fixture
async def host(chat: Network, fake: FakeOpenAI, api: ApiClient) -> Network:
    """Four bots defined before the host starts (no OPENAI_* for the host: the default bot has no provider)."""
    await api.put_bots([
        bot("fine", "m-fine", fake, api_key="whatever"),
        bot("failing", "m-fail", fake),
        bot("stalling", "m-stall", fake, timeout=STALL_TIMEOUT),
        bot("badkey", "m-key", fake, api_key="a-wrong-key"),
    ])  # fmt: skip
    chat.start_bot_host(online=("fine", "failing", "stalling", "badkey"), BOT_RETRIES="0")
    return chat


async def ask(client: TextClient, name: str, text: str, timeout: float = 10.0) -> str:
    """Send `<name>: <text>`; the text of the bot's answer line."""
    await client.send(f"{name}: {text}")
    line = await client.expect(lambda line: f"][{name}] " in line, timeout)
    return line.split(f"][{name}] ", 1)[1]


async def status(api: ApiClient, name: str, done: Any, what: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        return await api.bot_status(name) or {}

    return await eventually(probe, done, f"{name}'s status: {what}")


def from_bot(name: str) -> Any:
    return lambda m: m.type == MessageType.CHAT and m.sender == name


def final_from(name: str) -> Any:
    return lambda m: from_bot(name)(m) and (m.metadata.get("stream") or {}).get("done") is True


def chunk_from(name: str) -> Any:
    return lambda m: from_bot(name)(m) and (m.metadata.get("stream") or {}).get("done") is False


async def test_one_broken_provider_never_touches_another(host: Network, fake: FakeOpenAI, api: ApiClient) -> None:
    """While one bot's provider stalls and others fail or refuse the key, the fine bot answers at once; each status says what happened."""
    alice, bob, carol = await host.text_client("alice"), await host.text_client("bob"), await host.text_client("carol")
    await bob.send("stalling: are you there?")
    await carol.send("failing: and you?")
    started = time.monotonic()
    assert await ask(alice, "fine", "hello") == "echo: hello"
    assert time.monotonic() - started < STALL_TIMEOUT  # not behind the stalled call
    assert (await bob.expect("][stalling] ", STALL_TIMEOUT + 5)).endswith("took too long to answer. Please try again later.")
    assert "couldn't get an answer" in await carol.expect("][failing] ")
    assert "couldn't get an answer" in await ask(alice, "badkey", "hi")
    assert await ask(alice, "fine", "still fine?") == "echo: still fine?"

    fine = await status(api, "fine", lambda s: s.get("requests") == 2, "two requests")
    assert fine["online"] and fine["model_ok"] is True and fine["errors"] == 0 and fine["p50_ms"] is not None and fine["last_error"] is None
    failing = await status(api, "failing", lambda s: s.get("errors") == 1, "one error")
    assert failing["model_ok"] is False and failing["last_error"] == "InternalServerError" and failing["last_error_at"]
    assert (await status(api, "stalling", lambda s: s.get("errors") == 1, "one error"))["last_error"] == "timeout"
    assert (await status(api, "badkey", lambda s: s.get("errors") == 1, "one error"))["last_error"] == "AuthenticationError"
    default = await status(api, "openai", lambda s: s.get("reported_at") is not None, "a report")
    assert default["online"] is False and default["last_error"] == "no provider"
    assert await api.bot("fine") is not None and "api_key" not in (await api.bot("fine") or {})
    for client in (alice, bob, carol):
        await client.close()


async def test_create_change_delete_apply_within_seconds(host: Network, fake: FakeOpenAI, api: ApiClient) -> None:
    """A bot created through the API comes online and joins its rooms, a change reaches the provider, a delete takes it off the network — the others untouched."""
    watcher = await host.text_client("watcher")
    started = time.monotonic()
    [created] = await api.put_bots([bot("helper", "m-helper", fake, rooms=["#lab"])])
    assert created["created"] is True
    await watcher.until_online(lambda names: "helper (bot)" in names)
    assert time.monotonic() - started < 5
    await eventually(lambda: api.room("#lab"), lambda room: room is not None and "helper" in room["member_names"], "helper in #lab")
    assert await ask(watcher, "helper", "hi") == "echo: hi"

    await api.patch_bot("helper", {"system": "You are a pirate; say arr."})
    pirate = "You are a pirate; say arr."
    await eventually(lambda: ask(watcher, "helper", "who are you?"), lambda _: pirate in fake.system_prompts("m-helper")[-1], "the new prompt at the provider")

    await api.delete_bot("helper")
    names = await watcher.until_online(lambda names: "helper (bot)" not in names)
    assert "fine (bot)" in names
    assert host.log("bots").count("bot fine (version") == 1  # never restarted
    assert host.log("bots").count("bot helper (version") == 2  # created, then changed
    for log in (host.log("bots"), host.log("api")):
        assert "whatever" not in log and "a-wrong-key" not in log  # the api_keys given
    await watcher.close()


async def test_sse_and_simple_chat_through_the_api(host: Network, fake: FakeOpenAI, api: ApiClient) -> None:
    """POST /bots/{name}/chat streams chunks, the done event and [DONE]; /chat/simple answers one object; a model failure is an error event and a clean end."""
    story = {"user": "alice", "message": "tell me a story"}
    async with aiohttp.ClientSession(headers=host.auth) as http, http.post(f"{host.api_url}/bots/fine/chat", json=story) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        body = await response.text()
    events = [line.removeprefix("data: ") for line in body.split("\n\n") if line]
    assert events[-1] == "[DONE]" and events[-2] == '{"content": "", "done": true}'
    chunks = [e async for e in api.bot_chat("fine", "bob", "tell me a story")]
    assert len(chunks) > 3 and "".join(c.get("content", "") for c in chunks) == STORY and chunks[-1] == {"content": "", "done": True}
    assert await api.bot_chat_simple("fine", "carol", "hello") == {"content": "echo: hello", "bot": "fine", "user": "carol"}
    failed = [e async for e in api.bot_chat("failing", "alice", "hello")]
    assert failed[-1]["done"] is True and "couldn't get an answer" in failed[-1]["error"]


async def test_refusals_through_the_api(host: Network, fake: FakeOpenAI, api: ApiClient) -> None:
    """An unknown bot is a 404, a user the bot's respond_to refuses a 403; the host itself wants the token."""
    await api.put_bots([bot("picky", "m-fine", fake, respond_to=["alice"])])
    await status(api, "picky", lambda s: s.get("online") is True, "online")
    with pytest.raises(ApiRejected) as unknown:
        await api.bot_chat_simple("nobody", "alice", "hi")
    assert unknown.value.status == 404
    with pytest.raises(ApiRejected) as refused:
        await api.bot_chat_simple("picky", "eve", "hi")
    assert refused.value.status == 403
    assert (await api.bot_chat_simple("picky", "alice", "hi"))["content"] == "echo: hi"
    async with aiohttp.ClientSession() as http, http.post(f"{host.bots_url}/bots/fine/chat/simple", json={"user": "alice", "message": "hi"}) as response:
        assert response.status == 401


async def test_one_thread_over_http_and_chat(host: Network, fake: FakeOpenAI, api: ApiClient) -> None:
    """A conversation started on the network goes on over HTTP with the same thread, the history shows the HTTP turn, and DELETE /history/{user} forgets it."""
    alice = await host.text_client("alice")
    assert await ask(alice, "fine", "my name is alice") == "echo: my name is alice"
    assert (await api.bot_chat_simple("fine", "alice", "what is my name?"))["content"] == "echo: what is my name?"
    thread = [m["content"] for m in fake.received("m-fine")[-1]["messages"][1:]]
    assert thread == ["my name is alice", "echo: my name is alice", "what is my name?"]
    assert await ask(alice, "fine", "and again?") == "echo: and again?"
    assert [m["content"] for m in fake.received("m-fine")[-1]["messages"][1:]][-3:] == ["what is my name?", "echo: what is my name?", "and again?"]

    async def texts() -> list[str]:
        messages, _ = await api.history("alice", "fine")
        return [m["message"] for m in messages]

    shown = await eventually(texts, lambda found: "echo: what is my name?" in found, "the HTTP turn in the history")
    assert "what is my name?" in shown

    async with aiohttp.ClientSession(headers=host.auth) as http, http.delete(f"{host.api_url}/history/alice") as response:
        assert response.status == 200
    assert (await api.bot_chat_simple("fine", "alice", "fresh?"))["content"] == "echo: fresh?"
    assert [m["content"] for m in fake.received("m-fine")[-1]["messages"][1:]] == ["fresh?"]
    await alice.close()


async def test_stop_and_regenerate(host: Network, fake: FakeOpenAI) -> None:
    """`stop` ends a slow streamed answer at once with what came plus " (stopped)"; `regenerate` asks again for the last question."""
    fake.chunk_delays["m-fine"] = 0.1  # 12 s for the whole story
    web: JsonClient = await host.json_client("webuser", features=("stream",))
    await web.send("fine", "tell me a story")
    await web.expect(chunk_from("fine"))
    asked = time.monotonic()
    await web.send("fine", "stop")
    final = await web.expect(final_from("fine"), timeout=5)
    assert time.monotonic() - asked < 3
    assert final.message.endswith(" (stopped)") and final.message.startswith("word0") and len(final.message) < len(STORY)

    fake.chunk_delays["m-fine"] = 0.0
    await web.send("fine", "regenerate")
    again: Message = await web.expect(final_from("fine"))
    assert again.message == STORY
    last = fake.received("m-fine")[-1]["messages"]
    assert last[-1] == {"role": "user", "content": "tell me a story"} and all("(stopped)" not in m["content"] for m in last)
    await web.close()


async def test_a_client_that_shows_typing_sees_the_bot_working(host: Network, fake: FakeOpenAI) -> None:
    """While the model works on an answer the asker's client is told so (a typing notice), and told again when the answer is sent."""

    def typing(m: Message) -> bool:
        return m.metadata.get("event") == "typing"

    web: JsonClient = await host.json_client("typer", features=("typing",))
    await web.send("fine", "hello")
    working = await web.expect(typing)
    assert (working.metadata["user"], working.metadata["active"]) == ("fine", True)
    answer = await web.expect(lambda m: from_bot("fine")(m) or typing(m))
    assert answer.message == "echo: hello"
    done = await web.expect(typing)
    assert (done.metadata["user"], done.metadata["active"]) == ("fine", False)
    await web.close()


async def test_a_client_leaving_the_stream_stops_the_model(host: Network, fake: FakeOpenAI, api: ApiClient) -> None:
    """An SSE client that goes away mid-answer (through the API's front door) stops the generation: the thread soon keeps the part that came."""
    fake.chunk_delays["m-fine"] = 0.1  # 12 s for the whole story
    started = time.monotonic()
    story = {"user": "leaver", "message": "tell me a story"}
    async with aiohttp.ClientSession(headers=host.auth) as http, http.post(f"{host.api_url}/bots/fine/chat", json=story) as response:
        await response.content.readuntil(b"\n\n")  # a first chunk; leaving the block closes the connection mid-stream

    def kept(state: Any) -> bool:
        return isinstance(state, dict) and len(state.get("turns", [])) == 2

    state = await eventually(lambda: api.get_state("fine", "leaver"), kept, "the part kept")
    assert time.monotonic() - started < 6 and 0 < len(state["turns"][1]["content"]) < len(STORY)
