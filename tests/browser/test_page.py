"""The chat page in a real headless Chromium (Debian's), driven by Playwright, against
the real processes: embedded store, message API, chat server, web adapter, and the
bots where a test needs them. Every page reports what its Content-Security-Policy
blocked (the `securitypolicyviolation` events and the console's CSP errors) and every
request it made that was answered 404, and a test fails on any."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Locator, Page, Route, WebSocketRoute, async_playwright, expect

from chatnet.api_client import ApiClient
from chatnet.limits import ACK_IDS_PER_FRAME
from chatnet.message import Message
from chatnet.peer import Peer
from chatnet.process import ROOT
from chatnet.web_bridge import SESSION_COOKIE
from tests.fake_openai import FakeOpenAI, echo_reply
from tests.support import HOST, JsonClient, Network, eventually

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
XSS = "<img src=x onerror=alert(1)>"
PASSWORD = "correct horse battery"
# Each document reports what its CSP blocked to the test (an init script runs before the
# page's own and is not subject to the page's CSP).
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) =>
  window.reportViolation(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));
"""
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


# Every tab a test opened, checked for CSP violations and missing files when the test ends.
TABS: list[Person] = []


@pytest.fixture(autouse=True)
def no_csp_violations() -> Iterator[None]:
    """No test's page may have anything blocked by its Content-Security-Policy, nor ask
    for a file that isn't there (a console 404, such as a missing favicon)."""
    TABS.clear()
    yield
    blocked = [(tab.page.url, text) for tab in TABS for text in tab.violations]
    missing = [url for tab in TABS for url in tab.not_found]
    TABS.clear()
    assert not blocked, f"the CSP blocked: {blocked}"
    assert not missing, f"the page asked for what isn't there (404): {missing}"


class Person:
    """Someone at the page: a browser tab, every dialog it raised and everything its CSP blocked."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.violations: list[str] = []
        self.not_found: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("response", lambda response: self.not_found.append(response.url) if response.status == 404 else None)

    @classmethod
    async def arrive(cls, context: BrowserContext, network: Network) -> Person:
        """A new tab of `context` at the page."""
        page = await context.new_page()
        person = cls(page)
        TABS.append(person)
        await page.expose_binding("reportViolation", lambda source, text: person.violations.append(text))
        await page.add_init_script(REPORT_VIOLATIONS)
        await page.goto(f"http://{HOST}:{network.web_port}/")
        return person

    def _dialog(self, dialog) -> None:  # type: ignore[no-untyped-def]
        self.dialogs.append(dialog.message)
        asyncio.ensure_future(dialog.dismiss())

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.violations.append(f"console: {message.text}")

    async def log_in(self, user: str, password: str = "") -> None:
        """Fill in the login form and press Enter (no password: as a guest)."""
        await self.page.locator("#login-name").fill(user)
        await self.page.locator("#login-password").fill(password)
        await self.page.locator("#login-name").press("Enter")

    async def create_account(self, user: str, password: str, repeat: str | None = None) -> None:
        await self.page.get_by_role("button", name="Create an account").click()
        await self.page.locator("#login-name").fill(user)
        await self.page.locator("#login-password").fill(password)
        await self.page.locator("#login-repeat").fill(password if repeat is None else repeat)
        await self.page.get_by_role("button", name="Create account", exact=True).click()

    async def online_as(self, user: str) -> None:
        await expect(self.page.locator("#conn")).to_have_text("online")
        await expect(self.page.locator("#me")).to_have_text(user)
        await expect(self.page.locator("#login")).to_be_hidden()

    async def log_in_again(self, user: str) -> None:
        """After a reload: a guest's name is filled in, Enter logs in."""
        await expect(self.page.locator("#login-name")).to_have_value(user)
        await self.page.locator("#login-name").press("Enter")
        await self.online_as(user)

    def peer(self, name: str) -> Locator:
        return self.page.locator(f'#people li[data-peer="{name}"]')

    def room(self, name: str) -> Locator:
        return self.page.locator(f'#rooms li[data-room="{name}"]')

    def pane(self, name: str) -> Locator:
        return self.page.locator(f'.messages[data-peer="{name}"]')

    def welcome(self) -> Locator:
        """The welcome line(s), in whichever pane."""
        return self.page.locator(".messages .system.welcome")

    @property
    def title(self) -> Locator:
        return self.page.locator("#pane-title")

    async def open(self, name: str) -> None:
        await self.peer(name).locator("button").click()
        await expect(self.title).to_have_text(name)

    async def open_room(self, name: str) -> None:
        await self.room(name).locator("button").click()
        await expect(self.title).to_have_text(name)

    async def start(self, name: str) -> None:
        """Open a conversation with someone through "Message someone…"."""
        await self.page.locator("#new-chat-name").fill(name)
        await self.page.locator("#new-chat-name").press("Enter")
        await expect(self.title).to_have_text(name)

    async def say(self, text: str) -> None:
        """Type into the composer and press Enter."""
        await self.page.locator("#text").fill(text)
        await self.page.locator("#text").press("Enter")
        await expect(self.page.locator("#text")).to_have_value("")


async def join(browser: Browser, network: Network, user: str, **context: object) -> Person:
    """Open the page in a fresh browser context and log in as a guest."""
    ctx = await browser.new_context(**context)  # type: ignore[arg-type]
    person = await Person.arrive(ctx, network)
    await person.log_in(user)
    await person.online_as(user)
    return person


async def bot_client(network: Network, name: str) -> JsonClient:
    """A bot as the network knows one: logged in with the service token."""
    return JsonClient(await Peer.connect(HOST, network.chat_port, name, service_token=network.token))


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
    bot = await bot_client(web, "openai")  # stands in for the assistant: a bot's replies are Markdown
    await expect(alice.peer("openai").locator(".tag")).to_have_text("bot")

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
    bot = await bot_client(web, "openai")
    await expect(alice.peer("openai")).to_have_class(re.compile(r"\bonline\b"))
    await alice.open("openai")
    await alice.say("tell me something")
    asked = await bot.expect(lambda m: m.type == "chat" and m.sender == "alice")
    assert asked.metadata["sender_features"] == ["stream", "typing"]

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
        await carol.send("#general: Anyone up for a hike on Saturday?")
        await carol.send("alice: Can I join you two?")
        await bob.send("alice: Great, see you at 9")
        await expect(alice.peer("carol").locator(".unread")).to_have_text("1")
        await expect(alice.peer("bob").locator(".unread")).to_have_text("1")
        await expect(alice.room("#general").locator(".unread")).to_have_text("1")
        await expect(alice.page.locator("#thermo-latest")).to_contain_text("°C")
        update = os.environ.get("CHATNET_UPDATE_SCREENSHOT") == "1"
        path = ROOT / "docs" / "screenshot.png" if update else tmp_path / "screenshot.png"
        await alice.page.screenshot(path=str(path))
        assert path.stat().st_size > 10_000


