"""``queueit://[user:password@]host[:port]``: queueit's own broker, through :class:`AsyncClient`.

How each promise is kept (``docs/delivery.md``):

* publish: a persistent SEND with a receipt; the broker answers once the message is durable.
  publish_many: the SENDs in a transaction, its COMMIT with a receipt.
* consume: a ``client-individual`` subscription with ``prefetch-count`` and
  ``visibility-timeout`` (the lease); :meth:`QueueitTransport.extend` sends
  ``/queueit/lease``; :meth:`QueueitTransport.pause` sends ``/queueit/flow`` with prefetch 0,
  so a stopping worker keeps, and can still ack, what it runs.
* settle: BEGIN, the SENDs, the ACK, COMMIT with a receipt: the broker applies the
  transaction as one journal transaction.
* release / reject: NACK with ``delay``, or ``requeue:false`` and ``reason``.
* topics: a topic exchange ``queueit.events``; each listener group is a durable queue
  ``events.<group>.<topic>`` bound to it, shared by the group's listeners.
* dead letters: the broker's ``DLQ.<queue>`` and its admin requests.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from ..client import AsyncClient, Client, ClientError, ConnectionClosed, ReceiveTimeout, ServerRefused
from ..stomp import Message, StompError
from ..stomp.limits import KIB, MIB, Limits
from .base import (
    Capabilities,
    Delivery,
    GroupOutcome,
    Leadership,
    MemberReport,
    Outgoing,
    StoredMessage,
    TransportClosed,
    TransportError,
    TransportRefused,
    check_group,
    check_leadership,
    check_outgoing,
    check_progress,
    check_publish,
    check_publish_many,
    check_queue_name,
    listener_queue,
)

DEFAULT_PORT = 61613
DEFAULT_TLS_PORT = 61614  # the port docs/security.md gives the broker's TLS listener
#: The client's heart-beat interval (ms) unless the loop may block for longer (tolerate_blocking).
DEFAULT_HEARTBEAT_MS = 10_000
EVENTS_EXCHANGE = "queueit.events"
ADMIN = "/queueit/admin"
PROGRESS = "/queueit/progress"
GROUP = "/queueit/group"
#: The body of a released group callback (queueit.broker.groups documents it).
GROUP_CONTENT_TYPE = "application/vnd.queueit.group+json"
#: Dead letters one listing reads at most.
MAX_LIST = 10_000
#: An admin reply is JSON: one dead letter of 4 MiB (the broker's default largest body) can
#: take 6x that once escaped, and a page of them is cut at 8 MiB after its first.
ADMIN_LIMITS = Limits(max_frame_size=32 * MIB, max_body_size=32 * MIB - 64 * KIB)

CAPABILITIES = Capabilities(
    delay=True,
    max_delay=None,
    priority=True,
    lease="timed",
    atomic_settle=True,
    dead_letter=True,
    topics=True,
    durable=True,
    max_message_bytes=4 * 1024 * 1024,
    unique=True,
    progress=True,
    groups=True,
    blocking_publish=True,
    uncounted_release=True,
)


class _Mapped:
    """``with _mapped:`` turns the client's exceptions into the transport error tree (the
    one place they are mapped). A class, not a generator context manager: it wraps every
    frame a worker sends and receives, and costs a seventh as much this way."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> Literal[False]:
        if exc is None:
            return False
        if isinstance(exc, ServerRefused):
            raise TransportRefused(f"the broker refused: {exc}") from exc
        if isinstance(exc, ConnectionClosed):
            raise TransportClosed(f"connection to the queueit broker lost: {exc}") from exc
        if isinstance(exc, ClientError):
            raise TransportError(str(exc)) from exc
        if isinstance(exc, OSError):
            raise TransportClosed(f"connection to the queueit broker lost: {exc}") from exc
        if isinstance(exc, StompError):  # a frame on a connection an ERROR already closed
            raise TransportClosed(f"connection to the queueit broker is closed: {exc}") from exc
        return False


