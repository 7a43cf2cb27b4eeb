"""The router: who is online, what each line they send means, and where it goes.

Mode-agnostic: it speaks to sessions only through `logged_in`, `deliver`,
`deliver_stored`, `notice` and `error`, whatever dialect each one speaks.

Delivery, in order of preference:
- destination online and keeping up: delivered to its session at once (no database,
  no task, no log line on this path); archived for history later, in batches;
- destination offline, or its output buffer is full: handed to the `MailWriter`,
  which stores it through the message API and only then has the sender told
  "Message saved." — or plainly that it was NOT saved when the API stays down.

Stored mail is handed over at login and on `!check`, oldest first, page by page, by
`MailHandOver` (chatnet.handover), a mixin of `Router`.

Logins are checked by `Identity` (the accounts, through the message API); names are
case-insensitive (the directory keeps them by key), an account may be logged in from
several sessions at once, and JSON sessions get copies of what their account sends
from its others (`metadata.echo`).

Capabilities that are not routing are parts of their own, built here with what each
needs and never importing the router: the rooms (`chatnet.rooms`), the commands about
names and accounts (`chatnet.people`) and network operators (`chatnet.operators`); the
router merges their `commands` into its table.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from chatnet.api_client import ApiClient
from chatnet.config import Settings
from chatnet.delivery import FIRST_LOOK_BATCH, Archiver, FirstLook, Looked, MailOptions, MailWriter, Outcome, Priority
from chatnet.directory import Directory, Group, LocalDirectory
from chatnet.errors import ClusterUnavailable, LoginFailed, ProtocolError
from chatnet.handover import Awaited, MailHandOver
from chatnet.identity import BOT, GUEST, Admission, AskPassword, Identity
from chatnet.limits import MAIL_PAGE, MAX_KEEP_LATEST, MAX_MAIL_TTL_SECONDS, MAX_QUIT_CHARS
from chatnet.liveness import Pinger
from chatnet.operators import Operators
from chatnet.people import People
from chatnet.protocol import (
    COMMANDS,
    TYPING_FEATURE,
    Ack,
    Authenticate,
    Chat,
    Clock,
    Command,
    Delivery,
    Event,
    Login,
    LoginReason,
    MessageType,
    Quit,
    Typing,
    help_lines,
    mail_hints,
    message_dict,
    new_id,
    partial_chunk,
)
from chatnet.rooms import Rooms
from chatnet.session import CLOSE_LINGER, DRAIN_POLL, Flushes, Session

if TYPE_CHECKING:
    from chatnet.nodes import Nodes

logger = logging.getLogger("chatnet.server")

# An address a relay reports is kept to this length (IPv6 with a zone fits).
MAX_ADDRESS_CHARS: Final = 64


# What another node may say to a name's sessions here.
_TOLD_USER: Final = frozenset({Event.INVITED, Event.AWAY})
# Forwards to other nodes whose senders are remembered (to be told if one comes back
# as mail): the newest this many.
MAX_FORWARDS_REMEMBERED: Final = 10_000


class Router(MailHandOver):
    """Who is online, and what happens to each line they send."""

    def __init__(self, settings: Settings, api: ApiClient, directory: Directory[Session] | None = None) -> None:
        self.settings = settings
        self.api = api
        self.clock = Clock()
        self.flushes = Flushes()  # the sessions' output, written once per loop pass
        self.directory: Directory[Session] = directory if directory is not None else LocalDirectory()
        self._local = self.directory.local  # the routing path's one lookup
        self.priority = Priority()
        self.guest_look: FirstLook[bool] = FirstLook(api.guest_logins, False, FIRST_LOOK_BATCH, self.priority, self.spawn, what="names")
        self.identity = Identity(settings, api, self.guest_look.look)
        # Logged in or not. A dict used as a set: 10,000 entries are 0.3 MB as a dict, 1 MB
        # as a set (a set's table grows fourfold).
        self.connections: dict[Session, None] = {}
        self.pinger = Pinger(settings.liveness)  # every pinged session's one timer
        self._per_address: dict[str, int] = {}  # open connections by peer address
        self.mail = MailWriter(api, self.priority, self._mail_stored)
        self.archiver = Archiver(api, self.priority)
        self.first_look: FirstLook[Looked] = FirstLook(lambda names: api.pending_many(names, MAIL_PAGE), ([], 0), FIRST_LOOK_BATCH, self.priority, self.spawn)
        # The routing path's step for history: the archiver's deque and its bound, held here.
        self._backlog = self.archiver.backlog
        self._backlog_limit = self.archiver.limit
        # The other nodes, when there are (CLUSTER_URL): claims, forwarding, rooms across.
        self.nodes: Nodes | None = None
        if settings.cluster_url:
            from chatnet.nodes import Nodes  # the Redis client (and what it loads) only where there is a cluster

            self.nodes = Nodes(settings.cluster_url, settings.cluster_ttl, settings.cluster_prefix, self, self.spawn)
        self.rooms = Rooms(settings, api, self.directory, self.clock, self.priority, self.spawn, self._archive, self.identity.is_bot, self.nodes)
        # Sessions whose stored mail is being handed over, each with whether to look
        # once more when done (None: no; False: quietly; True: someone asked).
        self._handovers: dict[Session, bool | None] = {}
        # Sessions logged in whose welcome's hand-over has not begun (rooms first), each
        # with whether mail was stored for it meanwhile: that mail waits for the
        # hand-over, so the welcome goes out first and counts it (the look taken at
        # login, beside the rooms', is then taken again).
        self._arriving: dict[Session, bool] = {}
        # Sessions that had something stored because they were not keeping up: their
        # mail is handed over as soon as they read again.
        self._diverted: set[Session] = set()
        # Mail outcomes each sender is still owed ("Message saved." or NOT): a peer that is
        # done sending is closed once it has them.
        self._owed: dict[Session, int] = {}
        # Hand-overs waiting for a client's acknowledgements (the `ack` feature).
        self._awaited: dict[Session, Awaited] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Forwards to other nodes by id, and who sent them: told if one comes back as mail.
        self._senders: OrderedDict[str, Session] = OrderedDict()
        self.people = People(self.identity, self.directory, self.clock, self.priority, self.spawn, self.online, self._announce, self.rooms.renamed, self.nodes)
        self.operators = Operators(self.identity, self.nodes)
        self._commands: dict[str, Callable[[Session, str], None]] = {
            "check": self._cmd_check,
            "who": self._cmd_who,
            "help": self._cmd_help,
            **self.people.commands,
            **self.operators.commands,
            **self.rooms.commands,
            "mode": self._cmd_mode,  # a room's settings (the rooms'), or one's own user modes (the operators')
        }
        self._room_mode = self.rooms.commands["mode"]
        assert self._commands.keys() == COMMANDS.keys()

    # --- lifecycle ---------------------------------------------------------------

    async def join_network(self) -> None:
        """With CLUSTER_URL: this node among the others (ClusterUnavailable: Redis is not there)."""
        if self.nodes is not None:
            await self.nodes.start()
            logger.info("node %s of the network through Redis", self.nodes.node)

    def start(self) -> None:
        self.spawn(self.mail.run())
        self.spawn(self.archiver.run())
        self.spawn(self.rooms.markers.run())
        self.spawn(self.identity.load())

    async def stop(self, grace: float) -> None:
        """Say goodbye, store what is queued (for at most `grace` s), close everyone."""
        for session in list(self.connections):
            session.notice("Server shutting down. Goodbye.", Event.SHUTDOWN)
            session.flush()
        try:
            async with asyncio.timeout(grace):
                await self.mail.drain()
                await self.archiver.drain()
        except TimeoutError:
            logger.warning("shutdown: %d message(s) could not be stored in time", len(self.mail.queue))
        for session in list(self.connections):
            session.close()
        # Closing sessions wait for their peers to acknowledge the last lines; what never
        # arrives becomes mail, stored before we go.
        try:
            async with asyncio.timeout(CLOSE_LINGER + grace):
                while self.connections:
                    await asyncio.sleep(DRAIN_POLL)
                await self.mail.drain()
                await self.rooms.markers.flush()
        except TimeoutError:
            logger.warning("shutdown: %d connection(s) still closing, %d message(s) not stored", len(self.connections), len(self.mail.queue))
        self.pinger.close()
        if self.nodes is not None:
            await self.nodes.stop()  # its names let go at once, not a CLUSTER_TTL later
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A tracked background task: kept alive, awaited at shutdown, errors logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task failed", exc_info=task.exception())

    # --- what sessions tell us -----------------------------------------------------

    def connected(self, session: Session) -> None:
        self.connections[session] = None
        count = self._count_address(session.address, +1)
        limit = self.settings.max_connections_per_ip
        if limit and count > limit:
            logger.warning("%s: more than %d connections from %s; refused", session.peer, limit, session.address)
            session.close("Too many connections from your address; try again later.")

    def login(self, session: Session, login: Login) -> None:
        """Answered through session.logged_in / refused / ask_password, now or once the
        API has checked the credentials."""
        verified = session.verified
        if verified is not None and verified.name.lower() == login.user.lower():
            self.spawn(self._claim_and_admit(session, login, verified))  # checked a moment ago (SASL)
            return
        if login.relay_token is not None:
            if not self.identity.relayed(login):
                session.refused(LoginFailed("Wrong relay token.", LoginReason.WRONG_PASSWORD))
                return
            assert login.address is not None
            self._count_address(session.address, -1)  # the browser's, not the relay's
            session.address = sys.intern(login.address[:MAX_ADDRESS_CHARS])
            self._count_address(session.address, +1)
        self._screened(session, login, self._check_login)

    def authenticate(self, session: Session, credentials: Authenticate) -> None:
        """An account's credentials checked ahead of its login (IRC's SASL): answered
        through session.authenticated / refused, with the limits of any login."""
        self._screened(session, Login(credentials.user, password=credentials.password), self._authenticate)

    def _screened(self, session: Session, login: Login, check: Callable[[Session, Login], Coroutine[Any, Any, None]]) -> None:
        """The login's limits first (refused at once), then `check` off the line."""
        try:
            self.identity.screen(login, session.address)
        except LoginFailed as exc:
            session.refused(exc)
            return
        self.spawn(check(session, login))

    async def _authenticate(self, session: Session, login: Login) -> None:
        try:
            with self.priority:
                admission = await self.identity.check(login, session.address, asks_password=False)
        except LoginFailed as exc:
            if session.is_open:
                logger.info("%s: credentials for %s refused (%s)", session.peer, login.user, exc.reason)
                session.refused(exc)
            return
        except Exception:
            logger.exception("%s: checking the credentials of %s failed", session.peer, login.user)
            session.fail()
            return
        if not session.is_open:
            return
        if admission.kind == GUEST:
            session.refused(LoginFailed(f"'{login.user}' is no account.", LoginReason.WRONG_PASSWORD))
        else:
            session.authenticated(admission)

    async def _check_login(self, session: Session, login: Login) -> None:
        try:
            with self.priority:
                admission = await self.identity.check(login, session.address, session.asks_password)
        except AskPassword:
            if session.is_open:
                session.ask_password(login.user)
            return
        except LoginFailed as exc:
            if session.is_open:
                logger.info("%s: login as %s refused (%s)", session.peer, login.user, exc.reason)
                session.refused(exc)
                self._finish_if_done(session)
            return
        except Exception:
            logger.exception("%s: checking the login as %s failed", session.peer, login.user)
            session.fail()
            return
        await self._claim_and_admit(session, login, admission)

    async def _claim_and_admit(self, session: Session, login: Login, admission: Admission) -> None:
        """With other nodes, the name is claimed network-wide first."""
        if self.nodes is not None:
            name, shared = admission.name, admission.kind != GUEST
            try:
                claimed = await self.nodes.claim(name.lower(), name, admission.kind, shared)
            except ClusterUnavailable:
                session.refused(LoginFailed(f"Logins can't be checked across the network right now; try '{name}' again shortly.", LoginReason.UNAVAILABLE))
                return
            if not claimed:
                session.refused(LoginFailed(f"The name '{name}' is already online; choose another.", LoginReason.NAME_TAKEN))
                return
            if not session.is_open:
                self._released(name.lower())
                return
        if session.is_open:
            self._admit(session, login, admission)

    def _released(self, key: str) -> None:
        """No session of the name is left here (with other nodes: let the claim go)."""
        if self.nodes is not None and not self.directory.sessions(key):
            self.nodes.release(key)

    def _admit(self, session: Session, login: Login, admission: Admission) -> None:
        name, kind = admission.name, admission.kind
        if not self.directory.admits(name.lower(), shared=kind != GUEST):
            session.refused(LoginFailed(f"The name '{name}' is already online; choose another.", LoginReason.NAME_TAKEN))
            self._released(name.lower())
            return
        session.logged_in(name, login.features, kind)
        first = self.directory.add(session)
        logger.info("%s logged in from %s (%s mode, %s)", name, session.peer, session.dialect.name, kind)
        if first and self.nodes is None:  # with other nodes, presence comes from the network (`presence`)
            self._announce(session, "online")
        welcome: dict[str, Any] = {"account": kind != GUEST, "bot": kind == BOT}
        if admission.token is not None:
            welcome["token"] = admission.token
        # The lines that came with the login wait for the welcome (see _hand_over).
        self._arriving[session] = False
        self.spawn(self._arrive(session, welcome))

    async def _arrive(self, session: Session, welcome: dict[str, Any]) -> None:
        """Into the user's rooms, the welcome and the stored mail, then each room's unseen
        messages. The first look at the mail goes out with the rooms' look, not after
        it: one round trip to the API per login instead of two (10,000 logins in the
        benchmark: 12 % sooner)."""
        mail = asyncio.ensure_future(self.first_look.look(session.name))
        try:
            try:
                rooms = await self.rooms.enter(session)
            except Exception:  # a fault of ours in the rooms must not keep anyone from logging in
                logger.exception("%s: entering the rooms failed", session.who)
                rooms = None
            stored_meanwhile = self._arriving.pop(session, False)  # from here mail stored for it is this hand-over's
            try:
                await self.hand_over_mail(session, announce=True, welcome=welcome, looked=None if stored_meanwhile else mail)
                self.rooms.catch_up(session, rooms)
            finally:
                session.settled()
        finally:
            if not mail.done():
                mail.cancel()  # the session went first
            elif not mail.cancelled():
                mail.exception()  # taken: what went wrong was said by the hand-over, if it ran

    def act(self, session: Session, event: Command | Quit | Login | Ack | Typing) -> None:
        if type(event) is Command:
            self._commands[event.name](session, event.args)
        elif type(event) is Ack:
            session.acknowledged(event.ids)
            waiting = self._awaited.get(session)
            if waiting is not None:  # acks of what no hand-over waits for are dropped
                waiting.acked.update(event.ids)
                waiting.arrived.set()
        elif type(event) is Quit:
            session.quit_reason = event.reason[:MAX_QUIT_CHARS]
            session.close(f"Goodbye, {session.name}!")
        elif type(event) is Typing:
            self._typing(session, event)
        else:
            raise ProtocolError("You are already logged in.")

    def input_ended(self, session: Session) -> None:
        waiting = self._awaited.get(session)
        if waiting is not None:
            waiting.arrived.set()  # no acks will come: the hand-over takes what it has
        self._finish_if_done(session)

    def _finish_if_done(self, session: Session) -> None:
        """A peer that is done sending is closed once everything it asked is answered."""
        if session.ended_input and session.is_open and not session.busy and session not in self._owed and session not in self._handovers:
            session.close()

    def received(self, session: Session, messages: list[Delivery]) -> None:
        self.rooms.received(session, messages)

    def writable(self, session: Session) -> None:
        if session in self._diverted:
            self._diverted.discard(session)
            self.spawn(self.hand_over_mail(session, quiet=True))

    def disconnected(self, session: Session, was_logged_in: bool) -> None:
        self.connections.pop(session, None)
        self._arriving.pop(session, None)
        self._diverted.discard(session)
        self._owed.pop(session, None)
        self.operators.left(session)
        self._count_address(session.address, -1)
        if session.unacked or session.sent:
            self._store_unreceived(session)
        self.rooms.left(session)
        if was_logged_in:
            self.people.left(session)
        if was_logged_in and self.directory.remove(session):
            logger.info("%s left", session.name)
            if self.nodes is not None:
                self.nodes.release(session.key)  # the others hear it, and so do we (`presence`)
            else:
                self._announce(session, "offline")

    def _store_unreceived(self, session: Session) -> None:
        """Live messages the reader was sent but is not known to have (never acknowledged,
        or not by its TCP stack) go to its stored mail, under the ids it was sent (a repeat
        is one it can drop). Echoes of its own account's messages are not its mail."""
        stored = 0
        for msg_id, sender, destination, message, timestamp, kind, metadata, _ in session.take_unreceived():
            if (metadata is not None and metadata.get("echo")) or destination[:1] == "#":
                continue  # a room's message stays unread instead (its marker did not move)
            doc, options = _as_mail(msg_id or new_id(), sender, session.name, message, timestamp, kind, metadata)
            self.mail.submit(Outcome(doc, None, busy=True), options)  # busy: handed over if the reader is back already
            stored += 1
        logger.info("%s left with %d message(s) not known to have arrived: stored", session.who, stored)
        if session.forgotten:
            logger.warning("%s: %d older unreceived message(s) were past the limit", session.who, session.forgotten)

    def _count_address(self, address: str, change: int) -> int:
        """Open connections from `address`, after `change`."""
        count = self._per_address.get(address, 0) + change
        if count > 0:
            self._per_address[address] = count
        else:
            self._per_address.pop(address, None)
        return count

    def _announce(self, session: Session, presence: str) -> None:
        self._announce_name(session.name, session.key, session.kind == BOT, presence)

    def _announce_name(self, name: str, key: str, bot: bool, presence: str) -> None:
        for other in self.directory.watchers():
            if other.key != key:
                other.notice(f"{name} is {presence}", Event.PRESENCE, presence=presence, user=name, bot=bot)

    # --- typing: relayed as it comes, never kept ------------------------------------

    def _typing(self, sender: Session, typing: Typing) -> None:
        """A `typing` notice for the sessions that show one (TYPING_FEATURE): the person's,
        or a room's members here but the sender. Nothing is stored, queued for the offline
        or archived, and nobody is answered: a notice that finds nobody is simply gone."""
        destination, active = typing
        text = f"{sender.name} is typing…" if active else f"{sender.name} stopped typing."
        if destination[0] == "#":
            room = self.rooms.local(destination)
            if room is None or sender not in room.here:
                return  # not a member (here): nothing to say, nor to anyone
            details: dict[str, Any] = {"user": sender.name, "active": active, "room": room.name}
            for member in room.here:
                if member.key != sender.key and TYPING_FEATURE in member.features and not member.paused:
                    member.notice(text, Event.TYPING, **details)
            return
        key = destination.lower()
        if key == sender.key:
            return
        details = {"user": sender.name, "active": active, "room": None}
        self._tell_typing(self.directory.sessions(key), text, details)
        if self.nodes is not None and self.nodes.where(key):
            self.nodes.tell_user(key, {"do": "typing", "text": text, "details": details})

    @staticmethod
    def _tell_typing(sessions: list[Session], text: str, details: dict[str, Any]) -> None:
        for session in sessions:
            if TYPING_FEATURE in session.features and not session.paused:
                session.notice(text, Event.TYPING, **details)

    # --- routing (the hot path) --------------------------------------------------

    def route(self, sender: Session, chat: Chat) -> None:
        """Deliver now if the destination is online and keeping up, else store.
        Runs inside data_received, after the clock's tick: its reading is current."""
        destination, message, metadata, kind = chat
        if destination[0] == "#":
            self.rooms.send(sender, chat)
            return
        now = self.clock.text
        target = self._local.get(destination) or self._local.get(destination.lower())
        partial = metadata is not None and partial_chunk(metadata)
        # One id per message, whoever sees it (its echoes too); none for a text reader alone.
        echoing = sender.group is not None or sender.echoes_own or (self.nodes is not None and sender.kind != GUEST)
        msg_id = new_id() if echoing or (target is not None and target.shows_ids) else None
        if echoing:
            self._echo(sender, msg_id, destination, message, now, kind, metadata)
        if target is None and self.nodes is not None and (nodes := self.nodes.where(destination.lower())):
            # Held on another node: forwarded (a forward nobody takes comes back as mail).
            forwarded = (msg_id or new_id(), sender.name, destination, message, now, kind, metadata, sender.features)
            self.nodes.forward(nodes, forwarded)
            if not partial:
                self._archive(forwarded)
            self._senders[forwarded[0]] = sender  # to tell it "saved" if it comes back as mail
            if len(self._senders) > MAX_FORWARDS_REMEMBERED:
                self._senders.popitem(last=False)
            return
        if target is not None and not target.paused:
            delivery = (msg_id, sender.name, destination, message, now, kind, metadata, sender.features)
            target.deliver(delivery)
            if target.away and not partial and (metadata is None or not metadata.get("notice")):
                sender.notice(f"{target.name} is away: {target.away}", Event.AWAY, user=target.name, away=target.away)
            if not partial:
                self._archive(delivery)
            return
        if partial:
            return  # chunks of a streamed reply are for live readers only; the final frame follows
        doc, options = _as_mail(msg_id or new_id(), sender.name, destination, message, now, kind, metadata)
        if target is not None:
            self._diverted.update(target.sessions if isinstance(target, Group) else (target,))
        self._owed[sender] = self._owed.get(sender, 0) + 1
        held = sender.dialect.in_order
        if held:
            sender.hold_lines()  # "saved" (or not) comes before the answer to its next line
        self.mail.submit(Outcome(doc, sender, busy=target is not None, held=held), options)

    # --- what the other nodes hand us (chatnet.nodes.Here) --------------------------------

    def deliver_here(self, delivery: Delivery) -> None:
        """A DM forwarded by another node: delivered, or stored if its reader is gone."""
        destination = delivery[2]
        target = self._local.get(destination) or self._local.get(destination.lower())
        metadata = delivery[6]
        if target is not None and not target.paused:
            target.deliver(delivery)
            if target.away and self.nodes is not None and (metadata is None or not metadata.get("notice")):
                away = {"user": target.name, "away": target.away}
                self.nodes.tell_user(delivery[1].lower(), {"do": "notice", "text": f"{target.name} is away: {target.away}", "event": Event.AWAY, "details": away})
            return
        if metadata is not None and partial_chunk(metadata):
            return
        msg_id, sender, _, message, timestamp, kind, _, _ = delivery
        doc, options = _as_mail(msg_id or new_id(), sender, destination, message, timestamp, kind, metadata)
        self.mail.submit(Outcome(doc, None, busy=target is not None), options)  # its sender is elsewhere: stored quietly

    def echo_here(self, key: str, delivery: Delivery) -> None:
        for session in self.directory.sessions(key):
            if session.echoes:
                session.deliver(delivery)

    def user_here(self, key: str, payload: dict[str, Any]) -> None:
        """For a name's sessions here, from another node: a notice, or a close (its
        password changed), a kick from a room (the rooms' part), someone typing, or an
        operator's wallops (the operators' part, for its sessions that hear them)."""
        sessions = self.directory.sessions(key)
        what, text = payload.get("do"), str(payload.get("text", ""))
        if what == "close":
            for session in sessions:
                session.close(text)
        elif what == "kicked":
            self.rooms.kicked_here(sessions, str(payload.get("room", "")), text, payload.get("details") or {})
        elif what == "typing" and isinstance(details := payload.get("details"), dict):
            self._tell_typing(sessions, text, details)
        elif what == "wallops" and isinstance(details := payload.get("details"), dict):
            self.operators.wallops_here(sessions, text, details)
        elif what == "notice" and str(payload.get("event")) in _TOLD_USER:
            for session in sessions:
                session.notice(text, Event(str(payload["event"])), **(payload.get("details") or {}))

    def unsent(self, deliveries: list[Delivery]) -> None:
        """Forwards no node took: mail now, and their senders told as for anyone offline."""
        for msg_id, sender_name, destination, message, timestamp, kind, metadata, _ in deliveries:
            if metadata is not None and partial_chunk(metadata):
                continue
            sender = self._senders.pop(msg_id, None) if msg_id is not None else None
            if sender is not None and not sender.is_open:
                sender = None
            doc, options = _as_mail(msg_id or new_id(), sender_name, destination, message, timestamp, kind, metadata)
            if sender is not None:
                self._owed[sender] = self._owed.get(sender, 0) + 1
            self.mail.submit(Outcome(doc, sender), options)

    def room_here(self, room_key: str, delivery: Delivery) -> None:
        self.rooms.fan_out_here(room_key, delivery)

    def told_here(self, room_key: str, skip: str, text: str, event: str, details: dict[str, Any]) -> None:
        self.rooms.told_here(room_key, skip, text, event, details)

    def presence(self, event: str, key: str, name: str, kind: str) -> None:
        """A name came online or went offline network-wide (this node's own too)."""
        self._announce_name(name, key, kind == BOT, event)

    def lost(self, key: str) -> None:
        """A name held here was taken elsewhere while Redis was away: this one goes."""
        for session in self.directory.sessions(key):
            session.close("Your name was taken on another server of the network while this one was cut off; log in again.")

    def _archive(self, delivery: Delivery) -> None:
        """Into the history's backlog, waking the archiver if it sleeps; while the backlog
        is full, not archived (counted). The
        newest is refused rather than the oldest dropped: an entry dropped 50,000 lines
        later is freed cold, cache misses on every routed line all through an overload
        (perf, throughput at N = 1,000: freeing and untracking tuples and the deque's
        append 17 % of the chat server's samples, 9 % this way; 6–14 % more messages
        per CPU-second at N = 100 and 1,000, in pairs)."""
        if len(self._backlog) < self._backlog_limit:
            self._backlog.append(delivery)
        else:
            self.archiver.skipped += 1
        if self.archiver.asleep:
            self.archiver.wake()

    def _echo(self, sender: Session, msg_id: str | None, destination: str, message: str, now: str, kind: str, metadata: dict[str, Any] | None) -> None:
        """A copy for the sender's other sessions that show them (JSON), and for the
        sender itself if it asked (IRC's echo-message), under the message's id."""
        echo = (msg_id, sender.name, destination, message, now, kind, {**(metadata or {}), "echo": True}, sender.features)
        if sender.group is not None:
            group: Group[Session] = sender.group
            for other in group.others(sender):
                if other.echoes:
                    other.deliver(echo)
        if sender.echoes_own:
            sender.deliver(echo)
        if self.nodes is not None and sender.kind != GUEST:  # its sessions on other nodes too
            self.nodes.echo(sender.key, echo)

    def _mail_stored(self, batch: list[Outcome], saved: bool, unknown: frozenset[str]) -> None:
        """The MailWriter's report: tell each sender that is still here (and when nobody
        has used the name yet); hand mail that was stored for a slow reader over if it
        has caught up meanwhile."""
        answered: set[Session] = set()
        for outcome in batch:
            sender, doc = outcome.sender, outcome.doc
            if saved and (outcome.busy or self.directory.sessions(doc["destination"].lower())):
                # Stored for a reader not keeping up, or for one who logged in while it
                # was being stored (after its login's look): hand it over now.
                self._catch_up(doc["destination"])
            if sender is not None and outcome.held:
                sender.lines_go_on()
            if sender is not None and sender in self._owed:
                self._owed[sender] -= 1
                if not self._owed[sender]:
                    del self._owed[sender]
                    answered.add(sender)
            if sender is None or not sender.is_open:
                continue
            destination = doc["destination"]
            if not saved:
                text = f"Message to '{destination}' was NOT saved: the message store is unavailable. Please try again later."
                sender.error(text, Event.NOT_SAVED, destination=destination, id=doc["id"])
            elif doc["type"] == MessageType.CHAT and not (doc.get("metadata") or {}).get("notice"):  # a NOTICE is never answered
                how = "is not keeping up" if outcome.busy else "is offline"
                never_seen = destination.lower() in unknown
                said = {"unknown": True} if never_seen else {}
                sender.notice(f"User '{destination}' {how}. Message saved.", Event.SAVED, destination=destination, id=doc["id"], **said)
                if never_seen:
                    text = f"Note: nobody named '{destination}' has logged in here yet."
                    sender.notice(text, Event.UNKNOWN_NAME, destination=destination)
        for sender in answered:
            self._finish_if_done(sender)

    def _online(self) -> dict[str, list[str]]:
        """Who is online, and which of them are bots (welcome and who notices)."""
        members = self.online()
        return {"online": [name for name, _ in members], "bots": [name for name, kind in members if kind == BOT]}

    # --- commands ----------------------------------------------------------------

    def _cmd_check(self, session: Session, args: str) -> None:
        self.spawn(self.hand_over_mail(session))

    def online(self) -> list[tuple[str, str]]:
        """Every name online (network-wide with other nodes) and its kind, sorted by key."""
        return self.nodes.online() if self.nodes is not None else self.directory.online()

    def _cmd_who(self, session: Session, args: str) -> None:
        members = self.online()
        shown = ", ".join(f"{name} (bot)" if kind == BOT else name for name, kind in members)
        online = self._online()
        session.notice(f"Online ({len(members)}): {shown}", Event.WHO, users=online["online"], bots=online["bots"])

    def _cmd_help(self, session: Session, args: str) -> None:
        session.notice("\n".join(help_lines()), Event.HELP)

    def _cmd_mode(self, session: Session, args: str) -> None:
        """`!mode #room …` is the room's (chatnet.rooms); `!mode <you> [+w|-w|-o]`, one's
        own user modes (chatnet.operators)."""
        target, _, changes = args.strip().partition(" ")
        if not target or target.startswith("#"):
            self._room_mode(session, args)
        else:
            self.operators.user_mode(session, target, changes)


def _as_mail(msg_id: str, sender: str, destination: str, message: str, timestamp: str, kind: str, metadata: dict[str, Any] | None) -> tuple[dict[str, Any], MailOptions]:
    """A message as offline mail: its JSON shape without the sender's storing hints
    (`metadata.mail`), and those hints as the MailWriter's options."""
    options = mail_hints(metadata, MAX_MAIL_TTL_SECONDS, MAX_KEEP_LATEST)
    if metadata and "mail" in metadata:
        metadata = {k: v for k, v in metadata.items() if k != "mail"}
    return message_dict(msg_id, sender, destination, message, timestamp, kind, metadata), options