# --- accounts, sessions and the CSP -------------------------------------------------------


async def session_cookie(context: BrowserContext) -> dict[str, object]:
    cookies = {cookie["name"]: cookie for cookie in await context.cookies()}
    assert SESSION_COOKIE in cookies, cookies
    return dict(cookies[SESSION_COOKIE])


async def test_an_account_session_resumes_on_reload_and_leave_ends_it(browser: Browser, web: Network) -> None:
    """Create an account on the page: the session lives in an HttpOnly, SameSite=Strict
    cookie that page script can't read; a reload and a second tab resume the account
    without the password; Leave ends it everywhere — a reload shows the login form and
    the old token logs nobody in."""
    context = await browser.new_context()
    alice = await Person.arrive(context, web)
    await alice.create_account("alice", PASSWORD)
    await alice.online_as("alice")
    await expect(alice.page.locator("#me")).to_have_attribute("title", "logged in with your account")
    cookie = await session_cookie(context)
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["secure"] is False
    token = str(cookie["value"]).partition(":")[2]
    readable = await alice.page.evaluate("JSON.stringify([document.cookie, {...localStorage}, {...sessionStorage}])")
    assert token not in readable and PASSWORD not in readable and SESSION_COOKIE not in readable
    assert await alice.page.locator("#login-password").input_value() == ""

    await alice.page.reload()
    await alice.online_as("alice")  # nothing typed
    await expect(alice.page.locator("#me")).to_have_attribute("title", "logged in with your account")
    other = await Person.arrive(context, web)  # a second tab
    await other.online_as("alice")

    await alice.page.locator("#logout").click()
    await expect(alice.page.locator("#login")).to_be_visible()
    await expect(other.page.locator("#login")).to_be_visible()
    await expect(other.page.locator("#login-error")).to_have_text("You left from another tab; log in again.")
    assert SESSION_COOKIE not in {c["name"] for c in await context.cookies()}
    async with alice.page.expect_response("**/api/session") as answer:
        await alice.page.reload()
    assert await (await answer.value).json() == {"user": None}
    await expect(alice.page.locator("#login")).to_be_visible()
    await expect(alice.page.locator("#app")).to_be_hidden()
    async with ApiClient(web.api_url, web.token) as api:
        assert not (await api.check_login("alice", "192.0.2.1", token=token)).ok


async def test_refusals_are_shown_on_the_login_form(browser: Browser, web: Network) -> None:
    """A wrong password, an account's name without its password, a bot's name and two
    passwords that differ are each said in plain words on the form; the right password
    then logs in."""
    async with ApiClient(web.api_url, web.token) as api:
        await api.create_account("alice", PASSWORD)
    bot = await bot_client(web, "helper")
    person = await Person.arrive(await browser.new_context(), web)
    error = person.page.locator("#login-error")

    await person.log_in("alice", "not the password")
    await expect(error).to_have_text("Wrong password for 'alice'.")
    await expect(person.page.locator("#login-password")).to_be_focused()
    await person.log_in("alice")  # as a guest
    await expect(error).to_have_text("'alice' is an account: enter its password to log in.")
    await person.log_in("helper")
    await expect(error).to_have_text("The name 'helper' belongs to a bot; choose another.")
    await person.create_account("carol", PASSWORD, repeat="something else")
    await expect(error).to_have_text("The two passwords differ: type the same one twice.")
    await person.page.get_by_role("button", name="I have an account: log in").click()
    await person.log_in("alice", PASSWORD)
    await person.online_as("alice")
    await bot.close()


async def test_bots_are_marked_by_what_the_server_says(browser: Browser, web: Network) -> None:
    """A bot is marked as one from the server's word (the welcome's bots, presence's
    `bot`), whatever its name; a person named like the configured bot is not."""
    # The page's configured bot: a name no bot definition holds (the API's default bot,
    # openai, has its name reserved), so a guest can take it.
    web.stop("web")
    web.start_web(BOT_NAME="lookalike")
    early = await bot_client(web, "weather")  # online before alice: from the welcome
    impostor = await web.json_client("lookalike")  # a guest with the configured bot's name
    alice = await join(browser, web, "alice")
    late = await bot_client(web, "helper")  # comes online after: from its presence frame
    for name in ("weather", "helper"):
        await expect(alice.peer(name)).to_have_class(re.compile(r"\bonline\b"))
        await expect(alice.peer(name).locator(".tag")).to_have_text("bot")
    await expect(alice.peer("lookalike")).to_have_class(re.compile(r"\bonline\b"))
    await expect(alice.peer("lookalike").locator(".tag")).to_have_count(0)

    await late.send("alice", "**hello** from a bot")
    await impostor.send("alice", "**hello** from a person")
    await alice.open("helper")
    await expect(alice.pane("helper").locator(".msg .body strong")).to_have_text("hello")
    await alice.open("lookalike")
    await expect(alice.pane("lookalike").locator(".msg .body")).to_have_text("**hello** from a person")
    for client in (early, impostor, late):
        await client.close()


