"""Progress reports: ``current().progress(pct, note)`` in a job, ``App.progress(job_id)`` and the
job's topic; in one process on ``memory://``, and with a worker process on a real broker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable

import pytest

from queueit.client import Client
from queueit.jobs import App, Progress, SendOptions, Worker, WorkerSettings, current
from queueit.jobs.testing import JobTester
from queueit.transports import Unsupported
from queueit.transports.memory import MemoryTransport, shared_broker

from ..conftest import BrokerProcess, run_worker_until, wait_until
from .conftest import Ledger, Sender, WorkerProcess
from .sample_app import async_stages, stages


def test_a_job_reports_progress_and_the_app_reads_the_latest() -> None:
    app = App("memory://unused")

    @app.job(queue="q")
    def convert(video: str) -> None:
        current().progress(30, f"encoding {video}")
        current().progress(80.5, "uploading")
        with pytest.raises(ValueError, match="percent must be from 0 to 100"):
            current().progress(101)

    with JobTester(app) as jobs:
        job_id = convert.send("talk.mp4")
        assert app.progress(job_id) is None
        jobs.run(raise_errors=True)
        found = app.progress(job_id)
    assert found is not None
    assert (found.job_id, found.job, found.percent, found.note, found.attempt) == (
        job_id, convert.name, 80.5, "uploading", 1,
    )  # fmt: skip
    assert abs(found.at - time.time()) < 60


def test_reports_faster_than_they_are_sent_replace_each_other() -> None:
    name = "progress-coalesced"
    sent: list[float] = []

    class Counting(MemoryTransport):
        async def report_progress(self, job_id: str, body: bytes) -> None:
            sent.append(Progress.from_json(body).percent)
            await asyncio.sleep(0.01)  # a round trip to the broker
            await super().report_progress(job_id, body)

    app = App(f"memory://{name}", transport_factory=lambda: Counting(shared_broker(name)))

    @app.job(queue="q")
    async def busy() -> None:
        for i in range(1, 1001):
            current().progress(i / 10)
            if i % 100 == 0:
                await asyncio.sleep(0.002)  # the loop runs: one report at a time goes out

    job_id = busy.send()
    worker = Worker(app, WorkerSettings())

    def reported_100() -> bool:
        found = app.progress(job_id)  # a sync read: memory:// answers at once
        return found is not None and found.percent == 100

    run_worker_until(worker, reported_100, 5)
    app.close()
    assert sent[-1] == 100  # the last report went out
    assert 1 <= len(sent) <= 20, sent  # not 1,000 round trips
    assert sent == sorted(sent)


def test_progress_round_trips_and_foreign_reports_are_not_ours() -> None:
    p = Progress("id", "job", 12.5, "note", 2, 1_700_000_000.123)
    assert Progress.from_json(p.to_json()) == p
    with pytest.raises(ValueError, match="not a progress report"):
        Progress.from_json(b'{"percent": 1}')


def test_reading_progress_on_a_transport_without_it_is_refused_before_connecting() -> None:
    app = App("amqp://guest:guest@127.0.0.1:1/")  # nothing listens there: a connection would fail
    with pytest.raises(Unsupported, match="progress"):
        app.progress("some-job")
    app.close()


def test_a_worker_process_reports_progress_that_a_ui_follows_and_reads(
    broker: BrokerProcess,
    send: Sender,
    start_worker: Callable[..., WorkerProcess],
    ledger: Ledger,
) -> None:
    job_id = uuid.uuid4().hex
    with Client(broker.host, broker.port) as ui:
        ui.subscribe(f"/topic/queueit.progress.{job_id}", receipt=True)
        start_worker("--queues", "work")
        options = SendOptions(job_id=job_id)
        send.app.publish_envelope(stages.envelope((1,), {}, options), options, stages.options)
        seen = [json.loads(ui.receive(timeout=20).body)]
        while seen[-1]["percent"] != 100:
            seen.append(json.loads(ui.receive(timeout=20).body))
    # Reports made faster than they are sent replace each other; the last one always arrives.
    reports = [(r["percent"], r["note"]) for r in seen]
    assert reports[-1] == (100, "stage 100")
    assert reports == sorted(set(reports)), reports  # in order, none twice
    assert set(reports) <= {(25, "stage 25"), (50, "stage 50"), (100, "stage 100")}
    ledger.wait_for(lambda ld: len(ld.of("stages")) == 1, "the job ran")
    found = send.app.progress(job_id)
    assert found is not None
    assert (found.job_id, found.percent, found.note) == (job_id, 100, "stage 100")
    async_id = send(async_stages, 2)
    ledger.wait_for(lambda ld: len(ld.of("async_stages")) == 1, "the async job ran")
    wait_until(lambda: send.app.progress(async_id) is not None, "the async job's report")
    found = send.app.progress(async_id)
    assert found is not None
    assert (found.percent, found.note) == (40, "halfway, nearly")
