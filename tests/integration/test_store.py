"""The storage layer against whatever MongoDB `store_url` names (the embedded server by
default; CHATNET_TEST_MONGO_URL for another one)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from chatnet import previews_store
from chatnet.keys import decode_cursor, encode_cursor, epoch_ms, key_of, message_key, seq_of
from chatnet.message import Message
from chatnet.protocol import MessageType, format_datetime, from_history_entry, history_entry, mail_document, parse_timestamp, utcnow
from chatnet.rooms_store import RoomReason, RoomRefused, RoomStore, room_info
from chatnet.store import Store
from chatnet.store_documents import bucket, bucket_entries, keyed
from tests.support import eventually


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    store = Store.open(store_url, f"s{uuid.uuid4().hex[:12]}")
    await store.ensure_indexes()
    yield store
    await store.client.drop_database(store.db.name)
    store.close()


class Base:
    """What `mail()` counts from: an hour before the test began, one value for all of the
    test's messages (taken per call, a second ticking over between two batches made
    `seconds=1` of the later one equal `seconds=2` of the earlier)."""

    at = utcnow().replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture(autouse=True)
def base_time() -> None:
    Base.at = utcnow().replace(microsecond=0) - timedelta(hours=1)


def mail(sender: str, destination: str, text: str, seconds: float = 0, **fields: object) -> Message:
    """A message `seconds` after the test's base time, so order is deterministic."""
    return Message(sender=sender, destination=destination, message=text, timestamp=Base.at + timedelta(seconds=seconds), **fields)


async def test_pending_is_oldest_first_and_limited(store: Store) -> None:
    """Pending mail comes back oldest first, at most `limit` of it, in the Message shape."""
    messages = [mail("alice", "bob", f"m{i}", seconds=10 - i) for i in range(5)]
    await store.store_mail(messages)
    page = await store.pending("bob", limit=3)
    assert [m["message"] for m in page] == ["m4", "m3", "m2"]
    assert page[0] == messages[4].model_dump(mode="json")
    assert await store.pending_count("bob") == 5
    assert await store.pending("alice") == []


async def test_ack_moves_own_mail_to_history(store: Store) -> None:
    """Acknowledged mail is no longer pending and reads back from the history as
    delivered; ids of someone else's mail are ignored."""
    to_bob = [mail("alice", "bob", f"m{i}", seconds=i) for i in range(3)]
    to_carol = mail("alice", "carol", "for carol")
    await store.store_mail([*to_bob, to_carol])
    assert await store.ack("bob", [to_bob[0].id, to_bob[1].id, to_carol.id]) == 2
    assert [m["message"] for m in await store.pending("bob")] == ["m2"]
    assert [m["message"] for m in await store.pending("carol")] == ["for carol"]
    assert await store.ack("bob", [to_bob[0].id]) == 0
    assert await store.pending_count() == 2
    assert await store.history_count() == 2
    assert await store.history_buckets.count_documents({}) == 1  # one bucket per copy
    assert [m["message"] for m in (await store.history("bob", "alice"))[0]] == ["m2", "m1", "m0"]
    assert await store.clear_history("bob") == 2
    assert [m["message"] for m in (await store.history("bob", "alice"))[0]] == ["m2"]


async def test_take_mail_uses_documents_already_read(store: Store) -> None:
    """Taking mail removes it in one go whether its bundles were read before or not,
    puts it in the history, and hands back each message as it was stored."""
    to_bob = [mail("alice", "bob", f"m{i}", seconds=i, metadata={"n": i}) for i in range(4)]
    await store.store_mail(to_bob, ttl_seconds=600)
    read = {doc["_id"]: doc for doc in await store.pending_bundles("bob")}
    removed, docs = await store.take_mail("bob", [m.id for m in to_bob[:3]], read)
    assert removed == 3
    assert sorted(doc["message"] for doc in docs) == ["m0", "m1", "m2"]
    assert {doc["id"]: doc["metadata"] for doc in docs} == {m.id: m.metadata for m in to_bob[:3]}
    assert await store.take_mail("carol", [to_bob[3].id]) == (0, [])
    history, _ = await store.history("alice", "bob")
    assert [m["message"] for m in history] == ["m3", "m2", "m1", "m0"]
    assert history[-1] == to_bob[0].model_dump(mode="json")


async def test_reinsert_is_idempotent(store: Store) -> None:
    """Storing the same messages twice (a retried request) keeps one copy of each."""
    messages = [mail("alice", "bob", f"m{i}", seconds=i) for i in range(3)]
    assert await store.store_mail(messages) == [m.id for m in messages]
    assert await store.store_mail([messages[1], mail("alice", "bob", "new", seconds=9)])
    assert [m["message"] for m in await store.pending("bob")] == ["m0", "m1", "m2", "new"]


async def test_history_pages_newest_first_both_directions(store: Store) -> None:
    """History holds both directions, pending and delivered, newest first, in pages."""
    live = [mail("alice", "bob", f"live{i}", seconds=i) if i % 2 else mail("bob", "alice", f"live{i}", seconds=i) for i in range(5)]
    await store.archive(live)
    await store.store_mail([mail("alice", "bob", "offline", seconds=10)])
    await store.archive([mail("alice", "carol", "elsewhere", seconds=11)])

    first, cursor = await store.history("bob", "alice", limit=4)
    assert [m["message"] for m in first] == ["offline", "live4", "live3", "live2"]
    assert cursor == first[-1]["timestamp"]
    second, cursor = await store.history("alice", "bob", limit=4, before=parse_timestamp(cursor))
    assert [m["message"] for m in second] == ["live1", "live0"]
    assert cursor is None


