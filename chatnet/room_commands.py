"""The room commands: `!join`, `!leave`, `!rooms`, `!members`, `!topic`, `!history`,
`!invite`, `!kick`, `!private`/`!public` and `!mode`, and a room's settings as IRC's
channel modes.

    !join #hiking      ->  Joined #hiking (3 members, 2 online).  /  Created #hiking; you are its owner.
    !mode #hiking +ml 20    ->  alice set #hiking +ml 20 (moderated: only operators and voiced members write; at most 20 members)

Each command reads its words at once and does its API work in a task (`_run`), a
refusal said to the session in plain words. The commands are `RoomCommands`, a mixin of
`Rooms` (rooms.py): they use its API client, its rooms here and the ways in and out of
them (`_enter`, `_leave`, `_tell_members`): the mixin declares those, `Rooms.__init__`
sets them, and this module never imports rooms.py (but for types). What both need
(`room_settings`, `room_roles`, `stored_delivery`) is here, and rooms.py imports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from chatnet.api_client import ApiClient
from chatnet.directory import Directory
from chatnet.errors import ApiRejected, ChatError, ProtocolError
from chatnet.limits import MAX_JOINS_AT_ONCE, MAX_KEY_CHARS, MAX_MODE_CHANGES, MAX_QUIT_CHARS, MAX_ROOM_LIMIT, MAX_ROOMS_PER_USER, MAX_TOPIC_CHARS
from chatnet.protocol import Delivery, Event, RoomReason, check_name, check_room
from chatnet.session import Session

if TYPE_CHECKING:
    from chatnet.nodes import Nodes
    from chatnet.rooms import Room

# `!history` shows this many messages when no count is given, and at most HISTORY_MAX.
HISTORY_DEFAULT: Final = 20
HISTORY_MAX: Final = 200
# `!topic #room -` clears the topic (IRC's `TOPIC #room :`).
CLEAR_TOPIC: Final = "-"
# A room's settings as the API names them, and as members are told of them.
SETTINGS: Final = ("private", "moderated", "no_external", "secret", "topic_lock", "key", "limit", "ops", "voiced")
# `!mode` letters: flags (the API's setting each one is), those with a value, lists.
MODE_FLAGS: Final = {"i": "private", "m": "moderated", "n": "no_external", "s": "secret", "t": "topic_lock"}
MODE_LISTS: Final = {"b": ("ban", "unban"), "o": ("op", "deop"), "v": ("voice", "devoice")}
# What a change means, to a person reading it.
_MEANING: Final = {
    "+i": "private: only invited people may join", "-i": "public: anyone may join",
    "+m": "moderated: only operators and voiced members write", "-m": "not moderated",
    "+n": "only members write to it", "-n": "anyone may write to it",
    "+s": "secret: listed to members only", "-s": "listed",
    "+t": "only operators set the topic", "-t": "any member sets the topic",
    "+k": "a key to join", "-k": "no key", "+l": "at most {} members", "-l": "no member limit",
    "+b": "{} banned", "-b": "{} no longer banned", "+o": "{} an operator", "-o": "{} no longer an operator",
    "+v": "{} voiced", "-v": "{} no longer voiced",
}  # fmt: skip


# !private and !public say it as they always have.
_PRIVACY: Final[dict[tuple[tuple[str, str | None], ...], str]] = {
    (("+i", None),): "{room} is private now: only members see it, and only invited people may join.",
    (("-i", None),): "{room} is public now: anyone may join.",
}


def room_settings(info: dict[str, Any]) -> dict[str, Any]:
    """A room's settings (of an API RoomInfo), as its members are told of them."""
    return {name: info.get(name) for name in SETTINGS}


def mode_string(settings: dict[str, Any], with_key: bool = True) -> str:
    """The settings as IRC writes a channel's modes: `+iklnt secret 20`."""
    letters = sorted(letter for letter, name in MODE_FLAGS.items() if settings.get(name))
    values: list[str] = []
    if settings.get("key"):
        letters.append("k")
        values.append(str(settings["key"]) if with_key else "*")
    if settings.get("limit"):
        letters.append("l")
        values.append(str(settings["limit"]))
    return " ".join(["+" + "".join(letters), *values])


