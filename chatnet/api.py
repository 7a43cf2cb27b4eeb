"""The message API: accounts and logins (`chatnet.api_accounts`), offline mail
(`chatnet.api_mail`), history, rooms and read markers (`chatnet.api_rooms`), bots
(`chatnet.api_bots`), subscriptions and bot state over HTTP. This module builds the app
around those route modules and serves the history, subscription and state routes.

`create_app(settings)` builds the FastAPI app; `message_api.py` runs it with uvicorn.
Every route but `/health` needs `Authorization: Bearer <API_TOKEN>` when a token is set.
While the database is unreachable the API stays up: `/health/detailed` says
"degraded" and routes that need the database answer 503 until it is back. Names are
case-insensitive everywhere ("Bob" and "bob" are one person). Passwords and session
tokens are never logged, never answered, and never echoed in a 422 (no 422 echoes its
input).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, field_validator
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError

from chatnet import api_accounts, api_bot_chat, api_bots, api_mail, api_rooms
from chatnet.accounts import Accounts
from chatnet.accounts_store import AccountStore
from chatnet.api_params import PathKey, PathName, StoreDep
from chatnet.config import Settings, get_settings
from chatnet.keys import encode_cursor
from chatnet.limits import HISTORY_PAGE, MAX_BATCH
from chatnet.message import Destination, Message
from chatnet.protocol import dumps, format_datetime, history_entry, is_room, parse_timestamp
from chatnet.rooms_store import RoomRefused, RoomStore
from chatnet.store import Store

logger = logging.getLogger("chatnet.api")

# Bot state is a bounded conversation thread or similar; this only stops abuse.
MAX_STATE_BYTES: Final = 1 << 20
# A page of history when the caller doesn't say (the bound is HISTORY_PAGE).
HISTORY_PAGE_DEFAULT: Final = 50
PING_TIMEOUT: Final = 1.5
SWEEP_SECONDS: Final = 60.0


# --- request and response models -------------------------------------------------------


class ArchivedMessage(api_mail.StoredMessage):
    """A delivered message to archive: to a person, or to a room (stored once, in the
    room's history)."""

    destination: Destination


class HistoryIn(BaseModel):
    messages: list[ArchivedMessage] = Field(min_length=1, max_length=MAX_BATCH)


class Archived(BaseModel):
    stored: int


class HistoryPage(BaseModel):
    messages: list[Message] = Field(description="newest first")
    next_before: str | None = Field(description="the oldest timestamp when the page is full (`before` of the next page; may skip ties)")
    next: str | None = Field(description="the cursor of the page before this one (pages whole, ties too); null: none")


class Deleted(BaseModel):
    deleted: int


class Subscribers(BaseModel):
    service: str
    users: list[str]


class Subscribed(BaseModel):
    subscribed: bool = True
    created: bool


class Removed(BaseModel):
    removed: bool


class StateIn(BaseModel):
    value: Any

    @field_validator("value")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        try:
            size = len(dumps(value).encode())  # as it is written: compact, UTF-8
        except UnicodeEncodeError:
            raise ValueError("value is not valid Unicode (a lone surrogate?)") from None
        if size > MAX_STATE_BYTES:
            raise ValueError(f"value too large ({size} bytes of JSON; the limit is {MAX_STATE_BYTES})")
        return value


class StateOut(BaseModel):
    value: Any


class StateDeleted(BaseModel):
    deleted: bool


class Problem(BaseModel):
    detail: str


# What every route behind the token may answer besides its own.
COMMON_ANSWERS: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": Problem, "description": "the body is not JSON"},
    401: {"model": Problem, "description": "missing or wrong bearer token"},
}


class DatabaseHealth(BaseModel):
    ok: bool
    latency_ms: float
    error: str | None


class Counts(BaseModel):
    pending: int | None
    messages: int | None
    subscriptions: int | None


class DetailedHealth(BaseModel):
    status: str
    database: DatabaseHealth
    counts: Counts
    uptime_seconds: float


# --- dependencies ----------------------------------------------------------------------------

SettingsDep = Annotated[Settings, Depends(get_settings)]
bearer = HTTPBearer(auto_error=False)


