"""thermometer1: a bot peer that broadcasts a simulated temperature to its subscribers."""

from __future__ import annotations

import argparse

from chatnet.cli import add_chat_server_flags, add_debug_flag, run, settings_from, setup_logging
from chatnet.thermometer import run_thermometer


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the thermometer bot (a subscription service).")
    parser.add_argument("--name", dest="thermometer_name", help="its name on the network (THERMOMETER_NAME)")
    parser.add_argument("--interval", dest="thermometer_interval", type=float, help="seconds between readings (THERMOMETER_INTERVAL)")
    add_chat_server_flags(parser)
    add_debug_flag(parser)
    args = parser.parse_args()
    setup_logging(args.debug)
    run(run_thermometer(settings_from(args, "debug")))


if __name__ == "__main__":
    main()