def parse_modes(words: list[str]) -> tuple[list[tuple[str, str | None]], list[tuple[str, str, str | None]], bool]:
    """`!mode` changes (IRC's: `+kl-m key 20`) as [(sign and letter, value)], the
    refused ones as [(letter, why, the value or None)], and whether the ban list is asked."""
    changes: list[tuple[str, str | None]] = []
    refused: list[tuple[str, str, str | None]] = []
    asked = False
    values = words[1:]
    sign = "+"
    for letter in words[0] if words else "":
        if letter in "+-":
            sign = letter
            continue
        if letter in MODE_FLAGS:
            changes.append((sign + letter, None))
        elif letter == "k":
            if sign == "-":  # no value (IRC's -k <key>: the dialect drops it)
                changes.append(("-k", None))
                continue
            key = values.pop(0) if values else None
            if key is None or not key.strip() or len(key) > MAX_KEY_CHARS or "," in key:
                refused.append(("k", f"a key is one word of 1-{MAX_KEY_CHARS} characters", key))
            else:
                changes.append(("+k", key))
        elif letter == "l":
            if sign == "-":
                changes.append(("-l", None))
                continue
            limit = values.pop(0) if values else ""
            if not limit.isdigit() or not 1 <= int(limit) <= MAX_ROOM_LIMIT:
                refused.append(("l", f"a member limit is a number from 1 to {MAX_ROOM_LIMIT}", limit))
            else:
                changes.append(("+l", str(int(limit))))
        elif letter in MODE_LISTS:
            if values:
                changes.append((sign + letter, values.pop(0)))
            elif letter == "b":
                asked = True
        else:
            refused.append((letter, "unknown", None))
    return changes[:MAX_MODE_CHANGES], refused, asked


def changes_string(changes: list[tuple[str, str | None]]) -> str:
    """Changes as IRC writes them, the letters grouped by sign: `+kl-m beer 20`."""
    letters, sign = "", ""
    for change, _ in changes:
        if change[0] != sign:
            sign = change[0]
            letters += sign
        letters += change[1]
    return " ".join([letters, *(value for _, value in changes if value is not None)])


def describe(changes: list[tuple[str, str | None]]) -> str:
    """Changes as a person reads them: `+l 20 (at most 20 members)`."""
    said = changes_string(changes)
    meaning = "; ".join(_MEANING[change].format(value) for change, value in changes)
    return f"{said} ({meaning})"


