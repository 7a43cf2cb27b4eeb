"""The message API's rooms, read markers and conversation lists (tags "rooms" and
"conversations"); `chatnet.api` mounts these behind the same bearer token as the rest.

    PUT    /rooms/{room}/members/{user}   join (the room is made if missing; body {"key"}?)  {"room", "created"}
    DELETE /rooms/{room}/members/{user}   leave                                  {"left"}
    GET    /rooms/{room}                  the room and its members' names        RoomDetail | 404
    GET    /rooms?user=                   public rooms and the user's private ones {"rooms"}
    PATCH  /rooms/{room}                  {"by", "topic"?, "private"?, settings?}  RoomInfo
    POST   /rooms/{room}/invitations      {"by", "user"}                         {"room", "user", "created", "member"}
    POST   /rooms/{room}/kicks            {"by", "user"}                         {"kicked"}
    GET    /rooms/{room}/history?user=&limit=&cursor=   members only             {"messages": oldest first, "next"}
    POST   /rooms/logins                  {"users", "catchup", "defaults"}       {"logins": {user: [...]}}
    POST   /markers                       {"markers": [{"user", "conversation", "id", "timestamp"}]}  {"advanced"}
    GET    /conversations/{user}          the user's DMs and rooms, latest first {"user", "conversations"}

A room's settings (IRC's channel modes, for every client): `moderated` (+m: only
operators and `voiced` members write), `no_external` (+n, on by default: only members
write), `secret` (+s: listed to members only), `topic_lock` (+t: operators set the
topic), `key` (+k: a join needs it), `limit` (+l: members at most), `bans` (+b:
`nick!user@host` masks with `*` and `?`), `ops` (+o: the owner and whom operators
name). A join is refused for a ban, and unless invited for a missing key or a full room.

A room refuses with 403 (`reason`: private, not_member, not_owner, too_many_rooms,
banned, bad_key, full, not_in_room, bad_mode) or 404 (no_room),
the body `{"detail", "reason"}`; a body or name it can't take is 422, never a 500.

Privacy: only the chat server (and what else holds the API token) calls these, and it
says who asks. Room history goes to members only, but a user's conversations and read
markers are answered for whichever user is named: a caller serving one person (the web
adapter) must pass the user logged in on that connection, never a name the page sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field, field_validator

from chatnet.api_params import MessageId, PathName, PathRoom, QueryName, RoomName
from chatnet.keys import decode_cursor, encode_cursor
from chatnet.limits import (
    HISTORY_PAGE,
    MAX_BANS,
    MAX_CATCHUP,
    MAX_DEFAULT_ROOMS,
    MAX_KEY_CHARS,
    MAX_MARKERS,
    MAX_MASK_CHARS,
    MAX_MODE_CHANGES,
    MAX_ROOM_LIMIT,
    MAX_ROOM_LOGINS,
    MAX_TOPIC_CHARS,
)
from chatnet.message import Destination, Message, Name
from chatnet.protocol import RoomReason, parse_timestamp, unencodable
from chatnet.rooms_store import ModeChange, RoomRefused, RoomStore, room_info

HISTORY_PAGE_DEFAULT: Final = 50
CATCHUP_DEFAULT: Final = 20
# Characters a topic can't hold: it is shown as one line of text.
LINE_BREAKS: Final = frozenset("\r\n\0\u2028\u2029\x85")
# A key and a ban mask are words (RFC 2812's key: no spaces, no control characters).
WORD_PATTERN: Final = r"^[^\s\x00-\x1f,]+$"
Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY_CHARS, pattern=WORD_PATTERN)]
Mask = Annotated[str, Field(min_length=1, max_length=MAX_MASK_CHARS, pattern=WORD_PATTERN)]


def cursor_key(cursor: str | None) -> tuple[str, str] | None:
    """The key an opaque cursor holds; 422 for one this API did not give."""
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"cursor: {exc}") from None


# --- models ------------------------------------------------------------------------------


class Ban(BaseModel):
    mask: str = Field(description="nick!user@host; '*' any characters, '?' one")
    by: str
    at: int = Field(description="set at, in seconds since the epoch")


class RoomInfo(BaseModel):
    name: str = Field(description="as its creator spelled it")
    owner: str
    topic: str | None
    topic_by: str | None = Field(description="who set the topic")
    private: bool = Field(description="invitations only; listed to members only")
    members: int
    moderated: bool = Field(False, description="+m: only operators and voiced members write to it")
    no_external: bool = Field(True, description="+n: only members write to it")
    secret: bool = Field(False, description="+s: listed (LIST, NAMES) to members only")
    topic_lock: bool = Field(False, description="+t: only operators set the topic")
    key: str | None = Field(None, description="+k: a join needs it")
    limit: int | None = Field(None, description="+l: members at most (the invited come in all the same, as for +k)")
    bans: list[Ban] = Field(default_factory=list, description="+b: whom a join refuses")
    ops: list[str] = Field(default_factory=list, description="+o: its operators (the owner's, as made)")
    voiced: list[str] = Field(default_factory=list, description="+v: who may write to it when moderated")


class RoomDetail(RoomInfo):
    member_names: list[str] = Field(description="as each spelled it when joining")


class JoinIn(BaseModel):
    key: str | None = Field(None, max_length=MAX_KEY_CHARS * 4, description="the room's key (+k), when it has one")


class Joined(BaseModel):
    room: RoomInfo
    created: bool = Field(description="the room was made now, owned by the user")


class Left(BaseModel):
    left: bool = Field(description="false: the user was not a member")


class RoomList(BaseModel):
    rooms: list[RoomInfo] = Field(description="by name")


class RoomChange(BaseModel):
    by: Name = Field(description="who asks: a member (for private, the owner)")
    topic: str | None = Field(None, max_length=MAX_TOPIC_CHARS, description='the new topic ("" clears it); any member')
    private: bool | None = Field(None, description="invitations only, or open to all; an operator")
    moderated: bool | None = Field(None, description="+m / -m; an operator, as for every setting below")
    no_external: bool | None = None
    secret: bool | None = None
    topic_lock: bool | None = None
    key: Key | Literal[""] | None = Field(None, description='the key a join needs ("" removes it)')
    limit: int | None = Field(None, ge=0, le=MAX_ROOM_LIMIT, description="members at most (0 removes it)")
    ban: list[Mask] = Field(default_factory=list, max_length=MAX_BANS)
    unban: list[Mask] = Field(default_factory=list, max_length=MAX_BANS)
    op: list[Name] = Field(default_factory=list, max_length=MAX_MODE_CHANGES, description="members made operators")
    deop: list[Name] = Field(default_factory=list, max_length=MAX_MODE_CHANGES)
    voice: list[Name] = Field(default_factory=list, max_length=MAX_MODE_CHANGES, description="members who may write when moderated")
    devoice: list[Name] = Field(default_factory=list, max_length=MAX_MODE_CHANGES)

    def mode(self) -> ModeChange:
        return ModeChange(
            self.moderated, self.no_external, self.secret, self.topic_lock, self.key, self.limit,
            tuple(self.ban), tuple(self.unban), tuple(self.op), tuple(self.deop), tuple(self.voice), tuple(self.devoice),
        )  # fmt: skip

    @field_validator("topic")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None:
            if problem := unencodable(value):
                raise ValueError(problem)
            if any(char in LINE_BREAKS for char in value):
                raise ValueError("a topic is one line")
        return value


class InviteIn(BaseModel):
    by: Name = Field(description="a member (of a private room: an operator)")
    user: Name


class Invited(BaseModel):
    room: RoomInfo
    user: str = Field(description="as given")
    created: bool = Field(description="the invitation is new")
    member: bool = Field(description="the user is a member already")


class KickIn(BaseModel):
    by: Name = Field(description="an operator")
    user: Name


class Kicked(BaseModel):
    kicked: bool = Field(description="false: the user was neither a member nor invited")


class RoomHistory(BaseModel):
    messages: list[Message] = Field(description="oldest first")
    next: str | None = Field(description="the cursor of the page before this one; null: none")


class RoomLoginsIn(BaseModel):
    users: list[Name] = Field(min_length=1, max_length=MAX_ROOM_LOGINS)
    catchup: int = Field(CATCHUP_DEFAULT, ge=0, le=MAX_CATCHUP, description="newest unread messages shown per room, at most")
    defaults: list[RoomName] = Field(default_factory=list, max_length=MAX_DEFAULT_ROOMS, description="rooms a user joins at the first login ever (made if missing)")


class RoomCatchup(BaseModel):
    room: RoomInfo
    unread: int = Field(description="messages after the user's marker, not the user's own (counted back MAX_UNREAD at most)")
    messages: list[Message] = Field(description="the newest `catchup` of them, oldest first")
    marker: str | None = Field(description="the user's read marker as a cursor; null: nothing read")


class RoomLogins(BaseModel):
    logins: dict[str, list[RoomCatchup]] = Field(description="by user (lower case), every user asked: the rooms they are in, by name")


class MarkerIn(BaseModel):
    user: Name
    conversation: Destination = Field(description="a room, or the other person of a direct conversation")
    id: MessageId = Field(description="the newest message read")
    timestamp: Annotated[datetime, AfterValidator(in_utc)] = Field(description="its timestamp")


def in_utc(value: datetime) -> datetime:
    """A timestamp as UTC to the millisecond; ValueError (422) for one that has no UTC
    time (an offset pushing it past year 1 or 9999)."""
    try:
        return parse_timestamp(value)
    except ValueError:
        raise ValueError("a timestamp out of range") from None


class MarkersIn(BaseModel):
    markers: list[MarkerIn] = Field(min_length=1, max_length=MAX_MARKERS)


class Advanced(BaseModel):
    advanced: int = Field(description="markers that moved (never back; none in a room the user is not in)")


class ConversationOut(BaseModel):
    kind: Literal["dm", "room"]
    name: str = Field(description="the room, or the other person, as spelled")
    last: Message | None
    unread: int


class Conversations(BaseModel):
    user: str
    conversations: list[ConversationOut] = Field(description="the most recent first")


class RoomRefusal(BaseModel):
    detail: str
    reason: RoomReason


# --- dependencies and answers ------------------------------------------------------------


async def get_rooms(request: Request) -> RoomStore:
    """The rooms, with their indexes (and the store's) made."""
    rooms: RoomStore = request.app.state.rooms
    await rooms.ensure_indexes()
    return rooms


RoomsDep = Annotated[RoomStore, Depends(get_rooms)]

REFUSED: Final[dict[int | str, dict[str, Any]]] = {
    403: {"model": RoomRefusal, "description": "refused: private, not_member, too_many_rooms, banned, bad_key, full, not_in_room or bad_mode"},
    404: {"model": RoomRefusal, "description": "no_room: there is no such room"},
}


async def room_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RoomRefused)
    code = status.HTTP_404_NOT_FOUND if exc.reason == RoomReason.NO_ROOM else status.HTTP_403_FORBIDDEN
    return JSONResponse({"detail": exc.detail, "reason": exc.reason.value}, code)


