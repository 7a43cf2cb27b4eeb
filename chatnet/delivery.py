"""Delivery off the routing path: offline mail and history, through the message API.

- `MailWriter` stores offline mail in batches, in sending order, and reports each batch's
  outcome (stored, or given up on) through a callback: the sender hears "saved" only
  after the store confirmed, or plainly that it was NOT saved.
- `Archiver` copies delivered live messages to the history in a few large requests,
  built in slices between routing work. History is best effort: under sustained
  overload, what comes while its backlog is full is not archived. Mail is never dropped.
- `FirstLook`: the first look at the pending mail (or the rooms) of logins that arrive
  together is one request, so a login storm costs the API a few requests, not one per login.
- `Priority`: mail and logins go before history.

Neither knows sessions or wire formats: whom to tell is the caller's business.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from chatnet.api_client import ApiClient
from chatnet.errors import ApiRejected, ChatError, StoreUnavailable
from chatnet.limits import MAX_BATCH, MAX_PENDING_USERS
from chatnet.protocol import Delivery, MessageJson, message_text, new_id

logger = logging.getLogger("chatnet.server")

MAIL_BATCH: Final = MAX_BATCH
# How long the server keeps trying to store a message before telling the sender it
# was NOT saved.
MAIL_RETRY_DELAYS: Final = (0.2, 0.5, 1.0)
# History goes out in few, large requests, built in small slices. Each request costs
# this process about a millisecond of loop time in the HTTP client, and many small
# requests were what delayed routing (p99 3.5 ms at 5,000 msg/s with batches of 200;
# 0.9 ms without the requests); building a large batch in one go stalls it too. So a
# batch gathers for ARCHIVE_PAUSE, is encoded ARCHIVE_SLICE documents at a time with
# routing in between, and goes out as one request of up to ARCHIVE_BATCH. When a full
# batch is waiting it goes at once: the pause must not cap history at 5,000 a second.
# A slice of 100 held the loop 0.45–0.8 ms in the latency run, and the ten of a batch
# came back to back: p99 1.5–1.8 ms, 0.74–0.89 with the archive off. Twenty, written
# as text (`message_text`), hold it ≈ 50 µs: p99 0.83–1.10 ms. But once several
# batches wait, routing is saturated and each turn between slices lasts milliseconds:
# slices of 20 then archived 1.4 % of a throughput run's messages, against 2.2 %
# with 100. So a backlog past ARCHIVE_BEHIND is taken ARCHIVE_SLICE_BEHIND at a time.
ARCHIVE_BATCH: Final = MAX_BATCH
ARCHIVE_SLICE: Final = 20
ARCHIVE_BEHIND: Final = 5 * ARCHIVE_BATCH
ARCHIVE_SLICE_BEHIND: Final = 100
ARCHIVE_PAUSE: Final = 0.2
# A batch the API didn't take is tried again after this long.
ARCHIVE_RETRY_PAUSE: Final = 1.0
# History is best effort: while this many wait for a store that can't keep up, what
# comes next is not archived (the router's `_archive`). Mail is never dropped.
ARCHIVE_BACKLOG: Final = 50_000

MailOptions = tuple[int | None, int | None]  # (ttl_seconds, keep_latest)

# The first look at the mail of logins that arrive together is one request (see
# `FirstLook`): names gather this long after the first of them (or, while the requests
# in flight are at their limit, until one returns), at most this many in one request
# (within the API's MAX_PENDING_USERS, and small enough to answer quickly)...
FIRST_LOOK_WINDOW: Final = 0.005
FIRST_LOOK_BATCH: Final = MAX_PENDING_USERS // 4
# ... and at most this many such requests at once: the store serves one request at a
# time, so more in flight only queue there, while here the next batch grows instead.
FIRST_LOOK_IN_FLIGHT: Final = 2
# A look that failed is asked once more before its logins are told "unavailable": in a
# storm it can time out queued in the client's connection pool behind the login checks
# (measured: a batch of 9 of 5,000 logins), and once more costs one request, not 9.
FIRST_LOOK_ATTEMPTS: Final = 2

# What a first look at mail answers: the page (None: it did not fit, ask for it alone) and the total.
Looked = tuple[list[MessageJson] | None, int]
T = TypeVar("T")


class Priority:
    """Mail and logins go before history: while a mail request is in flight, the
    archiver waits, so a busy store answers the people who are waiting first."""

    def __init__(self) -> None:
        self.active = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def __enter__(self) -> None:
        self.active += 1
        self.idle.clear()

    def __exit__(self, *exc_info: object) -> None:
        self.active -= 1
        if not self.active:
            self.idle.set()


@dataclass(slots=True)
class Outcome:
    """A message the MailWriter holds, and what its sender is to be told."""

    doc: dict[str, Any]  # the message in its JSON shape
    sender: Any  # whom to tell (the caller's; None: nobody)
    busy: bool = False  # the recipient was online but not keeping up (rather than offline)
    held: bool = False  # the sender's lines wait for this outcome (Session.hold_lines)


# Called once per batch: its outcomes, whether the store confirmed them, and (when it
# did) the destinations nobody has ever logged in as.
Report = Callable[[list[Outcome], bool, frozenset[str]], None]


@dataclass
class MailWriter:
    """Stores offline mail through the API in batches; confirms only what was stored.

    One task drains the queue, so messages are stored in the order they were sent,
    and a burst of N offline messages costs N/MAIL_BATCH requests, not N.
    """

    api: ApiClient
    priority: Priority
    report: Report
    queue: deque[tuple[MailOptions, Outcome]] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # One drain at a time: shutdown's drain waits for the batch in flight (its sender is
    # told either way) instead of racing it out of order.
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    saved: int = 0
    failed: int = 0

    def submit(self, outcome: Outcome, options: MailOptions = (None, None)) -> None:
        self.queue.append((options, outcome))
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            await self.drain()

    async def drain(self) -> None:
        """Store everything queued (also at shutdown)."""
        async with self.turn:
            while self.queue:
                await self._store(*self._next_batch())

    def _next_batch(self) -> tuple[MailOptions, list[Outcome]]:
        """The oldest messages that share their storing options, up to a batch."""
        options, first = self.queue.popleft()
        batch = [first]
        while self.queue and len(batch) < MAIL_BATCH and self.queue[0][0] == options:
            batch.append(self.queue.popleft()[1])
        return options, batch

    async def _store(self, options: MailOptions, batch: list[Outcome]) -> None:
        ttl_seconds, keep_latest = options
        docs = [outcome.doc for outcome in batch]
        for delay in (*MAIL_RETRY_DELAYS, None):
            try:
                with self.priority:
                    receipt = await self.api.store_mail_receipt(docs, ttl_seconds=ttl_seconds, keep_latest=keep_latest)
            except StoreUnavailable as exc:
                if delay is None:
                    logger.warning("could not store %d message(s): %s", len(batch), exc)
                    return self._give_up(batch)
                await asyncio.sleep(delay)
            except ApiRejected as exc:
                if len(batch) > 1:
                    # Something in the batch can't be stored: halve it until the refusal
                    # is one sender's alone, and everyone else's mail is stored.
                    middle = len(batch) // 2
                    await self._store(options, batch[:middle])
                    await self._store(options, batch[middle:])
                    return
                logger.error("message API refused a message from %s: %s", batch[0].doc.get("sender"), exc)
                return self._give_up(batch)
            else:
                self.saved += len(batch)
                self.report(batch, True, frozenset(name.lower() for name in receipt.unknown))
                return

    def _give_up(self, batch: list[Outcome]) -> None:
        self.failed += len(batch)
        self.report(batch, False, frozenset())


def archive_text(entry: Delivery) -> str:
    """A delivered message as the API archives it (the id the recipient saw, if any),
    as JSON text."""
    msg_id, sender, destination, message, timestamp, kind, metadata, _ = entry
    return message_text(msg_id or new_id(), sender, destination, message, timestamp, kind, metadata)


@dataclass
class Archiver:
    """Copies delivered live messages to the history store, in batches, off the
    routing path. Bounded: under sustained overload what comes while `limit` entries
    wait is not archived; the next batch stored says how many."""

    api: ApiClient
    priority: Priority
    backlog: deque[Delivery] = field(default_factory=deque)  # the router appends, within `limit`
    limit: int = field(default_factory=lambda: ARCHIVE_BACKLOG)
    skipped: int = 0  # not archived since the last report (the backlog was full)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    retry: str = ""  # an encoded batch the API didn't take yet
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)  # one drain at a time
    # True while run() waits for work. The routing path appends to `backlog` itself
    # (Router._archive) and calls wake() only when this is set.
    asleep: bool = False

    def wake(self) -> None:
        self.asleep = False
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            if not (self.retry or self.backlog):  # after a failed batch: go on without new traffic
                self.wakeup.clear()
                self.asleep = True
                await self.wakeup.wait()
            await self.drain(pace=ARCHIVE_PAUSE)

    async def drain(self, pace: float = 0.0) -> None:
        """Send the backlog. In the background (`pace` > 0) a batch gathers for `pace`
        seconds (unless a full one waits), is built in slices, and waits while mail
        requests are in flight; at shutdown everything goes at once."""
        async with self.turn:
            await self._drain(pace)

    async def _drain(self, pace: float) -> None:
        while self.retry or self.backlog:
            if pace and len(self.backlog) < ARCHIVE_BATCH:
                await asyncio.sleep(pace)  # a batch gathers; a full one goes at once
            batch = self.retry or await self._encode_batch(yield_between=bool(pace))
            if pace:
                await self.priority.idle.wait()
            try:
                await self.api.archive_encoded(batch)
            except ApiRejected as exc:
                # Never retried, or it would hold up all history after it: dropped, loudly.
                logger.error("message API refused a history batch; %d message(s) not archived: %s", batch.count('"id":'), exc)
                self.retry = ""
                continue
            except ChatError as exc:
                # Keep the batch (same ids: the retry can't duplicate) and pause; if the
                # backlog fills meanwhile, what comes next is not archived.
                logger.warning("history archive paused: %s", exc)
                self.retry = batch
                await asyncio.sleep(ARCHIVE_RETRY_PAUSE)
                return
            self.retry = ""
            if self.skipped:
                logger.warning("history archive fell %d behind: %d message(s) delivered meanwhile not archived", self.limit, self.skipped)
                self.skipped = 0

    async def _encode_batch(self, yield_between: bool) -> str:
        """Up to ARCHIVE_BATCH entries as a JSON array, a slice at a time."""
        slices: list[str] = []
        taken = 0
        while self.backlog and taken < ARCHIVE_BATCH:
            size = ARCHIVE_SLICE_BEHIND if len(self.backlog) > ARCHIVE_BEHIND else ARCHIVE_SLICE
            count = min(size, len(self.backlog), ARCHIVE_BATCH - taken)
            slices.append(",".join([archive_text(self.backlog.popleft()) for _ in range(count)]))
            taken += count
            if yield_between:
                await asyncio.sleep(0)  # let routing run between slices
        return f"[{','.join(slices)}]"


class FirstLook(Generic[T]):
    """Coalesces what logins that arrive close together ask the API first (their pending
    mail; their rooms) into one request for all of them, so a login storm costs the API
    a few requests, not one per login. `fetch` answers for a batch of names, by key
    (lower case); a name it leaves out gets `missing`."""

    def __init__(
        self,
        fetch: Callable[[list[str]], Awaitable[dict[str, T]]],
        missing: T,
        batch: int,
        priority: Priority,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        what: str = "mail",
    ) -> None:
        self.fetch = fetch
        self.missing = missing
        self.batch = batch
        self.priority = priority
        self.what = what  # for the log
        self._spawn = spawn
        self._waiting: dict[str, tuple[str, list[asyncio.Future[T]]]] = {}  # key -> (name, who waits)
        self._gatherer: asyncio.Task[Any] | None = None
        self._slots = asyncio.Semaphore(FIRST_LOOK_IN_FLIGHT)

    async def look(self, name: str) -> T:
        """The answer for `name`, as one of the window's names; raises what the request raised."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(name.lower(), (name, []))[1].append(future)
        if self._gatherer is None:
            self._gatherer = self._spawn(self._gather())
        return await future

    async def _gather(self) -> None:
        try:
            await asyncio.sleep(FIRST_LOOK_WINDOW)
            while self._waiting:
                await self._slots.acquire()
                keys = list(itertools.islice(self._waiting, self.batch))
                self._spawn(self._ask({key: self._waiting.pop(key) for key in keys}))
        finally:
            self._gatherer = None

    async def _ask(self, batch: dict[str, tuple[str, list[asyncio.Future[T]]]]) -> None:
        try:
            with self.priority:
                names = [name for name, _ in batch.values()]
                for attempt in range(1, FIRST_LOOK_ATTEMPTS + 1):
                    try:
                        answer = await self.fetch(names)
                        break
                    except StoreUnavailable as exc:
                        if attempt == FIRST_LOOK_ATTEMPTS:
                            raise
                        logger.info("first look at the %s of %d login(s) failed (%s); asking again", self.what, len(names), exc)
        except Exception as exc:  # each waiting login reports it as its own look would have
            for _, futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        finally:
            self._slots.release()
        for key, (_, futures) in batch.items():
            looked = answer.get(key, self.missing)
            for future in futures:
                if not future.done():
                    future.set_result(looked)
