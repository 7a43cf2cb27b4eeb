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
details) become numerics: those renderers are `IrcNumerics` (dialects/irc_numerics.py),
which `IrcDialect` inherits. Here: the registration (NICK/USER/PASS, CAP, SASL), the
client's commands (the `_HANDLERS` table) and the messages both ways, PRIVMSG in
(`parse`'s fast path) and out (`delivery`).

Unlike text and JSON, IRC negotiates: a connection has one `IrcDialect` of its own,
which keeps what the client asked for (its capabilities, its registration) and which
of its questions are still unanswered. It is pure all the same: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, ClassVar, Final

from chatnet.dialects import ircline
from chatnet.dialects.irc_numerics import HOST, MAX_TARGETS, NOTHING_SHOWN, SERVER, IrcNumerics, key_of, source, split_to_fit
from chatnet.dialects.ircline import IrcLine, IrcLineError, escape_tag, render
from chatnet.limits import MAX_JOINS_AT_ONCE, MAX_NAME_CHARS
from chatnet.protocol import (
    CHAT_TYPE,
    COMMANDS,
    KNOWN_DESTINATIONS,
    SERVER_NAME,
    SUBSCRIPTION_TYPE,
    Authenticate,
    Chat,
    ClientEvent,
    Command,
    Delivery,
    Login,
    LoginReason,
    MessageJson,
    MessageType,
    Pong,
    Quit,
    Reply,
    is_room,
    is_valid_name,
    new_chat,
    partial_chunk,
    short_timestamp,
    valid_destination,
)

VERSION: Final = "chatnet-1"
CAPABILITIES: Final = {"echo-message": "", "message-tags": "", "sasl": "PLAIN", "server-time": ""}
# A PRIVMSG line this short (in bytes, CR LF apart) is within every limit ircline checks.
_FAST_LINE_BYTES: Final = ircline.MAX_LINE_BYTES - 2
# A message this short fits one line whatever it holds: 4 bytes a character, and room
# for `:name!name@chatnet PRIVMSG #room :` with the longest names.
_FAST_TEXT_CHARS: Final = 90
MAX_JOINS: Final = MAX_JOINS_AT_ONCE
# SASL PLAIN: the payload comes in pieces of 400 base64 characters; more is no password.
SASL_CHUNK: Final = 400
MAX_SASL_BYTES: Final = 1200
# Questions waiting for the router's answer (WHOIS, NAMES, ...): older ones are dropped.
MAX_ASKED: Final = 64
# No capabilities (an empty frozenset is 216 bytes a session: Python makes a new one each time).
_NO_CAPS: Final[frozenset[str]] = frozenset()
# MODE letters that take a value: always, and only when set (+k's value is optional
# when it is unset: clients send it all the same).
_MODE_VALUES: Final = frozenset("bovk")
_MODE_SET_VALUES: Final = frozenset("l")
# Lists a MODE query asks for that chatnet has none of: their end at once.
_EMPTY_LISTS: Final = {"e": ("349", "End of channel exception list"), "I": ("347", "End of channel invite list")}
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


class Registration:
    """What an IRC connection says before it is registered: PASS, CAP negotiation, SASL.
    Dropped once it is registered: three slots fewer for each connection that stays."""

    __slots__ = ("password", "negotiating", "sasl")

    def __init__(self) -> None:
        self.password: str | None = None  # from PASS: an account's password
        self.negotiating = False  # CAP LS or REQ seen, CAP END not yet
        self.sasl: list[str] | None = None  # PLAIN payload pieces while AUTHENTICATE goes on


class IrcDialect(IrcNumerics):
    """One IRC connection's dialect: its registration, its capabilities, its questions."""

    asks_password: ClassVar[bool] = False  # PASS or SASL come before the login
    pings: ClassVar[bool] = True
    wants_presence: ClassVar[bool] = True  # for JOIN and PART in channels; network-wide presence is dropped
    follows_network: ClassVar[bool] = False  # channels' JOIN/PART only; LUSERS, WHO and ISON ask
    rejoins: ClassVar[bool] = True  # told of each room it is in at login: a client opens a window per channel
    in_order: ClassVar[bool] = True  # each answer before what the client says next (see Dialect.in_order)

    __slots__ = ("name", "user", "realname", "caps", "account", "_registering")  # and IrcNumerics' own

    def __init__(self) -> None:
        # "irc", or with the tags it was asked for ("irc+server-time+message-tags"): a
        # room line is rendered once per name.
        self.name = "irc"
        self.nick = ""  # as registered, then the chatnet name
        self.user = ""
        self.realname = ""
        self.caps = _NO_CAPS
        self.account = ""  # the account SASL logged in, once it has
        self._registering: Registration | None = Registration()  # None once registered
        self._asked: tuple[tuple[str, str], ...] = ()  # see _ask
        # The rooms it was told it is in, by key: a tuple, as in the router's rooms (a set is
        # 216 bytes even for one; joins and parts are rare).
        self.channels: tuple[str, ...] = ()
        self._shown = NOTHING_SHOWN  # the last NICK or QUIT shown of someone else
        self._names_end: dict[str, str] | None = None  # NAMES #a,#b: the one 366 after #b's names says "#a,#b"

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
            self._before.password = params[0]
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
        registering = self._before
        if not self.nick or not self.user or registering.negotiating or registering.sasl is not None:
            return Reply("")
        if self.account:
            return Login(self.account)  # SASL checked the password already (the router knows)
        return Login(self.nick, password=registering.password)

    @property
    def _before(self) -> Registration:
        """The registration under way: the lines before the login are read only until it ends."""
        assert self._registering is not None, "registered already"
        return self._registering

    def _cap(self, params: tuple[str, ...]) -> Reply | None:
        sub = params[0].upper() if params else ""
        target = self.nick or "*"
        if sub == "LS":
            if self._registering is not None:
                self._registering.negotiating = True
            modern = len(params) > 1 and params[1].isdigit() and int(params[1]) >= 302
            offered = " ".join(f"{cap}={value}" if value and modern else cap for cap, value in sorted(CAPABILITIES.items()))
            return Reply(render("CAP", target, "LS", offered, source=SERVER))
        if sub == "LIST":
            return Reply(render("CAP", target, "LIST", " ".join(sorted(self.caps)), source=SERVER))
        if sub == "REQ":
            if self._registering is not None:
                self._registering.negotiating = True
            asked = (params[1] if len(params) > 1 else "").split()
            wanted, dropped = set(self.caps), set[str]()
            for cap in asked:
                name = cap.lstrip("-")
                if name not in CAPABILITIES or (self._registering is None and name == "sasl" and cap.startswith("-")):
                    return Reply(render("CAP", target, "NAK", " ".join(asked), source=SERVER))
                (dropped if cap.startswith("-") else wanted).add(name)
            self.caps = frozenset(wanted - dropped)
            self._rename()
            return Reply(render("CAP", target, "ACK", " ".join(asked), source=SERVER))
        if sub == "END":
            if self._registering is not None:
                self._registering.negotiating = False
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
        word, registering = params[0], self._before
        if word == "*":
            registering.sasl = None
            return Reply(self._numeric("906", "SASL authentication aborted"))
        if registering.sasl is None:
            if word.upper() != "PLAIN":
                return Reply(self._numeric("908", "PLAIN", "are available SASL mechanisms") + self._numeric("904", "SASL authentication failed"))
            registering.sasl = []
            return Reply("AUTHENTICATE +\r\n")
        if word != "+":
            registering.sasl.append(word)
        if len(word) == SASL_CHUNK and sum(map(len, registering.sasl)) < MAX_SASL_BYTES:
            return Reply("")  # more follows
        pieces, registering.sasl = registering.sasl, None
        try:
            authzid, authcid, password = base64.b64decode("".join(pieces), validate=True).decode().split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return Reply(self._numeric("904", "SASL authentication failed: not PLAIN"))
        user = authcid or authzid
        if not is_valid_name(user) or (authzid and authzid.lower() != user.lower()):
            return Reply(self._numeric("904", "SASL authentication failed: no such account"))
        registering.sasl = []  # a check is under way: registration waits for its answer
        return Authenticate(user, password)

    def authenticated(self, name: str) -> str:
        """SASL: the router found the credentials good."""
        self._before.sasl = None
        self.account = name
        return self._numeric("900", source(self.nick or name), name, f"You are now logged in as {name}") + self._numeric("903", "SASL authentication successful")

    def logged_in(self, name: str, account: bool) -> str:
        """The registration burst, before anything else the router says."""
        renamed = render("NICK", name, source=source(self.nick)) if self.nick and self.nick != name else ""
        self.nick, self._registering = name, None
        # Most clients give their nick as username and real name too: one string for all
        # three (110 bytes a connection).
        if self.user == name:
            self.user = name
        if self.realname == self.user:
            self.realname = self.user
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
        reason, registering = details.get("reason"), self._registering
        if registering is not None and registering.sasl is not None:  # the SASL check said no; registration goes on
            registering.sasl = None
            return self._numeric("904", f"SASL authentication failed: {text}")
        nick, self.nick = self.nick or "*", ""
        if reason == LoginReason.NAME_TAKEN:
            return self._numeric("433", nick, "Nickname is already in use", target="*")
        if reason == LoginReason.PASSWORD_REQUIRED:
            return self._numeric("433", nick, "Nickname is registered: connect with its password (PASS or SASL)", target="*")
        if reason in (LoginReason.WRONG_PASSWORD, LoginReason.LOCKED):
            if registering is not None:
                registering.password = None
            return self._numeric("464", f"Password incorrect: {text}", target="*")
        if details.get("line"):  # a line that was no IRC at all: the registration goes on
            self.nick = "" if nick == "*" else nick
            return self._numeric("NOTICE", f"Error: {text}", target="*")
        if reason in (LoginReason.INVALID_NAME, LoginReason.RESERVED):
            return self._numeric("432", nick, f"Erroneous nickname: {text}", target="*")
        return self._numeric("NOTICE", text, target="*")

    # --- lines after the login --------------------------------------------------------------

    def _ask(self, asked: tuple[str, str]) -> None:
        """Remember a question whose answer renders by it (the newest MAX_ASKED). A tuple,
        not a list or a deque(maxlen): a connection keeps it for life, mostly empty, and
        the empty tuple is shared where an empty list is 56 bytes a connection and an
        empty deque 760."""
        self._asked = (*self._asked[1 - MAX_ASKED :], asked)

    def parse(self, line: str) -> ClientEvent | Reply | list[ClientEvent | Reply]:
        if line[:8] == "PRIVMSG ":  # the common case first, kept lean: once per routed message
            target, colon, text = line[8:].partition(" :")
            if (
                colon and text and target and " " not in target and "," not in target
                and "\r" not in line and "\0" not in line and len(line.encode()) <= _FAST_LINE_BYTES
                and (target in KNOWN_DESTINATIONS or valid_destination(target))
            ):  # fmt: skip
                return new_chat((target, text, None, CHAT_TYPE))  # to a channel one is not in: the room's -n may let it in
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
            elif key_of(room) not in self.channels:  # a JOIN of a channel one is in is nothing
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
        self._ask((kind, key_of(room)))
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
        if self._names_end is None or len(self._names_end) >= MAX_ASKED:  # answers that never came (_ask forgot them too)
            self._names_end = {}
        self._names_end[key_of(rooms[-1])] = asked
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
        self._ask(("who", key_of(mask)))
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
        self._ask(("whowas", count))  # how many of the newest to show (0 or less: all)
        return Command("whowas", nick)

    def _names_question(self, kind: str, names: tuple[str, ...], command: str) -> ClientEvent | Reply:
        if not names:
            return Reply(self._numeric("461", command, "Not enough parameters"))
        self._ask((kind, " ".join(names)))
        return Command("who")

    def _ison(self, msg: IrcLine) -> ClientEvent | Reply:
        return self._names_question("ison", tuple(" ".join(msg.params).split()), "ISON")

    def _userhost(self, msg: IrcLine) -> ClientEvent | Reply:
        return self._names_question("userhost", msg.params[:5], "USERHOST")

    def _lusers(self, msg: IrcLine) -> ClientEvent | Reply:
        self._ask(("lusers", ""))
        return Command("who")

    def _list(self, msg: IrcLine) -> ClientEvent | Reply:
        self._ask(("list", ",".join(key_of(room) for room in msg.params[0].split(",")) if msg.params else ""))
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
            if key_of(target) != key_of(self.nick):
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

    # --- messages out: PRIVMSG and NOTICE (the rest the server says: irc_numerics) ---------

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
            for piece in split_to_fit(line.rstrip("\r").replace("\r", " ").replace("\0", "") or " ", room):
                out.append(render(verb, target, piece if piece.strip() else " ", source=sender, tags=tags, text=True))
        return "".join(out)

    def delivery(self, message: Delivery) -> str:
        msg_id, sender, destination, text, timestamp, kind, metadata, _ = message
        verb = "NOTICE" if kind == SUBSCRIPTION_TYPE else "PRIVMSG"
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

    def stored(self, message: MessageJson) -> str:
        timestamp, text = message["timestamp"], message["message"]
        text = text if "server-time" in self.caps else f"[{short_timestamp(timestamp)}] {text}"
        sender = message["sender"] or SERVER_NAME
        notice = message["type"] == MessageType.SUBSCRIPTION or (message.get("metadata") or {}).get("notice")
        return self._message("NOTICE" if notice else "PRIVMSG", source(sender), message["destination"] or self.nick, text, self._tags(message["id"], timestamp))


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
