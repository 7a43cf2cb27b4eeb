"""thermometer1: a bot peer that broadcasts a simulated temperature to its subscribers."""

from __future__ import annotations

import argparse
import asyncio
import logging

from chatnet.config import Settings
from chatnet.thermometer import run_thermometer


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the thermometer bot (a subscription service).")
    parser.add_argument("--name", dest="thermometer_name", help="its name on the network (THERMOMETER_NAME)")
    parser.add_argument("--interval", dest="thermometer_interval", type=float, help="seconds between readings (THERMOMETER_INTERVAL)")
    parser.add_argument("--chat-host", help="chat server address (CHAT_HOST)")
    parser.add_argument("--chat-port", type=int, help="chat server port (CHAT_PORT)")
    parser.add_argument("--debug", action="store_true", help="log every frame")
    args = parser.parse_args()
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "debug"}
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(run_thermometer(Settings(**overrides)))


if __name__ == "__main__":
    main()
