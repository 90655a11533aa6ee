"""One worker process's job loop: receive, run, settle.

Promises (``docs/delivery.md``):

* A job is acked after it finished; a failed attempt is retried by publishing the next
  attempt with the broker holding it for the back-off delay, in the same step as the ack
  (``Transport.settle``): never lost, never doubled where the transport settles atomically.
* While an attempt runs, its lease is renewed every third of the lease, so a long job is
  never delivered twice while it runs; if this process dies, the lease runs out (or the
  connection drops) and the job is delivered again.
* The broker never hands this process more jobs than it has free slots (prefetch = the
  concurrency): nothing waits in worker RAM, and delayed jobs wait on the broker.
* Stopping: no new jobs (the subscriptions are paused); running jobs may finish until the
  shutdown timeout; the rest are handed back to their queues.

Pools: with ``pool="threads"`` (the default) sync jobs run in a pool of ``concurrency``
threads. With ``pool="inline"`` they run on the event-loop thread itself, one at a time,
like Celery's ``solo`` pool: no thread hop and no GIL hand-offs per job, so short jobs go
about twice as fast, but the loop does nothing else while one runs. What keeps the promises
then (invariants):

* Every inline sync job has a hard timeout of at most a third of the lease (a third of the
  lease when it has none): SIGALRM raises in it, and it fails or is retried like any
  timed-out job. One that runs on regardless (it caught the alarm, or waits in C code that
  never returns to Python) ends the process at 1.5 x its timeout + 1 s: a watchdog thread
  exits with :data:`EXIT_REPLACE`. Where C code holds the GIL, so that no Python thread runs,
  faulthandler's own thread (C, no GIL needed), which the watchdog re-arms on every tick,
  dumps every thread's stack and exits at :func:`hung_after` (0.7 x the lease) after the
  job's start (or, between jobs, once the watchdog has been silent that long): before the
  job's lease runs out, which the job's start left at least 5/6 unused (below). The
  supervisor starts a fresh process; the job is delivered again, never while the stuck
  process still runs it.
* Nothing is renewed while an inline job runs, so before each one the worker extends every
  lease it holds that is more than a sixth used. A lease is then at most 5/6 used at any
  time: 1/6 before the check, plus one inline job (1/3), plus 1/3 for bytes the blocked loop
  had not read yet.
* A stop signal is handled when the running job returns; deliveries not started by then are
  handed back.
* While deliveries of the same connection wait behind the one starting, its settles are
  coalesced (:meth:`Transport.coalesce`): a run of short jobs sends its ACKs in one packet,
  which wakes the broker once instead of once per job. The last waiting job turns it off,
  which sends the ACKs held so far. An ACK never waits more than 200 ms (the kernel's
  ceiling), and it is written to the socket at once, so a worker that dies loses none.

Ownership: everything here belongs to the worker's event loop. Sync jobs run in a thread
pool (or inline, on the loop's thread) and only hand their result back through the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import faulthandler
import functools
import logging
import math
import os
import resource
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from ..transports import (
    Delivery,
    Outgoing,
    Transport,
    TransportClosed,
    TransportError,
    TransportRefused,
    Unique,
    Unsupported,
)
from .app import App
from .context import JobContext, current_job
from .definitions import BatchJob, Handler, Job
from .envelope import MAX_TRACEBACK, Envelope, InvalidMessage, Plain, decode, running_trace
from .options import MAX_TIMEOUT, JobExited, JobTimeout
from .workflows import (
    GroupFailed,
    allows_failures,
    check_workflow,
    member_report,
    next_step,
    with_group_results,
)

log = logging.getLogger("queueit.worker")

#: Seconds before a job whose settle the broker refused is delivered again.
REFUSED_RETRY_DELAY = 30.0
#: Seconds a stopping process waits, after its shutdown timeout, for cancelled jobs to hand
#: their deliveries back; then it exits.
HAND_BACK_TIMEOUT = 5.0
#: The longest reason for an invalid message the worker logs and keeps (it quotes the message).
MAX_REASON = 1_000
#: A sync job that overran its timeout in a thread runs on until its process exits: within
#: the shutdown timeout plus the hand-back wait. Its retry waits that long and this much more.
OVERRUN_RETRY_MARGIN = 2 * HAND_BACK_TIMEOUT
#: Seconds between two warnings while a process to be replaced still finishes its jobs.
RETIRING_SAID_EVERY = 300.0
#: Seconds between two warnings while the broker stays out of reach (the attempts between
#: are logged at DEBUG).
RECONNECT_SAID_EVERY = 60.0
#: A worker process's exit code for "start a fresh process now" (EX_TEMPFAIL): recycled, or a
#: sync job overran its hard timeout and could not be stopped.
EXIT_REPLACE = 75
#: How sync jobs run: in a pool of threads, or on the event-loop thread (see the module docstring).
Pool = Literal["threads", "inline"]
POOLS: tuple[Pool, ...] = ("threads", "inline")


class Exit(enum.Enum):
    """Why :meth:`Worker.run` returned."""

    STOPPED = "stopped"  # asked to stop (a signal)
    RECYCLE = "recycle"  # --max-jobs, --max-memory or --max-time reached: replace this process
    REPLACE = "replace"  # a sync job overran its hard timeout and still runs in its thread


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How one worker process runs.

    Attributes:
        queues: the queues to take jobs from (empty: every queue of the app's jobs).
        concurrency: jobs run at once (async jobs on the loop, sync jobs in threads).
        lease: seconds a job is leased before the broker may give it to another worker;
            renewed every third of it while the job runs.
        max_jobs: replace the process after this many jobs.
        max_memory_mb: replace the process when its resident memory passes this.
        max_time: replace the process after this many seconds.
        shutdown_timeout: seconds running jobs may take to finish when stopping.
        pool: "threads": sync jobs run in ``concurrency`` threads; "inline": on the event
            loop's thread, one at a time, each stopped after at most a third of the lease.
    """

    queues: tuple[str, ...] = ()
    concurrency: int = 8
    lease: float = 60.0
    max_jobs: int | None = None
    max_memory_mb: int | None = None
    max_time: float | None = None
    shutdown_timeout: float = 30.0
    reconnect_delays: tuple[float, ...] = field(default=(0.1, 0.5, 1.0, 2.0, 5.0))
    pool: Pool = "threads"

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 10_000:
            raise ValueError(f"concurrency must be from 1 to 10000, got {self.concurrency}")
        if not 1 <= self.lease <= MAX_TIMEOUT:
            raise ValueError(f"lease must be from 1 to {MAX_TIMEOUT:g} seconds, got {self.lease}")
        for name in ("max_jobs", "max_memory_mb", "max_time"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout must not be negative, got {self.shutdown_timeout}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")

    def inline_timeout(self, handler: Handler) -> float:
        """The hard timeout of a sync job in the inline pool."""
        return handler.options.timeout or self.lease / 3


def check_inline(app: App, settings: WorkerSettings) -> None:
    """Refuse the inline pool for sync jobs whose timeout the lease cannot cover.

    Raises:
        ValueError: a sync job's timeout is over a third of the lease.
    """
    if settings.pool != "inline":
        return
    for handler in app.handlers.values():
        if not handler.is_async and settings.inline_timeout(handler) > settings.lease / 3:
            raise ValueError(
                f"job {handler.name!r} has a {handler.options.timeout:g} s timeout, but in the inline "
                f"pool a sync job may take at most a third of the lease ({settings.lease / 3:g} s): "
                f"raise --lease to {3 * settings.inline_timeout(handler):g} or more, or use --pool threads"
            )


class Worker:
    """Runs jobs of ``app`` until stopped; see the module docstring."""

    def __init__(self, app: App, settings: WorkerSettings | None = None) -> None:
        self.app = app
        self.settings = WorkerSettings() if settings is None else settings
        self.queues = list(self.settings.queues) or app.queues()
        # Listeners run where no --queues narrow the work down.
        self.listeners = [] if self.settings.queues else list(app.listeners.values())
        if not self.queues and not self.listeners:
            raise ValueError(
                "the app has no jobs or listeners, and no --queues were given: nothing to work on"
            )
        self._listening: dict[str, Handler] = {}  # a listener group's queue -> its listener
        self.processed = 0
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self._transport: Transport | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._batches: dict[tuple[int, str], _Batch] = {}
        self._leased: dict[Delivery, Transport] = {}  # running jobs, whose leases are renewed
        self._stop: asyncio.Event | None = None
        self._exit = Exit.STOPPED
        self._hurry = False
        self._stopping = False
        self._told_at: float | None = None  # when stop() was first called (monotonic)
        #: Called once when this process decides to be replaced (recycled, or a sync job
        #: overran): the supervisor starts the replacement at once, and this process finishes
        #: its running jobs meanwhile, in the time they need rather than the shutdown timeout.
        self.on_retire: Callable[[], None] | None = None
        #: A stop signal came (set by its Python-level handler, which runs between bytecodes
        #: even while an inline job holds the loop). The loop runs stop() only once it next
        #: polls its file descriptors; jobs received in the same pass as the running one
        #: would start before that, so an inline job checks this too before it starts.
        self.stop_signalled = False
        self._started = time.monotonic()
        check_inline(app, self.settings)
        self._inline = self.settings.pool == "inline"
        self._pool = (
            None
            if self._inline
            else ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="queueit-job")
        )
        # Inline pool: deliveries received and not started -> (transport, when leased last).
        self._waiting: dict[Delivery, tuple[Transport, float]] = {}
        # Deliveries received whose job has not started, nor were they settled or handed back
        # (a batch's items leave it once in their batch); _run_alone waits for it to empty.
        self._unstarted: set[Delivery] = set()
        self._unstarted_shrank = asyncio.Event()
        self._isolating: Delivery | None = None  # the suspect running alone, if one is
        # Tasks waiting for a slot: a suspect cancels them (they hand their deliveries back),
        # since with every slot taken (--concurrency 1) they would wait for it for ever.
        self._slot_waiters: set[asyncio.Task[Any]] = set()
        self._slots = asyncio.Semaphore(self.settings.concurrency)  # jobs running at once
        self._late: list[Delivery] = []  # received as the worker stopped: released after the pause
        self._in_job = False  # an inline sync job runs (SIGALRM may stop it)
        # The running inline job's name and when the watchdog ends the process (monotonic).
        self._job_name = ""
        self._job_deadline: float | None = None
        self._job_started = 0.0  # when the running inline job started (monotonic)

    # -- control -----------------------------------------------------------------------------

    def stop(self, *, now: bool = False) -> None:
        """Stop taking jobs; with ``now``, hand running jobs back at once, else after the
        shutdown timeout. Loop thread only."""
        if self._told_at is None:
            self._told_at = time.monotonic()
        self._halt(now)

    def _halt(self, now: bool) -> None:
        self._hurry = self._hurry or now
        self._stopping = True
        if self._stop is not None:
            self._stop.set()

    def _finish(self, why: Exit) -> None:
        """Stop taking jobs, to be replaced (``why``): running jobs finish first."""
        if self._exit is Exit.STOPPED:
            self._exit = why
            if self.on_retire is not None and self._told_at is None:
                self.on_retire()
        self._halt(False)

    async def run(self) -> Exit:
        """Work until stopped; returns why it stopped.

        Raises:
            RuntimeError: the inline pool, off the main thread (it stops jobs with SIGALRM).
        """
        alarm: Any = None
        if self._inline:
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("the inline pool runs on the main thread only (SIGALRM stops its jobs)")
            alarm = signal.signal(signal.SIGALRM, self._on_alarm)
        watchdog = threading.Event()  # set: the watchdog thread ends
        if self._inline:
            threading.Thread(
                target=self._watch, args=(watchdog,), name="queueit-watchdog", daemon=True
            ).start()
        self._stop = asyncio.Event()
        if self._stopping:  # stopped before it started
            self._stop.set()
        renewer = asyncio.ensure_future(self._renew_leases())
        # --max-time: a timer, so that an idle process is recycled too.
        max_time = self.settings.max_time
        time_up = (
            None
            if max_time is None
            else asyncio.get_running_loop().call_later(
                max(0.0, max_time - (time.monotonic() - self._started)), self._time_up
            )
        )
        try:
            while not self._stop.is_set():
                try:
                    await self._connect()
                    await self._receive_loop()
                except TransportError as exc:
                    # Lost, or ended by the broker's ERROR (a refused settle, say): unsettled
                    # jobs come back from the broker; a fresh connection takes up the work.
                    log.warning("connection lost (%s); reconnecting", exc)
                    lost, self._transport = self._transport, None
                    if lost is not None:
                        with contextlib.suppress(TransportError, OSError):
                            await lost.close()
                    if not isinstance(exc, TransportClosed):  # not straight back into it
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(self.settings.reconnect_delays[0]):
                                await self._stop.wait()
            await self._shut_down()
        finally:
            renewer.cancel()
            if time_up is not None:
                time_up.cancel()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            if alarm is not None:
                signal.signal(signal.SIGALRM, alarm)
            watchdog.set()
        return self._exit

    async def _connect(self) -> None:
        delays = self.settings.reconnect_delays
        said_at = -math.inf  # a failure is a warning once, then again once a minute at most
        for attempt in range(sys.maxsize):
            transport = self.app.open_transport()
            if self._inline:  # a sync job holds the loop for up to a third of the lease
                transport.tolerate_blocking(self.settings.lease / 3)
            try:
                await transport.connect()
                for queue in self.queues:
                    await transport.consume(queue, prefetch=self._prefetch(queue), lease=self.settings.lease)
                for listener in self.listeners:
                    queue = await transport.listen(
                        listener.event,
                        group=listener.group,
                        prefetch=self.settings.concurrency,
                        lease=self.settings.lease,
                    )
                    self._listening[queue] = listener
            except TransportError as exc:
                with contextlib.suppress(TransportError, OSError):
                    await transport.close()
                wait = delays[min(attempt, len(delays) - 1)]
                now = time.monotonic()
                level = logging.DEBUG
                if now - said_at >= RECONNECT_SAID_EVERY:
                    said_at, level = now, logging.WARNING
                again = f"; trying again in {wait:.1f} s" + (f" (attempt {attempt + 1})" if attempt else "")
                if isinstance(exc, TransportRefused):  # a login, permission or queue refused
                    log.log(
                        logging.ERROR if level == logging.WARNING else level,
                        "the broker refused this worker (%s)%s",
                        exc,
                        again,
                    )
                else:
                    log.log(level, "cannot reach the broker (%s)%s", exc, again)
                assert self._stop is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)
                if self._stop.is_set():
                    return
                continue
            if self._isolating is not None:  # a suspect runs alone: nothing received until it ends
                await _quietly(transport.pause())
            self._transport = transport
            events = [listener.name for listener in self.listeners]
            log.info("worker %s taking jobs from %s", self.identity, ", ".join(self.queues + events))
            return

    def _prefetch(self, queue: str) -> int:
        """Free slots: the concurrency, or a batch job's size on its queue (a batch is one job)."""
        sizes = [
            h.size for h in self.app.handlers.values() if isinstance(h, BatchJob) and h.options.queue == queue
        ]
        return max([self.settings.concurrency, *sizes])

    async def _receive_loop(self) -> None:
        """Start a job per delivery until stopped (the stop cancels the waiting receive: a
        cancelled receive loses no delivery) or the connection is lost (raises)."""
        transport, stop = self._transport, self._stop
        if transport is None or stop is None:
            return
        receiving = asyncio.ensure_future(self._receive(transport))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiving  # raises TransportClosed: the caller reconnects

    async def _receive(self, transport: Transport) -> None:
        while True:
            self._start(transport, await transport.next_delivery())

    def _start(self, transport: Transport, delivery: Delivery | None) -> None:
        if delivery is None:
            return
        if self._stopping:  # arrived as the worker stops: back once the subscriptions are paused
            self._late.append(delivery)
            return
        if self._inline:
            self._waiting[delivery] = (transport, time.monotonic())
        self._unstarted.add(delivery)
        self._spawn(self._tracked(transport, delivery))

    async def _tracked(self, transport: Transport, delivery: Delivery) -> None:
        try:
            await self._handle(transport, delivery)
        finally:
            self._resolved(delivery)

    def _resolved(self, delivery: Delivery) -> None:
        """``delivery`` started, was settled or handed back (or went into a batch)."""
        if delivery in self._unstarted:
            self._unstarted.discard(delivery)
            self._unstarted_shrank.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (which handles its own errors) beside the jobs: progress reports."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _shut_down(self) -> None:
        transport = self._transport
        if transport is not None:
            with contextlib.suppress(TransportError):
                await transport.pause()
                # Delivered as the worker stopped or while pausing, never started: back (not
                # before the pause, or the broker would hand them straight back to us).
                late, self._late = self._late, []
                for delivery in late:
                    await transport.release(delivery, started=False)
                while (extra := await transport.next_delivery(0)) is not None:
                    await transport.release(extra, started=False)
        for batch in self._batches.values():
            batch.flush()  # received already: run them now rather than hand them back
        if self._running and not self._hurry:
            # Replaced (recycled, or a job overran), not told to stop: the running jobs take
            # the time they need, bounded by their own timeouts. A stop signal, before or
            # since, gives them the shutdown timeout from then.
            if self._told_at is None:
                log.info("finishing %d running job(s) before this process is replaced", len(self._running))
            else:
                log.info(
                    "waiting up to %g s for %d running job(s)",
                    self.settings.shutdown_timeout,
                    len(self._running),
                )
            began = said = time.monotonic()
            while self._running and not self._hurry:
                told = self._told_at
                now = time.monotonic()
                left = None if told is None else told + self.settings.shutdown_timeout - now
                if left is not None and left <= 0:
                    break
                if left is None and now - said >= RETIRING_SAID_EVERY:  # a job that never returns?
                    said = now
                    log.warning(
                        "still finishing %d job(s) after %.0f s before this process is replaced "
                        "(a job without a timeout that never returns keeps it; SIGTERM ends the wait)",
                        len(self._running), now - began,
                    )  # fmt: skip
                await asyncio.wait(set(self._running), timeout=0.2 if left is None else min(0.2, left))
        for task in list(self._running):
            task.cancel()  # the task hands its delivery back
        if self._running:
            await asyncio.wait(set(self._running), timeout=HAND_BACK_TIMEOUT)
        if transport is not None:
            with contextlib.suppress(TransportError):
                await transport.close()

    # -- one job -----------------------------------------------------------------------------

    async def _handle(self, transport: Transport, delivery: Delivery) -> None:
        if self._inline:
            await self._renew_waiting(delivery)
            if self._stopping or self.stop_signalled or self._isolating is not None:
                # Waited behind an inline job, and told to stop (or a suspect runs alone):
                # it never started.
                self._waiting.pop(delivery, None)
                await _quietly(transport.release(delivery, started=False))
                return
            transport.coalesce(any(t is transport for t, _ in self._waiting.values()))
        try:
            decoded = decode(delivery.body)
            job = decoded.job if isinstance(decoded, Envelope) else delivery.headers.get("job")
            handler = self._listening.get(delivery.queue) or self.app.handler_for(job, delivery.queue)
            if handler is None:
                raise InvalidMessage(
                    f"no job named {job[:200]!r} is registered in this worker's app"
                    if job is not None
                    else f"a plain message on queue {delivery.queue!r}, which has no single job to take it"
                )
            if isinstance(decoded, Envelope):
                check_workflow(decoded)
                envelope = decoded
            else:
                envelope = _adopt(decoded, handler, delivery)
            if delivery.group is not None:  # a group's callback: its members' results come first
                allowed = allows_failures(envelope)
                envelope, failed = with_group_results(envelope, delivery.group)
                decoded = envelope
                if failed and not allowed:
                    members = ", ".join(map(str, failed))
                    error = GroupFailed(f"group {delivery.group.group_id}: member(s) {members} failed")
                    await self._failed(transport, delivery, handler, envelope, error, 0.0)
                    self._count(1)
                    return
            if isinstance(handler, BatchJob):
                item = handler.item(decoded)
                self._batch_of(transport, handler).add(delivery, envelope, item)
                return
            call = handler.prepare(decoded)
        except TransportError:
            raise  # the broker's trouble (settling a failed group callback), not the message's
        except Exception as exc:
            # Whatever a message from outside makes go wrong before its job runs (an
            # InvalidMessage, or what a check missed) sends it to the dead letters with the
            # reason, rather than round and round until max-deliveries.
            reason = str(exc) if isinstance(exc, InvalidMessage) else f"{type(exc).__name__}: {exc}"
            await self._reject(transport, delivery, reason)
            self._count(1)
            return
        await self._execute(transport, handler, [(delivery, envelope)], call)

    def _batch_of(self, transport: Transport, handler: BatchJob[Any, Any]) -> _Batch:
        key = (id(transport), handler.name)
        batch = self._batches.get(key)
        if batch is None:
            # Batches of connections gone since (a reconnect) are empty once flushed: dropped,
            # or each reconnect would keep one, and its dead transport, for good.
            gone = [k for k, b in self._batches.items() if b.transport is not transport and not b.entries]
            for old in gone:
                del self._batches[old]
            batch = self._batches[key] = _Batch(self, transport, handler)
        return batch

    async def _execute(
        self,
        transport: Transport,
        handler: Handler,
        entries: list[tuple[Delivery, Envelope]],
        call: Callable[[], Any],
    ) -> None:
        """Run ``call`` for ``entries`` (one job, or a batch of them) and settle each."""
        for d, _ in entries:
            self._leased[d] = transport
        # One slot per run (a batch is one): --concurrency over all the queues and listener
        # groups this process takes (each subscription may prefetch that many); the job's
        # clock, its timeout's included, starts once it has one.
        if self._isolating is not None:  # a suspect runs alone: back, without waiting for a slot
            await self._hand_back(transport, entries, started=False)
            return
        waiter = asyncio.current_task()
        if waiter is not None:
            self._slot_waiters.add(waiter)
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:  # told to hurry (or a suspect came) while it waited: never started
            self._slot_waiters.discard(waiter)  # before the await: cancelled once
            await self._hand_back(transport, entries, started=False)
            raise
        self._slot_waiters.discard(waiter)
        try:
            if self._stopping or self._isolating is not None:
                # The worker stops, or a suspect runs alone: what has not started goes back.
                await self._hand_back(transport, entries, started=False)
                return
            if transport.capabilities.uncounted_release and any(d.delivery_count > 1 for d, _ in entries):
                await self._run_alone(transport, handler, entries, call)
            else:
                await self._execute_in_slot(transport, handler, entries, call)
        finally:
            self._slots.release()

    async def _run_alone(
        self,
        transport: Transport,
        handler: Handler,
        entries: list[tuple[Delivery, Envelope]],
        call: Callable[[], Any],
    ) -> None:
        """Run a suspect alone: a job delivered before and never settled (a worker may have
        died on it: a segfault, the OOM killer, the inline pool's watchdog). Nothing new is
        received meanwhile; what this process holds and has not started goes back uncounted;
        what runs finishes first. Then, if the suspect kills this process too, only its own
        delivery count grows: jobs that were only prefetched beside it, or ran beside it,
        are not pushed to their delivery limit with it and dead-lettered unrun."""
        first, envelope = entries[0]
        log.warning(
            "job=%s id=%s is delivered for the %d. time without having finished: running it alone",
            envelope.job, envelope.id, first.delivery_count,
        )  # fmt: skip
        self._isolating = first
        taken = 0
        try:
            try:
                await _quietly(transport.pause())
                mine = {d for d, _ in entries}
                while self._unstarted - mine:
                    for waiter in self._slot_waiters - {asyncio.current_task()}:
                        waiter.cancel()  # it hands its delivery back (_execute)
                    self._unstarted_shrank.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.2):
                            await self._unstarted_shrank.wait()
                for _ in range(self.settings.concurrency - 1):  # every other slot: nothing else runs
                    await self._slots.acquire()
                    taken += 1
            except asyncio.CancelledError:  # told to hurry meanwhile: it never started
                await self._hand_back(transport, entries, started=False)
                raise
            if self._stopping:
                await self._hand_back(transport, entries, started=False)
                return
            await self._execute_in_slot(transport, handler, entries, call)
        finally:
            for _ in range(taken):
                self._slots.release()
            self._isolating = None
            current = self._transport  # the suspect's, or one connected since (_connect paused it)
            if current is not None and not self._stopping:
                await _quietly(current.resume())
                await self._pause_if_stopping(current)

    async def _pause_if_stopping(self, transport: Transport) -> None:
        """A stop that came while ``transport`` resumed: pause it again, as _shut_down wants."""
        if self._stopping:
            await _quietly(transport.pause())

    async def _hand_back(
        self, transport: Transport, entries: list[tuple[Delivery, Envelope]], *, started: bool = True
    ) -> None:
        for d, _ in entries:
            self._leased.pop(d, None)
            await _quietly(transport.release(d, started=started))
            self._resolved(d)

    async def _execute_in_slot(
        self,
        transport: Transport,
        handler: Handler,
        entries: list[tuple[Delivery, Envelope]],
        call: Callable[[], Any],
    ) -> None:
        first, envelope = entries[0]
        for d, _ in entries:
            self._resolved(d)
        started = time.monotonic()
        error: BaseException | None = None
        follow_up: Envelope | None = None
        try:
            for m in self.app.middleware:
                for _, e in entries:
                    _hook(m.before_process, e)
            try:
                context = JobContext(envelope, first, self, transport, asyncio.get_running_loop())
                result = await self._run(handler, call, context)
                if len(entries) == 1:  # a batch is never a pipeline step (App.pipeline)
                    follow_up = next_step(envelope, result)  # raises TypeError: a result that is no JSON
                if follow_up is not None:
                    # As for any send: a hook that raises stops it, and so fails this attempt.
                    self.app._before_enqueue(follow_up)
            except asyncio.CancelledError:
                await self._hand_back(transport, entries)
                log.info("job=%s id=%s handed back (worker stopping)", envelope.job, envelope.id)
                raise
            except Exception as exc:
                error = exc
            for m in self.app.middleware:
                for _, e in entries:
                    _hook(m.after_process, e, error)
            took = (time.monotonic() - started) * 1000
            for delivery, e in entries:
                if error is not None:
                    await self._failed(transport, delivery, handler, e, error, took)
                    continue
                # A pipeline's next step, and a group member's outcome, go in the ack's step.
                report = member_report(e, "done", result)
                if follow_up is None and report is None:
                    await transport.ack(delivery)
                    continue
                publish = []
                if follow_up is not None:
                    step = Outgoing(follow_up.encode(), {"job": follow_up.job, "job-id": follow_up.id})
                    publish.append((follow_up.queue, step))
                try:
                    await transport.settle(delivery, publish, report)
                except Unsupported as exc:  # a next step too large to send: not sent again and again
                    await self._unrecordable(transport, delivery, e, "its next pipeline step", exc)
                    continue
                if follow_up is not None:
                    for m in self.app.middleware:
                        _hook(m.after_enqueue, follow_up)
            if error is None and log.isEnabledFor(logging.INFO):
                fields = _fields(envelope, first, "done", took)
                if len(entries) > 1:
                    fields["batch"] = len(entries)
                log.info(
                    "job=%s id=%s attempt=%d outcome=done ms=%.1f%s",
                    envelope.job,
                    envelope.id,
                    envelope.attempt + 1,
                    took,
                    f" batch={len(entries)}" if len(entries) > 1 else "",
                    extra=fields,
                )
        except TransportClosed:
            log.warning(
                "job=%s id=%s: connection lost before it was settled; the broker delivers it again",
                envelope.job,
                envelope.id,
            )
        except TransportError as exc:
            # The broker refused the settle (a permission, a limit): hand the job back for
            # later rather than hold it, so it is neither lost nor stuck with this worker.
            log.error(
                "job=%s id=%s: the broker refused to settle it (%s); handing it back for %g s",
                envelope.job,
                envelope.id,
                exc,
                REFUSED_RETRY_DELAY,
            )
            for delivery, _ in entries:
                await _quietly(transport.release(delivery, delay=REFUSED_RETRY_DELAY))
        finally:
            for d, _ in entries:
                self._leased.pop(d, None)
            self._count(len(entries))

    def _count(self, jobs: int) -> None:
        self.processed += jobs
        self._check_recycle()

    async def _run(self, handler: Handler, call: Callable[[], Any], context: JobContext) -> Any:
        timeout = handler.options.timeout
        token = current_job.set(context)
        trace = running_trace.set(context.envelope.trace_id)
        try:
            if handler.is_async:
                if timeout is None:
                    return await _exits_fail(call())
                try:
                    return await asyncio.wait_for(_exits_fail(call()), timeout)
                except TimeoutError:
                    raise JobTimeout(f"{handler.name} ran longer than its {timeout:g} s timeout") from None
            call = functools.partial(_exit_fails, call)
            if self._pool is None:
                return self._call_inline(handler, call)
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._pool, contextvars.copy_context().run, call)
            if timeout is None:
                return await future
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                # A thread cannot be stopped: the process is replaced once its other jobs end.
                log.error(
                    "job=%s overran its %g s timeout; this worker process will be replaced",
                    handler.name,
                    timeout,
                )
                self._finish(Exit.REPLACE)
                # Its retry waits the shutdown timeout and a margin for this process to end:
                # the other jobs get the shutdown timeout, not the time they need.
                if self._told_at is None:
                    self._told_at = time.monotonic()
                raise JobTimeout(f"{handler.name} ran longer than its {timeout:g} s timeout") from None
        finally:
            running_trace.reset(trace)
            current_job.reset(token)

    def _call_inline(self, handler: Handler, call: Callable[[], Any]) -> Any:
        """Run a sync job on this thread, stopped by SIGALRM after its timeout; past its last
        chance, :meth:`_watch` (or, where no Python thread runs, faulthandler) ends the process."""
        timeout = self.settings.inline_timeout(handler)
        last_chance = 1.5 * timeout + 1
        try:
            self._job_name = handler.name
            self._job_started = time.monotonic()
            self._job_deadline = self._job_started + last_chance
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                self._in_job = True
                return call()
            finally:
                self._in_job = False
        except _Alarm:
            raise JobTimeout(f"{handler.name} ran longer than its {timeout:g} s timeout") from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._job_deadline = None

    def _watch(self, done: threading.Event) -> None:
        """The inline pool's watchdog thread: ends the process when a job runs on past its
        last chance (it wakes a few times a second; a job costs the loop two stores)."""
        period = min([1.0, *(self.settings.inline_timeout(h) / 4 for h in self.app.handlers.values())])
        hung = hung_after(self.settings.lease)
        try:
            while True:
                # Exit (with every thread's stack) unless this thread runs again within
                # ``hung``; while a job runs, at ``hung`` after its start whenever it took the GIL.
                left = hung if self._job_deadline is None else self._job_started + hung - time.monotonic()
                faulthandler.dump_traceback_later(max(left, 0.05), exit=True)
                if done.wait(max(period, 0.05)):
                    return
                deadline = self._job_deadline
                if deadline is not None and time.monotonic() > deadline:
                    log.critical(
                        "job=%s runs on past its timeout where it cannot be stopped (it caught the "
                        "alarm, or waits in C code); ending this worker process so that a fresh one "
                        "takes over (the job is delivered again)",
                        self._job_name,
                    )
                    os._exit(EXIT_REPLACE)  # the log's stream handler has flushed the line already
        finally:
            faulthandler.cancel_dump_traceback_later()

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self._in_job:  # not once the job has returned: the alarm came too late
            raise _Alarm

    async def _renew_waiting(self, starting: Delivery) -> None:
        """Inline pool: before a job starts, extend the leases more than a sixth used, of
        ``starting`` and of every delivery still waiting (see the module docstring)."""
        now = time.monotonic()
        limit = self.settings.lease / 6
        entry = self._waiting.pop(starting, None)
        due = [(d, t) for d, (t, at) in self._waiting.items() if now - at > limit]
        if entry is not None and now - entry[1] > limit:
            due.append((starting, entry[0]))
        for delivery, transport in due:
            if delivery in self._waiting:
                self._waiting[delivery] = (transport, now)
            if transport.capabilities.lease == "timed":
                await _quietly(transport.extend(delivery, self.settings.lease))

    async def _renew_leases(self) -> None:
        """Every third of the lease, extend the lease of every job still running (one task
        for all jobs: nothing to start or cancel per job)."""
        lease = self.settings.lease
        while True:
            await asyncio.sleep(lease / 3)
            for delivery, transport in list(self._leased.items()):
                if transport.capabilities.lease == "timed":
                    try:
                        await transport.extend(delivery, lease)
                    except TransportError:
                        pass  # a lost connection: the job will be delivered again anyway
                    except Exception:  # never the end of renewing every other job's lease
                        log.exception("job lease of %s not extended", delivery.message_id)

    async def _failed(
        self,
        transport: Transport,
        delivery: Delivery,
        handler: Handler,
        envelope: Envelope,
        error: BaseException,
        took: float,
    ) -> None:
        attempt = envelope.attempt + 1
        record: dict[str, Any] = {
            "attempt": attempt,
            "type": f"{type(error).__module__}.{type(error).__qualname__}",
            "message": str(error)[:2000],
            "traceback": "".join(traceback.format_exception(error))[-MAX_TRACEBACK:],
            "at": int(time.time() * 1000),
            "worker": self.identity,
        }
        policy = handler.options.retry
        headers = {"job": envelope.job, "job-id": envelope.id}
        priority = _priority(delivery)
        if policy.should_retry(error, attempt) and not isinstance(error, GroupFailed):
            delay = policy.delay_after(error, attempt)
            if isinstance(error, JobTimeout) and self._pool is not None and not handler.is_async:
                # Its thread runs on until this process exits (it stops taking jobs and is
                # replaced): the retry waits until then, so the two never run at once.
                delay = max(delay, self.settings.shutdown_timeout + OVERRUN_RETRY_MARGIN)
            longest = transport.capabilities.max_delay
            if longest is not None and delay > longest:
                delay = longest  # waits the transport's longest rather than being refused
            # The retry takes over the unique key (the ack applies first: see Transport.settle).
            unique = (
                Unique(envelope.unique, envelope.id)
                if envelope.unique and transport.capabilities.unique
                else None
            )
            try:
                body = envelope.next_attempt(record).encode()
                retry = Outgoing(body, headers, delay=delay, priority=priority, unique=unique)
                await transport.settle(delivery, [(delivery.queue, retry)])
            except (Unsupported, TypeError, ValueError) as exc:  # too large, or a float JSON cannot carry
                await self._unrecordable(transport, delivery, envelope, "its retry", exc)
                return
            for m in self.app.middleware:
                _hook(m.on_retry, envelope, error, delay)
            fields = _fields(envelope, delivery, "retry", took, error=record["type"], retry_in=delay)
            log.warning(
                "job=%s id=%s attempt=%d outcome=retry in=%.1fs ms=%.1f error=%s: %s",
                envelope.job, envelope.id, attempt, delay, took, record["type"], record["message"][:200],
                extra=fields,
            )  # fmt: skip
            return
        dead = {
            **headers,
            "x-dead-letter-reason": "failed",
            "x-dead-letter-queue": delivery.queue,
            "x-dead-letter-time": str(record["at"]),
            "x-dead-letter-deliveries": str(delivery.delivery_count),
        }
        outcome = {"error": record["type"], "message": record["message"][:500]}
        report = member_report(envelope, "failed", outcome)
        try:
            failed = Outgoing(envelope.failed(record).encode(), dead, priority=priority)
            await transport.settle(delivery, [(transport.dead_letter_queue(delivery.queue), failed)], report)
        except (Unsupported, TypeError, ValueError) as exc:
            await self._unrecordable(transport, delivery, envelope, "its failed-job record", exc)
            return
        for m in self.app.middleware:
            _hook(m.on_fail, envelope, error)
        log.error(
            "job=%s id=%s attempt=%d outcome=failed ms=%.1f error=%s: %s",
            envelope.job, envelope.id, attempt, took, record["type"], record["message"][:200],
            extra=_fields(envelope, delivery, "failed", took, error=record["type"]),
        )  # fmt: skip

    async def _unrecordable(
        self, transport: Transport, delivery: Delivery, envelope: Envelope, what: str, why: Exception
    ) -> None:
        """An attempt whose follow-up (``what``: its retry, failed record or next step) cannot
        be sent (too large for the transport, or holding a float JSON cannot carry): the
        message goes to the dead-letter queue as it came, with the reason, rather than round
        again (a retry that cannot be sent is no retry; a step that ran again would make the
        same result)."""
        log.error(
            "job=%s id=%s outcome=failed: %s cannot be sent (%s); the message goes to the "
            "dead-letter queue as it came",
            envelope.job,
            envelope.id,
            what,
            why,
            extra={"job": envelope.job, "job_id": envelope.id, "outcome": "failed", "error": str(why)},
        )
        await self._dead_letter(transport, delivery, "rejected", f"{what} cannot be sent: {why}")

    async def _reject(self, transport: Transport, delivery: Delivery, reason: str) -> None:
        reason = reason[:MAX_REASON]  # it quotes what came from outside
        log.error(
            "invalid message %s on %s: %s",
            delivery.message_id,
            delivery.queue,
            reason,
            extra={"queue": delivery.queue, "message_id": delivery.message_id, "outcome": "invalid"},
        )
        for m in self.app.middleware:
            _hook(m.on_invalid, delivery.body, reason)
        await self._dead_letter(transport, delivery, "invalid", reason)

    async def _dead_letter(
        self, transport: Transport, delivery: Delivery, reason: Literal["invalid", "rejected"], error: str
    ) -> None:
        """Reject ``delivery`` to its dead-letter queue; if the broker refuses, hand it back
        for later rather than hold it (it would take a slot for ever)."""
        try:
            await transport.reject(delivery, reason, error)
        except TransportClosed:
            pass  # delivered again, and looked at again
        except TransportError as exc:
            log.error(
                "message %s on %s: the broker refused to dead-letter it (%s); handing it back for %g s",
                delivery.message_id, delivery.queue, exc, REFUSED_RETRY_DELAY,
            )  # fmt: skip
            await _quietly(transport.release(delivery, delay=REFUSED_RETRY_DELAY))

    def _time_up(self) -> None:
        if not self._stopping:
            log.info("ran %g s (--max-time); recycling", self.settings.max_time)
        self._finish(Exit.RECYCLE)

    def _check_recycle(self) -> None:
        s = self.settings
        if s.max_jobs is not None and self.processed >= s.max_jobs:
            if not self._stopping:
                log.info("ran %d jobs (--max-jobs %d); recycling", self.processed, s.max_jobs)
            self._finish(Exit.RECYCLE)
        elif s.max_memory_mb is not None and (resident := rss_mb()) > s.max_memory_mb:
            log.warning(
                "resident memory %.0f MiB is over --max-memory %d MiB; recycling", resident, s.max_memory_mb
            )
            self._finish(Exit.RECYCLE)


