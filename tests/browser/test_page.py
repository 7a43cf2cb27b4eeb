"""The chat page in a real headless Chromium (Debian's), driven by Playwright, against
the real processes: embedded store, message API, chat server, web adapter, and the
bots where a test needs them."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from chatnet.api_client import ApiClient
from chatnet.process import ROOT
from tests.fake_openai import FakeOpenAI, echo_reply
from tests.support import HOST, Network, eventually

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
XSS = "<img src=x onerror=alert(1)>"
ADVICE = "Mild and dry: the `thermometer1` readings hover around **8 °C**, so a hike works — just bring a *warm layer*."
PLAN = (
    "Sure! Here's a quick plan for **Saturday**:\n\n"
    "1. Meet at the trailhead at 9:00\n"
    "2. Take the lake loop (about *two hours*)\n"
    "3. Lunch at the hut, back by 14:00\n\n"
    "Have fun, and tell Bob I said hi."
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]

expect.set_options(timeout=10_000)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        await browser.close()


@pytest.fixture
def web(chat: Network) -> Network:
    chat.start_web()
    return chat


class Person:
    """Someone at the page: a browser tab, and every dialog it raised."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        page.on("dialog", self._dialog)

    def _dialog(self, dialog) -> None:  # type: ignore[no-untyped-def]
        self.dialogs.append(dialog.message)
        asyncio.ensure_future(dialog.dismiss())

    def peer(self, name: str):  # type: ignore[no-untyped-def]
        return self.page.locator(f'#people li[data-peer="{name}"]')

    def pane(self, name: str):  # type: ignore[no-untyped-def]
        return self.page.locator(f'.messages[data-peer="{name}"]')

    async def open(self, name: str) -> None:
        await self.peer(name).locator("button").click()
        await expect(self.page.locator("#pane-title")).to_have_text(name)

    async def say(self, text: str) -> None:
        """Type into the composer and press Enter."""
        await self.page.locator("#text").fill(text)
        await self.page.locator("#text").press("Enter")
        await expect(self.page.locator("#text")).to_have_value("")


async def join(browser: Browser, network: Network, user: str, **context: object) -> Person:
    """Open the page in a fresh browser context and log in."""
    ctx = await browser.new_context(**context)  # type: ignore[arg-type]
    page = await ctx.new_page()
    person = Person(page)
    await page.goto(f"http://{HOST}:{network.web_port}/")
    await page.locator("#login-name").fill(user)
    await page.locator("#login-name").press("Enter")
    await expect(page.locator("#conn")).to_have_text("online")
    await expect(page.locator("#me")).to_have_text(user)
    return person


def start_assistant(network: Network, fake: FakeOpenAI) -> None:
    network.start_bot("openai", "openai_bot.py", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="test", BOT_RATE_LIMIT="100")


async def test_two_browser_users_and_a_terminal_user_chat(browser: Browser, web: Network) -> None:
    """Two people in browsers chat with each other (unread counts, Enter to send) and
    with a terminal user over TCP."""
    alice = await join(browser, web, "alice")
    bob = await join(browser, web, "bob")
    carol = await web.text_client("carol")

    await expect(alice.peer("bob")).to_have_class(re.compile(r"\bonline\b"))
    await alice.open("bob")
    await alice.say("Hi Bob, lunch at noon?")
    await expect(bob.peer("alice").locator(".unread")).to_have_text("1")
    await bob.open("alice")
    await expect(bob.peer("alice").locator(".unread")).to_have_count(0)
    await expect(bob.pane("alice").locator(".msg.theirs .body")).to_have_text(["Hi Bob, lunch at noon?"])
    await bob.say("Sure, see you there")
    await expect(alice.pane("bob").locator(".msg.theirs .body")).to_have_text(["Sure, see you there"])
    await expect(alice.pane("bob").locator(".msg.mine .body")).to_have_text(["Hi Bob, lunch at noon?"])

    await carol.send("alice: hello from the terminal")
    await expect(alice.peer("carol").locator(".unread")).to_have_text("1")
    await alice.open("carol")
    await expect(alice.pane("carol").locator(".msg.theirs .body")).to_have_text(["hello from the terminal"])
    await alice.say("hello carol, from the browser")
    assert "[alice] hello carol, from the browser" in await carol.expect("hello carol")


