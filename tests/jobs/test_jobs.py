"""The job framework in one process, on ``memory://`` through :class:`JobTester` (and a few
cases on a real ``queueit serve``): defining, sending, argument checks, plain messages,
invalid messages, retries, failures, hooks."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import sys
import threading
import time
import typing
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Literal

import msgspec
import pydantic
import pytest

from queueit.jobs import (
    App,
    Envelope,
    FailNow,
    InvalidMessage,
    Job,
    JobTimeout,
    Middleware,
    Queue,
    Retry,
    RetryLater,
    Worker,
    WorkerSettings,
    current,
)
from queueit.jobs import failed as failed_jobs
from queueit.jobs import worker as worker_module
from queueit.jobs.arguments import convert
from queueit.jobs.definitions import BatchJob
from queueit.jobs.envelope import Plain, decode
from queueit.jobs.failed import FailedJob, list_failed
from queueit.jobs.testing import JobTester
from queueit.jobs.worker import OVERRUN_RETRY_MARGIN, Exit, Pool
from queueit.jobs.workflows import Step
from queueit.transports import (
    Capabilities,
    Delivery,
    Outgoing,
    TransportClosed,
    TransportRefused,
    Unsupported,
)
from queueit.transports.memory import MemoryTransport, shared_broker

from ..conftest import BrokerProcess, run_worker_until, start_broker


def make_app() -> App:
    return App("memory://unused")


# -- the envelope ------------------------------------------------------------------------------


def test_an_envelope_round_trips_and_keeps_fields_it_does_not_know() -> None:
    e = Envelope.new("send_email", "email", (1,), {"to": "a"}, headers={"h": "v"})
    document = json.loads(e.encode())
    assert document["queueit"] == 1
    assert document["kwargs"] == {"to": "a"}
    document["future_field"] = {"x": 1}
    back = decode(json.dumps(document).encode())
    assert isinstance(back, Envelope)
    assert (back.id, back.job, back.args, back.kwargs, back.headers) == (
        e.id,
        "send_email",
        (1,),
        {"to": "a"},
        {"h": "v"},
    )
    assert json.loads(back.encode())["future_field"] == {"x": 1}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b'{"queueit": 2, "id": "x", "job": "j"}', "version 2"),
        (b'{"queueit": 1, "job": "j"}', "no 'id'"),
        (b'{"queueit": 1, "id": "x", "job": "j", "args": {}}', "'args' field must be a JSON list"),
        (b'{"queueit": 1, "id": "x", "job": "j", "attempt": true}', "'attempt'"),
        (b'{"queueit": 1, "id": "x", "job": "j", "headers": {"a": 1}}', "headers must all be strings"),
        (b'{"queueit": 1, "id": "x", "job": "j", "attempt": -1}', "must not be negative"),
        (b'{"queueit": 1, "id": "x"}', "no 'job'"),
        (b"[1, NaN]", "NaN is not a JSON value"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON value"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"queueit": 1, "id": "' + b"i" * 256 + b'", "job": "j"}', "id must be 1-255"),
        (b'{"queueit": 1, "id": "", "job": "j"}', "id must be 1-255"),
        (b'{"queueit": 1, "id": "x", "job": ""}', "job 1-1000"),
        (b'{"queueit": 1, "id": "x", "job": "j", "trace_id": "' + b"t" * 256 + b'"}', "trace_id"),
        (b'{"queueit": 1, "id": "x", "job": "j", "unique": "' + b"u" * 256 + b'"}', "unique key"),
        (b'{"queueit": 1, "id": "x", "job": "j", "queue": "bad queue!"}', "not a valid queue name"),
        (b'{"queueit": 1, "id": "x", "job": "j", "errors": ["junk"]}', "errors must be objects"),
        (b'{"queueit": 1, "id": "x", "job": "j", "errors": [{"traceback": 5}]}', "errors must be objects"),
    ],
)
def test_bad_bodies_are_invalid_messages_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        decode(body)


def test_an_envelope_with_only_its_required_fields_gets_the_defaults() -> None:
    back = decode(b'{"queueit": 1, "id": "x", "job": "j", "errors": [{"a": 1}], "new": 2}')
    assert back == Envelope("x", "j", "", errors=({"a": 1},), extra={"new": 2})


def test_json_that_is_not_an_envelope_is_a_plain_message() -> None:
    assert decode(b'{"to": "a@example.com"}') == Plain({"to": "a@example.com"})
    assert decode(b"[1, 2]") == Plain([1, 2])


# -- sending -----------------------------------------------------------------------------------


def test_send_checks_arguments_at_the_call_site() -> None:
    app = make_app()

    @app.job(queue="email")
    def send_email(to: str, subject: str = "hi") -> None: ...

    @app.job(queue="store")
    def store(data: Any) -> None: ...

    with JobTester(app) as jobs:
        with pytest.raises(TypeError, match="missing a required argument: 'to'"):
            send_email.send()  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="unexpected keyword argument 'cc'"):
            send_email.send(to="a", cc="b")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="JSON values"):
            store.send(data={"when": object()})
        with pytest.raises(TypeError, match="expected str, got int"):
            send_email.send(to=5)  # type: ignore[arg-type]
        assert jobs.sent() == []
        job_id = send_email.send(to="a@example.com")
        sent = jobs.sent(send_email)
        assert len(sent) == 1
        assert isinstance(sent[0], Envelope)
        assert (sent[0].id, sent[0].kwargs, sent[0].queue) == (job_id, {"to": "a@example.com"}, "email")


def test_send_with_delays_prioritises_and_reroutes() -> None:
    app = make_app()
    ran: list[str] = []

    @app.job(queue="a")
    def note(text: str) -> None:
        ran.append(text)

    with JobTester(app) as jobs:
        note.send_with(delay=3600).send("later")
        note.send_with(priority=9).send("urgent")
        note.send("normal")
        note.send_with(queue="b", headers={"tenant": "t1"}).send("elsewhere")
        assert [e.args for e in jobs.queued("a") if isinstance(e, Envelope)] == [
            ("urgent",),
            ("normal",),
            ("later",),
        ]
        b = jobs.queued("b")
        assert isinstance(b[0], Envelope)
        assert b[0].headers == {"tenant": "t1"}
        jobs.run()
        # "later" waited an hour on the broker's (simulated) clock. The worker takes the queues
        # the app's jobs use ("a"): the message rerouted to "b" waits for a worker of "b".
        assert ran == ["urgent", "normal", "later"]
        assert len(jobs.queued("b")) == 1
    with pytest.raises(ValueError, match="delay or eta"):
        note.send_with(delay=1, eta=2)
    with pytest.raises(ValueError, match="priority"):
        note.send_with(priority=10)


def test_async_code_sends_with_asend() -> None:
    app = make_app()
    ran: list[int] = []

    @app.job(queue="q")
    async def double(n: int) -> None:
        ran.append(n * 2)

    with JobTester(app) as jobs:

        async def main() -> None:
            await double.asend(4)
            await app.aclose()

        asyncio.run(main())
        jobs.run(raise_errors=True)
    assert ran == [8]


# -- running -----------------------------------------------------------------------------------


def test_arguments_are_checked_and_converted_by_type_hints_on_the_worker() -> None:
    app = make_app()
    got: list[Any] = []

    @app.job(queue="q")
    def typed(
        n: float, tags: list[str], mode: Literal["a", "b"] = "a", extra: dict[str, int] | None = None
    ) -> None:
        got.append((n, tags, mode, extra))

    with JobTester(app) as jobs:
        typed.send(1, ["x"], "b", {"k": 2})
        raw = Envelope.new(typed.name, "q", (1, [3]), {}).encode()  # a tags item that is no str

        async def put_raw() -> None:
            transport = app.open_transport()
            await transport.connect()
            await transport.publish("q", Outgoing(raw))
            await transport.close()

        asyncio.run(put_raw())
        report = jobs.run()
    assert got == [(1.0, ["x"], "b", {"k": 2})]
    assert isinstance(got[0][0], float)
    assert report.done == 1
    assert len(report.invalid) == 1
    assert "tags[0]: expected str" in report.invalid[0][1]


class Address(pydantic.BaseModel):
    city: str
    zip: str


class Point(msgspec.Struct):
    x: int
    y: int


@dataclasses.dataclass
class Size:
    width: int
    height: int = 1


def test_models_are_sent_as_json_and_rebuilt_from_the_hints_on_the_worker() -> None:
    app = make_app()
    got: list[Any] = []

    @app.job(queue="q")
    def place(address: Address, at: Point, size: Size, tags: set[str]) -> None:
        got.append((address, at, size, tags))

    good = ({"city": "Oslo", "zip": "0150"}, {"x": 1, "y": 2}, {"width": 3}, ["a"])
    bad = [
        (({"city": "Oslo"}, *good[1:]), "zip"),  # pydantic: a field missing
        ((good[0], {"x": "one", "y": 2}, *good[2:]), "Expected `int`, got `str`"),  # msgspec
        ((*good[:2], {"width": 3, "depth": 4}, good[3]), "Size has no field 'depth'"),
        ((*good[:2], {"width": "3"}, good[3]), "size.width: expected int, got str"),
        ((*good[:2], {"height": 2}, good[3]), "missing 1 required positional argument: 'width'"),
        ((*good[:3], [["a"]]), "tags[0]: expected str, got list"),
    ]
    with JobTester(app) as jobs:
        place.send(Address(city="Oslo", zip="0150"), Point(x=1, y=2), Size(3), {"a"})

        async def put_raw() -> None:
            transport = app.open_transport()
            await transport.connect()
            for args, _ in bad:
                await transport.publish("q", Outgoing(Envelope.new(place.name, "q", args).encode()))
            await transport.close()

        asyncio.run(put_raw())
        report = jobs.run()
    assert got == [(Address(city="Oslo", zip="0150"), Point(x=1, y=2), Size(3, 1), {"a"})]
    assert len(report.invalid) == len(bad)
    for (_, reason), (_, said) in zip(bad, report.invalid, strict=True):
        assert reason in said, said


def test_a_hint_that_cannot_be_resolved_leaves_the_others_checked() -> None:
    app = make_app()

    @app.job(queue="q")
    def half_typed(n: int, thing: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with JobTester(app), pytest.raises(TypeError, match="n: expected int, got str"):
        half_typed.send("one", object())  # type: ignore[arg-type]
    with pytest.raises(InvalidMessage, match="a set's items must be strings, numbers or null"):
        convert([["not", "hashable"]], set, "tags")


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        ([1, "a"], tuple[int, str], (1, "a")),
        ([1, 2, 3], tuple[int, ...], (1, 2, 3)),
        ([], tuple[int, ...], ()),
        ([], tuple[()], ()),
        ([1, "x", None], tuple, (1, "x", None)),
        ([1, "x", None], typing.Tuple, (1, "x", None)),  # noqa: UP006 (a bare Tuple takes any items)
        (["notint", 5], tuple[int, str], "t[0]: expected int, got str"),
        ([1, "a", "extra"], tuple[int, str], "t: expected 2 items, got 3"),
        ([1], tuple[int, str], "t: expected 2 items, got 1"),
        ([1, "a"], tuple[int, ...], "t[1]: expected int, got str"),
        ([1], tuple[()], "t: expected 0 items, got 1"),
    ],
)
def test_a_tuple_hint_checks_each_item_and_the_count(value: list[Any], hint: Any, expected: Any) -> None:
    if isinstance(expected, str):
        with pytest.raises(InvalidMessage, match=re.escape(expected)):
            convert(value, hint, "t")
    else:
        assert convert(value, hint, "t") == expected


def test_a_plain_json_message_from_another_language_is_a_job() -> None:
    """The talk's PHP producer: json_encode(['to' => ..., 'subject' => ...]) to /queue/email."""
    app = make_app()
    mails: list[tuple[str, str]] = []

    @app.job(queue="email")
    def send_email(to: str, subject: str) -> None:
        mails.append((to, subject))

    with JobTester(app) as jobs:

        async def php() -> None:
            transport = app.open_transport()
            await transport.connect()
            await transport.publish("email", Outgoing(b'{"to":"a@example.com","subject":"Hi"}'))
            await transport.publish("email", Outgoing(b'{"to":"b@example.com"}'))  # missing subject
            await transport.close()

        asyncio.run(php())
        report = jobs.run()
    assert mails == [("a@example.com", "Hi")]
    assert len(report.invalid) == 1
    raw, reason = report.invalid[0]
    assert raw == b'{"to":"b@example.com"}'
    assert "missing a required argument: 'subject'" in reason


