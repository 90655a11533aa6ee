"""A job that kills its worker process every time (here: one the inline pool's watchdog has
to end) goes to the dead letters at its delivery limit, and takes no other job with it: a job
delivered before and never finished runs alone (worker.py, ``_run_alone``)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from queueit import App
from queueit.jobs.context import current
from queueit.jobs.options import PLAIN_SEND as PLAIN
from queueit.jobs.worker import Worker, WorkerSettings
from queueit.transports import Outgoing
from queueit.transports.memory import MemoryBroker, MemoryTransport
from queueit.transports.stomp import QueueitTransport

from ..conftest import BrokerProcess, run_worker_until, start_broker, wait_until
from . import sample_app as jobs
from .conftest import Ledger, Sender, WorkerProcess
from .test_worker_processes import queue_depth


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    # A delivery limit of 3, so that the swallower reaches it in seconds.
    config = tmp_path / "queueit.toml"
    config.write_text('[[queues]]\nmatch = "suspects"\nmax_deliveries = 3\n')
    process = start_broker(tmp_path / "data", "--config", str(config))
    yield process
    process.stop()


def test_a_job_that_ends_its_process_every_time_is_dead_lettered_alone(
    start_worker: Callable[..., WorkerProcess], send: Sender, ledger: Ledger, broker: BrokerProcess
) -> None:
    send(jobs.swallower, 0)  # at the head of the queue: every fresh process takes it first
    for n in range(3):
        send(jobs.bystander, n)
    worker = start_worker(
        "--processes", "1", "--concurrency", "4", "--pool", "inline", "--queues", "suspects"
    )
    wait_until(
        lambda: queue_depth(broker, "DLQ.suspects")[0] == 1, "the swallower's dead letter", 60, worker.log
    )
    ledger.wait_for(lambda led: len(led.of("bystander")) == 3, "the bystanders")
    assert len(ledger.of("swallower")) == 3  # once per delivery, up to the limit
    assert sorted(p[1] for p in ledger.of("bystander")) == ["0", "1", "2"]  # each once
    assert queue_depth(broker, "DLQ.suspects") == (1, 0)  # the swallower alone
    assert "running it alone" in worker.log()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_a_job_delivered_before_runs_alone_and_what_waited_beside_it_is_not_counted() -> None:
    broker = MemoryBroker()
    app = App("memory://unused")
    app.swap_transport(lambda: MemoryTransport(broker))
    spans: dict[str, tuple[float, float]] = {}
    seen: dict[str, int] = {}

    @app.job(queue="q")
    def step(name: str) -> None:
        begun = time.monotonic()
        seen[name] = current().delivery.delivery_count
        time.sleep(0.2)
        spans[name] = (begun, time.monotonic())

    async def lose_them() -> None:
        # A consumer takes the first two and dies with them: they are suspects now.
        t = MemoryTransport(broker)
        await t.connect()
        for name in ("a", "b"):
            await t.publish("q", Outgoing(step.envelope((name,), {}, PLAIN).encode()))
        await t.consume("q", prefetch=2, lease=30)
        assert await t.next_delivery(1) is not None
        assert await t.next_delivery(1) is not None
        await t.close()
        sender = MemoryTransport(broker)
        await sender.connect()
        for name in ("c", "d", "e"):
            await sender.publish("q", Outgoing(step.envelope((name,), {}, PLAIN).encode()))
        await sender.close()

    asyncio.run(lose_them())
    worker = Worker(app, WorkerSettings(concurrency=4))
    run_worker_until(worker, lambda: len(spans) == 5, 20)
    for suspect in ("a", "b"):
        start, end = spans[suspect]
        others = [s for name, s in spans.items() if name != suspect]
        assert all(e <= start or s >= end for s, e in others), f"{suspect} ran beside another job"
    # Delivered once before (a, b); the others, handed back uncounted while a suspect ran, once.
    assert seen == {"a": 2, "b": 2, "c": 1, "d": 1, "e": 1}


def test_a_suspect_with_every_slot_taken_hands_back_what_waits_for_one(broker: BrokerProcess) -> None:
    # --concurrency 1 over three queues (each subscription prefetches 1): while a job of q2
    # holds the one slot, the suspect (q1) and a job of q3 wait for it; the suspect gets it,
    # and the job of q3 must go back rather than wait for ever for the slot the suspect holds
    # (nor the suspect for it).
    url = f"queueit://{broker.host}:{broker.port}"
    app = App(url)
    ran: list[tuple[str, int]] = []

    @app.job(queue="q1")
    def first(name: str) -> None:
        ran.append((name, current().delivery.delivery_count))

    @app.job(queue="q2")
    def second(name: str) -> None:
        time.sleep(0.5)
        ran.append((name, current().delivery.delivery_count))

    @app.job(queue="q3")
    def third(name: str) -> None:
        ran.append((name, current().delivery.delivery_count))

    async def prepare() -> None:
        t = QueueitTransport(broker.host, broker.port)
        await t.connect()
        await t.publish("q1", Outgoing(first.envelope(("suspect",), {}, PLAIN).encode()))
        await t.consume("q1", prefetch=1, lease=30)
        assert await t.next_delivery(5) is not None
        await t.close()  # delivered, never settled: a suspect now
        await app.apublish_envelope(second.envelope(("long",), {}, PLAIN), PLAIN, second.options)
        await app.apublish_envelope(third.envelope(("waiting",), {}, PLAIN), PLAIN, third.options)
        await app.aclose()

    asyncio.run(prepare())
    worker = Worker(app, WorkerSettings(concurrency=1, queues=("q2", "q1", "q3")))
    run_worker_until(worker, lambda: len(ran) == 3, 15)
    app.close()
    assert sorted(ran) == [("long", 1), ("suspect", 2), ("waiting", 1)]
