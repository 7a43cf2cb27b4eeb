"""The cluster link over a real redis-server: several `Cluster` objects in one event loop
are the nodes of one network (each test its own key prefix); claims, presence, node and
room messages, a node that dies without a word, and Redis itself going away and back."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from chatnet.cluster import DIRECT, OP_TIMEOUT, Cluster
from chatnet.errors import ClusterUnavailable
from chatnet.process import ROOT
from tests.support import HOST, REDIS_SERVER, TIMEOUT, RedisServer, eventually, free_port

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")

SHORT_TTL = 1.0  # the nodes of the expiry tests: a dead one is gone within this
MARGIN = 0.5  # what a loaded machine may add to it


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test alone (it gets killed)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


class Node:
    """A Cluster with everything it reports recorded, and a way to wait for it."""

    def __init__(self, label: str, url: str, prefix: str, ttl: float, op_timeout: float) -> None:
        self.label = label
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.presence: list[tuple[str, str]] = []
        self.lost: list[str] = []
        self.fail_on: str | None = None  # on_message raises for a payload with this key
        self._changed = asyncio.Event()
        node = f"{label}-{uuid.uuid4().hex[:8]}"
        self.cluster = Cluster(url, node, ttl, on_message=self._message, on_presence=self._presence, on_lost=self._lost, prefix=prefix, op_timeout=op_timeout)

    @property
    def id(self) -> str:
        return self.cluster.node

    def _message(self, target: str, payload: dict[str, Any]) -> None:
        if self.fail_on is not None and self.fail_on in payload:
            raise RuntimeError("a bug in on_message")
        self.messages.append((target, payload))
        self._changed.set()

    def _presence(self, event: str, key: str, name: str, kind: str) -> None:
        self.presence.append((event, key))
        self._changed.set()

    def _lost(self, key: str) -> None:
        self.lost.append(key)
        self._changed.set()

    async def until(self, done: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        """Wait until `done()` holds, woken by every callback; fail after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._changed.clear()
            if done():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.label}: {what} not within {timeout} s; seen so far: messages={self.messages} presence={self.presence} "
                    f"lost={self.lost} online={self.cluster.online()}"
                )
            with suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    def got(self, payload: dict[str, Any], target: str = DIRECT) -> int:
        return self.messages.count((target, payload))


MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def make_node(redis_server: RedisServer) -> AsyncIterator[MakeNode]:
    """Start nodes of one network of this test's own (a prefix no other test uses)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    made: list[Node] = []

    async def make(label: str, ttl: float = 10.0, url: str | None = None, op_timeout: float = OP_TIMEOUT) -> Node:
        node = Node(label, url or redis_server.url, prefix, ttl, op_timeout)
        await node.cluster.start()
        made.append(node)
        return node

    yield make
    for node in made:
        await node.cluster.stop()


async def test_a_guest_name_is_one_session_network_wide(make_node: MakeNode) -> None:
    """A guest name held on one node is refused everywhere, that node included, as a
    guest's and as an account's."""
    a, b = await make_node("a"), await make_node("b")
    assert await a.cluster.claim("bob", "Bob", "guest", False)
    assert a.cluster.online() == [("Bob", "guest")]
    assert not await a.cluster.claim("bob", "bob", "guest", False)
    assert not await b.cluster.claim("bob", "BOB", "guest", False)
    assert not await b.cluster.claim("bob", "bob", "person", True)
    await b.until(lambda: b.cluster.online() == [("Bob", "guest")], "bob online")
    assert b.cluster.nodes_of("bob") == [a.id]
    assert a.presence == b.presence == [("online", "bob")]  # its own node is told as well


async def test_an_account_is_held_by_sessions_on_several_nodes(make_node: MakeNode) -> None:
    """An account's (or a bot's) name may be claimed again on its node and on others;
    it comes online once, and a guest can't take it."""
    a, b, c = await make_node("a"), await make_node("b"), await make_node("c")
    assert await a.cluster.claim("alice", "Alice", "person", True)
    assert await a.cluster.claim("alice", "Alice", "person", True)
    assert await b.cluster.claim("alice", "Alice", "person", True)
    assert await b.cluster.claim("openai", "openai", "bot", True)
    assert await c.cluster.claim("openai", "openai", "bot", True)
    assert not await c.cluster.claim("alice", "alice", "guest", False)
    both = sorted([a.id, b.id])
    for node in (a, b, c):
        await node.until(lambda n=node: n.cluster.nodes_of("alice") == both and len(n.cluster.nodes_of("openai")) == 2, "both names on two nodes")
        assert node.cluster.online() == [("Alice", "person"), ("openai", "bot")]
        assert sorted(node.presence) == [("online", "alice"), ("online", "openai")]


