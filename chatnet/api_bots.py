"""The message API's bot definitions (tag "bots"), the bot host's feed and status
reports (tag "bot host"); `chatnet.api` mounts these behind the same bearer token as
the rest. HTTP chat with a bot, passed on to the bot host, is `chatnet.api_bot_chat`.

    PUT    /bots?replace=true          [definition, ...]          [{"name", "id", "created"}]  409 | 422
    GET    /bots                       every definition            [BotPublic]
    GET    /bots/{name}                one                         BotPublic | 404
    PATCH  /bots/{name}                {any input field but name}  BotPublic | 404 | 422
    DELETE /bots/{name}                                            {"deleted": true} | 404
    GET    /bots/{name}/status         the host's last report      BotStatus | 404
    GET    /bot-host/definitions       for the bot host            [BotPublic + "api_key"]
    PUT    /bot-host/status            [status, ...]               204

A definition's `api_key` is write-only: no answer carries it but the bot host's feed
(the host must call the provider), no log line holds it (the store keeps it sealed,
see `chatnet.bots_store.KeyBox`), and a 422 never echoes it (no 422 echoes its input,
see `chatnet.api.invalid_request`). A base_url with credentials in it is refused for
the same reason: it would be answered.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from chatnet.accounts import Accounts
from chatnet.api_params import PathName, RoomName
from chatnet.api_rooms import in_utc
from chatnet.bots_store import BotConflict, BotStore, Definition, Written, public
from chatnet.config import Settings
from chatnet.limits import MAX_BOT_MODEL_CHARS, MAX_BOT_PROMPT_CHARS, MAX_BOTS, MAX_ROOMS_PER_USER
from chatnet.message import Name
from chatnet.personalities import personalities
from chatnet.protocol import format_datetime, is_valid_name, unencodable
from chatnet.store import Store

logger = logging.getLogger("chatnet.api.bots")

# A definition's bounds. A thread is sent to the model at every turn and kept as one
# state value (at most 1 MiB of JSON): 500 messages or 100,000 characters is already
# more than most models' context.
MAX_THREAD_MESSAGES: Final = 500
MIN_THREAD_CHARACTERS: Final = 100  # a question and its answer
MAX_THREAD_CHARACTERS: Final = 100_000
MAX_THREAD_DAYS: Final = 365.0
MAX_RATE_LIMIT: Final = 1000  # per user per minute
MAX_TIMEOUT_SECONDS: Final = 600.0  # per model call
MAX_URL_CHARS: Final = 2000
MAX_API_KEY_CHARS: Final = 1000
MAX_RESPOND_TO: Final = 1000
MAX_ERROR_CHARS: Final = 200
# The host reports on the bots it runs, a deleted one for a moment too.
MAX_REPORTED: Final = 2 * MAX_BOTS
# The defaults of a definition (those of the single bot before: BOT_* in Settings).
DEFAULT_MAX_MESSAGES: Final = 20
DEFAULT_MAX_CHARACTERS: Final = 8000
DEFAULT_MAX_DAYS: Final = 7.0
DEFAULT_RATE_LIMIT: Final = 20
DEFAULT_TIMEOUT: Final = 30.0


# --- models ------------------------------------------------------------------------------------


def utf8(value: str | None) -> str | None:
    if value is not None and (problem := unencodable(value)):
        raise ValueError(problem)
    return value


def http_url(value: str | None) -> str | None:
    """An OpenAI-compatible server's address: http(s), a host, no credentials (they
    would be answered with the definition: the key goes in api_key)."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a port that is no number)
    except ValueError:
        raise ValueError("not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL with a host, e.g. http://127.0.0.1:11434/v1")
    if parts.username is not None or parts.password is not None:
        raise ValueError("no credentials in the URL: put the key in api_key")
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ValueError("a URL has no spaces or control characters")
    return value


def key_rule(value: SecretStr | None) -> SecretStr | None:
    """An api_key's rule, saying what it is, never what was given. "" is none."""
    if value is None or not value.get_secret_value():
        return None
    key = value.get_secret_value()
    if len(key) > MAX_API_KEY_CHARS:
        raise ValueError(f"an api_key is at most {MAX_API_KEY_CHARS} characters")
    if any(char.isspace() or not char.isprintable() or not char.isascii() for char in key):
        raise ValueError("an api_key is printable ASCII without spaces (it goes in an HTTP header)")
    return value


def unique(names: list[str]) -> list[str]:
    """Each name once (the first spelling), in order: names are the same in any case."""
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.lower(), name)
    return list(seen.values())


