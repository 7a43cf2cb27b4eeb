"""The hand-over of stored mail: at login and on `!check`, oldest first, page by page.

    Welcome, alice! 2 stored messages.      (then the two, oldest first)
    !check     ->  No stored messages.

What a page holds is acknowledged to the API only once the reader has it: acknowledged
by a client with the `ack` feature, or, for any other, every byte acknowledged by the
peer's TCP stack. The hand-over is `MailHandOver`, a mixin of `Router` (router.py): it
uses the router's API client, its directory and the hand-overs under way
(`_handovers`, `_arriving`, `_diverted`, `_awaited`): the mixin declares those,
`Router.__init__` sets them, and this module never imports router.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Final

from chatnet.api_client import ApiClient
from chatnet.delivery import FirstLook, Looked, Priority
from chatnet.directory import Directory
from chatnet.errors import ChatError
from chatnet.limits import MAIL_PAGE
from chatnet.protocol import Event
from chatnet.session import Session

logger = logging.getLogger("chatnet.server")

# How often a hand-over waiting for a client's acknowledgements looks whether the
# client went away meanwhile.
ACK_POLL: Final = 0.1


@dataclass(slots=True)
class Awaited:
    """What a client with the `ack` feature has acknowledged of the page it was sent."""

    acked: set[str] = field(default_factory=set)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class MailHandOver:
    """The hand-over of stored mail of `Router` (at login, on `!check`, and when a reader
    catches up)."""

    # What of Router it uses: Router.__init__ sets it, and Router defines the methods.
    api: ApiClient
    directory: Directory[Session]
    priority: Priority
    first_look: FirstLook[Looked]
    _handovers: dict[Session, bool | None]
    _arriving: dict[Session, bool]
    _diverted: set[Session]
    _awaited: dict[Session, Awaited]

    # Router's methods, declared here so this mixin type-checks: plain methods, not stubs under
    # `if TYPE_CHECKING`, because a class body mypyc compiles holds no statements.
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        raise NotImplementedError

    def _finish_if_done(self, session: Session) -> None:
        raise NotImplementedError

    def _online(self) -> dict[str, list[str]]:
        raise NotImplementedError

    # --- stored mail ---------------------------------------------------------------

    def _catch_up(self, name: str) -> None:
        """Mail was stored for `name` while it was not keeping up: hand it over now if
        it reads again (else when it does, through `writable`)."""
        for target in self.directory.sessions(name.lower()):
            if target in self._arriving:
                self._arriving[target] = True  # its welcome's hand-over takes it (one started now would go first without a welcome)
                continue
            if target.paused:
                self._diverted.add(target)
            else:  # a hand-over under way looks once more when it is done (hand_over_mail)
                self.spawn(self.hand_over_mail(target, quiet=True))

    async def hand_over_mail(
        self,
        session: Session,
        announce: bool = False,
        quiet: bool = False,
        welcome: dict[str, Any] | None = None,
        looked: Awaitable[Looked] | None = None,
    ) -> None:
        """Write pending mail oldest first, page by page; acknowledge each page only
        once it has left for the socket. A drop midway leaves the rest pending.
        `announce`: the welcome line (with `welcome` in its details); `quiet`: say
        nothing when there is nothing; `looked`: the login's first look, taken
        already."""
        if session in self._handovers:
            # The running hand-over looks once more at its end (and answers if asked).
            self._handovers[session] = bool(self._handovers[session]) or not quiet
            return
        self._handovers[session] = None
        try:
            await self._hand_over(session, announce, quiet, welcome or {}, looked)
            while (again := self._handovers[session]) is not None and session.is_open:
                self._handovers[session] = None
                await self._hand_over(session, announce=False, quiet=not again)
        finally:
            del self._handovers[session]
            session.resume_lines()  # in case the welcome never went out
            self._finish_if_done(session)

    async def _hand_over(
        self, session: Session, announce: bool, quiet: bool = False, welcome: dict[str, Any] | None = None, looked_at_login: Awaitable[Looked] | None = None
    ) -> None:
        first = True
        delivered = 0
        while session.is_open:
            try:
                with self.priority:
                    # A login's first look goes with those of the logins around it.
                    looked = None
                    if first and announce:
                        looked = await (looked_at_login or self.first_look.look(session.name))
                    if looked is not None and looked[0] is not None:
                        messages, total = looked[0], looked[1]
                    else:
                        messages, total = await self.api.pending(session.name, MAIL_PAGE)
            except ChatError as exc:
                logger.warning("pending mail for %s unavailable: %s", session.name, exc)
                self._say_mail_unavailable(session, announce and first, welcome or {})
                return
            if first and not (quiet and total == 0):
                self._say_mail_count(session, total, announce, welcome or {})
            if first and announce:
                session.resume_lines()  # what came with the login line is answered after the welcome
            first = False
            if not messages:
                break
            ids = [m["id"] for m in messages]
            waiting = Awaited() if session.unacked is not None else None  # an `ack` reader
            if waiting is not None:
                self._awaited[session] = waiting
            try:
                for message in messages:
                    session.deliver_stored(message)
                done = await self._received(session, ids, waiting)
            finally:
                self._awaited.pop(session, None)
            if done:
                try:
                    with self.priority:
                        await self.api.ack(session.name, done)
                except ChatError as exc:
                    logger.warning("could not acknowledge mail of %s: %s", session.name, exc)
                    return  # it stays pending: the worst case is a repeat, never a loss
                delivered += len(done)
            if len(done) < len(ids) or len(messages) >= total:
                break  # what was not received stays pending, for the next login or !check
        if delivered:
            logger.info("handed %d stored message(s) to %s", delivered, session.name)

    async def _received(self, session: Session, ids: list[str], waiting: Awaited | None) -> list[str]:
        """The ids of a page written to `session` that its reader has received: those it
        acknowledged (the `ack` feature), or else all of them once the peer's TCP stack
        has acknowledged every byte (nothing when the connection breaks first)."""
        if waiting is None:
            return ids if await session.delivered() else []
        await session.drained()
        wanted = set(ids)
        while session.is_open and not session.ended_input and not wanted <= waiting.acked:  # no acks after its EOF
            waiting.arrived.clear()
            with suppress(TimeoutError):  # woken by acks; now and then, to see whether it closed
                await asyncio.wait_for(waiting.arrived.wait(), ACK_POLL)
        return [i for i in ids if i in waiting.acked]

    def _say_mail_count(self, session: Session, total: int, announce: bool, welcome: dict[str, Any]) -> None:
        counted = f"{total} stored message{'s' if total != 1 else ''}"
        if announce:
            text = f"Welcome, {session.name}! {'No stored messages' if total == 0 else counted}."
            session.notice(text, Event.WELCOME, user=session.name, pending=total, **self._welcome_online(session), **welcome)
        elif total == 0:
            session.notice("No stored messages.", Event.CHECK, pending=0)
        else:
            session.notice(f"{counted}:", Event.CHECK, pending=total)

    def _say_mail_unavailable(self, session: Session, announce: bool, welcome: dict[str, Any]) -> None:
        text = "Stored messages are unavailable right now (the message store can't be reached); try !check later."
        if announce:
            details = {**self._welcome_online(session), **welcome}
            session.notice(f"Welcome, {session.name}! {text}", Event.WELCOME, user=session.name, pending=None, **details)
        else:
            session.error(text, Event.CHECK)

    def _welcome_online(self, session: Session) -> dict[str, list[str]]:
        """Who is online, for a welcome that shows it: building the list is O(network), so
        a login storm of readers that never show it would be quadratic."""
        return self._online() if session.follows_network else {}
