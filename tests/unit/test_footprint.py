"""What the chat server carries before its first client: it holds 10,000 idle ones in
48 MB (bench/README.md), and pydantic's models (~14 MB) and aiohttp (~15 MB) would take
most of that on their own. The API, the bots and the web adapter use them; the chat
server never needs them. Nor OpenSSL's digests (hashlib, hmac: ≈ 0.7 MB) or the build's
configuration (sysconfig: ≈ 0.2 MB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pydantic", "pydantic_core", "pydantic_settings", "aiohttp", "httpx", "fastapi", "motor", "hashlib", "_hashlib", "hmac", "sysconfig")


def test_the_chat_server_imports_none_of_the_heavy_libraries() -> None:
    code = f"import sys, async_server; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]", f"the chat server imports {out.strip()}"
