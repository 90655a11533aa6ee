"""The running job, as its code sees it: ``queueit.jobs.current()``.

Set by the worker around each attempt (in the job's thread for sync jobs, in its task for
async ones); outside a job :func:`current` raises ``LookupError``.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..transports import Delivery
from .envelope import Envelope

if TYPE_CHECKING:
    from .worker import Worker


@dataclass(frozen=True, slots=True)
class JobContext:
    """The job now running: its envelope (id, attempt, trace id, headers) and delivery."""

    envelope: Envelope
    delivery: Delivery
    worker: Worker

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
