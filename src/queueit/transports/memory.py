"""``memory://``: an in-process broker for tests and single-process tools.

It keeps the whole delivery contract (``docs/delivery.md``) except durability: leases
that run out, redelivery counting, max deliveries, delays, priorities, dead letters and
topics with listener groups behave as on queueit's broker, so code tested on it behaves
the same in production.

Ownership: one :class:`MemoryBroker` holds every queue; it is shared by the transports of
one process (even on different threads and event loops: ``memory://NAME`` names one) and
guards its state with one lock. Nothing here awaits while holding the lock. Timers (delays,
leases) are checked whenever a transport touches the broker, and a waiting consumer wakes
when the next one is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .base import (
    Capabilities,
    Delivery,
    GroupOutcome,
    MemberReport,
    Outgoing,
    StoredMessage,
    TransportClosed,
    TransportRefused,
    check_group,
    check_leadership,
    check_led_publish,
    check_outgoing,
    check_progress,
    check_publish,
    check_publish_many,
    check_queue_name,
    listener_queue,
)

CAPABILITIES = Capabilities(
    delay=True,
    max_delay=None,
    priority=True,
    lease="timed",
    atomic_settle=True,
    dead_letter=True,
    topics=True,
    durable=False,
    max_message_bytes=None,
    unique=True,
    progress=True,
    groups=True,
    blocking_publish=True,
    leadership=True,
    uncounted_release=True,
)
#: Deliveries after which a message goes to the dead-letter queue (as on queueit's broker).
MAX_DELIVERIES = 10


@dataclass(eq=False)
class _Message:
    id: str
    body: bytes
    headers: dict[str, str]
    priority: int
    deliveries: int = 0
    due: float = 0.0
    holder: MemoryTransport | None = None
    lease_until: float = 0.0
    unique: str = ""
    group: GroupOutcome | None = None  # a released group callback's members


@dataclass
class _Group:
    size: int
    queue: str
    callback: Outgoing
    members: dict[int, tuple[str, bytes]] = field(default_factory=dict)


@dataclass
class _Queue:
    name: str
    ready: list[tuple[int, int, _Message]] = field(default_factory=list)  # (-priority, seq, message)
    delayed: list[tuple[float, int, _Message]] = field(default_factory=list)  # (due, seq, message)
    leased: dict[str, _Message] = field(default_factory=dict)
    consumers: list[MemoryTransport] = field(default_factory=list)
    holds: dict[str, _Hold] = field(default_factory=dict)  # unique key -> its hold


@dataclass
class _Hold:
    ref: str
    message_id: str  # "" once the message has left
    until: float  # clock time; 0: only while the message is in the queue


class MemoryBroker:
    """Queues in RAM, shared by :class:`MemoryTransport` objects; see the module docstring."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, record: bool = False) -> None:
        self.clock = clock
        #: With ``record``: every (queue, body, headers) published, in order (for tests).
        self.published: list[tuple[str, bytes, dict[str, str]]] | None = [] if record else None
        self._lock = threading.Lock()
        self._queues: dict[str, _Queue] = {}
        self._groups: dict[str, set[str]] = {}  # topic -> the queues of its listener groups
        self.progress: dict[str, tuple[bytes, int]] = {}  # job id -> (latest report, epoch ms)
        self.groups: dict[str, _Group] = {}
        self.leaders: dict[str, MemoryTransport] = {}  # leadership name -> its holder
        self.marks: dict[str, str] = {}  # leadership name -> the mark its holders left
        self._seq = itertools.count()

    def pending(self) -> tuple[int, float | None]:
        """(messages ready or leased on queues someone consumes, the soonest delayed due time)."""
        with self._lock:
            busy, due = 0, None
            for q in self._queues.values():
                if q.consumers:
                    self.tick(q, self.clock())
                    busy += len(q.ready) + len(q.leased)
                    if q.delayed and (due is None or q.delayed[0][0] < due):
                        due = q.delayed[0][0]
            return busy, due

    def wake_all(self) -> None:
        """Let every waiting consumer look again (after the clock moved)."""
        with self._lock:
            for q in self._queues.values():
                for consumer in q.consumers:
                    consumer.wake()

    def messages(self, queue: str) -> list[tuple[bytes, dict[str, str]]]:
        """(body, headers) of what waits on ``queue`` (ready, then delayed), without taking it."""
        with self._lock:
            q = self.queue(queue)
            ready = [m for _, _, m in sorted(q.ready)]
            delayed = [m for _, _, m in sorted(q.delayed)]
            return [(m.body, dict(m.headers)) for m in ready + delayed]

    # Everything below runs with the lock held, called by MemoryTransport.

    def queue(self, name: str) -> _Queue:
        found = self._queues.get(name)
        if found is None:
            found = self._queues[name] = _Queue(name)
        return found

    def put(self, queue: str, message: _Message, delay: float) -> None:
        q = self.queue(queue)
        if delay > 0:
            message.due = self.clock() + delay
            heapq.heappush(q.delayed, (message.due, next(self._seq), message))
        else:
            heapq.heappush(q.ready, (-message.priority, next(self._seq), message))
        for consumer in q.consumers:
            consumer.wake()

    def tick(self, q: _Queue, now: float) -> None:
        """Due delayed messages become ready; expired leases come back."""
        while q.delayed and q.delayed[0][0] <= now:
            _, _, message = heapq.heappop(q.delayed)
            heapq.heappush(q.ready, (-message.priority, next(self._seq), message))
        for message in [m for m in q.leased.values() if m.lease_until <= now]:
            self.unlease(q, message)
            self.give_back(q, message, 0.0)

    def unlease(self, q: _Queue, message: _Message) -> None:
        del q.leased[message.id]
        if message.holder is not None:
            message.holder.held.pop(message.id, None)
        message.holder = None

    def give_back(self, q: _Queue, message: _Message, delay: float) -> None:
        """An unleased message goes back, or to the dead-letter queue at its delivery limit."""
        if message.deliveries >= MAX_DELIVERIES:
            self.dead_letter(q, message, "max-deliveries")
        else:
            self.put(q.name, message, delay)

    def holder(self, q: _Queue, key: str) -> _Hold | None:
        hold = q.holds.get(key)
        if hold is not None and not hold.message_id and hold.until <= self.clock():
            del q.holds[key]
            return None
        return hold

    def left(self, q: _Queue, message: _Message) -> None:
        """``message`` has left ``q`` for good: its unique key is free (or held on for a time)."""
        hold = q.holds.get(message.unique) if message.unique else None
        if hold is not None and hold.message_id == message.id:
            if hold.until > self.clock():
                hold.message_id = ""
            else:
                del q.holds[message.unique]

    def dead_letter(self, q: _Queue, message: _Message, reason: str, error: str = "") -> None:
        self.left(q, message)
        message.unique = ""  # a dead letter holds no key (as on queueit's broker)
        message.headers = {
            **message.headers,
            "x-dead-letter-reason": reason,
            "x-dead-letter-queue": q.name,
            "x-dead-letter-deliveries": str(message.deliveries),
            "x-dead-letter-time": str(int(time.time() * 1000)),
        }
        if error:
            message.headers["x-dead-letter-error"] = error
        message.deliveries = 0
        self.put(dead_letter_queue(q.name), message, 0.0)

    def next_due(self, q: _Queue) -> float | None:
        times = [m.lease_until for m in q.leased.values()]
        if q.delayed:
            times.append(q.delayed[0][0])
        return min(times) if times else None

    def take(self, consumer: MemoryTransport) -> tuple[_Queue, _Message] | float | None:
        """A ready message for ``consumer``; else when to look again (None: not before a wake)."""
        now = self.clock()
        soonest: float | None = None
        for name in consumer.queues:
            q = self.queue(name)
            self.tick(q, now)
            if q.ready and len(consumer.held) < consumer.prefetch:
                _, _, message = heapq.heappop(q.ready)
                message.deliveries += 1
                message.holder = consumer
                message.lease_until = now + consumer.lease
                q.leased[message.id] = message
                consumer.held[message.id] = message
                return q, message
            due = self.next_due(q)
            if due is not None and (soonest is None or due < soonest):
                soonest = due
        return soonest

    def settle(self, consumer: MemoryTransport, message_id: str) -> tuple[_Queue, _Message]:
        message = consumer.held.pop(message_id, None)
        if message is None:
            raise TransportClosed(
                f"delivery {message_id} is no longer held by this consumer (settled, or its lease ran out)"
            )
        q = self.queue(next(name for name in consumer.queues if message_id in self.queue(name).leased))
        self.unlease(q, message)
        return q, message