async def test_fifty_concurrent_claims_of_a_guest_name_one_wins(make_node: MakeNode) -> None:
    """50 claims of one guest name at once, spread over three nodes: exactly one is
    granted; 50 of an account's name: all are, and it comes online once."""
    nodes = [await make_node(label) for label in "abc"]
    granted = await asyncio.gather(*(nodes[i % 3].cluster.claim("zed", "zed", "guest", False) for i in range(50)))
    assert granted.count(True) == 1
    winner = nodes[granted.index(True) % 3]
    shared = await asyncio.gather(*(nodes[i % 3].cluster.claim("amy", "amy", "person", True) for i in range(50)))
    assert all(shared)
    for node in nodes:
        await node.until(lambda n=node: len(n.cluster.nodes_of("amy")) == 3 and n.cluster.nodes_of("zed") == [winner.id], "zed on one node, amy on three")
        assert sorted(node.presence) == [("online", "amy"), ("online", "zed")]


async def test_release_takes_a_name_offline_after_its_last_node(make_node: MakeNode) -> None:
    """A name held on two nodes stays online when one releases it and goes offline on
    every node, once, when the other does."""
    a, b, c = await make_node("a"), await make_node("b"), await make_node("c")
    assert await a.cluster.claim("alice", "alice", "person", True)
    assert await b.cluster.claim("alice", "alice", "person", True)
    await c.until(lambda: len(c.cluster.nodes_of("alice")) == 2, "alice on a and b")
    await a.cluster.release("alice")
    await a.cluster.release("nobody")  # never claimed: nothing happens
    await c.until(lambda: c.cluster.nodes_of("alice") == [b.id], "alice on b only")
    assert c.presence == [("online", "alice")]
    await b.cluster.release("alice")
    for node in (a, b, c):
        await node.until(lambda n=node: ("offline", "alice") in n.presence, "alice offline")
        assert node.presence == [("online", "alice"), ("offline", "alice")]
        assert node.cluster.online() == [] and node.cluster.nodes_of("alice") == []
    assert await c.cluster.claim("alice", "alice", "guest", False)  # free again, even for a guest


async def test_send_reaches_the_node_it_is_for_and_only_while_it_runs(make_node: MakeNode) -> None:
    """A payload sent to a node reaches that node alone, as sent; to a node that stopped,
    or never was, the send says nobody heard it."""
    a, b, c = await make_node("a"), await make_node("b"), await make_node("c")
    payload = {"id": "m1", "from": "alice", "to": "bob", "text": "grüß dich ✓ \"quoted\"\nnext"}
    assert await a.cluster.send(b.id, payload)
    assert await a.cluster.send(c.id, {"marker": 1})
    await b.until(lambda: b.got(payload) == 1, "the payload at b")
    await c.until(lambda: c.got({"marker": 1}) == 1, "the marker at c")
    assert b.messages == [(DIRECT, payload)] and c.messages == [(DIRECT, {"marker": 1})] and a.messages == []
    await b.cluster.stop()
    assert not await a.cluster.send(b.id, payload)
    assert not await a.cluster.send("never-was", payload)


