"""The chat server: one node of the network, put together.

    Session (one per connection: bytes)  ── holds ──>  dialect (text | json: the wire format)
        │  events                                          ^
        v                                                  │ renders
    Router (who is online, routing, commands, hand-over) ──┘ through the session
        ├── Rooms, People, Operators (rooms, names and accounts, network operators: their
        │   commands merged into the router's table; none of them imports the router)
        ├── Directory (who is online here) and, with CLUSTER_URL, Nodes (the others, through Redis)
        └── MailWriter, Archiver (delivery off the routing path, through the message API)

`ChatServer` owns the listener and the order of start and stop; `serve` runs one until
SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final, cast

from chatnet import native
from chatnet.api_client import ApiClient
from chatnet.cli import collect_rarely, stop_on_signals
from chatnet.config import Settings
from chatnet.dialects import TEXT, IrcDialect, pick_text_or_json
from chatnet.errors import ClusterUnavailable
from chatnet.flood import flood_buckets
from chatnet.router import Router
from chatnet.session import Session
from chatnet.tls import server_context

logger = logging.getLogger("chatnet.server")

# A burst of connects waits in the kernel instead of failing.
LISTEN_BACKLOG: Final = 4096
SHUTDOWN_GRACE: Final = 5.0


def protocol_factory(make: Callable[[], Session]) -> Callable[[], asyncio.BaseProtocol]:
    """`make` as the loop's listeners take it. A Session has asyncio.Protocol's methods but
    not its base class, which a class compiled by mypyc (chatnet/native.py) cannot have;
    asyncio and uvloop only ever call the methods."""
    return cast(Callable[[], asyncio.BaseProtocol], make)


class ChatServer:
    """The listeners (plain, and TLS when a certificate is set) and the router behind them."""

    def __init__(self, settings: Settings, api: ApiClient) -> None:
        self.settings = settings
        self.router = Router(settings, api)
        self.flood_bucket = flood_buckets(settings.flood_rate, settings.flood_burst)
        self._listener: asyncio.Server | None = None
        self._tls_listener: asyncio.Server | None = None
        self._irc_listener: asyncio.Server | None = None
        self._irc_tls_listener: asyncio.Server | None = None

    def session(self) -> Session:
        """A new connection's session: text and JSON share the port, the flood bucket
        as the settings say."""
        return Session(self.router, TEXT, pick_text_or_json, self.flood_bucket())

    def irc_session(self) -> Session:
        """A new IRC connection's session, with a dialect of its own (IRC negotiates)."""
        return Session(self.router, IrcDialect(), None, self.flood_bucket())

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host = self.settings.chat_host
        await self.router.join_network()  # with CLUSTER_URL: Redis first, or no node
        # Several nodes on one host share the ports; the kernel spreads the connections.
        share = self.settings.cluster_url is not None
        session, irc_session = protocol_factory(self.session), protocol_factory(self.irc_session)
        self._listener = await loop.create_server(session, host, self.settings.chat_port, backlog=LISTEN_BACKLOG, reuse_address=True, reuse_port=share)
        context = server_context(self.settings)
        if context is not None:
            self._tls_listener = await loop.create_server(
                session, host, self.settings.chat_tls_port, backlog=LISTEN_BACKLOG, reuse_address=True, reuse_port=share, ssl=context
            )
        if self.settings.irc:
            self._irc_listener = await loop.create_server(irc_session, host, self.settings.irc_port, backlog=LISTEN_BACKLOG, reuse_address=True, reuse_port=share)
            if context is not None:
                self._irc_tls_listener = await loop.create_server(
                    irc_session, host, self.settings.irc_tls_port, backlog=LISTEN_BACKLOG, reuse_address=True, reuse_port=share, ssl=context
                )
        self.router.start()
        logger.info("routing with the %s", "compiled hot path (build/native)" if native.active else "Python modules (no compiled build)")
        # The IRC ports first: whoever waits for the chat port's line knows them all then.
        if self._irc_listener is not None:
            logger.info("listening for IRC on %s:%d", host, self.irc_port)
        if self._irc_tls_listener is not None:
            logger.info("listening for IRC with TLS on %s:%d", host, self.irc_tls_port)
        if self._tls_listener is not None:
            logger.info("listening with TLS on %s:%d", host, self.tls_port)
        logger.info("listening on %s:%d", host, self.port)

    @property
    def port(self) -> int:
        """The port listened on (the real one when the settings asked for port 0)."""
        return _port(self._listener)

    @property
    def tls_port(self) -> int:
        return _port(self._tls_listener)

    @property
    def irc_port(self) -> int:
        return _port(self._irc_listener)

    @property
    def irc_tls_port(self) -> int:
        return _port(self._irc_tls_listener)

    async def stop(self) -> None:
        """Stop accepting, say goodbye, store what is queued, close everyone."""
        for listener in (self._listener, self._tls_listener, self._irc_listener, self._irc_tls_listener):
            if listener is not None:
                listener.close()
        await self.router.stop(SHUTDOWN_GRACE)
        mail = self.router.mail
        logger.info("stopped (mail saved: %d, not saved: %d)", mail.saved, mail.failed)


def _port(listener: asyncio.Server | None) -> int:
    assert listener is not None
    port: int = listener.sockets[0].getsockname()[1]
    return port


async def serve(settings: Settings) -> None:
    """Run the chat server until SIGINT/SIGTERM."""
    stop = stop_on_signals()
    async with ApiClient.from_settings(settings) as api:
        server = ChatServer(settings, api)
        try:
            await server.start()
        except ClusterUnavailable as exc:
            logger.error("cannot join the network: %s (CLUSTER_URL=%s)", exc, settings.cluster_url)
            raise SystemExit(1) from None
        # Everything made so far lives as long as the process: kept out of the
        # garbage collector's passes, which would otherwise pause routing.
        collect_rarely()
        await stop.wait()
        logger.info("shutting down")
        await server.stop()
