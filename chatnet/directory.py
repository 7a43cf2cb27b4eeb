"""The directory: who is online, and where.

The router asks it which names are taken, whose session is on this node, and who is
to hear about comings and goings. `LocalDirectory` keeps all of that in this process
(one node alone); a cluster puts an implementation over Redis behind the same interface,
where `claim` is network-wide and a name not found locally may live on another node.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class Member(Protocol):
    """What the directory needs of a session."""

    @property
    def wants_presence(self) -> bool: ...


S = TypeVar("S", bound=Member)


class Directory(Protocol[S]):
    # The logged-in sessions of this node by name: the routing path reads it directly.
    local: dict[str, S]

    def claim(self, name: str, session: S) -> bool:
        """Take `name` for `session`; False when someone else has it."""
        ...

    def release(self, name: str, session: S) -> bool:
        """Give `name` back, if `session` still holds it; True when it did."""
        ...

    def online(self) -> list[str]:
        """Every logged-in name, sorted."""
        ...

    def watchers(self) -> list[S]:
        """The local sessions that are told who comes and goes."""
        ...


class LocalDirectory(Generic[S]):
    """One node alone: everything in process."""

    def __init__(self) -> None:
        self.local: dict[str, S] = {}
        self._watchers: dict[str, S] = {}

    def claim(self, name: str, session: S) -> bool:
        if name in self.local:
            return False
        self.local[name] = session
        if session.wants_presence:
            self._watchers[name] = session
        return True

    def release(self, name: str, session: S) -> bool:
        if self.local.get(name) is not session:
            return False
        del self.local[name]
        self._watchers.pop(name, None)
        return True

    def online(self) -> list[str]:
        return sorted(self.local)

    def watchers(self) -> list[S]:
        return list(self._watchers.values())
