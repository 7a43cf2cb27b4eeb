"""The web adapter: serves the page and its /api/* routes, and hands each WebSocket to a
`chatnet.web_bridge.Bridge` of its own.

    page ──POST /api/login, /api/register──> adapter ──> message API (accounts, with API_TOKEN)
         <──Set-Cookie chatnet_session (HttpOnly, SameSite=Strict; Secure with WEB_TLS)──
    page ──WebSocket /ws (the cookie rides along)──> Bridge ──Peer (JSON mode, token=...)──> chat server
    page ──GET /api/conversations, /api/history?with=, /api/personality; POST /api/read──>
         message API, for the socket's own user only (X-Chatnet-Session: the socket's handle)

Accounts. The page never holds a password for longer than one POST, and never sees a
session token: `/api/login` (name + password) asks the API for one and puts it in an
HttpOnly cookie together with the account's name; the WebSocket upgrade carries the
cookie, and the bridge logs in to the chat server with `token=` from it, so a reload
or a second tab resumes without the password. A guest logs in with the name alone
(no cookie; the page keeps the name it typed, which is no secret). `/api/logout` (the
page's "Leave") revokes the token, clears the cookie and closes every socket of this
browser that used it. The chat server checks the token at every login, as it checks
a password; a dead one is refused like a missing password (`password_required`), and
the page then asks for the password again.

The WebSocket's side (what the page and the chat server say to each other through it,
the adapter's own notices, acknowledged delivery) is `chatnet.web_bridge`.

The page's data, read through the message API with API_TOKEN (which the page never sees):

- `GET /api/conversations`: the user's conversations (people and rooms), the most
  recent first, each with its newest message and the unread count from the user's
  read markers, so the counts are the same after a reload and on another device;
- `GET /api/history?with=bob` (or `with=%23hiking`; `/api/history/{peer}` too) and
  `&cursor=<next>`: a page of history, oldest first, and the opaque cursor of the page
  before it (null: none), which pages back without gaps even through messages that
  share a millisecond; a room's only for its members (403 otherwise);
- `POST /api/read` {conversation, id, timestamp}: the user has read up to there (the
  read marker moves; never back);
- `GET /api/personality`: the user's personality of the assistant, from its state;
- `POST /api/bots` {name, system, model}: a new LLM bot, owned by the user (an
  account's person, not a guest): the message API's `PUT /bots` with that one
  definition; the bot host starts it within a few seconds. A name in use (a bot's or
  an account's) is 409, a bad field 422, the user's MAX_BOTS_PER_OWNER reached 403.

Not logged in: 401; the message API unreachable or failing: 503.

Every response carries a strict Content-Security-Policy (the page has no inline
script or style), `nosniff` and `no-referrer`. A WebSocket upgrade or a POST whose
`Origin` is neither the page's own nor in WEB_ALLOWED_ORIGINS is refused (403);
requests without an `Origin` (programs; browsers always send one) go through. A
POST's body is at most MAX_REQUEST_BYTES (413 past it) and must arrive within
BODY_TIMEOUT_SECONDS of its head (408 past it); either refusal closes the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import aiohttp
from aiohttp import hdrs, web

from chatnet.api_client import ApiClient, LoginCheck
from chatnet.cli import stop_on_signals
from chatnet.config import Settings
from chatnet.errors import ApiRejected, ProtocolError, StoreUnavailable
from chatnet.limits import (
    ACK_IDS_PER_FRAME,
    MAX_BOT_MODEL_CHARS,
    MAX_BOT_PROMPT_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
    MAX_TOPIC_CHARS,
    NAME_PATTERN,
    NAME_RULE,
    ROOM_PATTERN,
    ROOM_RULE,
)
from chatnet.personalities import personalities
from chatnet.process import ROOT
from chatnet.protocol import (
    Event,
    LoginReason,
    RoomReason,
    check_name,
    check_room,
    format_datetime,
    is_room,
    is_valid_name,
    parse_timestamp,
)
from chatnet.tls import server_context
from chatnet.web_bridge import SESSION_COOKIE, Bridge, Credentials, same_name

logger = logging.getLogger("chatnet.web")

STATIC_DIR: Final = ROOT / "static"
FAVICON: Final = STATIC_DIR / "favicon.svg"
SESSION_HEADER: Final = "X-Chatnet-Session"
# Above this aiohttp drops the socket outright; between the two the page gets an error frame.
MAX_WS_MESSAGE_BYTES: Final = 64 * 1024
# Request bodies are small JSON objects (a name and a password); this bounds what a
# client can make the adapter read (a bigger one is refused, 413) ...
MAX_REQUEST_BYTES: Final = 64 * 1024
# ... and this how long it may take to arrive once the request's head has. A page sends
# its body of a hundred bytes with the head, or a moment after; aiohttp itself has no
# deadline here (keepalive_timeout below ends only a head that trickles), so a client
# sending a body a byte a second held its POST open for ever. Past it: 408, and the
# connection closes.
BODY_TIMEOUT_SECONDS: Final = 5.0
HEARTBEAT_SECONDS: Final = 30.0
# A page of history as the page asks for it, and the most the adapter hands out at once
# (the API's own bound, HISTORY_PAGE, is higher: a page on a phone needn't be).
HISTORY_LIMIT_DEFAULT: Final = 50
HISTORY_LIMIT_MAX: Final = 200
# A history cursor is the API's opaque text (well under this); a message id is at most 64.
MAX_CURSOR_CHARS: Final = 200
MAX_ID_CHARS: Final = 64
# Bots a person may make on the page: each one costs the bot host a peer and model calls.
MAX_BOTS_PER_OWNER: Final = 5
# How long the adapter waits for the message API (history, accounts) before saying it is unavailable.
API_TIMEOUT_SECONDS: Final = 10.0
# Every notice name and every login refusal, for the page (served by /config.json, never retyped there).
EVENTS: Final = {event.name: event.value for event in Event}
LOGIN_REASONS: Final = {reason.name: reason.value for reason in LoginReason}

# The API takes a login's source address up to this long (an IPv6 one with its zone fits).
MAX_SOURCE_CHARS: Final = 64
# The close code a socket gets when its browser left from another tab (4000-4999 are the
# application's own): the page shows its login form instead of reconnecting.
SIGNED_OUT_CLOSE: Final = 4401

# The page loads its script, style and data from its own origin only and runs nothing
# inline; `default-src 'self'` also covers its WebSocket (CSP3: 'self' matches ws: and
# wss: of the same host), and images, fonts and frames it doesn't use. form-action and
# base-uri don't fall back to default-src, so they are said.
CONTENT_SECURITY_POLICY: Final = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

SETTINGS: Final = web.AppKey("settings", Settings)
BRIDGES: Final[web.AppKey[dict[str, Bridge]]] = web.AppKey("bridges")  # socket session -> Bridge
OPEN: Final[web.AppKey[set[Bridge]]] = web.AppKey("open")  # every open WebSocket's bridge
ORIGINS: Final[web.AppKey[frozenset[str]]] = web.AppKey("origins")  # WEB_ALLOWED_ORIGINS, normalised
API: Final = web.AppKey("api", ApiClient)  # holds API_TOKEN; the page never sees it


def source_address(request: web.BaseRequest) -> str:
    """The browser's address, as the API counts wrong passwords by it."""
    return (request.remote or "unknown")[:MAX_SOURCE_CHARS]


