"""chatnet chat server: logins, presence, routing, commands (see README)."""

from __future__ import annotations

import argparse

from chatnet.cli import add_debug_flag, add_irc_flags, run, settings_from, setup_logging
from chatnet.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the chatnet chat server.")
    parser.add_argument("--host", dest="chat_host", help="address to listen on (CHAT_HOST)")
    parser.add_argument("--port", dest="chat_port", type=int, help="port to listen on (CHAT_PORT)")
    add_irc_flags(parser)
    add_debug_flag(parser)
    args = parser.parse_args()
    setup_logging(args.debug)
    run(serve(settings_from(args, "debug")))


if __name__ == "__main__":
    main()
