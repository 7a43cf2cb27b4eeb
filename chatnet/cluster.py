"""The cluster link: this node's line to the other nodes of one network, through Redis.

Knows names, nodes and rooms by their keys, never sessions or the router. Three things
ride on it, none of them durable (mail stays in MongoDB; what Redis loses, the nodes
put back):

- **Claims.** A logged-in name is held per (name, node), with this node's count of
  sessions. `claim` is one Lua script, so two nodes can never both get a guest name.
  Every node renews its lease on a heartbeat (every ttl/3); a node that stops renewing
  (killed, frozen, cut off) is reaped by the others as soon as its lease runs out, and
  its names go offline everywhere within `ttl`.
- **Presence.** Every change of who holds what is published, numbered, on one presence
  channel; each node keeps its own view of who is online where (`online`, `nodes_of`)
  and tells `on_presence` when a name comes online network-wide (its first holder) or
  goes offline (its last holder gone).
- **Messages.** A node's own channel (`send`) and a channel per room (`publish_room`,
  heard by the nodes that `join_room`ed it): pub/sub, at most once. A `send` nobody
  heard returns False, and the caller stores the message as mail.

Faults: when Redis can't be reached, calls that need an answer (`claim`, `send`,
`publish_room`) raise `ClusterUnavailable` at once (every command is bounded by
`op_timeout`, nothing hangs), `available` is False, and a background task reconnects
with backoff. Once back it subscribes every channel again, puts this node's claims
back (a name someone else took meanwhile is reported to `on_lost`) and reloads the
view, telling `on_presence` what changed. `release`, `join_room` and `leave_room` never
raise: they record what this node wants, and a reconnect applies it.

Redis layout (all under one prefix, so networks share a Redis side by side):

    {p}:nodes              ZSET  node -> lease deadline (ms, Redis's clock)
    {p}:online             HASH  key -> {"name", "kind", "x"} (x: exclusive, a guest's)
    {p}:holders:{key}      HASH  node -> sessions of the name on that node
    {p}:holds:{node}       SET   keys the node holds
    {p}:seq                INT   number of the last presence event
    {p}:presence           channel: {"seq","op":"hold"|"drop","key","name","kind","node","edge"}
    {p}:node:{node}        channel: {"from": node, "payload": {...}}
    {p}:room:{room_key}    channel: {"from": node, "payload": {...}}

The scripts name their keys from the prefix (one standalone Redis, not Redis Cluster;
Redis 5 or later, whose scripts may read its clock). Connections: up to
COMMAND_CONNECTIONS for commands, one for the heartbeat, one subscriber.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatnet.errors import ClusterUnavailable
from chatnet.limits import CLUSTER_TTL
from chatnet.protocol import Kind, dumps

logger = logging.getLogger("chatnet.cluster")

T = TypeVar("T")

# The lease a heartbeat buys, as a share of the ttl. The heartbeat comes every ttl/3, so
# a node may be late by ttl * (0.8 - 1/3) (4.7 s of 10) before the others reap it, and
# the others reap it once the lease is out: within ttl after its last heartbeat.
LEASE_SHARE: Final = 0.8
# How long after a lease's end the others look (Redis's clock and ours tick apart).
REAP_SLACK: Final = 0.02
# Any one command to Redis: past this it counts as unreachable (a loaded Redis answers
# in well under a millisecond; this only bounds a dead or cut-off one).
OP_TIMEOUT: Final = 2.0
# Reconnecting: the first wait, doubled after each failure up to the last (with jitter,
# so the nodes of a network don't all come back in the same millisecond).
RECONNECT_FIRST: Final = 0.05
RECONNECT_MAX: Final = 2.0
# Connections for commands (claims, publishes); a caller past these waits its turn.
COMMAND_CONNECTIONS: Final = 8
# The reader lets the other tasks run after this many messages in a row.
READ_BURST: Final = 64
# `on_message`'s first argument for a message sent to this node (no room key is empty).
DIRECT: Final = ""

_DOWN = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)


# --- the scripts --------------------------------------------------------------------------
# Every script gets ARGV[1..3] = prefix, this node, lease (ms). Each presence event is
# numbered from {p}:seq, so a node can tell an event its snapshot already holds.

_PRELUDE = """
local P = ARGV[1]
local NODE = ARGV[2]
local LEASE = tonumber(ARGV[3])
local NODES = P .. ':nodes'
local ONLINE = P .. ':online'

