"""The client of the message API that every other process uses.

    async with ApiClient.from_settings(settings) as api:
        await api.store_mail([message])
        messages, total = await api.pending("bob", limit=100)
        await api.ack("bob", [m.id for m in messages])

One aiohttp session per client, reused for every request. The API being unreachable,
slow or failing (5xx) raises `StoreUnavailable`; a refused request (4xx: the caller's
fault) raises `ApiRejected` with the API's reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
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
        if status >= 400:
            raise ApiRejected(status, _detail(text))
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise StoreUnavailable(f"message API answered {status} with a body that is not a JSON object")
        return answer

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
        body = {"messages": [message_json(m) for m in messages], "ttl_seconds": ttl_seconds, "keep_latest": keep_latest}
        ids: list[str] = (await self._request("POST", "/mail", body))["ids"]
        return ids

    async def pending(self, user: str, limit: int | None = None) -> tuple[list[Message], int]:
        """The user's pending mail, oldest first (at most `limit`, up to MAIL_PAGE; None:
        the API's default page), and how much is pending in all."""
        params = {} if limit is None else {"limit": limit}
        page = await self._request("GET", f"/mail/{quote(user, safe='')}", params=params)
        return [Message.model_validate(m) for m in page["messages"]], page["total"]

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
