"""The transport interface: what the job framework needs from a message broker.

A transport moves opaque bodies (bytes) with string headers between named queues. It
knows nothing about jobs. Each transport declares its :class:`Capabilities`; asking for
something a transport cannot do raises :class:`Unsupported` at once, before anything is
sent (a transport never emulates a missing feature behind the caller's back).

The delivery contract every transport keeps (``docs/delivery.md``; checked by
``tests/transports/contract.py``):

* :meth:`Transport.publish` returns once the broker holds the message durably.
* A delivery stays leased to its consumer until :meth:`Transport.ack`,
  :meth:`Transport.settle`, :meth:`Transport.release` or :meth:`Transport.reject`, or until
  the consumer's connection is lost, or (where ``capabilities.lease`` is ``"timed"``) until
  its lease runs out without an :meth:`Transport.extend`. Then it is delivered again, with
  ``redelivered`` set.
* :meth:`Transport.settle` acks a delivery and publishes follow-up messages (a retry, a
  failed-job record) in one atomic step where ``capabilities.atomic_settle`` says so.
* :meth:`Transport.reject` moves a delivery, body and headers unchanged, to the queue's
  dead-letter queue (:meth:`Transport.dead_letter_queue`).

Errors (one tree; each transport maps its client library's exceptions onto it in one place)::

    TransportError
    ├── Unsupported          the transport cannot do what was asked (see capabilities)
    ├── TransportClosed      the connection is gone (deliveries it held come back later)
    └── TransportRefused     the broker said no (permissions, limits, bad name)

Ownership: a transport object belongs to one event loop; call it from that loop only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

#: Queue names every transport accepts: letters, digits and ``._-:``, at most 200 characters.
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")


class TransportError(Exception):
    """A transport failed; the message says what to do."""


class Unsupported(TransportError):
    """The transport cannot do this (its capabilities say so)."""


class TransportClosed(TransportError):
    """The connection to the broker is gone."""


class TransportRefused(TransportError):
    """The broker refused the request."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a transport can do, declared up front.

    Attributes:
        delay: messages can be held back by the broker until a delay has passed.
        max_delay: the longest delay in seconds (None: no limit).
        priority: messages carry a priority 0-9, higher first, FIFO within a priority.
        lease: "timed": a delivery is leased for a time the consumer chooses and extends
            (:meth:`Transport.extend`); "connection": it is held while the connection lives.
        atomic_settle: :meth:`Transport.settle` acks and publishes in one atomic step.
        dead_letter: the broker keeps dead letters and can list, redrive and delete them.
        topics: :meth:`Transport.broadcast` and :meth:`Transport.listen` are available.
        durable: published messages survive a broker restart.
        max_message_bytes: the largest body the broker takes (None: no fixed limit).
        unique: a message can hold a unique key in its queue (:class:`Unique`).
        progress: the broker keeps each job's latest progress report, readable by job id.
        groups: :meth:`Transport.send_group` holds a callback until every member reported.
        blocking_publish: sync code can publish over a connection of its own thread
            (:meth:`Transport.blocking_publisher`), with no event loop in between.
        leadership: one connection at a time can hold a named leadership
            (:meth:`Transport.lead`), freed by the broker when that connection goes.
        uncounted_release: ``release(..., started=False)`` does not count the delivery
            toward the delivery limit, and :meth:`Transport.resume` undoes a pause.
    """

    delay: bool
    max_delay: float | None
    priority: bool
    lease: Literal["timed", "connection"]
    atomic_settle: bool
    dead_letter: bool
    topics: bool
    durable: bool
    max_message_bytes: int | None
    unique: bool = False
    progress: bool = False
    groups: bool = False
    blocking_publish: bool = False
    leadership: bool = False
    uncounted_release: bool = False


#: The largest progress report a transport takes.
MAX_PROGRESS_BYTES = 16 * 1024


#: Longest unique key and ref; longest time a key can be held on after its message is gone.
MAX_UNIQUE_KEY = 255
MAX_HOLD_FOR = 30 * 86_400.0


@dataclass(frozen=True, slots=True)
class Unique:
    """A unique key for a message (see :meth:`Transport.publish`).

    Attributes:
        key: while a message holding ``key`` is in the queue (ready, delayed, or delivered
            and not settled), another publish with it to that queue is kept out.
        ref: what a kept-out publisher is told about the holder (the job id, say).
        hold_for: seconds the key stays held after the publish, even once its message is gone.
    """

    key: str
    ref: str = ""
    hold_for: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < len(self.key) <= MAX_UNIQUE_KEY or len(self.ref) > MAX_UNIQUE_KEY:
            raise ValueError(f"a unique key (and its ref) must be 1-{MAX_UNIQUE_KEY} characters long")
        if not 0 <= self.hold_for <= MAX_HOLD_FOR:
            raise ValueError(f"hold_for must be from 0 to {MAX_HOLD_FOR:g} seconds, got {self.hold_for}")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish.

    Attributes:
        body: opaque bytes.
        headers: string headers, kept end to end (names in lower case, no ``x-queueit-`` prefix
            conflicts: transports may add their own).
        delay: seconds the broker holds the message before it can be delivered.
        priority: 0-9, higher first; None is the transport's default (4).
        content_type: the body's media type.
        unique: the unique key it holds in its queue (where ``capabilities.unique``).
    """

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    priority: int | None = None
    content_type: str = "application/json"
    unique: Unique | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.delay <= 10 * 365 * 86_400:
            raise ValueError(f"delay must be from 0 to ten years in seconds, got {self.delay}")
        if self.priority is not None and not 0 <= self.priority <= 9:
            raise ValueError(f"priority must be from 0 to 9, got {self.priority}")


