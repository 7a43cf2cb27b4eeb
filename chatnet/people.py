"""People: the commands about a name and its account once it is logged in — `!nick`
(a guest takes another name), `!away`, `!whois`, `!whowas` (who left lately, kept
here), `!register` (a guest's name becomes an account) and `!password`.

    !nick bobby            ->  You are bobby now (were bob).
    !whois alice           ->  alice is online (an account), away: lunch
    !whowas carol          ->  carol left at 2026-12-01T10:05:00Z

Depends on `Identity` (names and passwords, through the message API), the directory
(who is online here) and, with other nodes, on `Nodes` (names claimed network-wide).
What is the router's comes as callables: `online` (every name online), `announce`
(presence told to the watchers) and `renamed` (the rooms follow a new name). The
router builds it, merges `commands` into its own and says when a session is gone
(`left`); this never imports the router.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from chatnet.delivery import Priority
from chatnet.directory import Directory
from chatnet.errors import ChatError, ClusterUnavailable, LoginFailed, ProtocolError
from chatnet.identity import BOT, GUEST, Identity
from chatnet.limits import MAX_AWAY_CHARS, MAX_WHOWAS
from chatnet.protocol import Clock, Event, Login, LoginReason, check_name, short_timestamp
from chatnet.session import Session

if TYPE_CHECKING:
    from chatnet.nodes import Nodes

logger = logging.getLogger("chatnet.server")

# A name's last sessions remembered for !whowas.
MAX_WHOWAS_PER_NAME: Final = 5


class People:
    """The people part of the router: names, accounts and who left lately."""

    def __init__(
        self,
        identity: Identity,
        directory: Directory[Session],
        clock: Clock,
        priority: Priority,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        online: Callable[[], list[tuple[str, str]]],
        announce: Callable[[Session, str], None],
        renamed: Callable[[Session, str], Coroutine[Any, Any, None]],
        nodes: Nodes | None = None,
    ) -> None:
        self.identity = identity
        self.directory = directory
        self.clock = clock
        self.priority = priority
        self.spawn = spawn
        self.online = online  # every name online (network-wide with other nodes) and its kind
        self.announce = announce  # "online" / "offline" to the watchers here (no other nodes)
        self.renamed = renamed  # the rooms follow a renamed guest
        self.nodes = nodes  # the other nodes, when there are: names are claimed across them
        # Who left lately (!whowas), by key, the newest last: (name, ident, when).
        self._gone: OrderedDict[str, list[tuple[str, tuple[str, str], str]]] = OrderedDict()
        self.commands: dict[str, Callable[[Session, str], None]] = {
            "away": self._cmd_away,
            "whois": self._cmd_whois,
            "whowas": self._cmd_whowas,
            "nick": self._cmd_nick,
            "register": self._cmd_register,
            "password": self._cmd_password,
        }

    def left(self, session: Session) -> None:
        """A logged-in session is gone: remembered for !whowas."""
        seen = self._gone.pop(session.key, [])
        seen.append((session.name, session.ident, self.clock.tick()))
        self._gone[session.key] = seen[-MAX_WHOWAS_PER_NAME:]
        if len(self._gone) > MAX_WHOWAS:
            self._gone.popitem(last=False)

    # --- who is who ------------------------------------------------------------------

    def _cmd_whois(self, session: Session, args: str) -> None:
        name = check_name(args.strip(), "name")
        here = self.directory.sessions(name.lower())
        online = dict(self.online())
        known = next((n for n in online if n.lower() == name.lower()), None)
        if known is None:
            session.notice(f"{name} is not online.", Event.WHOIS, user=name, online=False)
            return
        ident = next((each.ident for each in here if each.ident[0]), ("", ""))
        away = here[0].away if here else ""
        kind = online[known]
        operator = any(each.operator for each in here)  # known of the sessions here only
        said = f"{known} is online ({'a bot' if kind == BOT else 'an account' if kind != GUEST else 'a guest'}{', a network operator' if operator else ''})"
        said += f", away: {away}" if away else "."
        session.notice(said, Event.WHOIS, user=known, online=True, kind=kind, ident=list(ident), away=away, operator=operator)

    def _cmd_whowas(self, session: Session, args: str) -> None:
        name = check_name(args.strip(), "name")
        seen = list(reversed(self._gone.get(name.lower(), [])))
        listed: list[dict[str, Any]] = [{"name": shown, "ident": list(ident), "left": when} for shown, ident, when in seen]
        said = "; ".join(f"{shown} left at {short_timestamp(when)}" for shown, _, when in seen) or f"Nobody named {name} left here lately."
        session.notice(said, Event.WHOWAS, user=name, seen=listed)

    def _cmd_away(self, session: Session, args: str) -> None:
        session.away = text = args.strip()[:MAX_AWAY_CHARS]
        said = f"You are marked away: {text}" if text else "You are back: no longer marked away."
        session.notice(said, Event.AWAY, user=session.name, away=text)

    # --- a guest's new name --------------------------------------------------------------

    def _cmd_nick(self, session: Session, args: str) -> None:
        new = check_name(args.strip(), "name")
        if new == session.name:
            return
        if session.kind != GUEST:
            session.error(f"'{session.name}' is an account: its name stays. Log in under another to be someone else.", Event.RENAMED, user=new)
            return
        self.spawn(session.held_until(self._take_name(session, new)))  # what it says next, it says under the new name

    async def _take_name(self, session: Session, new: str) -> None:
        """A guest takes a free name that is no account; its rooms follow it."""
        try:
            with self.priority:
                admission = await self.identity.check(Login(new), session.address, asks_password=False)
        except LoginFailed as exc:
            if session.is_open:
                session.error(str(exc), Event.RENAMED, user=new, reason=exc.reason)
            return
        if not session.is_open:
            return
        if admission.kind != GUEST:  # an account's name, for all a guest can tell
            session.error(f"'{new}' is an account's name.", Event.RENAMED, user=new, reason=LoginReason.PASSWORD_REQUIRED)
            return
        if new.lower() != session.key and not self.directory.admits(new.lower(), shared=False):
            session.error(f"The name '{new}' is already online; choose another.", Event.RENAMED, user=new, reason=LoginReason.NAME_TAKEN)
            return
        if self.nodes is not None:
            try:
                claimed = await self.nodes.claim(new.lower(), admission.name, GUEST, shared=False)
            except ClusterUnavailable:
                claimed = False
            if not claimed:
                session.error(f"The name '{new}' is already online, or can't be claimed now; choose another.", Event.RENAMED, user=new, reason=LoginReason.NAME_TAKEN)
                return
        old = session.name
        if self.directory.remove(session):
            if self.nodes is not None:
                self.nodes.release(session.key)
            else:
                self.announce(session, "offline")
        session.renamed(admission.name)
        self.directory.add(session)
        if self.nodes is None:
            self.announce(session, "online")
        logger.info("%s is %s now", old, session.name)
        session.notice(f"You are {session.name} now (were {old}).", Event.RENAMED, old=old, user=session.name)
        await self.renamed(session, old)

    # --- accounts: registering, the password ---------------------------------------------

    def _cmd_register(self, session: Session, args: str) -> None:
        if session.kind != GUEST:
            raise ProtocolError(f"'{session.name}' is an account already; !password changes its password.")
        if not args:
            raise ProtocolError("Write !register <password> (8 to 128 characters).")
        self._answer(session, self._register(session, args))

    def _answer(self, session: Session, work: Coroutine[Any, Any, None]) -> None:
        """A command's work off the line; for a dialect whose answers come in order,
        the lines after it wait for it."""
        self.spawn(session.held_until(work) if session.dialect.in_order else work)

    async def _register(self, session: Session, password: str) -> None:
        try:
            with self.priority:
                name = await self.identity.register(session.name, password)
        except ChatError as exc:
            if session.is_open:
                session.error(str(exc))
            return
        if session.is_open:
            session.registered()
            if self.nodes is not None:
                await self.nodes.reclaim(session.key, session.name, "person")  # one account's name now, for any node
            session.notice(f"Account '{name}' registered.", Event.REGISTERED, user=name)

    def _cmd_password(self, session: Session, args: str) -> None:
        old, _, new = args.partition(" ")
        if session.kind == GUEST:
            raise ProtocolError("Guests have no password; !register <password> makes your name an account.")
        if session.kind == BOT or not old or not new.strip():
            raise ProtocolError("Write !password <old> <new>.")
        self._answer(session, self._change_password(session, old, new.strip()))

    async def _change_password(self, session: Session, old: str, new: str) -> None:
        try:
            with self.priority:
                await self.identity.change_password(session.name, old, new)
        except ChatError as exc:
            if session.is_open:
                session.error(str(exc))
            return
        signed_out = "The password of this account was changed; log in again."
        for other in self.directory.sessions(session.key):
            if other is not session:
                other.close(signed_out)
        if self.nodes is not None:
            self.nodes.tell_user(session.key, {"do": "close", "text": signed_out})
        if session.is_open:
            session.notice("Password changed; your other sessions were signed out.", Event.PASSWORD_CHANGED)