# --- security on every response ------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CSP, nosniff and no-referrer on every answer, errors (404, 403, ...) included."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:  # a WebSocket sent its headers already: it set them itself
        response.headers.update(SECURITY_HEADERS)
    return response


def own_origin(request: web.BaseRequest) -> str:
    """scheme://host[:port] of the page as this request reached the adapter."""
    return f"{request.scheme}://{request.host}".lower()


def origin_allowed(request: web.Request) -> bool:
    """No Origin (a program), the page's own, or one of WEB_ALLOWED_ORIGINS."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return True
    origin = origin.strip().lower()
    return origin == own_origin(request) or origin in request.app[ORIGINS]


def allowed_origins(settings: Settings) -> frozenset[str]:
    return frozenset(o.strip().rstrip("/").lower() for o in settings.web_allowed_origins.split(",") if o.strip())


def failure(status: int, text: str, **details: Any) -> web.Response:
    """A refusal the page shows as it is: {"error": <plain words>, "reason"?, ...}."""
    present = {key: value for key, value in details.items() if value is not None}
    return web.json_response({"error": text, **present}, status=status)


def foreign_origin(request: web.Request) -> web.Response:
    logger.info("refused %s %s from origin %s", request.method, request.path, request.headers.get(hdrs.ORIGIN))
    return failure(403, "This page may only be used from its own address.")


# --- HTTP handlers -------------------------------------------------------------------


async def websocket(request: web.Request) -> web.StreamResponse:
    if not origin_allowed(request):
        return foreign_origin(request)
    ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE_BYTES, heartbeat=HEARTBEAT_SECONDS)
    ws.headers.update(SECURITY_HEADERS)
    await ws.prepare(request)
    bridge = Bridge(ws, request.app[SETTINGS], request.app[BRIDGES], Credentials.from_cookie(request), source_address(request))
    request.app[OPEN].add(bridge)
    try:
        await bridge.run()
    finally:
        request.app[OPEN].discard(bridge)
    return ws


def _session_user(request: web.Request) -> str | None:
    """The user logged in on the socket whose session handle the request carries; None
    without one. Every route that reads a person's data answers for this user only,
    never for a name the request gives."""
    bridge = request.app[BRIDGES].get(request.headers.get(SESSION_HEADER, ""))
    return bridge.user if bridge is not None and bridge.logged_in else None


def _not_logged_in() -> web.Response:
    return failure(401, "Log in on the page first.")


def _api_down(what: str, user: str, exc: StoreUnavailable) -> web.Response:
    """The message API can't be reached (or failed): 503, in the page's words."""
    logger.warning("%s of %s unavailable: %s", what, user, exc)
    return failure(503, f"The message store can't be reached right now ({what}); try again in a moment.")


def _conversation(name: str) -> str:
    """A conversation the page names: a person's name or a '#room'; ProtocolError if neither."""
    return check_room(name) if name[:1] == "#" else check_name(name, "name")


