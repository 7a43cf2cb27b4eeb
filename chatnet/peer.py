"""A JSON-mode connection to the chat server: what bots, the web adapter and tests use.

    peer = await Peer.connect("127.0.0.1", 5000, "alice", features={"stream"})
    await peer.send("bob", "hi")
    async for message in peer:          # Message objects until the server closes
        ...
    await peer.close()

Server notices arrive as `notification` / `error` messages whose `metadata["event"]`
says what they are: `welcome`, `presence`, `saved`, `not_saved`, `who`, `help`,
`check`, `shutdown`, `login_failed`, `bad_input`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from chatnet.errors import LoginInterrupted, LoginRefused
from chatnet.protocol import Message, MessageType, parse_message

# Frames from the server can be longer than a client's line limit (stored mail
# with metadata, a bot's long reply); this only bounds memory.
READ_LIMIT = 1 << 20


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
        timeout: float = 10.0,
    ) -> Peer:
        """Open a connection and log in; raises LoginRefused, LoginInterrupted or OSError."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=READ_LIMIT), timeout)
        peer = cls(reader, writer, user)
        try:
            await asyncio.wait_for(peer._login(sorted(features), password), timeout)
        except BaseException:
            await peer.close()
            raise
        return peer

    async def _login(self, features: list[str], password: str | None) -> None:
        await self.reader.readline()  # the "Enter username:" prompt meant for people
        frame: dict[str, Any] = {"type": "login", "user": self.user, "features": features}
        if password is not None:
            frame["password"] = password
        await self.send_frame(frame)
        while True:
            reply = await self._read()
            if reply is None:
                raise LoginInterrupted("The server closed the connection during login.")
            event = reply.metadata.get("event")
            if reply.type == MessageType.ERROR and event in ("login_failed", "bad_input"):
                raise LoginRefused(reply.message)
            if event == "welcome":
                self.welcome = reply
                return
            self._early.append(reply)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        self.writer.write(json.dumps(frame, ensure_ascii=False).encode() + b"\n")
        await self.writer.drain()

    async def send(self, destination: str, message: str, metadata: dict[str, Any] | None = None) -> None:
        frame: dict[str, Any] = {"type": "chat", "destination": destination, "message": message}
        if metadata:
            frame["metadata"] = metadata
        await self.send_frame(frame)

    async def command(self, text: str) -> None:
        """Send a server command such as `!who` or `!check`."""
        await self.send_frame({"type": "command", "message": text})

    async def recv(self) -> Message | None:
        """The next frame from the server, or None once it has closed."""
        if self._early:
            return self._early.pop(0)
        return await self._read()

    async def _read(self) -> Message | None:
        line = await self.reader.readline()
        return parse_message(line) if line else None

    async def __aiter__(self) -> AsyncIterator[Message]:
        while (message := await self.recv()) is not None:
            yield message

    async def close(self) -> None:
        if self.writer.is_closing():
            return
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
