"""A login storm against the real processes (embedded store, message API, chat server):
a thousand text clients log in at once and every one is told its own mail count — the
first looks at their mail are coalesced, so the API is never asked once per login."""

from __future__ import annotations

import asyncio
import resource

import pytest

from chatnet.api_client import ApiClient
from chatnet.limits import MAX_BATCH
from chatnet.message import Message
from chatnet.protocol import utcnow
from tests.support import HOST, Network, TextClient

# CI-sized (issue 10 measures 5,000): enough that one look per login overwhelmed the API.
LOGINS = 1000
# Every tenth of them has mail waiting, one to three messages.
WITH_MAIL = range(0, LOGINS, 10)
# For the whole storm, not per line: it measures throughput, not one login's latency.
STORM_DEADLINE = 120.0
# Sockets the test holds (one per client) besides its own few.
FILES_NEEDED = LOGINS + 200


def expected(i: int) -> int:
    return 1 + i % 3 if i in WITH_MAIL else 0


@pytest.fixture(autouse=True)
def open_files() -> None:
    """Lift the soft limit on open files to the hard one (the chat server, started after, inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FILES_NEEDED:
        pytest.skip(f"open files limited to {hard}; the storm needs {FILES_NEEDED}")
    if soft < FILES_NEEDED:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def log_in(network: Network, i: int) -> tuple[str, list[str]]:
    """Connect, answer the prompt as u<i>: the welcome line, then the stored lines it announced."""
    client = await TextClient.connect(HOST, network.chat_port)
    try:
        assert await client.line(STORM_DEADLINE) == "Enter username:"
        await client.send(f"u{i}")
        welcome = await client.expect(lambda line: line.startswith("Welcome"), STORM_DEADLINE)
        stored = [await client.expect(lambda line: line.startswith("[Stored]"), STORM_DEADLINE) for _ in range(expected(i))]
        return welcome, stored
    finally:
        await client.close()


async def test_a_thousand_logins_at_once_all_get_their_mail_count(network: Network) -> None:
    """1,000 simultaneous logins, a tenth with mail waiting: each welcome counts its
    own mail (none says stored messages are unavailable) and the mail follows."""
    network.start_api()
    network.start_server(FLOOD_RATE="0", LOGIN_RATE="0", MAX_CONNECTIONS_PER_IP="0")  # all come from 127.0.0.1
    mail = [
        Message(sender="alice", destination=f"u{i}", message=f"note {n} for u{i}", timestamp=utcnow())
        for i in WITH_MAIL
        for n in range(expected(i))
    ]
    async with ApiClient(network.api_url, network.token) as api:
        for start in range(0, len(mail), MAX_BATCH):
            await api.store_mail(mail[start : start + MAX_BATCH])

    async with asyncio.timeout(STORM_DEADLINE):
        results = await asyncio.gather(*(log_in(network, i) for i in range(LOGINS)))

    unavailable = [welcome for welcome, _ in results if "unavailable" in welcome]
    assert unavailable == [], f"{len(unavailable)} of {LOGINS} were told stored mail is unavailable: {unavailable[:3]}"
    for i, (welcome, stored) in enumerate(results):
        count = expected(i)
        said = "No stored messages" if count == 0 else f"{count} stored message{'s' if count > 1 else ''}"
        assert welcome == f"Welcome, u{i}! {said}."
        assert sorted(line.rsplit("] ", 1)[1] for line in stored) == [f"'note {n} for u{i}'" for n in range(count)]
