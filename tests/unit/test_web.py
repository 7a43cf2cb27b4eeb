"""The web adapter in-process: its aiohttp app on a TestServer, a real chat server
(`ChatServer` on port 0) and, for history, the real message API (uvicorn on a socket
bound here) over the embedded store. The page is played by an aiohttp WebSocket."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import pytest
import uvicorn
from aiohttp.test_utils import TestClient, TestServer

from chatnet.api import create_app
from chatnet.api_client import ApiClient
from chatnet.config import Settings
from chatnet.limits import MAX_MESSAGE_CHARS, MAX_NAME_CHARS, NAME_PATTERN, NAME_RULE
from chatnet.peer import Peer
from chatnet.personalities import PERSONALITIES
from chatnet.process import ROOT
from chatnet.protocol import Event, Message, MessageType
from chatnet.server import ChatServer
from chatnet.web import ADAPTER_NAME, FIRST_RETRY_SECONDS, HISTORY_LIMIT_MAX, MAX_FRAME_BYTES, MAX_WS_MESSAGE_BYTES, SESSION_HEADER, build_app

HOST = "127.0.0.1"
TOKEN = "web-unit-test-token"
TIMEOUT = 10.0

Frame = dict[str, Any]


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


async def expect_message(peer: Peer, match: Callable[[Message], bool]) -> Message:
    async with asyncio.timeout(TIMEOUT):
        while (message := await peer.recv()) is not None:
            if match(message):
                return message
    raise AssertionError("the chat server closed the connection")


# --- the network, in process ---------------------------------------------------------------


def settings_for(store_url: str, **overrides: Any) -> Settings:
    """Settings for this test only (no .env); the ports are filled in as servers start."""
    return Settings(
        _env_file=None, chat_host=HOST, chat_port=0, api_host=HOST, api_token=TOKEN, mongo_url=store_url,
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
async def base(store_url: str) -> AsyncIterator[Settings]:
    """The message API serving, in process; settings that point at it (chat port still 0)."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen()  # connections wait in the backlog until uvicorn has started
    settings = settings_for(store_url, api_port=sock.getsockname()[1])
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
    return base.model_copy(update={"chat_port": chat_server.port})


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


async def open_page(web: TestClient[aiohttp.web.Request, aiohttp.web.Application]) -> Page:
    return Page(await web.ws_connect("/ws"))


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
        assert got.metadata.get("sender_features") == ["stream"]
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
    or revoked one) and with it returns that user's conversation, newest first."""

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
        assert [m["message"] for m in body["messages"]] == ["reply from bob", "first from alice"]
        status, body = await read("not a name", token)
        assert status == 422 and "name" in body["error"].lower()

        await page.ws.close()
        async with asyncio.timeout(TIMEOUT):  # the bridge goes once the socket's handler has finished
            while (await read("bob", token))[0] != 401:
                await asyncio.sleep(0.05)
    finally:
        await bob.close()


# --- the chat server away --------------------------------------------------------------------


async def test_chat_server_unavailable_is_retried_with_backoff(base: Settings) -> None:
    """A login while the chat server is down gets `status` frames (unavailable, growing retry_in);
    once a server listens the page is logged in on the same socket."""
    with held_port() as port:
        await _unavailable_then_up(base.model_copy(update={"chat_port": port}))


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
