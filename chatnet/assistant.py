"""The openai bot: an LLM assistant with personalities and a thread per user.

Plain text is a chat turn: the user's thread (bounded by message count, characters and
age) goes to the model under the user's personality and context, and the answer comes
back — streamed as chunks when the user's client announced the `stream` feature, as
whole messages otherwise. Each user's state (personality, context, thread) is kept
through the message API's state routes, so it survives a restart of the bot.

In a room the conversation is the room's: one thread per room (each turn says who
wrote it), bounded like a user's, with its own personality and context, which any
member may change; direct messages keep the user's own thread.

The model is injected (`ChatModel`): `OpenAIModel` speaks to any OpenAI-compatible
server through the SDK's `AsyncOpenAI`. Every call has a timeout; any model error
becomes a plain apology to the user.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Protocol, cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from chatnet.api_client import ApiClient
from chatnet.bot import Bot, RateLimiter, Request, command, serve, split_text
from chatnet.config import Settings
from chatnet.errors import ApiRejected, StoreUnavailable
from chatnet.limits import MAX_MESSAGE_CHARS
from chatnet.personalities import personalities
from chatnet.protocol import STREAM_FEATURE, new_id

BASE_PROMPT: Final = "You are {name}, an assistant in a chat network. Keep answers short and clear; Markdown is fine."

# Streaming: send what has accumulated once it is this long or this old, so a fast
# model does not flood the server with one frame per token.
STREAM_FLUSH_CHARS: Final = 40
STREAM_FLUSH_SECONDS: Final = 0.05
# Users whose state is kept in memory (the rest is re-read from the API when needed).
CACHED_USERS: Final = 1000

APOLOGY: Final = "Sorry, I couldn't get an answer from the model right now. Please try again later."
APOLOGY_TIMEOUT: Final = "Sorry, the model took too long to answer. Please try again later."
EMPTY_ANSWER: Final = "(The model gave an empty answer.)"
ROOM_PROMPT: Final = "You are in the chat room {room}; each user message there starts with the name of whoever wrote it."


class ChatModel(Protocol):
    """A chat-completion model: whole answers or streamed deltas."""

    async def complete(self, messages: list[dict[str, str]]) -> str: ...
    def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]: ...


class StateStore(Protocol):
    """Per-peer JSON state: the message API's state routes (ApiClient)."""

    async def get_state(self, owner: str, key: str) -> Any: ...
    async def put_state(self, owner: str, key: str, value: Any) -> None: ...


class OpenAIModel:
    """ChatModel over the `openai` SDK, for OpenAI or any compatible server."""

    def __init__(self, settings: Settings) -> None:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "unused"  # local servers need none
        self.model = settings.openai_model
        self.client = openai.AsyncOpenAI(
            api_key=key, base_url=settings.openai_base_url, timeout=settings.bot_timeout, max_retries=settings.bot_retries
        )

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


# --- threads -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # "user" | "assistant"
    content: str
    at: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class Bounds:
    max_messages: int = 20
    max_chars: int = 8000
    max_age: float = 7 * 86400.0  # seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> Bounds:
        return cls(settings.bot_max_messages, settings.bot_max_characters, settings.bot_max_days * 86400.0)


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


# --- the bot -------------------------------------------------------------------------


