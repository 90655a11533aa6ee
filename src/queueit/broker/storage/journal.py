"""The journal: one SQLite database in WAL mode, written by one thread, with group commit.

Why SQLite in WAL mode rather than a segment log of our own: every requirement of the
durable store maps onto something SQLite already does and has tested for two decades.
A commit is atomic (moving a message to a dead-letter queue is one UPDATE, never lost
and never doubled); every WAL frame carries a checksum, and recovery stops at the first
torn or corrupt frame, so a crash mid-write loses only writes no receipt was sent for;
freed pages are reused at once and handed back to the file system by incremental vacuum,
so space of acked messages is reclaimed even when a few old messages stay (the
"journal that never shrinks" of beanstalkd and KahaDB cannot happen); and indexes give
the delivery order, due delays and expiries without holding the messages in RAM. The
price is about 8 µs of C per insert and per delete, paid on this thread, which releases
the GIL while SQLite works.

Ownership: the :class:`Journal` owns the connection. Before :meth:`start` the opening
thread uses it (schema, recovery); after, only the writer thread does, until
:meth:`close` joins that thread. The event-loop thread talks to it through
:meth:`submit` (an append to a deque) and gets answers through ``post``.

Group commit: the writer takes every operation queued so far as one batch, applies it in
one transaction and commits; operations that arrive meanwhile form the next batch. So
one commit (and one fsync) covers every write that arrived while the previous one ran.
A batch nobody waits for (no receipt asked, no read) may wait ``LAZY_SECONDS`` for more.

What each fsync protects (``PRAGMA synchronous=NORMAL``: SQLite itself syncs only at
checkpoints, we add the rest):

* when a receipt waits for a write of an ``always`` queue (``request_sync``):
  ``fdatasync`` of the WAL after the commit that holds it, before the receipt is sent.
  It protects receipted SENDs, COMMITs and ACKs against an OS crash or power loss.
  Writes nobody asked a receipt for ride on the next such fsync (they promised nothing).
* ``interval:<ms>`` queues: the same ``fdatasync``, at most ``ms`` after the commit.
* at a checkpoint SQLite syncs the WAL, then the database file, so that the WAL can be
  reused; at shutdown the ``clean`` mark is committed and synced.
A commit alone (``never``) is safe from a crash of the broker process (``kill -9``): the
data is in the kernel's page cache.

On-disk format, version 1 (``PRAGMA user_version``)::

    queues(id INTEGER PRIMARY KEY, name TEXT UNIQUE,
           attributes TEXT)             -- JSON object, e.g. a durable subscription's binding
    messages(seq INTEGER PRIMARY KEY,   -- unique, in arrival order
             queue INTEGER,             -- queues.id
             pkey INTEGER,              -- 9 - priority: ascending = delivery order
             rank INTEGER,              -- order within a priority: seq, or below every
                                        --   seq for a message put back at the head
             due INTEGER,               -- 0: ready; else epoch ms it becomes ready
             expires INTEGER,           -- epoch ms; 0 = never
             deliveries INTEGER,        -- deliveries so far (max-deliveries counts these)
             persistent INTEGER,        -- 0: written only to save RAM; dropped at start
             size INTEGER,              -- len(body)
             id TEXT, destination TEXT,
             headers TEXT,              -- JSON list of [name, value] pairs
             body BLOB)
    meta(key TEXT PRIMARY KEY, value TEXT)  -- clean = 1 after a clean shutdown

An acked message is a DELETE; a requeue an UPDATE of ``rank`` and ``deliveries``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("queueit.broker.storage")

FORMAT_VERSION = 1

# Operation codes: an operation is a tuple whose first item is one of these.
INSERT = 0  # (INSERT, row)            row: see _INSERT_SQL
DELETE = 1  # (DELETE, seq)
REQUEUE = 2  # (REQUEUE, seq, rank, deliveries)
PURGE = 3  # (PURGE, queue_id, keep_seqs)   ready messages of the queue, except keep_seqs
DROP = 4  # (DROP, queue_id)
ADD_QUEUE = 5  # (ADD_QUEUE, queue_id, name)
LOAD = 6  # (LOAD, reply, queue_id, after_key | None, limit, exclude_seqs, expired_by)
RESCHEDULE = 7  # (RESCHEDULE, seq, due, deliveries)   a stored message waits again
READY = 8  # (READY, seq, rank)                          a delayed message is due
LOAD_DUE = 9  # (LOAD_DUE, reply, after_key | None, limit)  delayed messages, by (due, seq)
GROUP = 10  # (GROUP, ops)   applied in the same transaction, whatever the batching
SET_ATTRIBUTES = 11  # (SET_ATTRIBUTES, queue_id, json_text)
PUT_RECORD = 12  # (PUT_RECORD, ns, key, value, until, seq)
DELETE_RECORD = 13  # (DELETE_RECORD, ns, key)
DROP_RECORDS = 14  # (DROP_RECORDS, ns)
#: Reads: the loop waits for their answers, so they are never held back in a lazy batch.
READS = frozenset({LOAD, LOAD_DUE})

Row = tuple[Any, ...]
Replies = list[tuple[Callable[[list[Row]], None], list[Row]]]
Post = Callable[[int, int, Replies, str | None], None]

_SCHEMA = """
CREATE TABLE queues(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, attributes TEXT NOT NULL);
CREATE TABLE messages(
    seq INTEGER PRIMARY KEY, queue INTEGER NOT NULL, pkey INTEGER NOT NULL,
    rank INTEGER NOT NULL, due INTEGER NOT NULL, expires INTEGER NOT NULL,
    deliveries INTEGER NOT NULL, persistent INTEGER NOT NULL, size INTEGER NOT NULL,
    id TEXT NOT NULL, destination TEXT NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX messages_ready ON messages(queue, pkey, rank, size) WHERE due = 0;
CREATE INDEX messages_transient ON messages(seq) WHERE persistent = 0;
CREATE INDEX messages_head ON messages(rank) WHERE rank < 0;
CREATE INDEX messages_due ON messages(due, seq) WHERE due > 0;
CREATE INDEX messages_expiry ON messages(queue, expires) WHERE expires > 0;
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
#: Added after format 1 shipped, so made on every open (a journal without it is the same format).
_RECORDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS records(
    ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, until INTEGER NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID;
"""
_INSERT_SQL = "INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
_LOAD_COLUMNS = "seq, pkey, rank, expires, deliveries, persistent, id, destination, headers, body, due, queue"
#: Columns of a loaded row, by index (see _LOAD_COLUMNS).
(
    L_SEQ,
    L_PKEY,
    L_RANK,
    L_EXPIRES,
    L_DELIVERIES,
    L_PERSISTENT,
    L_ID,
    L_DEST,
    L_HEADERS,
    L_BODY,
    L_DUE,
    L_QUEUE,
) = range(12)

#: Hand free pages back to the file system when more than this share of the file is free:
#: a big step when the journal is idle, a small one under load (it holds the write lock).
VACUUM_FREE_SHARE = 0.25
VACUUM_MIN_PAGES = 4096
VACUUM_STEP_PAGES = 16384
VACUUM_BUSY_STEP_PAGES = 1024
HOUSEKEEPING_SECONDS = 1.0
#: SQLite's WAL file layout: a header, then frames of a header and one page.
WAL_HEADER = 32
WAL_FRAME_HEADER = 24
#: How long a batch nobody waits for may wait for more writes to join it.
LAZY_SECONDS = 0.002
#: After a failed write (disk full, I/O error), retry the batch this often.
RETRY_SECONDS = 0.5


class JournalError(Exception):
    """The data dir cannot be used; the message says why and what to do."""


@dataclass
class QueueCounts:
    """What recovery found for one queue."""

    id: int
    name: str
    ready: list[int] = field(default_factory=lambda: [0] * 10)  # by priority 0..9
    ready_bytes: list[int] = field(default_factory=lambda: [0] * 10)
    scheduled: int = 0
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class Recovery:
    queues: dict[str, QueueCounts]
    max_seq: int
    min_rank: int
    clean: bool  # the last run shut down cleanly
    dropped_transient: int
    seconds: float


@dataclass
class JournalStats:
    batches: int = 0
    operations: int = 0
    fsyncs: int = 0
    fsync_seconds: float = 0.0
    failures: int = 0
    last_error: str | None = None

    @property
    def mean_batch(self) -> float:
        return self.operations / self.batches if self.batches else 0.0


class Journal:
    def __init__(
        self,
        path: Path,
        post: Post,
    ) -> None:
        """Open (or create) the database at ``path`` and recover; do not start writing yet.

        ``post(committed, synced, replies, error)`` is called from the writer thread after
        each batch: the first ``committed`` operations are in the journal (safe from a crash
        of the process), the first ``synced`` also fsynced; ``replies`` are the answers of
        LOAD operations; ``error`` is why writes are failing (or None). It must hand them to
        the event-loop thread (``loop.call_soon_threadsafe``) and return at once.

        Raises:
            JournalError: the file is not a queueit journal, or is of a newer format.
        """
        self.path = path
        self._post = post
        self._ops: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        # The writer's two waits, as seen by the loop thread (flags flipped under the GIL):
        # idle (nothing to do: any operation wakes it) and lazy (holding a batch nobody waits
        # for: only urgent work, a read or a commit someone waits for, ends the wait early).
        self._idle = False
        self._lazy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.stats = JournalStats()
        #: fsync everything up to this submitted-operation number (set by the loop thread).
        self.sync_through = 0
        #: Operations committed and fsynced (set by the writer thread).
        self.synced = 0
        #: Commit up to this operation at once (a receipt waits); later ones may wait a little.
        self.urgent_through = 0
        #: A test seam: called before each commit; raising sqlite3.Error there is a disk that
        #: is full or failing (the batch is rolled back and retried, as for a real one).
        self.fault: Callable[[], None] | None = None
        self._reported = 0
        self._reported_sync = 0
        #: Shortest ``interval:<ms>`` of any open queue, in seconds (None: no such queue).
        self.sync_interval: float | None = None
        self._processed = 0
        #: How the loop thread wakes the writer: at once (None), or through this, given the
        #: wake-up. The server defers it until the loop has written this iteration's frames:
        #: a writer woken at once takes the GIL from the loop just as it sends a MESSAGE
        #: (measured: 1.2-1.4 ms from SEND to MESSAGE on an idle broker, 0.7-0.8 ms deferred).
        self.defer: Callable[[Callable[[], None]], object] | None = None
        self._wal_fd = -1
        wal = Path(str(path) + "-wal")
        self._wal_bytes_at_start = wal.stat().st_size if wal.exists() else 0
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.recovery = self._open()
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"{path} is not a usable queueit journal ({exc}); move it away to start afresh"
            ) from exc
        except OSError as exc:
            raise JournalError(f"cannot open the journal {path}: {exc.strerror}") from exc

    # -- opening and recovery (opening thread) -------------------------------------------------

    def _open(self) -> Recovery:
        started = time.monotonic()
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        fresh = version == 0 and not db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if fresh:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # must precede the first table
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA journal_size_limit=67108864")
        db.execute("PRAGMA cache_size=-16384")  # 16 MiB of page cache
        if fresh:
            db.executescript("BEGIN;" + _SCHEMA + f"PRAGMA user_version={FORMAT_VERSION}; COMMIT;")
        elif version != FORMAT_VERSION:
            raise JournalError(
                f"{self.path} has journal format {version}; this queueit reads format {FORMAT_VERSION}. "
                "Run the queueit version that wrote it, or move the data dir away."
            )
        row = db.execute("SELECT value FROM meta WHERE key='clean'").fetchone()
        clean = fresh or (row is not None and row[0] == "1")
        if not clean:
            self._report_wal_tail()
        db.executescript(_RECORDS_SCHEMA)
        db.execute("BEGIN")
        dropped = db.execute("DELETE FROM messages WHERE persistent = 0").rowcount
        db.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '0')")
        db.execute("COMMIT")
        # Any descriptor of a file syncs all of it; this one stays open as long as the
        # connection does, so the WAL keeps its inode (SQLite reuses, never replaces, it).
        self._wal_fd = os.open(str(self.path) + "-wal", os.O_RDONLY)
        queues: dict[str, QueueCounts] = {}
        by_id: dict[int, QueueCounts] = {}
        for qid, name, attributes in db.execute("SELECT id, name, attributes FROM queues"):
            by_id[qid] = queues[name] = QueueCounts(qid, name, attributes=json.loads(attributes))
        for qid, pkey, count, size in db.execute(
            "SELECT queue, pkey, count(*), sum(size) FROM messages WHERE due = 0 GROUP BY queue, pkey"
        ):
            counts = by_id.get(qid)
            if counts is not None:
                counts.ready[9 - pkey] = count
                counts.ready_bytes[9 - pkey] = size
        for qid, count in db.execute("SELECT queue, count(*) FROM messages WHERE due > 0 GROUP BY queue"):
            if qid in by_id:
                by_id[qid].scheduled = count
        # Each of these reads an index only (see _SCHEMA), so recovery does not read the messages.
        max_seq = db.execute("SELECT max(seq) FROM messages").fetchone()[0]
        min_rank = db.execute("SELECT min(rank) FROM messages WHERE rank < 0").fetchone()[0]
        # The sequence must never go back, even when the newest messages were acked.
        seq_row = db.execute("SELECT value FROM meta WHERE key='seq'").fetchone()
        max_seq = max(max_seq or 0, int(seq_row[0]) if seq_row else 0)
        recovery = Recovery(
            queues, max_seq, min(min_rank or 0, 0), clean, dropped, time.monotonic() - started
        )
        self._sync()  # the 'clean = 0' mark must be on disk before anything is served
        return recovery

    def _report_wal_tail(self) -> None:
        """After a crash, say how much of the WAL SQLite's recovery replayed.

        Recovery keeps the frames up to the last commit frame whose checksum chain is intact
        and drops the rest: a write torn by the crash (or frames of an older WAL generation,
        which SQLite overwrites in place). On ``always`` queues nothing after the last synced
        commit was receipted; on ``interval``/``never`` ones that is the price they chose.
        """
        size = self._wal_bytes_at_start
        if size <= WAL_HEADER:
            return
        page = self._db.execute("PRAGMA page_size").fetchone()[0]
        _, valid, _ = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        frame = WAL_FRAME_HEADER + page
        whole, partial = divmod(size - WAL_HEADER, frame)
        if whole > valid or partial:
            log.warning(
                "journal: recovery replayed %d WAL frame(s) up to the last intact commit and cut off "
                "the %d frame(s) and %d byte(s) after it (a write torn by the crash, or an older "
                "WAL generation); nothing in them was receipted on a queue with fsync always",
                valid,
                whole - valid,
                partial,
            )

    # -- the event-loop side ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="queueit-journal", daemon=True)
        self._thread.start()

    def submit(self, op: tuple[Any, ...]) -> None:
        """Queue one operation (event-loop thread). Never blocks."""
        self._ops.append(op)
        self._kick(urgent=op[0] in READS)

    def request_sync(self, through: int) -> None:
        """fsync once the first ``through`` operations are committed (event-loop thread)."""
        self.sync_through = max(self.sync_through, through)
        self.request_commit(through)

    def request_commit(self, through: int) -> None:
        """Commit the first ``through`` operations without delay: someone waits for them."""
        if through > self.urgent_through:
            self.urgent_through = through
            self._kick(urgent=True)

    def _urgent(self, batch: list[tuple[Any, ...]]) -> bool:
        return self._stopping or self.urgent_through > self._processed or any(op[0] in READS for op in batch)

    def _kick(self, *, urgent: bool = False) -> None:
        # Not woken by every write during a lazy wait: with acks arriving every 200 µs, each one
        # would end the wait, and each batch would again be one write, one commit and one
        # thread switch.
        if self._idle or (urgent and self._lazy):
            self._idle = self._lazy = False
            if self.defer is None:
                self._wake.set()
            else:
                self.defer(self._wake.set)

    def close(self, last_seq: int) -> None:
        """Write everything queued, mark the journal clean, stop the writer thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        db = self._db
        try:
            db.execute("BEGIN")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('seq', ?)", (str(last_seq),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '1')")
            db.execute("COMMIT")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.error("journal: could not mark a clean shutdown (%s); the next start recovers", exc)
        finally:
            if self._wal_fd >= 0:
                os.close(self._wal_fd)
            db.close()

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        ops = self._ops
        sync_deadline: float | None = None  # an interval queue's fsync is due then
        next_housekeeping = time.monotonic() + HOUSEKEEPING_SECONDS
        batch: list[tuple[Any, ...]] = []
        while True:
            if not batch:
                self._wake.clear()
                self._idle = True
                if not ops and not self._stopping and self.sync_through <= self.synced:
                    now = time.monotonic()
                    timeout = next_housekeeping - now
                    if sync_deadline is not None:
                        timeout = min(timeout, sync_deadline - now)
                    self._wake.wait(max(timeout, 0.0))
                # Lazy from before the batch is taken: a read or a receipt that arrives once the
                # batch is taken finds the flag set and ends the wait below. (Set after the
                # take, a kick in between found neither flag and waited out LAZY_SECONDS.)
                # _idle stays set until _lazy is, so no kick falls between the two.
                self._wake.clear()
                self._lazy = True
                self._idle = False
                batch = [ops.popleft() for _ in range(len(ops))]
                if batch and not self._urgent(batch):
                    # Nobody waits for this batch (acks without receipts, say): let more
                    # writes join it. A message whose publish and ack meet in one batch
                    # never touches the disk, and one commit serves them all.
                    self._wake.wait(LAZY_SECONDS)
                    batch += [ops.popleft() for _ in range(len(ops))]
                self._lazy = False
            replies: list[tuple[Callable[[list[Row]], None], list[Row]]] = []
            if batch:
                try:
                    replies = self._apply(batch)
                except sqlite3.Error as exc:
                    self._failed(exc)
                    if self._stopping:
                        log.error(
                            "journal: shutting down with %d operations not written", len(batch) + len(ops)
                        )
                        return
                    time.sleep(RETRY_SECONDS)
                    continue  # the same batch again: nothing of it was committed
                self._processed += len(batch)
                self.stats.batches += 1
                self.stats.operations += len(batch)
                if self.stats.last_error is not None:
                    log.warning("journal: writes work again")
                    self.stats.last_error = None
                batch = []
                if self.sync_interval is not None and sync_deadline is None:
                    sync_deadline = time.monotonic() + self.sync_interval
            now = time.monotonic()
            # A receipt waits for this fsync (see DurableStore.when_done); it covers what is
            # committed now, and the loop comes back for writes asked for but not yet taken.
            if self.sync_through > self.synced or (sync_deadline is not None and now >= sync_deadline):
                if self.synced < self._processed:
                    self._sync()
                self.synced = self._processed
                sync_deadline = None
            if replies or self._reported < self._processed or self._reported_sync < self.synced:
                self._reported, self._reported_sync = self._processed, self.synced
                self._post(self._processed, self.synced, replies, None)
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_SECONDS
                self._housekeeping()
            if self._stopping and not ops and not batch:
                if self.synced < self._processed:
                    self._sync()
                return

    def _failed(self, exc: sqlite3.Error) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction may be open
            self._db.execute("ROLLBACK")
        self.stats.failures += 1
        reason = f"the journal cannot be written ({exc})"
        if self.stats.last_error != reason:
            log.error("journal: %s; retrying every %.1f s", reason, RETRY_SECONDS)
        self.stats.last_error = reason
        self._post(self._processed, self.synced, [], reason)

    def _sync(self) -> None:
        started = time.monotonic()
        os.fdatasync(self._wal_fd)
        self.stats.fsyncs += 1
        self.stats.fsync_seconds += time.monotonic() - started

    def _apply(self, batch: list[tuple[Any, ...]]) -> list[tuple[Callable[[list[Row]], None], list[Row]]]:
        """Apply ``batch`` in order, in one transaction; return the LOAD answers."""
        db = self._db
        if any(op[0] == GROUP for op in batch):
            batch = [inner for op in batch for inner in (op[1] if op[0] == GROUP else (op,))]
        # A message published and acked within one batch never touches the disk.
        deleted = {op[1] for op in batch if op[0] == DELETE}
        cancelled = (
            {op[1][0] for op in batch if op[0] == INSERT and op[1][0] in deleted} if deleted else set()
        )
        replies: list[tuple[Callable[[list[Row]], None], list[Row]]] = []
        db.execute("BEGIN")
        i, n = 0, len(batch)
        while i < n:
            code = batch[i][0]
            j = i + 1
            if code <= REQUEUE:  # runs of the per-message operations go in one executemany
                while j < n and batch[j][0] == code:
                    j += 1
            run = batch[i:j]
            if code == INSERT:
                db.executemany(_INSERT_SQL, [op[1] for op in run if op[1][0] not in cancelled])
            elif code == DELETE:
                db.executemany(
                    "DELETE FROM messages WHERE seq = ?", [(op[1],) for op in run if op[1] not in cancelled]
                )
            elif code == REQUEUE:
                db.executemany(
                    "UPDATE messages SET rank = ?, deliveries = ? WHERE seq = ?",
                    [(op[2], op[3], op[1]) for op in run if op[1] not in cancelled],
                )
            else:
                op = run[0]
                if code == PURGE:
                    self._purge(op[1], op[2])
                elif code == DROP:
                    db.execute("DELETE FROM messages WHERE queue = ?", (op[1],))
                    db.execute("DELETE FROM queues WHERE id = ?", (op[1],))
                elif code == ADD_QUEUE:
                    db.execute("INSERT OR REPLACE INTO queues VALUES (?, ?, '{}')", (op[1], op[2]))
                elif code == SET_ATTRIBUTES:
                    db.execute("UPDATE queues SET attributes = ? WHERE id = ?", (op[2], op[1]))
                elif code == PUT_RECORD:
                    db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)", op[1:])
                elif code == DELETE_RECORD:
                    db.execute("DELETE FROM records WHERE ns = ? AND key = ?", op[1:])
                elif code == DROP_RECORDS:
                    db.execute("DELETE FROM records WHERE ns = ?", op[1:])
                elif code == LOAD:
                    replies.append((op[1], self._load(op[2], op[3], op[4], op[5], op[6])))
                elif code == RESCHEDULE:
                    db.execute(
                        "UPDATE messages SET due = ?, deliveries = ? WHERE seq = ?", (op[2], op[3], op[1])
                    )
                elif code == READY:
                    db.execute("UPDATE messages SET due = 0, rank = ? WHERE seq = ?", (op[2], op[1]))
                elif code == LOAD_DUE:
                    replies.append((op[1], self._load_due(op[2], op[3])))
                else:  # pragma: no cover - a programming error
                    raise AssertionError(f"unknown journal operation {code}")
            i = j
        if self.fault is not None:
            self.fault()
        db.execute("COMMIT")
        return replies

    def _purge(self, queue_id: int, keep: frozenset[int]) -> None:
        if not keep:
            self._db.execute("DELETE FROM messages WHERE queue = ? AND due = 0", (queue_id,))
            return
        seqs = [
            seq
            for (seq,) in self._db.execute(
                "SELECT seq FROM messages WHERE queue = ? AND due = 0", (queue_id,)
            )
        ]
        self._db.executemany("DELETE FROM messages WHERE seq = ?", [(s,) for s in seqs if s not in keep])

    def _load(
        self,
        queue_id: int,
        after: tuple[int, int] | None,
        limit: int,
        exclude: frozenset[int],
        expired_by: int,
    ) -> list[Row]:
        """The next ``limit`` ready messages of a queue after ``after`` (pkey, rank), in order;
        only those expired by ``expired_by`` (epoch ms) unless it is 0."""
        sql = f"SELECT {_LOAD_COLUMNS} FROM messages WHERE queue = ? AND due = 0"
        params: tuple[Any, ...] = (queue_id,)
        if expired_by:
            sql += " AND expires > 0 AND expires <= ?"
            params += (expired_by,)
        if after is not None:
            sql += " AND (pkey, rank) > (?, ?)"
            params += after
        sql += " ORDER BY pkey, rank LIMIT ?"
        rows = self._db.execute(sql, (*params, limit + len(exclude))).fetchall()
        if exclude:
            rows = [r for r in rows if r[L_SEQ] not in exclude]
        return rows[:limit]

    def records(self) -> list[tuple[str, str, bytes, int, int]]:
        """Every record as (ns, key, value, until, seq), without those that died with their
        message (see :class:`~queueit.broker.storage.base.Record`; the time limits are the
        caller's, whose clock rules). Called once, before :meth:`start`."""
        db = self._db
        db.execute("BEGIN")
        db.execute(
            "DELETE FROM records WHERE seq > 0 AND until = 0 "
            "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.seq = records.seq)"
        )
        db.execute(
            "UPDATE records SET seq = 0 "
            "WHERE seq > 0 AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.seq = records.seq)"
        )
        rows = db.execute("SELECT ns, key, value, until, seq FROM records").fetchall()
        db.execute("COMMIT")
        return rows

    def _load_due(self, after: tuple[int, int] | None, limit: int) -> list[Row]:
        """The first ``limit`` delayed messages after ``after`` (due, seq), soonest first."""
        if after is None:
            sql = f"SELECT {_LOAD_COLUMNS} FROM messages WHERE due > 0 ORDER BY due, seq LIMIT ?"
            return self._db.execute(sql, (limit,)).fetchall()
        sql = (
            f"SELECT {_LOAD_COLUMNS} FROM messages WHERE due > 0 AND (due, seq) > (?, ?) "
            "ORDER BY due, seq LIMIT ?"
        )
        return self._db.execute(sql, (*after, limit)).fetchall()

    def _housekeeping(self) -> None:
        """Give free pages back to the file system, a step at a time, when many are free."""
        db = self._db
        try:
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            if free > VACUUM_MIN_PAGES and free > pages * VACUUM_FREE_SHARE:
                step = VACUUM_BUSY_STEP_PAGES if self._ops else VACUUM_STEP_PAGES
                # executescript steps the pragma to the end; execute() would free one page.
                db.executescript(f"PRAGMA incremental_vacuum({step});")
        except sqlite3.Error as exc:
            log.warning("journal: housekeeping failed (%s)", exc)
