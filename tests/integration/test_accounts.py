"""Who is who, as users meet it over the real processes (embedded store, message API,
chat server): accounts and guests in text and JSON mode, wrong passwords and the
lockout, names in any case, several sessions of one account, bots' names, flood and
connection limits, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl

import pytest

from chatnet.errors import LoginRefused
from chatnet.peer import Peer
from chatnet.protocol import MessageType
from chatnet.tls import client_context, ensure_certificate
from tests.support import HOST, JsonClient, Network, TextClient

PASSWORD = "correct horse battery"


async def register(chat: Network, name: str, password: str = PASSWORD) -> None:
    """Log in as a guest, make the name an account, leave."""
    client = await chat.text_client(name)
    await client.send(f"!register {password}")
    assert await client.expect("registered") == f"Account '{name}' registered."
    await client.send("exit")
    await client.lines_until_closed()


async def login_with_password(chat: Network, name: str, password: str = PASSWORD) -> TextClient:
    client = await chat.text_client()
    assert await client.line() == "Enter username:"
    await client.send(name)
    assert await client.line() == "Password:"
    await client.send(password)
    welcome = await client.line()
    assert welcome.startswith(f"Welcome, {name}!"), welcome
    return client


async def test_register_then_log_in_with_the_password_in_text_mode(chat: Network) -> None:
    """DESIGN's lines: a registered name asks `Password:`; a wrong one says so and asks for the name again."""
    await register(chat, "alice")
    client = await chat.text_client()
    assert await client.line() == "Enter username:"
    await client.send("alice")
    assert await client.line() == "Password:"
    await client.send("not the password")
    assert await client.line() == "Wrong password for 'alice'."
    assert await client.line() == "Enter username:"
    await client.send("alice")
    assert await client.line() == "Password:"
    await client.send(PASSWORD)
    assert await client.line() == "Welcome, alice! No stored messages."
    await client.send("!who")
    assert await client.line() == "Online (1): alice"


async def test_json_login_needs_the_password_and_can_get_a_session_token(chat: Network) -> None:
    """JSON mode: no password -> password_required; a wrong one -> wrong_password; with want_token the welcome carries a token that logs in by itself."""
    await register(chat, "alice")
    with pytest.raises(LoginRefused) as refused:
        await Peer.connect(HOST, chat.chat_port, "alice")
    assert refused.value.reason == "password_required"
    with pytest.raises(LoginRefused) as refused:
        await Peer.connect(HOST, chat.chat_port, "alice", password="guessing")
    assert refused.value.reason == "wrong_password"
    first = await Peer.connect(HOST, chat.chat_port, "alice", password=PASSWORD, want_token=True)
    assert first.welcome is not None and first.welcome.metadata["account"] is True
    token = first.welcome.metadata["token"]
    assert isinstance(token, str) and len(token) >= 32
    second = await Peer.connect(HOST, chat.chat_port, "Alice", token=token)
    assert second.welcome is not None and second.welcome.metadata["user"] == "alice"
    await first.close()
    await second.close()


async def test_wrong_passwords_lock_the_name_for_a_while(network: Network) -> None:
    """After LOGIN_ATTEMPTS wrong passwords the name is refused with when to retry, even with the right one; after the lockout it works."""
    network.start_api(LOGIN_ATTEMPTS="3", LOGIN_LOCKOUT="2")
    network.start_server()
    await register(network, "alice")
    for _ in range(3):
        with pytest.raises(LoginRefused) as refused:
            await Peer.connect(HOST, network.chat_port, "alice", password="wrong password")
        assert refused.value.reason in ("wrong_password", "locked")
    client = await network.text_client()
    await client.line()
    await client.send("alice")
    locked = await client.line()
    assert locked.startswith("Too many failed logins for 'alice'; try again in ") and locked.endswith(" s."), locked
    assert await client.line() == "Enter username:"
    with pytest.raises(LoginRefused) as refused:
        await Peer.connect(HOST, network.chat_port, "alice", password=PASSWORD)
    assert refused.value.reason == "locked" and refused.value.retry_after is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:  # the lock ends after LOGIN_LOCKOUT: wait for that, with a deadline
        try:
            peer = await Peer.connect(HOST, network.chat_port, "alice", password=PASSWORD)
            break
        except LoginRefused as exc:
            assert exc.reason == "locked" and loop.time() < deadline, exc
            await asyncio.sleep(0.2)
    assert peer.welcome is not None and peer.welcome.metadata["user"] == "alice"
    await peer.close()


