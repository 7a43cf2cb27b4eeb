"""The web adapter: serves the page and bridges each WebSocket to the chat server.

    page ──WebSocket /ws──> Bridge ──Peer (TCP, JSON mode, features ["stream"])──> chat server
                              │
    page ──GET /api/history/{peer}──> message API (with API_TOKEN; the page never sees it)

The page speaks JSON mode over the WebSocket: a login frame first, then chat and
command frames; it receives the server's frames unchanged. What the adapter says
itself comes from sender `web`, with `metadata["event"]` (an `Event`; the page gets
the whole list from /config.json):

- `status` {"state": "connected" | "unavailable" | "lost", "retry_in"}:
  the chat server connection (reported, then retried with backoff);
- `session` {"token"}: sent after each login; the page passes it to /api/history so
  history is only ever read for the user logged in on that socket;
- `bad_input` (type error): a frame from the page was refused; the socket stays;
- `not_sent` (type error): a frame could not reach the chat server.

Closing the WebSocket closes its chat-server connection (the user goes offline).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp import WSMsgType, web

from chatnet.api_client import ApiClient
from chatnet.config import Settings
from chatnet.dialects.json import client_frame, parse_frame, server_frame
from chatnet.errors import ApiRejected, BadFrame, LoginInterrupted, LoginRefused, ProtocolError, StoreUnavailable
from chatnet.limits import MAX_LINE_BYTES, MAX_MESSAGE_CHARS, MAX_NAME_CHARS, NAME_PATTERN, NAME_RULE
from chatnet.peer import Peer, encode_frame
from chatnet.personalities import personalities
from chatnet.process import ROOT
from chatnet.protocol import Chat, Command, Event, Login, Message, MessageType, Quit, check_name, format_datetime, message_json, utcnow

logger = logging.getLogger("chatnet.web")

STATIC_DIR: Final = ROOT / "static"
ADAPTER_NAME: Final = "web"
SESSION_HEADER: Final = "X-Chatnet-Session"
# A page frame becomes one line to the chat server, so it obeys the server's line limit.
MAX_FRAME_BYTES: Final = MAX_LINE_BYTES
# Above this aiohttp drops the socket outright; between the two the page gets an error frame.
MAX_WS_MESSAGE_BYTES: Final = 64 * 1024
# The adapter takes no request bodies; this only bounds what a client can make it read.
MAX_REQUEST_BYTES: Final = 64 * 1024
# Every web user announces streaming: the page renders partial bot replies.
FEATURES: Final = frozenset({"stream"})
FIRST_RETRY_SECONDS: Final = 0.5
MAX_RETRY_SECONDS: Final = 10.0
HEARTBEAT_SECONDS: Final = 30.0
# A page of history as the page asks for it, and the most the adapter hands out at once
# (the API's own bound, HISTORY_PAGE, is higher: a page on a phone needn't be).
HISTORY_LIMIT_DEFAULT: Final = 50
HISTORY_LIMIT_MAX: Final = 200
# How long the adapter waits for the message API (history) before saying it is unavailable.
API_TIMEOUT_SECONDS: Final = 10.0
# Every notice name, for the page (served by /config.json, never retyped there).
EVENTS: Final = {event.name: event.value for event in Event}

SETTINGS: Final = web.AppKey("settings", Settings)
BRIDGES: Final[web.AppKey[dict[str, Bridge]]] = web.AppKey("bridges")  # session token -> Bridge
SOCKETS: Final[web.AppKey[set[web.WebSocketResponse]]] = web.AppKey("sockets")  # every open WebSocket
API: Final = web.AppKey("api", ApiClient)  # holds API_TOKEN; the page never sees it


def notice(event: Event, text: str, *, error: bool = False, **details: Any) -> str:
    """A frame the adapter itself sends to the page (sender `web`)."""
    kind = MessageType.ERROR if error else MessageType.NOTIFICATION
    return server_frame(kind, text, event, details, None, format_datetime(utcnow()), sender=ADAPTER_NAME).removesuffix("\n")


@dataclass
class Bridge:
    """One WebSocket and the chat-server connection made for its user."""

    ws: web.WebSocketResponse
    settings: Settings
    bridges: dict[str, Bridge]
    user: str | None = None  # set by the login frame, cleared if the server refuses it
    peer: Peer | None = None  # the live chat-server connection, when there is one
    token: str | None = None  # the session token, once a login succeeded
    _chat_task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Relay until the page goes away, then log the user out of the chat server."""
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._from_page(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._refuse("Send text frames (JSON), not binary.")
                elif msg.type == WSMsgType.ERROR:
                    logger.info("websocket error for %s: %s", self.user, self.ws.exception())
        finally:
            await self.close()

    async def close(self) -> None:
        if self.token is not None:
            self.bridges.pop(self.token, None)
        task, self._chat_task = self._chat_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if not self.ws.closed:
            await self.ws.close()

    @property
    def logged_in(self) -> bool:
        return self.token is not None and self.user is not None

    # --- page -> chat server -----------------------------------------------------------

    async def _from_page(self, data: str) -> None:
        size = len(data.encode())
        if size > MAX_FRAME_BYTES:
            await self._refuse(f"Frame too big ({size} bytes; the limit is {MAX_FRAME_BYTES}).")
            return
        try:
            event = parse_frame(data)
        except ProtocolError as exc:
            await self._refuse(str(exc))
            return
        if isinstance(event, Login):
            await self._login(event)
        elif isinstance(event, Quit):
            await self.ws.close()
        else:
            await self._forward(event)

    async def _login(self, login: Login) -> None:
        if self.user is not None:
            await self._refuse(f"Already logged in as {self.user}.")
            return
        self.user = login.user
        features = FEATURES | login.features
        self._chat_task = asyncio.create_task(self._keep_connected(login.user, features))

    async def _forward(self, event: Chat | Command) -> None:
        peer = self.peer
        if peer is None:
            text = "Log in first." if self.user is None else "Not connected to the chat server; try again shortly."
            await self._send(notice(Event.NOT_SENT, text, error=True))
            return
        try:
            line = encode_frame(client_frame(event))
        except UnicodeEncodeError:  # a lone surrogate, from a "\\ud800" escape
            await self._refuse("Text must be valid Unicode (a lone surrogate is not).")
            return
        if len(line) > MAX_LINE_BYTES + 1:  # the newline doesn't count
            await self._refuse(f"Frame too big for the chat server (the limit is {MAX_LINE_BYTES} bytes).")
            return
        try:
            await peer.send_line(line)
        except (ConnectionError, OSError):
            await self._send(notice(Event.NOT_SENT, "The chat server connection dropped; that was not sent.", error=True))

    async def _refuse(self, text: str) -> None:
        await self._send(notice(Event.BAD_INPUT, text, error=True))

    # --- chat server -> page -----------------------------------------------------------

    async def _keep_connected(self, user: str, features: frozenset[str]) -> None:
        """Connect (retrying with backoff), relay until the server closes, repeat."""
        delay = FIRST_RETRY_SECONDS
        while not self.ws.closed:
            try:
                peer = await Peer.connect(self.settings.chat_host, self.settings.chat_port, user, features=features)
            except (LoginInterrupted, OSError, TimeoutError) as exc:  # down or restarting: retry
                logger.info("chat server unavailable for %s: %s", user, exc)
                text = f"Chat server unavailable, retrying in {delay:g} s."
                await self._send(notice(Event.STATUS, text, error=True, state="unavailable", retry_in=delay))
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            except LoginRefused as exc:  # the name itself was refused: back to the login form
                self.user = None
                await self._send(notice(Event.LOGIN_FAILED, str(exc), error=True))
                return
            delay = FIRST_RETRY_SECONDS
            await self._relay(peer)
            if not self.ws.closed:
                text = "Lost the connection to the chat server; reconnecting."
                await self._send(notice(Event.STATUS, text, error=True, state="lost", retry_in=FIRST_RETRY_SECONDS))
                await asyncio.sleep(FIRST_RETRY_SECONDS)

    async def _relay(self, peer: Peer) -> None:
        self.peer = peer
        try:
            self._start_session()
            assert peer.welcome is not None
            await self._send(peer.welcome.model_dump_json())
            await self._send(notice(Event.SESSION, "Logged in.", token=self.token))
            await self._send(notice(Event.STATUS, "Connected to the chat server.", state="connected"))
            logger.info("%s joined from the web", peer.user)
            while (message := await self._next(peer)) is not None:
                await self._send(message.model_dump_json())
        finally:
            self.peer = None
            await peer.close()
            logger.info("%s's chat connection closed", peer.user)

    async def _next(self, peer: Peer) -> Message | None:
        """The next server frame; None once the connection is gone. Bad frames are skipped."""
        while True:
            try:
                return await peer.recv()
            except BadFrame as exc:
                logger.warning("skipped a frame from the chat server: %s", exc)
            except (ConnectionError, OSError, ValueError) as exc:
                logger.info("chat connection of %s failed: %s", peer.user, exc)
                return None

    def _start_session(self) -> None:
        if self.token is None:
            self.token = secrets.token_urlsafe(24)
            self.bridges[self.token] = self

    async def _send(self, text: str) -> None:
        if self.ws.closed:
            return
        with suppress(ConnectionError):  # the page left; run() notices and cleans up
            await self.ws.send_str(text)


# --- HTTP handlers -------------------------------------------------------------------


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE_BYTES, heartbeat=HEARTBEAT_SECONDS)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        await Bridge(ws, request.app[SETTINGS], request.app[BRIDGES]).run()
    finally:
        sockets.discard(ws)
    return ws