async def test_a_whole_session_runs_under_the_csp(browser: Browser, web: Network) -> None:
    """Create an account, chat with a person and a bot (Markdown, a stream), reload,
    read history, leave and come back as a guest: the CSP blocks nothing of the page's
    own. It is enforced: markup with an inline style or script injected at the end is
    blocked and reported."""
    bob = await web.text_client("bob")
    bot = await bot_client(web, "openai")
    context = await browser.new_context()
    alice = await Person.arrive(context, web)
    await alice.create_account("alice", PASSWORD)
    await alice.online_as("alice")

    await alice.open("bob")
    await alice.say("hello bob")
    await bob.expect("hello bob")
    await bob.send("alice: hi alice, *not* markdown")
    await expect(alice.pane("bob").locator(".msg.theirs .body")).to_have_text(["hi alice, *not* markdown"])
    await alice.open("openai")
    await alice.say("tell me")
    await bot.expect(lambda m: m.type == "chat" and m.sender == "alice")
    await bot.send("alice", "Here is **bold** and a [link](https://example.org)", stream={"id": "s1", "seq": 0, "done": False})
    await bot.send("alice", "Here is **bold** and a [link](https://example.org), done.", stream={"id": "s1", "done": True})
    await expect(alice.pane("openai").locator(".msg.theirs a")).to_have_attribute("href", "https://example.org")
    await alice.page.get_by_role("button", name="!who").click()
    await expect(alice.pane("openai").locator(".system").last).to_contain_text("Online (")

    async with ApiClient(web.api_url, web.token) as api:  # the server archives in batches
        await eventually(lambda: api.history("alice", "bob"), lambda found: len(found[0]) == 2, "history of alice and bob")
    await alice.page.reload()
    await alice.online_as("alice")
    await alice.open("bob")
    await expect(alice.pane("bob").locator(".msg .body")).to_have_text(["hello bob", "hi alice, *not* markdown"])
    await alice.page.locator("#logout").click()
    await alice.log_in("alice2")
    await alice.online_as("alice2")
    assert alice.violations == []

    # The policy is in force: what it is there to stop is stopped, and reported.
    ran = await alice.page.evaluate(
        """() => {
            document.body.insertAdjacentHTML("beforeend", '<div id="styled" style="color: rgb(255, 0, 0)">x</div>');
            const script = document.createElement("script");
            script.textContent = "window.inlineRan = true";
            document.body.append(script);
            return [getComputedStyle(document.getElementById("styled")).color, window.inlineRan === true];
        }"""
    )
    assert ran == ["rgb(29, 36, 51)", False]  # the page's ink colour, not red; the script never ran

    def reported(found: list[str]) -> bool:  # by the events, whose text starts with the directive
        return {"style-src-attr", "script-src-elem"} <= {text.split()[0] for text in found}

    await eventually(lambda: asyncio.sleep(0, alice.violations), reported, "the CSP's reports of both")
    assert sum(v.startswith("console:") for v in alice.violations) >= 2, alice.violations
    alice.violations.clear()


# --- acknowledged delivery: the page acks what it has shown ---------------------------------


async def store_mail(network: Network, messages: list[Message]) -> None:
    async with ApiClient(network.api_url, network.token) as api:
        await api.store_mail(messages)


async def pending_count(network: Network, user: str) -> int:
    async with ApiClient(network.api_url, network.token) as api:
        return (await api.pending(user, 1))[1]


async def test_the_page_acknowledges_the_stored_mail_it_shows(browser: Browser, web: Network) -> None:
    """Stored mail shown at login is acknowledged by the page, so the next login finds none."""
    mail = [Message(sender="bob", destination="alice", message=f"while you were away {i}") for i in range(3)]
    await store_mail(web, mail)
    alice = await join(browser, web, "alice")
    await expect(alice.peer("bob").locator(".unread")).to_have_text("3")
    await alice.open("bob")
    await expect(alice.pane("bob").locator(".msg .body")).to_have_text([m.message for m in mail])
    await expect(alice.pane("bob").locator(".msg .tag")).to_have_text(["stored"] * 3)
    await eventually(lambda: pending_count(web, "alice"), lambda left: left == 0, "alice's pending mail")

    await alice.page.reload()
    await alice.log_in_again("alice")
    await expect(alice.welcome()).to_have_text(["Welcome, alice! No stored messages."])


class Wire:
    """A tab's WebSocket with the test in the middle: it records every frame both ways,
    may hold back the page's acks (as if the page closed before sending them), may
    hand the page each stored-mail frame twice (a repeat, as after a reconnect) and may
    hold stored-mail frames back until `release_stored` (as a slow handover)."""

    def __init__(self) -> None:
        self.to_server: list[dict[str, Any]] = []
        self.to_page: list[dict[str, Any]] = []
        self.hold_acks = False
        self.repeat_stored = False
        self.hold_stored = False
        self.held: list[str | bytes] = []
        self._page_side: WebSocketRoute | None = None

    def release_stored(self) -> None:
        assert self._page_side is not None and self.held, "no stored mail was held back"
        self.hold_stored = False
        for message in self.held:
            self._page_side.send(message)
        self.held.clear()

    def route(self, page_side: WebSocketRoute) -> None:
        self._page_side = page_side
        server = page_side.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            self.to_server.append(frame)
            if not (self.hold_acks and frame.get("type") == "ack"):
                server.send(message)

        def from_server(message: str | bytes) -> None:
            frame = json.loads(message)
            self.to_page.append(frame)
            if self.hold_stored and frame.get("metadata", {}).get("stored"):
                self.held.append(message)
                return
            page_side.send(message)
            if self.repeat_stored and frame.get("metadata", {}).get("stored"):
                page_side.send(message)

        page_side.on_message(from_page)
        server.on_message(from_server)

    def acked(self) -> list[str]:
        return [id for frame in self.to_server if frame.get("type") == "ack" for id in frame["ids"]]

    def received(self) -> list[str]:
        """Ids of the chat and subscription frames the page got."""
        return [f["id"] for f in self.to_page if f.get("type") in ("chat", "subscription")]


async def alice_reads_two_notes(browser: Browser, web: Network, wire: Wire) -> tuple[Person, list[str]]:
    """Two notes from bob stored for alice; alice logs in through `wire` and opens bob's
    pane. Returns her and the notes' ids."""
    mail = [Message(sender="bob", destination="alice", message=f"note {i}") for i in range(2)]
    await store_mail(web, mail)
    context = await browser.new_context()
    await context.route_web_socket(re.compile(r"/ws$"), wire.route)
    alice = await Person.arrive(context, web)
    await alice.log_in("alice")
    await alice.online_as("alice")
    await alice.open("bob")
    return alice, [m.id for m in mail]


