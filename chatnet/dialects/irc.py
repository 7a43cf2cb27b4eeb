"""The IRC dialect: irssi, WeeChat, HexChat and IRC bots, as they are.

    C: CAP LS 302
    C: NICK alice
    C: USER alice 0 * :Alice
    S: :chatnet CAP * LS :echo-message message-tags sasl=PLAIN server-time
    C: CAP REQ :server-time message-tags
    S: :chatnet CAP * ACK :server-time message-tags
    C: CAP END
    S: :chatnet 001 alice :Welcome to the chatnet IRC network, alice!alice@chatnet
    ...                                   (002-005, 422: no MOTD)
    S: @time=2026-12-01T10:00:05.123Z;msgid=ab12 :joe!joe@chatnet PRIVMSG alice :hello!!
    C: PRIVMSG #hiking :who's in?

RFC 1459/2812 as modern.ircdocs.horse describes the client protocol, with IRCv3's
`server-time`, `message-tags` (`msgid`), `echo-message` and `sasl` (PLAIN). Channels
are chatnet's rooms, nicks its names; IRC commands become the router's (`JOIN` is
`!join`, `NAMES` is `!members`, ...), and its answers (notices with an `Event` and
details) become numerics here.

Unlike text and JSON, IRC negotiates: a connection has one `IrcDialect` of its own,
which keeps what the client asked for (its capabilities, its registration) and which
of its questions are still unanswered. It is pure all the same: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
from collections import deque
from typing import Any, ClassVar, Final

from chatnet.dialects import ircline
from chatnet.dialects.ircline import IrcLine, IrcLineError, escape_tag, render
from chatnet.limits import MAX_BANS, MAX_JOINS_AT_ONCE, MAX_KEY_CHARS, MAX_MODE_CHANGES, MAX_NAME_CHARS, MAX_ROOMS_PER_USER, MAX_TOPIC_CHARS
from chatnet.protocol import (
    COMMANDS,
    KNOWN_DESTINATIONS,
    SERVER_NAME,
    TOO_LONG,
    USER_HOST,
    Authenticate,
    Chat,
    ClientEvent,
    Command,
    Delivery,
    Event,
    Login,
    LoginReason,
    Message,
    MessageType,
    OperReason,
    Pong,
    Quit,
    Reply,
    RoomReason,
    format_datetime,
    is_room,
    is_valid_name,
    new_chat,
    partial_chunk,
    short_timestamp,
    valid_destination,
)

# The server's name in prefixes, and every user's host: addresses are nobody's business.
SERVER: Final = "chatnet"
HOST: Final = USER_HOST
VERSION: Final = "chatnet-1"
CAPABILITIES: Final = {"echo-message": "", "message-tags": "", "sasl": "PLAIN", "server-time": ""}
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
# Read once per message: a module constant is a quarter of an enum member's lookup.
_CHAT: Final = MessageType.CHAT
_SUBSCRIPTION: Final = MessageType.SUBSCRIPTION
# A PRIVMSG line this short (in bytes, CR LF apart) is within every limit ircline checks.
_FAST_LINE_BYTES: Final = ircline.MAX_LINE_BYTES - 2
# A message this short fits one line whatever it holds: 4 bytes a character, and room
# for `:name!name@chatnet PRIVMSG #room :` with the longest names.
_FAST_TEXT_CHARS: Final = 90
# Of a 332/322/TOPIC line's 512 bytes, what the topic may take (the rest: numeric,
# nick, channel).
_TOPIC_BYTES: Final = 400
MAX_JOINS: Final = MAX_JOINS_AT_ONCE
# SASL PLAIN: the payload comes in pieces of 400 base64 characters; more is no password.
SASL_CHUNK: Final = 400
MAX_SASL_BYTES: Final = 1200
# Questions waiting for the router's answer (WHOIS, NAMES, ...): older ones are dropped.
MAX_ASKED: Final = 64
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
# MODE letters that take a value: always, and only when set (+k's value is optional
# when it is unset: clients send it all the same).
_MODE_VALUES: Final = frozenset("bovk")
_MODE_SET_VALUES: Final = frozenset("l")
# Lists a MODE query asks for that chatnet has none of: their end at once.
_EMPTY_LISTS: Final = {"e": ("349", "End of channel exception list"), "I": ("347", "End of channel invite list")}
# Room refusals that answer a question (NAMES, WHO, MODE, TOPIC) about that room.
_ANSWERED_BY_ROOM: Final = ("names", "names-part", "room_who", "mode", "topic")
_SECRET_COMMANDS: Final = frozenset({"PASS", "AUTHENTICATE", "REGISTER", "PASSWORD", "OPER"})
# User mode letters: +i is everyone's (nobody is listed to strangers), +o and +w the router's.
_USER_MODES: Final = frozenset("iow")
# What INFO says (371 each, then 374).
INFO_LINES: Final = (
    f"{VERSION}: chatnet, a chat network of people and bots",
    "Text, JSON and IRC clients on one network: the same names, rooms and mail",
    "Messages to someone offline are stored and handed over at the next login",
    "Rooms keep their history; accounts are names with a password",
    "Network operators: OPER with the network's API token",
)
# Why an operator's request was refused, and the numeric IRC clients know it by.
_OPER_NUMERICS: Final = {
    OperReason.NO_OPERATORS: ("491", "No O-lines for your host"),
    OperReason.WRONG_PASSWORD: ("464", "Password incorrect"),
    OperReason.LOCKED: ("464", "Password incorrect"),
    OperReason.NOT_OPERATOR: ("481", "Permission Denied- You're not an IRC operator"),
}


def source(name: str) -> str:
    """A user's prefix, the same for everyone who sees it: `alice!alice@chatnet`."""
    return f"{name}!{name}@{HOST}"