class Assistant(Bot):
    """An AI assistant: write anything to chat, or use a command."""

    description = "an AI assistant. Write anything to chat with it; your conversation is kept in a thread of your own."

    def __init__(
        self,
        settings: Settings,
        model: ChatModel,
        state: StateStore,
        *,
        name: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        allow = [n.strip() for n in settings.bot_allow.split(",") if n.strip()]
        super().__init__(settings, name or settings.bot_name, allow=allow or None, rate_limit=RateLimiter(settings.bot_rate_limit, 60.0))
        self.model = model
        self.store = state
        self.clock = clock
        self.timeout = settings.bot_timeout
        self.bounds = Bounds.from_settings(settings)
        self.personalities = personalities(settings.bot_personalities)
        self.default_personality = next(iter(self.personalities))
        self._states: OrderedDict[str, UserState] = OrderedDict()

    # --- state -----------------------------------------------------------------------

    async def state_of(self, user: str) -> UserState:
        """The state of a conversation: a user's own, or a room's (`#room`)."""
        state = self._states.get(user)
        if state is None:
            try:
                value = await self.store.get_state(self.name, user)  # a user's, or a room's (#room)
            except (StoreUnavailable, ApiRejected) as exc:
                self.log.warning("cannot read %s's thread: %s", user, exc)
                return UserState(self.default_personality)  # not cached: read again next time
            state = UserState.from_json(value, self.default_personality)
            if state.personality not in self.personalities:
                state.personality = self.default_personality
            self._states[user] = state
            if len(self._states) > CACHED_USERS:
                self._states.popitem(last=False)
        self._states.move_to_end(user)
        return state

    async def save(self, user: str, state: UserState) -> None:
        state.turns = trim(state.turns, self.bounds, self.clock())
        try:
            await self.store.put_state(self.name, user, state.to_json())
        except (StoreUnavailable, ApiRejected) as exc:
            self.log.warning("cannot save %s's thread: %s", user, exc)

    def system_prompt(self, state: UserState, room: str | None = None) -> str:
        prompt = f"{BASE_PROMPT.format(name=self.name)} {self.personalities[state.personality]}"
        if room is not None:
            prompt += f" {ROOM_PROMPT.format(room=room)}"
        if state.context:
            prompt += f"\nContext from the {'room' if room is not None else 'user'}: {state.context}"
        return prompt

    def thread_messages(self, state: UserState, room: str | None = None) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system_prompt(state, room)}] + [
            {"role": t.role, "content": t.content} for t in state.turns
        ]

    # --- chat ------------------------------------------------------------------------

    async def default(self, req: Request) -> str | None:
        """A chat turn: the thread plus this message to the model, the answer back."""
        if not req.text:
            return "Say something, or try 'help'."
        state = await self.state_of(req.conversation)
        said = f"{req.sender}: {req.text}" if req.room else req.text  # in a room, who said it
        state.turns = trim([*state.turns, Turn("user", said, self.clock())], self.bounds, self.clock())
        answer = await self.ask(req, self.thread_messages(state, req.room))
        if answer is None:
            if state.turns and state.turns[-1].content == said:
                state.turns.pop()  # keep the thread a clean question/answer sequence
            return None
        state.turns.append(Turn("assistant", answer, self.clock()))
        await self.save(req.conversation, state)
        return None

    async def ask(self, req: Request, messages: list[dict[str, str]]) -> str | None:
        """Send `messages` to the model and the answer to the user (streamed when the
        user's client wants it). None, after an apology to the user, on any model error."""
        try:
            if STREAM_FEATURE in req.features:
                return await self._stream(req, messages)
            async with asyncio.timeout(self.timeout):
                answer = await self.model.complete(messages)
        except Exception as exc:
            self.reply(req, self._apologize(exc))
            return None
        self.reply(req, answer or EMPTY_ANSWER)
        return answer

    def _apologize(self, exc: BaseException) -> str:
        if isinstance(exc, (TimeoutError, openai.APITimeoutError)):
            self.log.warning("model call timed out after %s s", self.timeout)
            return APOLOGY_TIMEOUT
        if isinstance(exc, openai.OpenAIError):  # the provider's trouble: no traceback needed
            self.log.warning("model call failed: %s", exc)
        else:
            self.log.exception("model call failed")
        return APOLOGY

    async def _stream(self, req: Request, messages: list[dict[str, str]]) -> str | None:
        out = StreamOut(self, req)
        deltas = aiter(self.model.stream(messages))
        try:
            while True:
                try:
                    async with asyncio.timeout(self.timeout):  # per chunk: a stalled stream ends
                        delta = await anext(deltas)
                except StopAsyncIteration:
                    break
                out.add(delta)
        except Exception as exc:
            if not out.started:
                raise
            out.finish(f"\n\n({self._apologize(exc)})")
            return None
        finally:
            await _aclose(deltas)
        out.finish()
        return out.whole

    # --- commands --------------------------------------------------------------------

    @command("personality <name>", args=True)
    async def cmd_personality(self, req: Request) -> str:
        """Switch personality (no name: show the current one and the choices)."""
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
        state = await self.state_of(req.conversation)
        names = list(self.personalities)
        state.personality = names[(names.index(state.personality) + 1) % len(names)]
        await self.save(req.conversation, state)
        return f"Personality set to {state.personality}."

    @command("clear", args=False)
    async def cmd_clear(self, req: Request) -> str:
        """Forget our conversation (personality and context stay)."""
        state = await self.state_of(req.conversation)
        count = len(state.turns)
        state.turns = []
        await self.save(req.conversation, state)
        return f"Thread cleared ({count} messages forgotten)."

    @command("context <text> | context | context clear", args=True)
    async def cmd_context(self, req: Request) -> str:
        """Set, show or clear a note the model always sees."""
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


async def run_assistant(settings: Settings) -> None:
    """The openai bot as a process: the model, the API for threads, until a signal."""
    model = OpenAIModel(settings)
    try:
        async with ApiClient.from_settings(settings) as api:
            await serve(Assistant(settings, model, api))
    finally:
        await model.close()
