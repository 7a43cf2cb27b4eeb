"""The LLM assistant bot: personalities, a thread per user, answers streamed or whole.

Plain text is a chat turn: the user's thread (bounded by message count, characters and
age) goes to the model under the bot's system prompt — its `system`, or the user's
personality — and the user's context, and the answer comes back: streamed as chunks
when the user's client announced the `stream` feature, as whole messages otherwise.
Each conversation's state (personality, context, thread) is kept through the message
API's state routes (owner = the bot, key = the user or `#room`) and read again at every
turn, so a turn taken over HTTP (`http_turn`) and one over the network see each other,
and a DELETE /history/{user} really forgets. Turns of one conversation are taken one at
a time (`TurnLocks`), whichever way they come.

In a room the conversation is the room's: one thread per room (each turn says who
wrote it), bounded like a user's, with its own personality and context, which any
member may change; direct messages keep the user's own thread.

Each bot is built from an `AssistantConfig` — from the host's settings for the old
single bot, or from a bot definition of the API (`chatnet.bot_host`). The model is
injected (`ChatModel`): `OpenAIModel` speaks to any OpenAI-compatible server through
the SDK's `AsyncOpenAI`. Every call has a timeout; any model error becomes a plain
apology to the user, and `ModelStats` keeps the figures the host reports. While the
model works the bot says so (`typing` frames); `stop` ends the answer being written
(the thread keeps what came so far), `regenerate` asks again for the last question.
"""

from __future__ import annotations

import asyncio
import enum
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Protocol, cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from chatnet.bot import Bot, Request, command, split_text
from chatnet.bot_limits import RateLimiter
from chatnet.config import Settings
from chatnet.errors import ApiRejected, StoreUnavailable
from chatnet.limits import MAX_MESSAGE_CHARS
from chatnet.personalities import personalities
from chatnet.protocol import STREAM_FEATURE, format_timestamp, new_id

BASE_PROMPT: Final = "You are {name}, an assistant in a chat network. Keep answers short and clear; Markdown is fine."

# Streaming: send what has accumulated once it is this long or this old, so a fast
# model does not flood the server with one frame per token.
STREAM_FLUSH_CHARS: Final = 40
STREAM_FLUSH_SECONDS: Final = 0.05
# Model calls whose latency the p50 is taken over: recent enough to show a provider
# that has just become slow.
LATENCY_WINDOW: Final = 100

APOLOGY: Final = "Sorry, I couldn't get an answer from the model right now. Please try again later."
APOLOGY_TIMEOUT: Final = "Sorry, the model took too long to answer. Please try again later."
EMPTY_ANSWER: Final = "(The model gave an empty answer.)"
STOPPED: Final = "(stopped)"
ROOM_PROMPT: Final = "You are in the chat room {room}; each user message there starts with the name of whoever wrote it."
# The error class reported for a call that ran out of time, whichever layer noticed.
TIMEOUT_ERROR: Final = "timeout"


class ChatModel(Protocol):
    """A chat-completion model: whole answers or streamed deltas."""

    async def complete(self, messages: list[dict[str, str]]) -> str: ...
    def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]: ...


class StateStore(Protocol):
    """Per-peer JSON state: the message API's state routes (ApiClient)."""

    async def get_state(self, owner: str, key: str) -> Any: ...
    async def put_state(self, owner: str, key: str, value: Any) -> None: ...


# --- configuration ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bounds:
    max_messages: int = 20
    max_chars: int = 8000
    max_age: float = 7 * 86400.0  # seconds


@dataclass(frozen=True)
class AssistantConfig:
    """Everything that makes one assistant bot what it is. `base_url` None: OpenAI's
    own; `api_key` None: none sent (a local server needs none). Never logged whole: the
    key is left out of its repr."""

    name: str
    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    system: str | None = None  # replaces the personality prompt (and the personality commands)
    personality: str | None = None  # the default personality (None: the first)
    personalities: Mapping[str, str] = field(default_factory=lambda: personalities({}))
    respond_to: frozenset[str] = frozenset()  # lower-cased names; empty: everyone
    bounds: Bounds = Bounds()
    rate_limit: int = 20  # messages per user per minute
    timeout: float = 30.0  # seconds per model call (per chunk when streaming)
    retries: int = 1  # the SDK's retries of a failed request
    rooms: tuple[str, ...] = ()  # joined at every login
    version: int = 0  # the definition's version (a change restarts the bot)

    @classmethod
    def from_settings(cls, settings: Settings) -> AssistantConfig:
        """The single bot of the host's settings (BOT_*, OPENAI_*)."""
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return cls(
            name=settings.bot_name, model=settings.openai_model, base_url=settings.openai_base_url, api_key=key,
            personalities=personalities(settings.bot_personalities),
            respond_to=frozenset(n.strip().lower() for n in settings.bot_allow.split(",") if n.strip()),
            bounds=Bounds(settings.bot_max_messages, settings.bot_max_characters, settings.bot_max_days * 86400.0),
            rate_limit=settings.bot_rate_limit, timeout=settings.bot_timeout, retries=settings.bot_retries,
        )  # fmt: skip

    @property
    def has_provider(self) -> bool:
        """Whether there is a model server to ask: a URL of its own, or OpenAI's with a key."""
        return self.base_url is not None or self.api_key is not None


