"""Transports: how jobs reach a broker. ``open_transport(url)`` picks one by URL scheme.

* ``queueit://host:port`` — queueit's own broker (the default);
* ``memory://[name]`` — in-process, for tests (``name`` picks one of several brokers);
* ``amqp://user:password@host:port/vhost`` — RabbitMQ.

Transport modules are imported when first used: a program that never names RabbitMQ never
imports its client library.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import (
    BlockingPublisher,
    Capabilities,
    Delivery,
    GroupOutcome,
    Leadership,
    MemberReport,
    Outgoing,
    StoredMessage,
    Transport,
    TransportClosed,
    TransportError,
    TransportRefused,
    Unique,
    Unsupported,
)

SCHEMES = ("queueit", "queueits", "memory", "amqp", "amqps")


def open_transport(url: str) -> Transport:
    """A transport (not yet connected) for ``url``.

    Raises:
        ValueError: the URL names no transport, or is malformed for its transport.
    """
    scheme = urlsplit(url).scheme
    if scheme in ("queueit", "queueits"):
        from .stomp import QueueitTransport

        return QueueitTransport.from_url(url)
    if scheme == "memory":
        from .memory import MemoryTransport, shared_broker

        return MemoryTransport(shared_broker(url[len("memory://") :].strip("/") or "default"))
    if scheme in ("amqp", "amqps"):
        from .amqp import AmqpTransport

        return AmqpTransport.from_url(url)
    raise ValueError(
        f"no transport for {url[:80]!r}: use queueit://host:port (queueits:// over TLS), memory:// or "
        "amqp://user:password@host/vhost"
    )


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
    "open_transport",
]
