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

Leases: a client-ack delivery is leased to its subscription until ``lease_until``; the
core's :class:`Leases` heap takes back what is not acked in time. Dead-lettering (expired,
rejected, too many deliveries, overflow) goes through the ``dead_letter`` hook the core
sets, which moves the message to the queue's dead-letter queue in one journal step.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ..stomp import AckMode
from .errors import QueueFull
from .messages import Message
from .queue_settings import QueueSettings

if TYPE_CHECKING:
    from .storage import QueueStore
    from .unique import UniqueKeys


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


class Leases:
    """Lease deadlines of client-ack deliveries, soonest first; one per core.

    An entry is stale (and skipped) once its message is settled, given back, or its
    lease extended: the message's ``lease_until`` then no longer matches. Acks do not
    touch the heap (that would cost a search each); instead, when stale entries outnumber
    live ones the heap is rebuilt from the live ones, so it stays within twice the
    messages in flight (plus a constant), whatever the lease length.
    """

    __slots__ = ("_heap", "_limit", "_tie")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Subscription, Message]] = []
        self._tie = itertools.count()
        self._limit = COMPACT_MIN

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, sub: Subscription, message: Message, until: int) -> None:
        message.lease_until = until
        heapq.heappush(self._heap, (until, next(self._tie), sub, message))
        if len(self._heap) > self._limit:
            self._heap = [e for e in self._heap if _live(e)]
            heapq.heapify(self._heap)
            self._limit = 2 * len(self._heap) + COMPACT_MIN

    def expired(self, now_ms: int) -> list[tuple[Subscription, Message]]:
        heap = self._heap
        out = []
        while heap and heap[0][0] <= now_ms:
            entry = heapq.heappop(heap)
            if _live(entry):
                out.append((entry[2], entry[3]))
        return out


#: Stale entries allowed beyond twice the live ones before a rebuild. A rebuild runs on the
#: loop and frees the stale entries (and the settled messages only they still hold) at once:
#: at 10,000 it took ~5 ms, one slow delivery at a fixed point after every drain; at 1,000
#: it stays under 1 ms, for the same work amortized (a probe in docs/benchmarks.md, session 6).
COMPACT_MIN = 1_000


def _live(entry: tuple[int, int, Subscription, Message]) -> bool:
    until, _, sub, message = entry
    return message.lease_until == until and sub.unacked.get(message.id) is message


class Subscription:
    __slots__ = (
        "ack_mode",
        "destination",
        "id",
        "lease_ms",
        "lost",
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
        lost: dict[str, None] | None = None,
    ) -> None:
        self.id = id
        self.destination = destination
        self.queue = queue
        self.ack_mode = ack_mode
        self.prefetch = prefetch
        self.outlet = outlet
        self.pending = pending  # the session's ack-id index, shared by its subscriptions
        # The session's ack ids taken back by an expired lease (a late ACK of one is no error).
        self.lost: dict[str, None] = {} if lost is None else lost
        # Delivered and not yet acked, in delivery order (cumulative ACK walks this order).
        self.unacked: dict[str, Message] = {}
        self.lease_ms = queue.settings.visibility_timeout  # a SUBSCRIBE header may shorten it

    def can_take(self) -> bool:
        # prefetch 0 is a paused subscription (SEND /queueit/flow), whatever its ack mode.
        return self.outlet.writable and (
            len(self.unacked) < self.prefetch if self.ack_mode is not AckMode.AUTO else self.prefetch > 0
        )


class DeadLetter(Protocol):
    """Moves taken messages of a queue to its dead-letter queue, with why (and what went wrong)."""

    def __call__(self, queue: Queue, messages: Sequence[Message], reason: str, error: str = "") -> None: ...


def _drop(queue: Queue, messages: Sequence[Message], reason: str, error: str = "") -> None:
    for message in messages:
        queue.forget(message)


