"""Heart-beat negotiation and deadlines; pure functions of a ``now`` passed in.

STOMP 1.1/1.2 "Heart-beating": CONNECT carries ``heart-beat:cx,cy`` and CONNECTED
``heart-beat:sx,sy`` (milliseconds; 0 means "cannot send" or "does not want").

* client to server: 0 if ``cx == 0 or sy == 0``, else ``max(cx, sy)``;
* server to client: 0 if ``sx == 0 or cy == 0``, else ``max(sx, cy)``.

Any received byte proves the peer alive. The receiver tolerates late beats: it declares
the peer dead only after ``interval * grace`` without a byte. The sender beats after
:data:`SEND_SHARE` of its interval without a write, so that a peer allowing little grace
sees a beat in time even from a side running late.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import StompProtocolError

#: Intervals above this (one day) are treated as a typo and refused.
MAX_INTERVAL_MS = 86_400_000
#: A beat goes out once this share of the send interval passed without a write (as
#: RabbitMQ's do): the spec asks for data "at least every" interval, and peers allow little
#: grace (stomp.py: 1.5 intervals), so a beat sent on the deadline and late by half an
#: interval (a loaded machine) would get a live connection declared dead.
SEND_SHARE = 0.5


def parse_heartbeat(value: str | None, *, receipt_id: str | None = None) -> tuple[int, int]:
    """Parse a ``heart-beat`` header; absent means ``0,0``.

    Raises:
        StompProtocolError: not two non-negative integers separated by a comma.
    """
    if value is None:
        return (0, 0)
    parts = value.split(",")
    if len(parts) != 2 or not all(p.strip(" ").isdigit() and p.isascii() for p in parts):
        raise StompProtocolError(
            "Invalid heart-beat header",
            detail=f"heart-beat must be two non-negative integers like '10000,10000', got {value!r}.",
            receipt_id=receipt_id,
        )
    numbers = [p.strip(" ").lstrip("0") or "0" for p in parts]
    if any(len(n) > len(str(MAX_INTERVAL_MS)) for n in numbers):
        first = second = MAX_INTERVAL_MS + 1  # too many digits (int() refuses more than 4300)
    else:
        first, second = (int(n) for n in numbers)
    if first > MAX_INTERVAL_MS or second > MAX_INTERVAL_MS:
        raise StompProtocolError(
            "Invalid heart-beat header",
            detail=f"heart-beat intervals may be at most {MAX_INTERVAL_MS} ms, got {value!r}.",
            receipt_id=receipt_id,
        )
    return (first, second)


def negotiate(local: tuple[int, int], remote: tuple[int, int]) -> tuple[int, int]:
    """Return ``(send_ms, receive_ms)`` for the side whose header is ``local``.

    ``local`` and ``remote`` are ``(can_send, wants_to_receive)`` pairs as sent in the
    two ``heart-beat`` headers.
    """
    local_send, local_recv = local
    remote_send, remote_recv = remote
    send_ms = 0 if local_send == 0 or remote_recv == 0 else max(local_send, remote_recv)
    recv_ms = 0 if remote_send == 0 or local_recv == 0 else max(remote_send, local_recv)
    return (send_ms, recv_ms)


class BeatAction(enum.Enum):
    NOTHING = "nothing"
    SEND_BEAT = "send-beat"
    PEER_DEAD = "peer-dead"


@dataclass(slots=True)
class HeartbeatClock:
    """Deadlines for one connection. Times are seconds on a monotonic clock."""

    send_interval: float  # seconds; 0 = we send no beats
    recv_interval: float  # seconds; 0 = we expect none
    grace: float
    last_sent: float
    last_received: float

    @classmethod
    def start(cls, send_ms: int, recv_ms: int, grace: float, now: float) -> HeartbeatClock:
        return cls(send_ms / 1000.0, recv_ms / 1000.0, grace, now, now)

    def next_deadline(self) -> float | None:
        deadlines = []
        if self.send_interval:
            deadlines.append(self.last_sent + self.send_interval * SEND_SHARE)
        if self.recv_interval:
            deadlines.append(self.last_received + self.recv_interval * self.grace)
        return min(deadlines) if deadlines else None

    def check(self, now: float) -> BeatAction:
        """What to do at ``now``; the caller records a sent beat with ``last_sent = now``."""
        if self.recv_interval and now >= self.last_received + self.recv_interval * self.grace:
            return BeatAction.PEER_DEAD
        if self.send_interval and now >= self.last_sent + self.send_interval * SEND_SHARE:
            return BeatAction.SEND_BEAT
        return BeatAction.NOTHING