def test_invalid_messages_are_dead_lettered_raw_and_never_retried() -> None:
    app = make_app()

    @app.job(queue="q")
    def job(n: int) -> None: ...

    with JobTester(app) as jobs:

        async def bad() -> None:
            transport = app.open_transport()
            await transport.connect()
            await transport.publish("q", Outgoing(b"\x00\xffgarbage"))
            await transport.publish("q", Outgoing(Envelope.new("no.such.job", "q").encode()))
            await transport.close()

        asyncio.run(bad())
        report = jobs.run()
        dead = jobs.broker.messages("DLQ.q")
    assert [r for _, r in report.invalid] == [
        "the body is not UTF-8 text",
        "no job named 'no.such.job' is registered in this worker's app",
    ]
    assert report.retried == 0
    assert dead[0][0] == b"\x00\xffgarbage"
    assert dead[0][1]["x-dead-letter-reason"] == "invalid"


def test_messages_that_would_break_a_worker_later_are_invalid_before_the_job_runs() -> None:
    # Each of these used to pass the first checks and then fail where a copy of it was sent
    # (a retry's header, a next step, a group report), round and round until max-deliveries.
    app = make_app()
    ran: list[Any] = []

    @app.job(queue="q", retries=0)
    def job(n: int = 0) -> None:
        ran.append(n)

    def envelope(**extra: Any) -> bytes:
        return json.dumps({"queueit": 1, "id": "x", "job": job.name, "kwargs": {"n": 1}, **extra}).encode()

    bad = [
        (b"[1, 2]", "must be a JSON object"),  # a plain message for a job of keyword arguments
        (b'"hello"', "must be a JSON object"),
        (envelope(then=[{"job": job.name, "queue": ""}]), "each step of the envelope's 'then'"),
        (envelope(then=[{"job": job.name, "queue": "q", "args": {}}]), "each step of the envelope's 'then'"),
        (envelope(then="next"), "'then' must be a list"),
        (envelope(group={"id": "g", "member": True}), "'group' must be"),
        (envelope(group={"id": "g", "member": -1}), "'group' must be"),
        (envelope(group={"id": "g" * 300, "member": 0}), "'group' must be"),
        (b'{"n": NaN}', "NaN is not a JSON value"),
    ]
    with JobTester(app) as jobs:

        async def publish() -> None:
            transport = app.open_transport()
            await transport.connect()
            for body, _ in bad:
                await transport.publish("q", Outgoing(body))
            await transport.publish("q", Outgoing(b'{"n": 7}'))  # a good one behind them
            await transport.close()

        asyncio.run(publish())
        report = jobs.run()
    assert ran == [7]  # none of the bad ones ran; the good one ran once
    assert report.retried == 0
    assert len(report.invalid) == len(bad)
    for (body, reason), (raw, said) in zip(bad, report.invalid, strict=True):
        assert raw == body
        assert reason in said, said


