"""``queueit worker`` on RabbitMQ (``amqp://``, quorum queues): the same jobs, retries, failed
jobs and crash recovery as on queueit's broker (tests/jobs/test_worker_processes.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ..conftest import wait_until
from ..rabbitmq import RabbitNode
from . import sample_app as jobs
from .conftest import REPO, Ledger, Sender, WorkerProcess, start_scheduler, stop_all

StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def job_env(rabbitmq: RabbitNode, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """As tests/jobs/conftest.py's, but on the session's RabbitMQ node."""
    url = rabbitmq.url
    monkeypatch.setenv("QUEUEIT_URL", url)
    monkeypatch.setenv("QUEUEIT_LEDGER", str(ledger.path))
    return dict(os.environ, QUEUEIT_URL=url, QUEUEIT_LEDGER=str(ledger.path), PYTHONUNBUFFERED="1")


def test_jobs_run_once_retry_and_fail_on_rabbitmq(
    start_worker: StartWorker, send: Sender, ledger: Ledger, job_env: dict[str, str]
) -> None:
    failed_cli = [sys.executable, "-m", "queueit", "failed"]
    where = ["--url", job_env["QUEUEIT_URL"], "--queue", "work"]
    subprocess.run([*failed_cli, "purge", *where], cwd=REPO, env=job_env, timeout=60, check=True)
    worker = start_worker("--processes", "2", "--concurrency", "4")
    for i in range(40):
        send(jobs.add, i)
    send(jobs.flaky, 1, fail_times=1)  # fails once, then succeeds
    send(jobs.flaky, 2, fail_times=9)  # out of retries after 3 attempts
    ledger.wait_for(lambda led: len(led.of("add")) == 40 and len(led.of("flaky")) == 5, "every attempt")
    assert sorted(int(p[1]) for p in ledger.of("add")) == list(range(40))
    assert [p[2] for p in ledger.of("flaky") if p[1] == "1"] == ["1", "2"]

    def listed() -> list[dict[str, Any]]:
        found = subprocess.run(
            [*failed_cli, "list", "--json", *where],
            cwd=REPO,
            env=job_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        result: list[dict[str, Any]] = json.loads(found.stdout)
        return result

    wait_until(lambda: len(listed()) == 1, "the failed job's record")  # settled after its last attempt
    [failed] = listed()
    assert (failed["job"], failed["reason"], failed["attempts"]) == (jobs.flaky.name, "failed", 3)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_a_job_of_a_killed_worker_runs_again_on_rabbitmq(
    start_worker: StartWorker, send: Sender, ledger: Ledger
) -> None:
    worker = start_worker("--processes", "1")
    send(jobs.sleepy, 1, seconds=5.0)  # still running when the kill comes
    ledger.wait_for(lambda led: len(led.of("start")) == 1, "the job to start")
    os.kill(int(ledger.of("start")[0][2]), signal.SIGKILL)
    ledger.wait_for(lambda led: len(led.of("end")) == 1, "the job to run again", timeout=60)
    assert len(ledger.of("start")) == 2
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_schedulers_on_rabbitmq_fire_each_tick_once_and_one_takes_over_from_a_killed_leader(
    job_env: dict[str, str], start_worker: StartWorker, ledger: Ledger, tmp_path: Path
) -> None:
    start_worker("--queues", "periodic")
    logs = [tmp_path / "scheduler-a.log", tmp_path / "scheduler-b.log"]
    schedulers = [start_scheduler(job_env, path) for path in logs]

    def leading() -> list[int]:
        return [i for i, path in enumerate(logs) if "scheduler: leading" in path.read_text()]

    try:
        ledger.wait_for(lambda ld: len(ld.of("tick")) >= 3, "three ticks run", timeout=60)
        [leader] = leading()  # one leads, the other stands by
        survivor = 1 - leader
        schedulers[leader].kill()  # SIGKILL: RabbitMQ frees its leadership as the socket closes
        schedulers[leader].wait(5)
        ran = len(ledger.of("tick"))
        wait_until(lambda: leading() == [0, 1], "the other scheduler to take over", timeout=30)
        ledger.wait_for(lambda ld: len(ld.of("tick")) >= ran + 3, "three ticks after the takeover")
    finally:
        codes = stop_all(schedulers)
    texts = [path.read_text() for path in logs]
    assert codes[survivor] == 0, texts[survivor]
    assert "Traceback" not in "".join(texts), texts
    keys = Counter(parts[1] for parts in ledger.of("tick"))
    assert max(keys.values()) == 1, keys  # no tick ran twice, across the takeover too
    seconds = sorted(int(key) for key in keys)
    if seconds != list(range(seconds[0], seconds[-1] + 1)):
        # A tick can be missed only when the takeover took longer than a tick, and it says so.
        assert "passed unsent" in texts[survivor], (seconds, texts[survivor])
