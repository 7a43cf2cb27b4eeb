"""Offline mail over HTTP: store it (`POST /mail`), hand it over (`GET /mail/{user}`,
and `POST /mail/pending` for a storm of logins), and take what was acknowledged out of
the mailbox (`POST /mail/{user}/ack`), after which it is copied into the history in the
background (`HistoryCopier`). The bundles a hand-over served are kept for a while
(`ServedMail`), so the acknowledgement that follows needn't read them again.
`chatnet.api` builds the app around these routes and holds both helpers in `app.state`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator
from pymongo.errors import PyMongoError

from chatnet.api_params import MessageId, PathName, StoreDep
from chatnet.limits import MAIL_PAGE, MAX_ACK_IDS, MAX_BATCH, MAX_KEEP_LATEST, MAX_MAIL_TTL_SECONDS, MAX_PENDING_USERS
from chatnet.message import Message, Name
from chatnet.protocol import from_history_entry, unencodable, unstorable, utcnow
from chatnet.store import Store
from chatnet.store_documents import unrolled

logger = logging.getLogger("chatnet.api")

# A page of mail when the caller doesn't say (the bound is MAIL_PAGE).
MAIL_PAGE_DEFAULT: Final = 100
# How long shutdown waits for acknowledged mail still being copied to the history.
ARCHIVE_DRAIN_SECONDS: Final = 30.0
ARCHIVE_ATTEMPTS: Final = 3
# The copy goes in slices this big, one history bucket each, between a user's mail
# requests: the embedded store serves one request at a time, so one long insert would
# hold up their next page.
ARCHIVE_SLICE: Final = 200
# ... and only after the mail requests have paused this long, so the pages of one login
# follow each other without a slice in between; never deferred longer than the most.
ARCHIVE_PAUSE_SECONDS: Final = 0.05
ARCHIVE_MAX_DEFER_SECONDS: Final = 2.0
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


class HistoryCopier:
    """Copies acknowledged mail into the history after the ack has been answered.

    Why not on the request: the delete that makes the ack true takes a few
    milliseconds, and a user who is logging in should not wait for more. Each slice is
    one history bucket (one insert, whatever its size); the copies run one at a time, a
    slice whenever the mail requests (`foreground`) pause, are tracked, and are awaited
    at shutdown; a copy that still fails after a few attempts is logged with the ids it
    lost.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.tasks: set[asyncio.Task[None]] = set()
        self.turn = asyncio.Lock()
        self.requests = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.last_request = 0.0

    @contextmanager
    def foreground(self) -> Iterator[None]:
        """Around a mail request: the copy waits until none is under way."""
        self.requests += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.requests -= 1
            self.last_request = time.monotonic()
            if not self.requests:
                self.idle.set()

    async def _pause(self) -> None:
        """Until the mail requests have paused (or waiting has gone on long enough)."""
        deadline = time.monotonic() + ARCHIVE_MAX_DEFER_SECONDS
        while (now := time.monotonic()) < deadline:
            if self.idle.is_set() and now - self.last_request >= ARCHIVE_PAUSE_SECONDS:
                return
            with suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), deadline - now)
            await asyncio.sleep(max(0.0, self.last_request + ARCHIVE_PAUSE_SECONDS - time.monotonic()))

    def submit(self, docs: list[dict[str, Any]]) -> None:
        task = asyncio.create_task(self._copy(docs))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _copy(self, docs: list[dict[str, Any]]) -> None:
        async with self.turn:
            for start in range(0, len(docs), ARCHIVE_SLICE):
                await self._pause()
                await self._copy_slice(docs[start : start + ARCHIVE_SLICE])

    async def _copy_slice(self, docs: list[dict[str, Any]]) -> None:
        for attempt in range(1, ARCHIVE_ATTEMPTS + 1):
            try:
                await self.store.archive_delivered(docs)
                return
            except PyMongoError as exc:
                if attempt == ARCHIVE_ATTEMPTS:
                    ids = ", ".join(doc["_id"] for doc in docs[:20])
                    logger.error("acknowledged mail not copied to the history (%d: %s ...): %s", len(docs), ids, exc)
                    return
                logger.warning("copying acknowledged mail to the history failed (%s); retrying", exc)
                await asyncio.sleep(attempt)

    async def drain(self, timeout: float = ARCHIVE_DRAIN_SECONDS) -> None:
        """Wait for the copies under way (shutdown)."""
        if not self.tasks:
            return
        _, unfinished = await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in unfinished:
            logger.error("shutdown: a copy of acknowledged mail to the history did not finish")
            task.cancel()


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
    with request.app.state.copier.foreground():
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
    with request.app.state.copier.foreground():
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
    """Take the user's mail with these ids out of the mail; it moves to the history.

    The answer comes once the mail is out; the copy to the history follows in the
    background (see `HistoryCopier`)."""
    with request.app.state.copier.foreground():
        removed, entries = await store.take_mail(user, body.ids, request.app.state.served.take(user.lower()))
    if entries:
        request.app.state.copier.submit(entries)
    return Acknowledged(acknowledged=removed)
