"""Who is who: the chat server's side of accounts.

The message API keeps the accounts (argon2id hashes, session tokens, counters of wrong
passwords); `Identity` asks it the one question of every login — may this name log in
with these credentials from this address? — and turns the answer into an `Admission`
or a `LoginFailed` that says why, in the words users read. It also answers `!register`
and `!password`. It knows nothing of sessions' wire formats nor of who is online: the
router asks, and admits.

    guest name nobody registered  -> Admission(kind="guest")        (GUESTS=true)
    an account's name              -> its password (or a session token), or refused
    a bot's name                   -> only with the service token (API_TOKEN)
    !oper (IRC's OPER)             -> a network operator, with the API token as password

While the API can't be asked (down, or too busy to answer in time), a name that is an
account is refused ("can't be checked right now"); a name known not to be one may still
log in as a guest, as before accounts. Which names are accounts is loaded from the API
when the server starts (`load`) and learned from every answer; until it is loaded,
nobody is let in unchecked.
"""

from __future__ import annotations

import asyncio
import logging
import time

# hmac.compare_digest's own fallback, the constant-time comparison in C: hmac itself
# would bring OpenSSL's digests into the chat server (≈ 0.7 MB of its memory) for it.
from _operator import _compare_digest as compare_digest
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from chatnet.api_client import ApiClient
from chatnet.config import Settings
from chatnet.errors import ApiRejected, ChatError, LoginFailed, StoreUnavailable
from chatnet.limits import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS
from chatnet.protocol import SERVER_NAME, Kind, Login, LoginReason, OperReason, address_counter

logger = logging.getLogger("chatnet.server")

# How long to wait before asking the API again for the account names.
LOAD_RETRY: Final = 1.0
# Per-address login buckets kept at most; full (idle) ones are forgotten first.
MAX_ADDRESSES: Final = 10_000
GUEST: Final = Kind.GUEST
PERSON: Final = Kind.PERSON
BOT: Final = Kind.BOT


@dataclass(frozen=True, slots=True)
class Admission:
    name: str  # as shown: the account's own spelling, or the guest's
    kind: str  # GUEST, PERSON or BOT
    token: str | None = None  # a new session token, when the login asked for one


class AskPassword(Exception):
    """The name is an account's and the dialect asks for passwords line by line."""


class LoginRate:
    """At most `rate` logins a second from one address, `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)

    def wait(self, address: str) -> float:
        """0 when a login from `address` may go ahead now (and counts it); else how long
        until one may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, then = self._buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1:
            self._buckets[address] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[address] = (tokens - 1, now)
        if len(self._buckets) > MAX_ADDRESSES:
            self._buckets = {a: b for a, b in self._buckets.items() if b[0] + (now - b[1]) * self.rate < self.burst}
        return 0.0


class Lockout:
    """Wrong tries of a secret the chat server checks itself (the operator password):
    `attempts` within `window` seconds for one counter (a name, an address) lock it for
    `lockout` seconds, the rule the message API applies to accounts' passwords
    (LOGIN_ATTEMPTS, LOGIN_WINDOW, LOGIN_LOCKOUT). Counted in this process: the API's
    counters are its accounts', and it has no way to count another secret's failures."""

    def __init__(self, attempts: int, window: float, lockout: float) -> None:
        self.attempts = attempts
        self.window = window
        self.lockout = lockout
        self._failures: dict[str, deque[float]] = {}  # counter -> when each wrong try came, in the window
        self._until: dict[str, float] = {}  # counter -> when its lock ends

    def locked(self, counters: list[str]) -> int | None:
        """Whole seconds until the last lock on these counters ends, or None."""
        now = time.monotonic()
        until = max((self._until.get(c, 0.0) for c in counters), default=0.0)
        return _seconds(until - now) if until > now else None

    def failed(self, counters: list[str]) -> None:
        """A wrong try: counted for each counter; those that reach `attempts` lock, afresh."""
        now = time.monotonic()
        for counter in counters:
            tries = self._failures.setdefault(counter, deque())
            tries.append(now)
            while tries and tries[0] <= now - self.window:
                tries.popleft()
            if len(tries) >= self.attempts:
                self._until[counter] = now + self.lockout
                del self._failures[counter]
        if len(self._failures) + len(self._until) > MAX_ADDRESSES:  # forget what no longer counts
            self._failures = {c: t for c, t in self._failures.items() if t and t[-1] > now - self.window}
            self._until = {c: u for c, u in self._until.items() if u > now}

    def cleared(self, counter: str) -> None:
        self._failures.pop(counter, None)


