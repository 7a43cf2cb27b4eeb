"""Bots in rooms on a real network: invited bots join by themselves and answer in the
room when addressed, never each other; a room's reply budget; the openai bot's thread
per room and its streaming there; the thermometer posting readings to a room its owner
subscribed. The openai bot talks to a local OpenAI-compatible test server."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from chatnet.assistant import APOLOGY
from chatnet.bot import BUSY_IN_ROOM
from chatnet.message import Message
from chatnet.peer import Peer
from chatnet.protocol import Event, MessageType
from tests.fake_openai import FakeOpenAI
from tests.support import HOST, JsonClient, Network, TextClient, eventually

OPENAI = "openai"
THERMO = "thermo"
INTERVAL = 0.3  # the thermometer's, in seconds
READING = re.compile(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\]\[(#[\w.-]+)\]\[" + THERMO + r"\] -?\d+\.\d °C$")


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


ROOM_REPLIES = 4  # BOT_ROOM_REPLIES for these tests: small, so the budget runs out quickly


def start_openai(net: Network, fake: FakeOpenAI) -> None:
    net.start_bot(OPENAI, "openai_bot.py", BOT_NAME=OPENAI, OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="test", BOT_ROOM_REPLIES=str(ROOM_REPLIES),
                  BOT_TIMEOUT="1.5", BOT_RETRIES="0")  # fmt: skip


def start_thermometer(net: Network) -> None:
    net.start_bot(THERMO, "thermometer.py", THERMOMETER_NAME=THERMO, THERMOMETER_INTERVAL=str(INTERVAL),
                  THERMOMETER_MIN="15", THERMOMETER_MAX="25")  # fmt: skip


def said_in(room: str, sender: str) -> Callable[[str], bool]:
    """A text line of `sender` in `room`: `[ts][#room][sender] ...`."""
    return lambda line: f"][{room}][{sender}] " in line


def text_of(line: str) -> str:
    """What a room line says: `[ts][#room][sender] <this>`."""
    match = re.fullmatch(r"\[[^\]]*\]\[#[^\]]*\]\[[^\]]*\] (.*)", line)
    assert match is not None, f"not a room line: {line!r}"
    return match.group(1)


async def join(client: TextClient, room: str) -> None:
    await client.send(f"!join {room}")
    await client.expect(lambda line: line.startswith((f"Created {room}", f"Joined {room}")))


async def invite(inviter: TextClient, room: str, bot: str, watcher: TextClient) -> str:
    """`!invite room bot`; the bot's hello, as `watcher` (a member) sees it."""
    await inviter.send(f"!invite {room} {bot}")
    await inviter.expect(f"Invited {bot} to {room}.")
    return text_of(await watcher.expect(said_in(room, bot)))


def prompts(fake: FakeOpenAI) -> str:
    """Everything the model has been sent, as one text."""
    return "\n".join(str(m.get("content")) for body in fake.received() for m in body["messages"])


@pytest.fixture
async def hiking(chat: Network, fake: FakeOpenAI) -> tuple[Network, TextClient, TextClient]:
    """#hiking made by alice, bob in it, and the openai bot invited (its hello seen)."""
    start_openai(chat, fake)
    alice, bob = await chat.text_client("alice"), await chat.text_client("bob")
    await join(alice, "#hiking")
    await join(bob, "#hiking")
    hello = await invite(alice, "#hiking", OPENAI, bob)
    assert hello.startswith("Hello #hiking!") and f"@{OPENAI} help" in hello
    return chat, alice, bob


async def test_an_invited_bot_joins_by_itself_and_answers_in_the_room(hiking: tuple[Network, TextClient, TextClient], fake: FakeOpenAI) -> None:
    """Invited, the bot joins and says hello; `@openai hello` is answered in the room, to the asker, seen by every member."""
    _, alice, bob = hiking
    await alice.send("!members #hiking")
    assert f"{OPENAI} (online)" in await alice.expect("Members of #hiking")
    await alice.send(f"#hiking: @{OPENAI} hello")
    line = await bob.expect(said_in("#hiking", OPENAI))
    assert re.fullmatch(rf"\[\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ\]\[#hiking\]\[{OPENAI}\] alice: echo: alice: hello", line), line
    assert text_of(await alice.expect(said_in("#hiking", OPENAI))) == "alice: echo: alice: hello"
    assert fake.received()[-1]["messages"][-1] == {"role": "user", "content": "alice: hello"}


async def test_a_message_not_addressed_to_the_bot_gets_no_answer(hiking: tuple[Network, TextClient, TextClient], fake: FakeOpenAI) -> None:
    """A room message that does not start with the bot's address reaches the members, never the bot."""
    _, alice, bob = hiking
    for text in ("nice weather", f"I asked {OPENAI} yesterday", f"{OPENAI}, are you there", f"@{OPENAI}s hi"):
        await alice.send(f"#hiking: {text}")
        assert text_of(await bob.expect(said_in("#hiking", "alice"))) == text
    await alice.send(f"#hiking: {OPENAI}: marker")
    lines = await bob.lines_until(said_in("#hiking", OPENAI))
    assert text_of(lines[-1]) == "alice: echo: alice: marker", lines  # the bot's first word since: the marker's answer
    assert "nice weather" not in prompts(fake) and "yesterday" not in prompts(fake) and "are you there" not in prompts(fake)


async def test_a_room_has_its_own_thread_and_direct_messages_keep_theirs(hiking: tuple[Network, TextClient, TextClient], fake: FakeOpenAI) -> None:
    """What members say to the bot in a room is the room's thread; a member's direct messages are a thread apart."""
    _, alice, bob = hiking
    await alice.send(f"#hiking: @{OPENAI} we meet at nine")
    await bob.expect(said_in("#hiking", OPENAI))
    await bob.send(f"#hiking: @{OPENAI}: when do we meet?")
    assert text_of(await bob.expect(said_in("#hiking", OPENAI))) == "bob: echo: bob: when do we meet?"
    thread = [m["content"] for m in fake.received()[-1]["messages"][1:]]
    assert thread == ["alice: we meet at nine", "echo: alice: we meet at nine", "bob: when do we meet?"]
    await alice.send(f"{OPENAI}: just between us")
    assert (await alice.expect(f"Z][{OPENAI}] ")).endswith(f"Z][{OPENAI}] echo: just between us")  # a direct line
    assert [m["content"] for m in fake.received()[-1]["messages"][1:]] == ["just between us"]


async def test_streaming_in_a_room_reaches_json_members_live_and_is_archived_once(hiking: tuple[Network, TextClient, TextClient], fake: FakeOpenAI) -> None:
    """A `stream` member's question: chunks reach JSON members live, a terminal member sees the answer whole, the history keeps it once."""
    net, alice, bob = hiking
    story = " ".join(f"word{i}" for i in range(30))
    fake.reply = lambda body: story
    fake.chunk_delay = 0.03
    carol: JsonClient = await net.json_client("carol", features=("stream",))
    await carol.command("!join #hiking")
    await carol.expect(lambda m: m.metadata.get("event") == Event.JOINED and m.metadata.get("room") == "#hiking")
    await carol.send("#hiking", f"@{OPENAI} tell me a story")

    def from_bot(message: Message) -> bool:
        return message.type == MessageType.CHAT and message.sender == OPENAI and message.destination == "#hiking"

    final = await carol.expect(lambda m: from_bot(m) and m.metadata.get("stream", {}).get("done") is True)
    chunks = [m for m in carol.seen if from_bot(m) and m is not final]
    assert final.message == f"carol: {story}" == "".join(c.message for c in chunks)
    assert len(chunks) >= 2 and all(c.metadata["stream"]["done"] is False for c in chunks)
    assert text_of(await bob.expect(said_in("#hiking", OPENAI))) == f"carol: {story}"  # one line, whole

    async def history() -> list[str]:
        await bob.send("!history #hiking 50")
        heading = await bob.expect(lambda line: line.startswith(("Last ", "No messages")))
        count = int(heading.split()[1]) if heading.startswith("Last ") else 0
        return [await bob.line() for _ in range(count)]

    lines = await eventually(history, lambda found: any(story in line for line in found), "the room's history")
    assert sum(story in line for line in lines) == 1, lines  # the final frame only, not the chunks
    await carol.close()


