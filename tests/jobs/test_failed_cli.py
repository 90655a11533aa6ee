"""``queueit failed ...`` against a real broker, on jobs a real worker failed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from queueit.client import Client

from ..conftest import BrokerProcess
from . import sample_app as jobs
from .conftest import REPO, Ledger, Sender, WorkerProcess


def failed_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "queueit", "failed", *args, "--url", env["QUEUEIT_URL"], "--queue", "work"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=30,
    )


def listed(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = failed_cli(env, "list", "--json", *args)
    assert result.returncode == 0, result.stderr + result.stdout
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


def test_failed_jobs_are_listed_shown_retried_and_deleted(
    start_worker: Callable[..., WorkerProcess],
    send: Sender,
    ledger: Ledger,
    job_env: dict[str, str],
    broker: BrokerProcess,
) -> None:
    worker = start_worker("--processes", "1", "--queues", "work")
    send(jobs.flaky, 1, fail_times=9)  # retries=2: fails for good after 3 attempts
    send(jobs.flaky, 2, fail_times=9)
    with Client(broker.host, broker.port) as c:  # the talk's PHP-style plain message, not JSON
        c.send("/queue/work", b"<xml>not json</xml>", headers={"persistent": "true"}, receipt=True)
    ledger.wait_for(lambda led: len(led.of("flaky")) == 6, "three attempts of each job")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0

    found = listed(job_env)
    assert sorted(f["reason"] for f in found) == ["failed", "failed", "invalid"]
    flaky = [f for f in found if f["reason"] == "failed"]
    assert {f["job"] for f in flaky} == {jobs.flaky.name}
    assert all(f["attempts"] == 3 for f in flaky)
    assert all(f["error"] == "builtins.RuntimeError: attempt 3 fails on purpose" for f in flaky)
    assert len(listed(job_env, "--job", jobs.flaky.name)) == 2

    shown = failed_cli(job_env, "show", flaky[0]["job_id"])  # by job id, or by the failed id
    assert shown.returncode == 0, shown.stderr
    assert "--- attempt 3" in shown.stdout
    assert 'raise RuntimeError(f"attempt {attempt} fails on purpose")' in shown.stdout
    invalid = next(f for f in found if f["reason"] == "invalid")
    assert invalid["error"].startswith("the body is not JSON: Expecting value")
    shown = failed_cli(job_env, "show", invalid["id"])
    assert "body: <xml>not json</xml>" in shown.stdout

    assert failed_cli(job_env, "retry").returncode == 2  # ID, --job or --all: say which
    result = failed_cli(job_env, "retry", "--job", jobs.flaky.name)
    assert "moved 2 failed job(s)" in result.stdout
    assert [f["reason"] for f in listed(job_env)] == ["invalid"]
    worker = start_worker("--processes", "1", "--queues", "work")
    # Retried with fresh retries: three more attempts each, then failed again.
    ledger.wait_for(lambda led: len(led.of("flaky")) == 12, "the retried jobs' attempts")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert [p[2] for p in ledger.of("flaky") if p[1] == "1"] == ["1", "2", "3", "1", "2", "3"]

    result = failed_cli(job_env, "delete", invalid["id"])
    assert "deleted 1 failed job(s)" in result.stdout
    assert failed_cli(job_env, "delete", "no-such-id").returncode == 1
    result = failed_cli(job_env, "purge")
    assert "deleted 2 failed job(s)" in result.stdout
    assert listed(job_env) == []


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "--app MODULE:APP or --queue NAME"),
        (["--queue", "bad name!"], "bad queue name"),
        (["--app", ".tasks:app"], "with an absolute module path"),
    ],
)
def test_failed_needs_to_know_which_queues(args: list[str], said: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "queueit", "failed", "list", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert result.returncode == 2
    assert said in result.stderr  # errors on stderr: stdout stays data
    assert "Traceback" not in result.stderr