def test_a_job_whose_numbers_json_cannot_carry_back_goes_to_the_dead_letters_once() -> None:
    # 1e400 is JSON, read as infinity, which JSON cannot carry: its retry cannot be encoded.
    app = make_app()
    runs: list[float] = []

    @app.job(queue="q", retries=3)
    def scale(factor: float) -> None:
        runs.append(factor)
        raise ValueError("too big")

    with JobTester(app) as jobs:

        async def publish() -> None:
            transport = app.open_transport()
            await transport.connect()
            await transport.publish(
                "q",
                Outgoing(b'{"queueit": 1, "id": "x", "job": "%s", "args": [1e400]}' % scale.name.encode()),
            )
            await transport.close()

        asyncio.run(publish())
        jobs.run()
        dead = jobs.broker.messages("DLQ.q")
    assert runs == [float("inf")]  # ran once, not round and round
    [(body, headers)] = dead
    assert b"1e400" in body  # as it came
    assert headers["x-dead-letter-reason"] == "rejected"
    assert "its retry cannot be sent" in headers["x-dead-letter-error"]


def test_an_unknown_job_name_is_quoted_shortly_in_the_reason() -> None:
    app = make_app()

    @app.job(queue="q")
    def job() -> None: ...

    with JobTester(app) as jobs:

        async def publish() -> None:
            transport = app.open_transport()
            await transport.connect()
            await transport.publish("q", Outgoing(Envelope.new("n" * 1_000, "q").encode()))
            await transport.close()

        asyncio.run(publish())
        report = jobs.run()
    [(_, reason)] = report.invalid
    assert len(reason) < 300, reason


def test_retries_back_off_and_keep_every_error_then_the_job_is_kept_as_failed() -> None:
    app = make_app()
    attempts: list[int] = []

    @app.job(queue="q", retry=Retry(retries=3, base=10, factor=3, jitter=False))
    def fragile(n: int) -> None:
        attempts.append(current().attempt)
        raise ConnectionError(f"down {n}")

    with JobTester(app) as jobs:
        start = jobs.clock.now
        fragile.send(1)
        report = jobs.run()
        waited = jobs.clock.now - start
        dead = jobs.broker.messages("DLQ.q")
    assert attempts == [1, 2, 3, 4]
    assert (report.retried, len(report.failed)) == (3, 1)
    assert waited == pytest.approx(10 + 30 + 90)  # the back-off, held by the broker
    body, headers = dead[0]
    failed = decode(body)
    assert isinstance(failed, Envelope)
    assert failed.attempt == 0  # ready to run again, with fresh retries, when redriven
    assert [e["attempt"] for e in failed.errors] == [1, 2, 3, 4]
    assert failed.errors[-1]["type"] == "builtins.ConnectionError"
    assert "down 1" in failed.errors[-1]["traceback"]
    assert headers["x-dead-letter-reason"] == "failed"
    assert headers["x-dead-letter-queue"] == "q"


def test_which_exceptions_retry() -> None:
    app = make_app()
    calls: list[str] = []

    class Permanent(Exception):
        pass

    @app.job(queue="q", retry=Retry(retries=5, base=1, retry_on=(OSError,), fail_on=(FileNotFoundError,)))
    def picky(kind: str) -> None:
        calls.append(kind)
        raise {"os": OSError("x"), "missing": FileNotFoundError("y"), "other": Permanent("z")}[kind]

    with JobTester(app) as jobs:
        for kind in ("missing", "other"):
            picky.send(kind)
        report = jobs.run()
    assert calls == ["missing", "other"]  # neither retried
    assert len(report.failed) == 2


def test_a_job_can_ask_to_retry_later_or_to_fail_now() -> None:
    app = make_app()
    delays: list[float] = []
    attempts: list[tuple[str, int]] = []

    class Delays(Middleware):
        def on_retry(self, envelope: Envelope, error: BaseException, delay: float) -> None:
            delays.append(delay)

    app.middleware.append(Delays())
    policy = Retry(retries=2, base=1, jitter=False, retry_on=(TimeoutError,))

    @app.job(queue="q", retry=policy)
    def rate_limited() -> None:
        attempts.append(("rate_limited", current().attempt))
        raise RetryLater("rate limited", delay=42.5)  # retried though retry_on says otherwise

    @app.job(queue="q", retry=policy)
    def backs_off() -> None:
        attempts.append(("backs_off", current().attempt))
        if current().attempt == 1:
            raise RetryLater()  # no delay: the policy's back-off

    @app.job(queue="q", retry=policy)
    def gone() -> None:
        attempts.append(("gone", current().attempt))
        raise FailNow("the record is gone")  # retries left, but none is taken

    with JobTester(app) as jobs:
        rate_limited.send()
        backs_off.send()
        gone.send()
        report = jobs.run()
    assert sorted(attempts) == [
        ("backs_off", 1),
        ("backs_off", 2),
        ("gone", 1),
        ("rate_limited", 1),
        ("rate_limited", 2),
        ("rate_limited", 3),  # out of retries: failed like any job
    ]
    assert sorted(delays) == [1.0, 42.5, 42.5]
    assert sorted(e.job.rsplit(".", 1)[1] for e in report.failed) == ["gone", "rate_limited"]
    assert sorted(type(e).__name__ for e in report.errors) == ["FailNow"] + ["RetryLater"] * 4
    with pytest.raises(ValueError, match="delay must be from 0"):
        RetryLater(delay=-1)
    with pytest.raises(ValueError, match="retry base and cap"):
        Retry(cap=10 * 365 * 86_400)


