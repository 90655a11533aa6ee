"""``queueit failed ...`` against a real broker, on jobs a real worker failed."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from queueit.client import Client
from queueit.jobs import failed as ops
from queueit.transports import Outgoing
from queueit.transports.memory import MemoryBroker, MemoryTransport
from queueit.transports.stomp import QueueitTransport

from ..conftest import BrokerProcess, wait_until
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


def test_dead_letters_that_fill_many_frames_are_listed_found_and_deleted(
    broker: BrokerProcess, job_env: dict[str, str]
) -> None:
    # 700 dead letters of 7 KB: 5 MB, more than one frame holds; the broker pages the listing.
    async def fill() -> list[str]:
        t = QueueitTransport(broker.host, broker.port)
        await t.connect()
        try:
            await t.publish_many([("big", Outgoing(b"%04d" % n + b"x" * 7_000)) for n in range(700)])
            await t.consume("big", prefetch=100, lease=30)
            ids = []
            for _ in range(700):
                delivery = await t.next_delivery(5)
                assert delivery is not None
                await t.reject(delivery, "invalid", "line one\nline two")
                ids.append(delivery.message_id)
            return ids
        finally:
            await t.close()

    ids = asyncio.run(fill())

    where = ["--url", job_env["QUEUEIT_URL"], "--queue", "big"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "queueit", "failed", *args, *where],
            check=False, capture_output=True, text=True, cwd=REPO, env=job_env, timeout=60,
        )  # fmt: skip

    result = cli("list", "--json", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    assert [f["id"] for f in json.loads(result.stdout)] == ids  # every one, oldest first
    result = cli("list", "--limit", "5")
    assert result.stdout.count("line one line two") == 5  # one line per row
    assert "(the first 5; there are more" in result.stdout
    shown = cli("show", ids[-1])
    assert shown.returncode == 0, shown.stderr
    assert "why: line one\nline two" in shown.stdout  # an invalid message's reason
    assert cli("purge", "--job", "anything").returncode == 2  # purge deletes all: no selector
    assert cli("delete", ids[-1]).stdout.startswith("deleted 1 failed job(s)")
    piped = subprocess.run(
        f"{sys.executable} -m queueit failed list {' '.join(where)} --limit 700 | head -2",
        shell=True, check=False, capture_output=True, text=True, cwd=REPO, env=job_env, timeout=60,
    )  # fmt: skip
    assert "Traceback" not in piped.stderr
    assert len(json.loads(cli("list", "--json", "--limit", "1000").stdout)) == 699


def test_retrying_by_job_name_retries_each_once_though_they_fail_again_at_once(
    start_worker: Callable[..., WorkerProcess], send: Sender, ledger: Ledger, job_env: dict[str, str]
) -> None:
    worker = start_worker("--processes", "1", "--concurrency", "8", "--queues", "work")
    send.app.handlers[jobs.doomed.name] = jobs.doomed
    send.app.send_many(jobs.doomed.s(n) for n in range(60))

    def dead_letters(count: int) -> None:
        wait_until(lambda: len(listed(job_env, "--job", jobs.doomed.name)) == count, "dead letters", 30)

    dead_letters(60)
    result = failed_cli(job_env, "retry", "--job", jobs.doomed.name)
    assert result.returncode == 0, result.stderr
    assert "moved 60 failed job(s)" in result.stdout  # none counted twice
    dead_letters(60)  # each failed again at once...
    time.sleep(1.0)
    runs = [p[1] for p in ledger.of("doomed")]
    assert sorted(runs) == sorted([str(n) for n in range(60)] * 2)  # ...after one retry only
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


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


def test_each_queue_is_looked_at_up_to_its_own_limit() -> None:
    # The window of dead letters is per queue: a full first queue hides none of the next one's.
    full = ops.MAX_LISTED

    async def scenario() -> tuple[ops.FailedJob | None, int]:
        t = MemoryTransport(MemoryBroker())
        await t.connect()
        await t.publish_many([("q1", Outgoing(b"%d" % n)) for n in range(full)])
        await t.publish("q2", Outgoing(b"last"))
        for queue in ("q1", "q2"):
            await t.consume(queue, prefetch=full + 1, lease=30)
        for _ in range(full + 1):
            delivery = await t.next_delivery(1)
            assert delivery is not None
            await t.reject(delivery, "invalid", "bad")
        (last,) = await t.dead_letters("q2", 5)
        found = await ops.find(t, ["q1", "q2"], last.message_id)
        listed = await ops.list_failed(t, ["q1", "q2"])
        await t.close()
        return found, len(listed)

    found, listed = asyncio.run(scenario())
    assert found is not None
    assert found.queue == "q2"
    assert listed == full + 1
