"""The chat server's hot path compiled to C by mypyc, when this machine can build it.

The modules every routed line goes through (`MODULES`) are plain, type-checked Python;
mypyc turns the same source into extension modules that run it with ≈ 10–25 % less CPU
per delivered line (bench/README.md, "The hot path compiled with mypyc"). `make install`
builds them (`python -m chatnet.native_build`) into `build/native/`, away from the sources, and
`use_if_fresh` (run as the package is imported) puts that build in front of the sources
only when it was compiled from exactly the sources in the tree: an edited module, another
checkout's build or a failed build all leave the pure-Python modules running, so what
runs is always what the tree says. Without a C compiler nothing is built, and that is
all: every part works the same, a little slower. `CHATNET_NATIVE=0` runs the sources
even when a build is fresh.

What mypyc asks of these modules: no statements in class bodies (no `if TYPE_CHECKING`
stubs); no class of theirs derived from an interpreted one (Session is not an
asyncio.Protocol subclass: see server.protocol_factory); an argument of the declared
type, checked at run time (a test's stand-in must be a subclass, not a look-alike); and a
`Final` constant is compiled in, so the few the unit tests shorten are plain names.
What costs memory compiled that does not in Python: a fixed-length tuple attribute is
stored inline, and a tuple literal is built again wherever it is evaluated, so what every
connection holds is a shared `Final` constant (irc_numerics.NOTHING_SHOWN); and attributes
are laid out in the order first met, so a class with many instances declares its `bool`s
together (Session).
"""

from __future__ import annotations

import json
import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Final

# Ordered as the line goes: bytes to lines, the session, the router and what it calls.
MODULES: Final = (
    "lines", "session", "protocol", "router", "handover", "directory", "rooms", "room_commands", "flood",
    "dialects/base", "dialects/text",  # text mode's parse and render, once per line each
    # IRC's: its lines, and its dialect with the numerics it derives from (a compiled
    # class's base must be compiled too).
    "dialects/ircline", "dialects/irc_numerics", "dialects/irc",
)  # fmt: skip
PACKAGE: Final = Path(__file__).resolve().parent
BUILD: Final = PACKAGE.parent / "build" / "native"
# The sources the build in BUILD was compiled from, word for word (module -> its text),
# written last. Compared whole rather than by digest: hashlib would load OpenSSL's
# digests into every process (≈ 0.7 MB of the chat server's memory).
MANIFEST: Final = BUILD / "sources.json"
OFF: Final = "CHATNET_NATIVE"

# Whether this process runs the compiled modules: set by use_if_fresh.
active = False


def sources() -> dict[str, str]:
    """Each compiled module's source as the tree holds it now, and the interpreter a
    build for it would be for (a build is for one Python's ABI: its extension suffix)."""
    texts = {name: (PACKAGE / f"{name}.py").read_text(encoding="utf-8") for name in MODULES}
    return {**texts, "python": EXTENSION_SUFFIXES[0]}


def built_from() -> dict[str, str] | None:
    """The sources the build was made from; None when there is no whole build."""
    try:
        made = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return None
    return made if isinstance(made, dict) else None


def use_if_fresh(package_path: list[str]) -> bool:
    """Put the build ahead of the sources on the package's path when it matches them."""
    global active
    if os.environ.get(OFF) == "0" or built_from() != sources():
        return False
    package_path.insert(0, str(BUILD / "chatnet"))
    active = True
    return True


def use_in(subpackage_path: list[str], name: str) -> None:
    """The same for a sub-package (`dialects`), whose path is its own: the decision is
    the package's, made when chatnet was imported."""
    if active:
        subpackage_path.insert(0, str(BUILD / "chatnet" / name))
