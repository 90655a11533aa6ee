"""One client connection: socket bytes <-> ServerConnection <-> BrokerCore.

This is the only module that touches a transport. It is an ``asyncio.Protocol`` rather
than a stream pair: ``data_received`` feeds the protocol object directly, and
``pause_writing``/``resume_writing`` tell the core when the client cannot take more, so
dispatch stops for that client and nobody else waits.

Ownership: a Session owns its ``ServerConnection``, its outbound buffer and its timers.
Writes are collected during one loop iteration and flushed once (``call_soon``), so a
burst of MESSAGE and RECEIPT frames costs one system call.

Reading is paused for any of five reasons, tracked separately so that one never undoes
another: the login is being checked ("login"), a queue this client publishes to is
backed up ("flow"), the client does not read what we write ("write"), a DISCONNECT
waits for its receipt ("disconnect"), or a publish waits out a memory or disk alarm
("alarm", see ``BrokerServer.alarm``). While reading
is paused by us, the client's silence is ours, so it does not count against its
heart-beats.

Flow control pauses the whole connection, as RabbitMQ's does: frames are applied in
arrival order, never reordered or set aside. A publisher that consumes the queue holding
it back is never blocked by it (see :mod:`.queues`); two connections that each publish
what the other consumes should publish and consume on separate connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ..stomp import (
    EOL,
    FRAME_END,
    AckMode,
    BeatAction,
    ClientEvent,
    Commit,
    Connect,
    Disconnect,
    Send,
    ServerConnection,
    State,
    StompProtocolError,
    Subscribe,
)
from .auth import User
from .errors import BrokerError
from .messages import Message

if TYPE_CHECKING:
    from .core import BrokerCore, SessionState
    from .queues import Queue, Subscription
    from .server import BrokerServer

log = logging.getLogger("queueit.broker")

#: Stop handing messages to a connection once this many bytes wait to be written.
OUTBOUND_HIGH_WATER = 256 * 1024
#: The transport reports "paused" above this many unsent bytes (asyncio's default is 64 KiB).
TRANSPORT_HIGH_WATER = 1024 * 1024
#: A client that reads nothing of what we write for this long is disconnected.
WRITE_STALL_TIMEOUT = 60.0
#: After ERROR or DISCONNECT, how long a client may take to read the last frames.
CLOSE_LINGER = 5.0


class Session(asyncio.Protocol):
    def __init__(self, server: BrokerServer) -> None:
        self.server = server
        self.core: BrokerCore = server.core
        self.loop = asyncio.get_running_loop()
        settings = server.settings
        self.conn = ServerConnection(
            settings.limits,
            heartbeat=settings.heartbeat,
            grace=settings.heartbeat_grace,
            server_name=server.server_name,
        )
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.state: SessionState | None = None
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self._paused = False  # the transport's buffer is full
        self._starved = False  # dispatch stopped because of OUTBOUND_HIGH_WATER
        self._closing = False
        self._read_holds: set[str] = set()  # why reading is paused (see the module doc)
        # (RECEIPT frame, is DISCONNECT's, deliveries wait for it)
        self._receipts: deque[tuple[bytes, bool, bool]] = deque()
        self._deliveries_held = False  # a SUBSCRIBE's receipt must go out first
        self._parked: ClientEvent | None = None  # a publish held by a memory or disk alarm
        self._alarm_timer: asyncio.TimerHandle | None = None
        self._blockers: set[Queue] = set()  # backed-up queues this client publishes to
        self._timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._clock: Callable[[], float] = time.monotonic

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transports are asyncio.Transport-like (uvloop's do not subclass it).
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=TRANSPORT_HIGH_WATER)
        peer = self.transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        refusal = self.server.admit(self)
        if refusal is not None:
            self._fail("Too many connections", refusal)
            return
        self._timer = self.loop.call_later(self.server.settings.login_timeout, self._login_timeout)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self.conn.receive_data(data, self._clock())
        self._process()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        for timer in (self._timer, self._stall_timer, self._linger_timer, self._alarm_timer):
            if timer is not None:
                timer.cancel()
        if self.conn.state is not State.CLOSED:
            self.conn.close()
        try:
            self._detach()
        finally:
            self._out.clear()
            self.server.forget(self)

    def pause_writing(self) -> None:
        self._paused = True
        self._hold("write")
        self._stall_timer = self.loop.call_later(WRITE_STALL_TIMEOUT, self._write_stalled)

    def resume_writing(self) -> None:
        self._paused = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._release("write")
        if self.state is not None and not self._closing:
            self.core.resume(self.state)

    # -- Outlet (called by the core) ----------------------------------------------------------

    @property
    def writable(self) -> bool:
        if self._paused or self._closing or self._deliveries_held:
            return False
        if self._out_bytes >= OUTBOUND_HIGH_WATER:
            self._starved = True
            return False
        return True

    def deliver(self, subscription: Subscription, message: Message) -> None:
        conn = self.conn
        if message.encoded_version != conn.version:
            message.encoded_block = conn.encode_headers(message.headers)
            message.encoded_version = conn.version
        block = message.encoded_block
        if message.redelivered:
            # The count of earlier deliveries, named as RabbitMQ's quorum queues name it.
            block += f"redelivered:true\nx-delivery-count:{max(message.deliveries - 1, 0)}\n"
        ack = None if subscription.ack_mode is AckMode.AUTO else message.id
        body = message.body
        head = conn.message_head(message.destination, message.id, subscription.id, ack, block, len(body))
        # Three parts, joined once per flush: the body is copied once, not three times.
        self._out += (head, body, FRAME_END)
        self._out_bytes += len(head) + len(body) + len(FRAME_END)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def block(self, queue: Queue) -> None:
        if not self._closing:
            self._blockers.add(queue)
            self._hold("flow")

    def unblock(self, queue: Queue) -> None:
        self._blockers.discard(queue)
        if not self._blockers:
            self._release("flow")  # only asks the transport to read again: safe inside dispatch

    # -- frames ------------------------------------------------------------------------------

    def _process(self) -> None:
        conn = self.conn
        while not self._closing:
            try:
                event = conn.next_event()
            except StompProtocolError as exc:
                self._fail_protocol(exc)
                return
            if event is None:
                return
            if isinstance(event, Connect):
                self._hold("login")
                self._start_login(event)
                return
            if self.server.alarm is not None and _publishes(event):
                self._park(event)
                return
            if not self._handle(event):
                return

    def _handle(self, event: ClientEvent) -> bool:
        """Apply one frame; False when the connection is closing because of it."""
        state = self.state
        assert state is not None  # the connection only yields frames after CONNECT
        store = self.core.store
        written_before = store.submitted
        # A SUBSCRIBE's RECEIPT goes before the first MESSAGE of that subscription (as in
        # RabbitMQ and ActiveMQ; clients wait for it before they read messages).
        hold = event.receipt is not None and isinstance(event, Subscribe)
        if hold:
            self._deliveries_held = True  # released once the receipt is out, not by a later frame
        try:
            extra = self.core.handle(state, event)
        except BrokerError as exc:
            self._fail(exc.message, exc.detail, event.receipt)
            return False
        except Exception:
            log.exception("internal error handling %s from %s", type(event).__name__, self.peer)
            self._fail(
                "Internal error", "The broker failed to process this frame; see its log.", event.receipt
            )
            return False
        disconnect = isinstance(event, Disconnect)
        if event.receipt is not None:
            frame = self.conn.receipt(event.receipt, extra)
            if store.submitted > written_before or self._receipts:
                # The receipt promises the frame's effect is on disk: wait for the journal.
                # Receipts leave in the order of their frames, so a later one waits too.
                self._receipts.append((frame, disconnect, hold))
                store.when_done(written_before, self._receipt_ready)
                if disconnect:
                    self._hold("disconnect")
                return not disconnect
            self._write(frame)
            if hold:
                self._release_deliveries()
        if disconnect:
            self._close_after_flush()
            return False
        return True

    def _receipt_ready(self, ok: bool) -> None:
        """The journal has written what the oldest waiting receipt covers."""
        if self._closing or not self._receipts:
            return
        frame, disconnect, held = self._receipts.popleft()
        self._write(frame)
        if disconnect:
            self._close_after_flush()
        elif held:
            self._release_deliveries()

    def _release_deliveries(self) -> None:
        self._deliveries_held = False
        if self.state is not None and not self._closing:
            self.core.resume(self.state)

    def _park(self, event: ClientEvent) -> None:
        """The broker is past a memory or disk watermark: hold this publish (and everything
        after it on this connection) until it is back under, or the timeout runs out."""
        self._parked = event
        self._hold("alarm")
        self._alarm_timer = self.loop.call_later(self.server.settings.publish_timeout, self._park_timeout)

    def unpark(self) -> None:
        """The alarm is over: apply the held frame, and read on."""
        event, self._parked = self._parked, None
        if self._alarm_timer is not None:
            self._alarm_timer.cancel()
            self._alarm_timer = None
        if event is None or self._closing:
            return
        if self._handle(event):
            self._release("alarm")
            self._process()

    def _park_timeout(self) -> None:
        self._alarm_timer = None
        event, self._parked = self._parked, None
        if event is None or self._closing:
            return
        reason = self.server.alarm or "resources ran low"
        self._fail(
            "Broker out of resources",
            f"The message was not accepted: {reason}, for longer than "
            f"{self.server.settings.publish_timeout:g} s. Retry later; the operator should free "
            "memory or disk, or drain the queues.",
            event.receipt,
        )

    def _start_login(self, event: Connect) -> None:
        async def login() -> None:
            try:
                result = await self.server.authenticate(event, self.peer, lambda: not self._closing)
            except Exception:
                log.exception("authentication failed with an internal error")
                result = "Authentication failed (internal error); see the broker log"
            self._finish_login(event, result)

        self.server.spawn(login())

    def _finish_login(self, event: Connect, result: User | str) -> None:
        if self._closing:
            return
        if isinstance(result, str):
            log.info("refused login %r from %s: %s", event.login, self.peer, result)
            self._fail("Access refused", result, event.receipt)
            return
        self.state = self.core.open_session(self, result, client_id=event.headers.get("client-id"))
        now = self._clock()
        self._write(self.conn.accept(self.state.id, now))
        if event.receipt is not None:
            self._write(self.conn.receipt(event.receipt))
        self._arm_timer()
        self._release("login")
        self._process()

    # -- reading -----------------------------------------------------------------------------

    def _hold(self, reason: str) -> None:
        if not self._read_holds and self.transport is not None and not self._closing:
            self.transport.pause_reading()
        self._read_holds.add(reason)

    def _release(self, reason: str) -> None:
        if reason not in self._read_holds:
            return
        self._read_holds.discard(reason)
        if not self._read_holds and self.transport is not None and not self._closing:
            self.transport.resume_reading()

    # -- output ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        self._out_bytes += len(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self.transport is None or self.transport.is_closing():
            self._out.clear()
            self._out_bytes = 0
            return
        self.transport.write(b"".join(self._out))
        self._out.clear()
        self._out_bytes = 0
        self.conn.note_sent(self._clock())
        if self._starved and not self._paused and self.state is not None:
            self._starved = False
            self.core.resume(self.state)

    def _fail_protocol(self, exc: StompProtocolError) -> None:
        log.info("protocol error from %s: %s (%s)", self.peer, exc.message, exc.detail)
        self._out.append(self.conn.error_for(exc))
        self._close_after_flush()

    def _fail(self, message: str, detail: str, receipt_id: str | None = None) -> None:
        log.info("closing connection from %s: %s (%s)", self.peer, message, detail)
        self._out.append(self.conn.error(message, detail, receipt_id=receipt_id))
        self._close_after_flush()

    def _close_after_flush(self) -> None:
        """Give back what the connection held, flush, then close; reading stops at once.

        The core forgets the connection now, not when the socket is finally gone: a client
        that never reads its last frames must not keep its unacked messages.
        """
        self._closing = True  # first: nothing given back below may be delivered here again
        self._detach()
        self._flush()
        if self.transport is not None:
            self.transport.close()  # asyncio writes out its buffer before closing the socket
            self._linger_timer = self.loop.call_later(CLOSE_LINGER, self.transport.abort)

    def _detach(self) -> None:
        for queue in self._blockers:
            queue.blocked.discard(self)
        self._blockers.clear()
        if self.state is not None:
            self.core.close_session(self.state)
            self.state = None

    def shutdown(self) -> None:
        """The broker stops: flush and close this connection."""
        if not self._closing:
            self._close_after_flush()

    # -- timers ------------------------------------------------------------------------------

    def _login_timeout(self) -> None:
        self._timer = None
        if self.state is None and not self._closing:
            self._fail("Login timeout", "No successful CONNECT was received in time.")

    def _write_stalled(self) -> None:
        self._stall_timer = None
        if self._paused and not self._closing and self.transport is not None:
            log.info("closing connection from %s: it read nothing for %.0f s", self.peer, WRITE_STALL_TIMEOUT)
            self._closing = True
            self._detach()
            self.transport.abort()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.conn.next_deadline()
        if deadline is not None:
            delay = max(deadline - self._clock(), 0.0)
            self._timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closing:
            return
        now = self._clock()
        if self._read_holds:
            self.conn.note_received(now)  # we are not reading: the silence is ours
        action = self.conn.on_timer(now)
        if action is BeatAction.PEER_DEAD:
            log.info("closing connection from %s: no heart-beat from the client", self.peer)
            self._closing = True
            self._detach()
            if self.transport is not None:
                self.transport.abort()
            return
        if action is BeatAction.SEND_BEAT and self.transport is not None:
            self.transport.write(EOL)
        self._arm_timer()


def _publishes(event: ClientEvent) -> bool:
    """Does this frame add messages (and so wait out a memory or disk alarm)?

    Admin requests and lease extensions (``/queueit/...``) do not: operators need them most
    when the broker is short of resources. ACKs and NACKs free resources.
    """
    if isinstance(event, Send):
        return event.transaction is None and not event.destination.startswith("/queueit/")
    return isinstance(event, Commit)
