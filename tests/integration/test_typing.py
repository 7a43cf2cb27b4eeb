"""The typing notice between real processes: JSON clients on the chat server's port, a
terminal user beside them. A typing frame is relayed as it comes and never kept."""

from __future__ import annotations

from chatnet.api_client import ApiClient
from chatnet.message import Message
from tests.support import Network, eventually


def typing_notice(message: Message) -> bool:
    return message.metadata.get("event") == "typing"


async def test_a_typing_frame_reaches_a_json_client_that_shows_it_and_nobody_else(chat: Network) -> None:
    """One JSON client's typing frames reach another that announced `typing` as notices;
    a JSON client without the feature, a terminal user and the offline get nothing, and
    nothing is stored for anyone."""
    bob = await chat.json_client("bob", features=("typing",))
    plain = await chat.json_client("plain")
    carol = await chat.text_client("carol")
    helper = await chat.json_client("helper")
    for destination in ("bob", "plain", "carol", "nobody"):
        await helper.send_raw({"type": "typing", "destination": destination, "active": True})
    notice = await bob.expect(typing_notice)
    assert (notice.sender, notice.destination, notice.type) == ("server", "bob", "notification")
    assert {k: notice.metadata[k] for k in ("user", "active", "room")} == {"user": "helper", "active": True, "room": None}
    await helper.send_raw({"type": "typing", "destination": "bob", "active": False})
    assert (await bob.expect(typing_notice)).metadata["active"] is False

    await helper.send("bob", "done")  # a marker: what came before it has been relayed, or never will be
    await bob.expect(lambda m: m.type == "chat" and m.message == "done")
    assert not [m for m in await plain.quiet(0.3) if typing_notice(m)]
    assert await carol.quiet(0.3) == []
    assert not [m for m in await helper.quiet(0.3) if m.type == "error" or m.metadata.get("event") in ("saved", "not_saved", "typing")]
    async with ApiClient(chat.api_url, chat.token) as api:
        assert (await api.pending("nobody"))[1] == 0
        page = await eventually(lambda: api.history_page("bob", "helper"), lambda p: bool(p["messages"]), "the marker archived")
        assert [m["message"] for m in page["messages"]] == ["done"]  # the typing frames are no history


async def test_a_bad_typing_frame_gets_a_plain_refusal(chat: Network) -> None:
    """A typing frame without `active` is refused with the reason; the connection stays."""
    helper = await chat.json_client("helper")
    await helper.send_raw({"type": "typing", "destination": "bob"})
    refusal = await helper.expect(lambda m: m.type == "error")
    assert "'active': true or false" in refusal.message
    await helper.send_raw({"type": "typing", "destination": "bob", "active": True})
    await helper.command("!who")
    await helper.expect(lambda m: m.metadata.get("event") == "who")
