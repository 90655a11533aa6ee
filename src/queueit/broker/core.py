"""BrokerCore: destinations, subscriptions, acknowledgements and transactions.

Ownership (the asyncio equivalent of a lock-order file): the core owns every queue,
exchange, subscription and per-connection :class:`SessionState`; it is called only from
the event-loop thread and never awaits. It talks to connections through the
:class:`~queueit.broker.queues.Outlet` each one registers, which buffers bytes and never
blocks, so one slow client cannot stall the loop. Time comes from the injected ``clock``
(epoch seconds), so tests drive it with a fake one.

Requests that cannot be served raise :class:`~queueit.broker.errors.BrokerError`; the
session turns that into an ERROR frame and closes only that connection.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import assert_never

from ..stomp import (
    Abort,
    Ack,
    AckMode,
    Begin,
    ClientEvent,
    Commit,
    Connect,
    Disconnect,
    Limits,
    Nack,
    Send,
    Subscribe,
    Unsubscribe,
)
from . import groups, progress, unique
from .admin import handle_admin
from .auth import User
from .dead_letters import DEAD_LETTER_HEADER_PREFIX
from .destinations import Destination, Kind, check_name, parse_destination
from .errors import (
    AccessDenied,
    AckError,
    InvalidDestination,
    InvalidHeader,
    SubscriptionError,
    TransactionError,
)
from .exchanges import TOPIC_EXCHANGE, Exchange, ExchangeType
from .groups import GroupTable
from .messages import CONTROL_HEADERS, Message
from .progress import ProgressTable
from .queue_settings import MAX_MS, PRIVATE, QueueSettingsTable
from .queues import Leases, Outlet, Queue, QueueKind, Subscription
from .storage import MessageStore

_TRUE = "true"
MAX_EPOCH_MS = 10**15  # year 33658: any larger ``expires`` is a mistake
#: Ack ids taken back by an expired lease that a connection may still ACK/NACK harmlessly.
LOST_ACKS_KEPT = 10_000
#: How often expired messages are looked for away from the head of their queue.
SWEEP_INTERVAL_MS = 1_000
#: NACK's ``error`` header (why a consumer rejected a message) is kept up to this length.
MAX_ERROR_TEXT = 1_000


@dataclass
class Transaction:
    frames: list[Send | Ack | Nack] = field(default_factory=list)
    size: int = 0


@dataclass
class SessionState:
    """What the core knows of one connection."""

    id: str
    user: User
    outlet: Outlet
    client_id: str | None = None
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    pending: dict[str, Subscription] = field(default_factory=dict)  # ack id -> subscription
    transactions: dict[str, Transaction] = field(default_factory=dict)
    temp_queues: dict[str, Queue] = field(default_factory=dict)  # short name -> queue
    # Ack ids whose lease expired (oldest first): a late ACK/NACK of one is ignored.
    lost: dict[str, None] = field(default_factory=dict)


class BrokerCore:
    def __init__(
        self,
        store: MessageStore,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.time,
        max_transaction_bytes: int = 64 * 1024 * 1024,
        queue_settings: QueueSettingsTable | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self.clock = clock
        self.queue_settings = QueueSettingsTable() if queue_settings is None else queue_settings
        self.leases = Leases()
        self._next_sweep = 0
        # Queues with limits and the reject-publish policy: while there are none, a SEND
        # skips the room check (and the routing it needs) altogether.
        self._rejecting = 0
        self.max_transaction_bytes = max_transaction_bytes
        self.queues: dict[str, Queue] = {}
        self.exchanges: dict[str, Exchange] = {
            TOPIC_EXCHANGE: Exchange(TOPIC_EXCHANGE, ExchangeType.TOPIC, builtin=True)
        }
        self.sessions: dict[str, SessionState] = {}
        # Message ids are unique across restarts: a random prefix per start plus a counter.
        self._id_prefix = "m-" + secrets.token_hex(4) + "-"
        self._ids = itertools.count(1)
        self._session_ids = itertools.count(1)
        self._session_prefix = secrets.token_hex(3)
        # Durable subscriptions kept from before, waiting for their exchange to be declared.
        self._unbound: dict[str, list[tuple[Queue, str]]] = {}
        for name in store.stored_queues():
            queue = self._create_queue(
                name, QueueKind.DURABLE if name.startswith("~durable/") else QueueKind.NAMED
            )
            attributes = queue.store.attributes
            if queue.kind is QueueKind.DURABLE and "exchange" in attributes:
                self._unbound.setdefault(attributes["exchange"], []).append(
                    (queue, attributes.get("key", ""))
                )
        self._bind_waiting(TOPIC_EXCHANGE)
        self.progress = ProgressTable(store)
        self.groups = GroupTable(store)
        for ns, records in store.records(self.now_ms()).items():
            if ns == progress.NAMESPACE:
                self.progress.load(records)
            elif ns.startswith(groups.NAMESPACE_PREFIX):
                self.groups.load(ns[len(groups.NAMESPACE_PREFIX) :], records)
            elif ns.startswith(unique.NAMESPACE) and ns[len(unique.NAMESPACE) :] in self.queues:
                self._unique_keys(self.queues[ns[len(unique.NAMESPACE) :]]).load(records)
            else:
                store.drop_records(ns)  # its queue was deleted before a crash
        self.groups.loaded()

    # -- sessions --------------------------------------------------------------------------

    def open_session(self, outlet: Outlet, user: User, *, client_id: str | None = None) -> SessionState:
        session_id = f"session-{self._session_prefix}-{next(self._session_ids)}"
        state = SessionState(session_id, user, outlet, client_id=client_id)
        self.sessions[session_id] = state
        return state

    def close_session(self, s: SessionState) -> None:
        """The connection is gone: abort its transactions and requeue what it held."""
        if self.sessions.pop(s.id, None) is None:
            return
        s.transactions.clear()
        for sub in list(s.subscriptions.values()):
            self._drop_subscription(s, sub, delete_durable=False)
        for queue in s.temp_queues.values():
            self.delete_queue(queue)
        s.temp_queues.clear()

    def resume(self, s: SessionState) -> None:
        """The connection can take more bytes: dispatch to its subscriptions again."""
        now = self.now_ms()
        for sub in list(s.subscriptions.values()):
            sub.queue.dispatch(now)

    def handle(self, s: SessionState, event: ClientEvent) -> dict[str, str] | None:
        """Apply one client frame; return headers its RECEIPT carries besides ``receipt-id``.

        Raises:
            BrokerError: the request is refused; the connection is to be closed.
        """
        match event:  # SEND first: it is the hot path
            case Send():
                return self._on_send(s, event)
            case Ack():
                self._on_ack(s, event)
            case Nack():
                self._on_nack(s, event)
            case Subscribe():
                self._on_subscribe(s, event)
            case Unsubscribe():
                self._on_unsubscribe(s, event)
            case Begin():
                self._on_begin(s, event)
            case Commit():
                self._on_commit(s, event)
            case Abort():
                self._on_abort(s, event)
            case Disconnect():
                pass  # the session closes the connection, which requeues what it held
            case Connect():
                raise TypeError("CONNECT is the session's business, not the core's")
            case _:
                assert_never(event)
        return None

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def tick(self) -> None:
        """Timers: due delayed messages, expired leases, expired messages (called often)."""
        now = self.now_ms()
        self.store.tick(now)
        for sub, message in self.leases.expired(now):
            self._lease_expired(sub, message, now)
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL_MS
            self.progress.sweep(now)
            self.groups.sweep(now)
            for queue in list(self.queues.values()):
                queue.sweep(now)

    def _lease_expired(self, sub: Subscription, message: Message, now: int) -> None:
        """Not acked in time: the message goes back (or to the dead-letter queue)."""
        del sub.unacked[message.id]
        sub.pending.pop(message.id, None)
        sub.lost[message.id] = None
        if len(sub.lost) > LOST_ACKS_KEPT:
            del sub.lost[next(iter(sub.lost))]
        message.avoid = sub
        sub.queue.requeue([message], now)
        sub.queue.dispatch(now)

    # -- SEND ----------------------------------------------------------------------------------

    def _on_send(self, s: SessionState, ev: Send) -> dict[str, str] | None:
        if ev.transaction is not None:
            self._check_send(s, ev, room=False)  # room is checked at COMMIT, for all its SENDs
            self._buffer(s, ev.transaction, ev, len(ev.body) + _headers_size(ev.headers))
            return None
        return self._publish(s, ev)

    def _check_send(
        self, s: SessionState, ev: Send, *, room: bool = True
    ) -> tuple[Destination, int, int, int]:
        """Every check a SEND must pass, without side effects; its destination, priority,
        expires and due time.

        Run when a SEND arrives, and again for every SEND of a transaction before any of
        them is applied at COMMIT, so a COMMIT is all or nothing.
        """
        dest = parse_destination(ev.destination)
        if dest.kind is Kind.TEMP_QUEUE:
            raise InvalidDestination(
                "SEND to /temp-queue/ is not possible: put /temp-queue/NAME in reply-to, and reply "
                "to the /reply-queue/ destination the receiver sees there."
            )
        if dest.kind is Kind.ADMIN:
            if dest.name == "lease":
                if not ev.headers.get("lease"):
                    raise InvalidHeader("A lease extension needs the lease header: milliseconds from now.")
                _int_header(ev.headers, "lease", 0, 1, MAX_MS)
                if not ev.headers.get("id"):
                    raise InvalidHeader("A lease extension needs the id header: the MESSAGE's ack id.")
                return dest, 0, 0, 0
            if dest.name == "flow":
                if not ev.headers.get("subscription") or not ev.headers.get("prefetch"):
                    raise InvalidHeader(
                        "A flow change needs the subscription header (its id) and the prefetch header "
                        "(0 pauses the subscription)."
                    )
                _int_header(ev.headers, "prefetch", 0, 0, 999_999_999)
                return dest, 0, 0, 0
            if dest.name == "progress":
                self._check_progress(s, ev)
                return dest, 0, 0, 0
            if dest.name == "group":
                self._check_group(s, ev)
                return dest, 0, 0, 0
            if dest.name != "admin" or not ev.headers.get("reply-to"):
                raise InvalidDestination("Send admin requests to /queueit/admin with a reply-to header.")
            return dest, 0, 0, 0
        if dest.kind is Kind.EXCHANGE and dest.name not in self.exchanges:
            raise InvalidDestination(
                f"No exchange named {dest.name!r}; declare it in the config ([[exchanges]]) "
                "or with 'queueit exchange declare'."
            )
        if dest.kind is not Kind.REPLY_QUEUE:
            # A reply queue's name is the requester's invitation to answer: no grant needed.
            self._require(s, "write", ev.destination)
        if dest.kind is Kind.QUEUE and dest.name not in self.queues:
            self._require(s, "admin", ev.destination)  # the SEND creates the queue
        priority = _int_header(ev.headers, "priority", 4, 0, 9)
        expires = _int_header(ev.headers, "expires", 0, 0, MAX_EPOCH_MS)
        if "unique-key" in ev.headers:
            for name in ("unique-key", "unique-ref"):
                value = ev.headers.get(name)
                if value is not None and not 0 < len(value) <= unique.MAX_KEY_LENGTH:
                    raise InvalidHeader(f"{name} must be 1-{unique.MAX_KEY_LENGTH} characters long.")
            _int_header(ev.headers, "unique-for", 0, 0, unique.MAX_UNIQUE_FOR_MS)
        due = 0
        if "delay" in ev.headers or "deliver-at" in ev.headers:
            delay = _int_header(ev.headers, "delay", 0, 0, MAX_MS)
            due = _int_header(ev.headers, "deliver-at", 0, 0, MAX_EPOCH_MS)
            if delay:
                due = max(due, self.now_ms() + delay)
        if room and self._rejecting:
            for queue in self._targets(dest):
                queue.check_room(len(ev.body))
        reply_to = ev.headers.get("reply-to")
        if reply_to is not None and reply_to.startswith("/temp-queue/"):
            name = check_name(reply_to[len("/temp-queue/") :], "temp-queue")
            if name not in s.temp_queues:
                self._check_temp_queue_limit(s)
        return dest, priority, expires, due

    def _publish(self, s: SessionState, ev: Send) -> dict[str, str] | None:
        """Apply a checked SEND; receipt headers when a unique key kept it out everywhere."""
        dest, priority, expires, due = self._check_send(s, ev)
        if dest.kind is Kind.ADMIN:
            if dest.name == "lease":
                self._extend_lease(s, ev)
            elif dest.name == "flow":
                self._change_flow(s, ev)
            elif dest.name == "progress":
                self._progress(s, ev)
            elif dest.name == "group":
                self._group(s, ev)
            else:
                self._admin(s, ev)
            return None
        message = self._make_message(s, ev, priority, expires)
        message.due = due
        now = self.now_ms()
        kind = dest.kind
        if kind is Kind.QUEUE:
            targets = [self._named_queue(s, dest.name, ev.destination)]
        elif kind is Kind.REPLY_QUEUE:
            queue = self.queues.get("~temp/" + dest.name)
            # A reply to a requester that has gone is dropped, as in RabbitMQ.
            targets = [] if queue is None else [queue]
        else:
            exchange = self.exchanges[TOPIC_EXCHANGE if kind is Kind.TOPIC else dest.name]
            targets = exchange.route(dest.name if kind is Kind.TOPIC else dest.key)
        # The broker's own replies are not flow-controlled (see queues.py).
        publisher = s.outlet if kind is not Kind.REPLY_QUEUE else None
        if message.unique:
            return self._publish_unique(ev, message, targets, now, publisher)
        for i, queue in enumerate(targets):
            # Each queue gets its own copy with its own id: ack ids stay unique.
            queue.publish(message if i == 0 else self._copy(message), now, publisher)
        return None

    def _publish_unique(
        self, ev: Send, message: Message, targets: list[Queue], now: int, publisher: Outlet | None
    ) -> dict[str, str] | None:
        """Publish to the targets where the key is free (see :mod:`queueit.broker.unique`)."""
        unique_for = _int_header(ev.headers, "unique-for", 0, 0, unique.MAX_UNIQUE_FOR_MS)
        ref = ev.headers.get("unique-ref") or message.id
        kept_by = ""
        published = 0
        for queue in targets:
            keys = self._unique_keys(queue)
            holder = keys.holder(message.unique)
            until = now + unique_for if unique_for else 0
            if holder is not None:
                if holder.message_id or holder.ref != ref:
                    keys.kept_out += 1
                    kept_by = holder.ref
                    continue
                # Its own job, sent again after it left (a retry while ``unique-for`` holds
                # the key): it takes the hold over, keeping the longer time.
                until = max(until, holder.until)
            copy = message if not published else self._copy(message)
            published += 1
            hold = keys.take(copy, ref, until)
            queue.publish(copy, now, publisher)
            keys.stored(copy, hold)
        if kept_by and not published:
            return {"unique-duplicate": "true", "unique-ref": kept_by}
        return None

    def _unique_keys(self, queue: Queue) -> unique.UniqueKeys:
        if queue.unique is None:
            queue.unique = unique.UniqueKeys(queue.name, self.store, self.now_ms)
        return queue.unique

    def _make_message(self, s: SessionState, ev: Send, priority: int, expires: int) -> Message:
        headers = ev.headers
        persistent = headers.get("persistent") == _TRUE
        reply_to = headers.get("reply-to")
        kept = [(k, v) for k, v in headers.items() if k not in CONTROL_HEADERS]
        if reply_to is not None and reply_to.startswith("/temp-queue/"):
            real = self._reply_name(s, reply_to)
            kept = [("reply-to", real) if k == "reply-to" else (k, v) for k, v in kept]
        return Message(
            self._id_prefix + str(next(self._ids)),
            ev.destination,
            tuple(kept),
            ev.body,
            persistent,
            priority,
            expires,
            unique=headers.get("unique-key", ""),
        )

    def _copy(self, m: Message) -> Message:
        # The headers are shared, so is their encoding (made by the first delivery).
        return Message(
            self._id_prefix + str(next(self._ids)),
            m.destination,
            m.headers,
            m.body,
            m.persistent,
            m.priority,
            m.expires,
            due=m.due,
            unique=m.unique,
            encoded_version=m.encoded_version,
            encoded_block=m.encoded_block,
        )

    # -- queues ----------------------------------------------------------------------------

    def _create_queue(self, key: str, kind: QueueKind) -> Queue:
        transient = kind is QueueKind.SUBSCRIPTION or kind is QueueKind.TEMPORARY
        settings = PRIVATE if transient else self.queue_settings.for_queue(key)
        store = self.store.open_queue(key, transient=transient, sync=settings.fsync)
        queue = Queue(key, store, kind, settings, self.leases)
        # Messages read back from disk, and delayed ones, arrive later than the take that missed them.
        store.on_ready = lambda: queue.dispatch(self.now_ms())
        store.on_expired = queue.expire
        queue.dead_letter = self._dead_letter
        self.queues[key] = queue
        self._rejecting += queue.rejects
        return queue

    def _targets(self, dest: Destination) -> list[Queue]:
        """The existing queues a SEND to ``dest`` would reach (no side effects)."""
        kind = dest.kind
        if kind is Kind.QUEUE:
            queue = self.queues.get(dest.name)
            return [] if queue is None else [queue]
        if kind is Kind.TOPIC:
            return self.exchanges[TOPIC_EXCHANGE].route(dest.name)
        if kind is Kind.EXCHANGE:
            return self.exchanges[dest.name].route(dest.key)
        return []

    def _queue_named(self, name: str) -> Queue:
        """The named queue ``name``, created if need be (the broker's own doing: no permission)."""
        queue = self.queues.get(name)  # not ``or``: an empty queue is falsy
        return self._create_queue(name, QueueKind.NAMED) if queue is None else queue

    def _dead_letter(self, queue: Queue, messages: Sequence[Message], reason: str, error: str = "") -> None:
        """Move taken messages to the queue's dead-letter queue (or drop them if it has none);
        ``error`` (what the consumer found wrong) becomes ``x-dead-letter-error``.

        Each move is one journal transaction: the message is in exactly one of the two
        queues after a crash, never both, never neither.
        """
        queue.dead_lettered += len(messages)
        target_name = (
            None if queue.kind is not QueueKind.NAMED else queue.settings.dead_letter_queue(queue.name)
        )
        if target_name is None:
            for message in messages:
                queue.forget(message)
            return
        target = self._queue_named(target_name)
        now = self.now_ms()
        for message in messages:
            headers = tuple((k, v) for k, v in message.headers if not k.startswith(DEAD_LETTER_HEADER_PREFIX))
            copy = Message(
                message.id,
                "/queue/" + target_name,
                (
                    *headers,
                    ("x-dead-letter-reason", reason),
                    ("x-dead-letter-queue", queue.name),
                    ("x-dead-letter-destination", message.destination),
                    ("x-dead-letter-deliveries", str(message.deliveries)),
                    ("x-dead-letter-time", str(now)),
                    *((("x-dead-letter-error", error),) if error else ()),
                ),
                message.body,
                True,  # a dead-lettered message is kept, whatever it was
                message.priority,
            )
            with self.store.atomic():
                queue.forget(message)
                target.publish(copy, now)

    def redrive(self, dlq: Queue, message: Message) -> bool:
        """Move a dead letter (taken from ``dlq``) back to its queue; False if it has none."""
        h = dict(message.headers)
        name = h.get("x-dead-letter-queue")
        if not name or name == dlq.name or name.startswith("~"):
            return False
        target = self._queue_named(name)
        copy = Message(
            message.id,
            h.get("x-dead-letter-destination", "/queue/" + name),
            tuple((k, v) for k, v in message.headers if not k.startswith(DEAD_LETTER_HEADER_PREFIX)),
            message.body,
            h.get("persistent") == _TRUE,
            message.priority,
        )
        now = self.now_ms()
        with self.store.atomic():
            dlq.forget(message)
            target.publish(copy, now)
        return True

    def _named_queue(self, s: SessionState, name: str, destination: str) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            self._require(s, "admin", destination)
            queue = self._create_queue(name, QueueKind.NAMED)
        return queue

    def _admin(self, s: SessionState, ev: Send) -> None:
        handle_admin(self, s, ev, lambda reply: self._admin_reply(s, ev, reply))

    def _admin_reply(self, s: SessionState, ev: Send, reply: bytes) -> None:
        if s.id not in self.sessions:
            return  # the asker has gone (the answer came back from the disk too late)
        reply_to = ev.headers["reply-to"]
        headers = {"content-type": "application/json"}
        if reply_to.startswith("/temp-queue/"):
            # The answer goes straight to the asker's own temp queue: no write permission needed.
            queue = self._temp_queue(s, reply_to)
            message = Message(self._id_prefix + str(next(self._ids)), reply_to, tuple(headers.items()), reply)
            queue.publish(message, self.now_ms())
        else:
            self._publish(s, Send(reply_to, headers, reply, None, None))

    def delete_queue(self, queue: Queue) -> None:
        for exchange_name, key in list(queue.bindings):
            exchange = self.exchanges.get(exchange_name)
            if exchange is not None:
                exchange.unbind(queue, key)
        queue.store.drop()
        if queue.unique is not None:
            queue.unique.drop()
        queue.release_publishers()
        if self.queues.pop(queue.name, None) is not None:
            self._rejecting -= queue.rejects

    def _temp_queue(self, s: SessionState, destination: str, *, subscribe: bool = True) -> Queue:
        """The connection's temp queue for ``destination``, created once.

        Created by a ``reply-to``, it is subscribed at once (auto ack, subscription id =
        the destination), as RabbitMQ does; a later SUBSCRIBE to it replaces that.
        """
        name = check_name(destination[len("/temp-queue/") :], "temp-queue")
        queue = s.temp_queues.get(name)
        if queue is None:
            self._check_temp_queue_limit(s)
            queue = self._create_queue(f"~temp/{s.id}/{name}", QueueKind.TEMPORARY)
            s.temp_queues[name] = queue
            if subscribe and destination not in s.subscriptions:
                if len(s.subscriptions) >= self.limits.max_subscriptions:
                    raise SubscriptionError(self._too_many_subscriptions())
                self._attach(s, destination, destination, queue, AckMode.AUTO, self.limits.default_prefetch)
        return queue

    def _check_temp_queue_limit(self, s: SessionState) -> None:
        if len(s.temp_queues) >= self.limits.max_subscriptions:
            raise SubscriptionError(
                f"A connection may hold at most {self.limits.max_subscriptions} temp queues.",
            )

    def _reply_name(self, s: SessionState, destination: str) -> str:
        queue = self._temp_queue(s, destination)
        return "/reply-queue/" + queue.name.removeprefix("~temp/")

    # -- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------------------------

    def _on_subscribe(self, s: SessionState, ev: Subscribe) -> None:
        dest = parse_destination(ev.destination)
        if dest.kind is Kind.TEMP_QUEUE:
            self._drop_automatic_reply_subscription(s, ev.destination)
        if ev.id in s.subscriptions:
            raise SubscriptionError(
                f"A subscription with id {ev.id!r} already exists on this connection; "
                "use a new id or UNSUBSCRIBE first.",
                message="Duplicate subscription id",
            )
        if len(s.subscriptions) >= self.limits.max_subscriptions:
            raise SubscriptionError(self._too_many_subscriptions())
        prefetch = self._prefetch(ev.headers)
        # A lease shorter or longer than the queue's, for this subscription's deliveries.
        lease_ms = _int_header(ev.headers, "visibility-timeout", 0, 0, MAX_MS) or None
        self._require(s, "read", ev.destination)
        kind = dest.kind
        if kind is Kind.QUEUE:
            queue = self._named_queue(s, dest.name, ev.destination)
        elif kind is Kind.TEMP_QUEUE:
            queue = self._temp_queue(s, ev.destination, subscribe=False)
        elif kind is Kind.TOPIC or kind is Kind.EXCHANGE:
            queue = self._binding_queue(s, ev, dest)
        else:
            raise InvalidDestination(f"Cannot SUBSCRIBE to {ev.destination!r}.")
        self._attach(s, ev.id, ev.destination, queue, ev.ack, prefetch, lease_ms)

    def _drop_automatic_reply_subscription(self, s: SessionState, destination: str) -> None:
        """A SUBSCRIBE to a temp queue replaces the subscription a reply-to made for it."""
        existing = s.subscriptions.get(destination)
        if existing is not None and existing.queue.kind is QueueKind.TEMPORARY:
            self._drop_subscription(s, existing, delete_durable=False)

    def _binding_queue(self, s: SessionState, ev: Subscribe, dest: Destination) -> Queue:
        if dest.kind is Kind.TOPIC:
            exchange, key = self.exchanges[TOPIC_EXCHANGE], dest.name
        else:
            found = self.exchanges.get(dest.name)
            if found is None:
                raise InvalidDestination(f"No exchange named {dest.name!r}; declare it first.")
            exchange, key = found, dest.key
        durable_name = _durable_name(ev)
        if durable_name is None:
            queue = self._create_queue(f"~sub/{s.id}/{ev.id}", QueueKind.SUBSCRIPTION)
        else:
            # Scoped by the authenticated user, never by the client-id alone: another user
            # choosing the same client-id must not reach this subscription. The client-id is
            # length-prefixed so that no two (client-id, name) pairs give the same key.
            client = s.client_id or ""
            qname = f"~durable/{s.user.name}/{len(client)}:{client}/{durable_name}"
            found_queue = self.queues.get(qname)
            if found_queue is None:
                self._require(s, "admin", ev.destination)  # it keeps messages: like creating a queue
                queue = self._create_queue(qname, QueueKind.DURABLE)
            else:
                queue = found_queue
            if queue.consumers:
                raise SubscriptionError(
                    f"Durable subscription {durable_name!r} is in use by another connection."
                )
            if (exchange.name, key) not in queue.bindings:
                # A durable subscription re-made on another destination starts afresh (JMS rule).
                for ex_name, old_key in list(queue.bindings):
                    self.exchanges[ex_name].unbind(queue, old_key)
                queue.purge()
                # Kept so that a restart binds it again before its client comes back.
                queue.store.set_attributes({"exchange": exchange.name, "key": key})
        exchange.bind(queue, key)
        return queue

    def _attach(
        self,
        s: SessionState,
        sub_id: str,
        destination: str,
        queue: Queue,
        mode: AckMode,
        prefetch: int,
        lease_ms: int | None = None,
    ) -> Subscription:
        sub = Subscription(sub_id, destination, queue, mode, prefetch, s.outlet, s.pending, s.lost)
        if lease_ms is not None:
            sub.lease_ms = lease_ms
        s.subscriptions[sub_id] = sub
        queue.add_consumer(sub)
        queue.dispatch(self.now_ms())
        return sub

    def _prefetch(self, headers: dict[str, str]) -> int:
        raw = headers.get("prefetch-count") or headers.get("activemq.prefetchSize")
        if raw is None:
            return self.limits.default_prefetch
        if not raw.isdigit() or not raw.isascii() or len(raw) > 9 or int(raw) < 1:
            raise InvalidHeader(f"prefetch-count must be a positive integer, got {raw!r}.")
        # Larger windows are lowered to the limit rather than refused: clients such as
        # stomp-php send fixed values, and a smaller window only slows, never breaks, them.
        return min(int(raw), self.limits.max_unacked)

    def _on_unsubscribe(self, s: SessionState, ev: Unsubscribe) -> None:
        sub = s.subscriptions.get(ev.id)
        if sub is None:
            return  # benign (a repeated UNSUBSCRIBE); an ERROR would kill the connection
        delete = ev.headers.get("durable") == _TRUE or "durable-subscription-name" in ev.headers
        self._drop_subscription(s, sub, delete_durable=delete)

    def _drop_subscription(self, s: SessionState, sub: Subscription, *, delete_durable: bool) -> None:
        del s.subscriptions[sub.id]
        queue = sub.queue
        queue.remove_consumer(sub)
        held = list(sub.unacked.values())
        for message_id in sub.unacked:
            s.pending.pop(message_id, None)
        sub.unacked.clear()
        if queue.kind is QueueKind.SUBSCRIPTION:
            self.delete_queue(queue)  # its unacked copies go with it
            return
        if queue.kind is QueueKind.DURABLE and delete_durable:
            self.delete_queue(queue)
            return
        now = self.now_ms()
        if held:
            queue.requeue(held, now)
        queue.dispatch(now)

    def _too_many_subscriptions(self) -> str:
        return f"A connection may hold at most {self.limits.max_subscriptions} subscriptions."

    # -- ACK / NACK -------------------------------------------------------------------------

    def _pending(self, s: SessionState, ack_id: str, what: str) -> Subscription | None:
        """The subscription awaiting an ack of ``ack_id``; None if its lease ran out."""
        sub = s.pending.get(ack_id)
        if sub is None:
            if ack_id in s.lost:
                return None  # too late: the message went back to its queue, and this is no error
            raise AckError(
                f"{what} of {ack_id!r}: no message with this id awaits an ack on this connection "
                "(never delivered here, already acked, or delivered on an auto-ack subscription)."
            )
        return sub

    def _settled(self, s: SessionState, sub: Subscription, ack_id: str) -> list[Message]:
        """Remove from the pending sets what an ACK/NACK of ``ack_id`` covers."""
        if sub.ack_mode is AckMode.CLIENT:
            covered = []
            for message_id in sub.unacked:
                covered.append(message_id)
                if message_id == ack_id:
                    break
        else:
            covered = [ack_id]
        for message_id in covered:
            s.pending.pop(message_id, None)
        return [sub.unacked.pop(message_id) for message_id in covered]

    def _on_ack(self, s: SessionState, ev: Ack) -> None:
        sub = self._pending(s, ev.id, "ACK")
        if sub is None:
            return
        if ev.transaction is not None:
            self._buffer(s, ev.transaction, ev, _headers_size(ev.headers))
            return
        sub.queue.settle(self._settled(s, sub, ev.id))
        sub.queue.dispatch(self.now_ms())

    def _on_nack(self, s: SessionState, ev: Nack) -> None:
        sub = self._pending(s, ev.id, "NACK")
        if sub is None:
            return
        delay = _int_header(ev.headers, "delay", 0, 0, MAX_MS)
        reason = ev.headers.get("reason", "rejected")
        if reason not in ("rejected", "invalid"):
            raise InvalidHeader(f"NACK reason must be rejected or invalid, got {reason[:40]!r}.")
        started = ev.headers.get("started", "true")
        if started not in ("true", "false"):  # before anything is taken: a refusal changes nothing
            raise InvalidHeader(f"NACK started must be true or false, got {started[:40]!r}.")
        if ev.transaction is not None:
            self._buffer(s, ev.transaction, ev, _headers_size(ev.headers))
            return
        messages = self._settled(s, sub, ev.id)
        now = self.now_ms()
        queue = sub.queue
        if ev.headers.get("requeue") == "false":
            queue.dead_letter(queue, messages, reason, ev.headers.get("error", "")[:MAX_ERROR_TEXT])
        else:
            for message in messages:
                message.avoid = sub
            queue.requeue(messages, now, delay, started=started == "true")
        queue.dispatch(now)

    def _extend_lease(self, s: SessionState, ev: Send) -> None:
        """SEND /queueit/lease with ``id`` (an ack id) and ``lease`` (ms from now).

        A message no longer leased to this connection (acked, or taken back) is ignored:
        the extension came too late, and a later ACK of it is ignored as well.
        """
        ack_id = ev.headers["id"]
        sub = s.pending.get(ack_id)
        if sub is None:
            return
        message = sub.unacked[ack_id]
        self.leases.add(sub, message, self.now_ms() + _int_header(ev.headers, "lease", 0, 1, MAX_MS))

    def _check_progress(self, s: SessionState, ev: Send) -> None:
        job_id = ev.headers.get("job-id", "")
        if not 0 < len(job_id) <= unique.MAX_KEY_LENGTH:
            raise InvalidHeader(
                f"A progress report needs the job-id header (1-{unique.MAX_KEY_LENGTH} characters)."
            )
        topic = "/topic/" + progress.TOPIC_PREFIX + job_id
        if ev.headers.get("reply-to"):
            self._require(s, "read", topic)
            return
        self._require(s, "write", topic)
        _check_text_body(ev, progress.MAX_BODY, "A progress report")
        _int_header(ev.headers, "retain", 0, 1, progress.MAX_RETAIN_MS)

    def _progress(self, s: SessionState, ev: Send) -> None:
        """SEND /queueit/progress: report a job's progress, or read it (see :mod:`.progress`)."""
        job_id = ev.headers["job-id"]
        now = self.now_ms()
        if ev.headers.get("reply-to"):
            self._admin_reply(s, ev, self.progress.answer(job_id, now))
            return
        retain = _int_header(ev.headers, "retain", progress.DEFAULT_RETAIN_MS, 1, progress.MAX_RETAIN_MS)
        self.progress.set(job_id, ev.body, now, retain)
        headers = {k: v for k, v in ev.headers.items() if k not in ("destination", "retain", "receipt")}
        topic = "/topic/" + progress.TOPIC_PREFIX + job_id
        self._publish(s, Send(topic, {**headers, "destination": topic}, ev.body, None, None))

    def _check_group(self, s: SessionState, ev: Send) -> None:
        h = ev.headers
        group_id = h.get("group-id", "")
        if not 0 < len(group_id) <= unique.MAX_KEY_LENGTH:
            raise InvalidHeader(
                f"A group frame needs the group-id header (1-{unique.MAX_KEY_LENGTH} characters)."
            )
        if "member" in h:  # a report
            _int_header(h, "member", 0, 0, groups.MAX_SIZE - 1)
            if h.get("outcome") not in groups.OUTCOMES:
                raise InvalidHeader("A group report needs the outcome header: done or failed.")
            limit = groups.MAX_RESULT
            group = self.groups.groups.get(group_id)
            if group is not None:
                self._require(s, "write", "/queue/" + group.queue)
        else:  # an open
            if not h.get("group-size") or not h.get("callback", "").startswith("/queue/"):
                raise InvalidHeader(
                    "Open a group with group-size (1-10000) and callback (/queue/NAME); report a member "
                    "with member and outcome."
                )
            _int_header(h, "group-size", 0, 1, groups.MAX_SIZE)
            self.groups.check_open(group_id)
            check_name(h["callback"][len("/queue/") :], "queue")
            self._require(s, "write", h["callback"])
            limit = groups.MAX_CALLBACK
        _check_text_body(ev, limit, "A group frame")

    def _group(self, s: SessionState, ev: Send) -> None:
        """SEND /queueit/group: open a group, or report a member (see :mod:`.groups`)."""
        h = ev.headers
        if "member" not in h:
            size = _int_header(h, "group-size", 0, 1, groups.MAX_SIZE)
            queue = h["callback"][len("/queue/") :]
            self.groups.open(h["group-id"], size, queue, h, ev.body, self.now_ms())
            return
        member = _int_header(h, "member", 0, 0, groups.MAX_SIZE - 1)
        done = self.groups.report(h["group-id"], member, h["outcome"], ev.body)
        if done is None:
            return
        destination = "/queue/" + done.queue
        headers = (
            *((k, v) for k, v in done.headers if k not in ("content-type", "group-id")),
            ("content-type", groups.CONTENT_TYPE),
            ("group-id", done.id),
        )
        message = Message(
            self._id_prefix + str(next(self._ids)),
            destination,
            headers,
            done.callback_body(),
            persistent=True,
        )
        with self.store.atomic():  # the release and the group's deletion, together
            self._queue_named(done.queue).publish(message, self.now_ms())

    def _change_flow(self, s: SessionState, ev: Send) -> None:
        """SEND /queueit/flow with ``subscription`` (its id) and ``prefetch`` (0 pauses it).

        A worker that stops taking jobs pauses its subscriptions and keeps acking the jobs it
        runs: unlike UNSUBSCRIBE, pausing hands nothing back, and no new message arrives as
        acks free prefetch slots. An unknown subscription id is ignored (it may have gone).
        """
        sub = s.subscriptions.get(ev.headers["subscription"])
        if sub is None:
            return
        sub.prefetch = min(_int_header(ev.headers, "prefetch", 0, 0, 999_999_999), self.limits.max_unacked)
        sub.queue.dispatch(self.now_ms())

    # -- transactions --------------------------------------------------------------------------

    def _on_begin(self, s: SessionState, ev: Begin) -> None:
        if ev.transaction in s.transactions:
            raise TransactionError(f"Transaction {ev.transaction!r} is already open on this connection.")
        if len(s.transactions) >= self.limits.max_transactions:
            raise TransactionError(
                f"A connection may hold at most {self.limits.max_transactions} open transactions."
            )
        s.transactions[ev.transaction] = Transaction()

    def _buffer(self, s: SessionState, tx_id: str, frame: Send | Ack | Nack, size: int) -> None:
        tx = s.transactions.get(tx_id)
        if tx is None:
            raise TransactionError(f"No open transaction {tx_id!r}; send BEGIN first.")
        held = sum(t.size for t in s.transactions.values())
        if len(tx.frames) >= self.limits.max_transaction_frames or held + size > self.max_transaction_bytes:
            raise TransactionError(
                f"Transaction {tx_id!r} is too large: at most {self.limits.max_transaction_frames} frames, "
                f"and {self.max_transaction_bytes} bytes in all open transactions; commit in smaller parts."
            )
        tx.frames.append(frame)
        tx.size += size

    def _take_transaction(self, s: SessionState, tx_id: str) -> Transaction:
        tx = s.transactions.pop(tx_id, None)
        if tx is None:
            raise TransactionError(f"No open transaction {tx_id!r}.")
        return tx

    def _on_commit(self, s: SessionState, ev: Commit) -> None:
        tx = self._take_transaction(s, ev.transaction)
        adding: dict[Queue, list[int]] = {}  # queue -> [messages, bytes] this COMMIT adds
        for frame in tx.frames:
            if isinstance(frame, Send):
                dest = self._check_send(s, frame, room=False)[0]  # all or nothing: refuse before applying any
                if dest.kind is Kind.QUEUE:  # a queue the SEND creates has limits too
                    self._named_queue(s, dest.name, frame.destination)
                for queue in self._targets(dest):
                    tally = adding.setdefault(queue, [0, 0])
                    tally[0] += 1
                    tally[1] += len(frame.body)
        for queue, (count, size) in adding.items():
            queue.check_room(size, count)  # the SENDs of one COMMIT may fill a queue together
        with self.store.atomic():  # on disk all together, or (after a crash) not at all
            # ACKs and NACKs first: a retry sent with its original's ACK takes over its unique key.
            for frame in tx.frames:
                if not isinstance(frame, Send) and frame.id in s.pending:  # may be settled since
                    plain = type(frame)(frame.id, frame.subscription, None, frame.headers, None)
                    self.handle(s, plain)
            for frame in tx.frames:
                if isinstance(frame, Send):
                    self._publish(s, frame)

    def _on_abort(self, s: SessionState, ev: Abort) -> None:
        self._take_transaction(s, ev.transaction)

    # -- administration (config and admin requests) -------------------------------------------

    def declare_exchange(self, name: str, type: ExchangeType) -> Exchange:
        check_name(name, "exchange")
        existing = self.exchanges.get(name)
        if existing is not None:
            if existing.type is not type:
                raise InvalidDestination(
                    f"Exchange {name!r} exists with type {existing.type.value}, not {type.value}."
                )
            return existing
        exchange = Exchange(name, type)
        self.exchanges[name] = exchange
        self._bind_waiting(name)
        return exchange

    def _bind_waiting(self, exchange_name: str) -> None:
        for queue, key in self._unbound.pop(exchange_name, []):
            self.exchanges[exchange_name].bind(queue, key)

    def bind(self, exchange: str, queue: str, key: str = "") -> None:
        found = self.exchanges.get(exchange)
        if found is None:
            raise InvalidDestination(f"No exchange named {exchange!r}.")
        check_name(queue, "queue")
        target = self.queues.get(queue)
        if target is None:
            target = self._create_queue(queue, QueueKind.NAMED)
        found.bind(target, key)

    def _require(self, s: SessionState, permission: str, destination: str) -> None:
        if not s.user.permissions.allows(permission, destination):
            raise AccessDenied(s.user.name, permission, destination)


def _int_header(headers: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = headers.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not raw.isascii() or len(raw) > len(str(high)) or not low <= int(raw) <= high:
        raise InvalidHeader(f"{name} must be an integer from {low} to {high}, got {raw[:40]!r}.")
    return int(raw)


def _check_text_body(ev: Send, limit: int, what: str) -> None:
    """Refuse a body of a /queueit/ request that is over ``limit`` bytes or not UTF-8."""
    if len(ev.body) > limit:
        raise InvalidHeader(f"{what}'s body is at most {limit} bytes, not {len(ev.body)}.")
    try:
        ev.body.decode()
    except UnicodeDecodeError:
        raise InvalidHeader(f"{what}'s body must be UTF-8 text (JSON, say).") from None


def _headers_size(headers: dict[str, str]) -> int:
    return sum(len(k) + len(v) + 2 for k, v in headers.items())


def _durable_name(ev: Subscribe) -> str | None:
    h = ev.headers
    name = h.get("durable-subscription-name") or h.get("activemq.subscriptionName")
    if name:
        return check_name(name, "durable subscription")
    if h.get("durable") == _TRUE or h.get("persistent") == _TRUE:
        return check_name(ev.id, "durable subscription")
    return None
