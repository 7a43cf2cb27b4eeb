"""The web adapter: serves the chat page and bridges each WebSocket to the chat server."""

from __future__ import annotations

import argparse
import asyncio
import logging

from chatnet.config import Settings
from chatnet.web import serve


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the chat page and its WebSocket bridge.")
    parser.add_argument("--host", dest="web_host", help="address to listen on (WEB_HOST)")
    parser.add_argument("--port", dest="web_port", type=int, help="port to listen on (WEB_PORT)")
    parser.add_argument("--chat-host", help="chat server address (CHAT_HOST)")
    parser.add_argument("--chat-port", type=int, help="chat server port (CHAT_PORT)")
    parser.add_argument("--debug", action="store_true", help="log every frame")
    args = parser.parse_args()
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "debug"}
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(Settings(**overrides)))


if __name__ == "__main__":
    main()
