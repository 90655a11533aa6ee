"""The in-memory store: everything in RAM, nothing survives a restart."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..messages import Message
from .base import Record, StoreCapabilities, SyncPolicy
from .ready import ReadyIndex
from .schedule import Schedule


class MemoryQueueStore:
    __slots__ = (
        "_ready",
        "_schedule",
        "_seq",
        "attributes",
        "dropped",
        "on_expired",
        "on_ready",
        "scheduled",
    )
    policy = None  # nothing is written

    def __init__(self, schedule: Schedule | None = None, seq: Iterator[int] | None = None) -> None:
        self._ready = ReadyIndex()
        self._seq = itertools.count(1) if seq is None else seq
        self._schedule = Schedule() if schedule is None else schedule  # shared by a store's queues
        self.on_ready: Callable[[], None] | None = None
        self.on_expired: Callable[[list[Message]], None] | None = None  # never called: all is in RAM
        self.scheduled = 0
        self.dropped = False
        self.attributes: dict[str, str] = {}

    def set_attributes(self, attributes: dict[str, str]) -> None:
        self.attributes = dict(attributes)

    def __len__(self) -> int:
        return len(self._ready)

    @property
    def ready_bytes(self) -> int:
        return self._ready.bytes

    @property
    def in_memory(self) -> int:
        return len(self._ready)

    def put(self, message: Message) -> None:
        message.seq = next(self._seq)
        self._ready.append(message)

    def take(self) -> Message | None:
        return self._ready.popleft()

    def settle(self, message: Message) -> None:
        """Nothing to do: a taken message is only referenced by its subscription."""

    def requeue(self, messages: Sequence[Message]) -> None:
        self._ready.push_front(messages)

    def schedule(self, message: Message) -> None:
        if not message.seq:
            message.seq = next(self._seq)
        self.scheduled += 1
        self._schedule.add(self, message)

    def make_ready(self, message: Message) -> None:
        self.scheduled -= 1
        self._ready.append(message)

    def expire(self, now_ms: int) -> list[Message]:
        return self._ready.remove_expired(now_ms)

    def peek(self, limit: int, reply: Callable[[list[Message]], None]) -> None:
        reply(list(itertools.islice(self._ready, limit)))

    def purge(self) -> int:
        return len(self._ready.clear())

    def drop(self) -> None:
        self.purge()
        self.dropped = True
        if self.scheduled:
            self._schedule.remove_owner(self)
            self.scheduled = 0


class MemoryStore:
    capabilities = StoreCapabilities(name="memory", durable=False)
    submitted = 0  # no writes, so nothing for a receipt to wait for

    def __init__(self) -> None:
        self._schedule = Schedule()
        self._seq = itertools.count(1)

    def open_queue(
        self, name: str, *, transient: bool = False, sync: SyncPolicy | None = None
    ) -> MemoryQueueStore:
        return MemoryQueueStore(self._schedule, self._seq)

    def stored_queues(self) -> list[str]:
        return []

    def atomic(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def tick(self, now_ms: int) -> None:
        for owner in self._schedule.fire(now_ms):
            if owner.on_ready is not None:
                owner.on_ready()

    def when_done(self, since: int, callback: Callable[[bool], None]) -> None:
        callback(True)

    # Records live in their owners' RAM; a memory store has nothing to keep them in.
    def records(self, now_ms: int) -> dict[str, dict[str, Record]]:
        return {}

    def put_record(self, ns: str, key: str, record: Record) -> None:
        pass

    def delete_record(self, ns: str, key: str) -> None:
        pass

    def drop_records(self, ns: str) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        """Nothing to flush."""
