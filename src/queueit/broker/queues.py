"""Queues, subscriptions, and the dispatch loop that joins them.

Ownership: every object here belongs to the :class:`~queueit.broker.core.BrokerCore`
and is touched only from the event-loop thread; nothing here awaits anything.

Flow control: when a queue that has consumers holds more than ``FLOW_HIGH`` ready
messages, a connection that publishes to it is blocked (its session stops reading from it)
until the queue is down to ``FLOW_LOW`` or loses its consumers, so producers run at the
consumers' pace instead of filling memory. A publisher that also consumes the queue is
never blocked by it (it could not ack its way out), and the broker's own replies (admin,
reply queues) are not flow-controlled. Queues without consumers are bounded by the
storage limits of the durable store, not here.

Dispatch invariant: a queue hands a ready message to a consumer only when the consumer
``can_take`` (its connection is writable and, for client acks, it holds fewer unacked
messages than its prefetch). Consumers are served round-robin, so competing consumers
share a queue evenly within their prefetch windows.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ..stomp import AckMode
from .messages import Message

if TYPE_CHECKING:
    from .storage import QueueStore


class Outlet(Protocol):
    """What a subscription delivers into: one client connection."""

    @property
    def writable(self) -> bool: ...

    def deliver(self, subscription: Subscription, message: Message) -> None: ...

    def block(self, queue: Queue) -> None:
        """Hold back this client's publishing: ``queue`` is backed up."""
        ...

    def unblock(self, queue: Queue) -> None: ...


FLOW_HIGH = 5_000
FLOW_LOW = 1_000


class QueueKind(enum.Enum):
    NAMED = "queue"  # /queue/NAME, shared, kept until deleted
    SUBSCRIPTION = "subscription"  # private queue of one topic/exchange subscription
    DURABLE = "durable"  # a named topic subscription that outlives its connection
    TEMPORARY = "temporary"  # /temp-queue/, deleted with its connection


class Subscription:
    __slots__ = (
        "ack_mode",
        "destination",
        "id",
        "outlet",
        "pending",
        "prefetch",
        "queue",
        "unacked",
    )

    def __init__(
        self,
        id: str,
        destination: str,
        queue: Queue,
        ack_mode: AckMode,
        prefetch: int,
        outlet: Outlet,
        pending: dict[str, Subscription],
    ) -> None:
        self.id = id
        self.destination = destination
        self.queue = queue
        self.ack_mode = ack_mode
        self.prefetch = prefetch
        self.outlet = outlet
        self.pending = pending  # the session's ack-id index, shared by its subscriptions
        # Delivered and not yet acked, in delivery order (cumulative ACK walks this order).
        self.unacked: dict[str, Message] = {}

    def can_take(self) -> bool:
        return self.outlet.writable and (self.ack_mode is AckMode.AUTO or len(self.unacked) < self.prefetch)


class Queue:
    __slots__ = (
        "_rr",
        "acked",
        "bindings",
        "blocked",
        "consumers",
        "delivered",
        "expired",
        "flow_blocks",
        "kind",
        "name",
        "published",
        "store",
    )

    def __init__(
        self,
        name: str,
        store: QueueStore,
        kind: QueueKind = QueueKind.NAMED,
    ) -> None:
        self.name = name
        self.store = store
        self.kind = kind
        self.consumers: list[Subscription] = []
        self.bindings: set[tuple[str, str]] = set()  # (exchange, key) pairs, for unbinding
        self.blocked: set[Outlet] = set()  # publishers held back by flow control
        self._rr = 0
        self.published = 0
        self.delivered = 0
        self.acked = 0
        self.expired = 0
        self.flow_blocks = 0  # times a publisher was held back by this queue

    def __len__(self) -> int:
        return len(self.store)

    @property
    def in_flight(self) -> int:
        return sum(len(c.unacked) for c in self.consumers)

    def publish(self, message: Message, now_ms: int, publisher: Outlet | None = None) -> None:
        self.published += 1
        self.store.put(message)
        if self.consumers:
            self.dispatch(now_ms)
            if (
                publisher is not None
                and len(self.store) > FLOW_HIGH
                and publisher not in self.blocked
                and all(c.outlet is not publisher for c in self.consumers)
            ):
                self.blocked.add(publisher)
                self.flow_blocks += 1
                publisher.block(self)

    def dispatch(self, now_ms: int) -> None:
        """Hand ready messages to consumers that can take them, round-robin."""
        consumers = self.consumers
        store = self.store
        if len(consumers) == 1:
            # One consumer (every topic subscription, most work queues): no turn-taking.
            sub = consumers[0]
            while sub.can_take():
                message = store.take()
                if message is None:
                    break
                if not self._expired(message, now_ms):
                    self._deliver(sub, message)
        while len(consumers) > 1:
            n = len(consumers)
            for _ in range(n):
                sub = consumers[self._rr % n]
                self._rr += 1
                if sub.can_take():
                    break
            else:
                break
            message = store.take()
            if message is None:
                self._rr -= 1  # nobody was served: keep the turn
                break
            if not self._expired(message, now_ms):
                self._deliver(sub, message)
        if self.blocked and (len(store) <= FLOW_LOW or not consumers):
            self.release_publishers()

    def release_publishers(self) -> None:
        blocked, self.blocked = self.blocked, set()
        for outlet in blocked:
            outlet.unblock(self)

    def _expired(self, message: Message, now_ms: int) -> bool:
        """Settle (drop) a message whose ``expires`` time has passed."""
        if message.expires and message.expires <= now_ms:
            self.expired += 1
            self.store.settle(message)
            return True
        return False

    def _deliver(self, sub: Subscription, message: Message) -> None:
        message.deliveries += 1
        self.delivered += 1
        if sub.ack_mode is AckMode.AUTO:
            self.store.settle(message)
            self.acked += 1
        else:
            sub.unacked[message.id] = message
            sub.pending[message.id] = sub
        sub.outlet.deliver(sub, message)

    def settle(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.store.settle(message)
        self.acked += len(messages)

    def requeue(self, messages: Sequence[Message]) -> None:
        """Put messages back at the head, flagged redelivered, in the order given."""
        for message in messages:
            message.redelivered = True
        self.store.requeue(messages)

    def add_consumer(self, sub: Subscription) -> None:
        self.consumers.append(sub)

    def remove_consumer(self, sub: Subscription) -> None:
        self.consumers.remove(sub)
        if not self.consumers and self.blocked:
            self.release_publishers()