def _ident(text: str) -> str:
    return text.lower()


class IrcDialect:
    """One IRC connection's dialect: its registration, its capabilities, its questions."""

    asks_password: ClassVar[bool] = False  # PASS or SASL come before the login
    pings: ClassVar[bool] = True
    wants_presence: ClassVar[bool] = True  # for JOIN and PART in channels; network-wide presence is dropped
    follows_network: ClassVar[bool] = False  # channels' JOIN/PART only; LUSERS, WHO and ISON ask
    rejoins: ClassVar[bool] = True  # told of each room it is in at login: a client opens a window per channel
    in_order: ClassVar[bool] = True  # each answer before what the client says next (see Dialect.in_order)

    __slots__ = (
        "name", "nick", "user", "realname", "password", "caps", "negotiating", "account", "_sasl", "_asked", "_registered", "channels", "_shown",
        "_names_end",
    )  # fmt: skip

    def __init__(self) -> None:
        # "irc", or with the tags it was asked for ("irc+server-time+message-tags"): a
        # room line is rendered once per name.
        self.name = "irc"
        self.nick = ""  # as registered, then the chatnet name
        self.user = ""
        self.realname = ""
        self.password: str | None = None  # from PASS: an account's password
        self.caps: frozenset[str] = frozenset()
        self.negotiating = False  # CAP LS or REQ seen, CAP END not yet
        self.account = ""  # the account SASL logged in, once it has
        self._sasl: list[str] | None = None  # PLAIN payload pieces while AUTHENTICATE goes on
        self._asked: deque[tuple[str, str]] = deque(maxlen=MAX_ASKED)
        self._registered = False
        self.channels: set[str] = set()  # the rooms it was told it is in, by key
        self._shown = ("", "", "")  # the last NICK or QUIT shown of someone else
        self._names_end: dict[str, str] = {}  # NAMES #a,#b: the one 366 after #b's names says "#a,#b"

    # --- what the session and router ask of every dialect ---------------------------------

    @property
    def shows_ids(self) -> bool:
        return "message-tags" in self.caps

    @property
    def echoes(self) -> bool:
        """Copies of what this account sends, from this connection too (`echo-message`)."""
        return "echo-message" in self.caps

    @property
    def echoes_own(self) -> bool:
        return "echo-message" in self.caps

    def greeting(self) -> str:
        return ""  # an IRC server speaks once it is spoken to

    def ident(self) -> tuple[str, str]:
        return (self.user, self.realname)

    def password_prompt(self) -> str:
        return ""  # never asked (`asks_password` is False)

    def ping(self, recipient: str, timestamp: str) -> str:
        return f"PING :{SERVER}\r\n"

    def loggable(self, line: str, secret: bool) -> str:
        words = line.split()  # any whitespace: hiding too much is fine here
        while words and words[0][:1] in ("@", ":"):  # tags, a source
            del words[0]
        command = words[0].upper() if words else ""
        mechanism = words[1].upper() if command == "AUTHENTICATE" and len(words) > 1 else ""
        if command in _SECRET_COMMANDS and mechanism not in ("PLAIN", "*"):
            return f"{command} <hidden>"
        return line

    # --- registration: lines before the login -------------------------------------------

    def parse_login(self, line: str) -> Login | Reply | Authenticate | Quit:
        if not line.strip():
            return Reply("")  # empty lines are ignored (RFC 1459, 2.3.1)
        try:
            msg = ircline.parse(line)
        except IrcLineError as exc:
            return Reply(self._numeric("NOTICE", str(exc), target="*"))
        command, params = msg.command, msg.params
        if command == "CAP":
            return self._cap(params) or self._maybe_login()
        if command == "NICK":
            if not params or not params[0]:
                return Reply(self._numeric("431", "No nickname given"))
            if not is_valid_name(params[0]):
                return Reply(self._numeric("432", params[0], "Erroneous nickname"))
            self.nick = params[0]
            return self._maybe_login()
        if command == "USER":
            if len(params) < 4 or not params[0]:
                return Reply(self._numeric("461", "USER", "Not enough parameters"))
            if self.user:
                return Reply(self._numeric("462", "You may not reregister"))
            self.user, self.realname = params[0][:MAX_NAME_CHARS], params[3]
            return self._maybe_login()
        if command == "PASS":
            if not params:
                return Reply(self._numeric("461", "PASS", "Not enough parameters"))
            self.password = params[0]
            return Reply("")
        if command == "AUTHENTICATE":
            return self._authenticate(params)
        if command == "PING":
            return Reply(render("PONG", SERVER, params[0] if params else "", source=SERVER))
        if command == "PONG":
            return Reply("")
        if command == "QUIT":
            return Quit()
        return Reply(self._numeric("451", "You have not registered"))

    def _maybe_login(self) -> Login | Reply:
        if not self.nick or not self.user or self.negotiating or self._sasl is not None:
            return Reply("")
        if self.account:
            return Login(self.account)  # SASL checked the password already (the router knows)
        return Login(self.nick, password=self.password)

    def _cap(self, params: tuple[str, ...]) -> Reply | None:
        sub = params[0].upper() if params else ""
        target = self.nick or "*"
        if sub == "LS":
            if not self._registered:
                self.negotiating = True
            modern = len(params) > 1 and params[1].isdigit() and int(params[1]) >= 302
            offered = " ".join(f"{cap}={value}" if value and modern else cap for cap, value in sorted(CAPABILITIES.items()))
            return Reply(render("CAP", target, "LS", offered, source=SERVER))
        if sub == "LIST":
            return Reply(render("CAP", target, "LIST", " ".join(sorted(self.caps)), source=SERVER))
        if sub == "REQ":
            if not self._registered:
                self.negotiating = True
            asked = (params[1] if len(params) > 1 else "").split()
            wanted, dropped = set(self.caps), set[str]()
            for cap in asked:
                name = cap.lstrip("-")
                if name not in CAPABILITIES or (self._registered and name == "sasl" and cap.startswith("-")):
                    return Reply(render("CAP", target, "NAK", " ".join(asked), source=SERVER))
                (dropped if cap.startswith("-") else wanted).add(name)
            self.caps = frozenset(wanted - dropped)
            self._rename()
            return Reply(render("CAP", target, "ACK", " ".join(asked), source=SERVER))
        if sub == "END":
            self.negotiating = False
            return None
        return Reply(self._numeric("410", sub or "*", "Invalid CAP command"))

    def _rename(self) -> None:
        tags = [cap for cap in ("server-time", "message-tags") if cap in self.caps]
        self.name = "+".join(["irc", *tags])

    def _authenticate(self, params: tuple[str, ...]) -> Reply | Authenticate:
        if not params:
            return Reply(self._numeric("461", "AUTHENTICATE", "Not enough parameters"))
        if "sasl" not in self.caps:
            return Reply(self._numeric("904", "SASL authentication failed: CAP REQ sasl first"))
        if self.account:
            return Reply(self._numeric("907", "You have already authenticated using SASL"))
        word = params[0]
        if word == "*":
            self._sasl = None
            return Reply(self._numeric("906", "SASL authentication aborted"))
        if self._sasl is None:
            if word.upper() != "PLAIN":
                return Reply(self._numeric("908", "PLAIN", "are available SASL mechanisms") + self._numeric("904", "SASL authentication failed"))
            self._sasl = []
            return Reply("AUTHENTICATE +\r\n")
        if word != "+":
            self._sasl.append(word)
        if len(word) == SASL_CHUNK and sum(map(len, self._sasl)) < MAX_SASL_BYTES:
            return Reply("")  # more follows
        pieces, self._sasl = self._sasl, None
        try:
            authzid, authcid, password = base64.b64decode("".join(pieces), validate=True).decode().split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return Reply(self._numeric("904", "SASL authentication failed: not PLAIN"))
        user = authcid or authzid
        if not is_valid_name(user) or (authzid and authzid.lower() != user.lower()):
            return Reply(self._numeric("904", "SASL authentication failed: no such account"))
        self._sasl = []  # a check is under way: registration waits for its answer
        return Authenticate(user, password)

    def authenticated(self, name: str) -> str:
        """SASL: the router found the credentials good."""
        self._sasl = None
        self.account = name
        return self._numeric("900", source(self.nick or name), name, f"You are now logged in as {name}") + self._numeric("903", "SASL authentication successful")

    def logged_in(self, name: str, account: bool) -> str:
        """The registration burst, before anything else the router says."""
        renamed = render("NICK", name, source=source(self.nick)) if self.nick and self.nick != name else ""
        self.nick, self._registered = name, True
        return renamed + "".join(
            (
                self._numeric("001", f"Welcome to the chatnet IRC network, {source(name)}"),
                self._numeric("002", f"Your host is {SERVER}, running version {VERSION}"),
                self._numeric("003", "This server has been chatnet all along"),
                self._numeric("004", SERVER, VERSION, "i", "biklmnostv", "bklov"),
                self._isupport(),
                self._numeric("422", "MOTD File is missing"),
                self._numeric("900", source(name), name, f"You are now logged in as {name}") if account and not self.account else "",
            )
        )

    def login_failed(self, text: str, details: dict[str, Any], timestamp: str) -> str:
        reason = details.get("reason")
        if self._sasl is not None:  # the SASL check said no; registration goes on
            self._sasl = None
            return self._numeric("904", f"SASL authentication failed: {text}")
        nick, self.nick = self.nick or "*", ""
        if reason == LoginReason.NAME_TAKEN:
            return self._numeric("433", nick, "Nickname is already in use", target="*")
        if reason == LoginReason.PASSWORD_REQUIRED:
            return self._numeric("433", nick, "Nickname is registered: connect with its password (PASS or SASL)", target="*")
        if reason in (LoginReason.WRONG_PASSWORD, LoginReason.LOCKED):
            self.password = None
            return self._numeric("464", f"Password incorrect: {text}", target="*")
        if details.get("line"):  # a line that was no IRC at all: the registration goes on
            self.nick = "" if nick == "*" else nick
            return self._numeric("NOTICE", f"Error: {text}", target="*")
        if reason in (LoginReason.INVALID_NAME, LoginReason.RESERVED):
            return self._numeric("432", nick, f"Erroneous nickname: {text}", target="*")
        return self._numeric("NOTICE", text, target="*")

    # --- lines after the login --------------------------------------------------------------

    def parse(self, line: str) -> ClientEvent | Reply | list[ClientEvent | Reply]:
        if line[:8] == "PRIVMSG ":  # the common case first, kept lean: once per routed message
            target, colon, text = line[8:].partition(" :")
            if (
                colon and text and target and " " not in target and "," not in target
                and "\r" not in line and "\0" not in line and len(line.encode()) <= _FAST_LINE_BYTES
                and (target in KNOWN_DESTINATIONS or valid_destination(target))
            ):  # fmt: skip
                return new_chat((target, text, None, _CHAT))  # to a channel one is not in: the room's -n may let it in
        if not line.strip():
            return Reply("")  # empty lines are ignored (RFC 1459, 2.3.1)
        msg = ircline.parse(line)  # IrcLineError is a ProtocolError: the session says what is wrong
        handler = _HANDLERS.get(msg.command)
        if handler is not None:
            return handler(self, msg)
        name = msg.command.lower()
        if name in COMMANDS:  # chatnet's own commands by name: /quote CHECK, /quote HISTORY #room
            return Command(name, " ".join(msg.params))
        return Reply(self._numeric("421", msg.command, "Unknown command"))

    def _privmsg(self, msg: IrcLine) -> ClientEvent | Reply | list[ClientEvent | Reply]:
        params, notice = msg.params, msg.command == "NOTICE"
        if not params or not params[0]:
            return Reply("" if notice else self._numeric("411", f"No recipient given ({msg.command})"))
        if len(params) < 2 or not params[1]:
            return Reply("" if notice else self._numeric("412", "No text to send"))
        text = params[1]
        if "," not in params[0] and (is_valid_name(params[0]) or is_room(params[0])):
            return Chat(params[0], text, {"notice": True} if notice else None, MessageType.CHAT)
        events: list[ClientEvent | Reply] = []
        for number, target in enumerate(params[0].split(",")):
            if number >= MAX_TARGETS:
                events.append(Reply(self._numeric("407", target, f"Too many targets (at most {MAX_TARGETS})")))
                break
            if is_room(target) or is_valid_name(target):
                events.append(Chat(target, text, {"notice": True} if notice else None, MessageType.CHAT))
            elif target.startswith("#") and not notice:
                events.append(Reply(self._numeric("403", target, "No such channel")))
            elif not notice:
                events.append(Reply(self._numeric("401", target, "No such nick/channel")))
        return events

    def _join(self, msg: IrcLine) -> list[ClientEvent | Reply] | Reply:
        if not msg.params or not msg.params[0]:
            return Reply(self._numeric("461", "JOIN", "Not enough parameters"))
        if msg.params[0] == "0":
            return Reply(self._numeric("NOTICE", "JOIN 0 is not supported here: PART each channel"))
        events: list[ClientEvent | Reply] = []
        joins: list[str] = []
        keys = msg.params[1].split(",") if len(msg.params) > 1 else []
        for number, room in enumerate(msg.params[0].split(",")):  # each with its key, by place
            if number >= MAX_JOINS:
                events.append(Reply(self._numeric("407", room, f"Too many channels at once (at most {MAX_JOINS})")))
                break
            if not is_room(room):
                events.append(Reply(self._numeric("403", room, "No such channel")))
            elif _ident(room) not in self.channels:  # a JOIN of a channel one is in is nothing
                key = keys[number].split()[0] if number < len(keys) and keys[number].split() else ""
                joins.append(f"{room} {key}" if key and not key.startswith("#") else room)
        if joins:
            events.insert(0, Command("join", " ".join(joins)))  # one after the other, in the order given
        return events

    def _part(self, msg: IrcLine) -> list[ClientEvent | Reply] | Reply:
        if not msg.params or not msg.params[0]:
            return Reply(self._numeric("461", "PART", "Not enough parameters"))
        reason = f" {msg.params[1]}" if len(msg.params) > 1 and msg.params[1].strip() else ""
        rooms = msg.params[0].split(",")[:MAX_JOINS]
        return [Command("leave", room + reason) if is_room(room) else Reply(self._numeric("403", room, "No such channel")) for room in rooms]

    def _room_question(self, msg: IrcLine, kind: str, command: str = "members") -> ClientEvent | Reply:
        """NAMES/WHO/MODE/TOPIC about a room: the router's answer is rendered as `kind` says."""
        room = msg.params[0]
        if not is_room(room):
            return Reply(self._numeric("403", room, "No such channel"))
        self._asked.append((kind, _ident(room)))
        return Command(command, room)

    def _names(self, msg: IrcLine) -> ClientEvent | Reply | list[ClientEvent | Reply]:
        if not msg.params:
            return Reply(self._numeric("366", "*", "End of /NAMES list"))
        asked = msg.params[0]
        rooms = [room for room in asked.split(",")[:MAX_TARGETS] if is_room(room)]
        if not rooms:
            return Reply(self._numeric("366", asked, "End of /NAMES list"))
        if len(rooms) == 1:
            return self._room_question(msg._replace(params=(rooms[0],)), "names")
        # Each room's 353s, then one 366 for them all (modern.ircdocs.horse).
        events: list[ClientEvent | Reply] = [self._room_question(msg._replace(params=(room,)), "names-part") for room in rooms[:-1]]
        if len(self._names_end) >= MAX_ASKED:  # answers that never came (their deque forgot them too)
            self._names_end.clear()
        self._names_end[_ident(rooms[-1])] = asked
        events.append(self._room_question(msg._replace(params=(rooms[-1],)), "names"))
        return events

    def _topic(self, msg: IrcLine) -> ClientEvent | Reply:
        if not msg.params:
            return Reply(self._numeric("461", "TOPIC", "Not enough parameters"))
        room = msg.params[0]
        if len(msg.params) == 1:
            return self._room_question(msg, "topic", "topic")
        if not is_room(room):
            return Reply(self._numeric("403", room, "No such channel"))
        if not msg.params[1].strip():
            return Command("topic", f"{room} -")  # `TOPIC #room :` clears it (`!topic #room -`)
        return Command("topic", f"{room} {msg.params[1]}")

    def _who(self, msg: IrcLine) -> ClientEvent | Reply:
        mask = msg.params[0] if msg.params else "*"
        if is_room(mask):
            return self._room_question(msg._replace(params=(mask,)), "room_who")
        self._asked.append(("who", _ident(mask)))
        return Command("who")

    def _whois(self, msg: IrcLine) -> ClientEvent | Reply:
        if not msg.params:
            return Reply(self._numeric("431", "No nickname given"))
        nick = msg.params[-1].split(",")[0]
        if not is_valid_name(nick):  # no name anyone could have (pydle asks about "<unregistered>")
            return Reply(self._numeric("401", nick, "No such nick/channel") + self._numeric("318", nick, "End of /WHOIS list"))
        return Command("whois", nick)

    def _whowas(self, msg: IrcLine) -> ClientEvent | Reply:
        if not msg.params or not msg.params[0]:
            return Reply(self._numeric("431", "No nickname given"))
        nick = msg.params[0].split(",")[0]
        if not is_valid_name(nick):
            return Reply(self._numeric("406", nick, "There was no such nickname") + self._numeric("369", nick, "End of WHOWAS"))
        count = msg.params[1] if len(msg.params) > 1 and msg.params[1].lstrip("-").isdigit() else "0"
        self._asked.append(("whowas", count))  # how many of the newest to show (0 or less: all)
        return Command("whowas", nick)

    def _names_question(self, kind: str, names: tuple[str, ...], command: str) -> ClientEvent | Reply:
        if not names:
            return Reply(self._numeric("461", command, "Not enough parameters"))
        self._asked.append((kind, " ".join(names)))
        return Command("who")

    def _ison(self, msg: IrcLine) -> ClientEvent | Reply:
        return self._names_question("ison", tuple(" ".join(msg.params).split()), "ISON")

    def _userhost(self, msg: IrcLine) -> ClientEvent | Reply:
        return self._names_question("userhost", msg.params[:5], "USERHOST")

    def _lusers(self, msg: IrcLine) -> ClientEvent | Reply:
        self._asked.append(("lusers", ""))
        return Command("who")

    def _list(self, msg: IrcLine) -> ClientEvent | Reply:
        self._asked.append(("list", ",".join(_ident(room) for room in msg.params[0].split(",")) if msg.params else ""))
        return Command("rooms")

    def _kick(self, msg: IrcLine) -> list[ClientEvent | Reply] | Reply:
        if len(msg.params) < 2:
            return Reply(self._numeric("461", "KICK", "Not enough parameters"))
        room = msg.params[0]
        if not is_room(room.split(",")[0]):
            return Reply(self._numeric("403", room, "No such channel"))
        comment = f" {msg.params[2]}" if len(msg.params) > 2 and msg.params[2].strip() else ""
        users = msg.params[1].split(",")[:MAX_TARGETS]
        rooms = room.split(",")
        if len(rooms) == 1:
            return [Command("kick", f"{room} {user}{comment}") for user in users]
        if len(rooms) != len(users) or not all(map(is_room, rooms)):  # KICK #a,#b x,y: x from #a, y from #b
            return Reply(self._numeric("461", "KICK", "Channels and nicks do not pair up"))
        return [Command("kick", f"{where} {user}{comment}") for where, user in zip(rooms, users, strict=True)]

    def _invite(self, msg: IrcLine) -> ClientEvent | Reply:
        if not msg.params:  # the list of one's invitations: chatnet keeps them to let people in, not to list them
            return Reply(self._numeric("337", "End of /INVITE list"))
        if len(msg.params) < 2:
            return Reply(self._numeric("461", "INVITE", "Not enough parameters"))
        user, room = msg.params[0], msg.params[1]
        if not is_room(room):
            return Reply(self._numeric("403", room, "No such channel"))
        return Command("invite", f"{room} {user}")

    def _mode(self, msg: IrcLine) -> ClientEvent | Reply | list[ClientEvent | Reply]:
        if not msg.params:
            return Reply(self._numeric("461", "MODE", "Not enough parameters"))
        target = msg.params[0]
        if not target.startswith("#"):
            if _ident(target) != _ident(self.nick):
                return Reply(self._numeric("502", "Can't change mode for other users"))
            if len(msg.params) == 1:
                return Command("mode", self.nick)  # answered by 221 (USER_MODE)
            if {c for c in msg.params[1] if c not in "+-"} - _USER_MODES:
                return Reply(self._numeric("501", "Unknown MODE flag"))
            changes = msg.params[1].replace("i", "")
            return Command("mode", f"{self.nick} {changes}") if changes.strip("+-") else Reply("")
        if not is_room(target):
            return Reply(self._numeric("403", target, "No such channel"))
        if len(msg.params) == 1:
            return self._room_question(msg, "mode", "mode")
        # To chatnet's `!mode #room <modes> [values]`, each value a word; the rest is the router's.
        values, events = list(msg.params[2:]), list[ClientEvent | Reply]()
        letters, kept, adding = "", list[str](), True
        for char in msg.params[1]:
            if char in "+-":
                adding = char == "+"
                letters += char
                continue
            if char in _EMPTY_LISTS and not values:
                events.append(Reply(self._numeric(_EMPTY_LISTS[char][0], target, _EMPTY_LISTS[char][1])))
                continue
            value = values.pop(0) if values and (char in _MODE_VALUES or (adding and char in _MODE_SET_VALUES)) else None
            if char == "k" and not adding:
                value = None  # -k needs no key here
            elif value is not None and (not value.strip() or " " in value):
                events.append(Reply(self._numeric("696", target, char, "*", "A value is one word")))
                continue
            letters += char
            if value is not None:
                kept.append(value)
        if letters.strip("+-"):
            events.insert(0, Command("mode", " ".join([target, letters, *kept])))
        return events

    def _away(self, msg: IrcLine) -> Command:
        return Command("away", msg.params[0] if msg.params else "")

    def _ping(self, msg: IrcLine) -> Reply:
        if not msg.params:
            return Reply(self._numeric("409", "No origin specified"))
        return Reply(render("PONG", SERVER, msg.params[0], source=SERVER))

    def _pong(self, msg: IrcLine) -> Pong:
        return Pong()

    def _quit(self, msg: IrcLine) -> Quit:
        return Quit(msg.params[0] if msg.params else "")

    def _nick(self, msg: IrcLine) -> ClientEvent | Reply:
        if not msg.params or not msg.params[0]:
            return Reply(self._numeric("431", "No nickname given"))
        new = msg.params[0]
        if not is_valid_name(new):
            return Reply(self._numeric("432", new, "Erroneous nickname"))
        return Reply("") if new == self.nick else Command("nick", new)  # a guest's; an account's name stays

    def _registered_again(self, msg: IrcLine) -> Reply:
        return Reply(self._numeric("462", "You may not reregister"))

    def _cap_later(self, msg: IrcLine) -> Reply:
        return self._cap(msg.params) or Reply("")

    def _motd(self, msg: IrcLine) -> Reply:
        return Reply(self._numeric("422", "MOTD File is missing"))

    def _version(self, msg: IrcLine) -> Reply:
        return Reply(self._numeric("351", VERSION, SERVER, "chatnet") + self._isupport())

    def _links(self, msg: IrcLine) -> Reply:
        """A network of nodes behind one name: the links are not shown (as servers that
        redact them do)."""
        return Reply(self._numeric("365", "*", "End of /LINKS list"))

    def _help(self, msg: IrcLine) -> Command:
        return Command("help")

    def _info(self, msg: IrcLine) -> Reply:
        return Reply("".join(self._numeric("371", line) for line in INFO_LINES) + self._numeric("374", "End of /INFO list"))

    def _oper(self, msg: IrcLine) -> ClientEvent | Reply:
        if len(msg.params) < 2 or not msg.params[0] or not msg.params[1]:
            return Reply(self._numeric("461", "OPER", "Not enough parameters"))
        return Command("oper", f"{msg.params[0]} {msg.params[1]}")

    def _wallops(self, msg: IrcLine) -> ClientEvent | Reply:
        if not msg.params or not msg.params[0].strip():
            return Reply(self._numeric("461", "WALLOPS", "Not enough parameters"))
        return Command("wallops", msg.params[0])

    # --- what the server says, as IRC lines -------------------------------------------------

    def _isupport(self) -> str:
        """005s, each within IRC's 15 parameters (the nick and the text take two)."""
        return "".join(
            self._numeric("005", *ISUPPORT[start : start + ISUPPORT_PER_LINE], "are supported by this server") for start in range(0, len(ISUPPORT), ISUPPORT_PER_LINE)
        )

    def _numeric(self, command: str, *params: str, target: str | None = None) -> str:
        return render(command, target or self.nick or "*", *params, source=SERVER, text=True)

    def _tags(self, msg_id: str | None, timestamp: str) -> dict[str, str] | None:
        caps = self.caps
        if not caps:
            return None
        tags: dict[str, str] = {}
        if "server-time" in caps:
            tags["time"] = timestamp
        if msg_id is not None and "message-tags" in caps:
            tags["msgid"] = msg_id
        return tags

    def _message(self, verb: str, sender: str, target: str, text: str, tags: dict[str, str] | None) -> str:
        """One PRIVMSG per line of `text`, each cut to fit IRC's 512 bytes."""
        head = render(verb, target, "x", source=sender, text=True)
        room = ircline.MAX_LINE_BYTES - len(head.encode()) + 1  # what "x" held
        out: list[str] = []
        for line in text.split("\n"):
            for piece in _cut(line.rstrip("\r").replace("\r", " ").replace("\0", "") or " ", room):
                out.append(render(verb, target, piece if piece.strip() else " ", source=sender, tags=tags, text=True))
        return "".join(out)

    def delivery(self, message: Delivery) -> str:
        msg_id, sender, destination, text, timestamp, kind, metadata, _ = message
        verb = "NOTICE" if kind == _SUBSCRIPTION else "PRIVMSG"
        if metadata is not None:
            if partial_chunk(metadata):
                return ""  # IRC readers get a streamed reply whole, from its final frame
            if metadata.get("notice"):
                verb = "NOTICE"  # shown as what it was
        if len(text) <= _FAST_TEXT_CHARS and "\n" not in text and "\r" not in text and "\0" not in text:
            # The common case, kept lean: one line that fits (names are ASCII, 32 at most).
            line = f":{sender}!{sender}@{HOST} {verb} {destination} :{text}\r\n"
            if not self.caps:
                return line
            tags = self._tags(msg_id, timestamp)
            return f"@{';'.join(f'{key}={escape_tag(value)}' for key, value in tags.items())} {line}" if tags else line
        return self._message(verb, source(sender), destination, text, self._tags(msg_id, timestamp))

    def replayed(self, message: Delivery) -> str:
        """A room's message from before: its time in a tag, or leading the text."""
        if "server-time" in self.caps:
            return self.delivery(message)
        text = f"[{short_timestamp(message[4])}] {message[3]}"
        return self.delivery((*message[:3], text, *message[4:]))

    def stored(self, message: Message) -> str:
        timestamp = format_datetime(message.timestamp)
        text = message.message if "server-time" in self.caps else f"[{short_timestamp(timestamp)}] {message.message}"
        sender = message.sender or SERVER_NAME
        verb = "NOTICE" if message.type == MessageType.SUBSCRIPTION or message.metadata.get("notice") else "PRIVMSG"
        return self._message(verb, source(sender), message.destination or self.nick, text, self._tags(message.id, timestamp))

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
            asked = self._take(_ANSWERED_BY_ROOM, _ident(str(room)))  # the question about it is answered so
            if asked is not None and asked[0] == "names-part":
                return ""  # a room of several asked at once: the last one's 366 ends them all
            if asked is not None and asked[0] in ("names", "room_who"):  # an empty list, as for any channel nobody is in
                if asked[0] == "room_who":
                    return self._numeric("315", str(room), "End of WHO list")
                return self._numeric("366", self._names_end.pop(asked[1], str(room)), "End of /NAMES list")
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
        for asked in self._asked:
            if asked[0] in kinds and (key is None or asked[1] == key):
                self._asked.remove(asked)
                return asked
        return None

    # Notices, one renderer per event.

    def _welcome(self, text: str, details: dict[str, Any]) -> str:
        return self._server_notice(text)  # the mail count, after 001-005 (its lines come before any answer)

    def _away_notice(self, text: str, details: dict[str, Any]) -> str:
        user, away = str(details.get("user", "")), str(details.get("away") or "")
        if _ident(user) != _ident(self.nick):
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
        by_key = {_ident(name): name for name in online}
        asked = self._take(("who", "ison", "userhost", "lusers"))
        if asked is None:
            return self._server_notice(text)
        kind, key = asked
        if kind == "ison":
            return self._numeric("303", " ".join(by_key[_ident(n)] for n in key.split() if _ident(n) in by_key))
        if kind == "userhost":
            found = (by_key[_ident(n)] for n in key.split() if _ident(n) in by_key)
            return self._numeric("302", " ".join(f"{name}=+{name}@{HOST}" for name in found))
        if kind == "lusers":
            return self._numeric("251", f"There are {len(online)} users and 0 invisible on 1 servers") + self._numeric(
                "255", f"I have {len(online)} clients and 0 servers"
            )
        matching = [name for name in online if key in ("*", "0") or _ident(name) == key]
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
        if _ident(room) in self.channels:
            return ""  # in it already (told at login, and the client's autojoin asked again)
        self.channels.add(_ident(room))
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
        ops = {_ident(str(name)) for name in details.get("ops") or [details.get("owner") or ""]}
        voiced = {_ident(str(name)) for name in details.get("voiced") or []}
        shown = [f"@{name}" if _ident(name) in ops else f"+{name}" if _ident(name) in voiced else name for name in names]
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
        self.channels.discard(_ident(room))
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
        self._shown = ("", "", "")
        if presence in ("joined", "online"):
            return render("JOIN", room, source=source(user))
        if reason:
            return render("PART", room, reason, source=source(user), text=True)
        return render("PART", room, source=source(user))

    def _once(self, change: tuple[str, str, str], line: str) -> str:
        if change == self._shown:
            return ""
        self._shown = change
        return line

    def _topic_notice(self, text: str, details: dict[str, Any]) -> str:
        room, topic = str(details["room"]), str(details.get("topic") or "")
        if details.get("changed"):
            return render("TOPIC", room, _fit(topic), source=source(str(details.get("by") or SERVER)), text=True)
        if self._take(("topic",), _ident(room)) is None:
            return ""  # the one after a join: the JOIN's 332 said it
        if not topic:
            return self._numeric("331", room, "No topic is set")
        by = details.get("by")
        return self._numeric("332", room, _fit(topic)) + (self._numeric("333", room, str(by), "0") if by else "")

    def _rooms(self, text: str, details: dict[str, Any]) -> str:
        asked = self._take(("list",))
        wanted = set(asked[1].split(",")) if asked is not None and asked[1] else None
        rooms = [r for r in details.get("rooms", []) if wanted is None or _ident(str(r["name"])) in wanted]
        return (
            self._numeric("321", "Channel", "Users  Name")
            + "".join(self._numeric("322", str(r["name"]), str(r["members"]), _fit(str(r.get("topic") or ""))) for r in rooms)
            + self._numeric("323", "End of /LIST")
        )

    def _members(self, text: str, details: dict[str, Any]) -> str:
        room = str(details["room"])
        asked = self._take(("names", "names-part", "room_who"), _ident(room))
        kind = asked[0] if asked else "names"
        members = details.get("members", [])
        here = [str(m["name"]) for m in members if m.get("online")]
        if kind == "room_who":
            ops = {_ident(str(name)) for name in details.get("ops") or [details.get("owner") or ""]}
            return "".join(self._numeric("352", room, name, HOST, SERVER, name, "H@" if _ident(name) in ops else "H", f"0 {name}") for name in here) + self._numeric(
                "315", room, "End of WHO list"
            )
        if kind == "names-part":
            return self._names_lines(room, here, details, end=None)
        return self._names_lines(room, here, details, end=self._names_end.pop(_ident(room), room))

    def _catchup(self, text: str, details: dict[str, Any]) -> str:
        return render("NOTICE", str(details["room"]), text, source=SERVER)

    def _invited(self, text: str, details: dict[str, Any]) -> str:
        room, user, by = str(details["room"]), str(details["user"]), str(details.get("by") or "")
        if _ident(user) == _ident(self.nick) and _ident(by) != _ident(self.nick):
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
            self._take(("mode",), _ident(room))
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
        return "".join(render("WALLOPS", piece if piece.strip() else " ", source=sender, text=True) for line in lines for piece in _cut(line or " ", room))

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
    return _cut(text, _TOPIC_BYTES)[0] if text else text


