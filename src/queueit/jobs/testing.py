"""Testing helpers: send jobs in a test, see what was sent, run them, check the outcome.

::

    from queueit.jobs.testing import JobTester

    def test_signup_sends_a_welcome_email():
        with JobTester(app) as jobs:
            signup("a@example.com")                      # code that calls send_email.send(...)
            assert [e.kwargs for e in jobs.sent(send_email)] == [{"to": "a@example.com"}]
            report = jobs.run()                          # runs every queued job, retries included
            assert report.done == 1 and not report.failed

Inside the ``with`` block the app sends through a private ``memory://`` broker whose clock
jumps over delays and retry back-offs, so a test never sleeps for them. Jobs run in a real
:class:`~queueit.jobs.Worker` (the same decoding, validation, retries, dead-lettering), one at
a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from ..transports import Transport
from ..transports.memory import MemoryBroker, MemoryTransport
from .app import App
from .definitions import Handler, Job
from .envelope import Envelope, Plain, decode
from .middleware import Middleware
from .worker import Exit, Worker, WorkerSettings


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class RunReport:
    """What :meth:`JobTester.run` did.

    Attributes:
        done: attempts that succeeded.
        retried: attempts that failed and were scheduled again.
        failed: envelopes of jobs out of retries (kept as failed jobs).
        invalid: raw bodies of messages that could not become jobs, with the reason.
        errors: every exception an attempt raised, in order.
    """

    done: int = 0
    retried: int = 0
    failed: list[Envelope] = field(default_factory=list)
    invalid: list[tuple[bytes, str]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


class _Recorder(Middleware):
    def __init__(self, report: RunReport) -> None:
        self.report = report

    def after_process(self, envelope: Envelope, error: BaseException | None) -> None:
        if error is None:
            self.report.done += 1
        else:
            self.report.errors.append(error)

    def on_retry(self, envelope: Envelope, error: BaseException, delay: float) -> None:
        self.report.retried += 1

    def on_fail(self, envelope: Envelope, error: BaseException) -> None:
        self.report.failed.append(envelope)

    def on_invalid(self, raw: bytes, reason: str) -> None:
        self.report.invalid.append((raw, reason))


class JobTester:
    """Swap ``app``'s broker for an in-memory one for the duration of a ``with`` block."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.clock = ManualClock()
        self.broker = MemoryBroker(clock=self.clock, record=True)
        self._saved: Callable[[], Transport] | None = None

    def __enter__(self) -> JobTester:
        self.app.close()
        self._saved = self.app.swap_transport(lambda: MemoryTransport(self.broker))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.app.close()
        if self._saved is not None:
            self.app.swap_transport(self._saved)

    def sent(self, job: Job[..., Any] | Handler | str | None = None) -> list[Envelope | Plain]:
        """Everything sent so far (of ``job``, if given), in order, retries included."""
        name = job if isinstance(job, str) or job is None else job.name
        assert self.broker.published is not None
        found = []
        for _, body, _ in self.broker.published:
            decoded = decode(body)
            if name is None or (isinstance(decoded, Envelope) and decoded.job == name):
                found.append(decoded)
        return found

    def queued(self, queue: str) -> list[Envelope | Plain]:
        """What waits on ``queue`` now (ready first, then delayed)."""
        return [decode(body) for body, _ in self.broker.messages(queue)]

    def run(self, *, raise_errors: bool = False, max_seconds: float = 60.0) -> RunReport:
        """Run queued jobs, and what they send, until nothing is left to run.

        Args:
            raise_errors: re-raise the first exception a job raised (after the run).
            max_seconds: give up (TimeoutError) after this long in real time.
        """
        report = asyncio.run(asyncio.wait_for(self.arun(), max_seconds))
        if raise_errors and report.errors:
            raise report.errors[0]
        return report

    async def arun(self) -> RunReport:
        """:meth:`run` for async tests."""
        report = RunReport()
        recorder = _Recorder(report)
        self.app.middleware.append(recorder)
        settings = WorkerSettings(concurrency=1, shutdown_timeout=0)
        worker = Worker(self.app, settings)
        task = asyncio.ensure_future(worker.run())
        try:
            idle_rounds = 0
            while idle_rounds < 3:  # idle three looks in a row: nothing in flight between them
                await asyncio.sleep(0.005)
                busy, due = self.broker.pending()
                if busy:
                    idle_rounds = 0
                elif due is not None:
                    self.clock.now = max(self.clock.now, due)  # jump over the delay
                    self.broker.wake_all()
                    idle_rounds = 0
                else:
                    idle_rounds += 1
                if task.done():
                    if task.result() is Exit.STOPPED:  # raises what stopped it, if anything did
                        break  # a job stopped the worker
                    # To be replaced (a job overran its timeout in a thread, --max-jobs): a
                    # supervisor would start a fresh process, so a fresh worker goes on.
                    worker = Worker(self.app, settings)
                    task = asyncio.ensure_future(worker.run())
        finally:
            worker.stop()
            await task
            self.app.middleware.remove(recorder)
            await self.app.aclose()
        return report
