"""chatnet chat server: logins, presence, routing, commands (see README)."""

from __future__ import annotations

import argparse
import asyncio
import logging

from chatnet.config import Settings
from chatnet.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the chatnet chat server.")
    parser.add_argument("--host", help="address to listen on (CHAT_HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (CHAT_PORT)")
    parser.add_argument("--debug", action="store_true", help="log every line in and out")
    args = parser.parse_args()
    overrides = {"chat_host": args.host, "chat_port": args.port}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop  # the faster loop where the platform has it
    except ImportError:
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
