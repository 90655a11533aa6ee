"""What the clients of a crash run did, and the checks of the durable store's promises.

A *life* is one run of the broker process, from its start to its SIGKILL (or SIGTERM).
Clients record every message they send (``Sent``), every receipt they get, every
delivery they see (``Delivery``) and what they did to acknowledge it. After the run
(every client joined, the queues drained), :func:`check` compares that with the promises:

* a message whose SEND (or whose transaction's COMMIT) got a RECEIPT is never lost: it is
  delivered, and its last delivery is acknowledged (a delivery that was not acked before
  the broker died must be followed by a later delivery);
* a delivery that was not acked is delivered again (the same check);
* an ACK that got a RECEIPT is final: the message is not delivered in a later life;
* a message delivered again is flagged ``redelivered:true``, and so is every message
  recovered after a crash (delivered in a later life than the one it was sent in);
* a transaction is all or nothing: when one of its messages was recovered from disk
  after a crash, the COMMIT was on disk, so every one of its messages is kept like a
  receipted one; a transaction never committed delivers nothing;
* bodies come back byte for byte, and nothing unknown is delivered.

The checks use only what a client can see; an ACK sent but not receipted when the
broker died may or may not have been applied, so it is accepted either way.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections import defaultdict
from dataclasses import dataclass, field

# Acknowledgement state of one delivery.
NOT_ACKED = 0
ACK_SENT = 1  # the ACK frame was written; no RECEIPT (yet)
ACK_RECEIPTED = 2  # the RECEIPT of an ACK covering this delivery arrived

#: Most violations listed in a report (the count is always given).
MAX_LISTED = 25


def body_for(key: str) -> bytes:
    """The body of message ``key``: derived from the key, so every delivery can be verified."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    size = int(digest[:4], 16) % 1500
    filler = (digest * (size // len(digest) + 1))[:size]
    return f"{key}|{filler}".encode()


@dataclass
class Sent:
    key: str
    life: int
    queue: str
    tx: str | None = None
    receipted: bool = False


@dataclass
class Delivery:
    key: str
    life: int
    consumer: str
    redelivered: bool
    body_ok: bool
    ack: int = NOT_ACKED


@dataclass
class Tx:
    id: str
    life: int
    keys: list[str] = field(default_factory=list)
    commit_sent: bool = False
    committed: bool = False  # the COMMIT got its RECEIPT


class Ledger:
    """Shared by the client threads of a run: appends under a lock, read after they joined."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.sent: dict[str, Sent] = {}
        self.deliveries: list[Delivery] = []
        self.txs: dict[str, Tx] = {}
        self.unknown: list[str] = []  # deliveries of keys never sent
        self.errors: list[str] = []  # client failures other than the broker going away

    def new_key(self, life: int, client: str) -> str:
        return f"L{life}.{client}.{next(self._ids)}"

    def record_send(self, key: str, life: int, queue: str, tx: str | None = None) -> None:
        with self._lock:
            self.sent[key] = Sent(key, life, queue, tx)
            if tx is not None:
                self.txs[tx].keys.append(key)

    def record_receipt(self, key: str) -> None:
        self.sent[key].receipted = True

    def open_tx(self, tx: str, life: int) -> None:
        with self._lock:
            self.txs[tx] = Tx(tx, life)

    def commit_sent(self, tx: str) -> None:
        self.txs[tx].commit_sent = True

    def committed(self, tx: str) -> None:
        t = self.txs[tx]
        t.committed = True
        for key in t.keys:
            self.sent[key].receipted = True

    def record_delivery(self, key: str, life: int, consumer: str, redelivered: bool, body: bytes) -> Delivery:
        d = Delivery(key, life, consumer, redelivered, body == body_for(key))
        with self._lock:
            if key not in self.sent:
                self.unknown.append(f"{key!r} delivered to {consumer} in life {life}")
            self.deliveries.append(d)
        return d

    def error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    # -- the run's numbers ------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        redelivered = sum(1 for d in self.deliveries if d.redelivered)
        return {
            "sent": len(self.sent),
            "receipted": sum(1 for s in self.sent.values() if s.receipted),
            "transactions": len(self.txs),
            "deliveries": len(self.deliveries),
            "redelivered": redelivered,
            "acks_receipted": sum(1 for d in self.deliveries if d.ack == ACK_RECEIPTED),
        }


@dataclass
class Verdict:
    violations: list[str]
    lost: int
    counts: dict[str, int]

    def summary(self) -> str:
        parts = [f"{k}={v}" for k, v in self.counts.items()]
        return ", ".join(parts) + f", lost={self.lost}, violations={len(self.violations)}"

    def details(self) -> str:
        shown = self.violations[:MAX_LISTED]
        more = len(self.violations) - len(shown)
        return "\n".join(shown) + (f"\n... and {more} more" if more > 0 else "")


def check(ledger: Ledger) -> Verdict:
    """Every promise of the module doc, over a finished run."""
    v: list[str] = list(ledger.errors) + [f"unknown message {u}" for u in ledger.unknown]
    by_key: dict[str, list[Delivery]] = defaultdict(list)
    for d in ledger.deliveries:
        by_key[d.key].append(d)
    sent = ledger.sent

    # Transactions whose COMMIT is known to be on disk: one message came back after a crash.
    durable_txs: set[str] = set()
    for key, ds in by_key.items():
        s = sent.get(key)
        if s is not None and s.tx is not None and any(d.life > s.life for d in ds):
            durable_txs.add(s.tx)

    for key, ds in by_key.items():
        s = sent.get(key)
        if s is None:
            continue  # reported as unknown
        where = f"{key} (sent in life {s.life}, to {s.queue}{', tx ' + s.tx if s.tx else ''})"
        lives = sorted({d.life for d in ds})
        if not all(d.body_ok for d in ds):
            v.append(f"corrupted body: {where}")
        for d in ds:
            if d.life > s.life and not d.redelivered:
                v.append(
                    f"recovered after a crash but not flagged redelivered: {where}, "
                    f"delivered in life {d.life}"
                )
        first = lives[0]
        for life in lives:
            unflagged = [d for d in ds if d.life == life and not d.redelivered]
            if life > first and unflagged:
                v.append(
                    f"delivered again without redelivered:true: {where}, first delivered in life {first}, "
                    f"again in life {life} to {unflagged[0].consumer}"
                )
            elif len(unflagged) > 1:
                v.append(f"delivered twice in life {life} without redelivered:true: {where}")
        receipted_acks = [d.life for d in ds if d.ack == ACK_RECEIPTED]
        if receipted_acks and lives[-1] > min(receipted_acks):
            v.append(
                f"delivered again after its ACK got a RECEIPT: {where}, acked in life {min(receipted_acks)}, "
                f"delivered in life {lives[-1]}"
            )
        if s.tx is not None and not ledger.txs[s.tx].commit_sent:
            v.append(f"delivered, but its transaction was never committed: {where}")

    lost = 0
    torn: dict[str, list[str]] = defaultdict(list)  # transaction -> its lost keys
    for key, s in sent.items():
        durable = s.receipted or (s.tx is not None and s.tx in durable_txs)
        if not durable:
            continue
        why = "receipted" if s.receipted else "its transaction came back after a crash"
        where = f"{key} (sent in life {s.life}, to {s.queue}, {why})"
        seen = by_key.get(key)
        last = max((d.life for d in seen), default=-1) if seen else -1
        if seen and any(d.ack != NOT_ACKED for d in seen if d.life == last):
            continue
        lost += 1
        if not s.receipted:
            assert s.tx is not None
            torn[s.tx].append(key)
        elif not seen:
            v.append(f"LOST, never delivered: {where}")
        else:
            v.append(f"LOST, delivered in life {last} without an ACK and never again: {where}")
    for tx, keys in torn.items():
        t = ledger.txs[tx]
        v.append(
            f"TORN TRANSACTION {tx} (life {t.life}, COMMIT sent, no RECEIPT before the kill): some of its "
            f"messages were recovered after the crash, but {len(keys)} of its {len(t.keys)} are lost "
            f"(never delivered again, never acked), e.g. {', '.join(keys[:3])}"
        )

    counts = ledger.stats()
    counts["durable_txs_recovered"] = len(durable_txs)
    return Verdict(v, lost, counts)