ApiKey = Annotated[SecretStr | None, AfterValidator(key_rule)]
Prompt = Annotated[str, Field(min_length=1, max_length=MAX_BOT_PROMPT_CHARS), AfterValidator(utf8)]
PersonalityName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,32}$")]
ModelName = Annotated[str, Field(min_length=1, max_length=MAX_BOT_MODEL_CHARS, pattern=r"^[^\s]+$")]
BaseUrl = Annotated[str, Field(max_length=MAX_URL_CHARS), AfterValidator(http_url)]


class BotFields(BaseModel):
    """A definition's fields but its name and api_key: what is stored as JSON."""

    model_config = ConfigDict(extra="forbid")

    system: Prompt | None = Field(None, description="the system prompt (instead of a personality)")
    personality: PersonalityName | None = Field(None, description="one of the host's personalities; null: its default")
    model: ModelName | None = Field(None, description="the model's name; null: the host's OPENAI_MODEL")
    base_url: BaseUrl | None = Field(None, description="an OpenAI-compatible server (http/https); null: the host's OPENAI_BASE_URL")
    respond_to: list[Name] = Field(default_factory=list, max_length=MAX_RESPOND_TO, description="who may talk to it; empty: everyone")
    max_messages: int = Field(DEFAULT_MAX_MESSAGES, ge=1, le=MAX_THREAD_MESSAGES, description="a thread keeps at most this many messages")
    max_characters: int = Field(DEFAULT_MAX_CHARACTERS, ge=MIN_THREAD_CHARACTERS, le=MAX_THREAD_CHARACTERS, description="... and at most this many characters")
    max_days: float = Field(DEFAULT_MAX_DAYS, gt=0, le=MAX_THREAD_DAYS, description="... no older than this many days")
    rate_limit: int = Field(DEFAULT_RATE_LIMIT, ge=1, le=MAX_RATE_LIMIT, description="messages a user may send it per minute")
    timeout: float = Field(DEFAULT_TIMEOUT, gt=0, le=MAX_TIMEOUT_SECONDS, description="seconds per model call")
    rooms: list[RoomName] = Field(default_factory=list, max_length=MAX_ROOMS_PER_USER, description="rooms it joins")
    owner: Name | None = Field(None, description="who made it (the web page's logged-in user)")

    @field_validator("personality")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return None if value is None else value.lower()  # personalities are named in any case

    @field_validator("respond_to", "rooms")
    @classmethod
    def _once(cls, value: list[str]) -> list[str]:
        return unique(value)

    @model_validator(mode="after")
    def _prompt_or_personality(self) -> BotFields:
        if self.system is not None and self.personality is not None:
            raise ValueError("give system (a prompt of its own) or personality (one of the host's), not both")
        return self


class BotIn(BotFields):
    """A bot definition as given to PUT /bots."""

    name: Name
    api_key: ApiKey = Field(None, description="write-only: never answered; none: the host's OPENAI_API_KEY")


class BotPatch(BaseModel):
    """Any input field but the name; what is left out stays. `api_key` "" or null removes
    the key. The result is checked as a whole definition."""

    model_config = ConfigDict(extra="forbid")

    system: Prompt | None = None
    personality: PersonalityName | None = None
    model: ModelName | None = None
    base_url: BaseUrl | None = None
    respond_to: list[Name] | None = None
    max_messages: int | None = None
    max_characters: int | None = None
    max_days: float | None = None
    rate_limit: int | None = None
    timeout: float | None = None
    rooms: list[RoomName] | None = None
    owner: Name | None = None
    api_key: ApiKey = None


class BotPublic(BaseModel):
    id: str
    name: str = Field(description="as spelled in its definition")
    system: str | None
    personality: str | None
    model: str | None
    base_url: str | None
    has_api_key: bool
    respond_to: list[str]
    max_messages: int
    max_characters: int
    max_days: float
    rate_limit: int
    timeout: float
    rooms: list[str]
    owner: str | None
    created_at: str
    updated_at: str
    version: int = Field(description="+1 at every change")


class BotForHost(BotPublic):
    api_key: str | None


class BotWritten(BaseModel):
    name: str
    id: str
    created: bool = Field(description="false: a definition of that name was replaced")


class BotDeleted(BaseModel):
    deleted: bool


class BotRefusal(BaseModel):
    detail: str
    name: str


class StatusIn(BaseModel):
    """One bot's figures in the bot host's report."""

    name: Name
    online: bool = Field(description="logged in to the chat server")
    model_ok: bool | None = Field(None, description="the last model call succeeded; null: none yet")
    last_error: str | None = Field(None, max_length=MAX_ERROR_CHARS, description='an error class: "APIConnectionError", "timeout", ...')
    last_error_at: Annotated[datetime, AfterValidator(in_utc)] | None = None
    requests: int = Field(0, ge=0)
    errors: int = Field(0, ge=0)
    p50_ms: float | None = Field(None, ge=0)
    queued: int = Field(0, ge=0)


