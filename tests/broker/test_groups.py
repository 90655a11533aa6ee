"""Groups on the broker (``SEND /queueit/group``): a callback released once every member reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from queueit.broker.auth import Permissions, User
from queueit.broker.errors import AccessDenied, InvalidHeader
from queueit.broker.groups import CONTENT_TYPE, LIFETIME_MS, MAX_RESULT, MAX_RESULTS
from queueit.broker.messages import Message
from queueit.stomp import Send

from .helpers import RecordingOutlet, ack, begin, commit, connect, send, subscribe
from .test_delivery import CI, make, open_durable, pump


def open_group(group_id: str, size: int, body: bytes = b'{"cb": 1}', **headers: str) -> Send:
    return send(
        "/queueit/group", body, group_id=group_id, group_size=str(size), callback="/queue/cb", **headers
    )


def report(
    group_id: str, member: int, result: bytes = b"1", outcome: str = "done", tx: str | None = None
) -> Send:
    return send("/queueit/group", result, tx=tx, group_id=group_id, member=str(member), outcome=outcome)


def released(out: RecordingOutlet) -> tuple[Message, dict[str, Any]]:
    (delivery,) = out.take()
    return delivery.message, json.loads(delivery.message.body)


def test_the_callback_is_released_once_every_member_reported_with_their_outcomes() -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/cb", "s"))
    core.handle(producer, open_group("g1", 3, job="notify"))
    core.handle(producer, report("g1", 2, b'"c"'))
    core.handle(producer, report("g1", 0, b'"a"'))
    core.handle(producer, report("g1", 0, b'"again"'))  # a member done twice counts once
    assert out.take() == []
    core.handle(producer, report("g1", 1, b'{"error": "boom"}', outcome="failed"))
    message, body = released(out)
    headers = dict(message.headers)
    assert (headers["content-type"], headers["group-id"], headers["job"]) == (CONTENT_TYPE, "g1", "notify")
    assert message.persistent
    assert body == {
        "group": "g1",
        "body": '{"cb": 1}',
        "members": [
            {"outcome": "done", "result": '"a"'},
            {"outcome": "failed", "result": '{"error": "boom"}'},
            {"outcome": "done", "result": '"c"'},
        ],
    }
    assert "g1" not in core.groups.groups
    core.handle(producer, report("g1", 1))  # released already: ignored
    assert out.take() == []


def test_a_report_in_a_transaction_counts_at_its_commit_with_the_members_ack() -> None:
    core, _ = make()
    producer, _ = connect(core)
    worker, work = connect(core)
    callback, out = connect(core)
    core.handle(callback, subscribe("/queue/cb", "s"))
    core.handle(worker, subscribe("/queue/work", "w", CI))
    core.handle(producer, open_group("g", 1))
    core.handle(producer, send("/queue/work", b"member"))
    job = work.take()[0].message
    core.handle(worker, begin("t"))
    core.handle(worker, report("g", 0, b"42", tx="t"))
    core.handle(worker, ack(job.id, tx="t"))
    assert out.take() == []
    core.handle(worker, commit("t"))
    assert released(out)[1]["members"] == [{"outcome": "done", "result": "42"}]


def test_results_over_the_groups_budget_arrive_as_null() -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/cb", "s"))
    big = b'"' + b"x" * (MAX_RESULT - 2) + b'"'
    members = MAX_RESULTS // MAX_RESULT + 1
    core.handle(producer, open_group("g", members))
    for i in range(members):
        core.handle(producer, report("g", i, big))
    entries = released(out)[1]["members"]
    assert entries[-1] == {"outcome": "done", "result": None, "dropped": True}
    assert all(e["result"] is not None for e in entries[:-1])


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        ({}, b"", "needs the group-id header"),
        ({"group-id": "g"}, b"", "Open a group with group-size"),
        ({"group-id": "g", "group-size": "1", "callback": "/topic/x"}, b"", "Open a group"),
        ({"group-id": "g", "group-size": "0", "callback": "/queue/cb"}, b"", "group-size must be"),
        ({"group-id": "g", "group-size": "10001", "callback": "/queue/cb"}, b"", "group-size must be"),
        ({"group-id": "g", "member": "0"}, b"", "outcome header"),
        ({"group-id": "g", "member": "0", "outcome": "maybe"}, b"", "outcome header"),
        ({"group-id": "g", "member": "0", "outcome": "done"}, b"\xff", "UTF-8"),
        ({"group-id": "g", "member": "0", "outcome": "done"}, b"x" * (MAX_RESULT + 1), "at most"),
    ],
)
def test_bad_group_frames_are_refused(headers: dict[str, str], body: bytes, problem: str) -> None:
    core, _ = make()
    producer, _ = connect(core)
    with pytest.raises(InvalidHeader, match=problem):
        core.handle(
            producer, Send("/queueit/group", {"destination": "/queueit/group", **headers}, body, None, None)
        )
    assert core.groups.groups == {}


def test_a_group_is_opened_once() -> None:
    core, _ = make()
    producer, _ = connect(core)
    core.handle(producer, open_group("g", 2))
    with pytest.raises(InvalidHeader, match="open already"):
        core.handle(producer, open_group("g", 2))


def test_opening_and_reporting_need_write_on_the_callbacks_queue() -> None:
    core, _ = make()
    allowed = User("a", "", Permissions(read=(), write=("/queue/cb",), admin=("*",)))
    other = User("o", "", Permissions(read=(), write=("/queue/other",), admin=("*",)))
    a, _ = connect(core, allowed)
    o, _ = connect(core, other)
    with pytest.raises(AccessDenied):
        core.handle(o, open_group("g", 1))
    core.handle(a, open_group("g", 1))
    with pytest.raises(AccessDenied):
        core.handle(o, report("g", 0))
    assert "g" in core.groups.groups


def test_a_group_whose_members_never_all_report_is_dropped_after_its_lifetime() -> None:
    core, clock = make()
    producer, _ = connect(core)
    core.handle(producer, open_group("g", 2))
    core.handle(producer, report("g", 0))
    clock.at(LIFETIME_MS)
    core.tick()
    assert core.groups.groups == {}
    assert core.groups.expired == 1


def test_an_open_group_and_its_reports_survive_a_restart(tmp_path: Path) -> None:
    clock = make()[1]
    core, store = open_durable(tmp_path, clock)
    producer, _ = connect(core)
    core.handle(producer, open_group("g", 2, job="notify"))
    core.handle(producer, report("g", 1, b'"b"'))
    store.flush()
    store.close()
    core, store = open_durable(tmp_path, clock)
    try:
        consumer, out = connect(core)
        core.handle(consumer, subscribe("/queue/cb", "s"))
        producer, _ = connect(core)
        core.handle(producer, report("g", 1, b'"twice"'))  # still counted once
        core.handle(producer, report("g", 0, b'"a"'))
        pump(core, store)
        message, body = released(out)
        assert dict(message.headers)["job"] == "notify"
        assert [m["result"] for m in body["members"]] == ['"a"', '"b"']
        store.flush()
    finally:
        store.close()
    core, store = open_durable(tmp_path, clock)
    try:
        assert core.groups.groups == {}  # released: its records went with it
    finally:
        store.close()