class OpenAIModel:
    """ChatModel over the `openai` SDK, for OpenAI or any compatible server."""

    def __init__(self, config: AssistantConfig) -> None:
        self.model = config.model
        self.client = openai.AsyncOpenAI(
            api_key=config.api_key or "unused",  # local servers need none, the SDK wants one
            base_url=config.base_url, timeout=config.timeout, max_retries=config.retries,
        )  # fmt: skip

    async def complete(self, messages: list[dict[str, str]]) -> str:
        response = await self.client.chat.completions.create(model=self.model, messages=_sdk_messages(messages))
        return response.choices[0].message.content or "" if response.choices else ""

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        chunks = await self.client.chat.completions.create(model=self.model, messages=_sdk_messages(messages), stream=True)
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    async def close(self) -> None:
        await self.client.close()


def _sdk_messages(messages: list[dict[str, str]]) -> list[ChatCompletionMessageParam]:
    """Our {"role", "content"} dicts are the SDK's message params (TypedDicts it can't infer)."""
    return cast("list[ChatCompletionMessageParam]", messages)


# --- figures -------------------------------------------------------------------------


def error_class(exc: BaseException) -> str:
    """What the status says went wrong: "timeout", or the exception's class
    ("APIConnectionError", "AuthenticationError", "InternalServerError", …)."""
    if isinstance(exc, (TimeoutError, openai.APITimeoutError)):
        return TIMEOUT_ERROR
    return type(exc).__name__


@dataclass
class ModelStats:
    """A bot's model calls so far: what its status reports."""

    clock: Callable[[], float] = time.time
    requests: int = 0
    errors: int = 0
    model_ok: bool | None = None  # the last call's outcome (None: no call yet)
    last_error: str | None = None
    last_error_at: float | None = None  # epoch seconds
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))  # ms

    def ok(self, ms: float) -> None:
        self.requests += 1
        self.model_ok = True
        self.latencies.append(ms)

    def failed(self, error: str) -> None:
        self.requests += 1
        self.errors += 1
        self.model_ok = False
        self.last_error, self.last_error_at = error, self.clock()

    def stopped(self) -> None:
        """Stopped by its user: served, and says nothing about the provider."""
        self.requests += 1

    @property
    def p50_ms(self) -> float | None:
        return round(statistics.median(self.latencies), 1) if self.latencies else None

    def report(self, name: str, online: bool, queued: int) -> dict[str, Any]:
        """The status fields of PUT /bot-host/status."""
        return {
            "name": name, "online": online, "model_ok": self.model_ok,
            "last_error": self.last_error,
            "last_error_at": format_timestamp(self.last_error_at) if self.last_error_at is not None else None,
            "requests": self.requests, "errors": self.errors, "p50_ms": self.p50_ms, "queued": queued,
        }  # fmt: skip


# --- threads -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # "user" | "assistant"
    content: str
    at: float  # epoch seconds


def trim(turns: list[Turn], bounds: Bounds, now: float) -> list[Turn]:
    """The newest turns that fit every bound; a thread never starts with an answer
    whose question was dropped."""
    kept = [turn for turn in turns if now - turn.at <= bounds.max_age]
    kept = kept[-bounds.max_messages :] if bounds.max_messages > 0 else []
    total = sum(len(turn.content) for turn in kept)
    while len(kept) > 1 and total > bounds.max_chars:
        total -= len(kept.pop(0).content)
    while len(kept) > 1 and kept[0].role != "user":
        kept.pop(0)
    if kept and total > bounds.max_chars:
        # One turn longer than the whole budget: keep its end (the freshest words).
        kept[0] = replace(kept[0], content=kept[0].content[-bounds.max_chars :])
    return kept


