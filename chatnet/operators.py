"""Network operators: `!oper` (the API token as the password), `!wallops` to every
operator and +w session of the network, and one's own user modes (`!mode <you>`).

    !oper admin <API token>   ->  You are a network operator now (as admin).
    !mode bob +w              ->  Your modes: +w
    !wallops restart at noon  ->  Wallops from alice: restart at noon   (to operators and +w)

Depends on `Identity` (which checks the password and counts the wrong ones) and, with
other nodes, on `Nodes` (wallops told to each name online elsewhere). The router builds
it, merges `commands` into its own, hands it the user-mode half of `!mode` and the
wallops another node tells, and says when a session is gone; this never imports the
router.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from chatnet.errors import LoginFailed, ProtocolError
from chatnet.identity import Identity
from chatnet.limits import MAX_NAME_CHARS
from chatnet.protocol import Event, OperReason, check_message
from chatnet.session import Session

if TYPE_CHECKING:
    from chatnet.nodes import Nodes

logger = logging.getLogger("chatnet.server")

# User modes a session may set itself with `!mode <you>` (+o comes from !oper alone).
USER_MODES: Final = frozenset("ow")


class Operators:
    """The operator part of the router: who is one here, and who hears wallops."""

    def __init__(self, identity: Identity, nodes: Nodes | None = None) -> None:
        self.identity = identity
        self.nodes = nodes  # the other nodes, when there are: wallops reach their names too
        # The sessions here that hear !wallops: operators, and whoever set +w.
        self._wallops: set[Session] = set()
        self.commands: dict[str, Callable[[Session, str], None]] = {
            "oper": self._cmd_oper,
            "wallops": self._cmd_wallops,
        }

    def left(self, session: Session) -> None:
        """The session is gone."""
        self._wallops.discard(session)

    def wallops_here(self, sessions: list[Session], text: str, details: dict[str, Any]) -> None:
        """Wallops another node told a name's sessions here: for those that hear them."""
        self._tell(sessions, text, {"user": str(details.get("user", "")), "message": str(details.get("message", ""))})

    def _tell(self, sessions: list[Session], said: str, details: dict[str, Any]) -> None:
        for listener in sessions:
            if listener in self._wallops:
                listener.notice(said, Event.WALLOPS, **details)

    # --- commands -------------------------------------------------------------------

    def _cmd_oper(self, session: Session, args: str) -> None:
        """`!oper <name> <password>`: a network operator, if the password is the API
        token. The name is only recorded (the log, WHOIS); the password is never logged."""
        name, _, password = args.partition(" ")
        if not name or not password:
            raise ProtocolError("Write !oper <name> <password>.")
        name = name[:MAX_NAME_CHARS]
        try:
            self.identity.oper(session.key, session.address, password)
        except LoginFailed as exc:
            if exc.reason != OperReason.NO_OPERATORS:
                logger.warning("%s: operator password refused (as %r: %s)", session.who, name, exc.reason)
            session.error(str(exc), Event.OPER, reason=exc.reason, **({"retry_after": exc.retry_after} if exc.retry_after else {}))
            return
        if not session.operator:
            logger.info("%s is a network operator now (as %r)", session.who, name)
        session.operator = name
        self._wallops.add(session)
        session.notice(f"You are a network operator now (as {name}).", Event.OPER, user=session.name, name=name)

    def _cmd_wallops(self, session: Session, args: str) -> None:
        """`!wallops <text>`: from an operator to every operator and +w session of the network."""
        if not session.operator:
            session.error("Only network operators may send !wallops.", Event.WALLOPS, reason=OperReason.NOT_OPERATOR)
            return
        text = check_message(args.strip())
        said, details = f"Wallops from {session.name}: {text}", {"user": session.name, "message": text}
        self._tell(list(self._wallops), said, details)
        if self.nodes is not None:
            # nodes.py reaches a name (or a room), not every node: each name online is told
            # on the nodes that hold it, whose listeners among its sessions show it. O(names
            # online) for an operator's rare command, never on the chat path.
            told = {"do": "wallops", "text": said, "details": details}
            for name, _ in self.nodes.online():
                self.nodes.tell_user(name.lower(), told)

    def user_mode(self, session: Session, target: str, changes: str) -> None:
        """`!mode <you> [+w|-w|-o]` (the router's `!mode` without a room): shows or
        changes one's own user modes."""
        if target.lower() != session.key:
            raise ProtocolError("Only your own user modes can be shown or changed: !mode <your name> [+w|-w|-o].")
        changes = changes.strip()
        if not changes:
            session.notice(f"Your modes: {self._user_modes(session)}", Event.USER_MODE, user=session.name, modes=self._user_modes(session), changes=None)
            return
        unknown = set(changes) - USER_MODES - set("+-i")  # +i: IRC's invisible, which everyone is here
        if unknown:
            raise ProtocolError(f"Unknown user mode {''.join(sorted(unknown))!r}: +w hears !wallops, -o stops being an operator.")
        done: list[str] = []
        adding = True
        for char in changes:
            if char in "+-":
                adding = char == "+"
            elif char == "w" and adding != session.hears_wallops:
                session.hears_wallops = adding
                done.append(("+" if adding else "-") + char)
            elif char == "o" and not adding and session.operator:  # +o is !oper's alone (RFC 2812: ignored)
                logger.info("%s is no network operator any more", session.who)
                session.operator = ""
                done.append("-o")
        if session.operator or session.hears_wallops:
            self._wallops.add(session)
        else:
            self._wallops.discard(session)
        modes = self._user_modes(session)
        session.notice(f"Your modes: {modes}", Event.USER_MODE, user=session.name, modes=modes, changes=done)

    @staticmethod
    def _user_modes(session: Session) -> str:
        return "+" + ("o" if session.operator else "") + ("w" if session.hears_wallops else "")
