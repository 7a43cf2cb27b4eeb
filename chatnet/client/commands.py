"""What a typed line means (`interpret`: /commands, the current target, `name: text`),
and Tab completion."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatnet.protocol import QUIT_WORDS, is_room

if TYPE_CHECKING:
    pass
from chatnet.client.lines import ALIASES, CLIENT_COMMANDS, SERVER_COMMANDS, Book, help_lines, is_name, is_target, now_time

# --- what a typed line means --------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Lines for the server, and what to show for them (None: its answer will say)."""

    lines: tuple[str, ...]
    echo: str | None = None
    join: tuple[str, ...] = ()  # rooms asked to join: the answer makes one current


@dataclass(frozen=True)
class Say:
    """Only for the person: nothing is sent."""

    text: str


@dataclass(frozen=True)
class Target:
    """Where plain lines go from now on (None: nowhere)."""

    target: str | None


@dataclass(frozen=True)
class Leave:
    pass


Action = Send | Say | Target | Leave


def message_to(target: str, text: str, book: Book) -> Send:
    """`text` to a name or a room, and how it is shown here."""
    target = book.spelled(target)
    echo = f"{now_time()} {target} <{book.me or 'you'}> {text}" if target[:1] == "#" else f"{now_time()} [to {target}] {text}"
    return Send((f"{target}: {text}",), echo)


def interpret(line: str, book: Book) -> Action | None:
    """A line typed after login: what to do with it (None: nothing, an empty line)."""
    text = line.strip()
    if not text:
        return None
    if text.lower() in QUIT_WORDS:
        return Leave()
    if text.startswith("/"):
        return command(text, book)
    if text.startswith("!"):
        word = text.split(" ", 1)[0].lower()
        rooms = tuple(text.split()[1:2]) if word == "!join" else ()
        return Send((text,), join=rooms)
    destination, colon, message = text.partition(":")
    destination = destination.strip()
    if colon and is_room(destination) and message.strip():
        return message_to(destination, message.strip(), book)  # a room named always goes there
    if book.target is not None:
        return message_to(book.target, text, book)
    if colon and is_name(destination) and message.strip():
        return message_to(destination, message.strip(), book)
    return Say("Not sent: say to whom. Write name: text, /msg <name|#room> text, or /query <name|#room> to talk to one (/help).")


def command(text: str, book: Book) -> Action:
    word, _, rest = text.partition(" ")
    name = ALIASES.get(word.lower(), word.lower())
    rest = rest.strip()
    room = book.target if book.target is not None and book.target[:1] == "#" else None

    def room_first(usage: str) -> tuple[str, str] | Say:
        """`[#room] rest`: the room given, or the current one."""
        head, _, tail = rest.partition(" ")
        if head[:1] == "#":
            return (head, tail.strip()) if is_room(head) else Say(f"'{head}' is not a room name: # and 1-32 letters, digits, _ . -.")
        if room is None:
            return Say(f"Which room? {usage} (or /query #room first).")
        return room, rest

    if name == "/quit":
        return Leave()
    if name == "/help":
        return Say("\n".join(help_lines()))
    if name == "/join":
        rooms = tuple(each if each[:1] == "#" else f"#{each}" for each in rest.split())
        if not rooms:
            return Say("Write /join #room.")
        bad = [each for each in rooms if not is_room(each)]
        if bad:
            return Say(f"'{bad[0]}' is not a room name: # and 1-32 letters, digits, _ . -.")
        return Send(tuple(f"!join {each}" for each in rooms), join=rooms)
    if name == "/part":
        given = rest.split(" ", 1)[0] if rest else room
        if given is None:
            return Say("Which room? /part #room (or /query #room first).")
        given = given if given[:1] == "#" else f"#{given}"
        if not is_room(given):
            return Say(f"'{given}' is not a room name: # and 1-32 letters, digits, _ . -.")
        return Send((f"!leave {book.spelled(given)}",))
    if name == "/msg":
        target, _, message = rest.partition(" ")
        if not target or not message.strip():
            return Say("Write /msg <name|#room> <text>.")
        if not is_target(target):
            return Say(f"'{target}' is not a name or a #room.")
        return message_to(target, message.strip(), book)
    if name == "/query":
        if not rest:
            return Target(None)
        if not is_target(rest):
            return Say(f"'{rest}' is not a name or a #room.")
        return Target(book.spelled(rest))
    if name in ("/who", "/rooms", "/check"):
        return Send((f"!{name[1:]}",))
    if name == "/members":
        given = rest.split(" ", 1)[0] if rest else room
        if given is None:
            return Say("Which room? /members #room (or /query #room first).")
        return Send((f"!members {book.spelled(given)}",))
    if name in ("/topic", "/history"):
        parsed = room_first(f"{name} #room {'[text]' if name == '/topic' else '[n]'}")
        if isinstance(parsed, Say):
            return parsed
        return Send((f"!{name[1:]} {book.spelled(parsed[0])} {parsed[1]}".rstrip(),))
    if name in ("/invite", "/kick"):
        parsed = room_first(f"{name} #room <name>")
        if isinstance(parsed, Say):
            return parsed
        if not is_name(parsed[1]):
            return Say(f"Write {name} [#room] <name>.")
        return Send((f"!{name[1:]} {book.spelled(parsed[0])} {parsed[1]}",))
    return Say(f"Unknown command {word}; /help lists the client's commands (the server's start with !, !help).")


# --- Tab completion -------------------------------------------------------------------


def completions(before: str, book: Book) -> Iterator[tuple[str, int]]:
    """What Tab offers for the text before the cursor: (replacement, how many characters
    back it starts). At the start of a line a name becomes `name: `, a command `/cmd `."""
    word = before.rsplit(" ", 1)[-1]
    first = " " not in before.lstrip()
    lowered = word.lower()

    def matching(candidates: Iterable[str], suffix: str = "") -> Iterator[tuple[str, int]]:
        for candidate in candidates:
            if candidate.lower().startswith(lowered) and candidate.lower() != lowered + suffix.rstrip():
                yield candidate + suffix, len(word)

    if first and word.startswith("/"):
        yield from matching([*CLIENT_COMMANDS, "/leave"], " ")
    elif first and word.startswith("!"):
        yield from matching(SERVER_COMMANDS, " ")
    elif word.startswith("#"):
        yield from matching(book.room_names(), ": " if first else "")
    elif first:
        yield from matching(book.other_names(), ": ")
    else:
        head = before.split(" ", 1)[0].lower()
        yield from matching(book.other_names())
        if ALIASES.get(head, head) in ("/msg", "/query") and before.count(" ") == 1:
            yield from matching(book.room_names())