_brokers: dict[str, MemoryBroker] = {}
_brokers_lock = threading.Lock()


def shared_broker(name: str) -> MemoryBroker:
    """The process's broker called ``name`` (``memory://NAME``), created on first use."""
    with _brokers_lock:
        broker = _brokers.get(name)
        if broker is None:
            broker = _brokers[name] = MemoryBroker()
        return broker


def dead_letter_queue(queue: str) -> str:
    return f"DLQ.{queue}"


class MemoryTransport:
    """A connection to a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.queues: list[str] = []
        self.prefetch = 0
        self.lease = 30.0
        self.held: dict[str, _Message] = {}
        self._paused = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken: asyncio.Event | None = None
        self._open = False
        self.connections = 0  # connect() calls: a leadership belongs to one of them

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    async def connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._woken = asyncio.Event()
        self._open = True
        self.connections += 1

    async def close(self) -> None:
        with self.broker._lock:
            self._open = False
            for name in self.queues:
                q = self.broker.queue(name)
                if self in q.consumers:
                    q.consumers.remove(self)
            for message_id in list(self.held):
                q, message = self.broker.settle(self, message_id)
                self.broker.give_back(q, message, 0.0)
            for name in [n for n, holder in self.broker.leaders.items() if holder is self]:
                del self.broker.leaders[name]

    def tolerate_blocking(self, seconds: float) -> None:
        pass  # in-process: no keep-alives to miss

    def coalesce(self, on: bool) -> None:
        pass  # in-process: a settle costs no packet

    def wake(self) -> None:
        """Called with the broker's lock held, from any thread."""
        if self._loop is not None and self._woken is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._woken.set)

    def _check_open(self) -> None:
        if not self._open:
            raise TransportClosed("the memory transport is not connected; call connect() first")

    # -- producing ---------------------------------------------------------------------------

    async def publish(self, queue: str, message: Outgoing) -> str | None:
        self._check_open()
        check_outgoing(self.capabilities, message)
        with self.broker._lock:
            return self._put(queue, message)

    async def publish_many(self, publish: Sequence[tuple[str, Outgoing]]) -> None:
        self._check_open()
        check_publish_many(self.capabilities, publish)
        with self.broker._lock:
            for queue, message in publish:
                self._put(queue, message)

    def blocking_publisher(self) -> MemoryPublisher:
        return MemoryPublisher(self)

    def _put(self, queue: str, message: Outgoing, group: GroupOutcome | None = None) -> str | None:
        """Publish under the lock; the holder's ref if a unique key kept ``message`` out."""
        check_queue_name(queue)
        headers = {**message.headers, "content-type": message.content_type}
        priority = 4 if message.priority is None else message.priority
        stored = _Message(uuid.uuid4().hex, message.body, headers, priority, group=group)
        unique = message.unique
        if unique is not None:
            q = self.broker.queue(queue)
            held = self.broker.holder(q, unique.key)
            until = self.broker.clock() + unique.hold_for if unique.hold_for else 0.0
            if held is not None:
                if held.message_id or held.ref != (unique.ref or stored.id):
                    return held.ref
                until = max(until, held.until)  # its own job after it left: as on queueit's broker
            q.holds[unique.key] = _Hold(unique.ref or stored.id, stored.id, until)
            stored.unique = unique.key
        if self.broker.published is not None:
            self.broker.published.append((queue, message.body, headers))
        self.broker.put(queue, stored, message.delay)
        return None

    async def broadcast(self, topic: str, message: Outgoing) -> None:
        self._check_open()
        with self.broker._lock:
            for queue in sorted(self.broker._groups.get(topic, ())):
                self._put(queue, message)

    # -- consuming ---------------------------------------------------------------------------

    async def consume(self, queue: str, *, prefetch: int, lease: float) -> None:
        self._check_open()
        check_queue_name(queue)
        if prefetch < 1 or lease <= 0:
            raise ValueError("prefetch must be at least 1 and lease positive")
        with self.broker._lock:
            self.queues.append(queue)
            self.prefetch = max(self.prefetch, prefetch)
            self.lease = lease
            self.broker.queue(queue).consumers.append(self)
        self.wake()

    async def listen(self, topic: str, *, group: str, prefetch: int, lease: float = 60.0) -> str:
        queue = listener_queue(group, topic)
        with self.broker._lock:
            self.broker._groups.setdefault(topic, set()).add(queue)
        await self.consume(queue, prefetch=prefetch, lease=lease)
        return queue

    async def pause(self) -> None:
        self._paused = True

    async def resume(self) -> None:
        self._paused = False
        self.wake()

    async def next_delivery(self, timeout: float | None = None) -> Delivery | None:
        self._check_open()
        assert self._woken is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._woken.clear()
            if not self._paused:
                with self.broker._lock:
                    got = self.broker.take(self)
                if isinstance(got, tuple):
                    q, message = got
                    return Delivery(
                        q.name,
                        message.body,
                        dict(message.headers),
                        message.id,
                        message.deliveries > 1,
                        message.deliveries,
                        message.id,
                        message.group,
                    )
                wait = None if got is None else max(0.0, got - self.broker.clock())
            else:
                wait = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait = left if wait is None else min(wait, left)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the event's result
            # when a cancel comes as the event is set, and the caller's cancel is lost.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._woken.wait()
            if not self._open:
                raise TransportClosed("the memory transport was closed")

    def _token(self, delivery: Delivery) -> str:
        if not isinstance(delivery.token, str):
            raise TypeError("not a delivery of the memory transport")
        return delivery.token

    async def ack(self, delivery: Delivery) -> None:
        await self.settle(delivery, ())

    async def settle(
        self,
        delivery: Delivery,
        publish: Sequence[tuple[str, Outgoing]],
        report: MemberReport | None = None,
    ) -> None:
        check_publish(self.capabilities, publish)
        with self.broker._lock:  # one step under the lock: atomic
            self.broker.left(*self.broker.settle(self, self._token(delivery)))
            for queue, message in publish:
                self._put(queue, message)
            if report is not None:
                self._report(report)
        self.wake()

    async def send_group(
        self,
        group_id: str,
        members: Sequence[tuple[str, Outgoing]],
        callback_queue: str,
        callback: Outgoing,
    ) -> None:
        self._check_open()
        check_group(self.capabilities, group_id, len(members), callback)
        check_queue_name(callback_queue)
        check_publish(self.capabilities, members)
        with self.broker._lock:
            if group_id in self.broker.groups:
                raise TransportRefused(f"group {group_id!r} is open already; use a new group id")
            self.broker.groups[group_id] = _Group(len(members), callback_queue, callback)
            for queue, message in members:
                self._put(queue, message)

    def _report(self, report: MemberReport) -> None:
        """Count a member (the first report of each wins); release the callback after the last."""
        group = self.broker.groups.get(report.group_id)
        if group is None or report.member in group.members or report.member >= group.size:
            return
        group.members[report.member] = (report.outcome, report.result)
        if len(group.members) == group.size:
            del self.broker.groups[report.group_id]
            members = tuple(group.members[i] for i in range(group.size))
            callback = group.callback
            headers = {**callback.headers, "group-id": report.group_id}
            released = Outgoing(
                callback.body, headers, priority=callback.priority, content_type=callback.content_type
            )
            self._put(group.queue, released, GroupOutcome(report.group_id, members))

    async def release(self, delivery: Delivery, *, delay: float = 0.0, started: bool = True) -> None:
        with self.broker._lock:
            q, message = self.broker.settle(self, self._token(delivery))
            if not started and message.deliveries > 0:
                message.deliveries -= 1  # never begun on: this delivery does not count
            self.broker.give_back(q, message, delay)
        self.wake()  # a free slot: this consumer may take the next message

    async def reject(
        self, delivery: Delivery, reason: Literal["invalid", "rejected"], error: str = ""
    ) -> None:
        with self.broker._lock:
            q, message = self.broker.settle(self, self._token(delivery))
            self.broker.dead_letter(q, message, reason, error[:1000])
        self.wake()

    async def extend(self, delivery: Delivery, lease: float) -> None:
        with self.broker._lock:
            message = self.held.get(self._token(delivery))
            if message is not None:
                message.lease_until = self.broker.clock() + lease

    # -- dead letters ------------------------------------------------------------------------

    def dead_letter_queue(self, queue: str) -> str:
        return dead_letter_queue(queue)

    async def dead_letters(self, queue: str, limit: int) -> list[StoredMessage]:
        with self.broker._lock:
            q = self.broker.queue(dead_letter_queue(queue))
            ordered = [m for _, _, m in sorted(q.ready)][:limit]
            return [
                StoredMessage(m.id, m.body, dict(m.headers), m.headers.get("x-dead-letter-reason", ""))
                for m in ordered
            ]

    async def redrive(self, queue: str, message_id: str | None) -> int:
        return self._take_dead(queue, message_id, back=True)

    async def delete_dead_letters(self, queue: str, message_id: str | None) -> int:
        return self._take_dead(queue, message_id, back=False)

    def _take_dead(self, queue: str, message_id: str | None, *, back: bool) -> int:
        with self.broker._lock:
            q = self.broker.queue(dead_letter_queue(queue))
            keep: list[tuple[int, int, _Message]] = []
            taken: list[tuple[int, int, _Message]] = []
            for entry in q.ready:
                (taken if message_id in (None, entry[2].id) else keep).append(entry)
            q.ready = keep
            heapq.heapify(q.ready)
            for _, _, message in sorted(taken):
                if back:  # a redriven message holds no unique key (as on queueit's broker)
                    origin = message.headers.get("x-dead-letter-queue", queue)
                    message.headers = {
                        k: v for k, v in message.headers.items() if not k.startswith("x-dead-letter-")
                    }
                    self.broker.put(origin, message, 0.0)
            return len(taken)

    # -- progress ----------------------------------------------------------------------------

    async def report_progress(self, job_id: str, body: bytes) -> None:
        check_progress(self.capabilities, job_id, body)
        with self.broker._lock:
            self.broker.progress[job_id] = (body, int(time.time() * 1000))

    async def read_progress(self, job_id: str) -> tuple[bytes, int] | None:
        check_progress(self.capabilities, job_id)
        with self.broker._lock:
            return self.broker.progress.get(job_id)

    # -- leadership --------------------------------------------------------------------------

    async def lead(self, name: str) -> MemoryLeadership | None:
        self._check_open()
        check_leadership(self.capabilities, name)
        with self.broker._lock:
            if self.broker.leaders.setdefault(name, self) is not self:
                return None
            return MemoryLeadership(self, name, self.broker.marks.get(name))


class MemoryLeadership:
    """A leadership a :class:`MemoryTransport` holds until it closes."""

    def __init__(self, transport: MemoryTransport, name: str, mark: str | None) -> None:
        self._transport, self._name, self._mark = transport, name, mark
        self._connection = transport.connections

    @property
    def mark(self) -> str | None:
        return self._mark

    async def publish(self, queue: str, message: Outgoing, mark: str) -> None:
        t = self._transport
        check_led_publish(t.capabilities, message, mark)
        with t.broker._lock:
            if not t._open or t.connections != self._connection or t.broker.leaders.get(self._name) is not t:
                raise TransportClosed(f"the leadership {self._name!r} went with its connection")
            t._put(queue, message)
            t.broker.marks[self._name] = mark


class MemoryPublisher:
    """:meth:`MemoryTransport.publish` for sync code (the broker's lock is all it needs)."""

    def __init__(self, transport: MemoryTransport) -> None:
        self._transport = transport
        self._open = True

    def publish(self, queue: str, message: Outgoing) -> str | None:
        if not self._open:
            raise TransportClosed("this publisher was closed")
        check_outgoing(self._transport.capabilities, message)
        with self._transport.broker._lock:
            return self._transport._put(queue, message)

    def close(self) -> None:
        self._open = False
