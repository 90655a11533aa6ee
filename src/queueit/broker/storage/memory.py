"""The in-memory store: everything in RAM, nothing survives a restart."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from ..messages import Message
from .base import StoreCapabilities


class MemoryQueueStore:
    __slots__ = ("_bytes", "_ready")

    def __init__(self) -> None:
        self._ready: deque[Message] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._ready)

    @property
    def ready_bytes(self) -> int:
        return self._bytes

    def put(self, message: Message) -> None:
        self._ready.append(message)
        self._bytes += len(message.body)

    def take(self) -> Message | None:
        if not self._ready:
            return None
        message = self._ready.popleft()
        self._bytes -= len(message.body)
        return message

    def settle(self, message: Message) -> None:
        """Nothing to do: a taken message is only referenced by its subscription."""

    def requeue(self, messages: Sequence[Message]) -> None:
        for message in reversed(messages):
            self._ready.appendleft(message)
            self._bytes += len(message.body)

    def purge(self) -> int:
        count = len(self._ready)
        self._ready.clear()
        self._bytes = 0
        return count

    def drop(self) -> None:
        self.purge()


class MemoryStore:
    capabilities = StoreCapabilities(name="memory", durable=False)

    def open_queue(self, name: str) -> MemoryQueueStore:
        return MemoryQueueStore()

    def stored_queues(self) -> list[str]:
        return []

    def close(self) -> None:
        """Nothing to flush."""
