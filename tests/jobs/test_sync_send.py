"""Sending jobs from sync code: each thread's own blocking connection, no portal thread."""

from __future__ import annotations

import gc
import json
import os
import threading
from pathlib import Path

import pytest

from queueit import App, Middleware
from queueit.client import Client
from queueit.jobs.envelope import Envelope
from queueit.transports import Outgoing, Transport, TransportClosed, TransportRefused
from queueit.transports.memory import MemoryPublisher, MemoryTransport, shared_broker

from ..conftest import BrokerProcess, start_broker


def portal_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "queueit-portal"]


class Hooks(Middleware):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def before_enqueue(self, envelope: Envelope) -> None:
        self.seen.append(("before", envelope.id))

    def after_enqueue(self, envelope: Envelope) -> None:
        self.seen.append(("after", envelope.id))


def test_a_sync_send_goes_over_the_threads_own_connection_to_the_broker(broker: BrokerProcess) -> None:
    hooks = Hooks()
    app = App(f"queueit://{broker.host}:{broker.port}", middleware=[hooks])

    @app.job(queue="sync-send", unique=True)
    def charge(account: int) -> None: ...

    try:
        first = charge.send(7)
        # The second copy is kept out by the unique key: send returns the holder's id, and the
        # after-enqueue hook does not run for it.
        assert charge.send(account=7) == first
        other = charge.send_with(priority=9).send(8)
        assert portal_threads() == []  # nothing went through an event-loop thread
        assert hooks.seen == [("before", first), ("after", first), ("before", hooks.seen[2][1]),
                              ("before", other), ("after", other)]  # fmt: skip
    finally:
        app.close()
    with Client(broker.host, broker.port) as c:
        c.subscribe("/queue/sync-send", ack="client-individual", receipt=True)
        got = [c.receive(timeout=5) for _ in range(2)]
        ids = {json.loads(m.body)["id"]: m.headers for m in got}
    assert set(ids) == {first, other}
    assert ids[other]["priority"] == "9"
    assert ids[first]["persistent"] == "true"


