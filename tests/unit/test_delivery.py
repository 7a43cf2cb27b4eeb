"""Delivery off the routing path, driven directly: the MailWriter's batches and reports,
the Archiver's batches, and Priority, against the message API in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatnet import delivery
from chatnet.delivery import Archiver, MailWriter, Outcome, Priority
from chatnet.limits import MAX_MESSAGE_CHARS
from chatnet.protocol import Delivery, format_datetime, message_dict, new_id, utcnow
from tests.unit.fakes import FakeApi, turns, until


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries and pauses in milliseconds."""
    monkeypatch.setattr(delivery, "MAIL_RETRY_DELAYS", (0.001, 0.002, 0.003))
    monkeypatch.setattr(delivery, "ARCHIVE_RETRY_PAUSE", 0.001)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


class Reports:
    """The MailWriter's report callback: each batch's messages and whether they were saved."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[str], bool]] = []

    def __call__(self, batch: list[Outcome], saved: bool, unknown: frozenset[str]) -> None:
        self.batches.append(([outcome.doc["message"] for outcome in batch], saved))


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
async def writer(api: FakeApi, reports: Reports) -> AsyncIterator[MailWriter]:
    mail = MailWriter(api, Priority(), reports)  # type: ignore[arg-type]
    task = asyncio.get_running_loop().create_task(mail.run())
    yield mail
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def mail(text: str, sender: str = "alice", destination: str = "joe") -> Outcome:
    now = format_datetime(utcnow())
    return Outcome(message_dict(new_id(), sender, destination, text, now), sender)


def entry(text: str, msg_id: str | None = None) -> Delivery:
    return (msg_id, "alice", "bob", text, format_datetime(utcnow()), "chat", None, ())


# --- MailWriter -------------------------------------------------------------------------------


async def test_a_burst_is_stored_in_one_request_in_sending_order(writer: MailWriter, api: FakeApi, reports: Reports) -> None:
    """Messages submitted together go in one store request, in order, and are reported saved together."""
    for i in range(5):
        writer.submit(mail(f"m{i}"))
    await until(lambda: reports.batches, "the report")
    assert [[d["message"] for d in c.args["docs"]] for c in api.requests("store_mail")] == [[f"m{i}" for i in range(5)]]
    assert reports.batches == [([f"m{i}" for i in range(5)], True)]
    assert (writer.saved, writer.failed) == (5, 0)


async def test_different_storing_options_go_in_separate_requests(writer: MailWriter, api: FakeApi, reports: Reports) -> None:
    """A sender's ttl/keep_latest hints are passed on; messages with other hints are not mixed in."""
    writer.submit(mail("a"))
    writer.submit(mail("b", sender="thermo"), (60, 5))
    writer.submit(mail("c", sender="thermo"), (60, 5))
    writer.submit(mail("d"))
    await until(lambda: len(reports.batches) == 3, "three reports")
    assert [([d["message"] for d in c.args["docs"]], c.args["ttl_seconds"], c.args["keep_latest"]) for c in api.requests("store_mail")] == [
        (["a"], None, None), (["b", "c"], 60, 5), (["d"], None, None),
    ]  # fmt: skip


async def test_batches_are_bounded(writer: MailWriter, api: FakeApi, reports: Reports, monkeypatch: pytest.MonkeyPatch) -> None:
    """No request carries more than MAIL_BATCH messages."""
    monkeypatch.setattr(delivery, "MAIL_BATCH", 2)
    for i in range(5):
        writer.submit(mail(f"m{i}"))
    await until(lambda: len(reports.batches) == 3, "three reports")
    assert [len(c.args["docs"]) for c in api.requests("store_mail")] == [2, 2, 1]


async def test_a_store_that_stays_down_is_reported_not_saved(writer: MailWriter, api: FakeApi, reports: Reports) -> None:
    """After the last retry the batch is reported as not saved and counted as failed."""
    api.fail("store_mail")
    writer.submit(mail("lost"))
    await until(lambda: reports.batches, "the report")
    assert reports.batches == [(["lost"], False)]
    assert len(api.requests("store_mail")) == len(delivery.MAIL_RETRY_DELAYS) + 1
    assert (writer.saved, writer.failed) == (0, 1)


