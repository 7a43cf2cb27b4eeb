"""Offline mail over HTTP: store it (`POST /mail`), hand it over (`GET /mail/{user}`,
and `POST /mail/pending` for a storm of logins), and take what was acknowledged out of
the mailbox (`POST /mail/{user}/ack`) into the history. The bundles a hand-over served
are kept for a while (`ServedMail`), so the acknowledgement that follows needn't read
them again. `chatnet.api` builds the app around these routes and holds that helper in
`app.state`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from chatnet.api_params import MessageId, PathName, StoreDep
from chatnet.limits import MAIL_PAGE, MAX_ACK_IDS, MAX_BATCH, MAX_KEEP_LATEST, MAX_MAIL_TTL_SECONDS, MAX_PENDING_USERS
from chatnet.message import Message, Name
from chatnet.protocol import from_history_entry, unencodable, unstorable, utcnow
from chatnet.store_documents import unrolled

# A page of mail when the caller doesn't say (the bound is MAIL_PAGE).
MAIL_PAGE_DEFAULT: Final = 100
# Messages in the mail bundles served and not yet acknowledged, kept so an ack needn't
# read them again (the oldest are forgotten first; a forgotten one is simply read).
MAX_SERVED: Final = 20_000


class StoredMessage(Message):
    """A message to store: it must say who sent it and to whom, in values the store can
    hold (else 422 for this request, never a 500)."""

    sender: Name
    destination: Name

    @field_validator("metadata")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        if problem := unstorable(value):
            raise ValueError(f"metadata the store can't hold: {problem}")
        return value

    @field_validator("message", "id")
    @classmethod
    def _utf8(cls, value: str) -> str:
        if problem := unencodable(value):
            raise ValueError(problem)
        return value


class MailIn(BaseModel):
    messages: list[StoredMessage] = Field(min_length=1, max_length=MAX_BATCH)
    ttl_seconds: int | None = Field(None, ge=1, le=MAX_MAIL_TTL_SECONDS, description="expire the mail after this many seconds")
    keep_latest: int | None = Field(
        None, ge=1, le=MAX_KEEP_LATEST, description="keep only the newest N pending per (destination, sender, type)"
    )


class MailStored(BaseModel):
    stored: int
    ids: list[str]
    unknown: list[str] = Field(description="destinations nobody has logged in as (in any spelling)")


class MailPage(BaseModel):
    user: str
    messages: list[Message]
    total: int


class PendingIn(BaseModel):
    users: list[Name] = Field(min_length=1, max_length=MAX_PENDING_USERS)
    limit: int = Field(MAIL_PAGE_DEFAULT, ge=1, le=MAIL_PAGE, description="the most messages answered, for all users together")


class PendingEntry(BaseModel):
    user: str = Field(description="as asked")
    total: int
    messages: list[Message] | None = Field(
        description="all of the user's pending mail, oldest first; null when it did not fit: ask GET /mail/{user}"
    )


class PendingPages(BaseModel):
    pending: list[PendingEntry] = Field(description="the users asked who have mail pending; the others have none")


class AckIn(BaseModel):
    ids: list[MessageId] = Field(min_length=1, max_length=MAX_ACK_IDS)


class Acknowledged(BaseModel):
    acknowledged: int


class ServedMail:
    """The mail bundles lately served by GET /mail (and POST /mail/pending), by
    recipient key, until acknowledged: an ack of what they hold needn't read them again
    (the store checks that they are unchanged). A recipient's latest read replaces the
    one before; the oldest recipients are forgotten first, beyond `capacity` messages."""

    def __init__(self, capacity: int = MAX_SERVED) -> None:
        self.capacity = capacity
        self.bundles: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self.held = 0  # messages in them

    def remember(self, key: str, bundles: list[dict[str, Any]]) -> None:
        self.take(key)
        self.bundles[key] = bundles
        self.held += sum(doc["count"] for doc in bundles)
        while self.held > self.capacity and self.bundles:
            self.held -= sum(doc["count"] for doc in self.bundles.popitem(last=False)[1])

    def take(self, key: str) -> dict[str, dict[str, Any]]:
        """The recipient's bundles, by id, forgotten here (an ack changes them)."""
        bundles = self.bundles.pop(key, [])
        self.held -= sum(doc["count"] for doc in bundles)
        return {doc["_id"]: doc for doc in bundles}


def routes() -> APIRouter:
    router = APIRouter(tags=["mail"])
    router.post("/mail", status_code=201, response_model=MailStored)(store_mail)
    router.post("/mail/pending", response_model=PendingPages)(pending_many)
    router.get("/mail/{user}", response_model=MailPage)(pending_mail)
    router.post("/mail/{user}/ack", response_model=Acknowledged)(ack_mail)
    return router


async def store_mail(body: MailIn, store: StoreDep) -> MailStored:
    """Store offline mail as pending. Idempotent by message id. `unknown`: the
    destinations nobody has ever logged in as."""
    ids = await store.store_mail(body.messages, body.ttl_seconds, body.keep_latest)
    unknown = await store.unknown_names(m.destination for m in body.messages)
    return MailStored(stored=len(ids), ids=ids, unknown=unknown)


async def pending_mail(
    user: PathName, store: StoreDep, request: Request, limit: Annotated[int, Query(ge=1, le=MAIL_PAGE)] = MAIL_PAGE_DEFAULT
) -> JSONResponse:
    """The user's pending mail, oldest first, and how much is pending in all."""
    bundles = await store.pending_bundles(user)
    entries = unrolled(bundles, utcnow())
    request.app.state.served.remember(user.lower(), bundles)
    messages = [from_history_entry(e) for e in entries[:limit]]
    return JSONResponse({"user": user, "messages": messages, "total": len(entries)})


async def pending_many(body: PendingIn, store: StoreDep, request: Request) -> JSONResponse:
    """Many users' pending mail at once (the chat server's look at a storm of logins):
    for each user asked who has any, the total and, while they fit within `limit`
    messages in all, the whole of it, oldest first. Two store queries, however many users."""
    given = {user.lower(): user for user in body.users}
    totals, pages = await store.pending_pages(given, body.limit)
    answer = []
    now = utcnow()
    for key, total in totals.items():
        bundles = pages.get(key)
        messages = None
        if bundles is not None:
            request.app.state.served.remember(key, bundles)
            messages = [from_history_entry(e) for e in unrolled(bundles, now)]
            total = len(messages)  # what has expired since the last sweep is not counted
            if not total:
                continue
        answer.append({"user": given[key], "total": total, "messages": messages})
    return JSONResponse({"pending": answer})


async def ack_mail(user: PathName, body: AckIn, store: StoreDep, request: Request) -> Acknowledged:
    """Take the user's mail with these ids out of the mail; it moves to the history,
    where it is by the time the answer comes (and never missing from both meanwhile)."""
    removed, _ = await store.take_mail(user, body.ids, request.app.state.served.take(user.lower()))
    return Acknowledged(acknowledged=removed)
