"""The web adapter as the page meets it: an aiohttp WebSocket client against the real
processes (embedded store, message API, chat server, adapter), with terminal users on
raw TCP beside it. A browser's cookie jar is an aiohttp one that keeps cookies of an
IP-address host (`unsafe`), so the session cookie rides on every request and upgrade."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatnet.api_client import ApiClient
from chatnet.process import WEB_LISTENING, port_open
from chatnet.tls import client_context, ensure_certificate
from chatnet.web import SECURITY_HEADERS, SIGNED_OUT_CLOSE
from chatnet.web_bridge import SESSION_COOKIE
from tests.support import HOST, TIMEOUT, Network, eventually

PASSWORD = "correct horse battery"

Frame = dict[str, Any]


class WebUser:
    """What the page does: one WebSocket, JSON frames both ways."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws
        self.seen: list[Frame] = []
        self.session: str | None = None

    async def send(self, frame: Frame | str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def chat(self, destination: str, message: str) -> None:
        await self.send({"type": "chat", "destination": destination, "message": message})

    async def expect(self, match: Callable[[Frame], bool], timeout: float = TIMEOUT) -> Frame:
        """Read frames until one matches; fail on timeout or a closed socket."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    msg = await self.ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise AssertionError(f"socket ended ({msg.type}); seen: {self.seen[-10:]}")
                    frame = json.loads(msg.data)
                    self.seen.append(frame)
                    if frame.get("metadata", {}).get("event") == "session":
                        self.session = frame["metadata"]["token"]
                    if match(frame):
                        return frame
        except TimeoutError:
            raise AssertionError(f"no matching frame within {timeout} s; seen: {self.seen[-10:]}") from None

    async def closed(self, timeout: float = TIMEOUT) -> int | None:
        """Wait for the adapter to close the socket; return the close code it sent."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.CLOSE:  # its code, even if our reply can't be written
                    return int(msg.data)
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    return self.ws.close_code
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.seen.append(json.loads(msg.data))

    async def history(self, peer: str, token: str | None = "mine", **params: str) -> tuple[int, Frame]:
        return await self.data(f"/api/history/{peer}", token, **params)

    async def data(self, path: str, token: str | None = "mine", **params: str) -> tuple[int, Frame]:
        """A GET of the page's data with this socket's session handle ("mine"), another, or none."""
        headers = {} if token is None else {"X-Chatnet-Session": (self.session or "") if token == "mine" else token}
        async with self.http.get(path, headers=headers, params=params) as response:
            return response.status, await response.json()

    async def read(self, conversation: str, message: Frame) -> tuple[int, Frame]:
        """Tell the adapter this user has read `conversation` up to `message`."""
        body = {"conversation": conversation, "id": message["id"], "timestamp": message["timestamp"]}
        headers = {"X-Chatnet-Session": self.session or "", "Origin": str(self.http._base_url).rstrip("/")}
        async with self.http.post("/api/read", json=body, headers=headers) as response:
            return response.status, await response.json()


def event(name: str) -> Callable[[Frame], bool]:
    return lambda frame: frame.get("metadata", {}).get("event") == name


def chat_from(sender: str, text: str | None = None) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == "chat" and f.get("sender") == sender and (text is None or f.get("message") == text)


@pytest.fixture
def web(chat: Network) -> Network:
    """Message API, chat server and web adapter, running."""
    chat.start_web()
    return chat


@pytest.fixture
async def http(web: Network) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://{HOST}:{web.web_port}") as session:
        yield session


async def open_socket(http: aiohttp.ClientSession) -> WebUser:
    return WebUser(http, await http.ws_connect("/ws"))


async def web_login(http: aiohttp.ClientSession, user: str) -> tuple[WebUser, Frame]:
    """Open a socket and log in as the page does; return it and the welcome frame."""
    page = await open_socket(http)
    await page.send({"type": "login", "user": user})
    welcome = await page.expect(event("welcome"))
    await page.expect(event("session"))
    return page, welcome


def has_security_headers(response: aiohttp.ClientResponse) -> bool:
    return {name: response.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS


async def test_page_and_config_are_served_without_the_token(web: Network, http: aiohttp.ClientSession) -> None:
    """The page, its script and /config.json are served with the security headers; none of
    them reveals API_TOKEN."""
    async with http.get("/") as response:
        assert response.status == 200 and has_security_headers(response)
        html = await response.text()
    assert "<title>chatnet</title>" in html and "/static/app.js" in html
    for path in ("/static/app.js", "/static/markdown.js", "/static/style.css", "/no-such-page"):
        async with http.get(path) as response:
            assert response.status == (404 if path == "/no-such-page" else 200), path
            assert has_security_headers(response), path
            assert web.token not in await response.text()
    async with http.get("/config.json") as response:
        assert has_security_headers(response)
        config = await response.json()
    assert config["thermometer"] == "thermometer1" and config["bot"] == "openai"
    assert web.token not in json.dumps(config) and web.token not in html


async def test_web_user_and_terminal_user_chat_both_ways(web: Network, http: aiohttp.ClientSession) -> None:
    """A web user sees who is online at login and chats both ways with a TCP text user."""
    bob = await web.text_client("bob")
    alice, welcome = await web_login(http, "alice")
    assert welcome["type"] == "notification" and "alice" in welcome["message"]
    assert set(welcome["metadata"]["online"]) >= {"alice", "bob"}

    await alice.chat("bob", "hi bob, from the browser")
    line = await bob.expect("hi bob, from the browser")
    assert "[alice]" in line

    await bob.send("alice: hello alice, from the terminal")
    frame = await alice.expect(chat_from("bob"))
    assert frame["message"] == "hello alice, from the terminal"
    assert frame["destination"] == "alice" and frame["timestamp"].endswith("Z")


async def test_web_user_announces_streaming_and_sees_presence(web: Network, http: aiohttp.ClientSession) -> None:
    """Bots learn the web user wants streaming; the page hears who comes and goes."""
    alice, _ = await web_login(http, "alice")
    bot = await web.json_client("helper")
    joined = await alice.expect(event("presence"))
    assert joined["metadata"] == {"event": "presence", "presence": "online", "user": "helper", "bot": False}

    await alice.chat("helper", "write me a poem")
    incoming = await bot.expect(lambda m: m.type == "chat" and m.sender == "alice")
    assert incoming.metadata.get("sender_features") == ["stream", "typing"]

    await bot.close()
    left = await alice.expect(event("presence"))
    assert left["metadata"]["presence"] == "offline" and left["metadata"]["user"] == "helper"


async def test_a_bots_typing_reaches_the_page(web: Network, http: aiohttp.ClientSession) -> None:
    """Every page announces typing: a peer's typing frame reaches it as a `typing` notice."""
    alice, _ = await web_login(http, "alice")
    bot = await web.json_client("helper")
    await bot.send_raw({"type": "typing", "destination": "alice", "active": True})
    notice = await alice.expect(event("typing"))
    assert notice["metadata"] == {"event": "typing", "user": "helper", "active": True, "room": None}
    await bot.send_raw({"type": "typing", "destination": "alice", "active": False})
    assert (await alice.expect(event("typing")))["metadata"]["active"] is False
    await bot.close()


async def test_closing_the_socket_logs_the_user_out(web: Network, http: aiohttp.ClientSession) -> None:
    """When the page goes away its user goes offline for everyone else."""
    watcher = await web.json_client("watcher")
    alice, _ = await web_login(http, "alice")
    await watcher.expect(lambda m: m.metadata.get("presence") == "online" and m.metadata.get("user") == "alice")
    await alice.ws.close()
    gone = await watcher.expect(lambda m: m.metadata.get("event") == "presence" and m.metadata.get("user") == "alice")
    assert gone.metadata["presence"] == "offline"

    bob = await web.text_client("bob")
    await bob.send("!who")
    who = await bob.expect(lambda line: line.startswith("Online"))
    assert "alice" not in who
    # The name is free again: the same person can come back from a new page.
    again, welcome = await web_login(http, "alice")
    assert welcome["metadata"]["user"] == "alice"


async def test_bad_frames_get_an_error_and_the_socket_stays(web: Network, http: aiohttp.ClientSession) -> None:
    """Malformed, wrongly shaped, binary and oversized frames are refused one by one."""
    page = await open_socket(http)
    await page.chat("bob", "too early")
    early = await page.expect(lambda f: f["type"] == "error")
    assert early["metadata"]["event"] == "not_sent" and "log in" in early["message"].lower()

    await page.send({"type": "login", "user": "not a name!"})
    assert "Invalid username" in (await page.expect(event("bad_input")))["message"]

    bob = await web.text_client("bob")
    await page.send({"type": "login", "user": "alice"})
    await page.expect(event("welcome"))
    bad: list[tuple[Frame | str | bytes, str]] = [
        ("this is not json", "Malformed JSON"),
        ("[1, 2, 3]", "JSON object"),
        ({"type": "chat", "message": "no destination"}, "destination"),
        ({"type": "chat", "destination": "bob", "message": "x" * 2500}, "too long"),
        ({"type": "teleport"}, "Unknown frame type"),
        ({"type": "login", "user": "mallory"}, "Already logged in as alice"),
        (b"\x00\x01binary", "not binary"),
        (json.dumps({"type": "chat", "destination": "bob", "message": "y" * 9000}), "Frame too big"),
    ]
    for frame, reason in bad:
        await page.send(frame)
        error = await page.expect(lambda f: f["type"] == "error")
        assert error["metadata"]["event"] == "bad_input", frame
        assert reason.lower() in error["message"].lower(), (reason, error["message"])

    await page.chat("bob", "still here")
    assert "[alice] still here" in await bob.expect("still here")
    assert not any(line.endswith("x" * 20) or "mallory" in line for line in bob.seen)


async def test_chat_server_restart_is_reported_and_recovered(web: Network, http: aiohttp.ClientSession) -> None:
    """Stopping the chat server is reported to the page; once it is back the adapter
    logs the user in again on the same socket and chat works."""
    alice, _ = await web_login(http, "alice")
    web.stop("server")
    trouble = await alice.expect(lambda f: event("status")(f) and f["metadata"]["state"] != "connected")
    assert trouble["type"] == "error" and trouble["metadata"]["state"] in ("lost", "unavailable")
    unavailable = await alice.expect(lambda f: f.get("metadata", {}).get("state") == "unavailable")
    assert "retrying" in unavailable["message"].lower()

    web.start_server()
    welcome = await alice.expect(event("welcome"), timeout=30)
    assert welcome["metadata"]["user"] == "alice"
    bob = await web.text_client("bob")
    await alice.chat("bob", "back again")
    assert "[alice] back again" in await bob.expect("back again")


async def test_chat_server_down_at_login_is_retried(web: Network, http: aiohttp.ClientSession) -> None:
    """A page that logs in while the chat server is down is told so, and gets in once it is up."""
    web.stop("server")
    page = await open_socket(http)
    await page.send({"type": "login", "user": "alice"})
    status = await page.expect(event("status"))
    assert status["metadata"]["state"] == "unavailable" and "unavailable" in status["message"]
    web.start_server()
    welcome = await page.expect(event("welcome"), timeout=30)
    assert welcome["metadata"]["user"] == "alice"


async def test_history_is_read_for_the_logged_in_user_only(web: Network, http: aiohttp.ClientSession) -> None:
    """/api/history/{peer} returns the socket user's conversation; without a login it refuses."""
    status, body = await WebUser(http, None).history("bob", token=None)  # type: ignore[arg-type]
    assert status == 401 and "log in" in body["error"].lower()

    bob = await web.text_client("bob")
    alice, _ = await web_login(http, "alice")
    await alice.chat("bob", "first from alice")
    await bob.expect("first from alice")
    await bob.send("alice: reply from bob")
    await alice.expect(chat_from("bob", "reply from bob"))
    carol = await web.text_client("carol")
    await carol.send("bob: not for alice's eyes")
    await bob.expect("not for alice's eyes")

    # The server archives in batches, off the routing path.
    status, body = await eventually(
        lambda: alice.history("bob"), lambda answer: answer[0] != 200 or len(answer[1]["messages"]) >= 2, "alice's history with bob"
    )
    assert status == 200, body
    messages = body["messages"]
    assert sorted(m["message"] for m in messages) == ["first from alice", "reply from bob"], messages
    stamps = [m["timestamp"] for m in messages]
    assert stamps == sorted(stamps), messages  # oldest first
    assert body["next"] is None
    assert all({m["sender"], m["destination"]} == {"alice", "bob"} for m in body["messages"])

    status, _ = await alice.history("bob", token="guessed-token")
    assert status == 401
    status, body = await alice.history("not a name")
    assert status == 422
    token = alice.session
    await alice.ws.close()
    status, _ = await eventually(lambda: alice.history("bob", token=token), lambda answer: answer[0] != 200, "the closed page's token")
    assert status == 401


def unread(body: Frame) -> dict[str, int]:
    return {c["name"]: c["unread"] for c in body["conversations"]}


async def test_conversations_rooms_and_read_markers_for_the_logged_in_user(web: Network, http: aiohttp.ClientSession) -> None:
    """A web user's conversations list their room and the person who wrote, with the
    unread counts the server keeps; a room's history is for its members only; reading
    moves the counts; nobody else's session sees any of it."""
    carol = await web.text_client("carol")  # in #general from her first login
    alice, _ = await web_login(http, "alice")
    mallory, _ = await web_login(http, "mallory")
    await alice.send({"type": "command", "message": "!join #hiking"})
    await alice.expect(lambda f: event("joined")(f) and f["metadata"]["room"] == "#hiking")
    await carol.send("#general: hello all")
    general_line = await alice.expect(chat_from("carol", "hello all"))
    await carol.send("alice: just for you")
    direct = await alice.expect(chat_from("carol", "just for you"))
    # Counted from the store (the chat server archives in batches); the room's is unread until acked.
    status, body = await eventually(
        lambda: alice.data("/api/conversations"), lambda a: a[0] != 200 or unread(a[1]) == {"#general": 1, "carol": 1, "#hiking": 0}, "alice's counts"
    )
    assert status == 200, body
    status, body = await mallory.data("/api/conversations", user="alice")
    assert (status, unread(body)) == (200, {"#general": 1})  # mallory's own: carol's room message
    assert "just for you" not in json.dumps(body)

    status, body = await alice.data("/api/history", **{"with": "#general"})
    assert status == 200 and [m["message"] for m in body["messages"]] == ["hello all"] and body["next"] is None
    status, body = await mallory.data("/api/history", **{"with": "#hiking"})
    assert status == 403 and body["reason"] == "not_member"
    status, body = await mallory.data("/api/history", **{"with": "carol"})
    assert (status, body["messages"]) == (200, [])

    await alice.send({"type": "ack", "ids": [general_line["id"]]})  # the page shows the room: its marker moves
    assert await alice.read("carol", direct) == (200, {"advanced": 1})
    await eventually(lambda: alice.data("/api/conversations"), lambda a: unread(a[1]) == {"#general": 0, "carol": 0, "#hiking": 0}, "alice's counts")
    status, body = await mallory.data("/api/conversations")
    assert unread(body) == {"#general": 1}
    assert (await alice.data("/api/conversations", token=None))[0] == 401


async def test_stopping_the_adapter_closes_pages_and_logs_users_out(web: Network, http: aiohttp.ClientSession) -> None:
    """SIGTERM to the adapter closes each page's socket (going away) and its chat connection."""
    watcher = await web.json_client("watcher")
    alice, _ = await web_login(http, "alice")
    await watcher.expect(lambda m: m.metadata.get("presence") == "online" and m.metadata.get("user") == "alice")
    closing = asyncio.create_task(alice.closed())
    await asyncio.to_thread(web.stop, "web")
    assert await closing == aiohttp.WSCloseCode.GOING_AWAY
    gone = await watcher.expect(lambda m: m.metadata.get("event") == "presence" and m.metadata.get("user") == "alice")
    assert gone.metadata["presence"] == "offline"
    assert "shutting down" in web.log("web")


# --- the Origin of an upgrade -------------------------------------------------------------


async def test_the_socket_refuses_foreign_origins(chat: Network) -> None:
    """An upgrade from a foreign origin is refused (403); the page's own origin, one listed
    in WEB_ALLOWED_ORIGINS and a program's (no Origin) are let in."""
    chat.start_web(WEB_ALLOWED_ORIGINS="https://chat.example.org")
    own = f"http://{HOST}:{chat.web_port}"
    async with aiohttp.ClientSession(own) as http:
        for origin in ("https://evil.example", f"http://localhost:{chat.web_port}", "null"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect("/ws", origin=origin)
            assert refused.value.status == 403, origin
        for name, origin in (("alice", own), ("bob", "https://chat.example.org"), ("carol", None)):
            page = WebUser(http, await http.ws_connect("/ws", origin=origin))
            await page.send({"type": "login", "user": name})
            assert (await page.expect(event("welcome")))["metadata"]["user"] == name


# --- accounts -----------------------------------------------------------------------------


def browser_session(network: Network, scheme: str = "http", connector: aiohttp.BaseConnector | None = None) -> aiohttp.ClientSession:
    """A browser's view of the adapter: a cookie jar of its own."""
    jar = aiohttp.CookieJar(unsafe=True)  # the host is an IP address
    return aiohttp.ClientSession(f"{scheme}://{HOST}:{network.web_port}", cookie_jar=jar, connector=connector)


async def post(http: aiohttp.ClientSession, path: str, body: Frame) -> tuple[int, Frame, aiohttp.ClientResponse]:
    origin = str(http._base_url).rstrip("/")
    async with http.post(path, json=body, headers={"Origin": origin}) as response:
        return response.status, await response.json(), response


def held(http: aiohttp.ClientSession) -> tuple[str, str]:
    """(name, token) of the session cookie the jar holds."""
    value = {cookie.key: cookie.value for cookie in http.cookie_jar}[SESSION_COOKIE]
    name, _, token = value.partition(":")
    return name, token


async def tab(http: aiohttp.ClientSession, user: str) -> tuple[WebUser, Frame]:
    """A new tab of this browser that logs in as `user` (with the cookie, when it holds one)."""
    page = await open_socket(http)
    await page.send({"type": "login", "user": user, "features": ["stream"]})
    frame = await page.expect(lambda f: event("welcome")(f) or event("login_failed")(f))
    if event("welcome")(frame):
        await page.expect(event("session"))  # the handle for /api/history
    return page, frame


async def test_an_account_resumes_in_new_tabs_and_leave_ends_it(web: Network) -> None:
    """Create an account from the page: every new tab of that browser logs in as the
    account without the password; "Leave" revokes the session, closes its other tabs,
    and the old token no longer logs anyone in."""
    async with browser_session(web) as http:
        status, body, response = await post(http, "/api/register", {"user": "Alice", "password": PASSWORD})
        assert (status, body) == (200, {"user": "Alice", "account": True})
        cookie = response.cookies[SESSION_COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]
        name, token = held(http)

        first, welcome = await tab(http, "alice")
        assert welcome["metadata"]["user"] == "Alice" and welcome["metadata"]["account"] is True
        second, again = await tab(http, "alice")  # a reload, or another tab
        assert again["metadata"]["account"] is True
        bob = await web.text_client("bob")
        await second.chat("bob", "hello from my second tab")
        assert "[Alice] hello from my second tab" in await bob.expect("second tab")
        assert not any(token in json.dumps(frame) for frame in first.seen + second.seen)

        status, body, _ = await post(http, "/api/logout", {})
        assert (status, body) == (200, {"revoked": True})
        assert await first.closed() == SIGNED_OUT_CLOSE and await second.closed() == SIGNED_OUT_CLOSE
        assert SESSION_COOKIE not in {c.key for c in http.cookie_jar}
        _, refused = await tab(http, "alice")
        assert refused["metadata"]["reason"] == "password_required"
    async with ApiClient(web.api_url, web.token) as api:
        assert not (await api.check_login(name, "192.0.2.1", token=token)).ok


async def test_a_stranger_cannot_log_in_as_an_account_or_read_its_history(web: Network) -> None:
    """Someone at another browser can't take an account's name without its password
    (the form hears why), and reads only their own history."""
    async with browser_session(web) as alice_browser, browser_session(web) as stranger:
        await post(alice_browser, "/api/register", {"user": "alice", "password": PASSWORD})
        alice, _ = await tab(alice_browser, "alice")
        bob = await web.text_client("bob")
        await alice.chat("bob", "a secret for bob")
        await bob.expect("a secret for bob")

        status, body, response = await post(stranger, "/api/login", {"user": "alice", "password": "not her password"})
        assert status == 401 and body["reason"] == "wrong_password" and body["error"] == "Wrong password for 'alice'."
        assert SESSION_COOKIE not in response.cookies
        _, refused = await tab(stranger, "alice")
        assert refused["metadata"]["reason"] in ("password_required", "name_taken")
        mallory, _ = await tab(stranger, "mallory")
        status, body = await mallory.history("bob")
        assert status == 200 and body["messages"] == []
        status, body = await eventually(lambda: alice.history("bob"), lambda answer: bool(answer[1].get("messages")), "alice's history")
        assert [m["message"] for m in body["messages"]] == ["a secret for bob"]


# --- HTTPS ----------------------------------------------------------------------------------


async def test_web_tls_serves_the_page_over_https_and_wss(chat: Network, tmp_path: Path) -> None:
    """With WEB_TLS=true the adapter serves HTTPS (and WSS) with TLS_CERT/TLS_KEY, and the
    session cookie is Secure."""
    cert, key = ensure_certificate(tmp_path / "tls")
    https_listening = WEB_LISTENING.replace("https?", "https")
    chat.serve("web", "websocket_adapter.py", https_listening, lambda port: port_open(HOST, port)(), WEB_TLS="true", TLS_CERT=str(cert), TLS_KEY=str(key))
    assert f"web page on https://{HOST}:{chat.web_port} " in chat.log("web")
    connector = aiohttp.TCPConnector(ssl=client_context(cert))
    async with browser_session(chat, "https", connector) as https:
        async with https.get("/") as response:
            assert response.status == 200 and has_security_headers(response)
        status, body, response = await post(https, "/api/register", {"user": "alice", "password": PASSWORD})
        assert status == 200 and response.cookies[SESSION_COOKIE]["secure"]
        page = WebUser(https, await https.ws_connect("/ws", origin=f"https://{HOST}:{chat.web_port}"))
        await page.send({"type": "login", "user": "alice"})
        welcome = await page.expect(event("welcome"))
        assert welcome["metadata"]["account"] is True


async def test_text_json_and_web_users_talk_in_one_room(web: Network, http: aiohttp.ClientSession) -> None:
    """A person at nc, a JSON program and a page in #hiking: each one's line reaches the other two."""
    text = await web.text_client("tina")
    program = await web.json_client("jay")
    page, _ = await web_login(http, "wendy")
    await text.send("!join #hiking")
    await text.expect("Created #hiking; you are its owner.")
    await program.command("!join #hiking")
    await program.expect(lambda m: m.metadata.get("event") == "joined")
    await page.send({"type": "command", "message": "!join #hiking"})
    await page.expect(lambda f: f.get("metadata", {}).get("event") == "joined")

    await text.send("#hiking: from the terminal")
    assert (await program.expect(lambda m: m.type == "chat")).destination == "#hiking"
    assert (await page.expect(chat_from("tina", "from the terminal")))["destination"] == "#hiking"
    await program.send("#hiking", "from a program")
    await text.expect(lambda line: line.endswith("[#hiking][jay] from a program"))
    await page.expect(chat_from("jay", "from a program"))
    await page.chat("#hiking", "from the page")
    await text.expect(lambda line: line.endswith("[#hiking][wendy] from the page"))
    heard = await program.expect(lambda m: m.type == "chat" and m.sender == "wendy")
    assert (heard.destination, heard.message) == ("#hiking", "from the page")
