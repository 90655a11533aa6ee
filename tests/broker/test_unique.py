"""Unique keys (``unique-key`` / ``unique-for`` / ``unique-ref``), on the core with a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from queueit.broker.errors import InvalidHeader
from queueit.broker.unique import MAX_KEY_LENGTH, MAX_UNIQUE_FOR_MS
from queueit.stomp import Send

from .helpers import ack, begin, commit, connect, nack, send, subscribe
from .test_delivery import CI, make, open_durable, policy, pump

DUPLICATE = {"unique-duplicate": "true"}


def unique_send(key: str, body: bytes = b"x", **headers: str) -> Send:
    return send("/queue/q", body, unique_key=key, receipt="r", **headers)


def test_a_second_send_with_a_held_key_is_kept_out_and_its_receipt_names_the_holder() -> None:
    core, _ = make()
    producer, _ = connect(core)
    assert core.handle(producer, unique_send("k", b"1", unique_ref="job-1")) is None
    assert core.handle(producer, unique_send("k", b"2", unique_ref="job-2")) == {
        **DUPLICATE,
        "unique-ref": "job-1",
    }
    assert core.handle(producer, unique_send("other", b"3")) is None
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    assert out.bodies() == [b"1", b"3"]
    assert core.queues["q"].unique is not None
    assert core.queues["q"].unique.kept_out == 1


def test_the_ref_defaults_to_the_holders_message_id() -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, unique_send("k"))
    held_by = out.take()[0].message.id
    assert core.handle(producer, unique_send("k")) == {**DUPLICATE, "unique-ref": held_by}


def test_the_key_is_held_while_delivered_and_through_a_requeue_and_freed_by_the_ack() -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, unique_send("k", b"1"))
    first = out.take()[0].message
    assert core.handle(producer, unique_send("k", b"2")) is not None
    core.handle(consumer, nack(first.id))  # back to the queue: still the holder
    again = out.take()[0].message
    assert again is first
    assert core.handle(producer, unique_send("k", b"3")) is not None
    core.handle(consumer, ack(first.id))
    assert core.handle(producer, unique_send("k", b"4")) is None
    assert out.bodies() == [b"4"]


def test_a_delayed_message_holds_its_key() -> None:
    core, _clock = make()
    producer, _ = connect(core)
    core.handle(producer, unique_send("k", delay="1000"))
    assert core.handle(producer, unique_send("k")) is not None


def test_unique_for_keeps_the_key_after_the_message_is_gone_until_its_time_is_up() -> None:
    core, clock = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))  # auto ack: gone at once
    core.handle(producer, unique_send("tick", b"1", unique_for="60000"))
    assert out.bodies() == [b"1"]
    clock.at(59_999)
    assert core.handle(producer, unique_send("tick", b"2")) is not None
    clock.at(60_000)
    assert core.handle(producer, unique_send("tick", b"3")) is None
    assert out.bodies() == [b"1", b"3"]


def test_the_jobs_own_retry_takes_over_a_time_hold_others_stay_out() -> None:
    # A periodic tick (unique-for 60 s) whose job failed: its retry carries the same ref and
    # takes the key back; another scheduler's copy of the tick is still kept out.
    core, clock = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))  # auto ack: gone at once
    core.handle(producer, unique_send("tick", b"1", unique_ref="job-1", unique_for="60000"))
    clock.at(1_000)
    assert core.handle(producer, unique_send("tick", b"retry", unique_ref="job-1")) is None
    assert core.handle(producer, unique_send("tick", b"2", unique_ref="job-2")) == {
        **DUPLICATE,
        "unique-ref": "job-1",
    }
    clock.at(59_999)  # the retry ran and left; the original time still holds the key
    assert core.handle(producer, unique_send("tick", b"3", unique_ref="job-3")) is not None
    clock.at(60_000)
    assert core.handle(producer, unique_send("tick", b"4", unique_ref="job-4")) is None
    assert out.bodies() == [b"1", b"retry", b"4"]


def test_a_sweep_forgets_time_holds_whose_time_is_up() -> None:
    core, clock = make()
    producer, _ = connect(core)
    consumer, _ = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    for i in range(5):
        core.handle(producer, unique_send(f"k{i}", unique_for="1000"))
    keys = core.queues["q"].unique
    assert keys is not None
    assert len(keys.holds) == 5
    clock.at(2_000)
    core.tick()
    assert keys.holds == {}


def test_an_ack_and_a_retry_with_the_same_key_in_one_commit_hand_the_key_over() -> None:
    core, _ = make()
    producer, _ = connect(core)
    worker, out = connect(core)
    core.handle(worker, subscribe("/queue/q", "s", CI))
    core.handle(producer, unique_send("k", b"attempt-1"))
    first = out.take()[0].message
    # The retry is buffered before the ACK, as a client may order them: the ACK still applies first.
    core.handle(worker, begin("t"))
    core.handle(worker, send("/queue/q", b"attempt-2", tx="t", unique_key="k"))
    core.handle(worker, ack(first.id, tx="t"))
    core.handle(worker, commit("t"))
    assert out.bodies() == [b"attempt-2"]
    assert core.handle(producer, unique_send("k")) is not None


def test_a_dead_lettered_message_frees_its_key_and_its_dead_letter_holds_nothing() -> None:
    core, _ = make()
    producer, _ = connect(core)
    worker, out = connect(core)
    core.handle(worker, subscribe("/queue/q", "s", CI))
    core.handle(producer, unique_send("k", b"1"))
    core.handle(worker, nack(out.take()[0].message.id, requeue="false"))
    assert len(core.queues["DLQ.q"]) == 1
    assert core.handle(producer, unique_send("k", b"2")) is None
    assert core.queues["DLQ.q"].unique is None


def test_a_purge_frees_the_keys_of_what_it_drops_but_not_of_what_is_delivered() -> None:
    core, _ = make()
    producer, _ = connect(core)
    worker, _out = connect(core)
    core.handle(worker, subscribe("/queue/q", "s", CI, prefetch_count="1"))
    core.handle(producer, unique_send("delivered"))
    core.handle(producer, unique_send("ready"))
    assert core.queues["q"].purge() == 1
    assert core.handle(producer, unique_send("ready")) is None
    assert core.handle(producer, unique_send("delivered")) is not None


def test_each_queue_a_topic_routes_to_has_its_own_holds() -> None:
    core, _ = make()
    producer, _ = connect(core)
    a, out_a = connect(core)
    b, out_b = connect(core)
    core.handle(a, subscribe("/topic/t", "s", CI))
    core.handle(producer, send("/topic/t", b"1", unique_key="k", receipt="r"))
    core.handle(b, subscribe("/topic/t", "s", CI))
    # a's copy holds k in a's queue; b's queue has no hold yet.
    assert core.handle(producer, send("/topic/t", b"2", unique_key="k", receipt="r")) is None
    assert out_a.bodies() == [b"1"]
    assert out_b.bodies() == [b"2"]
    assert core.handle(producer, send("/topic/t", b"3", unique_key="k", receipt="r")) == {
        **DUPLICATE,
        "unique-ref": out_b.deliveries[0].message.id,
    }


def test_deleting_a_queue_drops_its_holds() -> None:
    core, _ = make()
    producer, _ = connect(core)
    core.handle(producer, unique_send("k"))
    core.delete_queue(core.queues["q"])
    assert core.handle(producer, unique_send("k")) is None


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"unique-key": ""}, "unique-key must be 1-255"),
        ({"unique-key": "k" * (MAX_KEY_LENGTH + 1)}, "unique-key must be 1-255"),
        ({"unique-key": "k", "unique-ref": ""}, "unique-ref must be 1-255"),
        ({"unique-key": "k", "unique-for": "-1"}, "unique-for must be an integer"),
        ({"unique-key": "k", "unique-for": str(MAX_UNIQUE_FOR_MS + 1)}, "unique-for must be an integer"),
    ],
)
def test_bad_unique_headers_are_refused_before_anything_happens(
    headers: dict[str, str], problem: str
) -> None:
    core, _ = make()
    producer, _ = connect(core)
    with pytest.raises(InvalidHeader, match=problem):
        core.handle(producer, Send("/queue/q", {"destination": "/queue/q", **headers}, b"x", None, None))
    assert "q" not in core.queues or len(core.queues["q"]) == 0


# -- durability -------------------------------------------------------------------------------


def test_a_hold_survives_a_restart_with_its_message_and_goes_with_it(tmp_path: Path) -> None:
    core, store = open_durable(tmp_path, make()[1])
    clock = core.clock
    producer, _ = connect(core)
    core.handle(producer, unique_send("k", b"1", persistent="true", unique_ref="job-1"))
    store.flush()
    store.close()
    core, store = open_durable(tmp_path, clock)  # type: ignore[arg-type]
    try:
        producer, _ = connect(core)
        assert core.handle(producer, unique_send("k", b"2", persistent="true")) == {
            **DUPLICATE,
            "unique-ref": "job-1",
        }
        worker, out = connect(core)
        core.handle(worker, subscribe("/queue/q", "s", CI))
        pump(core, store)
        core.handle(worker, ack(out.take()[0].message.id))
        store.flush()
    finally:
        store.close()
    core, store = open_durable(tmp_path, clock)  # type: ignore[arg-type]
    try:
        producer, _ = connect(core)
        assert core.handle(producer, unique_send("k", b"3", persistent="true")) is None
    finally:
        store.close()


def test_a_hold_whose_message_was_not_persistent_is_gone_after_a_restart(tmp_path: Path) -> None:
    core, store = open_durable(tmp_path, make()[1])
    clock = core.clock
    producer, _ = connect(core)
    core.handle(producer, unique_send("k"))
    store.flush()
    store.close()
    core, store = open_durable(tmp_path, clock)  # type: ignore[arg-type]
    try:
        producer, _ = connect(core)
        assert core.handle(producer, unique_send("k")) is None
    finally:
        store.close()


def test_a_time_hold_survives_a_restart_until_its_time_is_up(tmp_path: Path) -> None:
    clock = make()[1]
    core, store = open_durable(tmp_path, clock, policy("q"))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    core.handle(producer, unique_send("tick", persistent="true", unique_for="60000"))
    assert len(out.take()) == 1
    store.flush()
    store.close()
    clock.at(30_000)
    core, store = open_durable(tmp_path, clock)
    try:
        producer, _ = connect(core)
        assert core.handle(producer, unique_send("tick", persistent="true")) is not None
    finally:
        store.flush()
        store.close()
    clock.at(60_000)
    core, store = open_durable(tmp_path, clock)
    try:
        producer, _ = connect(core)
        assert core.handle(producer, unique_send("tick", persistent="true")) is None
    finally:
        store.close()
