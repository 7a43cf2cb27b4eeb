"""The shapes of the store's mail and history documents, and reading them back (pure:
no database). A mail bundle holds one stored batch for one recipient; a history bucket,
one archived batch. Both keep their messages as one JSON text (the embedded store's
cost is per document, and per value nested in it), and both take their `_id` from the
ids they hold, so a retried batch is not stored twice. `chatnet.store` writes and reads
them; `chatnet.rooms_store` reads the buckets of rooms."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from chatnet.keys import epoch_ms, message_key, pair_key
from chatnet.protocol import dumps, parse_timestamp

Document = dict[str, Any]

# The most messages in one bucket (an API batch holds at most 1000): a bucket is read
# whole, so a bigger one would make a short page of history cost more.
MAX_BUCKET: Final = 1000


def counts_as_unread(doc: Mapping[str, Any]) -> bool:
    """Chat counts as unread; a service's readings (subscription messages) do not."""
    return bool(doc.get("type", "chat") == "chat")


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
    (`pairs`) and people (`users`) in it, for the indexes that find it. The entries are
    one JSON text, as in a mail bundle (see `mail_bundle`): a bucket of 1,000 entries as
    documents cost the embedded store ~20 ms of CPU to insert, enough to hold up live
    routing on a small machine. `bucket_entries` reads them."""
    stamps = [e["timestamp"] for e in entries]
    return {
        "_id": bucket_id(e["id"] for e in entries),
        "first": epoch_ms(parse_timestamp(min(stamps))),
        "last": epoch_ms(parse_timestamp(max(stamps))),
        "count": len(entries),
        "pairs": sorted({pair_key(e["sender"], e["destination"]) for e in entries}),
        "users": sorted({e["sender"].lower() for e in entries} | {e["destination"].lower() for e in entries}),
        "archived_at": now,
        "messages": dumps(entries),
    }


def bucket_entries(doc: Document) -> list[dict[str, Any]]:
    """A history bucket's entries (JSON text; a list in buckets stored before)."""
    messages = doc["messages"]
    return json.loads(messages) if isinstance(messages, str) else list(messages)


def mail_bundle(key: str, entries: list[dict[str, Any]], expires_at: datetime | None) -> dict[str, Any]:
    """One mail document for a batch of one recipient's messages (history entries, in
    sending order): the recipient's key and the senders' (what finds it), how many,
    and `rev`, which every change moves on (see `Store._remove`).

    The messages are kept as one JSON text: the embedded store copies, encodes and
    walks every nested value of a document on each write and read (a 500-message
    bundle of documents took it ~16 ms to insert), and what `$set` writes reads back
    exactly (a boolean in metadata would come back as 1). `opened` decodes it."""
    doc: dict[str, Any] = {
        "_id": bucket_id([key, *(e["id"] for e in entries)]),
        "destination_key": key,
        "senders": sorted({e["sender"].lower() for e in entries}),
        "count": len(entries),
        "rev": 0,
        "messages": dumps(entries),
    }
    if expires_at is not None:
        doc["expires_at"] = expires_at
    return doc


def opened(doc: Document) -> Document:
    """A mail bundle as read, its messages decoded (in place)."""
    doc["messages"] = json.loads(doc["messages"])
    return doc


def bundles_of(entries: Iterable[dict[str, Any]], expires_at: datetime | None) -> list[dict[str, Any]]:
    """Bundles for messages in sending order: one per recipient (and MAX_BUCKET)."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_key.setdefault(entry["destination"].lower(), []).append(entry)
    return [mail_bundle(key, mine[i : i + MAX_BUCKET], expires_at) for key, mine in by_key.items() for i in range(0, len(mine), MAX_BUCKET)]


def unrolled(bundles: Iterable[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The live messages of these bundles, each id once, oldest first (by key: bundles
    may overlap in time, e.g. live messages a broken session never had, stored later)."""
    seen: set[str] = set()
    entries: list[dict[str, Any]] = []
    for doc in bundles:
        if doc.get("expires_at") is not None and doc["expires_at"] <= now:
            continue
        for entry in doc["messages"]:
            if entry["id"] not in seen:
                seen.add(entry["id"])
                entries.append(entry)
    entries.sort(key=message_key)  # bundles come in sending order: nearly sorted, so cheap
    return entries