async def test_unacknowledged_mail_comes_again_and_a_repeat_is_shown_once(browser: Browser, web: Network) -> None:
    """The page acks all it showed (live too, repeats again); what it never acked comes again, shown once."""
    wire = Wire()
    wire.hold_acks = wire.repeat_stored = True
    alice, ids = await alice_reads_two_notes(browser, web, wire)
    await expect(alice.pane("bob").locator(".msg .body")).to_have_text(["note 0", "note 1"])  # each once
    await eventually(lambda: asyncio.sleep(0, wire.acked()), lambda acked: sorted(acked) == sorted(ids * 2), "acks of both, shown and repeated")
    assert await pending_count(web, "alice") == 2  # held back: nothing was taken off

    bob = await web.text_client("bob")
    await bob.send("alice: live now")
    await expect(alice.pane("bob").locator(".msg .body")).to_have_text(["note 0", "note 1", "live now"])
    await eventually(lambda: asyncio.sleep(0, wire.acked()), lambda acked: set(wire.received()) <= set(acked), "an ack of the live one")

    wire.hold_acks = wire.repeat_stored = False
    await alice.page.reload()  # the page closes before its acks got through
    await alice.log_in_again("alice")
    # Its acks never got through, so both notes are pending still, and the live one went
    # to stored mail when the connection closed (the server keeps an ack reader's live lines).
    await expect(alice.welcome()).to_have_text(["Welcome, alice! 3 stored messages."])
    await alice.open("bob")
    await expect(alice.pane("bob").locator(".msg.theirs .body")).to_have_text(["note 0", "note 1", "live now"])
    await expect(alice.pane("bob").locator(".msg.theirs .tag")).to_have_text(["stored"] * 3)
    assert len(set(wire.received())) == 3  # the same three ids, the second time round
    await eventually(lambda: pending_count(web, "alice"), lambda left: left == 0, "alice's pending mail")
    acks = [frame for frame in wire.to_server if frame.get("type") == "ack"]
    assert all(set(frame) == {"type", "ids"} and 0 < len(frame["ids"]) <= ACK_IDS_PER_FRAME for frame in acks)
    assert set(wire.acked()) == set(wire.received())  # everything it got, and nothing else


async def test_mail_shown_from_history_first_still_says_it_was_stored(browser: Browser, web: Network) -> None:
    """The pane's history can come before the handover of the same mail (after a reload,
    say): the handover then tags the rows already shown "stored", and shows none twice."""
    wire = Wire()
    wire.hold_stored = True
    alice, _ = await alice_reads_two_notes(browser, web, wire)
    bodies, tags = alice.pane("bob").locator(".msg .body"), alice.pane("bob").locator(".msg .tag")
    await expect(bodies).to_have_text(["note 0", "note 1"])  # the history's rows
    await expect(tags).to_have_count(0)
    await eventually(lambda: asyncio.sleep(0, len(wire.held)), lambda held: held == 2, "both handed over, held back")
    wire.release_stored()
    await expect(tags).to_have_text(["stored"] * 2)
    await expect(bodies).to_have_text(["note 0", "note 1"])  # each once still
    await eventually(lambda: pending_count(web, "alice"), lambda left: left == 0, "alice's pending mail, acked")


async def test_history_goes_in_around_mail_already_on_screen(browser: Browser, web: Network) -> None:
    """Mail handed over at login can be on screen before the pane's history comes; the
    history newer than it goes below it, in the server's order, not above it."""
    mail = [Message(sender="bob", destination="alice", message=f"note {i}") for i in range(3)]
    await store_mail(web, mail)
    async with ApiClient(web.api_url, web.token) as api:
        assert await api.ack("alice", [m.id for m in mail[1:]]) == 2  # read on another device
    context = await browser.new_context()
    alice = await Person.arrive(context, web)

    async def after_the_mail(route: Route) -> None:
        await expect(alice.pane("bob").locator(".msg .body")).to_have_text(["note 0"])
        await route.continue_()

    await context.route(re.compile(r"/api/history\?"), after_the_mail)
    await alice.log_in("alice")
    await alice.online_as("alice")
    await alice.open("bob")
    await expect(alice.pane("bob").locator(".msg .body")).to_have_text(["note 0", "note 1", "note 2"])
    await expect(alice.pane("bob").locator(".msg .tag")).to_have_text(["stored"])


# --- rooms, and unread counts that come from the server -------------------------------------


async def server_unread(network: Network, user: str, name: str) -> int:
    """The unread count of `user`'s conversation `name`, as the message API has it."""
    async with ApiClient(network.api_url, network.token) as api:
        found = {c["name"].lower(): c["unread"] for c in await api.conversations(user)}
    return int(found.get(name.lower(), 0))


async def server_unread_is(network: Network, user: str, name: str, count: int) -> None:
    await eventually(lambda: server_unread(network, user, name), lambda n: n == count, f"{user}'s unread count of {name}")


async def test_general_is_where_a_page_lands_and_chat_there_goes_both_ways(browser: Browser, web: Network) -> None:
    """Everyone is in #general from the first login: the page lists it under Rooms, opens
    it with the welcome line, and chats there with a terminal user both ways."""
    carol = await web.text_client("carol")
    alice = await join(browser, web, "alice")
    await expect(alice.room("#general")).to_be_visible()
    await expect(alice.title).to_have_text("#general")
    await expect(alice.pane("#general").locator(".system.welcome")).to_have_text([re.compile(r"^Welcome, alice!")])

    await carol.send("#general: hello room, from the terminal")
    general = alice.pane("#general")
    await expect(general.locator(".msg.theirs .body")).to_have_text(["hello room, from the terminal"])
    await expect(general.locator(".msg.theirs .sender")).to_have_text(["carol"])
    await alice.say("hello carol, from the page")
    assert "[#general][alice] hello carol, from the page" in await carol.expect("from the page")
    await expect(general.locator(".msg.mine .body")).to_have_text(["hello carol, from the page"])
    await expect(alice.peer("carol")).to_have_count(1)  # carol is online, and no one wrote to her:
    await expect(alice.pane("carol")).to_have_count(0)  # a room's message makes no person's conversation