def _cut(text: str, limit: int) -> list[str]:
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


_HANDLERS: Final = {
    "PRIVMSG": IrcDialect._privmsg,
    "NOTICE": IrcDialect._privmsg,
    "JOIN": IrcDialect._join,
    "PART": IrcDialect._part,
    "NAMES": IrcDialect._names,
    "TOPIC": IrcDialect._topic,
    "LIST": IrcDialect._list,
    "WHO": IrcDialect._who,
    "WHOIS": IrcDialect._whois,
    "WHOWAS": IrcDialect._whowas,
    "ISON": IrcDialect._ison,
    "USERHOST": IrcDialect._userhost,
    "LUSERS": IrcDialect._lusers,
    "KICK": IrcDialect._kick,
    "INVITE": IrcDialect._invite,
    "MODE": IrcDialect._mode,
    "AWAY": IrcDialect._away,
    "PING": IrcDialect._ping,
    "PONG": IrcDialect._pong,
    "QUIT": IrcDialect._quit,
    "NICK": IrcDialect._nick,
    "USER": IrcDialect._registered_again,
    "PASS": IrcDialect._registered_again,
    "AUTHENTICATE": IrcDialect._registered_again,
    "CAP": IrcDialect._cap_later,
    "MOTD": IrcDialect._motd,
    "VERSION": IrcDialect._version,
    "HELP": IrcDialect._help,
    "LINKS": IrcDialect._links,
    "INFO": IrcDialect._info,
    "OPER": IrcDialect._oper,
    "WALLOPS": IrcDialect._wallops,
}