async def test_a_stranger_gets_neither_the_mail_nor_the_name_of_an_account(chat: Network) -> None:
    """Mail for an account waits for its owner: a stranger who types the name is asked for the password and sees nothing."""
    await register(chat, "dave")
    bob = await chat.text_client("bob")
    await bob.send("dave: the secret plan")
    assert await bob.line() == "User 'dave' is offline. Message saved."
    stranger = await chat.text_client()
    await stranger.line()
    await stranger.send("dave")
    assert await stranger.line() == "Password:"
    await stranger.send("let me in")
    assert await stranger.line() == "Wrong password for 'dave'."
    assert await stranger.line() == "Enter username:"
    with pytest.raises(LoginRefused):
        await Peer.connect(HOST, chat.chat_port, "dave")
    await stranger.send("eve")
    assert await stranger.line() == "Welcome, eve! No stored messages."
    await stranger.nothing_more()
    assert all("secret plan" not in line for line in stranger.seen)
    dave = await login_with_password(chat, "dave")
    assert "secret plan" in await dave.line()


async def test_names_are_one_identity_in_any_case(chat: Network) -> None:
    """`Bob: hi` reaches bob; mail to `BOB` is bob's; `BOB` can't log in while bob is online."""
    bob = await chat.text_client("bob")
    alice = await chat.text_client("alice")
    await alice.send("Bob: hi")
    assert (await bob.expect("hi")).endswith("[alice] hi")
    twin = await chat.text_client()
    await twin.line()
    await twin.send("BOB")
    assert await twin.line() == "The name 'BOB' is already online; choose another."
    await bob.send("exit")
    await bob.lines_until_closed()
    await alice.send("BOB: while you were out")
    assert await alice.expect("Message saved.") == "User 'BOB' is offline. Message saved."
    back = await chat.text_client()
    await back.line()
    await back.send("bob")
    assert await back.line() == "Welcome, bob! 1 stored message."
    assert "while you were out" in await back.line()


async def test_an_account_may_be_logged_in_from_several_sessions(chat: Network) -> None:
    """Two sessions of one account both get each message; JSON sessions see what the other sent (echo); !who shows the name once."""
    await register(chat, "alice")
    phone = JsonClient(await Peer.connect(HOST, chat.chat_port, "alice", password=PASSWORD))
    laptop = JsonClient(await Peer.connect(HOST, chat.chat_port, "alice", password=PASSWORD))
    bob = await chat.text_client("bob")
    await bob.send("alice: to both of you")
    for device in (phone, laptop):
        got = await device.expect(lambda m: m.type == MessageType.CHAT)
        assert (got.sender, got.message) == ("bob", "to both of you")
    await phone.send("bob", "sent from the phone")
    assert (await bob.expect("sent from the phone")).endswith("[alice] sent from the phone")
    echo = await laptop.expect(lambda m: m.type == MessageType.CHAT)
    assert (echo.sender, echo.destination, echo.message, echo.metadata.get("echo")) == ("alice", "bob", "sent from the phone", True)
    assert await bob.who() == ["alice", "bob"]


async def test_a_guest_name_has_one_session(chat: Network) -> None:
    """A guest name stays single-session: a second login under it is refused as taken."""
    carol = await chat.text_client("carol")
    with pytest.raises(LoginRefused) as refused:
        await Peer.connect(HOST, chat.chat_port, "Carol")
    assert refused.value.reason == "name_taken"
    assert await carol.who() == ["carol"]


async def test_changing_the_password_signs_out_the_other_sessions(chat: Network) -> None:
    """!password needs the old one, ends the account's other sessions, and the old password no longer works."""
    await register(chat, "zoe", "first-password")
    stay = await login_with_password(chat, "zoe", "first-password")
    here = await login_with_password(chat, "zoe", "first-password")
    await here.send("!password not-the-old-one second-password")
    assert await here.line() == "Error: Wrong password for 'zoe'; it was not changed."
    await here.send("!password first-password second-password")
    assert await here.line() == "Password changed; your other sessions were signed out."
    assert "The password of this account was changed; log in again." in await stay.lines_until_closed()
    with pytest.raises(LoginRefused) as refused:
        await Peer.connect(HOST, chat.chat_port, "zoe", password="first-password")
    assert refused.value.reason == "wrong_password"
    await (await login_with_password(chat, "zoe", "second-password")).close()
    await here.send("!who")
    assert await here.line() == "Online (1): zoe"  # the session that changed it goes on


