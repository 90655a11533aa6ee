"""The running job, as its code sees it: ``queueit.jobs.current()``.

Set by the worker around each attempt (in the job's thread for sync jobs, in its task for
async ones); outside a job :func:`current` raises ``LookupError``.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..transports import Delivery, Transport, TransportError, Unsupported
from .envelope import Envelope

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("queueit.jobs")
#: The longest progress note kept.
MAX_NOTE = 1_000


@dataclass(frozen=True, slots=True)
class Progress:
    """A job's latest progress report, as :meth:`queueit.App.progress` reads it.

    Attributes:
        job_id: the job's id.
        job: the job's name.
        percent: 0-100.
        note: what it is doing, in words.
        attempt: the attempt that reported it (1 for the first).
        at: when it was reported, epoch seconds.
    """

    job_id: str
    job: str
    percent: float
    note: str
    attempt: int
    at: float

    def to_json(self) -> bytes:
        document = {
            "id": self.job_id, "job": self.job, "percent": self.percent, "note": self.note,
            "attempt": self.attempt, "at": round(self.at * 1000),
        }  # fmt: skip
        return json.dumps(document, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Progress:
        """Raises ValueError for a report that is not one of ours."""
        d: Any = json.loads(body)
        try:
            return cls(str(d["id"]), str(d["job"]), float(d["percent"]), str(d.get("note", "")),
                       int(d.get("attempt", 1)), int(d["at"]) / 1000)  # fmt: skip
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a progress report: {exc}") from None


@dataclass(frozen=True, slots=True)
class JobContext:
    """The job now running: its envelope (id, attempt, trace id, headers) and delivery."""

    envelope: Envelope
    delivery: Delivery
    worker: Worker
    transport: Transport
    loop: asyncio.AbstractEventLoop
    #: Reports not sent yet; made by the loop on the first report (owned by the loop).
    _outbox: _Outbox | None = field(default=None, repr=False, compare=False)

    def progress(self, percent: float, note: str = "") -> None:
        """Report how far the job is (0-100) and what it does; callable from sync and async jobs.

        The broker keeps the latest report per job id (``App.progress(job_id)`` reads it) and
        publishes each on the topic ``/topic/queueit.progress.<job id>`` for a UI to follow.
        Reports are sent in the background and never fail the job: one that cannot be sent
        is logged. While one is being sent, newer ones replace each other, so a job that
        reports in a tight loop costs one send at a time, and its last report always goes
        out. A transport that keeps no progress (``amqp://``) refuses at once.

        Raises:
            ValueError: ``percent`` is not within 0-100.
            TypeError: ``note`` is not a string.
            Unsupported: the transport keeps no progress.
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be from 0 to 100, got {percent}")
        if not isinstance(note, str):
            raise TypeError(f"the progress note must be a string, not {type(note).__name__}")
        if not self.transport.capabilities.progress:
            raise Unsupported("this transport keeps no job progress; use queueit:// or memory://")
        report = Progress(
            self.id, self.envelope.job, float(percent), note[:MAX_NOTE], self.attempt, time.time()
        )
        # From the loop (an async job) or a pool thread (a sync job) alike: the loop sends it.
        self.loop.call_soon_threadsafe(self._offer, report.to_json())

    def _offer(self, body: bytes) -> None:  # on the loop
        outbox = self._outbox
        if outbox is None:
            outbox = _Outbox()
            object.__setattr__(self, "_outbox", outbox)  # frozen, but this field is the loop's
        outbox.pending = body
        if not outbox.sending:
            outbox.sending = True
            self.worker.in_background(self._drain(outbox))

    async def _drain(self, outbox: _Outbox) -> None:
        try:
            while (body := outbox.pending) is not None:
                outbox.pending = None
                try:
                    await self.transport.report_progress(self.id, body)
                except (TransportError, ValueError) as exc:  # ValueError: what the transport refuses
                    log.warning("job=%s id=%s progress not sent: %s", self.envelope.job, self.id, exc)
        finally:
            outbox.sending = False

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def attempt(self) -> int:
        """This attempt's number, 1 for the first."""
        return self.envelope.attempt + 1


current_job: contextvars.ContextVar[JobContext] = contextvars.ContextVar("queueit_current_job")


def current() -> JobContext:
    """The job running in this thread or task.

    Raises:
        LookupError: no job is running here.
    """
    return current_job.get()


class _Outbox:
    """A job's progress reports on their way: the newest not yet sent, and whether a send is
    under way. Only the worker's loop touches it."""

    __slots__ = ("pending", "sending")

    def __init__(self) -> None:
        self.pending: bytes | None = None
        self.sending = False
