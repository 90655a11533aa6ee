"""The storage seam: where a queue keeps the messages it holds.

A queue asks its :class:`QueueStore` for the next ready message and tells it when a
message is settled (acked, dropped) or comes back (requeued). The in-memory store keeps
everything in RAM; the durable store keeps a bounded window of ready messages in RAM and
the rest on disk, and turns put/settle/requeue into journal records, so these calls are
the only places durability happens.

Ownership: a ``QueueStore`` belongs to exactly one :class:`~queueit.broker.queues.Queue`,
which belongs to the :class:`~queueit.broker.core.BrokerCore`; all calls come from the
event-loop thread.

Invariants every implementation keeps (checked by ``tests/broker/test_storage_contract.py``):

* order: ``take`` returns the highest priority first, FIFO within a priority, requeued
  messages before the others of their priority;
* ``requeue(ms)`` puts ``ms`` back at the head of their priorities, in the order given;
* a taken message is counted in neither ``len`` nor ``ready_bytes`` until requeued;
* ``settle`` forgets a taken message for good;
* ``take`` may return ``None`` while ``len`` is not zero when the next messages are on
  disk and not yet read back; the store calls ``on_ready`` once they are.

Receipts: ``MessageStore.submitted`` counts the journal writes handed to the store so
far; ``when_done(since, callback)`` calls back on the event-loop thread once the writes
after ``since`` are as durable as their queue's :class:`SyncPolicy` asks. A write that
fails is retried until it succeeds (publishers are held meanwhile), so the callback
never reports a loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..messages import Message


@dataclass(frozen=True, slots=True)
class StoreCapabilities:
    name: str
    durable: bool  # messages survive a restart of the broker


@dataclass(frozen=True, slots=True)
class SyncPolicy:
    """When a queue's journal writes reach the disk platter (fsync).

    ``always``: a receipt is sent after the fsync that covers the write (the default).
    ``interval``: a receipt is sent once the write is in the journal (safe from a crash
    of the broker process), and an fsync follows within ``interval_ms``.
    ``never``: as ``interval``, but the fsync is left to the operating system.
    """

    mode: Literal["always", "interval", "never"] = "always"
    interval_ms: int = 0

    @classmethod
    def parse(cls, text: str) -> SyncPolicy:
        """``always``, ``never`` or ``interval:<ms>``; raises ValueError otherwise."""
        if text == "always":
            return cls("always")
        if text == "never":
            return cls("never")
        if text.startswith("interval:"):
            raw = text[len("interval:") :]
            if raw.isdigit() and raw.isascii() and 1 <= int(raw) <= 60_000:
                return cls("interval", int(raw))
        raise ValueError(f"fsync policy must be always, never or interval:<1..60000 ms>, not {text!r}")

    def __str__(self) -> str:
        return f"interval:{self.interval_ms}" if self.mode == "interval" else self.mode


ALWAYS = SyncPolicy()


@dataclass(frozen=True, slots=True)
class Record:
    """A small value the broker keeps beside the messages (unique-key holds, progress).

    Records live in namespaces (``ns``) and are read back whole at start. A record lives
    until it is deleted, and at most until ``until`` (epoch ms; 0: no time limit). One tied
    to a message (``seq`` > 0) also dies with it: at start, such a record whose message is
    gone is kept only while ``until`` is ahead, and comes back with ``seq`` 0.
    """

    value: bytes
    until: int = 0
    seq: int = 0


class QueueStore(Protocol):
    #: Called (on the loop thread) when messages read back from disk, or delayed messages
    #: that are due, are ready to take.
    on_ready: Callable[[], None] | None
    #: Called with expired messages found on disk by ``expire``; they count as taken.
    on_expired: Callable[[list[Message]], None] | None
    dropped: bool

    @property
    def attributes(self) -> dict[str, str]:
        """What the broker keeps about the queue across restarts (e.g. a durable
        subscription's binding); change it with ``set_attributes``."""
        ...

    def set_attributes(self, attributes: dict[str, str]) -> None: ...

    @property
    def scheduled(self) -> int:
        """Delayed messages held for this queue."""
        ...

    @property
    def policy(self) -> SyncPolicy | None:
        """When writes reach the disk; None for a store that never writes."""
        ...

    @property
    def in_memory(self) -> int:
        """Ready messages held in RAM (the rest are on disk only)."""
        ...

    def __len__(self) -> int:
        """Ready messages (not counting those taken and not yet settled)."""
        ...

    @property
    def ready_bytes(self) -> int: ...

    def put(self, message: Message) -> None: ...

    def take(self) -> Message | None:
        """Remove and return the next ready message, or ``None``."""
        ...

    def settle(self, message: Message) -> None: ...

    def requeue(self, messages: Sequence[Message]) -> None: ...

    def schedule(self, message: Message) -> None:
        """Hold ``message`` (new, or taken) until ``message.due``; ``MessageStore.tick`` fires it."""
        ...

    def make_ready(self, message: Message) -> None:
        """A delayed message is due (called by the store's schedule)."""
        ...

    def expire(self, now_ms: int) -> list[Message]:
        """Remove and return ready messages whose ``expires`` has come (they count as
        taken: settle them); more may follow through ``on_expired``."""
        ...

    def peek(self, limit: int, reply: Callable[[list[Message]], None]) -> None:
        """Call back with up to ``limit`` ready messages in delivery order, leaving them
        where they are (perhaps later: those on disk are read first)."""
        ...

    def purge(self) -> int:
        """Drop every ready message; return how many."""
        ...

    def drop(self) -> None:
        """The queue is deleted: forget everything."""
        ...


class MessageStore(Protocol):
    capabilities: StoreCapabilities

    @property
    def submitted(self) -> int:
        """Journal writes handed to the store so far (a receipt waits for these)."""
        ...

    def open_queue(self, name: str, *, transient: bool = False, sync: SyncPolicy | None = None) -> QueueStore:
        """The store of queue ``name``; ``transient`` ones (subscription and temp queues)
        are never written and are forgotten at restart."""
        ...

    def stored_queues(self) -> list[str]:
        """Queues kept from before this start (empty for memory)."""
        ...

    def when_done(self, since: int, callback: Callable[[bool], None]) -> None:
        """Call back once the writes submitted after ``since`` (a value of ``submitted``)
        are durable (see the module doc); callbacks run in the order asked."""
        ...

    def atomic(self) -> AbstractContextManager[None]:
        """The writes made inside reach the disk together or not at all."""
        ...

    def tick(self, now_ms: int) -> None:
        """Fire the delayed messages due by ``now_ms``."""
        ...

    def records(self, now_ms: int) -> dict[str, dict[str, Record]]:
        """The records kept from before this start, by namespace and key, without the
        dead ones (see :class:`Record`); empty for memory."""
        ...

    def put_record(self, ns: str, key: str, record: Record) -> None:
        """Keep ``record`` (replacing the one under ``key``); durable with the next receipt."""
        ...

    def delete_record(self, ns: str, key: str) -> None: ...

    def drop_records(self, ns: str) -> None:
        """Delete every record of ``ns``."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters for ``queueit stat`` (fsyncs, batches...); empty when nothing is written."""
        ...

    def close(self) -> None: ...
