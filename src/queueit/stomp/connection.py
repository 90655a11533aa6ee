"""Sans-I/O STOMP connections: bytes in, typed events out, bytes to write back.

Neither class reads a socket, sleeps, logs or looks at a clock: the caller passes
``now`` (seconds on a monotonic clock) and writes whatever bytes the methods return.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping

from .errors import LocalProtocolError, StompProtocolError
from .events import (
    Abort,
    Ack,
    AckMode,
    Begin,
    ClientEvent,
    Commit,
    Connect,
    Connected,
    Disconnect,
    Message,
    Nack,
    Receipt,
    Send,
    ServerError,
    ServerEvent,
    Subscribe,
    Unsubscribe,
)
from .frames import SERVER_COMMANDS, Command, Frame
from .grammar import SUPPORTED_VERSIONS, V10, V11, V12, escape, negotiate_version
from .heartbeat import BeatAction, HeartbeatClock, negotiate, parse_heartbeat
from .limits import Limits
from .parser import FrameParser
from .state import State, Trigger, transition
from .writer import FRAME_END, encode_frame

EOL = b"\n"
_ACK_MODES = {m.value: m for m in AckMode}


def _required(frame: Frame, name: str) -> str:
    value = frame.headers.get(name)
    if not value:
        raise StompProtocolError(
            f"Missing {name} header",
            detail=f"A {frame.command.value} frame needs a non-empty '{name}' header.",
            receipt_id=frame.headers.get("receipt"),
        )
    return value


def _representable(name: str, value: str, version: str) -> bool:
    """Whether a header can be written in ``version``: 1.0 has no escapes, 1.1 none for CR."""
    if version == V10:
        return ":" not in name and not any(c in name or c in value for c in "\r\n\x00")
    if version == V11:
        return "\r" not in name and "\r" not in value
    return True


@functools.lru_cache(maxsize=4096)
def _escape_cached(text: str, version: str) -> str:
    # Destinations and subscription ids repeat on every MESSAGE; escape each once.
    return escape(text, version)


class ServerConnection:
    """The broker's side of one STOMP connection.

    Use: ``receive_data(data, now)``, then ``next_event()`` until it returns ``None``.
    After a :class:`~queueit.stomp.events.Connect` event the connection waits (returns
    ``None``) until the owner calls :meth:`accept` or :meth:`error`.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        heartbeat: tuple[int, int] = (1000, 1000),
        grace: float = 2.0,
        server_name: str = "queueit",
    ) -> None:
        self.limits = limits
        self.state = State.AWAITING_CONNECT
        self.version = V10
        self.session_id = ""
        self._server_heartbeat = heartbeat
        self._grace = grace
        self._server_name = server_name
        self._parser = FrameParser(limits)
        self._client_heartbeat = (0, 0)
        self._clock: HeartbeatClock | None = None
        self._dispatch: dict[Command, Callable[[Frame], ClientEvent]] = {
            Command.SEND: self._send,
            Command.SUBSCRIBE: self._subscribe,
            Command.UNSUBSCRIBE: self._unsubscribe,
            Command.ACK: self._ack,
            Command.NACK: self._nack,
            Command.BEGIN: self._begin,
            Command.COMMIT: self._commit,
            Command.ABORT: self._abort,
            Command.DISCONNECT: self._disconnect,
        }

    # -- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        if self.state is State.CLOSED:
            return
        self._parser.feed(data)
        if self._clock is not None:
            self._clock.last_received = now

    @property
    def buffered(self) -> int:
        return self._parser.buffered

    def next_event(self) -> ClientEvent | None:
        """The next client frame as an event, or ``None`` (need data, or waiting for accept).

        Raises:
            StompProtocolError: the peer broke the protocol; send :meth:`error` and close.
        """
        if self.state is State.AUTHENTICATING or self.state is State.CLOSED:
            return None
        frame = self._parser.next_frame()
        if frame is None:
            return None
        command = frame.command
        if self.state is State.AWAITING_CONNECT:
            if command is Command.CONNECT or command is Command.STOMP:
                return self._connect(frame)
            raise StompProtocolError(
                "Not connected",
                detail=f"Received {command.value} before CONNECT; send CONNECT (or STOMP) first.",
                receipt_id=frame.headers.get("receipt"),
            )
        handler = self._dispatch.get(command)
        if handler is None:
            if command in SERVER_COMMANDS:
                detail = f"{command.value} is a server frame; clients must not send it."
            else:
                detail = "This connection is already connected; CONNECT may be sent only once."
            raise StompProtocolError(
                "Unexpected frame", detail=detail, receipt_id=frame.headers.get("receipt")
            )
        event = handler(frame)
        if command is Command.DISCONNECT:
            self.state = transition(self.state, Trigger.DISCONNECT)
        return event

    def _connect(self, frame: Frame) -> Connect:
        headers = frame.headers
        receipt = headers.get("receipt")
        try:
            version = negotiate_version(headers.get("accept-version"))
        except StompProtocolError as exc:
            exc.receipt_id = receipt
            raise
        heartbeat = (
            (0, 0) if version == V10 else parse_heartbeat(headers.get("heart-beat"), receipt_id=receipt)
        )
        self.version = version
        self._parser.version = version
        self._client_heartbeat = heartbeat
        self.state = transition(self.state, Trigger.CONNECT)
        return Connect(
            version=version,
            host=headers.get("host"),
            login=headers.get("login"),
            passcode=headers.get("passcode"),
            heartbeat=heartbeat,
            headers=headers,
            receipt=receipt,
        )

    def _send(self, frame: Frame) -> Send:
        h = frame.headers
        return Send(_required(frame, "destination"), h, frame.body, h.get("transaction"), h.get("receipt"))

    def _subscribe(self, frame: Frame) -> Subscribe:
        h = frame.headers
        destination = _required(frame, "destination")
        sub_id = h.get("id") or (destination if self.version == V10 else _required(frame, "id"))
        mode = _ACK_MODES.get(h.get("ack", "auto"))
        if mode is None:
            raise StompProtocolError(
                "Invalid ack mode",
                detail=f"ack must be auto, client or client-individual, got {h.get('ack')!r}.",
                receipt_id=h.get("receipt"),
            )
        return Subscribe(sub_id, destination, mode, h, h.get("receipt"))

    def _unsubscribe(self, frame: Frame) -> Unsubscribe:
        h = frame.headers
        sub_id = h.get("id") or (h.get("destination") if self.version == V10 else None)
        if not sub_id:
            sub_id = _required(frame, "id")
        return Unsubscribe(sub_id, h, h.get("receipt"))

    def _ack_id(self, frame: Frame) -> str:
        # 1.2 names the message by ``id`` (the MESSAGE's ``ack`` header), 1.0/1.1 by
        # ``message-id``. Clients mix them up (brokers.md 1.14), and our ``ack`` token
        # equals the ``message-id``, so either header is accepted in every version.
        h = frame.headers
        first, second = ("id", "message-id") if self.version == V12 else ("message-id", "id")
        value = h.get(first) or h.get(second)
        if not value:
            return _required(frame, first)
        return value

    def _ack(self, frame: Frame) -> Ack:
        h = frame.headers
        return Ack(self._ack_id(frame), h.get("subscription"), h.get("transaction"), h, h.get("receipt"))

    def _nack(self, frame: Frame) -> Nack:
        h = frame.headers
        return Nack(self._ack_id(frame), h.get("subscription"), h.get("transaction"), h, h.get("receipt"))

    def _begin(self, frame: Frame) -> Begin:
        return Begin(_required(frame, "transaction"), frame.headers.get("receipt"))

    def _commit(self, frame: Frame) -> Commit:
        return Commit(_required(frame, "transaction"), frame.headers.get("receipt"))

    def _abort(self, frame: Frame) -> Abort:
        return Abort(_required(frame, "transaction"), frame.headers.get("receipt"))

    def _disconnect(self, frame: Frame) -> Disconnect:
        return Disconnect(frame.headers.get("receipt"))

    # -- output ------------------------------------------------------------------------------

    def accept(self, session_id: str, now: float, extra_headers: Iterable[tuple[str, str]] = ()) -> bytes:
        """Finish the handshake: the CONNECTED frame, and full frame limits from now on."""
        self.state = transition(self.state, Trigger.ACCEPT)
        self.session_id = session_id
        self._parser.max_frame_size = self.limits.max_frame_size
        headers = [("version", self.version), ("server", self._server_name), ("session", session_id)]
        if self.version != V10:
            send_ms, recv_ms = negotiate(self._server_heartbeat, self._client_heartbeat)
            # Tell the client the intervals we settled on; by the spec's max() rule the
            # client derives the same values from them.
            headers.append(("heart-beat", f"{send_ms},{recv_ms}"))
            self._clock = HeartbeatClock.start(send_ms, recv_ms, self._grace, now)
        headers.extend(extra_headers)
        return encode_frame(Command.CONNECTED, headers, version=self.version)

    def error(
        self,
        message: str,
        detail: str = "",
        *,
        receipt_id: str | None = None,
        versions: str | None = None,
    ) -> bytes:
        """An ERROR frame; the connection is closed afterwards (the spec requires it)."""
        self.state = transition(self.state, Trigger.CLOSE)
        headers = [("message", message)]
        if receipt_id is not None:
            headers.append(("receipt-id", receipt_id))
        if versions is not None:
            headers.append(("version", versions))
        headers.append(("content-type", "text/plain"))
        return encode_frame(Command.ERROR, headers, detail.encode("utf-8"), version=self.version)

    def error_for(self, exc: StompProtocolError) -> bytes:
        return self.error(exc.message, exc.detail, receipt_id=exc.receipt_id, versions=exc.versions)

    def receipt(self, receipt_id: str, headers: Mapping[str, str] | None = None) -> bytes:
        """A RECEIPT; ``headers`` are extras (what the broker has to say about the frame)."""
        extra = tuple(headers.items()) if headers else ()
        return encode_frame(Command.RECEIPT, (("receipt-id", receipt_id), *extra), version=self.version)

    def message(
        self,
        destination: str,
        message_id: str,
        subscription: str,
        ack: str | None,
        headers: Iterable[tuple[str, str]],
        body: bytes,
    ) -> bytes:
        """A MESSAGE frame. ``headers`` are the message's own headers (user headers etc.)."""
        return self.message_with_block(
            destination, message_id, subscription, ack, self.encode_headers(headers), body
        )

    def encode_headers(self, headers: Iterable[tuple[str, str]]) -> str:
        """Header lines for this connection's version, for :meth:`message_with_block`.

        A header that cannot be written in this version (a line break in 1.0, a CR in 1.1:
        neither has an escape) is left out; written raw it would end the header line early
        and let a producer inject headers or a body.
        """
        version = self.version
        if version == V10:
            return "".join(f"{n}:{v}\n" for n, v in headers if _representable(n, v, version))
        return "".join(
            f"{escape(n, version)}:{escape(v, version)}\n"
            for n, v in headers
            if _representable(n, v, version)
        )

    def message_with_block(
        self,
        destination: str,
        message_id: str,
        subscription: str,
        ack: str | None,
        header_block: str,
        body: bytes,
    ) -> bytes:
        """A MESSAGE frame whose own headers come pre-encoded from :meth:`encode_headers`.

        The broker encodes a message's headers once per version, not once per delivery.
        """
        return self.message_head(destination, message_id, subscription, ack, header_block, len(body)) + (
            body + FRAME_END
        )

    def message_head(
        self,
        destination: str,
        message_id: str,
        subscription: str,
        ack: str | None,
        header_block: str,
        body_length: int,
    ) -> bytes:
        """Command and headers of a MESSAGE frame: the frame is ``head + body + FRAME_END``.

        A writer that gathers parts (as the broker does) saves copying every body twice.
        """
        version = self.version
        if version == V10:
            ack_line = "" if ack is None else f"ack:{ack}\n"
            head = (
                f"MESSAGE\ndestination:{destination}\nmessage-id:{message_id}\n"
                f"subscription:{subscription}\n{ack_line}{header_block}content-length:{body_length}\n\n"
            )
        else:
            ack_line = "" if ack is None else f"ack:{escape(ack, version)}\n"
            head = (
                f"MESSAGE\ndestination:{_escape_cached(destination, version)}\n"
                f"message-id:{escape(message_id, version)}\n"
                f"subscription:{_escape_cached(subscription, version)}\n{ack_line}{header_block}"
                f"content-length:{body_length}\n\n"
            )
        return head.encode("utf-8")

    def close(self) -> None:
        """The transport is gone; nothing more will be read or written."""
        self.state = transition(self.state, Trigger.CLOSE)

    # -- time --------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if self._clock is None or self.state is State.CLOSED:
            return None
        return self._clock.next_deadline()

    def note_received(self, now: float) -> None:
        """Count the peer as alive at ``now`` (its owner paused reading on purpose)."""
        if self._clock is not None:
            self._clock.last_received = now

    def note_sent(self, now: float) -> None:
        """Any bytes written count as a heart-beat."""
        if self._clock is not None:
            self._clock.last_sent = now

    def on_timer(self, now: float) -> BeatAction:
        """Check heart-beats at ``now``; for SEND_BEAT write :data:`EOL`."""
        if self._clock is None or self.state is State.CLOSED:
            return BeatAction.NOTHING
        action = self._clock.check(now)
        if action is BeatAction.SEND_BEAT:
            self._clock.last_sent = now
        return action

    @property
    def heartbeat_intervals(self) -> tuple[float, float]:
        """``(send, receive)`` in seconds; zero when off."""
        if self._clock is None:
            return (0.0, 0.0)
        return (self._clock.send_interval, self._clock.recv_interval)


