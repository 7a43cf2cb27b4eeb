"""The client of the message API that every other process uses.

    async with ApiClient.from_settings(settings) as api:
        await api.store_mail([message])
        messages, total = await api.pending("bob", limit=100)
        await api.ack("bob", [m.id for m in messages])

One aiohttp session per client, reused for every request. The API being unreachable,
slow or failing (5xx) raises `StoreUnavailable`; a refused request (4xx: the caller's
fault) raises `ApiRejected` with the API's reason.

A login the API turns down is an answer, not an error: `check_login` returns a
`LoginCheck` whose `reason` is None when the login may go ahead, and otherwise one of
`chatnet.accounts.LoginReason` (`password_required`, `wrong_password`, `locked` with
`retry_after`, `reserved`); `change_password` answers a `PasswordChange` the same way.

    check = await api.check_login("alice", "203.0.113.9", password=typed)
    if check.reason is None:
        welcome(check.name)              # as registered, or the guest's own spelling
    elif check.reason == LoginReason.LOCKED:
        refuse(f"try again in {check.retry_after} s")
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from chatnet.config import Settings
from chatnet.errors import ApiRejected, StoreUnavailable
from chatnet.protocol import Message, MessageLike, dumps, format_datetime, message_json


def _detail(body: str) -> str:
    """The API's reason for a refusal, short enough for a log line."""
    try:
        detail = json.loads(body).get("detail", body)
    except (ValueError, AttributeError):
        detail = body
    if isinstance(detail, list):  # validation errors: "field: reason; ..."
        detail = "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in detail if isinstance(e, dict))
    return str(detail)[:500]


def _refusal(status: int, text: str) -> dict[str, Any] | None:
    """A login refusal (401 or 429 with a `reason`), as opposed to any other 4xx: a
    wrong bearer token is a 401 without one."""
    if status not in (401, 429):
        return None
    try:
        answer = json.loads(text)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) and isinstance(answer.get("reason"), str) else None


@dataclass(frozen=True)
class Account:
    name: str  # as its owner spelled it
    kind: str  # "person" or "bot"


