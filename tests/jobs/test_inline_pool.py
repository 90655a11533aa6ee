"""``queueit worker --pool inline``: sync jobs on the event loop's thread, one at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from queueit.jobs import App, SendOptions, Worker, WorkerSettings
from queueit.jobs.worker import check_inline
from queueit.transports.memory import MemoryTransport, shared_broker

from ..conftest import BrokerProcess, run_worker_until, start_broker, wait_until
from . import sample_app as jobs
from .conftest import REPO, Ledger, Sender
from .test_worker_processes import StartWorker, queue_depth


def test_inline_workers_run_sync_and_async_jobs_in_one_thread_and_ack_them(
    start_worker: StartWorker, send: Sender, ledger: Ledger, broker: BrokerProcess
) -> None:
    worker = start_worker("--processes", "2", "--pool", "inline", "--queues", "work")
    wait_until(lambda: worker.consuming() == 2, "both processes to subscribe")
    for n in range(30):
        send(jobs.add, n)
    for n in range(5):
        send(jobs.async_add, 100 + n)
    ledger.wait_for(lambda led: len(led.of("add")) == 30 and len(led.of("async_add")) == 5, "every job")
    assert sorted(int(parts[1]) for parts in ledger.of("add")) == list(range(30))
    wait_until(lambda: queue_depth(broker, "work") == (0, 0), "every job acked")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_an_inline_job_over_its_timeout_is_stopped_and_fails_in_the_same_process(
    start_worker: StartWorker, send: Sender, ledger: Ledger, broker: BrokerProcess
) -> None:
    worker = start_worker("--processes", "1", "--pool", "inline", "--queues", "slow,work")
    send(jobs.runaway, 1)  # sleeps 30 s; its timeout is 1 s, retries 0
    wait_until(lambda: queue_depth(broker, "DLQ.slow")[0] == 1, "the timed-out job to fail", timeout=15)
    send(jobs.add, 7)
    ledger.wait_for(lambda led: len(led.of("add")) == 1, "the next job")
    # SIGALRM stopped the job itself: no process had to be replaced for it.
    assert len(worker.pids()) == 1
    assert len({parts[2] for parts in ledger.lines()}) == 1
    # The failure is logged once its settle is receipted (fsynced); the next job may run
    # before that on a slow disk, as the DLQ's depth shows the settle before it is durable.
    wait_until(
        lambda: "ran longer than its 1 s timeout" in worker.log(), "the failure's log line", log=worker.log
    )
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_an_inline_job_that_swallows_its_alarm_is_ended_by_the_watchdog(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    worker = start_worker("--processes", "1", "--pool", "inline", "--queues", "wedge")
    send(jobs.stubborn, 1)  # timeout 0.5 s; catches the alarm and sleeps on
    ledger.wait_for(lambda led: len(led.of("stubborn")) == 2, "the job to run again", timeout=30)
    first, second = ledger.of("stubborn")
    assert first[2] != second[2]  # in the process that replaced the stuck one
    log = worker.log()
    assert "runs on past its timeout where it cannot be stopped" in log
    assert "asked to be replaced" in log
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_an_inline_job_spinning_in_c_code_is_ended_before_its_lease_runs_out(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    # Lease 3 s: faulthandler ends the stuck process after 2.1 s of silence from the watchdog,
    # before the broker could give the job to the second process while it spins.
    worker = start_worker("--processes", "2", "--pool", "inline", "--lease", "3", "--queues", "wedge")
    send(jobs.wedged, 1)  # holds the GIL in C: neither SIGALRM's handler nor the watchdog runs
    ledger.wait_for(lambda led: len(led.of("wedged")) == 2, "the job to run again", timeout=30)
    first, second = ledger.of("wedged")
    assert first[2] != second[2]
    assert second[3] == "0"  # the process that spun was gone when the job ran again
    log = worker.log()
    assert "Timeout (0:00:02" in log  # faulthandler's dump of where it was stuck
    assert "in wedged" in log
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_deliveries_waiting_behind_inline_jobs_keep_their_leases(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    # Lease 4.5 s; 7 jobs of 0.8 s taken at once by one process: the last waits 4.8 s. Without
    # extensions their leases would run out and the second worker would run them too.
    busy = start_worker("--pool", "inline", "--lease", "4.5", "--concurrency", "7", "--queues", "slow")
    wait_until(lambda: busy.consuming() == 1, "the inline worker to subscribe")
    for n in range(7):
        send(jobs.sleepy, n, seconds=0.8)
    ledger.wait_for(lambda led: len(led.of("start")) >= 1, "the first job to start")
    other = start_worker("--lease", "4.5", "--queues", "slow")
    wait_until(lambda: other.consuming() == 1, "the second worker to subscribe")
    ledger.wait_for(lambda led: len(led.of("end")) == 7, "every job", timeout=30)
    starts = Counter(parts[1] for parts in ledger.of("start"))
    assert starts == Counter({str(n): 1 for n in range(7)})
    for worker in (busy, other):
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0


def test_a_stop_during_an_inline_job_lets_it_finish_and_hands_the_waiting_ones_back(
    start_worker: StartWorker, send: Sender, ledger: Ledger, broker: BrokerProcess
) -> None:
    worker = start_worker("--pool", "inline", "--concurrency", "4", "--queues", "slow")
    wait_until(lambda: worker.consuming() == 1, "the worker to subscribe")
    # The worker process is frozen while the three are sent, so that it reads them in one
    # pass: the second and third are queued on its loop behind the first before the stop
    # signal comes, and must not start after the first although the loop has not yet run
    # the signal's handler.
    [pid] = worker.pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        for n in range(3):
            send(jobs.sleepy, n, seconds=4.0 if n == 0 else 0.1)
    finally:
        os.kill(pid, signal.SIGCONT)
    ledger.wait_for(lambda led: len(led.of("start")) == 1, "the first job to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert [p[1] for p in ledger.of("end")] == ["0"]  # it finished; the two waiting were not run
    assert queue_depth(broker, "slow") == (2, 0)


def test_the_inline_pool_refuses_a_timeout_its_lease_cannot_cover() -> None:
    app = App("memory://inline-refusal")

    @app.job(timeout=30)
    def slow() -> None: ...

    @app.job(timeout=120)
    async def slow_but_async() -> None: ...  # async jobs do not block the loop: any timeout

    check_inline(app, WorkerSettings(pool="threads"))
    with pytest.raises(ValueError, match=r"at most a third of the lease \(20 s\): raise --lease to 90"):
        check_inline(app, WorkerSettings(pool="inline"))
    check_inline(app, WorkerSettings(pool="inline", lease=90))
    with pytest.raises(ValueError, match="pool must be one of threads, inline"):
        WorkerSettings(pool="processes")  # type: ignore[arg-type]


def test_the_worker_command_refuses_it_too(job_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "queueit", "worker", "tests.jobs.sample_app:app", "--pool", "inline",
         "--lease", "2"],
        cwd=REPO, env=job_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "job 'tests.jobs.sample_app.runaway' has a 1 s timeout" in done.stderr
    assert "raise --lease to 3 or more, or use --pool threads" in done.stderr


def test_an_inline_job_longer_than_the_heartbeat_keeps_its_connection(tmp_path: Path) -> None:
    # The broker gives up on a silent client after its heart-beat interval x grace: with grace 1
    # and the client's usual 10 s beats, a 12 s job on a blocked loop would lose the connection,
    # and its delivery would be handed to the next consumer while it still runs.
    config = tmp_path / "queueit.toml"
    config.write_text("[server]\nheartbeat_grace = 1.0\n")
    broker = start_broker(tmp_path / "data", "--config", str(config))
    ledger = Ledger(tmp_path / "ledger.txt")
    url = f"queueit://{broker.host}:{broker.port}"
    env = dict(os.environ, QUEUEIT_URL=url, QUEUEIT_LEDGER=str(ledger.path), PYTHONUNBUFFERED="1")
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "queueit", "worker", "tests.jobs.sample_app:app", "--pool", "inline",
             "--queues", "slow"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    app = App(url)
    try:
        wait_until(lambda: " taking jobs from " in log_path.read_text(), "the worker to subscribe")
        options = SendOptions()
        app.publish_envelope(
            jobs.sleepy.envelope((1,), {"seconds": 12.0}, options), options, jobs.sleepy.options
        )
        ledger.wait_for(lambda led: len(led.of("end")) == 1, "the long job", timeout=40)
        wait_until(lambda: queue_depth(broker, "slow") == (0, 0), "its ack")
        assert len(ledger.of("start")) == 1
        assert "connection lost" not in log_path.read_text()
    finally:
        app.close()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        broker.stop()


def test_the_inline_pool_coalesces_settles_while_jobs_of_its_connection_wait() -> None:
    """Settles are coalesced while more deliveries of the same transport wait behind the job
    starting; the last one turns it off, so its ACK and those before it go out at once."""
    calls: list[tuple[bool, int]] = []  # (on, jobs done when asked)
    done: list[int] = []
    name = "inline-coalesce"

    class Recording(MemoryTransport):
        def coalesce(self, on: bool) -> None:
            calls.append((on, len(done)))

    app = App(f"memory://{name}", transport_factory=lambda: Recording(shared_broker(name)))

    @app.job(queue="quick")
    def quick(n: int) -> None:
        done.append(n)

    for n in range(5):
        quick.send(n)
    worker = Worker(app, WorkerSettings(pool="inline", concurrency=8))

    run_worker_until(worker, lambda: len(done) == 5, 10)
    app.close()
    assert done == [0, 1, 2, 3, 4]
    assert calls[-1] == (False, 4), calls  # the last job: nothing waits, what is held goes out
    assert (True, 0) in calls, calls  # the first job, with four behind it
