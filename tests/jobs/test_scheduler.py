"""Periodic jobs: ``@app.periodic`` and ``queueit scheduler``; several schedulers fire each tick once."""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from queueit.jobs import App
from queueit.jobs.cron import CronError
from queueit.jobs.scheduler import MAX_LATE, Every, Scheduler, leadership_name, tick_key
from queueit.transports import TransportClosed
from queueit.transports.base import QUEUE_NAME
from queueit.transports.memory import shared_broker

from ..rabbitmq import RabbitNode
from .conftest import REPO, Ledger, WorkerProcess, start_scheduler, stop_all

UTC = datetime.UTC


def test_every_ticks_at_epoch_multiples_so_schedulers_agree() -> None:
    every = Every(30)
    moment = datetime.datetime(2026, 11, 27, 10, 0, 29, 999_000, UTC)
    assert every.next_after(moment) == datetime.datetime(2026, 11, 27, 10, 0, 30, tzinfo=UTC)
    assert every.next_after(datetime.datetime(2026, 11, 27, 10, 0, 30, tzinfo=UTC)) == datetime.datetime(
        2026, 11, 27, 10, 1, 0, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="every= must be from 1"):
        Every(0.5)


def test_periodic_refuses_what_cannot_be_scheduled() -> None:
    app = App("memory://")
    with pytest.raises(ValueError, match="one of them"):
        app.periodic()
    with pytest.raises(ValueError, match="one of them"):
        app.periodic("* * * * *", every=5)
    with pytest.raises(ValueError, match="tz= applies to cron"):
        app.periodic(every=5, tz="Europe/Berlin")
    with pytest.raises(CronError, match="out of range"):
        app.periodic("0 25 * * *")
    with pytest.raises(TypeError, match="takes no arguments"):

        @app.periodic(every=5)  # type: ignore[arg-type]  # mypy refuses it too
        def needs(n: int) -> None: ...

    @app.periodic("*/5 * * * *", tz="Europe/Berlin", queue="reports")
    def report() -> None: ...

    assert report.name in app.periodics
    assert report.options.queue == "reports"
    with pytest.raises(ValueError, match="no periodic jobs"):
        Scheduler(App("memory://"))


def memory_app() -> tuple[App, str]:
    name = "sched-" + uuid.uuid4().hex
    return App(f"memory://{name}"), name


def test_two_schedulers_send_each_tick_once() -> None:
    app, broker_name = memory_app()

    @app.periodic(every=1, queue="ticks")
    def beat() -> None: ...

    async def run_both() -> tuple[Scheduler, Scheduler]:
        a, b = Scheduler(app), Scheduler(app)
        tasks = [asyncio.create_task(s.run()) for s in (a, b)]
        await asyncio.sleep(3.5)
        a.stop()
        b.stop()
        await asyncio.gather(*tasks)
        return a, b

    a, b = asyncio.run(run_both())
    sent = shared_broker(broker_name).messages("ticks")
    ids = [headers.get("job-id", "") for _, headers in sent]
    ticks = a.sent + b.sent
    assert 3 <= ticks <= 4, (a.sent, b.sent)
    assert len(sent) == ticks
    assert len(set(ids)) == ticks
    assert a.kept_out + b.kept_out == ticks  # each tick: one sent it, the other was kept out
    assert a.skipped == b.skipped == 0


def test_a_cron_job_is_sent_at_the_minute_and_not_for_ticks_before_the_start() -> None:
    app, broker_name = memory_app()

    @app.periodic("* * * * *", queue="minutely")
    def minutely() -> None: ...

    # A wall clock 0.8 s before a minute: the first tick comes 0.8 s after the start.
    minute = datetime.datetime(2026, 11, 27, 10, 1, tzinfo=UTC).timestamp()
    offset = minute - 0.8 - time.time()
    clock: Callable[[], float] = lambda: time.time() + offset  # noqa: E731

    async def run() -> Scheduler:
        s = Scheduler(app, clock=clock)
        task = asyncio.create_task(s.run())
        await asyncio.sleep(1.6)
        s.stop()
        await task
        return s

    s = asyncio.run(run())
    assert s.sent == 1
    ((body, _headers),) = shared_broker(broker_name).messages("minutely")
    assert (
        f'"unique":"{minutely.name}:{tick_key(datetime.datetime.fromtimestamp(minute, UTC))}"'
        in body.decode()
    )


