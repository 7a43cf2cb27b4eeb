"""Settings: where each value comes from, how text becomes a value, secrets, and the
environment the launcher hands its children."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from chatnet.cli import settings_from
from chatnet.config import Secret, Settings
from chatnet.errors import BadSetting
from chatnet.launcher import child_env
from chatnet.process import ROOT

NAMES = {item.name for item in fields(Settings)}
OPTIONAL = ["api_token", "openai_api_key", "openai_base_url", "tls_cert", "tls_key", "cluster_url"]


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting in the environment, and a working directory without a .env."""
    for key in list(os.environ):
        if key.lower() in NAMES:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def dotenv(tmp_path: Path, *lines: str) -> None:
    (tmp_path / ".env").write_text("".join(f"{line}\n" for line in lines))


def test_keywords_over_environment_over_dotenv_over_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A keyword beats the environment, which beats .env, which beats the default."""
    dotenv(tmp_path, "CHAT_PORT=1", "CHAT_HOST=from-dotenv", "API_PORT=3")
    monkeypatch.setenv("CHAT_PORT", "2")
    monkeypatch.setenv("CHAT_HOST", "from-env")
    settings = Settings(chat_port=9)
    assert (settings.chat_port, settings.chat_host, settings.api_port, settings.web_port) == (9, "from-env", 3, 8080)


def test_no_env_file_skips_dotenv_but_not_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`_env_file=None` leaves .env unread; the environment still counts."""
    dotenv(tmp_path, "CHAT_PORT=1", "API_PORT=3")
    monkeypatch.setenv("API_PORT", "4")
    settings = Settings(_env_file=None)
    assert (settings.chat_port, settings.api_port) == (5000, 4)


def test_another_env_file(tmp_path: Path) -> None:
    """`_env_file` names the file read instead of ./.env."""
    (tmp_path / "other.env").write_text("CHAT_PORT=6\n")
    dotenv(tmp_path, "CHAT_PORT=1")
    assert Settings(_env_file=tmp_path / "other.env").chat_port == 6


