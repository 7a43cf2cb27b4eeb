"""The bot host: every LLM bot defined through the message API, each a peer of its own.

    async with ApiClient.from_settings(settings) as api:
        await BotHost(settings, api).run(stop)

Every `POLL_INTERVAL` the host reads the definitions (`GET /bot-host/definitions`) and
brings what runs in line with them (`plan`): a new definition starts an `Assistant`
peer, a changed one (its `version`) restarts that bot alone, a deleted one stops it.
Each bot has its own `OpenAIModel` — its base_url, api_key, model and timeout, or the
host's OPENAI_* where the definition leaves them out — and its own rate limit,
allow-list, thread bounds and rooms (`config_from_definition`), so a provider that
fails or stalls costs its own bot only. A definition with no provider at all (no URL,
no key, none in the host's settings either) is not started; its status says
"no provider". Every `REPORT_INTERVAL` the host reports each bot's status figures
(`PUT /bot-host/status`).

The host's OPENAI_API_KEY goes only to the host's own provider: a definition with a
base_url of its own gets no key but its own, so a bot pointed at any server cannot
carry the host's key away. Keys are never logged (`AssistantConfig`'s repr leaves its
key out).

An API without the bot routes (404 on the feed) gets the old behaviour: the one bot of
the host's settings (BOT_NAME, OPENAI_*, BOT_*).

The HTTP chat with any bot (`chatnet.bot_http`) is served beside them, on
BOTS_HOST:BOTS_PORT.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from chatnet.api_client import ApiClient
from chatnet.assistant import Assistant, AssistantConfig, Bounds, ChatModel, ModelStats, OpenAIModel
from chatnet.bot import SHUTDOWN_GRACE
from chatnet.cli import stop_on_signals
from chatnet.config import Settings
from chatnet.errors import ApiRejected, StoreUnavailable

logger = logging.getLogger("chatnet.bot_host")

# How often the definitions are read, and the status reported: a change applies within
# about two polls, and the API calls a bot offline after 5 s without a report.
POLL_INTERVAL: Final = 1.0
REPORT_INTERVAL: Final = 1.0
# How long a deleted or changed bot may finish the answer under way before it is cut
# off: it must leave the network within the ~2 s a change may take.
REPLACE_GRACE: Final = 1.0
NO_PROVIDER: Final = "no provider"
DAY: Final = 86400.0


class HostApi(Protocol):
    """What the host needs of the message API (ApiClient)."""

    async def bot_definitions(self) -> list[dict[str, Any]]: ...
    async def report_bot_status(self, statuses: list[dict[str, Any]]) -> None: ...
    async def get_state(self, owner: str, key: str) -> Any: ...
    async def put_state(self, owner: str, key: str, value: Any) -> None: ...
    async def archive_encoded(self, messages_json: str) -> int: ...


class ClosableModel(ChatModel, Protocol):
    async def close(self) -> None: ...


# --- definitions -----------------------------------------------------------------------


def config_from_definition(definition: Mapping[str, Any], settings: Settings) -> AssistantConfig:
    """A bot definition of the API (as the host feed answers it, `api_key` included)
    as the config of its bot; what it leaves out (null, or missing) is the host's."""
    host = AssistantConfig.from_settings(settings)

    def given(key: str, default: Any) -> Any:
        value = definition.get(key)
        return default if value is None else value

    base_url = definition.get("base_url") or None
    own_key = definition.get("api_key") or None
    # The host's key only to the host's provider: never to a URL a definition chose.
    api_key = own_key if own_key is not None else (host.api_key if base_url in (None, host.base_url) else None)
    choices = host.personalities
    personality = definition.get("personality")
    if isinstance(personality, str):
        personality = personality.lower()
        if personality not in choices:
            logger.warning("bot %s: no personality %r here; using the default", definition.get("name"), personality)
            personality = None
    return AssistantConfig(
        name=str(definition["name"]),
        model=given("model", host.model),
        base_url=base_url if base_url is not None else host.base_url,
        api_key=api_key,
        system=definition.get("system") or None,
        personality=personality if isinstance(personality, str) else None,
        personalities=choices,
        respond_to=frozenset(str(name).lower() for name in given("respond_to", [])),
        bounds=Bounds(
            int(given("max_messages", host.bounds.max_messages)),
            int(given("max_characters", host.bounds.max_chars)),
            float(given("max_days", host.bounds.max_age / DAY)) * DAY,
        ),
        rate_limit=int(given("rate_limit", host.rate_limit)),
        timeout=float(given("timeout", host.timeout)),
        retries=host.retries,
        rooms=tuple(str(room) for room in given("rooms", [])),
        version=int(given("version", 0)),
    )


