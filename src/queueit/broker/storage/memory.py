"""The in-memory store: everything in RAM, nothing survives a restart."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from ..messages import Message
from .base import StoreCapabilities, SyncPolicy
from .ready import ReadyIndex


class MemoryQueueStore:
    __slots__ = ("_ready", "_seq", "on_ready")
    policy = None  # nothing is written

    def __init__(self) -> None:
        self._ready = ReadyIndex()
        self._seq = itertools.count(1)
        self.on_ready: Callable[[], None] | None = None  # never called: nothing is ever loaded

    def __len__(self) -> int:
        return len(self._ready)

    @property
    def in_memory(self) -> int:
        return len(self._ready)

    @property
    def ready_bytes(self) -> int:
        return self._ready.bytes

    def put(self, message: Message) -> None:
        message.seq = next(self._seq)
        self._ready.append(message)

    def take(self) -> Message | None:
        return self._ready.popleft()

    def settle(self, message: Message) -> None:
        """Nothing to do: a taken message is only referenced by its subscription."""

    def requeue(self, messages: Sequence[Message]) -> None:
        self._ready.push_front(messages)

    def purge(self) -> int:
        return len(self._ready.clear())

    def drop(self) -> None:
        self.purge()


class MemoryStore:
    capabilities = StoreCapabilities(name="memory", durable=False)
    submitted = 0  # no writes, so nothing for a receipt to wait for

    def open_queue(
        self, name: str, *, transient: bool = False, sync: SyncPolicy | None = None
    ) -> MemoryQueueStore:
        return MemoryQueueStore()

    def stored_queues(self) -> list[str]:
        return []

    def when_done(self, ticket: int, callback: Callable[[bool], None]) -> None:
        callback(True)

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        """Nothing to flush."""