async def test_a_rooms_unread_count_is_in_the_title_and_survives_a_reload(browser: Browser, web: Network) -> None:
    """Room messages that came while another conversation was open are counted on the
    room and in the page's title; after a reload the count comes back from the server;
    reading the room clears it there too, so the next reload counts only what came after."""
    carol = await web.text_client("carol")
    alice = await join(browser, web, "alice")
    await alice.start("bob")
    await carol.send("#general: one")
    await carol.send("#general: two")
    badge = alice.room("#general").locator(".unread")
    await expect(badge).to_have_text("2")
    await expect(alice.page).to_have_title("(2) chatnet")
    await server_unread_is(web, "alice", "#general", 2)  # archived (in batches), and not read

    await alice.page.reload()
    await alice.log_in_again("alice")
    await expect(alice.title).to_have_text("bob")  # the tab reopens what it had open
    await expect(badge).to_have_text("2")
    await expect(alice.page).to_have_title("(2) chatnet")

    await alice.open_room("#general")
    await expect(alice.pane("#general").locator(".msg.theirs .body")).to_have_text(["one", "two"])
    await expect(badge).to_have_count(0)
    await expect(alice.page).to_have_title("chatnet")
    await server_unread_is(web, "alice", "#general", 0)

    await alice.start("bob")
    await carol.send("#general: three")
    await expect(badge).to_have_text("1")
    await server_unread_is(web, "alice", "#general", 1)
    await alice.page.reload()
    await alice.log_in_again("alice")
    await expect(badge).to_have_text("1")  # not 3: the first two were read
    await expect(alice.page).to_have_title("(1) chatnet")


async def test_a_second_device_sees_the_same_unread_counts(browser: Browser, web: Network) -> None:
    """An account logged in on a second device (another browser) sees the counts the
    first one shows, a room's and a person's; what it reads is read on the first one
    after a reload."""
    first = await Person.arrive(await browser.new_context(), web)
    await first.create_account("alice", PASSWORD)
    await first.online_as("alice")
    await first.page.locator("#join-room-name").fill("#hiking")
    await first.page.locator("#join-room-name").press("Enter")
    await expect(first.title).to_have_text("#hiking")
    await first.start("dave")
    carol = await web.text_client("carol")
    bob = await web.text_client("bob")
    await carol.send("!join #hiking")
    await carol.expect("Joined #hiking")
    await carol.send("#hiking: anyone for Saturday?")
    await carol.send("#hiking: 9:00 at the lake")
    await bob.send("alice: are you coming?")
    await expect(first.room("#hiking").locator(".unread")).to_have_text("2")
    await expect(first.peer("bob").locator(".unread")).to_have_text("1")
    await expect(first.page).to_have_title("(3) chatnet")
    await server_unread_is(web, "alice", "#hiking", 2)
    await server_unread_is(web, "alice", "bob", 1)

    second = await Person.arrive(await browser.new_context(), web)
    await second.log_in("alice", PASSWORD)
    await second.online_as("alice")
    await expect(second.room("#hiking").locator(".unread")).to_have_text("2")
    await expect(second.peer("bob").locator(".unread")).to_have_text("1")
    await expect(second.page).to_have_title("(3) chatnet")

    await second.open_room("#hiking")
    await expect(second.pane("#hiking").locator(".msg.theirs .body")).to_have_text(["anyone for Saturday?", "9:00 at the lake"])
    await second.open("bob")
    await expect(second.pane("bob").locator(".msg.theirs .body")).to_have_text(["are you coming?"])
    await second.open_room("#general")
    await server_unread_is(web, "alice", "#hiking", 0)
    await server_unread_is(web, "alice", "bob", 0)
    await carol.send("#hiking: bring water")
    await expect(second.room("#hiking").locator(".unread")).to_have_text("1")
    await server_unread_is(web, "alice", "#hiking", 1)

    await first.page.reload()
    await first.online_as("alice")
    await expect(first.title).to_have_text("dave")
    await expect(first.room("#hiking").locator(".unread")).to_have_text("1")
    await expect(first.peer("bob").locator(".unread")).to_have_count(0)
    await expect(first.page).to_have_title("(1) chatnet")


async def test_join_or_create_a_room_set_its_topic_see_its_members_and_leave(browser: Browser, web: Network) -> None:
    """The join field creates a room (the page opens it), a terminal user joins and the
    room says so, the members panel lists who is in, the topic is set from the page and
    shown, and /join and /part in the composer do what they say."""
    alice = await join(browser, web, "alice")
    carol = await web.text_client("carol")
    await alice.page.locator("#join-room-name").fill("hiking")  # the '#' may be left out
    await alice.page.locator("#join-room-name").press("Enter")
    await expect(alice.title).to_have_text("#hiking")
    await expect(alice.room("#hiking")).to_be_visible()
    hiking = alice.pane("#hiking")
    await expect(hiking.locator(".system.joined")).to_have_text(["Created #hiking; you are its owner."])

    await carol.send("!join #hiking")
    await carol.expect("Joined #hiking")
    await expect(hiking.locator(".system.presence")).to_have_text(["carol joined #hiking."])
    await alice.page.locator("#members-toggle").click()
    members = alice.page.locator("#members-list li")
    await expect(members).to_have_count(2)
    await expect(alice.page.locator('#members-list li[data-member="carol"]')).to_have_class(re.compile(r"\bonline\b"))
    await expect(alice.page.locator("#members-count")).to_have_text("(2)")

    await alice.page.locator("#topic-edit").click()
    await alice.page.locator("#topic-text").fill("Saturday, 9:00 at the lake")
    await alice.page.locator("#topic-text").press("Enter")
    assert "Topic of #hiking set by alice: Saturday, 9:00 at the lake" in await carol.expect("Topic of #hiking")
    await expect(alice.page.locator("#pane-topic")).to_have_text("Saturday, 9:00 at the lake")
    await carol.send("#hiking: see you there")
    await expect(hiking.locator(".msg.theirs .body")).to_have_text(["see you there"])
    await carol.send("!leave #hiking")
    await expect(members).to_have_count(1)
    await expect(hiking.locator(".system.presence")).to_have_text(["carol joined #hiking.", "carol left #hiking."])

    await alice.say("/join #books")
    await expect(alice.title).to_have_text("#books")
    await expect(alice.room("#books")).to_be_visible()
    await alice.say("/part")
    await expect(alice.pane("#books").locator(".system.left")).to_have_text(["Left #books."])
    await expect(alice.room("#books")).to_have_count(0)
    await expect(alice.page.locator("#room-join")).to_be_visible()
    await expect(alice.page.locator("#text")).to_be_disabled()
    await alice.page.locator("#room-join").click()
    await expect(alice.room("#books")).to_be_visible()
    await expect(alice.page.locator("#text")).to_be_enabled()