async def test_room_messages_reach_each_joined_node_once(make_node: MakeNode) -> None:
    """A room message reaches every node that joined the room, once, and never its
    sender or a node that did not join or has left."""
    a, b, c = await make_node("a"), await make_node("b"), await make_node("c")
    await a.cluster.join_room("hiking")
    await b.cluster.join_room("hiking")
    await b.cluster.join_room("hiking")  # joining twice is joining
    first, second, marker = {"text": "from c"}, {"text": "from a"}, {"text": "marker"}
    assert await c.cluster.publish_room("hiking", first) == 2
    assert await a.cluster.publish_room("hiking", second) == 1
    assert await c.cluster.publish_room("hiking", marker) == 2
    # One channel keeps its order: once the marker is in, a duplicate would be too.
    await a.until(lambda: a.got(marker, "hiking") == 1, "the marker at a")
    await b.until(lambda: b.got(marker, "hiking") == 1, "the marker at b")
    assert a.messages == [("hiking", first), ("hiking", marker)]
    assert b.messages == [("hiking", first), ("hiking", second), ("hiking", marker)]
    assert c.messages == []
    await b.cluster.leave_room("hiking")
    assert await c.cluster.publish_room("hiking", {"text": "after"}) == 1
    await a.until(lambda: a.got({"text": "after"}, "hiking") == 1, "the last one at a")
    assert b.got({"text": "after"}, "hiking") == 0


async def test_messages_nobody_can_read_and_failing_callbacks_do_not_stop_a_node(make_node: MakeNode, redis_server: RedisServer) -> None:
    """Garbage published on a node's channel is skipped, and a callback that raises is
    logged: the node goes on hearing what comes next."""
    a = await make_node("a")
    a.fail_on = "boom"
    channel = f"{a.cluster.prefix}:node:{a.id}"
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        for garbage in (b"not json", b"[1,2]", b'{"from":"x"}', b'{"from":"x","payload":3}', b"\xff\xfe"):
            await raw.publish(channel, garbage)
    finally:
        await raw.aclose()
    assert await a.cluster.send(a.id, {"boom": True})
    assert await a.cluster.send(a.id, {"ok": True})
    await a.until(lambda: a.got({"ok": True}) == 1, "the good one")
    assert a.messages == [(DIRECT, {"ok": True})]
    assert a.cluster.available


