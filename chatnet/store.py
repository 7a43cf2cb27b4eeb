"""The storage layer: with `chatnet.rooms_store`, the only code that talks to MongoDB (through motor).

Collections (in `Settings.mongo_db`):

    mailbox        offline mail not yet handed over, and nothing else: it stays small,
                   so fetching and counting a user's mail costs the same however long
                   the history grows. Acknowledged mail is removed in one delete.
    history        delivered messages (archived live chat and acknowledged mail) in
                   buckets: one document per archived batch, holding the messages in
                   their JSON shape with what finds them (see `bucket`). One insert
                   stores a whole batch: the embedded store's cost is per document.
    subscriptions  one document per (service, user).
    state          one JSON value per (owner, key), for bots.
    accounts       one per registered name, keyed by the name lower-cased: the name as
                   its owner spelled it, the kind (person, bot), the argon2id hash (a
                   bot has none).
    tokens         session tokens, keyed by the token's SHA-256 (the token itself is
                   never stored), with the account's key and an expiry.
    names          every name that has logged in or holds an account, keyed lower-cased.
    login_failures wrong passwords, one document per counter (a name, an address) and
                   attempt, kept for the window they count in.
    login_locks    counters locked out, and until when.
    direct         the newest message of each pair of people who wrote to each other
                   (keyed by `pair_key`; `users`: both keys; the message as JSON text with
                   its `seq_of`), kept by `archive` and `store_mail`: where a user's list
                   of conversations is read from (see `chatnet.rooms_store`).
    meta           markers of start-up migrations done.
    messages       the layouts before: per-message history and pending mail. Moved to
                   `history` and `mailbox` when the store opens it, then dropped.

Names are case-insensitive: what finds a person is the name lower-cased, and what is
shown keeps its spelling. A mail document carries `destination_key` and `sender_key`
beside `destination` and `sender`; a bucket's `pairs` and `users` are lower-cased (the
messages in it keep their spelling); subscriptions, state and accounts are keyed by
the names lower-cased. Data stored before this is moved over once, at start-up
(`_fold_names`).

A mail document's `_id` is the message id, so a retried write never duplicates. A
bucket's `_id` is made from the ids it holds, so a retried batch is not stored twice;
a message caught in two different buckets is shown once (history is read by message
id). Statuses are strings and delivery is a timestamp, never a boolean flag: the
embedded store (nx-27017) reads a boolean written with `$set` back as 1.

Rooms, read markers and conversation lists are `chatnet.rooms_store`'s, over this.

History pages by key: (timestamp, id), so a page boundary inside a burst of messages
sharing one millisecond skips and repeats nothing; `encode_cursor` makes a key an opaque
cursor for clients, `seq_of` one text the store compares exactly.

Expired mail is never returned: reads leave out what has expired, whether or not the
TTL index on `expires_at` has removed it yet (MongoDB's TTL monitor runs once a minute;
the embedded store purges on reads), and `sweep_expired` deletes it.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from chatnet.limits import MAX_UNREAD
from chatnet.protocol import (
    MessageLike,
    dumps,
    format_datetime,
    from_history_entry,
    from_mail_document,
    history_entry,
    mail_document,
    parse_timestamp,
    utcnow,
)

logger = logging.getLogger("chatnet.store")

Document = dict[str, Any]

PENDING: Final = "pending"
DUPLICATE_KEY: Final = 11000

# Short, so a route answers 503 quickly while the database is away; the heartbeat
# notices its return within a second.
SERVER_SELECTION_MS: Final = 2000
HEARTBEAT_MS: Final = 1000

# The most messages in one bucket (an API batch holds at most 1000): a bucket is read
# whole, so a bigger one would make a short page of history cost more.
MAX_BUCKET: Final = 1000
# Buckets fetched in the first round trip while a page of history is gathered, and at
# most in any later one (which asks for as many as the pair's share of the buckets read
# so far says are missing). Rounds with a limit rather than one open cursor: the
# embedded store reads every match of a query without a limit before it answers, and
# a bucket costs it milliseconds to read.
FIRST_BUCKETS: Final = 4
MOST_BUCKETS: Final = 64
# A message id, at most (as the Message model has it).
MAX_ID_CHARS: Final = 64
# Old per-message history moves into buckets this big at start-up.
MIGRATION_BUCKET: Final = 1000
# Names remembered as recorded (see `Store.record_names`): a set of short keys, a few MB at most.
MAX_RECORDED_NAMES: Final = 100_000
# The marker in `meta` saying that names were folded to lower case (see `_fold_names`).
NAMES_FOLDED: Final = "names_folded"


def connect(url: str, **options: Any) -> AsyncIOMotorClient[Document]:
    """A motor client that fails fast while the database is unreachable."""
    return AsyncIOMotorClient(
        url,
        tz_aware=True,
        serverSelectionTimeoutMS=SERVER_SELECTION_MS,
        connectTimeoutMS=SERVER_SELECTION_MS,
        heartbeatFrequencyMS=HEARTBEAT_MS,
        **options,
    )


def counts_as_unread(doc: Mapping[str, Any]) -> bool:
    """Chat counts as unread; a service's readings (subscription messages) do not."""
    return bool(doc.get("type", "chat") == "chat")


