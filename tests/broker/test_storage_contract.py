"""The contract every QueueStore keeps (see queueit.broker.storage.base); one suite for all stores.

The durable store runs with tiny RAM windows here, so that every test also crosses the
boundary between the messages held in RAM and those read back from disk.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from queueit.broker.messages import Message
from queueit.broker.storage import MemoryStore, MessageStore, QueueStore, SyncPolicy
from queueit.broker.storage import journal as journal_module
from queueit.broker.storage.durable import DurableStore
from queueit.broker.storage.journal import JournalStats


class Harness:
    """A store plus the one thing tests need beyond the contract: waiting for the disk."""

    def __init__(self, make: Callable[[], MessageStore]) -> None:
        self.make = make
        self.store = make()

    def settle_io(self) -> None:
        if isinstance(self.store, DurableStore):
            self.store.flush()

    def poll(self) -> None:
        """Let the answers that have arrived so far in (the event loop would, at any time)."""
        if isinstance(self.store, DurableStore):
            self.store.poll()

    def take(self, q: QueueStore) -> Message | None:
        message = q.take()
        if message is None and len(q):
            self.settle_io()
            message = q.take()
        return message

    def take_all(self, q: QueueStore) -> list[Message]:
        out = []
        while (message := self.take(q)) is not None:
            out.append(message)
        return out

    def restart(self) -> None:
        self.settle_io()
        self.store.close()
        self.store = self.make()


def msg(i: int, priority: int = 4, *, persistent: bool = True, size: int | None = None) -> Message:
    return Message(
        f"m-{i}", "/queue/q", (("k", str(i)),), b"x" * (i if size is None else size), persistent, priority
    )


@pytest.fixture(params=["memory", "durable", "durable-window-2"])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "memory":
        harness = Harness(MemoryStore)
    else:
        window = 2 if request.param == "durable-window-2" else 8
        harness = Harness(
            lambda: DurableStore(tmp_path, window=window, window_bytes=1 << 20, schedule_window=6)
        )
    yield harness
    harness.settle_io()
    harness.store.close()


def ids(messages: list[Message]) -> list[str]:
    return [m.id for m in messages]


def test_fifo_and_counts(h: Harness) -> None:
    q = h.store.open_queue("q")
    for i in range(1, 4):
        q.put(msg(i))
    assert len(q) == 3
    assert q.ready_bytes == 6
    taken = h.take(q)
    assert taken is not None
    assert taken.id == "m-1"
    assert len(q) == 2
    assert q.ready_bytes == 5
    q.settle(taken)
    assert ids(h.take_all(q)) == ["m-2", "m-3"]
    assert h.take(q) is None


def test_requeue_goes_to_the_head_in_order(h: Harness) -> None:
    q = h.store.open_queue("q")
    for i in range(1, 5):
        q.put(msg(i))
    a, b = h.take(q), h.take(q)
    assert a is not None
    assert b is not None
    q.requeue([a, b])
    assert ids(h.take_all(q)) == ["m-1", "m-2", "m-3", "m-4"]


def test_priorities_higher_first_fifo_within(h: Harness) -> None:
    q = h.store.open_queue("q")
    order = [(1, 4), (2, 9), (3, 0), (4, 9), (5, 4), (6, 7)]
    for i, p in order:
        q.put(msg(i, p))
    assert ids(h.take_all(q)) == ["m-2", "m-4", "m-6", "m-1", "m-5", "m-3"]


def test_a_backlog_larger_than_the_window_comes_back_in_order(h: Harness) -> None:
    q = h.store.open_queue("q")
    for i in range(1, 101):
        q.put(msg(i, priority=9 if i % 10 == 0 else 4))
    assert len(q) == 100
    got = h.take_all(q)
    expected = [f"m-{i}" for i in range(10, 101, 10)] + [f"m-{i}" for i in range(1, 101) if i % 10]
    assert ids(got) == expected
    assert len(q) == 0
    assert q.ready_bytes == 0


def test_non_persistent_backlog_is_spilled_and_read_back(h: Harness) -> None:
    q = h.store.open_queue("q")
    for i in range(1, 41):
        q.put(msg(i, persistent=False))
    assert q.in_memory <= 40
    assert ids(h.take_all(q)) == [f"m-{i}" for i in range(1, 41)]


def test_purge_keeps_taken_messages_and_drop(h: Harness) -> None:
    q = h.store.open_queue("q")
    for i in range(1, 21):
        q.put(msg(i))
    held = h.take(q)
    assert held is not None
    assert q.purge() == 19
    assert len(q) == 0
    assert q.ready_bytes == 0
    q.requeue([held])  # what was out when the queue was purged comes back
    assert ids(h.take_all(q)) == ["m-1"]
    q.put(msg(1))
    q.drop()
    assert len(q) == 0


def test_delayed_messages_fire_when_due_in_due_order(h: Harness) -> None:
    q = h.store.open_queue("q")
    ready: list[int] = []
    q.on_ready = lambda: ready.append(1)
    for i, due in enumerate([5000, 1000, 3000, 2000, 4000, 1500, 2500, 6000, 7000, 3500], start=1):
        m = msg(i)
        m.due = due
        q.schedule(m)
    assert q.scheduled == 10
    assert len(q) == 0
    h.settle_io()
    h.store.tick(0)
    h.settle_io()
    h.store.tick(999)
    assert h.take(q) is None
    order = []
    for now in range(1000, 7001, 250):
        h.settle_io()
        h.store.tick(now)
        order += ids(h.take_all(q))
    assert order == ["m-2", "m-6", "m-4", "m-7", "m-3", "m-10", "m-5", "m-1", "m-8", "m-9"]
    assert q.scheduled == 0
    assert ready


def test_expire_removes_expired_messages_anywhere_in_the_queue(h: Harness) -> None:
    q = h.store.open_queue("q")
    found: list[Message] = []
    q.on_expired = found.extend
    for i in range(1, 31):
        m = msg(i)
        m.expires = 100 if i % 3 == 0 else 0
        q.put(m)
    found += q.expire(50)
    h.settle_io()
    assert found == []
    found += q.expire(100)
    h.settle_io()
    found += q.expire(100)
    h.settle_io()
    assert sorted(ids(found)) == sorted(f"m-{i}" for i in range(3, 31, 3))
    for m in found:
        q.settle(m)
    assert len(q) == 20
    assert ids(h.take_all(q)) == [f"m-{i}" for i in range(1, 31) if i % 3]


def test_model_random_operations_match_a_reference(h: Harness) -> None:
    """Random put/take/settle/requeue/purge against a plain sorted-list model."""
    seed = int(os.environ.get("QUEUEIT_TEST_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    q = h.store.open_queue("q")
    model: list[tuple[int, int, int, str]] = []  # (-priority, requeued-rank, seq, id)
    taken: list[Message] = []
    head = 0
    seq = 0
    for step in range(3000):
        roll = rng.random()
        if roll < 0.45:
            seq += 1
            p = rng.choice([4, 4, 4, 0, 9, 7])
            q.put(msg(seq, p, persistent=rng.random() < 0.8, size=5))
            model.append((-p, 0, seq, f"m-{seq}"))
        elif roll < 0.75:
            m = q.take() if rng.random() < 0.3 else None
            m = m or h.take(q)
            if not model:
                assert m is None, f"seed {seed} step {step}"
                continue
            model.sort()
            expected = model.pop(0)
            assert m is not None, f"seed {seed} step {step}"
            assert m.id == expected[3], f"seed {seed} step {step}"
            taken.append(m)
        elif roll < 0.88 and taken:
            q.settle(taken.pop(rng.randrange(len(taken))))
        elif roll < 0.98 and taken:
            back = [taken.pop(rng.randrange(len(taken))) for _ in range(min(len(taken), rng.randint(1, 3)))]
            q.requeue(back)
            for m in reversed(back):
                head -= 1
                model.append((-m.priority, head, 0, m.id))
        elif roll < 0.983:
            assert q.purge() == len(model), f"seed {seed} step {step}"
            model.clear()
        elif roll < 0.99:
            h.poll()
        else:
            h.settle_io()
        assert len(q) == len(model), f"seed {seed} step {step}"
    model.sort()
    assert ids(h.take_all(q)) == [e[3] for e in model], f"seed {seed}"


# -- the durable store alone: restarts ------------------------------------------------------


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(lambda: DurableStore(tmp_path, window=8, window_bytes=1 << 20, schedule_window=6))
    yield harness
    harness.settle_io()
    harness.store.close()


def test_persistent_messages_survive_a_restart_and_acked_ones_do_not(durable: Harness) -> None:
    q = durable.store.open_queue("q")
    for i in range(1, 31):
        q.put(msg(i, persistent=i % 2 == 0))
    first = durable.take(q)
    assert first is not None
    assert first.id == "m-1"
    second = durable.take(q)
    assert second is not None
    q.settle(second)  # m-2, persistent, acked
    durable.restart()
    assert durable.store.stored_queues() == ["q"]
    q = durable.store.open_queue("q")
    got = durable.take_all(q)
    # Non-persistent messages are gone; the acked m-2 too; a clean stop flags nothing.
    assert ids(got) == [f"m-{i}" for i in range(4, 31, 2)]
    assert not any(m.redelivered for m in got)


def test_requeued_messages_keep_their_place_and_delivery_count_across_a_restart(durable: Harness) -> None:
    q = durable.store.open_queue("q")
    for i in range(1, 21):
        q.put(msg(i))
    taken = [durable.take(q) for _ in range(3)]
    assert all(m is not None for m in taken)
    third = taken[2]
    assert third is not None
    third.deliveries = 2
    q.requeue([third])
    durable.restart()
    q = durable.store.open_queue("q")
    got = durable.take_all(q)
    # m-1 and m-2 were out, not acked: they are back too, in their original order.
    assert ids(got)[:3] == ["m-3", "m-1", "m-2"]
    assert got[0].deliveries == 2
    assert got[0].redelivered


def test_delayed_messages_survive_a_restart(durable: Harness) -> None:
    q = durable.store.open_queue("q")
    for i in range(1, 21):
        m = msg(i)
        m.due = 1000 + i
        q.schedule(m)
    durable.restart()
    q = durable.store.open_queue("q")
    assert q.scheduled == 20
    order = []
    for now in (0, 500, 1010, 1010, 1030, 1030, 1030):
        durable.settle_io()
        durable.store.tick(now)
        order += ids(durable.take_all(q))
    assert order == [f"m-{i}" for i in range(1, 21)]


def test_atomic_groups_commit_together(durable: Harness) -> None:
    store = durable.store
    assert isinstance(store, DurableStore)
    a: QueueStore = store.open_queue("a")
    b: QueueStore = store.open_queue("b")
    a.put(msg(1))
    durable.settle_io()
    m = durable.take(a)
    assert m is not None
    with store.atomic():
        a.settle(m)
        b.put(msg(2))
        pending = store.submitted
    durable.restart()
    a, b = durable.store.open_queue("a"), durable.store.open_queue("b")
    assert ids(durable.take_all(a)) == []
    assert ids(durable.take_all(b)) == ["m-2"]
    assert pending >= 1


def test_receipt_waiters_run_once_the_journal_has_the_writes(durable: Harness) -> None:
    store = durable.store
    q = store.open_queue("q")
    before = store.submitted
    q.put(msg(1))
    called: list[bool] = []
    store.when_done(before, called.append)
    assert called == []  # the journal's answer has not been let in yet
    durable.settle_io()
    assert called == [True]
    store.when_done(store.submitted, called.append)  # nothing new written: at once
    assert called == [True, True]


def test_disk_space_of_acked_messages_is_given_back_while_an_old_message_stays(tmp_path: Path) -> None:
    store = DurableStore(tmp_path)
    try:
        q = store.open_queue("q")
        for i in range(30_000):
            q.put(msg(i, size=1024))
        store.flush()
        db = tmp_path / "queueit.db"
        full = db.stat().st_size + (tmp_path / "queueit.db-wal").stat().st_size
        assert full > 30_000 * 1024
        oldest = q.take()  # delivered and never acked: it must not pin the file's size
        assert oldest is not None
        while (m := q.take()) is not None or len(q):
            if m is None:
                store.flush()
                continue
            q.settle(m)
        store.flush()
        deadline = time.monotonic() + 20
        while db.stat().st_size > full // 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert db.stat().st_size <= full // 4, f"{db.stat().st_size} bytes left of {full}"
        q.requeue([oldest])
        assert ids([durable_take(store, q)]) == ["m-0"]
    finally:
        store.close()


def durable_take(store: DurableStore, q: QueueStore) -> Message:
    m = q.take()
    if m is None:
        store.flush()
        m = q.take()
    assert m is not None
    return m


def test_a_full_disk_holds_receipts_loses_nothing_and_recovers(tmp_path: Path) -> None:
    """Writes that fail (disk full) are retried; no receipt goes out before they succeed."""
    store = DurableStore(tmp_path)
    q = store.open_queue("q")
    full = True

    def disk() -> None:
        if full:
            raise sqlite3.OperationalError("database or disk is full")

    store.journal.fault = disk
    receipts: list[bool] = []
    for i in range(1, 4):
        before = store.submitted
        q.put(msg(i))
        store.when_done(before, receipts.append)
    deadline = time.monotonic() + 5
    while store.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
        store.poll()
    assert store.error is not None
    assert "disk is full" in store.error
    assert store.stats()["failures"] >= 1
    assert receipts == []
    full = False  # space comes back
    store.flush()
    assert receipts == [True, True, True]
    assert store.stats()["error"] is None
    store.close()
    store = DurableStore(tmp_path)
    try:
        q = store.open_queue("q")
        assert len(q) == 3
    finally:
        store.close()


def test_a_take_during_an_expiry_scan_is_served_when_the_scan_ends(tmp_path: Path) -> None:
    """After a restart everything is on disk; the first sweep's read must not strand a consumer."""
    store = DurableStore(tmp_path)
    q = store.open_queue("q")
    for i in range(3):
        q.put(msg(i))
    store.flush()
    store.close()
    store = DurableStore(tmp_path)
    try:
        q = store.open_queue("q")
        ready: list[int] = []
        q.on_ready = lambda: ready.append(1)
        assert q.expire(int(time.time() * 1000)) == []  # the sweep's read goes out
        assert q.take() is None  # a consumer arrives meanwhile
        for _ in range(3):
            store.flush()
        assert ready
        assert ids([durable_take(store, q) for _ in range(3)]) == ["m-0", "m-1", "m-2"]
    finally:
        store.close()


