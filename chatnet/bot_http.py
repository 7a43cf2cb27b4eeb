"""HTTP chat with any bot of the host, on BOTS_HOST:BOTS_PORT (the message API passes
`POST /bots/{name}/chat[/simple]` on to it: one front door).

    POST /bots/{name}/chat         {"user": "alice", "message": "hi"}  → text/event-stream
        data: {"content": "Hel", "done": false}
        data: {"content": "lo!", "done": false}
        data: {"content": "", "done": true}            (stopped: also "stopped": true)
        data: [DONE]
      a model failure, after whatever came:  data: {"error": "<apology>", "done": true}
    POST /bots/{name}/chat/simple  → {"content": "...", "bot": name, "user": user}; failure 502 {"error": ...}
    GET /health                    → {"status": "ok", "bots": n}   (no token: what the launcher probes)

Refusals are FastAPI-shaped, `{"detail": ...}`: 401 without the bearer token (the API
token, when one is set), 404 no such bot, 503 a bot without a model provider, 422 a
bad body, 403 a user the bot's allow-list refuses, 429 past the bot's rate limit (the
same budget as the user's chat). A turn here is a turn of the user's thread with the
bot (`Assistant.http_turn`: the same thread as their direct messages, one turn at a
time), and both its messages are archived as the direct-message history between user
and bot, so GET /history/{user}/{bot} and the page show them. The client going away
cancels the handler (aiohttp's handler cancellation) and with it the model call; the
thread keeps what came so far, as after `stop`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from chatnet.assistant import EMPTY_ANSWER, STOPPED, Answer, Assistant, Outcome
from chatnet.bot import split_text
from chatnet.bot_host import BotHost
from chatnet.config import Settings
from chatnet.errors import ApiRejected, StoreUnavailable
from chatnet.limits import MAX_MESSAGE_CHARS
from chatnet.protocol import MessageType, dumps, format_timestamp, is_valid_name, message_dict, new_id

logger = logging.getLogger("chatnet.bot_http")

SSE_DONE: Final = b"data: [DONE]\n\n"
# The log line the launcher and the tests wait for (chatnet.launcher.BOTS_LISTENING).
LISTENING: Final = "bot chat API on http://%s:%d (POST /bots/{name}/chat)"
# How long the server waits for handlers under way when it stops.
SHUTDOWN_TIMEOUT: Final = 2.0
HOST_KEY: Final = web.AppKey("host", BotHost)


class Refused(Exception):
    """A request refused: its status and the reason said back."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


