"""The web adapter: serves the chat page and bridges each WebSocket to the chat server."""

from __future__ import annotations

import argparse

from chatnet.cli import add_chat_server_flags, add_debug_flag, run, settings_from, setup_logging
from chatnet.web import serve


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the chat page and its WebSocket bridge.")
    parser.add_argument("--host", dest="web_host", help="address to listen on (WEB_HOST)")
    parser.add_argument("--port", dest="web_port", type=int, help="port to listen on (WEB_PORT)")
    parser.add_argument("--tls", dest="web_tls", action="store_true", default=None, help="serve HTTPS and WSS with TLS_CERT/TLS_KEY (WEB_TLS)")
    add_chat_server_flags(parser)
    add_debug_flag(parser)
    args = parser.parse_args()
    setup_logging(args.debug)
    run(serve(settings_from(args, "debug")))


if __name__ == "__main__":
    main()
