"""Accounts, session tokens and the login throttle's counters in the store: what
`chatnet.accounts.Accounts` keeps. The collections and their indexes are the store's
(`Store.ensure_indexes`); this is the part of it that only accounts use."""

from __future__ import annotations

from datetime import datetime

from pymongo.errors import DuplicateKeyError

from chatnet.keys import EPOCH, MILLISECOND, epoch_ms
from chatnet.protocol import new_id, utcnow
from chatnet.store import Store
from chatnet.store_documents import Document


class AccountStore:
    """Accounts, session tokens (their digests) and failed-login counters and locks."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- accounts and session tokens ---------------------------------------------------------

    async def insert_account(self, key: str, name: str, kind: str, password_hash: str | None) -> bool:
        """False when an account holds the key already."""
        doc = {"_id": key, "name": name, "kind": kind, "password_hash": password_hash, "created_at": utcnow()}
        try:
            await self.store.accounts.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def find_account(self, key: str) -> Document | None:
        return await self.store.accounts.find_one({"_id": key})

    async def account_keys(self, keys: list[str]) -> set[str]:
        """Which of these keys an account holds (one query for a batch of logins)."""
        return {doc["_id"] for doc in await self.store.accounts.find({"_id": {"$in": keys}}, {"_id": 1}).to_list(None)}

    async def account_kinds(self) -> dict[str, str]:
        """Every account's key and kind (person or bot)."""
        return {doc["_id"]: doc["kind"] async for doc in self.store.accounts.find({}, {"kind": 1})}

    async def set_password_hash(self, key: str, password_hash: str) -> None:
        await self.store.accounts.update_one({"_id": key}, {"$set": {"password_hash": password_hash}})

    async def delete_account(self, key: str) -> bool:
        """Remove the account and its session tokens; False when there was none."""
        result = await self.store.accounts.delete_one({"_id": key})
        await self.delete_tokens(key)
        return result.deleted_count > 0

    async def insert_token(self, digest: str, key: str, expires_at: datetime) -> None:
        await self.store.tokens.insert_one({"_id": digest, "account": key, "created_at": utcnow(), "expires_at": expires_at})

    async def find_token(self, digest: str) -> Document | None:
        return await self.store.tokens.find_one({"_id": digest})

    async def delete_token(self, digest: str, key: str) -> bool:
        result = await self.store.tokens.delete_one({"_id": digest, "account": key})
        return result.deleted_count > 0

    async def delete_tokens(self, key: str) -> int:
        """Revoke every session token of the account; how many there were."""
        result = await self.store.tokens.delete_many({"account": key})
        return result.deleted_count

    # --- the login throttle ----------------------------------------------------------------------
    # Times are kept as epoch milliseconds, compared exactly (the embedded store compares
    # datetimes to the second, see `epoch_ms`, and reads one that `$set` rewrote back as
    # text); `expires_at` is only for the TTL index and the sweep.

    async def locked_until(self, counters: list[str]) -> list[datetime]:
        """Until when each of these counters is locked (those locked at all)."""
        docs = await self.store.login_locks.find({"_id": {"$in": counters}}).to_list(None)
        return [EPOCH + doc["until"] * MILLISECOND for doc in docs]

    async def lock_login(self, counter: str, until: datetime) -> None:
        """Lock the counter until then; its count starts afresh."""
        await self.store.login_locks.update_one({"_id": counter}, {"$set": {"until": epoch_ms(until), "expires_at": until}}, upsert=True)
        await self.store.login_failures.delete_many({"counter": counter})

    async def add_login_failures(self, counters: list[str], at_ms: int, expires_at: datetime) -> list[str]:
        """Count an attempt against each counter; the ids of what was written."""
        docs: list[Document] = [{"_id": new_id(), "counter": c, "at": at_ms, "expires_at": expires_at} for c in counters]
        await self.store.login_failures.insert_many(docs)
        return [doc["_id"] for doc in docs]

    async def count_login_failures(self, counters: list[str], since_ms: int) -> list[int]:
        """Each counter's attempts since then."""
        return [await self.store.count(self.store.login_failures, {"counter": c, "at": {"$gt": since_ms}}) for c in counters]

    async def clear_login_failures(self, counter: str, attempt: list[str]) -> None:
        """A right password: the counter starts afresh, and the attempt's own counts go."""
        await self.store.login_failures.delete_many({"$or": [{"counter": counter}, {"_id": {"$in": attempt}}]})

    async def sweep_expired_logins(self) -> int:
        """Delete expired tokens, failures and locks (the TTL index does this on a real MongoDB)."""
        query = {"expires_at": {"$lte": utcnow()}}
        removed = 0
        for collection in (self.store.tokens, self.store.login_failures, self.store.login_locks):
            removed += (await collection.delete_many(query)).deleted_count
        return removed