async def test_a_stopped_node_frees_its_names_at_once(make_node: MakeNode) -> None:
    """stop() releases what the node held: the others see its names go offline right
    away (long before they would expire), and a guest name is free again."""
    a, b = await make_node("a"), await make_node("b")
    assert await a.cluster.claim("alice", "alice", "person", True)
    assert await a.cluster.claim("bob", "bob", "guest", False)
    await b.until(lambda: len(b.cluster.online()) == 2, "both names at b")
    started = time.monotonic()
    await a.cluster.stop()
    await b.until(lambda: b.cluster.online() == [], "both names offline", timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert sorted(event for event in b.presence if event[0] == "offline") == [("offline", "alice"), ("offline", "bob")]
    assert await b.cluster.claim("bob", "bob", "guest", False)


async def test_a_dead_node_s_names_go_offline_within_the_ttl(make_node: MakeNode) -> None:
    """A node that dies without a word (no release, no heartbeat): within its ttl the
    others see each of its names offline, its guest name is free, and nothing reaches it."""
    a, b, c = [await make_node(label, ttl=SHORT_TTL) for label in "abc"]
    assert await a.cluster.claim("alice", "alice", "person", True)
    assert await a.cluster.claim("bob", "bob", "guest", False)
    assert await c.cluster.claim("carol", "carol", "person", True)
    await b.until(lambda: len(b.cluster.online()) == 3, "three names at b")
    started = time.monotonic()
    await a.cluster.abort()
    for node in (b, c):
        await node.until(lambda n=node: n.cluster.online() == [("carol", "person")], "a's names offline", timeout=SHORT_TTL + MARGIN)
    assert time.monotonic() - started <= SHORT_TTL + MARGIN
    for node in (b, c):
        assert sorted(event for event in node.presence if event[0] == "offline") == [("offline", "alice"), ("offline", "bob")]
    assert not await b.cluster.send(a.id, {"text": "anyone?"})
    assert await b.cluster.claim("bob", "bob", "guest", False)


# A node in a process of its own: it claims two names, says so, and waits to be killed.
NODE_PROCESS = """
import asyncio, sys
from chatnet.cluster import Cluster

async def main() -> None:
    url, prefix, node, ttl = sys.argv[1:5]
    cluster = Cluster(url, node, float(ttl), on_message=lambda *_: None, on_presence=lambda *_: None, prefix=prefix)
    await cluster.start()
    assert await cluster.claim("dora", "dora", "guest", False)
    assert await cluster.claim("eve", "Eve", "person", True)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_node_killed_with_sigkill_is_gone_within_the_ttl(make_node: MakeNode, redis_server: RedisServer) -> None:
    """A node process killed with kill -9: its names go offline on the others within
    its ttl, one offline event each, and a message for it is heard by nobody."""
    b = await make_node("b", ttl=SHORT_TTL)
    node = f"killed-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-c", NODE_PROCESS, redis_server.url, b.cluster.prefix, node, str(SHORT_TTL)]
    process = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            assert await process.stdout.readline() == b"ready\n"
        await b.until(lambda: b.cluster.online() == [("dora", "guest"), ("Eve", "person")], "the child's names at b")
        assert b.cluster.nodes_of("eve") == [node]
        started = time.monotonic()
        process.kill()
        await process.wait()
        await b.until(lambda: b.cluster.online() == [], "the killed node's names offline", timeout=SHORT_TTL + MARGIN)
        assert time.monotonic() - started <= SHORT_TTL + MARGIN
        assert b.presence[:2] == [("online", "dora"), ("online", "eve")]
        assert sorted(b.presence[2:]) == [("offline", "dora"), ("offline", "eve")]
        assert not await b.cluster.send(node, {"text": "anyone?"})
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_node_away_too_long_gets_its_names_back_or_hears_they_are_lost(make_node: MakeNode, redis_server: RedisServer) -> None:
    """A node whose lease ran out (frozen past its ttl) and was reaped: at its next
    heartbeat it claims its names again, and one taken meanwhile is reported lost."""
    a, b = await make_node("a", ttl=SHORT_TTL), await make_node("b", ttl=SHORT_TTL)
    assert await a.cluster.claim("alice", "alice", "person", True)
    assert await a.cluster.claim("bob", "bob", "guest", False)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await raw.zadd(f"{a.cluster.prefix}:nodes", {a.id: 0})  # a's lease ended long ago, as if it froze
    finally:
        await raw.aclose()
    assert await b.cluster.claim("bob", "bob", "guest", False)  # b's claim reaps a first
    await a.until(lambda: a.lost == ["bob"], "bob reported lost", timeout=SHORT_TTL + MARGIN + 1.0)
    assert not a.cluster.holds("bob") and a.cluster.holds("alice")
    await b.until(lambda: b.cluster.nodes_of("alice") == [a.id], "alice back on a")
    assert b.cluster.nodes_of("bob") == [b.id]
    assert [event for event in b.presence if event[1] == "alice"] == [("online", "alice"), ("offline", "alice"), ("online", "alice")]
    await a.until(lambda: a.cluster.available and a.cluster.nodes_of("bob") == [b.id], "a's view reloaded")


async def test_redis_going_away_and_back(own_redis: RedisServer, make_node: MakeNode) -> None:
    """Redis killed: every node says it is unavailable and calls fail at once; Redis back
    (empty): the nodes reconnect by themselves and put back their claims and rooms, and
    what was released meanwhile stays released."""
    a, b = await make_node("a", url=own_redis.url), await make_node("b", url=own_redis.url)
    assert await a.cluster.claim("alice", "alice", "person", True)
    assert await a.cluster.claim("bob", "bob", "guest", False)
    assert await b.cluster.claim("carol", "carol", "person", True)
    await a.cluster.join_room("r")
    await b.cluster.join_room("r")
    await b.until(lambda: len(b.cluster.online()) == 3, "three names at b")

    own_redis.kill()
    for node in (a, b):
        await eventually(_async(lambda n=node: n.cluster.available), lambda up: not up, f"{node.label} unavailable", timeout=5.0)
    started = time.monotonic()
    for call in (
        lambda: a.cluster.claim("dave", "dave", "guest", False),
        lambda: a.cluster.send(b.id, {"text": "hi"}),
        lambda: a.cluster.publish_room("r", {"text": "hi"}),
    ):
        with pytest.raises(ClusterUnavailable):
            await call()
    await b.cluster.release("carol")  # recorded; never raises
    await b.cluster.leave_room("r")
    await b.cluster.join_room("r")
    assert time.monotonic() - started < 0.5

    own_redis.start()
    for node in (a, b):
        await eventually(_async(lambda n=node: n.cluster.available), bool, f"{node.label} available again", timeout=10.0)
    for node in (a, b):
        await node.until(lambda n=node: n.cluster.online() == [("alice", "person"), ("bob", "guest")], "a's names back, carol gone")
        assert node.cluster.nodes_of("alice") == [a.id]
    assert not await b.cluster.claim("bob", "bob", "guest", False)
    assert await a.cluster.send(b.id, {"text": "direct"})
    assert await b.cluster.publish_room("r", {"text": "room"}) == 1
    await b.until(lambda: b.got({"text": "direct"}) == 1, "the direct message at b")
    await a.until(lambda: a.got({"text": "room"}, "r") == 1, "the room message at a")


async def test_a_hung_redis_costs_a_call_its_timeout_never_more(own_redis: RedisServer, make_node: MakeNode) -> None:
    """Redis stops answering (SIGSTOP): a call gives up after the op timeout, both nodes
    turn unavailable, and once Redis answers again they come back with the claims."""
    op_timeout = 0.5
    a = await make_node("a", ttl=1.5, url=own_redis.url, op_timeout=op_timeout)
    b = await make_node("b", ttl=1.5, url=own_redis.url, op_timeout=op_timeout)
    assert await a.cluster.claim("alice", "alice", "person", True)
    own_redis.pause()
    try:
        started = time.monotonic()
        with pytest.raises(ClusterUnavailable):
            await a.cluster.claim("bob", "bob", "guest", False)
        assert time.monotonic() - started < op_timeout + MARGIN
        for node in (a, b):
            await eventually(_async(lambda n=node: n.cluster.available), lambda up: not up, f"{node.label} unavailable", timeout=5.0)
        started = time.monotonic()
        with pytest.raises(ClusterUnavailable):
            await b.cluster.send(a.id, {"text": "hi"})
        assert time.monotonic() - started < 0.1  # known to be away: no waiting at all
    finally:
        own_redis.resume()
    for node in (a, b):
        await eventually(_async(lambda n=node: n.cluster.available), bool, f"{node.label} available again", timeout=10.0)
        await node.until(lambda n=node: n.cluster.nodes_of("alice") == [a.id], "alice on a")
    assert await b.cluster.send(a.id, {"text": "back"})
    await a.until(lambda: a.got({"text": "back"}) == 1, "the message at a")


async def test_start_fails_fast_when_redis_is_unreachable() -> None:
    """With nothing at the address, start() raises ClusterUnavailable at once and the
    link stays unavailable."""
    cluster = Cluster(f"redis://{HOST}:{free_port()}/0", "lonely", on_message=lambda *_: None, on_presence=lambda *_: None)
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable):
        await cluster.start()
    assert time.monotonic() - started < 1.0
    assert not cluster.available
    with pytest.raises(ClusterUnavailable):
        await cluster.claim("x", "x", "guest", False)


def _async(probe: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def wrapped() -> bool:
        return probe()

    return wrapped