def routes() -> APIRouter:
    router = APIRouter(tags=["rooms"])
    missing: dict[int | str, dict[str, Any]] = {404: {"model": RoomRefusal, "description": "no_room"}}
    router.post("/rooms/logins", response_model=RoomLogins)(room_logins)
    router.get("/rooms", response_model=RoomList)(list_rooms)
    router.get("/rooms/{room}", response_model=RoomDetail, responses=missing)(get_room)
    router.patch("/rooms/{room}", response_model=RoomInfo, responses=REFUSED)(change_room)
    router.put("/rooms/{room}/members/{user}", response_model=Joined, responses={403: REFUSED[403]})(join_room)
    router.delete("/rooms/{room}/members/{user}", response_model=Left)(leave_room)
    router.post("/rooms/{room}/invitations", response_model=Invited, responses=REFUSED)(invite)
    router.post("/rooms/{room}/kicks", response_model=Kicked, responses=REFUSED)(kick)
    router.get("/rooms/{room}/history", response_model=RoomHistory, responses=REFUSED)(room_history)
    router.post("/markers", response_model=Advanced, tags=["conversations"])(advance_markers)
    router.get("/conversations/{user}", response_model=Conversations, tags=["conversations"])(conversations)
    return router


# --- routes --------------------------------------------------------------------------------