class RoomCommands:
    """The room commands of `Rooms` (`Rooms.commands` maps their names to them)."""

    # What of Rooms they use: Rooms.__init__ sets it, and Rooms defines the methods.
    api: ApiClient
    directory: Directory[Session]
    nodes: Nodes | None
    is_bot: Callable[[str], bool]
    spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]
    _rooms: dict[str, Room]

    # Rooms' methods, declared here so this mixin type-checks: plain methods, not stubs under
    # `if TYPE_CHECKING`, because a class body mypyc compiles holds no statements.
    def _enter(self, session: Session, info: dict[str, Any]) -> Room:
        raise NotImplementedError

    def _leave(self, session: Session, key: str) -> None:
        raise NotImplementedError

    def _online(self, key: str) -> bool:
        raise NotImplementedError

    def _tell_members(self, room: Room, about: Session, presence: str, **details: Any) -> None:
        raise NotImplementedError

    @staticmethod
    def _here(room: Room) -> list[str]:
        raise NotImplementedError

    # --- commands ------------------------------------------------------------------------

    def _run(self, session: Session, work: Coroutine[Any, Any, None], room: str | None = None, hold: bool = False) -> None:
        """A command's API work about `room`, its refusals said to the session in plain
        words (and, for clients that map them, with the room and the reason). With
        `hold`, the session's next lines wait until it is done."""
        answered = self._answered(session, work, room)
        self.spawn(session.held_until(answered) if hold or session.dialect.in_order else answered)

    async def _answered(self, session: Session, work: Coroutine[Any, Any, None], room: str | None) -> None:
        about: dict[str, Any] = {"room": room} if room is not None else {}
        try:
            await work
        except ApiRejected as exc:
            if session.is_open:
                session.error(_refusal(exc), Event.BAD_INPUT, **about, reason=exc.reason)
        except ChatError as exc:
            if session.is_open:
                session.error(f"Rooms are unavailable right now: {exc}", Event.BAD_INPUT, **about)

    def _cmd_join(self, session: Session, args: str) -> None:
        joins_asked: list[tuple[str, str | None]] = []  # each room, and its key when one follows it
        for word in args.split():
            if word.startswith("#") or not joins_asked or joins_asked[-1][1] is not None:
                joins_asked.append((check_room(word), None))
            else:
                joins_asked[-1] = (joins_asked[-1][0], word)
        if not joins_asked or len(joins_asked) > MAX_JOINS_AT_ONCE:
            raise ProtocolError(f"Write !join #room [key] (or up to {MAX_JOINS_AT_ONCE} rooms: !join #a #b).")
        async def joins() -> None:  # one after the other: answered in the order asked
            for name, key in joins_asked:
                await self._answered(session, self._join(session, name, key), name)

        self.spawn(session.held_until(joins()))

    async def _join(self, session: Session, name: str, key: str | None = None) -> None:
        answer = await self.api.join_room(name, session.name, key)
        info, created = answer["room"], answer["created"]
        sessions = [s for s in self.directory.sessions(session.key) if s.is_open]
        if not sessions:
            return
        room = self._rooms.get(str(info["name"]).lower())
        newcomer = room is None or not any(s.key == session.key for s in room.here)
        for each in sessions:
            room = self._enter(each, info)
        assert room is not None
        names = self._here(room)
        if self.nodes is not None:  # who is in it anywhere in the network, not only here
            detail = await self.api.room(room.name)
            if detail is not None:
                names = sorted((n for n in detail["member_names"] if self._online(n.lower())), key=str.lower)
        online = len(names)
        if created:
            text = f"Created {room.name}; you are its owner."
        else:
            text = f"Joined {room.name} ({room.members} member{'s' if room.members != 1 else ''}, {online} online)."
        for each in sessions:
            each.notice(
                text, Event.JOINED, room=room.name, created=created, members=room.members, online=online, topic=room.topic,
                owner=room.owner, names=names, topic_by=info.get("topic_by"), **room_roles(room.settings),
            )  # fmt: skip
            if room.topic:
                each.notice(f"Topic of {room.name}: {room.topic}", Event.TOPIC, room=room.name, topic=room.topic, by=info.get("topic_by"))
        if newcomer:
            self._tell_members(room, session, "joined")

    def _cmd_leave(self, session: Session, args: str) -> None:
        room_arg, _, reason = args.strip().partition(" ")
        name = _room_arg(room_arg, "!leave #room [why]")
        self._run(session, self._part(session, name, reason.strip()[:MAX_QUIT_CHARS]), name)

    async def _part(self, session: Session, name: str, reason: str = "") -> None:
        was_member = await self.api.leave_room(name, session.name)
        room = self._rooms.get(name.lower())
        shown = room.name if room is not None else name
        for each in self.directory.sessions(session.key):
            self._leave(each, name.lower())
            if each.is_open:
                if was_member:
                    each.notice(f"Left {shown}.", Event.LEFT, room=shown, **({"reason": reason} if reason else {}))
                else:
                    each.error(f"You are not in {shown}.", Event.BAD_INPUT, room=shown, reason=RoomReason.NOT_MEMBER)
        if was_member and room is not None:
            self._tell_members(room, session, "left", **({"reason": reason} if reason else {}))

    def _cmd_rooms(self, session: Session, args: str) -> None:
        self._run(session, self._list(session))

    async def _list(self, session: Session) -> None:
        rooms = await self.api.rooms(session.name)
        shown = ", ".join(f"{r['name']} ({r['members']} member{'s' if r['members'] != 1 else ''}{', private' if r['private'] else ''})" for r in rooms)
        listed = [{"name": r["name"], "members": r["members"], "private": r["private"], "secret": bool(r.get("secret")), "topic": r.get("topic") or ""} for r in rooms]
        if session.is_open:
            session.notice(f"Rooms ({len(rooms)}): {shown}" if rooms else "Rooms (0): none yet; !join #name makes one.", Event.ROOMS, rooms=listed)

    def _cmd_members(self, session: Session, args: str) -> None:
        name = _room_arg(args, "!members #room")
        self._run(session, self._members(session, name), name)

    async def _members(self, session: Session, name: str) -> None:
        info = await self.api.room(name)
        names: list[str] = info["member_names"] if info is not None else []
        if info is None or ((info["private"] or info.get("secret")) and session.key not in {n.lower() for n in names}):
            raise ApiRejected(404, "no such room", RoomReason.NO_ROOM)
        online = {n.lower() for n in names if self._online(n.lower())}
        listed = [{"name": n, "online": n.lower() in online} for n in names]
        shown = ", ".join(f"{n} (online)" if n.lower() in online else n for n in names)
        if session.is_open:
            session.notice(
                f"Members of {info['name']} ({len(names)}): {shown}", Event.MEMBERS,
                room=info["name"], members=listed, owner=info.get("owner") or "", private=bool(info["private"]), **room_roles(room_settings(info)),
            )  # fmt: skip

    def _cmd_topic(self, session: Session, args: str) -> None:
        room_arg, _, text = args.strip().partition(" ")
        name = _room_arg(room_arg, "!topic #room [text|-]")
        text = text.strip()
        if len(text) > MAX_TOPIC_CHARS:
            raise ProtocolError(f"Topic too long ({len(text)} characters; the limit is {MAX_TOPIC_CHARS}).")
        self._run(session, self._topic(session, name, text), name)

    async def _topic(self, session: Session, name: str, text: str) -> None:
        if not text:
            info = await self.api.room(name)
            if info is None or ((info["private"] or info.get("secret")) and session.key not in {n.lower() for n in info["member_names"]}):
                raise ApiRejected(404, "no such room", RoomReason.NO_ROOM)  # a private room's topic is its members' business
            topic = info.get("topic") or ""
            if session.is_open:
                said = f"Topic of {info['name']}: {topic}" if topic else f"{info['name']} has no topic; !topic {info['name']} <text> sets one."
                session.notice(said, Event.TOPIC, room=info["name"], topic=topic, by=info.get("topic_by"))
            return
        if text == CLEAR_TOPIC:
            text = ""
        info = await self.api.set_room(name, session.name, topic=text)
        room = self._rooms.get(name.lower())
        if room is not None:
            room.update(info)
            said = f"Topic of {room.name} set by {session.name}: {text}" if text else f"Topic of {room.name} cleared by {session.name}."
            details = {"room": room.name, "topic": text, "by": session.name, "changed": True}
            for member in room.here:
                member.notice(said, Event.TOPIC, **details)
            if self.nodes is not None:
                self.nodes.tell_room(room.key, "", said, Event.TOPIC, details)

    def _cmd_history(self, session: Session, args: str) -> None:
        room_arg, _, count = args.strip().partition(" ")
        name = _room_arg(room_arg, "!history #room [n]")
        try:
            limit = int(count) if count.strip() else HISTORY_DEFAULT
        except ValueError:
            raise ProtocolError(f"Write !history {name} <n>, n a number from 1 to {HISTORY_MAX}.") from None
        if not 1 <= limit <= HISTORY_MAX:
            raise ProtocolError(f"Write !history {name} <n>, n a number from 1 to {HISTORY_MAX}.")
        self._run(session, self._history(session, name, limit), name)

    async def _history(self, session: Session, name: str, limit: int) -> None:
        page = await self.api.room_history(name, session.name, limit)
        messages = page["messages"]
        if not session.is_open:
            return
        shown = name if not messages else messages[0]["destination"]
        text = f"Last {len(messages)} message{'s' if len(messages) != 1 else ''} in {shown}:" if messages else f"No messages in {shown} yet."
        session.notice(text, Event.HISTORY, room=shown, shown=len(messages), next=page.get("next"))
        for message in messages:
            session.write(session.dialect.replayed(stored_delivery(message)))  # not news: no read marker moves

    def _cmd_invite(self, session: Session, args: str) -> None:
        name, user = _room_and_user(args, "!invite #room <name>")
        self._run(session, self._invite(session, name, user), name)

    async def _invite(self, session: Session, name: str, user: str) -> None:
        answer = await self.api.invite(name, session.name, user)
        room = answer["room"]["name"]
        if answer.get("member"):
            if session.is_open:
                session.notice(f"{user} is in {room} already.", Event.INVITED, room=room, user=user, by=session.name)
            return
        invitees = self.directory.sessions(user.lower())
        if not invitees and self.is_bot(user):  # a bot joins by itself: for one offline, the server does it
            await self.api.join_room(room, user)
            if session.is_open:
                session.notice(f"{user} (a bot) is in {room} now.", Event.INVITED, room=room, user=user, by=session.name)
            return
        if session.is_open:
            session.notice(f"Invited {user} to {room}.", Event.INVITED, room=room, user=user, by=session.name)
        text = f"{session.name} invited you to {room}; !join {room} to come in."
        for invitee in invitees:
            invitee.notice(text, Event.INVITED, room=room, user=invitee.name, by=session.name)
        if self.nodes is not None:
            self.nodes.tell_user(user.lower(), {"do": "notice", "text": text, "event": Event.INVITED, "details": {"room": room, "user": user, "by": session.name}})

    def _cmd_kick(self, session: Session, args: str) -> None:
        words = args.split(None, 2)
        name, user = _room_and_user(" ".join(words[:2]), "!kick #room <name> [why]")
        why = words[2].strip()[:MAX_QUIT_CHARS] if len(words) > 2 else ""
        self._run(session, self._kick(session, name, user, why), name)

    async def _kick(self, session: Session, name: str, user: str, why: str = "") -> None:
        removed = await self.api.kick(name, session.name, user)
        room = self._rooms.get(name.lower())
        shown = room.name if room is not None else name
        if not removed:
            if session.is_open:
                session.error(f"{user} is not in {shown}.", Event.BAD_INPUT, room=shown, user=user, reason=RoomReason.NOT_IN_ROOM)
            return
        said = {"by": session.name, **({"reason": why} if why else {})}
        removed_text = f"{session.name} removed you from {shown}" + (f": {why}" if why else ".")
        self.kicked_here(self.directory.sessions(user.lower()), shown, removed_text, said)
        if self.nodes is not None:
            self.nodes.tell_user(user.lower(), {"do": "kicked", "room": shown, "text": removed_text, "details": said})
            if room is not None:
                self.nodes.tell_room(room.key, session.key, f"{user} left {shown}", Event.ROOM_PRESENCE, {"room": shown, "user": user, "presence": "left", **said})
        if session.is_open:
            session.notice(f"Removed {user} from {shown}.", Event.ROOM_PRESENCE, room=shown, user=user, presence="left", **said)
        if room is not None:
            for member in room.here:
                if member.key != session.key and member.key != user.lower() and member.wants_presence:
                    member.notice(f"{user} left {shown}", Event.ROOM_PRESENCE, room=shown, user=user, presence="left", **said)

    def kicked_here(self, sessions: list[Session], room: str, text: str, details: dict[str, Any]) -> None:
        """A name's sessions here are out of a room (kicked, here or on another node)."""
        for kicked in sessions:
            self._leave(kicked, room.lower())
            kicked.notice(text, Event.LEFT, room=room, **details)

    def _cmd_private(self, session: Session, args: str) -> None:
        name = _room_arg(args, "!private #room")
        self._run(session, self._mode(session, name, [("+i", None)]), name)

    def _cmd_public(self, session: Session, args: str) -> None:
        name = _room_arg(args, "!public #room")
        self._run(session, self._mode(session, name, [("-i", None)]), name)

    def _cmd_mode(self, session: Session, args: str) -> None:
        words = args.split()
        if not words:
            raise ProtocolError("Write !mode #room, or !mode #room <+-modes> [values] (!help lists them).")
        name = check_room(words[0])
        changes, refused, bans = parse_modes(words[1:])
        for letter, why, value in refused:  # said first: IRC clients read them as the answer to this line
            said = f"Unknown setting {letter!r}; !help lists them." if value is None and why == "unknown" else f"Not a valid +{letter}: {why}."
            session.error(said, Event.BAD_INPUT, room=name, reason=RoomReason.BAD_MODE, mode=letter, **({"value": value} if why != "unknown" else {}))
        if bans:
            self._run(session, self._modes(session, name, bans=True), name)
        if changes:
            self._run(session, self._mode(session, name, changes), name)
        elif len(words) == 1:
            self._run(session, self._modes(session, name), name)
        # else nothing to change (a lone sign, an op without a name): nothing said, as IRC servers do

    async def _modes(self, session: Session, name: str, bans: bool = False) -> None:
        """`!mode #room`: its settings; with `+b`, its bans. A private or secret room's
        are its members' business; its key too."""
        info = await self.api.room(name)
        member = info is not None and session.key in {n.lower() for n in info["member_names"]}
        if info is None or ((info["private"] or info.get("secret")) and not member):
            raise ApiRejected(404, "no such room", RoomReason.NO_ROOM)
        shown, settings = info["name"], room_settings(info)
        if not session.is_open:
            return
        if bans:
            listed = info.get("bans") or []
            said = ", ".join(f"{ban['mask']} (by {ban['by']})" for ban in listed) or "none"
            session.notice(f"Bans in {shown} ({len(listed)}): {said}", Event.ROOM_MODE, room=shown, list="b", bans=listed)
            return
        modes = mode_string(settings, with_key=member)
        if not member:
            settings["key"] = "*" if settings.get("key") else None
        ops = ", ".join(settings.get("ops") or []) or "none"
        session.notice(
            f"Settings of {shown}: {modes} (operators: {ops})", Event.ROOM_MODE,
            room=shown, private=bool(settings["private"]), modes=modes, settings=settings,
        )  # fmt: skip

    async def _mode(self, session: Session, name: str, changes: list[tuple[str, str | None]]) -> None:
        """Change a room's settings (an operator): its members are told, here and on
        the other nodes."""
        asked: dict[str, Any] = {}
        for change, value in changes:
            sign, letter = change[0] == "+", change[1]
            if letter in MODE_FLAGS:
                asked[MODE_FLAGS[letter]] = sign
            elif letter == "k":
                asked["key"] = value if sign else ""
            elif letter == "l":
                asked["limit"] = int(value or 0) if sign else 0
            else:
                field = MODE_LISTS[letter][0 if sign else 1]
                asked.setdefault(field, []).append(value)
        info = await self.api.set_room(name, session.name, **asked)
        room = self._rooms.get(name.lower())
        if room is not None:
            room.update(info)
        shown = info["name"]
        settings = room_settings(info)
        text = _PRIVACY.get(tuple(changes), "{by} set {room} " + describe(changes)).format(room=shown, by=session.name)
        details = {"room": shown, "by": session.name, "changes": [list(change) for change in changes], "private": bool(info["private"]), "settings": settings}
        for member in room.here if room is not None else [session]:
            member.notice(text, Event.ROOM_MODE, **details)
        if self.nodes is not None and room is not None:
            self.nodes.tell_room(room.key, "", text, Event.ROOM_MODE, details)


