"""The openai bot's logic: threads, personalities, commands, streaming, errors —
with the model injected (a small scripted model) and state in memory."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatnet.assistant import APOLOGY, APOLOGY_TIMEOUT, Assistant, AssistantConfig, Bounds, Turn, UserState, parse_translate, trim
from chatnet.config import Settings
from chatnet.limits import MAX_MESSAGE_CHARS
from chatnet.message import Message
from chatnet.personalities import PERSONALITIES
from tests.memory_store import MemoryStore

DAY = 86400.0


class ScriptedModel:
    """Answers "echo: <last user message>" (or `answer`), records what it was sent,
    and can fail or stall on request."""

    def __init__(self) -> None:
        self.calls: list[list[dict[str, str]]] = []
        self.answer: str | None = None
        self.fail = False
        self.stall = 0.0
        self.deltas: list[str] | None = None

    def _text(self, messages: list[dict[str, str]]) -> str:
        if self.answer is not None:
            return self.answer
        return "echo: " + [m["content"] for m in messages if m["role"] == "user"][-1]

    async def complete(self, messages: list[dict[str, str]]) -> str:
        self.calls.append(messages)
        await asyncio.sleep(self.stall)
        if self.fail:
            raise ConnectionError("provider down")
        return self._text(messages)

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        self.calls.append(messages)
        for delta in self.deltas or re.findall(r"\S+\s*", self._text(messages)):
            await asyncio.sleep(self.stall)
            if self.fail:
                raise ConnectionError("provider down")
            yield delta


def make(model: ScriptedModel, store: MemoryStore | None = None, **overrides: Any) -> Assistant:
    settings = Settings(_env_file=None, bot_name="openai", **overrides)
    return Assistant(settings, AssistantConfig.from_settings(settings), model, store or MemoryStore())


def sent(bot: Assistant, typing: bool = False) -> list[dict[str, Any]]:
    """What the bot queued for the server (its typing frames too, when asked)."""
    frames = []
    while not bot.outbox.empty():
        frames.append(bot.outbox.get_nowait())
    return [f for f in frames if typing or f.get("type") != "typing"]


async def say(bot: Assistant, text: str, sender: str = "alice", features: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    metadata = {"sender_features": list(features)} if features else {}
    await bot.receive(Message(sender=sender, destination=bot.name, message=text, metadata=metadata))
    await bot.drain()
    return sent(bot)


async def answer(bot: Assistant, text: str, sender: str = "alice") -> str:
    [frame] = await say(bot, text, sender)
    assert frame["destination"] == sender
    return frame["message"]


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


# --- thread bounds ---------------------------------------------------------------------


def turns(*contents: str, at: float = 1000.0) -> list[Turn]:
    return [Turn("user" if i % 2 == 0 else "assistant", c, at) for i, c in enumerate(contents)]


def test_trim_keeps_the_newest_messages() -> None:
    """Past the message count the oldest turns go (and the thread starts with a question)."""
    kept = trim(turns("q1", "a1", "q2", "a2", "q3"), Bounds(max_messages=4), now=1000)
    assert [t.content for t in kept] == ["q2", "a2", "q3"]


def test_trim_bounds_characters() -> None:
    """The thread's total characters stay within the bound; a lone huge turn keeps its end."""
    kept = trim(turns("a" * 50, "b" * 50, "c" * 50), Bounds(max_chars=120), now=1000)
    assert [t.content[0] for t in kept] == ["c"]
    [huge] = trim(turns("x" * 90 + "END"), Bounds(max_chars=10), now=1000)
    assert huge.content == "x" * 7 + "END"


def test_trim_drops_old_turns() -> None:
    """Turns older than the age bound are forgotten."""
    old = [Turn("user", "ancient", 0.0), Turn("assistant", "reply", 0.0)]
    kept = trim(old + [Turn("user", "fresh", 8 * DAY)], Bounds(max_age=7 * DAY), now=8 * DAY)
    assert [t.content for t in kept] == ["fresh"]


def test_user_state_round_trips_through_json() -> None:
    """A user's state survives being stored as JSON; junk reads as a fresh state."""
    state = UserState("angry", "I am a cook", turns("hi", "hello"))
    assert UserState.from_json(state.to_json(), "happy") == state
    assert UserState.from_json("garbage", "happy") == UserState("happy")


