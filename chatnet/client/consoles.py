"""Where the person types: a prompt_toolkit prompt on a terminal (`TerminalConsole`),
plain lines from a pipe or a file (`PipeConsole`)."""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document
from chatnet.client.commands import completions
from chatnet.client.lines import SERVER_PASSWORD_PROMPT, SERVER_PROMPT, Book, secret_line

# --- consoles -------------------------------------------------------------------------


class Console(Protocol):
    """Where the person is: lines in, lines out."""

    async def read_line(self) -> str | None:
        """The next typed line, or None when the person is done (EOF, Ctrl-C)."""
        ...

    def show(self, text: str) -> None: ...

    def ask_name(self) -> None:
        """The server wants a username: make that clear to the person."""
        ...

    def ask_password(self) -> None:
        """The server wants a password: the next line read is one, so it is not echoed."""
        ...

    def set_prompt(self, text: str) -> None:
        """What the input line starts with from now on (`[#hiking]> `)."""
        ...

    async def close(self) -> None:
        """Done reading: the terminal is given back as it was."""
        ...


class PipeConsole:
    """Plain line reading for pipes and files.

    A daemon thread reads fd 0 with os.read (no buffered-object lock a daemon thread
    could hold at exit) and hands lines to the loop, so any kind of stdin works.
    """

    def __init__(self) -> None:
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        # A terminal's settings while its echo is off for a password (stdin a terminal,
        # stdout not: `async_client.py | tee`); put back after that line, or at exit.
        self._echoing: list[Any] | None = None
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
        line = await self._lines.get()
        if self._echoing is not None:
            self._echo_on()
            print(flush=True)  # the Enter that was not echoed
        return line

    def show(self, text: str) -> None:
        print(text, flush=True)

    def ask_name(self) -> None:
        self.show(SERVER_PROMPT)

    def ask_password(self) -> None:
        self.show(SERVER_PASSWORD_PROMPT)
        if self._echoing is None and os.isatty(sys.stdin.fileno()):
            import termios

            fd = sys.stdin.fileno()
            self._echoing = termios.tcgetattr(fd)
            quiet = termios.tcgetattr(fd)
            quiet[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSADRAIN, quiet)
            atexit.register(self._echo_on)

    def _echo_on(self) -> None:
        if self._echoing is not None:
            import termios

            with suppress(OSError, termios.error):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._echoing)
            self._echoing = None
            atexit.unregister(self._echo_on)

    def set_prompt(self, text: str) -> None:
        pass  # no prompt on a pipe: /query says where lines go in a line of its own

    async def close(self) -> None:
        pass  # the reading thread is a daemon: it ends with the process


class TerminalConsole:
    """A prompt_toolkit prompt; output printed while it runs goes above the input line.
    The typed line is erased once sent (the client shows what it sent, or the answer
    says); while a password is asked the prompt shows stars; passwords never enter the
    history that the up arrow brings back. Tab completes from `book`."""

    def __init__(self, book: Book) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import Completer, Completion
        from prompt_toolkit.filters import Condition
        from prompt_toolkit.history import InMemoryHistory

        console = self

        class History(InMemoryHistory):
            def append_string(self, string: str) -> None:
                if not console._secret and not secret_line(string):
                    super().append_string(string)

        class BookCompleter(Completer):
            def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
                if console._secret:
                    return
                for text, back in completions(document.text_before_cursor, book):
                    yield Completion(text, start_position=-back, display=text.rstrip(": "))

        self._secret = False
        self._session: PromptSession[str] = PromptSession(
            history=History(),
            is_password=Condition(lambda: self._secret),
            completer=BookCompleter(),
            complete_while_typing=False,
            erase_when_done=True,
            reserve_space_for_menu=4,
        )
        self._prompt = "Username: "
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._prompting: asyncio.Task[None] | None = None

    async def read_line(self) -> str | None:
        if self._prompting is None:
            self._prompting = asyncio.create_task(self._prompt_lines())
        return await self._lines.get()

    async def _prompt_lines(self) -> None:
        """Prompt again as soon as a line is in: between two prompts the terminal is
        back in its cooked mode, where a key typed would be echoed raw (or, Ctrl-D,
        lost), so that gap must not wait for the line to be sent."""
        while True:
            try:
                line = await self._session.prompt_async(lambda: self._prompt)
            except (EOFError, KeyboardInterrupt):
                self._lines.put_nowait(None)
                return
            finally:
                self._secret = False  # one line only; the server's next line sets the prompt
            self._lines.put_nowait(line)

    async def close(self) -> None:
        if self._prompting is not None:
            self._prompting.cancel()
            with suppress(asyncio.CancelledError):
                await self._prompting

    def show(self, text: str) -> None:
        print(text, flush=True)

    def ask_name(self) -> None:
        self.set_prompt("Username: ")

    def ask_password(self) -> None:
        self._secret = True
        self.set_prompt("Password: ")

    def set_prompt(self, text: str) -> None:
        self._prompt = text
        if self._session.app.is_running:
            self._session.app.invalidate()
