"""The API's transport against a small HTTP server on a loopback port that answers as
each test scripts it: reuse, a server letting an idle connection go, lost and garbled
answers, deadlines, streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from chatnet.http_client import HttpClient, HttpError

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # the request's head → keep the connection?


def answer(body: bytes, status: int = 200, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d OK\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                if not await self.handler(head, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@asynccontextmanager
async def running(handler: Handler, limit: int = 100) -> AsyncIterator[tuple[Server, HttpClient]]:
    server = Server(handler)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    client = HttpClient(f"http://127.0.0.1:{port}", {"Authorization": "Bearer t"}, limit)
    try:
        yield server, client
    finally:
        await client.close()
        listener.close()


async def echo_target(head: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(answer(head.split(b" ")[1]))
    return True


async def test_one_connection_carries_request_after_request() -> None:
    async with running(echo_target) as (server, client):
        assert await client.request("GET", "/a?x=1") == (200, b"/a?x=1")
        assert await client.request("POST", "/b", b'{"k": 1}', {"Content-Type": "application/json"}) == (200, b"/b")
        assert server.connections == 1
        assert b"Authorization: Bearer t" in server.requests[1] and server.requests[1].endswith(b'{"k": 1}')


async def test_a_connection_the_server_let_go_is_replaced_without_an_error() -> None:
    async def once_per_connection(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(b"ok"))
        return False  # closes after answering, without saying Connection: close

    async with running(once_per_connection) as (server, client):
        for _ in range(3):
            assert await client.request("GET", "/") == (200, b"ok")
        assert server.connections == 3


async def test_a_connection_closed_as_it_is_reused_is_retried_once_on_a_new_one() -> None:
    served = 0

    async def first_answers_then_drops(head: bytes, writer: asyncio.StreamWriter) -> bool:
        nonlocal served
        served += 1
        if served == 2:
            return False  # the server closes the reused connection without a word
        writer.write(answer(b"ok"))
        return True

    async with running(first_answers_then_drops) as (server, client):
        assert await client.request("GET", "/") == (200, b"ok")
        assert await client.request("POST", "/again", b"x") == (200, b"ok")
        assert server.connections == 2 and len(server.requests) == 3


async def test_an_answer_cut_off_midway_is_an_error_and_not_retried() -> None:
    async def cut(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        return False

    async with running(cut) as (server, client):
        with pytest.raises(HttpError, match="closed"):
            await client.request("POST", "/mail", b"x")
        assert len(server.requests) == 1


async def test_an_answer_that_is_not_http_is_an_error() -> None:
    async def garbage(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"\x00\xffnot http at all\r\n\r\n")
        return True

    async with running(garbage) as (_, client):
        with pytest.raises(HttpError, match="not an HTTP answer"):
            await client.request("GET", "/")


async def test_nothing_listening_is_an_error() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    client = HttpClient(f"http://127.0.0.1:{port}")
    with pytest.raises(HttpError, match="cannot connect"):
        await client.request("GET", "/")


async def test_a_silent_server_runs_out_the_deadline_and_its_connection_is_dropped() -> None:
    calls = 0

    async def silent_first(head: bytes, writer: asyncio.StreamWriter) -> bool:
        nonlocal calls
        calls += 1
        if calls > 1:
            writer.write(answer(b"late"))
        return True

    async with running(silent_first) as (server, client):
        with pytest.raises(TimeoutError):
            await client.request("GET", "/", timeout=0.2)
        assert await client.request("GET", "/") == (200, b"late")
        assert server.connections == 2  # the timed-out connection was not reused


async def test_a_stream_yields_lines_as_they_come() -> None:
    async def events(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for chunk in (b"data: 1\n\nda", b"ta: 2\n\n", b"data: [DONE]\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        return True

    async with running(events) as (server, client):
        async with client.stream("POST", "/chat", b"{}") as (status, lines):
            got = [line async for line in lines]
        assert status == 200
        assert [line for line in got if line.strip()] == [b"data: 1\n", b"data: 2\n", b"data: [DONE]\n"]
        assert await client.request("GET", "/") == (200, b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n")  # on the same connection
        assert server.connections == 1


async def test_a_stream_left_midway_closes_its_connection() -> None:
    async def endless(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nline\n\r\n")
        return True

    async with running(endless) as (server, client):
        async with client.stream("GET", "/", read_timeout=5.0) as (_, lines):
            async for line in lines:
                assert line == b"line\n"
                break
        with pytest.raises(TimeoutError):
            async with client.stream("GET", "/", read_timeout=0.2) as (_, lines):
                [line async for line in lines]
        assert server.connections == 2


async def test_at_most_limit_connections_at_once() -> None:
    release = asyncio.Event()
    in_flight = 0
    most = 0

    async def slow(head: bytes, writer: asyncio.StreamWriter) -> bool:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await release.wait()
        in_flight -= 1
        writer.write(answer(b"ok"))
        return True

    async with running(slow, limit=2) as (server, client):
        calls = [asyncio.create_task(client.request("GET", "/")) for _ in range(5)]
        while len(server.requests) < 2:
            await asyncio.sleep(0.01)
        release.set()
        assert [await call for call in calls] == [(200, b"ok")] * 5
        assert most == 2 and server.connections == 2


def test_only_an_http_origin() -> None:
    with pytest.raises(ValueError, match="http://"):
        HttpClient("https://example.org")