local function holds_of(node) return P .. ':holds:' .. node end
local function holders_of(key) return P .. ':holders:' .. key end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function emit(op, key, node, edge, info)
  local seq = redis.call('INCR', P .. ':seq')
  redis.call('PUBLISH', P .. ':presence', cjson.encode({
    seq = seq, op = op, key = key, node = node, edge = edge, name = info.name, kind = info.kind}))
  return seq
end

-- Take a node's hold on a name away; the last holder gone takes the name offline.
local function drop(node, key)
  local holders = holders_of(key)
  if redis.call('HDEL', holders, node) == 0 then return 0 end
  redis.call('SREM', holds_of(node), key)
  local raw = redis.call('HGET', ONLINE, key)
  local info = raw and cjson.decode(raw) or {name = key, kind = ''}
  local last = redis.call('HLEN', holders) == 0
  if last then redis.call('HDEL', ONLINE, key) end
  return emit('drop', key, node, last, info)
end

-- Nodes whose lease ran out lose every hold.
local function reap(now)
  local dead = redis.call('ZRANGEBYSCORE', NODES, '-inf', now)
  for _, node in ipairs(dead) do
    for _, key in ipairs(redis.call('SMEMBERS', holds_of(node))) do drop(node, key) end
    redis.call('DEL', holds_of(node))
    redis.call('ZREM', NODES, node)
  end
end

-- This node holds a name: status 0 refused, 1 held (nothing new to tell), 2 held and
-- told (the event's seq second). `exact` (a re-claim) sets the count and keeps a hold
-- this node has; a claim adds a session and refuses a guest name held anywhere.
local function hold(key, name, kind, shared, count, exact)
  local holders = holders_of(key)
  local raw = redis.call('HGET', ONLINE, key)
  local info, first
  if raw then
    info = cjson.decode(raw)
    local mine = redis.call('HEXISTS', holders, NODE) == 1
    if exact and mine then
      redis.call('HSET', holders, NODE, count)
      return 1, 0
    end
    if info.x or not shared then return 0, 0 end
    if mine then
      redis.call('HINCRBY', holders, NODE, count)
      return 1, 0
    end
    first = false
  else
    info = {name = name, kind = kind, x = (not shared) or kind == GUEST_KIND}
    redis.call('HSET', ONLINE, key, cjson.encode(info))
    first = true
  end
  redis.call('HSET', holders, NODE, count)
  redis.call('SADD', holds_of(NODE), key)
  return 2, emit('hold', key, NODE, first, info)
end
""".replace("GUEST_KIND", repr(str(Kind.GUEST)))

# ARGV[4..7] = key, name, kind, shared ('1'/'0') -> {status, seq}; status -1: this node
# has no lease (it was reaped), and must put all its claims back first.
_CLAIM = _PRELUDE + """
if not redis.call('ZSCORE', NODES, NODE) then return {-1, 0} end
local now = now_ms()
redis.call('ZADD', NODES, now + LEASE, NODE)
reap(now)
local status, seq = hold(ARGV[4], ARGV[5], ARGV[6], ARGV[7] == '1', 1, false)
return {status, seq}
"""

# ARGV[4] = key -> the event's seq, or 0 when this node did not hold it.
_RELEASE = _PRELUDE + """
return drop(NODE, ARGV[4])
"""

# -> {status, Redis's time (ms), the earliest lease deadline of another node or 0};
# status -1: this node has no lease (it was reaped).
_BEAT = _PRELUDE + """
if not redis.call('ZSCORE', NODES, NODE) then return {-1, 0, 0} end
local now = now_ms()
redis.call('ZADD', NODES, now + LEASE, NODE)
reap(now)
local first = redis.call('ZRANGE', NODES, 0, 1, 'WITHSCORES')
for i = 1, #first, 2 do
  if first[i] ~= NODE then return {0, now, tonumber(first[i + 1])} end
end
return {0, now, 0}
"""

# ARGV[4..] = (key, name, kind, shared, count) for every name this node holds -> the
# keys it can't have back. Registers the node, drops what it no longer holds.
_SYNC = _PRELUDE + """
local now = now_ms()
redis.call('ZADD', NODES, now + LEASE, NODE)
reap(now)
local wanted = {}
for i = 4, #ARGV, 5 do wanted[ARGV[i]] = true end
for _, key in ipairs(redis.call('SMEMBERS', holds_of(NODE))) do
  if not wanted[key] then drop(NODE, key) end
end
local lost = {}
for i = 4, #ARGV, 5 do
  if hold(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3] == '1', tonumber(ARGV[i + 4]), true) == 0 then
    table.insert(lost, ARGV[i])
  end