async def history(request: web.Request) -> web.Response:
    """A page of the socket user's conversation with a person or in a room (`?with=bob`,
    `?with=%23hiking`, or the path's `{peer}`): {"messages": oldest first, "next": the
    cursor of the page before it, or null}. `cursor` pages back without gaps or repeats,
    also where many messages share a millisecond."""
    user = _session_user(request)
    if user is None:
        return _not_logged_in()
    cursor = request.query.get("cursor") or None
    try:
        conversation = _conversation(request.match_info.get("peer") or request.query.get("with", ""))
        limit = int(request.query.get("limit", HISTORY_LIMIT_DEFAULT))
    except (ProtocolError, ValueError) as exc:
        return failure(422, str(exc))
    if not 1 <= limit <= HISTORY_LIMIT_MAX:
        return failure(422, f"limit must be 1..{HISTORY_LIMIT_MAX}.")
    if cursor is not None and len(cursor) > MAX_CURSOR_CHARS:
        return failure(422, "That cursor is not one this page was given.")
    api = request.app[API]
    try:
        if is_room(conversation):
            page = await api.room_history(conversation, user, limit, cursor)
        else:
            page = await api.history_page(user, conversation, limit, cursor)
    except ApiRejected as exc:
        return _room_refused(exc, conversation)
    except StoreUnavailable as exc:
        return _api_down("history", user, exc)
    return web.json_response({"messages": page["messages"], "next": page.get("next")})


def _room_refused(exc: ApiRejected, conversation: str) -> web.Response:
    """The API's refusal in the page's words: not a member (403), no such room (404), or
    the page's own mistake (a cursor it was not given: 422)."""
    if exc.reason in (RoomReason.NOT_MEMBER, RoomReason.PRIVATE):
        return failure(403, f"You are not in {conversation}; join it to read it.", reason=exc.reason)
    if exc.reason == RoomReason.NO_ROOM or exc.status == 404:
        return failure(404, f"There is no room {conversation}.", reason=RoomReason.NO_ROOM)
    return failure(422 if exc.status == 422 else 400, exc.detail)


async def conversations(request: web.Request) -> web.Response:
    """The socket user's conversations, people and rooms, the most recent first, each
    {kind: "dm" | "room", name, last: the newest message or null, unread}."""
    user = _session_user(request)
    if user is None:
        return _not_logged_in()
    try:
        found = await request.app[API].conversations(user)
    except StoreUnavailable as exc:
        return _api_down("conversations", user, exc)
    except ApiRejected as exc:  # a name the API can't take would be our bug: say so plainly
        logger.error("conversations of %s refused: %s", user, exc)
        return failure(502, "The message API refused that; try again later.")
    return web.json_response({"conversations": found})