def wait_for_a_commit(stats: JournalStats, batches: int, timeout: float = 10.0) -> None:
    """Poll until the journal's writer has committed a batch after its first ``batches``."""
    deadline = time.monotonic() + timeout
    while stats.batches == batches and time.monotonic() < deadline:
        time.sleep(0.005)


@pytest.fixture
def held_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DurableStore, QueueStore]]:
    """A durable store and its queue, flushed; the journal holds a batch nobody waits for up
    to 60 s: in a test, only a waiter (or a read) ends that wait."""
    monkeypatch.setattr(journal_module, "LAZY_SECONDS", 60.0)
    store = DurableStore(tmp_path)
    try:
        q = store.open_queue("q")
        store.flush()
        yield store, q
    finally:
        store.close()


def test_writes_nobody_waits_for_join_one_batch_until_someone_waits(
    held_store: tuple[DurableStore, QueueStore],
) -> None:
    store, q = held_store
    stats = store.journal.stats
    batches, operations = stats.batches, stats.operations
    before = store.submitted
    q.put(msg(1))  # wakes the idle writer, which then holds the batch for more
    time.sleep(0.05)
    for i in range(2, 11):  # acks and sends without receipts: they must not end the wait
        q.put(msg(i))
    time.sleep(0.3)
    assert (stats.batches, stats.operations) == (batches, operations)
    done: list[bool] = []
    store.when_done(before, done.append)  # a receipt waits: commit now
    wait_for_a_commit(stats, batches)
    assert (stats.batches, stats.operations) == (batches + 1, operations + 10)  # one commit
    store.flush()
    assert done == [True]