def test_a_retry_longer_than_the_transport_delays_waits_its_longest() -> None:
    name = "short-delays"
    delays: list[float] = []

    class ShortDelays(MemoryTransport):
        @property
        def capabilities(self) -> Capabilities:
            return dataclasses.replace(super().capabilities, max_delay=10.0)

    class Delays(Middleware):
        def on_retry(self, envelope: Envelope, error: BaseException, delay: float) -> None:
            delays.append(delay)

    app = App(f"memory://{name}", transport_factory=lambda: ShortDelays(shared_broker(name)))
    app.middleware.append(Delays())

    @app.job(queue="q", retries=1)
    def later() -> None:
        raise RetryLater(delay=3600)

    later.send()
    worker = Worker(app, WorkerSettings())

    run_worker_until(worker, lambda: bool(delays), 5)
    app.close()
    assert delays == [10.0]  # not refused by the transport, not handed back again and again


@pytest.mark.parametrize("pool", ["threads", "inline"])
def test_a_job_that_raises_system_exit_fails_and_the_worker_goes_on(pool: Pool) -> None:
    name = f"exits-{pool}"
    app = App(f"memory://{name}")
    ran: list[str] = []

    @app.job(queue="q", retries=0)
    def quits() -> None:
        sys.exit(3)

    @app.job(queue="q", retries=0, timeout=5)
    async def interrupts() -> None:  # with a timeout: it runs in a task of its own
        raise KeyboardInterrupt

    @app.job(queue="q")
    def works() -> None:
        ran.append("works")

    quits.send()
    interrupts.send()
    works.send()
    failed: list[str] = []

    class Failures(Middleware):
        def on_fail(self, envelope: Envelope, error: BaseException) -> None:
            failed.append(f"{envelope.job.rsplit('.', 1)[1]}: {error}")

    app.middleware.append(Failures())
    worker = Worker(app, WorkerSettings(pool=pool, concurrency=1))

    why = run_worker_until(worker, lambda: bool(ran) and len(failed) == 2, 5)
    assert why is Exit.STOPPED  # the process was not ended by the job
    app.close()
    assert ran == ["works"]
    assert sorted(failed) == [
        "interrupts: the job raised KeyboardInterrupt()",
        "quits: the job raised SystemExit(3)",
    ]


def test_concurrency_bounds_the_jobs_running_at_once_over_all_queues(broker: BrokerProcess) -> None:
    # On queueit's broker each subscription is granted the prefetch: 3 queues x 2 here.
    app = App(f"queueit://{broker.host}:{broker.port}")
    running: list[int] = [0]
    peak: list[int] = [0]

    def define(queue: str) -> Job[[int], Coroutine[Any, Any, None]]:
        @app.job(queue=queue, name=f"sleepy-{queue}", timeout=0.5)
        async def sleepy(n: int) -> None:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            await asyncio.sleep(0.2)  # well within its timeout, once it runs
            running[0] -= 1

        return sleepy

    jobs = [define(q) for q in ("a", "b", "c")]
    for job in jobs:
        for n in range(3):
            job.send(n)
    app.close()  # the sends' connections; the worker opens its own
    done: list[str] = []

    class Done(Middleware):
        def after_process(self, envelope: Envelope, error: BaseException | None) -> None:
            done.append("ok" if error is None else f"{error}")

    app.middleware.append(Done())
    worker = Worker(app, WorkerSettings(concurrency=2))

    run_worker_until(worker, lambda: len(done) == 9, 10)
    app.close()
    assert done == ["ok"] * 9  # none timed out while it waited for a slot
    assert peak[0] == 2


def test_an_error_frame_from_the_broker_makes_the_worker_reconnect(tmp_path: Path) -> None:
    config = tmp_path / "queueit.toml"
    config.write_text('[[queues]]\nmatch = "full*"\nmax_messages = 1\noverflow = "reject-publish"\n')
    broker = start_broker(tmp_path / "data", "--config", str(config))
    ran: list[tuple[int, int]] = []
    try:
        app = App(f"queueit://{broker.host}:{broker.port}")

        @app.job(queue="full-q", retry=Retry(retries=1, base=0.1, jitter=False))
        def flaky(n: int) -> None:
            ran.append((n, current().delivery.delivery_count))
            if n == 0 and current().delivery.delivery_count == 1:
                flaky.send(1)  # fills the queue: this attempt's retry is refused (an ERROR)
                raise OSError("the first delivery fails")

        flaky.send(0)
        app.close()
        worker = Worker(app, WorkerSettings(concurrency=1))

        why = run_worker_until(worker, lambda: (1, 1) in ran, 20)
        app.close()
    finally:
        assert broker.stop() == 0
    assert why is Exit.STOPPED  # not ended by the broker's ERROR
    assert (0, 2) in ran  # the refused attempt came back on the new connection
    assert (1, 1) in ran


@pytest.mark.parametrize("reconnects", [True, False], ids=["reconnects", "stays-down"])
def test_sends_that_lose_their_connection_together_reconnect_once_and_none_hangs(reconnects: bool) -> None:
    # Fifty sends on one lost connection: each must forget it once, never the connection another
    # send is opening meanwhile, and every send waiting on a connect that fails must learn why.
    name = f"lost-together-{reconnects}"
    connects: list[int] = []

    class LosesItsFirstConnection(MemoryTransport):
        async def connect(self) -> None:
            connects.append(len(connects))
            self.number = connects[-1]
            await asyncio.sleep(0.01)  # as on a network: other sends run meanwhile
            if self.number > 0 and not reconnects:
                raise TransportClosed("the broker is still down")
            await super().connect()

        async def publish(self, queue: str, message: Outgoing) -> str | None:
            if self.number == 0:
                await asyncio.sleep(0.01)
                raise TransportClosed("connection lost")
            return await super().publish(queue, message)

    app = App(f"memory://{name}", transport_factory=lambda: LosesItsFirstConnection(shared_broker(name)))

    @app.job(queue="q")
    def job(n: int) -> None: ...

    async def send_all() -> list[str | BaseException]:
        sends = [job.asend(i) for i in range(50)]
        try:
            return await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 10)
        finally:
            await app.aclose()

    outcomes = asyncio.run(send_all())
    if reconnects:
        assert all(isinstance(o, str) for o in outcomes), outcomes
        assert len(connects) == 2  # one reconnection, shared by all fifty
        assert len(shared_broker(name).messages("q")) == 50
    else:
        assert all(type(o) is TransportClosed for o in outcomes), outcomes  # no KeyError, no hang


