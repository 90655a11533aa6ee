"""Exchanges: direct, fanout and topic routing from a key to bound queues."""

from __future__ import annotations

import enum

from .destinations import topic_matches
from .queues import Queue

TOPIC_EXCHANGE = "amq.topic"  # the built-in exchange behind /topic/
_ROUTE_CACHE_SIZE = 10_000


class ExchangeType(enum.Enum):
    DIRECT = "direct"
    FANOUT = "fanout"
    TOPIC = "topic"


class Exchange:
    """Bindings of one exchange. Routes are cached per key until the bindings change."""

    __slots__ = ("_cache", "bindings", "builtin", "name", "type")

    def __init__(self, name: str, type: ExchangeType, *, builtin: bool = False) -> None:
        self.name = name
        self.type = type
        self.builtin = builtin
        self.bindings: list[tuple[str, Queue]] = []
        self._cache: dict[str, list[Queue]] = {}

    def bind(self, queue: Queue, key: str) -> None:
        if (key, queue) not in self.bindings:
            self.bindings.append((key, queue))
            queue.bindings.add((self.name, key))
            self._cache.clear()

    def unbind(self, queue: Queue, key: str | None = None) -> None:
        kept = [(k, q) for k, q in self.bindings if not (q is queue and (key is None or k == key))]
        for k, q in self.bindings:
            if q is queue and (key is None or k == key):
                queue.bindings.discard((self.name, k))
        self.bindings = kept
        self._cache.clear()

    def route(self, key: str) -> list[Queue]:
        """Queues a message with routing ``key`` goes to, each once."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if self.type is ExchangeType.FANOUT:
            matched = [q for _, q in self.bindings]
        elif self.type is ExchangeType.DIRECT:
            matched = [q for k, q in self.bindings if k == key]
        else:
            matched = [q for k, q in self.bindings if topic_matches(k, key)]
        result = list(dict.fromkeys(matched))
        if len(self._cache) >= _ROUTE_CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = result
        return result
