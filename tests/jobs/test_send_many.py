"""Sending many runs in one broker step: ``app.send_many`` and a batch job's ``send_many``."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from queueit import App
from queueit.jobs.envelope import Envelope, Plain, decode
from queueit.jobs.middleware import Middleware
from queueit.jobs.testing import JobTester
from queueit.jobs.workflows import Step
from queueit.transports import TransportRefused
from queueit.transports.stomp import QueueitTransport

from ..conftest import start_broker
from ..transports.contract import drain


def _envelopes(found: list[Envelope | Plain]) -> list[Envelope]:
    assert all(isinstance(e, Envelope) for e in found)
    return [e for e in found if isinstance(e, Envelope)]


class Jobs:
    """An app with the jobs these tests send, and what its jobs saw."""

    def __init__(self, url: str = "memory://") -> None:
        self.app = app = App(url)
        self.ran: list[tuple[str, int]] = []
        self.batches: list[list[str]] = []

        @app.job(queue="resize", priority=7)
        def resize(path: str, width: int = 100) -> None:
            self.ran.append((path, width))

        @app.job(queue="notify")
        def notify(path: str) -> None:
            self.ran.append(("notify " + path, 0))

        @app.job(queue="anything")
        def anything(value: Any) -> None: ...

        @app.job(queue="dedup", unique=True)
        def dedup(n: int) -> None: ...

        @app.batch(queue="points", size=100, wait=0.1)
        def store(points: list[str]) -> None:
            self.batches.append(points)

        self.resize, self.notify, self.anything, self.dedup, self.store = (
            resize,
            notify,
            anything,
            dedup,
            store,
        )


def test_send_many_queues_every_run_in_order_and_runs_each_hook() -> None:
    j = Jobs()
    app, resize, notify = j.app, j.resize, j.notify
    hooks: list[tuple[str, str]] = []

    class Hooks(Middleware):
        def before_enqueue(self, envelope: Envelope) -> None:
            hooks.append(("before", envelope.id))

        def after_enqueue(self, envelope: Envelope) -> None:
            hooks.append(("after", envelope.id))

    app.middleware.append(Hooks())
    with JobTester(app) as jobs:
        steps = [resize.s(f"{n}.png", width=n) for n in range(50)]
        ids = app.send_many(iter([*steps, notify.s("all")]))
        assert len(set(ids)) == 51
        sent = _envelopes(jobs.sent(resize))
        assert [e.id for e in sent] == ids[:50]
        assert [(e.args, e.kwargs) for e in sent] == [((f"{n}.png",), {"width": n}) for n in range(50)]
        assert [e.id for e in _envelopes(jobs.sent(notify))] == ids[50:]
        assert hooks == [("before", i) for i in ids] + [("after", i) for i in ids]
        report = jobs.run()
    assert report.done == 51
    assert not report.failed
    assert sorted(j.ran) == sorted([(f"{n}.png", n) for n in range(50)] + [("notify all", 0)])


def test_send_many_refuses_before_sending_anything() -> None:
    j = Jobs()
    app, resize = j.app, j.resize
    good = resize.s("a.png")
    with JobTester(app) as jobs:
        with pytest.raises(TypeError, match="resize"):
            app.send_many([good, resize.s("b.png", height=3)])
        with pytest.raises(TypeError, match="JSON"):
            app.send_many([good, j.anything.s(object())])
        with pytest.raises(ValueError, match="keeps duplicates out"):
            app.send_many([good, j.dedup.s(1)])
        with pytest.raises(ValueError, match="batch job"):
            app.send_many([good, Step(j.store.name, "points", ("p",))])
        # An endless iterable is refused once it passes the limit, not read for ever.
        with pytest.raises(ValueError, match="at most 10,000"):
            app.send_many(itertools.repeat(good))
        assert jobs.sent(resize) == []
        assert app.send_many([]) == []


def test_a_batch_jobs_send_many_queues_items_that_arrive_together() -> None:
    j = Jobs()
    store = j.store
    with JobTester(j.app) as jobs:
        ids = store.send_many(f"p{n}" for n in range(250))
        assert [e.id for e in _envelopes(jobs.sent(store))] == ids
        with pytest.raises(TypeError):
            store.send_many(["ok", {1, 2}])  # type: ignore[list-item]
        assert len(jobs.sent(store)) == 250
        jobs.run()
    assert sorted(p for batch in j.batches for p in batch) == sorted(f"p{n}" for n in range(250))
    assert max(len(batch) for batch in j.batches) == 100


def test_on_queueits_broker_send_many_is_all_or_nothing(tmp_path: Path) -> None:
    # The broker refuses the step's COMMIT (a queue at its limit refuses publishes): none of
    # its runs may be left queued, the ones before the full queue's included.
    config = tmp_path / "queueit.toml"
    config.write_text('[[queues]]\nmatch = "full"\nmax_messages = 2\noverflow = "reject-publish"\n')
    broker = start_broker(tmp_path / "data", "--config", str(config))
    try:
        j = Jobs(f"queueit://{broker.host}:{broker.port}")
        app = j.app
        steps = [j.notify.s(f"{n}") for n in range(5)]
        full = [Step(j.resize.name, "full", (f"{n}.png",)) for n in range(3)]
        with pytest.raises(TransportRefused, match="is full"):
            app.send_many(steps + full)
        ids = app.send_many(steps + full[:2])  # within the limit: all of it
        # A group without a callback is one step too.
        with pytest.raises(TransportRefused, match="is full"):
            app.group(*steps, full[0]).send()
        app.close()

        async def check() -> tuple[list[bytes], list[bytes]]:
            t = QueueitTransport(broker.host, broker.port)
            await t.connect()
            try:
                return await drain(t, "notify", 0.5), await drain(t, "full", 0.5)
            finally:
                await t.close()

        queued_notify, queued_full = asyncio.run(check())
    finally:
        assert broker.stop() == 0
    assert len(queued_notify) == 5
    assert len(queued_full) == 2
    assert sorted(e.id for e in _envelopes([decode(b) for b in queued_notify + queued_full])) == sorted(ids)