@dataclass(frozen=True)
class LoginCheck:
    """The API's answer to a login: `reason` is None when it may go ahead (then `name`
    is as registered, or as given for a guest, and `token` a new session token when
    one was asked for); otherwise why not."""

    name: str
    kind: str = "guest"  # "guest", "person" or "bot"
    registered: bool = False
    token: str | None = field(default=None, repr=False)
    reason: str | None = None
    retry_after: int | None = None  # with reason "locked": seconds to wait
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class PasswordChange:
    """`reason` None: changed, and `revoked` session tokens signed out; otherwise why not
    (`wrong_password`, `locked`, `reserved`)."""

    revoked: int = 0
    reason: str | None = None
    retry_after: int | None = None
    detail: str = ""

    @property
    def changed(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class MailReceipt:
    """What POST /mail answered: the ids stored (now or before), and the destinations
    nobody has ever logged in as."""

    ids: list[str]
    unknown: list[str]


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings, timeout: float = 5.0) -> ApiClient:
        """The API at API_HOST:API_PORT, with API_TOKEN when one is set."""
        token = settings.api_token.get_secret_value() if settings.api_token else None
        return cls(settings.api_url, token, timeout)

    async def __aenter__(self) -> ApiClient:
        self._open()
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self.headers, timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None, encoded: str | None = None
    ) -> dict[str, Any]:
        """The API's answer (a JSON object). `encoded`: a body the caller already turned
        into JSON (see `archive_encoded`)."""
        return self._answer(*await self._exchange(method, path, body, params, encoded))

    async def _exchange(
        self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None, encoded: str | None = None
    ) -> tuple[int, str]:
        """The status and text of the API's answer; unreachable or 5xx: StoreUnavailable."""
        session = self._open()
        data = encoded if body is None else dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with session.request(method, self.base_url + path, data=data, params=params, headers=headers) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"message API unreachable: {type(exc).__name__} {exc}".strip()) from None
        if status >= 500:
            raise StoreUnavailable(f"message API answered {status}: {_detail(text)}")
        return status, text

    @staticmethod
    def _answer(status: int, text: str) -> dict[str, Any]:
        """A JSON object answered; a 4xx raises ApiRejected."""
        if status >= 400:
            raise ApiRejected(status, _detail(text))
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise StoreUnavailable(f"message API answered {status} with a body that is not a JSON object")
        return answer

    # --- accounts ---------------------------------------------------------------------

    def _account_path(self, name: str) -> str:
        return f"/accounts/{quote(name, safe='')}"

    async def create_account(self, name: str, password: str | None = None, kind: str = "person") -> Account:
        """Register the name (a person's with a password of 8-128 characters; a bot's
        without). Taken in any case: ApiRejected with status 409; a bad name or
        password: 422."""
        body: dict[str, Any] = {"name": name, "kind": kind}
        if password is not None:
            body["password"] = password
        answer = await self._request("POST", "/accounts", body)
        return Account(answer["name"], answer["kind"])

    async def account_kinds(self) -> dict[str, str]:
        """Every account's key (the name in lower case) and kind."""
        kinds: dict[str, str] = (await self._request("GET", "/accounts"))["kinds"]
        return kinds

    async def account(self, name: str) -> Account | None:
        """The account holding the name (in any case), or None."""
        status, text = await self._exchange("GET", self._account_path(name))
        if status == 404:
            return None
        answer = self._answer(status, text)
        return Account(answer["name"], answer["kind"])

    async def check_login(
        self, name: str, source: str, password: str | None = None, token: str | None = None, want_token: bool = False
    ) -> LoginCheck:
        """Ask whether `name` may log in from the address `source`, with a password or a
        session token of the account (neither for a guest). Refusals come back as the
        LoginCheck's `reason`; only a malformed request raises ApiRejected."""
        body: dict[str, Any] = {"source": source, "want_token": want_token}
        if password is not None:
            body["password"] = password
        if token is not None:
            body["token"] = token
        status, text = await self._exchange("POST", f"{self._account_path(name)}/login", body)
        if (refused := _refusal(status, text)) is not None:
            return LoginCheck(name, reason=refused["reason"], retry_after=refused.get("retry_after"), detail=str(refused.get("detail", "")))
        answer = self._answer(status, text)
        return LoginCheck(answer["name"], answer["kind"], bool(answer["registered"]), answer.get("token"))

    async def change_password(self, name: str, old: str, new: str) -> PasswordChange:
        """Change the account's password (every session token of it is revoked). No such
        account: ApiRejected with status 404; a bad new password: 422."""
        status, text = await self._exchange("PUT", f"{self._account_path(name)}/password", {"old": old, "new": new})
        if (refused := _refusal(status, text)) is not None:
            return PasswordChange(reason=refused["reason"], retry_after=refused.get("retry_after"), detail=str(refused.get("detail", "")))
        return PasswordChange(revoked=int(self._answer(status, text)["revoked"]))

    async def delete_account(self, name: str) -> bool:
        """Remove the account and its session tokens; False when there was none."""
        return bool((await self._request("DELETE", self._account_path(name)))["deleted"])

    async def revoke_token(self, name: str, token: str) -> bool:
        """Revoke one session token of the account; False when it was not live."""
        path = f"{self._account_path(name)}/tokens/{quote(token, safe='')}"
        return bool((await self._request("DELETE", path))["revoked"])

    # --- health ----------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return await self._request("GET", "/health")

    async def health_detailed(self) -> dict[str, Any]:
        return await self._request("GET", "/health/detailed")

    # --- mail --------------------------------------------------------------------------

    async def store_mail(
        self, messages: Iterable[MessageLike], ttl_seconds: int | None = None, keep_latest: int | None = None
    ) -> list[str]:
        """Store offline mail (at most MAX_BATCH per call); returns the stored ids."""
        return (await self.store_mail_receipt(messages, ttl_seconds, keep_latest)).ids

    async def store_mail_receipt(
        self, messages: Iterable[MessageLike], ttl_seconds: int | None = None, keep_latest: int | None = None
    ) -> MailReceipt:
        """Store offline mail, as `store_mail`; also says which destinations nobody has
        ever logged in as (for "Note: nobody named '<name>' has logged in here yet.")."""
        body = {"messages": [message_json(m) for m in messages], "ttl_seconds": ttl_seconds, "keep_latest": keep_latest}
        answer = await self._request("POST", "/mail", body)
        return MailReceipt(ids=list(answer["ids"]), unknown=list(answer.get("unknown", [])))

    async def pending(self, user: str, limit: int | None = None) -> tuple[list[Message], int]:
        """The user's pending mail, oldest first (at most `limit`, up to MAIL_PAGE; None:
        the API's default page), and how much is pending in all."""
        params = {} if limit is None else {"limit": limit}
        page = await self._request("GET", f"/mail/{quote(user, safe='')}", params=params)
        return [Message.model_validate(m) for m in page["messages"]], page["total"]

    async def pending_many(self, users: Iterable[str], limit: int) -> dict[str, tuple[list[Message] | None, int]]:
        """Many users' pending mail in one request (a storm of logins): by name lower-cased,
        for those with any, the total and all of it oldest first — or None instead of
        the messages when they did not fit within `limit` in all (then ask `pending`).
        A user not in the answer has nothing pending."""
        answer = await self._request("POST", "/mail/pending", {"users": list(users), "limit": limit})
        return {
            entry["user"].lower(): (None if entry["messages"] is None else [Message.model_validate(m) for m in entry["messages"]], entry["total"])
            for entry in answer["pending"]
        }

    async def ack(self, user: str, ids: list[str]) -> int:
        """Acknowledge mail: it leaves the mailbox for the history; returns how many were pending."""
        return int((await self._request("POST", f"/mail/{quote(user, safe='')}/ack", {"ids": list(ids)}))["acknowledged"])

    # --- history -------------------------------------------------------------------------

    async def archive_encoded(self, messages_json: str) -> int:
        """Archive delivered live chat: `messages_json` is a JSON array of at most
        MAX_BATCH messages, encoded by the caller (the chat server builds it in slices
        between routing work)."""
        return int((await self._request("POST", "/history", encoded=f'{{"messages":{messages_json}}}'))["stored"])

    async def history(
        self, user: str, peer: str, limit: int | None = None, before: str | datetime | None = None
    ) -> tuple[list[Message], str | None]:
        """Messages between two users, newest first (at most `limit`; None: the API's
        default page), and the `before` of the next page."""
        params: dict[str, Any] = {} if limit is None else {"limit": limit}
        if before is not None:
            params["before"] = format_datetime(before) if isinstance(before, datetime) else before
        page = await self._request("GET", f"/history/{quote(user, safe='')}/{quote(peer, safe='')}", params=params)
        return [Message.model_validate(m) for m in page["messages"]], page["next_before"]

    # --- subscriptions -----------------------------------------------------------------------

    async def subscribers(self, service: str) -> list[str]:
        users: list[str] = (await self._request("GET", f"/subscriptions/{quote(service, safe='')}"))["users"]
        return users

    async def subscribe(self, service: str, user: str) -> bool:
        """True when the subscription is new."""
        return bool((await self._request("PUT", f"/subscriptions/{quote(service, safe='')}/{quote(user, safe='')}"))["created"])

    async def unsubscribe(self, service: str, user: str) -> bool:
        """True when there was a subscription to remove."""
        return bool((await self._request("DELETE", f"/subscriptions/{quote(service, safe='')}/{quote(user, safe='')}"))["removed"])

    # --- bot state ---------------------------------------------------------------------------

    def _state_path(self, owner: str, key: str) -> str:
        return f"/state/{quote(owner, safe='')}/{quote(key, safe='')}"

    async def get_state(self, owner: str, key: str) -> Any:
        return (await self._request("GET", self._state_path(owner, key)))["value"]

    async def put_state(self, owner: str, key: str, value: Any) -> None:
        await self._request("PUT", self._state_path(owner, key), {"value": value})
