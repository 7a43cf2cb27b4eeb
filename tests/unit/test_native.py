"""Which build of the hot path runs (chatnet/native.py): the compiled one only when it
was made from exactly the sources in the tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import chatnet.dialects.irc
import chatnet.dialects.text
import chatnet.router
import chatnet.session
from chatnet import native


def test_the_build_runs_exactly_when_it_matches_the_sources_and_is_not_turned_off() -> None:
    # A fresh build runs unless CHATNET_NATIVE=0 asks for the sources.
    fresh = native.built_from() == native.sources() and os.environ.get(native.OFF) != "0"
    assert native.active == fresh
    for module in (chatnet.session, chatnet.router, chatnet.dialects.text, chatnet.dialects.irc):  # a sub-package's too
        assert module.__file__ is not None
        in_build = Path(module.__file__).is_relative_to(native.BUILD)
        assert in_build == fresh, f"{module.__name__} loaded from {module.__file__}"
        assert module.__file__.endswith(".py") != fresh


def test_ci_runs_the_compiled_build() -> None:
    """CI installs a compiler (.ci/run): a module mypyc stopped compiling shows here."""
    if os.environ.get("CI") != "true":
        pytest.skip("only CI insists on the build (make native says why it could not)")
    assert native.active, "make native made no build that matches the sources"


def test_an_edited_source_leaves_the_python_modules_running(monkeypatch: pytest.MonkeyPatch) -> None:
    made = native.sources() | {"session": "# an older session.py\n"}
    monkeypatch.setattr(native, "built_from", lambda: made)
    monkeypatch.setattr(native, "active", False)
    path: list[str] = []
    assert not native.use_if_fresh(path)
    assert path == [] and not native.active


def test_a_build_for_another_python_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    made = native.sources() | {"python": ".cpython-39-x86_64-linux-gnu.so"}
    monkeypatch.setattr(native, "built_from", lambda: made)
    monkeypatch.setattr(native, "active", False)
    assert not native.use_if_fresh([])


def test_a_matching_build_goes_first_unless_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "built_from", native.sources)
    monkeypatch.setattr(native, "active", False)
    monkeypatch.setenv(native.OFF, "0")
    assert not native.use_if_fresh([])
    monkeypatch.delenv(native.OFF)
    path = ["chatnet"]
    assert native.use_if_fresh(path)
    assert path == [str(native.BUILD / "chatnet"), "chatnet"] and native.active


def test_a_sub_package_follows_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "active", False)
    path = ["chatnet/dialects"]
    native.use_in(path, "dialects")
    assert path == ["chatnet/dialects"]
    monkeypatch.setattr(native, "active", True)
    native.use_in(path, "dialects")
    assert path == [str(native.BUILD / "chatnet" / "dialects"), "chatnet/dialects"]
