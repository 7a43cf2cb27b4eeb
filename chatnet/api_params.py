"""What the message API's route modules (`chatnet.api`, `chatnet.api_mail`,
`chatnet.api_rooms`, ...) share: one definition of what a name, a room, a state's key or
a message id may be in a URL, and the store as a route's dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request
from pydantic import AfterValidator, StringConstraints

from chatnet.limits import NAME_PATTERN, NAME_RULE, ROOM_PATTERN, ROOM_RULE
from chatnet.protocol import name_or_room, not_dots_alone
from chatnet.store import Store

PathName = Annotated[str, Path(pattern=NAME_PATTERN, description=NAME_RULE), AfterValidator(not_dots_alone)]
QueryName = Annotated[str, Query(pattern=NAME_PATTERN, description=NAME_RULE), AfterValidator(not_dots_alone)]
PathRoom = Annotated[str, Path(pattern=ROOM_PATTERN, description=f"{ROOM_RULE} (in a URL: %23 for '#')")]
RoomName = Annotated[str, StringConstraints(pattern=ROOM_PATTERN)]
# A state's key: a user's name, or a room's (a bot's thread for a room), '#' as %23.
PathKey = Annotated[str, Path(pattern=r"^#?[A-Za-z0-9_.\-]{1,32}$", description=f"{NAME_RULE}, or a room"), AfterValidator(name_or_room)]
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


async def get_store(request: Request) -> Store:
    """The store, with its indexes made (retried here if the database was down at start)."""
    store: Store = request.app.state.store
    await store.ensure_indexes()
    return store


StoreDep = Annotated[Store, Depends(get_store)]
