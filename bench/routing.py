"""The routing path in-process: CPU time per routed line, no sockets, no kernel.

    .venv/bin/python -m bench.routing               # text mode (`bob: hi`)
    .venv/bin/python -m bench.routing --front irc   # the IRC front (`PRIVMSG bob :hi`)

Pairs of logged-in sessions (text, or IRC registered with NICK/USER as the benchmark's
IRC adapter does) over recording transports send each other lines of the benchmark's
shape; what is timed is `data_received` -> parse -> route -> deliver ->
write, plus the flush once per loop pass: the Python the routing path costs, repeatable
within a few per cent where the whole benchmark moves with the machine. The best of
several rounds is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Callable, Iterable
from typing import Any

from chatnet.cli import GC_THRESHOLD
from chatnet.config import Settings
from chatnet.server import ChatServer
from chatnet.session import Session


class Transport:
    """What a session needs of a transport; counts what is written."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_extra_info(self, key: str) -> Any:
        return ("127.0.0.1", self.port) if key == "peername" else None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


class Api:
    """The message API as the routing path needs it: every name a guest, no mail."""

    async def check_login(self, name: str, source: str, **_: Any) -> Any:
        from chatnet.api_client import LoginCheck

        return LoginCheck(name)

    async def guest_logins(self, names: Iterable[str]) -> dict[str, bool]:
        return {name.lower(): True for name in names}

    async def pending(self, user: str, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
        return [], 0

    async def ack(self, user: str, ids: list[str]) -> int:
        return 0

    async def pending_many(self, users: list[str], limit: int) -> dict[str, Any]:
        return {}

    async def room_logins(self, users: list[str], catchup: int, defaults: list[str]) -> dict[str, Any]:
        return {}


def _login(front: str, name: str) -> bytes:
    if front == "irc":
        return f"NICK {name}\r\nUSER {name} 0 * :{name}\r\n".encode()
    return f"{name}\n".encode()


def _line(front: str, to: str) -> bytes:
    """One message of the benchmark's shape (`<seq> <send time ns>`), as its adapter writes it."""
    payload = "12345 1733040000000000000"
    return f"PRIVMSG {to} :{payload}\r\n".encode() if front == "irc" else f"{to}: {payload}\n".encode()


def _server(front: str) -> tuple[ChatServer, Callable[[], Session]]:
    """A chat server over the stand-in API, and how it makes a session of `front`."""
    settings = Settings(_env_file=None, flood_rate=0, login_rate=0, max_connections_per_ip=0)
    server = ChatServer(settings, Api())  # type: ignore[arg-type]
    return server, (server.irc_session if front == "irc" else server.session)


def _logged_in(new_session: Callable[[], Session], front: str, port: int, name: str) -> Session:
    session = new_session()
    session.connection_made(Transport(port))  # type: ignore[arg-type]
    session.data_received(_login(front, name))
    return session


async def _best(server: ChatServer, rounds: int, passes: int, one_pass: Callable[[], int]) -> float:
    """The least CPU time (ns) per unit of work in any of `rounds` rounds of `passes`
    passes; `one_pass` does one pass's work and says how many units it was."""
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD)  # as the chat server runs (`chatnet.cli.collect_rarely`)
    backlog = server.router.archiver.backlog
    best = float("inf")
    try:
        for _ in range(rounds):
            started, units = time.process_time(), 0
            for _ in range(passes):
                units += one_pass()
                await asyncio.sleep(0)  # the flushes
                backlog.clear()  # the archiver is not running: keep its backlog from filling
            best = min(best, (time.process_time() - started) / units)
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
    return best * 1e9


async def measure(pairs: int, rounds: int, passes: int, front: str = "text") -> float:
    """CPU per routed line: pairs sending each other four lines a chunk."""
    server, new_session = _server(front)
    sessions = [
        (_logged_in(new_session, front, 2 * i, f"a{i}"), _logged_in(new_session, front, 2 * i + 1, f"b{i}"),
         _line(front, f"b{i}") * 4, _line(front, f"a{i}") * 4)
        for i in range(pairs)
    ]  # fmt: skip
    await asyncio.sleep(0.2)  # the logins' checks and welcomes

    def one_pass() -> int:
        for a, b, to_b, to_a in sessions:
            a.data_received(to_b)
            b.data_received(to_a)
        return 8 * len(sessions)

    return await _best(server, rounds, passes, one_pass)


async def measure_room(members: int, rounds: int, passes: int, front: str = "text") -> float:
    """CPU per delivery of a room's line to its members (the fan-out, once per loop pass)."""
    server, new_session = _server(front)
    sessions = [_logged_in(new_session, front, i, f"m{i}") for i in range(members)]
    await asyncio.sleep(0.2)  # the logins' checks and welcomes
    for session in sessions:
        server.router.rooms._enter(session, {"name": "#bench", "owner": "m0", "members": members})
    line, sender = _line(front, "#bench"), sessions[0]

    def one_pass() -> int:
        sender.data_received(line)
        return members - 1

    return await _best(server, rounds, passes, one_pass)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__)
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--passes", type=int, default=50)
    parser.add_argument("--front", choices=("text", "irc"), default="text", help="chatnet's text mode or its IRC front")
    parser.add_argument("--room", type=int, metavar="MEMBERS", help="time a room's fan-out to this many members instead")
    args = parser.parse_args()
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    if args.room:
        print(f"{run(measure_room(args.room, args.rounds, args.passes, args.front)):.0f} ns of CPU per {args.front} delivery in a room of {args.room}")
        return
    print(f"{run(measure(args.pairs, args.rounds, args.passes, args.front)):.0f} ns of CPU per routed {args.front} line")


if __name__ == "__main__":
    main()
