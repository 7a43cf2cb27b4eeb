"""Rooms, read markers and the conversation lists, in the store (over `chatnet.store`).

Collections (beside `chatnet.store`'s, in the same database):

    rooms          one per room, keyed by its name lower-cased ('#' included): the name
                   as its creator spelled it, the owner (as spelled, and its key), the
                   topic and who set it, `visibility` (public or private), its settings
                   (`modes`: the letters of the flags set among "mnst", "n" when missing;
                   `key`, `limit` (0: none), `bans` [{mask, by, at}], `ops` and `voiced`:
                   names as spelled; `ops` is [owner] when missing), how many
                   members it has (kept with `$inc` as people join and leave; `room`
                   counts them again and mends it), and its newest message (`last`, as
                   JSON text, with `last_seq`, its `seq_of`).
    room_members   one per (room, user), keyed "<room>|<user>" (lower case): the user's
                   name as spelled when joining or invited, and the `state`: member, or
                   invited (an invitation lets its holder into a private room).
    room_history   a room's messages, each stored once (never a copy per member), in
                   buckets like the direct history's (see `chatnet.store`): one per room
                   and archived batch, with its span (`first`, `last`: epoch ms).
    markers        read markers, keyed "<user>|<conversation>" (lower case; the
                   conversation is a room, or the other person of a direct one): the
                   `seq_of` the newest message read. A marker only moves forward;
                   unread counts are what lies after it, not counting one's own.
    room_users     the users whose rooms were set up at their first login (the default
                   rooms joined), so that happens once per user ever: a leave sticks.

Why buckets and `seq_of` texts rather than a document per message under an index: the
embedded store (nx-27017) looks at every document of a collection for a query (its
array matching keeps SQLite from seeking an index), so a query costs what the
collection holds; it compares datetimes, and text that looks like one, to the second;
and it reads a boolean written with `$set` back as 1. So: few documents (buckets),
exact keys (epoch milliseconds, `seq_of` texts, which start with a letter), statuses as
strings, and messages kept as JSON text where `$set` writes them.

Who may read what is the chat server's business, and the API token's: these methods
answer for whichever user they are given. A caller serving one person (the web
adapter) must pass the user logged in on that connection, never a name it was sent.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

from motor.motor_asyncio import AsyncIOMotorCollection
from pymongo import ASCENDING, DESCENDING

from chatnet.errors import ChatError
from chatnet.keys import Key, Page, encode_cursor, key_of, message_key, pair_key, seq_of, stamp_ms
from chatnet.limits import MAX_BANS, MAX_CONVERSATIONS, MAX_ROOMS_PER_USER, MAX_UNREAD
from chatnet.protocol import SERVER_NAME, USER_HOST, RoomReason, dumps, format_datetime, from_history_entry, history_entry, is_room, parse_timestamp, utcnow
from chatnet.store import Store
from chatnet.store_documents import MAX_BUCKET, Document, bucket_entries, bucket_id, counts_as_unread

logger = logging.getLogger("chatnet.rooms")

PUBLIC: Final = "public"
PRIVATE: Final = "private"
MEMBER: Final = "member"
INVITED: Final = "invited"
# The marker in `meta` saying that the direct conversations of the data stored before
# were summarised (see `_summarise_direct`).
DIRECT_SUMMARISED: Final = "direct_summarised"
# Documents written at once by that summary.
SUMMARY_CHUNK: Final = 1000
# A room's flags (`modes`), as IRC letters: moderated, no external messages, secret,
# topic lock. A new room has "n" (only members write to it), as IRC servers do; any
# member may set the topic until an operator sets +t.
FLAGS: Final = {"moderated": "m", "no_external": "n", "secret": "s", "topic_lock": "t"}
DEFAULT_MODES: Final = "n"


@dataclass(frozen=True)
class ModeChange:
    """Settings to change (None, or empty: left as they are); see `RoomStore.set_room`."""

    moderated: bool | None = None
    no_external: bool | None = None
    secret: bool | None = None
    topic_lock: bool | None = None
    key: str | None = None  # "" removes it
    limit: int | None = None  # 0 removes it
    ban: tuple[str, ...] = ()
    unban: tuple[str, ...] = ()
    op: tuple[str, ...] = ()
    deop: tuple[str, ...] = ()
    voice: tuple[str, ...] = ()
    devoice: tuple[str, ...] = ()

    def flags(self) -> dict[str, bool]:
        return {name: value for name in FLAGS if (value := getattr(self, name)) is not None}

    def any(self) -> bool:
        return bool(self.flags() or self.key is not None or self.limit is not None or self.ban or self.unban or self.op or self.deop or self.voice or self.devoice)


class RoomRefused(ChatError):
    """A room refused the request (the caller's fault): `reason` is a
    `chatnet.protocol.RoomReason` (the API answers 403 with it, 404 for NO_ROOM); the
    text says why to a person."""

    def __init__(self, reason: RoomReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def member_id(room: str, user: str) -> str:
    return f"{room.lower()}|{user.lower()}"


def marker_id(user: str, conversation: str) -> str:
    return f"{user.lower()}|{conversation.lower()}"


def room_info(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A room as the API answers it (RoomInfo)."""
    return {
        "name": doc["name"],
        "owner": doc["owner"],
        "topic": doc.get("topic"),
        "topic_by": doc.get("topic_by"),
        "private": doc.get("visibility") == PRIVATE,
        "members": max(0, int(doc.get("members") or 0)),
        **{name: letter in modes_of(doc) for name, letter in FLAGS.items()},
        "key": doc.get("key") or None,
        "limit": int(doc.get("limit") or 0) or None,
        "bans": [dict(ban) for ban in doc.get("bans") or []],
        "ops": ops_of(doc),
        "voiced": list(doc.get("voiced") or []),
    }


def modes_of(doc: Mapping[str, Any]) -> str:
    modes = doc.get("modes")
    return DEFAULT_MODES if modes is None else str(modes)


def ops_of(doc: Mapping[str, Any]) -> list[str]:
    """The room's operators as spelled (a room from before operators: its owner)."""
    ops = doc.get("ops")
    return [doc["owner"]] if ops is None else list(ops)


def normal_mask(mask: str) -> str:
    """A ban mask in full, as IRC servers complete one: `bob` is `bob!*@*`, `bob!x` is
    `bob!x@*`, `*@host` is `*!*@host`."""
    if "!" not in mask and "@" not in mask:
        return f"{mask}!*@*"
    if "!" not in mask:
        return f"*!{mask}"
    if "@" not in mask:
        return f"{mask}@*"
    return mask


@lru_cache(maxsize=1024)
def _mask_re(mask: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in mask.lower()), re.S)