async def test_clear_history_keeps_pending_mail(store: Store) -> None:
    """Clearing a user's history removes delivered messages only; pending mail stays."""
    await store.archive([mail("alice", "bob", "old chat"), mail("bob", "alice", "reply", seconds=1)])
    await store.archive([mail("bob", "carol", "not alice's", seconds=2)])
    await store.store_mail([mail("alice", "dave", "for dave", seconds=3), mail("erin", "alice", "for alice", seconds=4)])
    assert await store.clear_history("alice") == 2
    assert await store.history("alice", "bob") == ([], None)
    assert [m["message"] for m in await store.pending("dave")] == ["for dave"]
    assert [m["message"] for m in await store.pending("alice")] == ["for alice"]
    assert [m["message"] for m in (await store.history("bob", "carol"))[0]] == ["not alice's"]


async def test_keep_latest_caps_pending_per_sender(store: Store) -> None:
    """keep_latest=N leaves only the newest N pending messages of that sender and type."""
    readings = [mail("thermo", "bob", f"{20 + i} C", seconds=i, type=MessageType.SUBSCRIPTION) for i in range(6)]
    await store.store_mail([mail("alice", "bob", "a chat", seconds=0)])
    await store.store_mail(readings[:4], keep_latest=3)
    await store.store_mail(readings[4:], keep_latest=3)
    assert [m["message"] for m in await store.pending("bob")] == ["a chat", "23 C", "24 C", "25 C"]


async def test_expired_mail_is_never_returned(store: Store) -> None:
    """Mail past its ttl is not in pending mail, counts or history."""
    await store.store_mail([mail("thermo", "bob", "short-lived")], ttl_seconds=1)
    await store.store_mail([mail("thermo", "bob", "lasting", seconds=1)], ttl_seconds=3600)
    assert len(await store.pending("bob")) == 2
    left = await eventually(lambda: store.pending("bob"), lambda found: len(found) < 2, "bob's pending mail")
    assert [m["message"] for m in left] == ["lasting"]
    assert [m["message"] for m in (await store.history("bob", "thermo"))[0]] == ["lasting"]
    await store.store_mail([mail("thermo", "carol", "gone")], ttl_seconds=1)
    assert [m["message"] for m in await store.pending("carol")] == ["gone"]
    await eventually(lambda: store.pending("carol"), lambda found: found == [], "carol's pending mail")
    await store.sweep_expired()  # both expired ones, unless a TTL monitor was quicker
    assert await store.mail.count_documents({}) == 1
    assert await store.pending_count() == 1


async def test_subscriptions_add_remove_list_idempotent(store: Store) -> None:
    """Subscribing twice keeps one entry; removing works once; lists are per service."""
    assert await store.subscribe("thermo", "bob") is True
    assert await store.subscribe("thermo", "bob") is False
    assert await store.subscribe("thermo", "alice") is True
    assert await store.subscribe("other", "carol") is True
    assert await store.subscribers("thermo") == ["alice", "bob"]
    assert await store.unsubscribe("thermo", "bob") is True
    assert await store.unsubscribe("thermo", "bob") is False
    assert await store.subscribers("thermo") == ["alice"]
    assert await store.subscribers("nobody") == []


async def test_state_get_put_delete(store: Store) -> None:
    """Bot state keeps any JSON value exactly, per owner and key, until deleted."""
    value = {"thread": [{"role": "user", "content": "hi"}], "stream": True, "n": 1.5, "none": None}
    assert await store.get_state("openai", "bob") is None
    await store.put_state("openai", "bob", value)
    await store.put_state("openai", "carol", [1, 2])
    assert await store.get_state("openai", "bob") == value
    await store.put_state("openai", "bob", {"stream": False})
    assert await store.get_state("openai", "bob") == {"stream": False}
    assert await store.delete_state("openai", "bob") is True
    assert await store.delete_state("openai", "bob") is False
    assert await store.get_state("openai", "bob") is None
    assert await store.get_state("openai", "carol") == [1, 2]


async def test_timestamps_keep_milliseconds(store: Store) -> None:
    """A stored timestamp reads back to the millisecond, in the protocol's format."""
    message = mail("alice", "bob", "precise")
    message = message.model_copy(update={"timestamp": message.timestamp.replace(microsecond=123000)})
    await store.store_mail([message])
    (stored,) = await store.pending("bob")
    assert stored["timestamp"] == format_datetime(message.timestamp)
    assert stored["timestamp"].endswith(".123Z")


# --- mail in bundles: one document per stored batch and recipient -----------------------------


async def test_a_batch_is_one_bundle_per_recipient(store: Store) -> None:
    """One request's mail is one document for each recipient, whatever its size."""
    await store.store_mail([mail("alice", "bob", f"m{i}", seconds=i) for i in range(300)] + [mail("alice", "Carol", "for carol")])
    assert await store.mail.count_documents({}) == 2
    assert await store.pending_count("bob") == 300 and await store.pending_count("carol") == 1


