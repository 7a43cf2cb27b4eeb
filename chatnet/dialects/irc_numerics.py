"""What the router says to an IRC client, as IRC lines: numerics, NOTICEs, JOIN/PART/MODE.

    notice("", Event.JOINED, {"room": "#hiking", "topic": "Saturday: the ridge", "names": ["joe", "alice"], "ops": ["joe"]}, ...)
    S: :alice!alice@chatnet JOIN #hiking
    S: :chatnet 332 alice #hiking :Saturday: the ridge
    S: :chatnet 353 alice = #hiking :@joe alice
    S: :chatnet 366 alice #hiking :End of /NAMES list
    error("You are banned from #x.", event, {"room": "#x", "reason": RoomReason.BANNED}, ...)
    S: :chatnet 474 alice #x :Cannot join channel (+b)

The router's notices (an `Event` and details) and its refusals become what IRC clients
expect: one renderer per event (`_NOTICES`), the refusals by reason, and the 005
(ISUPPORT) lines of the registration burst. The renderers are `IrcNumerics`, a mixin of
`IrcDialect` (dialects/irc.py): they read and change the connection's state (its nick on
RENAMED, its channels on JOINED and LEFT, the questions they answer): the mixin holds
those slots, `IrcDialect.__init__` sets them, and this module never imports irc.py.
Messages themselves (PRIVMSG in and out) are irc.py's. Pure, as every dialect: no I/O,
no clock.
"""

from __future__ import annotations

from typing import Any, Final

from chatnet.dialects import ircline
from chatnet.dialects.ircline import render
from chatnet.limits import MAX_BANS, MAX_KEY_CHARS, MAX_MODE_CHANGES, MAX_NAME_CHARS, MAX_ROOMS_PER_USER, MAX_TOPIC_CHARS
from chatnet.protocol import TOO_LONG, USER_HOST, Event, LoginReason, OperReason, RoomReason, lowered

# The server's name in prefixes, and every user's host: addresses are nobody's business.
SERVER: Final = "chatnet"
HOST: Final = USER_HOST
# PRIVMSG/NOTICE (KICK, NAMES) to more targets than this in one line: the rest are
# refused (407).
MAX_TARGETS: Final = 4
ISUPPORT: Final = (
    "AWAYLEN=200",
    "CASEMAPPING=ascii",
    f"CHANLIMIT=#:{MAX_ROOMS_PER_USER}",
    "CHANMODES=b,k,l,imnst",
    f"CHANNELLEN={MAX_NAME_CHARS + 1}",
    "CHANTYPES=#",
    f"KEYLEN={MAX_KEY_CHARS}",
    f"MAXLIST=b:{MAX_BANS}",
    f"MODES={MAX_MODE_CHANGES}",
    "NETWORK=chatnet",
    f"NICKLEN={MAX_NAME_CHARS}",
    "PREFIX=(ov)@+",
    f"TARGMAX=PRIVMSG:{MAX_TARGETS},NOTICE:{MAX_TARGETS},JOIN:10,PART:10,KICK:{MAX_TARGETS},WHOIS:1,NAMES:{MAX_TARGETS}",
    f"TOPICLEN={MAX_TOPIC_CHARS}",
)
# ISUPPORT tokens in one 005 line (at most 13 do: RFC 2812's 15 parameters, less two).
ISUPPORT_PER_LINE: Final = 12
# Of a 332/322/TOPIC line's 512 bytes, what the topic may take (the rest: numeric,
# nick, channel).
_TOPIC_BYTES: Final = 400
# Room reasons from the router, and the numerics IRC clients know them by.
_ROOM_NUMERICS: Final = {
    RoomReason.NOT_MEMBER: ("442", "You're not on that channel"),
    RoomReason.NO_ROOM: ("403", "No such channel"),
    RoomReason.NOT_OWNER: ("482", "You're not channel operator"),
    RoomReason.BANNED: ("474", "Cannot join channel (+b)"),
    RoomReason.BAD_KEY: ("475", "Cannot join channel (+k)"),
    RoomReason.FULL: ("471", "Cannot join channel (+l)"),
    RoomReason.PRIVATE: ("473", "Cannot join channel (+i)"),
    RoomReason.TOO_MANY_ROOMS: ("405", "You have joined too many channels"),
}
# Room refusals that answer a question (NAMES, WHO, MODE, TOPIC) about that room.
_ANSWERED_BY_ROOM: Final = ("names", "names-part", "room_who", "mode", "topic")
# Why an operator's request was refused, and the numeric IRC clients know it by.
_OPER_NUMERICS: Final = {
    OperReason.NO_OPERATORS: ("491", "No O-lines for your host"),
    OperReason.WRONG_PASSWORD: ("464", "Password incorrect"),
    OperReason.LOCKED: ("464", "Password incorrect"),
    OperReason.NOT_OPERATOR: ("481", "Permission Denied- You're not an IRC operator"),
}
# What `_shown` holds before anyone's NICK or QUIT was shown: one tuple for every connection
# (a literal in compiled code is built again at each assignment).
NOTHING_SHOWN: Final[tuple[str, ...]] = ("", "", "")


