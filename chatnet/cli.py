"""What every entry script shares: settings from its flags, logging, the event loop.

A flag's `dest` is the name of the setting it overrides (`--port` → `chat_port`), so
`settings_from(args)` is all a script needs to merge flags over the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
from collections.abc import Coroutine
from typing import Any, Final

from chatnet.config import Settings
from chatnet.errors import BadSetting
from chatnet.process import die_with_parent

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# New container objects between the garbage collector's passes (Python's default: 700).
# Measured with gc.callbacks: through a throughput run at N = 1,000 the chat server's
# collector made ~800 passes, found nothing, and took 9 % of its CPU, each pass walking
# again the thousands of lines in flight until the readers' TCP stacks acknowledge them;
# at 50,000, two passes. The message API's, in the latency run, made five full passes of
# ~66 ms each over its 100,000 objects of FastAPI, pydantic and motor: every request
# waited meanwhile.
GC_THRESHOLD: Final = 50_000


def collect_rarely() -> None:
    """For a long-running process, once it is set up: what it has made by now lives as
    long as it, out of the collector's passes (`gc.freeze`), and the passes come every
    GC_THRESHOLD new objects. Cycles are still collected, only later."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD)


def settings_from(args: argparse.Namespace, *not_settings: str) -> Settings:
    """Settings from the environment and `.env`, with every flag that was given on top. A
    value that can't be read ends the process with one line naming it, not a traceback."""
    try:
        return Settings(**{key: value for key, value in vars(args).items() if value is not None and key not in not_settings})
    except BadSetting as exc:
        raise SystemExit(f"Bad setting: {exc}") from None


def add_chat_server_flags(parser: argparse.ArgumentParser) -> None:
    """Where a client of the chat server connects (bots, the web adapter)."""
    parser.add_argument("--chat-host", dest="chat_host", help="chat server address (CHAT_HOST)")
    parser.add_argument("--chat-port", dest="chat_port", type=int, help="chat server port (CHAT_PORT)")


def add_irc_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--irc-port", dest="irc_port", type=int, help="IRC port (IRC_PORT)")
    parser.add_argument("--no-irc", dest="irc", action="store_false", default=None, help="don't listen for IRC clients (IRC=false)")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=None, help="log every line in and out")


def setup_logging(debug: bool | None = False) -> None:
    die_with_parent()  # every entry script comes here first
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format=LOG_FORMAT)


def run(main: Coroutine[Any, Any, Any]) -> Any:
    """Run `main` on uvloop where the platform has it, else on the standard loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (the running loop's): how a process is told to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop
