"""The storage layer: the only module that talks to MongoDB (through motor).

Collections (in `Settings.mongo_db`):

    messages       every stored message: offline mail (status "pending") and the
                   history archive (status "delivered", with `delivered_at`).
                   `_id` is the message id, so a retried write never duplicates.
    subscriptions  one document per (service, user).
    state          one JSON value per (owner, key), for bots.

Statuses are strings and delivery is a timestamp, never a boolean flag: the embedded
store (nx-27017) reads a boolean written with `$set` back as 1.

The embedded store may not enforce the TTL index on `expires_at`, so expired mail is
also deleted here before anything is read, and by `sweep_expired`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError

from chatnet.protocol import Message, format_datetime, parse_timestamp, utcnow

logger = logging.getLogger("chatnet.store")

PENDING: Final = "pending"
DELIVERED: Final = "delivered"
DUPLICATE_KEY: Final = 11000

# Short, so a route answers 503 quickly while the database is away; the heartbeat
# notices its return within a second.
SERVER_SELECTION_MS: Final = 2000
HEARTBEAT_MS: Final = 1000

# What a reader of mail or history needs; status, pair and expiry stay in the store.
MESSAGE_FIELDS: Final = {"sender": 1, "destination": 1, "message": 1, "timestamp": 1, "type": 1, "metadata": 1}

MessageLike = Message | Mapping[str, Any]


def connect(url: str, **options: Any) -> AsyncIOMotorClient:
    """A motor client that fails fast while the database is unreachable."""
    return AsyncIOMotorClient(
        url,
        tz_aware=True,
        serverSelectionTimeoutMS=SERVER_SELECTION_MS,
        connectTimeoutMS=SERVER_SELECTION_MS,
        heartbeatFrequencyMS=HEARTBEAT_MS,
        **options,
    )


def pair_key(a: str, b: str) -> str:
    """The same key for both directions of a conversation ('|' is not a name character)."""
    return f"{a}|{b}" if a <= b else f"{b}|{a}"


def to_document(message: MessageLike, status: str, now: datetime, expires_at: datetime | None = None) -> dict[str, Any]:
    """A Message (or a dict in its JSON shape) as a stored document."""
    data = message.model_dump() if isinstance(message, Message) else message
    sender, destination = data["sender"], data["destination"]
    doc = {
        "_id": data["id"],
        "sender": sender,
        "destination": destination,
        "message": data.get("message", ""),
        "timestamp": parse_timestamp(data["timestamp"]),
        "type": str(data.get("type", "chat")),
        "metadata": data.get("metadata") or {},
        "status": status,
        "pair": pair_key(sender, destination),
    }
    if status == DELIVERED:
        doc["delivered_at"] = now
    if expires_at is not None:
        doc["expires_at"] = expires_at
    return doc


def to_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored document as the Message JSON shape (plain dict: no model on the hot path)."""
    return {
        "id": doc["_id"],
        "sender": doc.get("sender"),
        "destination": doc.get("destination"),
        "message": doc.get("message", ""),
        "timestamp": format_datetime(doc["timestamp"]),
        "type": doc.get("type", "chat"),
        "metadata": doc.get("metadata") or {},
    }


# Ties within a millisecond fall back to the id, which the chat server makes in
# sending order, so a conversation reads back in the order it was written.
OLDEST_FIRST = [("timestamp", ASCENDING), ("_id", ASCENDING)]
NEWEST_FIRST = [("timestamp", DESCENDING), ("_id", DESCENDING)]

