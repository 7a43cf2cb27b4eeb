"""The web adapter in-process: its aiohttp app on a TestServer, a real chat server
(`ChatServer` on port 0) and, for history and accounts, the real message API (uvicorn
on a socket bound here) over the embedded store. The page is played by an aiohttp
client: its cookie jar is the browser's, a WebSocket per tab."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import uvicorn
from aiohttp.test_utils import TestClient, TestServer

import chatnet.web
from chatnet.api import create_app
from chatnet.api_client import ApiClient
from chatnet.config import Settings
from chatnet.limits import ACK_IDS_PER_FRAME, MAX_BOT_PROMPT_CHARS, MAX_MESSAGE_CHARS, MAX_NAME_CHARS, NAME_PATTERN, NAME_RULE, ROOM_PATTERN, ROOM_RULE
from chatnet.message import Message
from chatnet.peer import Peer
from chatnet.personalities import PERSONALITIES
from chatnet.process import ROOT
from chatnet.protocol import Event, LoginReason, MessageType
from chatnet.server import ChatServer
from chatnet.web import (
    BODY_TIMEOUT_SECONDS,
    CONTENT_SECURITY_POLICY,
    HISTORY_LIMIT_MAX,
    MAX_REQUEST_BYTES,
    MAX_WS_MESSAGE_BYTES,
    SECURITY_HEADERS,
    SESSION_HEADER,
    SIGNED_OUT_CLOSE,
    STATIC_DIR,
    build_app,
)
from chatnet.web_bridge import ADAPTER_NAME, FIRST_RETRY_SECONDS, MAX_FRAME_BYTES, SESSION_COOKIE

HOST = "127.0.0.1"
TOKEN = "web-unit-test-token"
TIMEOUT = 10.0
PASSWORD = "correct horse battery"
# The chat server's side of accounts (issue 9) is being built alongside this adapter.
NEEDS_ACCOUNT_LOGIN = "needs the chat server's account login (issue 9)"

Frame = dict[str, Any]
Web = TestClient[aiohttp.web.Request, aiohttp.web.Application]


def event(name: Event) -> Callable[[Frame], bool]:
    return lambda frame: frame.get("metadata", {}).get("event") == name


def chat_from(sender: str, text: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == MessageType.CHAT and f.get("sender") == sender and f.get("message") == text


class Page:
    """What the page does: one WebSocket, JSON frames both ways."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[Frame] = []

    async def send(self, frame: Frame | str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def expect(self, match: Callable[[Frame], bool], timeout: float = TIMEOUT) -> Frame:
        """Read frames until one matches; fail on the deadline or a closed socket."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    msg = await self.ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise AssertionError(f"socket ended ({msg.type}); seen: {self.seen[-10:]}")
                    self.seen.append(json.loads(msg.data))
                    if match(self.seen[-1]):
                        return self.seen[-1]
        except TimeoutError:
            raise AssertionError(f"no matching frame within {timeout} s; seen: {self.seen[-10:]}") from None

    async def login(self, user: str) -> tuple[Frame, str]:
        """Log in as the page does; the welcome frame and the session token."""
        await self.send({"type": "login", "user": user, "features": ["stream"]})
        welcome = await self.expect(event(Event.WELCOME))
        session = await self.expect(event(Event.SESSION))
        return welcome, session["metadata"]["token"]

    async def refused(self, user: str) -> Frame:
        """Log in and expect the refusal; the login_failed frame."""
        await self.send({"type": "login", "user": user, "features": ["stream"]})
        return await self.expect(lambda f: f.get("type") == MessageType.ERROR and event(Event.LOGIN_FAILED)(f))

    async def closed(self) -> int | None:
        """Wait for the adapter to close the socket; the close code it sent."""
        async with asyncio.timeout(TIMEOUT):
            while (msg := await self.ws.receive()).type == aiohttp.WSMsgType.TEXT:
                self.seen.append(json.loads(msg.data))
        return int(msg.data) if msg.type == aiohttp.WSMsgType.CLOSE else self.ws.close_code


async def expect_message(peer: Peer, match: Callable[[Message], bool]) -> Message:
    async with asyncio.timeout(TIMEOUT):
        while (message := await peer.recv()) is not None:
            if match(message):
                return message
    raise AssertionError("the chat server closed the connection")


# --- the network, in process ---------------------------------------------------------------


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings a test changes (parametrize `overrides` to change them)."""
    return {}


def settings_for(store_url: str, **overrides: Any) -> Settings:
    """Settings for this test only (no .env); the ports are filled in as servers start."""
    return Settings(
        _env_file=None, chat_host=HOST, chat_port=0, irc=False, api_host=HOST, api_token=TOKEN, mongo_url=store_url,
        mongo_db=f"w{uuid.uuid4().hex[:12]}", bot_personalities={"Pirate": "Talk like a pirate."}, **overrides,
    )  # fmt: skip


@contextmanager
def held_port() -> Iterator[int]:
    """A port that refuses connections while the block runs (bound, not listening), on
    which a server with SO_REUSEADDR (the chat server's listener) can still start."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]


@pytest.fixture
async def base(store_url: str, overrides: dict[str, Any]) -> AsyncIterator[Settings]:
    """The message API serving, in process; settings that point at it (chat port still 0)."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen()  # connections wait in the backlog until uvicorn has started
    settings = settings_for(store_url, api_port=sock.getsockname()[1], **overrides)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield settings
    finally:
        server.should_exit = True
        await serving
        sock.close()


@pytest.fixture
async def chat_server(base: Settings) -> AsyncIterator[ChatServer]:
    async with ApiClient.from_settings(base) as api:
        server = ChatServer(base, api)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


@pytest.fixture
async def settings(base: Settings, chat_server: ChatServer) -> Settings:
    """Settings with every real port: what the adapter and JSON peers use."""
    return replace(base, chat_port=chat_server.port)


async def serve_web(settings: Settings) -> TestClient[aiohttp.web.Request, aiohttp.web.Application]:
    client: TestClient[aiohttp.web.Request, aiohttp.web.Application] = TestClient(TestServer(build_app(settings), host=HOST))
    await client.start_server()
    return client


@pytest.fixture
async def web(settings: Settings) -> AsyncIterator[TestClient[aiohttp.web.Request, aiohttp.web.Application]]:
    client = await serve_web(settings)
    try:
        yield client
    finally:
        await client.close()


async def open_page(web: TestClient[aiohttp.web.Request, aiohttp.web.Application], **kwargs: Any) -> Page:
    """A tab: a WebSocket that carries the client's cookies, as a browser's does."""
    return Page(await web.ws_connect("/ws", **kwargs))


def own_origin(web: Web) -> str:
    return f"http://{HOST}:{web.port}"


async def post(web: Web, path: str, body: Frame, **headers: str) -> tuple[int, Frame, aiohttp.ClientResponse]:
    """A POST as the page makes it (JSON, from its own origin)."""
    async with web.post(path, json=body, headers={"Origin": own_origin(web), **headers}) as response:
        return response.status, await response.json(), response


def session_cookie(response: aiohttp.ClientResponse) -> Any:
    """The Set-Cookie of the session (a Morsel), as the adapter sent it."""
    assert SESSION_COOKIE in response.cookies, response.headers.getall("Set-Cookie", [])
    return response.cookies[SESSION_COOKIE]


def held_token(web: Web) -> tuple[str, str]:
    """(name, token) of the session cookie the client's jar holds."""
    cookies = {cookie.key: cookie.value for cookie in web.session.cookie_jar}
    name, _, token = cookies[SESSION_COOKIE].partition(":")
    return name, token


async def token_works(settings: Settings, name: str, token: str) -> bool:
    async with ApiClient.from_settings(settings) as api:
        return (await api.check_login(name, "192.0.2.1", token=token)).ok


async def json_peer(settings: Settings, user: str) -> Peer:
    return await Peer.connect(HOST, settings.chat_port, user)


# --- /config.json ------------------------------------------------------------------------


async def test_config_names_the_network_without_a_secret(store_url: str) -> None:
    """/config.json gives the bot names, personalities, limits and every event name, never the API token."""
    client = await serve_web(settings_for(store_url))
    try:
        async with client.get("/config.json") as response:
            assert response.status == 200
            text = await response.text()
    finally:
        await client.close()
    config = json.loads(text)
    assert TOKEN not in text
    assert config["events"] == {e.name: e.value for e in Event}
    assert config["personalities"] == [*PERSONALITIES, "pirate"]
    assert (config["thermometer"], config["bot"]) == ("thermometer1", "openai")
    assert (config["max_message_chars"], config["max_name_chars"]) == (MAX_MESSAGE_CHARS, MAX_NAME_CHARS)
    assert (config["name_pattern"], config["name_rule"]) == (NAME_PATTERN, NAME_RULE)
    assert 1 <= config["history_page"] <= HISTORY_LIMIT_MAX
    assert (config["room_pattern"], config["room_rule"], config["default_rooms"]) == (ROOM_PATTERN, ROOM_RULE, ["#general"])
    assert config["ack_ids_per_frame"] == ACK_IDS_PER_FRAME


def test_the_adapter_does_not_import_the_bot() -> None:
    """Importing the web adapter loads neither the openai bot nor the openai SDK."""
    probe = "import sys, chatnet.web; print(sorted(m for m in ('chatnet.assistant', 'openai') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


# --- the socket ----------------------------------------------------------------------------


async def test_login_gets_the_welcome_and_a_session_token(web: TestClient[Any, Any]) -> None:
    """A login is answered by the server's welcome, then the adapter's session token and a connected status."""
    page = await open_page(web)
    welcome, token = await page.login("alice")
    assert welcome["type"] == MessageType.NOTIFICATION and welcome["sender"] == "server"
    assert welcome["metadata"]["user"] == "alice" and "alice" in welcome["metadata"]["online"]
    assert token and page.seen[-1]["sender"] == ADAPTER_NAME
    status = await page.expect(event(Event.STATUS))
    assert status["metadata"]["state"] == "connected" and status["type"] == MessageType.NOTIFICATION


async def test_a_page_and_a_json_peer_chat_both_ways(web: TestClient[Any, Any], settings: Settings) -> None:
    """What the page sends reaches a JSON peer, and the peer's answer reaches the page."""
    bob = await json_peer(settings, "bob")
    try:
        page = await open_page(web)
        await page.login("alice")
        await page.send({"type": "chat", "destination": "bob", "message": "hi bob, from the page"})
        got = await expect_message(bob, lambda m: m.type == MessageType.CHAT)
        assert (got.sender, got.message) == ("alice", "hi bob, from the page")
        assert got.metadata.get("sender_features") == ["stream", "typing"]  # what the adapter announces for every page (ack is the connection's own)
        await bob.send("alice", "hello page")
        frame = await page.expect(chat_from("bob", "hello page"))
        assert frame["destination"] == "alice" and frame["id"] and frame["timestamp"].endswith("Z")
    finally:
        await bob.close()


async def test_bad_frames_get_bad_input_and_the_socket_stays(web: TestClient[Any, Any], settings: Settings) -> None:
    """Malformed, wrongly shaped, binary, oversized and un-encodable frames are each refused with a
    `bad_input` error from the adapter; the socket stays and the next good frame goes through."""
    page = await open_page(web)
    await page.send({"type": "chat", "destination": "bob", "message": "too early"})
    early = await page.expect(lambda f: f["type"] == MessageType.ERROR)
    assert early["metadata"]["event"] == Event.NOT_SENT and "log in" in early["message"].lower()
    await page.send({"type": "login", "user": "not a name!"})
    assert "Invalid username" in (await page.expect(event(Event.BAD_INPUT)))["message"]

    bob = await json_peer(settings, "bob")
    try:
        await page.login("alice")
        bad: list[tuple[Frame | str | bytes, str]] = [
            ("this is not json", "Malformed JSON"),
            ("[1, 2, 3]", "JSON object"),
            ({"type": "chat", "message": "no destination"}, "destination"),
            ({"type": "chat", "destination": "bob", "message": "x" * (MAX_MESSAGE_CHARS + 1)}, "too long"),
            ({"type": "teleport"}, "Unknown frame type"),
            ({"type": "login", "user": "mallory"}, "Already logged in as alice"),
            (b"\x00\x01binary", "not binary"),
            (json.dumps({"type": "chat", "destination": "bob", "message": "y" * MAX_FRAME_BYTES}), "Frame too big"),
            ('{"type": "chat", "destination": "bob", "message": "\\ud800"}', "lone surrogate"),
        ]
        for frame, reason in bad:
            await page.send(frame)
            error = await page.expect(lambda f: f["type"] == MessageType.ERROR)
            assert (error["sender"], error["metadata"]["event"]) == (ADAPTER_NAME, Event.BAD_INPUT), frame
            assert reason.lower() in error["message"].lower(), (reason, error["message"])
        await page.send({"type": "chat", "destination": "bob", "message": "still here"})
        got = await expect_message(bob, lambda m: m.type == MessageType.CHAT)
        assert got.message == "still here"  # nothing refused reached bob before it
    finally:
        await bob.close()


async def test_a_frame_over_the_websocket_limit_closes_the_socket(web: TestClient[Any, Any]) -> None:
    """A frame so big that reading it would cost memory is not read: the socket is closed as 'message too big'."""
    page = await open_page(web)
    await page.send("z" * (MAX_WS_MESSAGE_BYTES + 1))
    async with asyncio.timeout(TIMEOUT):
        msg = await page.ws.receive()
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert page.ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


# --- history -------------------------------------------------------------------------------


async def test_history_needs_the_session_token(web: TestClient[Any, Any], settings: Settings) -> None:
    """/api/history/{peer} answers 401 without the socket's session token (or with a guessed
    or revoked one) and with it returns that user's conversation, oldest first."""

    async def read(peer: str, token: str | None) -> tuple[int, Any]:
        headers = {} if token is None else {SESSION_HEADER: token}
        async with web.get(f"/api/history/{peer}", headers=headers) as response:
            return response.status, await response.json()

    assert (await read("bob", None))[0] == 401
    bob = await json_peer(settings, "bob")
    try:
        page = await open_page(web)
        _, token = await page.login("alice")
        assert (await read("bob", "guessed-token"))[0] == 401
        await page.send({"type": "chat", "destination": "bob", "message": "first from alice"})
        await expect_message(bob, lambda m: m.type == MessageType.CHAT)
        await bob.send("alice", "reply from bob")
        await page.expect(chat_from("bob", "reply from bob"))
        async with asyncio.timeout(TIMEOUT):  # the server archives in batches, off the routing path
            while len((body := (await read("bob", token))[1])["messages"]) < 2:
                await asyncio.sleep(0.05)
        assert [m["message"] for m in body["messages"]] == ["first from alice", "reply from bob"]
        assert body["next"] is None
        status, body = await read("not a name", token)
        assert status == 422 and "name" in body["error"].lower()

        await page.ws.close()
        async with asyncio.timeout(TIMEOUT):  # the bridge goes once the socket's handler has finished
            while (await read("bob", token))[0] != 401:
                await asyncio.sleep(0.05)
    finally:
        await bob.close()


# --- the page's data: conversations, history with a cursor, read markers, personality ------


async def get(web: Web, path: str, session: str | None, **params: str) -> tuple[int, Any]:
    """A GET as the page makes it: with this socket's session handle (None: without one)."""
    headers = {} if session is None else {SESSION_HEADER: session}
    async with web.get(path, headers=headers, params=params) as response:
        return response.status, await response.json()


async def read_up_to(web: Web, session: str | None, body: Frame, origin: str | None = None) -> tuple[int, Any]:
    headers = {"Origin": origin or own_origin(web), **({} if session is None else {SESSION_HEADER: session})}
    async with web.post("/api/read", json=body, headers=headers) as response:
        return response.status, await response.json()


def unread(conversations: list[Frame]) -> dict[str, int]:
    return {c["name"]: c["unread"] for c in conversations}


async def all_pages(web: Web, session: str, conversation: str, limit: int) -> list[list[str]]:
    """Every page of a conversation's history, newest page first, by following `next`."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params = {"with": conversation, "limit": str(limit), **({} if cursor is None else {"cursor": cursor})}
        status, body = await get(web, "/api/history", session, **params)
        assert status == 200, body
        pages.append([m["id"] for m in body["messages"]])
        cursor = body["next"]
        if cursor is None:
            return pages


@pytest.mark.parametrize("where", ["bob", "#general"])
async def test_history_pages_back_with_a_cursor_through_one_millisecond(web: Web, settings: Settings, where: str) -> None:
    """60 messages sharing one timestamp, a person's and a room's, come back page by page
    through the cursor: every one once, in order, and `next` is null after the last."""
    page = await open_page(web)
    _, session = await page.login("alice")  # her first login: she is in #general
    destination = "alice" if where == "bob" else where
    burst = [Message(sender="bob", destination=destination, message=f"burst {i:02d}", timestamp="2026-01-02T03:04:05.678Z") for i in range(60)]
    async with ApiClient.from_settings(settings) as api:
        assert await api.archive_encoded(json.dumps([m.model_dump(mode="json") for m in burst])) == 60
    pages = await all_pages(web, session, where, 25)
    assert [len(p) for p in pages] == [25, 25, 10]
    assert [i for p in reversed(pages) for i in p] == [m.id for m in burst]  # oldest first, no gap, no repeat
    status, body = await get(web, "/api/history", session, **{"with": where})  # the page's default page
    assert status == 200 and len(body["messages"]) == 50 and body["next"]


async def test_history_refusals_are_plain(web: Web, settings: Settings) -> None:
    """Not logged in: 401; a room one is not in: 403; no such room: 404; a bad name,
    limit or cursor: 422 — each with words the page can show."""
    async with ApiClient.from_settings(settings) as api:
        await api.join_room("#secret", "alice")
    assert (await get(web, "/api/history", None, **{"with": "#secret"}))[0] == 401
    page = await open_page(web)
    _, session = await page.login("mallory")
    assert (await get(web, "/api/history", "guessed", **{"with": "bob"}))[0] == 401
    status, body = await get(web, "/api/history", session, **{"with": "#secret"})
    assert status == 403 and body["reason"] == "not_member" and "#secret" in body["error"]
    status, body = await get(web, "/api/history", session, **{"with": "#nowhere"})
    assert status == 404 and body["error"] == "There is no room #nowhere."
    for params in ({"with": "not a name"}, {"with": "#"}, {}, {"with": "bob", "limit": "0"}, {"with": "bob", "cursor": "not-a-cursor"}):
        status, body = await get(web, "/api/history", session, **params)
        assert status == 422 and body["error"], params
    status, body = await get(web, "/api/history", session, **{"with": "#general"})
    assert (status, body) == (200, {"messages": [], "next": None})


async def test_conversations_are_the_logged_in_users_own(web: Web, settings: Settings) -> None:
    """/api/conversations lists the socket user's people and rooms with unread counts;
    another user's session (whatever it names in the request) sees only its own."""
    mail = [Message(sender="bob", destination="alice", message=f"for alice {i}") for i in range(2)]
    async with ApiClient.from_settings(settings) as api:
        await api.store_mail(mail)
    alice = await open_page(web)
    _, alice_session = await alice.login("alice")
    mallory = await open_page(web)
    _, mallory_session = await mallory.login("mallory")

    assert (await get(web, "/api/conversations", None))[0] == 401
    status, body = await get(web, "/api/conversations", alice_session)
    assert status == 200
    assert unread(body["conversations"]) == {"bob": 2, "#general": 0}
    bob = next(c for c in body["conversations"] if c["name"] == "bob")
    assert bob["kind"] == "dm" and bob["last"]["message"] == "for alice 1"
    status, body = await get(web, "/api/conversations", mallory_session, user="alice")
    assert status == 200 and unread(body["conversations"]) == {"#general": 0}
    assert "for alice" not in json.dumps(body)


async def test_read_moves_the_sockets_users_marker_only(web: Web, settings: Settings) -> None:
    """POST /api/read moves the read marker of the user logged in on the socket (the
    count goes to 0); a name in the body changes nothing; bad bodies are 422, no
    session 401, another site's page 403."""
    mail = [Message(sender="bob", destination="alice", message=f"for alice {i}") for i in range(2)]
    async with ApiClient.from_settings(settings) as api:
        await api.store_mail(mail)
    alice = await open_page(web)
    _, alice_session = await alice.login("alice")
    mallory = await open_page(web)
    _, mallory_session = await mallory.login("mallory")
    newest = {"conversation": "bob", "id": mail[1].id, "timestamp": mail[1].model_dump(mode="json")["timestamp"]}

    assert (await read_up_to(web, None, newest))[0] == 401
    assert (await read_up_to(web, alice_session, newest, origin="https://evil.example"))[0] == 403
    status, _ = await read_up_to(web, mallory_session, {**newest, "user": "alice"})
    assert status == 200
    assert unread((await get(web, "/api/conversations", alice_session))[1]["conversations"])["bob"] == 2
    for bad in ({**newest, "conversation": "not a name"}, {**newest, "id": ""}, {**newest, "timestamp": "yesterday"}, {**newest, "id": 7}):
        status, body = await read_up_to(web, alice_session, bad)
        assert status == 422 and body["error"], bad
    status, body = await read_up_to(web, alice_session, newest)
    assert (status, body) == (200, {"advanced": 1})
    assert unread((await get(web, "/api/conversations", alice_session))[1]["conversations"])["bob"] == 0
    status, body = await read_up_to(web, alice_session, {**newest, "id": mail[0].id, "timestamp": mail[0].model_dump(mode="json")["timestamp"]})
    assert (status, body) == (200, {"advanced": 0})  # never back


async def test_personality_is_the_users_own(web: Web, settings: Settings) -> None:
    """/api/personality says the personality the assistant keeps for the socket's user,
    the first choice for someone who never picked one; 401 without a session."""
    async with ApiClient.from_settings(settings) as api:
        await api.put_state(settings.bot_name, "alice", {"personality": "pirate", "turns": [{"role": "user", "content": "a secret", "at": 1.0}]})
    alice = await open_page(web)
    _, alice_session = await alice.login("alice")
    bob = await open_page(web)
    _, bob_session = await bob.login("bob")
    assert (await get(web, "/api/personality", None))[0] == 401
    status, body = await get(web, "/api/personality", alice_session)
    assert (status, body) == (200, {"personality": "pirate", "choices": [*PERSONALITIES, "pirate"]})  # nothing of the thread
    status, body = await get(web, "/api/personality", bob_session)
    assert (status, body["personality"]) == (200, next(iter(PERSONALITIES)))


async def test_the_message_api_away_is_503(settings: Settings) -> None:
    """With the message API out of reach of the adapter, its data routes answer 503 in
    plain words (the socket and chat go on: the chat server reaches its own API)."""
    with held_port() as port:
        web = await serve_web(replace(settings, api_port=port))
        try:
            page = await open_page(web)
            _, session = await page.login("alice")
            for path, params in (("/api/conversations", {}), ("/api/history", {"with": "bob"}), ("/api/history", {"with": "#general"}), ("/api/personality", {})):
                status, body = await get(web, path, session, **params)
                assert status == 503 and "can't be reached" in body["error"], (path, body)
            status, body = await read_up_to(web, session, {"conversation": "bob", "id": "x", "timestamp": "2026-01-02T03:04:05.678Z"})
            assert status == 503 and "can't be reached" in body["error"]
        finally:
            await web.close()


async def test_the_favicon_is_served_as_an_svg(web: Web) -> None:
    """/favicon.ico (which browsers ask for) and the page's linked icon are one SVG file."""
    for path in ("/favicon.ico", "/static/favicon.svg"):
        async with web.get(path) as response:
            assert response.status == 200 and response.content_type == "image/svg+xml", path
            assert (await response.read()) == (STATIC_DIR / "favicon.svg").read_bytes()
    assert 'rel="icon" href="/static/favicon.svg"' in (STATIC_DIR / "index.html").read_text()


# --- the chat server away --------------------------------------------------------------------


async def test_chat_server_unavailable_is_retried_with_backoff(base: Settings) -> None:
    """A login while the chat server is down gets `status` frames (unavailable, growing retry_in);
    once a server listens the page is logged in on the same socket."""
    with held_port() as port:
        await _unavailable_then_up(replace(base, chat_port=port))


async def _unavailable_then_up(settings: Settings) -> None:
    web = await serve_web(settings)
    try:
        page = await open_page(web)
        await page.send({"type": "login", "user": "alice"})
        first = await page.expect(event(Event.STATUS))
        second = await page.expect(event(Event.STATUS))
        for status in (first, second):
            assert status["type"] == MessageType.ERROR and status["metadata"]["state"] == "unavailable"
            assert "retrying" in status["message"]
        assert (first["metadata"]["retry_in"], second["metadata"]["retry_in"]) == (FIRST_RETRY_SECONDS, 2 * FIRST_RETRY_SECONDS)
        async with ApiClient.from_settings(settings) as api:
            server = ChatServer(settings, api)
            await server.start()
            try:
                welcome = await page.expect(event(Event.WELCOME))
                assert welcome["metadata"]["user"] == "alice"
            finally:
                await server.stop()
    finally:
        await web.close()


async def test_chat_server_stopping_is_reported_as_lost(web: TestClient[Any, Any], chat_server: ChatServer) -> None:
    """When the chat server stops, the page sees its shutdown notice and a `lost` status with a retry."""
    page = await open_page(web)
    await page.login("alice")
    await chat_server.stop()
    assert "shutting down" in (await page.expect(event(Event.SHUTDOWN)))["message"].lower()
    lost = await page.expect(lambda f: event(Event.STATUS)(f) and f["metadata"]["state"] != "connected")
    assert lost["metadata"] == {"event": Event.STATUS, "state": "lost", "retry_in": FIRST_RETRY_SECONDS}


# --- security on every response ------------------------------------------------------------


async def test_every_response_carries_the_security_headers(web: Web) -> None:
    """The page, its files, its data and every refusal (401, 403, 404, 415, 422) carry the
    strict CSP, nosniff and no-referrer."""
    answers = []
    for path in ("/", "/static/app.js", "/static/style.css", "/static/markdown.js", "/static/favicon.svg", "/favicon.ico", "/config.json",
                 "/api/session", "/api/history/bob", "/api/conversations", "/nope"):  # fmt: skip
        async with web.get(path) as response:
            answers.append((path, response.status, response.headers))
    for path, body, headers in [
        ("/api/login", {"user": "not a name!"}, {"Origin": own_origin(web)}),
        ("/api/login", {"user": "alice", "guest": True}, {"Origin": "https://evil.example"}),
    ]:
        async with web.post(path, json=body, headers=headers) as response:
            answers.append((path, response.status, response.headers))
    async with web.post("/api/login", data="user=alice", headers={"Content-Type": "application/x-www-form-urlencoded"}) as response:
        answers.append(("/api/login (a form)", response.status, response.headers))
    async with web.get("/ws", headers={"Origin": "https://evil.example", "Upgrade": "websocket", "Connection": "Upgrade",
                                       "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as response:  # fmt: skip
        answers.append(("/ws (foreign)", response.status, response.headers))
    assert [status for _, status, _ in answers] == [200, 200, 200, 200, 200, 200, 200, 200, 401, 401, 404, 422, 403, 415, 403]
    for path, _, headers in answers:
        assert {name: headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS, path
    assert CONTENT_SECURITY_POLICY.startswith("default-src 'self'") and "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY


def test_the_page_has_nothing_inline() -> None:
    """The page's markup has no inline script, no style attribute or block, no event
    handler attribute and no javascript: URL, so the CSP needs no 'unsafe-inline'."""
    html = (STATIC_DIR / "index.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S | re.I)
    assert scripts and all(not body.strip() for body in scripts)
    assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html, flags=re.I))
    assert not re.search(r"<style\b|\sstyle\s*=|\son[a-z]+\s*=|javascript:", html, flags=re.I)
    for name in ("app.js", "markdown.js"):
        script = (STATIC_DIR / name).read_text()
        # Markup built as strings carries no style attribute nor handler (CSSOM, element.style, is fine).
        assert not re.search(r"style=|\son[a-z]+=|javascript:", script, flags=re.I), name


# --- the WebSocket's Origin ----------------------------------------------------------------


async def test_a_foreign_origin_is_refused_and_the_own_or_none_is_not(web: Web) -> None:
    """An upgrade from another origin gets 403; the page's own origin and a program's (no
    Origin header at all) are let through and log in."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await web.ws_connect("/ws", origin="https://evil.example")
    assert refused.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as null:
        await web.ws_connect("/ws", origin="null")  # a sandboxed frame or a file
    assert null.value.status == 403

    own = await open_page(web, origin=own_origin(web))
    await own.login("alice")
    program = await open_page(web)  # aiohttp sends no Origin unless told to
    await program.login("bob")


@pytest.mark.parametrize("overrides", [{"web_allowed_origins": "https://chat.example.org, http://app.example:8443/"}])
async def test_web_allowed_origins_are_honoured(web: Web) -> None:
    """Origins listed in WEB_ALLOWED_ORIGINS may open the socket (and POST); others still can't."""
    for origin in ("https://chat.example.org", "http://app.example:8443", "HTTPS://CHAT.EXAMPLE.ORG"):
        page = await open_page(web, origin=origin)
        await page.ws.close()
    for origin in ("https://evil.example", "http://chat.example.org", "https://chat.example.org:444"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await web.ws_connect("/ws", origin=origin)
        assert refused.value.status == 403, origin
    status, body, _ = await post(web, "/api/login", {"user": "alice", "guest": True}, Origin="https://chat.example.org")
    assert status == 200 and body == {"user": "alice", "account": False}
    status, body, _ = await post(web, "/api/login", {"user": "alice", "guest": True}, Origin="https://evil.example")
    assert status == 403 and "own address" in body["error"]


# --- accounts: create, log in, resume, leave -----------------------------------------------


async def test_create_account_sets_an_httponly_strict_cookie(web: Web, settings: Settings) -> None:
    """Creating an account answers its name (never the token) and sets the session in an
    HttpOnly, SameSite=Strict cookie for SESSION_DAYS, not Secure over plain HTTP; the
    token in it is a live session of the account."""
    status, body, response = await post(web, "/api/register", {"user": "Alice", "password": PASSWORD})
    assert (status, body) == (200, {"user": "Alice", "account": True})
    cookie = session_cookie(response)
    assert cookie["httponly"] is True and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"] and int(cookie["max-age"]) == int(settings.session_days * 86400)
    name, token = held_token(web)
    assert name == "Alice" and len(token) >= 32 and token not in json.dumps(body)
    assert await token_works(settings, "alice", token)
    async with web.get("/api/session") as answer:
        assert await answer.json() == {"user": "Alice"}

    status, body, _ = await post(web, "/api/register", {"user": "ALICE", "password": PASSWORD})
    assert status == 409 and body["reason"] == LoginReason.NAME_TAKEN and "taken" in body["error"]
    status, body, _ = await post(web, "/api/register", {"user": "carol", "password": "short"})
    assert status == 422 and "8-128" in body["error"] and "short" not in body["error"]


@pytest.mark.parametrize("overrides", [{"registration": "closed"}])
async def test_closed_registration_is_said_plainly(web: Web) -> None:
    """With REGISTRATION=closed the page can't create an account, and is told why; no cookie is set."""
    status, body, response = await post(web, "/api/register", {"user": "alice", "password": PASSWORD})
    assert status == 403 and body["reason"] == "registration_closed" and "registration is closed" in body["error"]
    assert SESSION_COOKIE not in response.cookies
    async with web.get("/config.json") as answer:
        assert (await answer.json())["registration"] == "closed"


@pytest.mark.parametrize("overrides", [{"login_attempts": 2}])
async def test_wrong_passwords_are_refused_then_locked(web: Web, settings: Settings) -> None:
    """A wrong password is refused in plain words with its reason and sets no cookie; past
    LOGIN_ATTEMPTS the name is locked (429, retry_after), even for the right password. A
    password for a name with no account is no guest login."""
    async with ApiClient.from_settings(settings) as api:
        await api.create_account("alice", PASSWORD)
    answers = [await post(web, "/api/login", {"user": "alice", "password": "wrong password"}) for _ in range(3)]
    assert [status for status, _, _ in answers] == [401, 401, 429]
    status, body, response = answers[0]
    assert body["reason"] == LoginReason.WRONG_PASSWORD and body["error"] == "Wrong password for 'alice'."
    assert SESSION_COOKIE not in response.cookies
    _, locked, _ = answers[2]
    assert locked["reason"] == LoginReason.LOCKED and locked["retry_after"] > 0
    assert f"try again in {locked['retry_after']} s" in locked["error"]
    status, body, _ = await post(web, "/api/login", {"user": "alice", "password": PASSWORD})
    assert status == 429 and body["reason"] == LoginReason.LOCKED

    status, body, _ = await post(web, "/api/login", {"user": "nobody", "password": PASSWORD})
    assert status == 401 and body["reason"] == "no_account" and "guest" in body["error"]
    status, body, _ = await post(web, "/api/login", {"user": "alice"})
    assert status == 401 and body["reason"] == LoginReason.PASSWORD_REQUIRED


@pytest.mark.parametrize("overrides", [{"guests": False}])
async def test_no_guests_is_said_plainly(web: Web) -> None:
    """With GUESTS=false a guest login from the page is refused with its reason."""
    status, body, _ = await post(web, "/api/login", {"user": "alice", "guest": True})
    assert status == 403 and body["reason"] == LoginReason.GUESTS_NOT_ALLOWED


async def test_a_login_frame_never_carries_a_secret(web: Web) -> None:
    """A login frame with a password or a token is refused: secrets go to /api/login once
    and live in the HttpOnly cookie, never in page script."""
    page = await open_page(web)
    for secret in ({"password": PASSWORD}, {"token": "abc"}, {"service_token": TOKEN}):
        await page.send({"type": "login", "user": "alice", **secret})
        refused = await page.expect(event(Event.BAD_INPUT))
        assert "/api/login" in refused["message"]
    await page.login("alice")  # the socket stays, and a plain login goes through


async def test_a_forged_or_stale_cookie_is_refused(web: Web, settings: Settings) -> None:
    """A cookie whose token the account doesn't have logs nobody in: the login is refused
    as one without a password, and the socket stays for another try."""
    async with ApiClient.from_settings(settings) as api:
        await api.create_account("alice", PASSWORD)
    web.session.cookie_jar.update_cookies({SESSION_COOKIE: "alice:forged-token"}, web.make_url("/"))
    page = await open_page(web)
    refused = await page.refused("alice")
    # The API answers a dead token as a missing password (the contract's "wrong" would do as well).
    assert refused["metadata"]["reason"] in (LoginReason.PASSWORD_REQUIRED, LoginReason.WRONG_PASSWORD)
    assert not any(event(Event.WELCOME)(f) for f in page.seen)
    welcome, _ = await page.login("mallory")
    assert welcome["metadata"]["account"] is False


async def test_a_reload_or_a_second_tab_resumes_the_account(web: Web, settings: Settings) -> None:
    """After creating an account, a new socket (a reload, another tab) logs in as the
    account without the password, spelled as registered; no frame shows the token."""
    await post(web, "/api/register", {"user": "Alice", "password": PASSWORD})
    _, token = held_token(web)
    first = await open_page(web)
    welcome, _ = await first.login("alice")
    assert welcome["metadata"]["user"] == "Alice" and welcome["metadata"]["account"] is True
    second = await open_page(web)
    again, _ = await second.login("alice")
    assert again["metadata"]["account"] is True
    assert "token" not in welcome["metadata"] and not any(token in json.dumps(f) for f in first.seen + second.seen)


async def test_leave_revokes_the_session_and_closes_its_tabs(web: Web, settings: Settings) -> None:
    """"Leave" revokes the session token and clears the cookie; the browser's other tabs
    are closed as signed out, and the name now needs the password again."""
    await post(web, "/api/register", {"user": "alice", "password": PASSWORD})
    name, token = held_token(web)
    tab = await open_page(web)
    await tab.login("alice")
    status, body, response = await post(web, "/api/logout", {})
    assert (status, body) == (200, {"revoked": True})
    assert session_cookie(response).value == "" and SESSION_COOKIE not in {c.key for c in web.session.cookie_jar}
    assert await tab.closed() == SIGNED_OUT_CLOSE
    assert not await token_works(settings, name, token)
    async with web.get("/api/session") as answer:
        assert await answer.json() == {"user": None}
    page = await open_page(web)
    assert (await page.refused("alice"))["metadata"]["reason"] == LoginReason.PASSWORD_REQUIRED


async def test_leave_as_a_guest_and_a_guest_login_end_an_account_session(web: Web, settings: Settings) -> None:
    """A guest's Leave has nothing to revoke; turning guest in a browser that held an
    account session ends that session (a reload must not resume it)."""
    status, body, _ = await post(web, "/api/logout", {})
    assert (status, body) == (200, {"revoked": False})
    await post(web, "/api/register", {"user": "alice", "password": PASSWORD})
    name, token = held_token(web)
    status, body, _ = await post(web, "/api/login", {"user": "bob", "guest": True})
    assert (status, body) == (200, {"user": "bob", "account": False})
    assert SESSION_COOKIE not in {c.key for c in web.session.cookie_jar}
    assert not await token_works(settings, name, token)


async def test_a_stranger_cannot_read_an_accounts_history(web: Web, settings: Settings) -> None:
    """Alice's conversation with bob is hers: someone else at the adapter can't log in as
    alice without her password, and their own session reads only their own history."""
    bob = await json_peer(settings, "bob")
    try:
        await post(web, "/api/register", {"user": "alice", "password": PASSWORD})
        alice = await open_page(web)
        _, alice_session = await alice.login("alice")
        await alice.send({"type": "chat", "destination": "bob", "message": "for bob only"})
        await expect_message(bob, lambda m: m.type == MessageType.CHAT)
    finally:
        await bob.close()

    stranger = await serve_web(settings)  # another browser: its own cookie jar
    try:
        page = await open_page(stranger)
        assert (await page.refused("alice"))["metadata"]["reason"] == LoginReason.PASSWORD_REQUIRED
        status, _, _ = await post(stranger, "/api/login", {"user": "alice", "password": "a guess at it"})
        assert status == 401
        _, mallory_session = await page.login("mallory")
        async with stranger.get("/api/history/bob", headers={SESSION_HEADER: mallory_session}) as response:
            assert response.status == 200 and (await response.json())["messages"] == []
        async with stranger.get("/api/history/bob") as response:
            assert response.status == 401
    finally:
        await stranger.close()
    async with ApiClient.from_settings(settings) as api:  # it was there to be read, by alice
        await until_archived(api, "alice", "bob")
    async with web.get("/api/history/bob", headers={SESSION_HEADER: alice_session}) as response:
        assert [m["message"] for m in (await response.json())["messages"]] == ["for bob only"]


async def until_archived(api: ApiClient, user: str, peer: str) -> None:
    """The server archives in batches, off the routing path."""
    async with asyncio.timeout(TIMEOUT):
        while not (await api.history(user, peer))[0]:
            await asyncio.sleep(0.05)


# --- acknowledgements: the page acks what it has shown --------------------------------------


async def stored_frames(page: Page, count: int) -> list[Frame]:
    """The next `count` stored-mail frames the page gets (after its login)."""
    return [await page.expect(lambda f: f.get("metadata", {}).get("stored") is True) for _ in range(count)]


async def pending_ids(settings: Settings, user: str) -> list[str]:
    async with ApiClient.from_settings(settings) as api:
        messages, _ = await api.pending(user)
        return [message["id"] for message in messages]


async def left(server: ChatServer, user: str) -> None:
    """Until the chat server has let `user` go (a closed tab's connection ends a moment
    later; a guest's name is free only then)."""
    async with asyncio.timeout(TIMEOUT):
        while user in server.router.directory.local:
            await asyncio.sleep(0.02)


async def test_a_pages_ack_reaches_the_chat_server_and_takes_its_mail_off(web: Web, settings: Settings, chat_server: ChatServer) -> None:
    """Mail a page got but didn't ack comes again; the page's forwarded ack takes it off the mailbox."""
    mail = [Message(sender="bob", destination="alice", message=f"note {i}") for i in range(3)]
    async with ApiClient.from_settings(settings) as api:
        await api.store_mail(mail)
    ids = [m.id for m in mail]

    first = await open_page(web)
    welcome, _ = await first.login("alice")
    assert welcome["metadata"]["pending"] == 3
    assert [f["id"] for f in await stored_frames(first, 3)] == ids
    await first.ws.close()  # shown, never acknowledged
    await left(chat_server, "alice")
    second = await open_page(web)
    welcome, _ = await second.login("alice")
    assert welcome["metadata"]["pending"] == 3
    assert [f["id"] for f in await stored_frames(second, 3)] == ids
    await second.send({"type": "ack", "ids": ids})
    async with asyncio.timeout(TIMEOUT):  # the server acknowledges to the API off the page's path
        while await pending_ids(settings, "alice"):
            await asyncio.sleep(0.05)
    assert not [f for f in second.seen if f["type"] == MessageType.ERROR]  # an ack gets no answer
    await second.ws.close()
    await left(chat_server, "alice")
    third = await open_page(web)
    welcome, _ = await third.login("alice")
    assert welcome["metadata"]["pending"] == 0


async def test_malformed_ack_frames_get_bad_input_and_a_good_one_no_answer(web: Web) -> None:
    """Malformed ack frames get bad_input and the socket stays; a good ack (even before login) gets no answer."""
    page = await open_page(web)
    await page.send({"type": "ack", "ids": ["before-login"]})
    await page.login("alice")
    assert [f["metadata"].get("event") for f in page.seen][:1] == [Event.WELCOME]  # nothing came before it
    bad: list[Frame] = [
        {"type": "ack"},
        {"type": "ack", "ids": "abc"},
        {"type": "ack", "ids": []},
        {"type": "ack", "ids": ["ok", 7]},
        {"type": "ack", "ids": [["nested"]]},
        {"type": "ack", "ids": [""]},
        {"type": "ack", "ids": ["x" * 65]},
        {"type": "ack", "ids": [str(i) for i in range(1001)]},
    ]
    for frame in bad:
        await page.send(frame)
        error = await page.expect(lambda f: f["type"] == MessageType.ERROR)
        assert (error["sender"], error["metadata"]["event"]) == (ADAPTER_NAME, Event.BAD_INPUT), frame
        assert "ack" in error["message"].lower(), error["message"]
    await page.send({"type": "ack", "ids": ["y" * 40] * 210})  # each id fine, the line too big
    error = await page.expect(lambda f: f["type"] == MessageType.ERROR)
    assert error["metadata"]["event"] == Event.BAD_INPUT and "too big" in error["message"].lower()

    seen = len(page.seen)
    await page.send({"type": "ack", "ids": ["nobody-knows-this-id", "nor-this"]})
    await page.send({"type": "command", "message": "!who"})
    await page.expect(event(Event.WHO))  # the chat server read both, in order: the ack said nothing
    assert not [f for f in page.seen[seen:] if f["type"] == MessageType.ERROR]


# --- request bodies: bounded in size and in time ---------------------------------------------

BODY_ROUTES = ("/api/login", "/api/register", "/api/logout")


@pytest.fixture
async def adapter(store_url: str) -> AsyncIterator[Web]:
    """The adapter alone (no chat server, no API): enough for refusals made before either is asked."""
    client = await serve_web(settings_for(store_url))
    try:
        yield client
    finally:
        await client.close()


async def answer_to(port: int, head: bytes, body: bytes = b"") -> tuple[bytes, Frame]:
    """Send a request's head and `body` (maybe less than it declares) on a connection of
    its own; the answer's head and its JSON body."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(TIMEOUT):
            answer_head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?im)^content-length: *(\d+)", answer_head).group(1))  # type: ignore[union-attr]
            return answer_head, json.loads(await reader.readexactly(length))
    finally:
        writer.close()


def post_head(web: Web, path: str, length: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: {HOST}:{web.port}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()


async def test_a_body_over_the_limit_is_refused_413(adapter: Web) -> None:
    """A POST body over MAX_REQUEST_BYTES gets 413 in JSON and the connection closes: one that
    says so in Content-Length before a byte of it is sent, and a chunked one once it passes the limit."""
    for path in BODY_ROUTES:
        head, body = await answer_to(adapter.port, post_head(adapter, path, 10 * MAX_REQUEST_BYTES))  # nothing of it sent
        assert head.startswith(b"HTTP/1.1 413 "), (path, head)
        assert b"connection: close" in head.lower() and f"{MAX_REQUEST_BYTES} bytes" in body["error"], (path, head, body)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"user": "alice", "password": "'
        for _ in range(MAX_REQUEST_BYTES // 1024 + 1):
            yield b"x" * 1024

    async with adapter.post("/api/login", data=chunks(), headers={"Content-Type": "application/json"}) as response:
        assert response.status == 413 and response.headers["Connection"].lower() == "close"
        assert f"{MAX_REQUEST_BYTES} bytes" in (await response.json())["error"]
        assert {name: response.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
    async with adapter.post("/api/login", json={"user": "alice", "guest": True}) as response:  # the limit itself is no refusal
        assert response.status == 200


async def test_a_body_that_stops_arriving_is_refused_408(adapter: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    """A POST whose body stops short of its Content-Length gets 408 in JSON at BODY_TIMEOUT_SECONDS,
    and its connection closes; a whole body on another connection is answered meanwhile."""
    monkeypatch.setattr(chatnet.web, "BODY_TIMEOUT_SECONDS", 0.3)
    loop = asyncio.get_running_loop()
    for path in BODY_ROUTES:
        start = loop.time()
        stalled = asyncio.create_task(answer_to(adapter.port, post_head(adapter, path, 100), b'{"user": "alice"'))
        async with adapter.post("/api/login", json={"user": "bob", "guest": True}) as response:
            assert response.status == 200 and not stalled.done()
        head, body = await stalled
        assert 0.3 <= loop.time() - start < TIMEOUT
        assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower(), (path, head)
        assert "0.3 s" in body["error"] and "send it again" in body["error"], body
    assert BODY_TIMEOUT_SECONDS >= 1  # the real deadline leaves a slow phone time to send a hundred bytes


async def test_a_pong_from_the_page_is_dropped_quietly(web: Web) -> None:
    """The adapter answers the server's pings itself; a page's pong frame gets no answer, and the socket goes on."""
    page = await open_page(web)
    await page.login("alice")
    seen = len(page.seen)
    await page.send({"type": "pong"})
    await page.send({"type": "command", "message": "!who"})
    await page.expect(event(Event.WHO))
    assert not [f for f in page.seen[seen:] if f["type"] == MessageType.ERROR]


async def test_a_pages_typing_frame_reaches_another_page_as_a_notice(web: Web) -> None:
    """A typing frame from one page is passed on; every page shows typing, so another
    page gets the `typing` notice (and a bad one is refused, the socket stays)."""
    alice, bob = await open_page(web), await open_page(web)
    await alice.login("alice")
    await bob.login("bob")
    await alice.send({"type": "typing", "destination": "bob", "active": True})
    notice = await bob.expect(event(Event.TYPING))
    assert notice["metadata"] == {"event": "typing", "user": "alice", "active": True, "room": None}
    await alice.send({"type": "typing", "destination": "bob", "active": "maybe"})
    refusal = await alice.expect(event(Event.BAD_INPUT))
    assert "true or false" in refusal["message"]


# --- POST /api/bots: the page's "New bot" form --------------------------------------------


async def test_an_account_makes_a_bot_it_owns_and_refusals_are_plain(web: Web, settings: Settings) -> None:
    """A registered user's {name, system, model} becomes a bot definition the user owns;
    a name in use (a bot's, a person's) is 409, a bad name 422, each with words the page shows."""
    await post(web, "/api/register", {"user": "Alice", "password": PASSWORD})
    page = await open_page(web)
    _, session = await page.login("alice")
    status, body, _ = await post(web, "/api/bots", {"name": "poet", "system": "You answer in rhymes.", "model": "tiny"}, **{SESSION_HEADER: session})
    assert status == 201 and body["name"] == "poet" and body["created"] is True and body["id"]
    async with ApiClient.from_settings(settings) as api:
        made = await api.bot("poet")
    assert made is not None
    wanted = {"owner": "Alice", "system": "You answer in rhymes.", "model": "tiny", "personality": None}
    assert {k: made[k] for k in wanted} == wanted

    status, body, _ = await post(web, "/api/bots", {"name": "Poet", "system": "another"}, **{SESSION_HEADER: session})
    assert status == 409 and "poet" in body["error"].lower()
    async with ApiClient.from_settings(settings) as api:
        assert (await api.bot("poet") or {}).get("system") == "You answer in rhymes."  # never replaced
    status, body, _ = await post(web, "/api/bots", {"name": "alice"}, **{SESSION_HEADER: session})
    assert status == 409 and body["error"]
    status, body, _ = await post(web, "/api/bots", {"name": "no spaces"}, **{SESSION_HEADER: session})
    assert status == 422 and NAME_RULE in body["error"]
    status, body, _ = await post(web, "/api/bots", {"name": "ok", "system": "x" * (MAX_BOT_PROMPT_CHARS + 1)}, **{SESSION_HEADER: session})
    assert status == 422 and "too long" in body["error"]


async def test_a_guest_or_nobody_cannot_make_a_bot(web: Web) -> None:
    """Without a logged-in socket: 401; a guest: 403, told to create an account."""
    status, _, _ = await post(web, "/api/bots", {"name": "poet"})
    assert status == 401
    guest = await open_page(web)
    _, session = await guest.login("visitor")
    status, body, _ = await post(web, "/api/bots", {"name": "poet"}, **{SESSION_HEADER: session})
    assert status == 403 and "account" in body["error"]


async def test_one_person_makes_at_most_so_many_bots(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_BOTS_PER_OWNER bots of one's own the form is refused (403)."""
    monkeypatch.setattr(chatnet.web, "MAX_BOTS_PER_OWNER", 2)
    await post(web, "/api/register", {"user": "alice", "password": PASSWORD})
    page = await open_page(web)
    _, session = await page.login("alice")
    for name in ("one", "two"):
        assert (await post(web, "/api/bots", {"name": name}, **{SESSION_HEADER: session}))[0] == 201
    status, body, _ = await post(web, "/api/bots", {"name": "three"}, **{SESSION_HEADER: session})
    assert status == 403 and "2 bots" in body["error"]