async def test_a_failing_model_apologizes_in_the_room(hiking: tuple[Network, TextClient, TextClient], fake: FakeOpenAI) -> None:
    """A model error on a room question: the apology goes to the room; the bot goes on."""
    net, alice, bob = hiking
    fake.mode = "fail"
    await alice.send(f"#hiking: @{OPENAI} are you there?")
    assert text_of(await bob.expect(said_in("#hiking", OPENAI))) == f"alice: {APOLOGY}"
    fake.mode = "ok"
    await alice.send(f"#hiking: @{OPENAI} and now?")
    assert text_of(await bob.expect(said_in("#hiking", OPENAI))) == "alice: echo: alice: and now?"
    assert net.children[OPENAI].running


async def test_a_kicked_bot_is_out_until_invited_again(hiking: tuple[Network, TextClient, TextClient], fake: FakeOpenAI) -> None:
    """`!kick` puts the bot out (it hears nothing more there); a later invitation brings it back by itself."""
    _, alice, bob = hiking
    await alice.send(f"!kick #hiking {OPENAI}")
    await alice.expect(f"Removed {OPENAI} from #hiking.")
    await alice.send("!members #hiking")
    assert OPENAI not in await alice.expect("Members of #hiking")
    await alice.send(f"#hiking: @{OPENAI} still here?")
    await bob.expect(said_in("#hiking", "alice"))
    hello = await invite(alice, "#hiking", OPENAI, bob)  # the bot's first word since the kick
    assert hello.startswith("Hello #hiking!")
    await alice.send(f"#hiking: @{OPENAI} back?")
    assert text_of(await bob.expect(said_in("#hiking", OPENAI))) == "alice: echo: alice: back?"
    assert "still here" not in prompts(fake)


async def test_two_bots_in_a_room_never_answer_a_bot(hiking: tuple[Network, TextClient, TextClient], fake: FakeOpenAI) -> None:
    """With the openai bot and the thermometer in a room, a bot's message addressed to either gets no answer."""
    net, alice, bob = hiking
    start_thermometer(net)
    assert (await invite(alice, "#hiking", THERMO, bob)).startswith("Hello #hiking!")
    robot = JsonClient(await Peer.connect(HOST, net.chat_port, "robot", service_token=net.token))  # a third bot
    try:
        await robot.command("!join #hiking")
        await robot.expect(lambda m: m.metadata.get("event") == Event.JOINED)
        for text in (f"@{OPENAI} hello from a bot", f"{THERMO}: status", f"@{THERMO} range"):
            await robot.send("#hiking", text)
            assert text_of(await bob.expect(said_in("#hiking", "robot"))) == text
        fake.reply = lambda body: f"@{THERMO} status"  # the openai bot now says something addressed to the thermometer
        await alice.send(f"#hiking: @{OPENAI} talk to the thermometer")
        assert text_of(await bob.expect(said_in("#hiking", OPENAI))) == f"alice: @{THERMO} status"
        await alice.send(f"#hiking: {THERMO}: status")
        lines = await bob.lines_until(said_in("#hiking", THERMO))
        assert text_of(lines[-1]).startswith("alice: Interval "), lines  # its first word since: the answer to alice
        fake.reply = lambda body: "marker"
        await alice.send(f"#hiking: @{OPENAI} marker")
        lines = await bob.lines_until(said_in("#hiking", OPENAI))
        assert text_of(lines[-1]) == "alice: marker", lines
        assert "hello from a bot" not in prompts(fake)
    finally:
        await robot.close()


async def test_the_room_budget_says_busy_once_then_nothing(hiking: tuple[Network, TextClient, TextClient], fake: FakeOpenAI) -> None:
    """Past its replies a minute in a room, the bot says "busy" there once, then nothing; another room is answered."""
    _, alice, bob = hiking
    await join(alice, "#other")
    await join(bob, "#other")
    await invite(alice, "#other", OPENAI, bob)
    for i in range(ROOM_REPLIES + 1):
        await alice.send(f"#hiking: @{OPENAI} q{i}")
    answers = [text_of(await bob.expect(said_in("#hiking", OPENAI))) for _ in range(ROOM_REPLIES + 1)]
    assert sorted(answers) == sorted([f"alice: echo: alice: q{i}" for i in range(ROOM_REPLIES)] + [f"alice: {BUSY_IN_ROOM}"])
    await bob.send(f"#hiking: @{OPENAI} one more")
    await alice.expect(said_in("#hiking", "bob"))
    await alice.send(f"#other: @{OPENAI} marker")
    lines = await bob.lines_until(said_in("#other", OPENAI))
    assert text_of(lines[-1]) == "alice: echo: alice: marker"
    assert not [line for line in lines if said_in("#hiking", OPENAI)(line)], lines  # nothing more in #hiking
    assert "one more" not in prompts(fake) and f"q{ROOM_REPLIES}" not in prompts(fake)


