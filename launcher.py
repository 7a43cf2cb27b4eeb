"""Start the whole chatnet network, supervised: `python launcher.py [--no-web] …`."""

from __future__ import annotations

import argparse
import logging
import sys

from chatnet.cli import LOG_FORMAT, add_irc_flags, settings_from
from chatnet.launcher import optional_children, run


def main() -> int:
    parser = argparse.ArgumentParser(description="Start chatnet: store, message API, chat server, web adapter, bots.")
    for spec in optional_children():
        parser.add_argument(f"--no-{spec.name}", action="append_const", const=spec.name, dest="skip", help=f"don't start the {spec.title}")
    parser.add_argument("--chat-port", dest="chat_port", type=int, help="chat server port (CHAT_PORT)")
    add_irc_flags(parser)
    parser.add_argument("--nodes", type=int, default=1, help="chat-server nodes sharing its ports (a local redis-server joins them unless CLUSTER_URL is set)")
    parser.add_argument("--api-port", dest="api_port", type=int, help="message API port (API_PORT)")
    parser.add_argument("--web-port", dest="web_port", type=int, help="web page port (WEB_PORT)")
    parser.add_argument("--mongo-url", dest="mongo_url", help="MongoDB to use (MONGO_URL); the embedded store starts when nothing answers there")
    args = parser.parse_args()
    settings = settings_from(args, "skip", "nodes")
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    logfile = logging.FileHandler(settings.log_dir / "launcher.log")
    logfile.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[console, logfile])
    if args.nodes < 1:
        parser.error("--nodes is 1 or more")
    return run(settings, set(args.skip or ()), args.nodes)


if __name__ == "__main__":
    sys.exit(main())
