"""Frame building shared by the blocking and asyncio clients (one place, no I/O)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from ..stomp import ClientConnection, Command, Message, ServerError
from .errors import ServerRefused

Body = bytes | str
Headers = Mapping[str, str] | None


@dataclass(frozen=True, slots=True)
class LoginSettings:
    """What a client's CONNECT frame says."""

    vhost: str
    login: str | None
    passcode: str | None
    heartbeat: tuple[int, int]
    versions: tuple[str, ...]
    client_id: str | None = None  # names the client for durable subscriptions


class FrameBuilder:
    """Turns client calls into frame bytes; tracks receipt and subscription ids."""

    def __init__(self, conn: ClientConnection, login: LoginSettings) -> None:
        self.conn = conn
        self.login = login
        self._ids = itertools.count(1)

    def connect(self) -> bytes:
        s = self.login
        extra = () if s.client_id is None else (("client-id", s.client_id),)
        return self.conn.connect(
            s.vhost,
            login=s.login,
            passcode=s.passcode,
            heartbeat=s.heartbeat,
            versions=s.versions,
            headers=extra,
        )

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def send(
        self,
        destination: str,
        body: Body,
        headers: Headers,
        transaction: str | None,
        content_type: str | None,
        receipt: str | None,
    ) -> bytes:
        data = body.encode("utf-8") if isinstance(body, str) else body
        h = [("destination", destination)]
        if content_type is None and isinstance(body, str):
            content_type = "text/plain;charset=utf-8"
        if content_type is not None:
            h.append(("content-type", content_type))
        if transaction is not None:
            h.append(("transaction", transaction))
        if headers:
            h.extend(headers.items())
        if receipt is not None:
            h.append(("receipt", receipt))
        return self.conn.frame(Command.SEND, h, data)

    def subscribe(
        self,
        destination: str,
        sub_id: str,
        ack: str,
        prefetch: int | None,
        headers: Headers,
        receipt: str | None,
    ) -> bytes:
        h = [("destination", destination), ("id", sub_id), ("ack", ack)]
        if prefetch is not None:
            h.append(("prefetch-count", str(prefetch)))
        if headers:
            h.extend(headers.items())
        if receipt is not None:
            h.append(("receipt", receipt))
        return self.conn.frame(Command.SUBSCRIBE, h)

    def simple(self, command: Command, headers: list[tuple[str, str]], receipt: str | None) -> bytes:
        if receipt is not None:
            headers = [*headers, ("receipt", receipt)]
        return self.conn.frame(command, headers)

    def settle(
        self,
        command: Command,
        message: Message,
        transaction: str | None,
        headers: Headers,
        receipt: str | None,
    ) -> bytes:
        h = self.conn.ack_headers(message)
        if transaction is not None:
            h.append(("transaction", transaction))
        if headers:
            h.extend(headers.items())
        return self.simple(command, h, receipt)

    def extend_lease(self, message: Message, lease_ms: int, receipt: str | None) -> bytes:
        """SEND /queueit/lease: keep ``message`` leased for ``lease_ms`` more (a queueit extension)."""
        if not 1 <= lease_ms <= 10 * 365 * 86_400_000:
            raise ValueError(f"lease_ms must be a positive number of milliseconds, got {lease_ms}")
        ack_id = message.ack or message.message_id
        return self.send(LEASE_DESTINATION, b"", {"id": ack_id, "lease": str(lease_ms)}, None, None, receipt)

    def flow(self, sub_id: str, prefetch: int, receipt: str | None) -> bytes:
        """SEND /queueit/flow: change a subscription's prefetch; 0 pauses it (a queueit extension)."""
        if not 0 <= prefetch <= 999_999_999:
            raise ValueError(f"prefetch must be from 0 to 999999999, got {prefetch}")
        headers = {"subscription": sub_id, "prefetch": str(prefetch)}
        return self.send(FLOW_DESTINATION, b"", headers, None, None, receipt)


def nack_headers(
    requeue: bool, delay_ms: int | None, reason: str | None, error: str | None = None, started: bool = True
) -> dict[str, str]:
    """NACK's queueit headers: drop to the dead-letter queue (saying why), or come back after
    a delay; ``started=False``: never begun on, so not counted toward the delivery limit."""
    headers = {}
    if not started:
        headers["started"] = "false"
    if not requeue:
        headers["requeue"] = "false"
        if error:
            headers["error"] = error[:1000]
    if delay_ms:
        headers["delay"] = str(delay_ms)
    if reason is not None:
        if reason not in ("rejected", "invalid"):
            raise ValueError(f"reason must be 'rejected' or 'invalid', not {reason!r}")
        headers["reason"] = reason
    return headers


LEASE_DESTINATION = "/queueit/lease"
FLOW_DESTINATION = "/queueit/flow"


def refused(event: ServerError) -> ServerRefused:
    return ServerRefused(event.message, event.body.decode("utf-8", "replace"), event.receipt_id)
