"""Several nodes, one network: this node's side of it (`chatnet.cluster` underneath).

    Router ──> Nodes ──> Cluster ──> Redis ──> the other nodes' Cluster ──> Nodes ──> Router
                 claims, who is online, a DM for a name held elsewhere, a room's line

The router asks `Nodes` to claim a name at login (network-wide: a guest name once
anywhere), where a name it doesn't hold is (`where`), and to forward what it can't
deliver here; the rooms publish each room line once (`publish_room`) and each node
fans it out to its own members. What arrives is handed back through `Here`, the
router's side. Forwarding is at most once: a forward nobody heard, or one Redis never
took, comes back through `Here.unsent` and is stored as mail, as offline mail always is.

Without CLUSTER_URL there is no Nodes: one node alone keeps everything in process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any, Final, Protocol

from chatnet.cluster import DIRECT, Cluster
from chatnet.errors import ClusterUnavailable
from chatnet.protocol import Delivery

logger = logging.getLogger("chatnet.nodes")

# Items for one place, at most this many per publish.
MAX_FORWARD_BATCH: Final = 500


class Here(Protocol):
    """What the other nodes' messages become on this one (the router's side)."""

    def deliver_here(self, delivery: Delivery) -> None: ...  # a DM for a name held here
    def user_here(self, key: str, payload: dict[str, Any]) -> None: ...  # for a name's sessions here: a notice, a close, a kick
    def echo_here(self, key: str, delivery: Delivery) -> None: ...  # what the name said from another node, for its sessions here
    def room_here(self, room_key: str, delivery: Delivery) -> None: ...  # a room's line, for its members here
    def told_here(self, room_key: str, skip: str, text: str, event: str, details: dict[str, Any]) -> None: ...  # a room's notice
    def presence(self, event: str, key: str, name: str, kind: str) -> None: ...  # a name came or went, network-wide
    def lost(self, key: str) -> None: ...  # a name held here was taken elsewhere while Redis was away
    def unsent(self, deliveries: list[Delivery]) -> None: ...  # forwards no node took: mail now


def node_id() -> str:
    """Unique per process start: host, pid and a few random hex digits."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Nodes:
    """This node among the others: claims, forwarding in order, rooms heard."""

    def __init__(
        self,
        url: str,
        ttl: float,
        prefix: str,
        here: Here,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
    ) -> None:
        self.here = here
        self.spawn = spawn
        self.cluster = Cluster(
            url, node_id(), ttl, on_message=self._heard, on_presence=here.presence, on_lost=here.lost, prefix=prefix
        )
        # What is to go out, by where (a node, or "#" + a room key), in the order it was
        # said: one publish per place per pass, each place's in order, the places at once.
        self._out: dict[str, _Outgoing] = {}
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def node(self) -> str:
        return self.cluster.node

    @property
    def available(self) -> bool:
        return self.cluster.available

    async def start(self) -> None:
        await self.cluster.start()  # ClusterUnavailable: no Redis, no node
        self._sender = self.spawn(self._send_all())

    async def stop(self) -> None:
        """What is queued goes first (briefly), then this node's names are let go."""
        self._stopping = True  # from here the leave below lets go of every name at once
        if self._releases:
            await asyncio.wait(self._releases, timeout=self.cluster.ttl)
        if self._out:
            self._wake.set()
            for _ in range(50):
                if not self._out:
                    break
                await asyncio.sleep(0.02)
        if self._sender is not None:
            self._sender.cancel()  # and gone before the connections close under it
            with suppress(asyncio.CancelledError):
                await self._sender
        await self.cluster.stop()

    # --- names -------------------------------------------------------------------------

    async def claim(self, key: str, name: str, kind: str, shared: bool) -> bool:
        return await self.cluster.claim(key, name, kind, shared)  # ClusterUnavailable: say so, admit nobody

    def release(self, key: str) -> None:
        if self._stopping:
            return  # stop() lets go of them all
        task = self.spawn(self.cluster.release(key))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def reclaim(self, key: str, name: str, kind: str) -> None:
        """A guest's name became an account's (!register): held as one from now."""
        await self.cluster.release(key)
        with suppress(ClusterUnavailable):
            await self.cluster.claim(key, name, kind, shared=True)

    def online(self) -> list[tuple[str, str]]:
        return self.cluster.online()

    def where(self, key: str) -> list[str]:
        """The other nodes holding the name."""
        return [node for node in self.cluster.nodes_of(key) if node != self.cluster.node]

    # --- out ---------------------------------------------------------------------------

    def forward(self, nodes: list[str], delivery: Delivery) -> None:
        """A DM for a name held on `nodes` (each gets it; one taker is enough)."""
        for node in nodes:
            self._queue(node, {"t": "dm", "d": [list(delivery)]}, [delivery] if node == nodes[0] else [])

    def echo(self, key: str, delivery: Delivery) -> None:
        """What an account said, for its sessions on the other nodes."""
        for node in self.where(key):
            self._queue(node, {"t": "echo", "to": key, "d": [list(delivery)]}, [])

    def tell_user(self, key: str, payload: dict[str, Any]) -> None:
        """Something for a name's sessions on the other nodes (`Here.user_here`)."""
        for node in self.where(key):
            self._queue(node, {"t": "user", "to": key, **payload}, [])

    def publish_room(self, room_key: str, delivery: Delivery) -> None:
        self._queue("#" + room_key, {"t": "room", "d": [list(delivery)]}, [])

    def tell_room(self, room_key: str, skip: str, text: str, event: str, details: dict[str, Any]) -> None:
        """A room's notice for its members on the other nodes (`skip`: the key it is about)."""
        self._queue("#" + room_key, {"t": "tell", "skip": skip, "text": text, "event": event, "details": details}, [])

    def hear_room(self, room_key: str) -> None:
        self.spawn(self.cluster.join_room(room_key))

    def leave_room(self, room_key: str) -> None:
        self.spawn(self.cluster.leave_room(room_key))

    def _queue(self, target: str, payload: dict[str, Any], owned: list[Delivery]) -> None:
        outgoing = self._out.get(target)
        if outgoing is None:
            outgoing = self._out[target] = _Outgoing()
        items = outgoing.items
        if items and items[-1]["t"] == payload["t"] and "d" in payload and items[-1].get("to") == payload.get("to"):
            items[-1]["d"].extend(payload["d"])  # what one pass said to one place: one item
        else:
            items.append(payload)
        outgoing.owned.extend(owned)
        self._wake.set()

    async def _send_all(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._out:
                out, self._out = self._out, {}
                await asyncio.gather(*(self._send(target, outgoing) for target, outgoing in out.items()))

    async def _send(self, target: str, outgoing: _Outgoing) -> None:
        items, owned = outgoing.items, outgoing.owned
        for start in range(0, len(items), MAX_FORWARD_BATCH):
            payload = {"t": "batch", "items": items[start : start + MAX_FORWARD_BATCH]}
            try:
                if target[:1] == "#":
                    await self.cluster.publish_room(target[1:], payload)
                    continue
                heard = await self.cluster.send(target, payload)
            except ClusterUnavailable as exc:
                logger.warning("could not reach %s through Redis: %s", target, exc)
                heard = False
            if not heard and owned:
                self.here.unsent(owned)  # nobody took them: mail, as for anyone offline
                owned = []

    # --- in ----------------------------------------------------------------------------

    def _heard(self, where: str, payload: dict[str, Any]) -> None:
        if payload.get("t") == "batch":
            for item in payload.get("items", []):
                if isinstance(item, dict):
                    self._heard_one(where, item)
        else:
            self._heard_one(where, payload)

    def _heard_one(self, where: str, payload: dict[str, Any]) -> None:
        kind = payload.get("t")
        if kind == "dm" and where == DIRECT:
            for item in payload.get("d", []):
                self.here.deliver_here(_delivery(item))
        elif kind == "echo" and where == DIRECT:
            for item in payload.get("d", []):
                self.here.echo_here(str(payload.get("to", "")), _delivery(item))
        elif kind == "user" and where == DIRECT:
            self.here.user_here(str(payload.get("to", "")), payload)
        elif kind == "room" and where != DIRECT:
            for item in payload.get("d", []):
                self.here.room_here(where, _delivery(item))
        elif kind == "tell" and where != DIRECT:
            details = payload.get("details")
            skip, text, event = str(payload.get("skip") or ""), str(payload.get("text", "")), str(payload.get("event", ""))
            self.here.told_here(where, skip, text, event, details if isinstance(details, dict) else {})
        else:
            logger.warning("a message of kind %r on %s not understood", kind, where or "this node's channel")


class _Outgoing:
    """What one pass says to one place: its items in order, and the DMs among them that
    become mail if nobody hears them."""

    __slots__ = ("items", "owned")

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.owned: list[Delivery] = []


def _delivery(item: list[Any]) -> Delivery:
    """A delivery as it went over the wire (a JSON list), back into its tuple."""
    msg_id, sender, destination, text, timestamp, kind, metadata, features = item
    return (msg_id, str(sender), str(destination), str(text), str(timestamp), str(kind), metadata, tuple(features or ()))