def pair_key(a: str, b: str) -> str:
    """The same key for both directions of a conversation, whatever the case of the
    names ('|' is not a name character)."""
    a, b = a.lower(), b.lower()
    return f"{a}|{b}" if a <= b else f"{b}|{a}"


def keyed(doc: dict[str, Any]) -> dict[str, Any]:
    """A mail document with the keys that find it: its names lower-cased."""
    doc["destination_key"] = doc["destination"].lower()
    doc["sender_key"] = doc["sender"].lower()
    return doc


def bucket_id(ids: Iterable[str]) -> str:
    """The same id for the same messages: a retried batch finds its bucket stored."""
    return hashlib.blake2b("\n".join(ids).encode(), digest_size=16).hexdigest()


def bucket(entries: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """One history document for a batch of entries: their time span, the conversations
    (`pairs`) and people (`users`) in it, for the indexes that find it."""
    stamps = [e["timestamp"] for e in entries]
    return {
        "_id": bucket_id(e["id"] for e in entries),
        "first": epoch_ms(parse_timestamp(min(stamps))),
        "last": epoch_ms(parse_timestamp(max(stamps))),
        "count": len(entries),
        "pairs": sorted({pair_key(e["sender"], e["destination"]) for e in entries}),
        "users": sorted({e["sender"].lower() for e in entries} | {e["destination"].lower() for e in entries}),
        "archived_at": now,
        "messages": entries,
    }


EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
MILLISECOND: Final = timedelta(milliseconds=1)
# The last second a datetime can be rounded up from (a bound past it is no bound).
LATEST: Final = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch (exact, no float), rounded up: stored times have
    milliseconds, so `epoch_ms(t) < epoch_ms(before)` is exactly "t earlier than before".

    A bucket's span is kept in these: the embedded store compares datetimes (and
    date-like text) through SQLite's datetime(), to the second, so a page boundary
    inside a second would lose messages; whole numbers compare exactly everywhere."""
    return -((EPOCH - value) // MILLISECOND)


def ms_text(value: int) -> str:
    """Milliseconds since the epoch as protocol text."""
    return format_datetime(EPOCH + value * MILLISECOND)


def up_to_second(value: datetime) -> datetime:
    """`value` rounded up to the whole second: a bound that the embedded store's
    second-precision comparison applies exactly (see `epoch_ms`)."""
    return value if not value.microsecond else value.replace(microsecond=0) + timedelta(seconds=1)


def as_mail(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A pending document of the old layout (in `messages`) as a mail document."""
    mail = {key: value for key, value in doc.items() if key not in ("status", "pair", "metadata")}
    if doc.get("metadata"):
        mail["metadata"] = doc["metadata"]
    return keyed(mail)


