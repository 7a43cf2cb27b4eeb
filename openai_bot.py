"""openai: a bot peer that answers with an LLM (any OpenAI-compatible server)."""

from __future__ import annotations

import argparse
import asyncio
import logging

from chatnet.assistant import run_assistant
from chatnet.config import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the OpenAI assistant bot.")
    parser.add_argument("--name", dest="bot_name", help="its name on the network (BOT_NAME)")
    parser.add_argument("--model", dest="openai_model", help="model name (OPENAI_MODEL)")
    parser.add_argument("--base-url", dest="openai_base_url", help="OpenAI-compatible API URL (OPENAI_BASE_URL)")
    parser.add_argument("--chat-host", help="chat server address (CHAT_HOST)")
    parser.add_argument("--chat-port", type=int, help="chat server port (CHAT_PORT)")
    parser.add_argument("--debug", action="store_true", help="log every frame")
    args = parser.parse_args()
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "debug"}
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The SDK's HTTP client logs every request at INFO; that is noise here.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    asyncio.run(run_assistant(Settings(**overrides)))


if __name__ == "__main__":
    main()