async def test_markup_in_messages_stays_text(browser: Browser, web: Network) -> None:
    """An HTML payload from a person or a bot shows as text and runs nothing; bot
    Markdown is rendered."""
    alice = await join(browser, web, "alice")
    mallory = await web.text_client("mallory")
    bot = await web.json_client("openai")  # stands in for the assistant: its replies are Markdown

    await mallory.send(f"alice: {XSS}")
    await alice.open("mallory")
    await expect(alice.pane("mallory").locator(".msg .body")).to_have_text([XSS])

    await bot.send("alice", f"Here is **bold**, `code` and {XSS} [a link](javascript:alert(2))")
    await alice.open("openai")
    body = alice.pane("openai").locator(".msg .body")
    await expect(body).to_contain_text(XSS)
    await expect(body.locator("strong")).to_have_text("bold")
    await expect(body.locator("code")).to_have_text("code")
    assert await alice.page.locator(".messages img, .messages a[href^='javascript']").count() == 0
    # A marker: one more message shown, then a dialog of our own; an alert the payloads
    # had raised would be listed before it.
    await mallory.send("alice: marker")
    await alice.open("mallory")
    await expect(alice.pane("mallory").locator(".msg .body")).to_have_text([XSS, "marker"])
    await alice.page.evaluate("alert('marker')")
    assert alice.dialogs == ["marker"]


async def test_streamed_reply_grows_in_place(browser: Browser, web: Network) -> None:
    """Stream chunks from a bot grow one bubble; the final frame replaces its text."""
    alice = await join(browser, web, "alice")
    bot = await web.json_client("openai")
    await expect(alice.peer("openai")).to_have_class(re.compile(r"\bonline\b"))
    await alice.open("openai")
    await alice.say("tell me something")
    asked = await bot.expect(lambda m: m.type == "chat" and m.sender == "alice")
    assert asked.metadata["sender_features"] == ["stream"]

    bubble = alice.pane("openai").locator(".msg.theirs")
    for seq, (chunk, shown) in enumerate([("Once upon", "Once upon"), (" a **time**", "Once upon a time")]):
        await bot.send("alice", chunk, stream={"id": "s1", "seq": seq, "done": False})
        await expect(bubble).to_have_count(1)
        await expect(bubble).to_have_class(re.compile(r"\bstreaming\b"))
        await expect(bubble.locator(".body")).to_have_text(shown)
    await bot.send("alice", "Once upon a **time**, the end.", stream={"id": "s1", "done": True})
    await expect(bubble).to_have_count(1)
    await expect(bubble.locator(".body")).to_have_text("Once upon a time, the end.")
    await expect(bubble).not_to_have_class(re.compile(r"\bstreaming\b"))
    await expect(bubble.locator("strong")).to_have_text("time")


async def test_assistant_reply_streams_into_the_page(browser: Browser, web: Network) -> None:
    """The real openai bot, on a local OpenAI-compatible server, streams its answer
    into the page, rendered as Markdown."""
    with FakeOpenAI() as fake:
        fake.chunk_delay = 0.05
        fake.reply = lambda body: "Three things:\n\n- **one**\n- two\n- three"
        start_assistant(web, fake)
        alice = await join(browser, web, "alice")
        await expect(alice.peer("openai")).to_have_class(re.compile(r"\bonline\b"), timeout=20_000)
        await alice.open("openai")
        await alice.say("list three things")
        reply = alice.pane("openai").locator(".msg.theirs")
        await expect(reply.locator("li")).to_have_text(["one", "two", "three"])
        await expect(reply).not_to_have_class(re.compile(r"\bstreaming\b"))
        assert fake.received()[-1]["stream"] is True


async def test_online_list_updates_when_people_leave(browser: Browser, web: Network) -> None:
    """Someone who leaves (page or terminal) turns offline in the list at once."""
    alice = await join(browser, web, "alice")
    bob = await join(browser, web, "bob")
    dave = await web.text_client("dave")
    for name in ("bob", "dave"):
        await expect(alice.peer(name)).to_have_class(re.compile(r"\bonline\b"))

    await alice.open("bob")  # a conversation keeps bob listed once he is offline
    await bob.page.locator("#logout").click()
    await expect(alice.peer("bob")).not_to_have_class(re.compile(r"\bonline\b"))
    await expect(alice.page.locator("#pane-presence")).to_contain_text("offline")
    await dave.send("exit")
    await expect(alice.peer("dave")).to_have_count(0)  # never talked to: gone from the list
    await expect(alice.page.locator("#online-count")).to_have_text("(0 online)")


async def test_history_loads_when_a_conversation_opens(browser: Browser, web: Network) -> None:
    """A conversation opened after a new login shows what was said before."""
    bob = await web.text_client("bob")
    alice = await join(browser, web, "alice")
    await alice.open("bob")
    await alice.say("remember the milk")
    await bob.expect("remember the milk")
    await bob.send("alice: and the eggs")
    await expect(alice.pane("bob").locator(".msg.theirs .body")).to_have_text(["and the eggs"])
    async with ApiClient(web.api_url, web.token) as api:  # the server archives in batches, off the routing path
        await eventually(lambda: api.history("alice", "bob"), lambda found: len(found[0]) == 2, "history of alice and bob")

    await alice.page.reload()
    await alice.page.locator("#login-name").press("Enter")
    await expect(alice.page.locator("#conn")).to_have_text("online")
    await alice.open("bob")
    await expect(alice.pane("bob").locator(".msg .body")).to_have_text(["remember the milk", "and the eggs"])