# --- the thermometer in a room -------------------------------------------------------


@pytest.fixture
async def thermo_room(chat: Network) -> tuple[Network, TextClient, TextClient]:
    """The thermometer, and #hiking made by alice with bob in it."""
    start_thermometer(chat)
    alice, bob = await chat.text_client("alice"), await chat.text_client("bob")
    await join(alice, "#hiking")
    await join(bob, "#hiking")
    return chat, alice, bob


async def test_the_owner_subscribes_a_room_and_readings_arrive_there(thermo_room: tuple[Network, TextClient, TextClient]) -> None:
    """A non-owner is refused; the owner's `subscribe #hiking` brings readings into the room (subscription frames to JSON members) until `unsubscribe #hiking`."""
    net, alice, bob = thermo_room
    await bob.send(f"{THERMO}: subscribe #hiking")
    assert "Only the owner of #hiking" in await bob.expect(f"][{THERMO}] ")
    carol: JsonClient = await net.json_client("carol")
    await carol.command("!join #hiking")
    await carol.expect(lambda m: m.metadata.get("event") == Event.JOINED)
    await alice.send(f"{THERMO}: subscribe #hiking")
    assert f"][{THERMO}] Subscribed #hiking to {THERMO}" in await alice.expect(f"][{THERMO}] ")
    for _ in range(2):
        line = await bob.expect(said_in("#hiking", THERMO))
        assert READING.fullmatch(line), line
    reading = await carol.expect(lambda m: m.type == MessageType.SUBSCRIPTION and m.sender == THERMO)
    assert reading.destination == "#hiking" and 15 <= reading.metadata["value"] <= 25 and reading.metadata["unit"] == "°C"

    await alice.send(f"#hiking: @{THERMO} unsubscribe #hiking")
    answer = await bob.expect(lambda line: said_in("#hiking", THERMO)(line) and not READING.fullmatch(line))
    assert text_of(answer).startswith("alice: Unsubscribed #hiking")
    later = await bob.quiet(INTERVAL * 4)  # a few intervals of no readings ...
    await alice.send(f"#hiking: @{THERMO} status")  # ... and none late either: the next line is this answer
    status = await bob.expect(said_in("#hiking", THERMO))
    assert later == [] and text_of(status).startswith("alice: Interval "), [*later, status]
    await carol.close()


async def test_a_private_room_must_invite_the_thermometer_and_its_subscription_survives_a_restart(thermo_room: tuple[Network, TextClient, TextClient]) -> None:
    """A private room's owner is told to invite the bot first; invited, the room gets readings, also after the bot restarts."""
    net, alice, bob = thermo_room
    await join(alice, "#secret")
    await alice.send("!private #secret")
    await alice.expect("#secret is private now")
    await alice.send(f"{THERMO}: subscribe #secret")
    refusal = await alice.expect(f"][{THERMO}] ")
    assert f"#secret is private: invite me first ('!invite #secret {THERMO}')" in refusal
    assert (await invite(alice, "#secret", THERMO, alice)).startswith("Hello #secret!")
    await alice.send(f"{THERMO}: subscribe #secret")
    assert f"Subscribed #secret to {THERMO}" in await alice.expect(lambda line: f"][{THERMO}] " in line and "#secret]" not in line)
    assert READING.fullmatch(await alice.expect(said_in("#secret", THERMO)))
    net.stop(THERMO)
    start_thermometer(net)
    await alice.send(f"{THERMO}: status")
    assert "1 room(s)" in await alice.expect(lambda line: f"][{THERMO}] Interval" in line)
    line = await alice.expect(said_in("#secret", THERMO))
    assert READING.fullmatch(line) and READING.fullmatch(line).group(1) == "#secret"  # type: ignore[union-attr]
    await bob.send("#secret: can I see this?")
    assert "You are not in #secret" in await bob.expect("Error:")
