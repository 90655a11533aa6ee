"""Periodic jobs: ``@app.periodic("*/5 * * * *")`` or ``@app.periodic(every=30)``, sent by
``queueit scheduler``.

A scheduler only sends: at each tick it sends the job, and workers run it as any other job
(retries, timeouts, failed-job tooling included).

Several schedulers (one per host, for availability) still fire each tick once: a tick is
sent with the unique key ``<job>:tick:<epoch ms of the tick>`` held for
:data:`TICK_HOLD` seconds, so whichever scheduler sends it first wins and the broker keeps
the others' copies out (``docs/jobs.md``, "Unique jobs"). That needs a transport with unique
keys; on one without (``amqp://``) the scheduler says so when it starts, and each scheduler
you run sends every tick.

Ticks are computed from the wall clock, so every scheduler agrees on them: cron ticks by
:class:`~queueit.jobs.cron.Cron`, ``every=S`` ticks at the epoch multiples of S. A scheduler
that starts does not send ticks from before it started; one that wakes up late (a suspended
host, a broker that was away) still sends the latest tick it missed if it is at most
:data:`MAX_LATE` seconds late, and skips the others with a warning (running a backlog of
stale ticks at once helps nobody).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..transports import TransportError
from .cron import Cron

if TYPE_CHECKING:
    from .app import App
    from .definitions import Job

log = logging.getLogger("queueit.scheduler")

#: Seconds a tick's unique key is held: far longer than any scheduler may be late (MAX_LATE).
TICK_HOLD = 3_600.0
#: A tick more than this late (seconds) is skipped, not sent.
MAX_LATE = 300.0
#: Seconds between attempts to send a tick while the broker cannot be reached.
RETRY_SECONDS = 1.0
#: The shortest ``every=`` interval.
MIN_EVERY = 1.0


class Timetable(Protocol):
    def next_after(self, moment: datetime.datetime) -> datetime.datetime:
        """The first tick strictly after ``moment`` (aware), in UTC."""
        ...


@dataclass(frozen=True)
class Every:
    """Ticks at the epoch multiples of ``seconds`` (so all schedulers agree on them)."""

    seconds: float

    def __post_init__(self) -> None:
        if not MIN_EVERY <= self.seconds <= 366 * 86_400:
            raise ValueError(f"every= must be from {MIN_EVERY:g} second to a year, got {self.seconds}")

    def next_after(self, moment: datetime.datetime) -> datetime.datetime:
        following = (math.floor(moment.timestamp() / self.seconds) + 1) * self.seconds
        return datetime.datetime.fromtimestamp(following, datetime.UTC)

    def __str__(self) -> str:
        return f"every {self.seconds:g} s"


@dataclass(frozen=True)
class Periodic:
    """A job and when it runs."""

    job: Job[[], Any]
    timetable: Cron | Every

    def describe(self) -> str:
        when = self.timetable.text if isinstance(self.timetable, Cron) else str(self.timetable)
        return f"{self.job.name} ({when})"


def tick_key(tick: datetime.datetime) -> str:
    return f"tick:{round(tick.timestamp() * 1000)}"


class Scheduler:
    """Sends the periodic jobs of ``app`` at their ticks until :meth:`stop`.

    ``clock`` (epoch seconds) is injectable so tests can drive time.
    """

    def __init__(self, app: App, *, clock: Callable[[], float] = time.time) -> None:
        if not app.periodics:
            raise ValueError("the app has no periodic jobs (@app.periodic)")
        self.app = app
        self.clock = clock
        self._stop = asyncio.Event()
        self.sent = 0  # ticks this scheduler sent (not counting those another one had sent)
        self.kept_out = 0  # ticks another scheduler had sent first
        self.skipped = 0  # ticks missed by more than MAX_LATE

    def stop(self) -> None:
        self._stop.set()

    def _now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.clock(), datetime.UTC)

    async def run(self) -> None:
        """Send ticks until :meth:`stop`; ticks already due when it starts are not sent."""
        transport_unique = self.app.capabilities.unique
        if not transport_unique:
            log.warning(
                "scheduler: %s has no unique keys, so ticks are not deduplicated: run one scheduler "
                "only, or every scheduler sends every tick",
                self.app.url.split("://", 1)[0] + "://",
            )
        start = self._now()
        upcoming = {p: p.timetable.next_after(start) for p in self.app.periodics.values()}
        for p, tick in upcoming.items():
            log.info("scheduler: %s, next at %s", p.describe(), tick.isoformat())
        while not self._stop.is_set():
            periodic, tick = min(upcoming.items(), key=lambda item: item[1])
            wait = tick.timestamp() - self.clock()
            if wait > 0:
                await self._sleep(wait)
                continue  # look again: the clock may have jumped, or a stop come
            await self._fire(periodic, tick, unique=transport_unique)
            upcoming[periodic] = self._next(periodic, tick)

    def _next(self, periodic: Periodic, sent: datetime.datetime) -> datetime.datetime:
        """The tick to send after ``sent``: the next one, or, when several have passed since
        (a suspended host, a clock step), only the latest of them."""
        now = self._now()
        tick = periodic.timetable.next_after(max(sent, now - _LATE))
        passed = 0
        while (after := periodic.timetable.next_after(tick)) <= now:
            tick, passed = after, passed + 1
        if passed:
            self.skipped += passed
            log.warning(
                "scheduler: %s: %d tick(s) passed while this scheduler was behind (a suspended "
                "host, or the clock moved); sending only the latest, %s",
                periodic.job.name, passed, tick.isoformat(),
            )  # fmt: skip
        return tick

    async def _sleep(self, seconds: float) -> None:
        # Wake at least once a minute: a wall clock that jumps is noticed within that.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), min(seconds, 60.0))

    async def _fire(self, periodic: Periodic, tick: datetime.datetime, *, unique: bool) -> None:
        """Send one tick (retrying while the broker is away, until it is too late)."""
        while not self._stop.is_set():
            late = self.clock() - tick.timestamp()
            if late > MAX_LATE:
                self.skipped += 1
                log.warning(
                    "scheduler: skipped %s at %s: %.0f s late (the most is %g s)",
                    periodic.job.name, tick.isoformat(), late, MAX_LATE,
                )  # fmt: skip
                return
            ours = uuid.uuid4().hex
            if unique:
                sender = periodic.job.send_with(job_id=ours, key=tick_key(tick), unique_for=TICK_HOLD)
            else:
                sender = periodic.job.send_with(job_id=ours)
            try:
                job_id = await sender.asend()
            except TransportError as exc:
                log.warning("scheduler: cannot send %s yet (%s); trying again", periodic.job.name, exc)
                await self._sleep(RETRY_SECONDS)
                continue
            if job_id != ours:  # the id of the run another scheduler sent for this tick
                self.kept_out += 1
                # At info level: it shows that this scheduler is alive and standing by.
                log.info(
                    "scheduler: %s for %s was sent by another scheduler", periodic.job.name, tick.isoformat()
                )
            else:
                self.sent += 1
                log.info("scheduler: sent %s for %s (job %s)", periodic.job.name, tick.isoformat(), job_id)
            return


_LATE = datetime.timedelta(seconds=MAX_LATE)
