"""Random and adversarial input, in process: the dialects only ever refuse with a
ProtocolError (a line the peer is told about), a session never breaks on bytes it is
fed, and the message API answers a body it can't take with a 4xx, never a 500.

Bounded for CI (`FUZZ_EXAMPLES`, default 200 per property); set it higher to fuzz longer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatnet.api import create_app
from chatnet.config import Settings
from chatnet.dialects import JSON, TEXT
from chatnet.errors import ProtocolError
from chatnet.protocol import dumps
from tests.unit.fakes import Client, FakeApi, running_router, text_client
from tests.unit.fakes import settings as router_settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# JSON values of every kind, including the ones a store can't hold.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(["type", "user", "destination", "message", "metadata", "features", "password", "token", "want_token", "service_token", "id"])
frames = st.dictionaries(field_names, json_values, max_size=6) | st.fixed_dictionaries(
    {"type": st.sampled_from(["chat", "login", "command", "subscription", "ack", "nope"])},
    optional={"destination": json_values, "message": json_values, "metadata": json_values},
)
adversarial_lines = st.sampled_from([
    "[" * 5000 + "]" * 5000,
    '{"a":' * 3000 + "1" + "}" * 3000,
    '{"type":"chat","destination":"bob","message":"x","metadata":{"n":' + "9" * 6000 + "}}",
    '{"type":"chat","destination":"bob","message":"\\ud800"}',
    '{"type":"chat","destination":"bob","message":"x","metadata":{"n":NaN}}',
    '{"type":"chat","destination":"bob","message":"x","metadata":{"n":1e999}}',
    "bob: " + "x" * 3000,
    ":" * 100,
    "!" * 100,
    "\x00\x01\x02 bob: hi",
])


def refuses_cleanly(parse: Any, line: str) -> None:
    with contextlib.suppress(ProtocolError):
        parse(line)


@FUZZ
@given(st.text(max_size=200) | adversarial_lines)
def test_text_dialect_parses_or_refuses_any_line(line: str) -> None:
    """Any text line is an event or a ProtocolError, never anything else."""
    refuses_cleanly(TEXT.parse, line)
    refuses_cleanly(TEXT.parse_login, line)


@FUZZ
@given(frames.map(lambda frame: json.dumps(frame, allow_nan=True)) | st.text(max_size=200) | adversarial_lines)
def test_json_dialect_parses_or_refuses_any_line(line: str) -> None:
    """Any JSON-mode line is an event or a ProtocolError; what it lets through is standard, storable JSON."""
    try:
        event = JSON.parse(line)
    except ProtocolError:
        return
    metadata = getattr(event, "metadata", None)
    if metadata is not None:
        dumps(metadata).encode()  # no lone surrogates
        json.dumps(metadata, allow_nan=False)  # no NaN or Infinity


@pytest.fixture
async def fuzzed_router() -> Any:
    async with running_router(FakeApi(), router_settings(login_rate=0, max_connections_per_ip=0)) as router:
        yield router


@FUZZ
@given(chunks=st.lists(st.binary(max_size=300) | adversarial_lines.map(str.encode), min_size=1, max_size=8))
async def test_a_session_survives_any_bytes(fuzzed_router: Any, chunks: list[bytes], caplog: pytest.LogCaptureFixture) -> None:
    """Bytes of any kind, in any chunks, from a logged-in peer: no error is logged, and the server still routes for others."""
    caplog.set_level(logging.WARNING, logger="chatnet.server")
    caplog.clear()
    name = f"f{uuid.uuid4().hex[:8]}"
    fuzzer = await text_client(fuzzed_router, name)
    for chunk in chunks:
        fuzzer.session.data_received(chunk)
    fuzzer.session.data_received(b"\n")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    probe = Client(fuzzed_router)
    probe.send(f"p{name}")
    assert await probe.expect(lambda line: line.startswith("Welcome"))
    fuzzer.transport.disconnect()
    probe.transport.disconnect()


@pytest.fixture(scope="module")
def api_client(store_url: str) -> Iterator[TestClient]:
    settings_ = Settings(_env_file=None, mongo_url=store_url, mongo_db=f"fuzz{uuid.uuid4().hex[:8]}", api_token="fuzz-token")
    with TestClient(create_app(settings_), headers={"Authorization": "Bearer fuzz-token"}) as client:
        yield client


routes = st.sampled_from([
    ("POST", "/mail"), ("POST", "/history"), ("POST", "/mail/bob/ack"), ("POST", "/accounts"),
    ("POST", "/accounts/bob/login"), ("PUT", "/state/bot/key"), ("PUT", "/accounts/bob/password"),
])  # fmt: skip
timestamps = st.text(max_size=30) | st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-01-01"])
names = st.sampled_from(["alice", "Bob", "x.y-z_1"]) | st.text(max_size=40)
message_like = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=70), "sender": names, "destination": names},
    optional={"message": json_values, "timestamp": timestamps, "type": json_values, "metadata": json_values},
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"messages": st.lists(message_like, max_size=3)}, optional={"ttl_seconds": json_values, "keep_latest": json_values}),
    st.fixed_dictionaries({"ids": st.lists(st.text(max_size=70), max_size=3)}),
    st.fixed_dictionaries({"name": json_values, "password": json_values, "kind": json_values}),
    st.fixed_dictionaries({"source": json_values}, optional={"password": json_values, "token": json_values}),
    st.fixed_dictionaries({"value": json_values}),
)


@FUZZ
@given(route=routes, body=bodies)
def test_the_api_never_answers_500(api_client: TestClient, route: tuple[str, str], body: Any) -> None:
    """Any body to the writing routes is stored or refused with a 4xx: never a server error."""
    method, path = route
    content = json.dumps(body, allow_nan=True)
    response = api_client.request(method, path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code < 500, (method, path, content[:300], response.status_code, response.text[:300])