async def test_commands_typed_in_the_composer_do_what_they_say(browser: Browser, web: Network) -> None:
    """`/msg bob hi` sends bob "hi"; `!who` and `!help` are asked of the server and
    answered in the open pane (help in columns); an unknown /command is refused here.
    None of it reaches the room as text."""
    carol = await web.text_client("carol")  # in #general, where the page is
    bob = await web.text_client("bob")
    alice = await join(browser, web, "alice")
    await alice.say("/msg bob hi")
    assert (await bob.expect("] hi")).endswith("[alice] hi")
    await expect(alice.title).to_have_text("bob")
    await expect(alice.pane("bob").locator(".msg.mine .body")).to_have_text(["hi"])

    await alice.open_room("#general")
    general = alice.pane("#general")
    await alice.say("!who")
    await expect(general.locator(".system").last).to_have_text(re.compile(r"^Online \(3\): .*alice"))
    await alice.say("!help")
    help_line = general.locator(".system.help").last
    await expect(help_line).to_contain_text("!join    #room")  # the server's columns, spaces kept
    style = await help_line.evaluate("e => [getComputedStyle(e).fontFamily, getComputedStyle(e).whiteSpace]")
    assert "monospace" in style[0] and style[1] == "pre-wrap", style
    await alice.page.locator("#text").fill("/teleport #moon")
    await alice.page.locator("#text").press("Enter")
    await expect(general.locator(".system.error").last).to_have_text("Unknown command /teleport; /help lists them.")
    await expect(alice.page.locator("#text")).to_have_value("/teleport #moon")  # kept, to be corrected
    await carol.nothing_more()  # the room got none of it as a message
    assert not [line for line in bob.seen if "!who" in line or "/msg" in line]


@pytest.mark.parametrize("where", ["bob", "#general"])
async def test_sixty_messages_in_one_millisecond_page_back_without_gaps(browser: Browser, web: Network, where: str) -> None:
    """60 messages that share one timestamp (a person's and a room's): the first page
    shows the newest 50, "Load earlier messages" the other 10, and then it is gone —
    every message once, in order."""
    member = await web.text_client("alice")  # alice's first login: she is in #general
    await member.close()
    watcher = await web.text_client("watcher")
    await watcher.until_online(lambda names: "alice" not in names)  # the name is free again
    stamp = "2026-01-02T03:04:05.678Z"
    destination = "alice" if where == "bob" else where
    burst = [Message(sender="bob", destination=destination, message=f"burst {i:02d}", timestamp=stamp) for i in range(60)]
    async with ApiClient(web.api_url, web.token) as api:
        assert await api.archive_encoded(json.dumps([m.model_dump(mode="json") for m in burst])) == 60
    alice = await join(browser, web, "alice")
    if where == "bob":
        await alice.start("bob")
    pane = alice.pane(where)
    texts = [m.message for m in burst]
    await expect(pane.locator(".msg .body")).to_have_text(texts[10:])
    earlier = pane.locator(".load-earlier")
    await expect(earlier).to_have_count(1)
    await earlier.click()
    await expect(pane.locator(".msg .body")).to_have_text(texts)
    await expect(earlier).to_have_count(0)  # the server said there is nothing before
    ids = await pane.locator(".msg").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert ids == [m.id for m in burst]


# --- rough edges ------------------------------------------------------------------------------


async def test_the_favicon_is_served(browser: Browser, web: Network) -> None:
    """The page links an icon of its own and /favicon.ico answers too (no console 404)."""
    person = await Person.arrive(await browser.new_context(), web)
    href = await person.page.locator('link[rel="icon"]').get_attribute("href")
    assert href
    for path in (href, "/favicon.ico"):
        answer = await person.page.evaluate(
            "async (path) => { const r = await fetch(path); return [r.status, r.headers.get('content-type'), (await r.text()).length]; }", path
        )
        assert answer[0] == 200 and answer[1].startswith("image/svg+xml") and answer[2] > 100, (path, answer)


async def test_the_welcome_is_shown_once_across_a_reconnect(browser: Browser, web: Network) -> None:
    """When the chat server restarts the page logs in again by itself, and says Welcome
    once, not once per connection."""
    alice = await join(browser, web, "alice")
    await expect(alice.welcome()).to_have_count(1)
    await asyncio.to_thread(web.stop, "server")
    await expect(alice.page.locator("#conn")).not_to_have_text("online")
    await asyncio.to_thread(web.start_server)
    await expect(alice.page.locator("#conn")).to_have_text("online", timeout=20_000)  # a new welcome came
    await expect(alice.welcome()).to_have_count(1)
    carol = await web.text_client("carol")
    await carol.send("#general: are you back?")
    await expect(alice.pane("#general").locator(".msg.theirs .body")).to_have_text(["are you back?"])
    await expect(alice.welcome()).to_have_count(1)


async def test_a_message_to_yourself_is_shown_once(browser: Browser, web: Network) -> None:
    """A message to one's own name shows once, in the tab that sent it and in the
    account's other tab (the server's copy, not a local one and an echo as well)."""
    context = await browser.new_context()
    alice = await Person.arrive(context, web)
    await alice.create_account("alice", PASSWORD)
    await alice.online_as("alice")
    other = await Person.arrive(context, web)
    await other.online_as("alice")
    await alice.start("alice")
    await alice.say("note to self")
    mine = alice.pane("alice").locator(".msg")
    await expect(mine).to_have_attribute("data-id", re.compile(r".+"))  # one row: the server's copy
    bob = await web.text_client("bob")
    await bob.send("alice: after it")  # comes after the note, its copies and echoes
    for tab in (alice, other):
        await expect(tab.pane("bob").locator(".msg .body")).to_have_text(["after it"])
        await expect(tab.pane("alice").locator(".msg .body")).to_have_text(["note to self"])


async def test_readings_are_not_unread(browser: Browser, web: Network) -> None:
    """Thermometer readings arriving while another conversation is open count nowhere:
    neither on the thermometer nor in the title."""
    web.start_bot("thermometer1", "thermometer.py", THERMOMETER_INTERVAL="0.3")
    alice = await join(browser, web, "alice")
    await expect(alice.page.locator("#thermo-panel")).to_be_visible(timeout=20_000)
    await alice.page.get_by_role("button", name="Subscribe", exact=True).click()
    readings = alice.pane("thermometer1").locator(".reading")
    await expect(readings).not_to_have_count(0)
    await alice.open_room("#general")
    seen = await readings.count()
    await expect(readings).not_to_have_count(seen)  # more came while #general was open
    await expect(readings).not_to_have_count(seen + 1)
    await expect(alice.peer("thermometer1").locator(".unread")).to_have_count(0)
    await expect(alice.page).to_have_title("chatnet")
    await alice.page.get_by_role("button", name="Unsubscribe").click()


