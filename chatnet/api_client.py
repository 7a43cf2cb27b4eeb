"""The client of the message API that every other process uses.

    async with ApiClient.from_settings(settings) as api:
        await api.store_mail([message])
        messages, total = await api.pending("bob", limit=100)
        await api.ack("bob", [m["id"] for m in messages])

One pool of keep-alive connections per client (`chatnet.http_client`), reused for
every request. The API being unreachable,
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

Rooms (see `chatnet.api_rooms`): a room's refusal raises `ApiRejected` with `status`
403 or 404 and `reason` one of `chatnet.rooms_store.RoomReason`: `private` (not
invited), `not_member`, `not_owner`, `no_room`. A RoomInfo is the dict
`{"name", "owner", "topic", "topic_by", "private", "members"}`; messages come as dicts
in the JSON shape (`id, sender, destination, message, timestamp, type, metadata`);
a `cursor` / `next` is opaque text, handed back as it came.

    joined = await api.join_room("#hiking", "alice")     # {"room": RoomInfo, "created": bool}
    page = await api.room_history("#hiking", "alice", 50)
    older = await api.room_history("#hiking", "alice", 50, page["next"])
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote, urlencode

from chatnet.config import Settings
from chatnet.errors import ApiRejected, StoreUnavailable
from chatnet.http_client import HttpClient
from chatnet.protocol import MessageJson, MessageLike, dumps, format_datetime, message_json


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


def _reason(text: str) -> tuple[str | None, int | None]:
    """A refusal's `reason` and `retry_after`, where the answer has them."""
    try:
        answer = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(answer, dict):
        return None, None
    reason, retry_after = answer.get("reason"), answer.get("retry_after")
    return (reason if isinstance(reason, str) else None), (retry_after if type(retry_after) is int else None)


def _room(room: str) -> str:
    """A room in a path: its '#' must be %23 (or it would start the URL's fragment)."""
    return f"/rooms/{quote(room, safe='')}"


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


# A chat with a bot waits for a model: the most seconds between two events of a streamed
# answer, or for a whole one (the bot's own timeout per model call is 30 s by default).
CHAT_SECONDS: Final = 120.0


_JSON_BODY: Final = {"Content-Type": "application/json"}


def _unreachable(exc: OSError) -> StoreUnavailable:
    return StoreUnavailable(f"message API unreachable: {type(exc).__name__} {exc}".strip())