class Queue:
    __slots__ = (
        "_rr",
        "acked",
        "bindings",
        "blocked",
        "consumers",
        "dead_letter",
        "dead_lettered",
        "delivered",
        "dropped",
        "expired",
        "flow_blocks",
        "kind",
        "leases",
        "name",
        "published",
        "rejects",
        "settings",
        "special",
        "stalled",
        "store",
        "unique",
    )

    def __init__(
        self,
        name: str,
        store: QueueStore,
        kind: QueueKind = QueueKind.NAMED,
        settings: QueueSettings | None = None,
        leases: Leases | None = None,
    ) -> None:
        self.name = name
        self.store = store
        self.kind = kind
        self.settings = s = QueueSettings() if settings is None else settings
        #: It has limits, and refuses publishes past them (see check_room).
        self.rejects = s.overflow == "reject-publish" and bool(s.max_messages or s.max_bytes)
        self.special = bool(s.ttl or s.max_messages or s.max_bytes)
        self.stalled = False  # see dispatch
        # Shared with the core (``is None``, not ``or``: an empty Leases is falsy).
        self.leases = Leases() if leases is None else leases
        #: Where messages that cannot be delivered go (set by the core); the default drops.
        self.dead_letter: DeadLetter = _drop
        self.consumers: list[Subscription] = []
        self.bindings: set[tuple[str, str]] = set()  # (exchange, key) pairs, for unbinding
        self.blocked: set[Outlet] = set()  # publishers held back by flow control
        self._rr = 0
        self.published = 0
        self.delivered = 0
        self.acked = 0
        self.expired = 0
        self.dead_lettered = 0  # moved to the dead-letter queue, or dropped for want of one
        self.dropped = 0  # dropped from the head by the drop-head overflow policy
        self.flow_blocks = 0  # times a publisher was held back by this queue
        #: Unique-key holds (created by the core on the first SEND with a key).
        self.unique: UniqueKeys | None = None

    def __len__(self) -> int:
        return len(self.store)

    @property
    def in_flight(self) -> int:
        return sum(len(c.unacked) for c in self.consumers)

    def full(self, extra_bytes: int, extra_messages: int = 1) -> bool:
        """Would ``extra_messages`` more (of ``extra_bytes`` in all) break the queue's limits?

        Delayed messages count against ``max_messages``: they will be ready soon enough.
        """
        s = self.settings
        return bool(
            (s.max_messages and len(self.store) + self.store.scheduled + extra_messages > s.max_messages)
            or (s.max_bytes and self.store.ready_bytes + extra_bytes > s.max_bytes)
        )

    def check_room(self, extra_bytes: int, extra_messages: int = 1) -> None:
        """Refuse a publish the reject-publish policy keeps out (before any side effect).

        Raises:
            QueueFull: the queue is at its limit and its overflow policy is reject-publish.
        """
        s = self.settings
        if self.rejects and self.full(extra_bytes, extra_messages):
            raise QueueFull(
                f"Queue {self.name!r} is full ({len(self.store)} messages, {self.store.ready_bytes} bytes; "
                f"limits max_messages={s.max_messages}, max_bytes={s.max_bytes}); the message was not "
                "accepted. Retry later, or raise the limits in the queue's [[queues]] entry."
            )

    def publish(self, message: Message, now_ms: int, publisher: Outlet | None = None) -> None:
        self.published += 1
        if self.special:  # a TTL or limits: most queues have neither (the hot path)
            s = self.settings
            if s.ttl and (not message.expires or message.expires > now_ms + s.ttl):
                message.expires = now_ms + s.ttl  # the shorter of the message's and the queue's, as RabbitMQ
            if (s.max_messages or s.max_bytes) and self.full(len(message.body)):
                if s.max_bytes and len(message.body) > s.max_bytes:
                    # It can never fit: emptying the queue for it would not help.
                    self._overflow(message)
                    return
                self._make_room(len(message.body), now_ms)
        if message.due:
            if message.due > now_ms:
                self.store.schedule(message)
                return
            message.due = 0
        self.store.put(message)
        if self.consumers:
            if not self.stalled:
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
        """Hand ready messages to consumers that can take them, round-robin.

        Ends ``stalled`` when no consumer could take more while messages wait: then a
        publish does not look again (each consumer would say no), and whatever lets a
        consumer take more (an ack, a flushed or resumed connection, a new consumer, a
        lease that ran out) calls ``dispatch`` itself.
        """
        self.stalled = False
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
                    self._deliver(sub, message, now_ms)
            else:
                self.stalled = len(store) > 0
        while len(consumers) > 1:
            n = len(consumers)
            for _ in range(n):
                sub = consumers[self._rr % n]
                self._rr += 1
                if sub.can_take():
                    break
            else:
                self.stalled = len(store) > 0
                break
            message = store.take()
            if message is None:
                self._rr -= 1  # nobody was served: keep the turn
                break
            if message.avoid is sub:
                sub = self._other_than(sub)
            if not self._expired(message, now_ms):
                self._deliver(sub, message, now_ms)
        if self.blocked and (len(store) <= FLOW_LOW or not consumers):
            self.release_publishers()

    def _other_than(self, sub: Subscription) -> Subscription:
        """A consumer other than ``sub`` that can take a message now, else ``sub``."""
        for other in self.consumers:
            if other is not sub and other.can_take():
                return other
        return sub

    def _make_room(self, extra_bytes: int, now_ms: int) -> None:
        """drop-head / dead-letter overflow: the oldest messages leave to make room."""
        while self.full(extra_bytes):
            head = self.store.take()
            if head is None:
                return  # the head is on disk and not read back yet: admit over the limit
            self._overflow(head)

    def _overflow(self, message: Message) -> None:
        """A message pushed out by the drop-head / dead-letter overflow policy (taken, or new)."""
        if self.settings.overflow == "dead-letter":
            self.dead_letter(self, [message], "overflow")
        else:
            self.forget(message)
            self.dropped += 1

    def release_publishers(self) -> None:
        blocked, self.blocked = self.blocked, set()
        for outlet in blocked:
            outlet.unblock(self)

    def _expired(self, message: Message, now_ms: int) -> bool:
        """Dead-letter a taken message whose ``expires`` time has passed."""
        if message.expires and message.expires <= now_ms:
            self.expire([message])
            return True
        return False

    def expire(self, messages: Sequence[Message]) -> None:
        """Expired messages (taken from the store) leave the queue."""
        self.expired += len(messages)
        self.dead_letter(self, messages, "expired")

    def sweep(self, now_ms: int) -> None:
        """Expired messages leave even when they are not at the head."""
        if self.unique is not None:
            self.unique.sweep()
        expired = self.store.expire(now_ms)
        if expired:
            self.expire(expired)
            if self.blocked:
                self.dispatch(now_ms)

    def _deliver(self, sub: Subscription, message: Message, now_ms: int) -> None:
        message.avoid = None
        message.deliveries += 1
        self.delivered += 1
        if sub.ack_mode is AckMode.AUTO:
            self.forget(message)
            self.acked += 1
        else:
            sub.unacked[message.id] = message
            sub.pending[message.id] = sub
            self.leases.add(sub, message, now_ms + sub.lease_ms)
        sub.outlet.deliver(sub, message)

    def settle(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.forget(message)
        self.acked += len(messages)

    def forget(self, message: Message) -> None:
        """A taken message leaves the queue for good (acked, dropped, moved)."""
        self.store.settle(message)
        if message.unique and self.unique is not None:
            self.unique.release(message)

    def purge(self) -> int:
        """Drop every ready message; return how many."""
        count = self.store.purge()
        if self.unique is not None:
            self.unique.purged({m for c in self.consumers for m in c.unacked})
        return count

    def requeue(
        self, messages: Sequence[Message], now_ms: int, delay_ms: int = 0, *, started: bool = True
    ) -> None:
        """Give taken messages back, flagged redelivered: at the head in the order given, or
        after ``delay_ms``; a message at its queue's delivery limit is dead-lettered instead.

        ``started=False``: the consumer says it never began on them (it hands back what it
        prefetched), so this delivery does not count toward ``max_deliveries``, and a message
        is no redelivery unless an earlier delivery was counted.
        """
        limit = self.settings.max_deliveries
        back = []
        for message in messages:
            message.lease_until = 0
            if not started and message.deliveries > 0:
                message.deliveries -= 1
            if limit and message.deliveries >= limit:
                self.dead_letter(self, [message], "max-deliveries")
                continue
            message.redelivered = started or message.deliveries > 0
            back.append(message)
        if not back:
            return
        if delay_ms:
            for message in back:
                message.due = now_ms + delay_ms
                self.store.schedule(message)
        else:
            self.store.requeue(back)

    def add_consumer(self, sub: Subscription) -> None:
        self.consumers.append(sub)

    def remove_consumer(self, sub: Subscription) -> None:
        self.consumers.remove(sub)
        if not self.consumers and self.blocked:
            self.release_publishers()