def test_a_tick_too_late_is_skipped_not_sent() -> None:
    app, broker_name = memory_app()

    @app.periodic(every=60, queue="late")
    def late() -> None: ...

    s = Scheduler(app)
    tick = datetime.datetime.fromtimestamp(time.time() - MAX_LATE - 5, UTC)
    asyncio.run(s._fire(app.periodics[late.name], tick, unique=True))
    assert (s.sent, s.skipped) == (0, 1)
    assert shared_broker(broker_name).messages("late") == []


def test_after_the_clock_jumps_only_the_latest_missed_tick_is_sent() -> None:
    app, broker_name = memory_app()

    @app.periodic(every=1, queue="jumpy")
    def jumpy() -> None: ...

    now = [time.time()]
    s = Scheduler(app, clock=lambda: now[0])
    periodic = app.periodics[jumpy.name]
    sent = datetime.datetime.fromtimestamp(math.floor(now[0]), UTC)
    now[0] += 600  # suspended for ten minutes
    upcoming = s._next(periodic, sent)
    assert upcoming.timestamp() == math.floor(now[0])  # the latest tick, not 600 stale ones
    assert s.skipped == 599  # every other one since, counted
    now[0] += 0.5
    asyncio.run(s._fire(periodic, upcoming, unique=True))
    assert (s.sent, len(shared_broker(broker_name).messages("jumpy"))) == (1, 1)


def test_a_led_tick_carries_its_time_and_a_bad_or_missing_mark_starts_from_now() -> None:
    app, broker_name = memory_app()

    @app.periodic(every=60, queue="led")
    def led() -> None: ...

    s = Scheduler(app)
    periodic = app.periodics[led.name]
    now = time.time()
    fresh = s._first_led(periodic, None)
    assert fresh == s._first_led(periodic, "not a tick") == periodic.timetable.next_after(s._now())
    assert fresh.timestamp() > now
    # A mark ahead of this scheduler's clock (the last leader's clock ran ahead a little):
    # never before it...
    ahead = datetime.datetime.fromtimestamp(fresh.timestamp() + 120, UTC)
    assert s._first_led(periodic, str(round(ahead.timestamp() * 1000))).timestamp() == ahead.timestamp() + 60
    # ...unless it is further ahead than MAX_LATE: one of the clocks is wrong, and trusting it
    # would keep every scheduler silent until this clock got there (the mark is durable).
    tomorrow = str(round((now + 86_400) * 1000))
    assert s._first_led(periodic, tomorrow) == periodic.timetable.next_after(s._now())
    # A tick missed since the last one sent, less than MAX_LATE ago, is sent late.
    missed = datetime.datetime.fromtimestamp(math.floor(now / 60) * 60, UTC)
    behind = str(round((missed.timestamp() - 60) * 1000))
    assert s._first_led(periodic, behind) == missed
    assert s.skipped == 0
    # Ticks missed for longer (no scheduler led for an hour) are counted as skipped.
    an_hour_ago = str(round((missed.timestamp() - 3_600) * 1000))
    assert s._first_led(periodic, an_hour_ago) == missed
    assert s.skipped == 59

    async def lead_and_fire() -> None:
        transport = app.open_transport()
        await transport.connect()
        lead = await transport.lead("scheduler.test")
        assert lead is not None
        await s._fire(periodic, missed, unique=False, lead=lead)
        await transport.close()
        with pytest.raises(TransportClosed):  # the leadership went with its connection
            await s._fire(periodic, missed, unique=False, lead=lead)

    asyncio.run(lead_and_fire())
    [(body, _)] = shared_broker(broker_name).messages("led")
    assert json.loads(body)["headers"] == {"tick": missed.isoformat()}
    assert shared_broker(broker_name).marks["scheduler.test"] == str(round(missed.timestamp() * 1000))


def test_leadership_names_are_valid_queue_names_and_distinct() -> None:
    assert leadership_name("tasks.report", "reports") == "scheduler.reports.tasks.report"
    odd = [
        leadership_name("tasks.<locals>.report", "reports"),
        leadership_name("tasks.{locals}.report", "reports"),
        leadership_name("x" * 400, "reports"),
        leadership_name("x" * 400, "other"),  # the same job sent to another queue: another leadership
    ]
    assert len(set(odd)) == 4
    assert all(QUEUE_NAME.fullmatch(name) for name in odd)