async def history(request: web.Request) -> web.Response:
    """The conversation between the socket's user and `peer`, newest first, paged."""
    bridge = request.app[BRIDGES].get(request.headers.get(SESSION_HEADER, ""))
    user = bridge.user if bridge is not None and bridge.logged_in else None
    if user is None:
        return web.json_response({"error": "Log in on the page first."}, status=401)
    peer = request.match_info["peer"]
    try:
        check_name(peer, "name")
        limit = int(request.query.get("limit", HISTORY_LIMIT_DEFAULT))
    except (ProtocolError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=422)
    if not 1 <= limit <= HISTORY_LIMIT_MAX:
        return web.json_response({"error": f"limit must be 1..{HISTORY_LIMIT_MAX}."}, status=422)
    try:
        messages, next_before = await request.app[API].history(user, peer, limit, request.query.get("before"))
    except ApiRejected as exc:  # e.g. a malformed `before`: the page's mistake, say which
        return web.json_response({"error": exc.detail}, status=exc.status)
    except StoreUnavailable as exc:
        logger.warning("history for %s unavailable: %s", user, exc)
        return web.json_response({"error": "History is unavailable right now."}, status=503)
    return web.json_response({"messages": [message_json(m) for m in messages], "next_before": next_before})


async def page_config(request: web.Request) -> web.Response:
    """What the page needs to know about the network (never a secret)."""
    settings = request.app[SETTINGS]
    return web.json_response(
        {
            "thermometer": settings.thermometer_name,
            "bot": settings.bot_name,
            "personalities": list(personalities(settings.bot_personalities)),
            "max_message_chars": MAX_MESSAGE_CHARS,
            "max_name_chars": MAX_NAME_CHARS,
            "name_pattern": NAME_PATTERN,
            "name_rule": NAME_RULE,
            "history_page": HISTORY_LIMIT_DEFAULT,
            "events": EVENTS,
        }
    )


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _api_client(app: web.Application) -> AsyncIterator[None]:
    async with ApiClient.from_settings(app[SETTINGS], timeout=API_TIMEOUT_SECONDS) as api:
        app[API] = api
        yield


async def _close_websockets(app: web.Application) -> None:
    """On shutdown: say goodbye to every page (each bridge then logs its user out)."""
    sockets = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"web adapter shutting down")


def build_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[SETTINGS] = settings
    app[BRIDGES] = {}
    app[SOCKETS] = set()
    app.cleanup_ctx.append(_api_client)
    app.on_shutdown.append(_close_websockets)
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/config.json", page_config)
    app.router.add_get("/api/history/{peer}", history)
    app.router.add_static("/static/", STATIC_DIR)
    return app


async def serve(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM, then close every WebSocket and stop."""
    runner = web.AppRunner(build_app(settings), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.web_host, settings.web_port)
    await site.start()
    port = runner.addresses[0][1]  # the real one when the settings asked for port 0
    logger.info("web page on http://%s:%d (chat server %s:%d)", settings.web_host, port,
                settings.chat_host, settings.chat_port)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down")
    await runner.cleanup()
    logger.info("stopped")
