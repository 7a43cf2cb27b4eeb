"""The storage layer: the only module that talks to MongoDB (through motor).

Collections (in `Settings.mongo_db`):

    mailbox        offline mail not yet handed over, and nothing else: it stays small,
                   so fetching and counting a user's mail costs the same however long
                   the history grows. Acknowledged mail is removed in one delete.
    messages       the history: delivered messages (status "delivered", `delivered_at`),
                   archived live chat and acknowledged mail alike.
    subscriptions  one document per (service, user).
    state          one JSON value per (owner, key), for bots.

In both message collections `_id` is the message id, so a retried write never
duplicates. Statuses are strings and delivery is a timestamp, never a boolean flag: the
embedded store (nx-27017) reads a boolean written with `$set` back as 1.

Expired mail is never returned: reads leave out what has expired, whether or not the
TTL index on `expires_at` has removed it yet (MongoDB's TTL monitor runs once a minute;
the embedded store purges on reads), and `sweep_expired` deletes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from chatnet.protocol import Message, format_datetime, parse_timestamp, utcnow

logger = logging.getLogger("chatnet.store")

PENDING: Final = "pending"
DELIVERED: Final = "delivered"
DUPLICATE_KEY: Final = 11000

# Short, so a route answers 503 quickly while the database is away; the heartbeat
# notices its return within a second.
SERVER_SELECTION_MS: Final = 2000
HEARTBEAT_MS: Final = 1000

# What a reader of history needs; status and pair stay in the store. Mail is read
# whole: its documents are small, and a projection costs the embedded store more than
# it saves.
MESSAGE_FIELDS: Final = {"sender": 1, "destination": 1, "message": 1, "timestamp": 1, "type": 1, "metadata": 1}

# Indexes of the old layout, where pending mail lived in `messages` too.
OLD_MESSAGE_INDEXES: Final = ("pending", "keep_latest", "ttl")

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


def to_document(message: MessageLike, expires_at: datetime | None = None) -> dict[str, Any]:
    """A Message (or a dict in its JSON shape) as a mail document. Only what mail needs:
    the embedded store reads a page of smaller documents markedly faster."""
    data = message.model_dump() if isinstance(message, Message) else message
    doc = {
        "_id": data["id"],
        "sender": data["sender"],
        "destination": data["destination"],
        "message": data.get("message", ""),
        "timestamp": parse_timestamp(data["timestamp"]),
        "type": str(data.get("type", "chat")),
    }
    if data.get("metadata"):
        doc["metadata"] = data["metadata"]
    if expires_at is not None:
        doc["expires_at"] = expires_at
    return doc


def delivered(doc: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A mail document as a history document: keyed by the pair, delivered now, never
    expiring."""
    kept = {key: value for key, value in doc.items() if key not in ("expires_at", "status")}
    return {**kept, "pair": pair_key(doc["sender"], doc["destination"]), "status": DELIVERED, "delivered_at": now}


