"""The message API: offline mail, history, subscriptions and health over HTTP.

    python message_api.py [--host 127.0.0.1] [--port 8000]

Settings come from the environment and `.env` (MONGO_URL, MONGO_DB, API_TOKEN, ...).
"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from chatnet.api import create_app
from chatnet.config import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="address to listen on (API_HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (API_PORT)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    args = parser.parse_args()
    overrides = {"api_host": args.host, "api_port": args.port}
    settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
