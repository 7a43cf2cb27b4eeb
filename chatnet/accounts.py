"""Accounts: password hashes, session tokens, the login throttle, and the one question
the chat server asks at every login (`Accounts.login`).

    Hasher     argon2id through argon2-cffi, each hash and check in a thread
    new_token / token_digest    session tokens; only their SHA-256 is ever stored
    Throttle   LOGIN_ATTEMPTS wrong passwords within LOGIN_WINDOW lock for LOGIN_LOCKOUT
    Accounts   the above put together over the store (the counters live there, so
               every API process of a network sees the same ones)

Names are keys lower-cased (`name_key`); an account keeps the spelling its owner chose.
A login the API refuses is an expected outcome, not an error: `Accounts.login` returns
`Granted` or `Refused`, and the route turns a `Refused` into 401 or 429. Passwords and
tokens are never logged and never part of an answer or an error message.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from argon2 import PasswordHasher, Type
from argon2.exceptions import VerificationError

from chatnet.accounts_store import AccountStore
from chatnet.config import Settings
from chatnet.keys import epoch_ms
from chatnet.limits import MAX_PASSWORD_CHARS
from chatnet.protocol import Kind, LoginReason, address_counter, utcnow
from chatnet.store import Store

# Passwords: long enough to be worth hashing, short enough that nobody hashes a novel.
# A login offering a longer one (or a longer token than TOKEN_MAX_CHARS) is simply
# wrong, unhashed, never a malformed request: a caller that took a refused request
# for "no account here" would let a guest in under an account's name.

# argon2id at one of OWASP's recommended settings (Password Storage Cheat Sheet):
# 19 MiB, two passes, one lane. Measured on this project's machine (2-core AMD EPYC,
# argon2-cffi 25.1, 15 runs): one verification takes 17 ms (median; 26 ms the slowest).
# For comparison: 19 MiB x 3 passes 25 ms, 46 MiB x 1 pass 45 ms, 64 MiB x 3 passes
# 132 ms. Each check runs in the default executor, so the API's loop keeps serving; its
# few workers bound the memory at a few times 19 MiB. Raising these is safe: an old
# hash still verifies and is rehashed at its owner's next login.
ARGON2_TIME_COST: Final = 2
ARGON2_MEMORY_KIB: Final = 19 * 1024
ARGON2_PARALLELISM: Final = 1

# Session tokens: 32 random bytes, URL-safe (43 characters).
TOKEN_BYTES: Final = 32
TOKEN_MAX_CHARS: Final = 128
# Names whose password-check turn is remembered at once (see Accounts._turns).
MAX_TURNS: Final = 10_000


def name_key(name: str) -> str:
    """The identity of a name: names are ASCII and case-insensitive."""
    return name.lower()


# --- hashing and tokens ------------------------------------------------------------------


class Hasher:
    """argon2id hashing and verification, each in a thread so the event loop keeps serving."""

    def __init__(
        self, time_cost: int = ARGON2_TIME_COST, memory_kib: int = ARGON2_MEMORY_KIB, parallelism: int = ARGON2_PARALLELISM
    ) -> None:
        self.argon = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID)

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.argon.hash, password)

    async def verify(self, hashed: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self.argon.verify, hashed, password)
        except VerificationError:  # a mismatch; a malformed hash (our bug) propagates
            return False

    def needs_rehash(self, hashed: str) -> bool:
        """The hash was made with other parameters than ours."""
        return self.argon.check_needs_rehash(hashed)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    """What is stored of a token: its SHA-256 (hex). A token is 256 random bits, so no
    slow hash is needed; a stolen database holds nothing that logs anyone in."""
    return hashlib.sha256(token.encode()).hexdigest()


# --- the throttle --------------------------------------------------------------------------


def name_counter(name: str) -> str:
    return f"name:{name_key(name)}"


@dataclass(frozen=True)
class Throttle:
    """`attempts` wrong passwords for one counter (a name, an address) within `window`
    seconds lock it for `lockout` seconds; the lock then ends with a fresh count."""

    attempts: int
    window: float
    lockout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Throttle:
        return cls(settings.login_attempts, settings.login_window, settings.login_lockout)

    def since(self, now: datetime) -> int:
        """The start of the window ending now, in epoch milliseconds (as failures are kept)."""
        return epoch_ms(now - timedelta(seconds=self.window))

    def locks(self, failures: int) -> bool:
        return failures >= self.attempts

    def too_many(self, failures: int) -> bool:
        """More attempts under way than may be checked: refuse without checking (a burst
        of guesses sent at once counts each, before any of them is answered)."""
        return failures > self.attempts


def retry_after(until: Iterable[datetime], now: datetime) -> int | None:
    """Whole seconds until the last of these locks ends (at least 1), or None when none holds."""
    latest = max((u for u in until if u > now), default=None)
    return None if latest is None else max(1, math.ceil((latest - now).total_seconds()))


# --- the outcomes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    name: str  # as its owner spelled it
    kind: Kind


@dataclass(frozen=True)
class Granted:
    """A login that may go ahead; `token` is a new session token when one was asked for."""

    name: str
    kind: Kind
    registered: bool
    token: str | None = field(default=None, repr=False)  # never in a log line


@dataclass(frozen=True)
class Refused:
    reason: LoginReason
    detail: str
    retry_after: int | None = None

    @property
    def status(self) -> int:
        return 429 if self.reason is LoginReason.LOCKED else 401


def locked(name: str, seconds: int) -> Refused:
    return Refused(LoginReason.LOCKED, f"too many failed logins for '{name}' or from this address; try again in {seconds} s", seconds)


# --- accounts over the store ------------------------------------------------------------------


class Accounts:
    """Accounts, logins and session tokens, over the store."""

    def __init__(self, store: Store, throttle: Throttle, session_days: float, hasher: Hasher | None = None) -> None:
        self.store = store
        self.records = AccountStore(store)
        self.throttle = throttle
        self.session = timedelta(days=session_days)
        self.hasher = hasher or Hasher()
        # One password check at a time per name in this process: the lock check, the
        # count and a lock's fresh start then can't interleave, so a burst of guesses
        # gets at most LOGIN_ATTEMPTS verifications. (Across API processes the store's
        # counters still bound it, less tightly.)
        self._turns: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> Accounts:
        return cls(store, Throttle.from_settings(settings), settings.session_days)

    async def create(self, name: str, kind: Kind, password: str | None) -> Account | None:
        """A new account, or None when the name (in any case) is registered already. The
        name counts as used from now on (a bot's account is made at its first login)."""
        hashed = None if password is None else await self.hasher.hash(password)
        if not await self.records.insert_account(name_key(name), name, kind.value, hashed):
            return None
        await self.store.record_names([name])
        return Account(name, kind)

    async def get(self, name: str) -> Account | None:
        doc = await self.records.find_account(name_key(name))
        return None if doc is None else Account(doc["name"], Kind(doc["kind"]))

    async def login(
        self, name: str, source: str, password: str | None = None, token: str | None = None, want_token: bool = False
    ) -> Granted | Refused:
        """The login check: a name nobody registered is a guest's; an account needs its
        password or a live session token of its own. Wrong passwords are counted for the
        name and for the source address (a token can't be guessed, so it is not)."""
        key = name_key(name)
        doc = await self.records.find_account(key)
        if doc is None:
            await self.store.record_names([name])
            return Granted(name, Kind.GUEST, registered=False)
        account = Account(doc["name"], Kind(doc["kind"]))
        if account.kind is Kind.BOT:
            return Refused(LoginReason.RESERVED, f"the name '{account.name}' belongs to a bot")
        if token is None or not await self._token_is_live(key, token):
            if password is None:
                why = "a password is needed" if token is None else "the session token is not valid (expired or revoked); a password is needed"
                refusal: Refused | None = await self._lock_of(account.name, [name_counter(key), address_counter(source)])
                return refusal or Refused(LoginReason.PASSWORD_REQUIRED, f"'{account.name}' is registered: {why}")
            if refusal := await self._check_password(key, account.name, doc["password_hash"], password, source):
                return refusal
        await self.store.record_names([account.name])
        issued = await self._issue_token(key) if want_token else None
        return Granted(account.name, account.kind, registered=True, token=issued)

    async def guest_logins(self, names: list[str]) -> list[str]:
        """The login check of many names without credentials at once (a storm of
        guests): those no account holds, recorded as used, each as given. An account's
        name is left out: its login needs the check of `login`, one by one."""
        keys: dict[str, str] = {}
        for name in names:
            keys.setdefault(name_key(name), name)  # the first spelling, as `record_names` keeps
        held = await self.records.account_keys(list(keys))
        guests = [name for key, name in keys.items() if key not in held]
        await self.store.record_names(guests)
        return guests

    async def change_password(self, name: str, old: str, new: str) -> int | Refused | None:
        """Set a new password, given the old one (wrong ones count against the name):
        how many session tokens were revoked, a refusal, or None without such an account."""
        key = name_key(name)
        doc = await self.records.find_account(key)
        if doc is None:
            return None
        if doc["kind"] == Kind.BOT:
            return Refused(LoginReason.RESERVED, f"the name '{doc['name']}' belongs to a bot; it has no password")
        if refusal := await self._check_password(key, doc["name"], doc["password_hash"], old, None):
            return refusal
        await self.records.set_password_hash(key, await self.hasher.hash(new))
        return await self.records.delete_tokens(key)

    async def delete(self, name: str) -> bool:
        """Remove the account and its session tokens (the name stays used)."""
        return await self.records.delete_account(name_key(name))

    async def revoke(self, name: str, token: str) -> bool:
        """Revoke one session token of the account (a browser's "Leave")."""
        return await self.records.delete_token(token_digest(token), name_key(name))

    # --- the parts ------------------------------------------------------------------------

    async def _token_is_live(self, key: str, token: str) -> bool:
        # Found by its digest: the database compares digests, never the token, so how
        # long a lookup takes tells nothing about the token; the digest found is then
        # compared again in constant time.
        if len(token) > TOKEN_MAX_CHARS:
            return False
        digest = token_digest(token)
        doc = await self.records.find_token(digest)
        return (
            doc is not None
            and hmac.compare_digest(doc["_id"], digest)
            and doc["account"] == key
            and doc["expires_at"] > utcnow()
        )

    async def _issue_token(self, key: str) -> str:
        token = new_token()
        await self.records.insert_token(token_digest(token), key, utcnow() + self.session)
        return token

    async def _lock_of(self, name: str, counters: list[str]) -> Refused | None:
        seconds = retry_after(await self.records.locked_until(counters), utcnow())
        return None if seconds is None else locked(name, seconds)

    async def _check_password(self, key: str, name: str, hashed: str | None, password: str, source: str | None) -> Refused | None:
        """None when `password` is the account's. The attempt is counted before it is
        checked, so guesses sent at once can't outrun the count; a right one takes its
        own count back and clears the name's (not the address's: one account of one's
        own must not reset an address's count between guesses at others)."""
        if len(self._turns) > MAX_TURNS:  # forget the idle ones (nobody holds or awaits them)
            self._turns = {k: lock for k, lock in self._turns.items() if lock.locked() or lock._waiters}
        async with self._turns.setdefault(key, asyncio.Lock()):
            return await self._counted_check(key, name, hashed, password, source)

    async def _counted_check(self, key: str, name: str, hashed: str | None, password: str, source: str | None) -> Refused | None:
        counters = [name_counter(key)] + ([] if source is None else [address_counter(source)])
        if refusal := await self._lock_of(name, counters):
            return refusal
        now = utcnow()
        attempt = await self.records.add_login_failures(counters, epoch_ms(now), now + timedelta(seconds=self.throttle.window))
        counts = await self.records.count_login_failures(counters, self.throttle.since(now))
        if any(self.throttle.too_many(n) for n in counts):
            await self._lock(counters, counts, now)
            return locked(name, max(1, math.ceil(self.throttle.lockout)))
        if hashed is not None and len(password) <= MAX_PASSWORD_CHARS and await self.hasher.verify(hashed, password):
            await self.records.clear_login_failures(counters[0], attempt)
            if self.hasher.needs_rehash(hashed):
                await self.records.set_password_hash(key, await self.hasher.hash(password))
            return None
        await self._lock(counters, counts, now)
        return Refused(LoginReason.WRONG_PASSWORD, f"wrong password for '{name}'")

    async def _lock(self, counters: list[str], counts: list[int], now: datetime) -> None:
        """Lock the counters that reached the limit, and start them afresh."""
        until = now + timedelta(seconds=self.throttle.lockout)
        for counter, count in zip(counters, counts, strict=True):
            if self.throttle.locks(count):
                await self.records.lock_login(counter, until)
