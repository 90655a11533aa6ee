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
from collections.abc import Callable
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
from .admin import handle_admin
from .auth import User
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
from .messages import CONTROL_HEADERS, Message
from .queues import Outlet, Queue, QueueKind, Subscription
from .storage import MessageStore

_TRUE = "true"
MAX_EPOCH_MS = 10**15  # year 33658: any larger ``expires`` is a mistake


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


class BrokerCore:
    def __init__(
        self,
        store: MessageStore,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.time,
        max_transaction_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.store = store
        self.limits = limits
        self.clock = clock
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
        for name in store.stored_queues():
            self._create_queue(name, QueueKind.NAMED)

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

    def handle(self, s: SessionState, event: ClientEvent) -> None:
        """Apply one client frame.

        Raises:
            BrokerError: the request is refused; the connection is to be closed.
        """
        match event:  # SEND first: it is the hot path
            case Send():
                self._on_send(s, event)
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

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- SEND ----------------------------------------------------------------------------------

    def _on_send(self, s: SessionState, ev: Send) -> None:
        if ev.transaction is not None:
            self._check_send(s, ev)
            self._buffer(s, ev.transaction, ev, len(ev.body) + _headers_size(ev.headers))
            return
        self._publish(s, ev)

    def _check_send(self, s: SessionState, ev: Send) -> tuple[Destination, int, int]:
        """Every check a SEND must pass, without side effects; its destination, priority, expires.

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
            if dest.name != "admin" or not ev.headers.get("reply-to"):
                raise InvalidDestination("Send admin requests to /queueit/admin with a reply-to header.")
            return dest, 0, 0
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
        reply_to = ev.headers.get("reply-to")
        if reply_to is not None and reply_to.startswith("/temp-queue/"):
            name = check_name(reply_to[len("/temp-queue/") :], "temp-queue")
            if name not in s.temp_queues:
                self._check_temp_queue_limit(s)
        return dest, priority, expires

    def _publish(self, s: SessionState, ev: Send) -> None:
        dest, priority, expires = self._check_send(s, ev)
        if dest.kind is Kind.ADMIN:
            self._admin(s, ev)
            return
        message = self._make_message(s, ev, priority, expires)
        now = self.now_ms()
        kind = dest.kind
        if kind is Kind.QUEUE:
            self._named_queue(s, dest.name, ev.destination).publish(message, now, s.outlet)
        elif kind is Kind.REPLY_QUEUE:
            queue = self.queues.get("~temp/" + dest.name)
            if queue is not None:  # a reply to a requester that has gone is dropped, as in RabbitMQ
                queue.publish(message, now)
        else:
            exchange = self.exchanges[TOPIC_EXCHANGE if kind is Kind.TOPIC else dest.name]
            targets = exchange.route(dest.name if kind is Kind.TOPIC else dest.key)
            for i, queue in enumerate(targets):
                # Each queue gets its own copy with its own id: ack ids stay unique.
                copy = message if i == 0 else self._copy(message)
                queue.publish(copy, now, s.outlet)

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
            encoded_version=m.encoded_version,
            encoded_block=m.encoded_block,
        )

    # -- queues ----------------------------------------------------------------------------

    def _create_queue(self, key: str, kind: QueueKind) -> Queue:
        transient = kind is QueueKind.SUBSCRIPTION or kind is QueueKind.TEMPORARY
        queue = Queue(key, self.store.open_queue(key, transient=transient), kind)
        # Messages read back from disk arrive later than the take that missed them.
        queue.store.on_ready = lambda: queue.dispatch(self.now_ms())
        self.queues[key] = queue
        return queue

    def _named_queue(self, s: SessionState, name: str, destination: str) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            self._require(s, "admin", destination)
            queue = self._create_queue(name, QueueKind.NAMED)
        return queue

    def _admin(self, s: SessionState, ev: Send) -> None:
        reply = handle_admin(self, s, ev)
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
        queue.release_publishers()
        self.queues.pop(queue.name, None)

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
        self._attach(s, ev.id, ev.destination, queue, ev.ack, prefetch)

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
                queue.store.purge()
        exchange.bind(queue, key)
        return queue

    def _attach(
        self, s: SessionState, sub_id: str, destination: str, queue: Queue, mode: AckMode, prefetch: int
    ) -> None:
        sub = Subscription(sub_id, destination, queue, mode, prefetch, s.outlet, s.pending)
        s.subscriptions[sub_id] = sub
        queue.add_consumer(sub)
        queue.dispatch(self.now_ms())

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
        if held:
            queue.requeue(held)
        queue.dispatch(self.now_ms())

    def _too_many_subscriptions(self) -> str:
        return f"A connection may hold at most {self.limits.max_subscriptions} subscriptions."

    # -- ACK / NACK -------------------------------------------------------------------------

    def _pending(self, s: SessionState, ack_id: str, what: str) -> Subscription:
        sub = s.pending.get(ack_id)
        if sub is None:
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
        if ev.transaction is not None:
            self._buffer(s, ev.transaction, ev, _headers_size(ev.headers))
            return
        sub.queue.settle(self._settled(s, sub, ev.id))
        sub.queue.dispatch(self.now_ms())

    def _on_nack(self, s: SessionState, ev: Nack) -> None:
        sub = self._pending(s, ev.id, "NACK")
        if ev.transaction is not None:
            self._buffer(s, ev.transaction, ev, _headers_size(ev.headers))
            return
        messages = self._settled(s, sub, ev.id)
        if ev.headers.get("requeue") == "false":
            sub.queue.settle(messages)  # dead-letter queues arrive with the durable store
        else:
            sub.queue.requeue(messages)
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
        for frame in tx.frames:
            if isinstance(frame, Send):
                self._check_send(s, frame)  # all or nothing: refuse before applying any
        for frame in tx.frames:
            if isinstance(frame, Send):
                self._publish(s, frame)
            elif frame.id in s.pending:  # may have been settled since, e.g. by a cumulative ACK
                plain = type(frame)(frame.id, frame.subscription, None, frame.headers, None)
                self.handle(s, plain)

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
        return exchange

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
