"""The store's layouts before, moved into today's when the message API opens the store
(`migrate`, from `Store.ensure_indexes`). Each step finds nothing to do on a new
database, and each can run again: a move cut short stores nothing twice (bundles and
buckets take their ids from their messages). Kept apart so that the day a layout is
no longer met, its move goes whole.

    messages   per-message history and pending mail (status "pending"): history moves
               into buckets, pending mail to the mailbox; then it is dropped.
    mailbox    one document per pending message: moved into bundles in `mail`.
    names      data stored while names were case-sensitive is keyed lower-cased, once
               (a marker in `meta`).
"""

from __future__ import annotations

import logging
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from pymongo import ASCENDING
from pymongo.errors import OperationFailure

from chatnet.keys import pair_key
from chatnet.protocol import history_entry, utcnow
from chatnet.store_documents import bucket, bundles_of, keyed

if TYPE_CHECKING:
    from collections.abc import Mapping

    from chatnet.store import Store

logger = logging.getLogger("chatnet.store")

# The status of mail not yet handed over, in the `messages` layout.
PENDING: Final = "pending"
# Old per-message history moves into buckets this big at start-up.
MIGRATION_BUCKET: Final = 1000
# The marker in `meta` saying that names were folded to lower case (see `_fold_names`).
NAMES_FOLDED: Final = "names_folded"

# Ties within a millisecond fall back to the id, which the chat server makes in
# sending order, so a conversation reads back in the order it was written.
OLDEST_FIRST = [("timestamp", ASCENDING), ("_id", ASCENDING)]


async def migrate(store: Store) -> None:
    """Every older layout moved into today's, in this order: pending mail leaves
    `messages` before the rest of it becomes history, and the mailbox is keyed by the
    folded names before it is bundled."""
    await _move_old_pending_mail(store)
    await _move_old_history(store)
    await _fold_names(store)
    await _bundle_old_mail(store)


