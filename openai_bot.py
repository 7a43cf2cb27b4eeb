"""The bot host: the openai bot and every LLM bot defined through the message API, each
a peer of its own on the network, and the HTTP chat with any of them (BOTS_PORT)."""

from __future__ import annotations

import argparse
import logging

from chatnet.bot_host import serve_host
from chatnet.cli import add_chat_server_flags, add_debug_flag, run, settings_from, setup_logging


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the bot host: the openai bot and the bots defined through the API.")
    parser.add_argument("--name", dest="bot_name", help="the default bot's name on the network (BOT_NAME)")
    parser.add_argument("--model", dest="openai_model", help="model name when a bot names none (OPENAI_MODEL)")
    parser.add_argument("--base-url", dest="openai_base_url", help="OpenAI-compatible API URL when a bot names none (OPENAI_BASE_URL)")
    parser.add_argument("--port", dest="bots_port", type=int, help="port of the HTTP chat with the bots (BOTS_PORT)")
    add_chat_server_flags(parser)
    add_debug_flag(parser)
    args = parser.parse_args()
    setup_logging(args.debug)
    # The SDK's HTTP client logs every request at INFO; that is noise here.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    run(serve_host(settings_from(args, "debug")))


if __name__ == "__main__":
    main()
