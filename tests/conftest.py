"""Fixtures: one embedded store for the session, a fresh network (own database, own
ports) per test that asks for it.

Set CHATNET_TEST_MONGO_URL to run everything against another MongoDB instead."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import HOST, Network, own_store


@pytest.fixture(scope="session")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("CHATNET_TEST_MONGO_URL")
    if given:
        yield given
        return
    tmp = tmp_path_factory.mktemp("store")
    store = own_store(tmp / "data", tmp / "store.log")
    store.start()
    yield f"mongodb://{HOST}:{store.port}"
    store.stop()


@pytest.fixture
def network(store_url: str, tmp_path: Path) -> Iterator[Network]:
    """A network with nothing started yet; the test starts what it needs."""
    net = Network(store_url=store_url, tmp=tmp_path)
    yield net
    net.stop_all()


@pytest.fixture
def chat(network: Network) -> Network:
    """The message API and the chat server, running."""
    network.start_api()
    network.start_server()
    return network
