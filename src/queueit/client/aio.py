"""An asyncio STOMP client on :class:`queueit.stomp.ClientConnection`.

A reader task parses frames as they arrive: MESSAGE frames go to a bounded queue read by
:meth:`AsyncClient.receive`, RECEIPTs resolve futures, heart-beats run on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
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
    State,
    StompProtocolError,
)
from ._common import Body, FrameBuilder, Headers, LoginSettings, nack_headers, refused
from .errors import ClientError, ConnectionClosed, ReceiveTimeout

#: Linux's TCP_CORK (None elsewhere): see :meth:`AsyncClient.cork`.
_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)


class AsyncClient:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 61613,
        *,
        login: str | None = None,
        passcode: str | None = None,
        vhost: str | None = None,
        heartbeat: tuple[int, int] = (10_000, 10_000),
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
        versions: Sequence[str] = SUPPORTED_VERSIONS,
        max_buffered: int = 10_000,
        client_id: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.timeout = timeout
        self._tls = tls
        self.conn = ClientConnection(limits)
        self._frames = FrameBuilder(
            self.conn, LoginSettings(vhost or host, login, passcode, heartbeat, tuple(versions), client_id)
        )
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._messages: asyncio.Queue[Message] = asyncio.Queue(max_buffered)
        self._waiters: set[asyncio.Future[None]] = set()  # receive() calls waiting for a message
        self._receipts: dict[str, asyncio.Future[dict[str, str]]] = {}
        self._connected: asyncio.Future[Connected] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._error: ClientError | None = None
        self._failed = asyncio.Event()
        self._corked = False

    async def connect(self) -> Connected:
        """Connect and log in.

        Raises:
            ConnectionClosed: the broker cannot be reached, refused the login
                (:class:`ServerRefused`), or did not answer in time.
        """
        loop = asyncio.get_running_loop()
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self._tls), self.timeout
            )
            self._connected = loop.create_future()
            self._write(self._frames.connect())
            self._tasks.append(loop.create_task(self._read_loop()))
            connected = await asyncio.wait_for(asyncio.shield(self._connected), self.timeout)
        except (OSError, TimeoutError) as exc:
            await self.close()
            raise ConnectionClosed(
                f"cannot connect to {self.host}:{self.port}: {exc or 'timed out'}"
            ) from exc
        except BaseException:  # a refusal, or the caller cancelled us: leave nothing open
            await self.close()
            raise
        self._tasks.append(loop.create_task(self._beat_loop()))
        return connected

    async def disconnect(self, *, receipt: bool = True) -> None:
        """Say goodbye (waiting for the receipt) if the connection is still up, then close."""
        try:
            if self._writer is not None and self._error is None and self.conn.state is State.CONNECTED:
                with contextlib.suppress(ClientError):
                    await self._simple(Command.DISCONNECT, [], receipt)
        finally:
            await self.close()

    async def close(self) -> None:
        """Close at once; a ``receive()`` waiting elsewhere raises ConnectionClosed."""
        self._fail(ConnectionClosed("the client closed the connection"))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._writer is not None:
            self._writer.close()  # the kernel sends what a cork held, then closes
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None
        self._corked = False

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            await self.disconnect()
        else:
            await self.close()

    # -- operations --------------------------------------------------------------------------

    async def send(
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
        return await self._emit(
            self._frames.send(destination, body, headers, transaction, content_type, rid), rid
        )

    async def subscribe(
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
        await self._emit(self._frames.subscribe(destination, sub_id, ack, prefetch, headers, rid), rid)
        return sub_id

    async def unsubscribe(self, sub_id: str, *, receipt: bool = False) -> None:
        await self._simple(Command.UNSUBSCRIBE, [("id", sub_id)], receipt)

    async def ack(self, message: Message, *, transaction: str | None = None, receipt: bool = False) -> None:
        rid = self._frames.next_id("ack") if receipt else None
        await self._emit(self._frames.settle(Command.ACK, message, transaction, None, rid), rid)

    async def nack(
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
        """As :meth:`queueit.Client.nack`."""
        rid = self._frames.next_id("nack") if receipt else None
        extra = nack_headers(requeue, delay_ms, reason, error, started)
        await self._emit(self._frames.settle(Command.NACK, message, transaction, extra, rid), rid)

    async def extend_lease(self, message: Message, lease_ms: int, *, receipt: bool = False) -> None:
        """As :meth:`queueit.Client.extend_lease`."""
        rid = self._frames.next_id("lease") if receipt else None
        await self._emit(self._frames.extend_lease(message, lease_ms, rid), rid)

    async def set_prefetch(self, sub_id: str, prefetch: int, *, receipt: bool = False) -> None:
        """As :meth:`queueit.Client.set_prefetch`."""
        rid = self._frames.next_id("flow") if receipt else None
        await self._emit(self._frames.flow(sub_id, prefetch, rid), rid)

    async def begin(self, transaction: str | None = None) -> str:
        tx = transaction or self._frames.next_id("tx")
        await self._simple(Command.BEGIN, [("transaction", tx)], False)
        return tx

    async def commit(self, transaction: str, *, receipt: bool = True) -> None:
        await self._simple(Command.COMMIT, [("transaction", transaction)], receipt)

    async def abort(self, transaction: str, *, receipt: bool = True) -> None:
        await self._simple(Command.ABORT, [("transaction", transaction)], receipt)

    async def receive(self, timeout: float | None = None) -> Message:
        """The next MESSAGE.

        Raises:
            ReceiveTimeout: none arrived within ``timeout`` (default: the client's timeout).
            ConnectionClosed / ServerRefused: the connection ended (at once, not at the timeout).
        """
        deadline = asyncio.get_running_loop().time() + (self.timeout if timeout is None else timeout)
        while True:
            if not self._messages.empty():
                return self._messages.get_nowait()
            if self._error is not None:
                raise self._error
            # One future to wait on, woken by the reader or by a failure: cheaper than racing a
            # Queue.get task against a failure task, and cancelling it loses no message.
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                raise ReceiveTimeout("nothing received in time") from None
            finally:
                self._waiters.discard(waiter)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def corked(self) -> bool:
        """Whether frames written now may wait in the kernel (see :meth:`cork`)."""
        return self._corked

    def cork(self, on: bool) -> None:
        """Let frames written from now on wait so that several go out in one packet (``on``),
        or send what waits at once (``not on``).

        Frames are still written to the socket at once; the kernel holds them (Linux's
        ``TCP_CORK``) for at most 200 ms, and sends them when the socket closes, so a process
        that dies loses none of them. A frame that waits for a RECEIPT uncorks first: nobody
        waits on corked data. Without ``TCP_CORK`` (not Linux), or off a TCP socket, this does
        nothing. Meant for a consumer settling a run of short jobs: one packet and one wake-up of
        the broker for several ACKs instead of one each.
        """
        if on == self._corked or _TCP_CORK is None or self._writer is None:
            return
        sock = self._writer.get_extra_info("socket")
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, int(on))
        except OSError:
            return  # closing: the kernel sends what it holds anyway
        self._corked = on

    # -- internals ---------------------------------------------------------------------------

    async def _simple(self, command: Command, headers: list[tuple[str, str]], receipt: bool) -> None:
        rid = self._frames.next_id(command.value.lower()) if receipt else None
        await self._emit(self._frames.simple(command, headers, rid), rid)

    async def _emit(self, data: bytes, rid: str | None) -> dict[str, str]:
        """Write a frame; with a receipt id, wait for the RECEIPT and return its other headers."""
        if rid is None:
            self._write(data)
            if self._writer is not None:
                try:
                    await self._writer.drain()
                except OSError as exc:
                    error = ConnectionClosed(f"send failed: {exc}")
                    self._fail(error)
                    raise error from exc
            return {}
        future: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._receipts[rid] = future
        self._write(data)
        self.cork(False)  # the RECEIPT needs the frame at the broker now, not in 200 ms
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            raise ReceiveTimeout(f"no RECEIPT for {rid!r} within {self.timeout} s") from None
        finally:
            self._receipts.pop(rid, None)

    def _write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._writer is None:
            raise ConnectionClosed("not connected")
        self._writer.write(data)
        self.conn.note_sent(time.monotonic())

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    raise ConnectionClosed("the server closed the connection")
                now = time.monotonic()
                self.conn.receive_data(data, now)
                while (event := self.conn.next_event(now)) is not None:
                    await self._on_event(event)
        except StompProtocolError as exc:
            self._fail(ConnectionClosed(f"protocol error from server: {exc.message}"))
        except ClientError as exc:
            self._fail(exc)
        except OSError as exc:
            self._fail(ConnectionClosed(f"receive failed: {exc}"))

    async def _on_event(self, event: Connected | Message | Receipt | ServerError) -> None:
        if isinstance(event, Message):
            await self._messages.put(event)
            self._wake()
        elif isinstance(event, Receipt):
            future = self._receipts.get(event.receipt_id)
            if future is not None and not future.done():
                future.set_result(event.headers)
        elif isinstance(event, Connected):
            if self._connected is not None and not self._connected.done():
                self._connected.set_result(event)
        else:
            raise refused(event)

    def _fail(self, error: ClientError) -> None:
        if self._error is not None:
            return  # the first failure is the one to report
        self._error = error
        self._failed.set()
        self._wake()
        for future in [*self._receipts.values(), self._connected]:
            if future is not None and not future.done():
                future.set_exception(error)

    async def _beat_loop(self) -> None:
        while not self._failed.is_set():
            deadline = self.conn.next_deadline()
            if deadline is None:
                return
            await asyncio.sleep(max(deadline - time.monotonic(), 0.0))
            now = time.monotonic()
            if self._messages.full():
                self.conn.note_received(now)  # the reader waits for us, not for the server
            action = self.conn.on_timer(now)
            if action is BeatAction.SEND_BEAT and self._writer is not None:
                self._writer.write(EOL)
            elif action is BeatAction.PEER_DEAD:
                self._fail(ConnectionClosed("no heart-beat from the server"))
                if self._writer is not None:
                    self._writer.close()
                return