def source(name: str) -> str:
    """A user's prefix, the same for everyone who sees it: `alice!alice@chatnet`."""
    return f"{name}!{name}@{HOST}"


def key_of(text: str) -> str:
    """What a nick or a channel is known by, whatever its case."""
    return lowered(text)


class IrcNumerics:
    """The renderers of an `IrcDialect`'s notices and errors, and the numerics they are made of."""

    # The connection's state they read and change too: IrcDialect.__init__ sets it.
    __slots__ = ("nick", "channels", "_asked", "_shown", "_names_end")
    nick: str
    channels: tuple[str, ...]
    _asked: tuple[tuple[str, str], ...]
    _shown: tuple[str, ...]  # not tuple[str, str, str]: compiled, that would sit inline (16 bytes more a connection)
    _names_end: dict[str, str] | None

    # --- what the server says, as IRC lines -------------------------------------------------

    def _isupport(self) -> str:
        """005s, each within IRC's 15 parameters (the nick and the text take two)."""
        return "".join(
            self._numeric("005", *ISUPPORT[start : start + ISUPPORT_PER_LINE], "are supported by this server") for start in range(0, len(ISUPPORT), ISUPPORT_PER_LINE)
        )

    def _numeric(self, command: str, *params: str, target: str | None = None) -> str:
        return render(command, target or self.nick or "*", *params, source=SERVER, text=True)

    def notice(self, text: str, event: Event, details: dict[str, Any], recipient: str, timestamp: str) -> str:
        render_event = _NOTICES.get(event)
        if render_event is not None:
            return render_event(self, text, details)
        return self._server_notice(text)

    def error(self, text: str, event: Event, details: dict[str, Any], recipient: str, timestamp: str) -> str:
        room, reason = details.get("room"), details.get("reason")
        if event in (Event.OPER, Event.WALLOPS) and reason in _OPER_NUMERICS:
            numeric, said = _OPER_NUMERICS[reason]
            return self._numeric(numeric, f"{said}: {text}" if reason == OperReason.LOCKED else said)
        if event == Event.RENAMED:
            return self._not_renamed(text, str(details.get("user", "*")), reason)
        if reason == TOO_LONG:
            return self._numeric("417", f"Input line was too long: {text}")
        if room is not None and reason in (RoomReason.NO_ROOM, None) and not details.get("sending"):
            asked = self._take(_ANSWERED_BY_ROOM, key_of(str(room)))  # the question about it is answered so
            if asked is not None and asked[0] == "names-part":
                return ""  # a room of several asked at once: the last one's 366 ends them all
            if asked is not None and asked[0] in ("names", "room_who"):  # an empty list, as for any channel nobody is in
                if asked[0] == "room_who":
                    return self._numeric("315", str(room), "End of WHO list")
                return self._numeric("366", self._names_ended(asked[1], str(room)), "End of /NAMES list")
        if room is not None and details.get("sending"):  # a PRIVMSG to a channel one is not in, or +m without voice
            said = "Cannot send to channel (+m)" if reason == RoomReason.MODERATED else "Cannot send to channel (join it first)"
            return self._numeric("404", str(room), said)
        if reason == RoomReason.BAD_MODE:
            mode = str(details.get("mode") or "*")
            if "value" in details:
                return self._numeric("696", str(room or "*"), mode, "*", text)
            return self._numeric("472", mode, "is unknown mode char to me")
        if room is not None and reason in _ROOM_NUMERICS:
            numeric, said = _ROOM_NUMERICS[reason]
            return self._numeric(numeric, str(room), said)
        if reason == RoomReason.NOT_IN_ROOM and details.get("user"):
            return self._numeric("441", str(details["user"]), str(room), "They aren't on that channel")
        if event == Event.NOT_SAVED and details.get("destination"):
            return self._server_notice(text)
        return self._server_notice(f"Error: {text}")

    def _not_renamed(self, text: str, new: str, reason: Any) -> str:
        if reason == LoginReason.NAME_TAKEN:
            return self._numeric("433", new, "Nickname is already in use")
        if reason == LoginReason.PASSWORD_REQUIRED:
            return self._numeric("433", new, "Nickname is registered (an account's)")
        if reason in (LoginReason.INVALID_NAME, LoginReason.RESERVED):
            return self._numeric("432", new, f"Erroneous nickname: {text}")
        if reason is None:  # an account's own name stays
            return self._numeric("447", f"Cannot change nickname: {text}")
        return self._server_notice(f"Error: {text}")

    def _server_notice(self, text: str) -> str:
        return "".join(self._numeric("NOTICE", line) for line in text.split("\n") if line)

    def _take(self, kinds: tuple[str, ...], key: str | None = None) -> tuple[str, str] | None:
        for index, asked in enumerate(self._asked):
            if asked[0] in kinds and (key is None or asked[1] == key):
                self._asked = self._asked[:index] + self._asked[index + 1 :]
                return asked
        return None

    def _names_ended(self, key: str, default: str) -> str:
        """What the one 366 after a NAMES of several channels names, by the last of them."""
        ends = self._names_end
        if not ends:
            return default
        end = ends.pop(key, default)
        if not ends:
            self._names_end = None  # mostly never asked: no dict kept for it
        return end

    # Notices, one renderer per event.

    def _welcome(self, text: str, details: dict[str, Any]) -> str:
        return self._server_notice(text)  # the mail count, after 001-005 (its lines come before any answer)

    def _away_notice(self, text: str, details: dict[str, Any]) -> str:
        user, away = str(details.get("user", "")), str(details.get("away") or "")
        if key_of(user) != key_of(self.nick):
            return self._numeric("301", user, away)
        if away:
            return self._numeric("306", "You have been marked as being away")
        return self._numeric("305", "You are no longer marked as being away")

    def _renamed(self, text: str, details: dict[str, Any]) -> str:
        old, self.nick = self.nick, str(details["user"])
        return render("NICK", self.nick, source=source(old))

    def _goodbye(self, text: str, details: dict[str, Any]) -> str:
        return render("ERROR", f"Closing link: {text}")

    def _saved(self, text: str, details: dict[str, Any]) -> str:
        """Mail stored: a NOTICE, or for a nick nobody has used yet the 401 clients expect."""
        if not details.get("unknown"):
            return self._server_notice(text)
        name = str(details.get("destination", "*"))
        return self._numeric("401", name, f"No such nick: nobody has used it yet; your message was saved for {name}")

    def _who_answer(self, text: str, details: dict[str, Any]) -> str:
        online: list[str] = [*details.get("users", []), *details.get("bots", [])]
        by_key = {key_of(name): name for name in online}
        asked = self._take(("who", "ison", "userhost", "lusers"))
        if asked is None:
            return self._server_notice(text)
        kind, key = asked
        if kind == "ison":
            return self._numeric("303", " ".join(by_key[key_of(n)] for n in key.split() if key_of(n) in by_key))
        if kind == "userhost":
            found = (by_key[key_of(n)] for n in key.split() if key_of(n) in by_key)
            return self._numeric("302", " ".join(f"{name}=+{name}@{HOST}" for name in found))
        if kind == "lusers":
            return self._numeric("251", f"There are {len(online)} users and 0 invisible on 1 servers") + self._numeric(
                "255", f"I have {len(online)} clients and 0 servers"
            )
        matching = [name for name in online if key in ("*", "0") or key_of(name) == key]
        return "".join(self._numeric("352", "*", name, HOST, SERVER, name, "H", f"0 {name}") for name in matching) + self._numeric("315", key, "End of WHO list")

    def _whois_answer(self, text: str, details: dict[str, Any]) -> str:
        name = str(details.get("user", "*"))
        if not details.get("online"):
            return self._numeric("401", name, "No such nick/channel") + self._numeric("318", name, "End of /WHOIS list")
        user, realname = (list(details.get("ident") or []) + ["", ""])[:2]
        bot = details.get("kind") == "bot"
        lines = [
            self._numeric("311", name, str(user) or name, HOST, "*", str(realname) or (f"{name} (a bot)" if bot else name)),
            self._numeric("312", name, SERVER, "chatnet"),
        ]
        if details.get("away"):
            lines.append(self._numeric("301", name, str(details["away"])))
        if details.get("operator"):
            lines.append(self._numeric("313", name, "is an IRC operator"))
        if details.get("kind") in ("person", "bot"):
            lines.append(self._numeric("330", name, name, "is logged in as"))
        lines.append(self._numeric("318", name, "End of /WHOIS list"))
        return "".join(lines)

    def _whowas_answer(self, text: str, details: dict[str, Any]) -> str:
        name, seen = str(details.get("user", "*")), details.get("seen") or []
        asked = self._take(("whowas",))
        count = int(asked[1]) if asked is not None else 0
        if count > 0:
            seen = seen[:count]
        if not seen:
            return self._numeric("406", name, "There was no such nickname") + self._numeric("369", name, "End of WHOWAS")
        lines = []
        for entry in seen:
            shown = str(entry.get("name") or name)
            user, realname = (list(entry.get("ident") or []) + ["", ""])[:2]
            lines.append(self._numeric("314", shown, str(user) or shown, HOST, "*", str(realname) or shown))
        return "".join(lines) + self._numeric("369", name, "End of WHOWAS")

    def _joined(self, text: str, details: dict[str, Any]) -> str:
        room = str(details["room"])
        key = key_of(room)
        if key in self.channels:
            return ""  # in it already (told at login, and the client's autojoin asked again)
        self.channels = (*self.channels, key)
        lines = [render("JOIN", room, source=source(self.nick))]
        topic = details.get("topic")
        if topic:
            lines.append(self._numeric("332", room, _fit(str(topic))))
            if details.get("topic_by"):
                lines.append(self._numeric("333", room, str(details["topic_by"]), "0"))
        names = [str(name) for name in details.get("names", [])] or [self.nick]
        lines.append(self._names_lines(room, names, details))
        return "".join(lines)

    def _names_lines(self, room: str, names: list[str], details: dict[str, Any], end: str | None = "") -> str:
        """353s and 366 (for `end`, the room by default; None: none): operators `@`,
        voiced `+`; a secret channel's symbol is `@`."""
        ops = {key_of(str(name)) for name in details.get("ops") or [details.get("owner") or ""]}
        voiced = {key_of(str(name)) for name in details.get("voiced") or []}
        shown = [f"@{name}" if key_of(name) in ops else f"+{name}" if key_of(name) in voiced else name for name in names]
        symbol = "@" if details.get("secret") else "="
        lines, line = [], []
        for name in shown:  # 353s of at most ~400 bytes of names
            line.append(name)
            if sum(map(len, line)) + len(line) > 400:
                lines.append(self._numeric("353", symbol, room, " ".join(line)))
                line = []
        if line:
            lines.append(self._numeric("353", symbol, room, " ".join(line)))
        if end is None:
            return "".join(lines)
        return "".join(lines) + self._numeric("366", end or room, "End of /NAMES list")

    def _left(self, text: str, details: dict[str, Any]) -> str:
        room, by, reason = str(details["room"]), details.get("by"), str(details.get("reason") or "")
        key = key_of(room)
        self.channels = tuple(other for other in self.channels if other != key)
        if by:
            return render("KICK", room, self.nick, reason or str(by), source=source(str(by)), text=True)
        return render("PART", room, reason, source=source(self.nick), text=True) if reason else render("PART", room, source=source(self.nick))

    def _room_presence(self, text: str, details: dict[str, Any]) -> str:
        room, user, presence, by = str(details["room"]), str(details["user"]), details.get("presence"), details.get("by")
        reason = str(details.get("reason") or "")
        if by:  # the kick's comment, or (RFC 2812) the kicker's nick
            return render("KICK", room, user, reason or str(by), source=source(str(by)), text=True)
        # A rename or a quit is told once per room shared with its reader, and shown once.
        if presence == "renamed":
            return self._once(("NICK", str(details.get("old")), user), render("NICK", user, source=source(str(details.get("old")))))
        if presence == "offline":
            reason = str(details.get("reason") or "")
            return self._once(("QUIT", user, ""), render("QUIT", f"Quit: {reason}" if reason else "Connection closed", source=source(user), text=True))
        self._shown = NOTHING_SHOWN
        if presence in ("joined", "online"):
            return render("JOIN", room, source=source(user))
        if reason:
            return render("PART", room, reason, source=source(user), text=True)
        return render("PART", room, source=source(user))

    def _once(self, change: tuple[str, ...], line: str) -> str:
        if change == self._shown:
            return ""
        self._shown = change
        return line

    def _topic_notice(self, text: str, details: dict[str, Any]) -> str:
        room, topic = str(details["room"]), str(details.get("topic") or "")
        if details.get("changed"):
            return render("TOPIC", room, _fit(topic), source=source(str(details.get("by") or SERVER)), text=True)
        if self._take(("topic",), key_of(room)) is None:
            return ""  # the one after a join: the JOIN's 332 said it
        if not topic:
            return self._numeric("331", room, "No topic is set")
        by = details.get("by")
        return self._numeric("332", room, _fit(topic)) + (self._numeric("333", room, str(by), "0") if by else "")

    def _rooms(self, text: str, details: dict[str, Any]) -> str:
        asked = self._take(("list",))
        wanted = set(asked[1].split(",")) if asked is not None and asked[1] else None
        rooms = [r for r in details.get("rooms", []) if wanted is None or key_of(str(r["name"])) in wanted]
        return (
            self._numeric("321", "Channel", "Users  Name")
            + "".join(self._numeric("322", str(r["name"]), str(r["members"]), _fit(str(r.get("topic") or ""))) for r in rooms)
            + self._numeric("323", "End of /LIST")
        )

    def _members(self, text: str, details: dict[str, Any]) -> str:
        room = str(details["room"])
        asked = self._take(("names", "names-part", "room_who"), key_of(room))
        kind = asked[0] if asked else "names"
        members = details.get("members", [])
        here = [str(m["name"]) for m in members if m.get("online")]
        if kind == "room_who":
            ops = {key_of(str(name)) for name in details.get("ops") or [details.get("owner") or ""]}
            return "".join(self._numeric("352", room, name, HOST, SERVER, name, "H@" if key_of(name) in ops else "H", f"0 {name}") for name in here) + self._numeric(
                "315", room, "End of WHO list"
            )
        if kind == "names-part":
            return self._names_lines(room, here, details, end=None)
        return self._names_lines(room, here, details, end=self._names_ended(key_of(room), room))

    def _catchup(self, text: str, details: dict[str, Any]) -> str:
        return render("NOTICE", str(details["room"]), text, source=SERVER)

    def _invited(self, text: str, details: dict[str, Any]) -> str:
        room, user, by = str(details["room"]), str(details["user"]), str(details.get("by") or "")
        if key_of(user) == key_of(self.nick) and key_of(by) != key_of(self.nick):
            return render("INVITE", self.nick, room, source=source(by))
        return self._numeric("341", user, room)

    def _room_mode(self, text: str, details: dict[str, Any]) -> str:
        """A change (MODE, from whoever made it), the ban list (367s, 368) or the
        answer to MODE #room (324)."""
        room, by = str(details["room"]), str(details.get("by") or SERVER)
        if details.get("list") == "b":
            bans = details.get("bans") or []
            return "".join(self._numeric("367", room, str(ban["mask"]), str(ban["by"]), str(ban["at"])) for ban in bans) + self._numeric(
                "368", room, "End of channel ban list"
            )
        changes = details.get("changes")
        if changes is None and details.get("by") is None:
            self._take(("mode",), key_of(room))
            return self._numeric("324", room, *str(details.get("modes") or "+").split())
        if changes is None:  # from a node that knew only +i
            changes = [["+i" if details.get("private") else "-i", None]]
        letters, values, sign = "", [], ""
        for change, value in changes:
            if change[0] != sign:
                sign = change[0]
                letters += sign
            letters += change[1]
            if value is not None:
                values.append(str(value))
        return render("MODE", room, letters, *values, source=source(by) if by != SERVER else SERVER)

    def _oper_notice(self, text: str, details: dict[str, Any]) -> str:
        return self._numeric("381", "You are now an IRC operator") + render("MODE", self.nick, "+o", source=source(self.nick), text=True)

    def _wallops_notice(self, text: str, details: dict[str, Any]) -> str:
        sender = source(str(details.get("user") or SERVER))
        head = render("WALLOPS", "x", source=sender, text=True)
        room = ircline.MAX_LINE_BYTES - len(head.encode()) + 1  # what "x" held
        lines = str(details.get("message", text)).replace("\r", " ").replace("\0", "").split("\n")
        return "".join(render("WALLOPS", piece if piece.strip() else " ", source=sender, text=True) for line in lines for piece in split_to_fit(line or " ", room))

    def _user_mode(self, text: str, details: dict[str, Any]) -> str:
        """Asked (MODE <nick>): 221 with +i, everyone's; changed: a MODE line of what changed."""
        changes = details.get("changes")
        if changes is None:
            return self._numeric("221", "+i" + str(details.get("modes") or "+").lstrip("+"))
        if not changes:
            return ""  # nothing changed: nothing said, as IRC servers do
        letters, sign = "", ""
        for change in changes:
            if change[0] != sign:
                sign = change[0]
                letters += sign
            letters += change[1:]
        return render("MODE", self.nick, letters, source=source(self.nick), text=True)

    def _quiet(self, text: str, details: dict[str, Any]) -> str:
        return ""


