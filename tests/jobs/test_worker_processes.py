"""``queueit worker`` as users run it: real supervisor and worker processes, a real broker,
real signals and ``kill -9``. Jobs report what they did in a ledger file (sample_app.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from queueit.cli.main import build_parser
from queueit.client import Client

from ..conftest import BrokerProcess, wait_until
from . import sample_app as jobs
from .conftest import REPO, Ledger, Sender, WorkerProcess

StartWorker = Callable[..., WorkerProcess]


def queue_depth(broker: BrokerProcess, queue: str) -> tuple[int, int]:
    """(ready, in flight) of ``queue``, from the broker's stat."""
    import json

    with Client(broker.host, broker.port) as c:
        c.send("/queueit/admin", b"", headers={"command": "stat", "reply-to": "/temp-queue/a"})
        answer = json.loads(c.receive(timeout=5).body)
    for q in answer["queues"]:
        if q["name"] == queue:
            return q["depth"], q["in_flight"]
    return 0, 0


def test_two_processes_share_the_work_and_run_each_job_once(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    worker = start_worker("--processes", "2", "--concurrency", "4")
    wait_until(lambda: worker.consuming() == 2, "both processes to subscribe", log=worker.log)
    for i in range(200):
        send(jobs.add if i % 2 else jobs.async_add, i)
    ledger.wait_for(lambda led: len(led.lines()) >= 200, "200 jobs")
    time.sleep(0.3)
    lines = ledger.lines()
    assert sorted(int(parts[1]) for parts in lines) == list(range(200))  # each exactly once
    assert len({parts[2] for parts in lines}) == 2  # both processes worked
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_a_worker_process_killed_mid_job_is_replaced_and_the_job_runs_again(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    worker = start_worker("--processes", "1", "--concurrency", "2")
    send(jobs.sleepy, 1, seconds=5.0)  # still running when the kill comes, on a loaded machine too
    ledger.wait_for(lambda led: len(led.of("start")) == 1, "the job to start")
    victim = int(ledger.of("start")[0][2])
    os.kill(victim, signal.SIGKILL)
    ledger.wait_for(lambda led: len(led.of("end")) == 1, "the job to run again and end", timeout=30)
    starts = ledger.of("start")
    assert len(starts) == 2
    assert int(starts[1][2]) != victim  # run again by the replacement process
    assert worker.pids()[:1] == [victim]
    assert len(worker.pids()) == 2
    assert "killed by SIGKILL" in worker.log()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_sigterm_lets_running_jobs_finish_and_leaves_queued_ones_queued(
    start_worker: StartWorker, send: Sender, ledger: Ledger, broker: BrokerProcess
) -> None:
    worker = start_worker("--processes", "1", "--concurrency", "1", "--shutdown-timeout", "10")
    send(jobs.sleepy, 1, seconds=4.0)  # still running when the signal comes
    send(jobs.sleepy, 2, seconds=0.1)
    ledger.wait_for(lambda led: len(led.of("start")) == 1, "the first job to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert [p[1] for p in ledger.of("end")] == ["1"]  # finished, not cut short
    assert [p[1] for p in ledger.of("start")] == ["1"]  # the second was not taken
    assert queue_depth(broker, "slow") == (1, 0)  # and waits on the broker


def test_past_the_shutdown_timeout_running_jobs_are_handed_back(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    first = start_worker("--processes", "1", "--shutdown-timeout", "0.5")
    send(jobs.sleepy, 1, seconds=3.0)
    ledger.wait_for(lambda led: len(led.of("start")) == 1, "the job to start")
    started = time.monotonic()
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    assert time.monotonic() - started < 3.0  # did not wait for the job
    second = start_worker("--processes", "1")
    ledger.wait_for(lambda led: len(led.of("end")) >= 1, "the handed-back job to run", timeout=30)
    assert len(ledger.of("start")) >= 2
    second.signal(signal.SIGTERM)
    assert second.wait() == 0


def test_a_second_signal_hands_running_jobs_back_at_once(
    start_worker: StartWorker, send: Sender, ledger: Ledger, broker: BrokerProcess
) -> None:
    worker = start_worker("--processes", "1", "--shutdown-timeout", "60")
    send(jobs.sleepy, 1, seconds=5.0)
    ledger.wait_for(lambda led: len(led.of("start")) == 1, "the job to start")
    worker.signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.signal(signal.SIGINT)
    assert worker.wait(10) == 0
    assert ledger.of("end") == []
    # Forwarded as a different signal, so that it cannot merge with the first one.
    assert "SIGINT: stopping now" in worker.log()
    wait_until(lambda: queue_depth(broker, "slow") == (1, 0), "the job back in its queue")


def test_sighup_replaces_the_processes_without_losing_a_job(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    worker = start_worker("--processes", "2", "--concurrency", "2")
    wait_until(lambda: len(worker.pids()) == 2, "two processes")
    send(jobs.sleepy, 1, seconds=1.0)
    ledger.wait_for(lambda led: len(led.of("start")) == 1, "the long job to start")
    worker.signal(signal.SIGHUP)
    for i in range(50):
        send(jobs.add, i)
    wait_until(lambda: len(worker.pids()) == 4, "two fresh processes")
    ledger.wait_for(lambda led: len(led.of("add")) == 50 and len(led.of("end")) == 1, "every job")
    assert len(ledger.of("start")) == 1  # the running job finished where it was; not run twice
    assert sorted(int(p[1]) for p in ledger.of("add")) == list(range(50))
    old = set(worker.pids()[:2])
    wait_until(
        lambda: worker.log().count("(replaced) exited with 0") == 2,
        "the old processes to exit",
        log=worker.log,
    )
    time.sleep(0.2)
    for i in range(50, 60):
        send(jobs.add, i)
    ledger.wait_for(lambda led: len(led.of("add")) == 60, "jobs after the reload")
    assert not {int(p[2]) for p in ledger.of("add")[-10:]} & old
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_a_reload_to_code_that_cannot_be_imported_keeps_the_running_processes(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    worker = start_worker("--processes", "2")
    wait_until(lambda: worker.log().count("taking jobs from") == 2, "two processes at work")
    running = set(worker.pids())
    broken = Path(str(ledger.path) + ".broken")
    broken.touch()  # the next import of the app fails
    worker.signal(signal.SIGHUP)
    wait_until(lambda: "could not import" in worker.log(), "the reload to give up", log=worker.log)
    assert worker.process.poll() is None  # the supervisor carries on
    send(jobs.add, 1)
    ledger.wait_for(lambda led: len(led.of("add")) == 1, "the old processes to work")
    assert int(ledger.of("add")[0][2]) in running
    broken.unlink()  # mended: the next reload goes through
    worker.signal(signal.SIGHUP)
    wait_until(
        lambda: worker.log().count("(replaced) exited with 0") == 2,
        "the old processes to exit",
        log=worker.log,
    )
    send(jobs.add, 2)
    ledger.wait_for(lambda led: len(led.of("add")) == 2, "the new processes to work")
    assert int(ledger.of("add")[1][2]) not in running
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_max_jobs_recycles_processes(start_worker: StartWorker, send: Sender, ledger: Ledger) -> None:
    worker = start_worker("--processes", "1", "--concurrency", "1", "--max-jobs", "5")
    for i in range(23):
        send(jobs.add, i)
    ledger.wait_for(lambda led: len(led.of("add")) == 23, "all jobs")
    pids = Counter(p[2] for p in ledger.of("add"))
    assert len(pids) == 5
    assert max(pids.values()) <= 5
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_max_memory_recycles_a_process_that_grew(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    worker = start_worker("--processes", "1", "--concurrency", "1", "--max-memory", "150")
    for i in range(4):
        send(jobs.hog, i, mb=60)
    ledger.wait_for(lambda led: len(led.of("hog")) == 4, "the jobs")
    assert len({p[2] for p in ledger.of("hog")}) >= 2
    assert "is over --max-memory 150 MiB" in worker.log()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_a_sync_job_over_its_hard_timeout_fails_and_its_process_is_replaced(
    start_worker: StartWorker, send: Sender, ledger: Ledger, broker: BrokerProcess
) -> None:
    worker = start_worker("--processes", "1", "--concurrency", "2")
    send(jobs.runaway, 1)
    ledger.wait_for(lambda led: len(led.of("runaway")) == 1, "the job to start")
    wait_until(lambda: len(worker.pids()) == 2, "a replacement process", timeout=15)
    assert "is finishing its jobs to be replaced" in worker.log()
    wait_until(lambda: queue_depth(broker, "DLQ.slow")[0] == 1, "the failed job")
    send(jobs.add, 99)
    ledger.wait_for(lambda led: len(led.of("add")) == 1, "the replacement to work")
    assert len(ledger.of("runaway")) == 1  # failed (retries=0), not run again
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_a_job_longer_than_its_lease_is_renewed_not_delivered_twice(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    # Renewed every third of the lease: a 2 s stall of a loaded machine is still in time.
    one = start_worker("--processes", "1", "--lease", "3")
    two = start_worker("--processes", "1", "--lease", "3")
    send(jobs.sleepy, 1, seconds=8.0)
    ledger.wait_for(lambda led: len(led.of("end")) == 1, "the long job", timeout=30)
    assert len(ledger.of("start")) == 1
    for worker in (one, two):
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["tests.jobs.no_such_module:app"], "cannot import 'tests.jobs.no_such_module'"),
        (["tests.jobs.sample_app"], "give the app as MODULE:ATTRIBUTE"),
        (["tests.jobs.sample_app:record"], "is not a queueit.App"),
        (["tests.jobs.sample_app:app", "--queues", "bad name"], "bad queue name 'bad name'"),
        (["tests.jobs.sample_app:app", "--queues", ","], "give at least one queue name"),
        ([".sample_app:app"], "with an absolute module path"),
        (["tests.jobs.sample_app:app", "--processes", "0"], "must be at least 1"),
        (["tests.jobs.sample_app:app", "--max-time", "-1"], "must be a positive number"),
        (["tests.jobs.sample_app:app", "--max-time", "inf"], "must be a finite number"),
        (["tests.jobs.sample_app:app", "--processes", "300"], "must be at most 256"),
        (["tests.jobs.sample_app:app", "--shutdown-timeout", "-1"], "must be 0 or more seconds"),
        (["tests.jobs.test_scheduler:NO_PERIODICS"], "memory://, which lives inside one process"),
    ],
)
def test_bad_worker_arguments_are_refused_with_the_reason(args: list[str], said: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "queueit", "worker", *args],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert said in result.stderr  # errors on stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("def broken(:\n", "cannot import 'brokenapp': invalid syntax ("),
        ("raise RuntimeError('no config')\n", "importing 'brokenapp' raised RuntimeError: no config ("),
    ],
)
def test_an_app_that_fails_to_import_is_one_line_and_names_the_place(
    tmp_path: Path, source: str, said: str
) -> None:
    (tmp_path / "brokenapp.py").write_text(source)
    result = subprocess.run(
        [sys.executable, "-m", "queueit", "worker", "brokenapp:app"],
        check=False, cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert said in result.stderr
    assert "brokenapp.py, line 1)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_queue_no_job_uses_is_taken_with_a_warning(start_worker: StartWorker) -> None:
    worker = start_worker("--queues", "wrok")  # a typo of "work"
    wait_until(lambda: worker.consuming() == 1, "the worker to subscribe", log=worker.log)
    assert "warning: no job of tests.jobs.sample_app:app uses queue 'wrok'" in worker.log()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_the_worker_accepts_a_shutdown_timeout_of_zero() -> None:
    args = build_parser().parse_args(["worker", "tests.jobs.sample_app:app", "--shutdown-timeout", "0"])
    assert args.shutdown_timeout == 0.0


def worker_processes(ledger: Ledger) -> list[int]:
    """Live worker processes of this test (their environment names its ledger), wherever
    their parent is: orphans included."""
    found = []
    mine = f"QUEUEIT_LEDGER={ledger.path}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"queueit.jobs.process" in cmdline and mine in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def test_recycling_lets_running_jobs_finish_while_a_fresh_process_takes_over(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    # --max-time 2 with a 4 s job and a shutdown timeout of 1 s: the job is not handed back
    # (it was, again and again, until it reached the dead letters), and the work goes on.
    worker = start_worker(
        "--processes", "1", "--concurrency", "2", "--max-time", "2", "--shutdown-timeout", "1"
    )
    send(jobs.sleepy, 1, seconds=4.0)
    ledger.wait_for(lambda led: len(led.of("start")) == 1, "the long job to start")
    wait_until(lambda: len(worker.pids()) == 2, "the replacement, while the old one finishes", log=worker.log)
    send(jobs.add, 1)
    ledger.wait_for(lambda led: len(led.of("add")) == 1, "the replacement to take work")
    assert ledger.of("end") == []  # the long job still runs in the old process meanwhile
    assert int(ledger.of("add")[0][2]) != int(ledger.of("start")[0][2])
    ledger.wait_for(lambda led: len(led.of("end")) == 1, "the long job to finish", timeout=15)
    assert len(ledger.of("start")) == 1  # ran once, to its end
    assert "ran 2 s (--max-time); recycling" in worker.log()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_a_stop_right_after_a_reload_stops_every_process_the_reload_started(
    start_worker: StartWorker, ledger: Ledger
) -> None:
    worker = start_worker("--processes", "2")
    wait_until(lambda: worker.log().count("taking jobs from") == 2, "two processes at work")
    worker.signal(signal.SIGHUP)
    time.sleep(0.05)  # the reload's first process is still importing the app
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    wait_until(lambda: worker_processes(ledger) == [], "no worker process left", timeout=15, log=worker.log)


def test_worker_processes_do_not_outlive_a_supervisor_killed_as_they_start(
    start_worker: StartWorker, ledger: Ledger
) -> None:
    worker = start_worker("--processes", "2")
    wait_until(lambda: worker_processes(ledger) != [], "a worker process to start", timeout=15)
    worker.signal(signal.SIGKILL)  # before the new process asked to die with its parent
    worker.wait()
    wait_until(lambda: worker_processes(ledger) == [], "no orphan left", timeout=20, log=worker.log)


def test_a_sigterm_to_every_process_at_once_is_one_stop(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    # What systemd's KillMode=control-group does: the worker process gets SIGTERM from it and
    # from the supervisor; the running job still finishes.
    worker = start_worker("--processes", "1", "--shutdown-timeout", "30")
    send(jobs.sleepy, 1, seconds=2.0)
    ledger.wait_for(lambda led: len(led.of("start")) == 1, "the job to start")
    (child,) = worker_processes(ledger)
    worker.signal(signal.SIGTERM)
    os.kill(child, signal.SIGTERM)
    assert worker.wait() == 0
    assert len(ledger.of("end")) == 1
    assert "stopping now" not in worker.log()


def test_code_broken_on_disk_after_the_start_stops_no_process_that_works(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    worker = start_worker("--processes", "2", "--concurrency", "1", "--max-jobs", "1")
    wait_until(lambda: worker.log().count("taking jobs from") == 2, "two processes at work")
    broken = Path(str(ledger.path) + ".broken")
    broken.touch()  # a deploy half done: the next import of the app fails
    send(jobs.add, 1)  # a process recycles after it, and its replacement cannot load the app
    ledger.wait_for(lambda led: len(led.of("add")) == 1, "the first job")
    wait_until(
        lambda: "the other processes carry on" in worker.log(), "the failed replacement", log=worker.log
    )
    assert worker.process.poll() is None
    send(jobs.add, 2)  # the other process still works
    ledger.wait_for(lambda led: len(led.of("add")) == 2, "the second job")
    broken.unlink()  # mended: the slot is filled again
    for i in range(3, 6):
        send(jobs.add, i)
    ledger.wait_for(lambda led: len(led.of("add")) == 5, "every job", timeout=60)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_a_process_whose_settings_the_app_refuses_never_says_it_loaded(tmp_path: Path) -> None:
    # A reload to code the inline pool refuses (a sync job's timeout over a third of the
    # lease) must not stop the old processes: the new one fails before it says "loaded".
    from queueit.jobs.process import APP_LOADED, EXIT_BAD_APP, READY_FD_ENV, settings_to_json
    from queueit.jobs.worker import WorkerSettings

    settings = WorkerSettings(pool="inline", lease=1.0)  # sample_app's jobs have timeouts of 0.5-1 s
    app_spec = "tests.jobs.sample_app:app"
    read_end, write_end = os.pipe()
    result = subprocess.run(
        [sys.executable, "-m", "queueit.jobs.process", settings_to_json(app_spec, settings)],
        cwd=REPO, env={**os.environ, READY_FD_ENV: str(write_end)}, pass_fds=(write_end,),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    os.close(write_end)
    said = os.read(read_end, 64)
    os.close(read_end)
    assert result.returncode == EXIT_BAD_APP
    assert APP_LOADED not in said
    assert "a third of the lease" in result.stderr + result.stdout
