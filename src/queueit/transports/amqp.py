"""``amqp://user:password@host:port/vhost[?queue_type=quorum|classic]``: RabbitMQ, through aio-pika.

``docs/transports.md`` says how each promise maps to RabbitMQ, and why. In short: durable
quorum queues by default (``queue_type=classic`` for priorities), each dead-lettering to
``DLQ.<queue>``; persistent messages published ``mandatory`` with publisher confirms;
connection leases (an unacked delivery is held while its channel lives); ``pause`` is
``basic.cancel``; delays are TTL queues that dead-letter into their target
(:func:`delay_bucket`); ``settle``, delayed ``release`` and ``reject`` publish (confirmed),
then ack, since RabbitMQ has no atomic step; topics are the exchange ``queueit.events`` with
one durable queue ``events.<group>.<topic>`` per listener group.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    FieldValue,
    HeadersType,
)
from aio_pika.exceptions import MessageProcessError
from aiormq import exceptions as err

from .base import (
    MAX_MARK,
    BlockingPublisher,
    Capabilities,
    Delivery,
    Leadership,
    MemberReport,
    Outgoing,
    StoredMessage,
    TransportClosed,
    TransportError,
    TransportRefused,
    Unsupported,
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

QueueType = Literal["quorum", "classic"]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
#: Deliveries after which a message goes to its dead-letter queue (as on queueit's broker).
MAX_DELIVERIES = 10
#: Dead-letter queues are named DLQ.<queue> on every transport.
DLQ_PREFIX = "DLQ."
EVENTS_EXCHANGE = "queueit.events"
#: A headers exchange that routes a delayed message to the TTL queue of its delay.
DELAY_EXCHANGE = "queueit.delays"
#: The longest delay. x-message-ttl and x-expires are 32-bit milliseconds (49.7 days);
#: 30 days leaves room for the idle time a delay queue lives on after its last message.
MAX_DELAY = 30 * 86_400.0
#: A delay queue is deleted by RabbitMQ (x-expires) after its TTL plus this long unused...
DELAY_QUEUE_IDLE_MS = 3_600_000
#: ...and every publisher to it declares it again at least this often (seconds), which
#: counts as use: a queue holding messages is never deleted under them.
REDECLARE_AFTER = 600.0
#: Dead letters one redrive or delete looks at (held in memory meanwhile); call again for more.
MAX_SCAN = 100_000
#: A leadership is an exclusive queue: RabbitMQ lets one connection declare it and deletes it
#: when that connection goes. Its holders' mark is the one message of a durable queue.
LOCK_PREFIX = "queueit.lead."
MARK_PREFIX = "queueit.mark."
CLASSIC: dict[str, FieldValue] = {"x-queue-type": "classic"}  # exclusive queues are classic ones
#: RabbitMQ's default max_message_size (3.8+); a broker configured lower refuses more.
MAX_MESSAGE_BYTES = 128 * 1024 * 1024
DEFAULT_PRIORITY = 4

# Headers the transport keeps for itself; callers never see them.
#: Deliveries counted before this copy of the message was published (release with a delay).
DELIVERIES_HEADER = "x-queueit-deliveries"
#: The delay queue a message is headed for. Not "x-": headers exchanges ignore x- headers.
DELAY_HEADER = "queueit-delay"
#: Headers RabbitMQ sets (delivery counting, native dead-lettering).
BROKER_HEADERS = frozenset({"x-delivery-count", "x-death"})
BROKER_PREFIXES = ("x-first-death-", "x-last-death-")
DEAD_LETTER_PREFIX = "x-dead-letter-"
#: RabbitMQ's dead-letter reasons (x-death) in our words.
REASONS = {
    "delivery_limit": "max-deliveries",
    "rejected": "rejected",
    "expired": "expired",
    "maxlen": "max-length",
}

#: Quorum queues dead-letter "at most once" unless told otherwise: a message could be lost
#: between the queue and its dead-letter queue. At-least-once needs reject-publish overflow
#: (it only matters when a length limit is set by policy: publishes are then refused).
AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def capabilities_for(queue_type: QueueType) -> Capabilities:
    """What the transport can do on queues of ``queue_type``.

    atomic_settle is False on both: RabbitMQ's transactions (tx.select) work on quorum
    queues too, but RabbitMQ documents them as batching without atomicity, not even within
    one queue (https://www.rabbitmq.com/semantics.html), and a settle touches several.
    Quorum queues on 3.10 have no priorities, so only classic queues (x-max-priority) do.
    """
    return Capabilities(
        delay=True,
        max_delay=MAX_DELAY,
        priority=queue_type == "classic",
        lease="connection",
        atomic_settle=False,
        dead_letter=True,
        topics=True,
        durable=True,
        max_message_bytes=MAX_MESSAGE_BYTES,
        leadership=True,
    )


@contextmanager
def _mapped() -> Iterator[None]:
    """aio-pika's and aiormq's exceptions, as the transport error tree (the one place they are mapped)."""
    try:
        yield
    except (err.AuthenticationError, err.ProbableAuthenticationError, err.ConnectionNotAllowed) as exc:
        raise TransportRefused(f"RabbitMQ refused the login or virtual host: {exc}") from exc
    except err.PublishError as exc:
        raise TransportRefused(f"RabbitMQ could not route the message (queue deleted?): {exc}") from exc
    except err.DeliveryError as exc:
        raise TransportRefused(f"RabbitMQ did not take the message (a length limit?): {exc}") from exc
    except (err.ChannelAccessRefused, err.ChannelNotFoundEntity, err.ChannelPreconditionFailed) as exc:
        raise TransportRefused(f"RabbitMQ refused: {exc}") from exc
    except err.ChannelLockedResource as exc:
        raise TransportRefused(f"RabbitMQ refused, another connection owns the queue: {exc}") from exc
    except MessageProcessError as exc:
        raise TransportError(f"this delivery was already settled: {exc}") from exc
    except TimeoutError as exc:
        raise TransportClosed("RabbitMQ did not answer in time (unreachable, or a resource alarm?)") from exc
    except (err.AMQPConnectionError, err.ChannelClosed, err.ChannelInvalidStateError, OSError) as exc:
        raise TransportClosed(f"connection to RabbitMQ lost: {exc or type(exc).__name__}") from exc
    except err.AMQPError as exc:
        raise TransportError(f"RabbitMQ: {exc}") from exc


def delay_bucket(delay: float) -> int:
    """The TTL in ms of the delay queue that holds a message delayed by ``delay`` seconds.

    A queue-level TTL expires messages in order (a per-message TTL only expires a message
    at the head of its queue, so a long delay would hold up a short one), hence one queue
    per delay. To keep their number small, delays are rounded up to two significant digits
    of milliseconds: never early, at most 10% late; 0.6 s, 5 s or 30 s are exact.
    """
    ms = max(1, math.ceil(round(delay * 1000, 6)))
    step = int(10 ** max(0, len(str(ms)) - 2))
    return -(-ms // step) * step


@dataclass(frozen=True, slots=True)
class _Token:
    message: AbstractIncomingMessage
    base: int  # deliveries counted before this copy was published (DELIVERIES_HEADER)


class AmqpTransport:
    """A connection to RabbitMQ (3.10 or later for quorum queues' TTLs and delivery counts)."""

    def __init__(
        self, url: str = DEFAULT_URL, *, queue_type: QueueType = "quorum", timeout: float = 10.0
    ) -> None:
        if queue_type not in ("quorum", "classic"):
            raise ValueError(f"queue_type must be quorum or classic, got {queue_type!r}")
        self.url, self.queue_type, self.timeout = url, queue_type, timeout
        self._capabilities = capabilities_for(queue_type)
        self._connection: AbstractConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._transactional: AbstractChannel | None = None  # tx.select'ed, for leaders' publishes
        self._committing = asyncio.Lock()  # one transaction at a time on that channel
        self._consumer: AbstractChannel | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._queue_names: dict[str, str] = {}  # consumer tag -> queue
        self._subscribing = asyncio.Lock()  # basic.qos applies to the channel's next basic.consume
        self._buffer: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._declared: set[str] = set()
        self._delay_declared: dict[str, float] = {}  # delay queue -> when we last declared it
        self._paused = False
        self._closing = False
        self._lost: str | None = None
        self._heartbeat: int | None = None  # seconds; None: what RabbitMQ offers
        self._closing_lost: asyncio.Future[None] | None = None  # a dropped connection's close

    @classmethod
    def from_url(cls, url: str) -> AmqpTransport:
        """``amqp[s]://user:password@host:port/vhost[?queue_type=quorum|classic]``.

        Other query parameters (``heartbeat``, ...) go to aio-pika.

        Raises:
            ValueError: the URL is not of that form.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError(f"not an amqp:// URL: {url[:80]!r}; use amqp://user:password@host:port/vhost")
        try:
            parts.port  # noqa: B018 (it validates)
        except ValueError as exc:
            raise ValueError(f"bad port in {url[:80]!r}: {exc}") from None
        queue_type: QueueType = "quorum"
        rest = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name != "queue_type":
                rest.append((name, value))
            elif value in ("quorum", "classic"):
                queue_type = "classic" if value == "classic" else "quorum"
            else:
                raise ValueError(f"queue_type must be quorum or classic, got {value!r}")
        return cls(urlunsplit(parts._replace(query=urlencode(rest))), queue_type=queue_type)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def tolerate_blocking(self, seconds: float) -> None:
        # RabbitMQ closes a connection after two missed heart-beats; it offers 60 s.
        self._heartbeat = max(60, math.ceil(seconds))

    def coalesce(self, on: bool) -> None:
        pass  # aiormq owns the socket and writes each frame as it comes

    async def connect(self) -> None:
        with _mapped():
            if self._heartbeat is None:
                connection = await aio_pika.connect(self.url, timeout=self.timeout)
            else:
                connection = await aio_pika.connect(self.url, timeout=self.timeout, heartbeat=self._heartbeat)
        self._connection, self._publisher, self._consumer = connection, None, None
        self._transactional = None
        self._consumers, self._queue_names, self._buffer = [], {}, asyncio.Queue()
        self._paused, self._closing, self._lost = False, False, None
        connection.close_callbacks.add(self._on_connection_closed)
        await self._channel()

    async def close(self) -> None:
        self._closing = True
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            await _close_within(connection, self.timeout)  # unsettled deliveries go back

    def _on_connection_closed(self, _: object, exc: BaseException | None) -> None:
        self._lost_with(f"connection to RabbitMQ lost: {exc or 'closed'}")

    def _on_consumer_closed(self, _: object, exc: BaseException | None) -> None:
        # RabbitMQ closes a channel for an unknown delivery tag or after consumer_timeout;
        # the deliveries it held go back to their queues, as with a lost connection.
        self._lost_with(f"RabbitMQ closed the consuming channel: {exc or 'closed'}")

    def _on_consumer_cancelled(self, frame: aiormq.spec.Basic.Cancel) -> None:
        # A queue deleted under its consumers: nothing would arrive from it again, while a
        # new connection declares it again and consumes.
        queue = self._queue_names.get(frame.consumer_tag or "", "?")
        self._lost_with(f"RabbitMQ cancelled the consumer of {queue!r} (the queue was deleted?)")

    def _lost_with(self, reason: str) -> None:
        if not self._closing and self._lost is None:
            self._lost = reason
            self._buffer.put_nowait(None)  # wakes next_delivery

    def _live(self) -> AbstractConnection:
        if self._lost is not None:
            raise TransportClosed(self._lost)
        if self._connection is None or self._connection.is_closed:
            raise TransportClosed("the amqp transport is not connected; call connect() first")
        return self._connection

    @contextlib.asynccontextmanager
    async def _answered(self) -> AsyncIterator[None]:
        """Calls to RabbitMQ inside, mapped to the transport's errors (``_mapped``) and each
        bounded by ``timeout``. RabbitMQ stops reading from a connection that publishes while
        a memory or disk alarm lasts: a call it has not answered by then may still take
        effect later (a publish, a commit), so its outcome is unknown. The connection is then
        dropped rather than the call repeated on it: its deliveries go back to their queues,
        nothing waits on it for ever (a stopping worker included), and whoever goes on does
        so on a new connection, as after any lost connection (a duplicate possible, never a
        loss)."""
        try:
            async with asyncio.timeout(self.timeout):
                with _mapped():
                    yield
        except TimeoutError:
            reason = f"RabbitMQ did not answer within {self.timeout:g} s (a memory or disk alarm?)"
            self._drop(reason)
            raise TransportClosed(f"{reason}; the connection was dropped") from None

    def _drop(self, reason: str) -> None:
        """Give the connection up: lost for every caller, closed in the background."""
        self._lost_with(reason)
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            self._closing_lost = asyncio.ensure_future(_close_within(connection, self.timeout))

    async def _channel(self) -> AbstractChannel:
        """The publishing channel, opened again if RabbitMQ closed it (a refused declare does)."""
        connection = self._live()
        if self._publisher is None or self._publisher.is_closed:
            async with self._answered():
                self._publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return self._publisher

    # -- declarations ------------------------------------------------------------------------

    def _queue_arguments(self, queue: str) -> dict[str, FieldValue]:
        arguments: dict[str, FieldValue] = {
            "x-queue-type": self.queue_type,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_letter_queue(queue),
        }
        if self.queue_type == "quorum":
            # The limit counts returns, not deliveries: with 9, the 10th return (after the
            # 10th delivery) dead-letters the message, reason delivery_limit (checked on 3.10).
            arguments["x-delivery-limit"] = MAX_DELIVERIES - 1
            arguments.update(AT_LEAST_ONCE)
        else:
            arguments["x-max-priority"] = 9
        return arguments

    async def _declare(self, queue: str) -> None:
        """Declare ``queue`` and its dead-letter queue (once; again after a refused publish).

        A dead-letter queue itself (``DLQ.<q>``: a failed job is published straight to it) is
        declared as one: no dead-letter queue of its own.
        """
        if queue in self._declared:
            return
        channel = await self._channel()
        async with self._answered():
            if not queue.startswith(DLQ_PREFIX):
                await channel.declare_queue(
                    self.dead_letter_queue(queue), durable=True, arguments={"x-queue-type": self.queue_type}
                )
                await channel.declare_queue(queue, durable=True, arguments=self._queue_arguments(queue))
            else:
                await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": self.queue_type})
        self._declared.add(queue)

    async def _declare_exchange(self, name: str, kind: aio_pika.ExchangeType) -> None:
        if name not in self._declared:
            channel = await self._channel()
            async with self._answered():
                await channel.declare_exchange(name, kind, durable=True)
            self._declared.add(name)

    async def _declare_delay(self, exchange: str, ms: int) -> str:
        """The delay queue for ``ms`` that dead-letters into ``exchange``, declared if due."""
        # Work queues are reached through the default exchange (""), broadcasts through the
        # events exchange: one family of delay queues for each, since a queue has one DLX.
        family = "delay" if exchange == "" else "delay-events"
        name = f"queueit.{family}.{self.queue_type}.{ms}"
        now = time.monotonic()
        if now - self._delay_declared.get(name, -math.inf) < REDECLARE_AFTER:
            return name
        arguments: dict[str, FieldValue] = {
            "x-queue-type": self.queue_type,
            "x-message-ttl": ms,
            "x-expires": ms + DELAY_QUEUE_IDLE_MS,
            # No x-dead-letter-routing-key: an expired message keeps its own routing key,
            # the target queue (or topic) it was published with.
            "x-dead-letter-exchange": exchange,
        }
        if self.queue_type == "quorum" and exchange == "":
            # Not for broadcasts: at-least-once keeps retrying a message no group is bound for.
            arguments.update(AT_LEAST_ONCE)
        await self._declare_exchange(DELAY_EXCHANGE, aio_pika.ExchangeType.HEADERS)
        channel = await self._channel()
        async with self._answered():
            queue = await channel.declare_queue(name, durable=True, arguments=arguments)
            await queue.bind(DELAY_EXCHANGE, routing_key="", arguments={"x-match": "all", DELAY_HEADER: name})
        self._delay_declared[name] = now
        return name

    # -- producing ---------------------------------------------------------------------------

    async def publish(self, queue: str, message: Outgoing) -> str | None:
        check_outgoing(self._capabilities, message)  # refuses a unique key: RabbitMQ has no such hold
        check_queue_name(queue)
        await self._put(queue, self._new(message), message.delay)
        return None

    async def publish_many(self, publish: Sequence[tuple[str, Outgoing]]) -> None:
        # Not atomic (RabbitMQ's transactions are not: capabilities_for): each message is
        # confirmed on its own, all of them in flight at once. The queues and delay queues
        # are declared first, one at a time, so that the publishes find them declared.
        check_publish_many(self._capabilities, publish)
        for queue in dict.fromkeys(queue for queue, _ in publish):
            await self._declare(queue)
        for bucket in dict.fromkeys(delay_bucket(m.delay) for _, m in publish if m.delay > 0):
            await self._declare_delay("", bucket)
        puts = [asyncio.ensure_future(self._put(q, self._new(m), m.delay)) for q, m in publish]
        try:
            await asyncio.gather(*puts)
        finally:
            for put in puts:  # after the first error, the rest are not waited for
                put.cancel()

    async def broadcast(self, topic: str, message: Outgoing) -> None:
        check_outgoing(self._capabilities, message)
        check_queue_name(topic)
        await self._declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC)
        amqp_message = self._new(message)
        if message.delay:
            await self._delayed(EVENTS_EXCHANGE, topic, amqp_message, message.delay)
        else:
            # Not mandatory: a topic no group listens to takes the message and drops it.
            await self._send(EVENTS_EXCHANGE, topic, amqp_message, mandatory=False)

    def blocking_publisher(self) -> BlockingPublisher:
        raise Unsupported("the amqp:// transport has no blocking publisher; sync code sends through a loop")

    def _new(self, message: Outgoing) -> aio_pika.Message:
        return aio_pika.Message(
            message.body,
            headers=dict(message.headers),
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex,
            priority=self._priority(message.priority),
        )

    def _priority(self, priority: int | None) -> int | None:
        if self.queue_type == "quorum":
            return None
        return DEFAULT_PRIORITY if priority is None else priority

    async def _put(self, queue: str, message: aio_pika.Message, delay: float) -> None:
        await self._declare(queue)
        try:
            if delay > 0:
                await self._delayed("", queue, message, delay)
            else:
                await self._send("", queue, message)
        except TransportRefused:
            self._declared.discard(queue)  # deleted behind our back? declared again next time
            raise

    async def _delayed(self, exchange: str, key: str, message: aio_pika.Message, delay: float) -> None:
        name = await self._declare_delay(exchange, delay_bucket(delay))
        message.headers[DELAY_HEADER] = name
        try:
            await self._send(DELAY_EXCHANGE, key, message)
        except TransportRefused:
            self._delay_declared.pop(name, None)
            raise

    async def _send(
        self, exchange: str, key: str, message: aio_pika.Message, *, mandatory: bool = True
    ) -> None:
        """Publish and wait for RabbitMQ's confirm (mandatory: an unroutable message raises)."""
        channel = await self._channel()
        async with self._answered():
            target = (
                channel.default_exchange
                if exchange == ""
                else await channel.get_exchange(exchange, ensure=False)
            )
            await target.publish(message, key, mandatory=mandatory)

    # -- consuming ---------------------------------------------------------------------------

    async def consume(self, queue: str, *, prefetch: int, lease: float) -> None:
        check_queue_name(queue)
        if prefetch < 1 or lease <= 0:
            raise ValueError("prefetch must be at least 1 and lease positive")
        await self._consume(queue, prefetch)

    async def listen(self, topic: str, *, group: str, prefetch: int, lease: float = 60.0) -> str:
        # ``lease`` has no use here: a delivery is held while the connection lives.
        queue = listener_queue(group, topic)
        if len(queue) > 200:  # DLQ.<queue> must stay within AMQP's 255 bytes
            raise ValueError(f"group and topic are too long together ({len(queue)} > 200 characters)")
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        await self._declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC)
        await self._declare(queue)
        channel = await self._channel()
        async with self._answered():
            bound = await channel.get_queue(queue, ensure=False)
            await bound.bind(EVENTS_EXCHANGE, routing_key=topic)
        await self._consume(queue, prefetch)
        return queue

    async def _consume(self, queue: str, prefetch: int) -> None:
        await self._declare(queue)
        connection = self._live()
        tag = f"queueit-{uuid.uuid4().hex}"
        self._queue_names[tag] = queue  # before basic.consume: its first delivery may come at once
        async with self._subscribing:
            await self._subscribe(connection, queue, prefetch, tag)

    async def _subscribe(self, connection: AbstractConnection, queue: str, prefetch: int, tag: str) -> None:
        async with self._answered():
            if self._consumer is None:
                # One channel for every consumer: deliveries are acked on the channel that got them.
                self._consumer = await connection.channel(publisher_confirms=False)
                self._consumer.close_callbacks.add(self._on_consumer_closed)
                underlay = await self._consumer.get_underlay_channel()
                underlay.on_consumer_cancel_callbacks.add(self._on_consumer_cancelled)
            await self._consumer.set_qos(prefetch_count=prefetch)
            source = await self._consumer.get_queue(queue, ensure=False)
            await source.consume(self._on_message, consumer_tag=tag)
        self._consumers.append((source, tag))

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._paused:  # sent before RabbitMQ saw our basic.cancel: hand it straight back
            with contextlib.suppress(err.AMQPError, err.ChannelInvalidStateError):
                await message.nack(requeue=True)
            return
        self._buffer.put_nowait(message)

    async def resume(self) -> None:
        raise Unsupported("this transport does not resume a paused worker (uncounted_release is False)")

    async def pause(self) -> None:
        self._paused = True
        consumers, self._consumers = self._consumers, []
        async with self._answered():
            for source, tag in consumers:
                await source.cancel(tag)  # AMQP keeps the unacked deliveries of a cancelled consumer
            waiting = []
            while not self._buffer.empty():
                waiting.append(self._buffer.get_nowait())
            for message in waiting:
                if message is None:
                    self._buffer.put_nowait(None)
                else:
                    await message.nack(requeue=True)  # prefetched, never handed out

    async def next_delivery(self, timeout: float | None = None) -> Delivery | None:
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            self._live()
            try:
                # asyncio.timeout, not wait_for: a timeout never costs a message taken off the buffer.
                async with asyncio.timeout_at(deadline):
                    message = await self._buffer.get()
            except TimeoutError:
                return None
            if message is None:
                self._buffer.put_nowait(None)  # and for every later call
                raise TransportClosed(self._lost or "connection to RabbitMQ lost")
            delivery = self._delivery(message)
            if delivery.delivery_count > MAX_DELIVERIES:
                # Only copies from delayed releases (whose earlier deliveries RabbitMQ did not
                # count) and classic queues get here: dead-letter as the broker would have.
                await self._dead_letter(delivery, "max-deliveries")
                continue
            return delivery

    def _delivery(self, message: AbstractIncomingMessage) -> Delivery:
        raw = message.headers or {}
        base = _int(raw.get(DELIVERIES_HEADER))
        returned = 1 if message.redelivered else 0
        if self.queue_type == "quorum":
            # Absent on a first delivery, then 1, 2, ...: RabbitMQ counts every return.
            returned = max(returned, _int(raw.get("x-delivery-count")))
        headers = _visible(raw)
        headers["content-type"] = message.content_type or "application/octet-stream"
        return Delivery(
            self._queue_names[message.consumer_tag or ""],
            message.body,
            headers,
            message.message_id or f"amqp-{uuid.uuid4().hex}",
            returned > 0 or base > 0,
            base + returned + 1,
            _Token(message, base),
        )

    async def ack(self, delivery: Delivery) -> None:
        async with self._answered():
            await _token(delivery).message.ack()

    async def settle(
        self,
        delivery: Delivery,
        publish: Sequence[tuple[str, Outgoing]],
        report: MemberReport | None = None,
    ) -> None:
        if report is not None:  # no group can be open here (send_group refuses), but say so
            raise Unsupported("this transport has no groups; a member report cannot be counted")
        # Publish (each confirmed), then ack: never lost, a duplicate if the connection drops
        # in between. Not tx.select: RabbitMQ's transactions are not atomic (capabilities_for).
        check_publish(self._capabilities, publish)
        _token(delivery)
        for queue, message in publish:
            await self._put(queue, self._new(message), message.delay)
        await self.ack(delivery)

    async def release(self, delivery: Delivery, *, delay: float = 0.0, started: bool = True) -> None:
        # ``started`` changes nothing: RabbitMQ counts every return (uncounted_release is False).
        token = _token(delivery)
        if not 0 <= delay <= MAX_DELAY:
            raise Unsupported(f"this transport delays messages by 0 to {MAX_DELAY:g} s, not {delay:g}")
        native = self.queue_type == "quorum" and delay == 0
        if delivery.delivery_count >= MAX_DELIVERIES and not (native and token.base == 0):
            await self._dead_letter(delivery, "max-deliveries")
            return
        if native:
            # RabbitMQ counts the return (x-delivery-count, added to base) and dead-letters
            # a message it counted from 1 at the delivery limit itself.
            async with self._answered():
                await token.message.nack(requeue=True)
            return
        # A copy that carries the deliveries so far (RabbitMQ would start it at 1), published
        # to its delay queue (or, on classic queues, back to the queue), then the ack.
        copy = _copy(token.message, {DELIVERIES_HEADER: str(delivery.delivery_count)})
        await self._put(delivery.queue, copy, delay)
        await self.ack(delivery)

    async def reject(
        self, delivery: Delivery, reason: Literal["invalid", "rejected"], error: str = ""
    ) -> None:
        await self._dead_letter(delivery, reason, error)

    async def _dead_letter(self, delivery: Delivery, reason: str, error: str = "") -> None:
        """Copy ``delivery`` to its dead-letter queue with our headers, then ack it.

        Not basic.reject: RabbitMQ would record every reason as "rejected", and ours
        ("invalid", a limit reached on a delayed copy) and the error would be lost.
        """
        dead = {
            "x-dead-letter-reason": reason,
            "x-dead-letter-queue": delivery.queue,
            "x-dead-letter-deliveries": str(delivery.delivery_count),
            "x-dead-letter-time": str(int(time.time() * 1000)),
        }
        if error:
            dead["x-dead-letter-error"] = error[:1000]
        copy = _copy(_token(delivery).message, dead, fresh=True)
        dlq = self.dead_letter_queue(delivery.queue)
        try:
            await self._put(dlq, copy, 0.0)
        except TransportRefused:  # deleted behind our back? _put declares it again this time
            await self._put(dlq, copy, 0.0)
        await self.ack(delivery)

    async def extend(self, delivery: Delivery, lease: float) -> None:
        _token(delivery)  # connection leases: held while the channel lives, nothing to extend

    # -- dead letters ------------------------------------------------------------------------

    def dead_letter_queue(self, queue: str) -> str:
        return DLQ_PREFIX + queue

    async def dead_letters(self, queue: str, limit: int) -> list[StoredMessage]:
        check_queue_name(queue)
        await self._declare(queue)  # a queue never used has no dead letters (not a 404)
        found: list[StoredMessage] = []
        async with self._reader(queue) as dlq:
            while len(found) < limit and (message := await self._get(dlq)) is not None:
                found.append(_stored(message, queue))
        return found

    async def redrive(self, queue: str, message_id: str | None) -> int:
        return await self._take_dead(queue, message_id, back=True)

    async def delete_dead_letters(self, queue: str, message_id: str | None) -> int:
        return await self._take_dead(queue, message_id, back=False)

    async def send_group(
        self,
        group_id: str,
        members: Sequence[tuple[str, Outgoing]],
        callback_queue: str,
        callback: Outgoing,
    ) -> None:
        check_group(self._capabilities, group_id, len(members), callback)  # RabbitMQ: Unsupported

    # -- leadership ----------------------------------------------------------------------------

    async def lead(self, name: str) -> Leadership | None:
        check_leadership(self._capabilities, name)
        connection = self._live()
        async with self._answered():
            channel = await connection.channel(publisher_confirms=False)
            try:
                # Exclusive: RabbitMQ refuses it to every other connection (405) and deletes
                # it when ours closes or is lost, however that happens (a kill -9 included).
                lock = LOCK_PREFIX + name
                await channel.declare_queue(lock, exclusive=True, auto_delete=True, arguments=dict(CLASSIC))
            except err.ChannelLockedResource:
                return None  # RabbitMQ closed that channel
            try:
                marks = await channel.declare_queue(
                    MARK_PREFIX + name,
                    durable=True,
                    arguments={"x-queue-type": self.queue_type, "x-max-length": 1},  # drop-head
                )
                found = await marks.get(no_ack=False, fail=False)
                if found is not None:
                    # Put a fresh copy in its place: a quorum queue counts each return of a
                    # message read and handed back, and drops it at the delivery limit.
                    await channel.transaction().select()
                    await channel.default_exchange.publish(_mark_message(found.body), MARK_PREFIX + name)
                    await found.ack()
                    await channel.transaction().commit()
            finally:
                await channel.close()
        mark = None if found is None else found.body.decode("utf-8", "replace")[:MAX_MARK]
        return _AmqpLeadership(self, connection, name, mark)

    async def _publish_marked(
        self, held_by: AbstractConnection, name: str, queue: str, message: Outgoing, mark: str
    ) -> None:
        """A leader's publish and its mark in one transaction (see :class:`_AmqpLeadership`)."""
        check_led_publish(self._capabilities, message, mark)
        check_queue_name(queue)
        if self._live() is not held_by:  # connected again since: another may lead now
            raise TransportClosed(f"the leadership {name!r} went with the connection that held it")
        # Declared every time: an unroutable publish in a transaction is dropped unseen (no
        # confirms), and the mark would move on without its message. Leaders publish rarely.
        self._declared.discard(queue)
        await self._declare(queue)
        async with self._committing:
            connection = self._live()
            async with self._answered():
                channel = self._transactional
                if channel is None or channel.is_closed:
                    channel = await connection.channel(publisher_confirms=False)
                    await channel.transaction().select()
                    self._transactional = channel
                exchange = channel.default_exchange
                await exchange.publish(self._new(message), queue)
                # x-max-length 1, overflow drop-head: the new mark pushes the old one out.
                await exchange.publish(_mark_message(mark.encode()), MARK_PREFIX + name)
                await channel.transaction().commit()

    # -- progress: RabbitMQ keeps no last value per job (capabilities.progress is False) --------

    async def report_progress(self, job_id: str, body: bytes) -> None:
        check_progress(self._capabilities, job_id, body)

    async def read_progress(self, job_id: str) -> tuple[bytes, int] | None:
        check_progress(self._capabilities, job_id)
        return None

    async def _take_dead(self, queue: str, message_id: str | None, *, back: bool) -> int:
        check_queue_name(queue)
        await self._declare(queue)
        taken = 0
        async with self._reader(queue) as dlq:
            # Get every dead letter there is first, then move them: one redriven and dead-lettered
            # again meanwhile is not in the batch, so it is not moved twice. (Not bounded by the
            # queue's message count: RabbitMQ updates it after the messages a reader gave back.)
            batch: list[AbstractIncomingMessage] = []
            while len(batch) < MAX_SCAN and (message := await self._get(dlq)) is not None:
                batch.append(message)
            for message in batch:
                if message_id is not None and message.message_id != message_id:
                    continue  # left unacked: back in its place when the channel closes
                if back:  # publish (confirmed), then ack: never lost, a duplicate at worst
                    await self._send("", queue, _copy(message, {}, fresh=True))
                await message.ack()
                taken += 1
        return taken

    @contextlib.asynccontextmanager
    async def _reader(self, queue: str) -> AsyncIterator[AbstractQueue]:
        """``DLQ.<queue>`` on a channel of its own: what is got on it and not acked goes back,
        in its order, when the channel closes. That is how dead letters are read, not taken."""
        connection = self._live()
        async with self._answered():
            channel = await connection.channel(publisher_confirms=False)
            dlq = await channel.get_queue(self.dead_letter_queue(queue), ensure=False)
        try:
            with _mapped():  # not bounded as a whole: a reader may look at 100,000 messages
                yield dlq
        finally:
            if not channel.is_closed:
                with contextlib.suppress(TransportError):  # unacked ones go back with it anyway
                    async with self._answered():
                        await channel.close()

    async def _get(self, dlq: AbstractQueue) -> AbstractIncomingMessage | None:
        """The next message of ``dlq`` (a reader's), left unacked; None when there is none."""
        async with self._answered():
            return await dlq.get(no_ack=False, fail=False)


class _AmqpLeadership:
    """A leadership held by an :class:`AmqpTransport`'s connection.

    The mark is read (not taken) when the leadership is taken; each publish sends the message
    and the new mark in one transaction. RabbitMQ's transactions are batches, not ACID
    (``capabilities_for``), but what they do promise is what a leader needs: nothing of a
    transaction takes effect before its commit, so a leader that dies before it left both or
    neither. A RabbitMQ node failing in the middle of a commit could still part them.
    """

    def __init__(
        self, transport: AmqpTransport, connection: AbstractConnection, name: str, mark: str | None
    ) -> None:
        self._transport, self._connection, self._name, self._mark = transport, connection, name, mark

    @property
    def mark(self) -> str | None:
        return self._mark

    async def publish(self, queue: str, message: Outgoing, mark: str) -> None:
        await self._transport._publish_marked(self._connection, self._name, queue, message, mark)


async def _close_within(connection: AbstractConnection, timeout: float) -> None:
    """Close ``connection``, waiting at most ``timeout``: a blocked connection (a resource
    alarm) never answers the close. Its failures are of no use to anyone closing it."""
    with contextlib.suppress(err.AMQPError, err.ChannelInvalidStateError, OSError, TimeoutError):
        async with asyncio.timeout(timeout):
            await connection.close()


def _mark_message(body: bytes) -> aio_pika.Message:
    return aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


def _token(delivery: Delivery) -> _Token:
    if not isinstance(delivery.token, _Token):
        raise TypeError("not a delivery of the amqp transport")
    return delivery.token


def _int(value: object) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str | bytes) and value.strip().isdigit():
        return int(value)
    return 0


