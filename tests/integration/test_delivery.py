"""The hand-over cut, over the real processes: a client that goes away in the middle of
its stored mail loses nothing it had not received, and gets again only what it had not
acknowledged (text mode: what its TCP stack had not acknowledged). And the kills: the
message API, the chat server or the store dying while offline mail is sent loses no
message its sender was told is saved."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatnet.api_client import ApiClient
from chatnet.limits import MAIL_PAGE
from chatnet.message import Message
from chatnet.peer import Peer
from chatnet.protocol import Event, MessageJson, MessageType
from tests.support import HOST, TIMEOUT, JsonClient, Network, TextClient, eventually

PENDING = 5000
STORED_TEXT = re.compile(r"^\[Stored\] \[[^]]+\]\[alice\] '(.*)'$")
SAVED = "User 'joe' is offline. Message saved."
NOT_SAVED = "Error: Message to 'joe' was NOT saved"

Frame = dict[str, Any]


async def store_pending(chat: Network, user: str, count: int = PENDING) -> list[Message]:
    """`count` messages from alice stored for `user`, oldest first; returns them."""
    stored: list[Message] = []
    async with ApiClient(chat.api_url, chat.token) as api:
        for start in range(0, count, 1000):
            batch = [Message(sender="alice", destination=user, message=f"note {i}") for i in range(start, min(count, start + 1000))]
            await api.store_mail(batch)
            stored += batch
    return stored


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


# --- the web page ----------------------------------------------------------------------------


class PageSocket:
    """What the page does over its WebSocket: log in with `stream` and `ack`, and acknowledge
    each chat frame once it has shown it, in ack frames of `ack_ids_per_frame` ids."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, per: int) -> None:
        self.ws = ws
        self.per = per
        self.seen: list[Frame] = []
        self.unacked: list[str] = []  # shown, not acknowledged yet

    @classmethod
    async def login(cls, http: aiohttp.ClientSession, user: str) -> tuple[PageSocket, Frame]:
        """Open the socket and log in as the page does; the socket and the welcome."""
        async with http.get("/config.json") as response:
            per = int((await response.json())["ack_ids_per_frame"])
        page = cls(await http.ws_connect("/ws"), per)
        await page.ws.send_json({"type": "login", "user": user, "features": ["stream", "ack"]})
        welcome = await page.expect(lambda f: f.get("metadata", {}).get("event") == Event.WELCOME)
        return page, welcome

    async def expect(self, match: Any, timeout: float = TIMEOUT) -> Frame:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    msg = await self.ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise AssertionError(f"socket ended ({msg.type}); seen: {self.seen[-5:]}")
                    self.seen.append(json.loads(msg.data))
                    if match(self.seen[-1]):
                        return self.seen[-1]
        except TimeoutError:
            raise AssertionError(f"no matching frame within {timeout} s; {len(self.seen)} seen, the last: {self.seen[-5:]}") from None

    async def stored(self, count: int, ack: bool = True) -> list[Frame]:
        """The next `count` stored chat frames, each acknowledged (with `ack`) as it is shown."""
        frames = []
        for _ in range(count):
            frames.append(await self.expect(lambda f: f.get("type") == MessageType.CHAT and f.get("metadata", {}).get("stored") is True))
            if ack:
                self.unacked.append(frames[-1]["id"])
                if len(self.unacked) == self.per:
                    await self.send_acks()
        return frames

    async def send_acks(self) -> None:
        ids, self.unacked = self.unacked, []
        for i in range(0, len(ids), self.per):
            await self.ws.send_json({"type": "ack", "ids": ids[i : i + self.per]})


@pytest.fixture
async def page_http(chat: Network) -> AsyncIterator[aiohttp.ClientSession]:
    """The web adapter running beside the chat fixture; a browser's HTTP session to it."""
    chat.start_web()
    async with aiohttp.ClientSession(f"http://{HOST}:{chat.web_port}") as http:
        yield http


@dataclass
class Mailbox:
    """A user's pending mail as the API lists it (oldest first) and its total; short to show."""

    messages: list[MessageJson]
    total: int

    def __repr__(self) -> str:
        texts = [m["message"] for m in self.messages]
        return f"Mailbox(total={self.total}, listed={len(texts)}, first={texts[:1]}, last={texts[-1:]})"


async def mailbox(chat: Network, user: str) -> Mailbox:
    async with ApiClient(chat.api_url, chat.token) as api:
        return Mailbox(*await api.pending(user, MAIL_PAGE))


