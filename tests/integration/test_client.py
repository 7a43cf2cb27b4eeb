"""async_client.py as a person uses it: a real subprocess over pipes, a real server."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from chatnet.config import Settings
from chatnet.process import CHAT_TLS_LISTENING, script
from chatnet.tls import ensure_certificate, server_context
from tests.support import HOST, ConsoleProcess, Network, TextClient, eventually, unused_port

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


# --- rooms, targets and commands -------------------------------------------------------

# A time zone of half hours away from UTC (POSIX form: no zone files needed), so a time
# shown unconverted can't pass for a converted one.
ZONE, OFFSET = "XST-05:30", timedelta(hours=5, minutes=30)
ROOM_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\]\[#hiking\]\[(\w+)\] (.*)$")


def local(timestamp: str) -> str:
    """A server timestamp as the client in ZONE shows it."""
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00")) + OFFSET
    return moment.strftime("%H:%M")


async def in_room(chat: Network, name: str, room: str = "#hiking") -> TextClient:
    """A raw text user, logged in and in `room`."""
    user = await chat.text_client(name)
    await user.send(f"!join {room}")
    await user.expect(lambda line: line.startswith(("Joined", "Created")))
    return user


async def quit_cleanly(client: ConsoleProcess) -> str:
    await client.send("/quit")
    code, output = await client.finish()
    assert code == 0, output
    assert "Traceback" not in output
    return output


async def test_join_then_plain_lines_go_to_the_room(chat: Network, clients) -> None:
    """/join makes the room current: plain lines arrive at another member in the room format, and a member's line is shown with the room, sender and local time."""
    alice = await clients(chat.chat_port, "--user", "alice", env={"TZ": ZONE})
    await alice.expect("Welcome, alice!")
    await alice.send("/join #hiking")
    await alice.expect("Created #hiking; you are its owner.")
    await alice.expect("Talking to #hiking now")
    bob, carol = await in_room(chat, "bob"), await in_room(chat, "carol")
    await alice.send("who's in? bob: you?")
    line = await bob.expect("who's in?")
    assert ROOM_LINE.match(line) and line.endswith("[#hiking][alice] who's in? bob: you?"), line
    await bob.send("#hiking: me, at 9")
    sent = ROOM_LINE.match(await carol.expect("me, at 9"))
    assert sent is not None
    shown = await alice.expect("me, at 9")
    assert shown == f"{local(sent.group(1))} #hiking <bob> me, at 9", shown
    assert "Z]" not in shown
    await quit_cleanly(alice)
    await bob.close()
    await carol.close()


async def test_msg_sends_one_message_without_changing_the_target(chat: Network, clients) -> None:
    """/msg reaches a name and a room; plain lines still go to the current target, and what was sent is shown back."""
    bob = await in_room(chat, "bob")
    alice = await clients(chat.chat_port, "--user", "alice")
    await alice.expect("Welcome, alice!")
    await alice.send("/join #hiking")
    await alice.expect("Talking to #hiking now")
    await alice.send("/msg bob just for you")
    assert (await bob.expect("just for you")).endswith("][alice] just for you")
    await alice.expect("[to bob] just for you")
    await alice.send("/msg #hiking for the room")
    assert (await bob.expect("for the room")).endswith("[#hiking][alice] for the room")
    await alice.send("still the room")
    assert (await bob.expect("still the room")).endswith("[#hiking][alice] still the room")
    await alice.send("/msg bob")
    await alice.expect("Write /msg <name|#room> <text>.")
    await quit_cleanly(alice)
    await bob.close()


async def test_query_switches_where_plain_lines_go(chat: Network, clients) -> None:
    """/query name, /query #room and /query alone: plain lines follow the target, and without one they are not sent but explained."""
    bob = await in_room(chat, "bob")
    alice = await clients(chat.chat_port, "--user", "alice")
    await alice.expect("Welcome, alice!")
    await alice.send("/join #hiking")
    await alice.expect("Talking to #hiking now")
    await alice.send("/query bob")
    await alice.expect("Talking to bob now: plain lines go there")
    await alice.send("a private word")
    assert (await bob.expect("a private word")).endswith("][alice] a private word")
    await alice.expect("[to bob] a private word")
    await alice.send("/query #hiking")
    await alice.expect("Talking to #hiking now")
    await alice.send("a public word")
    assert (await bob.expect("a public word")).endswith("[#hiking][alice] a public word")
    await alice.send("/query")
    await alice.expect("No current target")
    await alice.send("lost words")
    await alice.expect("Not sent: say to whom.")
    await alice.send("bob: name: text still works")
    assert (await bob.expect("name: text still works")).endswith("][alice] name: text still works")
    assert not any("lost words" in line for line in bob.seen)
    assert not any(line.startswith("Error:") for line in alice.seen), alice.seen
    await quit_cleanly(alice)
    await bob.close()


async def test_part_leaves_the_current_room(chat: Network, clients) -> None:
    """/part without a room leaves the current one and clears the target; the room's lines no longer arrive."""
    bob = await in_room(chat, "bob")
    alice = await clients(chat.chat_port, "--user", "alice")
    await alice.expect("Welcome, alice!")
    await alice.send("/join #hiking")
    await alice.expect("Joined #hiking (2 members, 2 online).")
    await alice.send("/part")
    await alice.expect("Left #hiking.")
    await alice.expect("No current target")
    await bob.send("#hiking: anyone left?")
    await bob.send("alice: after the room line")
    await alice.expect("[bob] after the room line")
    assert not any("anyone left?" in line for line in alice.seen), alice.seen
    await alice.send("/part")
    await alice.expect("Which room? /part #room")
    await quit_cleanly(alice)
    await bob.close()