_mapped = _Mapped()


class QueueitTransport:
    """A connection to ``queueit serve``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        login: str | None = None,
        passcode: str | None = None,
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._login, self._passcode = login, passcode
        self._tls = tls
        self._heartbeat_ms = DEFAULT_HEARTBEAT_MS  # both ways
        self._client = self._new_client()
        self._queues: dict[str, str] = {}  # subscription id -> queue name
        self._prefetch: dict[str, int] = {}  # subscription id -> its prefetch
        self._declared: set[str] = set()

    @classmethod
    def from_url(cls, url: str) -> QueueitTransport:
        """``queueit://[user:password@]host[:port]``, or over TLS
        ``queueits://[user:password@]host[:port][?ca=/path/to/ca.pem]`` (the broker's TLS
        listener, port 61614 by default; the certificate is checked against ``ca``, or the
        system's trusted authorities, and must name ``host``).

        Raises:
            ValueError: the URL is not of that form, or ``ca`` cannot be read.
        """
        parts = urlsplit(url)
        usage = "use queueit://[user:password@]host[:port] or queueits://...[?ca=/path/to/ca.pem]"
        if parts.scheme not in ("queueit", "queueits") or parts.path not in ("", "/"):
            raise ValueError(f"not a queueit:// URL: {url!r}; {usage}")
        secure = parts.scheme == "queueits"
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
        if set(query) - ({"ca"} if secure else set()) or any(len(v) > 1 for v in query.values()):
            raise ValueError(f"unknown or repeated URL options in {url!r}; {usage}")
        try:
            port = parts.port or (DEFAULT_TLS_PORT if secure else DEFAULT_PORT)
        except ValueError as exc:
            raise ValueError(f"bad port in {url!r}: {exc}") from None
        tls = None
        if secure:
            ca = query.get("ca", [None])[0]
            try:
                tls = ssl.create_default_context(cafile=ca or None)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot read the CA certificates {ca!r} of {url!r}: {exc}") from None
        return cls(
            parts.hostname or "127.0.0.1",
            port,
            login=unquote(parts.username) if parts.username else None,
            passcode=unquote(parts.password) if parts.password else None,
            tls=tls,
        )

    def _new_client(self, limits: Limits | None = None) -> AsyncClient:
        return AsyncClient(
            self.host,
            self.port,
            login=self._login,
            passcode=self._passcode,
            timeout=self.timeout,
            heartbeat=(self._heartbeat_ms, self._heartbeat_ms),
            tls=self._tls,
            limits=limits,
        )

    def tolerate_blocking(self, seconds: float) -> None:
        # Beats every 3x the block: the broker (grace >= 1.5) waits 4.5x, more than the time
        # since the last beat (< 3x) plus one block; the same holds for our side's wait.
        self._heartbeat_ms = max(DEFAULT_HEARTBEAT_MS, math.ceil(seconds * 3000))
        self._client = self._new_client()

    def coalesce(self, on: bool) -> None:
        self._client.cork(on)

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    async def connect(self) -> None:
        with _mapped:
            await self._client.connect()

    async def close(self) -> None:
        await self._client.disconnect()

    # -- producing ---------------------------------------------------------------------------

    async def publish(self, queue: str, message: Outgoing) -> str | None:
        check_outgoing(CAPABILITIES, message)
        with _mapped:
            said = await self._client.send(
                "/queue/" + check_queue_name(queue),
                message.body,
                headers=_headers(message),
                content_type=message.content_type,
                receipt=True,
            )
        return _kept_out_by(said)

    async def publish_many(self, publish: Sequence[tuple[str, Outgoing]]) -> None:
        check_publish_many(CAPABILITIES, publish)  # before a transaction opens (see _or_abort)
        if not publish:
            return
        client = self._client
        with _mapped:  # one transaction: one journal write (and fsync) holds them all, or none
            tx = await client.begin()
            async with self._or_abort(tx):
                await self._send_all(publish, tx)
            await client.commit(tx, receipt=True)

    def blocking_publisher(self) -> BlockingQueueitPublisher:
        return BlockingQueueitPublisher(
            Client(
                self.host,
                self.port,
                login=self._login,
                passcode=self._passcode,
                timeout=self.timeout,
                tls=self._tls,
            )
        )

    async def broadcast(self, topic: str, message: Outgoing) -> None:
        check_outgoing(CAPABILITIES, message)
        await self._declare_events()
        with _mapped:
            await self._client.send(
                f"/exchange/{EVENTS_EXCHANGE}/{check_queue_name(topic)}",
                message.body,
                headers=_headers(message),
                content_type=message.content_type,
                receipt=True,
            )

    async def _declare_events(self) -> None:
        if EVENTS_EXCHANGE not in self._declared:
            await self._admin({"command": "exchange-declare", "name": EVENTS_EXCHANGE, "type": "topic"})
            self._declared.add(EVENTS_EXCHANGE)

    # -- consuming ---------------------------------------------------------------------------

    async def consume(self, queue: str, *, prefetch: int, lease: float) -> None:
        destination = "/queue/" + check_queue_name(queue)
        with _mapped:
            sub = await self._client.subscribe(
                destination,
                ack="client-individual",
                prefetch=prefetch,
                headers={"visibility-timeout": str(_ms(lease))},
                receipt=True,
            )
        self._queues[sub] = queue
        self._prefetch[sub] = prefetch

    async def listen(self, topic: str, *, group: str, prefetch: int, lease: float = 60.0) -> str:
        queue = listener_queue(group, topic)
        await self._declare_events()
        await self._admin({"command": "bind", "exchange": EVENTS_EXCHANGE, "queue": queue, "key": topic})
        await self.consume(queue, prefetch=prefetch, lease=lease)
        return queue

    async def pause(self) -> None:
        with _mapped:
            for sub in self._queues:
                await self._client.set_prefetch(sub, 0, receipt=True)

    async def resume(self) -> None:
        with _mapped:
            for sub in self._queues:
                await self._client.set_prefetch(sub, self._prefetch[sub], receipt=True)

    async def next_delivery(self, timeout: float | None = None) -> Delivery | None:
        with _mapped:
            try:
                message = await self._client.receive(timeout)
            except ReceiveTimeout:
                return None
        redelivered = message.headers.get("redelivered") == "true"
        count = message.headers.get("x-delivery-count", "0")
        body, group = message.body, None
        if message.headers.get("content-type") == GROUP_CONTENT_TYPE and "group-id" in message.headers:
            body, group = _released_group(message.body)
        return Delivery(
            self._queues.get(message.subscription, message.destination.removeprefix("/queue/")),
            body,
            message.headers,
            message.message_id,
            redelivered,
            (int(count) + 1 if count.isdigit() else 2) if redelivered else 1,
            message,
            group,
        )

    async def ack(self, delivery: Delivery) -> None:
        with _mapped:
            await self._client.ack(_message(delivery))

    async def settle(
        self,
        delivery: Delivery,
        publish: Sequence[tuple[str, Outgoing]],
        report: MemberReport | None = None,
    ) -> None:
        check_publish(CAPABILITIES, publish)  # before a transaction opens (see _or_abort)
        if not publish and report is None:
            await self.ack(delivery)
            return
        client = self._client
        with _mapped:
            tx = await client.begin()
            async with self._or_abort(tx):
                await self._send_all(publish, tx)
                if report is not None:
                    headers = {
                        "group-id": report.group_id,
                        "member": str(report.member),
                        "outcome": report.outcome,
                    }
                    await client.send(GROUP, report.result, headers=headers, transaction=tx)
                await client.ack(_message(delivery), transaction=tx)
            await client.commit(tx, receipt=True)

    @contextlib.asynccontextmanager
    async def _or_abort(self, tx: str) -> AsyncIterator[None]:
        """Abort ``tx`` if what it holds raises before its commit: an open transaction is
        held by the broker (16 at most per connection) until the connection goes."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                await self._client.abort(tx, receipt=False)
            raise

    async def _send_all(self, publish: Sequence[tuple[str, Outgoing]], tx: str) -> None:
        for queue, outgoing in publish:
            await self._client.send(
                "/queue/" + queue,
                outgoing.body,
                headers=_headers(outgoing),
                content_type=outgoing.content_type,
                transaction=tx,
            )

    async def send_group(
        self,
        group_id: str,
        members: Sequence[tuple[str, Outgoing]],
        callback_queue: str,
        callback: Outgoing,
    ) -> None:
        check_group(CAPABILITIES, group_id, len(members), callback)
        check_publish(CAPABILITIES, members)
        opening = {
            **_headers(callback),
            "group-id": group_id,
            "group-size": str(len(members)),
            "callback": "/queue/" + check_queue_name(callback_queue),
        }
        client = self._client
        with _mapped:  # one transaction: the group is open with all its members, or not at all
            tx = await client.begin()
            async with self._or_abort(tx):
                # With a receipt: a refused open (the id is taken) fails here, as TransportRefused.
                await client.send(
                    GROUP,
                    callback.body,
                    headers=opening,
                    content_type=callback.content_type,
                    transaction=tx,
                    receipt=True,
                )
                await self._send_all(members, tx)
            await client.commit(tx, receipt=True)

    async def release(self, delivery: Delivery, *, delay: float = 0.0, started: bool = True) -> None:
        with _mapped:
            await self._client.nack(
                _message(delivery), delay_ms=_ms(delay) if delay else None, started=started
            )

    async def reject(
        self, delivery: Delivery, reason: Literal["invalid", "rejected"], error: str = ""
    ) -> None:
        with _mapped:
            await self._client.nack(
                _message(delivery), requeue=False, reason=reason, error=error or None, receipt=True
            )

    async def extend(self, delivery: Delivery, lease: float) -> None:
        with _mapped:
            await self._client.extend_lease(_message(delivery), _ms(lease))

    # -- dead letters ------------------------------------------------------------------------

    def dead_letter_queue(self, queue: str) -> str:
        return f"DLQ.{queue}"

    async def dead_letters(self, queue: str, limit: int) -> list[StoredMessage]:
        # In pages: the broker cuts a listing with bodies at about 8 MiB and says where to
        # go on (``next``), since a reply is one frame.
        limit = min(limit, MAX_LIST)
        found: list[StoredMessage] = []
        offset: int | None = 0
        while offset is not None and len(found) < limit:
            answer = await self._admin(
                {
                    "command": "dlq-list",
                    "queue": queue,
                    "limit": str(limit - len(found)),
                    "offset": str(offset),
                    "detail": "true",
                }
            )
            for m in answer["messages"]:
                body = m["body"]
                raw = body["text"].encode("utf-8") if "text" in body else base64.b64decode(body["base64"])
                found.append(StoredMessage(m["id"], raw, dict(m["headers"]), m["reason"] or ""))
            following = answer.get("next")
            offset = following if isinstance(following, int) and following > offset else None
        return found

    async def redrive(self, queue: str, message_id: str | None) -> int:
        headers = {"command": "dlq-redrive", "queue": queue}
        if message_id is not None:
            headers["id"] = message_id
        return int((await self._admin(headers))["moved"])

    async def delete_dead_letters(self, queue: str, message_id: str | None) -> int:
        headers = {"command": "dlq-purge", "queue": queue}
        if message_id is not None:
            headers["id"] = message_id
        return int((await self._admin(headers))["purged"])

    # -- leadership: none here; the scheduler keeps ticks apart by unique keys --------------

    async def lead(self, name: str) -> Leadership | None:
        check_leadership(CAPABILITIES, name)  # raises Unsupported
        return None

    # -- progress ----------------------------------------------------------------------------

    async def report_progress(self, job_id: str, body: bytes) -> None:
        check_progress(CAPABILITIES, job_id, body)
        with _mapped:  # no receipt: a report is worth no round trip (the next one replaces it)
            await self._client.send(
                PROGRESS, body, headers={"job-id": job_id}, content_type="application/json"
            )

    async def read_progress(self, job_id: str) -> tuple[bytes, int] | None:
        check_progress(CAPABILITIES, job_id)
        answer = await self._admin({"job-id": job_id}, PROGRESS)
        if not answer.get("found"):
            return None
        return str(answer["body"]).encode(), int(answer["updated"])

    async def _admin(self, headers: dict[str, str], destination: str = ADMIN) -> dict[str, Any]:
        """One request to the broker (admin, or a progress read), on a connection of its own
        (its reply must not mix with deliveries)."""
        client = self._new_client(ADMIN_LIMITS)
        with _mapped:
            async with client:
                await client.send(destination, b"", headers={**headers, "reply-to": "/temp-queue/admin"})
                reply = await client.receive(timeout=client.timeout)
        try:
            answer = json.loads(reply.body)
        except ValueError:
            raise TransportError(f"the broker's admin reply is not JSON: {reply.body[:80]!r}") from None
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error", "admin request failed") if isinstance(answer, dict) else "bad reply"
            raise TransportRefused(str(error))
        return answer


