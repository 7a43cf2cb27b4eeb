"""The message API: offline mail, history, subscriptions and health over HTTP.

    python message_api.py [--host 127.0.0.1] [--port 8000]

Settings come from the environment and `.env` (MONGO_URL, MONGO_DB, API_TOKEN, ...).
"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from chatnet.api import create_app
from chatnet.cli import LOG_FORMAT, settings_from
from chatnet.process import die_with_parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", dest="api_host", help="address to listen on (API_HOST)")
    parser.add_argument("--port", dest="api_port", type=int, help="port to listen on (API_PORT)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    args = parser.parse_args()
    settings = settings_from(args, "log_level")
    die_with_parent()
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
