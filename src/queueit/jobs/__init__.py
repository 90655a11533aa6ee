"""Jobs and workers: define work (``@app.job`` or ``Queue`` classes), send it, run it.

See ``docs/jobs.md`` for the guide and ``docs/delivery.md`` for the delivery contract.
"""

from .app import App
from .context import JobContext, Progress, current
from .definitions import Job, Queue, Sender
from .envelope import Envelope, InvalidMessage
from .middleware import Middleware
from .options import FailNow, JobExited, JobOptions, JobTimeout, Retry, RetryLater, SendOptions
from .worker import Exit, Worker, WorkerSettings
from .workflows import Group, GroupFailed

__all__ = [
    "App",
    "Envelope",
    "Exit",
    "FailNow",
    "Group",
    "GroupFailed",
    "InvalidMessage",
    "Job",
    "JobContext",
    "JobExited",
    "JobOptions",
    "JobTimeout",
    "Middleware",
    "Progress",
    "Queue",
    "Retry",
    "RetryLater",
    "SendOptions",
    "Sender",
    "Worker",
    "WorkerSettings",
    "current",
]