async def test_thermometer_readings_show_as_readings(browser: Browser, web: Network) -> None:
    """Subscribing from the page brings readings shown as a value and a time."""
    web.start_bot("thermometer1", "thermometer.py", THERMOMETER_INTERVAL="0.5")
    alice = await join(browser, web, "alice")
    await expect(alice.peer("thermometer1")).to_have_class(re.compile(r"\bonline\b"), timeout=20_000)
    await alice.page.get_by_role("button", name="Subscribe", exact=True).click()
    reading = alice.pane("thermometer1").locator(".reading").first
    await expect(reading.locator(".reading-value")).to_have_text(re.compile(r"^-?\d+\.\d °C$"))
    await expect(reading.locator("time")).to_have_text(re.compile(r"\d\d:\d\d:\d\d"))
    await expect(alice.page.locator("#thermo-latest")).to_contain_text("°C at")
    await alice.page.get_by_role("button", name="Unsubscribe").click()


async def test_page_reconnects_after_the_adapter_restarts(browser: Browser, web: Network) -> None:
    """When the adapter goes away the page says it is reconnecting, then logs back in."""
    alice = await join(browser, web, "alice")
    await asyncio.to_thread(web.stop, "web")
    await expect(alice.page.locator("#conn")).to_contain_text("disconnected — reconnecting")
    await asyncio.to_thread(web.start_web)
    await expect(alice.page.locator("#conn")).to_have_text("online", timeout=20_000)
    bob = await web.text_client("bob")
    await alice.open("bob")
    await alice.say("I'm back")
    await bob.expect("I'm back")


async def test_phone_sized_screen(browser: Browser, web: Network) -> None:
    """On a phone the people list is a drawer behind the menu button; chatting works."""
    bob = await web.text_client("bob")
    alice = await join(browser, web, "alice", viewport={"width": 390, "height": 800}, is_mobile=True, has_touch=True)
    page = alice.page
    await expect(page.locator("#menu")).to_be_visible()
    await expect(page.locator("#people")).not_to_be_in_viewport()
    await page.locator("#menu").click()
    await expect(page.locator("#people")).to_be_in_viewport()
    await alice.open("bob")
    await expect(page.locator("#people")).not_to_be_in_viewport()
    await alice.say("typed on a phone")
    await bob.expect("typed on a phone")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390


async def test_readme_screenshot(browser: Browser, web: Network, tmp_path: Path) -> None:
    """A realistic conversation on screen; with CHATNET_UPDATE_SCREENSHOT=1 it is saved
    as docs/screenshot.png for the README (otherwise under the test's tmp dir)."""
    with FakeOpenAI() as fake:
        fake.reply = lambda body: PLAN if "plan" in echo_reply(body).lower() else ADVICE
        start_assistant(web, fake)
        web.start_bot("thermometer1", "thermometer.py", THERMOMETER_INTERVAL="1")
        bob = await web.text_client("bob")
        carol = await web.text_client("carol")
        alice = await join(browser, web, "alice", viewport={"width": 1200, "height": 720})
        await expect(alice.peer("openai")).to_have_class(re.compile(r"\bonline\b"), timeout=20_000)
        await expect(alice.peer("thermometer1")).to_have_class(re.compile(r"\bonline\b"), timeout=20_000)

        await alice.page.get_by_role("button", name="Subscribe", exact=True).click()
        await expect(alice.pane("thermometer1").locator(".reading")).not_to_have_count(0)
        await alice.open("bob")
        await bob.send("alice: Are we still on for the hike on Saturday?")
        await expect(alice.pane("bob").locator(".msg.theirs")).to_have_count(1)
        await alice.say("Yes! I'll ask the assistant for a plan.")
        await bob.expect("assistant")
        await alice.open("openai")
        await alice.say("Is it warm enough for a hike this weekend?")
        await expect(alice.pane("openai").locator(".msg.theirs")).to_have_count(1)
        await alice.say("Great, plan a short Saturday hike for Bob and me")
        await expect(alice.pane("openai").locator(".msg.theirs li")).to_have_count(3)
        await carol.send("alice: Can I join you two?")
        await bob.send("alice: Great, see you at 9")
        await expect(alice.peer("carol").locator(".unread")).to_have_text("1")
        await expect(alice.peer("bob").locator(".unread")).to_have_text("1")
        await expect(alice.page.locator("#thermo-latest")).to_contain_text("°C")
        update = os.environ.get("CHATNET_UPDATE_SCREENSHOT") == "1"
        path = ROOT / "docs" / "screenshot.png" if update else tmp_path / "screenshot.png"
        await alice.page.screenshot(path=str(path))
        assert path.stat().st_size > 10_000
