"""The one place where every size bound of the STOMP layer is declared.

Every input from a peer is bounded by a field of :class:`Limits`; the parser and the
connection objects take a ``Limits`` value and never invent a bound of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class Limits:
    """Size and count bounds for one STOMP connection.

    Attributes:
        max_frame_size: command, headers and body of one frame together, in bytes.
        max_body_size: the body of one frame, in bytes.
        max_headers: header lines in one frame (repeated names count too: they cost memory).
        max_header_line: one header line (or the command line), in bytes.
        pre_connect_frame_size: any frame received before the connection is authenticated.
        max_subscriptions: open subscriptions on one connection.
        max_unacked: unacknowledged messages per subscription; a larger ``prefetch-count``
            is lowered to this value.
        default_prefetch: the prefetch of a subscription that does not ask for one.
        max_transactions: open transactions on one connection.
        max_transaction_frames: SEND/ACK/NACK frames buffered in one transaction.
    """

    max_frame_size: int = 4 * MIB + 64 * KIB
    max_body_size: int = 4 * MIB
    max_headers: int = 128
    max_header_line: int = 8 * KIB
    pre_connect_frame_size: int = 8 * KIB
    max_subscriptions: int = 256
    max_unacked: int = 10_000
    default_prefetch: int = 100
    max_transactions: int = 16
    max_transaction_frames: int = 10_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"limit {f.name} must be a positive integer, got {value!r}")
        if self.max_body_size > self.max_frame_size:
            raise ValueError("limit max_body_size must not exceed max_frame_size")
        if self.default_prefetch > self.max_unacked:
            raise ValueError("limit default_prefetch must not exceed max_unacked")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