def test_a_read_ends_the_journal_s_lazy_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "LAZY_SECONDS", 60.0)
    store = DurableStore(tmp_path, window=2, window_bytes=1 << 20)
    try:
        q = store.open_queue("q")
        for i in range(1, 11):
            q.put(msg(i))
        store.flush()
        q.put(msg(11))  # the writer holds this one for more
        time.sleep(0.05)
        got: list[Message] = []
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            message = q.take()  # past the RAM window: a read from the journal
            if message is None:
                time.sleep(0.005)
                store.poll()
            else:
                got.append(message)
        assert ids(got) == ["m-1", "m-2", "m-3", "m-4", "m-5"]
    finally:
        store.close()


def test_a_receipt_asked_while_the_writer_takes_its_batch_ends_the_lazy_wait(
    held_store: tuple[DurableStore, QueueStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race, made to happen every time: the receipt is asked after the writer took the
    # batch (finding nobody waiting for it) and before it starts the lazy wait.
    store, q = held_store
    journal = store.journal
    urgent = journal._urgent
    taken, asked = threading.Event(), threading.Event()

    def racing(batch: list[tuple[object, ...]]) -> bool:
        answer = urgent(batch)
        taken.set()
        asked.wait(10)
        return answer

    monkeypatch.setattr(journal, "_urgent", racing)
    batches = journal.stats.batches
    before = store.submitted
    q.put(msg(1))
    assert taken.wait(10)
    store.when_done(before, lambda ok: None)  # the writer is between its take and its wait
    asked.set()
    wait_for_a_commit(journal.stats, batches)
    assert journal.stats.batches == batches + 1, "the receipt waited out the lazy wait"


def test_interval_policy_receipts_at_commit_and_fsyncs_within_the_interval(tmp_path: Path) -> None:
    store = DurableStore(tmp_path)
    try:
        q = store.open_queue("metrics", sync=SyncPolicy.parse("interval:50"))
        assert str(q.policy) == "interval:50"
        fsyncs = store.journal.stats.fsyncs
        before = store.submitted
        q.put(msg(1))
        done: list[bool] = []
        store.when_done(before, done.append)
        store.flush()
        assert done == [True]  # committed: safe from a crash of the process
        deadline = time.monotonic() + 2
        while store.journal.synced < store.done and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.journal.synced >= store.done  # and fsynced by the interval's deadline
        assert store.journal.stats.fsyncs > fsyncs
    finally:
        store.close()


def test_fsync_policies_parse_and_refuse_nonsense() -> None:
    assert SyncPolicy.parse("always") == SyncPolicy("always")
    assert SyncPolicy.parse("never") == SyncPolicy("never")
    assert SyncPolicy.parse("interval:250") == SyncPolicy("interval", 250)
    for bad in ("sometimes", "interval:", "interval:0", "interval:60001", "interval:-5", "interval:1e3", ""):
        with pytest.raises(ValueError, match="fsync policy"):
            SyncPolicy.parse(bad)