def live(docs: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The documents that have not expired (some may have since the last sweep)."""
    return [doc for doc in docs if doc.get("expires_at") is None or doc["expires_at"] > now]


# --- where a message stands in a conversation ----------------------------------------------

# A message's place in a conversation: (timestamp as protocol text, id). Ties within a
# millisecond fall back to the id, which the chat server makes in sending order, so a
# conversation reads back in the order it was written, and a page boundary inside a
# burst of messages sharing one millisecond neither skips nor repeats any of them.
Key = tuple[str, str]
# The protocol text of a timestamp is fixed width (`format_datetime`): 24 characters.
STAMP_CHARS: Final = 24
SEQ_PREFIX: Final = "t"


def message_key(message: Mapping[str, Any]) -> Key:
    """A message's place (a message in its JSON shape, or a history entry)."""
    return message["timestamp"], message["id"]


def seq_of(key: Key) -> str:
    """A key as one text that sorts as the key does (the timestamp is fixed width), for
    a field the store compares: read markers, the newest message of a conversation.
    It starts with a letter: the embedded store compares text that looks like a date
    through SQLite's datetime(), to the second."""
    return f"{SEQ_PREFIX}{key[0]}|{key[1]}"


def key_of(seq: str) -> Key:
    """The key a `seq_of` text holds (ids may hold '|': the timestamp is cut by width)."""
    return seq[1 : 1 + STAMP_CHARS], seq[2 + STAMP_CHARS :]


def encode_cursor(key: Key) -> str:
    """A page boundary as an opaque cursor (URL-safe text): what a client hands back
    for the next page, and never reads."""
    return base64.urlsafe_b64encode(seq_of(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Key:
    """The key a cursor holds; ValueError for anything `encode_cursor` did not make.
    The id may be empty: the start of a millisecond (a read marker set at a join)."""
    try:
        seq = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not a cursor this API gave") from None
    stamp, message_id = key_of(seq)
    if not seq.startswith(SEQ_PREFIX) or seq[1 + STAMP_CHARS : 2 + STAMP_CHARS] != "|" or len(message_id) > MAX_ID_CHARS:
        raise ValueError("not a cursor this API gave")
    try:
        if format_datetime(parse_timestamp(stamp)) != stamp:
            raise ValueError
    except ValueError:
        raise ValueError("not a cursor this API gave") from None
    return stamp, message_id


def stamp_ms(stamp: str) -> int:
    """Protocol text of a timestamp as epoch milliseconds (see `epoch_ms`)."""
    return epoch_ms(parse_timestamp(stamp))


def newest_first(doc: Mapping[str, Any]) -> Key:
    return doc["timestamp"], doc["id"]


# Ties within a millisecond fall back to the id, which the chat server makes in
# sending order, so a conversation reads back in the order it was written.
OLDEST_FIRST = [("timestamp", ASCENDING), ("_id", ASCENDING)]
NEWEST_FIRST = [("timestamp", DESCENDING), ("_id", DESCENDING)]


class Page:
    """A page of history being gathered: the newest `limit` distinct messages placed
    before `before` and after `after` (keys, either bound optional), kept as a min-heap
    of keys so the page's oldest is at hand."""

    def __init__(self, limit: int, before: Key | None = None, after: Key | None = None) -> None:
        self.limit = limit
        self.before = before
        self.after = after
        self.messages: dict[str, dict[str, Any]] = {}
        self.heap: list[Key] = []

    def add(self, messages: Iterable[dict[str, Any]]) -> None:
        before, after = self.before, self.after
        for message in messages:
            key = (message["timestamp"], message["id"])
            if key[1] in self.messages or (before is not None and key >= before) or (after is not None and key <= after):
                continue
            if len(self.heap) < self.limit:
                heapq.heappush(self.heap, key)
            elif key > self.heap[0]:
                del self.messages[heapq.heapreplace(self.heap, key)[1]]
            else:
                continue
            self.messages[key[1]] = message

    def complete_before(self, latest: str) -> bool:
        """Full, and nothing at or before `latest` could enter it any more."""
        return len(self.heap) == self.limit and self.heap[0][0] > latest

    def result(self) -> list[dict[str, Any]]:
        """The page, newest first."""
        return sorted(self.messages.values(), key=newest_first, reverse=True)


class Store:
    """Offline mail, history, subscriptions, bot state and used names over one MongoDB
    database, and every collection's indexes (accounts: `chatnet.accounts_store`; rooms:
    `chatnet.rooms_store`)."""

    def __init__(self, client: AsyncIOMotorClient[Document], db_name: str) -> None:
        self.client = client
        self.db: AsyncIOMotorDatabase[Document] = client[db_name]
        self.mailbox: AsyncIOMotorCollection[Document] = self.db["mailbox"]
        self.history_buckets: AsyncIOMotorCollection[Document] = self.db["history"]
        self.messages: AsyncIOMotorCollection[Document] = self.db["messages"]  # the old layouts
        self.subscriptions: AsyncIOMotorCollection[Document] = self.db["subscriptions"]
        self.state: AsyncIOMotorCollection[Document] = self.db["state"]
        self.accounts: AsyncIOMotorCollection[Document] = self.db["accounts"]
        self.tokens: AsyncIOMotorCollection[Document] = self.db["tokens"]
        self.names: AsyncIOMotorCollection[Document] = self.db["names"]
        self.login_failures: AsyncIOMotorCollection[Document] = self.db["login_failures"]
        self.login_locks: AsyncIOMotorCollection[Document] = self.db["login_locks"]
        self.meta: AsyncIOMotorCollection[Document] = self.db["meta"]
        self.direct: AsyncIOMotorCollection[Document] = self.db["direct"]
        self.indexes_ready = False
        self._recorded: set[str] = set()  # names recorded as used by this process (see `record_names`)

    @classmethod
    def open(cls, url: str, db_name: str) -> Store:
        return cls(connect(url), db_name)

    def close(self) -> None:
        self.client.close()

    async def ensure_indexes(self) -> None:
        """One index per query (creating an existing index is a no-op), once the
        pending mail and history of the old layouts have moved and names are folded."""
        if self.indexes_ready:
            return
        await self._move_old_pending_mail()
        await self._move_old_history()
        await self._fold_names()
        box = self.mailbox
        # `_id` would finish the sort order, but the embedded store can't have `_id` in a
        # compound index (every insert then fails); ties sort within one user's mail.
        await box.create_index([("destination_key", ASCENDING), ("timestamp", ASCENDING)], name="pending_key")
        # keep_latest, and the pending half of a history (by destination and sender).
        await box.create_index(
            [("destination_key", ASCENDING), ("sender_key", ASCENDING), ("type", ASCENDING), ("timestamp", DESCENDING)],
            name="keep_latest_key",
        )
        # Real MongoDB removes expired mail by itself; reads filter it out everywhere.
        await box.create_index("expires_at", name="ttl", expireAfterSeconds=0)
        # Multikey: a bucket is indexed under each pair and each user it holds. `users`
        # is indexed with `last` after it because the embedded store answers a plain
        # `{"users": name}` from a single-field index on the array as a whole, and so
        # finds nothing; behind a compound index the match is by element, as in MongoDB.
        h = self.history_buckets
        await h.create_index([("pairs", ASCENDING), ("last", DESCENDING)], name="pair_last")
        await h.create_index([("users", ASCENDING), ("last", DESCENDING)], name="user_last")
        await self.subscriptions.create_index([("service", ASCENDING), ("user", ASCENDING)], name="service_user", unique=True)
        await self.state.create_index([("owner", ASCENDING), ("key", ASCENDING)], name="owner_key", unique=True)
        await self.tokens.create_index("account", name="account")
        await self.tokens.create_index("expires_at", name="ttl", expireAfterSeconds=0)
        await self.login_failures.create_index([("counter", ASCENDING), ("at", ASCENDING)], name="counter_at")
        await self.login_failures.create_index("expires_at", name="ttl", expireAfterSeconds=0)
        await self.login_locks.create_index("expires_at", name="ttl", expireAfterSeconds=0)
        await self.direct.create_index([("users", ASCENDING), ("last_seq", DESCENDING)], name="users_last")
        self.indexes_ready = True

    async def _move_old_pending_mail(self) -> None:
        """Mail stored pending in `messages` (the old layout) moves to the mailbox, and
        the indexes only that layout needed go. Nothing to do on a new database."""
        old = await self.messages.find({"status": PENDING}).to_list(None)
        if old:
            await self._insert(self.mailbox, [as_mail(doc) for doc in old])
            await self.messages.delete_many({"_id": {"$in": [doc["_id"] for doc in old]}, "status": PENDING})
            logger.info("moved %d pending messages to the mailbox", len(old))

    async def _move_old_history(self) -> None:
        """History stored one message per document in `messages` (the old layout) moves
        into buckets, oldest first, a bucket at a time (a bucket's id comes from its
        messages, so a move cut short and run again stores nothing twice); then the
        emptied collection and its indexes go. Nothing to do on a new database."""
        moved = 0
        while old := await self.messages.find({}).sort(OLDEST_FIRST).limit(MIGRATION_BUCKET).to_list(None):
            await self._insert(self.history_buckets, [bucket([history_entry(doc) for doc in old], utcnow())])
            await self.messages.delete_many({"_id": {"$in": [doc["_id"] for doc in old]}})
            moved += len(old)
        if moved:
            logger.info("moved %d messages of history into buckets", moved)
        if "messages" in await self.db.list_collection_names():
            try:
                await self.messages.drop()
            except OperationFailure as exc:
                logger.warning("could not drop the emptied collection messages: %s", exc)

    async def _fold_names(self) -> None:
        """Data stored while names were case-sensitive is keyed by its names lower-cased,
        once (a marker in `meta` says it was done; every step can run again, so a fold
        cut short is simply redone): mail gains its keys, buckets their lower-cased
        pairs and users, subscriptions and state their lower-cased ids (where two
        spellings meet, one subscription is kept, and the state written last). The
        names seen in mail and history count as used. Nothing to do on a new database
        but writing the marker."""
        if await self.meta.find_one({"_id": NAMES_FOLDED}) is not None:
            return
        used: set[str] = set()
        mail = await self.mailbox.find({}, {"destination": 1, "sender": 1}).to_list(None)
        for destination, sender in {(doc["destination"], doc["sender"]) for doc in mail}:
            keys = {"destination_key": destination.lower(), "sender_key": sender.lower()}
            await self.mailbox.update_many({"destination": destination, "sender": sender}, {"$set": keys})
            used.add(keys["sender_key"])
        await self._drop_old_mail_indexes()
        buckets = await self.history_buckets.find({}, {"pairs": 1, "users": 1}).to_list(None)
        for doc in buckets:
            pairs = sorted({pair_key(*pair.split("|")) for pair in doc["pairs"]})
            users = sorted({user.lower() for user in doc["users"]})
            used.update(users)
            if pairs != doc["pairs"] or users != doc["users"]:
                await self.history_buckets.update_one({"_id": doc["_id"]}, {"$set": {"pairs": pairs, "users": users}})
        for sub in await self.subscriptions.find({}).to_list(None):
            folded = {"_id": sub["_id"].lower(), "service": sub["service"].lower(), "user": sub["user"]}
            if folded["_id"] != sub["_id"] or folded["service"] != sub["service"]:
                # Out first: the unique (service, user) index would find it in the way.
                await self.subscriptions.delete_one({"_id": sub["_id"]})
                await self._insert(self.subscriptions, [folded])
        for doc in await self.state.find({}).sort("updated_at", ASCENDING).to_list(None):
            if doc["_id"] != doc["_id"].lower():
                folded = {**doc, "_id": doc["_id"].lower(), "owner": doc["owner"].lower(), "key": doc["key"].lower()}
                await self.state.replace_one({"_id": folded["_id"]}, folded, upsert=True)  # oldest first: the last wins
                await self.state.delete_one({"_id": doc["_id"]})
        now = utcnow()
        await self._insert(self.names, [{"_id": name, "name": name, "first_seen": now} for name in sorted(used)])
        await self.meta.update_one({"_id": NAMES_FOLDED}, {"$set": {"at": now}}, upsert=True)
        if mail or buckets:
            logger.info("names folded to lower case: %d pending messages, %d history buckets", len(mail), len(buckets))

    async def _drop_old_mail_indexes(self) -> None:
        """The mailbox's indexes on names as spelled go (their successors are on the
        keys). Found by their fields: the embedded store names indexes itself."""
        old = [["destination", "timestamp"], ["destination", "sender", "type", "timestamp"]]
        async for index in self.mailbox.list_indexes():
            if list(index["key"]) in old:
                with suppress(OperationFailure):  # dropped meanwhile by another API process
                    await self.mailbox.drop_index(index["name"])

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    # --- writes of messages ------------------------------------------------------------

    @staticmethod
    async def _insert(collection: AsyncIOMotorCollection[Document], docs: list[dict[str, Any]]) -> None:
        """Insert, ignoring only ids that are already stored (a retried request)."""
        if not docs:
            return
        try:
            await collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
            if others or exc.details.get("writeConcernErrors"):
                raise

    @staticmethod
    async def insert_new(collection: AsyncIOMotorCollection[Document], docs: list[dict[str, Any]]) -> set[Any]:
        """Insert, ignoring ids already stored; the ids this call stored (the others
        were there before, or another process stored them meanwhile)."""
        if not docs:
            return set()
        ids = {doc["_id"] for doc in docs}
        try:
            await collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors) or exc.details.get("writeConcernErrors"):
                raise
            return ids - {docs[e["index"]]["_id"] for e in errors}
        return ids

    async def forward(self, collection: AsyncIOMotorCollection[Document], field: str, wanted: Mapping[str, tuple[str, Document]], create: bool = True) -> set[str]:
        """Move `field` (a `seq_of` text) of each document forward to the value given
        with its id, setting the fields given with it, never back: one find, then one
        insert for the documents missing (unless not `create`) and one bulk update
        whose filters hold the value back, so a racing writer's later value stays.
        The ids of the documents moved."""
        if not wanted:
            return set()
        found = {doc["_id"]: doc.get(field) or "" async for doc in collection.find({"_id": {"$in": list(wanted)}}, {field: 1})}
        moved: set[str] = set()
        if create:
            fresh = [{"_id": i, field: seq, **fields} for i, (seq, fields) in wanted.items() if i not in found]
            moved = await self.insert_new(collection, fresh)
            found.update({doc["_id"]: "" for doc in fresh if doc["_id"] not in moved})  # stored meanwhile: update it
        ids = [i for i, (seq, _) in wanted.items() if i in found and i not in moved and found[i] < seq]
        if ids:
            ops = [UpdateOne({"_id": i, field: {"$lt": wanted[i][0]}}, {"$set": {field: wanted[i][0], **wanted[i][1]}}) for i in ids]
            result = await collection.bulk_write(ops, ordered=False)
            if result.modified_count == len(ids):
                moved.update(ids)
            else:  # some lost a race: ask which moved
                docs = collection.find({"_id": {"$in": ids}}, {field: 1})
                moved.update([doc["_id"] async for doc in docs if doc.get(field) == wanted[doc["_id"]][0]])
        return moved

    # --- the newest message of each pair of people ----------------------------------------

    async def note_direct(self, entries: Iterable[dict[str, Any]]) -> None:
        """Keep each pair's newest message (history entries of direct messages) in
        `direct`, where a user's list of conversations is read from. The message is
        kept as JSON text: what `$set` writes reads back exactly (a boolean in its
        metadata would come back from the embedded store as 1)."""
        newest: dict[str, dict[str, Any]] = {}
        for entry in entries:
            pair = pair_key(entry["sender"], entry["destination"])
            if pair not in newest or message_key(entry) > message_key(newest[pair]):
                newest[pair] = entry
        wanted = {pair: (seq_of(message_key(e)), {"users": sorted(set(pair.split("|"))), "last": dumps(e)}) for pair, e in newest.items()}
        await self.forward(self.direct, "last_seq", wanted)

    async def direct_unread(self, user: str, peer: str, after: Key | None) -> int:
        """How many messages from `peer` to `user` are placed after `after` (a read
        marker; None: nothing read), counting no further back than MAX_UNREAD messages
        of the conversation (chat only: a service's readings are not unread)."""
        docs, _ = await self.history_page(user, peer, MAX_UNREAD, None, after)
        return sum(1 for doc in docs if doc["sender"].lower() == peer.lower() != user.lower() and counts_as_unread(doc))

    async def direct_conversations(self, user: str, limit: int) -> list[Document]:
        """The user's pairs (documents of `direct`), the latest message first."""
        docs = await self.direct.find({"users": user.lower()}).to_list(None)
        docs.sort(key=lambda doc: doc["last_seq"], reverse=True)
        return docs[:limit]

    async def store_mail(self, messages: Iterable[MessageLike], ttl_seconds: int | None = None, keep_latest: int | None = None) -> list[str]:
        """Put offline mail in the mailbox; returns the ids (stored now or before)."""
        expires_at = utcnow() + timedelta(seconds=ttl_seconds) if ttl_seconds else None
        docs = [keyed(mail_document(m, expires_at)) for m in messages]
        await self._insert(self.mailbox, docs)
        await self.note_direct(history_entry(doc) for doc in docs)
        if keep_latest is not None:
            groups = {(d["destination_key"], d["sender_key"], d["type"]) for d in docs}
            for destination, sender, kind in groups:
                await self._keep_latest(destination, sender, kind, keep_latest)
        return [d["_id"] for d in docs]

    async def _keep_latest(self, destination: str, sender: str, kind: str, keep: int) -> None:
        query = {"destination_key": destination, "sender_key": sender, "type": kind}
        cursor = self.mailbox.find(query, {"_id": 1}).sort(NEWEST_FIRST).skip(keep)
        old = [doc["_id"] for doc in await cursor.to_list(None)]
        if old:
            await self.mailbox.delete_many({"_id": {"$in": old}})

    async def archive(self, messages: Iterable[MessageLike]) -> int:
        """Store delivered live chat between people (not rooms': see
        `chatnet.rooms_store`) for the history view, a bucket per batch (of at most
        MAX_BUCKET); returns how many were given."""
        entries = [history_entry(m) for m in messages]
        await self._store_buckets(entries)
        await self.note_direct(entries)
        return len(entries)

    async def archive_delivered(self, docs: list[dict[str, Any]]) -> None:
        """Copy acknowledged mail (mail documents as read) into the history."""
        await self._store_buckets([history_entry(doc) for doc in docs])

    async def _store_buckets(self, entries: list[dict[str, Any]]) -> None:
        now = utcnow()
        buckets = [bucket(entries[i : i + MAX_BUCKET], now) for i in range(0, len(entries), MAX_BUCKET)]
        await self._insert(self.history_buckets, buckets)

    # --- offline mail ---------------------------------------------------------------------

    async def pending_documents(self, user: str, limit: int = 100) -> list[dict[str, Any]]:
        """The user's pending mail documents, oldest first. Mail that expired since the
        last sweep is left out here rather than deleted first: one statement less on the
        way to a user who is logging in."""
        now = utcnow()
        cursor = self.mailbox.find({"destination_key": user.lower()}).sort(OLDEST_FIRST).limit(limit).batch_size(limit)
        return live(await cursor.to_list(None), now)

    async def pending(self, user: str, limit: int = 100) -> list[dict[str, Any]]:
        """The user's pending mail, oldest first, as Message-shaped dicts."""
        return [from_mail_document(doc) for doc in await self.pending_documents(user, limit)]

    async def pending_pages(self, users: Iterable[str], budget: int) -> tuple[dict[str, int], dict[str, list[Document]]]:
        """A login storm's first look, in two queries whatever the number of users: how
        much is pending for each of these users that has any (by key; one aggregation on
        the mailbox's destination key), and the whole mailbox, oldest first, of those
        whose mail fits within `budget` documents in all (smallest first; one find).
        Users with nothing pending cost no more than their key in the `$in`."""
        keys = sorted({user.lower() for user in users})
        if not keys:
            return {}, {}
        pipeline: list[Document] = [{"$match": {"destination_key": {"$in": keys}}}, {"$group": {"_id": "$destination_key", "n": {"$sum": 1}}}]
        totals = {doc["_id"]: int(doc["n"]) for doc in await self.mailbox.aggregate(pipeline).to_list(None)}
        whole: list[str] = []
        for key, count in sorted(totals.items(), key=lambda item: item[1]):
            if count > budget:
                break
            whole.append(key)
            budget -= count
        pages: dict[str, list[Document]] = {key: [] for key in whole}
        if whole:
            now = utcnow()
            # Sorted here rather than by the store: the compound sort would need the
            # destination key first, and each mailbox is small (it fits the budget).
            for doc in live(await self.mailbox.find({"destination_key": {"$in": whole}}).to_list(None), now):
                pages[doc["destination_key"]].append(doc)
            for docs in pages.values():
                docs.sort(key=lambda doc: (doc["timestamp"], doc["_id"]))
        return totals, pages

    async def count(self, collection: AsyncIOMotorCollection[Document], query: dict[str, Any]) -> int:
        # An aggregate $count: count_documents is 50x slower on the embedded store.
        result = await collection.aggregate([{"$match": query}, {"$count": "n"}]).to_list(None)
        return result[0]["n"] if result else 0

    async def pending_count(self, user: str | None = None) -> int:
        """How much mail is pending (for one user, or for everyone)."""
        return await self.count(self.mailbox, {} if user is None else {"destination_key": user.lower()})

    async def take_mail(self, user: str, ids: list[str], known: Mapping[str, dict[str, Any]] | None = None) -> tuple[int, list[dict[str, Any]]]:
        """Remove the user's mail with these ids from the mailbox (one delete): how many
        went, and the documents as they were, for `archive_delivered`. Documents the
        caller already holds (`known`, by id, as `pending_documents` read them) are not
        read again; the rest are, in one find."""
        known = known or {}
        key = user.lower()
        docs = [known[i] for i in ids if i in known and known[i]["destination_key"] == key]
        unknown = [i for i in ids if i not in known]
        if unknown:
            docs += await self.mailbox.find({"_id": {"$in": unknown}, "destination_key": key}).batch_size(len(unknown)).to_list(None)
        if not docs:
            return 0, []
        found = [doc["_id"] for doc in docs]
        result = await self.mailbox.delete_many({"_id": {"$in": found}, "destination_key": key})
        return result.deleted_count, docs

    async def ack(self, user: str, ids: list[str]) -> int:
        """Acknowledge mail and copy it to the history before returning; how many."""
        removed, docs = await self.take_mail(user, ids)
        await self.archive_delivered(docs)
        return removed

    # --- history ---------------------------------------------------------------------------

    async def history(self, user: str, peer: str, limit: int = 50, before: datetime | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Messages between two users, delivered or still pending, newest first, and the
        `before` of the next page: the oldest timestamp when the page is full. (`before`
        leaves out the rest of that millisecond; `history_page` pages by cursor, whole.)"""
        key = None if before is None else (ms_text(epoch_ms(before)), "")  # no id sorts before ""
        docs, _ = await self.history_page(user, peer, limit, key)
        return docs, docs[-1]["timestamp"] if len(docs) == limit else None

    async def history_page(self, user: str, peer: str, limit: int = 50, before: Key | None = None, after: Key | None = None) -> tuple[list[dict[str, Any]], bool]:
        """The newest `limit` messages between two users placed between the bounds,
        delivered or still pending, newest first, and whether older ones are left (for a
        `next` cursor). Gathered by message id, so one caught twice (mail acknowledged
        while read, a batch archived again in other company) shows once."""
        page = Page(limit + 1, before, after)
        user, peer = user.lower(), peer.lower()
        for sender, destination in {(user, peer), (peer, user)}:
            page.add(from_mail_document(doc) for doc in await self._mail_between(sender, destination, limit + 1, before, after))
        pair = pair_key(user, peer)
        await self.gather(page, self.history_buckets, {"pairs": pair}, lambda e: pair_key(e["sender"], e["destination"]) == pair)
        docs = page.result()
        return docs[:limit], len(docs) > limit

    async def _mail_between(self, sender: str, destination: str, limit: int, before: Key | None, after: Key | None = None) -> list[dict[str, Any]]:
        """The newest `limit` live mail documents from sender to destination (keys)
        placed between the bounds. The store is asked for whole seconds (exact on any
        store, see `up_to_second`) and the rest of the bounds' seconds is dropped here,
        asking for more while dropping left the page short."""
        query: dict[str, Any] = {"destination_key": destination, "sender_key": sender}
        bounds: dict[str, datetime] = {}
        if before is not None and (end := parse_timestamp(before[0])) < LATEST:
            bounds["$lt"] = up_to_second(end + MILLISECOND)
        if after is not None:
            bounds["$gte"] = parse_timestamp(after[0]).replace(microsecond=0)
        if bounds:
            query["timestamp"] = bounds
        wanted = limit
        while True:
            docs = await self.mailbox.find(query).sort(NEWEST_FIRST).limit(wanted).to_list(None)
            kept, newer, ended = [], 0, False
            for doc in docs:
                key = (format_datetime(doc["timestamp"]), doc["_id"])
                if before is not None and key >= before:
                    newer += 1
                elif after is not None and key <= after:
                    ended = True  # newest first: the rest is older still
                    break
                else:
                    kept.append(doc)
            if ended or len(kept) >= limit or len(docs) < wanted:
                return live(kept, utcnow())
            wanted += newer

    async def gather(
        self,
        page: Page,
        collection: AsyncIOMotorCollection[Document],
        query: dict[str, Any],
        belongs: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Fill the page from the buckets `query` finds (a conversation's), latest first,
        until no bucket left can hold a message newer than the page's oldest (buckets
        may overlap in time: a copy of acknowledged mail holds older messages than the
        chat archived before it). `belongs`: which entries of a bucket are the
        conversation's (a bucket of direct messages holds many pairs')."""
        query = dict(query)
        if page.before is not None:
            query["first"] = {"$lte": stamp_ms(page.before[0])}
        ends: dict[str, int] = {}
        if page.after is not None:
            ends["$gte"] = stamp_ms(page.after[0])
            query["last"] = dict(ends)
        wanted, read, found = FIRST_BUCKETS, 0, 0
        oldest: int | None = None
        tied: list[str] = []  # the buckets read that end at `oldest`, the latest end left
        while True:
            docs = await collection.find(query).sort("last", DESCENDING).limit(wanted).to_list(None)
            for doc in docs:
                if page.complete_before(ms_text(doc["last"])):
                    return
                entries = doc["messages"] if belongs is None else [e for e in doc["messages"] if belongs(e)]
                page.add(from_history_entry(e) for e in entries)
                read, found = read + 1, found + len(entries)
                if doc["last"] != oldest:
                    oldest, tied = doc["last"], []
                tied.append(doc["_id"])
            if len(docs) < wanted or oldest is None:
                return
            # The next round: buckets that end no later, but not those read already.
            query["last"] = {**ends, "$lte": oldest}
            query["_id"] = {"$nin": tied}
            missing = page.limit - len(page.messages)
            wanted = max(FIRST_BUCKETS, min(MOST_BUCKETS, -(-missing * read // max(found, 1)) + 1))

    async def clear_history(self, user: str) -> int:
        """Delete the delivered messages the user sent or received, from every bucket
        that holds some (read, rewrite what is left, delete what is emptied: clearing is
        rare), and their conversations' newest messages; pending mail stays. Returns how
        many messages went (each id once)."""
        removed: set[str] = set()
        emptied: list[str] = []
        key = user.lower()

        def involves(entry: dict[str, Any]) -> bool:
            return key in (entry["sender"].lower(), entry["destination"].lower())

        # Ids first, then one bucket at a time: no cursor open while buckets change.
        found = await self.history_buckets.find({"users": key}, {"_id": 1}).to_list(None)
        for bucket_ref in found:
            doc = await self.history_buckets.find_one({"_id": bucket_ref["_id"]})
            if doc is None:
                continue
            kept = [e for e in doc["messages"] if not involves(e)]
            removed.update(e["id"] for e in doc["messages"] if involves(e))
            if not kept:
                emptied.append(doc["_id"])
            elif len(kept) < len(doc["messages"]):
                rest = {k: v for k, v in bucket(kept, doc["archived_at"]).items() if k != "_id"}
                await self.history_buckets.replace_one({"_id": doc["_id"]}, rest)
        if emptied:
            await self.history_buckets.delete_many({"_id": {"$in": emptied}})
        # The user's conversations keep no copy of what went: their newest messages are
        # now those still pending, if any (room history is the room's, and stays).
        await self.direct.delete_many({"users": key})
        for field in ("destination_key", "sender_key"):
            await self.note_direct([history_entry(doc) for doc in await self.mailbox.find({field: key}).to_list(None)])
        return len(removed)

    async def sweep_expired(self) -> int:
        """Delete all expired mail (the TTL index does this on a real MongoDB)."""
        result = await self.mailbox.delete_many({"expires_at": {"$lte": utcnow()}})
        return result.deleted_count

    async def history_count(self) -> int:
        """How many messages the history buckets hold (a sum of their counts)."""
        pipeline = [{"$group": {"_id": None, "n": {"$sum": "$count"}}}]
        result = await self.history_buckets.aggregate(pipeline).to_list(None)
        return int(result[0]["n"]) if result else 0

    async def counts(self) -> dict[str, int]:
        """Pending mail, every stored message (history and pending), subscriptions."""
        pending = await self.pending_count()
        return {
            "pending": pending,
            "messages": await self.history_count() + pending,
            "subscriptions": await self.subscriptions.estimated_document_count(),
        }

    # --- subscriptions ---------------------------------------------------------------------

    # A subscription is keyed by both names lower-cased; the user's name is kept as
    # spelled when subscribing.

    async def subscribers(self, service: str) -> list[str]:
        docs = await self.subscriptions.find({"service": service.lower()}, {"user": 1}).to_list(None)
        return sorted(doc["user"] for doc in docs)

    async def subscribe(self, service: str, user: str) -> bool:
        """True when the subscription is new (in any spelling of the names)."""
        doc = {"_id": f"{service}|{user}".lower(), "service": service.lower(), "user": user}
        try:
            await self.subscriptions.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def unsubscribe(self, service: str, user: str) -> bool:
        """True when there was a subscription to remove."""
        result = await self.subscriptions.delete_one({"_id": f"{service}|{user}".lower()})
        return result.deleted_count > 0

    # --- bot state --------------------------------------------------------------------------
    # Values are kept as JSON text so every JSON value reads back exactly as written
    # (no store-specific typing of booleans or nested documents). Owner and key are
    # names (a bot's, a user's), lower-cased.

    async def get_state(self, owner: str, key: str) -> Any:
        doc = await self.state.find_one({"_id": f"{owner}|{key}".lower()})
        return None if doc is None else json.loads(doc["value"])

    async def put_state(self, owner: str, key: str, value: Any) -> None:
        owner, key = owner.lower(), key.lower()
        await self.state.update_one(
            {"_id": f"{owner}|{key}"},
            {"$set": {"owner": owner, "key": key, "value": json.dumps(value), "updated_at": utcnow()}},
            upsert=True,
        )

    async def delete_state(self, owner: str, key: str) -> bool:
        result = await self.state.delete_one({"_id": f"{owner}|{key}".lower()})
        return result.deleted_count > 0

    # --- used names ----------------------------------------------------------------------------

    async def record_names(self, names: Iterable[str]) -> None:
        """These names have been used (logged in, or hold an account); the first spelling
        seen is kept. A name this process recorded already costs no write (nothing reads
        `last_seen`, which is when a process first saw it used): a storm of returning
        guests makes no writes."""
        now = utcnow()
        for name in names:
            key = name.lower()
            if key in self._recorded:
                continue
            await self.names.update_one({"_id": key}, {"$setOnInsert": {"name": name, "first_seen": now}, "$set": {"last_seen": now}}, upsert=True)
            if len(self._recorded) >= MAX_RECORDED_NAMES:
                self._recorded.clear()  # forgotten names are written once more, which is harmless
            self._recorded.add(key)

    async def unknown_names(self, names: Iterable[str]) -> list[str]:
        """The names (as given, each once, in order) nobody has used in any spelling."""
        given = {name.lower(): name for name in reversed(list(names))}
        if not given:
            return []
        found = {doc["_id"] for doc in await self.names.find({"_id": {"$in": list(given)}}, {"_id": 1}).to_list(None)}
        return [name for key, name in reversed(given.items()) if key not in found]
