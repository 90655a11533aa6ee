"""The contract every QueueStore keeps (see queueit.broker.storage.base); one suite for all stores."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from queueit.broker.messages import Message
from queueit.broker.storage import MemoryStore, MessageStore

STORES: list[Callable[[], MessageStore]] = [MemoryStore]


def msg(i: int) -> Message:
    return Message(f"m-{i}", "/queue/q", (), b"x" * i)


@pytest.fixture(params=STORES, ids=lambda f: f.__name__)
def store(request: pytest.FixtureRequest) -> MessageStore:
    factory: Callable[[], MessageStore] = request.param
    return factory()


def test_fifo_and_counts(store: MessageStore) -> None:
    q = store.open_queue("q")
    for i in range(1, 4):
        q.put(msg(i))
    assert len(q) == 3
    assert q.ready_bytes == 6
    taken = q.take()
    assert taken is not None
    assert taken.id == "m-1"
    assert len(q) == 2
    assert q.ready_bytes == 5
    q.settle(taken)
    assert [m.id for m in iter(q.take, None)] == ["m-2", "m-3"]
    assert q.take() is None


def test_requeue_goes_to_the_head_in_order(store: MessageStore) -> None:
    q = store.open_queue("q")
    for i in range(1, 5):
        q.put(msg(i))
    a, b = q.take(), q.take()
    assert a is not None
    assert b is not None
    q.requeue([a, b])
    assert [m.id for m in iter(q.take, None)] == ["m-1", "m-2", "m-3", "m-4"]


def test_purge_and_drop(store: MessageStore) -> None:
    q = store.open_queue("q")
    for i in range(1, 4):
        q.put(msg(i))
    assert q.purge() == 3
    assert len(q) == 0
    assert q.ready_bytes == 0
    q.put(msg(1))
    q.drop()
    assert len(q) == 0
    store.close()
