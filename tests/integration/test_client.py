"""async_client.py as a person uses it: a real subprocess over pipes, a real server."""

from __future__ import annotations

import pytest

from chatnet.process import script
from tests.support import HOST, ConsoleProcess, Network, unused_port


class ClientProcess(ConsoleProcess):
    """The terminal client run over pipes, as a person at a terminal uses it."""

    @classmethod
    async def start_client(cls, port: int, *args: str) -> ConsoleProcess:
        return await cls.start(script("async_client.py", "--host", HOST, "--port", str(port), *args))


@pytest.fixture
async def clients():
    """Starts clients for a test and makes sure none outlives it."""
    started: list[ConsoleProcess] = []

    async def start(port: int, *args: str) -> ConsoleProcess:
        started.append(await ClientProcess.start_client(port, *args))
        return started[-1]

    yield start
    for client in started:
        client.kill()
        await client.process.wait()


async def test_chat_both_ways_then_exit(chat: Network, clients) -> None:
    """Logged in with --user, the client sends to a TCP user, shows the reply, and `exit` ends it with code 0."""
    bob = await chat.text_client("bob")
    alice = await clients(chat.chat_port, "--user", "alice")
    await alice.expect("Welcome, alice!")
    await alice.send("bob: hi bob")
    await bob.expect("[alice] hi bob")
    await bob.send("alice: hello alice")
    await alice.expect("[bob] hello alice")
    await alice.send("exit")
    code, output = await alice.finish()
    assert code == 0
    assert "Goodbye" in output
    assert "Traceback" not in output
    await bob.close()


async def test_end_of_input_leaves_cleanly(chat: Network, clients) -> None:
    """Closing stdin (Ctrl-D) logs out, says goodbye and exits 0; the user is then offline."""
    alice = await clients(chat.chat_port, "--user", "alice")
    await alice.expect("Welcome, alice!")
    assert alice.process.stdin is not None
    alice.process.stdin.close()
    code, output = await alice.finish()
    assert code == 0
    assert "Goodbye" in output
    assert "Traceback" not in output
    bob = await chat.text_client("bob")
    await bob.send("alice: are you there?")
    await bob.expect("User 'alice' is offline. Message saved.")
    await bob.close()


async def test_server_going_away_is_reported(chat: Network, clients) -> None:
    """When the chat server stops, the client says the connection closed and exits without a traceback."""
    alice = await clients(chat.chat_port, "--user", "alice")
    await alice.expect("Welcome, alice!")
    chat.stop("server")
    code, output = await alice.finish()
    assert code == 1
    assert "The server closed the connection." in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("first", "reason"),
    [("alice", "already online"), ("no spaces!", "Invalid username")],
)
async def test_refused_name_is_reported_and_another_can_be_tried(chat: Network, clients, first: str, reason: str) -> None:
    """A taken or invalid --user is reported with the server's reason, and the next typed name logs in."""
    holder = await chat.text_client("alice")
    client = await clients(chat.chat_port, "--user", first)
    await client.expect(reason)
    await client.expect("Enter username:")
    await client.send("carol")
    await client.expect("Welcome, carol!")
    await client.send("exit")
    code, _ = await client.finish()
    assert code == 0
    await holder.close()


async def test_asks_for_a_name_without_user_flag(chat: Network, clients) -> None:
    """Without --user the client shows the username prompt and logs in with the typed name."""
    client = await clients(chat.chat_port)
    await client.expect("Enter username:")
    await client.send("dave")
    await client.expect("Welcome, dave!")
    await client.send("!who")
    await client.expect("dave")
    await client.send("exit")
    code, _ = await client.finish()
    assert code == 0


async def test_no_server_is_a_plain_error(clients) -> None:
    """With nothing listening the client prints one clear line and exits 1."""
    with unused_port() as port:
        client = await clients(port, "--user", "alice")
        code, output = await client.finish()
    assert code == 1
    assert "Cannot connect to the chat server" in output
    assert "Traceback" not in output