class ClientConnection:
    """The client's side of one STOMP connection (used by :mod:`queueit.client`)."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.state = State.AWAITING_CONNECT
        self.version = V12
        self._parser = FrameParser(self.limits, max_frame_size=self.limits.max_frame_size)
        self._parser.version = V12
        self._wanted_heartbeat = (0, 0)
        self._clock: HeartbeatClock | None = None
        self._grace = 2.0

    def connect(
        self,
        host: str,
        *,
        login: str | None = None,
        passcode: str | None = None,
        heartbeat: tuple[int, int] = (0, 0),
        versions: Iterable[str] = SUPPORTED_VERSIONS,
        headers: Iterable[tuple[str, str]] = (),
        grace: float = 2.0,
    ) -> bytes:
        self.state = transition(self.state, Trigger.CONNECT)
        self._wanted_heartbeat = heartbeat
        self._grace = grace
        h = [
            ("accept-version", ",".join(versions)),
            ("host", host),
            ("heart-beat", f"{heartbeat[0]},{heartbeat[1]}"),
        ]
        if login is not None:
            h.append(("login", login))
        if passcode is not None:
            h.append(("passcode", passcode))
        h.extend(headers)
        return encode_frame(Command.CONNECT, h, version=V10)

    def receive_data(self, data: bytes, now: float) -> None:
        self._parser.feed(data)
        if self._clock is not None:
            self._clock.last_received = now

    def next_event(self, now: float) -> ServerEvent | None:
        """The next server frame as an event, or ``None`` when more bytes are needed.

        Raises:
            StompProtocolError: the server sent something malformed.
        """
        frame = self._parser.next_frame()
        if frame is None:
            return None
        h = frame.headers
        if frame.command is Command.CONNECTED:
            if self.state is not State.AUTHENTICATING:
                raise StompProtocolError(
                    "Unexpected frame", detail="CONNECTED may only answer the one CONNECT frame"
                )
            version = h.get("version", V10)
            if version not in SUPPORTED_VERSIONS:
                raise StompProtocolError("Unsupported version", detail=f"server chose {version!r}")
            self.version = version
            self._parser.version = version
            server_hb = parse_heartbeat(h.get("heart-beat"))
            send_ms, recv_ms = negotiate(self._wanted_heartbeat, server_hb)
            self._clock = HeartbeatClock.start(send_ms, recv_ms, self._grace, now)
            self.state = transition(self.state, Trigger.ACCEPT)
            return Connected(version, server_hb, h)
        if frame.command is Command.MESSAGE:
            return Message(
                h.get("destination", ""),
                h.get("message-id", ""),
                h.get("subscription", ""),
                h.get("ack"),
                h,
                frame.body,
            )
        if frame.command is Command.RECEIPT:
            return Receipt(h.get("receipt-id", ""), {k: v for k, v in h.items() if k != "receipt-id"})
        if frame.command is Command.ERROR:
            self.state = transition(self.state, Trigger.CLOSE)
            return ServerError(h.get("message", ""), h.get("receipt-id"), h, frame.body)
        raise StompProtocolError("Unexpected frame", detail=f"{frame.command.value} is not a server frame")

    def frame(self, command: Command, headers: Iterable[tuple[str, str]], body: bytes = b"") -> bytes:
        if self.state is not State.CONNECTED:
            raise LocalProtocolError(f"cannot send {command.value} in state {self.state.value}")
        if command is Command.DISCONNECT:
            self.state = transition(self.state, Trigger.DISCONNECT)
        return encode_frame(command, headers, body, version=self.version)

    def ack_headers(self, message: Message) -> list[tuple[str, str]]:
        """The headers that name ``message`` in an ACK or NACK, for the negotiated version."""
        if self.version == V12:
            return [("id", message.ack or message.message_id)]
        if self.version == V11:
            return [("message-id", message.message_id), ("subscription", message.subscription)]
        return [("message-id", message.message_id)]

    def next_deadline(self) -> float | None:
        return self._clock.next_deadline() if self._clock is not None else None

    def note_received(self, now: float) -> None:
        """Count the peer as alive at ``now`` (its owner is not reading, on purpose)."""
        if self._clock is not None:
            self._clock.last_received = now

    def note_sent(self, now: float) -> None:
        if self._clock is not None:
            self._clock.last_sent = now

    def on_timer(self, now: float) -> BeatAction:
        if self._clock is None:
            return BeatAction.NOTHING
        action = self._clock.check(now)
        if action is BeatAction.SEND_BEAT:
            self._clock.last_sent = now
        return action


__all__ = ["EOL", "V10", "V11", "V12", "ClientConnection", "ServerConnection"]