class Store:
    """Offline mail, history, subscriptions and bot state over one MongoDB database."""

    def __init__(self, client: AsyncIOMotorClient, db_name: str) -> None:
        self.client = client
        self.db: AsyncIOMotorDatabase = client[db_name]
        self.messages: AsyncIOMotorCollection = self.db["messages"]
        self.subscriptions: AsyncIOMotorCollection = self.db["subscriptions"]
        self.state: AsyncIOMotorCollection = self.db["state"]
        self.indexes_ready = False

    @classmethod
    def open(cls, url: str, db_name: str) -> Store:
        return cls(connect(url), db_name)

    def close(self) -> None:
        self.client.close()

    async def ensure_indexes(self) -> None:
        """One index per query; creating an existing index is a no-op."""
        if self.indexes_ready:
            return
        m = self.messages
        await m.create_index([("destination", ASCENDING), ("status", ASCENDING), ("timestamp", ASCENDING)], name="pending")
        await m.create_index([("pair", ASCENDING), ("timestamp", DESCENDING)], name="history")
        await m.create_index([("sender", ASCENDING), ("status", ASCENDING)], name="by_sender")
        await m.create_index(
            [("destination", ASCENDING), ("sender", ASCENDING), ("type", ASCENDING), ("timestamp", DESCENDING)],
            name="keep_latest",
        )
        # Real MongoDB removes expired mail by itself; reads filter it out everywhere.
        await m.create_index("expires_at", name="ttl", expireAfterSeconds=0)
        await self.subscriptions.create_index([("service", ASCENDING), ("user", ASCENDING)], name="service_user", unique=True)
        await self.state.create_index([("owner", ASCENDING), ("key", ASCENDING)], name="owner_key", unique=True)
        self.indexes_ready = True

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    # --- writes of messages ------------------------------------------------------------

    async def _insert(self, docs: list[dict[str, Any]]) -> None:
        """Insert, ignoring only ids that are already stored (a retried request)."""
        if not docs:
            return
        try:
            await self.messages.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
            if others or exc.details.get("writeConcernErrors"):
                raise

    async def store_mail(
        self, messages: Iterable[MessageLike], ttl_seconds: int | None = None, keep_latest: int | None = None
    ) -> list[str]:
        """Store offline mail as pending; returns the ids (stored now or before)."""
        now = utcnow()
        expires_at = now + timedelta(seconds=ttl_seconds) if ttl_seconds else None
        docs = [to_document(m, PENDING, now, expires_at) for m in messages]
        await self._insert(docs)
        if keep_latest is not None:
            groups = {(d["destination"], d["sender"], d["type"]) for d in docs}
            for destination, sender, kind in groups:
                await self._keep_latest(destination, sender, kind, keep_latest)
        return [d["_id"] for d in docs]

    async def _keep_latest(self, destination: str, sender: str, kind: str, keep: int) -> None:
        query = {"destination": destination, "sender": sender, "type": kind, "status": PENDING}
        cursor = self.messages.find(query, {"_id": 1}).sort(NEWEST_FIRST).skip(keep)
        old = [doc["_id"] for doc in await cursor.to_list(None)]
        if old:
            await self.messages.delete_many({"_id": {"$in": old}, "status": PENDING})

    async def archive(self, messages: Iterable[MessageLike]) -> int:
        """Store delivered live chat for the history view; returns how many were given."""
        now = utcnow()
        docs = [to_document(m, DELIVERED, now) for m in messages]
        await self._insert(docs)
        return len(docs)

    # --- offline mail ---------------------------------------------------------------------

    async def _drop_expired(self, query: dict[str, Any]) -> None:
        await self.messages.delete_many({**query, "status": PENDING, "expires_at": {"$lte": utcnow()}})

    async def pending(self, user: str, limit: int = 100) -> list[dict[str, Any]]:
        """The user's pending mail, oldest first, as Message-shaped dicts."""
        await self._drop_expired({"destination": user})
        cursor = self.messages.find({"destination": user, "status": PENDING}, MESSAGE_FIELDS)
        docs = await cursor.sort(OLDEST_FIRST).limit(limit).to_list(None)
        return [to_json(doc) for doc in docs]

    async def _count(self, query: dict[str, Any]) -> int:
        # An aggregate $count: count_documents is 50x slower on the embedded store.
        result = await self.messages.aggregate([{"$match": query}, {"$count": "n"}]).to_list(None)
        return result[0]["n"] if result else 0

    async def pending_count(self, user: str | None = None) -> int:
        query: dict[str, Any] = {"status": PENDING}
        if user is not None:
            query["destination"] = user
        return await self._count(query)

    async def ack(self, user: str, ids: list[str]) -> int:
        """Mark the user's pending mail with these ids delivered; returns how many."""
        result = await self.messages.update_many(
            {"_id": {"$in": ids}, "destination": user, "status": PENDING},
            {"$set": {"status": DELIVERED, "delivered_at": utcnow()}},
        )
        return result.modified_count

    # --- history ---------------------------------------------------------------------------

    async def history(
        self, user: str, peer: str, limit: int = 50, before: datetime | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Messages between two users, newest first, and the `before` of the next page."""
        pair = pair_key(user, peer)
        await self._drop_expired({"pair": pair})
        query: dict[str, Any] = {"pair": pair}
        if before is not None:
            query["timestamp"] = {"$lt": before}
        cursor = self.messages.find(query, MESSAGE_FIELDS).sort(NEWEST_FIRST).limit(limit)
        docs = await cursor.to_list(None)
        next_before = format_datetime(docs[-1]["timestamp"]) if len(docs) == limit else None
        return [to_json(doc) for doc in docs], next_before

    async def clear_history(self, user: str) -> int:
        """Delete the delivered messages the user sent or received; pending mail stays."""
        sent = await self.messages.delete_many({"sender": user, "status": DELIVERED})
        received = await self.messages.delete_many({"destination": user, "status": DELIVERED})
        return sent.deleted_count + received.deleted_count

    async def sweep_expired(self) -> int:
        """Delete all expired mail (the TTL index does this on a real MongoDB)."""
        result = await self.messages.delete_many({"status": PENDING, "expires_at": {"$lte": utcnow()}})
        return result.deleted_count

    async def counts(self) -> dict[str, int]:
        return {
            "pending": await self.pending_count(),
            "messages": await self._count({}),
            "subscriptions": await self.subscriptions.estimated_document_count(),
        }

    # --- subscriptions ---------------------------------------------------------------------

    async def subscribers(self, service: str) -> list[str]:
        docs = await self.subscriptions.find({"service": service}, {"user": 1}).to_list(None)
        return sorted(doc["user"] for doc in docs)

    async def subscribe(self, service: str, user: str) -> bool:
        """True when the subscription is new."""
        try:
            await self.subscriptions.insert_one({"_id": f"{service}|{user}", "service": service, "user": user})
        except DuplicateKeyError:
            return False
        return True

    async def unsubscribe(self, service: str, user: str) -> bool:
        """True when there was a subscription to remove."""
        result = await self.subscriptions.delete_one({"_id": f"{service}|{user}"})
        return result.deleted_count > 0

    # --- bot state --------------------------------------------------------------------------
    # Values are kept as JSON text so every JSON value reads back exactly as written
    # (no store-specific typing of booleans or nested documents).

    async def get_state(self, owner: str, key: str) -> Any:
        doc = await self.state.find_one({"_id": f"{owner}|{key}"})
        return None if doc is None else json.loads(doc["value"])

    async def put_state(self, owner: str, key: str, value: Any) -> None:
        await self.state.update_one(
            {"_id": f"{owner}|{key}"},
            {"$set": {"owner": owner, "key": key, "value": json.dumps(value), "updated_at": utcnow()}},
            upsert=True,
        )

    async def delete_state(self, owner: str, key: str) -> bool:
        result = await self.state.delete_one({"_id": f"{owner}|{key}"})
        return result.deleted_count > 0