async def join_room(room: PathRoom, user: PathName, rooms: RoomsDep, body: JoinIn | None = None) -> Joined:
    """The user joins the room; a room nobody has made yet is made, owned by the user.
    Its owner and operators always come in; others are refused (403) by a ban that
    matches them (banned), and unless invited by a private room (private), a key not
    given (bad_key) or a full room (full)."""
    doc, created = await rooms.join(room, user, body.key if body is not None else None)
    return Joined(room=RoomInfo(**room_info(doc)), created=created)


async def leave_room(room: PathRoom, user: PathName, rooms: RoomsDep) -> Left:
    """The user leaves the room (its owner too: the room stays)."""
    return Left(left=await rooms.leave(room, user))


async def get_room(room: PathRoom, rooms: RoomsDep) -> RoomDetail:
    found = await rooms.room(room)
    if found is None:
        raise RoomRefused(RoomReason.NO_ROOM, f"There is no room {room}.")
    doc, names = found
    return RoomDetail(**room_info(doc), member_names=names)


async def list_rooms(user: QueryName, rooms: RoomsDep) -> RoomList:
    """Every public room, and the private rooms `user` is a member of, by name."""
    return RoomList(rooms=[RoomInfo(**room_info(doc)) for doc in await rooms.rooms_for(user)])


