"""openai: a bot peer that answers with an LLM (any OpenAI-compatible server)."""

from __future__ import annotations

import argparse
import logging

from chatnet.assistant import run_assistant
from chatnet.cli import add_chat_server_flags, add_debug_flag, run, settings_from, setup_logging


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the OpenAI assistant bot.")
    parser.add_argument("--name", dest="bot_name", help="its name on the network (BOT_NAME)")
    parser.add_argument("--model", dest="openai_model", help="model name (OPENAI_MODEL)")
    parser.add_argument("--base-url", dest="openai_base_url", help="OpenAI-compatible API URL (OPENAI_BASE_URL)")
    add_chat_server_flags(parser)
    add_debug_flag(parser)
    args = parser.parse_args()
    setup_logging(args.debug)
    # The SDK's HTTP client logs every request at INFO; that is noise here.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    run(run_assistant(settings_from(args, "debug")))


if __name__ == "__main__":
    main()