@pytest.mark.parametrize(
    ("args", "expected"),
    [("French: good morning", ("French", "good morning")), ("French good morning", None), (": hi", None), ("German:", None)],
)
def test_parse_translate(args: str, expected: tuple[str, str] | None) -> None:
    """translate wants `<language>: <text>`."""
    assert parse_translate(args) == expected


# --- chat and commands ------------------------------------------------------------------


async def test_chat_turn_gets_the_models_answer_with_the_thread(model: ScriptedModel) -> None:
    """Free text goes to the model with the system prompt and the thread so far."""
    bot = make(model)
    assert await answer(bot, "hello") == "echo: hello"
    assert await answer(bot, "how are you") == "echo: how are you"
    sent_to_model = model.calls[-1]
    assert sent_to_model[0]["role"] == "system" and PERSONALITIES["happy"] in sent_to_model[0]["content"]
    assert [m["content"] for m in sent_to_model[1:]] == ["hello", "echo: hello", "how are you"]


async def test_personality_changes_the_system_prompt(model: ScriptedModel) -> None:
    """personality angry puts the angry prompt in front of the next turn."""
    bot = make(model)
    assert await answer(bot, "personality angry") == "Personality set to angry."
    await answer(bot, "hi")
    assert PERSONALITIES["angry"] in model.calls[-1][0]["content"]
    assert "No personality 'bored'" in await answer(bot, "personality bored")
    assert "Personality: angry. Choices: happy, angry, spanish" in await answer(bot, "personality")


async def test_personalities_from_config_and_rotate(model: ScriptedModel) -> None:
    """Configured personalities join the built-in ones; rotate cycles through all."""
    bot = make(model, bot_personalities={"Pirate": "Talk like a pirate."})
    seen = [await answer(bot, "rotate") for _ in range(4)]
    assert seen == [f"Personality set to {name}." for name in ("angry", "spanish", "pirate", "happy")]
    await answer(bot, "personality pirate")
    await answer(bot, "ahoy")
    assert "Talk like a pirate." in model.calls[-1][0]["content"]


async def test_clear_empties_the_thread(model: ScriptedModel) -> None:
    """After clear the model sees only the new message."""
    bot = make(model)
    await answer(bot, "one")
    assert await answer(bot, "clear") == "Thread cleared (2 messages forgotten)."
    await answer(bot, "two")
    assert [m["content"] for m in model.calls[-1][1:]] == ["two"]


async def test_context_is_set_shown_and_cleared(model: ScriptedModel) -> None:
    """context <text> adds a note to the system prompt until context clear."""
    bot = make(model)
    assert await answer(bot, "context I am a vegetarian cook") == "Context set."
    assert await answer(bot, "context") == "Context: I am a vegetarian cook"
    await answer(bot, "dinner?")
    assert "I am a vegetarian cook" in model.calls[-1][0]["content"]
    assert await answer(bot, "context clear") == "Context cleared."
    await answer(bot, "dinner?")
    assert "vegetarian" not in model.calls[-1][0]["content"]


async def test_threads_of_two_users_stay_apart(model: ScriptedModel) -> None:
    """Each user's thread holds only their own conversation."""
    bot = make(model)
    await answer(bot, "I am alice", "alice")
    await answer(bot, "I am bob", "bob")
    await answer(bot, "who am I?", "alice")
    contents = " ".join(m["content"] for m in model.calls[-1])
    assert "I am alice" in contents and "bob" not in contents


async def test_thread_bounds_hold(model: ScriptedModel) -> None:
    """The model never gets more than BOT_MAX_MESSAGES thread messages; the oldest go first."""
    bot = make(model, bot_max_messages=4)
    for i in range(6):
        await answer(bot, f"message {i}")
    thread = model.calls[-1][1:]
    assert len(thread) <= 4
    assert thread[-1]["content"] == "message 5" and all("message 0" not in m["content"] for m in thread)


async def test_thread_survives_a_restart(model: ScriptedModel) -> None:
    """A new bot over the same state store continues each user's thread and personality."""
    store = MemoryStore()
    await answer(make(model, store), "personality spanish")
    await answer(make(model, store), "remember me")
    await answer(make(model, store), "still there?")
    assert [m["content"] for m in model.calls[-1][1:]] == ["remember me", "echo: remember me", "still there?"]
    assert PERSONALITIES["spanish"] in model.calls[-1][0]["content"]