async def test_the_bot_panels_show_while_their_bots_are_online(browser: Browser, web: Network) -> None:
    """The assistant's panel shows only while the assistant is online (as the server
    says), and the thermometer's only while the thermometer is."""
    alice = await join(browser, web, "alice")
    assistant = await bot_client(web, "openai")
    await expect(alice.page.locator("#assistant-panel")).to_be_visible()
    await expect(alice.page.locator("#thermo-panel")).to_be_hidden()
    await assistant.close()
    await expect(alice.page.locator("#assistant-panel")).to_be_hidden()
    await expect(alice.page.locator("#bots-heading")).to_be_hidden()
    thermometer = await bot_client(web, "thermometer1")
    await expect(alice.page.locator("#thermo-panel")).to_be_visible()
    await expect(alice.page.locator("#assistant-panel")).to_be_hidden()
    await thermometer.close()


async def test_the_personality_menu_shows_the_current_one_and_help_keeps_its_columns(browser: Browser, web: Network) -> None:
    """The personality menu shows the one the assistant keeps for this user, follows a
    change (Rotate, Set) and shows it again after a reload; the assistant's help keeps
    its columns (monospace, spaces kept)."""
    with FakeOpenAI() as fake:
        async with ApiClient(web.api_url, web.token) as api:
            await api.put_state("openai", "alice", {"personality": "spanish"})
        start_assistant(web, fake)
        alice = await join(browser, web, "alice")
        await expect(alice.page.locator("#assistant-panel")).to_be_visible(timeout=20_000)
        menu = alice.page.locator("#personality-name")
        await expect(menu).to_have_value("spanish")
        await alice.page.get_by_role("button", name="Rotate").click()
        await expect(menu).to_have_value("happy")  # the one after spanish
        await menu.select_option("angry")
        await alice.page.get_by_role("button", name="Set personality").click()
        await expect(alice.pane("openai").locator(".msg.theirs .body").last).to_have_text("Personality set to angry.")
        await alice.page.locator("#personality-name").select_option("happy")  # changed here, not sent
        await alice.page.reload()
        await alice.log_in_again("alice")
        await expect(alice.page.locator("#assistant-panel")).to_be_visible()
        await expect(menu).to_have_value("angry")

        await alice.page.get_by_role("button", name="Help", exact=True).click()
        columns = alice.page.locator('.messages[data-peer="openai"] .msg.theirs pre.aligned').last
        await expect(columns).to_contain_text("personality <name>")
        async with ApiClient(web.api_url, web.token) as api:
            page = await eventually(
                lambda: api.history_page("alice", "openai", 1), lambda p: bool(p["messages"]) and "rotate" in p["messages"][-1]["message"], "the help reply"
            )
        sent = page["messages"][-1]["message"].splitlines()
        assert await columns.text_content() == "\n".join(line for line in sent if line.startswith("  "))
        style = await columns.evaluate("e => [getComputedStyle(e).fontFamily, getComputedStyle(e).whiteSpace]")
        assert "monospace" in style[0] and style[1] == "pre-wrap", style


# --- bot replies: Markdown, links, code, and the answer controls -------------------------

TABLE_REPLY = (
    "# Trip plan\n\n"
    "| Day | Walk |\n|---|---|\n| Sat | Lake loop |\n| Sun | Ridge |\n\n"
    "- Pack\n  - water\n  - a warm layer\n- Go\n\n"
    '[the map](https://example.com/map) and [a trap](javascript:alert(3)) and <a href="javascript:alert(4)">raw</a>'
)


async def test_bot_markdown_renders_tables_headings_nested_lists_and_only_safe_links(browser: Browser, web: Network) -> None:
    """A bot's Markdown shows as a heading, a table and a nested list; its http(s) link
    opens in a new tab without the opener; a `javascript:` link is no link; a person's
    plain-text URL is clickable too, a `javascript:` one is not."""
    alice = await join(browser, web, "alice")
    bot = await bot_client(web, "openai")
    await expect(alice.peer("openai")).to_have_class(re.compile(r"\bonline\b"))
    await bot.send("alice", TABLE_REPLY)
    await alice.open("openai")
    body = alice.pane("openai").locator(".msg.theirs .body")
    await expect(body.locator("h1")).to_have_text("Trip plan")
    await expect(body.locator("table th")).to_have_text(["Day", "Walk"])
    await expect(body.locator("table td")).to_have_text(["Sat", "Lake loop", "Sun", "Ridge"])
    await expect(body.locator("ul > li > ul > li")).to_have_text(["water", "a warm layer"])
    link = body.locator("a", has_text="the map")
    await expect(link).to_have_attribute("href", "https://example.com/map")
    await expect(link).to_have_attribute("target", "_blank")
    await expect(link).to_have_attribute("rel", re.compile(r"\bnoopener\b"))
    await expect(body).to_contain_text("a trap")
    await expect(body).to_contain_text('<a href="javascript:alert(4)">raw</a>')  # raw HTML is shown, not run
    assert await alice.page.locator(".messages a[href^='javascript'], .messages a:not([href])").count() == 0

    bob = await web.text_client("bob")
    await bob.send("alice: look at https://example.org/trail, not javascript:alert(5)")
    await alice.open("bob")
    said = alice.pane("bob").locator(".msg.theirs .body")
    await expect(said).to_have_text("look at https://example.org/trail, not javascript:alert(5)")
    await expect(said.locator("a")).to_have_attribute("href", "https://example.org/trail")
    await expect(said.locator("a")).to_have_attribute("target", "_blank")
    assert await alice.page.locator(".messages a[href^='javascript']").count() == 0
    assert alice.dialogs == []


