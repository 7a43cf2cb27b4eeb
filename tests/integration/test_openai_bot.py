"""The openai bot on a real network, talking to a local OpenAI-compatible test server
through the real SDK: answers, personalities, threads, failures, streaming, reconnects.
It is the default bot of the bot host: its bounds and timeout are its definition's, set
through the API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from chatnet.api_client import ApiClient
from chatnet.assistant import APOLOGY, APOLOGY_TIMEOUT
from chatnet.launcher import peer_online
from chatnet.message import Message
from chatnet.personalities import PERSONALITIES
from chatnet.protocol import MessageType
from tests.fake_openai import FakeOpenAI
from tests.support import HOST, JsonClient, Network, TextClient

NAME = "openai"
TIMEOUT = 1.5  # the bot's timeout (its definition's)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


async def start_bot(net: Network, fake: FakeOpenAI, **fields: int | float) -> None:
    """The default bot's definition given `fields` (and the test's timeout), then the host."""
    async with ApiClient(net.api_url, net.token) as api:
        await api.patch_bot(NAME, {"timeout": TIMEOUT, **fields})
    net.start_bot(NAME, "openai_bot.py", BOT_NAME=NAME, OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="test", BOT_RETRIES="0")


@pytest.fixture
async def bot(chat: Network, fake: FakeOpenAI) -> Network:
    await start_bot(chat, fake)
    return chat


def from_bot(message: Message) -> bool:
    return message.type == MessageType.CHAT and message.sender == NAME


def final_from_bot(message: Message) -> bool:
    stream = message.metadata.get("stream")
    return from_bot(message) and (stream is None or stream.get("done") is True)


async def ask(client: TextClient, text: str, timeout: float = 10.0) -> str:
    """Send `openai: <text>`; the text of the bot's answer line."""
    await client.send(f"{NAME}: {text}")
    line = await client.expect(lambda line: f"][{NAME}] " in line, timeout)
    return line.split(f"][{NAME}] ", 1)[1]


async def ask_next(client: TextClient, text: str) -> str:
    """Like `ask`, but the answer must be the very next line."""
    await client.send(f"{NAME}: {text}")
    line = await client.line()
    assert f"][{NAME}] " in line, f"expected the bot's answer, got {line!r}"
    return line.split(f"][{NAME}] ", 1)[1]


def thread_of(fake: FakeOpenAI) -> list[str]:
    """The non-system messages of the last request the provider received."""
    return [m["content"] for m in fake.received()[-1]["messages"] if m["role"] != "system"]


async def test_hello_gets_the_models_reply(bot: Network, fake: FakeOpenAI) -> None:
    """`openai: hello` from a terminal user comes back as the model's answer."""
    alice = await bot.text_client("alice")
    assert await ask(alice, "hello") == "echo: hello"
    [request] = fake.received()
    assert request["messages"][0]["role"] == "system" and request["messages"][-1] == {"role": "user", "content": "hello"}
    await alice.close()


async def test_personality_angry_changes_the_system_prompt(bot: Network, fake: FakeOpenAI) -> None:
    """After `personality angry` the provider receives the angry system prompt."""
    alice = await bot.text_client("alice")
    await ask(alice, "hi")
    assert PERSONALITIES["angry"] not in fake.system_prompts()[-1]
    assert await ask(alice, "personality angry") == "Personality set to angry."
    await ask(alice, "hi again")
    assert PERSONALITIES["angry"] in fake.system_prompts()[-1]
    await alice.close()


async def test_clear_empties_the_thread_and_users_stay_apart(bot: Network, fake: FakeOpenAI) -> None:
    """Each user's thread holds only their own turns; clear empties it."""
    alice, bob = await bot.text_client("alice"), await bot.text_client("bob")
    await ask(alice, "my name is alice")
    await ask(bob, "my name is bob")
    await ask(alice, "what is my name?")
    assert thread_of(fake) == ["my name is alice", "echo: my name is alice", "what is my name?"]
    assert (await ask(alice, "clear")).startswith("Thread cleared")
    await ask(alice, "fresh start")
    assert thread_of(fake) == ["fresh start"]
    await ask(bob, "and me?")
    assert thread_of(fake) == ["my name is bob", "echo: my name is bob", "and me?"]
    await alice.close()
    await bob.close()


