"""Live delivery to a connection that dies, and connections that are silent, over the
real chat server: a live line the reader's TCP stack never acknowledged becomes its
stored mail; a JSON client that does not answer a ping is dropped, one that does stays."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct

from chatnet.api_client import ApiClient
from tests.support import HOST, Network, TextClient, eventually

LIVE = 800  # fewer than a session keeps unacknowledged (SENT_LIMIT): none is diverted to mail
STORED = re.compile(r"^\[Stored\] \[[^]]+\]\[alice\] 'live (\d+)'$")


async def test_live_lines_a_reset_text_reader_never_had_are_stored_for_it(network: Network) -> None:
    """joe stops reading while alice sends 800 live lines, then resets: the lines his kernel
    never acknowledged come at his next login as stored mail, and what is missing is only
    the oldest few his own receive buffer had taken."""
    network.start_api()
    network.start_server(FLOOD_RATE="0")
    joe = await TextClient.connect(HOST, network.chat_port, receive_buffer=4096)
    await joe.login("joe")
    joe.writer.transport.pause_reading()  # joe reads nothing more: only his kernel takes what comes
    alice = await network.text_client("alice")
    alice.writer.write("".join(f"joe: live {i}\n" for i in range(LIVE)).encode())
    await alice.send("!who")  # answered after every line before it was routed
    await alice.expect(lambda line: line.startswith("Online"))
    sock = joe.writer.get_extra_info("socket")
    kernel_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset, not a goodbye
    joe.writer.transport.abort()
    left = await eventually(lambda: _log(network), lambda found: found is not None, "the server storing what joe never had")
    async with ApiClient(network.api_url, network.token) as api:
        await eventually(lambda: api.pending("joe", 1), lambda page: page[1] == left, f"{left} pending for joe")

    again = await network.text_client()
    await again.line()
    await again.send("joe")
    welcome = await again.line()
    count = int(re.fullmatch(r"Welcome, joe! (\d+) stored messages\.", welcome)[1])  # type: ignore[index]
    stored = [int(STORED.fullmatch(await again.line())[1]) for _ in range(count)]  # type: ignore[index]
    first = LIVE - count
    assert stored == list(range(first, LIVE))  # the newest, in order, each once
    missing = sum(len(f"[2026-12-01T00:00:00Z][alice] live {i}\n") for i in range(first))
    assert missing <= kernel_buffer, f"{first} lines lost: more than joe's receive buffer ({kernel_buffer} bytes) could hold"
    assert count == left


async def _log(network: Network) -> int | None:
    found = re.search(r"joe \(.*\) left with (\d+) message\(s\) not known to have arrived: stored", network.log("server"))
    return int(found[1]) if found else None


async def test_a_json_client_that_does_not_answer_pings_is_dropped_and_one_that_does_stays(network: Network) -> None:
    network.start_api()
    network.start_server(PING_INTERVAL="0.3", PING_TIMEOUT="0.5")
    mute = await network.text_client()  # a raw socket speaking JSON, answering nothing
    await mute.line()
    await mute.send(json.dumps({"type": "login", "user": "mute"}))
    assert json.loads(await mute.line())["metadata"]["event"] == "welcome"
    alive = await network.json_client("alive")  # a Peer answers pings by itself, while it is read:
    who_answer = asyncio.create_task(alive.expect(lambda m: m.metadata.get("event") == "who", timeout=30))

    ping = json.loads(await mute.expect(lambda line: '"presence"' not in line))  # alive came online meanwhile
    assert (ping["type"], ping["metadata"]["event"]) == ("notification", "ping")
    goodbye = json.loads(await mute.line())
    assert goodbye["message"] == "No answer to ping; disconnecting."
    assert await mute.closed()

    await alive.command("!who")  # several pings later it is still logged in
    who = await who_answer
    assert "alive" in who.metadata["users"] and "mute" not in who.metadata["users"]