async def test_summarize_analyze_translate(model: ScriptedModel) -> None:
    """The helper commands call the model with their own instructions and don't grow the thread."""
    bot = make(model)
    assert "Nothing to summarize" in await answer(bot, "summarize")
    await answer(bot, "we talked about cats")
    await answer(bot, "summarize")
    assert "Summarize our conversation" in model.calls[-1][-1]["content"]
    assert "we talked about cats" in model.calls[-1][1]["content"]
    assert await answer(bot, "analyze I love this!") == "echo: I love this!"
    assert "sentiment" in model.calls[-1][0]["content"]
    assert await answer(bot, "translate French: good night") == "echo: good night"
    assert "into French" in model.calls[-1][0]["content"]
    assert (await answer(bot, "translate good night")).startswith("Usage: translate")
    await answer(bot, "next")
    assert [m["content"] for m in model.calls[-1][1:]] == ["we talked about cats", "echo: we talked about cats", "next"]


async def test_help_lists_the_commands_and_chat(model: ScriptedModel) -> None:
    """help describes the bot and every command; `help me write` is a chat turn instead."""
    bot = make(model)
    text = await answer(bot, "help")
    for word in ("personality <name>", "rotate", "clear", "context", "summarize", "analyze <text>", "translate <language>: <text>"):
        assert word in text
    assert await answer(bot, "help me write a poem") == "echo: help me write a poem"


# --- failures and limits ----------------------------------------------------------------


async def test_model_error_gets_an_apology_and_the_thread_is_unchanged(model: ScriptedModel) -> None:
    """A failing model yields a plain apology; the failed turn is not kept; the next works."""
    bot = make(model)
    model.fail = True
    assert await answer(bot, "hello") == APOLOGY
    model.fail = False
    await answer(bot, "again")
    assert [m["content"] for m in model.calls[-1][1:]] == ["again"]


async def test_model_timeout_gets_an_apology(model: ScriptedModel) -> None:
    """A model slower than BOT_TIMEOUT yields the timeout apology."""
    bot = make(model, bot_timeout=0.05)
    model.stall = 5
    assert await answer(bot, "hello") == APOLOGY_TIMEOUT


async def test_rate_limit_and_allow_list(model: ScriptedModel) -> None:
    """Over BOT_RATE_LIMIT a user is asked to slow down; users not in BOT_ALLOW are refused."""
    bot = make(model, bot_rate_limit=2, bot_allow="alice, bob")
    assert await answer(bot, "1") == "echo: 1"
    assert await answer(bot, "2") == "echo: 2"
    assert (await answer(bot, "3")).startswith("Slow down")
    assert "only talks to its allowed users" in await answer(bot, "hi", "eve")
    assert await answer(bot, "hi", "bob") == "echo: hi"


async def test_long_answer_is_split(model: ScriptedModel) -> None:
    """An answer longer than a message arrives as several messages."""
    bot = make(model)
    model.answer = "word " * 1000
    frames = await say(bot, "talk a lot")
    assert len(frames) == 3 and all(len(f["message"]) <= MAX_MESSAGE_CHARS for f in frames)


# --- streaming --------------------------------------------------------------------------


async def test_streaming_sends_coalesced_chunks_then_the_whole_text(model: ScriptedModel) -> None:
    """For a `stream` client: chunk frames in order, then one final frame with the full answer."""
    bot = make(model)
    model.answer = " ".join(f"w{i}" for i in range(60))
    frames = await say(bot, "stream please", features=("stream",))
    chunks, final = frames[:-1], frames[-1]
    sid = final["metadata"]["stream"]["id"]
    assert final["metadata"]["stream"] == {"id": sid, "done": True} and final["message"] == model.answer
    assert len(chunks) >= 2
    assert len(chunks) < 60  # coalesced, not one frame per delta
    assert [c["metadata"]["stream"] for c in chunks] == [{"id": sid, "seq": i, "done": False} for i in range(len(chunks))]
    assert "".join(c["message"] for c in chunks) == model.answer