async def read(request: web.Request) -> web.Response:
    """{conversation, id, timestamp}: the socket user has read the conversation up to
    that message (its read marker moves there; never back). So an unread count shown
    on another device, or after a reload, is what this one has read."""
    body = await _form(request, "conversation", "id", "timestamp")
    if isinstance(body, web.Response):
        return body
    user = _session_user(request)
    if user is None:
        return _not_logged_in()
    message_id, timestamp = body.get("id"), body.get("timestamp")
    try:
        conversation = _conversation(str(body.get("conversation", "")))
        if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_ID_CHARS:
            raise ValueError(f"'id' must be a message id (1-{MAX_ID_CHARS} characters).")
        if not isinstance(timestamp, str):
            raise ValueError("'timestamp' must be the message's timestamp.")
        stamp = format_datetime(parse_timestamp(timestamp))
    except (ProtocolError, ValueError) as exc:
        return failure(422, str(exc))
    try:
        advanced = await request.app[API].advance_markers([(user, conversation, message_id, stamp)])
    except StoreUnavailable as exc:
        return _api_down("read markers", user, exc)
    except ApiRejected as exc:
        return failure(422, exc.detail)
    return web.json_response({"advanced": advanced})


async def personality(request: web.Request) -> web.Response:
    """The socket user's personality of the assistant (as the assistant keeps it: its
    state for this user; the first of the choices until one was picked)."""
    user = _session_user(request)
    if user is None:
        return _not_logged_in()
    settings = request.app[SETTINGS]
    choices = list(personalities(settings.bot_personalities))
    try:
        state = await request.app[API].get_state(settings.bot_name, user)
    except StoreUnavailable as exc:
        return _api_down("personality", user, exc)
    except ApiRejected:
        state = None
    chosen = state.get("personality") if isinstance(state, dict) else None
    return web.json_response({"personality": chosen if chosen in choices else choices[0], "choices": choices})


async def create_bot(request: web.Request) -> web.Response:
    """{name, system, model}: a new LLM bot owned by the socket's user, who must be an
    account's person. One definition through the message API's PUT /bots, with
    replace=false: a name that is any bot's already is refused there, never replaced."""
    body = await _form(request, "name", "system", "model")
    if isinstance(body, web.Response):
        return body
    bridge = request.app[BRIDGES].get(request.headers.get(SESSION_HEADER, ""))
    if bridge is None or not bridge.logged_in or bridge.user is None:
        return _not_logged_in()
    user = bridge.user
    if not bridge.account:
        return failure(403, "Only registered users may create bots: create an account first.", reason="not_registered")
    name = str(body.get("name", "")).strip()
    system = str(body.get("system", "")).strip() or None
    model = str(body.get("model", "")).strip() or None
    if not is_valid_name(name):
        return failure(422, f"A bot's name: use {NAME_RULE}.", reason=LoginReason.INVALID_NAME)
    if system is not None and len(system) > MAX_BOT_PROMPT_CHARS:
        return failure(422, f"The personality prompt is too long ({len(system)} characters; the limit is {MAX_BOT_PROMPT_CHARS}).")
    if model is not None and len(model) > MAX_BOT_MODEL_CHARS:
        return failure(422, f"The model's name is too long (the limit is {MAX_BOT_MODEL_CHARS} characters).")
    api = request.app[API]
    try:
        existing = await api.bots()
        if any(same_name(str(bot.get("name")), name) for bot in existing):
            return failure(409, f"There is a bot named '{name}' already; choose another name.", reason=LoginReason.NAME_TAKEN)
        if sum(same_name(str(bot.get("owner") or ""), user) for bot in existing) >= MAX_BOTS_PER_OWNER:
            return failure(403, f"You have {MAX_BOTS_PER_OWNER} bots already, the most one person may make here.", reason="too_many_bots")
        [created] = await api.put_bots([{"name": name, "system": system, "model": model, "owner": user}], replace=False)
    except StoreUnavailable as exc:
        return _api_down("bots", user, exc)
    except ApiRejected as exc:  # the API's reason, in its words: a name held by an account (409), a bad field (422)
        return failure(409 if exc.status == 409 else 422, exc.detail, reason=LoginReason.NAME_TAKEN if exc.status == 409 else None)
    logger.info("%s made the bot %s on the web", user, created["name"])
    return web.json_response({"name": created["name"], "id": created["id"], "created": created["created"]}, status=201)


