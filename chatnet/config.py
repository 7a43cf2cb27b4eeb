"""One settings object for every process.

Each setting comes from a keyword argument to `Settings(...)` (the command-line flags),
else the environment, else `.env` in the current directory (read with python-dotenv;
`Settings(_env_file=None)` skips it), else the default below. Variable names are the
field names upper-cased, matched regardless of case; variables that name no setting are
ignored. Text is read by the field's type: an int, a float, a bool (true/false, yes/no,
on/off, t/f, y/n, 1/0, any case), a path, one of a Literal's words, JSON for a dict; an
optional field given an empty string is unset. A value that can't be read is a
`BadSetting` naming the variable (never showing a secret). Settings are frozen:
`dataclasses.replace(settings, chat_port=0)` is a changed copy.

A plain dataclass, not a pydantic model: every process imports this, the chat server
included, and pydantic's machinery would cost it some 15 MB of its memory budget.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, get_args, get_origin, get_type_hints

from chatnet.errors import BadSetting
from chatnet.limits import CLUSTER_TTL


class Secret:
    """A text that is never shown: its repr and str are stars; equal by value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, init=False)
class Settings:
    """Every setting of every process; where each comes from is in the module docstring."""

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
    api_token: Secret | None = None

    web_host: str = "127.0.0.1"
    web_port: int = 8080
    # HTTPS and WSS for the page (with TLS_CERT/TLS_KEY); origins besides the page's own
    # allowed to open its WebSocket (comma-separated, e.g. https://chat.example.org).
    web_tls: bool = False
    web_allowed_origins: str = ""

    mongo_url: str = "mongodb://localhost:27017"
    mongo_db: str = "chatnet"
    # The message API and the embedded store run in the kernel's idle scheduling class
    # (Linux's SCHED_IDLE): on a machine they share with the chat server they get the CPU
    # time live chat leaves, so a history batch never makes a routed line wait.
    # "normal": as any process (for a machine where other work keeps every core busy,
    # which would leave idle-class work waiting).
    background_cpu: Literal["idle", "normal"] = "idle"

    data_dir: Path = Path("data")
    log_dir: Path = Path("logs")

    thermometer_name: str = "thermometer1"
    thermometer_interval: float = 100.0

    # The bot host (openai_bot.py): the HTTP chat with any bot (POST /bots/{name}/chat)
    # that the message API passes on to it.
    bots_host: str = "127.0.0.1"
    bots_port: int = 8001

    bot_name: str = "openai"
    openai_api_key: Secret | None = None
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
    bot_personalities: dict[str, str] = field(default_factory=dict)
    bot_allow: str = ""
    bot_rate_limit: int = 20
    bot_timeout: float = 30.0
    bot_retries: int = 1
    # Replies a bot gives in one room a minute: a busy room can't make it talk without
    # end, and that costs the room only.
    bot_room_replies: int = 10

    def __init__(self, _env_file: str | Path | None = ".env", **values: Any) -> None:
        """`values` over the environment over `_env_file` over the defaults; text converted
        by each field's type. TypeError for a name that is no setting, BadSetting for a
        value that can't be one."""
        unknown = values.keys() - _KINDS.keys()
        if unknown:
            raise TypeError(f"Settings() got unknown settings: {', '.join(sorted(unknown))}")
        values = {**_dotenv(_env_file), **_environ(), **values}
        for item in fields(self):
            if item.name in values:
                value = _converted(item.name, values[item.name])
            elif item.default_factory is not MISSING:
                value = item.default_factory()
            else:
                value = item.default
            object.__setattr__(self, item.name, value)

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


def _kinds() -> dict[str, tuple[Any, bool]]:
    """Each field's type with its `| None` taken off, and whether it had one."""
    kinds = {}
    for name, hint in get_type_hints(Settings).items():
        args = get_args(hint) if isinstance(hint, UnionType) else ()
        kinds[name] = (next(arg for arg in args if arg is not NoneType), True) if NoneType in args else (hint, False)
    return kinds


_KINDS = _kinds()
_TRUE = frozenset({"1", "true", "yes", "on", "t", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "f", "n"})


def _environ() -> dict[str, str]:
    """The environment's variables that name a setting, by field name."""
    return {key.lower(): value for key, value in os.environ.items() if key.lower() in _KINDS}


def _dotenv(path: str | Path | None) -> dict[str, str]:
    """The .env file's variables that name a setting, by field name ({} without the file)."""
    file = None if path is None else Path(path).expanduser()
    if file is None or not file.is_file():
        return {}
    from dotenv import dotenv_values  # only with a .env: its imports cost the chat server 1.5 MB

    return {key.lower(): value for key, value in dotenv_values(file).items() if value is not None and key.lower() in _KINDS}


def _converted(name: str, value: Any) -> Any:
    """`value` as the setting `name` holds it: text read by the field's type, anything
    else checked against it."""
    kind, optional = _KINDS[name]
    if optional and (value is None or value == ""):
        return None
    try:
        return _from_text(kind, value) if isinstance(value, str) else _checked(kind, value)
    except ValueError as exc:
        shown = f"a value of type {type(value).__name__}" if kind is Secret else repr(value)  # a secret's value is never shown
        raise BadSetting(f"{name.upper()}: {shown} {exc}") from None


def _from_text(kind: Any, text: str) -> Any:
    """`text` as a `kind`; ValueError saying what is wrong with it."""
    if kind is str or kind is Path or kind is Secret:
        return kind(text)
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
    elif kind is int or kind is float:
        try:
            return kind(text)
        except ValueError:
            pass
    elif get_origin(kind) is Literal:
        if text in get_args(kind):
            return text
    elif kind == dict[str, str]:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"is not JSON ({exc})") from None
        return _checked(kind, value)
    else:
        raise TypeError(f"no way to read text as {kind}")  # a field of a new type: teach this function
    raise ValueError(f"is not {_described(kind)}")


def _checked(kind: Any, value: Any) -> Any:
    """`value` if it is a `kind` (an int passes for a float); ValueError if not."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if get_origin(kind) is Literal:
        if value in get_args(kind):
            return value
    elif kind == dict[str, str]:
        if isinstance(value, dict) and all(isinstance(key, str) and isinstance(item, str) for key, item in value.items()):
            return dict(value)
    elif isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value
    raise ValueError(f"is not {_described(kind)}")


def _described(kind: Any) -> str:
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(repr(choice) for choice in get_args(kind))
    return {
        str: "text", Secret: "text", Path: "a path", int: "an integer", float: "a number",
        bool: "a boolean (true/false, yes/no, on/off, 1/0)", dict[str, str]: "a JSON object of strings",
    }.get(kind, str(kind))  # fmt: skip


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built once (FastAPI uses this as a dependency)."""
    return Settings()