def _room_arg(args: str, usage: str) -> str:
    words = args.split()
    if len(words) != 1:
        raise ProtocolError(f"Write {usage}.")
    return check_room(words[0])


def _room_and_user(args: str, usage: str) -> tuple[str, str]:
    parts = args.split()
    if len(parts) != 2:
        raise ProtocolError(f"Write {usage}.")
    return check_room(parts[0]), check_name(parts[1], "name")


def room_roles(settings: dict[str, Any]) -> dict[str, Any]:
    """What a client shows of a room's members and listing: operators, voices, secrecy."""
    return {"ops": list(settings.get("ops") or []), "voiced": list(settings.get("voiced") or []), "secret": bool(settings.get("secret"))}


def stored_delivery(message: dict[str, Any]) -> Delivery:
    """A stored room message as the fan-out's tuple (its original time kept)."""
    return (message["id"], message["sender"], message["destination"], message["message"], message["timestamp"],
            message.get("type", "chat"), message.get("metadata") or None, ())  # fmt: skip


_REFUSALS: Final[dict[str, str]] = {
    RoomReason.PRIVATE: "That room is private: its owner must invite you first.",
    RoomReason.NOT_OWNER: "Only the room's operators may do that.",
    RoomReason.BANNED: "You are banned from that room.",
    RoomReason.BAD_KEY: "That room has a key: !join #room <key>.",
    RoomReason.FULL: "That room is full.",
    RoomReason.NOT_IN_ROOM: "They are not in that room.",
    RoomReason.NOT_MEMBER: "You are not in that room; !join it first.",
    RoomReason.NO_ROOM: "There is no such room; !join #name creates one.",
    RoomReason.TOO_MANY_ROOMS: f"You are in {MAX_ROOMS_PER_USER} rooms already; !leave one first.",
}


def _refusal(exc: ApiRejected) -> str:
    return _REFUSALS.get(exc.reason or "", f"Refused: {exc.detail}")