def banned(bans: Iterable[Mapping[str, Any]], user: str) -> bool:
    """A ban's mask (`*` any characters, `?` one; case-insensitive) matches the user as
    `name!name@chatnet` (chatnet shows no addresses, so bans match names)."""
    who = f"{user}!{user}@{USER_HOST}".lower()
    return any(_mask_re(str(ban["mask"])).fullmatch(who) for ban in bans)


def new_room(name: str, owner: str, now: datetime) -> Document:
    return {
        "_id": name.lower(),
        "name": name,
        "owner": owner,
        "owner_key": owner.lower(),
        "topic": None,
        "topic_by": None,
        "visibility": PUBLIC,
        "modes": DEFAULT_MODES,
        "key": None,
        "limit": 0,
        "bans": [],
        "ops": [owner],
        "voiced": [],
        "members": 0,
        "last": None,
        "last_seq": "",
        "created_at": now,
    }


def room_bucket(room: str, entries: list[dict[str, Any]], now: datetime) -> Document:
    """One room_history document for a batch of the room's entries."""
    stamps = [e["timestamp"] for e in entries]
    return {
        "_id": f"{room}|{bucket_id(e['id'] for e in entries)}",
        "room": room,
        "first": stamp_ms(min(stamps)),
        "last": stamp_ms(max(stamps)),
        "count": len(entries),
        "archived_at": now,
        "messages": dumps(entries),  # as in a direct bucket (see `chatnet.store_documents.bucket`)
    }