def test_each_thread_sends_over_its_own_connection(broker: BrokerProcess) -> None:
    app = App(f"queueit://{broker.host}:{broker.port}")

    @app.job(queue="per-thread")
    def noop(n: int) -> None: ...

    errors: list[BaseException] = []

    def sender(base: int) -> None:
        try:
            for n in range(base, base + 50):
                noop.send(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(i * 100,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    app.close()
    assert errors == []
    with Client(broker.host, broker.port) as c:
        c.subscribe("/queue/per-thread", ack="auto", receipt=True)
        got = sorted(json.loads(c.receive(timeout=5).body)["args"][0] for _ in range(200))
    assert got == sorted(i * 100 + n for i in range(4) for n in range(50))


class Counting:
    """Memory transports whose blocking publishers are counted, and can be told to lose
    their connection once (as a broker restart would)."""

    def __init__(self, name: str) -> None:
        self.broker = shared_broker(name)
        self.made: list[CountedPublisher] = []
        self.lose_next = False

    def __call__(self) -> Transport:
        return CountingTransport(self)


class CountingTransport(MemoryTransport):
    def __init__(self, counting: Counting) -> None:
        super().__init__(counting.broker)
        self.counting = counting

    def blocking_publisher(self) -> MemoryPublisher:
        publisher = CountedPublisher(self, lose=self.counting.lose_next)
        self.counting.lose_next = False
        self.counting.made.append(publisher)
        return publisher


class CountedPublisher(MemoryPublisher):
    def __init__(self, transport: MemoryTransport, *, lose: bool) -> None:
        super().__init__(transport)
        self.lose = lose
        self.closed_in: int | None = None

    def publish(self, queue: str, message: Outgoing) -> str | None:
        if self.lose:
            raise TransportClosed("connection lost")
        return super().publish(queue, message)

    def close(self) -> None:
        self.closed_in = os.getpid()
        super().close()


@pytest.fixture
def counting(request: pytest.FixtureRequest) -> Counting:
    return Counting(f"sync-send-{request.node.name}")


def test_a_thread_that_ends_closes_its_publisher_and_close_closes_the_rest(counting: Counting) -> None:
    app = App("memory://", transport_factory=counting)

    @app.job(queue="q")
    def noop() -> None: ...

    noop.send()
    noop.send()
    assert len(counting.made) == 1  # one per thread, kept between sends
    worker = threading.Thread(target=lambda: [noop.send() for _ in range(3)])
    worker.start()
    worker.join()
    del worker
    gc.collect()
    assert len(counting.made) == 2
    closed = [p.closed_in for p in counting.made]
    assert closed == [None, os.getpid()]  # the thread ended: its connection went
    app.close()
    assert [p.closed_in for p in counting.made] == [os.getpid(), os.getpid()]
    noop.send()  # sends again after close(), over a new connection
    assert len(counting.made) == 3
    app.close()
    assert len(counting.broker.queue("q").ready) == 6


def test_a_lost_connection_is_reopened_once(counting: Counting) -> None:
    app = App("memory://", transport_factory=counting)

    @app.job(queue="q")
    def noop() -> None: ...

    counting.lose_next = True
    job_id = noop.send()
    assert len(counting.made) == 2
    assert counting.made[0].closed_in is not None  # the lost one, given up
    (queued,) = [m.body for _, _, m in counting.broker.queue("q").ready]
    assert json.loads(queued)["id"] == job_id
    app.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_write_on_its_parents_connection(broker: BrokerProcess) -> None:
    app = App(f"queueit://{broker.host}:{broker.port}")

    @app.job(queue="forked")
    def noop(who: str) -> None: ...

    noop.send("parent-before")
    pid = os.fork()
    if pid == 0:  # the child: its own connection; the parent's is left alone
        code = 0
        try:
            noop.send("child")
            app.close()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    noop.send("parent-after")  # the parent's connection still works
    app.close()
    with Client(broker.host, broker.port) as c:
        c.subscribe("/queue/forked", ack="auto", receipt=True)
        got = sorted(json.loads(c.receive(timeout=5).body)["args"][0] for _ in range(3))
    assert got == ["child", "parent-after", "parent-before"]


def test_a_refused_send_says_why_and_the_next_send_gets_a_new_connection(tmp_path: Path) -> None:
    config = tmp_path / "queueit.toml"
    config.write_text('[[queues]]\nmatch = "refused"\nmax_messages = 1\noverflow = "reject-publish"\n')
    broker = start_broker(tmp_path / "data", "--config", str(config))
    app = App(f"queueit://{broker.host}:{broker.port}")

    @app.job(queue="refused")
    def noop(n: int) -> None: ...

    try:
        kept = noop.send(1)
        with pytest.raises(TransportRefused, match="full"):
            noop.send(2)  # the queue is full: the broker says so, and ends that connection
        with Client(broker.host, broker.port) as c:
            c.subscribe("/queue/refused", ack="auto", receipt=True)
            assert json.loads(c.receive(timeout=5).body)["id"] == kept
            job_id = noop.send(3)  # over a new connection
            assert json.loads(c.receive(timeout=5).body)["id"] == job_id
    finally:
        app.close()
        broker.stop()


def test_after_swap_transport_sync_sends_go_through_the_new_transport(request: pytest.FixtureRequest) -> None:
    first, second = Counting(f"swap-a-{request.node.name}"), Counting(f"swap-b-{request.node.name}")
    app = App("memory://", transport_factory=first)

    @app.job(queue="q")
    def noop() -> None: ...

    noop.send()
    app.swap_transport(second)  # without close(): the old publisher must not be used again
    noop.send()
    app.close()
    assert (len(first.broker.queue("q").ready), len(second.broker.queue("q").ready)) == (1, 1)
    assert first.made[0].closed_in == os.getpid()
