"""Dialects: the only places that know a wire format.

A dialect is pure (no I/O, no asyncio): it parses a line into an event and renders what
the server says into a line. A `Session` holds one and never formats a line itself;
the router never learns which one a session speaks.

    text   people at a terminal or `nc`: `bob: hi`, `!who`          (dialects/text.py)
    json   programs (web adapter, bots): one Message-shaped object per line  (json.py)
    irc    IRC clients and bots, on a port of their own: one `IrcDialect` per
           connection, as IRC negotiates (capabilities, registration)  (irc.py)

Text and JSON share one port: the prompt is text, and the first line picks the dialect
(`pick_text_or_json`).
"""

# ruff: noqa: E402 - the dialects are imported after the build is put on the path

from __future__ import annotations

from typing import Any, Protocol

from chatnet import native

# Before the dialects are imported: text and base are compiled with the hot path when
# the build is fresh (chatnet/native.py), and found through this package's own path.
native.use_in(__path__, "dialects")

from chatnet.dialects.irc import IrcDialect
from chatnet.dialects.json import JSON
from chatnet.dialects.text import TEXT
from chatnet.protocol import Authenticate, ClientEvent, Delivery, Event, Login, MessageJson, Quit, Reply


class Dialect(Protocol):
    # Read-only: a class constant for text and JSON, what IRC negotiated for IRC.
    @property
    def name(self) -> str:
        """The wire format, and its variant: a room line is rendered once per name."""
        ...

    @property
    def shows_ids(self) -> bool:
        """The reader is shown message ids (so the router makes one per live message)."""
        ...

    @property
    def wants_presence(self) -> bool:
        """The reader is told who comes and goes."""
        ...

    @property
    def follows_network(self) -> bool:
        """The reader follows who is online network-wide: its welcome lists everyone and
        it is told each coming and going. Both cost O(network) per login, so only readers
        that show them get them (a room's members are `wants_presence`)."""
        ...

    @property
    def asks_password(self) -> bool:
        """An account's password is asked for after the name (rather than sent with the login)."""
        ...

    @property
    def echoes(self) -> bool:
        """The reader is sent copies of what its account sends from its other sessions."""
        ...

    @property
    def echoes_own(self) -> bool:
        """...and of what it sends itself (IRC's echo-message)."""
        ...

    @property
    def pings(self) -> bool:
        """A silent client is pinged and dropped when it does not answer (`ping`)."""
        ...

    @property
    def in_order(self) -> bool:
        """Each answer comes before anything the client says next (IRC clients and
        irctest read them so): its lines wait until the login has settled (rooms,
        welcome, mail, catch-up), and after a command or a message for the mailbox
        until that is answered. (Not for `ack` readers: their acks are lines the
        hand-over waits for.)"""
        ...

    @property
    def rejoins(self) -> bool:
        """The reader is told of each room it is in at login (IRC: a window per channel)."""
        ...

    def greeting(self) -> str:
        """What a new connection is sent before its first line."""
        ...

    def parse_login(self, line: str) -> Login | Reply | Authenticate | Quit:
        """A line before the login: the login, or (IRC, whose registration takes several
        lines) an answer, credentials to check first, or a quit. Raises ProtocolError
        with the reason."""
        ...

    def parse(self, line: str) -> ClientEvent | Reply | list[ClientEvent | Reply]:
        """A line after login (IRC: `JOIN #a,#b` is several); raises ProtocolError with the reason."""
        ...

    def ident(self) -> tuple[str, str]:
        """The username and real name the client gave (IRC's USER), or empty."""
        ...

    def authenticated(self, name: str) -> str:
        """Credentials checked before the login (`Authenticate`) were good."""
        ...

    def logged_in(self, name: str, account: bool) -> str:
        """What a logged-in connection is sent before anything else (IRC's 001-005)."""
        ...

    def delivery(self, message: Delivery) -> str:
        """A live message for this reader ("" when it is not for this reader: a
        partial chunk of a streamed reply to a reader that only sees the whole)."""
        ...

    def replayed(self, message: Delivery) -> str:
        """A room's message from before (catch-up at login, !history)."""
        ...

    def stored(self, message: MessageJson) -> str:
        """A message handed over from the reader's stored mail."""
        ...

    def notice(self, text: str, event: Event, details: dict[str, Any], recipient: str, timestamp: str) -> str:
        """Something the server says."""
        ...

    def error(self, text: str, event: Event, details: dict[str, Any], recipient: str, timestamp: str) -> str:
        """A refusal or failure the server reports."""
        ...

    def password_prompt(self) -> str:
        """Asks for the password of the name just given (when `asks_password`)."""
        ...

    def ping(self, recipient: str, timestamp: str) -> str:
        """Asks a silent client to answer (when `pings`)."""
        ...

    def loggable(self, line: str, secret: bool) -> str:
        """The line as the debug log may show it: passwords and tokens hidden
        (`secret`: the whole line is one)."""
        ...

    def login_failed(self, text: str, details: dict[str, Any], timestamp: str) -> str:
        """A refused login (`details`: reason, retry_after), and whatever invites the
        next attempt."""
        ...


def pick_text_or_json(line: str) -> Dialect:
    """The first line picks the mode: a JSON object means a program is talking."""
    return JSON if line.lstrip().startswith("{") else TEXT


__all__ = ["JSON", "TEXT", "Dialect", "IrcDialect", "pick_text_or_json"]
