"""Bot definitions and the bot host's status reports, in the store (over `chatnet.store`).

Collections (beside `chatnet.store`'s, in the same database):

    bots         one per bot definition, keyed by its name lower-cased: the name as
                 spelled, its id ("b_…"), the definition's fields as JSON text (every
                 value reads back exactly as written: no store-specific typing), the
                 api_key apart and sealed (`KeyBox`; only the bot host's feed answers
                 it), `created_at` and `updated_at` (epoch ms) and `version` (+1 at
                 every change: what the bot host restarts a bot on).
    bot_status   one document: the bot host's last report (every bot's figures as JSON
                 text) and when it came (epoch ms). Written about once a second as one
                 replace, whatever the number of bots.

A definition's name is reserved as an account of kind bot (the bot logs in with the
service token): made with the definition, removed with it. A name held by a person's
account, or by a bot account without a definition (a service such as thermometer1), is
refused (`BotConflict`). Writes of definitions take one lock, so a check and the
write it allows can't interleave with another request's (in this process).

The default bot's definition (`default`: the one named `Settings.bot_name`) is made
when absent (`ensure_ready`), and never overwritten; its account, as before, at its
first login.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from motor.motor_asyncio import AsyncIOMotorCollection
from pymongo.errors import DuplicateKeyError

from chatnet.accounts import Accounts, name_key
from chatnet.accounts_store import AccountStore
from chatnet.config import Settings
from chatnet.errors import ChatError
from chatnet.keys import epoch_ms, ms_text
from chatnet.limits import BOT_STATUS_STALE_SECONDS, MAX_BOTS
from chatnet.protocol import SERVER_NAME, Kind, utcnow
from chatnet.store import Store
from chatnet.store_documents import Document

logger = logging.getLogger("chatnet.bots")

# The one document of `bot_status`.
HOST_REPORT: Final = "host"
ID_PREFIX: Final = "b_"
ID_BYTES: Final = 8
# What the key that seals api_keys is derived for (HKDF's `info`): this use only.
KEY_PURPOSE: Final = b"chatnet bot definitions: api_key"


class KeyBox:
    """Seals api_keys for the store (Fernet: AES-128-CBC with an HMAC) under a key derived
    from the API token. Why: the database, its backups and the driver's DEBUG log of
    every command and reply then hold no provider key; the bot host's feed opens them.
    A key sealed under another token (API_TOKEN changed) opens as None: it must be set
    again. Without an API token the API is open to anyone anyway, and so is the box."""

    def __init__(self, token: str | None) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_PURPOSE)
        self.fernet = Fernet(base64.urlsafe_b64encode(hkdf.derive((token or "").encode())))

    def seal(self, key: str | None) -> str | None:
        return None if key is None else self.fernet.encrypt(key.encode()).decode()

    def open(self, sealed: str | None) -> str | None:
        if sealed is None:
            return None
        try:
            return self.fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            return None


class BotConflict(ChatError):
    """A definition the state of the network refuses (a name held by a person or by a
    service, a bot that exists already when only creating, too many bots): 409."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.name = name
        self.detail = detail


@dataclass(frozen=True)
class Definition:
    """A bot definition to write: its name as spelled, its fields (JSON values, the
    definition's input minus name and api_key) and its api_key."""

    name: str
    fields: dict[str, Any]
    api_key: str | None


@dataclass(frozen=True)
class Written:
    name: str
    id: str
    created: bool


def new_bot_id() -> str:
    return f"{ID_PREFIX}{secrets.token_hex(ID_BYTES)}"