async def test_long_stream_is_split_into_streams_within_the_limit(model: ScriptedModel) -> None:
    """A streamed answer over the message limit ends as several final frames, each within it."""
    bot = make(model)
    model.deltas = ["abcd " * 10] * 120  # 6000 characters
    frames = await say(bot, "long", features=("stream",))
    finals = [f for f in frames if f["metadata"]["stream"]["done"]]
    assert len(finals) >= 3 and all(len(f["message"]) <= MAX_MESSAGE_CHARS for f in finals)
    assert len({f["metadata"]["stream"]["id"] for f in finals}) == len(finals)
    assert "".join(f["message"] for f in finals).replace(" ", "") == ("abcd" * 1200)


async def test_stream_failing_midway_ends_with_an_apology(model: ScriptedModel) -> None:
    """If the model breaks off mid-stream, the final frame says so and the bot stays up."""
    bot = make(model, bot_timeout=0.2)

    async def broken(messages: list[dict[str, str]]) -> AsyncIterator[str]:
        yield "partial answer " * 5
        raise ConnectionError("cut")

    model.stream = broken  # type: ignore[method-assign]
    frames = await say(bot, "go", features=("stream",))
    assert frames[-1]["metadata"]["stream"]["done"] and frames[-1]["message"].endswith(f"({APOLOGY})")
    assert frames[-1]["message"].startswith("partial answer")


async def test_stream_failing_at_once_gets_a_plain_apology(model: ScriptedModel) -> None:
    """If nothing was streamed yet, a failure is a plain apology message."""
    bot = make(model)
    model.fail = True
    [frame] = await say(bot, "go", features=("stream",))
    assert frame["message"] == APOLOGY and "stream" not in frame["metadata"]


# --- rooms ------------------------------------------------------------------------------


