"""Failed jobs: what ``queueit failed list|show|retry|delete|purge`` reads and changes.

A failed job is a dead letter of a job queue: out of retries (reason ``failed``; its envelope
holds every error with its traceback), an invalid message (``invalid``: the raw bytes as
received), or one the broker gave up on (``max-deliveries``, ``expired``, ...). They wait in
the queue's dead-letter queue, on every transport, until retried or deleted.

Retrying moves a dead letter back to its queue: one atomic broker step per message where the
transport settles atomically (queueit's broker), publish-then-ack elsewhere (never lost). A
failed job's envelope is stored with ``attempt`` 0, so a retried job gets its retries afresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..transports import StoredMessage, Transport
from .envelope import Envelope, InvalidMessage, Plain, decode

#: Dead letters read per queue at most.
MAX_LISTED = 10_000


@dataclass(frozen=True, slots=True)
class FailedJob:
    """One dead letter, read as a job where it is one."""

    queue: str
    message: StoredMessage
    envelope: Envelope | None  # None: a plain or undecodable message

    @property
    def id(self) -> str:
        return self.message.message_id

    @property
    def job(self) -> str:
        if self.envelope is not None:
            return self.envelope.job
        return self.message.headers.get("job", "-")

    @property
    def last_error(self) -> dict[str, Any] | None:
        if self.envelope is None or not self.envelope.errors:
            return None
        return dict(self.envelope.errors[-1])

    def summary(self) -> dict[str, Any]:
        # A failed job's last error is the one its worker recorded; any other dead letter's is
        # why it was dead-lettered (an invalid message's errors are whatever its sender wrote).
        error = self.last_error if self.message.reason == "failed" else None
        return {
            "id": self.id,
            "queue": self.queue,
            "job": self.job,
            "job_id": self.envelope.id if self.envelope is not None else None,
            "reason": self.message.reason,
            "attempts": len(self.envelope.errors) if self.envelope is not None else 0,
            "error": (
                f"{error.get('type', '?')}: {error.get('message', '')}"
                if error
                else self.message.headers.get("x-dead-letter-error")
            ),
            "time": int(self.message.headers.get("x-dead-letter-time", "0") or 0),
        }

    def detail(self) -> dict[str, Any]:
        found = self.summary()
        if self.envelope is not None:
            found["args"] = list(self.envelope.args)
            found["kwargs"] = dict(self.envelope.kwargs)
            found["errors"] = [dict(e) for e in self.envelope.errors]
            found["trace_id"] = self.envelope.trace_id
        found["headers"] = dict(self.message.headers)
        found["body"] = self.message.body.decode("utf-8", "replace")
        return found


def read(message: StoredMessage, queue: str) -> FailedJob:
    try:
        decoded: Envelope | Plain | None = decode(message.body)
    except InvalidMessage:
        decoded = None
    return FailedJob(queue, message, decoded if isinstance(decoded, Envelope) else None)


async def list_failed(
    transport: Transport, queues: Sequence[str], *, job: str | None = None, limit: int | None = None
) -> list[FailedJob]:
    """Dead letters of ``queues`` (of job ``job`` only, if given), oldest first per queue,
    among the oldest :data:`MAX_LISTED` of each queue; at most ``limit`` in all."""
    found: list[FailedJob] = []
    for queue in queues:
        for message in await transport.dead_letters(queue, MAX_LISTED):
            failed = read(message, queue)
            if job is None or failed.job == job:
                found.append(failed)
            if limit is not None and len(found) >= limit:
                return found
    return found


async def find(transport: Transport, queues: Sequence[str], message_id: str) -> FailedJob | None:
    """The dead letter with ``message_id`` (or whose job has that id), among the oldest
    :data:`MAX_LISTED` of each queue."""
    for queue in queues:  # one queue at a time: each has its own window
        for failed in await list_failed(transport, [queue]):
            if failed.id == message_id or (failed.envelope is not None and failed.envelope.id == message_id):
                return failed
    return None


async def retry(transport: Transport, queues: Sequence[str], selected: Sequence[FailedJob] | None) -> int:
    """Move ``selected`` (None: every dead letter of ``queues``) back to their queues."""
    if selected is None:
        return sum([await transport.redrive(queue, None) for queue in queues])
    return sum([await transport.redrive(f.queue, f.id) for f in selected])


async def retry_or_delete_job(
    transport: Transport, queues: Sequence[str], job: str, *, delete_them: bool
) -> int:
    """Retry (or delete) every dead letter of job ``job`` in ``queues``, each once.

    A look at a queue sees its oldest :data:`MAX_LISTED` dead letters; those of ``job`` among
    them are handled, which makes room for more, so it looks again until a look finds none it
    has not handled. A retried job that fails again at once is back among the dead letters
    before the next look, with the same job id: it is not retried again (it would be, for
    ever, while a worker runs), nor counted twice.
    """
    act = delete if delete_them else retry
    handled: set[str] = set()
    total = 0
    while True:
        found = [f for f in await list_failed(transport, queues, job=job) if _identity(f) not in handled]
        if not found:
            return total
        handled.update(_identity(f) for f in found)
        done = await act(transport, queues, found)
        total += done
        if done == 0:  # only dead letters that could not be moved: nothing more to do
            return total


def _identity(failed: FailedJob) -> str:
    """What stays the same when a job fails again: its job id (else the dead letter's id)."""
    return failed.envelope.id if failed.envelope is not None else failed.id


async def delete(transport: Transport, queues: Sequence[str], selected: Sequence[FailedJob] | None) -> int:
    """Delete ``selected`` (None: every dead letter of ``queues``)."""
    if selected is None:
        return sum([await transport.delete_dead_letters(queue, None) for queue in queues])
    return sum([await transport.delete_dead_letters(f.queue, f.id) for f in selected])
