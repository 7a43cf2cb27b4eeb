"""The connection to the chat server: logging in, reading and writing lines, reconnecting
with backoff (`Client`), and `main`, which the entry script runs."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from chatnet.config import Settings
from chatnet.protocol import QUIT_WORDS
from chatnet.tls import CERT_FILE, client_context

if TYPE_CHECKING:
    pass
from chatnet.client.commands import Leave, Say, Send, Target, interpret
from chatnet.client.consoles import Console, PipeConsole, TerminalConsole
from chatnet.client.lines import (
    _JOINED,
    _LEFT,
    CONNECT_TIMEOUT,
    GOODBYE_WAIT,
    NAME_TAKEN,
    PASSWORD_VARIABLE,
    READ_LIMIT,
    RECONNECT_FIRST,
    RECONNECT_MAX,
    SERVER_PASSWORD_PROMPT,
    SERVER_PROMPT,
    WELCOME,
    Book,
    render,
)

# --- connections ----------------------------------------------------------------------


class Unreachable(Exception):
    """Connecting failed; the message says why, for the person."""


class Link:
    """One connection to the server, and how far its login got."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str | None, password: str | None, again: bool) -> None:
        self.reader = reader
        self.writer = writer
        self.auto_name = name  # answers the first `Enter username:`, then the person types
        # Answers the first `Password:`; after a refusal the person types one, so a wrong
        # one is never sent again.
        self.auto_password = password
        self.again = again  # logging in again by itself after a break
        self.sent_password: str | None = None  # the answer to this login's `Password:`
        self.logged_in = False
        self.name_taken = False
        self.ended = asyncio.Event()

    async def send(self, text: str) -> None:
        self.writer.write(text.encode() + b"\n")
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with suppress(OSError):
            await self.writer.wait_closed()


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Client:
    """The person's session across connections: typed lines to the server (through
    `interpret`), server lines to the console (through `render`), and a new connection
    whenever one breaks after a login."""

    def __init__(self, console: Console, book: Book, open_link: Callable[[], Awaitable[Streams]], user: str | None, password: str | None) -> None:
        self.console = console
        self.book = book
        self.open_link = open_link  # an awaitable (reader, writer); raises Unreachable
        self.name = user
        self.password = password
        self.link: Link | None = None
        self.ever_logged_in = False
        self.expecting: str | None = None  # "name" or "password": what the person was asked
        self.quitting = False
        self.said_goodbye = False
        self.retry_at = ""  # while disconnected: when the next attempt is, for the prompt
        self.hidden: dict[str, int] = {}  # answers to ask quietly (for Tab) → how many
        self.joining: set[str] = set()  # rooms asked to join: the answer makes one current
        self.new_password: str | None = None  # from a !register / !password in flight

    async def run(self, stop: asyncio.Event) -> int:
        """Until the person leaves (0) or the first connection can't be made or ends
        before a login (1)."""
        typing = asyncio.create_task(self._from_user())
        stopped = asyncio.create_task(stop.wait())
        links = asyncio.create_task(self._links())
        await asyncio.wait({typing, stopped, links}, return_when=asyncio.FIRST_COMPLETED)
        typing.cancel()
        stopped.cancel()
        if links.done():
            return links.result()
        await self._leave(links)
        return 0

    async def _leave(self, links: asyncio.Task[int]) -> None:
        """Tell the server we leave and let its goodbye line through, briefly."""
        self.quitting = True
        link = self.link
        if link is not None:
            try:
                await link.send("exit")
                await asyncio.wait_for(link.ended.wait(), GOODBYE_WAIT)
            except (OSError, TimeoutError):
                pass
        links.cancel()
        with suppress(asyncio.CancelledError):
            await links
        if not self.said_goodbye:
            self.console.show("Goodbye.")
        if link is not None:
            await link.close()

    async def _links(self) -> int:
        delay = RECONNECT_FIRST
        first = True
        while True:
            try:
                reader, writer = await self.open_link()
            except Unreachable as exc:
                if first:
                    self.console.show(str(exc))
                    return 1
                self.console.show(f"{exc}; trying again in {delay:g} s.")
                await self._wait(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            link = Link(reader, writer, self.name, self.password, again=not first)
            if not first:
                self.console.show(f"Connected again; logging in as {self.name}." if self.name else "Connected again.")
            first = False
            self.link = link
            self._update_prompt()
            try:
                await self._read(link)
            finally:
                self.link = None
                self.expecting = None
                link.ended.set()
            await link.close()
            if self.quitting:
                return 0
            if not self.ever_logged_in:
                self.console.show("The server closed the connection.")
                return 1
            if link.logged_in:
                delay = RECONNECT_FIRST
            if link.name_taken:
                self.console.show(f"The name '{self.name}' is still online from the connection that broke; trying again in {delay:g} s.")
            else:
                self.console.show(f"Lost the connection to the chat server; reconnecting in {delay:g} s.")
            await self._wait(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _wait(self, delay: float) -> None:
        self.retry_at = f"reconnecting in {delay:g} s"
        self._update_prompt()
        await asyncio.sleep(delay)
        self.retry_at = "connecting"
        self._update_prompt()

    async def _read(self, link: Link) -> None:
        while not link.name_taken:
            try:
                raw = await link.reader.readline()
            except ValueError:  # a line over READ_LIMIT: skip it, keep the session
                self.console.show("(a line too long to show was skipped)")
                continue
            except OSError:
                return
            if not raw:
                return
            await self._on_server_line(link, raw.decode(errors="replace").rstrip("\r\n"))

    async def _on_server_line(self, link: Link, text: str) -> None:
        if not link.logged_in and await self._on_login_line(link, text):
            return
        if self.quitting and text.startswith("Goodbye"):
            self.said_goodbye = True
        for kind, count in self.hidden.items():
            if count and text.startswith(kind):
                self.hidden[kind] = count - 1
                render(text, self.book)
                return
        self.console.show(render(text, self.book))
        self._after_notice(text)

    async def _on_login_line(self, link: Link, text: str) -> bool:
        """A line before the welcome; True when it is handled (not shown)."""
        if text == SERVER_PROMPT:
            self.expecting = None
            link.sent_password = None  # a new login: a password before it was for another name
            if link.auto_name:
                name, link.auto_name = link.auto_name, None
                await self._log_in(link, name)
            else:
                self.expecting = "name"
                self.console.ask_name()
            return True
        if text == SERVER_PASSWORD_PROMPT:
            if link.auto_password:
                password, link.auto_password = link.auto_password, None
                await self._log_in(link, password, secret=True)
            else:
                self.expecting = "password"
                self.console.ask_password()
            return True
        if link.again and NAME_TAKEN in text:
            link.name_taken = True  # the broken session still holds it: try again later
            return True
        if welcome := WELCOME.match(text):
            link.logged_in = self.ever_logged_in = True
            self.expecting = None
            self.name, self.password = welcome.group(1), link.sent_password  # what logs in again
            self.book.me = self.name
            self.book.name(self.name)
            self.retry_at = ""
            self._update_prompt()
            for kind, ask in (("Online (", "!who"), ("Rooms (", "!rooms")):  # names and rooms for Tab
                self.hidden[kind] = self.hidden.get(kind, 0) + 1
                with suppress(OSError):
                    await link.send(ask)
        return False

    async def _log_in(self, link: Link, answer: str, secret: bool = False) -> None:
        """A name or a password for the server's question."""
        if secret:
            link.sent_password = answer
        with suppress(OSError):
            await link.send(answer)

    def _after_notice(self, text: str) -> None:
        """What a server answer changes here: the current target, the kept password."""
        if match := _JOINED.match(text):
            room = match.group(1) or match.group(2)
            if room.lower() in self.joining:
                self.joining.clear()
                self._set_target(self.book.spelled(room))
        elif match := _LEFT.match(text):
            room = match.group(1) or match.group(2)
            if self.book.target is not None and self.book.target.lower() == room.lower():
                self._set_target(None)
        elif self.new_password is not None and (text.startswith("Account '") and text.endswith("' registered.") or text.startswith("Password changed")):
            self.password, self.new_password = self.new_password, None

    def _set_target(self, target: str | None) -> None:
        self.book.target = target
        self._update_prompt()
        if target is None:
            self.console.show("No current target: write name: text, or /query <name|#room>.")
        else:
            self.console.show(f"Talking to {target} now: plain lines go there (/query alone stops).")

    def _update_prompt(self) -> None:
        if self.link is not None and not self.link.logged_in:
            return  # the login questions set it
        where = f"[{self.book.target}]" if self.book.target else ""
        offline = f"({self.retry_at})" if self.retry_at else ""
        self.console.set_prompt(" ".join(part for part in (where, offline) if part) + "> ")

    async def _from_user(self) -> None:
        while (line := await self.console.read_line()) is not None:
            if self.expecting == "password" and self.link is not None and not self.link.logged_in:
                self.expecting = None
                await self._log_in(self.link, line.strip(), secret=True)
                continue
            text = line.strip()
            if not text:
                continue
            if text.lower() in QUIT_WORDS:
                return
            link = self.link
            if link is None:
                self.console.show(f"Not sent: not connected ({self.retry_at or 'connecting'}); /quit leaves.")
                continue
            if not link.logged_in:
                if link.again and self.expecting is None:  # the client is answering itself
                    self.console.show(f"Not sent: logging in again as {self.name}; a moment.")
                    continue
                self.expecting = None
                await self._log_in(link, text)
                continue
            action = interpret(text, self.book)
            if action is None:
                continue
            if isinstance(action, Leave):
                return
            if isinstance(action, Say):
                self.console.show(action.text)
            elif isinstance(action, Target):
                self._set_target(action.target)
            else:
                await self._send(link, action)

    async def _send(self, link: Link, action: Send) -> None:
        self.joining.update(room.lower() for room in action.join)
        for line in action.lines:
            word, _, args = line.partition(" ")
            if word.lower() == "!register":
                self.new_password = args.strip() or None
            elif word.lower() == "!password":
                self.new_password = args.split()[-1] if len(args.split()) == 2 else None
            try:
                await link.send(line)
            except OSError:
                self.console.show("Not sent: the connection broke.")
                return
        if action.echo is not None:
            self.console.show(action.echo)


# --- connecting -----------------------------------------------------------------------


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


def opener(host: str, port: int, context: ssl.SSLContext | None, trusted: str) -> Callable[[], Awaitable[Streams]]:
    """A function that connects, raising Unreachable with the reason in plain words."""

    async def open_link() -> Streams:
        try:
            opened = asyncio.open_connection(host, port, limit=READ_LIMIT, ssl=context)
            return await asyncio.wait_for(opened, CONNECT_TIMEOUT)
        except ssl.SSLCertVerificationError as exc:
            untrusted = f"its certificate is not trusted ({exc.verify_message}; trusted: {trusted}). --cafile names the one to trust."
            raise Unreachable(f"Cannot connect to the chat server at {host}:{port} with TLS: {untrusted}") from None
        except ssl.SSLError as exc:
            raise Unreachable(
                f"Cannot connect to the chat server at {host}:{port} with TLS: the handshake failed ({exc.reason or exc}). Is {port} its TLS port (CHAT_TLS_PORT)?"
            ) from None
        except (OSError, TimeoutError) as exc:
            raise Unreachable(f"Cannot connect to the chat server at {host}:{port}{' with TLS' if context else ''}: {exc.strerror or exc or 'timed out'}") from None

    return open_link


async def run_client(
    settings: Settings,
    user: str | None,
    console: Console | None = None,
    *,
    tls: bool = False,
    cafile: Path | None = None,
    password: str | None = None,
    book: Book | None = None,
) -> int:
    """Connect, chat until done (reconnecting after breaks); the exit code (0 when the
    person left, 1 when the server could not be reached or closed before a login)."""
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        client = Client(console, book or Book(), opener(host, port, context, trusted), user, password)
        return await client.run(stop)
    finally:
        await console.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(settings: Settings, user: str | None, *, tls: bool = False, cafile: Path | None = None) -> int:
    """Run the client on this terminal (or pipe); returns the exit code."""
    password = os.environ.get(PASSWORD_VARIABLE) or None
    if sys.stdin.isatty() and sys.stdout.isatty():
        from prompt_toolkit.patch_stdout import patch_stdout

        async def interactive() -> int:
            book = Book()
            with patch_stdout():
                return await run_client(settings, user, TerminalConsole(book), tls=tls, cafile=cafile, password=password, book=book)

        return asyncio.run(interactive())
    return asyncio.run(run_client(settings, user, tls=tls, cafile=cafile, password=password))