async def test_thread_bounds_hold_and_survive_a_restart(chat: Network, fake: FakeOpenAI) -> None:
    """The provider never gets more than the definition's max_messages turns; a restarted bot continues the thread."""
    await start_bot(chat, fake, max_messages=4)
    alice = await chat.text_client("alice")
    for i in range(4):
        await ask(alice, f"turn {i}")
    assert thread_of(fake) == ["turn 2", "echo: turn 2", "turn 3"]
    chat.stop(NAME)
    await start_bot(chat, fake, max_messages=4)
    await ask(alice, "after restart")
    assert thread_of(fake) == ["turn 3", "echo: turn 3", "after restart"]
    await alice.close()


@pytest.mark.parametrize(("mode", "apology"), [("fail", APOLOGY), ("stall", APOLOGY_TIMEOUT)])
async def test_broken_provider_gets_an_apology_and_the_bot_stays_up(bot: Network, fake: FakeOpenAI, mode: str, apology: str) -> None:
    """A failing or stalling provider: the user gets an apology within the timeout, and the bot goes on."""
    alice = await bot.text_client("alice")
    fake.mode = mode  # type: ignore[assignment]
    assert await ask(alice, "are you there?", timeout=TIMEOUT + 5) == apology  # fails past the timeout
    fake.mode = "ok"
    assert await ask(alice, "and now?") == "echo: and now?"
    assert thread_of(fake) == ["and now?"]  # the failed turn was not kept
    assert bot.children[NAME].running
    await alice.close()


async def test_streaming_reaches_a_stream_client_in_chunks_and_a_text_client_whole(bot: Network, fake: FakeOpenAI) -> None:
    """A client that announced `stream` sees chunks then the final text; a terminal user sees one line."""
    story = " ".join(f"word{i}" for i in range(30))
    fake.reply = lambda body: story
    fake.chunk_delay = 0.03
    web: JsonClient = await bot.json_client("webuser", features=("stream",))
    await web.send(NAME, "tell me a story")
    final = await web.expect(final_from_bot)
    chunks = [m for m in web.seen if from_bot(m) and m is not final]
    sid = final.metadata["stream"]["id"]
    assert final.message == story and final.metadata["stream"]["done"] is True
    assert len(chunks) >= 2
    assert [c.metadata["stream"] for c in chunks] == [{"id": sid, "seq": i, "done": False} for i in range(len(chunks))]
    assert "".join(c.message for c in chunks) == story
    assert fake.received()[-1]["stream"] is True

    alice = await bot.text_client("alice")
    assert await ask(alice, "tell me a story") == story
    assert fake.received()[-1].get("stream") in (None, False)
    # Nothing more from the bot: not within a while, nor before its answer to a marker
    # (it comes the same way a stray chunk would).
    late = await alice.quiet(0.5)
    fake.reply = lambda body: "marker"
    assert late == [] and await ask_next(alice, "marker") == "marker", late
    await web.close()
    await alice.close()


async def test_bot_reconnects_after_the_server_restarts(bot: Network, fake: FakeOpenAI) -> None:
    """When the chat server comes back, the bot logs in again (after its backoff) and answers."""
    bot.stop("server")
    bot.start_server()
    online = peer_online(HOST, bot.chat_port, NAME)
    async with asyncio.timeout(30):
        while not await asyncio.to_thread(online):
            await asyncio.sleep(0.2)
    alice = await bot.text_client("alice")
    assert await ask(alice, "hello again") == "echo: hello again"
    await alice.close()