def password_problem(password: str) -> str | None:
    """Why a new password won't do, or None."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        return f"A password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters."
    return None


class Identity:
    def __init__(self, settings: Settings, api: ApiClient, look_guest: Callable[[str], Awaitable[bool]] | None = None) -> None:
        self.settings = settings
        self.api = api
        # Asks, with the other logins of the moment, whether a name without credentials
        # is a guest's (`chatnet.delivery.FirstLook` over `ApiClient.guest_logins`): a
        # storm of guests costs the API one request per window, not one per login.
        self.look_guest = look_guest
        self.rate = LoginRate(settings.login_rate, max(1.0, settings.login_rate * 5))
        # Names known to be accounts (key -> kind), loaded at start and learned from the
        # API's answers: what is refused while the API can't be asked.
        self.known: dict[str, str] = {}
        self.loaded = False  # `known` holds every account (else no guest goes unchecked)
        token = settings.api_token.get_secret_value() if settings.api_token else ""
        self._service_token = token.encode()
        self.opers = Lockout(settings.login_attempts, settings.login_window, settings.login_lockout)

    def is_bot(self, name: str) -> bool:
        """The name is a bot's account (as far as this server knows)."""
        return self.known.get(name.lower()) == BOT

    # --- logins --------------------------------------------------------------------

    def relayed(self, login: Login) -> bool:
        """A relay (the web adapter) vouches for the user's address with the service token."""
        given = (login.relay_token or "").encode()
        return bool(login.address) and bool(self._service_token) and compare_digest(given, self._service_token)

    def screen(self, login: Login, address: str) -> None:
        """What is refused before the API is asked (raises LoginFailed)."""
        name = login.user
        if name.lower() == SERVER_NAME:
            raise LoginFailed(f"The name '{name}' is reserved; choose another.", LoginReason.RESERVED)
        wait = self.rate.wait(address)
        if wait:
            raise LoginFailed(f"Too many logins from your address; try again in {_seconds(wait)} s.", LoginReason.LOCKED, _seconds(wait))

    async def check(self, login: Login, address: str, asks_password: bool) -> Admission:
        """The API's verdict on a login: an Admission, or LoginFailed / AskPassword."""
        name, key = login.user, login.user.lower()
        if login.service_token is not None:
            return await self._service(login)
        try:
            if await self._guest_at_once(login):
                return self._guest(name)
            answer = await self.api.check_login(
                name, address, password=login.password, token=login.token, want_token=login.want_token
            )
        except StoreUnavailable as exc:
            if key in self.known or not self.loaded:
                logger.warning("login of %s can't be checked: %s", name, exc)
                raise LoginFailed(
                    f"Accounts can't be checked right now; try '{name}' again shortly.", LoginReason.UNAVAILABLE
                ) from None
            logger.info("login of %s not checked (%s): a guest, as the name is no account", name, exc)
            return self._guest(name)  # as before accounts: live chat goes on while the store is away
        except ApiRejected as exc:  # a request of ours it can't read: never a reason to let anyone in
            logger.error("message API refused the login check of %s: %s", name, exc)
            raise LoginFailed(f"Accounts can't be checked right now; try '{name}' again shortly.", LoginReason.UNAVAILABLE) from None
        if answer.reason is not None:
            raise self._refusal(name, answer.reason, answer.retry_after, login, asks_password)
        if answer.kind == GUEST:
            return self._guest(name)
        self.known[key] = answer.kind
        return Admission(answer.name, answer.kind, answer.token)

    async def _guest_at_once(self, login: Login) -> bool:
        """True when the window's question found the name a guest's. False when the
        login is not one to ask so (credentials, a name known to be an account's), when
        the name is an account's, or when the API could not read the window's request:
        then the login is checked alone, so nobody else's name costs it anything."""
        if self.look_guest is None or login.password is not None or login.token is not None or login.want_token or login.user.lower() in self.known:
            return False
        try:
            return await self.look_guest(login.user)
        except ApiRejected as exc:
            logger.error("message API refused a window of guest logins: %s; checking %s alone", exc, login.user)
            return False

    async def load(self) -> None:
        """Learn which names are accounts, retrying until the API answers."""
        while True:
            try:
                kinds = await self.api.account_kinds()
            except (StoreUnavailable, ApiRejected) as exc:
                logger.warning("accounts not loaded yet (%s); retrying", exc)
                await asyncio.sleep(LOAD_RETRY)
                continue
            self.known.update(kinds)
            self.loaded = True
            logger.info("%d account name(s) known", len(kinds))
            return

    def _guest(self, name: str) -> Admission:
        if not self.settings.guests:
            raise LoginFailed(
                f"Only accounts may log in here, and '{name}' is none; ask an administrator for one.",
                LoginReason.GUESTS_NOT_ALLOWED,
            )
        return Admission(name, GUEST)

    def _refusal(self, name: str, reason: str, retry_after: int | None, login: Login, asks_password: bool) -> Exception:
        if reason == LoginReason.PASSWORD_REQUIRED and asks_password and login.password is None:
            self.known[name.lower()] = PERSON
            return AskPassword()
        if reason == LoginReason.PASSWORD_REQUIRED:
            self.known[name.lower()] = PERSON
            return LoginFailed(f"The name '{name}' is an account's; log in with its password.", reason)
        if reason == LoginReason.WRONG_PASSWORD:
            return LoginFailed(f"Wrong password for '{name}'.", reason)
        if reason == LoginReason.LOCKED:
            wait = retry_after or int(self.settings.login_lockout)
            return LoginFailed(f"Too many failed logins for '{name}'; try again in {wait} s.", reason, wait)
        if reason == LoginReason.RESERVED:
            self.known[name.lower()] = BOT
            return LoginFailed(f"The name '{name}' belongs to a bot; choose another.", reason)
        logger.error("message API refused the login of %s for a reason we don't know: %s", name, reason)
        return LoginFailed(f"Accounts can't be checked right now; try '{name}' again shortly.", LoginReason.UNAVAILABLE)

    async def _service(self, login: Login) -> Admission:
        """A bot with the service token: its name becomes a bot account (reserved)."""
        name = login.user
        given = (login.service_token or "").encode()
        if not self._service_token or not compare_digest(given, self._service_token):
            raise LoginFailed(f"Wrong service token for '{name}'.", LoginReason.WRONG_PASSWORD)
        self.known[name.lower()] = BOT
        try:
            await self.api.create_account(name, None, BOT)
        except ApiRejected as exc:
            if exc.status != 409:  # 409: the bot's account exists already
                logger.error("could not reserve the bot name %s: %s", name, exc)
        except StoreUnavailable as exc:
            logger.warning("could not reserve the bot name %s yet: %s", name, exc)
        return Admission(name, BOT)

    def oper(self, key: str, address: str, password: str) -> None:
        """`!oper <name> <password>`: the API token is the operator password. Wrong ones
        count against the session's name and its address (`Lockout`); raises
        LoginFailed with an OperReason."""
        if not self._service_token:
            raise LoginFailed("This network has no operators (no API token is set).", OperReason.NO_OPERATORS)
        counters = [f"name:{key}", address_counter(address)]
        if (wait := self.opers.locked(counters)) is not None:
            raise LoginFailed(f"Too many wrong operator passwords; try again in {wait} s.", OperReason.LOCKED, wait)
        if not compare_digest(password.encode(errors="replace"), self._service_token):
            self.opers.failed(counters)
            raise LoginFailed("Wrong operator password.", OperReason.WRONG_PASSWORD)
        self.opers.cleared(counters[0])  # the name's count, not the address's (as the API clears a login's)

    # --- commands -------------------------------------------------------------------------

    async def register(self, name: str, password: str) -> str:
        """`!register <password>`: the answer to show; raises ChatError with the reason."""
        if self.settings.registration == "closed":
            raise ChatError("Registration is closed here; an administrator creates accounts.")
        problem = password_problem(password)
        if problem:
            raise ChatError(problem)
        try:
            created = await self.api.create_account(name, password, PERSON)
        except ApiRejected as exc:
            if exc.status == 409:
                raise ChatError(f"The name '{name}' is registered already.") from None
            raise ChatError(f"That did not work: {exc.detail}") from None
        except StoreUnavailable:
            raise ChatError("Accounts can't be reached right now; try !register again later.") from None
        self.known[name.lower()] = PERSON
        return created.name

    async def change_password(self, name: str, old: str, new: str) -> None:
        """`!password <old> <new>` (the API revokes the account's session tokens)."""
        problem = password_problem(new)
        if problem:
            raise ChatError(problem)
        try:
            change = await self.api.change_password(name, old, new)
        except ApiRejected as exc:
            raise ChatError(f"That did not work: {exc.detail}") from None
        except StoreUnavailable:
            raise ChatError("Accounts can't be reached right now; try !password again later.") from None
        if change.reason == LoginReason.LOCKED:
            raise ChatError(f"Too many failed logins for '{name}'; try again in {change.retry_after} s.")
        if change.reason is not None:
            raise ChatError(f"Wrong password for '{name}'; it was not changed.")


def _seconds(value: float) -> int:
    return max(1, int(value + 0.999))
