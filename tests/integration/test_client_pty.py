"""async_client.py at a real terminal: a pty, the screen read back through a terminal
emulator (pyte), so the prompt, Tab completion and the keys are what a person sees."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import struct
import subprocess
import termios
from collections.abc import AsyncIterator, Callable

import pyte
import pytest

from chatnet.process import ROOT, script
from tests.support import HOST, TIMEOUT, Network, TextClient

COLUMNS, LINES = 120, 50
PASSWORD = "correct horse battery"
TAB, ENTER, CTRL_C, CTRL_D = "\t", "\r", "\x03", "\x04"


class Terminal:
    """A program on a pty of its own (its controlling terminal, so Ctrl-C is what a
    terminal makes of it), and the screen it draws."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))

        def own_terminal() -> None:  # in the child: a session whose terminal is the pty
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env, preexec_fn=own_terminal)
        os.close(slave)
        self.master = master
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.ByteStream(self.screen)
        self.transcript = bytearray()
        self.changed = asyncio.Event()
        self.closed = False
        asyncio.get_running_loop().add_reader(master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every process holding the pty has gone
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
            self.closed = True
        else:
            self.transcript += data
            self.stream.feed(data)
        self.changed.set()

    def display(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def cursor_line(self) -> str:
        return self.screen.display[self.screen.cursor.y].rstrip()

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    async def until(self, wanted: str | Callable[[Terminal], bool], timeout: float = TIMEOUT) -> None:
        """Until the screen shows `wanted` (or `wanted(self)` holds); fails showing the screen."""
        done = wanted if callable(wanted) else (lambda terminal: wanted in terminal.display())
        try:
            async with asyncio.timeout(timeout):
                while not done(self):
                    if self.closed:
                        raise AssertionError(f"the program ended before {wanted!r}; screen:\n{self.display()}")
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"never saw {wanted!r} within {timeout} s; screen:\n{self.display()}") from None

    async def editing(self, text: str, timeout: float = TIMEOUT) -> None:
        """Until the input line (where the cursor is) reads `text`, the prompt included."""
        await self.until(lambda terminal: terminal.cursor_line() == text, timeout)

    async def exit_code(self, timeout: float = TIMEOUT) -> int:
        try:
            code = await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s; screen:\n{self.display()}") from None
        await self.until(lambda terminal: terminal.closed, timeout)  # the last output read
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if not self.closed:
            asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)