class SseSink:
    """Writes each delta as an event. A write that fails (the client went away)
    cancels the handler, which cancels the model call."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.handler = asyncio.current_task()
        self.text = ""  # sent so far

    async def delta(self, text: str) -> None:
        self.text += text
        try:
            await self.response.write(sse({"content": text, "done": False}))
        except (ConnectionError, RuntimeError):
            if self.handler is not None:
                self.handler.cancel()


# --- the requests -------------------------------------------------------------------------


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _host(request: web.Request) -> BotHost:
    return request.app[HOST_KEY]


def guard(token: str | None) -> Middleware:
    """The bearer token (but for /health), and refusals as `{"detail": ...}`."""
    wanted = f"Bearer {token}".encode() if token is not None else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            given = request.headers.get("Authorization", "").encode()
            if wanted is not None and request.path != "/health" and not hmac.compare_digest(given, wanted):
                raise Refused(401, "missing or wrong bearer token (the API token)")
            return await handler(request)
        except Refused as refused:
            return web.json_response({"detail": refused.detail}, status=refused.status)

    return middleware


async def _turn(request: web.Request) -> tuple[Assistant, str, str]:
    """The bot, the user and the message of a chat request, or Refused."""
    name = request.match_info["name"]
    hosted = _host(request).bot(name)
    if hosted is None:
        raise Refused(404, f"no bot named {name!r}")
    bot = hosted.bot
    if bot is None:
        raise Refused(503, f"{hosted.config.name} has no model provider (give it a base_url or an api_key)")
    try:
        body = await request.json()
    except ValueError:
        raise Refused(422, 'the body must be JSON: {"user": name, "message": text}') from None
    user, message = (body.get("user"), body.get("message")) if isinstance(body, dict) else (None, None)
    if not isinstance(user, str) or not is_valid_name(user):
        raise Refused(422, "user: a chat name is required")
    if not isinstance(message, str) or not message.strip():
        raise Refused(422, "message: some text is required")
    if len(message) > MAX_MESSAGE_CHARS:
        raise Refused(422, f"message: at most {MAX_MESSAGE_CHARS} characters")
    if not bot.allows(user):
        raise Refused(403, f"{bot.name} only talks to its allowed users")
    if bot.rate_limit is not None and not bot.rate_limit.allow(user):
        raise Refused(429, "too many messages in a minute; try again shortly")
    return bot, user, message.strip()


async def chat(request: web.Request) -> web.StreamResponse:
    """A turn answered as server-sent events."""
    bot, user, message = await _turn(request)
    asked_at = time.time()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    sink = SseSink(response)
    try:
        answer = await bot.http_turn(user, message, sink)
    except asyncio.CancelledError:
        archive(request, bot, user, message, asked_at, Answer(Outcome.STOPPED, sink.text))
        raise
    if answer.outcome is Outcome.FAILED:
        await response.write(sse({"error": answer.apology, "done": True}))
    else:
        await response.write(sse({"content": "", "done": True, **({"stopped": True} if answer.outcome is Outcome.STOPPED else {})}))
    await response.write(SSE_DONE)
    await response.write_eof()
    archive(request, bot, user, message, asked_at, answer)
    return response


async def chat_simple(request: web.Request) -> web.Response:
    """A turn answered as one JSON object."""
    bot, user, message = await _turn(request)
    asked_at = time.time()
    answer = await bot.http_turn(user, message, None)
    archive(request, bot, user, message, asked_at, answer)
    if answer.outcome is Outcome.FAILED:
        return web.json_response({"error": answer.apology, "bot": bot.name, "user": user}, status=502)
    shown: dict[str, Any] = {"content": shown_text(answer), "bot": bot.name, "user": user}
    if answer.outcome is Outcome.STOPPED:
        shown["stopped"] = True
    return web.json_response(shown)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "bots": len(_host(request).hosted)})


def shown_text(answer: Answer) -> str:
    """What the user is shown of an answer (as the chat shows it)."""
    if answer.outcome is Outcome.FAILED:
        return answer.apology
    if answer.outcome is Outcome.STOPPED:
        return f"{answer.text} {STOPPED}" if answer.text else STOPPED
    return answer.text or EMPTY_ANSWER


def turn_documents(bot: str, user: str, question: str, asked_at: float, answer: str, answered_at: float) -> list[dict[str, Any]]:
    """An HTTP turn as the direct messages the history keeps: the question from the
    user to the bot, the answer (in pieces within the message limit) back."""
    qid = new_id()
    docs = [message_dict(qid, user, bot, question, format_timestamp(asked_at), MessageType.CHAT, {"via": "http"})]
    for piece in split_text(answer):
        meta = {"bot": bot, "reply_to": qid, "via": "http"}
        docs.append(message_dict(new_id(), bot, user, piece, format_timestamp(answered_at), MessageType.CHAT, meta))
    return docs


def archive(request: web.Request, bot: Assistant, user: str, question: str, asked_at: float, answer: Answer) -> None:
    """Archive the turn beside the answer (the client may be gone by the time it is stored)."""
    docs = turn_documents(bot.name, user, question, asked_at, shown_text(answer), max(time.time(), asked_at + 0.001))
    api = _host(request).api

    async def store() -> None:
        try:
            await api.archive_encoded(dumps(docs))
        except (StoreUnavailable, ApiRejected) as exc:
            logger.warning("could not archive %s's HTTP turn with %s: %s", user, bot.name, exc)

    bot.spawn(store(), f"archive-{user}")


def make_app(host: BotHost, token: str | None) -> web.Application:
    app = web.Application(middlewares=[guard(token)])
    app[HOST_KEY] = host
    app.router.add_post("/bots/{name}/chat", chat)
    app.router.add_post("/bots/{name}/chat/simple", chat_simple)
    app.router.add_get("/health", health)
    return app


@asynccontextmanager
async def serve_http(host: BotHost, settings: Settings) -> AsyncIterator[web.AppRunner]:
    """The HTTP chat on BOTS_HOST:BOTS_PORT for the life of the block."""
    token = settings.api_token.get_secret_value() if settings.api_token else None
    runner = web.AppRunner(make_app(host, token), handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.bots_host, settings.bots_port)
        await site.start()
        for address in runner.addresses:
            logger.info(LISTENING, address[0], address[1])
        yield runner
    finally:
        await runner.cleanup()