def test_an_invalid_message_whose_dead_lettering_is_refused_is_handed_back_not_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Held, it would take a slot of the worker's for ever (RabbitMQ refusing a deleted DLQ).
    monkeypatch.setattr(worker_module, "REFUSED_RETRY_DELAY", 0.2)
    name = "refused-dead-letters"
    refusals: list[str] = []

    class RefusesOnce(MemoryTransport):
        async def reject(
            self, delivery: Delivery, reason: Literal["invalid", "rejected"], error: str = ""
        ) -> None:
            if not refusals:
                refusals.append(delivery.message_id)
                raise TransportRefused("the dead-letter queue is gone")
            await super().reject(delivery, reason, error)

    app = App(f"memory://{name}", transport_factory=lambda: RefusesOnce(shared_broker(name)))

    @app.job(queue="q")
    def job(n: int) -> None: ...

    async def send_bad() -> None:
        transport = app.open_transport()
        await transport.connect()
        await transport.publish("q", Outgoing(b"not json"))
        await transport.close()

    asyncio.run(send_bad())
    broker = shared_broker(name)
    why = run_worker_until(
        Worker(app, WorkerSettings(concurrency=1)), lambda: bool(broker.messages("DLQ.q")), 10
    )
    app.close()
    assert why is Exit.STOPPED
    assert len(refusals) == 1
    [(body, headers)] = broker.messages("DLQ.q")
    assert (body, headers["x-dead-letter-reason"]) == (b"not json", "invalid")