class _Alarm(BaseException):
    """SIGALRM in an inline job: a BaseException, so the job's ``except Exception`` lets it by."""


def hung_after(lease: float) -> float:
    """Seconds the inline pool's watchdog may be silent before faulthandler ends the process:
    within the 5/6 of the lease a job's start leaves it, and (for leases over 5 s) past the
    last chance of any inline job (1.5 x lease / 3 + 1), so the watchdog acts first where it can."""
    return 0.7 * lease


def rss_mb() -> float:
    """This process's resident memory now, in MiB (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fields(
    envelope: Envelope, delivery: Delivery, outcome: str, ms: float, **more: object
) -> dict[str, object]:
    """A job record's fields, for structured logs (``QUEUEIT_LOG_FORMAT=json``)."""
    return {
        "job": envelope.job,
        "job_id": envelope.id,
        "queue": delivery.queue,
        "attempt": envelope.attempt + 1,
        "outcome": outcome,
        "ms": round(ms, 1),
        "trace_id": envelope.trace_id,
        **more,
    }


def _adopt(plain: Plain, handler: Handler, delivery: Delivery) -> Envelope:
    """An envelope for a plain message, so retries and failures record attempts.

    Raises:
        InvalidMessage: a plain message for a job function that is not a JSON object.
    """
    if isinstance(handler, Job):  # a plain object's keys are a job function's arguments
        if type(plain.value) is not dict:
            raise InvalidMessage(
                f"job {handler.name!r} takes keyword arguments: a plain message for it must be a JSON object"
            )
        return Envelope.new(handler.name, delivery.queue, (), plain.value, job_id=delivery.message_id)
    return Envelope.new(handler.name, delivery.queue, (plain.value,), job_id=delivery.message_id)


