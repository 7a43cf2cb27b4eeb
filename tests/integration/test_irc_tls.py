"""IRC over TLS (IRC_TLS_PORT, with the certificate of the chat server's TLS port), and
the server without IRC (IRC=false, as `--no-irc` sets it)."""

from __future__ import annotations

import asyncio

from chatnet.process import port_open
from chatnet.tls import client_context, ensure_certificate
from tests.support import HOST, Network

DEADLINE = 15.0


async def _read_until(reader: asyncio.StreamReader, wanted: str) -> list[str]:
    """Lines up to and including the first containing `wanted`."""
    lines: list[str] = []
    async with asyncio.timeout(DEADLINE):
        while True:
            raw = await reader.readline()
            assert raw, f"closed before {wanted!r}; got {lines}"
            lines.append(raw.decode().rstrip("\r\n"))
            if wanted in lines[-1]:
                return lines


async def test_irc_over_tls_reaches_a_text_user(network: Network) -> None:
    cert, key = ensure_certificate(network.tmp / "tls")
    network.start_api()
    network.start_server(TLS_CERT=str(cert), TLS_KEY=str(key), CHAT_TLS_PORT="0")
    reader, writer = await asyncio.open_connection("localhost", network.port("irc_tls"), ssl=client_context(cert))
    writer.write(b"NICK alice\r\nUSER alice 0 * :Alice\r\n")
    welcome = await _read_until(reader, " 422 ")
    assert welcome[0] == ":chatnet 001 alice :Welcome to the chatnet IRC network, alice!alice@chatnet"
    bob = await network.text_client("bob")
    writer.write(b"PRIVMSG bob :over TLS\r\n")
    assert (await bob.expect("over TLS")).endswith("[alice] over TLS")
    await bob.send("alice: back")
    assert (await _read_until(reader, "PRIVMSG alice"))[-1] == ":bob!bob@chatnet PRIVMSG alice :back"
    writer.write(b"QUIT\r\n")
    assert (await _read_until(reader, "ERROR"))[-1].startswith("ERROR :Closing link")
    writer.close()


async def test_no_irc_means_no_irc_port(network: Network) -> None:
    network.start_api()
    network.start_server(IRC="false")
    assert "listening for IRC" not in network.log("server")
    assert not port_open(HOST, network.port("irc"))()  # the port picked for it stays closed
    bob = await network.text_client("bob")  # the chat port is there all the same
    assert await bob.who() == ["bob"]