def spelled(last: Mapping[str, Any] | None, key: str) -> str:
    """A person's name as a message spells it (the sender's own spelling first)."""
    if last is not None:
        for field in ("sender", "destination"):
            if str(last.get(field, "")).lower() == key:
                return str(last[field])
    return key


class RoomStore:
    """Rooms, memberships, room history, read markers and conversation lists."""

    def __init__(self, store: Store) -> None:
        self.store = store
        db = store.db
        self.rooms: AsyncIOMotorCollection[Document] = db["rooms"]
        self.members: AsyncIOMotorCollection[Document] = db["room_members"]
        self.room_history: AsyncIOMotorCollection[Document] = db["room_history"]
        self.markers: AsyncIOMotorCollection[Document] = db["markers"]
        self.users: AsyncIOMotorCollection[Document] = db["room_users"]
        self.indexes_ready = False

    async def ensure_indexes(self) -> None:
        """The store's indexes and these (creating an existing index is a no-op), once
        the direct conversations stored before are summarised."""
        await self.store.ensure_indexes()
        if self.indexes_ready:
            return
        await self.rooms.create_index("visibility", name="visibility")
        await self.members.create_index([("user", ASCENDING), ("state", ASCENDING)], name="user_state")
        await self.members.create_index([("room", ASCENDING), ("state", ASCENDING)], name="room_state")
        await self.room_history.create_index([("room", ASCENDING), ("last", DESCENDING)], name="room_last")
        await self.markers.create_index("user", name="user")
        await self._summarise_direct()
        self.indexes_ready = True

    async def _summarise_direct(self) -> None:
        """Direct conversations stored before the list of conversations existed get
        their entry in `direct`, and their delivered messages count as read (a marker
        at the newest for both people); pending mail stays unread. Once (a marker in
        `meta`; every step can run again). Nothing to do on a new database but writing
        the marker."""
        meta = self.store.meta
        if await meta.find_one({"_id": DIRECT_SUMMARISED}) is not None:
            return
        delivered: dict[str, dict[str, Any]] = {}
        async for doc in self.store.history_buckets.find({}, {"messages": 1}):
            for entry in bucket_entries(doc):
                pair = pair_key(entry["sender"], entry["destination"])
                if pair not in delivered or message_key(entry) > message_key(delivered[pair]):
                    delivered[pair] = entry
        newest = dict(delivered)
        async for doc in self.store.mailbox.find({}):
            entry = history_entry(doc)
            pair = pair_key(entry["sender"], entry["destination"])
            if pair not in newest or message_key(entry) > message_key(newest[pair]):
                newest[pair] = entry
        entries = list(newest.values())
        for start in range(0, len(entries), SUMMARY_CHUNK):
            await self.store.previews.note_direct(entries[start : start + SUMMARY_CHUNK], now=True)
        marks: dict[str, tuple[str, Document]] = {}
        for pair, entry in delivered.items():
            first, _, second = pair.partition("|")
            for user, other in ((first, second), (second, first)):
                marks[marker_id(user, other)] = (seq_of(message_key(entry)), {"user": user, "conversation": other})
        ids = list(marks)
        for start in range(0, len(ids), SUMMARY_CHUNK):
            await self.store.forward(self.markers, "seq", {i: marks[i] for i in ids[start : start + SUMMARY_CHUNK]})
        await meta.update_one({"_id": DIRECT_SUMMARISED}, {"$set": {"at": utcnow()}}, upsert=True)
        if newest:
            logger.info("summarised %d direct conversations stored before", len(newest))

    # --- rooms and their members -----------------------------------------------------------

    async def _room(self, room: str) -> Document:
        doc = await self.rooms.find_one({"_id": room.lower()})
        if doc is None:
            raise RoomRefused(RoomReason.NO_ROOM, f"There is no room {room}.")
        return doc

    async def _member(self, doc: Mapping[str, Any], user: str) -> None:
        """Refuse unless the user is a member of the room."""
        if await self.members.find_one({"_id": member_id(doc["_id"], user), "state": MEMBER}, {"_id": 1}) is None:
            raise RoomRefused(RoomReason.NOT_MEMBER, f"{user} is not in {doc['name']}.")

    @staticmethod
    def _operator(doc: Mapping[str, Any], user: str, what: str) -> None:
        """Refuse unless the user is one of the room's operators."""
        if user.lower() not in {op.lower() for op in ops_of(doc)}:
            raise RoomRefused(RoomReason.NOT_OWNER, f"Only the operators of {doc['name']} may {what}.")

    async def join(self, room: str, user: str, key: str | None = None) -> tuple[Document, bool]:
        """The user joins the room, which is created (owned by them) if there is none:
        the room, and whether it was created. Its owner and operators always come in;
        anyone else is refused by a ban that matches them (BANNED: an operator's ban
        outweighs a member's invitation), and unless invited by a private room
        (PRIVATE), a key (+k) not given (BAD_KEY) or a full room (FULL). Joining again
        changes nothing."""
        doc = await self.rooms.find_one({"_id": room.lower()})
        if await self.store.count(self.members, {"user": user.lower(), "state": MEMBER}) >= MAX_ROOMS_PER_USER and (
            doc is None or await self.members.find_one({"_id": member_id(room, user), "state": MEMBER}, {"_id": 1}) is None
        ):
            raise RoomRefused(RoomReason.TOO_MANY_ROOMS, f"{user} is in {MAX_ROOMS_PER_USER} rooms already; leave one first.")
        created = False
        if doc is None:
            fresh = new_room(room, user, utcnow())
            created = bool(await self.store.insert_new(self.rooms, [fresh]))
            doc = fresh if created else await self._room(room)  # else: another request made it meanwhile
        if not created and user.lower() != doc["owner_key"] and user.lower() not in {op.lower() for op in ops_of(doc)}:
            held = await self.members.find_one({"_id": member_id(room, user)}, {"state": 1})
            if held is None or held["state"] != MEMBER:
                self._admit(doc, user, key, invited=held is not None)
        if await self._enrol(doc["_id"], {user.lower(): user}):
            doc["members"] = int(doc.get("members") or 0) + 1
        return doc, created

    @staticmethod
    def _admit(doc: Mapping[str, Any], user: str, key: str | None, invited: bool) -> None:
        """Refuse someone coming in who may not (see `join`)."""
        name = doc["name"]
        if banned(doc.get("bans") or [], user):
            raise RoomRefused(RoomReason.BANNED, f"You are banned from {name}.")
        if invited:
            return
        if doc["visibility"] != PUBLIC:
            raise RoomRefused(RoomReason.PRIVATE, f"{name} is private: only people invited may join.")
        if doc.get("key") and key != doc["key"]:
            raise RoomRefused(RoomReason.BAD_KEY, f"{name} needs its key: !join {name} <key>.")
        limit = int(doc.get("limit") or 0)
        if limit and int(doc.get("members") or 0) >= limit:
            raise RoomRefused(RoomReason.FULL, f"{name} is full ({limit} members).")

    async def _enrol(self, room: str, users: Mapping[str, str]) -> set[str]:
        """Make these users (key → name as spelled) members of the room (its key); the
        keys of those who were not members before. Their read markers move to now: what
        was said before they joined is not unread."""
        now = utcnow()
        docs: list[Document] = [{"_id": f"{room}|{key}", "room": room, "user": key, "name": name, "state": MEMBER, "since": now} for key, name in users.items()]
        inserted = await self.store.insert_new(self.members, docs)
        joined: set[str] = {key for key in users if f"{room}|{key}" in inserted}
        for doc in docs:
            if doc["_id"] not in inserted:  # held already: by a member, or an invitation
                change = {"state": MEMBER, "name": doc["name"], "since": now}
                if (await self.members.update_one({"_id": doc["_id"], "state": INVITED}, {"$set": change})).modified_count:
                    joined.add(doc["user"])
        if joined:
            await self.rooms.update_one({"_id": room}, {"$inc": {"members": len(joined)}})
            mark = seq_of((format_datetime(now), ""))
            await self.store.forward(self.markers, "seq", {marker_id(key, room): (mark, {"user": key, "conversation": room}) for key in joined})
        return joined

    async def leave(self, room: str, user: str) -> bool:
        """False when the user was not a member. The owner may leave too; the room stays
        (and its owner may always come back)."""
        result = await self.members.delete_one({"_id": member_id(room, user), "state": MEMBER})
        if result.deleted_count:
            await self.rooms.update_one({"_id": room.lower()}, {"$inc": {"members": -1}})
        return bool(result.deleted_count)

    async def room(self, room: str) -> tuple[Document, list[str]] | None:
        """The room and its members' names as spelled (in order of their keys), or None."""
        doc = await self.rooms.find_one({"_id": room.lower()})
        if doc is None:
            return None
        members = await self.members.find({"room": doc["_id"], "state": MEMBER}, {"user": 1, "name": 1}).to_list(None)
        members.sort(key=lambda member: member["user"])
        if len(members) != doc.get("members"):  # a count a crash left behind between two writes
            await self.rooms.update_one({"_id": doc["_id"]}, {"$set": {"members": len(members)}})
            doc["members"] = len(members)
        return doc, [member["name"] for member in members]

    async def rooms_for(self, user: str) -> list[Document]:
        """Every public room that is not secret (+s), and the rooms the user is a member
        of, by name."""
        mine = {m["room"] for m in await self.members.find({"user": user.lower(), "state": MEMBER}, {"room": 1}).to_list(None)}
        docs = {doc["_id"]: doc for doc in await self.rooms.find({"visibility": PUBLIC}).to_list(None) if "s" not in modes_of(doc) or doc["_id"] in mine}
        hidden = [key for key in mine if key not in docs]
        if hidden:
            docs.update({doc["_id"]: doc for doc in await self.rooms.find({"_id": {"$in": hidden}}).to_list(None)})
        return [docs[key] for key in sorted(docs)]

    async def set_room(self, room: str, by: str, topic: str | None = None, private: bool | None = None, mode: ModeChange | None = None) -> Document:
        """Change the topic (any member, or under a topic lock an operator; "" clears
        it), make the room private or public, or change its settings (`mode`: an
        operator; the owner may always make itself an operator again); None leaves a
        setting as it is. Operators and voices are members (else NOT_IN_ROOM). The
        room as it is now."""
        doc = await self._room(room)
        await self._member(doc, by)
        mode = mode or ModeChange()
        owner_ops_itself = private is None and mode == ModeChange(op=mode.op) and {n.lower() for n in mode.op} == {doc["owner_key"]}
        if (private is not None or mode.any()) and not owner_ops_itself:
            self._operator(doc, by, "change its settings")
        if topic is not None and "t" in modes_of(doc):
            self._operator(doc, by, "set its topic (+t)")
        changes: dict[str, Any] = {}
        if topic is not None:
            changes.update(topic=topic or None, topic_by=by if topic else None)
        if private is not None:
            changes["visibility"] = PRIVATE if private else PUBLIC
        changes.update(await self._settings(doc, by, mode))
        if changes:
            await self.rooms.update_one({"_id": doc["_id"]}, {"$set": changes})
            doc.update(changes)
        return doc

    async def _settings(self, doc: Mapping[str, Any], by: str, mode: ModeChange) -> dict[str, Any]:
        """What `mode` changes in the room's document."""
        changes: dict[str, Any] = {}
        if flags := mode.flags():
            letters = set(modes_of(doc))
            for name, on in flags.items():
                (letters.add if on else letters.discard)(FLAGS[name])
            changes["modes"] = "".join(sorted(letters))
        if mode.key is not None:
            changes["key"] = mode.key or None
        if mode.limit is not None:
            changes["limit"] = mode.limit
        if mode.ban or mode.unban:
            gone = {normal_mask(mask).lower() for mask in mode.unban}
            bans = [ban for ban in doc.get("bans") or [] if str(ban["mask"]).lower() not in gone]
            held = {str(ban["mask"]).lower() for ban in bans}
            for mask in map(normal_mask, mode.ban):
                if mask.lower() not in held:
                    held.add(mask.lower())
                    bans.append({"mask": mask, "by": by, "at": int(utcnow().timestamp())})
            if len(bans) > MAX_BANS:
                raise RoomRefused(RoomReason.BAD_MODE, f"{doc['name']} has {MAX_BANS} bans already; lift one first.")
            changes["bans"] = bans
        spelled_as: dict[str, str] = {}
        if mode.op or mode.voice:
            wanted = {name.lower(): name for name in (*mode.op, *mode.voice)}
            found = self.members.find({"_id": {"$in": [member_id(doc["_id"], key) for key in wanted]}, "state": MEMBER}, {"user": 1, "name": 1})
            spelled_as = {m["user"]: m["name"] async for m in found}
            for key, name in wanted.items():
                if key not in spelled_as:
                    raise RoomRefused(RoomReason.NOT_IN_ROOM, f"{name} is not in {doc['name']}.")
        for field, add, remove, now in (("ops", mode.op, mode.deop, ops_of(doc)), ("voiced", mode.voice, mode.devoice, list(doc.get("voiced") or []))):
            if add or remove:
                gone = {name.lower() for name in remove} - {name.lower() for name in add}
                kept = [name for name in now if name.lower() not in gone]
                kept += [spelled_as[key] for key in dict.fromkeys(n.lower() for n in add) if key not in {n.lower() for n in kept}]
                changes[field] = kept
        return changes

    async def invite(self, room: str, by: str, user: str) -> tuple[Document, bool, bool]:
        """Record an invitation of `user` (it lets them into a private, keyed or full
        room, not past a ban): any member may invite to a public room, only an
        operator to a private one. The room, whether the invitation is new, and whether the user
        is a member already."""
        doc = await self._room(room)
        await self._member(doc, by)
        if doc["visibility"] == PRIVATE:
            self._operator(doc, by, "invite people to it")
        invitation = {"_id": member_id(room, user), "room": doc["_id"], "user": user.lower(), "name": user, "state": INVITED, "since": utcnow()}
        if await self.store.insert_new(self.members, [invitation]):
            return doc, True, False
        held = await self.members.find_one({"_id": invitation["_id"]}, {"state": 1})
        return doc, False, held is not None and held["state"] == MEMBER

    async def kick(self, room: str, by: str, user: str) -> bool:
        """An operator removes the user's membership and invitation (and its operator
        and voice); False when there was neither."""
        doc = await self._room(room)
        await self._member(doc, by)
        self._operator(doc, by, "remove people from it")
        held = member_id(room, user)
        roles = {field: [n for n in names if n.lower() != user.lower()] for field, names in (("ops", ops_of(doc)), ("voiced", doc.get("voiced") or []))}
        if any(len(roles[field]) != len(names) for field, names in (("ops", ops_of(doc)), ("voiced", doc.get("voiced") or []))):
            await self.rooms.update_one({"_id": doc["_id"]}, {"$set": roles})
        if (await self.members.delete_one({"_id": held, "state": MEMBER})).deleted_count:
            await self.rooms.update_one({"_id": doc["_id"]}, {"$inc": {"members": -1}})
            return True
        return bool((await self.members.delete_one({"_id": held})).deleted_count)

    # --- room history ---------------------------------------------------------------------

    async def archive(self, entries: Iterable[dict[str, Any]]) -> int:
        """Store room messages (history entries whose destination is a room) once each
        in their room's history, a bucket per room and batch, however many copies of
        one the batch holds; the rooms' newest messages move on. How many were given."""
        by_room: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        given = 0
        for entry in entries:
            by_room[entry["destination"].lower()].setdefault(entry["id"], entry)
            given += 1
        now = utcnow()
        buckets: list[Document] = []
        newest: dict[str, tuple[str, Document]] = {}
        for room, found in by_room.items():
            batch = list(found.values())
            buckets += [room_bucket(room, batch[i : i + MAX_BUCKET], now) for i in range(0, len(batch), MAX_BUCKET)]
            last = max(batch, key=message_key)
            newest[room] = (seq_of(message_key(last)), {"last": dumps(last)})
        await self.store.insert_new(self.room_history, buckets)
        await self.store.forward(self.rooms, "last_seq", newest, create=False)
        return given

    async def history(self, room: str, user: str, limit: int, before: Key | None = None) -> tuple[list[dict[str, Any]], bool]:
        """The room's newest `limit` messages placed before `before`, newest first, and
        whether older ones are left; for members only (NOT_MEMBER)."""
        doc = await self._room(room)
        await self._member(doc, user)
        return await self._page(doc["_id"], limit, before)

    async def _page(self, room: str, limit: int, before: Key | None = None, after: Key | None = None) -> tuple[list[dict[str, Any]], bool]:
        page = Page(limit + 1, before, after)
        await self.store.gather(page, self.room_history, {"room": room})
        docs = page.result()
        return docs[:limit], len(docs) > limit

    async def _unread(self, room: str, user: str, mark: Key | None) -> int:
        docs, _ = await self._page(room, MAX_UNREAD, None, mark)
        return sum(1 for doc in docs if doc["sender"].lower() != user and counts_as_unread(doc))

    # --- read markers ---------------------------------------------------------------------

    async def _markers(self, ids: list[str]) -> dict[str, Key]:
        if not ids:
            return {}
        return {doc["_id"]: key_of(doc["seq"]) async for doc in self.markers.find({"_id": {"$in": ids}}, {"seq": 1})}

    async def advance(self, markers: Iterable[tuple[str, str, str, str | datetime]]) -> int:
        """Move read markers forward: (user, conversation, message id, timestamp), the
        conversation a room or the other person. A marker never moves back, and one in
        a room the user is not a member of is ignored. How many moved."""
        wanted: dict[str, tuple[str, Document]] = {}
        for user, conversation, message_id, timestamp in markers:
            seq = seq_of((format_datetime(parse_timestamp(timestamp)), message_id))
            mid = marker_id(user, conversation)
            if mid not in wanted or wanted[mid][0] < seq:
                wanted[mid] = (seq, {"user": user.lower(), "conversation": conversation.lower()})
        in_rooms = {mid: member_id(fields["conversation"], fields["user"]) for mid, (_, fields) in wanted.items() if is_room(fields["conversation"])}
        if in_rooms:
            found = self.members.find({"_id": {"$in": list(in_rooms.values())}, "state": MEMBER}, {"_id": 1})
            members = {doc["_id"] async for doc in found}
            wanted = {mid: value for mid, value in wanted.items() if mid not in in_rooms or in_rooms[mid] in members}
        return len(await self.store.forward(self.markers, "seq", wanted))

    # --- logins and conversation lists -------------------------------------------------------

    async def logins(self, users: Iterable[str], catchup: int, defaults: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """For a batch of users logging in (by name lower-cased, each asked one there):
        the rooms each is a member of, by name, with the unread count, up to `catchup`
        of the newest messages after the user's marker (oldest first) and the marker (a
        cursor, or None). A user seen here for the first time ever joins `defaults`
        first (created if missing, owned by the server; a private one is left out).

        A bounded number of queries whatever the number of users: a few for the batch,
        and one page of each room the batch is in, read as far back as its least read
        member needs (and no further than MAX_UNREAD messages), which every member's
        count and catch-up are cut from; none for a room nobody has anything new in."""
        given = {user.lower(): user for user in users}
        if not given:
            return {}
        done = {doc["_id"] async for doc in self.users.find({"_id": {"$in": list(given)}}, {"_id": 1})}
        if fresh := {key: name for key, name in given.items() if key not in done}:
            await self._first_logins(fresh, list(defaults))
        memberships = await self.members.find({"user": {"$in": list(given)}, "state": MEMBER}, {"room": 1, "user": 1}).to_list(None)
        keys = sorted({m["room"] for m in memberships})
        docs = {doc["_id"]: doc for doc in await self.rooms.find({"_id": {"$in": keys}}).to_list(None)} if keys else {}
        marks = await self._markers([marker_id(m["user"], m["room"]) for m in memberships])
        unread_from: dict[str, Key | None] = {}  # room → the least read member's marker (None: one has read nothing)
        for m in memberships:
            mark = marks.get(marker_id(m["user"], m["room"]))
            if m["room"] not in unread_from:
                unread_from[m["room"]] = mark
            elif (least := unread_from[m["room"]]) is not None:
                unread_from[m["room"]] = None if mark is None else min(least, mark)
        pages: dict[str, list[dict[str, Any]]] = {}
        for key, doc in docs.items():
            least = unread_from.get(key)
            if doc.get("last_seq") and (least is None or key_of(doc["last_seq"]) > least):
                pages[key], _ = await self._page(key, MAX_UNREAD, None, least)
        answer: dict[str, list[dict[str, Any]]] = {key: [] for key in given}
        for m in sorted(memberships, key=lambda m: m["room"]):
            if (held := docs.get(m["room"])) is None:
                continue
            mark = marks.get(marker_id(m["user"], m["room"]))
            newer = [e for e in pages.get(m["room"], []) if mark is None or message_key(e) > mark]  # newest first
            answer[m["user"]].append(
                {
                    "room": room_info(held),
                    "unread": sum(1 for e in newer if e["sender"].lower() != m["user"] and counts_as_unread(e)),
                    "messages": newer[:catchup][::-1],
                    "marker": None if mark is None else encode_cursor(mark),
                }
            )
        return answer

    async def _first_logins(self, users: Mapping[str, str], defaults: list[str]) -> None:
        """The users' first logins: they join the default rooms (made if missing), then
        are recorded as set up; a crash in between repeats the (idempotent) joins."""
        now = utcnow()
        wanted = {room.lower(): room for room in defaults}
        if wanted:
            have = {doc["_id"]: doc async for doc in self.rooms.find({"_id": {"$in": list(wanted)}}, {"visibility": 1})}
            await self.store.insert_new(self.rooms, [new_room(name, SERVER_NAME, now) for key, name in wanted.items() if key not in have])
            for key in wanted:
                if key not in have or have[key]["visibility"] != PRIVATE:  # a default room made private takes invitations only
                    await self._enrol(key, users)
        await self.store.insert_new(self.users, [{"_id": key, "at": now} for key in users])

    async def conversations(self, user: str) -> list[dict[str, Any]]:
        """The user's conversations, the most recent first (rooms nobody has written in
        yet last, by name), at most MAX_CONVERSATIONS: each {kind: dm or room, name (as
        spelled), last: the newest message or None, unread}. Unread counts are read
        only where the newest message is past the user's marker."""
        key = user.lower()
        items: list[tuple[str, str, str, str | None]] = []  # (last_seq, kind, conversation key, last as JSON)
        for doc in await self.store.previews.direct_conversations(key, MAX_CONVERSATIONS):
            peer = next((u for u in doc["users"] if u != key), key)
            items.append((doc["last_seq"], "dm", peer, doc["last"]))
        memberships = await self.members.find({"user": key, "state": MEMBER}, {"room": 1}).to_list(None)
        rooms = {doc["_id"]: doc for doc in await self.rooms.find({"_id": {"$in": [m["room"] for m in memberships]}}).to_list(None)} if memberships else {}
        items += [(doc.get("last_seq") or "", "room", room, doc.get("last")) for room, doc in rooms.items()]
        items.sort(key=lambda item: item[2])
        items.sort(key=lambda item: item[0], reverse=True)
        items = items[:MAX_CONVERSATIONS]
        marks = await self._markers([marker_id(key, item[2]) for item in items])
        peers = [item[2] for item in items if item[1] == "dm"]
        names = {doc["_id"]: doc["name"] async for doc in self.store.names.find({"_id": {"$in": peers}}, {"name": 1})} if peers else {}
        answer: list[dict[str, Any]] = []
        for seq, kind, conversation, last_json in items:
            last = None if last_json is None else from_history_entry(json.loads(last_json))
            mark = marks.get(marker_id(key, conversation))
            unread = 0
            if seq and (mark is None or key_of(seq) > mark):
                unread = await (self.store.direct_unread(key, conversation, mark) if kind == "dm" else self._unread(conversation, key, mark))
            name = rooms[conversation]["name"] if kind == "room" else names.get(conversation) or spelled(last, conversation)
            answer.append({"kind": kind, "name": name, "last": last, "unread": unread})
        return answer
