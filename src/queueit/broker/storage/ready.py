"""Ready messages in delivery order: priority 9 first, FIFO within a priority.

Ten deques, one per priority, and the index of the highest non-empty one, so that the
common case (every message at the default priority 4) costs one deque operation per
put and per take. Both stores keep their in-memory ready messages here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

from ..messages import Message

PRIORITIES = 10  # 0..9, higher first


class ReadyIndex:
    __slots__ = ("_by_priority", "_count", "_top", "bytes", "expiring")

    def __init__(self) -> None:
        self._by_priority: list[deque[Message]] = [deque() for _ in range(PRIORITIES)]
        self._top = -1  # highest priority that may be non-empty; -1 when empty
        self._count = 0
        self.bytes = 0
        self.expiring = 0  # messages with an ``expires`` time: a sweep is worth it

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Message]:
        """Every message, in delivery order."""
        for p in range(PRIORITIES - 1, -1, -1):
            yield from self._by_priority[p]

    def append(self, message: Message) -> None:
        p = message.priority
        self._by_priority[p].append(message)
        if p > self._top:  # noqa: PLR1730 - hot path: a compare is cheaper than max()
            self._top = p
        self._count += 1
        self.bytes += len(message.body)
        if message.expires:
            self.expiring += 1

    def push_front(self, messages: Sequence[Message]) -> None:
        """Put ``messages`` at the head of their priorities, keeping their given order."""
        for message in reversed(messages):
            p = message.priority
            self._by_priority[p].appendleft(message)
            if p > self._top:  # noqa: PLR1730 - hot path: a compare is cheaper than max()
                self._top = p
            self._count += 1
            self.bytes += len(message.body)
            if message.expires:
                self.expiring += 1

    def popleft(self) -> Message | None:
        if not self._count:
            return None
        by_priority = self._by_priority
        top = self._top
        while not by_priority[top]:
            top -= 1
        self._top = top
        message = by_priority[top].popleft()
        self._count -= 1
        self.bytes -= len(message.body)
        if message.expires:
            self.expiring -= 1
        return message

    def pop_last(self) -> Message | None:
        """Remove the message that would be delivered last."""
        if not self._count:
            return None
        for d in self._by_priority:
            if d:
                message = d.pop()
                self._count -= 1
                self.bytes -= len(message.body)
                if message.expires:
                    self.expiring -= 1
                return message
        raise AssertionError("count and deques disagree")  # pragma: no cover

    def last(self) -> Message | None:
        for d in self._by_priority:
            if d:
                return d[-1]
        return None

    def remove_expired(self, now_ms: int) -> list[Message]:
        """Remove and return the messages whose ``expires`` time has come, wherever they are."""
        if not self.expiring:
            return []
        removed: list[Message] = []
        for p, d in enumerate(self._by_priority):
            if d and any(0 < m.expires <= now_ms for m in d):
                removed.extend(m for m in d if 0 < m.expires <= now_ms)
                self._by_priority[p] = deque(m for m in d if not 0 < m.expires <= now_ms)
        for message in removed:
            self._count -= 1
            self.bytes -= len(message.body)
            self.expiring -= 1
        return removed

    def clear(self) -> list[Message]:
        removed = list(self)
        for d in self._by_priority:
            d.clear()
        self._top = -1
        self._count = 0
        self.bytes = 0
        self.expiring = 0
        return removed
