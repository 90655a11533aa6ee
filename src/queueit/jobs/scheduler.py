"""Periodic jobs: ``@app.periodic("*/5 * * * *")`` or ``@app.periodic(every=30)``, sent by
``queueit scheduler``.

A scheduler only sends: at each tick it sends the job, and workers run it as any other job
(retries, timeouts, failed-job tooling included).

Several schedulers (one per host, for availability) still fire each tick once, in one of
two ways, by what the transport can do:

* with unique keys (``queueit://``, ``memory://``): every scheduler sends every tick, with
  the unique key ``<job>:tick:<epoch ms of the tick>`` held for :data:`TICK_HOLD` seconds,
  so whichever sends it first wins and the broker keeps the others' copies out
  (``docs/jobs.md``, "Unique jobs");
* with leaderships (``amqp://``): for each periodic job one scheduler holds its leadership
  (:meth:`~queueit.transports.Transport.lead`) and sends its ticks; the others stand by and
  ask again every :data:`STANDBY_SECONDS`, for one job at a time in turn. The broker frees
  a leadership when its holder's connection goes (a crash included). Each tick is sent with
  the tick's time as the leadership's mark, in one step, so a scheduler that takes over
  knows the last tick sent (whatever its own clock says) and sends the latest one missed
  since, under the rule below.

On a transport with neither, the scheduler says so when it starts, and each scheduler you
run sends every tick.

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
import hashlib
import logging
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..transports import Leadership, Transport, TransportClosed, TransportError, TransportRefused
from ..transports.base import QUEUE_NAME
from .cron import Cron

if TYPE_CHECKING:
    from ..transports import Outgoing
    from .app import App
    from .definitions import Job
    from .options import SendOptions

log = logging.getLogger("queueit.scheduler")

#: Seconds a tick's unique key is held: far longer than any scheduler may be late (MAX_LATE).
TICK_HOLD = 3_600.0
#: A tick more than this late (seconds) is skipped, not sent.
MAX_LATE = 300.0
#: Seconds between attempts to send a tick while the broker cannot be reached.
RETRY_SECONDS = 1.0
#: The shortest ``every=`` interval.
MIN_EVERY = 1.0
#: Missed ticks counted one by one before the count stops (a week of every=1 s is 604,800).
MAX_COUNTED = 10_000
#: Seconds between a standing-by scheduler's attempts to take a leadership (``amqp://``).
STANDBY_SECONDS = 1.0


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
    return f"tick:{tick_ms(tick)}"


def tick_ms(tick: datetime.datetime) -> int:
    return round(tick.timestamp() * 1000)


def leadership_name(job: str, queue: str) -> str:
    """The leadership of the ticks of ``job`` sent to ``queue`` (as unique keys are per queue,
    two apps on one broker share a leadership only if they send the same job to the same
    queue): readable if that makes a valid queue name, else a readable part and a digest."""
    name = f"scheduler.{queue}.{job}"
    if QUEUE_NAME.fullmatch(name) and len(name) <= 180:
        return name
    digest = hashlib.sha256(f"{queue}\0{job}".encode()).hexdigest()[:16]
    return f"scheduler.{queue[:60]}.{re.sub(r'[^A-Za-z0-9._:-]', '_', job)[-60:]}.{digest}"


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
        """Send ticks until :meth:`stop`; ticks already due when it starts are not sent
        (but see the module docstring for a scheduler that takes over a leadership)."""
        capabilities = self.app.capabilities
        if capabilities.leadership and not capabilities.unique:
            await self._run_leading()
            return
        if not capabilities.unique:
            log.warning(
                "scheduler: %s has neither unique keys nor leaderships, so ticks are not "
                "deduplicated: run one scheduler only, or every scheduler sends every tick",
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
            await self._fire(periodic, tick, unique=capabilities.unique)
            upcoming[periodic] = self._next(periodic, tick)

    # -- leaderships (amqp://) -----------------------------------------------------------------

    async def _run_leading(self) -> None:
        """Lead what this scheduler can, over one connection, opened again when it goes."""
        log.info(
            "scheduler: one scheduler at a time leads each periodic job; the others stand by "
            "(%d job(s): %s)", len(self.app.periodics),
            ", ".join(p.describe() for p in self.app.periodics.values()),
        )  # fmt: skip
        while not self._stop.is_set():
            transport = self.app.open_transport()
            try:
                await transport.connect()
            except TransportRefused:
                raise  # a refused login: asking again changes nothing
            except TransportError as exc:
                log.warning("scheduler: cannot reach the broker (%s); trying again", exc)
            else:
                try:
                    await self._lead_over(transport)
                except TransportClosed as exc:
                    log.warning("scheduler: connection lost, its leaderships with it (%s); reconnecting", exc)
                except TransportRefused as exc:
                    # A permission, a mark queue declared otherwise: an operator can fix it
                    # while this one waits (and the leaderships it held go to the others).
                    log.error("scheduler: the broker refused (%s); trying again", exc)
                except TransportError as exc:
                    log.warning("scheduler: %s; trying again", exc)
            finally:
                await transport.close()
            await self._sleep(RETRY_SECONDS)

    async def _lead_over(self, transport: Transport) -> None:
        """Until :meth:`stop`: take the leaderships not held yet, send the held ones' ticks.

        Raises:
            TransportClosed: the connection went (every leadership with it).
        """
        leads: dict[Periodic, Leadership] = {}
        upcoming: dict[Periodic, datetime.datetime] = {}
        periodics = list(self.app.periodics.values())
        standing_by: set[Periodic] = set()
        while not self._stop.is_set():
            for periodic in [p for p in periodics if p not in leads]:
                name = leadership_name(periodic.job.name, periodic.job.options.queue)
                if (lead := await transport.lead(name)) is not None:
                    leads[periodic] = lead
                    upcoming[periodic] = first = self._first_led(periodic, lead.mark)
                    log.info("scheduler: leading %s, next at %s", periodic.describe(), first.isoformat())
                    continue
                if periodic not in standing_by:
                    standing_by.add(periodic)
                    log.info("scheduler: %s is led by another scheduler; standing by", periodic.describe())
                # One refused ask a round: each costs RabbitMQ a channel, and a leader's
                # leaderships are freed together, when its connection goes. The refused one
                # goes last, so that every job is asked for in turn.
                periodics.remove(periodic)
                periodics.append(periodic)
                break
            wait = math.inf if len(leads) == len(periodics) else STANDBY_SECONDS
            if upcoming:
                periodic, tick = min(upcoming.items(), key=lambda item: item[1])
                wait = min(wait, tick.timestamp() - self.clock())
            if wait > 0:
                await self._sleep(wait)
                continue
            await self._fire(periodic, tick, unique=False, lead=leads[periodic])
            upcoming[periodic] = self._next(periodic, tick)

    def _first_led(self, periodic: Periodic, mark: str | None) -> datetime.datetime:
        """The first tick to send on taking over: after the last one sent (the mark), or,
        if none ever was, after now."""
        now = self._now()
        if mark is not None:
            try:
                last = datetime.datetime.fromtimestamp(int(mark) / 1000, datetime.UTC)
            except (ValueError, OverflowError, OSError):
                log.warning("scheduler: %s: ignoring a bad mark %r", periodic.job.name, mark[:40])
            else:
                if last <= now + _LATE:
                    return self._next(periodic, last)
                # Sent by a leader whose clock ran ahead: trusted, it would keep every
                # scheduler from sending until this clock reached it (the mark is durable).
                log.warning(
                    "scheduler: %s: the last tick sent, %s, is ahead of this host's clock by more "
                    "than %g s (one of the clocks is wrong); going on from now",
                    periodic.job.name, last.isoformat(), MAX_LATE,
                )  # fmt: skip
        return periodic.timetable.next_after(now)

    def _next(self, periodic: Periodic, sent: datetime.datetime) -> datetime.datetime:
        """The tick to send after ``sent``: the next one; or, when several have passed since
        (a suspended host, a clock step, no scheduler leading), the latest of them if it is
        at most :data:`MAX_LATE` late, every other one counted and logged as skipped."""
        now = self._now()
        timetable = periodic.timetable
        tick, passed = timetable.next_after(sent), 0
        floor = now - _LATE
        while tick < floor and passed < MAX_COUNTED:  # too late to send: counted, not sent
            tick, passed = timetable.next_after(tick), passed + 1
        if tick < floor:  # more than that: counted no further
            tick = timetable.next_after(floor)
        while (after := timetable.next_after(tick)) <= now:  # only the latest is sent
            tick, passed = after, passed + 1
        if passed:
            self.skipped += passed
            log.warning(
                "scheduler: %s: %s tick(s) passed unsent (a suspended host, a clock that moved, "
                "or no scheduler leading it); %s %s",
                periodic.job.name, f"{passed}+" if passed >= MAX_COUNTED else passed,
                "sending the latest," if tick <= now else "the next is", tick.isoformat(),
            )  # fmt: skip
        return tick

    async def _sleep(self, seconds: float) -> None:
        # Wake at least once a minute: a wall clock that jumps is noticed within that.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), min(seconds, 60.0))

    async def _fire(
        self, periodic: Periodic, tick: datetime.datetime, *, unique: bool, lead: Leadership | None = None
    ) -> None:
        """Send one tick (retrying while the broker is away, until it is too late); through
        ``lead`` with the tick as its mark when given.

        Raises:
            TransportClosed: through ``lead`` only: the leadership went with the connection.
        """
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
            headers = {"tick": tick.isoformat()}
            if unique:
                key = tick_key(tick)
                sender = periodic.job.send_with(job_id=ours, headers=headers, key=key, unique_for=TICK_HOLD)
            else:
                sender = periodic.job.send_with(job_id=ours, headers=headers)
            try:
                if lead is None:
                    job_id = await sender.asend()
                else:
                    job_id = await self._send_led(periodic, sender.options, lead, str(tick_ms(tick)))
            except TransportError as exc:
                if lead is not None and isinstance(exc, TransportClosed):
                    raise
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

    async def _send_led(self, periodic: Periodic, options: SendOptions, lead: Leadership, mark: str) -> str:
        job = periodic.job
        envelope = job.envelope((), {}, options)

        async def publish(queue: str, message: Outgoing) -> None:
            await lead.publish(queue, message, mark)

        return await self.app.apublish_envelope(envelope, options, job.options, via=publish)


_LATE = datetime.timedelta(seconds=MAX_LATE)
