"""One settings object for every process.

Values come from the environment, then `.env` (read by pydantic-settings through
python-dotenv), then the defaults below; command-line flags override them by being
passed to `Settings(...)` directly. Variable names are the field names upper-cased.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatnet.limits import CLUSTER_TTL


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    chat_host: str = "127.0.0.1"
    chat_port: int = 5000
    chat_tls_port: int = 5443
    # IRC clients (irssi, WeeChat, IRC bots) on ports of their own; IRC=false (--no-irc) closes them.
    irc: bool = True
    irc_port: int = 6667
    irc_tls_port: int = 6697

    # TLS for the chat server (and the web page with WEB_TLS): a certificate and its key
    # in PEM files. Unset, the launcher makes a self-signed one under DATA_DIR/tls/.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    # Identity: guests may log in under any name nobody holds (GUESTS=false: accounts
    # only); anyone logged in may register their name (REGISTRATION=closed: only through
    # the API, with the admin token). After LOGIN_ATTEMPTS wrong passwords for one name, or
    # from one address, within LOGIN_WINDOW seconds, that name or address waits
    # LOGIN_LOCKOUT seconds. Session tokens last SESSION_DAYS.
    guests: bool = True
    registration: Literal["open", "closed"] = "open"
    login_attempts: int = 5
    login_window: float = 600.0
    login_lockout: float = 600.0
    session_days: float = 30.0

    # Abuse limits: a token bucket of FLOOD_RATE lines a second per session, FLOOD_BURST
    # deep (past it the server stops reading that connection until it refills; 0 = off;
    # bots are exempt); connections per address; logins per second per address.
    flood_rate: float = 20.0
    flood_burst: int = 60
    max_connections_per_ip: int = 1000
    login_rate: float = 20.0

    # Rooms everybody joins at their first login (comma-separated), and how many unseen
    # messages of each room a login is shown.
    default_rooms: str = "#general"
    room_catchup: int = 20

    # A JSON client silent for PING_INTERVAL seconds is pinged, and dropped when it does
    # not answer within PING_TIMEOUT (0 = never pinged; text mode relies on TCP keepalive).
    ping_interval: float = 120.0
    ping_timeout: float = 60.0

    # Several nodes, one network: CLUSTER_URL (redis://host:6379/0) is the Redis they
    # share (presence, and the way to each other: nothing durable rides on it); a node's
    # names are freed within CLUSTER_TTL seconds after it dies. Networks sharing one Redis
    # need their own CLUSTER_PREFIX. Unset: one node alone, everything in process.
    cluster_url: str | None = None
    cluster_ttl: float = CLUSTER_TTL
    cluster_prefix: str = "chatnet"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_token: SecretStr | None = None

    web_host: str = "127.0.0.1"
    web_port: int = 8080
    # HTTPS and WSS for the page (with TLS_CERT/TLS_KEY); origins besides the page's own
    # allowed to open its WebSocket (comma-separated, e.g. https://chat.example.org).
    web_tls: bool = False
    web_allowed_origins: str = ""

    mongo_url: str = "mongodb://localhost:27017"
    mongo_db: str = "chatnet"

    data_dir: Path = Path("data")
    log_dir: Path = Path("logs")

    thermometer_name: str = "thermometer1"
    thermometer_interval: float = 100.0

    # The bot host (openai_bot.py): the HTTP chat with any bot (POST /bots/{name}/chat)
    # that the message API passes on to it.
    bots_host: str = "127.0.0.1"
    bots_port: int = 8001

    bot_name: str = "openai"
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"

    # Thermometer: a random walk of `thermometer_step` °C at most per reading, inside
    # [min, max]; offline subscribers keep the newest `keep` readings for `ttl` seconds.
    thermometer_min: float = -10.0
    thermometer_max: float = 35.0
    thermometer_step: float = 0.3
    thermometer_keep: int = 20
    thermometer_ttl: int = 86400

    # OpenAI bot: per-user thread bounds, extra personalities ({"name": "system prompt"},
    # JSON), allow-list (comma-separated names; empty = everyone), per-user messages a
    # minute, seconds per model call, SDK retries.
    bot_max_messages: int = 20
    bot_max_characters: int = 8000
    bot_max_days: float = 7.0
    bot_personalities: dict[str, str] = {}
    bot_allow: str = ""
    bot_rate_limit: int = 20
    bot_timeout: float = 30.0
    bot_retries: int = 1
    # Replies a bot gives in one room a minute: a busy room can't make it talk without
    # end, and that costs the room only.
    bot_room_replies: int = 10

    @field_validator("api_token", "openai_api_key", "openai_base_url", "tls_cert", "tls_key", "cluster_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def liveness(self) -> tuple[float, float] | None:
        """(seconds of silence before a ping, seconds to answer it), or None: no pings."""
        return (self.ping_interval, self.ping_timeout) if self.ping_interval > 0 else None

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def bots_url(self) -> str:
        return f"http://{self.bots_host}:{self.bots_port}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built once (FastAPI uses this as a dependency)."""
    return Settings()