async def require_token(settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """401 unless the request carries the configured bearer token (when one is set).
    Async, though it never awaits: FastAPI runs a plain function in a worker thread,
    and that hop cost every request more than the rest of its dependencies (profiled
    under the mail workload)."""
    if settings.api_token is None:
        return
    expected = settings.api_token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials is not None else b""
    if not hmac.compare_digest(given, expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


# --- the app -------------------------------------------------------------------------------------


async def _sweep(store: Store) -> None:
    """Delete expired mail now and then (the embedded store may not honour the TTL index)."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            removed = await store.sweep_expired()
            if removed:
                logger.info("removed %d expired messages", removed)
            await AccountStore(store).sweep_expired_logins()
        except PyMongoError as exc:
            logger.warning("expiry sweep failed: %s", exc)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.dependency_overrides.get(get_settings, get_settings)()
    store = Store.open(settings.mongo_url, settings.mongo_db)
    app.state.store = store
    app.state.accounts = Accounts.from_settings(store, settings)
    app.state.rooms = rooms = RoomStore(store)
    app.state.bots = bots = api_bots.bot_store(store, app.state.accounts, settings)
    app.state.bot_proxy = proxy = api_bot_chat.HostProxy(settings)
    app.state.served = api_mail.ServedMail()
    app.state.started = time.monotonic()
    try:
        await rooms.ensure_indexes()
        await bots.ensure_ready()
        logger.info("database %s ready", settings.mongo_db)
    except PyMongoError as exc:
        logger.warning("database not reachable at start (%s); indexes will be made when it is", exc)
    sweeper = asyncio.create_task(_sweep(store))
    try:
        yield
    finally:
        sweeper.cancel()
        with suppress(asyncio.CancelledError):
            await sweeper
        await proxy.close()
        try:
            await store.previews.write_direct()
        except PyMongoError as exc:
            logger.warning("conversation lists not updated at shutdown: %s", exc)
        store.close()


TOKEN_IN_PATH: Final = re.compile(r"(/tokens/)[^/]+")


def loggable(path: str) -> str:
    """A request path fit for a log line: a session token in it is left out."""
    return TOKEN_IN_PATH.sub(r"\1...", path)


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("database unavailable for %s %s: %s", request.method, loggable(request.url.path), exc)
    return JSONResponse({"detail": f"database unavailable: {type(exc).__name__}"}, status.HTTP_503_SERVICE_UNAVAILABLE)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 saying what is wrong and where, but never the input refused: it may be a
    password (and a refused batch of mail would come back whole)."""
    assert isinstance(exc, RequestValidationError)
    errors = [{key: value for key, value in error.items() if key != "input"} for error in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status.HTTP_422_UNPROCESSABLE_CONTENT)


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="chatnet message API",
        summary="Offline mail, history, subscriptions and bot state for the chat network.",
        lifespan=lifespan,
    )
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    app.add_exception_handler(ConnectionFailure, database_unavailable)
    app.add_exception_handler(ExecutionTimeout, database_unavailable)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(RoomRefused, api_rooms.room_refused)
    app.get("/health", tags=["health"])(health)
    app.include_router(_routes(), dependencies=[Depends(require_token)], responses=COMMON_ANSWERS)
    return app


async def health() -> dict[str, str]:
    """Liveness: the API answers. No database call."""
    return {"status": "ok"}


def _routes() -> APIRouter:
    router = APIRouter()
    router.get("/health/detailed", response_model=DetailedHealth, tags=["health"])(health_detailed)
    router.include_router(api_accounts.routes())
    router.include_router(api_mail.routes())
    router.post("/history", status_code=201, response_model=Archived, tags=["history"])(archive)
    router.get("/history/{user}/{peer}", response_model=HistoryPage, tags=["history"])(history)
    router.delete("/history/{user}", response_model=Deleted, tags=["history"])(clear_history)
    router.get("/subscriptions/{service}", response_model=Subscribers, tags=["subscriptions"])(subscribers)
    router.put("/subscriptions/{service}/{user}", response_model=Subscribed, tags=["subscriptions"])(subscribe)
    router.delete("/subscriptions/{service}/{user}", response_model=Removed, tags=["subscriptions"])(unsubscribe)
    router.get("/state/{owner}/{key}", response_model=StateOut, tags=["state"])(get_state)
    router.put("/state/{owner}/{key}", response_model=StateOut, tags=["state"])(put_state)
    router.delete("/state/{owner}/{key}", response_model=StateDeleted, tags=["state"])(delete_state)
    router.include_router(api_rooms.routes())
    router.include_router(api_bots.routes())
    router.include_router(api_bot_chat.routes())
    return router


# --- routes ----------------------------------------------------------------------------------------


async def health_detailed(request: Request) -> DetailedHealth:
    """Database ping with latency, counts, uptime; "degraded" while the database is down."""
    store: Store = request.app.state.store
    started = time.perf_counter()
    error: str | None = None
    counts = Counts(pending=None, messages=None, subscriptions=None)
    try:
        await asyncio.wait_for(store.ping(), PING_TIMEOUT)
        await store.sweep_expired()
        counts = Counts(**await asyncio.wait_for(store.counts(), PING_TIMEOUT * 2))
    except (PyMongoError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:300] or "timeout"
    latency = (time.perf_counter() - started) * 1000
    return DetailedHealth(
        status="ok" if error is None else "degraded",
        database=DatabaseHealth(ok=error is None, latency_ms=round(latency, 2), error=error),
        counts=counts,
        uptime_seconds=round(time.monotonic() - request.app.state.started, 3),
    )


async def archive(body: HistoryIn, rooms: api_rooms.RoomsDep) -> Archived:
    """Archive delivered live chat for the history view. Idempotent by message id. A
    message to a room (destination "#...") is stored once, in the room's history,
    however many members it was delivered to (and however often the batch holds it)."""
    direct = [m for m in body.messages if not is_room(m.destination)]
    to_rooms = [history_entry(m) for m in body.messages if is_room(m.destination)]
    stored = await rooms.store.archive(direct) if direct else 0
    if to_rooms:
        stored += await rooms.archive(to_rooms)
    return Archived(stored=stored)


async def history(
    user: PathName,
    peer: PathName,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=HISTORY_PAGE)] = HISTORY_PAGE_DEFAULT,
    before: Annotated[datetime | None, Query(description="ISO timestamp: only older messages (may skip ties: prefer `cursor`)")] = None,
    cursor: Annotated[str | None, Query(max_length=200, description="`next` of the page after this one")] = None,
) -> JSONResponse:
    """Messages between two users in either direction, delivered or still pending,
    newest first, paged by `cursor` (the answer's `next`: without gaps or repeats
    however many messages share a millisecond) or, as before, by `before`."""
    if before is not None and cursor is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "give `before` or `cursor`, not both")
    # `before` as a key: no id sorts before "", so the whole millisecond is left out.
    try:
        key = (format_datetime(parse_timestamp(before)), "") if before is not None else api_rooms.cursor_key(cursor)
    except ValueError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "before: a timestamp out of range") from None
    messages, more = await store.history_page(user, peer, limit, key)
    next_before = messages[-1]["timestamp"] if len(messages) == limit else None
    next_cursor = encode_cursor((messages[-1]["timestamp"], messages[-1]["id"])) if more else None
    return JSONResponse({"messages": messages, "next_before": next_before, "next": next_cursor})


