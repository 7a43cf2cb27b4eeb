"""Terminal client of chatnet: `python async_client.py [--user NAME] [--host H] [--port P]`."""

from __future__ import annotations

import argparse
import logging
import sys

from chatnet.cli import settings_from
from chatnet.client import main as run


def main() -> int:
    parser = argparse.ArgumentParser(description="Chat on a chatnet server from this terminal.")
    parser.add_argument("--user", help="log in with this name (asked for otherwise)")
    parser.add_argument("--host", dest="chat_host", help="chat server host (default: CHAT_HOST or 127.0.0.1)")
    parser.add_argument("--port", dest="chat_port", type=int, help="chat server port (default: CHAT_PORT or 5000)")
    args = parser.parse_args()
    settings = settings_from(args, "user")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(settings, args.user)
    except KeyboardInterrupt:  # Ctrl-C between two prompts
        print("Goodbye.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
