"""HTTP/1.1 to one origin with pooled keep-alive connections: the message API's transport.

    client = HttpClient("http://127.0.0.1:8000", {"Authorization": "Bearer ..."})
    status, body = await client.request("POST", "/mail", b'{"messages": []}', timeout=5.0)
    async with client.stream("POST", "/bots/openai/chat", body, read_timeout=120.0) as (status, lines):
        async for line in lines:
            ...
    await client.close()

h11 speaks the protocol (it parses and checks every byte of the answer); this module
only moves bytes and keeps the connections. It exists instead of aiohttp's client for
the chat server's sake: aiohttp costs a process ~15 MB of memory before its first
request, and the chat server holds its 10,000 idle clients in less than that.

Errors: the origin unreachable, the connection lost, or an answer that isn't HTTP raise
`HttpError` (an OSError); running out of time raises TimeoutError. A status is never an
error here: the caller reads it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Final
from urllib.parse import urlsplit

import h11

# Connections open at once (aiohttp's default): past it a request waits for one to free.
MAX_CONNECTIONS: Final = 100
# An idle connection is reused only this long: the API closes an idle one after 20 s
# (message_api.API_KEEP_ALIVE_SECONDS), so the client always lets go first.
IDLE_SECONDS: Final = 15.0
READ_CHUNK: Final = 64 * 1024


class HttpError(OSError):
    """The exchange failed: no connection, the connection lost, or not HTTP."""


class _Connection:
    """One keep-alive connection and its h11 state machine."""

    __slots__ = ("reader", "writer", "http", "idle_since", "heard")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(our_role=h11.CLIENT)
        self.idle_since = 0.0
        self.heard = False  # any byte of the current answer

    def reusable(self, now: float) -> bool:
        """Still open on both ends and not idle so long that the server may be closing it."""
        return not self.reader.at_eof() and not self.writer.is_closing() and now - self.idle_since < IDLE_SECONDS

    async def send(self, *events: h11.Event) -> None:
        self.writer.write(b"".join(self.http.send(event) or b"" for event in events))
        await self.writer.drain()

    async def next_event(self) -> object:
        """The next event of the answer (an h11 event), reading as much as it takes."""
        while True:
            try:
                event = self.http.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpError(f"not an HTTP answer: {exc}") from None
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.ConnectionClosed):
                    raise HttpError("connection closed before the answer ended")
                return event
            data = await self.reader.read(READ_CHUNK)
            self.heard = self.heard or bool(data)
            self.http.receive_data(data)  # b"": the peer closed

    def close(self) -> None:
        self.writer.close()


class HttpClient:
    def __init__(self, base_url: str, headers: Mapping[str, str] | None = None, limit: int = MAX_CONNECTIONS) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"an http:// origin is needed, not {base_url!r}")
        self.host, self.port = url.hostname, url.port or 80
        self.prefix = url.path.rstrip("/")
        self.headers = [("Host", url.netloc), *(headers or {}).items()]
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()

    async def request(self, method: str, target: str, body: bytes | None = None, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
        """The status and the whole body of the answer, all within `timeout` seconds
        (waiting for a free connection included)."""
        async with asyncio.timeout(timeout), self._exchange(method, target, body, headers) as (status, connection):
            chunks = []
            while not isinstance(event := await connection.next_event(), h11.EndOfMessage):
                if isinstance(event, h11.Data):
                    chunks.append(event.data)
            return status, b"".join(chunks)

    @asynccontextmanager
    async def stream(
        self, method: str, target: str, body: bytes | None = None, headers: Mapping[str, str] | None = None, read_timeout: float = 30.0
    ) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """The status and the body's lines as they come (each with its b"\\n"); no bound on
        the whole, `read_timeout` seconds at most for the connection, the answer's head
        and each line."""
        async with asyncio.timeout(read_timeout) as deadline, self._exchange(method, target, body, headers) as (status, connection):
            deadline.reschedule(None)

            async def lines() -> AsyncIterator[bytes]:
                pending = b""
                while True:
                    async with asyncio.timeout(read_timeout):
                        event = await connection.next_event()
                    if isinstance(event, h11.EndOfMessage):
                        break
                    if isinstance(event, h11.Data):
                        *complete, pending = (pending + bytes(event.data)).split(b"\n")
                        for line in complete:
                            yield line + b"\n"
                if pending:
                    yield pending

            yield status, lines()

    @asynccontextmanager
    async def _exchange(self, method: str, target: str, body: bytes | None, headers: Mapping[str, str] | None) -> AsyncIterator[tuple[int, _Connection]]:
        """Send the request, read the answer's head; the connection goes back to the pool
        only if the answer was read to its end, and is closed otherwise."""
        fields = [*self.headers, *(headers or {}).items(), ("Content-Length", str(len(body or b"")))]
        request = h11.Request(method=method, target=self.prefix + target, headers=fields)
        async with self._slots:
            connection, status = await self._send(request, body or b"")
            try:
                yield status, connection
            except BaseException:
                self._discard(connection)
                raise
            self._release(connection)

    async def _send(self, request: h11.Request, body: bytes) -> tuple[_Connection, int]:
        """A connection with the request sent and the answer's status read. A pooled
        connection that turns out closed before answering anything (the server let it
        go as it was taken) is replaced once by a new one: nothing was done with it."""
        reused = self._take()
        connection = reused or await self._connect()
        while True:
            self._busy.add(connection)
            connection.heard = False
            try:
                await connection.send(request, h11.Data(data=body), h11.EndOfMessage())
                while not isinstance(event := await connection.next_event(), h11.Response):
                    pass  # an informational (1xx) answer: the real one follows
                return connection, event.status_code
            except (HttpError, ConnectionError) as exc:
                self._discard(connection)
                if connection is not reused or connection.heard:
                    raise HttpError(str(exc) or type(exc).__name__) from None
                reused, connection = None, await self._connect()
            except BaseException:
                self._discard(connection)
                raise

    def _take(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable(now):
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=READ_CHUNK)
        except OSError as exc:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        return _Connection(reader, writer)

    def _release(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        http = connection.http
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:  # the server said Connection: close, or the answer wasn't read whole
            connection.close()

    def _discard(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        connection.close()

    async def close(self) -> None:
        """Close every connection, idle or in use; the client may be used again after."""
        connections = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for connection in connections:
            connection.close()
        for connection in connections:
            with suppress(OSError):
                await connection.writer.wait_closed()
