"""Delayed messages held in RAM, soonest first: the part of a schedule that is due soon.

Both stores keep one :class:`Schedule` for all their queues. The memory store keeps
every delayed message here; the durable store only those due first (the rest wait in the
journal, see :mod:`.durable`).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Protocol

from ..messages import Message


class Owner(Protocol):
    """The queue store a delayed message goes back to when it is due."""

    dropped: bool
    on_ready: Callable[[], None] | None

    def make_ready(self, message: Message) -> None: ...


class Schedule:
    __slots__ = ("_heap", "_tie")

    def __init__(self) -> None:
        # (due, seq, tie, owner, message): seq orders equal due times (arrival order within a
        # queue); the tie counter is unique, so owners are never compared.
        self._heap: list[tuple[int, int, int, Owner, Message]] = []
        self._tie = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, owner: Owner, message: Message) -> None:
        heapq.heappush(self._heap, (message.due, message.seq, next(self._tie), owner, message))

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def fire(self, now_ms: int) -> set[Owner]:
        """Make every message due by ``now_ms`` ready; return the stores that got some."""
        heap = self._heap
        touched: set[Owner] = set()
        while heap and heap[0][0] <= now_ms:
            _, _, _, owner, message = heapq.heappop(heap)
            if not owner.dropped:
                message.due = 0
                owner.make_ready(message)
                touched.add(owner)
        return touched

    def trim(self, keep: int) -> list[tuple[Owner, Message]]:
        """Keep the ``keep`` soonest; remove and return the others."""
        entries = sorted(self._heap, key=lambda e: (e[0], e[1], e[2]))
        self._heap = entries[:keep]  # a sorted list is a heap
        return [(owner, message) for _, _, _, owner, message in entries[keep:]]

    def last_key(self) -> tuple[int, int] | None:
        if not self._heap:
            return None
        due, seq, _, _, _ = max(self._heap, key=lambda e: (e[0], e[1]))
        return (due, seq)

    def remove_owner(self, owner: Owner) -> None:
        self._heap = [e for e in self._heap if e[3] is not owner]
        heapq.heapify(self._heap)