@dataclass
class UserState:
    personality: str
    context: str | None = None
    turns: list[Turn] = field(default_factory=list)
    # False when the store could not be read: saving it would overwrite the real thread.
    loaded: bool = field(default=True, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"personality": self.personality, "context": self.context, "turns": [asdict(t) for t in self.turns]}

    @classmethod
    def from_json(cls, value: Any, default_personality: str) -> UserState:
        if not isinstance(value, dict):
            return cls(default_personality)
        turns = [
            Turn(str(t["role"]), str(t["content"]), float(t["at"]))
            for t in value.get("turns", [])
            if isinstance(t, dict) and {"role", "content", "at"} <= t.keys()
        ]
        context = value.get("context")
        return cls(str(value.get("personality") or default_personality), context if isinstance(context, str) else None, turns)


def parse_translate(args: str) -> tuple[str, str] | None:
    """`<language>: <text>` → (language, text), or None when either is missing."""
    language, colon, text = args.partition(":")
    language, text = language.strip(), text.strip()
    return (language, text) if colon and language and text else None


class TurnLocks:
    """One lock per conversation, held for a whole turn (read the thread, ask the model,
    save), so turns arriving over HTTP and over the network meanwhile wait their turn.
    A lock lives only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        key = key.lower()
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    @property
    def waiting(self) -> int:
        """Turns waiting for a conversation another turn holds."""
        return sum(users - 1 if lock.locked() else users for lock, users in self._locks.values())


class Outcome(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Answer:
    """What a model call came to: the text (so far, when it failed or was stopped)
    and, for a failure, the apology the user is given."""

    outcome: Outcome
    text: str
    apology: str = ""


class Sink(Protocol):
    """Where a streamed answer goes as the model writes it (a chat stream, an SSE response)."""

    async def delta(self, text: str) -> None: ...


@dataclass(eq=False)
class Generation:
    """A model call under way, so `stop` can end it."""

    task: asyncio.Task[None]
    stopped: bool = False

    def stop(self) -> None:
        self.stopped = True
        self.task.cancel()


# --- the bot -------------------------------------------------------------------------


class Assistant(Bot):
    """An AI assistant: write anything to chat, or use a command."""

    description = "an AI assistant. Write anything to chat with it; your conversation is kept in a thread of your own."

    def __init__(
        self,
        settings: Settings,
        config: AssistantConfig,
        model: ChatModel,
        state: StateStore,
        *,
        stats: ModelStats | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings, config.name, allow=config.respond_to or None, rate_limit=RateLimiter(config.rate_limit, 60.0))
        self.config = config
        self.model = model
        self.store = state
        self.clock = clock
        self.stats = stats if stats is not None else ModelStats(clock)
        self.timeout = config.timeout
        self.bounds = config.bounds
        self.personalities = dict(config.personalities)
        first = next(iter(self.personalities))
        self.default_personality = config.personality if config.personality in self.personalities else first
        self.locks = TurnLocks()
        self._running: dict[str, set[Generation]] = {}  # conversation key -> its model calls under way

    async def on_connected(self) -> None:
        for room in self.config.rooms:
            self.send_command("join", room)

    @property
    def queued(self) -> int:
        return super().queued + self.locks.waiting

    # --- state -----------------------------------------------------------------------

    async def state_of(self, user: str) -> UserState:
        """The state of a conversation — a user's own, or a room's (`#room`) — as the
        store has it now."""
        try:
            value = await self.store.get_state(self.name, user)
        except (StoreUnavailable, ApiRejected) as exc:
            self.log.warning("cannot read %s's thread: %s", user, exc)
            return UserState(self.default_personality, loaded=False)
        state = UserState.from_json(value, self.default_personality)
        if state.personality not in self.personalities:
            state.personality = self.default_personality
        return state

    async def save(self, user: str, state: UserState) -> None:
        if not state.loaded:
            self.log.warning("not saving %s's thread: it could not be read", user)
            return
        state.turns = trim(state.turns, self.bounds, self.clock())
        try:
            await self.store.put_state(self.name, user, state.to_json())
        except (StoreUnavailable, ApiRejected) as exc:
            self.log.warning("cannot save %s's thread: %s", user, exc)

    def system_prompt(self, state: UserState, room: str | None = None) -> str:
        instructions = self.config.system if self.config.system is not None else self.personalities[state.personality]
        prompt = f"{BASE_PROMPT.format(name=self.name)} {instructions}"
        if room is not None:
            prompt += f" {ROOM_PROMPT.format(room=room)}"
        if state.context:
            prompt += f"\nContext from the {'room' if room is not None else 'user'}: {state.context}"
        return prompt

    def thread_messages(self, state: UserState, room: str | None = None) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system_prompt(state, room)}] + [
            {"role": t.role, "content": t.content} for t in state.turns
        ]

    def keep(self, state: UserState, answer: Answer) -> bool:
        """Add the answer to the thread (that ends with its question); False when there
        is nothing to keep (a failure: the question goes too, so the thread stays a clean
        question/answer sequence)."""
        if answer.outcome is Outcome.FAILED:
            if state.turns and state.turns[-1].role == "user":
                state.turns.pop()
            return False
        text = answer.text if answer.outcome is Outcome.OK else answer.text or STOPPED
        state.turns.append(Turn("assistant", text, self.clock()))
        return True

    # --- model calls -----------------------------------------------------------------

    async def generate(self, key: str, messages: list[dict[str, str]], sink: Sink | None = None) -> Answer:
        """One model call for the conversation `key`, streamed into `sink` when there is
        one. Never raises for the model's trouble: that is an Answer FAILED with its
        apology (and counted); `stop(key)` makes it an Answer STOPPED with what came so
        far. A cancellation of the caller cancels the call too."""
        parts: list[str] = []
        gen = Generation(asyncio.create_task(self._call(messages, sink, parts), name=f"{self.name}-model"))
        running = self._running.setdefault(key.lower(), set())
        running.add(gen)
        started = time.monotonic()
        try:
            await gen.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not gen.stopped or (current is not None and current.cancelling()):
                raise
            self.stats.stopped()
            return Answer(Outcome.STOPPED, "".join(parts))
        except Exception as exc:
            self.stats.failed(error_class(exc))
            return Answer(Outcome.FAILED, "".join(parts), self._apologize(exc))
        finally:
            running.discard(gen)
            if not running and self._running.get(key.lower()) is running:
                del self._running[key.lower()]
        self.stats.ok((time.monotonic() - started) * 1000)
        return Answer(Outcome.OK, "".join(parts))

    async def _call(self, messages: list[dict[str, str]], sink: Sink | None, parts: list[str]) -> None:
        if sink is None:
            async with asyncio.timeout(self.timeout):
                parts.append(await self.model.complete(messages))
            return
        deltas = aiter(self.model.stream(messages))
        try:
            while True:
                try:
                    async with asyncio.timeout(self.timeout):  # per chunk: a stalled stream ends
                        delta = await anext(deltas)
                except StopAsyncIteration:
                    return
                parts.append(delta)
                await sink.delta(delta)
        finally:
            await _aclose(deltas)

    def stop(self, key: str) -> bool:
        """End the model calls under way for the conversation `key`; False: there were none."""
        running = self._running.get(key.lower(), set())
        for gen in list(running):
            gen.stop()
        return bool(running)

    def _apologize(self, exc: BaseException) -> str:
        if isinstance(exc, (TimeoutError, openai.APITimeoutError)):
            self.log.warning("model call timed out after %s s", self.timeout)
            return APOLOGY_TIMEOUT
        if isinstance(exc, openai.OpenAIError):  # the provider's trouble: no traceback needed
            self.log.warning("model call failed: %s", exc)
        else:
            self.log.exception("model call failed")
        return APOLOGY

    async def ask(self, req: Request, messages: list[dict[str, str]]) -> Answer:
        """Send `messages` to the model and the answer to the user: streamed when the
        user's client wants it, else whole; an apology on any model error. The user is
        told the model is working while it is."""
        self.typing(req.answer_to, True)
        try:
            if STREAM_FEATURE in req.features:
                return await self._stream(req, messages)
            answer = await self.generate(req.conversation, messages)
            if answer.outcome is Outcome.FAILED:
                self.reply(req, answer.apology)
            else:
                self.reply(req, answer.text or (STOPPED if answer.outcome is Outcome.STOPPED else EMPTY_ANSWER))
            return answer
        finally:
            self.typing(req.answer_to, False)

    async def _stream(self, req: Request, messages: list[dict[str, str]]) -> Answer:
        out = StreamOut(self, req)
        answer = await self.generate(req.conversation, messages, out)
        if answer.outcome is Outcome.OK:
            out.finish()
        elif answer.outcome is Outcome.STOPPED:
            out.finish(f" {STOPPED}" if out.whole else STOPPED)
        elif out.started:
            out.finish(f"\n\n({answer.apology})")
        else:
            self.reply(req, answer.apology)  # nothing shown yet: a plain apology
        return answer

    # --- chat ------------------------------------------------------------------------

    async def default(self, req: Request) -> str | None:
        """A chat turn: the thread plus this message to the model, the answer back."""
        if not req.text:
            return "Say something, or try 'help'."
        said = f"{req.sender}: {req.text}" if req.room else req.text  # in a room, who said it
        async with self.locks.hold(req.conversation):
            state = await self.state_of(req.conversation)
            state.turns = trim([*state.turns, Turn("user", said, self.clock())], self.bounds, self.clock())
            if self.keep(state, await self.ask(req, self.thread_messages(state, req.room))):
                await self.save(req.conversation, state)
        return None

    async def http_turn(self, user: str, text: str, sink: Sink | None) -> Answer:
        """A chat turn that came over HTTP: the same thread as the user's direct
        messages, the answer streamed into `sink` (None: whole). A cancelled turn (the
        client went away) keeps what came so far, as a stopped one does."""
        async with self.locks.hold(user):
            state = await self.state_of(user)
            state.turns = trim([*state.turns, Turn("user", text, self.clock())], self.bounds, self.clock())
            partial = PartialSink(sink)
            try:
                answer = await self.generate(user, self.thread_messages(state), partial if sink is not None else None)
            except asyncio.CancelledError:
                self.keep(state, Answer(Outcome.STOPPED, partial.text))
                self.spawn(self.save(user, state), f"save-{user}")  # not awaited: this task is being cancelled
                raise
            if self.keep(state, answer):
                await self.save(user, state)
            return answer

    # --- commands --------------------------------------------------------------------

    @command("stop", args=False, immediate=True)
    async def cmd_stop(self, req: Request) -> str | None:
        """Stop the answer being written (what came so far is kept)."""
        return None if self.stop(req.conversation) else "Nothing to stop: no answer is being written."

    @command("regenerate", args=False)
    async def cmd_regenerate(self, req: Request) -> str | None:
        """Drop my last answer and answer your last message again."""
        async with self.locks.hold(req.conversation):
            state = await self.state_of(req.conversation)
            if state.turns and state.turns[-1].role == "assistant":
                state.turns.pop()
            if not state.turns:
                return "Nothing to regenerate yet: our thread is empty."
            if self.keep(state, await self.ask(req, self.thread_messages(state, req.room))):
                await self.save(req.conversation, state)
        return None

    @command("personality <name>", args=True)
    async def cmd_personality(self, req: Request) -> str:
        """Switch personality (no name: show the current one and the choices)."""
        if self.config.system is not None:
            return f"{self.name} has a prompt of its own; personalities don't apply."
        async with self.locks.hold(req.conversation):
            state = await self.state_of(req.conversation)
            choices = ", ".join(self.personalities)
            wanted = req.args.lower()
            if not wanted:
                return f"Personality: {state.personality}. Choices: {choices}."
            if wanted not in self.personalities:
                return f"No personality '{req.args}'. Choices: {choices}."
            state.personality = wanted
            await self.save(req.conversation, state)
        return f"Personality set to {wanted}."

    @command("rotate", args=False)
    async def cmd_rotate(self, req: Request) -> str:
        """Switch to the next personality."""
        if self.config.system is not None:
            return f"{self.name} has a prompt of its own; personalities don't apply."
        async with self.locks.hold(req.conversation):
            state = await self.state_of(req.conversation)
            names = list(self.personalities)
            state.personality = names[(names.index(state.personality) + 1) % len(names)]
            await self.save(req.conversation, state)
        return f"Personality set to {state.personality}."

    @command("clear", args=False)
    async def cmd_clear(self, req: Request) -> str:
        """Forget our conversation (personality and context stay)."""
        async with self.locks.hold(req.conversation):
            state = await self.state_of(req.conversation)
            count = len(state.turns)
            state.turns = []
            await self.save(req.conversation, state)
        return f"Thread cleared ({count} messages forgotten)."

    @command("context <text> | context | context clear", args=True)
    async def cmd_context(self, req: Request) -> str:
        """Set, show or clear a note the model always sees."""
        async with self.locks.hold(req.conversation):
            state = await self.state_of(req.conversation)
            if not req.args:
                return f"Context: {state.context}" if state.context else "No context set. Use 'context <text>'."
            if req.args.lower() == "clear":
                state.context = None
                await self.save(req.conversation, state)
                return "Context cleared."
            state.context = req.args[:MAX_MESSAGE_CHARS]
            await self.save(req.conversation, state)
        return "Context set."

    @command("summarize", args=False)
    async def cmd_summarize(self, req: Request) -> None:
        """Summarize our conversation so far."""
        state = await self.state_of(req.conversation)
        if not state.turns:
            self.reply(req, "Nothing to summarize yet: our thread is empty.")
            return
        ask = {"role": "user", "content": "Summarize our conversation so far in a few sentences."}
        await self.ask(req, [*self.thread_messages(state, req.room), ask])

    @command("analyze <text>", args=True)
    async def cmd_analyze(self, req: Request) -> None:
        """The sentiment and key points of <text>."""
        if not req.args:
            self.reply(req, "Usage: analyze <text>")
            return
        system = (
            "Analyze the user's text. Give its overall sentiment (positive, negative, neutral or mixed) "
            "in one line, then its key points as a short bulleted list."
        )
        await self.ask(req, [{"role": "system", "content": system}, {"role": "user", "content": req.args}])

    @command("translate <language>: <text>", args=True)
    async def cmd_translate(self, req: Request) -> None:
        """Translate <text> into <language>."""
        parsed = parse_translate(req.args)
        if parsed is None:
            self.reply(req, "Usage: translate <language>: <text>   (e.g. translate French: good morning)")
            return
        language, text = parsed
        system = f"Translate the user's text into {language}. Reply with the translation only."
        await self.ask(req, [{"role": "system", "content": system}, {"role": "user", "content": text}])


class PartialSink:
    """Passes deltas on to `sink`, remembering what has been passed (what a cancelled
    turn keeps)."""

    def __init__(self, sink: Sink | None) -> None:
        self.sink = sink
        self.text = ""

    async def delta(self, text: str) -> None:
        self.text += text
        if self.sink is not None:
            await self.sink.delta(text)


class StreamOut:
    """Sends a streamed answer: coalesced chunk frames, then one final frame with the
    whole text. An answer longer than a message is sent as several streams in a row,
    each final frame within the message limit. In a room it goes to the room and starts
    with whom it answers (`alice: `); `whole` is the model's text alone."""

    def __init__(self, bot: Bot, req: Request, clock: Callable[[], float] = time.monotonic) -> None:
        self.bot = bot
        self.req = req
        self.clock = clock
        self.whole = ""
        self.part = ""  # the current stream's text, sent so far as chunks
        self.pending = req.lead  # received (or the room's address), not yet sent
        self.sid = new_id()
        self.seq = 0
        self.started = False
        self.flushed_at = clock()

    async def delta(self, text: str) -> None:
        self.add(text)

    def add(self, delta: str) -> None:
        self.whole += delta
        self.pending += delta
        if len(self.pending) >= STREAM_FLUSH_CHARS or self.clock() - self.flushed_at >= STREAM_FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        if len(self.part) + len(self.pending) > MAX_MESSAGE_CHARS:
            *done, rest = split_text(self.part + self.pending)
            for piece in done:
                self._final(piece)
                self.sid, self.seq = new_id(), 0
            self.part, self.pending = "", rest
        self._chunk(self.pending)
        self.part += self.pending
        self.pending = ""
        self.flushed_at = self.clock()

    def finish(self, note: str = "") -> None:
        """The final frame; `note` (an apology after a broken stream) goes at the end."""
        if not self.whole and not note:
            note = EMPTY_ANSWER
        self.flush()
        if note and len(self.part) + len(note) > MAX_MESSAGE_CHARS:
            self._final(self.part)
            self.sid, self.seq, self.part, note = new_id(), 0, "", note.strip()
        self._final(self.part + note)

    def _chunk(self, text: str) -> None:
        self.started = True
        self._send(text, {"id": self.sid, "seq": self.seq, "done": False})
        self.seq += 1

    def _final(self, text: str) -> None:
        self._send(text, {"id": self.sid, "done": True})

    def _send(self, text: str, stream: dict[str, Any]) -> None:
        self.bot.send(self.req.answer_to, text, {"reply_to": self.req.message.id, "stream": stream})


async def _aclose(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        with suppress(Exception):  # closing a broken stream must not hide the real outcome
            await close()
