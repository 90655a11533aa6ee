"""The storage seam: where a queue keeps the messages it holds.

A queue asks its :class:`QueueStore` for the next ready message and tells it when a
message is settled (acked, dropped) or comes back (requeued). The in-memory store keeps
everything in RAM; the durable store (a later issue) keeps ready messages on disk and
writes settle/requeue records, so these calls are the only places durability happens.

Ownership: a ``QueueStore`` belongs to exactly one :class:`~queueit.broker.queues.Queue`,
which belongs to the :class:`~queueit.broker.core.BrokerCore`; all calls come from the
event-loop thread.

Invariants every implementation keeps (checked by ``tests/broker/storage_contract.py``):

* FIFO: ``take`` returns messages in ``put`` order, after any requeued ones;
* ``requeue(ms)`` puts ``ms`` back at the head, in the order given;
* a taken message is counted in neither ``len`` nor ``ready_bytes`` until requeued;
* ``settle`` forgets a taken message for good.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..messages import Message


@dataclass(frozen=True, slots=True)
class StoreCapabilities:
    name: str
    durable: bool  # messages survive a restart of the broker


class QueueStore(Protocol):
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

    def purge(self) -> int:
        """Drop every ready message; return how many."""
        ...

    def drop(self) -> None:
        """The queue is deleted: forget everything."""
        ...


class MessageStore(Protocol):
    capabilities: StoreCapabilities

    def open_queue(self, name: str) -> QueueStore: ...

    def stored_queues(self) -> list[str]:
        """Queues that hold messages from before this start (empty for memory)."""
        ...

    def close(self) -> None: ...