async def test_a_bundle_partly_acknowledged_keeps_the_rest_in_order(store: Store) -> None:
    """Acknowledging some ids of a bundle takes out exactly those; the rest stays
    pending, in order, with its metadata as stored (booleans too); a repeat takes nothing."""
    batch = [mail("alice", "bob", f"m{i}", seconds=i, metadata={"n": i, "urgent": i % 2 == 0}) for i in range(5)]
    await store.store_mail(batch)
    assert await store.ack("bob", [batch[1].id, batch[3].id]) == 2
    left = await store.pending("bob")
    assert left == [batch[i].model_dump(mode="json") for i in (0, 2, 4)]
    assert left[0]["metadata"]["urgent"] is True
    assert await store.pending_count("bob") == 3
    assert await store.ack("bob", [batch[1].id]) == 0
    assert await store.ack("bob", [m.id for m in batch]) == 3
    assert await store.pending("bob") == [] and await store.mail.count_documents({}) == 0  # emptied: gone


async def test_mail_survives_a_restart_between_store_and_ack(store: Store, store_url: str) -> None:
    """What a store process confirmed is there for the next one: the same mail, acked by
    id there; the same batch sent again after the restart (a retry) is not stored twice."""
    batch = [mail("alice", "bob", f"m{i}", seconds=i) for i in range(4)]
    await store.store_mail(batch)
    store.close()
    again = Store.open(store_url, store.db.name)
    try:
        await again.ensure_indexes()
        assert [m["message"] for m in await again.pending("bob")] == ["m0", "m1", "m2", "m3"]
        assert await again.store_mail(batch) == [m.id for m in batch]
        assert await again.pending_count("bob") == 4
        assert await again.ack("bob", [batch[0].id]) == 1
        assert [m["message"] for m in await again.pending("bob")] == ["m1", "m2", "m3"]
    finally:
        store.client = again.client  # the fixture drops the database through it
        store.db = again.db


async def test_pending_mail_is_in_time_order_across_bundles(store: Store) -> None:
    """Bundles stored later may hold older messages (a broken session's unreceived live
    messages): pending mail reads oldest first all the same, and a short page is the oldest."""
    await store.store_mail([mail("alice", "bob", "b", seconds=2), mail("alice", "bob", "d", seconds=4)])
    await store.store_mail([mail("carol", "bob", "a", seconds=1), mail("carol", "bob", "c", seconds=3)])
    assert [m["message"] for m in await store.pending("bob")] == ["a", "b", "c", "d"]
    assert [m["message"] for m in await store.pending("bob", limit=2)] == ["a", "b"]
    page, total = await store.pending_page("bob", limit=2)
    assert [e["message"] for e in page] == ["a", "b"] and total == 4
    history, _ = await store.history("bob", "carol")
    assert [m["message"] for m in history] == ["c", "a"]


async def test_a_message_in_two_bundles_is_pending_once(store: Store) -> None:
    """The same id stored in two batches (in other company) is handed over once and
    acknowledged out of both."""
    twice = mail("alice", "bob", "twice", seconds=1)
    await store.store_mail([twice, mail("alice", "bob", "first batch", seconds=2)])
    await store.store_mail([twice, mail("alice", "bob", "second batch", seconds=3)])
    assert [m["message"] for m in await store.pending("bob")] == ["twice", "first batch", "second batch"]
    assert (await store.pending_page("bob"))[1] == 3
    assert await store.ack("bob", [twice.id]) == 1
    assert [m["message"] for m in await store.pending("bob")] == ["first batch", "second batch"]


async def test_mail_being_acknowledged_is_never_missing_from_the_history(store: Store) -> None:
    """While an ack moves mail out of the mailbox into the history, a reader of the
    history finds every message each time it looks (a page read then would be missing
    them, and an unread count would say 0)."""
    batch = [mail("alice", "bob", f"m{i}", seconds=i) for i in range(30)]
    await store.store_mail(batch)

    async def acknowledge_one_by_one() -> int:
        return sum([(await store.take_mail("bob", [m.id]))[0] for m in batch])

    async def read_until(done: asyncio.Future[int]) -> list[int]:
        seen = []
        while not done.done():
            history, _ = await store.history("bob", "alice", limit=100)
            seen.append(len(history))
        return seen

    taking = asyncio.ensure_future(acknowledge_one_by_one())
    readers = await asyncio.gather(*(read_until(taking) for _ in range(3)))
    assert await taking == 30
    seen = [count for reader in readers for count in reader]
    history, _ = await store.history("bob", "alice", limit=100)
    assert len(seen) > 3 and set(seen) == {30} and len(history) == 30