async def clear_history(user: PathName, store: StoreDep, bots: api_bots.BotsDep) -> Deleted:
    """Delete the delivered messages the user sent or received (pending mail stays), and
    the user's thread with every bot (so the bots forget it too)."""
    deleted = await store.clear_history(user)
    await bots.clear_threads(user)
    return Deleted(deleted=deleted)


async def subscribers(service: PathName, store: StoreDep) -> Subscribers:
    return Subscribers(service=service, users=await store.subscribers(service))


async def subscribe(service: PathName, user: PathName, store: StoreDep) -> Subscribed:
    return Subscribed(created=await store.subscribe(service, user))


async def unsubscribe(service: PathName, user: PathName, store: StoreDep) -> Removed:
    return Removed(removed=await store.unsubscribe(service, user))


async def get_state(owner: PathName, key: PathKey, store: StoreDep) -> StateOut:
    return StateOut(value=await store.get_state(owner, key))


async def put_state(owner: PathName, key: PathKey, body: StateIn, store: StoreDep) -> StateOut:
    await store.put_state(owner, key, body.value)
    return StateOut(value=body.value)


async def delete_state(owner: PathName, key: PathKey, store: StoreDep) -> StateDeleted:
    return StateDeleted(deleted=await store.delete_state(owner, key))
