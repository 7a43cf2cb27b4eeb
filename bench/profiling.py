"""`--profile`: py-spy on the chat server for the measurement windows only.

Attached for the whole workload, py-spy recorded the logins and the room's thousand
joins too, which outweighed the ten seconds being measured (in a room run, 27 % of the
samples were the joins' NAMES replies). Attached here, it records from just before a
window opens (py-spy needs a moment to attach) until it closes; each window's stacks
are added to the file, so the two throughput sizes share one.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from bench.servers import Chatnet, Server

ATTACH_LEAD: Final = 0.2  # seconds before the window: py-spy's attach, well inside the warm-up


@contextmanager
def spying(server: Server, path: Path | None) -> Iterator[None]:
    """py-spy on `server` (chatnet's chat server) while inside; its collapsed stacks
    appended to `path`. Nothing when `path` is None or the server is another's."""
    if path is None or not isinstance(server, Chatnet):
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(prefix="py-spy-", suffix=".txt") as part:
        argv = [_py_spy(), "record", "--pid", str(server.pid), "--output", part.name, "--format", "raw", "--nonblocking"]
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
            spy.wait(30)
        with path.open("ab") as stacks:
            stacks.write(Path(part.name).read_bytes())


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"
