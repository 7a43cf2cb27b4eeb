"""launcher.py as `make run` uses it: a real subprocess that starts the network, with
every port free and every directory under tmp, and MONGO_URL at a closed port so the
embedded store starts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import fields
from pathlib import Path

import httpx
import pytest

from chatnet.config import Settings
from chatnet.errors import ChildFailed
from chatnet.launcher import Listener, child_env, port_problems, redact_url
from chatnet.process import CHAT_LISTENING, WEB_LISTENING, Child, on_port, port_open, script
from chatnet.tls import client_context
from tests.support import HOST, ConsoleProcess, TextClient, free_port

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
        CHAT_HOST=HOST, CHAT_PORT=str(free_port()), CHAT_TLS_PORT=str(free_port()),
        IRC_PORT=str(free_port()), IRC_TLS_PORT=str(free_port()),
        API_HOST=HOST, API_PORT=str(free_port()),
        WEB_HOST=HOST, WEB_PORT=str(free_port()),
        BOTS_HOST=HOST, BOTS_PORT=str(free_port()),
        MONGO_URL=f"mongodb://{HOST}:{free_port()}", MONGO_DB="launchertest",
        DATA_DIR=str(tmp_path / "data"), LOG_DIR=str(tmp_path / "logs"),
        PYTHONUNBUFFERED="1",
    )  # fmt: skip
    return env


@pytest.fixture
async def start_launcher(launcher_env: dict[str, str]) -> AsyncIterator[Callable[[], asyncio.Future[LauncherProcess]]]:
    """Starts `launcher.py --no-web --no-thermometer --no-openai` (or with `flags`); none outlives the test."""
    started: list[LauncherProcess] = []

    async def start(env: dict[str, str] | None = None, flags: tuple[str, ...] = ("--no-web", "--no-thermometer", "--no-openai")) -> LauncherProcess:
        launcher = await LauncherProcess.start(script("launcher.py", *flags), env or launcher_env, timeout=START_TIMEOUT)
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


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs Debian's redis-server")
async def test_nodes_share_the_ports_and_a_killed_one_comes_back(start_launcher, launcher_env: dict[str, str]) -> None:
    """--nodes 2: two chat servers on one port joined by a Redis the launcher starts; users
    spread over both see each other and talk; a node killed outright is started again."""
    chat_port = int(launcher_env["CHAT_PORT"])
    launcher = await start_launcher(flags=("--no-web", "--no-thermometer", "--no-openai", "--nodes", "2"))
    banner = await launcher.banner()
    assert "Nodes:             2 sharing the chat and IRC ports, through Redis at redis://127.0.0.1:" in banner
    pids = launcher.pids()
    assert {"redis", "server", "server2"} <= set(pids)
    users = [await login(chat_port, f"n{i}") for i in range(8)]
    logs = Path(launcher_env["LOG_DIR"])
    on = {name: (logs / f"{name}.log").read_text().count(" logged in from ") for name in ("server", "server2")}
    assert on["server"] and on["server2"], on  # the kernel spread them over both nodes
    await users[0].send("!who")
    assert await users[0].expect("Online (8): ") == "Online (8): " + ", ".join(f"n{i}" for i in range(8))
    for i in range(1, 8):
        await users[i].send(f"n0: hello from n{i}")
    heard = {(await users[0].line()).split("]", 1)[1] for _ in range(1, 8)}  # from both nodes: in any order
    assert heard == {f"[n{i}] hello from n{i}" for i in range(1, 8)}

    os.kill(pids["server2"], signal.SIGKILL)
    await launcher.expect("chat server node 2 exited with code -9; restarting in 1 s", timeout=15)
    await launcher.expect("chat server node 2 restarted (pid", timeout=45)
    for user in users:
        await user.close()
    assert await launcher.interrupt() == 0
    for name, pid in pids.items():
        if name != "server2":
            assert await gone(pid), f"{name} (pid {pid}) still running after the launcher stopped"


def test_children_read_back_every_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The environment the launcher hands its children rebuilds exactly its settings, secrets and nested values included."""
    settings = Settings(
        _env_file=None, api_token="s3cret", chat_port=5123, data_dir=tmp_path / "data",
        openai_base_url="http://127.0.0.1:9/v1", bot_personalities={"pirate": "Talk like a pirate."},
    )  # fmt: skip
    for key in list(os.environ):
        if key.lower() in {item.name for item in fields(Settings)}:
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


def running_with(variable: str, value: str) -> list[int]:
    """Pids of live processes whose environment has `variable=value` (every child of a
    launcher inherits its DATA_DIR)."""
    marker = f"{variable}={value}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return pids


needs_proc = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc to find left-over processes")


