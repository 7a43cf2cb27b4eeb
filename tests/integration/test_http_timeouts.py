"""Slow HTTP requests time out: the message API and the web adapter close a connection
that trickles its request a byte at a time, one that never sends a byte, and one left
idle after a response, each within a generous deadline past its configured timeout,
while a normal request on a fresh connection is answered meanwhile."""

from __future__ import annotations

import asyncio
from contextlib import suppress

import aiohttp

from chatnet.web import WEB_KEEPALIVE_SECONDS
from message_api import API_KEEP_ALIVE_SECONDS, API_REQUEST_SECONDS
from tests.support import HOST, Network

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
