"""launcher.py as `make run` uses it: a real subprocess that starts the network, with
every port free and every directory under tmp, and MONGO_URL at a closed port so the
embedded store starts."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from chatnet.config import Settings
from chatnet.launcher import child_env, redact_url
from chatnet.process import free_port, script
from tests.support import HOST, ConsoleProcess, TextClient

START_TIMEOUT = 90.0  # store, API and server one after another


class LauncherProcess(ConsoleProcess):
    """The launcher over a pipe: its console read line by line."""

    async def banner(self) -> str:
        """Everything up to the end of the banner."""
        await self.expect("Press Ctrl-C to stop.")
        return "\n".join(self.seen)

    def pids(self) -> dict[str, int]:
        """Child name → pid, as the banner lists them."""
        return {name: int(pid) for name, pid in re.findall(r"^\s+(\w+)\s+pid (\d+)", "\n".join(self.seen), re.M)}

    async def interrupt(self, times: int = 1, timeout: float = 60.0) -> int:
        """Ctrl-C (pressed `times` times); the launcher's exit code once it has stopped everything."""
        for press in range(times):
            self.process.send_signal(signal.SIGINT)
            if press + 1 < times:  # the next press must find the stop under way
                await self.expect("Stopping chatnet")
        out, _ = await asyncio.wait_for(self.process.communicate(), timeout)
        self.seen.extend(out.decode().splitlines())
        return self.process.returncode or 0


@pytest.fixture
def launcher_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENAI_", "API_TOKEN"))}
    env.update(
        CHAT_HOST=HOST, CHAT_PORT=str(free_port()),
        API_HOST=HOST, API_PORT=str(free_port()),
        WEB_HOST=HOST, WEB_PORT=str(free_port()),
        MONGO_URL=f"mongodb://{HOST}:{free_port()}", MONGO_DB="launchertest",
        DATA_DIR=str(tmp_path / "data"), LOG_DIR=str(tmp_path / "logs"),
        PYTHONUNBUFFERED="1",
    )  # fmt: skip
    return env


@pytest.fixture
async def start_launcher(launcher_env: dict[str, str]) -> AsyncIterator[Callable[[], asyncio.Future[LauncherProcess]]]:
    """Starts `launcher.py --no-web --no-thermometer --no-openai`; none outlives the test."""
    started: list[LauncherProcess] = []

    async def start() -> LauncherProcess:
        launcher = await LauncherProcess.start(
            script("launcher.py", "--no-web", "--no-thermometer", "--no-openai"), launcher_env, timeout=START_TIMEOUT
        )
        assert isinstance(launcher, LauncherProcess)
        started.append(launcher)
        return launcher

    yield start
    for launcher in started:
        if launcher.process.returncode is None:
            await launcher.interrupt()


async def gone(pid: int, timeout: float = 10.0) -> bool:
    """True once no process has this pid."""
    for _ in range(int(timeout / 0.1)):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.1)
    return False


async def login(port: int, user: str) -> TextClient:
    client = await TextClient.connect(HOST, port)
    await client.login(user)
    return client


async def test_network_chats_keeps_mail_across_a_stop_and_start(start_launcher, launcher_env: dict[str, str]) -> None:
    """The banner shows where to connect; users chat; mail saved before Ctrl-C stops every child is handed over after a new start."""
    chat_port, api_port = launcher_env["CHAT_PORT"], launcher_env["API_PORT"]
    launcher = await start_launcher()
    banner = await launcher.banner()
    assert f"nc {HOST} {chat_port}" in banner
    assert f"python async_client.py --port {chat_port}" in banner
    assert f"http://{HOST}:{api_port}/docs" in banner
    assert str(Path(launcher_env["DATA_DIR"]) / "store") in banner
    assert launcher_env["LOG_DIR"] in banner
    assert "skipped (--no-web)" in banner and "skipped (--no-thermometer)" in banner
    pids = launcher.pids()
    assert set(pids) == {"store", "api", "server"}

    alice, bob = await login(int(chat_port), "alice"), await login(int(chat_port), "bob")
    await alice.send("bob: hi bob")
    await bob.expect("[alice] hi bob")
    await alice.send("carol: kept for you")
    await alice.expect("User 'carol' is offline. Message saved.")
    await alice.close()
    await bob.close()

    assert await launcher.interrupt() == 0
    for name, pid in pids.items():
        assert await gone(pid), f"{name} (pid {pid}) still running after the launcher stopped"
    assert "chatnet stopped." in "\n".join(launcher.seen)

    again = await start_launcher()
    await again.banner()
    carol = TextClient(*await asyncio.open_connection(HOST, int(chat_port)))
    assert "1 stored message" in await carol.login("carol")
    await carol.expect("[alice] 'kept for you'")
    await carol.close()


async def test_crashed_chat_server_is_restarted(start_launcher, launcher_env: dict[str, str]) -> None:
    """Killing the chat server makes the launcher say so and start it again; users can log in after; two Ctrl-Cs leave nothing running."""
    chat_port = int(launcher_env["CHAT_PORT"])
    launcher = await start_launcher()
    await launcher.banner()
    old_pid = launcher.pids()["server"]
    os.kill(old_pid, signal.SIGKILL)
    await launcher.expect("chat server exited with code -9; restarting in 1 s", timeout=15)
    restarted = await launcher.expect("chat server restarted (pid", timeout=45)
    new_pid = int(re.findall(r"pid (\d+)", restarted)[0])
    assert new_pid != old_pid
    dave = await login(chat_port, "dave")
    await dave.send("!who")
    await dave.expect("dave")
    await dave.close()
    pids = {**launcher.pids(), "server": new_pid}
    assert await launcher.interrupt(times=2) == 0
    assert "Hurrying" in "\n".join(launcher.seen)
    for name, pid in pids.items():
        assert await gone(pid), f"{name} (pid {pid}) still running after two Ctrl-Cs"


def test_children_read_back_every_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The environment the launcher hands its children rebuilds exactly its settings, secrets and nested values included."""
    settings = Settings(
        _env_file=None, api_token="s3cret", chat_port=5123, data_dir=tmp_path / "data",
        openai_base_url="http://127.0.0.1:9/v1", bot_personalities={"pirate": "Talk like a pirate."},
    )  # fmt: skip
    for key in list(os.environ):
        if key.lower() in Settings.model_fields:
            monkeypatch.delenv(key)
    for key, value in child_env(settings).items():
        monkeypatch.setenv(key, value)
    assert Settings(_env_file=None) == settings


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mongodb://localhost:27017", "mongodb://localhost:27017"),
        ("mongodb+srv://user:pa55@cluster0.example.net/db", "mongodb+srv://user:***@cluster0.example.net/db"),
    ],
)
def test_banner_hides_a_mongo_password(url: str, shown: str) -> None:
    """A MongoDB URL is shown on the console without its password."""
    assert redact_url(url) == shown
