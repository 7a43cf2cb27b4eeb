"""The terminal client: text mode over TCP, stdin and the socket read concurrently.

On a terminal the input line is a prompt_toolkit prompt and incoming lines are printed
above it (`patch_stdout`), so a line being typed is never mangled. When stdin is a pipe
or a file, lines are read plainly, so scripts and tests can drive the client.

The session ends on `exit`, end of input (Ctrl-D), Ctrl-C, SIGTERM or when the server
closes the connection; each says so in one line, never with a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from contextlib import suppress
from typing import Final, Protocol

from chatnet.config import Settings
from chatnet.dialects.text import PROMPT
from chatnet.protocol import QUIT_WORDS

logger = logging.getLogger("chatnet.client")

# The server's question for a name (the text dialect's prompt, as a line read back).
SERVER_PROMPT: Final = PROMPT.rstrip("\n")
# Server lines can be long (a bot's reply); this only bounds memory.
READ_LIMIT: Final = 1 << 20
# How long to wait for the server's goodbye after we said `exit`.
GOODBYE_WAIT: Final = 2.0
CONNECT_TIMEOUT: Final = 10.0


class Console(Protocol):
    """Where the person is: lines in, lines out."""

    async def read_line(self) -> str | None:
        """The next typed line, or None when the person is done (EOF, Ctrl-C)."""
        ...

    def show(self, text: str) -> None: ...

    def ask_name(self) -> None:
        """The server wants a username: make that clear to the person."""
        ...

    def logged_in(self) -> None: ...


class PipeConsole:
    """Plain line reading for pipes and files.

    A daemon thread reads fd 0 with os.read (no buffered-object lock a daemon thread
    could hold at exit) and hands lines to the loop, so any kind of stdin works.
    """

    def __init__(self) -> None:
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._pump, name="stdin", daemon=True).start()

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                data = os.read(sys.stdin.fileno(), 65536)
            except OSError:
                data = b""
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._put(line)
        if pending:
            self._put(pending)
        self._loop.call_soon_threadsafe(self._lines.put_nowait, None)

    def _put(self, raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip("\r")
        self._loop.call_soon_threadsafe(self._lines.put_nowait, text)

    async def read_line(self) -> str | None:
        return await self._lines.get()

    def show(self, text: str) -> None:
        print(text, flush=True)

    def ask_name(self) -> None:
        self.show(SERVER_PROMPT)

    def logged_in(self) -> None:
        pass


class TerminalConsole:
    """A prompt_toolkit prompt; output printed while it runs goes above the input line."""

    def __init__(self) -> None:
        from prompt_toolkit import PromptSession

        self._session: PromptSession[str] = PromptSession()
        self._prompt = "Username: "

    async def read_line(self) -> str | None:
        try:
            return await self._session.prompt_async(lambda: self._prompt)
        except (EOFError, KeyboardInterrupt):
            return None

    def show(self, text: str) -> None:
        print(text, flush=True)

    def ask_name(self) -> None:
        self._set_prompt("Username: ")

    def logged_in(self) -> None:
        self._set_prompt("> ")

    def _set_prompt(self, text: str) -> None:
        self._prompt = text
        if self._session.app.is_running:
            self._session.app.invalidate()


class ClientSession:
    """One connection: copies server lines to the console and typed lines to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, console: Console, user: str | None) -> None:
        self.reader = reader
        self.writer = writer
        self.console = console
        self.auto_name = user  # answers the first prompt, then the person types
        self.is_logged_in = False
        self.quitting = False
        self.said_goodbye = False

    async def run(self, stop: asyncio.Event) -> int:
        """Until one side is done; returns the exit code."""
        from_server = asyncio.create_task(self._from_server())
        from_user = asyncio.create_task(self._from_user())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({from_server, from_user, stopped}, return_when=asyncio.FIRST_COMPLETED)
        from_user.cancel()
        stopped.cancel()
        if from_server.done():
            self.console.show("The server closed the connection.")
            await self._close()
            return 1
        await self._say_exit(from_server)
        return 0

    async def _say_exit(self, from_server: asyncio.Task[None]) -> None:
        """Tell the server we leave and let its goodbye line through, briefly."""
        self.quitting = True
        try:
            await self._send("exit")
            await asyncio.wait_for(from_server, GOODBYE_WAIT)
        except (OSError, TimeoutError):
            from_server.cancel()
        if not self.said_goodbye:
            self.console.show("Goodbye.")
        await self._close()

    async def _from_server(self) -> None:
        while True:
            try:
                raw = await self.reader.readline()
            except ValueError:  # a line over READ_LIMIT: skip it, keep the session
                self.console.show("(a line too long to show was skipped)")
                continue
            except OSError:
                return
            if not raw:
                return
            await self._on_server_line(raw.decode(errors="replace").rstrip("\r\n"))

    async def _on_server_line(self, text: str) -> None:
        if not self.is_logged_in and text == SERVER_PROMPT:
            if self.auto_name:
                name, self.auto_name = self.auto_name, None
                await self._send(name)
            else:
                self.console.ask_name()
            return
        if not self.is_logged_in and text.startswith("Welcome"):
            self.is_logged_in = True
            self.console.logged_in()
        if self.quitting and text.startswith("Goodbye"):
            self.said_goodbye = True
        self.console.show(text)

    async def _from_user(self) -> None:
        while (line := await self.console.read_line()) is not None:
            text = line.strip()
            if not text:
                continue
            if text.lower() in QUIT_WORDS:
                return
            try:
                await self._send(text)
            except OSError:
                return  # the server side notices the close and says so

    async def _send(self, text: str) -> None:
        self.writer.write(text.encode() + b"\n")
        await self.writer.drain()

    async def _close(self) -> None:
        self.writer.close()
        with suppress(OSError):
            await self.writer.wait_closed()


async def run_client(settings: Settings, user: str | None, console: Console | None = None) -> int:
    """Connect, chat until done; the exit code (0 when the person left, 1 otherwise)."""
    console = console or PipeConsole()
    host, port = settings.chat_host, settings.chat_port
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=READ_LIMIT), CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        console.show(f"Cannot connect to the chat server at {host}:{port}: {exc.strerror or exc or 'timed out'}")
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await ClientSession(reader, writer, console, user).run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(settings: Settings, user: str | None) -> int:
    """Run the client on this terminal (or pipe); returns the exit code."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        from prompt_toolkit.patch_stdout import patch_stdout

        async def interactive() -> int:
            with patch_stdout():
                return await run_client(settings, user, TerminalConsole())

        return asyncio.run(interactive())
    return asyncio.run(run_client(settings, user))