def as_mail(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A pending document of the old layout (in `messages`) as a mail document."""
    mail = {key: value for key, value in doc.items() if key not in ("status", "pair", "metadata")}
    if doc.get("metadata"):
        mail["metadata"] = doc["metadata"]
    return mail


def stamp(value: datetime) -> str:
    """`format_datetime` for the UTC datetimes the driver reads (`tz_aware`), a few
    times cheaper: a page of mail formats thousands of them."""
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def to_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored document as the Message JSON shape (plain dict: no model on the hot path)."""
    return {
        "id": doc["_id"],
        "sender": doc.get("sender"),
        "destination": doc.get("destination"),
        "message": doc.get("message", ""),
        "timestamp": stamp(doc["timestamp"]),
        "type": doc.get("type", "chat"),
        "metadata": doc.get("metadata") or {},
    }


def live(docs: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The documents that have not expired (some may have since the last sweep)."""
    return [doc for doc in docs if doc.get("expires_at") is None or doc["expires_at"] > now]


def newest_first(doc: Mapping[str, Any]) -> tuple[datetime, str]:
    return doc["timestamp"], doc["_id"]


# Ties within a millisecond fall back to the id, which the chat server makes in
# sending order, so a conversation reads back in the order it was written.
OLDEST_FIRST = [("timestamp", ASCENDING), ("_id", ASCENDING)]
NEWEST_FIRST = [("timestamp", DESCENDING), ("_id", DESCENDING)]


class Store:
    """Offline mail, history, subscriptions and bot state over one MongoDB database."""

    def __init__(self, client: AsyncIOMotorClient, db_name: str) -> None:
        self.client = client
        self.db: AsyncIOMotorDatabase = client[db_name]
        self.mailbox: AsyncIOMotorCollection = self.db["mailbox"]
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
        """One index per query (creating an existing index is a no-op), once the
        pending mail of the old layout has moved to the mailbox."""
        if self.indexes_ready:
            return
        await self._move_old_pending_mail()
        box = self.mailbox
        # `_id` would finish the sort order, but the embedded store can't have `_id` in a
        # compound index (every insert then fails); ties sort within one user's mail.
        await box.create_index([("destination", ASCENDING), ("timestamp", ASCENDING)], name="pending")
        # keep_latest, and the pending half of a history (by destination and sender).
        await box.create_index(
            [("destination", ASCENDING), ("sender", ASCENDING), ("type", ASCENDING), ("timestamp", DESCENDING)],
            name="keep_latest",
        )
        # Real MongoDB removes expired mail by itself; reads filter it out everywhere.
        await box.create_index("expires_at", name="ttl", expireAfterSeconds=0)
        m = self.messages
        await m.create_index([("pair", ASCENDING), ("timestamp", DESCENDING)], name="history")
        await m.create_index([("sender", ASCENDING), ("status", ASCENDING)], name="by_sender")
        await m.create_index([("destination", ASCENDING), ("status", ASCENDING)], name="by_destination")
        await self.subscriptions.create_index([("service", ASCENDING), ("user", ASCENDING)], name="service_user", unique=True)
        await self.state.create_index([("owner", ASCENDING), ("key", ASCENDING)], name="owner_key", unique=True)
        self.indexes_ready = True

    async def _move_old_pending_mail(self) -> None:
        """Mail stored pending in `messages` (the old layout) moves to the mailbox, and
        the indexes only that layout needed go. Nothing to do on a new database."""
        old = await self.messages.find({"status": PENDING}).to_list(None)
        if old:
            await self._insert(self.mailbox, [as_mail(doc) for doc in old])
            await self.messages.delete_many({"_id": {"$in": [doc["_id"] for doc in old]}, "status": PENDING})
            logger.info("moved %d pending messages to the mailbox", len(old))
        existing = await self.messages.index_information()
        for name in OLD_MESSAGE_INDEXES:
            if name in existing:
                try:
                    await self.messages.drop_index(name)
                except OperationFailure as exc:
                    logger.warning("could not drop the old index messages.%s: %s", name, exc)

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    # --- writes of messages ------------------------------------------------------------

    @staticmethod
    async def _insert(collection: AsyncIOMotorCollection, docs: list[dict[str, Any]]) -> None:
        """Insert, ignoring only ids that are already stored (a retried request)."""
        if not docs:
            return
        try:
            await collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
            if others or exc.details.get("writeConcernErrors"):
                raise

    async def store_mail(
        self, messages: Iterable[MessageLike], ttl_seconds: int | None = None, keep_latest: int | None = None
    ) -> list[str]:
        """Put offline mail in the mailbox; returns the ids (stored now or before)."""
        expires_at = utcnow() + timedelta(seconds=ttl_seconds) if ttl_seconds else None
        docs = [to_document(m, expires_at) for m in messages]
        await self._insert(self.mailbox, docs)
        if keep_latest is not None:
            groups = {(d["destination"], d["sender"], d["type"]) for d in docs}
            for destination, sender, kind in groups:
                await self._keep_latest(destination, sender, kind, keep_latest)
        return [d["_id"] for d in docs]

    async def _keep_latest(self, destination: str, sender: str, kind: str, keep: int) -> None:
        query = {"destination": destination, "sender": sender, "type": kind}
        cursor = self.mailbox.find(query, {"_id": 1}).sort(NEWEST_FIRST).skip(keep)
        old = [doc["_id"] for doc in await cursor.to_list(None)]
        if old:
            await self.mailbox.delete_many({"_id": {"$in": old}})

    async def archive(self, messages: Iterable[MessageLike]) -> int:
        """Store delivered live chat for the history view; returns how many were given."""
        now = utcnow()
        docs = [delivered(to_document(m), now) for m in messages]
        await self._insert(self.messages, docs)
        return len(docs)

    async def archive_delivered(self, docs: list[dict[str, Any]]) -> None:
        """Copy acknowledged mail (mail documents as read) into the history."""
        now = utcnow()
        await self._insert(self.messages, [delivered(doc, now) for doc in docs])

    # --- offline mail ---------------------------------------------------------------------

    async def pending_documents(self, user: str, limit: int = 100) -> list[dict[str, Any]]:
        """The user's pending mail documents, oldest first. Mail that expired since the
        last sweep is left out here rather than deleted first: one statement less on the
        way to a user who is logging in."""
        now = utcnow()
        cursor = self.mailbox.find({"destination": user}).sort(OLDEST_FIRST).limit(limit).batch_size(limit)
        return live(await cursor.to_list(None), now)

    async def pending(self, user: str, limit: int = 100) -> list[dict[str, Any]]:
        """The user's pending mail, oldest first, as Message-shaped dicts."""
        return [to_json(doc) for doc in await self.pending_documents(user, limit)]

    async def _count(self, collection: AsyncIOMotorCollection, query: dict[str, Any]) -> int:
        # An aggregate $count: count_documents is 50x slower on the embedded store.
        result = await collection.aggregate([{"$match": query}, {"$count": "n"}]).to_list(None)
        return result[0]["n"] if result else 0

    async def pending_count(self, user: str | None = None) -> int:
        """How much mail is pending (for one user, or for everyone)."""
        return await self._count(self.mailbox, {} if user is None else {"destination": user})

    async def take_mail(
        self, user: str, ids: list[str], known: Mapping[str, dict[str, Any]] | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """Remove the user's mail with these ids from the mailbox (one delete): how many
        went, and the documents as they were, for `archive_delivered`. Documents the
        caller already holds (`known`, by id, as `pending_documents` read them) are not
        read again; the rest are, in one find."""
        known = known or {}
        docs = [known[i] for i in ids if i in known and known[i]["destination"] == user]
        unknown = [i for i in ids if i not in known]
        if unknown:
            docs += await self.mailbox.find({"_id": {"$in": unknown}, "destination": user}).batch_size(len(unknown)).to_list(None)
        if not docs:
            return 0, []
        found = [doc["_id"] for doc in docs]
        result = await self.mailbox.delete_many({"_id": {"$in": found}, "destination": user})
        return result.deleted_count, docs

    async def ack(self, user: str, ids: list[str]) -> int:
        """Acknowledge mail and copy it to the history before returning; how many."""
        removed, docs = await self.take_mail(user, ids)
        await self.archive_delivered(docs)
        return removed

    # --- history ---------------------------------------------------------------------------

    async def history(
        self, user: str, peer: str, limit: int = 50, before: datetime | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Messages between two users, delivered or still pending, newest first, and the
        `before` of the next page."""
        older: dict[str, Any] = {} if before is None else {"timestamp": {"$lt": before}}
        query = {"pair": pair_key(user, peer), **older}
        docs = await self.messages.find(query, MESSAGE_FIELDS).sort(NEWEST_FIRST).limit(limit).to_list(None)
        for sender, destination in {(user, peer), (peer, user)}:
            query = {"destination": destination, "sender": sender, **older}
            docs += live(await self.mailbox.find(query).sort(NEWEST_FIRST).limit(limit).to_list(None), utcnow())
        # By id, so a message caught in both (acknowledged while read) shows once.
        merged = {doc["_id"]: doc for doc in docs}
        docs = sorted(merged.values(), key=newest_first, reverse=True)[:limit]
        next_before = format_datetime(docs[-1]["timestamp"]) if len(docs) == limit else None
        return [to_json(doc) for doc in docs], next_before

    async def clear_history(self, user: str) -> int:
        """Delete the delivered messages the user sent or received; pending mail stays."""
        sent = await self.messages.delete_many({"sender": user, "status": DELIVERED})
        received = await self.messages.delete_many({"destination": user, "status": DELIVERED})
        return sent.deleted_count + received.deleted_count

    async def sweep_expired(self) -> int:
        """Delete all expired mail (the TTL index does this on a real MongoDB)."""
        result = await self.mailbox.delete_many({"expires_at": {"$lte": utcnow()}})
        return result.deleted_count

    async def counts(self) -> dict[str, int]:
        """Pending mail, every stored message (history and pending), subscriptions."""
        pending = await self.pending_count()
        return {
            "pending": pending,
            "messages": await self.messages.estimated_document_count() + pending,
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
