"""Rooms as this node serves them: who of each room is online here, the fan-out, the
catch-up at login and the read markers. The room commands (`!join`, `!mode`, …) are
`RoomCommands` (room_commands.py), a mixin of `Rooms`.

The store (through the message API) keeps rooms, members, topics, history and read
markers, so they survive restarts; this keeps, for each room with a member online here,
the sessions to write to. A room message therefore costs no database call: it is
rendered once per dialect, written to every member's sessions, and archived once (the
history archiver's batches, as direct messages are). A member's read marker moves when
its client has a message (acknowledged, or by its TCP stack: `Session.received`), in
batches (`Markers`).

    #hiking: hi all    ->  [2026-12-01T10:00:05Z][#hiking][alice] hi all   (to every other member)

Bots get a room message only when it is addressed to them (`@bot …` or `bot: …`) and
not from another bot, so bots never talk among themselves without end.

A room's settings are IRC's channel modes, for every client (`!mode #room +k key`, IRC's
MODE is the same command; room_commands.py): the store keeps them and refuses the joins
they forbid; the fan-out checks the two that concern a line (+m, +n) against what the
room holds here, two attribute reads and a set lookup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from chatnet.api_client import ApiClient
from chatnet.config import Settings
from chatnet.delivery import FirstLook, Priority
from chatnet.directory import Directory
from chatnet.errors import ChatError
from chatnet.identity import BOT
from chatnet.limits import MAX_CATCHUP, MAX_MARKERS, MAX_ROOM_LOGINS
from chatnet.protocol import BOT_FEATURE, STREAM_FEATURE, Chat, Clock, Delivery, Event, RoomReason, check_room, new_id, partial_chunk, strip_address
from chatnet.room_commands import RoomCommands, room_roles, room_settings, stored_delivery
from chatnet.session import Session

if TYPE_CHECKING:
    from chatnet.nodes import Nodes

logger = logging.getLogger("chatnet.server")

# Read markers gather this long before they go to the API in one request.
MARKER_FLUSH = 1.0  # not Final: the unit tests shorten it (chatnet/native.py)
# What one node tells the others' members of a room.
_TOLD: Final = frozenset({Event.ROOM_PRESENCE, Event.TOPIC, Event.ROOM_MODE})


class Room:
    """A room with members online here: what its lines and notices need."""

    __slots__ = ("key", "name", "owner", "topic", "private", "members", "here", "settings", "moderated", "no_external", "secret", "speakers", "ops")

    def __init__(self, info: dict[str, Any]) -> None:
        self.key = str(info["name"]).lower()
        self.here: set[Session] = set()  # the sessions of its members logged in here
        self.update(info)

    def update(self, info: dict[str, Any]) -> None:
        self.name: str = info["name"]
        self.owner: str = info.get("owner") or ""
        self.topic: str = info.get("topic") or ""
        self.private: bool = bool(info.get("private"))
        self.members: int = int(info.get("members") or 0)
        self.configure(room_settings(info))

    def configure(self, settings: dict[str, Any]) -> None:
        """The room's settings, as the store has them (here or told by another node)."""
        self.settings = settings
        self.private = bool(settings.get("private"))
        self.moderated: bool = bool(settings.get("moderated"))
        self.no_external: bool = settings.get("no_external") is not False
        self.secret: bool = bool(settings.get("secret"))
        self.ops: list[str] = list(settings.get("ops") or [])
        # Who writes to it when moderated: its operators and voiced members (keys).
        self.speakers: frozenset[str] = frozenset(name.lower() for name in (self.owner, *self.ops, *(settings.get("voiced") or [])))

    def online(self) -> int:
        return len({session.key for session in self.here})


class Markers:
    """Read markers waiting to go to the API: the newest message per (member, room)."""

    def __init__(self, api: ApiClient, priority: Priority) -> None:
        self.api = api
        self.priority = priority
        self._waiting: dict[tuple[str, str], tuple[str, str, str, str]] = {}
        self._wake = asyncio.Event()

    def note(self, user: str, message: Delivery) -> None:
        msg_id, _, room, _, timestamp = message[:5]
        if msg_id is not None:
            self._waiting[(user.lower(), room.lower())] = (user, room, msg_id, timestamp)  # later ones are newer
            self._wake.set()

    def holds(self, user: str) -> bool:
        """Markers of `user` (a key) are waiting to be written."""
        return any(key == user for key, _ in self._waiting)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(MARKER_FLUSH)
            await self.flush()

    async def flush(self) -> None:
        self._wake.clear()
        while self._waiting:
            batch = list(self._waiting.values())[:MAX_MARKERS]
            for user, room, _, _ in batch:
                self._waiting.pop((user.lower(), room.lower()), None)
            try:
                with self.priority:
                    await self.api.advance_markers(batch)
            except ChatError as exc:  # the messages stay unread: shown again at the next login, never lost
                logger.warning("could not move %d read marker(s): %s", len(batch), exc)
                return