_NOTICES: Final = {
    Event.WELCOME: IrcDialect._welcome,
    Event.GOODBYE: IrcDialect._goodbye,
    Event.SHUTDOWN: IrcDialect._goodbye,
    Event.RENAMED: IrcDialect._renamed,
    Event.AWAY: IrcDialect._away_notice,
    Event.SAVED: IrcDialect._saved,
    Event.UNKNOWN_NAME: IrcDialect._quiet,  # the 401 said it
    Event.WHO: IrcDialect._who_answer,
    Event.WHOIS: IrcDialect._whois_answer,
    Event.WHOWAS: IrcDialect._whowas_answer,
    Event.PRESENCE: IrcDialect._quiet,  # network-wide comings and goings: IRC shows them per channel
    Event.PING: IrcDialect._quiet,
    Event.JOINED: IrcDialect._joined,
    Event.LEFT: IrcDialect._left,
    Event.ROOM_PRESENCE: IrcDialect._room_presence,
    Event.TOPIC: IrcDialect._topic_notice,
    Event.ROOMS: IrcDialect._rooms,
    Event.MEMBERS: IrcDialect._members,
    Event.CATCHUP: IrcDialect._catchup,
    Event.HISTORY: IrcDialect._catchup,
    Event.INVITED: IrcDialect._invited,
    Event.ROOM_MODE: IrcDialect._room_mode,
    Event.OPER: IrcDialect._oper_notice,
    Event.WALLOPS: IrcDialect._wallops_notice,
    Event.USER_MODE: IrcDialect._user_mode,
}