class BotStatus(BaseModel):
    name: str
    online: bool = Field(description="as the host last reported, and false once that report is 5 s old")
    model_ok: bool | None
    last_error: str | None
    last_error_at: str | None
    requests: int
    errors: int
    p50_ms: float | None
    queued: int
    reported_at: str | None = Field(description="when the host last reported; null: never on this bot")


# --- from the models to the store ---------------------------------------------------------------


def invalid(errors: list[dict[str, Any]]) -> RequestValidationError:
    """A 422 like FastAPI's own (answered without the input, see `chatnet.api.invalid_request`)."""
    return RequestValidationError(errors)


def checked(fields: dict[str, Any], where: tuple[str | int, ...]) -> BotFields:
    """The fields as a whole definition, or a 422 placing each problem at `where`."""
    try:
        return BotFields.model_validate(fields)
    except ValidationError as exc:
        raise invalid([{**error, "loc": (*where, *error["loc"])} for error in exc.errors()]) from None


def offered(settings: Settings) -> dict[str, str]:
    return personalities(settings.bot_personalities)


def personality_problem(fields: BotFields, settings: Settings, where: tuple[str | int, ...]) -> dict[str, Any] | None:
    if fields.personality is None or fields.personality in offered(settings):
        return None
    names = ", ".join(offered(settings))
    return {"type": "value_error", "loc": (*where, "personality"), "msg": f"no personality '{fields.personality}' here; there are {names}"}


def definition(body: BotIn) -> Definition:
    fields = body.model_dump(mode="json", exclude={"name", "api_key"})
    return Definition(body.name, fields, None if body.api_key is None else body.api_key.get_secret_value())


def default_definition(settings: Settings) -> Definition | None:
    """The default bot (Settings.bot_name) with the BOT_* settings the single bot had."""
    if not is_valid_name(settings.bot_name):
        logger.error("BOT_NAME %r is no name: no default bot", settings.bot_name)
        return None
    given = {
        "respond_to": [name.strip() for name in settings.bot_allow.split(",") if name.strip()],
        "max_messages": settings.bot_max_messages,
        "max_characters": settings.bot_max_characters,
        "max_days": settings.bot_max_days,
        "rate_limit": settings.bot_rate_limit,
        "timeout": settings.bot_timeout,
    }
    try:
        fields = BotFields.model_validate(given)
    except ValidationError as exc:
        logger.warning("BOT_* settings outside a bot definition's bounds (%s): the default bot gets the defaults", exc.error_count())
        fields = BotFields()
    return Definition(settings.bot_name, fields.model_dump(mode="json"), None)


def bot_store(store: Store, accounts: Accounts, settings: Settings) -> BotStore:
    """The bot definitions over the store, the default bot among them."""
    return BotStore(store, accounts, settings, default_definition(settings))


def conflict(exc: BotConflict) -> JSONResponse:
    return JSONResponse({"detail": exc.detail, "name": exc.name}, status.HTTP_409_CONFLICT)


# The answer of a route on one bot that has no definition, for the OpenAPI schema.
MISSING: Final[dict[int | str, dict[str, Any]]] = {404: {"description": "no bot of that name"}}