async def test_mail_goes_before_history(api: FakeApi, reports: Reports) -> None:
    """While a store request is in flight, Priority is not idle; it is idle again after."""
    priority = Priority()
    writer = MailWriter(api, priority, reports)  # type: ignore[arg-type]
    gate = api.hold("store_mail")
    writer.submit(mail("x"))
    draining = asyncio.get_running_loop().create_task(writer.drain())
    await until(lambda: gate.waiting == 1, "the store request")
    assert not priority.idle.is_set() and priority.active == 1
    gate.open()
    await draining
    assert priority.idle.is_set() and priority.active == 0


async def test_one_bad_message_is_refused_to_its_sender_alone(writer: MailWriter, api: FakeApi, reports: Reports) -> None:
    """A message the API refuses fails only itself, never the other people's mail in its batch."""
    writer.submit(mail("fine"))
    writer.submit(mail("x" * (MAX_MESSAGE_CHARS + 1), sender="mallory"))
    writer.submit(mail("also fine", sender="carol"))
    await until(lambda: sum(len(texts) for texts, _ in reports.batches) == 3, "every message reported")
    saved = {text for texts, ok in reports.batches if ok for text in texts}
    assert saved == {"fine", "also fine"}


# --- Archiver -----------------------------------------------------------------------------------


async def test_shutdown_drain_sends_everything_in_bounded_batches(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """drain() with no pace sends the whole backlog, in order, at most ARCHIVE_BATCH per request, keeping given ids."""
    monkeypatch.setattr(delivery, "ARCHIVE_BATCH", 3)
    monkeypatch.setattr(delivery, "ARCHIVE_SLICE", 2)
    archiver = Archiver(api, Priority())  # type: ignore[arg-type]
    archiver.backlog.extend(entry(f"m{i}", f"id{i}" if i % 2 else None) for i in range(7))
    await archiver.drain()
    assert [[d["message"] for d in batch] for batch in api.archived] == [["m0", "m1", "m2"], ["m3", "m4", "m5"], ["m6"]]
    ids = [d["id"] for batch in api.archived for d in batch]
    assert ids[1::2] == ["id1", "id3", "id5"] and all(ids) and len(set(ids)) == 7


async def test_the_archiver_waits_for_mail_requests_to_finish(api: FakeApi) -> None:
    """With pace, a built batch waits while Priority is held, then goes."""
    priority = Priority()
    archiver = Archiver(api, priority)  # type: ignore[arg-type]
    archiver.backlog.append(entry("history"))
    with priority:
        draining = asyncio.get_running_loop().create_task(archiver.drain(pace=0.001))
        await until(lambda: not archiver.backlog, "the batch to be built")
        await turns(20)
        assert api.requests("archive_encoded") == []
    await asyncio.wait_for(draining, 2)
    assert [[d["message"] for d in batch] for batch in api.archived] == [["history"]]


async def test_a_full_batch_goes_without_the_pause_and_a_small_one_waits_for_it(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load history keeps up with the store, not with the pause: full batches go
    back to back; what is left, less than a batch, gathers for the pause first."""
    monkeypatch.setattr(delivery, "ARCHIVE_BATCH", 3)
    archiver = Archiver(api, Priority())  # type: ignore[arg-type]
    archiver.backlog.extend(entry(f"m{i}") for i in range(7))
    draining = asyncio.get_running_loop().create_task(archiver.drain(pace=60))
    await until(lambda: len(api.archived) == 2, "two full batches, without waiting a minute")
    assert [d["message"] for batch in api.archived for d in batch] == [f"m{i}" for i in range(6)]
    await turns(20)
    assert len(api.archived) == 2 and list(archiver.backlog) != []  # the last one gathers
    draining.cancel()


async def test_a_batch_the_api_refuses_does_not_stall_history(api: FakeApi) -> None:
    """A batch refused outright (ApiRejected: retrying can't help) is dropped; later history still goes."""
    archiver = Archiver(api, Priority())  # type: ignore[arg-type]
    archiver.backlog.append(entry("x" * (MAX_MESSAGE_CHARS + 1)))
    await archiver.drain()
    archiver.backlog.append(entry("later"))
    await archiver.drain()
    assert [d["message"] for batch in api.archived for d in batch] == ["later"]


async def test_priority_nests() -> None:
    """Priority is idle only when every holder has left."""
    priority = Priority()
    with priority:
        with priority:
            assert not priority.idle.is_set()
        assert not priority.idle.is_set()
    assert priority.idle.is_set()