async def test_nobody_logs_in_as_a_bot(chat: Network) -> None:
    """A bot logs in with the service token; then its name is reserved, even while it is away; !who marks it."""
    bot = await Peer.connect(HOST, chat.chat_port, "helper", service_token=chat.token)
    assert bot.welcome is not None and bot.welcome.metadata["bot"] is True
    alice = await chat.text_client("alice")
    assert await alice.who() == ["alice", "helper (bot)"]
    await bot.close()
    impostor = await chat.text_client()
    await impostor.line()
    await impostor.send("helper")
    assert await impostor.line() == "The name 'helper' belongs to a bot; choose another."
    with pytest.raises(LoginRefused) as refused:
        await Peer.connect(HOST, chat.chat_port, "helper", service_token="a guess")
    assert refused.value.reason == "wrong_password"


async def test_a_flooding_client_is_slowed_not_dropped_and_others_flow(network: Network) -> None:
    """Past FLOOD_BURST the server reads a flooder at FLOOD_RATE: another user's message passes meanwhile, and every flooded line arrives, in order."""
    network.start_api()
    network.start_server(FLOOD_RATE="40", FLOOD_BURST="10")
    sink = await network.text_client("sink")
    flooder = await network.text_client("flooder")
    other = await network.text_client("other")
    count = 120  # three seconds' worth at 40 a second
    flooder.writer.write("".join(f"sink: flood {i}\n" for i in range(count)).encode())
    await flooder.writer.drain()
    await other.send("sink: are you there?")
    seen: list[int] = []
    line = ""
    while "are you there?" not in line:
        line = await sink.line()
        if "flood " in line:
            seen.append(int(line.rsplit(" ", 1)[1]))
    assert len(seen) < count, "the flooder was not slowed: all of it came before the other user's message"
    while len(seen) < count:
        line = await sink.line()
        seen.append(int(line.rsplit(" ", 1)[1]))
    assert seen == list(range(count))


async def test_connections_per_address_are_bounded(network: Network) -> None:
    """Past MAX_CONNECTIONS_PER_IP a new connection is told why and closed; the others stay."""
    network.start_api()
    network.start_server(MAX_CONNECTIONS_PER_IP="3")
    kept = [await network.text_client(f"u{i}") for i in range(3)]
    extra = await TextClient.connect(HOST, network.chat_port)
    assert "Too many connections from your address; try again later." in await extra.lines_until_closed()
    assert await kept[0].who() == ["u0", "u1", "u2"]


async def test_tls_round_trip_and_a_plain_client_on_the_tls_port(network: Network) -> None:
    """With TLS_CERT/TLS_KEY the server also speaks TLS on CHAT_TLS_PORT; a plain-text client there is closed without harm."""
    cert, key = ensure_certificate(network.tmp / "tls")
    network.start_api()
    network.start_server(TLS_CERT=str(cert), TLS_KEY=str(key), CHAT_TLS_PORT="0")
    port = int(re.search(r"listening with TLS on [\d.]+:(\d+)", network.log("server")).group(1))  # type: ignore[union-attr]
    secure = await Peer.connect("localhost", port, "alice", ssl=client_context(cert))
    plain = await network.text_client("bob")
    await secure.send("bob", "over TLS")
    assert (await plain.expect("over TLS")).endswith("[alice] over TLS")
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"alice\n")
    await writer.drain()
    with contextlib.suppress(ConnectionResetError):  # no TLS: closed, nothing said in the clear
        assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    with pytest.raises(ssl.SSLError):
        await Peer.connect("localhost", port, "carol", ssl=client_context(None))  # the self-signed cert is not trusted by default
    await plain.send("!who")
    assert await plain.line() == "Online (2): alice, bob"  # the server shrugged both off
    assert "Traceback" not in network.log("server")
    await secure.close()