def _decoded(status: int, text: str, shape: type, what: str) -> Any:
    """The answer's JSON, when it has `shape`; a 4xx raises ApiRejected (with the answer's
    `reason` and `retry_after` when it gives them), another body StoreUnavailable."""
    if status >= 400:
        reason, retry_after = _reason(text)
        raise ApiRejected(status, _detail(text), reason, retry_after)
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if not isinstance(answer, shape):
        raise StoreUnavailable(f"message API answered {status} with a body that is not {what}")
    return answer


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout  # seconds for a whole exchange
        self._http: HttpClient | None = None

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

    def _open(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient(self.base_url, self.headers)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

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
        data = encoded if body is None else dumps(body)
        target = f"{path}?{urlencode(params)}" if params else path
        try:
            if data is None:
                status, raw = await self._open().request(method, target, timeout=self.timeout)
            else:
                status, raw = await self._open().request(method, target, data.encode(), _JSON_BODY, self.timeout)
        except OSError as exc:  # TimeoutError and chatnet.http_client.HttpError among them
            raise _unreachable(exc) from None
        text = raw.decode(errors="replace")
        if status >= 500:
            raise StoreUnavailable(f"message API answered {status}: {_detail(text)}")
        return status, text

    @staticmethod
    def _answer(status: int, text: str) -> dict[str, Any]:
        """A JSON object answered; a 4xx raises ApiRejected (with the answer's `reason`
        and `retry_after` when it gives them)."""
        answer = _decoded(status, text, dict, "a JSON object")
        assert isinstance(answer, dict)
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

    async def guest_logins(self, names: Iterable[str]) -> dict[str, bool]:
        """A window of logins without credentials asked at once: by key (lower case),
        True for each name no account holds (a guest's, now recorded as used). A name
        left out is an account's: its login is checked alone (`check_login`)."""
        answer = await self._request("POST", "/logins/guests", {"names": list(names)})
        return {name.lower(): True for name in answer["guests"]}

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

    async def pending(self, user: str, limit: int | None = None) -> tuple[list[MessageJson], int]:
        """The user's pending mail, oldest first (at most `limit`, up to MAIL_PAGE; None:
        the API's default page), and how much is pending in all."""
        params = {} if limit is None else {"limit": limit}
        page = await self._request("GET", f"/mail/{quote(user, safe='')}", params=params)
        return page["messages"], page["total"]

    async def pending_many(self, users: Iterable[str], limit: int) -> dict[str, tuple[list[MessageJson] | None, int]]:
        """Many users' pending mail in one request (a storm of logins): by name lower-cased,
        for those with any, the total and all of it oldest first — or None instead of
        the messages when they did not fit within `limit` in all (then ask `pending`).
        A user not in the answer has nothing pending."""
        answer = await self._request("POST", "/mail/pending", {"users": list(users), "limit": limit})
        return {entry["user"].lower(): (entry["messages"], entry["total"]) for entry in answer["pending"]}

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
    ) -> tuple[list[MessageJson], str | None]:
        """Messages between two users, newest first (at most `limit`; None: the API's
        default page), and the `before` of the next page."""
        params: dict[str, Any] = {} if limit is None else {"limit": limit}
        if before is not None:
            params["before"] = format_datetime(before) if isinstance(before, datetime) else before
        page = await self._request("GET", f"/history/{quote(user, safe='')}/{quote(peer, safe='')}", params=params)
        return page["messages"], page["next_before"]

    async def history_page(self, user: str, peer: str, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """A page of the messages between two users: `{"messages": [oldest first],
        "next": cursor or None}`, as `room_history` answers; `next` (given back as
        `cursor`) pages further back without gaps or repeats, also where many
        messages share a millisecond. None: the API's default page (50)."""
        params: dict[str, Any] = {} if limit is None else {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = await self._request("GET", f"/history/{quote(user, safe='')}/{quote(peer, safe='')}", params=params)
        return {"messages": page["messages"][::-1], "next": page.get("next")}

    # --- rooms ------------------------------------------------------------------------------
    # Room names are '#' and a name, in any case; users likewise. See the module docstring
    # for the shapes and the refusals.

    async def join_room(self, room: str, user: str, key: str | None = None) -> dict[str, Any]:
        """The user joins the room, made (owned by the user) if missing:
        `{"room": RoomInfo, "created": bool}`. Refusals (ApiRejected): reason "private",
        "banned", "bad_key" (`key` missing or wrong), "full". Joining again changes nothing."""
        return await self._request("PUT", f"{_room(room)}/members/{quote(user, safe='')}", {"key": key} if key is not None else None)

    async def leave_room(self, room: str, user: str) -> bool:
        """False when the user was not a member. An owner may leave; the room stays."""
        return bool((await self._request("DELETE", f"{_room(room)}/members/{quote(user, safe='')}"))["left"])

    async def room(self, room: str) -> dict[str, Any] | None:
        """RoomInfo plus `"member_names"` (as each spelled it joining), or None when
        there is no such room."""
        status, text = await self._exchange("GET", _room(room))
        if status == 404:
            return None
        return self._answer(status, text)

    async def rooms(self, user: str) -> list[dict[str, Any]]:
        """RoomInfo of every public room and of the private rooms the user is in, by name."""
        rooms: list[dict[str, Any]] = (await self._request("GET", "/rooms", params={"user": user}))["rooms"]
        return rooms

    async def set_room(self, room: str, by: str, *, topic: str | None = None, private: bool | None = None, **settings: Any) -> dict[str, Any]:
        """Change the topic (any member, or under topic_lock an operator; "" clears it),
        make the room private or public, and/or change its `settings` (an operator:
        moderated, no_external, secret, topic_lock, key, limit, ban, unban, op, deop,
        voice, devoice: see `chatnet.api_rooms.RoomChange`); None leaves it. The
        RoomInfo as it is now. Refusals: reason "no_room", "not_member",
        "not_owner", "not_in_room", "bad_mode"."""
        body: dict[str, Any] = {"by": by, **{name: value for name, value in settings.items() if value is not None}}
        if topic is not None:
            body["topic"] = topic
        if private is not None:
            body["private"] = private
        return await self._request("PATCH", _room(room), body)

    async def invite(self, room: str, by: str, user: str) -> dict[str, Any]:
        """Record an invitation (into a private room it lets the user join; telling the
        invitee is the caller's part): `{"room": RoomInfo, "user": as given, "created":
        bool (a new invitation), "member": bool (a member already)}`. Any member may
        invite to a public room, only an operator to a private one."""
        return await self._request("POST", f"{_room(room)}/invitations", {"by": by, "user": user})

    async def kick(self, room: str, by: str, user: str) -> bool:
        """An operator removes the user's membership and invitation; False when there was
        neither. Refusals: reason "no_room", "not_member", "not_owner"."""
        return bool((await self._request("POST", f"{_room(room)}/kicks", {"by": by, "user": user}))["kicked"])

    async def room_logins(self, users: Iterable[str], catchup: int, defaults: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """One request for a batch of logins (at most MAX_ROOM_LOGINS users): by user
        name lower-cased, every user asked, the rooms each is a member of (by name) as
        `{"room": RoomInfo, "unread": int, "messages": [up to `catchup` newest after the
        read marker, oldest first], "marker": cursor or None}`. A user never seen here
        before joins `defaults` first (made if missing, owned by "server"), once ever.
        `unread` leaves out the user's own messages and stops counting at MAX_UNREAD."""
        body = {"users": list(users), "catchup": catchup, "defaults": list(defaults)}
        logins: dict[str, list[dict[str, Any]]] = (await self._request("POST", "/rooms/logins", body))["logins"]
        return logins

    async def room_history(self, room: str, user: str, limit: int, cursor: str | None = None) -> dict[str, Any]:
        """A page of the room's history for a member: `{"messages": [oldest first],
        "next": cursor or None}`; `next` pages further back. Not a member: ApiRejected,
        reason "not_member"; no such room: "no_room"."""
        params: dict[str, Any] = {"user": user, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        return await self._request("GET", f"{_room(room)}/history", params=params)

    # --- read markers and conversations ---------------------------------------------------------

    async def advance_markers(self, markers: Iterable[tuple[str, str, str, str | datetime]]) -> int:
        """Move read markers forward, a batch of (user, conversation, message id,
        timestamp) — the conversation a "#room" or the other person's name (at most
        MAX_MARKERS). A marker never moves back; one in a room the user is not in is
        ignored. How many moved."""
        body = {
            "markers": [
                {"user": user, "conversation": conversation, "id": message_id, "timestamp": format_datetime(stamp) if isinstance(stamp, datetime) else stamp}
                for user, conversation, message_id, stamp in markers
            ]
        }
        return int((await self._request("POST", "/markers", body))["advanced"])

    async def conversations(self, user: str) -> list[dict[str, Any]]:
        """The user's conversations, the most recent first: `{"kind": "dm" | "room",
        "name", "last": message dict or None, "unread": int}`. Answered for whoever is
        named: a caller serving one person passes the one logged in, never a name it was sent."""
        found: list[dict[str, Any]] = (await self._request("GET", f"/conversations/{quote(user, safe='')}"))["conversations"]
        return found

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

    # --- bots (see `chatnet.api_bots`) -------------------------------------------------------
    # A definition is a dict in the API's shape (`id, name, system, personality, model,
    # base_url, has_api_key, respond_to, max_messages, max_characters, max_days,
    # rate_limit, timeout, rooms, owner, created_at, updated_at, version`); what is given
    # is the same minus the answered fields, plus the write-only `api_key`.

    def _bot_path(self, name: str) -> str:
        return f"/bots/{quote(name, safe='')}"

    async def _request_list(self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The API's answer when it is a JSON array; a 4xx raises ApiRejected."""
        status, text = await self._exchange(method, path, body, params)
        answer = _decoded(status, text, list, "a JSON array")
        assert isinstance(answer, list)
        return answer

    async def bot_definitions(self) -> list[dict[str, Any]]:
        """The bot host's feed: every definition, each with its `api_key` (str or None)."""
        return await self._request_list("GET", "/bot-host/definitions")

    async def report_bot_status(self, statuses: list[dict[str, Any]]) -> None:
        """The bot host's report on every bot it runs: `{"name", "online", "model_ok",
        "last_error", "last_error_at", "requests", "errors", "p50_ms", "queued"}` each."""
        status, text = await self._exchange("PUT", "/bot-host/status", list(statuses))
        if status >= 400:
            self._answer(status, text)  # raises

    async def bots(self) -> list[dict[str, Any]]:
        """Every bot definition, by name (without api_key)."""
        return await self._request_list("GET", "/bots")

    async def bot(self, name: str) -> dict[str, Any] | None:
        """The bot's definition, or None when there is no such bot."""
        status, text = await self._exchange("GET", self._bot_path(name))
        return None if status == 404 else self._answer(status, text)

    async def put_bots(self, definitions: list[dict[str, Any]], replace: bool = True) -> list[dict[str, Any]]:
        """Create the bots, or replace the definitions of their names whole (`replace`
        false: an existing one is refused instead): `[{"name", "id", "created"}]`. All or
        nothing; ApiRejected 409 (a name held by a person or a service; `detail` says
        which) or 422 (a bad field, with the reason)."""
        return await self._request_list("PUT", "/bots", list(definitions), {"replace": "true" if replace else "false"})

    async def patch_bot(self, name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Change some fields of a definition (`api_key` "" or None removes the key): the
        definition as it is now. No such bot: ApiRejected 404."""
        return await self._request("PATCH", self._bot_path(name), dict(fields))

    async def delete_bot(self, name: str) -> bool:
        """Remove the bot (its definition, account and threads); False when there was none."""
        status, text = await self._exchange("DELETE", self._bot_path(name))
        return False if status == 404 else bool(self._answer(status, text)["deleted"])

    async def bot_status(self, name: str) -> dict[str, Any] | None:
        """The bot host's last figures on the bot (`online` false once they are 5 s old),
        or None when there is no such bot."""
        status, text = await self._exchange("GET", f"{self._bot_path(name)}/status")
        return None if status == 404 else self._answer(status, text)

    async def bot_chat_simple(self, name: str, user: str, message: str, timeout: float = CHAT_SECONDS) -> dict[str, Any]:
        """A chat turn in the user's thread with the bot, answered whole:
        `{"content", "bot", "user"}`. Refusals raise ApiRejected (404 no such bot, 403
        refused user, 429 rate limited); 502 (the model failed) and 503 (no bot host)
        raise StoreUnavailable."""
        body = dumps({"user": user, "message": message}).encode()
        try:
            status, raw = await self._open().request("POST", f"{self._bot_path(name)}/chat/simple", body, _JSON_BODY, timeout)
        except OSError as exc:
            raise _unreachable(exc) from None
        text = raw.decode(errors="replace")
        if status >= 500:
            raise StoreUnavailable(f"message API answered {status}: {_detail(text)}")
        return self._answer(status, text)

    async def bot_chat(self, name: str, user: str, message: str, timeout: float = CHAT_SECONDS) -> AsyncIterator[dict[str, Any]]:
        """A chat turn in the user's thread with the bot, streamed: each event's data as
        it comes (`{"content", "done"}`, or `{"error", "done": true}`), up to `[DONE]`.
        `timeout`: the most seconds between two events. Refusals as `bot_chat_simple`."""
        body = dumps({"user": user, "message": message}).encode()
        try:
            async with self._open().stream("POST", f"{self._bot_path(name)}/chat", body, _JSON_BODY, timeout) as (status, lines):
                if status >= 400:
                    text = b"".join([line async for line in lines]).decode(errors="replace")
                    if status >= 500:
                        raise StoreUnavailable(f"message API answered {status}: {_detail(text)}")
                    self._answer(status, text)  # raises
                async for raw in lines:
                    line = raw.decode().strip()
                    if not line.startswith("data:"):
                        continue  # the blank line between events, a comment
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        return
                    yield json.loads(data)
        except OSError as exc:
            raise _unreachable(exc) from None