def no_bot(name: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no bot named '{name}'")


# --- dependencies ------------------------------------------------------------------------------


async def get_bots(request: Request) -> BotStore:
    """The bot definitions, with the store's indexes and the default bot made."""
    bots: BotStore = request.app.state.bots
    await bots.ensure_ready()
    return bots


BotsDep = Annotated[BotStore, Depends(get_bots)]
Definitions = Annotated[list[BotIn], Body(min_length=1, max_length=MAX_BOTS, description="bot definitions, each name once")]
Reports = Annotated[list[StatusIn], Body(max_length=MAX_REPORTED, description="every bot the host runs")]


def routes() -> APIRouter:
    router = APIRouter()
    refused: dict[int | str, dict[str, Any]] = {409: {"model": BotRefusal, "description": "the name is a person's, a service's or reserved"}}
    router.put("/bots", response_model=list[BotWritten], responses=refused, tags=["bots"])(put_bots)
    router.get("/bots", response_model=list[BotPublic], tags=["bots"])(list_bots)
    router.get("/bots/{name}", response_model=BotPublic, responses=MISSING, tags=["bots"])(get_bot)
    router.patch("/bots/{name}", response_model=BotPublic, responses=MISSING, tags=["bots"])(patch_bot)
    router.delete("/bots/{name}", response_model=BotDeleted, responses=MISSING, tags=["bots"])(delete_bot)
    router.get("/bots/{name}/status", response_model=BotStatus, responses=MISSING, tags=["bots"])(bot_status)
    router.get("/bot-host/definitions", response_model=list[BotForHost], tags=["bot host"])(host_definitions)
    router.put("/bot-host/status", status_code=204, response_class=Response, tags=["bot host"])(host_status)
    return router


# --- routes ------------------------------------------------------------------------------------------


async def put_bots(
    body: Definitions,
    bots: BotsDep,
    replace: Annotated[bool, Query(description="false: a name that is a bot already is refused (409) rather than replaced")] = True,
) -> list[BotWritten] | JSONResponse:
    """Create each bot, or replace the definition of its name whole (its id kept; the
    version moves when anything changed). Each new name becomes a bot account. All or
    nothing: one bad entry (422) or refused name (409) and nothing is applied."""
    problems: list[dict[str, Any]] = []
    first: dict[str, int] = {}
    for index, entry in enumerate(body):
        if (earlier := first.setdefault(entry.name.lower(), index)) != index:
            msg = f"the name '{entry.name}' is given twice (also at {earlier}; names are the same in any case)"
            problems.append({"type": "value_error", "loc": ("body", index, "name"), "msg": msg})
        if problem := personality_problem(entry, bots.settings, ("body", index)):
            problems.append(problem)
    if problems:
        raise invalid(problems)
    try:
        written: list[Written] = await bots.put([definition(entry) for entry in body], replace)
    except BotConflict as exc:
        return conflict(exc)
    for done in written:
        logger.info("bot %s %s", done.name, "created" if done.created else "defined anew")
    return [BotWritten(name=w.name, id=w.id, created=w.created) for w in written]


async def list_bots(bots: BotsDep) -> list[BotPublic]:
    """Every bot definition, by name (without api_key: `has_api_key` says whether it has one)."""
    return [BotPublic.model_validate(public(doc)) for doc in await bots.all()]


async def get_bot(name: PathName, bots: BotsDep) -> BotPublic:
    if (doc := await bots.get(name)) is None:
        raise no_bot(name)
    return BotPublic.model_validate(public(doc))


async def patch_bot(name: PathName, body: BotPatch, bots: BotsDep) -> BotPublic:
    """Change some fields of a definition; the rest stays. The result must be a valid
    definition as a whole (422 otherwise; `system` and `personality` exclude each other)."""
    given = body.model_dump(exclude_unset=True)

    def change(current: Definition) -> Definition:
        fields = checked({**current.fields, **{k: v for k, v in given.items() if k != "api_key"}}, ("body",))
        if problem := personality_problem(fields, bots.settings, ("body",)):
            raise invalid([problem])
        key = current.api_key
        if "api_key" in given:
            key = None if body.api_key is None else body.api_key.get_secret_value()
        return Definition(current.name, fields.model_dump(mode="json"), key)

    doc = await bots.update(name, change)
    if doc is None:
        raise no_bot(name)
    logger.info("bot %s changed (%s), version %d", doc["name"], ", ".join(sorted(given)) or "nothing", doc["version"])
    return BotPublic.model_validate(public(doc))


async def delete_bot(name: PathName, bots: BotsDep) -> BotDeleted:
    """Remove the bot: its definition, its account and its threads (the host stops it)."""
    if not await bots.delete(name):
        raise no_bot(name)
    logger.info("bot %s deleted", name)
    return BotDeleted(deleted=True)


async def bot_status(name: PathName, bots: BotsDep) -> BotStatus:
    """The bot host's last figures on the bot: online on the chat server (false once the
    host has not reported for 5 s), the last model call ok or the error class it
    failed with, requests served, errors, median model latency, questions queued."""
    if (doc := await bots.get(name)) is None:
        raise no_bot(name)
    return BotStatus.model_validate(await bots.status_of(doc["name"]))


async def host_definitions(bots: BotsDep) -> list[BotForHost]:
    """Every bot definition with its api_key: for the bot host only."""
    return [BotForHost.model_validate(bots.for_host(doc)) for doc in await bots.all()]


async def host_status(body: Reports, bots: BotsDep) -> Response:
    """The bot host's report on every bot it runs (about once a second)."""
    reports = [report.model_dump(mode="json") | {"last_error_at": None if report.last_error_at is None else format_datetime(report.last_error_at)} for report in body]
    await bots.report(reports)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