async def change_room(room: PathRoom, body: RoomChange, rooms: RoomsDep) -> RoomInfo:
    """Set the topic (any member; under topic_lock an operator) or change the room's
    settings (an operator; the owner may always make itself one again). Operators
    and voices named must be members (else 403, reason not_in_room)."""
    return RoomInfo(**room_info(await rooms.set_room(room, body.by, body.topic, body.private, body.mode())))


async def invite(room: PathRoom, body: InviteIn, rooms: RoomsDep) -> Invited:
    """Record an invitation (into a private room it lets the user join): any member may
    invite to a public room, the owner to a private one. Telling the invitee is the
    chat server's part."""
    doc, created, member = await rooms.invite(room, body.by, body.user)
    return Invited(room=RoomInfo(**room_info(doc)), user=body.user, created=created, member=member)


async def kick(room: PathRoom, body: KickIn, rooms: RoomsDep) -> Kicked:
    """An operator removes a user's membership and invitation."""
    return Kicked(kicked=await rooms.kick(room, body.by, body.user))


async def room_history(
    room: PathRoom,
    user: QueryName,
    rooms: RoomsDep,
    limit: Annotated[int, Query(ge=1, le=HISTORY_PAGE)] = HISTORY_PAGE_DEFAULT,
    cursor: Annotated[str | None, Query(max_length=200, description="`next` of the page after this one")] = None,
) -> JSONResponse:
    """A page of the room's history, oldest first, for a member (`user`, else 403,
    reason not_member); `next` pages further back, without gaps or repeats however
    many messages share a millisecond."""
    docs, more = await rooms.history(room, user, limit, cursor_key(cursor))
    next_cursor = encode_cursor((docs[-1]["timestamp"], docs[-1]["id"])) if more else None
    return JSONResponse({"messages": docs[::-1], "next": next_cursor})


async def room_logins(body: RoomLoginsIn, rooms: RoomsDep) -> JSONResponse:
    """A batch of logins' rooms (a login storm asks once for many): for every user asked,
    by name lower-cased, the rooms they are members of with unread counts, up to
    `catchup` of the newest unread messages and their read marker. A user seen for the
    first time ever joins `defaults` first (made if missing, owned by "server");
    once per user: a leave sticks. A bounded number of queries, not one per user."""
    return JSONResponse({"logins": await rooms.logins(body.users, body.catchup, body.defaults)})


async def advance_markers(body: MarkersIn, rooms: RoomsDep) -> Advanced:
    """Move read markers forward (a marker never moves back; one in a room the user is
    not a member of is ignored): unread counts are what lies after them. For the chat
    server, which knows who read what; a caller serving one person passes that
    person only."""
    markers = [(m.user, m.conversation, m.id, m.timestamp) for m in body.markers]
    return Advanced(advanced=await rooms.advance(markers))


async def conversations(user: PathName, rooms: RoomsDep) -> JSONResponse:
    """The user's conversations (people and rooms), the most recent first, each with
    its newest message and unread count: the page's list, the same on every device.
    Answered for whichever user is named: a caller serving one person (the web
    adapter) passes the user logged in on that connection only."""
    return JSONResponse({"user": user, "conversations": await rooms.conversations(user)})
