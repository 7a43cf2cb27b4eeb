"""Exceptions of chatnet.

    ChatError
    ├── ProtocolError        the peer sent something we can't accept (its fault;
    │   │                    the connection stays, the peer gets an error reply)
    │   ├── LineTooLong
    │   ├── BadEncoding
    │   └── BadFrame         malformed JSON, unknown type, invalid field
    ├── StoreUnavailable     the message API could not confirm a write or read
    └── ApiRejected          the message API refused a request (4xx: the caller's fault)
"""


class ChatError(Exception):
    """Base of every chatnet error."""


class ProtocolError(ChatError):
    """A peer sent a line we can't accept. The message is safe to show to it."""


class LineTooLong(ProtocolError):
    pass


class BadEncoding(ProtocolError):
    pass


class BadFrame(ProtocolError):
    pass


class StoreUnavailable(ChatError):
    """The message API could not be reached or refused the request."""


class ApiRejected(ChatError):
    """The message API refused the request (a 4xx answer); the text says why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"message API refused the request ({status}): {detail}")
        self.status = status
        self.detail = detail
