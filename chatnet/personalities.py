"""The openai bot's personalities: name -> the system prompt that makes it.

Pure data, so the web adapter can list them for the page without importing the bot
(and with it the `openai` SDK). `BOT_PERSONALITIES` adds more at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

PERSONALITIES: Final[Mapping[str, str]] = {
    "happy": "You are cheerful and upbeat: warm, encouraging, a little playful.",
    "angry": "You are grumpy and irritable: you answer correctly, but you complain and grumble while doing it.",
    "spanish": "You always answer in Spanish, whatever language the user writes in.",
}


def personalities(configured: Mapping[str, str]) -> dict[str, str]:
    """What the bot offers: the built-in personalities, then the configured ones.
    Names are case-insensitive; a configured one replaces a built-in of its name. The
    first is the default; `rotate` goes through them in this order."""
    return {**PERSONALITIES, **{name.lower(): prompt for name, prompt in configured.items()}}
