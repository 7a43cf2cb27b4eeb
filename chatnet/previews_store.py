"""The conversation previews, in the store: for each pair of people who wrote to each
other, their newest message, in `direct` (one of `chatnet.store`'s collections: see
there for its documents). A user's list of conversations is read from them (see
`chatnet.rooms_store`). `Store` notes here each direct message it stores; the writes
wait DIRECT_LAG, so each pair costs one update however many batches came meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from motor.motor_asyncio import AsyncIOMotorCollection
from pymongo import UpdateOne
from pymongo.errors import PyMongoError

from chatnet.keys import message_key, pair_key, seq_of
from chatnet.protocol import dumps
from chatnet.store_documents import Document

logger = logging.getLogger("chatnet.store")

# `Store.forward`: move a `seq_of` field of documents forward, never back; the ids moved.
Forward = Callable[[AsyncIOMotorCollection[Document], str, Mapping[str, tuple[str, Document]]], Awaitable[set[str]]]

# Each pair's newest message reaches `direct` (the conversation lists) this long after
# the first message of the pairs then waiting: one update per pair, not one per batch
# (the embedded store spent half its CPU on them at 5,000 msg/s with one update per
# pair a second; at five seconds the store's CPU for that load halved again). A
# conversation list read meanwhile writes them first, so a read is never behind; a
# crash of this process within those seconds leaves those pairs' previews at their
# previous message until the next one (their history is whole).
DIRECT_LAG: Final = 5.0


class PreviewStore:
    """The newest message of each pair of people, in `direct` (the collection given),
    written through `forward` (the store's)."""

    def __init__(self, direct: AsyncIOMotorCollection[Document], forward: Forward) -> None:
        self.direct = direct
        self.forward = forward
        self._direct_due: dict[str, dict[str, Any]] = {}  # pair -> its newest entry, not yet in `direct`
        self._direct_writer: asyncio.Task[None] | None = None
        self._direct_turn = asyncio.Lock()  # one write at a time: a list read waits for one under way

    def close(self) -> None:
        """Stop a write waiting for DIRECT_LAG (`write_direct` first writes what is still waiting)."""
        if self._direct_writer is not None:
            self._direct_writer.cancel()

    async def note_direct(self, entries: Iterable[dict[str, Any]], now: bool = False) -> None:
        """Keep each pair's newest message (history entries of direct messages) in
        `direct`, where a user's list of conversations is read from: within DIRECT_LAG,
        or `now`."""
        due = self._direct_due
        for entry in entries:
            pair = pair_key(entry["sender"], entry["destination"])
            if pair not in due or message_key(entry) > message_key(due[pair]):
                due[pair] = entry
        if now:
            await self.write_direct()
        elif due and self._direct_writer is None:
            self._direct_writer = asyncio.get_running_loop().create_task(self._write_direct_later())

    async def _write_direct_later(self) -> None:
        try:
            while self._direct_due:
                await asyncio.sleep(DIRECT_LAG)
                try:
                    await self.write_direct()
                except PyMongoError as exc:  # kept: the next round (or a read) tries again
                    logger.warning("conversation lists not updated yet: %s", exc)
        finally:
            self._direct_writer = None

    async def write_direct(self) -> None:
        """Write the pairs' newest messages waiting for `direct` (what a conversation
        list read and shutdown do first). The message is kept as JSON text: what `$set`
        writes reads back exactly (a boolean in its metadata would come back from the
        embedded store as 1). On a failure they wait for the next write."""
        async with self._direct_turn:
            await self._write_direct()

    async def _write_direct(self) -> None:
        newest, self._direct_due = self._direct_due, {}
        wanted = {pair: (seq_of(message_key(e)), {"users": sorted(set(pair.split("|"))), "last": dumps(e)}) for pair, e in newest.items()}
        if not wanted:
            return
        try:
            # Most pairs are there already and behind: then one conditional update each,
            # in one request, does it. Otherwise `forward` reads them and does the rest
            # (what moved here stays).
            ops = [UpdateOne({"_id": pair, "last_seq": {"$lt": seq}}, {"$set": {"last_seq": seq, **fields}}) for pair, (seq, fields) in wanted.items()]
            if (await self.direct.bulk_write(ops, ordered=False)).modified_count < len(ops):
                await self.forward(self.direct, "last_seq", wanted)
        except BaseException:
            for pair, entry in newest.items():  # back, unless a newer one came meanwhile
                if pair not in self._direct_due or message_key(entry) > message_key(self._direct_due[pair]):
                    self._direct_due[pair] = entry
            raise

    async def direct_conversations(self, user: str, limit: int) -> list[Document]:
        """The user's pairs (documents of `direct`), the latest message first."""
        await self.write_direct()
        docs = await self.direct.find({"users": user.lower()}).to_list(None)
        docs.sort(key=lambda doc: doc["last_seq"], reverse=True)
        return docs[:limit]