async def test_acknowledgements_at_once_never_undo_each_other(store: Store) -> None:
    """Two acks of different ids of one bundle at the same moment, and one made with a
    copy of the bundle read before the other changed it: each takes out its own ids."""
    batch = [mail("alice", "bob", f"m{i}", seconds=i) for i in range(6)]
    await store.store_mail(batch)
    stale = {doc["_id"]: doc for doc in await store.pending_bundles("bob")}
    results = await asyncio.gather(store.take_mail("bob", [batch[0].id]), store.take_mail("bob", [batch[1].id]))
    assert [removed for removed, _ in results] == [1, 1]
    removed, taken = await store.take_mail("bob", [batch[2].id], stale)  # read before both of those
    assert (removed, [e["message"] for e in taken]) == (1, ["m2"])
    assert [m["message"] for m in await store.pending("bob")] == ["m3", "m4", "m5"]
    assert await store.take_mail("carol", [batch[3].id], stale) == (0, [])  # someone else's bundles: nothing


async def test_keep_latest_and_ttl_hold_across_bundles(store: Store) -> None:
    """keep_latest trims a sender's older mail in earlier bundles too, leaving the other
    senders' and other types' mail in them; a bundle's ttl is its own."""
    readings = [mail("thermo", "bob", f"{20 + i} C", seconds=i, type=MessageType.SUBSCRIPTION) for i in range(5)]
    chat = mail("thermo", "bob", "a chat from thermo", seconds=0.5)
    await store.store_mail([readings[0], chat, mail("alice", "bob", "alice's", seconds=0.7), readings[1]], keep_latest=2)
    await store.store_mail(readings[2:4], keep_latest=2)
    await store.store_mail(readings[4:], ttl_seconds=3600, keep_latest=2)
    assert [m["message"] for m in await store.pending("bob")] == ["a chat from thermo", "alice's", "23 C", "24 C"]
    await store.store_mail([mail("alice", "bob", "short-lived", seconds=9)], ttl_seconds=1)
    await eventually(lambda: store.pending("bob"), lambda found: len(found) == 4, "the short-lived bundle expired")
    assert [m["message"] for m in await store.pending("bob")] == ["a chat from thermo", "alice's", "23 C", "24 C"]


async def test_mail_of_the_one_document_per_message_layout_moves_into_bundles(store_url: str) -> None:
    """Pending mail kept one document per message (the mailbox, the layout before) is
    pending in bundles once the store opens it: in order, with its ttl, acknowledged by
    id, in the conversation lists; the mailbox is left empty."""
    name = f"s{uuid.uuid4().hex[:12]}"
    old = Store.open(store_url, name)
    try:
        expires = utcnow() + timedelta(hours=1)
        docs = [keyed(mail_document(mail("alice", "Bob", f"old{i}", seconds=i), expires if i == 1 else None)) for i in range(3)]
        await old.mailbox.insert_many([docs[2], docs[0], docs[1]])
        store = Store.open(store_url, name)
        await store.ensure_indexes()
        assert [m["message"] for m in await store.pending("bob")] == ["old0", "old1", "old2"]
        assert await store.mailbox.count_documents({}) == 0
        assert [doc.get("expires_at") is not None for doc in await store.pending_bundles("bob")].count(True) == 1
        assert [(c["users"], json.loads(c["last"])["message"]) for c in await store.direct.find({}).to_list(None)] == [(["alice", "bob"], "old2")]
        assert await store.ack("bob", [docs[1]["_id"]]) == 1
        assert [m["message"] for m in await store.pending("bob")] == ["old0", "old2"]
        store.close()
    finally:
        await old.client.drop_database(name)
        old.close()


def old_layout(message: Message, status: str) -> dict[str, object]:
    """A message as the layouts before the mailbox and the buckets kept it in `messages`."""
    pair = "|".join(sorted((message.sender or "", message.destination or "")))
    doc = {**mail_document(message), "metadata": message.metadata, "pair": pair, "status": status}
    return doc if status == "pending" else {**doc, "delivered_at": utcnow()}


async def test_the_old_layouts_move_to_the_mailbox_and_buckets(store_url: str) -> None:
    """A database kept in the old layouts (pending mail and one document per history
    message, all in `messages`) reads the same once the store opens it: the mail is
    pending in the mailbox, the history sits in buckets, and `messages` is gone."""
    name = f"s{uuid.uuid4().hex[:12]}"
    old = Store.open(store_url, name)
    try:
        waiting = mail("alice", "bob", "waiting", seconds=5000)
        seen = [mail("bob", "alice", f"seen{i}", seconds=i, metadata={"n": i}) for i in range(2500)]
        other = mail("carol", "dave", "theirs", seconds=3)
        await old.messages.insert_many([old_layout(waiting, "pending"), *(old_layout(m, "delivered") for m in [*seen, other])])
        await old.messages.create_index([("destination", 1), ("status", 1), ("timestamp", 1)], name="pending")
        await old.messages.create_index([("pair", 1), ("timestamp", -1)], name="history")
        store = Store.open(store_url, name)
        await store.ensure_indexes()
        assert await store.pending("bob") == [waiting.model_dump(mode="json")]
        page, _ = await store.history("alice", "bob", limit=3)
        assert [m["message"] for m in page] == ["waiting", "seen2499", "seen2498"]
        assert page[1] == seen[-1].model_dump(mode="json")
        assert [m["message"] for m in (await store.history("dave", "carol"))[0]] == ["theirs"]
        assert await store.history_count() == 2501
        assert await store.history_buckets.count_documents({}) == 3  # buckets of at most 1000
        assert "messages" not in await store.db.list_collection_names()
        store.close()
    finally:
        await old.client.drop_database(name)
        old.close()


