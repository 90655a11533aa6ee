"""The broker's message value."""

from __future__ import annotations

from dataclasses import dataclass

#: SEND headers that steer the broker and are not passed on in MESSAGE frames.
CONTROL_HEADERS = frozenset(
    {"destination", "receipt", "transaction", "content-length", "message-id", "subscription", "ack"}
)


def header(headers: tuple[tuple[str, str], ...], name: str) -> str:
    """The first ``name`` header's value, or ""."""
    for k, v in headers:
        if k == name:
            return v
    return ""


@dataclass(slots=True, eq=False)
class Message:
    """One message as a queue holds it.

    ``headers`` are the headers passed on to consumers, in the order the producer sent
    them (the producer's own headers plus ``content-type``, ``persistent`` etc.).
    Identity, not value, makes two messages equal: a topic copy is a different message.
    """

    id: str
    destination: str  # as the producer addressed it
    headers: tuple[tuple[str, str], ...]
    body: bytes
    persistent: bool = False
    priority: int = 4
    expires: int = 0  # epoch milliseconds; 0 = never
    redelivered: bool = False
    deliveries: int = 0
    # Set by the queue's store: order of arrival (unique per store), and whether a record
    # of the message is on disk (so settling it must delete that record).
    seq: int = 0
    stored: bool = False
    rank: int = 0  # order within its priority in a durable queue (see storage.journal)
    due: int = 0  # epoch ms a delayed message becomes ready; 0 = ready now
    unique: str = ""  # its unique-key header (see queueit.broker.unique)
    lease_until: int = 0  # epoch ms a client-ack delivery must be acked by (see queues.Leases)
    # The subscription that gave it back (NACK, lease ran out): others get it first.
    avoid: object | None = None
    # The headers encoded for the STOMP version of the last delivery (see Session.deliver).
    encoded_version: str = ""
    encoded_block: str = ""

    @property
    def size(self) -> int:
        return len(self.body)