def settings_definition(settings: Settings) -> dict[str, Any]:
    """The one bot of the host's settings, as a definition (for an API without the bot
    routes): everything left to the host's settings."""
    return {"name": settings.bot_name, "version": 0}


@dataclass(frozen=True)
class Plan:
    """What to do to bring the running bots in line with the definitions (by name,
    lower-cased)."""

    start: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.start or self.restart or self.stop)


def plan(running: Mapping[str, int], wanted: Mapping[str, int]) -> Plan:
    """From the versions running and the versions wanted (name → version, names
    lower-cased): what starts, what restarts (its version changed), what stops."""
    return Plan(
        start=sorted(name for name in wanted if name not in running),
        restart=sorted(name for name, version in wanted.items() if name in running and running[name] != version),
        stop=sorted(name for name in running if name not in wanted),
    )


def by_name(definitions: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Definitions keyed by name lower-cased (a name's case never makes a second bot)."""
    return {str(d["name"]).lower(): d for d in definitions if isinstance(d.get("name"), str)}


# --- the bots ------------------------------------------------------------------------


@dataclass(eq=False)
class Hosted:
    """One bot the host runs (`bot` None: not started, for want of a provider)."""

    config: AssistantConfig
    bot: Assistant | None = None
    model: ClosableModel | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def ended(self) -> bool:
        """Its task ended without being told to stop."""
        return self.task is not None and self.task.done() and not self.stop.is_set()

    def status(self) -> dict[str, Any]:
        if self.bot is None:
            return {
                "name": self.config.name, "online": False, "model_ok": None, "last_error": NO_PROVIDER, "last_error_at": None,
                "requests": 0, "errors": 0, "p50_ms": None, "queued": 0,
            }  # fmt: skip
        return self.bot.stats.report(self.config.name, self.bot.connected.is_set(), self.bot.queued)


ModelFactory = Callable[[AssistantConfig], ClosableModel]


class BotHost:
    """The bots of the definitions, kept in line with them; their status reported."""

    def __init__(self, settings: Settings, api: HostApi, *, make_model: ModelFactory = OpenAIModel) -> None:
        self.settings = settings
        self.api = api
        self.make_model = make_model
        self.hosted: dict[str, Hosted] = {}  # name lower-cased -> its bot
        self._feed_missing = False  # the API has no bot routes: the settings' bot alone
        self._report_failing = False

    def bot(self, name: str) -> Hosted | None:
        return self.hosted.get(name.lower())

    # --- keeping in line ---------------------------------------------------------------

    async def definitions(self) -> list[dict[str, Any]] | None:
        """The definitions as the API has them now; None when it can't say (keep what runs)."""
        try:
            found = await self.api.bot_definitions()
        except ApiRejected as exc:
            if exc.status != 404:
                logger.warning("the API refused the bot definitions: %s", exc)
                return None
            if not self._feed_missing:
                logger.warning("the message API has no bot routes; running the bot of the settings alone (%s)", self.settings.bot_name)
                self._feed_missing = True
            return [settings_definition(self.settings)]
        except StoreUnavailable as exc:
            logger.warning("cannot read the bot definitions: %s", exc)
            return None
        self._feed_missing = False
        return found

    async def sync(self) -> Plan | None:
        """Read the definitions and apply them; what was done (None: the API could not say)."""
        definitions = await self.definitions()
        if definitions is None:
            return None
        wanted = by_name(definitions)
        # A bot whose task ended by itself (our bug, logged) counts as not running: it
        # starts again if it is still wanted.
        running = {key: h.config.version for key, h in self.hosted.items() if not h.ended}
        changes = plan(running, {key: int(d.get("version") or 0) for key, d in wanted.items()})
        going = [key for key in self.hosted if key not in running] + changes.stop + changes.restart
        await asyncio.gather(*(self._stop(self.hosted.pop(key), REPLACE_GRACE) for key in going))
        for key in changes.start + changes.restart:
            self.hosted[key] = self._start(config_from_definition(wanted[key], self.settings))
        return changes

    def _start(self, config: AssistantConfig) -> Hosted:
        if not config.has_provider:
            logger.warning("bot %s has no model provider (no base_url or api_key, none in OPENAI_*): not started", config.name)
            return Hosted(config)
        model = self.make_model(config)
        bot = Assistant(self.settings, config, model, self.api, stats=ModelStats())
        hosted = Hosted(config, bot, model)
        hosted.task = asyncio.create_task(self._run(hosted, bot), name=f"bot-{config.name}")
        logger.info("bot %s (version %s, model %s at %s) starting", config.name, config.version, config.model, _shown_url(config.base_url))
        return hosted

    async def _run(self, hosted: Hosted, bot: Assistant) -> None:
        try:
            await bot.run(hosted.stop)
        except Exception:
            logger.exception("bot %s failed; it starts again at the next poll", bot.name)

    async def _stop(self, hosted: Hosted, grace: float) -> None:
        """Stop one bot: `grace` seconds for the answers under way, then cut off."""
        hosted.stop.set()
        if hosted.task is not None:
            done, _ = await asyncio.wait({hosted.task}, timeout=grace)
            if not done:
                hosted.task.cancel()
            await asyncio.gather(hosted.task, return_exceptions=True)
        if hosted.model is not None:
            await hosted.model.close()
        if hosted.bot is not None:
            logger.info("bot %s stopped", hosted.config.name)

    # --- status --------------------------------------------------------------------------

    def statuses(self) -> list[dict[str, Any]]:
        return [hosted.status() for hosted in self.hosted.values()]

    async def report(self) -> None:
        try:
            await self.api.report_bot_status(self.statuses())
        except (StoreUnavailable, ApiRejected) as exc:
            if not self._report_failing:  # once, not every second
                logger.warning("cannot report the bots' status: %s", exc)
            self._report_failing = True
            return
        self._report_failing = False

    # --- the whole life ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the bots in line with the definitions and report them until `stop`;
        then stop every bot (each finishing its answers under way for a while)."""
        try:
            while not stop.is_set():
                await self.sync()
                await self.report()
                await _sleep_unless(stop, min(POLL_INTERVAL, REPORT_INTERVAL))
        finally:
            hosted, self.hosted = list(self.hosted.values()), {}
            await asyncio.gather(*(self._stop(h, SHUTDOWN_GRACE) for h in hosted))


def _shown_url(url: str | None) -> str:
    """A provider's URL fit for the log: any credentials in it left out."""
    if url is None:
        return "OpenAI"
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="").geturl()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def serve_host(settings: Settings) -> None:
    """openai_bot.py: the host and its HTTP chat, until SIGINT or SIGTERM."""
    from chatnet.bot_http import serve_http  # it builds on this module

    stop = stop_on_signals()
    async with ApiClient.from_settings(settings) as api:
        host = BotHost(settings, api)
        async with serve_http(host, settings):
            await host.run(stop)
    logger.info("bot host stopped")
