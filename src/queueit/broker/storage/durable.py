"""The durable store: a bounded window of ready messages in RAM, the rest in the journal.

Every queue keeps at most ``window`` ready messages (and ``window_bytes`` of bodies) in
RAM; the others live only in the journal (:mod:`.journal`) and are read back in chunks,
by the journal thread, before the window runs dry. So a backlog of millions of messages
costs a few counters of RAM per queue, not the messages.

Invariant (the window is a prefix): every message in the window comes before, in
delivery order, every message that is only on disk ("spilled"). Hence:

* a new message goes to the window only when no spilled message of its priority or a
  higher one exists (it would otherwise jump ahead of them); else it is spilled; a
  message put back at the head of its priority, only when none of a higher one exists;
* when the window is over its bounds, its last messages are spilled (never while a read
  is on its way, so that the read's answer still fits after the window);
* a read asks for the first messages after the window's last one; of the answer, only
  messages that were spilled before the read was asked, and that come before every
  message spilled since, join the window. The rest stay on disk for the next read.

Persistent messages are written when they arrive (the receipt waits for that write);
non-persistent ones only when they are spilled, and the journal drops them at start.

Delayed messages follow the same rule across all queues, ordered by (due, seq): the
soonest are in a heap in RAM (:mod:`.schedule`), the rest only in the journal, read back
in chunks before they are due. Every delayed message is written when it arrives.

Ownership: all of this runs on the event-loop thread; the journal thread only answers.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..messages import Message, header
from .base import ALWAYS, Record, StoreCapabilities, SyncPolicy
from .journal import (
    ADD_QUEUE,
    DELETE,
    DELETE_RECORD,
    DROP,
    DROP_RECORDS,
    GROUP,
    INSERT,
    L_BODY,
    L_DELIVERIES,
    L_DEST,
    L_DUE,
    L_EXPIRES,
    L_HEADERS,
    L_ID,
    L_PERSISTENT,
    L_PKEY,
    L_QUEUE,
    L_RANK,
    L_SEQ,
    LOAD,
    LOAD_DUE,
    PURGE,
    PUT_RECORD,
    READY,
    REQUEUE,
    RESCHEDULE,
    SET_ATTRIBUTES,
    Journal,
    QueueCounts,
    Row,
)
from .memory import MemoryQueueStore
from .ready import PRIORITIES, ReadyIndex
from .schedule import Schedule

log = logging.getLogger("queueit.broker.storage")

#: Ready messages (and bytes of body) a queue keeps in RAM at most.
WINDOW = 10_000  # above queues.FLOW_HIGH: a queue with consumers never spills
WINDOW_BYTES = 16 * 1024 * 1024
#: Messages read back from disk at a time.
LOAD_CHUNK = 1_000
#: Delayed messages kept in RAM at most, and read back at a time.
SCHEDULE_WINDOW = 20_000
SCHEDULE_CHUNK = 1_000  # built on the loop thread: small reads keep its stalls short
#: Read delayed messages back this long before they are due.
SCHEDULE_LOOKAHEAD_MS = 2_000
INFINITY = (2**63, 2**63)
#: Reads write nothing: they never make a receipt wait for an fsync.
READ = SyncPolicy("never")

Reply = Callable[[list[Row]], None]
Posted = Callable[[Callable[[], None]], object]


class DurableStore:
    """The :class:`~queueit.broker.storage.base.MessageStore` of ``queueit serve``.

    ``post(fn)`` runs ``fn`` on the event-loop thread soon (``loop.call_soon_threadsafe``);
    ``defer(wake)`` wakes the journal writer later on the loop thread (see ``Journal.defer``);
    without one, answers wait in a list that :meth:`flush` runs (tests, tools).
    """

    capabilities = StoreCapabilities(name="sqlite", durable=True)

    def __init__(
        self,
        data_dir: Path,
        *,
        post: Posted | None = None,
        defer: Posted | None = None,
        window: int = WINDOW,
        window_bytes: int = WINDOW_BYTES,
        schedule_window: int = SCHEDULE_WINDOW,
    ) -> None:
        self._post_to_loop = post
        self._inbox: deque[Callable[[], None]] = deque()
        self.window = window
        self.window_bytes = window_bytes
        self.journal = Journal(data_dir / "queueit.db", self._from_journal)
        self.journal.defer = defer
        rec = self.journal.recovery
        self.last_seq = rec.max_seq
        self._head_rank = rec.min_rank  # requeued messages get ranks below every other
        self._recovered_through = 0 if rec.clean else rec.max_seq
        self._counts: dict[str, QueueCounts] = dict(rec.queues)
        self._by_id: dict[int, DurableQueueStore] = {}
        self._next_queue_id = max((c.id for c in rec.queues.values()), default=0) + 1
        self._submitted = 0
        self._group: list[tuple[object, ...]] | None = None
        self._group_sync = False
        self._last_always = 0  # the last submitted write of a queue with fsync "always"
        self.done = 0  # operations committed
        self.synced = 0  # operations committed and fsynced
        self.error: str | None = None
        # (ticket, needs fsync, callback), in the order receipts were asked for
        self._waiters: deque[tuple[int, bool, Callable[[bool], None]]] = deque()
        # Delayed messages: the soonest in RAM, the rest on disk only (see the module doc).
        self._schedule = Schedule()
        self._schedule_window = schedule_window
        self._sched_on_disk = sum(c.scheduled for c in rec.queues.values())
        self._sched_cursor: tuple[int, int] = (-1, -1) if self._sched_on_disk else INFINITY
        self._sched_loading = False
        self._sched_mark = 0
        self._sched_first_since: tuple[int, int] | None = None
        if not rec.clean:
            log.warning(
                "journal: the last run did not shut down cleanly; recovered %d queue(s) in %.2f s, "
                "and every recovered message is marked redelivered",
                len(rec.queues),
                rec.seconds,
            )
        # Read before the writer thread starts: the connection is not shared with it.
        self._records = self.journal.records()
        self.journal.start()

    # -- MessageStore ----------------------------------------------------------------------

    @property
    def submitted(self) -> int:
        return self._submitted

    def open_queue(
        self, name: str, *, transient: bool = False, sync: SyncPolicy | None = None
    ) -> DurableQueueStore | MemoryQueueStore:
        if transient:
            return MemoryQueueStore(self._schedule)
        policy = sync or ALWAYS
        if policy.mode == "interval":
            seconds = policy.interval_ms / 1000
            current = self.journal.sync_interval
            self.journal.sync_interval = seconds if current is None else min(current, seconds)
        counts = self._counts.pop(name, None)
        if counts is None:
            counts = QueueCounts(self._next_queue_id, name)
            self._next_queue_id += 1
            self.submit((ADD_QUEUE, counts.id, name), policy)
        queue = DurableQueueStore(self, counts, policy)
        self._by_id[counts.id] = queue
        return queue

    def stored_queues(self) -> list[str]:
        return list(self._counts)

    def when_done(self, since: int, callback: Callable[[bool], None]) -> None:
        """Call back once the writes submitted after ``since`` are as durable as their
        queues' policies ask: committed, and fsynced if one of them is an ``always`` queue.

        Writes need no fsync of their own (an ACK without a receipt promises nothing and
        rides on the next one): this asks for it. Callbacks run in the order asked.
        """
        ticket = self._submitted
        durable = self._last_always > since
        if durable:
            self.journal.request_sync(ticket)
        else:
            self.journal.request_commit(ticket)
        if not self._waiters and ticket <= (self.synced if durable else self.done):
            callback(True)
        else:
            self._waiters.append((ticket, durable, callback))

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Every write inside reaches the disk in one transaction, or none does."""
        if self._group is not None:
            yield  # already inside one
            return
        self._group, self._group_sync = [], False
        try:
            yield
        finally:
            ops, self._group = self._group, None
            if ops:
                self._submitted += 1
                if self._group_sync:
                    self._last_always = self._submitted
                self.journal.submit((GROUP, ops))

    def tick(self, now_ms: int) -> None:
        """Make due delayed messages ready; read the next ones back from disk in time."""
        for owner in self._schedule.fire(now_ms):
            if owner.on_ready is not None:
                owner.on_ready()
        if (
            self._sched_on_disk
            and not self._sched_loading
            and self._sched_cursor[0] <= now_ms + SCHEDULE_LOOKAHEAD_MS
        ):
            self._load_schedule()

    def records(self, now_ms: int) -> dict[str, dict[str, Record]]:
        found: dict[str, dict[str, Record]] = {}
        for ns, key, value, until, seq in self._records:
            if not until or until > now_ms:
                found.setdefault(ns, {})[key] = Record(value, until, seq)
            else:
                self.delete_record(ns, key)
        self._records = []  # handed over: the owners keep them now
        return found

    def put_record(self, ns: str, key: str, record: Record) -> None:
        self.submit((PUT_RECORD, ns, key, record.value, record.until, record.seq), ALWAYS)

    # A delete needs no fsync of its own: one lost in a crash is made again at start, where
    # a record whose message is gone, or whose time is up, is dropped.
    def delete_record(self, ns: str, key: str) -> None:
        self.submit((DELETE_RECORD, ns, key), READ)

    def drop_records(self, ns: str) -> None:
        self.submit((DROP_RECORDS, ns), READ)

    def stats(self) -> dict[str, Any]:
        j = self.journal.stats
        return {
            "batches": j.batches,
            "operations": j.operations,
            "mean_batch": round(j.mean_batch, 2),
            "fsyncs": j.fsyncs,
            "fsync_ms_mean": round(1000 * j.fsync_seconds / j.fsyncs, 3) if j.fsyncs else 0.0,
            "pending": self._submitted - self.done,
            "failures": j.failures,
            "error": self.error,
            "recovery_seconds": round(self.journal.recovery.seconds, 3),
            "delayed_in_memory": len(self._schedule),
            "delayed_on_disk": self._sched_on_disk,
        }

    def close(self) -> None:
        self.journal.close(self.last_seq)
        self._run_inbox()

    # -- the journal, seen from the loop --------------------------------------------------------

    def submit(self, op: tuple[object, ...], policy: SyncPolicy) -> None:
        if self._group is not None:
            self._group.append(op)
            self._group_sync = self._group_sync or policy.mode == "always"
            return
        self._submitted += 1
        if policy.mode == "always":
            self._last_always = self._submitted
        self.journal.submit(op)

    def next_seq(self) -> int:
        self.last_seq += 1
        return self.last_seq

    def head_rank(self) -> int:
        self._head_rank -= 1
        return self._head_rank

    def recovered(self, seq: int) -> bool:
        """Was this message on disk when a crashed run stopped (it may have been delivered)?"""
        return seq <= self._recovered_through

    def forget_queue(self, queue: DurableQueueStore) -> None:
        self._by_id.pop(queue.id, None)
        if queue.scheduled:
            self._schedule.remove_owner(queue)

    # -- delayed messages ------------------------------------------------------------------

    def hold(self, owner: DurableQueueStore, message: Message) -> None:
        """Keep a (written) delayed message until it is due."""
        key = (message.due, message.seq)
        if key <= self._sched_cursor:
            self._schedule.add(owner, message)
            if len(self._schedule) > self._schedule_window and not self._sched_loading:
                kept = self._schedule_window // 2
                moved = self._schedule.trim(kept)
                self._sched_on_disk += len(moved)
                last = self._schedule.last_key()
                self._sched_cursor = last if last is not None else (-1, -1)
            return
        self._sched_on_disk += 1
        if self._sched_loading and (self._sched_first_since is None or key < self._sched_first_since):
            self._sched_first_since = key

    def _load_schedule(self) -> None:
        self._sched_loading = True
        self._sched_mark = self.last_seq
        self._sched_first_since = None
        after = None if self._sched_cursor == (-1, -1) else self._sched_cursor
        self.submit((LOAD_DUE, self._schedule_loaded, after, SCHEDULE_CHUNK), READ)

    def _schedule_loaded(self, rows: list[Row]) -> None:
        self._sched_loading = False
        cutoff = self._sched_first_since
        last: tuple[int, int] | None = None
        for row in rows:
            key = (row[L_DUE], row[L_SEQ])
            if cutoff is not None and key >= cutoff:
                break  # a message held since comes first: leave the rest for the next read
            if row[L_SEQ] > self._sched_mark:
                continue  # written after the read was asked, and already counted where it is
            last = key
            owner = self._by_id.get(row[L_QUEUE])
            self._sched_on_disk -= 1
            if owner is not None:
                self._schedule.add(owner, owner.message_from(row))
        if last is not None:
            self._sched_cursor = last
        if len(rows) < SCHEDULE_CHUNK and cutoff is None:
            if self._sched_on_disk:
                log.error(
                    "journal: %d delayed messages were counted but are not on disk", self._sched_on_disk
                )
            self._sched_on_disk = 0
            self._sched_cursor = INFINITY

    # -- answers from the journal thread -----------------------------------------------------

    def _from_journal(
        self, done: int, synced: int, replies: list[tuple[Reply, list[Row]]], error: str | None
    ) -> None:
        """Writer thread: hand one batch's outcome to the loop thread."""

        def apply() -> None:
            self._completed(done, synced, replies, error)

        if self._post_to_loop is not None:
            self._post_to_loop(apply)
        else:
            self._inbox.append(apply)

    def _completed(
        self, done: int, synced: int, replies: list[tuple[Reply, list[Row]]], error: str | None
    ) -> None:
        if error is not None:
            self.error = error
            return
        self.error = None
        self.done = done
        self.synced = synced
        for reply, rows in replies:
            reply(rows)
        waiters = self._waiters
        while waiters and waiters[0][0] <= (synced if waiters[0][1] else done):
            waiters.popleft()[2](True)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every submitted operation is done, then run the answers (no loop)."""
        deadline = time.monotonic() + timeout
        self.journal.request_commit(self._submitted)
        while True:
            self._run_inbox()
            if self.done >= self._submitted:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"journal: {self._submitted - self.done} operations still pending")
            time.sleep(0.001)

    def poll(self) -> None:
        """Run the answers that have arrived so far (no loop; tests, tools)."""
        self._run_inbox()

    def _run_inbox(self) -> None:
        while self._inbox:
            self._inbox.popleft()()


class DurableQueueStore:
    __slots__ = (
        "_after_request",
        "_generation",
        "_load_mark",
        "_loading",
        "_spilled",
        "_spilled_bytes",
        "_spilled_expiring",
        "_spilled_total",
        "_store",
        "_taken",
        "_window",
        "attributes",
        "dropped",
        "id",
        "name",
        "on_expired",
        "on_ready",
        "policy",
        "scheduled",
    )

    def __init__(self, store: DurableStore, counts: QueueCounts, policy: SyncPolicy) -> None:
        self._store = store
        self.id = counts.id
        self.name = counts.name
        self.policy = policy
        self.on_ready: Callable[[], None] | None = None
        self.on_expired: Callable[[list[Message]], None] | None = None
        self.scheduled = counts.scheduled
        self.dropped = False
        self.attributes = dict(counts.attributes)
        self._window = ReadyIndex()
        # Everything recovered starts on disk only.
        self._spilled = list(counts.ready)
        self._spilled_total = sum(counts.ready)
        self._spilled_bytes = sum(counts.ready_bytes)
        self._spilled_expiring = self._spilled_total > 0  # unknown after a restart: look once
        self._taken: set[int] = set()  # seqs of stored messages delivered and not settled
        self._loading = False  # a LOAD is on its way (reads of a queue never overlap)
        self._generation = 0  # bumped by purge: a read asked before it is void
        self._load_mark = 0  # the last seq when the read in flight was asked
        self._after_request: tuple[int, int] | None = None  # first key spilled since then

    def __len__(self) -> int:
        return len(self._window) + self._spilled_total

    @property
    def ready_bytes(self) -> int:
        return self._window.bytes + self._spilled_bytes

    @property
    def in_memory(self) -> int:
        return len(self._window)

    def set_attributes(self, attributes: dict[str, str]) -> None:
        self.attributes = dict(attributes)
        self._store.submit((SET_ATTRIBUTES, self.id, json.dumps(self.attributes)), self.policy)

    def put(self, message: Message) -> None:
        store = self._store
        store.last_seq += 1  # next_seq(), inlined: this is the publish hot path
        message.seq = message.rank = store.last_seq
        if message.persistent:
            self._write(message)
        self._admit(message)

    def take(self) -> Message | None:
        message = self._window.popleft()
        if message is not None and message.stored:
            self._taken.add(message.seq)  # first: a read asked below must not bring it back
        if self._spilled_total and not self._loading and len(self._window) < self._store.window // 2:
            self._request_load()
        return message

    def settle(self, message: Message) -> None:
        if message.stored:
            self._taken.discard(message.seq)
            self._store.submit((DELETE, message.seq), self.policy)

    def requeue(self, messages: Sequence[Message]) -> None:
        store = self._store
        for message in reversed(messages):
            message.rank = store.head_rank()
            if message.stored:
                self._taken.discard(message.seq)
                store.submit((REQUEUE, message.seq, message.rank, message.deliveries), self.policy)
            # At the head of its priority, which may still come after messages on disk.
            if self._spilled_total and any(self._spilled[message.priority + 1 :]):
                self._spill(message)
            else:
                self._window.push_front((message,))

    def schedule(self, message: Message) -> None:
        store = self._store
        if not message.seq:
            message.seq = store.next_seq()
        if message.stored:  # a delivered message put back with a delay
            self._taken.discard(message.seq)
            store.submit((RESCHEDULE, message.seq, message.due, message.deliveries), self.policy)
        else:
            self._write(message)
        self.scheduled += 1
        store.hold(self, message)

    def make_ready(self, message: Message) -> None:
        """A delayed message is due: it joins the tail of its priority."""
        self.scheduled -= 1
        message.rank = self._store.next_seq()
        self._store.submit((READY, message.seq, message.rank), self.policy)
        self._admit(message)

    def expire(self, now_ms: int) -> list[Message]:
        """Remove expired messages held in RAM; those on disk follow through ``on_expired``."""
        if self._spilled_expiring and self._spilled_total and not self._loading:
            self._request_load(expired_by=now_ms)
        return self._window.remove_expired(now_ms)

    def peek(self, limit: int, reply: Callable[[list[Message]], None]) -> None:
        held = list(itertools.islice(self._window, limit))
        if len(held) >= limit or not self._spilled_total:
            reply(held)
            return
        last = self._window.last()
        after = None if last is None else (9 - last.priority, last.rank)
        mark = self._store.last_seq

        def rows_read(rows: list[Row]) -> None:
            # A read, not a load: nothing changes hands, so nothing can be doubled or lost.
            reply(held + [self.message_from(r) for r in rows if r[L_SEQ] <= mark])

        op = (LOAD, rows_read, self.id, after, limit - len(held), frozenset(self._taken), 0)
        self._store.submit(op, READ)

    def purge(self) -> int:
        count = len(self._window) + self._spilled_total
        self._window.clear()
        self._spilled = [0] * PRIORITIES
        self._spilled_total = self._spilled_bytes = 0
        self._generation += 1
        self._loading = False
        self._store.submit((PURGE, self.id, frozenset(self._taken)), self.policy)
        return count

    def drop(self) -> None:
        self.purge()
        self._taken.clear()
        self.dropped = True
        self._store.forget_queue(self)
        self.scheduled = 0
        self._store.submit((DROP, self.id), self.policy)

    # -- disk ---------------------------------------------------------------------------------

    def _admit(self, message: Message) -> None:
        """Place a ready message in the window, or on disk only (see the module doc)."""
        p = message.priority
        if self._spilled_total and any(self._spilled[p:]):
            self._spill(message)
            return
        window = self._window
        window.append(message)
        store = self._store
        if (len(window) > store.window or window.bytes > store.window_bytes) and not self._loading:
            while len(window) > store.window // 2 or window.bytes > store.window_bytes // 2:
                last = window.pop_last()
                assert last is not None
                self._spill(last)

    def _write(self, message: Message) -> None:
        message.stored = True
        row = (
            message.seq,
            self.id,
            9 - message.priority,
            message.rank,
            message.due,
            message.expires,
            message.deliveries,
            1 if message.persistent else 0,
            len(message.body),
            message.id,
            message.destination,
            json.dumps(message.headers),
            message.body,
        )
        self._store.submit((INSERT, row), self.policy)

    def _spill(self, message: Message) -> None:
        if not message.stored:
            self._write(message)
        p = message.priority
        self._spilled[p] += 1
        self._spilled_total += 1
        self._spilled_bytes += len(message.body)
        if message.expires:
            self._spilled_expiring = True
        if self._loading:
            key = (9 - p, message.rank)
            if self._after_request is None or key < self._after_request:
                self._after_request = key

    def _request_load(self, expired_by: int = 0) -> None:
        last = self._window.last()
        after = None if last is None else (9 - last.priority, last.rank)
        self._loading = True
        self._load_mark = self._store.last_seq
        self._after_request = None
        generation = self._generation
        room = self._store.window - len(self._window)
        limit = LOAD_CHUNK if expired_by else max(1, min(LOAD_CHUNK, room))

        def reply(rows: list[Row]) -> None:
            if expired_by:
                self._expired_loaded(rows, generation)
            else:
                self._loaded(rows, generation)

        op = (LOAD, reply, self.id, after, limit, frozenset(self._taken), expired_by)
        self._store.submit(op, READ)

    def message_from(self, row: Row) -> Message:
        deliveries = row[L_DELIVERIES]
        seq = row[L_SEQ]
        headers = tuple((k, v) for k, v in json.loads(row[L_HEADERS]))
        return Message(
            row[L_ID],
            row[L_DEST],
            headers,
            row[L_BODY],
            bool(row[L_PERSISTENT]),
            9 - row[L_PKEY],
            row[L_EXPIRES],
            redelivered=deliveries > 0 or self._store.recovered(seq),
            deliveries=deliveries,
            seq=seq,
            stored=True,
            rank=row[L_RANK],
            due=row[L_DUE],
            unique=header(headers, "unique-key"),
        )

    def _unspill(self, message: Message) -> None:
        self._spilled[message.priority] -= 1
        self._spilled_total -= 1
        self._spilled_bytes -= len(message.body)

    def _loaded(self, rows: list[Row], generation: int) -> None:
        if generation != self._generation:
            return  # purged meanwhile
        self._loading = False
        cutoff = self._after_request
        added = 0
        for row in rows:
            seq = row[L_SEQ]
            if seq > self._load_mark or seq in self._taken:
                continue  # arrived after the read was asked: in the window, or spilled since
            if cutoff is not None and (row[L_PKEY], row[L_RANK]) > cutoff:
                break  # a message spilled since comes first: leave the rest for the next read
            message = self.message_from(row)
            self._window.append(message)
            self._unspill(message)
            added += 1
        if not rows and self._spilled_total and cutoff is None:
            # The counters say there is more on disk, the disk says no: trust the disk.
            log.error(
                "journal: queue %s counted %d messages on disk that are not there",
                self.name,
                self._spilled_total,
            )
            self._spilled = [0] * PRIORITIES
            self._spilled_total = self._spilled_bytes = 0
        elif self._spilled_total and len(self._window) < self._store.window // 2:
            self._request_load()
        if added and self.on_ready is not None:
            self.on_ready()

    def _expired_loaded(self, rows: list[Row], generation: int) -> None:
        if generation != self._generation:
            return
        self._loading = False
        expired = []
        for row in rows:
            if row[L_SEQ] > self._load_mark or row[L_SEQ] in self._taken:
                continue  # not on disk only when the read was asked
            message = self.message_from(row)
            self._unspill(message)
            self._taken.add(message.seq)  # taken out of the queue: its owner settles or moves it
            expired.append(message)
        if not self._spilled_total:
            self._spilled_expiring = False  # nothing on disk (new spills set it again)
        elif len(self._window) < self._store.window // 2:
            # A take may have found the window empty while this read was out, and asked for
            # nothing (reads of a queue never overlap): ask now, or it would wait forever.
            self._request_load()
        if expired and self.on_expired is not None:
            self.on_expired(expired)