def as_mail(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A pending document of the old layout (in `messages`) as a mail document."""
    mail = {key: value for key, value in doc.items() if key not in ("status", "pair", "metadata")}
    if doc.get("metadata"):
        mail["metadata"] = doc["metadata"]
    return keyed(mail)


async def _move_old_pending_mail(store: Store) -> None:
    """Mail stored pending in `messages` (the old layout) moves to the mailbox, and
    the indexes only that layout needed go. Nothing to do on a new database."""
    old = await store.messages.find({"status": PENDING}).to_list(None)
    if old:
        await store.insert_new(store.mailbox, [as_mail(doc) for doc in old])
        await store.messages.delete_many({"_id": {"$in": [doc["_id"] for doc in old]}, "status": PENDING})
        logger.info("moved %d pending messages to the mailbox", len(old))


async def _bundle_old_mail(store: Store) -> None:
    """Mail stored one message per document (the mailbox, the layout before) moves
    into bundles, a recipient's oldest first, and reaches the conversation lists;
    then the old documents go. A move cut short and run again stores nothing twice
    (a bundle's id comes from its messages). Nothing to do on a new database."""
    old = await store.mailbox.find({}).to_list(None)
    if not old:
        return
    old.sort(key=lambda doc: (doc["timestamp"], doc["_id"]))
    by_expiry: dict[datetime | None, list[dict[str, Any]]] = {}
    for doc in old:
        by_expiry.setdefault(doc.get("expires_at"), []).append(history_entry(doc))
    for expires_at, entries in by_expiry.items():
        await store.insert_new(store.mail, bundles_of(entries, expires_at))
        await store.previews.note_direct(entries, now=True)
    await store.mailbox.delete_many({"_id": {"$in": [doc["_id"] for doc in old]}})
    logger.info("moved %d pending messages into bundles", len(old))


async def _move_old_history(store: Store) -> None:
    """History stored one message per document in `messages` (the old layout) moves
    into buckets, oldest first, a bucket at a time (a bucket's id comes from its
    messages, so a move cut short and run again stores nothing twice); then the
    emptied collection and its indexes go. Nothing to do on a new database."""
    moved = 0
    while old := await store.messages.find({}).sort(OLDEST_FIRST).limit(MIGRATION_BUCKET).to_list(None):
        await store.insert_new(store.history_buckets, [bucket([history_entry(doc) for doc in old], utcnow())])
        await store.messages.delete_many({"_id": {"$in": [doc["_id"] for doc in old]}})
        moved += len(old)
    if moved:
        logger.info("moved %d messages of history into buckets", moved)
    if "messages" in await store.db.list_collection_names():
        try:
            await store.messages.drop()
        except OperationFailure as exc:
            logger.warning("could not drop the emptied collection messages: %s", exc)


async def _fold_names(store: Store) -> None:
    """Data stored while names were case-sensitive is keyed by its names lower-cased,
    once (a marker in `meta` says it was done; every step can run again, so a fold
    cut short is simply redone): mail gains its keys, buckets their lower-cased
    pairs and users, subscriptions and state their lower-cased ids (where two
    spellings meet, one subscription is kept, and the state written last). The
    names seen in mail and history count as used. Nothing to do on a new database
    but writing the marker."""
    if await store.meta.find_one({"_id": NAMES_FOLDED}) is not None:
        return
    used: set[str] = set()
    mail = await store.mailbox.find({}, {"destination": 1, "sender": 1}).to_list(None)
    for destination, sender in {(doc["destination"], doc["sender"]) for doc in mail}:
        keys = {"destination_key": destination.lower(), "sender_key": sender.lower()}
        await store.mailbox.update_many({"destination": destination, "sender": sender}, {"$set": keys})
        used.add(keys["sender_key"])
    await _drop_old_mail_indexes(store)
    buckets = await store.history_buckets.find({}, {"pairs": 1, "users": 1}).to_list(None)
    for doc in buckets:
        pairs = sorted({pair_key(*pair.split("|")) for pair in doc["pairs"]})
        users = sorted({user.lower() for user in doc["users"]})
        used.update(users)
        if pairs != doc["pairs"] or users != doc["users"]:
            await store.history_buckets.update_one({"_id": doc["_id"]}, {"$set": {"pairs": pairs, "users": users}})
    for sub in await store.subscriptions.find({}).to_list(None):
        folded = {"_id": sub["_id"].lower(), "service": sub["service"].lower(), "user": sub["user"]}
        if folded["_id"] != sub["_id"] or folded["service"] != sub["service"]:
            # Out first: the unique (service, user) index would find it in the way.
            await store.subscriptions.delete_one({"_id": sub["_id"]})
            await store.insert_new(store.subscriptions, [folded])
    for doc in await store.state.find({}).sort("updated_at", ASCENDING).to_list(None):
        if doc["_id"] != doc["_id"].lower():
            folded = {**doc, "_id": doc["_id"].lower(), "owner": doc["owner"].lower(), "key": doc["key"].lower()}
            await store.state.replace_one({"_id": folded["_id"]}, folded, upsert=True)  # oldest first: the last wins
            await store.state.delete_one({"_id": doc["_id"]})
    now = utcnow()
    await store.insert_new(store.names, [{"_id": name, "name": name, "first_seen": now} for name in sorted(used)])
    await store.meta.update_one({"_id": NAMES_FOLDED}, {"$set": {"at": now}}, upsert=True)
    if mail or buckets:
        logger.info("names folded to lower case: %d pending messages, %d history buckets", len(mail), len(buckets))


async def _drop_old_mail_indexes(store: Store) -> None:
    """The mailbox's indexes on names as spelled go (their successors are on the
    keys). Found by their fields: the embedded store names indexes itself."""
    old = [["destination", "timestamp"], ["destination", "sender", "type", "timestamp"]]
    async for index in store.mailbox.list_indexes():
        if list(index["key"]) in old:
            with suppress(OperationFailure):  # dropped meanwhile by another API process
                await store.mailbox.drop_index(index["name"])
