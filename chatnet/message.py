"""The `Message` model: one message as the API, the clients, the bots and the web
adapter build and check it, with the limits on its fields.

    message = Message(sender="alice", destination="bob", message="hi")
    frame = parse_message(line)          # a JSON-mode frame from the server

The chat server itself never builds one: it routes and renders lines from their fields
(`chatnet.protocol`), and takes stored mail in its JSON shape as the API checked it.
That keeps pydantic (about 14 MB of a process's memory) out of the process holding
everybody's connection.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_serializer, field_validator

from chatnet.errors import BadFrame
from chatnet.limits import MAX_MESSAGE_CHARS, NAME_PATTERN
from chatnet.protocol import MessageType, format_datetime, name_or_room, new_id, not_dots_alone, parse_timestamp, utcnow

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN), AfterValidator(not_dots_alone)]
# Where a message goes: a person (or bot), or a `#room`.
Destination = Annotated[str, StringConstraints(max_length=33), AfterValidator(name_or_room)]


class Message(BaseModel):
    """One message, as every process sees it. Invalid ones can't be built."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(default_factory=new_id)
    sender: Name | None = None
    destination: Destination | None = None
    message: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)] = ""
    timestamp: datetime = Field(default_factory=utcnow)
    type: MessageType = MessageType.CHAT
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        return parse_timestamp(value) if isinstance(value, (str, datetime)) else value

    @field_serializer("timestamp")
    def _iso(self, value: datetime) -> str:
        return format_datetime(value)


def parse_message(line: str | bytes) -> Message:
    """A server frame (JSON mode) as a Message; for clients, bots and the adapter."""
    try:
        return Message.model_validate_json(line)
    except ValueError as exc:
        raise BadFrame(f"Malformed frame from the server: {exc}") from None