def test_names_match_in_any_case(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """CHAT_PORT, chat_port and Chat_Host all name their settings, in the environment and in .env."""
    dotenv(tmp_path, "api_port=3")
    monkeypatch.setenv("chat_port", "7")
    monkeypatch.setenv("Chat_Host", "mixed")
    settings = Settings()
    assert (settings.chat_port, settings.chat_host, settings.api_port) == (7, "mixed", 3)


def test_unknown_variables_are_ignored_unknown_keywords_are_not(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Variables naming no setting are ignored; a keyword naming none is a TypeError."""
    dotenv(tmp_path, "NOT_A_SETTING=1", "VALUELESS")
    monkeypatch.setenv("ALSO_NOT_ONE", "x")
    assert Settings() == Settings(_env_file=None)
    with pytest.raises(TypeError, match="chat_prot"):
        Settings(chat_prot=1)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("chat_host", "0.0.0.0", "0.0.0.0"),
        ("chat_port", "6001", 6001),
        ("chat_port", " 6001 ", 6001),
        ("login_window", "1.5", 1.5),
        ("login_window", "2", 2.0),
        ("data_dir", "/srv/chat", Path("/srv/chat")),
        ("tls_cert", "cert.pem", Path("cert.pem")),
        ("registration", "closed", "closed"),
        ("bot_personalities", '{"pirate": "Arr."}', {"pirate": "Arr."}),
        ("bot_personalities", "{}", {}),
        ("api_token", "t0ken", Secret("t0ken")),
        ("cluster_url", "redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_text_is_read_by_the_fields_type(monkeypatch: pytest.MonkeyPatch, name: str, text: str, expected: Any) -> None:
    """Text from the environment or given as a keyword becomes a value of the field's type."""
    monkeypatch.setenv(name.upper(), text)
    from_env = getattr(Settings(_env_file=None), name)
    monkeypatch.delenv(name.upper())
    from_keyword = getattr(Settings(_env_file=None, **{name: text}), name)
    assert from_env == expected and type(from_env) is type(expected)
    assert from_keyword == expected and type(from_keyword) is type(expected)


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "True", "yes", "YES", "on", "On", "t", "T", "y", "Y"])
def test_true_spellings(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """pydantic's spellings of yes read as True, in any case."""
    monkeypatch.setenv("WEB_TLS", text)
    assert Settings(_env_file=None).web_tls is True


@pytest.mark.parametrize("text", ["0", "false", "FALSE", "False", "no", "NO", "off", "Off", "f", "F", "n", "N"])
def test_false_spellings(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """pydantic's spellings of no read as False, in any case."""
    monkeypatch.setenv("IRC", text)
    assert Settings(_env_file=None).irc is False


@pytest.mark.parametrize("name", OPTIONAL)
def test_empty_is_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    """An optional setting given an empty string, anywhere, is None."""
    dotenv(tmp_path, f"{name.upper()}=")
    assert getattr(Settings(), name) is None
    monkeypatch.setenv(name.upper(), "")
    assert getattr(Settings(_env_file=None), name) is None
    assert getattr(Settings(_env_file=None, **{name: ""}), name) is None


def test_an_empty_string_stays_one_where_it_is_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """A text setting that isn't optional keeps an empty string."""
    monkeypatch.setenv("WEB_ALLOWED_ORIGINS", "")
    assert Settings(_env_file=None).web_allowed_origins == ""


@pytest.mark.parametrize(
    ("variable", "text", "error"),
    [
        ("CHAT_PORT", "abc", "CHAT_PORT: 'abc' is not an integer"),
        ("CHAT_PORT", "5.5", "CHAT_PORT: '5.5' is not an integer"),
        ("CHAT_PORT", "", "CHAT_PORT: '' is not an integer"),
        ("LOGIN_WINDOW", "soon", "LOGIN_WINDOW: 'soon' is not a number"),
        ("IRC", "maybe", "IRC: 'maybe' is not a boolean (true/false, yes/no, on/off, 1/0)"),
        ("REGISTRATION", "Open", "REGISTRATION: 'Open' is not one of 'open', 'closed'"),
        ("BOT_PERSONALITIES", '["pirate"]', """BOT_PERSONALITIES: '["pirate"]' is not a JSON object of strings"""),
        ("BOT_PERSONALITIES", '{"pirate": 1}', """BOT_PERSONALITIES: '{"pirate": 1}' is not a JSON object of strings"""),
        ("BOT_PERSONALITIES", "{pirate", "BOT_PERSONALITIES: '{pirate' is not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    ],
)
def test_a_value_that_cant_be_read_is_named(monkeypatch: pytest.MonkeyPatch, variable: str, text: str, error: str) -> None:
    """A value that can't be read is a BadSetting (a ValueError) naming the variable and what is wrong."""
    monkeypatch.setenv(variable, text)
    with pytest.raises(ValueError) as raised:
        Settings(_env_file=None)
    assert isinstance(raised.value, BadSetting)
    assert str(raised.value) == error


def test_a_keyword_of_the_wrong_type_is_named() -> None:
    """A keyword that isn't text is checked against the field's type; an int passes for a float."""
    with pytest.raises(BadSetting, match=r"^CHAT_PORT: 5.5 is not an integer$"):
        Settings(_env_file=None, chat_port=5.5)
    with pytest.raises(BadSetting, match=r"^IRC: 1 is not a boolean"):
        Settings(_env_file=None, irc=1)
    with pytest.raises(BadSetting, match=r"^CHAT_PORT: True is not an integer$"):
        Settings(_env_file=None, chat_port=True)
    settings = Settings(_env_file=None, login_window=5, tls_cert=Path("c.pem"), bot_personalities={"a": "b"})
    assert (settings.login_window, type(settings.login_window), settings.tls_cert) == (5.0, float, Path("c.pem"))


def test_a_secret_is_never_shown() -> None:
    """A secret's repr and str are stars, in Settings' repr too, and an error about one never shows it."""
    secret = Secret("hunter2")
    assert repr(secret) == "Secret('**********')" and str(secret) == "**********"
    assert secret.get_secret_value() == "hunter2"
    settings = Settings(_env_file=None, api_token="hunter2", openai_api_key="sk-hunter3")
    assert "hunter" not in repr(settings) and "hunter" not in str(settings)
    with pytest.raises(BadSetting) as raised:
        Settings(_env_file=None, api_token=271828)
    assert "271828" not in str(raised.value) and str(raised.value).startswith("API_TOKEN:")


def test_secrets_compare_and_hash_by_value() -> None:
    """Two secrets of one text are equal and hash alike; of two texts, not; a secret is not its text."""
    assert Secret("a") == Secret("a") and hash(Secret("a")) == hash(Secret("a"))
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert len({Secret("a"), Secret("a"), Secret("b")}) == 2


def test_replace_changes_only_what_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """dataclasses.replace changes what it is given and keeps the rest, whatever the environment says by then."""
    settings = Settings(_env_file=None, chat_port=1, api_token="t")
    monkeypatch.setenv("API_PORT", "4")
    changed = replace(settings, chat_port=2)
    assert (changed.chat_port, changed.api_port, changed.api_token) == (2, 8000, Secret("t"))
    assert replace(changed, chat_port=1) == settings


def test_the_properties() -> None:
    """liveness, api_url and bots_url are built from their settings."""
    settings = Settings(_env_file=None, api_host="a", api_port=1, bots_host="b", bots_port=2, ping_interval=5, ping_timeout=3)
    assert (settings.api_url, settings.bots_url, settings.liveness) == ("http://a:1", "http://b:2", (5.0, 3.0))
    assert replace(settings, ping_interval=0).liveness is None


def test_children_read_back_what_the_launcher_hands_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """child_env's variables rebuild an equal Settings: secrets, bools, paths, floats, a Literal and the dict included."""
    settings = Settings(
        _env_file=None, api_token="s3cret", openai_api_key="sk-x", chat_port=5123, irc=False, web_tls=True,
        data_dir=tmp_path / "data", tls_cert=tmp_path / "c.pem", login_window=0.1, registration="closed",
        bot_personalities={"pirate": 'Say "arr".', "poet": "Rhyme, ünicode too."}, web_allowed_origins="",
    )  # fmt: skip
    env = child_env(settings)
    assert env["IRC"] == "false" and env["API_TOKEN"] == "s3cret" and "CLUSTER_URL" not in env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings(_env_file=None) == settings


def test_a_script_reports_a_bad_setting_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """settings_from ends the process with one line naming the variable, not a traceback."""
    monkeypatch.setenv("CHAT_PORT", "abc")
    with pytest.raises(SystemExit) as raised:
        settings_from(argparse.Namespace(debug=None, chat_host="h"), "debug")
    assert raised.value.code == "Bad setting: CHAT_PORT: 'abc' is not an integer"
    monkeypatch.delenv("CHAT_PORT")
    assert settings_from(argparse.Namespace(debug=True, chat_host="h", chat_port=None), "debug").chat_host == "h"


def test_importing_the_settings_loads_no_pydantic() -> None:
    """chatnet.config imports neither pydantic nor python-dotenv (the chat server's memory)."""
    code = "import chatnet.config, sys; print(sorted(m for m in sys.modules if 'pydantic' in m or 'dotenv' in m))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's idle scheduling class")
@pytest.mark.parametrize(("mode", "policy"), [("idle", "SCHED_IDLE"), ("normal", "SCHED_OTHER")])
def test_background_cpu_sets_the_class_a_thread_started_later_inherits(mode: str, policy: str) -> None:
    code = (
        "import os, threading; from chatnet.process import yield_cpu; yield_cpu(os.environ['BACKGROUND_CPU']); "
        "seen = []; t = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0))); t.start(); t.join(); "
        "print(seen[0] == os.sched_getscheduler(0) == getattr(os, os.environ['POLICY']))"
    )
    env = {**os.environ, "BACKGROUND_CPU": mode, "POLICY": policy}
    ran = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "True"