def terminal_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("CHATNET_PASSWORD", "PROMPT_TOOLKIT_NO_CPR")}
    # No cursor-position requests: pyte answers none, and a prompt waiting for one warns.
    return {**env, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1", "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture
async def terminals() -> AsyncIterator[Callable[..., Terminal]]:
    started: list[Terminal] = []

    def start(*argv: str, **env: str) -> Terminal:
        started.append(Terminal(list(argv), terminal_env(**env)))
        return started[-1]

    yield start
    for terminal in started:
        terminal.close()


def client_argv(chat: Network, *args: str) -> list[str]:
    return script("async_client.py", "--host", HOST, "--port", str(chat.chat_port), *args)


async def test_tab_completes_commands_rooms_and_names_and_the_prompt_shows_the_target(chat: Network, terminals) -> None:
    """Tab completes /commands, #rooms the server listed and names of people online or heard from; /join puts the room in the prompt, /query alone clears it."""
    bob = await chat.text_client("bob")
    await bob.send("!join #hiking")
    await bob.expect("Created #hiking")
    alice = terminals(*client_argv(chat, "--user", "alice"))
    await alice.until("Welcome, alice!")
    await alice.editing(">")  # the prompt, empty (its trailing space is not a character on screen)
    # The client asks for the rooms by itself after the welcome; a person types slower
    # than its answer comes, a test does not: it asks too, and waits for the answer.
    alice.type("/rooms" + ENTER)
    await alice.until("#hiking (1 member)")

    alice.type("/jo" + TAB)
    await alice.editing("> /join")
    alice.type("#hi" + TAB)
    await alice.editing("> /join #hiking")
    alice.type(ENTER)
    await alice.until("Joined #hiking (2 members, 2 online).")
    await alice.editing("[#hiking]>")
    alice.type("hello hikers" + ENTER)
    line = await bob.expect("hello hikers")
    assert line.endswith("[#hiking][alice] hello hikers"), line
    await alice.until(lambda terminal: re.search(r"^\d\d:\d\d #hiking <alice> hello hikers$", terminal.display(), re.M) is not None)
    assert not re.search(r"^\[#hiking\]> hello hikers", alice.display(), re.M)  # the typed line gives way to what was sent

    alice.type("/query" + ENTER)
    await alice.until("No current target")
    await alice.editing(">")
    alice.type("bo" + TAB)
    await alice.editing("> bob:")
    alice.type("hi bob" + ENTER)
    assert (await bob.expect("hi bob")).endswith("][alice] hi bob")

    carol = await chat.text_client("carol")  # online after alice's login: known from what she sends
    await carol.send("alice: hello from carol")
    await alice.until("[carol] hello from carol")
    alice.type("/q" + TAB)  # /query or /quit: the common part, and both offered
    await alice.until(lambda terminal: terminal.cursor_line() == "> /qu" and "/query" in terminal.display() and "/quit" in terminal.display())
    alice.type("e" + TAB)
    await alice.editing("> /query")
    alice.type("ca" + TAB)
    await alice.editing("> /query carol")
    alice.type(ENTER)
    await alice.editing("[carol]>")
    alice.type("hi carol" + ENTER)
    assert (await carol.expect("hi carol")).endswith("][alice] hi carol")
    alice.type("/quit" + ENTER)
    assert await alice.exit_code() == 0
    await bob.close()
    await carol.close()


async def test_prompt_says_when_reconnecting(chat: Network, terminals) -> None:
    """While the server is away the prompt says the client is reconnecting; once it is back, the client is logged in again with its target kept."""
    alice = terminals(*client_argv(chat, "--user", "alice"))
    await alice.until("Welcome, alice!")
    alice.type("/query #general" + ENTER)
    await alice.editing("[#general]>")
    chat.stop("server")
    await alice.until("Lost the connection to the chat server; reconnecting in 1 s.")
    await alice.until(lambda terminal: terminal.cursor_line().startswith("[#general] (reconnecting in "))
    chat.start_server()
    await alice.until(lambda terminal: terminal.display().count("Welcome, alice!") == 2, timeout=40)
    await alice.editing("[#general]>")
    bob = await chat.text_client("bob")
    alice.type("back again" + ENTER)
    assert (await bob.expect("back again")).endswith("[#general][alice] back again")
    alice.type(CTRL_D)
    assert await alice.exit_code() == 0
    await bob.close()


async def test_password_is_typed_unseen(chat: Network, terminals) -> None:
    """At a terminal the password prompt shows stars, never the password, and it logs in."""
    import httpx

    answer = httpx.post(f"{chat.api_url}/accounts", json={"name": "alice", "password": PASSWORD}, headers=chat.auth, timeout=10)
    assert answer.status_code == 201, answer.text
    alice = terminals(*client_argv(chat, "--user", "alice"))
    await alice.editing("Password:")
    alice.type(PASSWORD)
    await alice.editing("Password: " + "*" * len(PASSWORD))
    alice.type(ENTER)
    await alice.until("Welcome, alice!")
    alice.type("/quit" + ENTER)
    assert await alice.exit_code() == 0
    assert PASSWORD.encode() not in alice.transcript


@pytest.mark.parametrize("key", [CTRL_C, CTRL_D])
async def test_make_client_ends_cleanly_on_ctrl_c_and_ctrl_d(chat: Network, terminals, key: str) -> None:
    """`make client` at a terminal: Ctrl-C or Ctrl-D says goodbye, and make exits 0 without an error line."""
    args = f"--host {HOST} --port {chat.chat_port} --user alice"
    # -o: the installed stamp counts as up to date, so make runs the client and nothing else.
    alice = terminals("make", "--no-print-directory", "-o", ".venv/.installed", "client", f"ARGS={args}")
    await alice.until("Welcome, alice!")
    await alice.editing(">")
    alice.type(key)
    assert await alice.exit_code() == 0, alice.display()
    assert "Goodbye, alice!" in alice.display()
    assert "***" not in alice.display() and "Traceback" not in alice.display()
    text = await TextClient.connect(HOST, chat.chat_port)  # alice is gone from the server too
    await text.login("bob")
    await text.send("!who")
    assert await text.expect("Online (") == "Online (1): bob"
    await text.close()
