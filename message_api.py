"""The message API: offline mail, history, subscriptions and health over HTTP.

    python message_api.py [--host 127.0.0.1] [--port 8000]

Settings come from the environment and `.env` (MONGO_URL, MONGO_DB, API_TOKEN, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any, Final

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from chatnet.api import create_app
from chatnet.cli import LOG_FORMAT, collect_rarely, settings_from
from chatnet.process import die_with_parent, yield_cpu

# An idle keep-alive connection is closed after this long. Longer than the idle time of
# the API's own clients' pools (chatnet.http_client reuses an idle connection for 15 s),
# so they always close first and never reuse a connection the API is just closing.
API_KEEP_ALIVE_SECONDS: Final = 20
# A whole request (line, headers and body) must arrive within this long of its first
# byte, or of the connection opening. uvicorn has no such limit (its keep-alive timer
# stops at the first byte and is not armed on a new connection), so a client trickling
# one byte a second, or connecting and saying nothing, held a connection for ever. The
# API's callers send each request in one write on loopback or a LAN: 10 s is generous.
API_REQUEST_SECONDS: Final = 10.0
# Request line plus headers (h11's default, stated): a bearer token and a few headers
# need far less, and an incomplete head larger than this is answered 400 at once.
API_MAX_HEAD_BYTES: Final = 16 * 1024
# No `limit_concurrency`: past it uvicorn answers 503 to everyone, honest callers
# included (the chat server's login storm); the deadline above bounds slow peers instead.

# h11 states in which the peer is still sending the current request.
_RECEIVING: Final = (h11.IDLE, h11.SEND_BODY)


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on receiving each request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is a slow request too

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Between requests uvicorn's keep-alive timer rules; a pipelined request
        # already partly buffered starts its own deadline now.
        if self.conn.trailing_data[0]:
            self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _track(self) -> None:
        if self.conn.their_state in _RECEIVING:
            if self._request_deadline is None:
                self._arm()
        else:  # the whole request is in (or the connection is done): the app's turn
            self._disarm()

    def _arm(self) -> None:
        self._disarm()
        self._request_deadline = self.loop.call_later(API_REQUEST_SECONDS, self._too_slow)

    def _disarm(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def _too_slow(self) -> None:
        self._request_deadline = None
        if self.conn.their_state in _RECEIVING and not self.transport.is_closing():
            self.transport.close()  # a slow peer gets no answer: it would only read it slowly


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", dest="api_host", help="address to listen on (API_HOST)")
    parser.add_argument("--port", dest="api_port", type=int, help="port to listen on (API_PORT)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    args = parser.parse_args()
    settings = settings_from(args, "log_level")
    die_with_parent()
    yield_cpu(settings.background_cpu)  # before uvicorn's and motor's threads, which inherit it
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    app = create_app(settings)
    collect_rarely()  # FastAPI's, pydantic's and motor's objects: never walked again
    uvicorn.run(
        app, host=settings.api_host, port=settings.api_port, log_config=None, access_log=False,
        http=DeadlineH11Protocol, timeout_keep_alive=API_KEEP_ALIVE_SECONDS, h11_max_incomplete_event_size=API_MAX_HEAD_BYTES,
    )  # fmt: skip


if __name__ == "__main__":
    main()