@needs_proc
@pytest.mark.parametrize("setting", ["CHAT_PORT", "CHAT_TLS_PORT", "API_PORT", "BOTS_PORT"])
async def test_port_taken_by_something_else_is_a_clear_error(start_launcher, launcher_env: dict[str, str], setting: str) -> None:
    """A port another program listens on stops the start: the port and its setting named with a free one to use, exit 1, nothing started or left running."""
    port = int(launcher_env[setting])
    with socket.create_server((HOST, port)):  # something else, listening there
        launcher = await start_launcher(flags=("--no-web", "--no-thermometer"))  # the bot host too: its BOTS_PORT is checked
        code, output = await launcher.finish(timeout=30)
    assert code == 1
    assert f"Port {port} ({setting}) is already in use: another chatnet, or something else, is listening there." in output
    suggested = re.search(rf"Stop it or choose another port, e\.g\. {setting}=(\d+)\.", output)
    assert suggested and int(suggested.group(1)) != port, output
    assert "Starting" not in output and "chatnet is running." not in output
    assert running_with("DATA_DIR", launcher_env["DATA_DIR"]) == []


@needs_proc
async def test_second_launcher_fails_and_leaves_the_first_alone(start_launcher, launcher_env: dict[str, str], tmp_path: Path) -> None:
    """While one network runs, a second launcher on the same ports names each taken port and exits 1; the first keeps serving."""
    first = await start_launcher()
    await first.banner()
    second_env = {**launcher_env, "DATA_DIR": str(tmp_path / "second" / "data"), "LOG_DIR": str(tmp_path / "second" / "logs")}
    second = await start_launcher(second_env)
    code, output = await second.finish(timeout=30)
    assert code == 1
    for setting in ("API_PORT", "CHAT_PORT", "CHAT_TLS_PORT"):
        assert f"Port {launcher_env[setting]} ({setting}) is already in use" in output
    assert "chatnet is running." not in output
    assert running_with("DATA_DIR", second_env["DATA_DIR"]) == []
    assert all(alive(pid) for pid in first.pids().values())
    erin = await login(int(launcher_env["CHAT_PORT"]), "erin")
    await erin.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_token_file_and_certificate_are_kept_and_shown(start_launcher, launcher_env: dict[str, str]) -> None:
    """The banner shows where the API token (DATA_DIR/api_token, mode 600, never printed) and the certificate are and the TLS address; a new start reuses both."""
    data = Path(launcher_env["DATA_DIR"])
    token_file, cert = data / "api_token", data / "tls" / "cert.pem"
    chat_port, tls_port, api_url = launcher_env["CHAT_PORT"], launcher_env["CHAT_TLS_PORT"], f"http://{HOST}:{launcher_env['API_PORT']}"

    launcher = await start_launcher()
    banner = await launcher.banner()
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert f"API token:         in {token_file} (generated now; set API_TOKEN to choose one)" in banner
    assert f"python async_client.py --tls --port {tls_port} --cafile {cert}" in banner
    assert f"openssl s_client -connect {HOST}:{tls_port} -quiet" in banner
    assert f"TLS certificate:   {cert} (self-signed for localhost, 127.0.0.1, ::1" in banner
    assert (data / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600
    await api_answers(api_url, token)
    await greets_over_tls(int(tls_port), cert)
    assert await launcher.interrupt() == 0
    assert token not in "\n".join(launcher.seen)

    cert_bytes = cert.read_bytes()
    again = await start_launcher()
    banner = await again.banner()
    assert f"in {token_file} (generated at the first start;" in banner
    assert token_file.read_text().strip() == token and cert.read_bytes() == cert_bytes
    await api_answers(api_url, token)
    await greets_over_tls(int(tls_port), cert)
    assert token not in "\n".join(again.seen)
    assert f"nc {HOST} {chat_port}" in banner


async def api_answers(api_url: str, token: str) -> None:
    """The API takes `token` and refuses a request without it."""
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{api_url}/mail/alice")).status_code == 401
        assert (await http.get(f"{api_url}/mail/alice", headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def greets_over_tls(port: int, cert: Path) -> None:
    """The chat server's TLS port verifies against `cert` and asks for a name."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port, ssl=client_context(cert)), 10)
    try:
        assert await asyncio.wait_for(reader.readline(), 10) == b"Enter username:\n"
    finally:
        writer.close()


@pytest.mark.parametrize(("given", "missing"), [("TLS_CERT", "TLS_KEY"), ("TLS_KEY", "TLS_CERT")])
async def test_half_a_tls_pair_is_a_clear_error(start_launcher, launcher_env: dict[str, str], tmp_path: Path, given: str, missing: str) -> None:
    """TLS_CERT without TLS_KEY (or the other way round) stops the start with one line saying what to set."""
    launcher = await start_launcher({**launcher_env, given: str(tmp_path / "some.pem")})
    code, output = await launcher.finish(timeout=30)
    assert code == 1
    assert f"{given} is set but {missing} is not: set both, or neither" in output
    assert "Starting" not in output


def test_two_settings_naming_one_port_are_caught() -> None:
    """Two settings naming the same port are reported as such, not as a port somebody else holds."""
    port = free_port()
    problems = port_problems([Listener("CHAT_PORT", HOST, port, CHAT_LISTENING), Listener("WEB_PORT", HOST, port, WEB_LISTENING)])
    assert problems == [f"CHAT_PORT and WEB_PORT are both port {port}: give each its own."]


def test_free_ports_pass_the_port_rule() -> None:
    """Ports nobody holds pass; port 0 (the system picks) is never a problem."""
    assert port_problems([Listener("CHAT_PORT", HOST, free_port(), CHAT_LISTENING), Listener("API_PORT", HOST, 0, CHAT_LISTENING)]) == []


async def test_web_page_over_https_with_web_tls(start_launcher, launcher_env: dict[str, str]) -> None:
    """With WEB_TLS=true the banner's browser address is https:// and the page is served over TLS with the generated certificate."""
    launcher = await start_launcher({**launcher_env, "WEB_TLS": "true"}, ("--no-thermometer", "--no-openai"))
    banner = await launcher.banner()
    url = f"https://{HOST}:{launcher_env['WEB_PORT']}"
    assert f"Browser:           {url}" in banner
    async with httpx.AsyncClient(verify=client_context(Path(launcher_env["DATA_DIR"]) / "tls" / "cert.pem"), timeout=10) as http:
        assert (await http.get(f"{url}/")).status_code == 200


def test_a_probe_answered_by_another_program_is_not_ready(tmp_path: Path) -> None:
    """A child that never said it listens on its port is not ready, though something else answers the probe there."""
    with socket.create_server((HOST, 0)) as other:
        port = other.getsockname()[1]
        says_another_port = f"print('listening on {HOST}:{port + 1}', flush=True); import time; time.sleep(60)"
        child = Child(
            "server", [sys.executable, "-c", says_another_port], port_open(HOST, port),
            log_path=tmp_path / "server.log", listening=on_port(CHAT_LISTENING, port),
        )  # fmt: skip
        with pytest.raises(ChildFailed, match="was not ready after 2 s"):
            child.start(timeout=2.0)
    assert not child.running


async def test_children_die_with_a_launcher_killed_outright(start_launcher) -> None:  # type: ignore[no-untyped-def]
    """`kill -9` of the launcher leaves no child running (nor holding a port)."""
    launcher = await start_launcher()
    await launcher.banner()
    children = launcher.pids()
    assert set(children) >= {"store", "api", "server"}
    launcher.process.kill()
    await launcher.process.wait()
    for name, pid in children.items():
        assert await gone(pid, timeout=20), f"{name} (pid {pid}) outlived its launcher"


async def test_bot_host_starts_without_openai_settings(start_launcher, launcher_env: dict[str, str]) -> None:
    """Without OPENAI_* the bot host starts all the same (API-defined bots may bring their own provider): the banner shows the bot API, its HTTP chat answers."""
    bots_url = f"http://{HOST}:{launcher_env['BOTS_PORT']}"
    launcher = await start_launcher(flags=("--no-web", "--no-thermometer"))
    banner = await launcher.banner()
    assert "openai" in launcher.pids()
    assert "Bot API:" in banner and bots_url in banner and "no OPENAI_*" in banner
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{bots_url}/health")).status_code == 200
    assert await launcher.interrupt() == 0


def thread_policies(pid: int) -> set[int]:
    """The scheduling policy of each thread of the process."""
    policies = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            policies.add(os.sched_getscheduler(int(tid)))
    return policies


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's idle scheduling class")
async def test_store_and_api_leave_the_cpu_to_live_chat(start_launcher, launcher_env: dict[str, str]) -> None:
    """Every thread of the embedded store and of the message API runs in the idle
    scheduling class, chatted through or not; the chat server runs as any process."""
    launcher = await start_launcher()
    await launcher.banner()
    pids = launcher.pids()
    alice = await login(int(launcher_env["CHAT_PORT"]), "alice")
    await alice.send("carol: kept for you")  # the store's and the API's threads at work
    await alice.expect("User 'carol' is offline. Message saved.")
    await alice.close()
    assert thread_policies(pids["store"]) == {os.SCHED_IDLE}
    assert thread_policies(pids["api"]) == {os.SCHED_IDLE}
    assert thread_policies(pids["server"]) == {os.SCHED_OTHER}