end
return lost
"""

# Everything this node holds goes, and the node with it.
_LEAVE = _PRELUDE + """
for _, key in ipairs(redis.call('SMEMBERS', holds_of(NODE))) do drop(NODE, key) end
redis.call('DEL', holds_of(NODE))
redis.call('ZREM', NODES, NODE)
return 1
"""

# -> {seq, key, info, {node, ...}, key, info, {...}, ...}: who is online, as of event seq.
_SNAPSHOT = _PRELUDE + """
local out = {tonumber(redis.call('GET', P .. ':seq') or '0')}
local all = redis.call('HGETALL', ONLINE)
for i = 1, #all, 2 do
  table.insert(out, all[i])
  table.insert(out, all[i + 1])
  table.insert(out, redis.call('HKEYS', holders_of(all[i])))
end
return out
"""


@dataclass(slots=True)
class _Claim:
    """A name this node holds: what to claim again after a reconnect."""

    name: str
    kind: str
    shared: bool
    count: int = 1


@dataclass(slots=True)
class _Entry:
    """A name online somewhere, in this node's view."""

    name: str
    kind: str
    nodes: set[str] = field(default_factory=set)


class Cluster:
    """This node's link to the other nodes of its network, through one Redis.

    `node` is this process's id, unique per start (say f"{hostname}-{pid}-{random}").
    `on_message(target, payload)`: a payload sent to this node (`target` is DIRECT) or
    to a room it joined (`target` is the room's key). `on_presence(event, key, name,
    kind)`: "online" when a name gets its first holder anywhere, "offline" when its
    last is gone (released, stopped, or its node reaped) — this node's own names
    included. `on_lost(key)`: a name this node held was taken elsewhere while it was
    away; close its sessions here. All three are plain calls from the reader task: they
    must not block, and one that raises is logged and skipped.

    `prefix` keeps one network's keys and channels apart from another's on the same
    Redis. Pub/sub ignores the database number, so networks sharing a Redis need
    different prefixes even on different databases.
    """

    def __init__(
        self,
        url: str,
        node: str,
        ttl: float = CLUSTER_TTL,
        *,
        on_message: Callable[[str, dict[str, Any]], None],
        on_presence: Callable[[str, str, str, str], None],
        on_lost: Callable[[str], None] | None = None,
        prefix: str = "chatnet",
        op_timeout: float = OP_TIMEOUT,
    ) -> None:
        if not node or any(ch.isspace() for ch in node):
            raise ValueError(f"a node id is one word, not {node!r}")
        if ttl <= 0 or op_timeout <= 0:
            raise ValueError("ttl and op_timeout must be positive")
        self.node = node
        self.ttl = ttl
        self.prefix = prefix
        self._on_message = on_message
        self._on_presence = on_presence
        self._on_lost = on_lost
        self._op_timeout = op_timeout
        self._beat_every = ttl / 3
        self._lease_ms = int(ttl * LEASE_SHARE * 1000)
        self._presence_channel = f"{prefix}:presence"
        self._node_channel = self._channel_of_node(node)
        self._room_prefix = f"{prefix}:room:"

        # What this node wants: kept through outages, put back by every reconnect.
        self._claims: dict[str, _Claim] = {}
        self._rooms: set[str] = set()
        # What this node knows of the network, as of presence event `_seq`.
        self._view: dict[str, _Entry] = {}
        self._seq = 0
        self._seq_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Names a reload did not find (Redis came back empty, their nodes not yet):
        # said offline only if still gone a ttl later, by when a live node is back.
        self._absent: dict[str, asyncio.TimerHandle] = {}

        self._up = False
        self._stopped = False
        self._trouble = asyncio.Event()
        self._claim_lock = asyncio.Lock()
        self._room_lock = asyncio.Lock()
        self._pubsub: PubSub | None = None
        self._subscribed: set[str] = set()
        self._confirms: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._ping_sent: float | None = None
        self._reader: asyncio.Task[None] | None = None
        self._beater: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None

        # Commands fail over to a fresh connection once (one left stale by a Redis
        # restart), never more: a Redis that is down must say so at once.
        self._redis = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=COMMAND_CONNECTIONS,
                timeout=op_timeout,
                decode_responses=True,
                socket_connect_timeout=op_timeout,
                socket_timeout=op_timeout,
                retry=Retry(NoBackoff(), 1),
            )
        )
        # The heartbeat's own connection: a burst of publishes queued for the command
        # connections must not make this node late for its lease.
        self._beat_redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=op_timeout, socket_timeout=op_timeout, retry=Retry(NoBackoff(), 1)
        )
        # The subscriber's one connection; it never retries on its own: a reconnect
        # here is a whole new subscription, with the view reloaded. It reads bytes, so
        # that a publish that is no UTF-8 is one malformed message, not a broken reader.
        # No socket timeout: it waits for messages as long as none come (older redis-py
        # applied socket_timeout to a blocking get_message too); the heartbeat's ping
        # finds a dead one, and what must not hang runs under asyncio.timeout.
        self._subscriber = aioredis.Redis.from_url(url, socket_connect_timeout=op_timeout, socket_timeout=None, retry=Retry(NoBackoff(), 0))
        self._claim_script = self._redis.register_script(_CLAIM)
        self._release_script = self._redis.register_script(_RELEASE)
        self._beat_script = self._beat_redis.register_script(_BEAT)
        self._sync_script = self._redis.register_script(_SYNC)
        self._leave_script = self._redis.register_script(_LEAVE)
        self._snapshot_script = self._redis.register_script(_SNAPSHOT)

    # --- life ---------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Redis reachable right now (as far as this node can tell)."""
        return self._up

    async def start(self) -> None:
        """Connect, subscribe, register this node, load who is online, start the
        heartbeat. Raises ClusterUnavailable when Redis can't be reached."""
        try:
            await self._connect(announce=False)
        except _DOWN as exc:
            await self._teardown()
            await self._close()
            raise ClusterUnavailable(f"Redis at {self._where()} is unreachable: {_describe(exc)}") from None
        logger.info("cluster: node %s joined through Redis at %s (%d name(s) online)", self.node, self._where(), len(self._view))
        self._supervisor = asyncio.create_task(self._supervise(), name=f"cluster-{self.node}")

    async def stop(self) -> None:
        """Release every claim of this node (the others see its names offline at
        once), stop the tasks, close. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self._halt()
        try:
            async with asyncio.timeout(self._op_timeout):
                await self._leave_script(args=self._common())
        except _DOWN as exc:
            logger.info("cluster: could not release this node's names (%s); they expire within %g s", _describe(exc), self.ttl)
        self._claims.clear()
        await self._close()

    async def abort(self) -> None:
        """Drop the connections at once and release nothing: what a killed node leaves
        behind (its names expire within ttl)."""
        if self._stopped:
            return
        self._stopped = True
        await self._halt()
        await self._close()

    # --- names --------------------------------------------------------------------------

    async def claim(self, key: str, name: str, kind: str, shared: bool) -> bool:
        """Whether this node may hold the name now: nobody holds it, or `shared` (an
        account's or a bot's) and its holders are no guest. A guest name held anywhere,
        this node included, is refused. One more session of the name on this node.
        When True, `online()` and `nodes_of()` already show it. Raises ClusterUnavailable."""
        async with self._claim_lock:
            status, seq = await self._command("claim", lambda: self._claim_script(args=[*self._common(), key, name, kind, "1" if shared else "0"]))
            if status < 0:
                self._fault("this node's lease ran out before its heartbeat renewed it")
                raise ClusterUnavailable("this node's claims expired; they are being put back")
            if status == 0:
                return False
            held = self._claims.get(key)
            if held is None:
                self._claims[key] = _Claim(name, kind, shared)
            else:
                held.count += 1
        await self._caught_up(int(seq))
        return True

    async def release(self, key: str) -> None:
        """This node's last session of the name is gone (or a claim's login did not go
        through): drop its hold. Never raises; with Redis away, the reconnect drops it."""
        seq = 0
        async with self._claim_lock:
            if self._claims.pop(key, None) is None or not self._up:
                return
            with suppress(ClusterUnavailable):
                seq = int(await self._command("release", lambda: self._release_script(args=[*self._common(), key])))
        await self._caught_up(seq)

    def online(self) -> list[tuple[str, str]]:
        """Every name online network-wide with its kind, sorted by key (this node's view)."""
        return [(entry.name, entry.kind) for _, entry in sorted(self._view.items())]

    def nodes_of(self, key: str) -> list[str]:
        """The nodes that hold the name (this node's view), [] when it is offline."""
        entry = self._view.get(key)
        return sorted(entry.nodes) if entry else []

    def holds(self, key: str) -> bool:
        """Whether this node holds the name (claimed, not released, not lost)."""
        return key in self._claims

    # --- messages -----------------------------------------------------------------------

    async def send(self, node: str, payload: dict[str, Any]) -> bool:
        """Publish to one node's channel; False when no node heard it (the caller then
        stores the message as mail). Raises ClusterUnavailable."""
        data = self._envelope(payload)
        receivers = await self._command("send", lambda: self._redis.publish(self._channel_of_node(node), data))
        return int(receivers) > 0

    async def publish_room(self, room_key: str, payload: dict[str, Any]) -> int:
        """One publish per room message: heard by every other node that joined the room
        (never by this one: it delivered to its own members already). Returns how many
        other nodes heard it. Raises ClusterUnavailable."""
        channel = self._room_prefix + room_key
        data = self._envelope(payload)
        receivers = int(await self._command("publish", lambda: self._redis.publish(channel, data)))
        return max(0, receivers - (channel in self._subscribed))

    async def join_room(self, room_key: str) -> None:
        """Hear the room's channel (its first local member appeared). Once this returns
        with Redis up, every later publish to the room reaches this node. Never raises."""
        self._rooms.add(room_key)
        await self._reconcile_rooms()

    async def leave_room(self, room_key: str) -> None:
        """Stop hearing the room's channel (its last local member left). Never raises."""
        self._rooms.discard(room_key)
        await self._reconcile_rooms()

    # --- inside -------------------------------------------------------------------------

    def _where(self) -> str:
        kwargs = self._subscriber.connection_pool.connection_kwargs
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    def _common(self) -> list[str | int]:
        return [self.prefix, self.node, self._lease_ms]

    def _channel_of_node(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"

    def _envelope(self, payload: dict[str, Any]) -> str:
        return dumps({"from": self.node, "payload": payload})  # once per message across nodes

    async def _command(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """One bounded command; Redis away: ClusterUnavailable, and reconnecting."""
        if not self._up:
            raise ClusterUnavailable(f"Redis at {self._where()} is unreachable" if not self._stopped else "the cluster link is stopped")
        try:
            async with asyncio.timeout(self._op_timeout):
                return await call()
        except _DOWN as exc:
            self._fault(f"{what}: {_describe(exc)}")
            raise ClusterUnavailable(f"Redis at {self._where()} is unreachable: {_describe(exc)}") from None

    def _fault(self, reason: str) -> None:
        """Redis is away (or this node's state there is not to be trusted): reconnect."""
        if self._up:
            logger.warning("cluster: the link to Redis at %s broke (%s); reconnecting", self._where(), reason)
        self._up = False
        self._trouble.set()

    async def _connect(self, announce: bool) -> None:
        """Subscribe, put this node's claims back, load the view; then read and beat."""
        self._trouble.clear()
        pubsub = self._pubsub = self._subscriber.pubsub()
        channels = {self._presence_channel, self._node_channel, *(self._room_prefix + room for room in self._rooms)}
        early: list[dict[str, Any]] = []
        async with asyncio.timeout(self._op_timeout):
            await pubsub.subscribe(*channels)
            pending = set(channels)
            while pending:  # every subscription confirmed: from now on nothing is missed
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    pending.discard(_text(message["channel"]))
                else:
                    early.append(message)
        # Claims and releases wait until the link is up: one released meanwhile would
        # stay held in Redis, one claimed would be left out of what is put back.
        async with self._claim_lock:
            async with asyncio.timeout(self._op_timeout):
                args = self._common()
                for key, claim in self._claims.items():
                    args += [key, claim.name, claim.kind, "1" if claim.shared else "0", claim.count]
                lost = [str(key) for key in await self._sync_script(args=args)]
                snapshot = await self._snapshot_script(args=self._common())
            for key in lost:
                self._claims.pop(key, None)
            self._subscribed = set(channels)
            self._load(snapshot, announce)
            self._ping_sent = None
            self._up = True
        self._reader = asyncio.create_task(self._read(pubsub, early))
        self._beater = asyncio.create_task(self._beat())
        for key in lost:
            logger.warning("cluster: name %r was taken on another node while this one was away", key)
            if self._on_lost is not None:
                self._call_back("on_lost", self._on_lost, key)
        await self._reconcile_rooms()  # rooms joined or left while connecting

    async def _supervise(self) -> None:
        """Keep connected: after a fault, reconnect with backoff, for as long as we run."""
        loop = asyncio.get_running_loop()
        delay = RECONNECT_FIRST
        since = loop.time()
        while True:
            await self._trouble.wait()
            await self._teardown()
            if loop.time() - since > RECONNECT_MAX:
                delay = RECONNECT_FIRST
            while True:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, RECONNECT_MAX)
                try:
                    await self._connect(announce=True)
                except _DOWN as exc:
                    logger.debug("cluster: Redis at %s still unreachable: %s", self._where(), _describe(exc))
                except Exception:  # Redis refusing what it should not (a bug, a misconfigured server): keep trying
                    logger.exception("cluster: reconnecting to Redis at %s failed", self._where())
                else:
                    break
                await self._teardown()
            since = loop.time()
            logger.info("cluster: Redis at %s is back; %d name(s) and %d room(s) of this node put back", self._where(), len(self._claims), len(self._rooms))

    async def _read(self, pubsub: PubSub, early: list[dict[str, Any]]) -> None:
        try:
            for message in early:
                self._handle(message)
            read = 0
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None:
                    self._handle(message)
                read += 1
                if read % READ_BURST == 0:  # buffered messages are read without waiting: let the others run
                    await asyncio.sleep(0)
        except _DOWN as exc:
            self._fault(f"subscription: {_describe(exc)}")
        except Exception:
            logger.exception("cluster: the subscription reader failed")
            self._fault("reader failed")

    async def _beat(self) -> None:
        """Renew this node's lease and reap the others' run-out ones: every ttl/3, and
        just after another node's lease ends. Checks the subscription answers pings."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                status, now_ms, earliest = await self._command("heartbeat", lambda: self._beat_script(args=self._common()))
                if status < 0:
                    self._fault("this node's lease ran out before its heartbeat renewed it")
                    return
                pubsub = self._pubsub
                if self._ping_sent is not None and loop.time() - self._ping_sent > self._op_timeout:
                    self._fault("the subscription does not answer")
                    return
                if self._ping_sent is None and pubsub is not None:
                    self._ping_sent = loop.time()
                    async with asyncio.timeout(self._op_timeout):
                        await pubsub.ping()
                delay = self._beat_every
                if earliest:
                    delay = min(delay, max((int(earliest) - int(now_ms)) / 1000 + REAP_SLACK, REAP_SLACK))
                await asyncio.sleep(delay)
        except ClusterUnavailable:
            return
        except _DOWN as exc:
            self._fault(f"subscription ping: {_describe(exc)}")
        except Exception:
            logger.exception("cluster: the heartbeat failed")
            self._fault("heartbeat failed")

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            self._dispatch(_text(message["channel"]), message["data"])
        elif kind in ("subscribe", "unsubscribe"):
            confirm = self._confirms.pop((kind, _text(message["channel"])), None)
            if confirm is not None and not confirm.done():
                confirm.set_result(None)
        elif kind == "pong":
            self._ping_sent = None

    def _dispatch(self, channel: str, data: bytes) -> None:
        if channel == self._presence_channel:
            self._presence(data)
            return
        try:
            envelope = json.loads(data)  # UTF-8 bytes, or a ValueError
            origin, payload = envelope["from"], envelope["payload"]
            if not isinstance(payload, dict):
                raise TypeError("payload is no object")
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("cluster: malformed message on %s (%s): %.200r", channel, exc, data)
            return
        if channel == self._node_channel:
            target = DIRECT
        elif channel.startswith(self._room_prefix):
            if origin == self.node:  # our own room message: delivered here already
                return
            target = channel[len(self._room_prefix) :]
        else:
            return
        self._call_back("on_message", self._on_message, target, payload)

    def _presence(self, data: bytes) -> None:
        event = json.loads(data)
        seq = int(event["seq"])
        if seq <= self._seq:  # the snapshot already holds it
            return
        if seq != self._seq + 1:
            logger.warning("cluster: presence events %d..%d missed; reloading", self._seq + 1, seq - 1)
            self._fault("presence events missed")
            return
        self._seq = seq
        key, node, name, kind = str(event["key"]), str(event["node"]), str(event["name"]), str(event["kind"])
        entry = self._view.get(key)
        if event["op"] == "hold":
            if entry is None:
                entry = self._view[key] = _Entry(name, kind)
            entry.nodes.add(node)
            if event["edge"] and not self._back(key):
                self._call_back("on_presence", self._on_presence, "online", key, name, kind)
        else:
            if entry is not None:
                entry.nodes.discard(node)
            if event["edge"]:
                self._view.pop(key, None)
                self._call_back("on_presence", self._on_presence, "offline", key, name, kind)
        self._wake(seq)

    def _load(self, snapshot: list[Any], announce: bool) -> None:
        """Take the view from a snapshot; `announce`: tell on_presence what changed."""
        view: dict[str, _Entry] = {}
        for i in range(1, len(snapshot), 3):
            info = json.loads(snapshot[i + 1])
            view[str(snapshot[i])] = _Entry(str(info["name"]), str(info["kind"]), {str(node) for node in snapshot[i + 2]})
        old, self._view, self._seq = self._view, view, int(snapshot[0])
        if announce:
            loop = asyncio.get_running_loop()
            for key in sorted(old.keys() - view.keys()):
                if key not in self._absent:  # its node may not have put it back yet
                    self._absent[key] = loop.call_later(self.ttl, self._gone_for_good, key, old[key])
            for key in sorted(view.keys() - old.keys()):
                if not self._back(key):
                    self._call_back("on_presence", self._on_presence, "online", key, view[key].name, view[key].kind)
        self._wake(None)

    def _back(self, key: str) -> bool:
        """A name missing from a reload is held again: it never went (nothing to say)."""
        timer = self._absent.pop(key, None)
        if timer is None:
            return False
        timer.cancel()
        return True

    def _gone_for_good(self, key: str, entry: _Entry) -> None:
        self._absent.pop(key, None)
        if key not in self._view:
            self._call_back("on_presence", self._on_presence, "offline", key, entry.name, entry.kind)

    def _wake(self, seq: int | None) -> None:
        """Wake who waits for event `seq` (None: everyone, the view was reloaded)."""
        keep = []
        for wanted, future in self._seq_waiters:
            if seq is None or wanted <= seq:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((wanted, future))
        self._seq_waiters = keep

    async def _caught_up(self, seq: int) -> None:
        """Wait (bounded) until the view holds presence event `seq`."""
        if seq <= self._seq or not self._up:
            return
        future = asyncio.get_running_loop().create_future()
        self._seq_waiters.append((seq, future))
        try:
            async with asyncio.timeout(self._op_timeout):
                await future
        except TimeoutError:
            logger.warning("cluster: presence event %d not heard within %.1f s", seq, self._op_timeout)
        finally:
            self._seq_waiters = [(s, f) for s, f in self._seq_waiters if f is not future]

    async def _reconcile_rooms(self) -> None:
        """Subscribe the rooms wanted and not heard, unsubscribe the others; wait for
        Redis to confirm (bounded)."""
        async with self._room_lock:
            pubsub = self._pubsub
            if not self._up or pubsub is None:
                return
            fixed = {self._presence_channel, self._node_channel}
            wanted = {self._room_prefix + room for room in self._rooms} | fixed
            add, drop = wanted - self._subscribed, self._subscribed - wanted
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self._op_timeout):
                    for command, channels, kind in ((pubsub.subscribe, add, "subscribe"), (pubsub.unsubscribe, drop, "unsubscribe")):
                        if not channels:
                            continue
                        confirms = [self._confirms.setdefault((kind, channel), loop.create_future()) for channel in channels]
                        await command(*channels)
                        self._subscribed = self._subscribed | channels if kind == "subscribe" else self._subscribed - channels
                        await asyncio.gather(*confirms)
            except _DOWN as exc:
                self._fault(f"subscribe: {_describe(exc)}")
            except asyncio.CancelledError:
                if self._up:  # our caller was cancelled, not the subscription
                    raise
                # torn down meanwhile: the reconnect subscribes what is wanted

    async def _halt(self) -> None:
        """Stop reconnecting, reading and beating."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._teardown()

    async def _teardown(self) -> None:
        """Forget the connections of the last attempt (they failed, or we stop)."""
        self._up = False
        if self._stopped:
            for timer in self._absent.values():
                timer.cancel()
            self._absent.clear()
        for task in (self._reader, self._beater):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        self._reader = self._beater = None
        for future in self._confirms.values():
            future.cancel()
        self._confirms.clear()
        self._subscribed = set()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with suppress(*_DOWN):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # unannotated before redis-py 8.2
        with suppress(*_DOWN):
            await self._redis.connection_pool.disconnect()
        with suppress(*_DOWN):
            await self._beat_redis.connection_pool.disconnect()

    async def _close(self) -> None:
        self._up = False
        self._view.clear()
        self._wake(None)
        with suppress(*_DOWN):
            await self._redis.aclose()
        with suppress(*_DOWN):
            await self._beat_redis.aclose()
        with suppress(*_DOWN):
            await self._subscriber.aclose()

    def _call_back(self, what: str, callback: Callable[..., None], *args: Any) -> None:
        """The boundary of the callbacks: a failing one is logged, the link goes on."""
        try:
            callback(*args)
        except Exception:
            logger.exception("cluster: %s failed for %r", what, args)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
