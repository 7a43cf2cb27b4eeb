"""A JSON-mode connection to the chat server: what bots, the web adapter and tests use.

    peer = await Peer.connect("127.0.0.1", 5000, "alice", features={"stream"})
    await peer.send("bob", "hi")
    async for message in peer:          # Message objects until the server closes
        ...
    await peer.close()

Server notices arrive as `notification` / `error` messages whose `metadata["event"]`
says what they are (`chatnet.protocol.Event`); the server's pings are answered here and
never reach the caller. Frames go out through the JSON
dialect's `client_frame`, so they are what the server's `parse_frame` reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import suppress
from ssl import SSLContext
from typing import Any, Final

from chatnet.dialects.json import client_frame
from chatnet.errors import LoginInterrupted, LoginRefused
from chatnet.message import Message, parse_message
from chatnet.protocol import SERVER_NAME, Chat, Command, Event, Login, MessageType, Pong, dumps

# Frames from the server can be longer than a client's line limit (stored mail
# with metadata, a bot's long reply); this only bounds memory.
READ_LIMIT: Final = 1 << 20
# The login's answers that mean "not with this name": retrying it gets the same.
LOGIN_REFUSALS: Final = frozenset({Event.LOGIN_FAILED, Event.BAD_INPUT})


def encode_frame(frame: dict[str, Any]) -> bytes:
    """A client frame as the line that goes on the wire (raises UnicodeEncodeError for
    text that is no valid UTF-8, such as a lone surrogate from a `\\ud800` escape)."""
    return dumps(frame).encode() + b"\n"


PONG_LINE: Final = encode_frame(client_frame(Pong()))


class Peer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, user: str) -> None:
        self.reader = reader
        self.writer = writer
        self.user = user
        self.welcome: Message | None = None
        # Frames that arrived before the welcome (a message sent to us the moment we
        # came online); recv() returns them first.
        self._early: list[Message] = []

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        user: str,
        *,
        features: Iterable[str] = (),
        password: str | None = None,
        token: str | None = None,
        want_token: bool = False,
        service_token: str | None = None,
        relay: tuple[str, str] | None = None,
        ssl: SSLContext | None = None,
        timeout: float = 10.0,
    ) -> Peer:
        """Open a connection and log in; raises LoginRefused, LoginInterrupted or OSError.

        `password` or `token` for an account (`want_token`: the welcome's
        `metadata.token` is a session token for the next login), `service_token` for a
        bot; `relay` = (service token, the user's address) for a relay logging a user in
        (the web adapter); `ssl` for the TLS port."""
        opened = asyncio.open_connection(host, port, limit=READ_LIMIT, ssl=ssl)
        reader, writer = await asyncio.wait_for(opened, timeout)
        peer = cls(reader, writer, user)
        relay_token, address = relay if relay is not None else (None, None)
        login = Login(user, frozenset(features), password, token, want_token, service_token, relay_token, address)
        try:
            await asyncio.wait_for(peer._login(login), timeout)
        except BaseException:
            await peer.close()
            raise
        return peer

    async def _login(self, login: Login) -> None:
        await self.reader.readline()  # the "Enter username:" prompt meant for people
        await self.send_frame(client_frame(login))
        while True:
            reply = await self._read()
            if reply is None:
                raise LoginInterrupted("The server closed the connection during login.")
            event = reply.metadata.get("event")
            if reply.type == MessageType.ERROR and event in LOGIN_REFUSALS:
                raise LoginRefused(reply.message, reply.metadata.get("reason"), reply.metadata.get("retry_after"))
            if event == Event.WELCOME:
                self.welcome = reply
                return
            self._early.append(reply)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send_line(encode_frame(frame))

    async def send_line(self, line: bytes) -> None:
        """One encoded frame, newline included (`encode_frame`)."""
        self.writer.write(line)
        await self.writer.drain()

    async def send(self, destination: str, message: str, metadata: dict[str, Any] | None = None) -> None:
        await self.send_frame(client_frame(Chat(destination, message, metadata)))

    async def command(self, text: str) -> None:
        """Send a server command such as `!who` or `!check`."""
        name, _, args = text.removeprefix("!").partition(" ")
        await self.send_frame(client_frame(Command(name, args)))

    async def recv(self) -> Message | None:
        """The next frame from the server, or None once it has closed."""
        if self._early:
            return self._early.pop(0)
        return await self._read()

    async def _read(self) -> Message | None:
        while line := await self.reader.readline():
            message = parse_message(line)
            if message.metadata.get("event") != Event.PING or message.sender != SERVER_NAME:
                return message
            self.writer.write(PONG_LINE)  # no drain: a pong is small, and the reader must not wait on the writer
        return None

    async def __aiter__(self) -> AsyncIterator[Message]:
        while (message := await self.recv()) is not None:
            yield message

    async def close(self) -> None:
        if self.writer.is_closing():
            return
        self.writer.close()
        with suppress(OSError):  # ConnectionError included
            await self.writer.wait_closed()