def _fit(text: str) -> str:
    """A topic, cut to what a numeric line has room for (topics are counted in
    characters, lines in bytes)."""
    return split_to_fit(text, _TOPIC_BYTES)[0] if text else text


def split_to_fit(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` UTF-8 bytes, at spaces where it can."""
    if len(text) <= limit // 4 or len(text.encode()) <= limit:
        return [text]
    pieces: list[str] = []
    while text:
        data = text.encode()
        if len(data) <= limit:
            pieces.append(text)
            break
        cut = data[:limit].decode(errors="ignore")  # never half a character
        space = cut.rfind(" ")
        if space > len(cut) // 2:
            cut = cut[: space + 1]
        pieces.append(cut)
        text = text[len(cut) :]
    return pieces


_NOTICES: Final = {
    Event.WELCOME: IrcNumerics._welcome,
    Event.GOODBYE: IrcNumerics._goodbye,
    Event.SHUTDOWN: IrcNumerics._goodbye,
    Event.RENAMED: IrcNumerics._renamed,
    Event.AWAY: IrcNumerics._away_notice,
    Event.SAVED: IrcNumerics._saved,
    Event.UNKNOWN_NAME: IrcNumerics._quiet,  # the 401 said it
    Event.WHO: IrcNumerics._who_answer,
    Event.WHOIS: IrcNumerics._whois_answer,
    Event.WHOWAS: IrcNumerics._whowas_answer,
    Event.PRESENCE: IrcNumerics._quiet,  # network-wide comings and goings: IRC shows them per channel
    Event.PING: IrcNumerics._quiet,
    Event.JOINED: IrcNumerics._joined,
    Event.LEFT: IrcNumerics._left,
    Event.ROOM_PRESENCE: IrcNumerics._room_presence,
    Event.TOPIC: IrcNumerics._topic_notice,
    Event.ROOMS: IrcNumerics._rooms,
    Event.MEMBERS: IrcNumerics._members,
    Event.CATCHUP: IrcNumerics._catchup,
    Event.HISTORY: IrcNumerics._catchup,
    Event.INVITED: IrcNumerics._invited,
    Event.ROOM_MODE: IrcNumerics._room_mode,
    Event.OPER: IrcNumerics._oper_notice,
    Event.WALLOPS: IrcNumerics._wallops_notice,
    Event.USER_MODE: IrcNumerics._user_mode,
}