async def favicon(request: web.Request) -> web.FileResponse:
    """Browsers ask for /favicon.ico whatever the page links: the same icon."""
    return web.FileResponse(FAVICON, headers={"Content-Type": "image/svg+xml", "Cache-Control": "max-age=86400"})


# --- accounts: login, create account, leave ---------------------------------------------


async def _form(request: web.Request, *fields: str) -> dict[str, Any] | web.Response:
    """The JSON body of a POST from the page, or the refusal to answer. JSON only, and
    from the page's own origin: a form on another site can send neither."""
    if not origin_allowed(request):
        return foreign_origin(request)
    if request.content_type != "application/json":
        return failure(415, "Send JSON (Content-Type: application/json).")
    refusal = await _read_body(request)
    if refusal is not None:
        return refusal
    try:
        body = await request.json()  # the body read above, decoded
    except ValueError:
        return failure(400, "Send a JSON object.")
    if not isinstance(body, dict):
        return failure(400, "Send a JSON object.")
    for name in fields:
        if name in body and not isinstance(body[name], str):
            return failure(422, f"'{name}' must be a string.")
    return body


async def _read_body(request: web.Request) -> web.Response | None:
    """Read the whole body (aiohttp keeps it for `request.json()`) within MAX_REQUEST_BYTES
    and BODY_TIMEOUT_SECONDS; the refusal (413, 408) when it can't be, None when it was.
    A refused request's connection is closed after the answer: the rest of its body
    would be read as the next request."""
    too_big = f"The request is too big (the limit is {MAX_REQUEST_BYTES} bytes)."
    if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
        return _closing(failure(413, too_big))  # said before a byte of it is read
    try:
        async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
            await request.read()
    except TimeoutError:
        logger.info("refused %s %s from %s: its body took longer than %g s", request.method, request.path, request.remote, BODY_TIMEOUT_SECONDS)
        return _closing(failure(408, f"The request took longer than {BODY_TIMEOUT_SECONDS:g} s to arrive; send it again."))
    except web.HTTPRequestEntityTooLarge:  # a chunked body, which declares no length
        return _closing(failure(413, too_big))
    return None


def _closing(response: web.Response) -> web.Response:
    response.force_close()  # says "Connection: close"
    return response


def _name_of(body: dict[str, Any]) -> str | web.Response:
    user = body.get("user")
    if not isinstance(user, str) or not is_valid_name(user):
        return failure(422, f"Use {NAME_RULE}.", reason=LoginReason.INVALID_NAME)
    return user


def _refused(check: LoginCheck, user: str) -> web.Response:
    """A login the API turned down, in the page's words (the page may word the reason itself)."""
    if check.reason == LoginReason.LOCKED:
        text = f"Too many failed logins for '{user}'; try again in {check.retry_after} s."
    elif check.reason == LoginReason.WRONG_PASSWORD:
        text = f"Wrong password for '{user}'."
    elif check.reason == LoginReason.RESERVED:
        text = f"The name '{user}' belongs to a bot; choose another."
    else:
        text = check.detail or "That login was refused."
    return failure(429 if check.reason == LoginReason.LOCKED else 401, text, reason=check.reason, retry_after=check.retry_after)


def _unavailable(exc: StoreUnavailable) -> web.Response:
    logger.warning("accounts unavailable: %s", exc)
    return failure(503, "Accounts can't be checked right now; try again in a moment.", reason=LoginReason.UNAVAILABLE)


async def _signed_in(request: web.Request, check: LoginCheck) -> web.Response:
    """The answer to a login that got a session token: the token goes in the cookie only."""
    assert check.token is not None
    settings = request.app[SETTINGS]
    response = web.json_response({"user": check.name, "account": True})
    response.set_cookie(
        SESSION_COOKIE, Credentials(check.name, check.token).cookie(), max_age=int(settings.session_days * 86400),
        path="/", httponly=True, samesite="Strict", secure=settings.web_tls,
    )  # fmt: skip
    await _drop_session(request, keep=check.token)
    logger.info("%s signed in on the web", check.name)
    return response