async def in_room(bot: Assistant, text: str, sender: str = "alice", room: str = "#hiking", features: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    metadata = {"sender_features": list(features)} if features else {}
    await bot.receive(Message(sender=sender, destination=room, message=text, metadata=metadata))
    await bot.drain()
    return sent(bot)


async def room_answer(bot: Assistant, text: str, sender: str = "alice", room: str = "#hiking") -> str:
    [frame] = await in_room(bot, text, sender, room)
    assert frame["destination"] == room
    return str(frame["message"])


async def test_a_room_has_one_thread_for_its_members_apart_from_theirs(model: ScriptedModel) -> None:
    """In a room the thread is the room's (each turn says who wrote it); a direct message keeps the user's own thread."""
    bot = make(model)
    assert await room_answer(bot, "@openai I am alice") == "alice: echo: alice: I am alice"
    assert await room_answer(bot, "openai: and I am bob", "bob") == "bob: echo: bob: and I am bob"
    await room_answer(bot, "@openai who is here?", "carol")
    system, *thread = model.calls[-1]
    assert "#hiking" in system["content"]
    assert [m["content"] for m in thread] == [
        "alice: I am alice", "echo: alice: I am alice", "bob: and I am bob", "echo: bob: and I am bob", "carol: who is here?",
    ]  # fmt: skip
    assert await answer(bot, "just us") == "echo: just us"
    assert [m["content"] for m in model.calls[-1][1:]] == ["just us"]
    assert "#hiking" not in model.calls[-1][0]["content"]
    await room_answer(bot, "@openai hello", room="#other")
    assert [m["content"] for m in model.calls[-1][1:]] == ["alice: hello"]


async def test_a_rooms_thread_is_bounded_and_survives_a_restart(model: ScriptedModel) -> None:
    """A room's thread keeps BOT_MAX_MESSAGES turns, in the store under the room's name, for a new bot too."""
    store = MemoryStore()
    bot = make(model, store, bot_max_messages=3)
    for i in range(3):
        await room_answer(bot, f"@openai turn {i}")
    assert len(model.calls[-1]) - 1 <= 3
    assert ("openai", "#hiking") in store.state and ("openai", "alice") not in store.state
    await room_answer(make(model, store, bot_max_messages=3), "@openai after restart", "bob")
    assert [m["content"] for m in model.calls[-1][1:]] == ["alice: turn 2", "echo: alice: turn 2", "bob: after restart"]


async def test_room_commands_act_on_the_rooms_conversation(model: ScriptedModel) -> None:
    """personality, context and clear in a room change the room's state, not the asker's."""
    bot = make(model)
    assert await room_answer(bot, "@openai personality angry") == "alice: Personality set to angry."
    assert await room_answer(bot, "@openai context we plan a hike", "bob") == "bob: Context set."
    await room_answer(bot, "@openai where to?")
    assert PERSONALITIES["angry"] in model.calls[-1][0]["content"] and "we plan a hike" in model.calls[-1][0]["content"]
    await answer(bot, "hi")
    assert PERSONALITIES["angry"] not in model.calls[-1][0]["content"] and "hike" not in model.calls[-1][0]["content"]
    assert await room_answer(bot, "@openai clear", "bob") == "bob: Thread cleared (2 messages forgotten)."


async def test_a_failing_model_in_a_room_apologizes_in_the_room(model: ScriptedModel) -> None:
    """A model error on a room turn: the apology goes to the room, addressed; the room's thread is unchanged."""
    bot = make(model)
    model.fail = True
    assert await room_answer(bot, "@openai hello") == f"alice: {APOLOGY}"
    model.fail = False
    await room_answer(bot, "@openai again")
    assert [m["content"] for m in model.calls[-1][1:]] == ["alice: again"]


async def test_streaming_in_a_room_goes_to_the_room_addressed(model: ScriptedModel) -> None:
    """For a `stream` asker in a room: chunks and the final frame go to the room; the text starts with the asker's name; the thread keeps the answer alone."""
    bot = make(model)
    model.answer = " ".join(f"w{i}" for i in range(60))
    frames = await in_room(bot, "@openai stream please", features=("stream",))
    chunks, final = frames[:-1], frames[-1]
    assert {f["destination"] for f in frames} == {"#hiking"}
    assert len(chunks) >= 2 and final["metadata"]["stream"]["done"] is True
    assert final["message"] == f"alice: {model.answer}" == "".join(c["message"] for c in chunks)
    await in_room(bot, "@openai next", features=("stream",))
    assert model.calls[-1][2] == {"role": "assistant", "content": model.answer}


async def test_an_empty_streamed_answer_in_a_room_says_so(model: ScriptedModel) -> None:
    """A stream that yields nothing ends with the empty-answer note: in a room after the address."""
    bot = make(model)
    model.deltas = [""]
    frames = await in_room(bot, "@openai hm", features=("stream",))
    assert frames[-1]["message"] == "alice: (The model gave an empty answer.)"
    [direct] = await say(bot, "hm", features=("stream",))  # directly: the final frame alone, as before
    assert direct["message"] == "(The model gave an empty answer.)" and direct["metadata"]["stream"]["done"] is True


# --- stop, regenerate, typing, HTTP turns -------------------------------------------------


async def until(probe: Any, what: str, timeout: float = 5.0) -> None:
    """Yield to the loop until `probe()` holds (for states no event announces)."""
    try:
        async with asyncio.timeout(timeout):
            while not probe():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"never saw {what} within {timeout} s") from None


def queued_frames(bot: Assistant) -> list[dict[str, Any]]:
    return [f for f in list(bot.outbox._queue) if f.get("type") != "typing"]  # type: ignore[attr-defined]


async def test_stop_ends_a_streamed_answer_at_once_and_the_thread_keeps_the_part(model: ScriptedModel) -> None:
    """`stop` is not queued behind the answer it stops: the final frame holds what came plus " (stopped)", the thread keeps the part."""
    store = MemoryStore()
    bot = make(model, store)
    model.deltas = [f"w{i} " for i in range(200)]
    model.stall = 0.02
    await bot.receive(Message(sender="alice", destination="openai", message="tell me a long story", metadata={"sender_features": ["stream"]}))
    await until(lambda: len(queued_frames(bot)) >= 2, "some chunks")
    await bot.receive(Message(sender="alice", destination="openai", message="stop"))
    async with asyncio.timeout(2):  # long before the 4 s the whole answer would take
        await bot.drain()
    frames = sent(bot)
    final = frames[-1]
    assert final["metadata"]["stream"]["done"] is True and final["message"].endswith(" (stopped)")
    kept = store.state[("openai", "alice")]["turns"]
    assert kept[-1]["role"] == "assistant" and final["message"] == kept[-1]["content"] + " (stopped)"
    assert 0 < len(kept[-1]["content"]) < len("".join(model.deltas))
    assert bot.stats.requests == 1 and bot.stats.errors == 0


