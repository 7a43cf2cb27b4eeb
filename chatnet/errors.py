"""Exceptions of chatnet: one tree, so a caller catches by whose fault it was.

    ChatError
    ├── ProtocolError        a peer sent something we can't accept (its fault: the
    │   │                    connection stays and the peer is told why)
    │   ├── LineTooLong
    │   ├── BadEncoding
    │   ├── BadFrame         malformed JSON, unknown type, invalid field
    │   └── LoginFailed      a login attempt the server refused; the peer may try again
    ├── LoginRefused         (client side) the server refused our login: permanent,
    │                        retrying the same login gets the same answer
    ├── LoginInterrupted     (client side) the connection closed before the server
    │                        answered the login: worth retrying
    ├── StoreUnavailable     the message API could not confirm a write or read
    ├── ApiRejected          the message API refused a request (4xx: the caller's fault)
    ├── ChildFailed          a child process exited or was not ready in time
    ├── StartFailed          the network can't start with these settings (a port taken,
    │                        a TLS file missing); the text says what to change
    ├── BadSetting           a setting's value can't be read (a flag, the environment,
    │                        .env); also a ValueError; the text names the variable
    └── ClusterUnavailable   Redis can't be reached now (several nodes); the link
                             reconnects by itself

Our own bugs are none of these: they propagate to the boundary that logs them.
"""


class ChatError(Exception):
    """Base of every chatnet error."""


class ProtocolError(ChatError):
    """A peer sent a line we can't accept. The message is safe to show to it."""


class LineTooLong(ProtocolError):
    """Longer than the wire format allows: the error says so with `reason` "too_long"."""


class BadEncoding(ProtocolError):
    pass


class BadFrame(ProtocolError):
    pass


class LoginFailed(ProtocolError):
    """A refused login; the peer is told why (`reason`, a LoginReason) and may try again."""

    def __init__(self, text: str, reason: str = "invalid_name", retry_after: int | None = None) -> None:
        super().__init__(text)
        self.reason = reason
        self.retry_after = retry_after


class LoginRefused(ChatError):
    """The server refused our login; the text says why, `reason` is its LoginReason
    (None from a server that gives none) and `retry_after` when to try again."""

    def __init__(self, text: str, reason: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(text)
        self.reason = reason
        self.retry_after = retry_after


class LoginInterrupted(ChatError):
    """The connection closed before the server answered our login: not a refusal."""


class StoreUnavailable(ChatError):
    """The message API could not be reached or failed (5xx)."""


class ApiRejected(ChatError):
    """The message API refused the request (a 4xx answer); the text says why, and a
    refused login check its `reason` (a LoginReason) and `retry_after`."""

    def __init__(self, status: int, detail: str, reason: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(f"message API refused the request ({status}): {detail}")
        self.status = status
        self.detail = detail
        self.reason = reason
        self.retry_after = retry_after


class ChildFailed(ChatError):
    """A child exited or did not become ready in time; the text ends with its log."""


class StartFailed(ChatError):
    """The network can't start with these settings (a port taken, a TLS file missing);
    the text says what to change."""


class BadSetting(ChatError, ValueError):
    """A setting's value can't be read as its type: "CHAT_PORT: 'abc' is not an integer".
    The text never shows a secret's value."""


class ClusterUnavailable(ChatError):
    """Redis can't be reached now; the cluster link reconnects by itself. (Here rather
    than in chatnet.cluster, so a single node never loads the Redis client.)"""