class Rooms(RoomCommands):
    """The room part of the router (`chatnet.router.Router` hands it room lines and the
    room commands)."""

    def __init__(
        self,
        settings: Settings,
        api: ApiClient,
        directory: Directory[Session],
        clock: Clock,
        priority: Priority,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        archive: Callable[[Delivery], None],
        is_bot: Callable[[str], bool] = lambda name: False,
        nodes: Nodes | None = None,
    ) -> None:
        self.api = api
        self.nodes = nodes  # the other nodes, when there are: each room line is published once to them
        self.is_bot = is_bot  # a name is a bot's account
        self.directory = directory
        self.clock = clock
        self.spawn = spawn
        self.archive = archive
        self.catchup = max(0, min(settings.room_catchup, MAX_CATCHUP))
        defaults = [check_room(room.strip()) for room in settings.default_rooms.split(",") if room.strip()]
        self.first_look: FirstLook[list[dict[str, Any]]] = FirstLook(
            lambda names: api.room_logins(names, self.catchup, defaults), [], MAX_ROOM_LOGINS, priority, spawn, "rooms"
        )
        self.markers = Markers(api, priority)
        self._rooms: dict[str, Room] = {}  # by key: the rooms with a member online here
        # The rooms each session is in, by key: a tuple, as joins and leaves are rare and
        # a set costs 216 bytes even for one room (ten thousand idle members, 2 MB).
        self._in: dict[Session, tuple[str, ...]] = {}
        self.commands: dict[str, Callable[[Session, str], None]] = {
            "join": self._cmd_join,
            "leave": self._cmd_leave,
            "rooms": self._cmd_rooms,
            "members": self._cmd_members,
            "topic": self._cmd_topic,
            "history": self._cmd_history,
            "invite": self._cmd_invite,
            "kick": self._cmd_kick,
            "private": self._cmd_private,
            "public": self._cmd_public,
            "mode": self._cmd_mode,
        }

    # --- coming and going ------------------------------------------------------------

    async def enter(self, session: Session) -> list[dict[str, Any]] | None:
        """At login, before the welcome: into every room the user is a member of (so what
        it sends right after the welcome finds them). Returns what `catch_up` shows
        (None: the rooms could not be looked up)."""
        try:
            if self.markers.holds(session.key):  # what it read last time counts as read
                await self.markers.flush()
            entries = await self.first_look.look(session.name)
        except ChatError as exc:
            logger.warning("rooms of %s unavailable: %s", session.name, exc)
            return None
        if not session.is_open:
            return []
        for entry in entries:
            room = self._rooms.get(str(entry["room"]["name"]).lower())
            first = room is None or not any(other.key == session.key for other in room.here)
            room = self._enter(session, entry["room"])
            if session.dialect.rejoins:  # its own JOIN before anything said in the room
                self._rejoin(session, room)
            if first:  # not for a second session of someone online already
                self._tell_members(room, session, "online")
        return entries

    def catch_up(self, session: Session, entries: list[dict[str, Any]] | None) -> None:
        """After the welcome and the stored mail: each room's messages the user has not
        seen yet (up to ROOM_CATCHUP), announced by one line."""
        if entries is None:
            if session.is_open:
                session.error("Your rooms are unavailable right now (the message store can't be reached); try !rooms later.", Event.ROOMS)
            return
        for entry in entries:
            unread, messages = int(entry.get("unread") or 0), entry.get("messages") or []
            if not session.is_open or not unread:
                continue  # nothing, or only one's own
            name = entry["room"]["name"]
            if session.kind == BOT:  # a bot is shown what is addressed to it, as when it is online
                messages = [m for m in messages if strip_address(session.name, m["message"]) is not None]
                if not messages:
                    continue
            count = max(unread, len(messages))
            text = f"{name}: {count} new message{'s' if count != 1 else ''} since you were last here:"
            session.notice(text, Event.CATCHUP, room=name, unread=count, shown=len(messages))
            for message in messages:
                delivery = stored_delivery(message)
                session.deliver_line(session.dialect.replayed(delivery).encode(), delivery)  # acknowledged, it moves the marker

    def local(self, name: str) -> Room | None:
        """The room of that name, when a member is logged in here (the router's typing relay)."""
        return self._rooms.get(name.lower())

    def _online(self, key: str) -> bool:
        """Online anywhere in the network."""
        return bool(self.directory.sessions(key)) or (self.nodes is not None and bool(self.nodes.where(key)))

    def _rejoin(self, session: Session, room: Room) -> None:
        text = f"You are in {room.name} ({room.members} member{'s' if room.members != 1 else ''}, {room.online()} online)."
        session.notice(
            text, Event.JOINED, room=room.name, created=False, members=room.members, online=room.online(),
            topic=room.topic, owner=room.owner, names=self._here(room), **room_roles(room.settings),
        )  # fmt: skip

    @staticmethod
    def _here(room: Room) -> list[str]:
        """The names of the room's members online here, each once."""
        return sorted({session.name for session in room.here}, key=str.lower)

    async def renamed(self, session: Session, old: str) -> None:
        """A guest took a new name (`!nick`): it stays in its rooms, their members are
        told, and the store's memberships follow (but into a private room only the old
        name was invited to: it leaves that one)."""
        rooms = [room for room in map(self._rooms.get, list(self._in.get(session, ()))) if room is not None]
        for room in rooms:
            text = f"{old} is {session.name} now in {room.name}"
            details = {"room": room.name, "user": session.name, "old": old, "presence": "renamed"}
            for other in room.here:
                if other.key != session.key and other.wants_presence:
                    other.notice(text, Event.ROOM_PRESENCE, **details)
            if self.nodes is not None:
                self.nodes.tell_room(room.key, session.key, text, Event.ROOM_PRESENCE, details)
        for room in rooms:
            try:
                await self.api.join_room(room.name, session.name, room.settings.get("key"))
                await self.api.leave_room(room.name, old)
            except ChatError as exc:
                logger.info("%s (was %s) left %s: %s", session.name, old, room.name, exc)
                self._leave(session, room.key)
                if session.is_open:
                    session.notice(f"Left {room.name}: {old} was its member, {session.name} may not be.", Event.LEFT, room=room.name)
                self._tell_members(room, session, "left")

    def left(self, session: Session) -> None:
        """The session is gone."""
        keys = self._in.pop(session, ())
        for key in keys:
            room = self._rooms.get(key)
            if room is None:
                continue
            room.here.discard(session)
            if not any(other.key == session.key for other in room.here):
                self._tell_members(room, session, "offline", reason=session.quit_reason)
            if not room.here:
                self._forget(key)

    def _enter(self, session: Session, info: dict[str, Any]) -> Room:
        key = str(info["name"]).lower()
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = Room(info)
            if self.nodes is not None:
                self.nodes.hear_room(key)  # its first member here: its lines from elsewhere come to this node
        else:
            room.update(info)
        room.here.add(session)
        keys = self._in.get(session, ())
        if key not in keys:
            self._in[session] = (*keys, room.key)  # the room's own text, not a copy per member
        return room

    def _leave(self, session: Session, key: str) -> None:
        keys = self._in.get(session, ())
        if key in keys:
            self._in[session] = tuple(other for other in keys if other != key)
        room = self._rooms.get(key)
        if room is not None:
            room.here.discard(session)
            if not room.here:
                self._forget(key)

    def _forget(self, key: str) -> None:
        """The room has no member here any more."""
        del self._rooms[key]
        if self.nodes is not None:
            self.nodes.leave_room(key)

    def _tell_members(self, room: Room, about: Session, presence: str, **details: Any) -> None:
        """Room presence for the members who are told of comings and goings (JSON, IRC),
        here and on the other nodes."""
        text = f"{about.name} {presence} in {room.name}"
        details = {"room": room.name, "user": about.name, "presence": presence, **details}
        for other in room.here:
            if other.key != about.key and other.wants_presence:
                other.notice(text, Event.ROOM_PRESENCE, **details)
        if self.nodes is not None:
            self.nodes.tell_room(room.key, about.key, text, Event.ROOM_PRESENCE, details)

    # --- room lines (the fan-out) -------------------------------------------------------

    def send(self, sender: Session, chat: Chat) -> None:
        destination, message, metadata, kind = chat
        room = self._rooms.get(destination.lower())
        if room is None or (sender not in room.here and room.no_external):
            self._not_in(sender, chat, room)
            return
        if room.moderated and sender.key not in room.speakers:
            if metadata is None or not metadata.get("notice"):  # an IRC NOTICE gets no error back
                text = f"{room.name} is moderated: only its operators and voiced members write to it."
                sender.error(text, Event.BAD_INPUT, room=room.name, reason=RoomReason.MODERATED, sending=True)
            return
        self._say(sender, room, (new_id(), sender.name, room.name, message, self.clock.text, kind, metadata, sender.features))

    def _say(self, sender: Session, room: Room | None, delivery: Delivery) -> None:
        """A room line from a sender here: to the room's members here (`room`, when it
        has any), on the other nodes, in its history."""
        metadata = delivery[6]
        if room is not None:
            self._fan_out(room, delivery, sender, sender.kind == BOT)
        if sender.echoes_own:
            sender.deliver_line(sender.dialect.delivery(delivery).encode(), delivery)
        if self.nodes is not None:
            self.nodes.publish_room(delivery[2].lower(), delivery)  # once: each node fans it out to its own
        if metadata is None or not partial_chunk(metadata):  # a streamed reply is archived whole, from its final frame
            self.archive(delivery)
            self.markers.note(sender.name, delivery)  # one has read the room up to what one says

    def fan_out_here(self, room_key: str, delivery: Delivery) -> None:
        """A room's line from another node, for the room's members here."""
        room = self._rooms.get(room_key)
        if room is not None:
            self._fan_out(room, delivery, None, BOT_FEATURE in delivery[7])

    def _fan_out(self, room: Room, delivery: Delivery, sender: Session | None, from_bot: bool) -> None:
        message, metadata = delivery[3], delivery[6]
        partial = metadata is not None and partial_chunk(metadata)
        rendered: dict[str, bytes] = {}  # by dialect: each message rendered once per wire format
        for member in room.here:
            if member is sender or member.paused:
                continue  # a member not keeping up reads it at its next login (its marker stays)
            if member.kind == BOT and (from_bot or strip_address(member.name, message) is None):
                continue
            if partial and STREAM_FEATURE not in member.features:
                continue  # the pieces of a streamed reply go to those who asked for them; all get the whole
            dialect = member.dialect.name
            text = rendered.get(dialect)
            if text is None:
                text = rendered[dialect] = member.dialect.delivery(delivery).encode()
            member.deliver_line(text, delivery)

    def told_here(self, room_key: str, skip: str, text: str, event: str, details: dict[str, Any]) -> None:
        """A room's notice from another node (presence, topic, mode), for its members here."""
        room = self._rooms.get(room_key)
        if room is None or event not in _TOLD:
            return
        if event == Event.ROOM_MODE and isinstance(details.get("settings"), dict):
            room.configure(details["settings"])  # what +m and -n let through, here as there
        for member in room.here:
            if member.key != skip and (member.wants_presence or event != Event.ROOM_PRESENCE):
                member.notice(text, Event(event), **details)

    def _not_in(self, sender: Session, chat: Chat, room: Room | None) -> None:
        """A line to a room the sender is not in: refused, unless the room takes lines
        from outside (-n), which the store says when nobody of it is here."""
        notice = chat[2] is not None and bool(chat[2].get("notice"))  # an IRC NOTICE gets no error back
        if room is not None:  # +n, known here
            if not notice:
                sender.error(f"You are not in {room.name}; !join {room.name} first.", Event.BAD_INPUT, room=room.name, reason=RoomReason.NOT_MEMBER, sending=True)
            return
        look = self._outside(sender, chat, notice)
        self.spawn(sender.held_until(look) if sender.dialect.in_order else look)  # the answer before what it says next

    async def _outside(self, session: Session, chat: Chat, notice: bool) -> None:
        name = chat[0]
        try:
            info = await self.api.room(name)
        except ChatError:
            info = {"name": name}
        if not session.is_open:
            return
        if info is not None and info.get("no_external") is False and (not info.get("moderated") or session.key in Room(info).speakers):
            destination, message, metadata, kind = chat
            self._say(session, self._rooms.get(name.lower()), (new_id(), session.name, info["name"], message, self.clock.text, kind, metadata, session.features))
        elif notice:
            return
        elif info is not None:
            session.error(f"You are not in {name}; !join {name} first.", Event.BAD_INPUT, room=name, reason=RoomReason.NOT_MEMBER, sending=True)
        else:
            session.error(f"There is no room {name}; !join {name} creates it.", Event.BAD_INPUT, room=name, reason=RoomReason.NO_ROOM, sending=True)

    def received(self, session: Session, messages: list[Delivery]) -> None:
        """Live messages the session's reader has, oldest first: its read markers move
        past the newest of each of its rooms (looked for from the end, until each room
        it is in has been found)."""
        rooms = self._in.get(session)
        if not rooms:
            return
        left = len(rooms)
        seen: set[str] = set()
        for message in reversed(messages):
            room = message[2]
            if room[:1] == "#" and room not in seen and message[1] != session.name:
                seen.add(room)
                self.markers.note(session.name, message)
                if room.lower() in rooms:  # (one it has left still gets its marker)
                    left -= 1
                    if not left:
                        return
