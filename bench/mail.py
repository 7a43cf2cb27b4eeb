"""Offline mail (chatnet only; IRC has no equivalent): many messages to a user who is
offline, each confirmed by "Message saved.", then that user logs in and receives them
all as "[Stored] ..." lines, acknowledged by the server once written."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bench.servers import HOST, Chatnet

SAVED = b"Message saved."
STORED = b"[Stored] "
TIMEOUT = 120.0


async def _login(port: int, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    assert (await reader.readline()).startswith(b"Enter username")
    writer.write(name.encode() + b"\n")
    while not (line := await reader.readline()).startswith(b"Welcome, "):
        if not line:
            raise ConnectionError(f"{name}: closed before the welcome")
    return reader, writer, line


async def _send_offline(session: tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes], sender: str, recipient: str, seqs: range, window: int) -> dict[str, int]:
    """Send `seqs` to the offline `recipient`, at most `window` unconfirmed at a time."""
    reader, writer, _ = session
    confirmed = refused = 0
    credit = asyncio.Semaphore(window)

    async def confirmations() -> None:
        nonlocal confirmed, refused
        while confirmed + refused < len(seqs):
            line = await reader.readline()
            if not line:
                raise ConnectionError(f"{sender}: closed with {len(seqs) - confirmed - refused} unconfirmed")
            if SAVED in line:
                confirmed += 1
                credit.release()
            elif b"NOT saved" in line:
                refused += 1
                credit.release()

    reading = asyncio.create_task(confirmations())
    for seq in seqs:
        await credit.acquire()
        writer.write(b"%s: %d mail\n" % (recipient.encode(), seq))
    await reading
    writer.close()
    return {"confirmed": confirmed, "refused": refused}


async def _pending(api: aiohttp.ClientSession, base: str, user: str) -> int:
    async with api.get(f"{base}/mail/{user}", params={"limit": "1"}) as response:
        response.raise_for_status()
        return int((await response.json())["total"])


async def run_mail(server: Chatnet, messages: int, senders: int, window: int, tag: str) -> dict[str, Any]:
    recipient = f"{tag}inbox"
    names = [f"{tag}s{i}" for i in range(senders)]
    slices = [range(i, messages, senders) for i in range(senders)]
    # The senders log in before the clock starts: it times storing, not logins (the
    # login storm workload times those).
    sessions = await asyncio.wait_for(asyncio.gather(*(_login(server.chat_port, n) for n in names)), TIMEOUT)
    started = time.monotonic()
    sending = [_send_offline(c, n, recipient, s, window) for c, n, s in zip(sessions, names, slices, strict=True)]
    sent = await asyncio.wait_for(asyncio.gather(*sending), TIMEOUT)
    store_s = time.monotonic() - started
    confirmed = sum(r["confirmed"] for r in sent)

    headers = {"Authorization": f"Bearer {server.token}"}
    async with aiohttp.ClientSession(headers=headers) as api:
        pending_before = await _pending(api, server.api_url, recipient)
        login = await asyncio.wait_for(_receive_all(server, api, recipient, messages), TIMEOUT)
        pending_after = await _pending(api, server.api_url, recipient)
    return {
        "server": server.name, "mode": "offline_mail", "messages": messages, "senders": senders,
        "confirmed": confirmed, "refused": sum(r["refused"] for r in sent),
        "store_s": store_s, "stored_per_s": confirmed / store_s if store_s else None,
        "pending_before_login": pending_before, "pending_after_login": pending_after,
        "lost": messages - login["distinct"],
        **login,
    }  # fmt: skip


async def _receive_all(server: Chatnet, api: aiohttp.ClientSession, user: str, expected: int) -> dict[str, Any]:
    """Log `user` in; time the last [Stored] line and the moment nothing is pending."""
    started = time.monotonic()
    reader, writer, welcome = await _login(server.chat_port, user)
    seen: set[int] = set()
    received = 0
    last_line_s = None
    while received < expected:
        line = await reader.readline()
        if not line:
            break
        if line.startswith(STORED):
            received += 1
            # `[Stored] [ts][sender] '<seq> mail'`
            seen.add(int(line.rsplit(b"'", 2)[-2].split(b" ", 1)[0]))
    last_line_s = time.monotonic() - started
    acked_s = None
    while time.monotonic() - started < TIMEOUT:
        if await _pending(api, server.api_url, user) == 0:
            acked_s = time.monotonic() - started
            break
        await asyncio.sleep(0.005)
    writer.close()
    return {"welcome": welcome.decode().strip(), "received": received, "distinct": len(seen),
            "last_line_s": last_line_s, "acked_s": acked_s}  # fmt: skip