#: The most members a group has, and the largest result one reports.
MAX_GROUP_SIZE = 10_000
MAX_MEMBER_RESULT = 64 * 1024


@dataclass(frozen=True, slots=True)
class MemberReport:
    """A group member's outcome, reported with its settle (see :meth:`Transport.settle`).

    Attributes:
        group_id: the group (:meth:`Transport.send_group`).
        member: its index, 0 to size - 1.
        outcome: "done" or "failed".
        result: UTF-8 text (the job framework's JSON), at most :data:`MAX_MEMBER_RESULT` bytes.
    """

    group_id: str
    member: int
    outcome: Literal["done", "failed"]
    result: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.member < MAX_GROUP_SIZE or len(self.result) > MAX_MEMBER_RESULT:
            raise ValueError(
                f"a member is 0-{MAX_GROUP_SIZE - 1} and its result at most {MAX_MEMBER_RESULT} bytes"
            )
        self.result.decode()  # UnicodeDecodeError (a ValueError): the result must be UTF-8


@dataclass(frozen=True, slots=True)
class GroupOutcome:
    """What a released group callback carries: each member's outcome and result, in order.

    A result is None where the broker dropped it (over its budget for one group).
    """

    group_id: str
    members: tuple[tuple[str, bytes | None], ...]


@dataclass(eq=False, slots=True)
class Delivery:
    """A message handed to a consumer; settle it exactly once.

    Attributes:
        queue: the queue it came from.
        body: the bytes as published.
        headers: the headers as published, plus the transport's own.
        message_id: the broker's id for this message (stable across redeliveries).
        redelivered: it was delivered before (to this or another consumer).
        delivery_count: how many times it has been delivered, this time included (>= 1).
        token: the transport's handle for settling it; opaque to callers.
        group: for a group's callback, the members' outcomes (its body is the callback's own).
    """

    queue: str
    body: bytes
    headers: Mapping[str, str]
    message_id: str
    redelivered: bool
    delivery_count: int
    token: object
    group: GroupOutcome | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message read without taking it (dead-letter tooling)."""

    message_id: str
    body: bytes
    headers: Mapping[str, str]
    reason: str
    """Why it was dead-lettered: failed, invalid, rejected, expired, max-deliveries, ..."""


def listener_queue(group: str, topic: str) -> str:
    """The queue a listener group of ``topic`` shares, on every transport (``listen``).

    Raises:
        ValueError: the group or topic is not a valid queue name.
    """
    return f"events.{check_queue_name(group)}.{check_queue_name(topic)}"


def check_queue_name(name: str) -> str:
    """``name`` if every transport accepts it as a queue name.

    Raises:
        ValueError: it is empty, too long, or has characters outside ``[A-Za-z0-9._:-]``.
    """
    if not QUEUE_NAME.fullmatch(name):
        raise ValueError(
            f"bad queue name {name[:60]!r}: use 1-200 letters, digits and '._:-', starting with a "
            "letter or digit"
        )
    return name


def check_progress(capabilities: Capabilities, job_id: str, body: bytes = b"") -> None:
    """Refuse a progress report (or read) the transport cannot take.

    Raises:
        Unsupported: the transport keeps no progress.
        ValueError: the job id or body is out of bounds, or the body is not UTF-8.
    """
    if not capabilities.progress:
        raise Unsupported(
            "this transport keeps no job progress; use queueit:// or memory:// for progress reports"
        )
    if not 0 < len(job_id) <= MAX_UNIQUE_KEY:
        raise ValueError(f"a job id is 1-{MAX_UNIQUE_KEY} characters long")
    if len(body) > MAX_PROGRESS_BYTES:
        raise ValueError(f"a progress report is at most {MAX_PROGRESS_BYTES} bytes, not {len(body)}")
    body.decode()  # UnicodeDecodeError is a ValueError


def check_group(capabilities: Capabilities, group_id: str, members: int, callback: Outgoing) -> None:
    """Refuse a group the transport cannot hold (see :meth:`Transport.send_group`).

    Raises:
        Unsupported: the transport has no groups.
        ValueError: a bad id, member count or callback body.
    """
    if not capabilities.groups:
        raise Unsupported("this transport cannot hold a group's callback; use queueit:// or memory://")
    if not 0 < len(group_id) <= MAX_UNIQUE_KEY:
        raise ValueError(f"a group id is 1-{MAX_UNIQUE_KEY} characters long")
    if not 0 < members <= MAX_GROUP_SIZE:
        raise ValueError(f"a group has 1-{MAX_GROUP_SIZE} members, not {members}")
    callback.body.decode()  # UnicodeDecodeError (a ValueError)


def check_outgoing(capabilities: Capabilities, message: Outgoing) -> None:
    """Refuse, before anything is sent, what ``capabilities`` cannot honour.

    Raises:
        Unsupported: a delay, priority or size the transport cannot give.
    """
    if message.delay and not capabilities.delay:
        raise Unsupported("this transport cannot delay messages; publish without a delay")
    if capabilities.max_delay is not None and message.delay > capabilities.max_delay:
        raise Unsupported(f"this transport delays messages by at most {capabilities.max_delay:g} s")
    if message.priority is not None and not capabilities.priority:
        raise Unsupported("this transport has no message priorities; publish without one")
    if message.unique is not None and not capabilities.unique:
        raise Unsupported(
            "this transport cannot keep duplicates out by a unique key; use queueit:// or memory://, "
            "or send without a key"
        )
    limit = capabilities.max_message_bytes
    if limit is not None and len(message.body) > limit:
        raise Unsupported(f"a message body of {len(message.body)} bytes is over this transport's {limit}")


def check_publish(capabilities: Capabilities, publish: Sequence[tuple[str, Outgoing]]) -> None:
    """Refuse, before any of them is sent, (queue, message) pairs a step would publish (a
    settle, a group): a step is all or nothing, so nothing of it may fail half-way.

    Raises:
        ValueError: a bad queue name.
        Unsupported: what :func:`check_outgoing` refuses.
    """
    for queue, message in publish:
        check_queue_name(queue)
        check_outgoing(capabilities, message)


#: The most messages one :meth:`Transport.publish_many` sends, and the most bytes their bodies
#: hold together (queueit's broker holds at most 64 MiB of open transactions per connection).
MAX_PUBLISH_MANY = 10_000
MAX_PUBLISH_MANY_BYTES = 32 * 1024 * 1024


def check_publish_many(capabilities: Capabilities, publish: Sequence[tuple[str, Outgoing]]) -> None:
    """Refuse, before any of them is sent, what :meth:`Transport.publish_many` cannot send.

    Raises:
        ValueError: more than :data:`MAX_PUBLISH_MANY` messages or
            :data:`MAX_PUBLISH_MANY_BYTES` bytes; a bad queue name.
        Unsupported: a unique key (whether a key kept a message out is answered per send),
            or what :func:`check_outgoing` refuses.
    """
    if len(publish) > MAX_PUBLISH_MANY:
        raise ValueError(f"one step publishes at most {MAX_PUBLISH_MANY} messages, not {len(publish)}")
    size = sum(len(message.body) for _, message in publish)
    if size > MAX_PUBLISH_MANY_BYTES:
        raise ValueError(f"one step publishes at most {MAX_PUBLISH_MANY_BYTES} bytes of bodies, not {size}")
    if any(message.unique is not None for _, message in publish):
        raise Unsupported("a message with a unique key is published on its own, not with others")
    check_publish(capabilities, publish)


class BlockingPublisher(Protocol):
    """:meth:`Transport.publish` for sync code: a blocking connection that belongs to the
    thread that made it (see :meth:`Transport.blocking_publisher`)."""

    def publish(self, queue: str, message: Outgoing) -> str | None:
        """As :meth:`Transport.publish`, blocking; connects on first use.

        Raises:
            TransportClosed: the connection is gone; make a new publisher to try again.
        """

    def close(self) -> None:
        """Close the connection (from any thread; what was published stays published)."""


class Leadership(Protocol):
    """A named leadership this connection holds (see :meth:`Transport.lead`): until the
    connection closes or is lost, no other connection holds it."""

    @property
    def mark(self) -> str | None:
        """The mark the holders before left with their last :meth:`publish`, as it was when
        this one took over; None if none ever did."""

    async def publish(self, queue: str, message: Outgoing, mark: str) -> None:
        """Publish ``message`` (no delay, no unique key) and leave ``mark`` for the next
        holder, in one step: if this process dies, both happened or neither did.

        Raises:
            TransportClosed: the connection is gone, and the leadership with it.
            Unsupported: ``message`` asks for what the transport cannot give.
            ValueError: ``mark`` is empty or longer than :data:`MAX_MARK` characters.
        """


#: The longest mark a leadership keeps.
MAX_MARK = 255


def check_leadership(capabilities: Capabilities, name: str) -> None:
    """Refuse a leadership the transport cannot hold (see :meth:`Transport.lead`).

    Raises:
        Unsupported: the transport has no leaderships.
        ValueError: ``name`` is not a valid queue name.
    """
    if not capabilities.leadership:
        raise Unsupported("this transport has no leaderships; use amqp:// or memory://")
    check_queue_name(name)


def check_led_publish(capabilities: Capabilities, message: Outgoing, mark: str) -> None:
    """Refuse what :meth:`Leadership.publish` cannot do.

    Raises:
        Unsupported: a delay, a unique key, or what the transport refuses anyway.
        ValueError: ``mark`` is empty or longer than :data:`MAX_MARK` characters.
    """
    if not 0 < len(mark) <= MAX_MARK:
        raise ValueError(f"a leadership mark is 1-{MAX_MARK} characters long")
    if message.delay or message.unique is not None:
        raise Unsupported("a leader publishes without a delay or a unique key")
    check_outgoing(capabilities, message)


class Transport(Protocol):
    """A connection to a broker, as the job framework uses it. See the module docstring."""

    @property
    def capabilities(self) -> Capabilities: ...

    async def connect(self) -> None:
        """Open the connection.

        Raises:
            TransportClosed: the broker cannot be reached.
            TransportRefused: it refused the login.
        """

    async def close(self) -> None:
        """Close; deliveries not settled go back to their queues (marked redelivered)."""

    def tolerate_blocking(self, seconds: float) -> None:
        """Before :meth:`connect`: the caller's event loop may not run for up to ``seconds`` at
        a time (the inline pool runs sync jobs on it), so the connection's keep-alives must
        not declare it dead meanwhile (heart-beats wide enough; no effect where none are kept)."""

    def coalesce(self, on: bool) -> None:
        """A hint: while ``on``, settles may wait a little (at most 200 ms, never lost by this
        process dying) to share a packet and a broker wake-up with the next ones; ``on=False``
        sends what waits now. The inline pool turns it on while deliveries wait behind the
        running job. Anything that waits for the broker's answer goes out at once regardless.
        No effect where the transport has no such means."""

    # -- producing ---------------------------------------------------------------------------

    async def publish(self, queue: str, message: Outgoing) -> str | None:
        """Put ``message`` on ``queue``; returns when the broker holds it durably.

        Returns:
            None; or, when ``message.unique`` names a key another message of the queue holds,
            that message's ``Unique.ref``: then ``message`` was kept out.

        Raises:
            Unsupported: a delay, priority or unique key the transport cannot honour.
        """

    async def publish_many(self, publish: Sequence[tuple[str, Outgoing]]) -> None:
        """Put each (queue, message) pair on its queue; returns when the broker holds them all
        durably. Where ``capabilities.atomic_settle``, in one atomic step: after an error,
        none of them was published. Otherwise each is published and confirmed on its own,
        and an error may leave some of them published.

        Raises:
            ValueError: see :func:`check_publish_many`.
            Unsupported: a unique key, or what :meth:`publish` refuses.
        """

    async def broadcast(self, topic: str, message: Outgoing) -> None:
        """Send ``message`` to every current listener of ``topic``."""

    def blocking_publisher(self) -> BlockingPublisher:
        """A new, unconnected publisher for sync code, to the same broker with the same
        login: sync senders skip the hop to an event-loop thread, which on an idle machine
        costs more than the broker's own work.

        Raises:
            Unsupported: the transport has none (``capabilities.blocking_publish``).
        """

    # -- consuming ---------------------------------------------------------------------------

    async def consume(self, queue: str, *, prefetch: int, lease: float) -> None:
        """Start receiving from ``queue``: at most ``prefetch`` unsettled deliveries at a time,
        each leased for ``lease`` seconds (where leases are timed)."""

    async def listen(self, topic: str, *, group: str, prefetch: int, lease: float = 60.0) -> str:
        """Start receiving what is broadcast on ``topic``. Listeners sharing a ``group`` share
        its messages (one copy per group); the group's copies wait while it is away. Leases
        as :meth:`consume` does.

        Returns:
            The queue the group's copies wait in (``Delivery.queue`` of what arrives).
        """

    async def pause(self) -> None:
        """Stop receiving new deliveries; the ones held stay leased and can be settled."""

    async def resume(self) -> None:
        """Receive again after :meth:`pause`, up to each subscription's prefetch.

        Raises:
            Unsupported: the transport cannot (``capabilities.uncounted_release``).
        """

    async def next_delivery(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, or None after ``timeout`` seconds.

        Raises:
            TransportClosed: the connection was lost.
        """

    async def ack(self, delivery: Delivery) -> None:
        """Done with ``delivery``: remove it from its queue."""

    async def settle(
        self,
        delivery: Delivery,
        publish: Sequence[tuple[str, Outgoing]],
        report: MemberReport | None = None,
    ) -> None:
        """Ack ``delivery`` and publish ``publish`` (queue, message) pairs: in one atomic step
        where ``capabilities.atomic_settle``, otherwise publish first, then ack (never lost,
        a duplicate possible if the connection drops in between). The ack applies first: a
        published message with ``delivery``'s unique key takes its hold over. ``report``
        counts a group member's outcome in the same step (``capabilities.groups``)."""

    async def send_group(
        self,
        group_id: str,
        members: Sequence[tuple[str, Outgoing]],
        callback_queue: str,
        callback: Outgoing,
    ) -> None:
        """Publish ``members`` (queue, message) pairs and hold ``callback`` until each member
        has reported its outcome (:class:`MemberReport`); then the broker publishes it to
        ``callback_queue``, delivered with :attr:`Delivery.group`. All in one atomic step.

        Raises:
            Unsupported: the transport has no groups (``capabilities.groups``).
            ValueError: no members, more than :data:`MAX_GROUP_SIZE`, or a callback body
                that is not UTF-8.
        """

    async def release(self, delivery: Delivery, *, delay: float = 0.0, started: bool = True) -> None:
        """Give ``delivery`` back to its queue, redelivered after ``delay`` seconds.

        ``started=False``: the consumer never began on it (it was prefetched). Where
        ``capabilities.uncounted_release``, this delivery then does not count toward the
        delivery limit; elsewhere it counts as any."""

    async def reject(
        self, delivery: Delivery, reason: Literal["invalid", "rejected"], error: str = ""
    ) -> None:
        """Move ``delivery`` unchanged to its queue's dead-letter queue, with ``reason`` and
        ``error`` (what was wrong, at most 1,000 characters kept) in ``x-dead-letter-error``."""

    async def extend(self, delivery: Delivery, lease: float) -> None:
        """Keep ``delivery`` leased for ``lease`` more seconds (a no-op for connection leases)."""

    # -- dead letters ------------------------------------------------------------------------

    def dead_letter_queue(self, queue: str) -> str:
        """The name of ``queue``'s dead-letter queue."""

    async def dead_letters(self, queue: str, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` of ``queue``'s dead letters, oldest first, without taking them."""

    async def redrive(self, queue: str, message_id: str | None) -> int:
        """Move dead letters of ``queue`` (all, or the one with ``message_id``) back to it;
        returns how many moved. Never lost; each move is atomic where ``atomic_settle``
        (otherwise a move cut short leaves a copy in both queues)."""

    async def delete_dead_letters(self, queue: str, message_id: str | None) -> int:
        """Delete dead letters of ``queue`` (all, or one); returns how many went."""

    # -- leadership --------------------------------------------------------------------------

    async def lead(self, name: str) -> Leadership | None:
        """Take the leadership ``name`` (a valid queue name), or None while another connection
        holds it. It is held until this connection closes or is lost; the broker then frees it
        at once, for the next connection that asks.

        Raises:
            Unsupported: the transport has no leaderships (``capabilities.leadership``).
        """

    # -- progress ----------------------------------------------------------------------------

    async def report_progress(self, job_id: str, body: bytes) -> None:
        """Keep ``body`` (UTF-8, at most :data:`MAX_PROGRESS_BYTES`) as the job's latest progress
        and publish it to the job's progress topic (``queueit.progress.<job_id>``).

        Raises:
            Unsupported: the transport keeps no progress (``capabilities.progress``).
        """

    async def read_progress(self, job_id: str) -> tuple[bytes, int] | None:
        """The job's latest progress report and when it came (epoch ms), or None.

        Raises:
            Unsupported: the transport keeps no progress (``capabilities.progress``).
        """


__all__ = [
    "BlockingPublisher",
    "Capabilities",
    "Delivery",
    "GroupOutcome",
    "Leadership",
    "MemberReport",
    "Outgoing",
    "StoredMessage",
    "Transport",
    "TransportClosed",
    "TransportError",
    "TransportRefused",
    "Unique",
    "Unsupported",
    "check_group",
    "check_leadership",
    "check_led_publish",
    "check_outgoing",
    "check_progress",
    "check_publish",
    "check_publish_many",
    "check_queue_name",
    "listener_queue",
]