class SmallMessages(MemoryTransport):
    """``memory://`` with a 2,000-byte message limit, as a broker configured low has."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, max_message_bytes=2_000)


def small_messages_app(name: str) -> App:
    return App(f"memory://{name}", transport_factory=lambda: SmallMessages(shared_broker(name)))


def test_a_failure_too_large_to_record_goes_to_the_dead_letters_as_it_came() -> None:
    name = "small-messages"
    runs: list[int] = []
    app = small_messages_app(name)

    @app.job(queue="q", retries=3)
    def big(text: str) -> None:
        runs.append(current().attempt)
        raise ValueError("x" * 1_500)  # the error record alone passes the limit

    big.send("payload")
    run_worker_until(Worker(app, WorkerSettings()), lambda: bool(shared_broker(name).messages("DLQ.q")), 5)
    app.close()
    assert runs == [1]  # not round and round until max-deliveries
    [(body, headers)] = shared_broker(name).messages("DLQ.q")
    assert decode(body).args == ("payload",)  # type: ignore[union-attr]
    assert headers["x-dead-letter-reason"] == "rejected"
    assert "its retry cannot be sent: a message body of" in headers["x-dead-letter-error"]


def test_a_pipeline_step_whose_result_is_too_large_to_send_on_goes_to_the_dead_letters() -> None:
    name = "small-steps"
    runs: list[int] = []
    app = small_messages_app(name)

    @app.job(queue="q")
    def render(n: int) -> str:
        runs.append(n)
        return "x" * 3_000  # the next step, fed this, is over the limit

    @app.job(queue="q")
    def store(page: str) -> None: ...

    app.pipeline(render.s(1), store.s()).send()
    run_worker_until(Worker(app, WorkerSettings()), lambda: bool(shared_broker(name).messages("DLQ.q")), 5)
    app.close()
    assert runs == [1]  # not handed back and run again every 30 s
    [(body, headers)] = shared_broker(name).messages("DLQ.q")
    assert decode(body).args == (1,)  # type: ignore[union-attr]
    assert headers["x-dead-letter-reason"] == "rejected"
    assert "its next pipeline step cannot be sent: a message body of" in headers["x-dead-letter-error"]


def test_an_async_job_over_its_timeout_fails_the_attempt() -> None:
    app = make_app()

    @app.job(queue="q", timeout=0.2, retry=Retry(retries=1, base=1))
    async def slow() -> None:
        await asyncio.sleep(10)

    with JobTester(app) as jobs:
        slow.send()
        report = jobs.run()
    assert [type(e) for e in report.errors] == [JobTimeout, JobTimeout]
    assert len(report.failed) == 1


def test_a_sync_job_that_overran_in_a_thread_is_retried_after_its_process_is_gone() -> None:
    # The overrunning thread cannot be stopped: the worker is replaced, the queued jobs run on
    # the next one, and the retry waits past the stopping process's shutdown timeout + margin.
    app = make_app()
    delays: list[float] = []
    ran: list[tuple[int, int]] = []

    class Delays(Middleware):
        def on_retry(self, envelope: Envelope, error: BaseException, delay: float) -> None:
            delays.append(delay)

    app.middleware.append(Delays())

    @app.job(queue="q", timeout=0.2, retry=Retry(retries=1, base=1))
    def stuck(n: int) -> None:
        ran.append((n, current().attempt))
        if n == 0 and current().attempt == 1:
            threading.Event().wait(1.0)

    with JobTester(app) as jobs:
        for n in range(3):
            stuck.send(n)
        report = jobs.run(max_seconds=20)
    assert [type(e) for e in report.errors] == [JobTimeout]
    assert delays == [0.0 + OVERRUN_RETRY_MARGIN]  # JobTester's shutdown timeout is 0
    assert sorted(ran) == [(0, 1), (0, 2), (1, 1), (2, 1)]  # nothing lost, the retry ran once
    assert report.done == 3


def test_the_talks_queue_class() -> None:
    app = make_app()
    sent: list[dict[str, str]] = []

    @app.register
    class EmailQueue(Queue):
        name = "email"
        retries = 0

        def validate(self, message: Any) -> bool:
            return isinstance(message, dict) and "to" in message

        def work(self, message: Any) -> None:
            sent.append(message)

    with JobTester(app) as jobs:
        EmailQueue(app).publish({"to": "a@example.com", "subject": "Hi"})
        with pytest.raises(ValueError, match="validate"):
            EmailQueue(app).publish({"subject": "no recipient"})

        async def php() -> None:
            transport = app.open_transport()
            await transport.connect()
            await transport.publish("email", Outgoing(b'{"to": "b@example.com"}'))
            await transport.publish("email", Outgoing(b'{"subject": "no to"}'))
            await transport.close()

        asyncio.run(php())
        report = jobs.run()
    assert sent == [{"to": "a@example.com", "subject": "Hi"}, {"to": "b@example.com"}]
    assert [r for _, r in report.invalid] == ["EmailQueue.validate() refused the message"]


def test_a_queue_class_not_registered_with_the_app_refuses_to_publish() -> None:
    app = make_app()

    class SmsQueue(Queue):
        name = "sms"

        def work(self, message: Any) -> None: ...

    with JobTester(app) as jobs:
        with pytest.raises(TypeError, match="decorate the class with @app"):
            SmsQueue(app).publish({"to": "+15550100"})
        assert jobs.sent() == []  # nothing went out that no worker would take
        app.register(SmsQueue)
        SmsQueue(app).publish({"to": "+15550100"})
        assert len(jobs.sent()) == 1


def test_hooks_run_in_order_and_a_failing_hook_changes_nothing() -> None:
    events: list[str] = []

    class Audit(Middleware):
        def before_enqueue(self, envelope: Envelope) -> None:
            events.append(f"before_enqueue {envelope.args}")

        def after_enqueue(self, envelope: Envelope) -> None:
            events.append("after_enqueue")

        def before_process(self, envelope: Envelope) -> None:
            events.append(f"before_process {envelope.attempt}")
            raise RuntimeError("a broken hook")

        def after_process(self, envelope: Envelope, error: BaseException | None) -> None:
            events.append(f"after_process {type(error).__name__}")

        def on_retry(self, envelope: Envelope, error: BaseException, delay: float) -> None:
            events.append("on_retry")

        def on_fail(self, envelope: Envelope, error: BaseException) -> None:
            events.append("on_fail")

    app = App("memory://unused", middleware=[Audit()])

    @app.job(queue="q", retry=Retry(retries=1, base=1))
    def once(n: int) -> None:
        if current().attempt == 1:
            raise ValueError("first")

    with JobTester(app) as jobs:
        once.send(1)
        report = jobs.run()
    assert report.done == 1
    assert events == [
        "before_enqueue (1,)",
        "after_enqueue",
        "before_process 0",
        "after_process ValueError",
        "on_retry",
        "before_process 1",
        "after_process NoneType",
    ]


def test_two_jobs_with_one_name_are_refused() -> None:
    app = make_app()

    @app.job(name="same")
    def a() -> None: ...

    with pytest.raises(ValueError, match="already registered"):

        @app.job(name="same")
        def b() -> None: ...


def test_a_bad_url_fails_where_the_app_is_built() -> None:
    with pytest.raises(ValueError, match="no transport"):
        App("redis://localhost")


def test_current_outside_a_job_raises() -> None:
    with pytest.raises(LookupError):
        current()


def test_raise_errors_reraises_the_jobs_exception() -> None:
    app = make_app()

    @app.job(queue="q", retries=0)
    def boom() -> None:
        raise KeyError("boom")

    with JobTester(app) as jobs:
        boom.send()
        with pytest.raises(KeyError, match="boom"):
            jobs.run(raise_errors=True)


def test_every_listener_group_gets_each_event() -> None:
    app = make_app()
    indexed: list[Any] = []
    mailed: list[Any] = []

    @app.on("user.saved")
    def index(user: Any) -> None:
        indexed.append(user["id"])

    async def welcome(user: Any) -> None:
        mailed.append(user["id"])

    assert app.on("user.saved", welcome, group="mailer") is welcome  # the talk's form

    with JobTester(app) as jobs:
        jobs.run()  # a listener group exists once its listeners have listened
        app.emit("user.saved", {"id": 1})
        app.emit("user.saved", {"id": 2})
        app.emit("user.deleted", {"id": 1})  # nobody listens
        jobs.run(raise_errors=True)
    assert indexed == [1, 2]
    assert mailed == [1, 2]
    with pytest.raises(ValueError, match="already registered"):
        app.on("user.saved", group="mailer")(lambda user: None)


def test_retry_by_job_name_reaches_past_the_first_look(monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()

    @app.job(queue="q", retries=0)
    def flaky(n: int) -> None:
        raise OSError("down")

    monkeypatch.setattr(failed_jobs, "MAX_LISTED", 3)  # one look sees 3 dead letters
    with JobTester(app) as jobs:
        for n in range(7):
            flaky.send(n)
        jobs.run()

        async def retry_all_of_them() -> int:
            transport = app.open_transport()
            await transport.connect()
            try:
                return await failed_jobs.retry_or_delete_job(transport, ["q"], flaky.name, delete_them=False)
            finally:
                await transport.close()

        assert asyncio.run(retry_all_of_them()) == 7
        assert sorted(e.args[0] for e in jobs.queued("q") if isinstance(e, Envelope)) == list(range(7))


def test_a_unique_job_that_fails_while_its_key_is_held_for_a_time_is_retried_then_kept() -> None:
    app = make_app()
    attempts: list[int] = []

    @app.job(queue="q", unique=True, unique_for=600, retries=1)
    def report(day: str) -> None:
        attempts.append(current().attempt)
        raise OSError("the database is away")

    with JobTester(app) as jobs:
        report.send("2026-12-07")
        result = jobs.run()
        assert attempts == [1, 2]  # the retry took its own key back
        assert len(result.failed) == 1  # and the failure is kept, not dropped
        assert len(jobs.queued("DLQ.q")) == 1


def test_jobs_sent_and_events_emitted_by_a_job_carry_its_trace_id() -> None:
    app = make_app()
    seen: list[str] = []

    @app.job(queue="q")
    def child() -> None:
        seen.append(current().envelope.trace_id)

    @app.on("parent.done", group="audit")
    async def audit(payload: Any) -> None:
        seen.append(current().envelope.trace_id)

    @app.job(queue="q")
    def parent() -> None:
        child.send()
        app.emit("parent.done", {})

    with JobTester(app) as jobs:
        jobs.run()  # the listener group exists from now on
        parent.send()
        other = child.send()  # sent outside any job: a trace of its own
        jobs.run(raise_errors=True)
        sent = {e.id: e for e in jobs.sent() if isinstance(e, Envelope)}
    root = next(e.trace_id for e in sent.values() if e.job == parent.name)
    assert seen.count(root) == 2  # the child and the listener
    assert sent[other].trace_id != root
    assert len(seen) == 3


def test_a_jobs_records_carry_its_fields_for_structured_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="queueit.worker")
    app = make_app()

    @app.job(queue="q", retries=0)
    def works(fail: bool) -> None:
        if fail:
            raise OSError("disk full")

    with JobTester(app) as jobs:
        ok_id = works.send(False)
        failed_id = works.send(True)
        jobs.run()
    outcomes = {r.__dict__["job_id"]: r.__dict__ for r in caplog.records if hasattr(r, "outcome")}
    done, failed = outcomes[ok_id], outcomes[failed_id]
    assert (done["outcome"], done["queue"], done["attempt"], done["job"]) == ("done", "q", 1, works.name)
    assert len(done["trace_id"]) == 32
    assert (failed["outcome"], failed["error"]) == ("failed", "builtins.OSError")


def test_a_listener_defined_in_a_script_gets_a_valid_default_group() -> None:
    app = make_app()

    def reindex(user: Any) -> None: ...

    reindex.__module__, reindex.__qualname__ = "__main__", "reindex"  # as in `python script.py`
    app.on("user.saved", reindex)
    assert app.listener_queues() == ["events.main__.reindex.user.saved"]


def test_a_failed_listener_is_found_among_the_apps_failed_jobs() -> None:
    app = make_app()

    @app.on("user.saved", group="indexer", retries=0)
    def index(user: Any) -> None:
        raise OSError("search is down")

    assert app.listener_queues() == ["events.indexer.user.saved"]
    with JobTester(app) as jobs:
        jobs.run()
        app.emit("user.saved", {"id": 1})
        jobs.run()

        async def failed_jobs() -> list[FailedJob]:
            transport = app.open_transport()
            await transport.connect()
            try:  # what `queueit failed list --app` reads
                return await list_failed(transport, app.queues() + app.listener_queues())
            finally:
                await transport.close()

        found = asyncio.run(failed_jobs())
    assert [(f.queue, f.envelope.args if f.envelope else None) for f in found] == [
        ("events.indexer.user.saved", ({"id": 1},))
    ]


def test_a_pipeline_feeds_each_result_to_the_next_step_and_survives_a_failed_step() -> None:
    app = make_app()
    seen: list[Any] = []
    broken = [True]

    @app.job(queue="img")
    def resize(path: str, width: int) -> str:
        return f"{path}@{width}"

    @app.job(queue="img", retries=0)
    async def watermark(path: str) -> str:
        if broken[0]:
            raise OSError("font missing")
        return f"{path}+wm"

    @app.job(queue="upload")
    def upload(path: str, bucket: str) -> None:
        seen.append((path, bucket))

    with JobTester(app) as jobs:
        first = app.pipeline(resize.s("cat.png", width=200), watermark.s(), upload.s(bucket="thumbs")).send()
        report = jobs.run()
        assert seen == []
        assert len(report.failed) == 1
        failed = report.failed[0]
        assert failed.job == watermark.name
        assert failed.args == ("cat.png@200",)
        assert failed.trace_id == jobs.sent(resize)[0].trace_id  # type: ignore[union-attr]
        assert [s["job"] for s in failed.extra["then"]] == [upload.name]  # the rest is kept

        broken[0] = False

        async def retry() -> None:
            transport = app.open_transport()
            await transport.connect()
            assert await transport.redrive("img", None) == 1
            await transport.close()

        asyncio.run(retry())
        jobs.run(raise_errors=True)
    assert seen == [("cat.png@200+wm", "thumbs")]
    assert isinstance(first, str)
    with pytest.raises(ValueError, match="not a job of this app"):
        app.pipeline(resize.s("x", 1), App("memory://other").job(lambda: None).s())
    # Checked as the workflow is made, not when a worker gets the step:
    with pytest.raises(TypeError, match=r"pipeline step .*resize.*missing a required argument: 'width'"):
        app.pipeline(resize.s("x"), upload.s(bucket="b"))
    with pytest.raises(TypeError, match=r"after the result it is given first\): too many positional"):
        app.pipeline(resize.s("x", 1), watermark.s("extra"))
    with pytest.raises(TypeError, match=r"group member .*unexpected keyword argument 'height'"):
        app.group(resize.s("a", 1), resize.s("b", 2, height=2))
    with pytest.raises(TypeError, match=r"group callback .*missing a required argument: 'bucket'"):
        app.group(resize.s("a", 1)).then(upload.s())
    app.group(resize.s("a", 1)).then(upload.s(bucket="b"))  # the results come first: fits

    @app.batch(queue="bulk", size=10, wait=1.0)
    def bulk(items: list[str]) -> int:
        return len(items)

    with pytest.raises(TypeError, match="batch job, which cannot be a pipeline step"):
        app.pipeline(resize.s("x", 1), Step(bulk.name, "bulk", (), {}))


def test_a_pipelines_next_steps_go_through_the_enqueue_hooks_and_a_hook_can_stop_one() -> None:
    app = make_app()
    seen: list[int] = []

    @app.job(queue="math", retries=0)
    def double(n: int) -> int:
        return 2 * n

    @app.job(queue="math")
    def show(n: int) -> None:
        seen.append(n)

    class NoBigShows(EnqueueAudit):
        def before_enqueue(self, envelope: Envelope) -> None:
            super().before_enqueue(envelope)
            if envelope.job == show.name and envelope.args[0] > 10:
                raise PermissionError("no shows over 10")

    audit = NoBigShows()
    app.middleware.append(audit)
    with JobTester(app) as jobs:
        app.pipeline(double.s(1), double.s(), show.s()).send()
        jobs.run(raise_errors=True)
        assert seen == [4]
        # Each step is a send as any other: both hooks, in order, once it is on the broker.
        assert audit.seen == [(when, (n,)) for n in (1, 2, 4) for when in ("before", "after")]
        audit.seen.clear()
        app.pipeline(double.s(3), double.s(), show.s()).send()
        report = jobs.run()
        [kept] = jobs.queued("DLQ.math")
    # The hook stopped the last step's send: the step that would have sent it failed, kept as
    # a failed job with the hook's error, and its own next step never went out.
    assert seen == [4]
    assert audit.seen == [
        ("before", (3,)),
        ("after", (3,)),
        ("before", (6,)),
        ("after", (6,)),
        ("before", (12,)),
    ]
    [failed] = report.failed
    assert (failed.job, failed.args) == (double.name, (6,))
    assert isinstance(kept, Envelope)
    assert kept.id == failed.id
    assert "no shows over 10" in json.dumps(kept.errors)


def test_a_worker_keeps_no_batch_of_a_connection_it_reconnected_from() -> None:
    app = make_app()

    @app.batch(queue="bulk", size=10, wait=1.0)
    def bulk(items: list[int]) -> None: ...

    worker = Worker(app, WorkerSettings())
    handler = app.handlers[bulk.name]
    assert isinstance(handler, BatchJob)
    before, after = app.open_transport(), app.open_transport()  # a connection, then its successor
    worker._batch_of(before, handler)
    worker._batch_of(after, handler)
    assert [b.transport for b in worker._batches.values()] == [after]


def test_a_batch_job_takes_up_to_size_items_or_what_arrived_within_wait() -> None:
    app = make_app()
    calls: list[list[int]] = []
    failing = [True]

    @app.batch(queue="metrics", size=3, wait=0.3, retry=Retry(retries=1, base=5, jitter=False))
    def store(points: list[int]) -> None:
        calls.append(points)
        if failing[0] and 13 in points:
            raise OSError("disk full")

    with JobTester(app) as jobs:
        for n in range(7):
            store.send(n)
        with pytest.raises(TypeError, match="expected int"):
            store.send("eight")  # type: ignore[arg-type]
        report = jobs.run(raise_errors=True)
        assert calls == [[0, 1, 2], [3, 4, 5], [6]]  # the last one after waiting 0.3 s
        assert report.done == 7

        calls.clear()
        store.send(12)
        store.send(13)
        report = jobs.run()
        assert calls[0] == [12, 13]
        assert report.retried == 2  # a failed call retries each of its items
        assert len(report.failed) == 2
        assert sorted(e.args[0] for e in report.failed) == [12, 13]


def test_items_a_batch_holds_longer_than_the_lease_keep_their_leases() -> None:
    # Real time, not JobTester's clock: leases run out on their own here.
    app = App("memory://batch-lease")
    calls: list[list[int]] = []

    @app.batch(queue="metrics", size=10, wait=3.5)
    def store(points: list[int]) -> None:
        calls.append(points)

    for n in range(3):
        store.send(n)
    worker = Worker(app, WorkerSettings(lease=1.0, concurrency=10))

    async def scenario() -> None:
        running = asyncio.ensure_future(worker.run())
        await asyncio.sleep(5.0)  # the batch waits 3.5 s: three and a half leases
        worker.stop()
        await running

    asyncio.run(scenario())
    app.close()
    assert calls == [[0, 1, 2]]  # once, not again after each lease ran out


def test_max_time_also_recycles_an_idle_worker() -> None:
    app = App("memory://idle-max-time")

    @app.job(queue="never-used")
    def unused() -> None: ...

    async def scenario() -> tuple[Exit, float]:
        started = time.monotonic()
        why = await asyncio.wait_for(Worker(app, WorkerSettings(max_time=0.5)).run(), 10)
        return why, time.monotonic() - started

    why, took = asyncio.run(scenario())
    app.close()
    assert why is Exit.RECYCLE
    assert 0.5 <= took < 5


# -- unique jobs -------------------------------------------------------------------------------


def test_a_unique_job_keeps_a_second_run_with_the_same_arguments_out_until_the_first_ran() -> None:
    app = make_app()
    ran: list[int] = []

    @app.job(queue="q", unique=True)
    def sync_account(account: int, full: bool = False) -> None:
        ran.append(account)

    with JobTester(app) as jobs:
        first = sync_account.send(1)
        assert sync_account.send(1) == first  # kept out: the holder's job id comes back
        assert sync_account.send(account=1) == first  # the same arguments, however given
        second = sync_account.send(2)
        assert second != first
        assert sync_account.send(1, full=True) not in (first, second)  # other arguments
        assert len(jobs.queued("q")) == 3
        jobs.run()
        assert sync_account.send(1) != first  # it ran: the key is free again
    assert sorted(ran) == [1, 1, 2]


def test_a_key_given_per_send_and_unique_for_hold_it_on_after_the_run() -> None:
    app = make_app()

    @app.job(queue="q")
    def refresh(user: int) -> None: ...

    with JobTester(app) as jobs:
        first = refresh.send_with(key="user-7", unique_for=60).send(7)
        assert refresh.send_with(key="user-7").send(8) == first  # the key, not the arguments
        assert refresh.send(7) != first  # no key: never kept out
        jobs.run()
        assert refresh.send_with(key="user-7").send(7) == first  # still within unique_for
        jobs.clock.now += 61
        assert refresh.send_with(key="user-7").send(7) != first
    with pytest.raises(ValueError, match="key must be 1-200"):
        refresh.send_with(key="")


def test_a_running_unique_job_and_its_retry_keep_the_key_until_it_fails() -> None:
    app = make_app()
    seen: list[tuple[int, str]] = []

    @app.job(queue="q", unique=True, retry=Retry(retries=1, base=10, jitter=False))
    def flaky() -> None:
        seen.append((current().attempt, flaky.send()))  # a copy sent while this one runs
        raise RuntimeError("again")

    with JobTester(app) as jobs:
        first = flaky.send()
        report = jobs.run()
        assert len(report.failed) == 1
        assert flaky.send() != first  # failed (kept in the DLQ): the key is free
    assert seen == [(1, first), (2, first)]  # the running attempt, then its retry, held the key


# -- groups ------------------------------------------------------------------------------------


class EnqueueAudit(Middleware):
    """Records the enqueue hooks as they run: ("before" | "after", the envelope's args)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def before_enqueue(self, envelope: Envelope) -> None:
        self.seen.append(("before", envelope.args))

    def after_enqueue(self, envelope: Envelope) -> None:
        self.seen.append(("after", envelope.args))


def test_a_group_callback_gets_the_members_results_in_order_once_all_finished() -> None:
    app = make_app()
    calls: list[tuple[list[Any], str]] = []

    @app.job(queue="q")
    def square(n: int) -> int:
        return n * n

    @app.job(queue="done")
    def total(results: list[int], label: str) -> None:
        calls.append((results, label))

    enqueued = EnqueueAudit()
    app.middleware.append(enqueued)
    with JobTester(app) as jobs:
        app.group(*(square.s(n) for n in range(5))).then(total.s("squares")).send()
        assert jobs.queued("done") == []  # held by the broker until every member reported
        # The members and the held callback go out in one broker step: every "before" hook,
        # then every "after".
        sent = [(n,) for n in range(5)] + [("squares",)]
        assert enqueued.seen == [("before", args) for args in sent] + [("after", args) for args in sent]
        jobs.run(raise_errors=True)
    assert calls == [([0, 1, 4, 9, 16], "squares")]


def test_a_failed_member_keeps_the_callback_as_failed_unless_failures_are_allowed() -> None:
    app = make_app()
    calls: list[list[Any]] = []

    @app.job(queue="q", retries=0)
    def maybe(n: int) -> int:
        if n == 1:
            raise ValueError("one is bad")
        return n

    @app.job(queue="done")
    def collect(results: list[Any]) -> None:
        calls.append(results)

    with JobTester(app) as jobs:
        app.group(maybe.s(0), maybe.s(1), maybe.s(2)).then(collect.s()).send()
        jobs.run()
        (kept,) = jobs.queued("DLQ.done")
        assert isinstance(kept, Envelope)
        assert kept.job == collect.name
        assert kept.args == ([0, None, 2],)  # retried by `queueit failed retry`, it runs with these
        assert "member(s) 1 failed" in kept.errors[-1]["message"]
        assert kept.errors[-1]["type"] == "queueit.jobs.workflows.GroupFailed"
        assert calls == []
        app.group(maybe.s(1), maybe.s(5)).then(collect.s(), allow_failures=True).send()
        jobs.run()
    assert calls == [[None, 5]]


def test_a_group_without_a_callback_only_sends_its_members() -> None:
    app = make_app()

    @app.job(queue="q")
    def noop(n: int) -> None: ...

    enqueued = EnqueueAudit()
    app.middleware.append(enqueued)
    with JobTester(app) as jobs:
        app.group(noop.s(1), noop.s(2)).send()
        assert len(jobs.queued("q")) == 2
        # One broker step for all members: every hook before it, every one after.
        assert enqueued.seen == [("before", (1,)), ("before", (2,)), ("after", (1,)), ("after", (2,))]
    with pytest.raises(ValueError, match="at least one member"):
        app.group()


def test_a_group_callback_needs_a_transport_with_groups() -> None:
    app = App("amqp://guest:guest@127.0.0.1:1/")  # nothing listens there: a connection would fail

    @app.job(queue="q")
    def noop(n: int) -> None: ...

    with pytest.raises(Unsupported, match="group"):
        app.group(noop.s(1)).then(noop.s()).send()  # the results fill n
    app.close()


def test_producers_of_closed_event_loops_are_forgotten() -> None:
    app = make_app()

    @app.job(queue="q")
    def noop() -> None: ...

    with JobTester(app) as jobs:
        for _ in range(5):
            asyncio.run(noop.asend())  # each run's loop closes without aclose()
        assert len(app._producers) == 1  # only the last loop's, until another loop sends
        assert len(jobs.queued("q")) == 5