async def test_a_code_block_has_a_copy_button_that_copies_it(browser: Browser, web: Network) -> None:
    """Each code block of a bot's reply has a Copy button; it puts the code on the clipboard."""
    alice = await join(browser, web, "alice")
    await alice.page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    bot = await bot_client(web, "openai")
    await expect(alice.peer("openai")).to_have_class(re.compile(r"\bonline\b"))
    await bot.send("alice", "Try this:\n\n```python\nprint('hi')\n```\n\nand `inline` code has none.")
    await alice.open("openai")
    block = alice.pane("openai").locator(".code-block")
    await expect(block).to_have_count(1)
    await expect(block.locator("pre code")).to_have_text("print('hi')")
    await block.locator("button.copy-code").click()
    await expect(block.locator("button.copy-code")).to_have_text("Copied")
    assert await alice.page.evaluate("navigator.clipboard.readText()") == "print('hi')\n"


async def test_the_working_indicator_follows_the_typing_notice(browser: Browser, web: Network) -> None:
    """A bot's typing notice shows "<bot> is working…" in its conversation; it goes when
    the bot says it stopped, when its answer comes, and after a while without news."""
    alice = await join(browser, web, "alice")
    bot = await bot_client(web, "openai")
    await expect(alice.peer("openai")).to_have_class(re.compile(r"\bonline\b"))
    await alice.open("openai")
    working = alice.page.locator("#typing")
    await expect(working).to_be_hidden()
    await bot.send_raw({"type": "typing", "destination": "alice", "active": True})
    await expect(working).to_be_visible()
    await expect(working).to_contain_text("openai is working…")
    await alice.open_room("#general")
    await expect(working).to_be_hidden()  # it is about the bot's conversation only
    await alice.open("openai")
    await expect(working).to_be_visible()
    await bot.send_raw({"type": "typing", "destination": "alice", "active": False})
    await expect(working).to_be_hidden()

    await bot.send_raw({"type": "typing", "destination": "alice", "active": True})
    await expect(working).to_be_visible()
    await bot.send("alice", "Here you are.")
    await expect(working).to_be_hidden()

    await alice.page.clock.install()
    await bot.send_raw({"type": "typing", "destination": "alice", "active": True})
    await expect(working).to_be_visible()
    await alice.page.clock.fast_forward(61_000)  # a bot that went away mid-answer says nothing more
    await expect(working).to_be_hidden()


async def test_stop_while_an_answer_streams_and_regenerate_the_last_one(browser: Browser, web: Network) -> None:
    """While a bot's answer streams its bubble has Stop, which sends the bot `stop`; the
    finished answer has Regenerate, which sends `regenerate`. The page shows its own
    stop and regenerate as small lines, never as bubbles."""
    alice = await join(browser, web, "alice")
    bot = await bot_client(web, "openai")
    await expect(alice.peer("openai")).to_have_class(re.compile(r"\bonline\b"))
    await alice.open("openai")
    pane = alice.pane("openai")
    await bot.send("alice", "Once upon", stream={"id": "s1", "seq": 0, "done": False})
    bubble = pane.locator(".msg.theirs.streaming")
    await expect(bubble).to_have_count(1)
    await bubble.get_by_role("button", name="Stop").click()
    asked = await bot.expect(lambda m: m.type == "chat" and m.sender == "alice")
    assert (asked.destination, asked.message) == ("openai", "stop")
    await expect(pane.locator(".system.control")).to_have_text(["You asked openai to stop."])
    await bot.send("alice", "Once upon (stopped)", stream={"id": "s1", "done": True})
    answer = pane.locator(".msg.theirs")
    await expect(answer).not_to_have_class(re.compile(r"\bstreaming\b"))
    await expect(answer.get_by_role("button", name="Stop")).to_have_count(0)

    await answer.get_by_role("button", name="Regenerate").click()
    asked = await bot.expect(lambda m: m.type == "chat" and m.sender == "alice")
    assert (asked.destination, asked.message) == ("openai", "regenerate")
    await expect(pane.locator(".system.control")).to_have_text(["You asked openai to stop.", "You asked openai for another answer."])
    await expect(pane.get_by_role("button", name="Regenerate")).to_have_count(0)
    await bot.send("alice", "Once upon a time", stream={"id": "s2", "done": True})
    await expect(pane.get_by_role("button", name="Regenerate")).to_have_count(1)
    await expect(pane.locator(".msg.theirs").last.get_by_role("button", name="Regenerate")).to_have_count(1)
    assert await pane.locator(".msg.mine").count() == 0

    await alice.page.reload()  # from history too: one's own controls are lines, not bubbles
    await alice.log_in_again("alice")
    await alice.open("openai")
    await expect(pane.locator(".system.control")).to_have_count(2)
    assert await pane.locator(".msg.mine").count() == 0


async def test_the_new_bot_form_makes_a_bot_that_comes_online(browser: Browser, web: Network) -> None:
    """A registered user fills in "New bot" (name, personality prompt, model): the
    definition exists, owned by them, and the bot host starts it, so it shows online;
    a name in use is refused on the form; a guest is told to create an account."""
    with FakeOpenAI() as fake:
        start_assistant(web, fake)
        ctx = await browser.new_context()
        alice = await Person.arrive(ctx, web)
        await alice.create_account("alice", PASSWORD)
        await alice.online_as("alice")
        await alice.page.locator("#new-bot-panel summary").click()
        await alice.page.locator("#new-bot-name").fill("poet")
        await alice.page.locator("#new-bot-system").fill("You answer in rhymes.")
        await alice.page.locator("#new-bot-model").fill("tiny-model")
        await alice.page.get_by_role("button", name="Create bot").click()
        await expect(alice.page.locator("#new-bot-result")).to_have_text("poet is made; it comes online in a moment.")
        async with ApiClient(web.api_url, web.token) as api:
            made = await api.bot("poet")
        assert made is not None and (made["owner"], made["system"], made["model"]) == ("alice", "You answer in rhymes.", "tiny-model")
        await expect(alice.peer("poet")).to_have_class(re.compile(r"\bonline\b"), timeout=20_000)
        await expect(alice.peer("poet").locator(".tag")).to_have_text("bot")

        await alice.page.locator("#new-bot-name").fill("openai")
        await alice.page.get_by_role("button", name="Create bot").click()
        await expect(alice.page.locator("#new-bot-result")).to_have_text(re.compile("openai"))
        await expect(alice.page.locator("#new-bot-result")).to_have_class(re.compile(r"\berror\b"))

        guest = await join(browser, web, "visitor")
        await guest.page.locator("#new-bot-panel summary").click()
        await expect(guest.page.locator("#new-bot")).to_be_hidden()
        await expect(guest.page.locator("#new-bot-guest")).to_be_visible()
