"""Worker-process fixtures: ``queueit worker`` on tests/jobs/sample_app.py against a real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from queueit.jobs import App, Job, SendOptions

from ..conftest import BrokerProcess, wait_until

REPO = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    """A running ``queueit worker`` supervisor; its log goes to ``log_path``."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def consuming(self) -> int:
        """Worker processes that have subscribed so far (restarts included)."""
        return self.log().count(" taking jobs from ")

    def pids(self) -> list[int]:
        """Worker processes started so far, in order."""
        found = []
        for line in self.log().splitlines():
            if "worker process " in line and " started (slot" in line:
                found.append(int(line.split("worker process ")[1].split()[0]))
        return found


@dataclass
class Ledger:
    path: Path

    def lines(self) -> list[list[str]]:
        if not self.path.exists():
            return []
        return [line.split() for line in self.path.read_text().splitlines() if line.strip()]

    def of(self, kind: str) -> list[list[str]]:
        return [parts for parts in self.lines() if parts[0] == kind]

    def wait_for(self, condition: Callable[[Ledger], bool], what: str, timeout: float = 30.0) -> None:
        wait_until(lambda: condition(self), what, timeout, log=lambda: f"ledger: {self.lines()[-20:]}")


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.txt")


@pytest.fixture
def job_env(broker: BrokerProcess, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    url = f"queueit://{broker.host}:{broker.port}"
    monkeypatch.setenv("QUEUEIT_URL", url)
    monkeypatch.setenv("QUEUEIT_LEDGER", str(ledger.path))
    return dict(os.environ, QUEUEIT_URL=url, QUEUEIT_LEDGER=str(ledger.path), PYTHONUNBUFFERED="1")


@dataclass
class Sender:
    """Sends the sample app's jobs through this test's broker (the module's app may point
    elsewhere: it read ``QUEUEIT_URL`` when first imported)."""

    app: App

    def __call__(self, job: Job[..., Any], *args: Any, delay: float | None = None, **kwargs: Any) -> str:
        options = SendOptions(delay=delay)
        return self.app.publish_envelope(job.envelope(args, kwargs, options), options, job.options)


@pytest.fixture
def send(job_env: dict[str, str]) -> Iterator[Sender]:
    app = App(job_env["QUEUEIT_URL"])
    yield Sender(app)
    app.close()


@pytest.fixture
def start_worker(job_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started)}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "queueit", "worker", "tests.jobs.sample_app:app", *args],
            cwd=REPO,
            env=job_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        worker = WorkerProcess(process, log_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.signal(signal.SIGTERM)
            worker.signal(signal.SIGTERM)
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.wait(5)
        assert "Traceback" not in worker.log(), worker.log()


def start_scheduler(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``queueit scheduler tests.jobs.sample_app:app``, its output to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "queueit", "scheduler", "tests.jobs.sample_app:app"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_all(processes: list[subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM to each process still running; their exit codes."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    return [process.wait(15) for process in processes]
