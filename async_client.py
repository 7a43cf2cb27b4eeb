"""Terminal client of chatnet: `python async_client.py [--user NAME] [--host H] [--port P] [--tls [--cafile PEM]]`.

A registered name is asked its password without echo; CHATNET_PASSWORD answers instead.
Inside, /help lists the commands (/join, /msg, /query, /part …); after a break the
client reconnects and logs in again by itself. /quit, Ctrl-D and Ctrl-C exit 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from chatnet.cli import settings_from
from chatnet.client import main as run


def main() -> int:
    parser = argparse.ArgumentParser(description="Chat on a chatnet server from this terminal.")
    parser.add_argument("--user", help="log in with this name (asked for otherwise)")
    parser.add_argument("--host", dest="chat_host", help="chat server host (default: CHAT_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="chat server port (default: CHAT_PORT or 5000; with --tls CHAT_TLS_PORT or 5443)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS, verifying the server's certificate")
    parser.add_argument("--cafile", type=Path, help="with --tls: trust only this PEM file (default: the system's CAs and DATA_DIR/tls/cert.pem)")
    args = parser.parse_args()
    if args.cafile is not None and not args.tls:
        parser.error("--cafile goes with --tls")
    if args.port is not None:  # --port names the port of the kind of connection asked for
        setattr(args, "chat_tls_port" if args.tls else "chat_port", args.port)
    settings = settings_from(args, "user", "port", "tls", "cafile")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(settings, args.user, tls=args.tls, cafile=args.cafile)
    except KeyboardInterrupt:  # Ctrl-C between two prompts
        print("Goodbye.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