async def test_a_page_that_closes_after_acknowledging_2000_gets_exactly_the_other_3000(chat: Network, page_http: aiohttp.ClientSession) -> None:
    """5,000 pending; the page acks the first 2,000 it was shown and closes: exactly the other 3,000 stay, and the next page gets them, oldest first, once each."""
    stored = await store_pending(chat, "joe")
    first, welcome = await PageSocket.login(page_http, "joe")
    assert welcome["metadata"]["pending"] == PENDING
    shown = await first.stored(2000)
    assert [f["id"] for f in shown] == [m.id for m in stored[:2000]], "the page was not shown its mail oldest first"
    assert not first.unacked  # all 2,000 acknowledged (2,000 is a whole number of ack frames)
    await first.ws.close()  # in the middle of being handed the rest

    # The API reads a mailbox and its total in two queries: wait for an answer that agrees
    # with itself (acks landing between them make the list longer than the total).
    left = await eventually(lambda: mailbox(chat, "joe"), lambda box: box.total <= PENDING - 2000 and len(box.messages) == box.total, "joe's mailbox", 20)
    assert left.total == PENDING - 2000, f"{left}: {PENDING - 2000 - left.total} not acknowledged were taken off"
    assert [m["id"] for m in left.messages] == [m.id for m in stored[2000:]], left
    assert not any(f["type"] == MessageType.ERROR for f in first.seen), [f for f in first.seen if f["type"] == MessageType.ERROR]

    second, welcome = await PageSocket.login(page_http, "joe")
    assert welcome["metadata"]["pending"] == PENDING - 2000
    again = await second.stored(PENDING - 2000)
    assert [f["message"] for f in again] == [f"note {i}" for i in range(2000, PENDING)]  # oldest first
    ids = [f["id"] for f in again]
    assert len(set(ids)) == len(ids) and not set(ids) & {f["id"] for f in shown}
    await second.send_acks()  # what is left of the last ack frame, as the page's timer sends it
    await eventually(lambda: mailbox(chat, "joe"), lambda box: box.total == 0, "joe's mailbox after the second page acknowledged it all", 20)
    await second.ws.close()


# --- kill -9 while offline mail is sent -------------------------------------------------------


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


@pytest.fixture
def own_store_network(tmp_path: Path) -> Iterator[Network]:
    """A network over an embedded store of its own (the session's shared one must not be killed); nothing else started yet."""
    network = Network.over_own_store(tmp_path)
    yield network
    network.stop_all()


async def test_killing_the_store_while_mail_is_sent_loses_no_confirmed_message(own_store_network: Network) -> None:
    """kill -9 of the store amid 2,000 offline messages, restarted once one is NOT saved: each one confirmed is stored once, the rest were told NOT saved."""
    chat = own_store_network
    chat.start_api()
    chat.start_server(FLOOD_RATE="0")  # 2,000 lines at once
    joe = await chat.text_client("joe")  # known name: each message gets exactly one answer line
    await joe.send("exit")
    await joe.lines_until_closed()
    alice = await chat.text_client("alice")
    count, chunk, kill_at = 2000, 100, 600
    answers: list[str] = []
    restarted: asyncio.Future[None] | None = None
    for start in range(0, count, chunk):
        alice.writer.write("".join(f"joe: m{i}\n" for i in range(start, start + chunk)).encode())
        await alice.writer.drain()
        if start == kill_at:
            chat.children["store"].kill()  # while this chunk is on its way to the store: no goodbye
        got = [await alice.line(timeout=60) for _ in range(chunk)]
        answers += got
        if restarted is None and start >= kill_at and any(NOT_SAVED in answer for answer in got):
            restarted = asyncio.get_running_loop().run_in_executor(None, chat.restart_store)
    assert restarted is not None, f"the store was killed, yet every message was answered saved: {Counter(answers)}"
    await restarted

    unexpected = Counter(answer for answer in answers if answer != SAVED and not answer.startswith(NOT_SAVED))
    assert not unexpected, f"answers neither saved nor NOT saved: {unexpected}"
    assert answers[-chunk:] == [SAVED] * chunk, f"mail was not saved again after the store came back: {Counter(answers[-chunk:])}"
    saved = {f"m{i}" for i, answer in enumerate(answers) if answer == SAVED}
    box = await eventually(lambda: mailbox(chat, "joe"), lambda box: len(box.messages) == box.total, "joe's mailbox")
    held = Counter(m["message"] for m in box.messages)
    lost = sorted(saved - held.keys(), key=lambda text: int(text[1:]))
    assert not lost, f"{len(lost)} confirmed message(s) lost, e.g. {lost[:10]}; {box}"
    twice = {text: n for text, n in held.items() if n > 1}
    assert not twice, f"stored more than once: {twice}"
