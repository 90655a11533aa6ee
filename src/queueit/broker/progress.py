"""Job progress: the last report of each job, kept by the broker and readable by job id.

``SEND /queueit/progress`` with ``job-id: ID`` and a UTF-8 body (a job framework's JSON:
percent, note...) stores the body as the job's latest progress and publishes it to the
topic ``/topic/queueit.progress.ID``, so a UI can follow a job live (any STOMP client,
over TCP or WebSocket) or read where it stands. The same SEND with a ``reply-to`` header
instead reads it: the reply is JSON ``{"ok": true, "found": bool, "body": text,
"updated": epoch ms}``.

Permissions are those of the topic: reporting needs ``write`` on
``/topic/queueit.progress.ID``, reading needs ``read`` on it.

Bounds: a report is kept for ``retain`` ms (default :data:`DEFAULT_RETAIN_MS`, at most
:data:`MAX_RETAIN_MS`) after its last update, bodies are at most :data:`MAX_BODY` bytes, and
at most :data:`MAX_JOBS` jobs are kept (the least recently updated go first), so a flood of
reports costs bounded memory and disk.

Durability: each report is a :class:`~queueit.broker.storage.Record`, written with the next
journal batch (a report without a receipt waits for no fsync: losing the last report of a
job in a crash is harmless, the next one replaces it).

Ownership: the core's one :class:`ProgressTable`, on the event-loop thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .storage import MessageStore, Record

NAMESPACE = "progress"
TOPIC_PREFIX = "queueit.progress."
MAX_BODY = 16 * 1024
MAX_JOBS = 100_000
DEFAULT_RETAIN_MS = 86_400_000  # a day
MAX_RETAIN_MS = 7 * 86_400_000


@dataclass(slots=True)
class Report:
    body: bytes
    updated: int  # epoch ms
    until: int  # epoch ms it is forgotten at


class ProgressTable:
    """The latest report of each job, oldest update first."""

    def __init__(self, store: MessageStore, max_jobs: int = MAX_JOBS) -> None:
        self._store = store
        self.max_jobs = max_jobs
        self._reports: dict[str, Report] = {}

    def __len__(self) -> int:
        return len(self._reports)

    def load(self, records: dict[str, Record]) -> None:
        loaded = []
        for job_id, record in records.items():
            updated, _, body = record.value.partition(b"\n")
            loaded.append((int(updated), job_id, Report(body, int(updated), record.until)))
        for _, job_id, report in sorted(loaded):
            self._reports[job_id] = report

    def set(self, job_id: str, body: bytes, now: int, retain_ms: int) -> None:
        report = Report(body, now, now + retain_ms)
        self._reports.pop(job_id, None)  # to the end: the most recently updated
        self._reports[job_id] = report
        self._store.put_record(NAMESPACE, job_id, Record(b"%d\n" % now + body, report.until))
        while len(self._reports) > self.max_jobs:
            self._forget(next(iter(self._reports)))

    def get(self, job_id: str, now: int) -> Report | None:
        report = self._reports.get(job_id)
        if report is not None and report.until <= now:
            self._forget(job_id)
            return None
        return report

    def answer(self, job_id: str, now: int) -> bytes:
        """The reply to a read (see the module doc)."""
        report = self.get(job_id, now)
        if report is None:
            return json.dumps({"ok": True, "found": False}).encode()
        text = report.body.decode()  # checked UTF-8 when it was reported
        return json.dumps({"ok": True, "found": True, "body": text, "updated": report.updated}).encode()

    def sweep(self, now: int) -> None:
        """Forget the oldest reports past their time, up to the first one that is not.

        A report with a short ``retain`` behind one with a long one waits for that one (or
        for a read, or for :data:`MAX_JOBS`): cheap, and reads never see it anyway."""
        while self._reports:
            job_id, report = next(iter(self._reports.items()))
            if report.until > now:
                return
            self._forget(job_id)

    def _forget(self, job_id: str) -> None:
        del self._reports[job_id]
        self._store.delete_record(NAMESPACE, job_id)