async def _drop_session(request: web.Request, keep: str | None = None) -> bool:
    """Revoke the session the request's cookie holds (unless it is `keep`) and close the
    sockets that logged in with it; True if the API revoked a live token."""
    credentials = Credentials.from_cookie(request)
    if credentials is None or credentials.token == keep:
        return False
    signed_in = [bridge for bridge in request.app[OPEN] if bridge.account_token == credentials.token]
    for bridge in signed_in:
        await bridge.close(SIGNED_OUT_CLOSE, b"signed out")
    try:
        return await request.app[API].revoke_token(credentials.name, credentials.token)
    except (StoreUnavailable, ApiRejected) as exc:  # the cookie goes anyway; the token expires in time
        logger.warning("could not revoke a session of %s: %s", credentials.name, exc)
        return False


def _clear_cookie(response: web.Response, settings: Settings) -> web.Response:
    response.del_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=settings.web_tls)
    return response


async def login(request: web.Request) -> web.Response:
    """{user, password} for an account: the session cookie is set. {user, guest: true}:
    nothing to check here (the chat server does at the socket's login); an account
    session this browser held is ended, so a reload doesn't resume it."""
    body = await _form(request, "user", "password")
    if isinstance(body, web.Response):
        return body
    user = _name_of(body)
    if isinstance(user, web.Response):
        return user
    settings = request.app[SETTINGS]
    if body.get("guest") is True:
        if not settings.guests:
            return failure(403, "This network takes no guests: log in with your account.", reason=LoginReason.GUESTS_NOT_ALLOWED)
        await _drop_session(request)
        return _clear_cookie(web.json_response({"user": user, "account": False}), settings)
    password = body.get("password")
    if not password:
        return failure(401, f"Enter the password of '{user}'.", reason=LoginReason.PASSWORD_REQUIRED)
    try:
        check = await request.app[API].check_login(user, source_address(request), password=password, want_token=True)
    except StoreUnavailable as exc:
        return _unavailable(exc)
    except ApiRejected as exc:  # e.g. a password longer than anyone's
        return failure(422, exc.detail)
    if not check.ok:
        return _refused(check, user)
    if not check.registered:
        return failure(401, f"There is no account named '{user}': continue as a guest, or create it.", reason="no_account")
    return await _signed_in(request, check)


async def register(request: web.Request) -> web.Response:
    """{user, password}: create the account, then sign in to it (the session cookie is set)."""
    body = await _form(request, "user", "password")
    if isinstance(body, web.Response):
        return body
    user = _name_of(body)
    if isinstance(user, web.Response):
        return user
    if request.app[SETTINGS].registration == "closed":
        return failure(403, "New accounts are made by this network's admin only (registration is closed).", reason="registration_closed")
    password = body.get("password")
    if not isinstance(password, str) or not password:
        return failure(422, "Choose a password.")
    api = request.app[API]
    try:
        account = await api.create_account(user, password)
        check = await api.check_login(account.name, source_address(request), password=password, want_token=True)
    except StoreUnavailable as exc:
        return _unavailable(exc)
    except ApiRejected as exc:
        if exc.status == 409:
            return failure(409, f"The name '{user}' is taken; choose another.", reason=LoginReason.NAME_TAKEN)
        # A password out of bounds: the API says which (without repeating it).
        return failure(422, f"That password can't be used: {exc.detail.rpartition(', ')[2]}.")
    if not check.ok or check.token is None:
        return _refused(check, user)
    logger.info("%s registered on the web", account.name)
    return await _signed_in(request, check)


async def logout(request: web.Request) -> web.Response:
    """The page's "Leave": revoke this browser's session, clear its cookie."""
    body = await _form(request)
    if isinstance(body, web.Response):
        return body
    revoked = await _drop_session(request)
    return _clear_cookie(web.json_response({"revoked": revoked}), request.app[SETTINGS])


async def session(request: web.Request) -> web.Response:
    """Whose account session this browser holds (the name only; the chat server checks
    the token when the socket logs in), so the page resumes without asking."""
    credentials = Credentials.from_cookie(request)
    return web.json_response({"user": None if credentials is None else credentials.name})


