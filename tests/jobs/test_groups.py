"""Groups with real worker processes on a real broker: the callback runs once, after every
member, even when a worker process is killed with ``kill -9`` in the middle of a member."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from . import sample_app as jobs
from .conftest import Ledger, Sender, WorkerProcess


def test_the_callback_runs_once_after_every_member_even_when_a_member_is_killed_mid_run(
    start_worker: Callable[..., WorkerProcess], send: Sender, ledger: Ledger
) -> None:
    worker = start_worker("--processes", "2", "--concurrency", "4")
    # Member 0 runs long enough to be killed mid-run after the seven short ones, when loaded too.
    members = [jobs.square.s(n, seconds=6.0 if n == 0 else 0.05) for n in range(8)]
    # The test's app sends through this test's broker; it knows the sample app's jobs by name.
    send.app.handlers.update({j.name: j for j in (jobs.square, jobs.total)})
    send.app.group(*members).then(jobs.total.s("squares")).send()
    ledger.wait_for(lambda ld: any(p[1] == "0" for p in ld.of("square-start")), "member 0 to start")
    victim = int(next(p[2] for p in ledger.of("square-start") if p[1] == "0"))
    ledger.wait_for(lambda ld: len(ld.of("square")) == 7, "the seven short members")
    assert ledger.of("total") == []  # member 0 has not finished: the broker holds the callback
    os.kill(victim, signal.SIGKILL)
    ledger.wait_for(lambda ld: len(ld.of("total")) == 1, "the callback", timeout=40)
    (total,) = ledger.of("total")
    assert total[1:4] == ["squares", str(sum(n * n for n in range(8))), "8"]
    assert len([p for p in ledger.of("square-start") if p[1] == "0"]) == 2  # run again after the kill
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert len(ledger.of("total")) == 1