async def test_server_commands_pass_through_and_client_commands_answer(chat: Network, clients) -> None:
    """!commands reach the server as typed; /who, /rooms and /members ask it; /help lists the client's commands; an unknown /command is not sent."""
    bob = await in_room(chat, "bob")
    alice = await clients(chat.chat_port, "--user", "alice")
    await alice.expect("Welcome, alice!")
    await alice.send("!who")
    await alice.expect("Online (2): ")
    await alice.send("/rooms")
    await alice.expect("Rooms (")
    await alice.send("/members #hiking")
    await alice.expect("Members of #hiking (1): bob (online)")
    await alice.send("/help")
    for command in ("/join #room", "/part [#room]", "/msg <name|#room> <text>", "/query [<name|#room>]", "/quit"):
        await alice.expect(f"  {command} ")
    await alice.send("/frobnicate now")
    await alice.expect("Unknown command /frobnicate")
    assert not any("frobnicate" in line for line in bob.seen)
    await quit_cleanly(alice)
    await bob.close()


async def test_stored_mail_is_marked_and_shown_in_local_time(chat: Network, clients) -> None:
    """Mail kept while the user was away is shown marked as stored, its time converted to the local zone."""
    before = datetime.now(timezone.utc)
    bob = await chat.text_client("bob")
    await bob.send("carol: while you were out")
    await bob.expect("Message saved.")
    await bob.close()
    after = datetime.now(timezone.utc)
    minutes = {local(moment.strftime("%Y-%m-%dT%H:%M:00Z")) for moment in (before, after)}
    carol = await clients(chat.chat_port, "--user", "carol", env={"TZ": ZONE})
    shown = await carol.expect("while you were out")
    match = re.fullmatch(r"(\d\d:\d\d) \[stored\] \[bob\] while you were out", shown)
    assert match is not None, shown
    assert match.group(1) in minutes, (shown, minutes)
    await quit_cleanly(carol)


async def test_reconnects_after_a_server_restart_and_can_send(chat: Network, clients) -> None:
    """The server stops: the client says it lost the connection and retries with a wait it shows; once the server is back it logs in again by itself and chats."""
    alice = await clients(chat.chat_port, "--user", "alice")
    await alice.expect("Welcome, alice!")
    await alice.send("/join #hiking")
    await alice.expect("Talking to #hiking now")
    chat.stop("server")
    await alice.expect("Lost the connection to the chat server; reconnecting in 1 s.")
    await alice.send("bob: while it is down")
    await alice.expect("Not sent: not connected")
    chat.start_server()
    await alice.expect("Connected again; logging in as alice.", timeout=40)
    await alice.expect("Welcome, alice!")
    bob = await in_room(chat, "bob")
    await alice.send("back in the room")
    assert (await bob.expect("back in the room")).endswith("[#hiking][alice] back in the room")
    await alice.send("/msg bob and to you")
    await bob.expect("[alice] and to you")
    await bob.send("alice: welcome back")
    await alice.expect("[bob] welcome back")
    output = await quit_cleanly(alice)
    assert output.count("Welcome, alice!") == 2
    await bob.close()


async def test_retries_with_growing_waits_until_the_server_is_back(chat: Network, clients) -> None:
    """While the server stays away each failed attempt is said, with the wait doubling."""
    alice = await clients(chat.chat_port, "--user", "alice")
    await alice.expect("Welcome, alice!")
    chat.stop("server")
    await alice.expect("reconnecting in 1 s.")
    await alice.expect("Cannot connect to the chat server at")
    assert alice.seen[-1].endswith("trying again in 2 s."), alice.seen[-1]
    await alice.expect("trying again in 4 s.", timeout=15)
    chat.start_server()
    await alice.expect("Welcome, alice!", timeout=40)
    await quit_cleanly(alice)


@pytest.mark.parametrize("given", ["typed", "environment", "registered"])
async def test_reconnect_logs_an_account_in_again_with_its_password(chat: Network, clients, given: str) -> None:
    """After a restart the client answers `Password:` itself with the password that logged in (typed, CHATNET_PASSWORD, or set by !register since), never showing it."""
    if given != "registered":
        register(chat, "alice")
    env = {"CHATNET_PASSWORD": PASSWORD} if given == "environment" else {}
    alice = await clients(chat.chat_port, "--user", "alice", env=env)
    if given == "typed":
        await alice.expect("Password:")
        await alice.send(PASSWORD)
    await alice.expect("Welcome, alice!")
    if given == "registered":
        await alice.send(f"!register {PASSWORD}")
        await alice.expect("Account 'alice' registered.")
    chat.stop("server")
    await alice.expect("reconnecting in 1 s.")
    chat.start_server()
    await alice.expect("Welcome, alice!", timeout=40)
    bob = await chat.text_client("bob")
    await alice.send("bob: logged in again")
    await bob.expect("[alice] logged in again")
    output = await quit_cleanly(alice)
    assert PASSWORD not in output
    assert output.count("Password:") == (1 if given == "typed" else 0)
    assert "Wrong password" not in output
    assert PASSWORD not in chat.log("server")
    await bob.close()


async def test_quit_and_signals_exit_zero(chat: Network, clients) -> None:
    """/quit says goodbye and exits 0; so does SIGINT (Ctrl-C where the terminal sends it as a signal)."""
    alice = await clients(chat.chat_port, "--user", "alice")
    await alice.expect("Welcome, alice!")
    output = await quit_cleanly(alice)
    assert "Goodbye, alice!" in output
    bob = await clients(chat.chat_port, "--user", "bob")
    await bob.expect("Welcome, bob!")
    bob.process.send_signal(signal.SIGINT)
    code, output = await bob.finish()
    assert code == 0 and "Goodbye" in output and "Traceback" not in output