def _internal(name: str) -> bool:
    return (
        name in BROKER_HEADERS
        or name.startswith(BROKER_PREFIXES)
        or name in (DELIVERIES_HEADER, DELAY_HEADER)
    )


def _visible(raw: HeadersType) -> dict[str, str]:
    """The headers a caller sees: the published ones, as strings, without the broker's and ours."""
    headers = {}
    for name, value in raw.items():
        if _internal(name):
            continue
        if isinstance(value, str):
            headers[name] = value
        elif isinstance(value, bytes):
            headers[name] = value.decode("utf-8", "replace")
        elif isinstance(value, bool | int | float | Decimal):
            headers[name] = str(value)
        elif isinstance(value, datetime):
            headers[name] = value.isoformat()
    return headers


def _copy(
    message: AbstractIncomingMessage, extra: dict[str, str], *, fresh: bool = False
) -> aio_pika.Message:
    """A new message with ``message``'s body, id and properties and its published headers
    (without ours and the broker's; ``fresh``: without the dead-letter ones too) plus ``extra``."""
    headers: HeadersType = {
        name: value
        for name, value in (message.headers or {}).items()
        if not _internal(name) and not (fresh and name.startswith(DEAD_LETTER_PREFIX))
    }
    headers.update(extra)
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        priority=message.priority,
    )


def _stored(message: AbstractIncomingMessage, queue: str) -> StoredMessage:
    """A dead letter as listed: ours carry x-dead-letter-* headers; RabbitMQ's (delivery
    limit, TTL, a foreign basic.reject) have x-death, most recent death first."""
    raw = message.headers or {}
    headers = _visible(raw)
    deaths = raw.get("x-death")
    death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
    if "x-dead-letter-reason" not in headers:
        reason = str(death.get("reason", "rejected"))
        headers["x-dead-letter-reason"] = REASONS.get(reason, reason)
        headers["x-dead-letter-queue"] = str(death.get("queue", queue))
        if reason == "delivery_limit":  # only reached by messages RabbitMQ counted from 1
            headers["x-dead-letter-deliveries"] = str(MAX_DELIVERIES)
        when = death.get("time")
        if isinstance(when, datetime):
            headers["x-dead-letter-time"] = str(int(when.timestamp() * 1000))
    headers["content-type"] = message.content_type or "application/octet-stream"
    return StoredMessage(message.message_id or "", message.body, headers, headers["x-dead-letter-reason"])