# --- history in buckets ------------------------------------------------------------------------


async def test_one_bucket_per_archived_batch(store: Store) -> None:
    """An archived batch is one history document, whatever its size, holding every
    message of the batch with the pairs and users it concerns."""
    batch = [mail(f"u{i % 5}", f"v{i % 3}", f"m{i}", seconds=i) for i in range(200)]
    assert await store.archive(batch) == 200
    (doc,) = await store.history_buckets.find({}).to_list(None)
    assert isinstance(doc["messages"], str)  # one text, not 200 documents for the store to walk
    assert doc["count"] == 200 and [e["id"] for e in bucket_entries(doc)] == [m.id for m in batch]
    assert len(doc["pairs"]) == 15 and doc["users"] == sorted({*(f"u{i}" for i in range(5)), *(f"v{i}" for i in range(3))})
    assert (doc["first"], doc["last"]) == (epoch_ms(batch[0].timestamp), epoch_ms(batch[-1].timestamp))


async def test_buckets_stored_with_messages_as_documents_still_read_and_clear(store: Store) -> None:
    """Buckets written before the messages became one text (a list of documents) page
    and clear as the new ones do, beside them."""
    old = [mail("alice", "bob", "old", seconds=1), mail("carol", "bob", "not alice's", seconds=2)]
    doc = bucket([history_entry(m) for m in old], utcnow())
    doc["messages"] = json.loads(doc["messages"])
    await store.history_buckets.insert_one(doc)
    await store.archive([mail("bob", "alice", "new", seconds=3)])
    assert [m["message"] for m in (await store.history("alice", "bob"))[0]] == ["new", "old"]
    assert [m["message"] for m in (await store.history("bob", "carol"))[0]] == ["not alice's"]
    assert await store.clear_history("alice") == 2
    assert await store.history("alice", "bob") == ([], None)
    assert [m["message"] for m in (await store.history("bob", "carol"))[0]] == ["not alice's"]
    assert await store.history_count() == 1


async def test_history_pages_across_buckets_shared_with_other_pairs(store: Store) -> None:
    """A conversation spread over many buckets, each shared with other conversations,
    reads back page by page, newest first, every message once, none of the others'."""
    ours: list[Message] = []
    for b in range(12):
        batch = [mail("carol", "dave", f"noise{b}.{i}", seconds=b * 10 + i) for i in range(6)]
        pair = [
            mail(*(("alice", "bob") if i % 2 else ("bob", "alice")), f"p{b}.{i}", seconds=b * 10 + i + 0.5) for i in range(3)
        ]
        ours += pair
        await store.archive(batch + pair)
    newest_first = [m.message for m in reversed(ours)]
    read: list[str] = []
    before = None
    for _ in range(10):
        page, cursor = await store.history("alice", "bob", limit=7, before=before)
        read += [m["message"] for m in page]
        if cursor is None:
            break
        before = parse_timestamp(cursor)
    assert read == newest_first
    assert [m["message"] for m in (await store.history("bob", "alice", limit=1000))[0]] == newest_first


async def test_history_merges_buckets_that_overlap_in_time(store: Store) -> None:
    """Acknowledged mail copied after later chat was archived (a bucket of older
    messages stored last) still reads back in time order, across pages."""
    await store.archive([mail("alice", "bob", f"live{i}", seconds=100 + i) for i in range(5)])
    offline = [mail("alice", "bob", f"mail{i}", seconds=i * 30) for i in range(5)]  # 0..120 s, around the chat
    await store.store_mail(offline)
    await store.ack("bob", [m.id for m in offline])
    await store.archive([mail("bob", "alice", "latest", seconds=200)])
    first, cursor = await store.history("alice", "bob", limit=4)
    assert [m["message"] for m in first] == ["latest", "mail4", "live4", "live3"]
    rest, end = await store.history("alice", "bob", limit=10, before=parse_timestamp(cursor))
    assert ([m["message"] for m in rest], end) == (["live2", "live1", "live0", "mail3", "mail2", "mail1", "mail0"], None)


async def test_retried_archive_shows_each_message_once(store: Store) -> None:
    """A batch archived again (a retry), or again in other company, never shows a
    message twice in the history, on a page or across pages."""
    batch = [mail("alice", "bob", f"m{i}", seconds=i) for i in range(6)]
    await store.archive(batch)
    await store.archive(batch)
    assert await store.history_buckets.count_documents({}) == 1
    await store.archive([*batch[3:], mail("bob", "alice", "new", seconds=9)])
    assert [m["message"] for m in (await store.history("alice", "bob"))[0]] == ["new", "m5", "m4", "m3", "m2", "m1", "m0"]
    page, cursor = await store.history("alice", "bob", limit=3)
    rest, _ = await store.history("alice", "bob", limit=10, before=parse_timestamp(cursor))
    assert [m["message"] for m in page + rest] == ["new", "m5", "m4", "m3", "m2", "m1", "m0"]