async def page_config(request: web.Request) -> web.Response:
    """What the page needs to know about the network (never a secret)."""
    settings = request.app[SETTINGS]
    return web.json_response(
        {
            "thermometer": settings.thermometer_name,
            "bot": settings.bot_name,
            "personalities": list(personalities(settings.bot_personalities)),
            "max_message_chars": MAX_MESSAGE_CHARS,
            "max_name_chars": MAX_NAME_CHARS,
            "name_pattern": NAME_PATTERN,
            "name_rule": NAME_RULE,
            "room_pattern": ROOM_PATTERN,
            "room_rule": ROOM_RULE,
            "max_topic_chars": MAX_TOPIC_CHARS,
            "max_prompt_chars": MAX_BOT_PROMPT_CHARS,
            "max_model_chars": MAX_BOT_MODEL_CHARS,
            "default_rooms": [room.strip() for room in settings.default_rooms.split(",") if room.strip()],
            "history_page": HISTORY_LIMIT_DEFAULT,
            "ack_ids_per_frame": ACK_IDS_PER_FRAME,
            "events": EVENTS,
            "login_reasons": LOGIN_REASONS,
            "signed_out_close": SIGNED_OUT_CLOSE,
            "guests": settings.guests,
            "registration": settings.registration,
        }
    )


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _api_client(app: web.Application) -> AsyncIterator[None]:
    async with ApiClient.from_settings(app[SETTINGS], timeout=API_TIMEOUT_SECONDS) as api:
        app[API] = api
        yield


async def _close_websockets(app: web.Application) -> None:
    """On shutdown: say goodbye to every page (each bridge then logs its user out)."""
    bridges: set[Bridge] = app[OPEN]
    for bridge in list(bridges):
        await bridge.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"web adapter shutting down")


def build_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[security_headers])
    app[SETTINGS] = settings
    app[BRIDGES] = {}
    app[OPEN] = set()
    app[ORIGINS] = allowed_origins(settings)
    app.cleanup_ctx.append(_api_client)
    app.on_shutdown.append(_close_websockets)
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/config.json", page_config)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/api/history", history)
    app.router.add_get("/api/history/{peer}", history)
    app.router.add_get("/api/conversations", conversations)
    app.router.add_get("/api/personality", personality)
    app.router.add_post("/api/read", read)
    app.router.add_post("/api/bots", create_bot)
    app.router.add_get("/api/session", session)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/register", register)
    app.router.add_post("/api/logout", logout)
    app.router.add_static("/static/", STATIC_DIR)
    return app


# An idle HTTP connection to the page, or one still sending its request head, is closed
# after this long (aiohttp's default is an hour). A browser just opens a new connection;
# an open WebSocket is a running request and is not affected (its heartbeat rules it).
WEB_KEEPALIVE_SECONDS: Final = 15.0
# After an answer to a request whose body has not all arrived (408, 413, 415, ...), what
# still comes is read and dropped for at most this long, so the client gets to read the
# answer rather than a reset; then the connection closes (aiohttp's default is 10 s).
WEB_LINGER_SECONDS: Final = 2.0


async def serve(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM, then close every WebSocket and stop."""
    ssl_context = server_context(settings) if settings.web_tls else None
    if settings.web_tls and ssl_context is None:
        raise SystemExit("WEB_TLS=true needs TLS_CERT and TLS_KEY (PEM files).")
    # keepalive_timeout runs from the connection's start and from each response's end,
    # and closes the connection if no whole request head has arrived by then: so it also
    # ends slowloris-type header trickling (aiohttp has no separate read timeout).
    runner = web.AppRunner(build_app(settings), access_log=None, shutdown_timeout=5.0, keepalive_timeout=WEB_KEEPALIVE_SECONDS, lingering_time=WEB_LINGER_SECONDS)
    await runner.setup()
    site = web.TCPSite(runner, settings.web_host, settings.web_port, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]  # the real one when the settings asked for port 0
    scheme = "https" if ssl_context is not None else "http"
    logger.info("web page on %s://%s:%d (chat server %s:%d)", scheme, settings.web_host, port,
                settings.chat_host, settings.chat_port)  # fmt: skip
    stop = stop_on_signals()
    await stop.wait()
    logger.info("shutting down")
    await runner.cleanup()
    logger.info("stopped")
