"""The directory: who is online, and where.

The router asks it which names are taken here, whose sessions are on this node, and who
is to hear about comings and goings. `LocalDirectory` keeps that in this process. With
several nodes the network's part sits beside it (`chatnet.nodes`: a name claimed
network-wide first, one not found here looked for on the other nodes), since claims
wait for Redis and the routing path reads this directory directly.

Names are kept by their key (lower case: identity is case-insensitive). A name has one
session, or — an account logged in from a terminal and a browser and a phone — a
`Group` of them, which the routing path delivers to as to one session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar


class Member(Protocol):
    """What the directory needs of a session."""

    name: str
    key: str
    kind: str
    group: Any
    paused: bool
    shows_ids: bool
    away: str

    @property
    def follows_network(self) -> bool: ...
    @property
    def echoes(self) -> bool: ...
    def deliver(self, message: Any) -> None: ...


S = TypeVar("S", bound=Member)


class Group(Generic[S]):
    """The sessions of one account on this node, two or more: each gets every message."""

    __slots__ = ("sessions",)

    def __init__(self, sessions: list[S]) -> None:
        self.sessions = sessions

    @property
    def name(self) -> str:
        return self.sessions[0].name

    @property
    def kind(self) -> str:
        return self.sessions[0].kind

    @property
    def paused(self) -> bool:
        """Nobody of the group is keeping up (then the message is stored instead)."""
        return all(session.paused for session in self.sessions)

    @property
    def shows_ids(self) -> bool:
        return any(session.shows_ids for session in self.sessions)

    @property
    def away(self) -> str:
        """The account is away when each of its sessions is."""
        return self.sessions[0].away if all(session.away for session in self.sessions) else ""

    def deliver(self, message: Any) -> None:
        for session in self.sessions:
            session.deliver(message)

    def others(self, session: S) -> Iterator[S]:
        return (other for other in self.sessions if other is not session)


class Directory(Protocol[S]):
    # This node's logged-in names: a session, or a Group. The routing path reads it
    # directly, by the name as written and then by its key.
    local: dict[str, S | Group[S]]

    def admits(self, key: str, shared: bool) -> bool:
        """Whether a session may take the name now (`shared`: an account's or a bot's,
        which several sessions may hold)."""
        ...

    def add(self, session: S) -> bool:
        """Add a logged-in session (`admits` said yes); True when it is the name's first."""
        ...

    def remove(self, session: S) -> bool:
        """Take a session out; True when it was the name's last."""
        ...

    def sessions(self, key: str) -> list[S]:
        ...

    def online(self) -> list[tuple[str, str]]:
        """Every logged-in name with its kind, sorted by key."""
        ...

    def watchers(self) -> list[S]:
        """The local sessions that are told who comes and goes."""
        ...


class LocalDirectory(Generic[S]):
    """One node alone: everything in process."""

    def __init__(self) -> None:
        self.local: dict[str, S | Group[S]] = {}
        self._watchers: dict[int, S] = {}
        # online(), sorted, kept until a name comes or goes: a burst of welcomes that show
        # it sorts once per change, not once per welcome.
        self._online: list[tuple[str, str]] | None = None

    def admits(self, key: str, shared: bool) -> bool:
        present = self.local.get(key)
        return present is None or (shared and present.kind != "guest")

    def add(self, session: S) -> bool:
        present = self.local.get(session.key)
        if present is None:
            self.local[session.key] = session
            self._online = None
        elif isinstance(present, Group):
            present.sessions.append(session)
            session.group = present
        else:
            group = Group([present, session])
            present.group = session.group = group
            self.local[session.key] = group
        if session.follows_network:
            self._watchers[id(session)] = session
        return present is None

    def remove(self, session: S) -> bool:
        self._watchers.pop(id(session), None)
        present = self.local.get(session.key)
        if present is session:
            del self.local[session.key]
            self._online = None
            return True
        if isinstance(present, Group) and session in present.sessions:
            present.sessions.remove(session)
            session.group = None
            if len(present.sessions) == 1:
                last = present.sessions[0]
                last.group = None
                self.local[session.key] = last
        return False

    def sessions(self, key: str) -> list[S]:
        present = self.local.get(key)
        if present is None:
            return []
        return list(present.sessions) if isinstance(present, Group) else [present]

    def online(self) -> list[tuple[str, str]]:
        if self._online is None:
            self._online = [(present.name, present.kind) for _, present in sorted(self.local.items())]
        return list(self._online)

    def watchers(self) -> list[S]:
        return list(self._watchers.values())