async def test_clear_history_takes_only_the_users_messages_from_shared_buckets(store: Store) -> None:
    """Clearing a user's history removes their messages from every bucket, leaves the
    others' conversations in those buckets, and removes buckets left empty."""
    await store.archive([mail("alice", "bob", "ab", seconds=1), mail("carol", "dave", "cd", seconds=2), mail("dave", "alice", "da", seconds=3)])  # fmt: skip
    await store.archive([mail("bob", "alice", "ba", seconds=4)])
    await store.archive([mail("carol", "bob", "cb", seconds=5)])
    assert await store.clear_history("alice") == 3
    assert await store.history("alice", "bob") == ([], None)
    assert await store.history("dave", "alice") == ([], None)
    assert [m["message"] for m in (await store.history("dave", "carol"))[0]] == ["cd"]
    assert [m["message"] for m in (await store.history("bob", "carol"))[0]] == ["cb"]
    assert await store.history_buckets.count_documents({}) == 2
    assert await store.history_buckets.count_documents({"users": "alice"}) == 0
    assert await store.history_count() == 2
    assert await store.clear_history("alice") == 0


async def test_history_pages_within_one_second(store: Store) -> None:
    """Pages that end inside a second (many messages a second, archived and pending)
    neither lose nor repeat a message."""
    archived = [mail("alice", "bob", f"a{i}", seconds=i / 100) for i in range(0, 40, 2)]
    pending = [mail("bob", "alice", f"p{i}", seconds=i / 100) for i in range(1, 40, 2)]
    await store.archive(archived[:10])
    await store.archive(archived[10:])
    await store.store_mail(pending)
    wanted = [m.message for m in sorted([*archived, *pending], key=lambda m: m.timestamp, reverse=True)]
    read: list[str] = []
    before = None
    for _ in range(20):
        page, cursor = await store.history("alice", "bob", limit=3, before=before)
        read += [m["message"] for m in page]
        if cursor is None:
            break
        before = parse_timestamp(cursor)
    assert read == wanted


async def test_history_reads_many_buckets_that_end_together(store: Store) -> None:
    """A page gathered from more buckets than one read fetches, many of them ending at
    the same moment, holds every message of the pair once."""
    ours = [mail("alice", "bob", f"a{b}", seconds=b) for b in range(15)]
    for b, message in enumerate(ours):
        await store.archive([message, mail("carol", "dave", f"n{b}", seconds=100)])
    page, cursor = await store.history("alice", "bob", limit=12)
    assert [m["message"] for m in page] == [f"a{b}" for b in range(14, 2, -1)]
    rest, end = await store.history("alice", "bob", limit=12, before=parse_timestamp(cursor))
    assert ([m["message"] for m in rest], end) == (["a2", "a1", "a0"], None)


# --- gap-free paging, rooms, markers, conversations -----------------------------------------------


def to_room(sender: str, room: str, text: str, seconds: float = 0, **fields: object) -> dict[str, object]:
    """A message to a room, as a history entry."""
    return history_entry(mail(sender, room, text, seconds, **fields))


@pytest.fixture
async def rooms(store: Store) -> RoomStore:
    rooms = RoomStore(store)
    await rooms.ensure_indexes()
    return rooms


def test_a_cursor_holds_its_key_and_nothing_else_passes() -> None:
    """A cursor gives back the (timestamp, id) it was made from, an id with '|' or none
    at all too; text it did not make is a ValueError."""
    for key in [("2026-12-01T10:00:05.123Z", "abc"), ("2026-12-01T10:00:05.123Z", "a|b"), ("0999-01-01T00:00:00.000Z", ""), ("2026-12-01T10:00:05.123Z", "x" * 64)]:
        assert decode_cursor(encode_cursor(key)) == key
        assert key_of(seq_of(key)) == key
    for bad in ["", "nonsense", encode_cursor(("2026-12-01T10:00:05.123Z", "x" * 65)), "dDIwMjYtMTItMDFUMTA6MDA6MDUuMTIzWg", "dHl5eXktbW0tZGRUaGg6bW06c3MuMTIzWnxh"]:
        with pytest.raises(ValueError):
            decode_cursor(bad)
    keys = [("2026-12-01T10:00:05.123Z", "b"), ("2026-12-01T10:00:05.123Z", "ab"), ("2026-12-01T10:00:05.124Z", ""), ("2026-12-01T10:00:05.122Z", "zz")]
    assert sorted(keys) == sorted(keys, key=seq_of)  # the text sorts as the key


async def test_dm_history_pages_whole_through_a_burst_in_one_millisecond(store: Store) -> None:
    """60 messages sharing a timestamp, some archived in two buckets and some still
    pending, page back by key in pages of 10: each once, in order, none skipped."""
    burst = [mail("alice" if i % 3 else "bob", "bob" if i % 3 else "alice", f"m{i}", 5, id=f"b{i:03d}") for i in range(60)]
    await store.archive(burst[:20])
    await store.archive([*burst[20:40], mail("carol", "dave", "other", 5)])
    await store.store_mail(burst[40:])
    read: list[str] = []
    before = None
    for _ in range(10):
        page, more = await store.history_page("bob", "alice", 10, before)
        read = [m["id"] for m in page][::-1] + read
        if not more:
            break
        before = message_key(page[-1])
    assert read == [m.id for m in burst]


