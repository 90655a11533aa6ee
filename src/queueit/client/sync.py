"""A blocking STOMP client on :class:`queueit.stomp.ClientConnection`.

One thread uses one :class:`Client`. Heart-beats are kept while the client waits in
:meth:`Client.receive` or for a receipt; a caller that does long work between calls
should connect with ``heartbeat=(0, 0)`` (the default) or call :meth:`Client.pump`.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType

from ..stomp import (
    EOL,
    SUPPORTED_VERSIONS,
    BeatAction,
    ClientConnection,
    Command,
    Connected,
    Limits,
    Message,
    Receipt,
    ServerError,
    StompProtocolError,
)
from ._common import Body, FrameBuilder, Headers, LoginSettings, nack_headers, refused
from .errors import ConnectionClosed, ReceiveTimeout

DEFAULT_PORT = 61613


class Client:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        login: str | None = None,
        passcode: str | None = None,
        vhost: str | None = None,
        heartbeat: tuple[int, int] = (0, 0),
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
        versions: Sequence[str] = SUPPORTED_VERSIONS,
        client_id: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.timeout = timeout
        self._tls = tls
        self.conn = ClientConnection(limits)
        self._frames = FrameBuilder(
            self.conn, LoginSettings(vhost or host, login, passcode, heartbeat, tuple(versions), client_id)
        )
        self._sock: socket.socket | None = None
        self._messages: deque[Message] = deque()
        self._receipts: dict[str, dict[str, str]] = {}  # receipt id -> its other headers
        self.connected: Connected | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def connect(self) -> Connected:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        self._sock = sock
        self._write(self._frames.connect())
        deadline = time.monotonic() + self.timeout
        while self.connected is None:
            self._read_some(deadline)
        return self.connected

    def disconnect(self, *, receipt: bool = True) -> None:
        if self._sock is None:
            return
        try:
            rid = self._frames.next_id("disconnect") if receipt else None
            self._write(self._frames.simple(Command.DISCONNECT, [], rid))
            if rid is not None:
                self._wait_receipt(rid)
        except ConnectionClosed:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.disconnect()
        else:
            self.close()

    # -- operations --------------------------------------------------------------------------

    def send(
        self,
        destination: str,
        body: Body = b"",
        *,
        headers: Headers = None,
        receipt: bool = False,
        transaction: str | None = None,
        content_type: str | None = None,
    ) -> dict[str, str]:
        """SEND; with ``receipt``, wait for it and return what it adds (e.g.
        ``unique-duplicate``: the message was kept out by its unique key), else ``{}``."""
        rid = self._frames.next_id("send") if receipt else None
        self._write(self._frames.send(destination, body, headers, transaction, content_type, rid))
        return {} if rid is None else self._wait_receipt(rid)

    def subscribe(
        self,
        destination: str,
        *,
        id: str | None = None,
        ack: str = "auto",
        prefetch: int | None = None,
        headers: Headers = None,
        receipt: bool = False,
    ) -> str:
        sub_id = id or self._frames.next_id("sub")
        rid = self._frames.next_id("subscribe") if receipt else None
        self._write(self._frames.subscribe(destination, sub_id, ack, prefetch, headers, rid))
        if rid is not None:
            self._wait_receipt(rid)
        return sub_id

    def unsubscribe(self, sub_id: str, *, receipt: bool = False) -> None:
        self._simple(Command.UNSUBSCRIBE, [("id", sub_id)], receipt)

    def ack(self, message: Message, *, transaction: str | None = None, receipt: bool = False) -> None:
        self._settle(Command.ACK, message, transaction, None, receipt)

    def nack(
        self,
        message: Message,
        *,
        transaction: str | None = None,
        requeue: bool = True,
        delay_ms: int | None = None,
        reason: str | None = None,
        error: str | None = None,
        receipt: bool = False,
        started: bool = True,
    ) -> None:
        """Give ``message`` back: to its queue (after ``delay_ms``, if given), or with
        ``requeue=False`` to the queue's dead-letter queue (``reason``: rejected or invalid;
        ``error``: what was wrong, kept as ``x-dead-letter-error``). ``started=False`` says
        the consumer never began on it (prefetched only): a queueit broker then does not
        count this delivery toward the queue's ``max_deliveries``."""
        headers = nack_headers(requeue, delay_ms, reason, error, started)
        self._settle(Command.NACK, message, transaction, headers, receipt)

    def extend_lease(self, message: Message, lease_ms: int, *, receipt: bool = False) -> None:
        """Keep a client-ack ``message`` leased to this connection for ``lease_ms`` more, so a
        long job is not delivered to another consumer meanwhile (queueit brokers only)."""
        rid = self._frames.next_id("lease") if receipt else None
        self._write(self._frames.extend_lease(message, lease_ms, rid))
        if rid is not None:
            self._wait_receipt(rid)

    def set_prefetch(self, sub_id: str, prefetch: int, *, receipt: bool = False) -> None:
        """Change how many unacked messages subscription ``sub_id`` may hold; 0 pauses it, and
        it keeps what it holds (queueit brokers only)."""
        rid = self._frames.next_id("flow") if receipt else None
        self._write(self._frames.flow(sub_id, prefetch, rid))
        if rid is not None:
            self._wait_receipt(rid)

    def begin(self, transaction: str | None = None) -> str:
        tx = transaction or self._frames.next_id("tx")
        self._simple(Command.BEGIN, [("transaction", tx)], False)
        return tx

    def commit(self, transaction: str, *, receipt: bool = True) -> None:
        self._simple(Command.COMMIT, [("transaction", transaction)], receipt)

    def abort(self, transaction: str, *, receipt: bool = True) -> None:
        self._simple(Command.ABORT, [("transaction", transaction)], receipt)

    def receive(self, timeout: float | None = None) -> Message:
        """The next MESSAGE.

        Raises:
            ReceiveTimeout: none arrived within ``timeout`` (default: the client's timeout).
            ConnectionClosed / ServerRefused: the connection ended.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._messages:
            self._read_some(deadline)
        return self._messages.popleft()

    def pump(self, timeout: float = 0.0) -> None:
        """Read what has arrived and keep heart-beats going, for up to ``timeout``."""
        with contextlib.suppress(ReceiveTimeout):
            self._read_some(time.monotonic() + timeout)

    # -- internals ---------------------------------------------------------------------------

    def _simple(self, command: Command, headers: list[tuple[str, str]], receipt: bool) -> None:
        rid = self._frames.next_id(command.value.lower()) if receipt else None
        self._write(self._frames.simple(command, headers, rid))
        if rid is not None:
            self._wait_receipt(rid)

    def _settle(
        self, command: Command, message: Message, transaction: str | None, headers: Headers, receipt: bool
    ) -> None:
        rid = self._frames.next_id(command.value.lower()) if receipt else None
        self._write(self._frames.settle(command, message, transaction, headers, rid))
        if rid is not None:
            self._wait_receipt(rid)

    def _wait_receipt(self, rid: str) -> dict[str, str]:
        deadline = time.monotonic() + self.timeout
        while rid not in self._receipts:
            self._read_some(deadline)
        return self._receipts.pop(rid)

    def _write(self, data: bytes) -> None:
        if self._sock is None:
            raise ConnectionClosed("not connected")
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise ConnectionClosed(f"send failed: {exc}") from exc
        self.conn.note_sent(time.monotonic())

    def _read_some(self, deadline: float) -> None:
        """Wait for bytes until ``deadline``, beating as needed; queue what they complete."""
        sock = self._sock
        if sock is None:
            raise ConnectionClosed("not connected")
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if now >= deadline:
                    raise ReceiveTimeout("nothing received in time")
                beat = self.conn.next_deadline()
                wait = deadline - now if beat is None else max(min(deadline, beat) - now, 0.0)
                pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
                if pending or sel.select(wait):
                    break
                self._beat(time.monotonic())
        try:
            data = sock.recv(65536)
        except OSError as exc:
            self.close()
            raise ConnectionClosed(f"receive failed: {exc}") from exc
        if not data:
            self.close()
            raise ConnectionClosed("the server closed the connection")
        now = time.monotonic()
        self.conn.receive_data(data, now)
        self._drain(now)

    def _beat(self, now: float) -> None:
        action = self.conn.on_timer(now)
        if action is BeatAction.SEND_BEAT and self._sock is not None:
            self._sock.sendall(EOL)
        elif action is BeatAction.PEER_DEAD:
            self.close()
            raise ConnectionClosed("no heart-beat from the server")

    def _drain(self, now: float) -> None:
        while True:
            try:
                event = self.conn.next_event(now)
            except StompProtocolError as exc:
                self.close()
                raise ConnectionClosed(f"protocol error from server: {exc.message}") from exc
            if event is None:
                return
            if isinstance(event, Message):
                self._messages.append(event)
            elif isinstance(event, Receipt):
                self._receipts[event.receipt_id] = event.headers
            elif isinstance(event, Connected):
                self.connected = event
            elif isinstance(event, ServerError):
                self.close()
                raise refused(event)
