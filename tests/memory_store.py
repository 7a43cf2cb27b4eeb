"""Subscriptions and bot state in memory, with the ApiClient's method names and
answers: what the bots' unit tests give them instead of the message API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class MemoryStore:
    subs: dict[str, set[str]] = field(default_factory=dict)
    state: dict[tuple[str, str], Any] = field(default_factory=dict)

    async def subscribers(self, service: str) -> list[str]:
        return sorted(self.subs.get(service, set()))

    async def subscribe(self, service: str, user: str) -> bool:
        """True when the subscription is new."""
        users = self.subs.setdefault(service, set())
        created = user not in users
        users.add(user)
        return created

    async def unsubscribe(self, service: str, user: str) -> bool:
        """True when there was a subscription to remove."""
        users = self.subs.get(service, set())
        removed = user in users
        users.discard(user)
        return removed

    async def get_state(self, owner: str, key: str) -> Any:
        return self.state.get((owner, key))

    async def put_state(self, owner: str, key: str, value: Any) -> None:
        self.state[(owner, key)] = value