async def test_insert_new_and_forward_never_go_back(store: Store) -> None:
    """insert_new says which documents it stored; forward moves a value on only, and
    creates documents only when told to."""
    assert await store.insert_new(store.meta, [{"_id": "a"}, {"_id": "b"}]) == {"a", "b"}
    assert await store.insert_new(store.meta, [{"_id": "b"}, {"_id": "c"}]) == {"c"}
    early, late = seq_of(("2026-12-01T10:00:05.123Z", "a")), seq_of(("2026-12-01T10:00:05.123Z", "b"))
    assert await store.forward(store.meta, "seq", {"x": (early, {"n": 1})}) == {"x"}
    assert await store.forward(store.meta, "seq", {"x": (late, {"n": 2}), "y": (early, {})}, create=False) == {"x"}
    assert await store.forward(store.meta, "seq", {"x": (early, {"n": 3})}) == set()
    assert await store.meta.find_one({"_id": "x"}) == {"_id": "x", "seq": late, "n": 2}
    assert await store.meta.find_one({"_id": "y"}) is None


async def test_room_history_is_stored_once_per_room_and_pages_whole(rooms: RoomStore) -> None:
    """Room messages go to their room's buckets once however many copies a batch holds;
    a room pages back whole by key, across overlapping buckets and a shared millisecond,
    to members only."""
    await rooms.join("#Hiking", "alice")
    await rooms.join("#hiking", "bob")
    burst = [to_room("alice", "#hiking", f"m{i}", 7, id=f"h{i:03d}") for i in range(30)]
    late = [to_room("bob", "#Hiking", f"late{i}", 3 + i, id=f"l{i}") for i in range(3)]  # older, stored after
    assert await rooms.archive([*burst[:15], *burst[:15], to_room("carol", "#chess", "e4")]) == 31
    await rooms.archive(burst[15:])
    await rooms.archive(late)
    assert await rooms.room_history.count_documents({"room": "#hiking"}) == 3
    read: list[str] = []
    before = None
    while True:
        page, more = await rooms.history("#HIKING", "Bob", 7, before)
        read = [m["id"] for m in page][::-1] + read
        if not more:
            break
        before = message_key(page[-1])
    assert read == [*(m["id"] for m in late), *(m["id"] for m in burst)]
    with pytest.raises(RoomRefused) as refused:
        await rooms.history("#hiking", "carol", 10)
    assert refused.value.reason == RoomReason.NOT_MEMBER
    assert (await rooms.store.history("alice", "bob"))[0] == []  # no room message in the direct history


# A new room's settings (chatnet.rooms_store): +n -t, its creator its one operator.
NEW_ROOM = {"moderated": False, "no_external": True, "secret": False, "topic_lock": False, "key": None, "limit": None,
            "bans": [], "ops": ["Alice"], "voiced": []}  # fmt: skip


async def test_rooms_members_invitations_and_counts(rooms: RoomStore) -> None:
    """Joins, leaves, invitations and kicks keep the member count; a count left wrong is mended when the room is read."""
    doc, created = await rooms.join("#Secret", "Alice")
    assert created and room_info(doc) == {"name": "#Secret", "owner": "Alice", "topic": None, "topic_by": None, "private": False, "members": 1, **NEW_ROOM}
    await rooms.set_room("#secret", "alice", private=True)
    with pytest.raises(RoomRefused) as refused:
        await rooms.join("#secret", "bob")
    assert refused.value.reason == RoomReason.PRIVATE
    assert (await rooms.invite("#secret", "alice", "Bob"))[1:] == (True, False)
    doc, created = await rooms.join("#SECRET", "bob")
    assert not created and doc["members"] == 2
    assert (await rooms.invite("#secret", "alice", "bob"))[1:] == (False, True)
    assert await rooms.kick("#secret", "alice", "bob") is True
    assert await rooms.leave("#secret", "bob") is False
    await rooms.rooms.update_one({"_id": "#secret"}, {"$set": {"members": 7}})  # as a crash between two writes might leave it
    found = await rooms.room("#secret")
    assert found is not None and (found[0]["members"], found[1]) == (1, ["Alice"])
    assert (await rooms.rooms.find_one({"_id": "#secret"}) or {})["members"] == 1
    assert [doc["name"] for doc in await rooms.rooms_for("bob")] == []
    assert [doc["name"] for doc in await rooms.rooms_for("alice")] == ["#Secret"]


async def test_logins_in_a_batch(rooms: RoomStore) -> None:
    """A batch of logins: defaults joined once per user ever, each room's unread count
    (not one's own) and newest unread messages oldest first, and the marker."""
    first = await rooms.logins(["Alice", "bob"], 2, ["#general"])
    assert [e["room"]["owner"] for e in first["alice"]] == ["server"]
    messages = [to_room("alice", "#general", f"g{i}", 3700 + i) for i in range(4)]  # after the joins (the base is an hour ago)
    await rooms.archive(messages)
    assert await rooms.advance([("bob", "#General", messages[0]["id"], messages[0]["timestamp"])]) == 1
    assert await rooms.advance([("bob", "#general", messages[0]["id"], utcnow() - timedelta(days=1))]) == 0
    await rooms.leave("#general", "alice")
    again = await rooms.logins(["alice", "BOB", "carol"], 2, ["#general"])
    assert again["alice"] == []
    (bob,) = again["bob"]
    assert (bob["unread"], [m["message"] for m in bob["messages"]]) == (3, ["g2", "g3"])
    assert bob["messages"][1] == from_history_entry(messages[3])
    assert decode_cursor(bob["marker"]) == message_key(messages[0])
    assert [e["room"]["members"] for e in again["carol"]] == [2]  # bob and carol: alice left for good