def _priority(delivery: Delivery) -> int | None:
    raw = delivery.headers.get("priority", "")
    return int(raw) if raw.isdigit() and int(raw) <= 9 else None


def _hook(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("middleware hook %s failed (ignored)", getattr(fn, "__qualname__", fn))


def _exit_fails(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (SystemExit, KeyboardInterrupt) as exc:
        raise JobExited(f"the job raised {type(exc).__name__}({exc})") from exc


async def _exits_fail(work: Awaitable[Any]) -> Any:
    # Inside the job's own coroutine: a SystemExit escaping a task stops the event loop.
    try:
        return await work
    except (SystemExit, KeyboardInterrupt) as exc:
        raise JobExited(f"the job raised {type(exc).__name__}({exc})") from exc


async def _quietly(step: Any) -> None:
    with contextlib.suppress(TransportError):
        await step


class _Batch:
    """Items of one batch job collected until ``size`` or ``wait`` seconds after the first."""

    def __init__(self, worker: Worker, transport: Transport, handler: BatchJob[Any, Any]) -> None:
        self.worker = worker
        self.transport = transport
        self.handler = handler
        self.entries: list[tuple[Delivery, Envelope]] = []
        self.items: list[Any] = []
        self.timer: asyncio.TimerHandle | None = None

    def add(self, delivery: Delivery, envelope: Envelope, item: Any) -> None:
        # Held here for up to ``wait`` seconds, which may be longer than the lease: renewed
        # like a running job's from now on (``_execute`` takes it over).
        self.worker._leased[delivery] = self.transport
        self.entries.append((delivery, envelope))
        self.items.append(item)
        if len(self.entries) >= self.handler.size:
            self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.handler.wait, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.entries:
            return
        entries, items = self.entries, self.items
        self.entries, self.items = [], []
        call = self.handler.prepare_batch(items)
        self.worker._spawn(self.worker._execute(self.transport, self.handler, entries, call))
