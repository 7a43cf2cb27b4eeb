"""HTTP chat with a bot (tag "bots"), passed through to the bot host; the bot
definitions it looks the bot up in are `chatnet.api_bots`. `chatnet.api` mounts these
beside them, behind the same bearer token as the rest.

    POST   /bots/{name}/chat           {"user", "message"}         the host's text/event-stream, chunk by chunk
    POST   /bots/{name}/chat/simple    {"user", "message"}         the host's JSON answer

Chat goes through the API (one front door): the API says 404 for a bot it has no
definition of, and otherwise hands the request to the bot host (`Settings.bots_url`)
with the API token as bearer, passing back its status, content type and body, an
event stream as it comes. No bot host listening: 503.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final
from urllib.parse import quote

import aiohttp
from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from chatnet.api_bots import DEFAULT_TIMEOUT, MISSING, BotsDep, no_bot
from chatnet.api_params import PathName
from chatnet.bots_store import BotStore, public
from chatnet.config import Settings
from chatnet.limits import MAX_MESSAGE_CHARS
from chatnet.message import Name
from chatnet.protocol import unencodable

logger = logging.getLogger("chatnet.api.bots")

# The bot host is on loopback or a LAN: connecting takes milliseconds, or it is not running.
HOST_CONNECT_SECONDS: Final = 3.0
# Beyond the bot's own timeout per model call (times the SDK's attempts), before a host
# that says nothing counts as stuck.
HOST_READ_MARGIN_SECONDS: Final = 10.0
# A non-streamed answer (chat/simple, a refusal) is one message and a few names.
MAX_HOST_ANSWER_BYTES: Final = 1 << 20
# The answer's headers passed back besides Content-Type.
PASSED_HEADERS: Final = ("Cache-Control", "Retry-After")
# What ends a stream the host broke off, in the host's format: a clean end for the client.
BROKEN_STREAM: Final = b'data: {"error": "the bot host stopped answering", "done": true}\n\ndata: [DONE]\n\n'
NOT_RUNNING: Final = "the bot host is not running"


# --- models ------------------------------------------------------------------------------------


class ChatIn(BaseModel):
    user: Name = Field(description="whose thread with the bot this turn goes into")
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)

    @field_validator("message")
    @classmethod
    def _utf8(cls, value: str) -> str:
        if problem := unencodable(value):
            raise ValueError(problem)
        return value


# --- the bot host's HTTP chat, passed through ------------------------------------------------------


class HostProxy:
    """HTTP chat passed on to the bot host: one aiohttp session (a pool of connections
    to the host), made at the first chat."""

    def __init__(self, settings: Settings) -> None:
        self.base_url = settings.bots_url
        token = settings.api_token.get_secret_value() if settings.api_token else None
        self.headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
        # The host's model calls may take their timeout once per attempt.
        self.attempts = 1 + max(0, settings.bot_retries)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def chat(self, name: str, route: str, body: ChatIn, model_timeout: float) -> Response:
        """The host's answer to `POST /bots/{name}{route}`, as a response of ours."""
        timeout = aiohttp.ClientTimeout(total=None, connect=HOST_CONNECT_SECONDS, sock_read=model_timeout * self.attempts + HOST_READ_MARGIN_SECONDS)
        url = f"{self.base_url}/bots/{quote(name, safe='')}{route}"
        try:
            answer = await self.session().post(url, data=body.model_dump_json(), headers=self.headers, timeout=timeout)
        except aiohttp.SocketTimeoutError:
            logger.warning("the bot host did not answer a chat with %s in time", name)
            raise HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, "the bot host did not answer in time") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            logger.warning("chat with %s: the bot host is not reachable at %s (%s)", name, self.base_url, type(exc).__name__)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, NOT_RUNNING) from None
        content_type = answer.headers.get("Content-Type", "application/octet-stream")
        headers = {header: answer.headers[header] for header in PASSED_HEADERS if header in answer.headers}
        if content_type.startswith("text/event-stream"):
            # Nothing between here and the reader may hold the events back.
            headers |= {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(relay(answer, name), answer.status, headers, media_type=content_type)
        try:
            content = bytearray()
            while len(content) <= MAX_HOST_ANSWER_BYTES and (chunk := await answer.content.read(MAX_HOST_ANSWER_BYTES + 1 - len(content))):
                content += chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("chat with %s: the bot host's answer broke off (%s)", name, type(exc).__name__)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the bot host stopped answering") from None
        finally:
            answer.close()
        if len(content) > MAX_HOST_ANSWER_BYTES:
            logger.warning("chat with %s: the bot host's answer is over %d bytes", name, MAX_HOST_ANSWER_BYTES)
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, "the bot host's answer is too large")
        return Response(bytes(content), answer.status, headers, media_type=content_type)


async def relay(answer: aiohttp.ClientResponse, name: str) -> AsyncIterator[bytes]:
    """The host's event stream, each chunk passed on as it comes. A reader who goes
    away cancels this: the connection to the host closes, and the host stops the
    answer. A host that breaks off gets the stream a clean end."""
    try:
        async for chunk in answer.content.iter_any():
            yield chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("chat with %s: the bot host's stream broke off (%s)", name, type(exc).__name__)
        yield BROKEN_STREAM
    finally:
        answer.close()


# --- dependencies ------------------------------------------------------------------------------


async def get_proxy(request: Request) -> HostProxy:
    proxy: HostProxy = request.app.state.bot_proxy
    return proxy


ProxyDep = Annotated[HostProxy, Depends(get_proxy)]


def routes() -> APIRouter:
    router = APIRouter()
    chat_answers: dict[int | str, dict[str, Any]] = MISSING | {
        200: {"content": {"text/event-stream": {}}, "description": "the bot host's events, as they come"},
        503: {"description": NOT_RUNNING},
    }
    router.post("/bots/{name}/chat", response_model=None, responses=chat_answers, tags=["bots"])(chat)
    router.post("/bots/{name}/chat/simple", response_model=None, responses=MISSING | {503: chat_answers[503]}, tags=["bots"])(chat_simple)
    return router


# --- routes ------------------------------------------------------------------------------------------


async def chat(name: PathName, body: ChatIn, bots: BotsDep, proxy: ProxyDep) -> Response:
    """A chat turn in the user's thread with the bot, answered as server-sent events
    (`data: {"content": "...", "done": false}` per chunk, `data: {"content": "", "done":
    true}`, then `data: [DONE]`), by the bot host."""
    bot, timeout = await _bot(name, bots)
    return await proxy.chat(bot, "/chat", body, timeout)


async def chat_simple(name: PathName, body: ChatIn, bots: BotsDep, proxy: ProxyDep) -> Response:
    """A chat turn answered as one JSON object `{"content", "bot", "user"}`, by the bot host."""
    bot, timeout = await _bot(name, bots)
    return await proxy.chat(bot, "/chat/simple", body, timeout)


async def _bot(name: str, bots: BotStore) -> tuple[str, float]:
    """The bot's name as defined and its timeout per model call; 404 without a definition."""
    if (doc := await bots.get(name)) is None:
        raise no_bot(name)
    timeout = float(public(doc).get("timeout", DEFAULT_TIMEOUT))
    return doc["name"], timeout
