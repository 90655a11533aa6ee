"""Job progress on the broker (``SEND /queueit/progress``), on the core with a fake clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from queueit.broker.auth import Permissions, User
from queueit.broker.core import BrokerCore, SessionState
from queueit.broker.errors import AccessDenied, InvalidHeader
from queueit.broker.progress import DEFAULT_RETAIN_MS, MAX_BODY
from queueit.stomp import Send

from .helpers import RecordingOutlet, connect, send, subscribe
from .test_delivery import make, open_durable, pump


def report(job_id: str, body: bytes, **headers: str) -> Send:
    return send("/queueit/progress", body, job_id=job_id, **headers)


def read(core: BrokerCore, s: SessionState, out: RecordingOutlet, job_id: str) -> dict[str, Any]:
    core.handle(s, send("/queueit/progress", b"", job_id=job_id, reply_to="/temp-queue/p"))
    reply: dict[str, Any] = json.loads(out.take()[-1].message.body)
    return reply


def test_a_report_is_published_on_the_jobs_topic_and_the_latest_is_readable() -> None:
    core, clock = make()
    worker, _ = connect(core)
    ui, ui_out = connect(core)
    core.handle(ui, subscribe("/topic/queueit.progress.*", "all"))
    core.handle(worker, report("job-1", b'{"percent": 10}'))
    clock.at(5)
    core.handle(worker, report("job-1", b'{"percent": 60}', x_extra="kept"))
    followed = ui_out.take()
    assert [d.message.body for d in followed] == [b'{"percent": 10}', b'{"percent": 60}']
    assert ("x-extra", "kept") in followed[1].message.headers
    assert followed[1].message.destination == "/topic/queueit.progress.job-1"
    reader, out = connect(core)
    assert read(core, reader, out, "job-1") == {
        "ok": True, "found": True, "body": '{"percent": 60}', "updated": clock.ms,
    }  # fmt: skip
    assert read(core, reader, out, "job-2") == {"ok": True, "found": False}


def test_a_report_is_forgotten_after_its_retain_time() -> None:
    core, clock = make()
    worker, _ = connect(core)
    reader, out = connect(core)
    core.handle(worker, report("short", b"1", retain="1000"))
    core.handle(worker, report("day", b"2"))
    clock.at(1_000)
    assert read(core, reader, out, "short")["found"] is False
    clock.at(DEFAULT_RETAIN_MS - 1)
    assert read(core, reader, out, "day")["found"] is True
    clock.at(DEFAULT_RETAIN_MS)
    core.tick()
    assert len(core.progress) == 0


def test_the_table_keeps_the_most_recently_updated_jobs_within_its_bound() -> None:
    core, _ = make()
    core.progress.max_jobs = 3
    worker, _ = connect(core)
    reader, out = connect(core)
    for job in ("a", "b", "c"):
        core.handle(worker, report(job, b"x"))
    core.handle(worker, report("a", b"again"))  # a is now the most recent
    core.handle(worker, report("d", b"x"))
    assert len(core.progress) == 3
    assert read(core, reader, out, "b")["found"] is False
    assert read(core, reader, out, "a")["body"] == "again"


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        ({}, b"x", "needs the job-id header"),
        ({"job-id": "j" * 256}, b"x", "needs the job-id header"),
        ({"job-id": "j"}, b"\xff", "must be UTF-8"),
        ({"job-id": "j"}, b"x" * (MAX_BODY + 1), "at most"),
        ({"job-id": "j", "retain": "0"}, b"x", "retain must be an integer"),
    ],
)
def test_bad_reports_are_refused(headers: dict[str, str], body: bytes, problem: str) -> None:
    core, _ = make()
    worker, _ = connect(core)
    with pytest.raises(InvalidHeader, match=problem):
        core.handle(
            worker,
            Send("/queueit/progress", {"destination": "/queueit/progress", **headers}, body, None, None),
        )
    assert len(core.progress) == 0


def test_reporting_and_reading_need_the_topics_permissions() -> None:
    core, _ = make()
    writer = User("w", "", Permissions(read=(), write=("/topic/queueit.progress.*",), admin=()))
    reader = User("r", "", Permissions(read=("/topic/queueit.progress.mine",), write=(), admin=()))
    w, _ = connect(core, writer)
    r, out = connect(core, reader)
    core.handle(w, report("mine", b"1"))
    with pytest.raises(AccessDenied):
        core.handle(w, send("/queueit/progress", b"", job_id="mine", reply_to="/temp-queue/p"))
    assert read(core, r, out, "mine")["found"] is True
    with pytest.raises(AccessDenied):
        read(core, r, out, "theirs")
    with pytest.raises(AccessDenied):
        core.handle(r, report("mine", b"2"))


def test_reports_survive_a_restart(tmp_path: Path) -> None:
    clock = make()[1]
    core, store = open_durable(tmp_path, clock)
    worker, _ = connect(core)
    core.handle(worker, report("job-1", b"first"))
    core.handle(worker, report("job-2", b"other", retain="1000"))
    core.handle(worker, report("job-1", b"latest"))
    store.flush()
    store.close()
    clock.at(2_000)
    core, store = open_durable(tmp_path, clock)
    try:
        pump(core, store)
        reader, out = connect(core)
        assert read(core, reader, out, "job-1")["body"] == "latest"
        assert read(core, reader, out, "job-2")["found"] is False  # its time was up
    finally:
        store.close()