async def test_conversations_and_their_unread_counts(rooms: RoomStore) -> None:
    """The list of a user's conversations: people (delivered and pending) and rooms, the
    latest first, each with its newest message and what is unread after the marker."""
    await rooms.join("#hiking", "alice")
    await rooms.store.archive([mail("bob", "alice", "b1", 3700), mail("alice", "bob", "a1", 3701), mail("bob", "alice", "b2", 3702)])
    await rooms.archive([to_room("carol", "#hiking", "h1", 3703)])
    await rooms.store.store_mail([mail("Dave", "alice", "d1", 3704, metadata={"flag": True})])
    listed = await rooms.conversations("alice")
    assert [(c["kind"], c["name"], c["unread"], c["last"]["message"]) for c in listed] == [
        ("dm", "Dave", 1, "d1"),
        ("room", "#hiking", 1, "h1"),
        ("dm", "bob", 2, "b2"),
    ]
    assert listed[0]["last"]["metadata"] == {"flag": True}  # kept exactly (no boolean read back as 1)
    b1 = (await rooms.store.history("alice", "bob"))[0][-1]
    await rooms.advance([("alice", "Bob", b1["id"], b1["timestamp"])])
    assert [c["unread"] for c in await rooms.conversations("alice")] == [1, 1, 1]


async def test_conversation_lists_take_one_write_per_pair_and_are_read_up_to_date(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch after batch for the same pairs waits to be written as one update per pair
    (DIRECT_LAG, shortened here); a conversation list read meanwhile writes them first;
    without a read they arrive by themselves, and `write_direct` (shutdown) writes what
    still waits."""
    monkeypatch.setattr(previews_store, "DIRECT_LAG", 1.0)

    async def previews() -> list[tuple[list[str], str]]:
        return sorted((doc["users"], json.loads(doc["last"])["message"]) for doc in await store.direct.find({}).to_list(None))

    for batch in range(5):
        await store.archive([mail("alice", "bob", f"ab{batch}", 3700 + batch), mail("carol", "bob", f"cb{batch}", 3700 + batch)])
    assert await previews() == []  # nothing written yet: they wait for DIRECT_LAG
    assert [json.loads(doc["last"])["message"] for doc in await store.previews.direct_conversations("bob", 10)] == ["cb4", "ab4"]
    await store.archive([mail("bob", "alice", "ba", 3710)])
    await eventually(previews, lambda got: got == [(["alice", "bob"], "ba"), (["bob", "carol"], "cb4")], "the newest written by itself")
    await store.archive([mail("carol", "alice", "ca", 3711)])
    await store.previews.write_direct()
    assert (["alice", "carol"], "ca") in await previews()


async def test_conversations_stored_before_are_summarised_once(store_url: str) -> None:
    """A database with history and mail from before conversation lists gets its
    conversations listed at start-up: what was delivered counts as read, pending mail
    as unread."""
    name = f"s{uuid.uuid4().hex[:12]}"
    old = Store.open(store_url, name)
    try:
        await old.ensure_indexes()
        await old._store_buckets([history_entry(mail("bob", "alice", f"seen{i}", i)) for i in range(3)])  # as before: no summary
        await old._insert(old.mailbox, [keyed(mail_document(mail("carol", "alice", "waiting", 10)))])
        assert await old.direct.count_documents({}) == 0
        rooms = RoomStore(Store.open(store_url, name))
        await rooms.ensure_indexes()
        assert [(c["name"], c["unread"], c["last"]["message"]) for c in await rooms.conversations("alice")] == [("carol", 1, "waiting"), ("bob", 0, "seen2")]
        assert [(c["name"], c["unread"]) for c in await rooms.conversations("bob")] == [("alice", 0)]
        await old.direct.delete_many({})
        again = RoomStore(Store.open(store_url, name))
        await again.ensure_indexes()
        assert await old.direct.count_documents({}) == 0  # once only
        rooms.store.close()
        again.store.close()
    finally:
        await old.client.drop_database(name)
        old.close()


async def test_clearing_history_leaves_no_copy_in_the_conversation_list(rooms: RoomStore) -> None:
    """After a user's history is cleared their conversations show only what is still
    pending: no deleted message survives as a conversation's newest."""
    await rooms.store.archive([mail("alice", "bob", "secret", 1), mail("carol", "dave", "theirs", 2)])
    await rooms.store.store_mail([mail("erin", "alice", "waiting", 3)])
    assert [c["last"]["message"] for c in await rooms.conversations("alice")] == ["waiting", "secret"]
    await rooms.store.clear_history("alice")
    assert [(c["name"], c["last"]["message"]) for c in await rooms.conversations("alice")] == [("erin", "waiting")]
    assert await rooms.conversations("bob") == []
    assert [c["last"]["message"] for c in await rooms.conversations("dave")] == ["theirs"]
