"""The storage layer: with the `*_store` modules and `store_migrations` beside it, the only code that talks to MongoDB (through motor).

Collections (in `Settings.mongo_db`):

    mail           offline mail not yet handed over, and nothing else: it stays small,
                   so fetching and counting a user's mail costs the same however long
                   the history grows. One document per stored batch and recipient
                   (see `store_documents.mail_bundle`): the messages in it, in sending order, as
                   history entries. The embedded store's cost is per document (a
                   batch of 1000 one-message documents took it ~0.2 s; one bundle, a
                   few ms). An acknowledgement takes the ids it names out of their
                   bundles; an emptied bundle is deleted.
    history        delivered messages (archived live chat and acknowledged mail) in
                   buckets: one document per archived batch, holding the messages as
                   one JSON text (as a mail bundle does) with what finds them (see
                   `store_documents.bucket`). One insert stores a whole batch: the embedded store's
                   cost is per document, and per value nested in it.
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
                   its `seq_of`), kept by `archive` and `store_mail` through
                   `chatnet.previews_store`: where a user's list of conversations is
                   read from (see `chatnet.rooms_store`).
    meta           markers of start-up migrations done.
    messages       the layouts before: per-message history and pending mail. Moved to
                   `history` and `mail` when the store opens it, then dropped
                   (`chatnet.store_migrations`, as every move of an older layout).
    mailbox        the layout before: one document per pending message (its `_id` the
                   message id). Moved into bundles in `mail` when the store opens it.

Names are case-insensitive: what finds a person is the name lower-cased, and what is
shown keeps its spelling. A mail bundle carries `destination_key` and `senders` (keys)
beside the messages' `destination` and `sender`; a bucket's `pairs` and `users` are
lower-cased (the messages in it keep their spelling); subscriptions, state and
accounts are keyed by the names lower-cased. Data stored before this is moved over
once, at start-up (`chatnet.store_migrations`).

A mail bundle's `_id` is made from its recipient and the ids it holds, and a bucket's
from the ids it holds, so a retried batch is not stored twice; a message caught in two
bundles or buckets is shown once (mail and history are read by message id), and an
acknowledgement takes it out of every bundle of the recipient that holds it. A
bundle only ever shrinks, and each change is made only if the bundle is still as it
was read (its `rev`), so two acknowledgements at once never undo each other. Statuses
are strings and delivery is a timestamp, never a boolean flag: the
embedded store (nx-27017) reads a boolean written with `$set` back as 1.

Rooms, read markers and conversation lists are `chatnet.rooms_store`'s, over this; the
newest message of each pair is written by `chatnet.previews_store`, which this uses.

History pages by key: (timestamp, id), so a page boundary inside a burst of messages
sharing one millisecond skips and repeats nothing; `encode_cursor` makes a key an opaque
cursor for clients, `seq_of` one text the store compares exactly (both, with the other
keys and `Page`, in `chatnet.keys`).

Expired mail is never returned: reads leave out what has expired, whether or not the
TTL index on `expires_at` has removed it yet (MongoDB's TTL monitor runs once a
minute; the embedded store purges on reads), and `sweep_expired` deletes it. A
bundle's messages share one expiry: they came in one request, with one `ttl_seconds`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import ASCENDING, DESCENDING, DeleteOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from chatnet.keys import Key, Page, epoch_ms, message_key, ms_text, pair_key, stamp_ms
from chatnet.limits import MAX_UNREAD
from chatnet.previews_store import PreviewStore
from chatnet.protocol import MessageLike, dumps, from_history_entry, history_entry, utcnow
from chatnet.store_documents import MAX_BUCKET, Document, bucket, bucket_entries, bundles_of, counts_as_unread, opened, unrolled
from chatnet.store_migrations import migrate

logger = logging.getLogger("chatnet.store")

DUPLICATE_KEY: Final = 11000

# Short, so a route answers 503 quickly while the database is away; the heartbeat
# notices its return within a second.
SERVER_SELECTION_MS: Final = 2000
HEARTBEAT_MS: Final = 1000

# Buckets fetched in the first round trip while a page of history is gathered, and at
# most in any later one (which asks for as many as the pair's share of the buckets read
# so far says are missing). Rounds with a limit rather than one open cursor: the
# embedded store reads every match of a query without a limit before it answers, and
# a bucket costs it milliseconds to read.
FIRST_BUCKETS: Final = 4
MOST_BUCKETS: Final = 64
# An acknowledgement retakes what a racing one changed first; more rounds than this
# means the bundles never stay as read (a bug, not contention).
MAX_REMOVE_ROUNDS: Final = 20
# Names remembered as recorded (see `Store.record_names`): a set of short keys, a few MB at most.
MAX_RECORDED_NAMES: Final = 100_000


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


class Store:
    """Offline mail, history, subscriptions, bot state and used names over one MongoDB
    database, and every collection's indexes (accounts: `chatnet.accounts_store`; rooms:
    `chatnet.rooms_store`; the conversation previews: `chatnet.previews_store`)."""

    def __init__(self, client: AsyncIOMotorClient[Document], db_name: str) -> None:
        self.client = client
        self.db: AsyncIOMotorDatabase[Document] = client[db_name]
        self.mail: AsyncIOMotorCollection[Document] = self.db["mail"]
        self.mailbox: AsyncIOMotorCollection[Document] = self.db["mailbox"]  # the layout before
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
        self.previews = PreviewStore(self.direct, self.forward)  # the conversation previews, in `direct`

    @classmethod
    def open(cls, url: str, db_name: str) -> Store:
        return cls(connect(url), db_name)

    def close(self) -> None:
        """Close the client (`previews.write_direct` first writes what is still waiting)."""
        self.previews.close()
        self.client.close()

    async def ensure_indexes(self) -> None:
        """One index per query (creating an existing index is a no-op), once the
        older layouts have moved into today's (`chatnet.store_migrations`)."""
        if self.indexes_ready:
            return
        await migrate(self)
        # A recipient's bundles are read whole and ordered here (they are few: a bundle
        # holds up to MAX_BUCKET messages). `senders` is indexed behind another field
        # for the embedded store's sake (see `users` below).
        await self.mail.create_index("destination_key", name="destination_key")
        await self.mail.create_index([("senders", ASCENDING), ("destination_key", ASCENDING)], name="senders_key")
        # Real MongoDB removes expired mail by itself; reads filter it out everywhere.
        await self.mail.create_index("expires_at", name="ttl", expireAfterSeconds=0)
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

    async def store_mail(self, messages: Iterable[MessageLike], ttl_seconds: int | None = None, keep_latest: int | None = None) -> list[str]:
        """Put offline mail in the mail collection, one bundle per recipient (one
        insert for the batch); returns the ids (stored now or before)."""
        expires_at = utcnow() + timedelta(seconds=ttl_seconds) if ttl_seconds else None
        entries = [history_entry(m) for m in messages]
        await self._insert(self.mail, bundles_of(entries, expires_at))
        await self.previews.note_direct(entries)
        if keep_latest is not None:
            groups: dict[str, set[tuple[str, str]]] = {}
            for e in entries:
                groups.setdefault(e["destination"].lower(), set()).add((e["sender"].lower(), e["type"]))
            for key, kinds in groups.items():
                await self._keep_latest(key, kinds, keep_latest)
        return [e["id"] for e in entries]

    async def _keep_latest(self, key: str, kinds: set[tuple[str, str]], keep: int) -> None:
        """Only the newest `keep` of the recipient's pending mail of each (sender key, type)."""
        bundles = await self._bundles(key)
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for entry in unrolled(bundles, utcnow()):
            kind = (entry["sender"].lower(), entry["type"])
            if kind in kinds:
                groups.setdefault(kind, []).append(entry)
        old = {e["id"] for entries in groups.values() for e in entries[: max(0, len(entries) - keep)]}
        if old:
            await self._remove(key, bundles, old)

    async def archive(self, messages: Iterable[MessageLike]) -> int:
        """Store delivered live chat between people (not rooms': see
        `chatnet.rooms_store`) for the history view, a bucket per batch (of at most
        MAX_BUCKET); returns how many were given."""
        entries = [history_entry(m) for m in messages]
        await self._store_buckets(entries)
        await self.previews.note_direct(entries)
        return len(entries)

    async def archive_delivered(self, docs: list[dict[str, Any]]) -> None:
        """Copy acknowledged mail (entries as its bundles hold them) into the history."""
        await self._store_buckets([history_entry(doc) for doc in docs])

    async def _store_buckets(self, entries: list[dict[str, Any]]) -> None:
        now = utcnow()
        buckets = [bucket(entries[i : i + MAX_BUCKET], now) for i in range(0, len(entries), MAX_BUCKET)]
        await self._insert(self.history_buckets, buckets)

    # --- offline mail ---------------------------------------------------------------------

    async def _find_bundles(self, query: Document) -> list[Document]:
        """The mail bundles `query` finds, their messages decoded."""
        return [opened(doc) for doc in await self.mail.find(query).to_list(None)]

    async def _bundles(self, key: str) -> list[Document]:
        """The recipient's (by key) mail bundles."""
        return await self._find_bundles({"destination_key": key})

    async def pending_bundles(self, user: str) -> list[Document]:
        """The user's mail bundles (`unrolled` gives the mail in them), for a caller that
        hands them back to `take_mail` as `known`."""
        return await self._bundles(user.lower())

    async def pending_page(self, user: str, limit: int = 100) -> tuple[list[dict[str, Any]], int]:
        """The user's pending mail, oldest first (history entries, at most `limit`), and
        how much is pending in all (live, each id once): one read of the user's bundles.
        Mail that expired since the last sweep is left out rather than deleted first:
        one statement less on the way to a user who is logging in."""
        entries = unrolled(await self._bundles(user.lower()), utcnow())
        return entries[:limit], len(entries)

    async def pending(self, user: str, limit: int = 100) -> list[dict[str, Any]]:
        """The user's pending mail, oldest first, as Message-shaped dicts."""
        return [from_history_entry(e) for e in (await self.pending_page(user, limit))[0]]

    async def pending_pages(self, users: Iterable[str], budget: int) -> tuple[dict[str, int], dict[str, list[Document]]]:
        """A login storm's first look, in two queries whatever the number of users: how
        much is pending for each of these users that has any (by key; one aggregation on
        the bundles' counts), and the bundles of those whose mail fits within `budget`
        messages in all (smallest first; one find; `unrolled` gives the mail in them).
        Users with nothing pending cost no more than their key in the `$in`."""
        keys = sorted({user.lower() for user in users})
        if not keys:
            return {}, {}
        pipeline: list[Document] = [{"$match": {"destination_key": {"$in": keys}}}, {"$group": {"_id": "$destination_key", "n": {"$sum": "$count"}}}]
        totals = {doc["_id"]: int(doc["n"]) for doc in await self.mail.aggregate(pipeline).to_list(None)}
        whole: list[str] = []
        for key, count in sorted(totals.items(), key=lambda item: item[1]):
            if count > budget:
                break
            whole.append(key)
            budget -= count
        bundles: dict[str, list[Document]] = {key: [] for key in whole}
        if whole:
            for doc in await self._find_bundles({"destination_key": {"$in": whole}}):
                bundles[doc["destination_key"]].append(doc)
        return totals, bundles

    async def count(self, collection: AsyncIOMotorCollection[Document], query: dict[str, Any]) -> int:
        # An aggregate $count: the embedded store answers count_documents with a scan of the
        # whole collection in Python (≈ 18 ms at 1,000 room members, this 0.6 ms).
        result = await collection.aggregate([{"$match": query}, {"$count": "n"}]).to_list(None)
        return result[0]["n"] if result else 0

    async def pending_count(self, user: str | None = None) -> int:
        """How much mail is pending (for one user, or for everyone): the bundles' counts
        (a message stored in two bundles counts twice here; reads count it once)."""
        query: Document = {} if user is None else {"destination_key": user.lower()}
        pipeline: list[Document] = [{"$match": query}, {"$group": {"_id": None, "n": {"$sum": "$count"}}}]
        result = await self.mail.aggregate(pipeline).to_list(None)
        return int(result[0]["n"]) if result else 0

    async def take_mail(self, user: str, ids: list[str], known: Mapping[str, Document] | None = None) -> tuple[int, list[dict[str, Any]]]:
        """Take the user's mail with these ids out of its bundles, into the history: how
        many went, and the messages as they were (history entries). Bundles
        the caller read lately (`known`, by bundle id, as `pending_bundles` gave them)
        are not read again when they hold every id; otherwise the user's bundles are
        read, in one find. A known bundle that changed since is read again anyway."""
        key = user.lower()
        wanted = set(ids)
        mine = [doc for doc in (known or {}).values() if doc["destination_key"] == key]
        held = {e["id"] for doc in mine for e in doc["messages"]}
        bundles = mine if wanted <= held else await self._bundles(key)
        taken = await self._remove(key, bundles, wanted, delivered=True)
        return len(taken), taken

    async def _remove(self, key: str, bundles: list[Document], wanted: set[str], delivered: bool = False) -> list[dict[str, Any]]:
        """Take the messages with these ids out of these bundles of the recipient (as
        read): one bulk write, each bundle rewritten (or, emptied, deleted) only if it
        is still as read (`rev`); those that changed meanwhile are read again and done
        again. The messages taken (by id, once each; one that a racing removal took
        first may be counted by both).

        `delivered` (an ack, not a trim): each is copied into the history before its
        bundle changes, so a reader of the history (or of an unread count) finds it in
        one place or the other, and for a moment in both (history reads go by id),
        never in neither; a copy made twice by racing removals shows once too. A copy
        that fails leaves the mail pending."""
        taken: dict[str, dict[str, Any]] = {}
        for _ in range(MAX_REMOVE_ROUNDS):
            ops: list[UpdateOne | DeleteOne] = []
            touched: list[str] = []
            copies: list[dict[str, Any]] = []
            for doc in bundles:
                hit = [e for e in doc["messages"] if e["id"] in wanted]
                if not hit:
                    continue
                if delivered:
                    copies += [e for e in hit if e["id"] not in taken]
                rest = [e for e in doc["messages"] if e["id"] not in wanted]
                same = {"_id": doc["_id"], "destination_key": key, "rev": doc["rev"]}
                if rest:
                    senders = sorted({e["sender"].lower() for e in rest})
                    change = {"messages": dumps(rest), "count": len(rest), "senders": senders, "rev": doc["rev"] + 1}
                    ops.append(UpdateOne(same, {"$set": change}))
                else:
                    ops.append(DeleteOne(same))
                touched.append(doc["_id"])
                taken.update((e["id"], e) for e in hit)
            if not ops:
                return list(taken.values())
            if copies:
                await self.archive_delivered(copies)
            result = await self.mail.bulk_write(ops, ordered=False)
            if result.deleted_count + result.modified_count == len(ops):
                return list(taken.values())
            # Another removal changed some of them first: what is still there is taken again.
            bundles = await self._find_bundles({"_id": {"$in": touched}, "destination_key": key})
        raise RuntimeError(f"mail of {key}: bundles kept changing while acknowledged ids were taken out")

    async def ack(self, user: str, ids: list[str]) -> int:
        """Acknowledge mail: out of the mailbox, into the history; how many."""
        removed, _ = await self.take_mail(user, ids)
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
            page.add(from_history_entry(e) for e in await self._mail_between(sender, destination, limit + 1, before, after))
        pair = pair_key(user, peer)
        await self.gather(page, self.history_buckets, {"pairs": pair}, lambda e: pair_key(e["sender"], e["destination"]) == pair)
        docs = page.result()
        return docs[:limit], len(docs) > limit

    async def _mail_between(self, sender: str, destination: str, limit: int, before: Key | None, after: Key | None = None) -> list[dict[str, Any]]:
        """The newest `limit` live pending messages from sender to destination (keys)
        placed between the bounds, as history entries: the destination's bundles that
        hold mail from the sender, filtered by key (exact: entries hold protocol text)."""
        docs = await self._find_bundles({"senders": sender, "destination_key": destination})
        entries = [
            e
            for e in unrolled(docs, utcnow())
            if e["sender"].lower() == sender and (before is None or message_key(e) < before) and (after is None or message_key(e) > after)
        ]
        return entries[::-1][:limit]

    async def direct_unread(self, user: str, peer: str, after: Key | None) -> int:
        """How many messages from `peer` to `user` are placed after `after` (a read
        marker; None: nothing read), counting no further back than MAX_UNREAD messages
        of the conversation (chat only: a service's readings are not unread)."""
        docs, _ = await self.history_page(user, peer, MAX_UNREAD, None, after)
        return sum(1 for doc in docs if doc["sender"].lower() == peer.lower() != user.lower() and counts_as_unread(doc))

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
                entries = bucket_entries(doc)
                if belongs is not None:
                    entries = [e for e in entries if belongs(e)]
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
            entries = bucket_entries(doc)
            kept = [e for e in entries if not involves(e)]
            removed.update(e["id"] for e in entries if involves(e))
            if not kept:
                emptied.append(doc["_id"])
            elif len(kept) < len(entries):
                rest = {k: v for k, v in bucket(kept, doc["archived_at"]).items() if k != "_id"}
                await self.history_buckets.replace_one({"_id": doc["_id"]}, rest)
        if emptied:
            await self.history_buckets.delete_many({"_id": {"$in": emptied}})
        # The user's conversations keep no copy of what went: their newest messages are
        # now those still pending, if any (room history is the room's, and stays).
        await self.previews.write_direct()  # nothing waiting may bring a deleted message back
        await self.direct.delete_many({"users": key})
        for query in ({"destination_key": key}, {"senders": key}):
            docs = await self._find_bundles(query)
            await self.previews.note_direct([e for e in unrolled(docs, utcnow()) if involves(e)], now=True)
        return len(removed)

    async def sweep_expired(self) -> int:
        """Delete all expired mail (the TTL index does this on a real MongoDB); about
        how many messages went (what was there when counted)."""
        expired = {"expires_at": {"$lte": utcnow()}}
        pipeline: list[Document] = [{"$match": expired}, {"$group": {"_id": None, "n": {"$sum": "$count"}}}]
        found = await self.mail.aggregate(pipeline).to_list(None)
        await self.mail.delete_many(expired)
        return int(found[0]["n"]) if found else 0

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
        new: dict[str, str] = {}
        for name in names:
            key = name.lower()
            if key not in self._recorded:
                new.setdefault(key, name)
        if not new:
            return
        # One request for all of them (a batch of logins): the embedded store takes a
        # bulk of upserts at a tenth of what as many requests cost.
        ops = [UpdateOne({"_id": key}, {"$setOnInsert": {"name": name, "first_seen": now}, "$set": {"last_seen": now}}, upsert=True) for key, name in new.items()]
        await self.names.bulk_write(ops, ordered=False)
        if len(self._recorded) + len(new) > MAX_RECORDED_NAMES:
            self._recorded.clear()  # forgotten names are written once more, which is harmless
        self._recorded.update(new)

    async def unknown_names(self, names: Iterable[str]) -> list[str]:
        """The names (as given, each once, in order) nobody has used in any spelling."""
        given = {name.lower(): name for name in reversed(list(names))}
        if not given:
            return []
        found = {doc["_id"] for doc in await self.names.find({"_id": {"$in": list(given)}}, {"_id": 1}).to_list(None)}
        return [name for key, name in reversed(given.items()) if key not in found]
