"""The terminal client: text mode over TCP, stdin and the socket read concurrently.

On a terminal the input line is a prompt_toolkit prompt and incoming lines are printed
above it (`patch_stdout`), so a line being typed is never mangled. When stdin is a pipe
or a file, lines are read plainly, so scripts and tests can drive the client.

The session ends on `exit`, end of input (Ctrl-D), Ctrl-C, SIGTERM or when the server
closes the connection; each says so in one line, never with a traceback.

With `tls` it connects to CHAT_TLS_PORT and verifies the server's certificate (against
`cafile`; by default the system's CAs plus DATA_DIR/tls/cert.pem, the launcher's
self-signed one). A registered name makes the server ask `Password:`: the answer is
CHATNET_PASSWORD when set (once), else typed without echo. A password is never shown,
logged, or kept in the input history.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import ssl
import sys
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any, Final, Protocol

from chatnet.config import Settings
from chatnet.dialects.text import PASSWORD_PROMPT, PROMPT, SECRET_COMMANDS
from chatnet.protocol import QUIT_WORDS
from chatnet.tls import CERT_FILE, client_context

logger = logging.getLogger("chatnet.client")

# The server's question for a name (the text dialect's prompt, as a line read back).
SERVER_PROMPT: Final = PROMPT.rstrip("\n")
SERVER_PASSWORD_PROMPT: Final = PASSWORD_PROMPT.rstrip("\n")
# For scripts: the answer to the first `Password:`, so nothing needs typing.
PASSWORD_VARIABLE: Final = "CHATNET_PASSWORD"
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

    def ask_password(self) -> None:
        """The server wants a password: the next line read is one, so it is not echoed."""
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

    def logged_in(self) -> None:
        pass


def secret_line(text: str) -> bool:
    """A typed line carrying a password (`!register …`, `!password …`)."""
    return text.lstrip().split(" ", 1)[0].lower() in SECRET_COMMANDS


class TerminalConsole:
    """A prompt_toolkit prompt; output printed while it runs goes above the input line.
    While a password is asked the prompt shows stars; passwords never enter the
    history that the up arrow brings back."""

    def __init__(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.filters import Condition
        from prompt_toolkit.history import InMemoryHistory

        console = self

        class History(InMemoryHistory):
            def append_string(self, string: str) -> None:
                if not console._secret and not secret_line(string):
                    super().append_string(string)

        self._secret = False
        self._session: PromptSession[str] = PromptSession(history=History(), is_password=Condition(lambda: self._secret))
        self._prompt = "Username: "

    async def read_line(self) -> str | None:
        try:
            return await self._session.prompt_async(lambda: self._prompt)
        except (EOFError, KeyboardInterrupt):
            return None
        finally:
            self._secret = False  # one line only; the server's next line sets the prompt

    def show(self, text: str) -> None:
        print(text, flush=True)

    def ask_name(self) -> None:
        self._set_prompt("Username: ")

    def ask_password(self) -> None:
        self._secret = True
        self._set_prompt("Password: ")

    def logged_in(self) -> None:
        self._set_prompt("> ")

    def _set_prompt(self, text: str) -> None:
        self._prompt = text
        if self._session.app.is_running:
            self._session.app.invalidate()


class ClientSession:
    """One connection: copies server lines to the console and typed lines to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, console: Console, user: str | None, password: str | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.console = console
        self.auto_name = user  # answers the first prompt, then the person types
        # Answers the first `Password:`; after a refusal the person types one, so a
        # wrong one in the environment is never sent again.
        self.auto_password = password
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
        if not self.is_logged_in and text == SERVER_PASSWORD_PROMPT:
            if self.auto_password:
                password, self.auto_password = self.auto_password, None
                await self._send(password)
            else:
                self.console.ask_password()
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


def default_cafile(settings: Settings) -> Path | None:
    """The launcher's self-signed certificate, DATA_DIR/tls/cert.pem, when it is there."""
    path = settings.data_dir / "tls" / CERT_FILE
    return path if path.is_file() else None


def tls_context(settings: Settings, cafile: Path | None) -> tuple[ssl.SSLContext, str]:
    """The verifying context for `--tls`, and what it trusts (for an error message).
    Raises OSError when `cafile` can't be read."""
    if cafile is not None:
        return client_context(cafile), str(cafile)
    local = default_cafile(settings)
    context = client_context(local)
    if local is None:
        return context, "the system's CAs"
    context.load_default_certs()  # a real certificate verifies as well
    return context, f"the system's CAs and {local}"


async def run_client(
    settings: Settings,
    user: str | None,
    console: Console | None = None,
    *,
    tls: bool = False,
    cafile: Path | None = None,
    password: str | None = None,
) -> int:
    """Connect, chat until done; the exit code (0 when the person left, 1 otherwise)."""
    console = console or PipeConsole()
    host = settings.chat_host
    port = settings.chat_tls_port if tls else settings.chat_port
    context: ssl.SSLContext | None = None
    trusted = ""
    if tls:
        try:
            context, trusted = tls_context(settings, cafile)
        except OSError as exc:  # ssl.SSLError too: a file that holds no certificate
            console.show(f"Cannot read the certificates in {cafile or default_cafile(settings)}: {exc.strerror or exc}")
            return 1
    try:
        opened = asyncio.open_connection(host, port, limit=READ_LIMIT, ssl=context)
        reader, writer = await asyncio.wait_for(opened, CONNECT_TIMEOUT)
    except ssl.SSLCertVerificationError as exc:
        untrusted = f"its certificate is not trusted ({exc.verify_message}; trusted: {trusted}). --cafile names the one to trust."
        console.show(f"Cannot connect to the chat server at {host}:{port} with TLS: {untrusted}")
        return 1
    except ssl.SSLError as exc:
        console.show(f"Cannot connect to the chat server at {host}:{port} with TLS: the handshake failed ({exc.reason or exc}). Is {port} its TLS port (CHAT_TLS_PORT)?")
        return 1
    except (OSError, TimeoutError) as exc:
        console.show(f"Cannot connect to the chat server at {host}:{port}{' with TLS' if tls else ''}: {exc.strerror or exc or 'timed out'}")
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await ClientSession(reader, writer, console, user, password).run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(settings: Settings, user: str | None, *, tls: bool = False, cafile: Path | None = None) -> int:
    """Run the client on this terminal (or pipe); returns the exit code."""
    password = os.environ.get(PASSWORD_VARIABLE) or None
    if sys.stdin.isatty() and sys.stdout.isatty():
        from prompt_toolkit.patch_stdout import patch_stdout

        async def interactive() -> int:
            with patch_stdout():
                return await run_client(settings, user, TerminalConsole(), tls=tls, cafile=cafile, password=password)

        return asyncio.run(interactive())
    return asyncio.run(run_client(settings, user, tls=tls, cafile=cafile, password=password))
