"""The hand-over cut, over the real processes: a client that goes away in the middle of
its stored mail loses nothing it had not received, and gets again only what it had not
acknowledged (text mode: what its TCP stack had not acknowledged)."""

from __future__ import annotations

import asyncio
import re
import socket
import struct

from chatnet.api_client import ApiClient
from chatnet.peer import Peer
from chatnet.protocol import Message, MessageType
from tests.support import HOST, JsonClient, Network, TextClient

PENDING = 5000
STORED_TEXT = re.compile(r"^\[Stored\] \[[^]]+\]\[alice\] '(.*)'$")


async def store_pending(chat: Network, user: str, count: int = PENDING) -> None:
    async with ApiClient(chat.api_url, chat.token) as api:
        for start in range(0, count, 1000):
            batch = [Message(sender="alice", destination=user, message=f"note {i}") for i in range(start, min(count, start + 1000))]
            await api.store_mail(batch)


async def pending(chat: Network, user: str) -> int:
    async with ApiClient(chat.api_url, chat.token) as api:
        _, total = await api.pending(user, 1)
        return total


async def test_a_text_client_reset_midway_gets_its_mail_again(chat: Network) -> None:
    """5,000 pending; a text client reads 100 lines and resets: nothing it may not have had is taken off the mailbox."""
    await store_pending(chat, "joe")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (HOST, chat.chat_port))
    reader, writer = await asyncio.open_connection(sock=sock)
    client = TextClient(reader, writer)
    assert await client.line() == "Enter username:"
    await client.send("joe")
    assert await client.line() == f"Welcome, joe! {PENDING} stored messages."
    for _ in range(100):
        assert (await client.line()).startswith("[Stored]")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset, not a goodbye
    writer.transport.abort()
    again = await chat.text_client()
    await again.line()
    await again.send("joe")
    welcome = await again.line()
    # The page of 5,000 never reached the peer whole (its TCP stack acknowledged only what
    # fit its buffer): none of it was taken off the mailbox.
    assert welcome == f"Welcome, joe! {PENDING} stored messages."


async def test_a_json_client_with_ack_that_drops_gets_only_what_it_did_not_acknowledge(chat: Network) -> None:
    """An `ack` client acknowledges 100 of 5,000 and drops: the next login gets the other 4,900, oldest first."""
    await store_pending(chat, "joe")
    first = JsonClient(await Peer.connect(HOST, chat.chat_port, "joe", features={"ack"}))
    got = [await first.expect(lambda m: m.type == MessageType.CHAT) for _ in range(100)]
    await first.send_raw({"type": "ack", "ids": [m.id for m in got]})
    await first.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (left := await pending(chat, "joe")) != PENDING - 100:
        assert loop.time() < deadline, f"pending stayed {left}"
        await asyncio.sleep(0.1)
    second = JsonClient(await Peer.connect(HOST, chat.chat_port, "joe", features={"ack"}))
    assert second.peer.welcome is not None and second.peer.welcome.metadata["pending"] == PENDING - 100
    next_one = await second.expect(lambda m: m.type == MessageType.CHAT)
    assert next_one.message == "note 100" and next_one.metadata.get("stored") is True
    await second.close()


async def test_killing_the_api_while_mail_is_sent_loses_no_confirmed_message(chat: Network) -> None:
    """kill -9 of the message API in the middle of 600 offline messages: every one the sender was told is saved reaches its reader, once."""
    joe = await chat.text_client("joe")  # known name: each message gets exactly one answer line
    await joe.send("exit")
    await joe.lines_until_closed()
    alice = await chat.text_client("alice")
    count, chunk = 600, 25
    answers: list[str] = []
    for start in range(0, count, chunk):  # a chunk at a time, so the kill falls between stores
        if start == count // 3:
            chat.children["api"].kill()  # no goodbye
            chat.children.pop("api")
            restarted = asyncio.get_running_loop().run_in_executor(None, chat.start_api)
        alice.writer.write("".join(f"joe: m{i}\n" for i in range(start, start + chunk)).encode())
        await alice.writer.drain()
        answers += [await alice.line(timeout=30) for _ in range(chunk)]
    await restarted
    saved = {f"m{i}" for i, answer in enumerate(answers) if answer == "User 'joe' is offline. Message saved."}
    assert all(a.endswith("Message saved.") or "NOT saved" in a for a in answers), set(answers)
    reader = await chat.text_client()
    await reader.line()
    await reader.send("joe")
    welcome = await reader.line()
    pending_count = int(welcome.split("! ", 1)[1].split(" ", 1)[0])
    got = [STORED_TEXT.match(await reader.line()).group(1) for _ in range(pending_count)]  # type: ignore[union-attr]
    assert saved <= set(got), f"{len(saved - set(got))} confirmed message(s) lost"
    assert len(got) == len(set(got)), "a message came twice"


async def test_killing_the_chat_server_while_mail_is_sent_loses_no_confirmed_message(chat: Network) -> None:
    """kill -9 of the chat server in the middle of offline sending: every message its sender heard was saved reaches its reader after the restart."""
    joe = await chat.text_client("joe")
    await joe.send("exit")
    await joe.lines_until_closed()
    saved: set[str] = set()
    for round_ in range(2):  # before the kill, and after the restart
        alice = await chat.text_client("alice")
        for start in range(0, 150, 25):
            alice.writer.write("".join(f"joe: r{round_}m{i}\n" for i in range(start, start + 25)).encode())
            await alice.writer.drain()
            for i in range(start, start + 25):
                if await alice.line(timeout=30) == "User 'joe' is offline. Message saved.":
                    saved.add(f"r{round_}m{i}")
        if round_ == 0:
            alice.writer.write("".join(f"joe: unconfirmed {i}\n" for i in range(50)).encode())  # in flight at the kill
            await alice.writer.drain()
            chat.children["server"].kill()
            chat.children.pop("server")
            chat.start_server()
    assert len(saved) == 300, f"{300 - len(saved)} of the messages sent around the kill were not saved"
    reader = await chat.text_client()
    await reader.line()
    await reader.send("joe")
    welcome = await reader.line()
    pending_count = int(welcome.split("! ", 1)[1].split(" ", 1)[0])
    lines = [await reader.line() for _ in range(pending_count)]
    got = [m.group(1) for m in map(STORED_TEXT.match, lines) if m]
    assert saved <= set(got), f"{len(saved - set(got))} confirmed message(s) lost"
    assert len(got) == len(set(got)), "a message came twice"
