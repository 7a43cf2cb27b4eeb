"""The bridge between one WebSocket of the page and the chat server: `Bridge` logs its
user in to the chat server (JSON mode, through `chatnet.peer.Peer`) and relays frames
both ways. `chatnet.web` is the HTTP application around it (the page, /api/*, the
upgrade to /ws).

The page speaks JSON mode over the WebSocket: a login frame with the name only (no
password, no token), then chat and command frames; it receives the server's frames
unchanged (a welcome's token, should one come, is dropped). What the adapter says
itself comes from sender `web`, with `metadata["event"]` (an `Event`; the page gets
the whole list from /config.json):

- `status` {"state": "connected" | "unavailable" | "lost", "retry_in"}:
  the chat server connection (reported, then retried with backoff);
- `session` {"token"}: sent after each login, a random handle of this socket only
  (no account credential); the page passes it (header X-Chatnet-Session) to the
  /api/* routes, which answer for the user logged in on that socket and never
  for a name the request gives;
- `login_failed` (type error) {"reason", "retry_after"}: the login was refused;
- `bad_input` (type error): a frame from the page was refused; the socket stays;
- `not_sent` (type error): a frame could not reach the chat server.

The bridge logs in with `token=` from the account's session cookie the upgrade carried
(`Credentials`), so a reload or a second tab resumes without the password; a login
frame carrying a password or a token is refused.

Acknowledged delivery. The adapter logs every page in with the `ack` feature, so the
chat server counts a message as delivered only once the page acknowledged it: the
adapter relays frames without reading them, and only the page knows what it has shown.
The page sends `{"type": "ack", "ids": [...]}` for what it has rendered (or dropped as
a repeat); the adapter checks it (the JSON dialect's rules: a non-empty, bounded list
of id strings; and one line's size) and forwards it; a malformed one gets
`bad_input`, a good one no answer. An ack while there is no chat connection is
dropped: what it acknowledged comes again at the next login, and the page acks the
repeat.

Closing the WebSocket closes its chat-server connection (the user goes offline).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp import WSMsgType, web

from chatnet.config import Settings
from chatnet.dialects.json import client_frame, parse_frame, server_frame
from chatnet.errors import BadFrame, LoginInterrupted, LoginRefused, ProtocolError
from chatnet.limits import MAX_LINE_BYTES
from chatnet.message import Message
from chatnet.peer import Peer, encode_frame
from chatnet.protocol import (
    ACK_FEATURE,
    SERVER_NAME,
    STREAM_FEATURE,
    TYPING_FEATURE,
    Ack,
    Chat,
    Command,
    Event,
    Login,
    LoginReason,
    MessageType,
    Pong,
    Quit,
    Typing,
    format_datetime,
    is_valid_name,
    utcnow,
)

logger = logging.getLogger("chatnet.web")

ADAPTER_NAME: Final = "web"
# A page frame becomes one line to the chat server, so it obeys the server's line limit.
MAX_FRAME_BYTES: Final = MAX_LINE_BYTES
# Every web user announces streaming (the page renders partial bot replies), acks
# (the page acknowledges what it has shown) and typing (it shows "… is working").
FEATURES: Final = frozenset({STREAM_FEATURE, ACK_FEATURE, TYPING_FEATURE})
FIRST_RETRY_SECONDS: Final = 0.5
MAX_RETRY_SECONDS: Final = 10.0
# The account's session: "<name>:<token>" (a name has no colon, a URL-safe token neither).
SESSION_COOKIE: Final = "chatnet_session"
# Tokens are 43 characters; anything much longer in a cookie is not one of ours.
MAX_TOKEN_CHARS: Final = 128


def notice(event: Event, text: str, *, error: bool = False, **details: Any) -> str:
    """A frame the adapter itself sends to the page (sender `web`)."""
    kind = MessageType.ERROR if error else MessageType.NOTIFICATION
    present = {key: value for key, value in details.items() if value is not None}
    return server_frame(kind, text, event, present, None, format_datetime(utcnow()), sender=ADAPTER_NAME).removesuffix("\n")


def same_name(a: str, b: str) -> bool:
    """Names are one identity in any case (ASCII only)."""
    return a.lower() == b.lower()


@dataclass(frozen=True)
class Credentials:
    """An account's session as the cookie holds it."""

    name: str
    token: str

    @classmethod
    def from_cookie(cls, request: web.BaseRequest) -> Credentials | None:
        name, colon, token = request.cookies.get(SESSION_COOKIE, "").partition(":")
        if not colon or not is_valid_name(name) or not 0 < len(token) <= MAX_TOKEN_CHARS:
            return None
        return cls(name, token)

    def cookie(self) -> str:
        return f"{self.name}:{self.token}"