async def test_stop_with_nothing_running_says_so(model: ScriptedModel) -> None:
    """`stop` when no answer is being written tells the user so."""
    assert (await answer(make(model), "stop")).startswith("Nothing to stop")


async def test_regenerate_replaces_the_last_answer(model: ScriptedModel) -> None:
    """`regenerate` drops the last answer, asks again for the last question, and the thread keeps the new answer."""
    store = MemoryStore()
    bot = make(model, store)
    assert "Nothing to regenerate" in await answer(bot, "regenerate")
    await answer(bot, "hello")
    model.answer = "a better hello"
    assert await answer(bot, "regenerate") == "a better hello"
    assert [m["content"] for m in model.calls[-1][1:]] == ["hello"]
    assert [t["content"] for t in store.state[("openai", "alice")]["turns"]] == ["hello", "a better hello"]


async def test_typing_frames_surround_each_model_call(model: ScriptedModel) -> None:
    """The bot says it is working before the model call and that it stopped after the answer (or the apology)."""
    bot = make(model)
    for failing in (False, True):
        model.fail = failing
        await bot.receive(Message(sender="alice", destination="openai", message="hi"))
        await bot.drain()
        frames = sent(bot, typing=True)
        assert frames[0] == {"type": "typing", "destination": "alice", "active": True}
        assert frames[-1] == {"type": "typing", "destination": "alice", "active": False}
        assert frames[1]["type"] == "chat"
    await bot.receive(Message(sender="alice", destination="openai", message="help"))
    await bot.drain()
    assert all(f["type"] != "typing" for f in sent(bot, typing=True))  # no model call, no typing


async def test_an_http_turn_shares_the_users_thread_and_waits_its_turn(model: ScriptedModel) -> None:
    """A turn over HTTP continues the thread of the user's direct messages, and one arriving meanwhile comes after it."""
    bot = make(model)
    await answer(bot, "one")
    answer_two = await bot.http_turn("alice", "two", None)
    assert answer_two.text == "echo: two"
    assert [m["content"] for m in model.calls[-1][1:]] == ["one", "echo: one", "two"]
    model.stall = 0.05
    http = asyncio.create_task(bot.http_turn("alice", "three", None))
    await until(lambda: bot.locks.waiting == 0 and len(model.calls) == 3, "the HTTP turn under way")
    await bot.receive(Message(sender="alice", destination="openai", message="four"))
    await until(lambda: bot.queued == 1, "the chat turn waiting")
    await http
    await bot.drain()
    assert [m["content"] for m in model.calls[-1][1:]] == ["one", "echo: one", "two", "echo: two", "three", "echo: three", "four"]


async def test_the_thread_is_read_again_at_every_turn(model: ScriptedModel) -> None:
    """A thread cleared in the store behind the bot's back (DELETE /history/{user}) is forgotten at the next turn."""
    store = MemoryStore()
    bot = make(model, store)
    await answer(bot, "remember this")
    del store.state[("openai", "alice")]
    await answer(bot, "what did I say?")
    assert [m["content"] for m in model.calls[-1][1:]] == ["what did I say?"]


async def test_a_thread_that_cannot_be_read_is_not_overwritten(model: ScriptedModel) -> None:
    """When the store can't be read, the bot still answers but doesn't save over the thread it could not see."""
    from chatnet.errors import StoreUnavailable

    store = MemoryStore()
    bot = make(model, store)
    await answer(bot, "keep me")
    kept = store.state[("openai", "alice")]

    async def down(owner: str, key: str) -> Any:
        raise StoreUnavailable("down")

    store.get_state = down  # type: ignore[method-assign]
    assert await answer(bot, "and now?") == "echo: and now?"
    assert store.state[("openai", "alice")] == kept


async def test_a_config_with_a_system_prompt_replaces_the_personality(model: ScriptedModel) -> None:
    """A bot defined with `system` sends that prompt, not a personality's, and says personalities don't apply."""
    settings = Settings(_env_file=None)
    config = AssistantConfig(name="pirate", model="m", system="Talk like a pirate.")
    bot = Assistant(settings, config, model, MemoryStore())
    assert await answer(bot, "hi") == "echo: hi"
    assert "Talk like a pirate." in model.calls[-1][0]["content"] and PERSONALITIES["happy"] not in model.calls[-1][0]["content"]
    assert "personalities don't apply" in await answer(bot, "personality angry")
