"""async_client.py as a person uses it: a real subprocess over pipes, a real server."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from pathlib import Path

import httpx
import pytest

from chatnet.config import Settings
from chatnet.process import CHAT_TLS_LISTENING, script
from chatnet.tls import ensure_certificate, server_context
from tests.support import HOST, ConsoleProcess, Network, eventually, unused_port

PASSWORD = "correct horse battery"


class ClientProcess(ConsoleProcess):
    """The terminal client run over pipes, as a person at a terminal uses it."""

    @classmethod
    async def start_client(cls, port: int, *args: str, env: dict[str, str] | None = None) -> ConsoleProcess:
        """`env` on top of this process's environment, less any CHATNET_PASSWORD it did not give."""
        inherited = {key: value for key, value in os.environ.items() if key != "CHATNET_PASSWORD"}
        return await cls.start(script("async_client.py", "--host", HOST, "--port", str(port), *args), {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})})


@pytest.fixture
async def clients():
    """Starts clients for a test and makes sure none outlives it."""
    started: list[ConsoleProcess] = []

    async def start(port: int, *args: str, env: dict[str, str] | None = None) -> ConsoleProcess:
        started.append(await ClientProcess.start_client(port, *args, env=env))
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


def register(chat: Network, name: str, password: str = PASSWORD) -> None:
    """An account, made through the message API with the admin token."""
    answer = httpx.post(f"{chat.api_url}/accounts", json={"name": name, "password": password}, headers=chat.auth, timeout=10)
    assert answer.status_code == 201, answer.text


async def test_user_flag_and_environment_password_log_in(chat: Network, clients) -> None:
    """--user answers `Enter username:` and CHATNET_PASSWORD answers `Password:`; the password reaches the server but is never printed."""
    register(chat, "alice")
    alice = await clients(chat.chat_port, "--user", "alice", env={"CHATNET_PASSWORD": PASSWORD})
    await alice.expect("Welcome, alice!")
    await alice.send("!who")
    await alice.expect("Online (1): alice")
    await alice.send("exit")
    code, output = await alice.finish()
    assert code == 0
    assert PASSWORD not in output and "Password:" not in output
    assert PASSWORD not in chat.log("server")


async def test_password_is_asked_and_typed(chat: Network, clients) -> None:
    """Without CHATNET_PASSWORD the client shows `Password:` and sends the next line typed; it is not echoed."""
    register(chat, "alice")
    alice = await clients(chat.chat_port, "--user", "alice")
    await alice.expect("Password:")
    await alice.send(PASSWORD)
    await alice.expect("Welcome, alice!")
    await alice.send("exit")
    code, output = await alice.finish()
    assert code == 0
    assert PASSWORD not in output


async def test_wrong_environment_password_is_not_sent_again(chat: Network, clients) -> None:
    """A wrong CHATNET_PASSWORD gets the server's refusal; the client then asks for a name and a password instead of repeating it."""
    register(chat, "alice")
    alice = await clients(chat.chat_port, "--user", "alice", env={"CHATNET_PASSWORD": "not the password"})
    await alice.expect("Wrong password for 'alice'.")
    await alice.expect("Enter username:")
    await alice.send("alice")
    await alice.expect("Password:")
    await alice.send(PASSWORD)
    await alice.expect("Welcome, alice!")
    await alice.send("exit")
    code, output = await alice.finish()
    assert code == 0
    assert "not the password" not in output and PASSWORD not in output


async def test_tls_round_trip_with_the_default_certificate(network: Network, clients, tmp_path: Path) -> None:
    """--tls reaches the chat server's TLS port, trusting DATA_DIR/tls/cert.pem by default, and chats both ways with a plain TCP user."""
    cert, key = ensure_certificate(tmp_path / "data" / "tls")
    network.start_api()
    network.start_server(TLS_CERT=str(cert), TLS_KEY=str(key), CHAT_TLS_PORT="0")

    async def tls_port() -> int | None:
        said = re.search(CHAT_TLS_LISTENING, network.log("server"), re.M)
        return int(said.group(1)) if said else None

    port = await eventually(tls_port, bool, "the server's `listening with TLS` line")
    assert port is not None
    bob = await network.text_client("bob")
    alice = await clients(port, "--tls", "--user", "alice", env={"DATA_DIR": str(tmp_path / "data")})
    await alice.expect("Welcome, alice!")
    await alice.send("bob: hi over TLS")
    await bob.expect("[alice] hi over TLS")
    await bob.send("alice: hello back")
    await alice.expect("[bob] hello back")
    await alice.send("exit")
    code, output = await alice.finish()
    assert code == 0
    assert "Goodbye" in output and "Traceback" not in output
    await bob.close()


@pytest.fixture
async def tls_server(tmp_path: Path):
    """A TLS server in this process with its own self-signed certificate, speaking the first line of the text mode."""
    context = server_context_for(tmp_path / "server-tls")

    async def prompt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Enter username:\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(prompt, HOST, 0, ssl=context)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def server_context_for(directory: Path) -> ssl.SSLContext:
    cert, key = ensure_certificate(directory)
    context = server_context(Settings(_env_file=None, tls_cert=cert, tls_key=key))
    assert context is not None
    return context


@pytest.mark.parametrize("trust", ["another certificate", "the system's CAs"])
async def test_untrusted_tls_certificate_is_a_plain_error(tls_server: int, clients, tmp_path: Path, trust: str) -> None:
    """--tls against a certificate it does not trust: one line saying so and what it trusted, exit 1, no traceback."""
    if trust == "another certificate":
        other, _ = ensure_certificate(tmp_path / "other")
        args, env, trusted = ("--cafile", str(other)), {}, str(other)
    else:  # no DATA_DIR/tls/cert.pem to add to them
        args, env, trusted = (), {"DATA_DIR": str(tmp_path / "empty")}, trust
    client = await clients(tls_server, "--tls", "--user", "alice", *args, env=env)
    code, output = await client.finish()
    assert code == 1
    assert "its certificate is not trusted" in output and f"trusted: {trusted})" in output
    assert "Traceback" not in output


async def test_tls_to_a_plain_port_says_so(chat: Network, clients) -> None:
    """--tls pointed at the plain port: the handshake failure is reported, naming CHAT_TLS_PORT, without a traceback."""
    client = await clients(chat.chat_port, "--tls", "--user", "alice")
    code, output = await client.finish()
    assert code == 1
    assert "handshake failed" in output and "CHAT_TLS_PORT" in output
    assert "Traceback" not in output
