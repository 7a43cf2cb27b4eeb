"""The message API's accounts (chatnet.api mounts these routes behind its bearer token,
as it does chatnet.api_rooms' and chatnet.api_bots'): registering a name for a person or
a bot, the chat server's login check (one name with its credentials, or a window of
guests at once), passwords and session tokens. The rules themselves are
chatnet.accounts'; here they meet HTTP: bodies, answers and refusals."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field, SecretStr, model_validator

from chatnet import api_bots
from chatnet.accounts import TOKEN_MAX_CHARS, Account, Accounts, Refused
from chatnet.api_params import PathName
from chatnet.limits import MAX_GUEST_LOGINS, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS
from chatnet.message import Name
from chatnet.protocol import Kind, LoginReason

# The address a login comes from, as the chat server saw it (an IPv6 one with its zone fits).
MAX_SOURCE_CHARS: Final = 64

PathToken = Annotated[str, Path(min_length=1, max_length=TOKEN_MAX_CHARS, description="a session token")]


def password_length(value: SecretStr) -> SecretStr:
    """The length rule for a password being set, saying what it is, never what it was."""
    if not MIN_PASSWORD_CHARS <= len(value.get_secret_value()) <= MAX_PASSWORD_CHARS:
        raise ValueError(f"a password must be {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters")
    return value


# A password being set. One offered at a login (or as the old one) has no length rule
# here: of any length it is checked, and is wrong or right (see chatnet.accounts).
NewPassword = Annotated[SecretStr, AfterValidator(password_length)]


# --- request and response models ---------------------------------------------------------


class AccountCreate(BaseModel):
    name: Name
    password: NewPassword | None = Field(None, description=f"{MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters; none for a bot")
    kind: Literal["person", "bot"] = "person"

    @model_validator(mode="after")
    def _password_for_people_only(self) -> AccountCreate:
        if self.kind == "person" and self.password is None:
            raise ValueError("a person's account needs a password")
        if self.kind == "bot" and self.password is not None:
            raise ValueError("a bot account has no password: a bot logs in with the service token")
        return self


class AccountPublic(BaseModel):
    name: str = Field(description="as its owner spelled it")
    kind: Literal["person", "bot"]


class AccountKinds(BaseModel):
    kinds: dict[str, Literal["person", "bot"]] = Field(description="every account's name (lower case) and kind")


class GuestLoginsIn(BaseModel):
    names: list[Name] = Field(min_length=1, max_length=MAX_GUEST_LOGINS)


class GuestLoginsOut(BaseModel):
    guests: list[str] = Field(
        description="the names no account holds, as first given, now recorded as used; each name left out is an account's (its own POST /accounts/{name}/login)"
    )


class LoginIn(BaseModel):
    source: str = Field(min_length=1, max_length=MAX_SOURCE_CHARS, description="the address the login comes from")
    password: SecretStr | None = None
    token: SecretStr | None = Field(None, description="a session token of this account, instead of the password")
    want_token: bool = Field(False, description="answer with a new session token")


class LoginOut(BaseModel):
    name: str = Field(description="as registered; a guest's as given")
    kind: Literal["guest", "person", "bot"]
    registered: bool
    token: str | None = Field(None, description="a new session token (only when asked for)")


class Refusal(BaseModel):
    detail: str
    reason: LoginReason | None = Field(None, description="why the login was refused (none: the bearer token was missing or wrong)")
    retry_after: int | None = Field(None, description="seconds until a locked name or address may try again")


REFUSALS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": Refusal, "description": "refused: password_required, wrong_password or reserved"},
    429: {"model": Refusal, "description": "locked: too many wrong passwords for the name or from the address"},
}


class PasswordIn(BaseModel):
    old: SecretStr
    new: NewPassword


class PasswordChanged(BaseModel):
    changed: bool = True
    revoked: int = Field(description="session tokens of the account revoked")


class AccountDeleted(BaseModel):
    deleted: bool


class TokenRevoked(BaseModel):
    revoked: bool


# --- routes -------------------------------------------------------------------------------


async def get_accounts(request: Request) -> Accounts:
    """The accounts, over the store (with its indexes made: retried here if the database
    was down at start, as for every route of the store)."""
    accounts: Accounts = request.app.state.accounts
    await accounts.store.ensure_indexes()
    return accounts


AccountsDep = Annotated[Accounts, Depends(get_accounts)]


def public(account: Account) -> AccountPublic:
    return AccountPublic.model_validate({"name": account.name, "kind": account.kind.value})


def refusal(refused: Refused) -> JSONResponse:
    body = Refusal(detail=refused.detail, reason=refused.reason, retry_after=refused.retry_after)
    headers = None if refused.retry_after is None else {"Retry-After": str(refused.retry_after)}
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), refused.status, headers)


def no_account(name: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no account named '{name}'")


async def create_account(body: AccountCreate, accounts: AccountsDep, bots: api_bots.BotsDep) -> AccountPublic:
    """Register a name (as spelled here) for a person (with a password) or a bot (without).
    A bot definition's name is no person's (its account is made at the bot's first login)."""
    if Kind(body.kind) is not Kind.BOT and await bots.get(body.name) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the name '{body.name}' is a bot's (names are the same in any case)")
    password = None if body.password is None else body.password.get_secret_value()
    account = await accounts.create(body.name, Kind(body.kind), password)
    if account is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the name '{body.name}' is taken (names are the same in any case)")
    return public(account)


async def account_kinds(accounts: AccountsDep) -> AccountKinds:
    """Which names are accounts: what a chat server refuses to guests while it can't ask."""
    return AccountKinds(kinds=await accounts.records.account_kinds())


async def get_account(name: PathName, accounts: AccountsDep) -> AccountPublic:
    if (account := await accounts.get(name)) is None:
        raise no_account(name)
    return public(account)


async def delete_account(name: PathName, accounts: AccountsDep) -> AccountDeleted:
    """Remove the account and its session tokens; the name stays known as used."""
    return AccountDeleted(deleted=await accounts.delete(name))


async def login(name: PathName, body: LoginIn, accounts: AccountsDep) -> LoginOut | JSONResponse:
    """The chat server's question at every login: a name nobody registered is a guest's
    (and is recorded as used); an account needs its password or one of its live
    session tokens. Wrong passwords are counted per name and per source address; past
    LOGIN_ATTEMPTS within LOGIN_WINDOW the name or address is locked (429)."""
    granted = await accounts.login(
        name,
        body.source,
        None if body.password is None else body.password.get_secret_value(),
        None if body.token is None else body.token.get_secret_value(),
        body.want_token,
    )
    if isinstance(granted, Refused):
        return refusal(granted)
    return LoginOut.model_validate(
        {"name": granted.name, "kind": granted.kind.value, "registered": granted.registered, "token": granted.token}
    )


async def guest_logins(body: GuestLoginsIn, accounts: AccountsDep) -> GuestLoginsOut:
    """The chat server's question for a storm of logins without a password or token,
    in one request: which names are guests' (no account holds them; recorded as used,
    as their own login check would). A name an account holds is left out, and its
    login goes on with POST /accounts/{name}/login, which knows its password, token
    and locks."""
    return GuestLoginsOut(guests=await accounts.guest_logins(body.names))


async def change_password(name: PathName, body: PasswordIn, accounts: AccountsDep) -> PasswordChanged | JSONResponse:
    """Set a new password, given the old one; every session token of the account is revoked."""
    changed = await accounts.change_password(name, body.old.get_secret_value(), body.new.get_secret_value())
    if changed is None:
        raise no_account(name)
    if isinstance(changed, Refused):
        return refusal(changed)
    return PasswordChanged(revoked=changed)


async def revoke_token(name: PathName, token: PathToken, accounts: AccountsDep) -> TokenRevoked:
    """Revoke one session token of the account (the page's "Leave")."""
    return TokenRevoked(revoked=await accounts.revoke(name, token))


def routes() -> APIRouter:
    router = APIRouter()
    taken: dict[int | str, dict[str, Any]] = {409: {"description": "the name is registered already, in some case"}}
    missing: dict[int | str, dict[str, Any]] = {404: {"description": "no account holds the name"}}
    router.post("/accounts", status_code=201, response_model=AccountPublic, responses=taken, tags=["accounts"])(create_account)
    router.get("/accounts", response_model=AccountKinds, tags=["accounts"])(account_kinds)
    router.get("/accounts/{name}", response_model=AccountPublic, responses=missing, tags=["accounts"])(get_account)
    router.delete("/accounts/{name}", response_model=AccountDeleted, tags=["accounts"])(delete_account)
    router.post(
        "/accounts/{name}/login", response_model=LoginOut, response_model_exclude_none=True, responses=REFUSALS, tags=["accounts"]
    )(login)
    router.post("/logins/guests", response_model=GuestLoginsOut, tags=["accounts"])(guest_logins)
    router.put("/accounts/{name}/password", response_model=PasswordChanged, responses=REFUSALS | missing, tags=["accounts"])(change_password)
    router.delete("/accounts/{name}/tokens/{token}", response_model=TokenRevoked, tags=["accounts"])(revoke_token)
    return router