def public(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored definition as the API answers it: without its api_key (`has_api_key` says
    whether it has one)."""
    return {
        "id": doc["id"],
        "name": doc["name"],
        **json.loads(doc["fields"]),
        "has_api_key": doc.get("api_key") is not None,
        "created_at": ms_text(doc["created_at"]),
        "updated_at": ms_text(doc["updated_at"]),
        "version": doc["version"],
    }


def empty_status(name: str) -> dict[str, Any]:
    """The status of a bot the host has not reported on."""
    return {
        "name": name,
        "online": False,
        "model_ok": None,
        "last_error": None,
        "last_error_at": None,
        "requests": 0,
        "errors": 0,
        "p50_ms": None,
        "queued": 0,
        "reported_at": None,
    }


class BotStore:
    """Bot definitions (with their bot accounts) and the bot host's status reports.

    `clock` is what "now" is (timestamps of changes, the age of a report): tests put
    their own."""

    def __init__(self, store: Store, accounts: Accounts, settings: Settings, default: Definition | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.accounts = accounts
        self.records = AccountStore(store)
        self.settings = settings
        token = settings.api_token.get_secret_value() if settings.api_token else None
        self.box = KeyBox(token)
        self.default = default
        self.clock = clock
        self.bots: AsyncIOMotorCollection[Document] = store.db["bots"]
        self.status: AsyncIOMotorCollection[Document] = store.db["bot_status"]
        self.lock = asyncio.Lock()
        self.ready = False

    async def ensure_ready(self) -> None:
        """The store's indexes, and (once) the default bot made when absent."""
        await self.store.ensure_indexes()
        if self.ready:
            return
        if self.default is not None:
            await self._make_default(self.default)
        self.ready = True

    async def _make_default(self, default: Definition) -> None:
        key = name_key(default.name)
        if await self.bots.find_one({"_id": key}, {"_id": 1}) is not None:
            return
        account = await self.records.find_account(key)
        if account is not None and account["kind"] != Kind.BOT:
            logger.error("the default bot's name %s is a person's account: no definition made for it", default.name)
            return
        # Its account is made at its first login (with the service token), as before
        # definitions existed, or is there already from one.
        try:
            await self.bots.insert_one(self._document(default, new_bot_id(), epoch_ms(self.clock()), None))
        except DuplicateKeyError:
            return  # another API process made it meanwhile
        logger.info("made the definition of the default bot %s", default.name)

    def _document(self, definition: Definition, bot_id: str, now_ms: int, before: Mapping[str, Any] | None) -> Document:
        return {
            "_id": name_key(definition.name),
            "id": bot_id,
            "name": definition.name,
            "fields": json.dumps(definition.fields, sort_keys=True),
            "api_key": self.box.seal(definition.api_key),
            "created_at": now_ms if before is None else before["created_at"],
            "updated_at": now_ms,
            "version": 1 if before is None else before["version"] + 1,
        }

    # --- reading -------------------------------------------------------------------------

    def definition_of(self, doc: Mapping[str, Any]) -> Definition:
        """A stored definition as written (its api_key opened)."""
        return Definition(doc["name"], json.loads(doc["fields"]), self.api_key(doc))

    def api_key(self, doc: Mapping[str, Any]) -> str | None:
        key = self.box.open(doc.get("api_key"))
        if key is None and doc.get("api_key") is not None:
            logger.warning("the api_key of bot %s was sealed under another API token: set it again", doc["name"])
        return key

    def for_host(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """A stored definition as the bot host reads it: with its api_key."""
        return {**public(doc), "api_key": self.api_key(doc)}

    async def all(self) -> list[Document]:
        """Every definition, by name (lower case)."""
        docs = await self.bots.find({}).to_list(None)
        return sorted(docs, key=lambda doc: str(doc["_id"]))

    async def get(self, name: str) -> Document | None:
        return await self.bots.find_one({"_id": name_key(name)})

    async def names(self) -> list[str]:
        """Every definition's name, lower-cased."""
        return [str(doc["_id"]) for doc in await self.bots.find({}, {"_id": 1}).to_list(None)]

    # --- writing ------------------------------------------------------------------------------

    async def put(self, definitions: list[Definition], replace: bool = True) -> list[Written]:
        """Create each definition, or replace the one of its name whole (its id and
        creation kept; the version moves only when something changed). Everything is
        checked before anything is written: a conflict (BotConflict) writes nothing.
        `replace` false: a name that is a definition already is a conflict too."""
        async with self.lock:
            keys = [name_key(d.name) for d in definitions]
            existing = {doc["_id"]: doc for doc in await self.bots.find({"_id": {"$in": keys}}).to_list(None)}
            new = [d for d in definitions if name_key(d.name) not in existing]
            for definition in definitions:
                if not replace and name_key(definition.name) in existing:
                    raise BotConflict(definition.name, f"a bot named '{existing[name_key(definition.name)]['name']}' exists already")
            for definition in new:
                await self._check_free(definition.name)
            if new and len(await self.names()) + len(new) > MAX_BOTS:
                raise BotConflict(new[0].name, f"there may be at most {MAX_BOTS} bots")
            now = epoch_ms(self.clock())
            written: list[Written] = []
            for definition in definitions:
                before = existing.get(name_key(definition.name))
                if before is None:
                    doc = await self._create(definition, now)
                elif self._changes(before, definition):
                    doc = self._document(definition, before["id"], now, before)
                    await self.bots.replace_one({"_id": doc["_id"]}, doc)
                else:
                    doc = before
                written.append(Written(doc["name"], doc["id"], before is None))
            return written

    async def _check_free(self, name: str) -> None:
        """BotConflict unless a new bot may take the name."""
        if name_key(name) in (SERVER_NAME, name_key(self.settings.thermometer_name)):
            raise BotConflict(name, f"the name '{name}' is reserved")
        account = await self.records.find_account(name_key(name))
        if account is None:
            return
        if account["kind"] == Kind.BOT:
            raise BotConflict(name, f"the name '{account['name']}' belongs to a service that is not a bot definition")
        raise BotConflict(name, f"the name '{account['name']}' is a person's account")

    async def _create(self, definition: Definition, now: int) -> Document:
        if await self.accounts.create(definition.name, Kind.BOT, None) is None:  # taken since the check
            raise BotConflict(definition.name, f"the name '{definition.name}' is taken")
        doc = self._document(definition, new_bot_id(), now, None)
        await self.bots.insert_one(doc)
        return doc

    def _changes(self, before: Mapping[str, Any], definition: Definition) -> bool:
        return self.definition_of(before) != definition

    async def update(self, name: str, change: Callable[[Definition], Definition]) -> Document | None:
        """Apply `change` (the definition as it is -> as it becomes; it may raise to
        refuse) under the lock: the document as it is now, or None when there is no
        such bot."""
        async with self.lock:
            before = await self.get(name)
            if before is None:
                return None
            definition = change(self.definition_of(before))
            if not self._changes(before, definition):
                return before
            doc = self._document(definition, before["id"], epoch_ms(self.clock()), before)
            await self.bots.replace_one({"_id": doc["_id"]}, doc)
            return doc

    async def delete(self, name: str) -> bool:
        """Remove the definition, its bot account and its threads (the state it keeps
        per user and room); False when there was no such bot."""
        key = name_key(name)
        async with self.lock:
            result = await self.bots.delete_one({"_id": key})
            if not result.deleted_count:
                return False
            account = await self.records.find_account(key)
            if account is not None and account["kind"] == Kind.BOT:
                await self.accounts.delete(name)
            await self.store.state.delete_many({"owner": key})
            return True

    async def clear_threads(self, user: str) -> int:
        """Forget the user's thread with every bot (the state owner=<bot>, key=<user>),
        the default bot's also when it has no definition; how many there were."""
        owners = set(await self.names()) | {name_key(self.settings.bot_name)}
        ids = [f"{owner}|{name_key(user)}" for owner in sorted(owners)]
        result = await self.store.state.delete_many({"_id": {"$in": ids}})
        return int(result.deleted_count)

    # --- status ----------------------------------------------------------------------------------

    async def report(self, statuses: list[dict[str, Any]]) -> None:
        """The bot host's report on every bot it runs (JSON values), as of now."""
        doc = {"reported_at": epoch_ms(self.clock()), "statuses": json.dumps(statuses)}
        # An upsert by `$set`: the embedded store's replace_one upsert drops the filter's _id.
        await self.status.update_one({"_id": HOST_REPORT}, {"$set": doc}, upsert=True)

    async def status_of(self, name: str) -> dict[str, Any]:
        """The bot's figures in the host's last report, online only while that report is
        fresh (at most BOT_STATUS_STALE_SECONDS old)."""
        status = empty_status(name)
        doc = await self.status.find_one({"_id": HOST_REPORT})
        if doc is None:
            return status
        key = name_key(name)
        reported = next((s for s in json.loads(doc["statuses"]) if name_key(s["name"]) == key), None)
        if reported is None:
            return status
        fresh = epoch_ms(self.clock()) - doc["reported_at"] <= BOT_STATUS_STALE_SECONDS * 1000
        return {**status, **reported, "name": name, "online": bool(reported["online"]) and fresh, "reported_at": ms_text(doc["reported_at"])}
