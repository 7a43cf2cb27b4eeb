"""Slow HTTP requests time out: the message API and the web adapter close a connection
that trickles its request a byte at a time, one that never sends a byte, and one left
idle after a response, each within a generous deadline past its configured timeout,
while a normal request on a fresh connection is answered meanwhile. A POST to the
adapter whose body trickles in after a whole head is answered 408 and closed."""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import aiohttp

from chatnet.web import BODY_TIMEOUT_SECONDS, WEB_KEEPALIVE_SECONDS, WEB_LINGER_SECONDS
from message_api import API_KEEP_ALIVE_SECONDS, API_REQUEST_SECONDS
from tests.support import HOST, TIMEOUT, Network

SLOW_CONNECTIONS = 4
# Past the configured timeout: a loaded CI machine may fire a timer late.
MARGIN = 10.0
# The trickler's pace: one byte, then wait this long for the server to close.
BYTE_EVERY = 0.5


async def closed_while_trickling(port: int) -> None:
    """Send a request head that never ends, a byte at a time, until the server closes."""
    reader, writer = await asyncio.open_connection(HOST, port)
    head = b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nX-Slow: "
    sent = 0
    try:
        while True:
            writer.write(head[sent : sent + 1] if sent < len(head) else b"a")
            sent += 1
            await writer.drain()
            with suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(65536), BYTE_EVERY) == b"":
                    return
    except ConnectionError:
        return  # reset while writing: closed too
    finally:
        writer.close()


async def closed_while_silent(port: int, request: bytes = b"") -> None:
    """Connect, send `request` (a whole one, or nothing) and read until the server closes."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        await writer.drain()
        with suppress(ConnectionError):
            while await reader.read(65536):
                pass
    finally:
        writer.close()


async def all_closed(port: int, timeout: float, keep_alive: float) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"
    slow = [closed_while_trickling(port) for _ in range(SLOW_CONNECTIONS)]
    silent = [closed_while_silent(port) for _ in range(SLOW_CONNECTIONS)]
    idle = closed_while_silent(port, request)  # idle after its response
    await asyncio.gather(asyncio.wait_for(asyncio.gather(*slow, *silent), timeout + MARGIN), asyncio.wait_for(idle, keep_alive + MARGIN))


async def test_slow_requests_are_closed_and_others_answered(network: Network) -> None:
    network.start_api()
    network.start_server()
    network.start_web()
    closing = asyncio.gather(
        all_closed(network.api_port, API_REQUEST_SECONDS, API_KEEP_ALIVE_SECONDS),
        all_closed(network.web_port, WEB_KEEPALIVE_SECONDS, WEB_KEEPALIVE_SECONDS),
    )
    try:
        async with aiohttp.ClientSession(headers=network.auth) as http:
            for url in (f"{network.api_url}/health", f"http://{HOST}:{network.web_port}/"):
                async with http.get(url) as response:
                    assert response.status == 200, (url, response.status)
        await closing
    finally:
        closing.cancel()
        with suppress(asyncio.CancelledError):
            await closing


# --- a request body that trickles in ---------------------------------------------------------

# The adapter's routes that read a request body.
BODY_ROUTES = ("/api/login", "/api/register", "/api/logout")
# Declared but never sent whole: at a byte every BYTE_EVERY it would take over half an hour.
TRICKLED_LENGTH = 4096


@dataclass
class Trickled:
    """What a client trickling a request body heard, and when (seconds after its head went out)."""

    answer: bytes = b""
    answered_after: float | None = None  # the first byte of an answer had arrived
    closed_after: float | None = None  # the adapter had closed the connection (None: not within the deadline)

    @property
    def status(self) -> int | None:
        fields = self.answer.partition(b"\r\n")[0].split()
        return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None

    @property
    def head(self) -> str:
        return self.answer.partition(b"\r\n\r\n")[0].decode(errors="replace").lower()

    def body(self) -> Any:
        return json.loads(self.answer.partition(b"\r\n\r\n")[2])


async def trickle_body(port: int, path: str, started: asyncio.Event, deadline: float) -> Trickled:
    """Send a whole request head at once, then its JSON body a byte at a time, reading what
    the adapter answers, until it closes the connection or `deadline` seconds have passed."""
    reader, writer = await asyncio.open_connection(HOST, port)
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\nContent-Length: {TRICKLED_LENGTH}\r\n\r\n"
    body = (b'{"user": "slowpoke", "password": "' + b"x" * TRICKLED_LENGTH)[:TRICKLED_LENGTH]
    heard = Trickled()
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    try:
        writer.write(head.encode())
        await writer.drain()
        started.set()
        while loop.time() - start < deadline:
            writer.write(body[sent : sent + 1])
            sent += 1
            await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(65536), BYTE_EVERY)
            except TimeoutError:
                continue
            if not chunk:
                heard.closed_after = loop.time() - start
                break
            heard.answer += chunk
            if heard.answered_after is None:
                heard.answered_after = loop.time() - start
    except ConnectionError:
        heard.closed_after = loop.time() - start  # reset while writing or reading: closed too
    finally:
        writer.close()
    return heard


async def test_a_trickled_request_body_is_answered_408_and_closed(network: Network) -> None:
    """A POST body trickled a byte at a time to each body route gets 408 (JSON) at BODY_TIMEOUT_SECONDS and is closed; another login is answered meanwhile."""
    network.start_api()
    network.start_server()
    network.start_web()
    deadline = BODY_TIMEOUT_SECONDS + WEB_LINGER_SECONDS + MARGIN
    started = [asyncio.Event() for _ in BODY_ROUTES]
    slow = [asyncio.create_task(trickle_body(network.web_port, path, ready, deadline)) for path, ready in zip(BODY_ROUTES, started, strict=True)]
    try:
        await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in started)), TIMEOUT)
        async with aiohttp.ClientSession(f"http://{HOST}:{network.web_port}") as http, http.post("/api/login", json={"user": "carol", "guest": True}) as response:
            assert response.status == 200 and await response.json() == {"user": "carol", "account": False}
        assert not any(task.done() for task in slow), "a trickled request ended before another user's was answered"
        heard = await asyncio.gather(*slow)
    finally:
        for task in slow:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)
    for path, result in zip(BODY_ROUTES, heard, strict=True):
        assert result.status == 408, (path, result)
        assert result.answered_after is not None and BODY_TIMEOUT_SECONDS - 0.5 <= result.answered_after <= BODY_TIMEOUT_SECONDS + MARGIN, (path, result)
        assert "connection: close" in result.head and "application/json" in result.head, (path, result)
        assert f"{BODY_TIMEOUT_SECONDS:g} s" in result.body()["error"], (path, result)
        assert result.closed_after is not None, f"{path}: still open {deadline} s after its head; it said {result.answer!r}"