@dataclass(eq=False)  # each one is itself (kept in a set)
class Bridge:
    """One WebSocket and the chat-server connection made for its user."""

    ws: web.WebSocketResponse
    settings: Settings
    bridges: dict[str, Bridge]
    credentials: Credentials | None = None  # the account session the upgrade's cookie carried
    address: str = "unknown"  # the browser's: the chat server's per-address limits count it
    user: str | None = None  # set by the login frame (then as the server spells it), cleared if refused
    peer: Peer | None = None  # the live chat-server connection, when there is one
    token: str | None = None  # this socket's session handle, once a login succeeded
    account_token: str | None = None  # the cookie's session token, when this socket logged in with it
    account: bool = False  # the user is an account's person (the welcome says so, or a !register since)
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

    async def close(self, code: int = aiohttp.WSCloseCode.OK, reason: bytes = b"") -> None:
        if self.token is not None:
            self.bridges.pop(self.token, None)
        task, self._chat_task = self._chat_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if not self.ws.closed:
            await self.ws.close(code=code, message=reason)

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
        elif isinstance(event, Pong):
            return  # the server's pings are answered by the adapter's Peer; the page is sent none
        else:
            await self._forward(event)

    async def _login(self, login: Login) -> None:
        if self.user is not None:
            await self._refuse(f"Already logged in as {self.user}.")
            return
        if login.password is not None or login.token is not None or login.service_token is not None:
            # Secrets never pass through page script: a password goes to /api/login once,
            # and the session token lives in the HttpOnly cookie the upgrade carried.
            await self._refuse("Log in with a password through the page (POST /api/login); a login frame here carries only the name.")
            return
        self.user = login.user
        # The cookie's session, for the name it belongs to (a guest name logs in without).
        credentials = self.credentials
        token = credentials.token if credentials is not None and same_name(credentials.name, login.user) else None
        self.account_token = token
        features = FEATURES | login.features
        self._chat_task = asyncio.create_task(self._keep_connected(login.user, features, token))

    async def _forward(self, event: Chat | Command | Ack | Typing) -> None:
        peer = self.peer
        # An ack gets no answer; one that can't reach the server is no loss (see above).
        quiet = isinstance(event, Ack)
        if peer is None:
            if not quiet:
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
            if not quiet:
                await self._send(notice(Event.NOT_SENT, "The chat server connection dropped; that was not sent.", error=True))

    async def _refuse(self, text: str) -> None:
        await self._send(notice(Event.BAD_INPUT, text, error=True))

    # --- chat server -> page -----------------------------------------------------------

    def _vouch(self) -> tuple[str, str] | None:
        """Every page reaches the chat server from this adapter's address: with the service
        token it reports each browser's, so per-address limits count browsers, not us."""
        token = self.settings.api_token
        return (token.get_secret_value(), self.address) if token is not None else None

    async def _keep_connected(self, user: str, features: frozenset[str], token: str | None) -> None:
        """Connect (retrying with backoff), relay until the server closes, repeat."""
        delay = FIRST_RETRY_SECONDS
        while not self.ws.closed:
            try:
                peer = await Peer.connect(
                    self.settings.chat_host, self.settings.chat_port, user, features=features, token=token, relay=self._vouch()
                )
            except (LoginInterrupted, LoginRefused, OSError, TimeoutError) as exc:
                if isinstance(exc, LoginRefused) and exc.reason != LoginReason.UNAVAILABLE:
                    # The name (or the session) itself was refused: back to the login form.
                    self.user = None
                    await self._send(notice(Event.LOGIN_FAILED, str(exc), error=True, reason=exc.reason, retry_after=exc.retry_after))
                    return
                # Down, restarting, or unable to check accounts right now: retry.
                logger.info("chat server unavailable for %s: %s", user, exc)
                text = f"Chat server unavailable, retrying in {delay:g} s."
                await self._send(notice(Event.STATUS, text, error=True, state="unavailable", retry_in=delay))
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            delay = FIRST_RETRY_SECONDS
            await self._relay(peer)
            if not self.ws.closed:
                text = "Lost the connection to the chat server; reconnecting."
                await self._send(notice(Event.STATUS, text, error=True, state="lost", retry_in=FIRST_RETRY_SECONDS))
                await asyncio.sleep(FIRST_RETRY_SECONDS)

    async def _relay(self, peer: Peer) -> None:
        self.peer = peer
        try:
            assert peer.welcome is not None
            welcome = peer.welcome
            self.user = str(welcome.metadata.get("user") or peer.user)  # as the server spells it
            self.account = welcome.metadata.get("account") is True and welcome.metadata.get("bot") is not True
            self._start_session()
            # A token in the welcome would be page-readable: the cookie is where it lives.
            shown = {key: value for key, value in welcome.metadata.items() if key != "token"}
            await self._send(welcome.model_copy(update={"metadata": shown}).model_dump_json())
            await self._send(notice(Event.SESSION, "Logged in.", token=self.token))
            await self._send(notice(Event.STATUS, "Connected to the chat server.", state="connected"))
            logger.info("%s joined from the web", self.user)
            while (message := await self._next(peer)) is not None:
                if message.metadata.get("event") == Event.REGISTERED and message.sender == SERVER_NAME:
                    self.account = True  # a guest's !register made the name an account
                await self._send(message.model_dump_json())
        finally:
            self.peer = None
            await peer.close()
            logger.info("%s's chat connection closed", self.user)

    async def _next(self, peer: Peer) -> Message | None:
        """The next server frame; None once the connection is gone. Bad frames are skipped."""
        while True:
            try:
                return await peer.recv()
            except BadFrame as exc:
                logger.warning("skipped a frame from the chat server: %s", exc)
            except (ConnectionError, OSError, ValueError) as exc:
                logger.info("chat connection of %s failed: %s", self.user, exc)
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