def test_on_rabbitmq_one_scheduler_leads_each_job_and_another_takes_over_after_the_last_tick(
    rabbitmq: RabbitNode,
) -> None:
    app = App(rabbitmq.url)
    run_id = uuid.uuid4().hex[:8]
    every = {f"ticks-{run_id}-1": 1, f"ticks-{run_id}-2": 2}
    for queue, interval in every.items():
        app.periodic(every=interval, queue=queue, name=f"beat-{queue}")(
            lambda: None
        )  # leaderships of their own

    async def until(done: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    async def run() -> tuple[Scheduler, Scheduler, float, dict[str, list[str]]]:
        a, b = Scheduler(app), Scheduler(app)
        tasks = {s: asyncio.create_task(s.run()) for s in (a, b)}
        await until(lambda: a.sent + b.sent >= 4, "four ticks")
        a.stop()  # whatever it led, b takes over once RabbitMQ closed a's connection
        await tasks[a]
        stopped, sent = time.time(), b.sent
        await until(lambda: b.sent >= sent + 4, "four ticks from the one that took over")
        b.stop()
        await tasks[b]
        transport = app.open_transport()
        await transport.connect()
        ticks: dict[str, list[str]] = {queue: [] for queue in every}
        for queue in every:
            await transport.consume(queue, prefetch=100, lease=30)
        while (delivery := await transport.next_delivery(1.0)) is not None:
            ticks[delivery.queue].append(json.loads(delivery.body)["headers"]["tick"])
            await transport.ack(delivery)
        await transport.close()
        await app.aclose()
        return a, b, stopped, ticks

    a, b, stopped, ticks = asyncio.run(run())
    assert sum(map(len, ticks.values())) == a.sent + b.sent
    expected = 0
    for queue, sent in ticks.items():
        assert len(set(sent)) == len(sent), sent  # no tick twice, across the takeover too
        seconds = sorted(round(datetime.datetime.fromisoformat(t).timestamp()) for t in sent)
        assert seconds[-1] > stopped, (queue, seconds, stopped)  # b leads both jobs in the end
        expected += (seconds[-1] - seconds[0]) // every[queue] + 1
    # None lost unseen: each tick between the first and the last was sent or counted (and
    # logged) as skipped.
    assert expected == a.sent + b.sent + a.skipped + b.skipped, ticks
    assert a.kept_out == b.kept_out == 0


# -- real processes --------------------------------------------------------------------------


def test_two_scheduler_processes_fire_each_tick_once_and_a_worker_runs_it(
    job_env: dict[str, str], start_worker: Callable[..., WorkerProcess], ledger: Ledger, tmp_path: Path
) -> None:
    start_worker("--queues", "periodic")
    logs = [tmp_path / "scheduler-a.log", tmp_path / "scheduler-b.log"]
    schedulers = [start_scheduler(job_env, path) for path in logs]
    try:
        ledger.wait_for(lambda ld: len(ld.of("tick")) >= 4, "four ticks run", timeout=30)
        # Kill one: the other keeps ticking alone.
        schedulers[0].kill()
        schedulers[0].wait(5)
        ran = len(ledger.of("tick"))
        ledger.wait_for(lambda ld: len(ld.of("tick")) >= ran + 2, "two more ticks with one scheduler")
    finally:
        codes = stop_all(schedulers)
    assert codes[1] == 0, logs[1].read_text()
    for path in logs:
        assert "Traceback" not in path.read_text(), path.read_text()
    keys = Counter(parts[1] for parts in ledger.of("tick"))
    assert max(keys.values()) == 1, keys  # no tick ran twice
    seconds = sorted(int(key) for key in keys)
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), seconds  # none missed
    texts = [path.read_text() for path in logs]
    # Both took part: each one sent a tick or found it sent by the other. Which one wins a tick is
    # a race, so neither has to have won one before the first was killed.
    assert all("scheduler: sent" in t or "was sent by another scheduler" in t for t in texts), texts
    assert "was sent by another scheduler" in "".join(texts)  # they raced for a tick at least once


def test_scheduler_list_and_errors(job_env: dict[str, str]) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "queueit", "scheduler", *args],
            check=False,
            cwd=REPO,
            env=job_env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    listed = run("tests.jobs.sample_app:app", "--list")
    assert listed.returncode == 0, listed.stderr
    assert "tests.jobs.sample_app.tick (every 1 s): " in listed.stdout
    assert listed.stdout.count("+00:00") == 3
    missing = run("tests.jobs.nothing_here:app")
    assert missing.returncode == 2
    assert "cannot import 'tests.jobs.nothing_here'" in missing.stderr
    none = run("tests.jobs.test_scheduler:NO_PERIODICS")
    assert none.returncode == 2
    assert "has no periodic jobs" in none.stderr


NO_PERIODICS = App("memory://")