class BlockingQueueitPublisher:
    """:meth:`QueueitTransport.publish` over a blocking :class:`Client` (one thread's)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._connected = False
        self._closed = False

    def publish(self, queue: str, message: Outgoing) -> str | None:
        if self._closed:
            raise TransportClosed("this publisher was closed")
        check_outgoing(CAPABILITIES, message)
        destination = "/queue/" + check_queue_name(queue)
        try:
            with _mapped:
                if not self._connected:
                    self._client.connect()
                    self._connected = True
                said = self._client.send(
                    destination,
                    message.body,
                    headers=_headers(message),
                    content_type=message.content_type,
                    receipt=True,
                )
        except TransportError:
            # A refusal (an ERROR frame) ends the connection too, and after a timeout its
            # state is unknown: this publisher is done; the caller makes a new one.
            self._closed = True
            self._client.close()
            raise
        return _kept_out_by(said)

    def close(self) -> None:
        self._closed = True
        # Every SEND had its receipt: a DISCONNECT without one loses nothing.
        with suppress(ClientError, OSError):
            self._client.disconnect(receipt=False)
        self._client.close()


def _kept_out_by(receipt: dict[str, str]) -> str | None:
    """The holder's ref when a SEND's RECEIPT says its unique key kept it out."""
    return receipt.get("unique-ref") if receipt.get("unique-duplicate") == "true" else None


def _released_group(body: bytes) -> tuple[bytes, GroupOutcome]:
    """The callback's own body and the members' outcomes, from a released group's JSON."""
    try:
        document = json.loads(body)
        members = tuple(
            (str(m["outcome"]), None if m.get("result") is None else str(m["result"]).encode())
            for m in document["members"]
        )
        return str(document["body"]).encode(), GroupOutcome(str(document["group"]), members)
    except (ValueError, KeyError, TypeError) as exc:
        raise TransportError(f"a released group's body is malformed ({exc})") from None


def _headers(message: Outgoing) -> dict[str, str]:
    headers = {**message.headers, "persistent": "true"}
    if message.delay:
        headers["delay"] = str(_ms(message.delay))
    if message.priority is not None:
        headers["priority"] = str(message.priority)
    unique = message.unique
    if unique is not None:
        headers["unique-key"] = unique.key
        if unique.ref:
            headers["unique-ref"] = unique.ref
        if unique.hold_for:
            headers["unique-for"] = str(_ms(unique.hold_for))
    return headers


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _message(delivery: Delivery) -> Message:
    if not isinstance(delivery.token, Message):
        raise TypeError("not a delivery of the queueit transport")
    return delivery.token
