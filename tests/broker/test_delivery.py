"""Delivery semantics of the broker core: delays, NACK delays and dead-lettering, delivery
limits, TTL, priorities, leases, queue limits and redelivery counting.

Driven directly (no sockets), with a millisecond fake clock and recording outlets.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from queueit.broker import dead_letters
from queueit.broker.core import MAX_EPOCH_MS, BrokerCore, SessionState
from queueit.broker.errors import InvalidHeader, QueueFull
from queueit.broker.exchanges import ExchangeType
from queueit.broker.messages import Message
from queueit.broker.queue_settings import MAX_MS, QueuePolicy, QueueSettings, QueueSettingsTable
from queueit.broker.queues import COMPACT_MIN, Queue, Subscription
from queueit.broker.storage import MemoryStore, MessageStore
from queueit.broker.storage.durable import DurableStore
from queueit.stomp import AckMode, Limits

from .helpers import (
    RecordingOutlet,
    ack,
    begin,
    commit,
    connect,
    nack,
    send,
    subscribe,
    unsubscribe,
)

T0 = 1_700_000_000_000  # epoch ms at which every test starts
CI = AckMode.CLIENT_INDIVIDUAL


class MsClock:
    """Epoch time in whole milliseconds.

    It answers seconds with half a millisecond added, so that the core's
    ``int(clock() * 1000)`` is exactly ``ms`` whatever the float rounding: the tests can
    then check deadlines to the millisecond.
    """

    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return (self.ms + 0.5) / 1000

    def at(self, offset_ms: int) -> None:
        """Set the time to ``T0 + offset_ms``."""
        self.ms = T0 + offset_ms


def policy(match: str, **settings: Any) -> QueuePolicy:
    return QueuePolicy(match, QueueSettings(**settings))


def make(
    *policies: QueuePolicy, store: MessageStore | None = None, clock: MsClock | None = None
) -> tuple[BrokerCore, MsClock]:
    clock = clock or MsClock()
    core = BrokerCore(
        store if store is not None else MemoryStore(),
        Limits(),
        clock=clock,
        queue_settings=QueueSettingsTable(policies),
    )
    return core, clock


def tick_at(core: BrokerCore, clock: MsClock, offset_ms: int) -> None:
    clock.at(offset_ms)
    core.tick()


def header(message: Message, name: str) -> str | None:
    values = [v for k, v in message.headers if k == name]
    assert len(values) <= 1, f"header {name} repeated: {values}"
    return values[0] if values else None


def dead_letter_headers(message: Message) -> dict[str, str]:
    return {k: v for k, v in message.headers if k.startswith("x-dead-letter-")}


def drain(core: BrokerCore, queue: str) -> list[Message]:
    """Every ready message of ``queue``, consumed by a throw-away auto-ack subscription."""
    s, out = connect(core)
    core.handle(s, subscribe("/queue/" + queue, "drain"))
    core.close_session(s)
    return [d.message for d in out.take()]


def only(out: RecordingOutlet) -> Message:
    """The one message ``out`` received since the last take."""
    deliveries = out.take()
    assert len(deliveries) == 1, [d.message.body for d in deliveries]
    return deliveries[0].message


def sub_of(s: SessionState, sub_id: str) -> Subscription:
    return s.subscriptions[sub_id]


def queue(core: BrokerCore, name: str) -> Queue:
    return core.queues[name]


# -- 1. delayed delivery ---------------------------------------------------------------------


def test_delay_holds_a_message_until_due_then_delivers_it_to_a_subscribed_consumer() -> None:
    core, clock = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    core.handle(producer, send("/queue/q", b"later", delay="1000"))
    core.handle(producer, send("/queue/q", b"now"))
    assert out.bodies() == [b"now"]
    out.take()
    q = queue(core, "q")
    assert len(q) == 0  # a delayed message is not ready: not counted
    assert q.store.scheduled == 1
    tick_at(core, clock, 999)
    assert out.take() == []
    tick_at(core, clock, 1000)
    message = only(out)
    assert message.body == b"later"
    assert not message.redelivered
    assert message.deliveries == 1
    assert q.store.scheduled == 0
    tick_at(core, clock, 5000)
    assert out.take() == []  # delivered once only


def test_deliver_at_is_absolute_and_a_consumer_subscribing_after_due_gets_it() -> None:
    core, clock = make()
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"at", deliver_at=str(T0 + 500)))
    consumer, out = connect(core)
    tick_at(core, clock, 499)
    assert len(queue(core, "q")) == 0
    tick_at(core, clock, 700)  # due passed with nobody subscribed: it waits in the queue, ready
    assert len(queue(core, "q")) == 1
    core.handle(consumer, subscribe("/queue/q", "s"))
    assert out.bodies() == [b"at"]


def test_a_due_delayed_message_is_not_delivered_before_the_tick_that_fires_it() -> None:
    core, clock = make()
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"d", delay="100"))
    clock.at(5000)  # well past due, but no tick yet
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    assert out.take() == []
    core.tick()
    assert out.bodies() == [b"d"]


@pytest.mark.parametrize(
    "headers",
    [
        {"delay": "0"},
        {"deliver_at": str(T0)},
        {"deliver_at": str(T0 - 60_000)},
        {"deliver_at": "0"},
        {"delay": ""},
    ],
)
def test_no_delay_or_a_due_time_not_in_the_future_delivers_at_once(headers: dict[str, str]) -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    core.handle(producer, send("/queue/q", b"m", **headers))
    assert out.bodies() == [b"m"]
    assert queue(core, "q").store.scheduled == 0


def test_with_both_delay_and_deliver_at_the_later_time_wins() -> None:
    core, clock = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    core.handle(producer, send("/queue/q", b"a", delay="2000", deliver_at=str(T0 + 1000)))
    core.handle(producer, send("/queue/q", b"b", delay="1000", deliver_at=str(T0 + 3000)))
    tick_at(core, clock, 1999)
    assert out.take() == []
    tick_at(core, clock, 2000)
    assert out.bodies() == [b"a"]
    out.take()
    tick_at(core, clock, 2999)
    assert out.take() == []
    tick_at(core, clock, 3000)
    assert out.bodies() == [b"b"]


def test_delayed_messages_fire_in_due_order_not_send_order() -> None:
    core, clock = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    for body, delay in ((b"3", 3000), (b"1", 1000), (b"2", 2000)):
        core.handle(producer, send("/queue/q", body, delay=str(delay)))
    got = []
    for t in range(0, 3001, 500):
        tick_at(core, clock, t)
        got += out.bodies()
        out.take()
    assert got == [b"1", b"2", b"3"]


def test_delay_accepts_the_maximum() -> None:
    core, clock = make()
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"far", delay=str(MAX_MS)))
    assert queue(core, "q").store.scheduled == 1
    tick_at(core, clock, MAX_MS - 1)
    assert len(queue(core, "q")) == 0
    tick_at(core, clock, MAX_MS)
    assert len(queue(core, "q")) == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("delay", "-1"),
        ("delay", "soon"),
        ("delay", "1.5"),
        ("delay", "1e3"),
        ("delay", " 10"),
        ("delay", "\uff11"),  # a full-width digit: isdigit() but not ASCII
        ("delay", str(MAX_MS + 1)),
        ("delay", "9" * 40),
        ("deliver-at", "-1"),
        ("deliver-at", "tomorrow"),
        ("deliver-at", str(MAX_EPOCH_MS + 1)),
    ],
)
def test_bad_delay_values_are_refused_and_nothing_is_published(name: str, value: str) -> None:
    core, _ = make()
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"first"))
    with pytest.raises(InvalidHeader, match=name):
        core.handle(producer, send("/queue/q", b"bad", **{name.replace("-", "_"): value}))
    q = queue(core, "q")
    assert len(q) == 1
    assert q.store.scheduled == 0
    assert q.published == 1
    # Inside a transaction the SEND is refused when it arrives, not at COMMIT.
    core.handle(producer, begin("t"))
    with pytest.raises(InvalidHeader, match=name):
        core.handle(producer, send("/queue/q", b"bad", tx="t", **{name.replace("-", "_"): value}))


def test_a_delayed_message_to_a_topic_is_delayed_for_every_subscriber() -> None:
    core, clock = make()
    producer, _ = connect(core)
    subs = [connect(core) for _ in range(2)]
    for s, _ in subs:
        core.handle(s, subscribe("/topic/news", "t"))
    core.handle(producer, send("/topic/news", b"scoop", delay="1000"))
    tick_at(core, clock, 999)
    assert all(out.take() == [] for _, out in subs)
    tick_at(core, clock, 1000)
    ids = {only(out).id for _, out in subs}
    assert len(ids) == 2


def test_a_delayed_message_to_an_exchange_is_delayed_per_bound_queue() -> None:
    core, clock = make()
    core.declare_exchange("fan", ExchangeType.FANOUT)
    core.bind("fan", "a")
    core.bind("fan", "b")
    producer, _ = connect(core)
    core.handle(producer, send("/exchange/fan/k", b"e", delay="1000"))
    a, b = queue(core, "a"), queue(core, "b")
    assert (len(a), len(b)) == (0, 0)
    assert (a.store.scheduled, b.store.scheduled) == (1, 1)
    tick_at(core, clock, 999)
    assert (len(a), len(b)) == (0, 0)
    # One queue's consumer is there already, the other's comes later.
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/a", "s"))
    tick_at(core, clock, 1000)
    assert out.bodies() == [b"e"]
    assert len(b) == 1
    (late,) = drain(core, "b")
    assert late.body == b"e"
    assert late.id != out.deliveries[0].message.id


def test_a_delayed_message_of_a_topic_subscription_that_left_is_forgotten() -> None:
    core, clock = make()
    producer, _ = connect(core)
    s, out = connect(core)
    core.handle(s, subscribe("/topic/news", "t"))
    core.handle(producer, send("/topic/news", b"gone", delay="1000"))
    core.handle(s, unsubscribe("t"))
    core.handle(s, subscribe("/topic/news", "t2"))
    tick_at(core, clock, 2000)
    assert out.take() == []


def test_the_delay_of_a_transactional_send_counts_from_commit() -> None:
    core, clock = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    core.handle(producer, begin("t"))
    core.handle(producer, send("/queue/q", b"tx", tx="t", delay="1000"))
    clock.at(600)
    core.handle(producer, commit("t"))
    tick_at(core, clock, 1000)
    assert out.take() == []
    tick_at(core, clock, 1599)
    assert out.take() == []
    tick_at(core, clock, 1600)
    assert out.bodies() == [b"tx"]


def test_a_delayed_message_that_expires_before_it_is_due_is_never_delivered() -> None:
    core, clock = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    core.handle(producer, send("/queue/q", b"stale", delay="2000", expires=str(T0 + 1000)))
    tick_at(core, clock, 2000)
    assert out.take() == []
    assert queue(core, "q").expired == 1
    (dead,) = drain(core, "DLQ.q")
    assert header(dead, "x-dead-letter-reason") == "expired"


def test_a_due_message_joins_the_tail_of_its_priority() -> None:
    core, clock = make()
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"delayed-high", delay="100", priority="7"))
    core.handle(producer, send("/queue/q", b"low", priority="2"))
    core.handle(producer, send("/queue/q", b"high", priority="7"))
    tick_at(core, clock, 100)
    assert [m.body for m in drain(core, "q")] == [b"high", b"delayed-high", b"low"]


# -- 2. NACK: delay, requeue=false, dead-letter queue ------------------------------------------


def test_nack_with_delay_redelivers_only_after_the_delay() -> None:
    core, clock = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"retry"))
    first = only(out)
    clock.at(100)
    core.handle(consumer, nack(first.id, delay="1000"))
    q = queue(core, "q")
    assert q.in_flight == 0
    assert len(q) == 0
    assert q.store.scheduled == 1
    assert out.take() == []
    tick_at(core, clock, 1099)
    assert out.take() == []
    tick_at(core, clock, 1100)
    again = only(out)
    assert again.id == first.id
    assert again.body == b"retry"
    assert again.redelivered
    assert again.deliveries == 2
    core.handle(consumer, ack(again.id))
    assert q.acked == 1


def test_a_nack_delayed_message_lets_the_others_through_meanwhile() -> None:
    core, clock = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI, prefetch_count="1"))
    for body in (b"1", b"2", b"3"):
        core.handle(producer, send("/queue/q", body))
    first = only(out)
    core.handle(consumer, nack(first.id, delay="500"))
    second = only(out)
    assert second.body == b"2"
    core.handle(consumer, ack(second.id))
    assert out.bodies() == [b"3"]
    core.handle(consumer, ack(out.take()[0].message.id))
    tick_at(core, clock, 500)
    back = only(out)
    assert (back.body, back.redelivered, back.deliveries) == (b"1", True, 2)


@pytest.mark.parametrize("value", ["-1", "later", str(MAX_MS + 1)])
def test_a_bad_nack_delay_is_refused_and_the_message_stays_pending(value: str) -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q"))
    message = only(out)
    with pytest.raises(InvalidHeader, match="delay"):
        core.handle(consumer, nack(message.id, delay=value))
    assert message.id in sub_of(consumer, "s").unacked
    core.handle(consumer, ack(message.id))
    assert queue(core, "q").acked == 1


def test_nack_without_requeue_dead_letters_with_the_dead_letter_headers() -> None:
    core, clock = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"poison", x_custom="1", priority="6"))
    message = only(out)
    clock.at(1234)
    core.handle(consumer, nack(message.id, requeue="false"))
    q = queue(core, "q")
    assert len(q) == 0
    assert q.in_flight == 0
    assert q.dead_lettered == 1
    assert out.take() == []  # not redelivered
    assert len(queue(core, "DLQ.q")) == 1
    (dead,) = drain(core, "DLQ.q")
    assert dead.body == b"poison"
    assert dead.id == message.id
    assert dead.destination == "/queue/DLQ.q"
    assert dead.priority == 6
    assert dead.persistent
    assert not dead.redelivered
    assert header(dead, "x-custom") == "1"
    assert dead_letter_headers(dead) == {
        "x-dead-letter-reason": "rejected",
        "x-dead-letter-queue": "q",
        "x-dead-letter-destination": "/queue/q",
        "x-dead-letter-deliveries": "1",
        "x-dead-letter-time": str(T0 + 1234),
    }


def test_nack_reason_invalid_is_recorded() -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"bad"))
    core.handle(consumer, nack(only(out).id, requeue="false", reason="invalid"))
    (dead,) = drain(core, "DLQ.q")
    assert header(dead, "x-dead-letter-reason") == "invalid"


def test_nack_reason_rejected_explicitly_is_the_default_reason() -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"bad"))
    core.handle(consumer, nack(only(out).id, requeue="false", reason="rejected"))
    (dead,) = drain(core, "DLQ.q")
    assert header(dead, "x-dead-letter-reason") == "rejected"


@pytest.mark.parametrize("reason", ["expired", "max-deliveries", "INVALID", "whatever"])
def test_a_bad_nack_reason_is_refused_and_the_message_stays_pending(reason: str) -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q"))
    message = only(out)
    with pytest.raises(InvalidHeader, match="reason"):
        core.handle(consumer, nack(message.id, requeue="false", reason=reason))
    assert "DLQ.q" not in core.queues
    assert message.id in sub_of(consumer, "s").unacked


def test_nack_without_requeue_in_a_transaction_dead_letters_at_commit() -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"tx"))
    message = only(out)
    core.handle(consumer, begin("t"))
    core.handle(consumer, nack(message.id, tx="t", requeue="false", reason="invalid"))
    assert "DLQ.q" not in core.queues
    core.handle(consumer, commit("t"))
    (dead,) = drain(core, "DLQ.q")
    assert header(dead, "x-dead-letter-reason") == "invalid"


def test_client_mode_nack_without_requeue_dead_letters_everything_it_covers() -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", AckMode.CLIENT))
    for body in (b"1", b"2", b"3"):
        core.handle(producer, send("/queue/q", body))
    deliveries = out.take()
    core.handle(consumer, nack(deliveries[1].message.id, requeue="false"))
    assert [m.body for m in drain(core, "DLQ.q")] == [b"1", b"2"]
    assert queue(core, "q").in_flight == 1


def test_without_a_dead_letter_queue_a_rejected_message_is_dropped() -> None:
    core, _ = make(policy("q", dead_letter=""))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"drop me"))
    core.handle(consumer, nack(only(out).id, requeue="false"))
    q = queue(core, "q")
    assert (len(q), q.in_flight, q.dead_lettered) == (0, 0, 1)
    assert set(core.queues) == {"q"}
    assert out.take() == []


def test_a_named_dead_letter_queue_is_used_and_has_no_dead_letter_queue_itself() -> None:
    core, _ = make(policy("orders.*", dead_letter="graveyard"))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/orders.eu", "s", CI))
    core.handle(producer, send("/queue/orders.eu", b"o"))
    core.handle(consumer, nack(only(out).id, requeue="false"))
    assert "DLQ.orders.eu" not in core.queues
    assert len(queue(core, "graveyard")) == 1
    undertaker, grave_out = connect(core)
    core.handle(undertaker, subscribe("/queue/graveyard", "g", CI))
    dead = only(grave_out)
    assert header(dead, "x-dead-letter-queue") == "orders.eu"
    core.handle(undertaker, nack(dead.id, requeue="false"))
    assert set(core.queues) == {"orders.eu", "graveyard"}
    assert len(queue(core, "graveyard")) == 0


def test_a_dead_letter_queue_has_no_dead_letter_queue_and_no_delivery_limit() -> None:
    core, _ = make(policy("q", max_deliveries=2))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"x"))
    core.handle(consumer, nack(only(out).id, requeue="false"))
    dlq_consumer, dlq_out = connect(core)
    core.handle(dlq_consumer, subscribe("/queue/DLQ.q", "d", CI))
    for n in range(1, 16):  # more than the default limit of 10, and than q's 2
        message = only(dlq_out)
        assert message.deliveries == n
        core.handle(dlq_consumer, nack(message.id))
    message = only(dlq_out)
    core.handle(dlq_consumer, nack(message.id, requeue="false"))
    assert dlq_out.take() == []
    assert set(core.queues) == {"q", "DLQ.q"}  # no DLQ.DLQ.q
    assert queue(core, "DLQ.q").dead_lettered == 1


def test_a_queue_named_as_its_own_dead_letter_queue_drops_instead_of_looping() -> None:
    core, _ = make(policy("loop", dead_letter="loop"))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/loop", "s", CI))
    core.handle(producer, send("/queue/loop", b"x"))
    core.handle(consumer, nack(only(out).id, requeue="false"))
    assert out.take() == []
    assert len(queue(core, "loop")) == 0
    assert set(core.queues) == {"loop"}


def test_dead_lettering_again_replaces_the_previous_dead_letter_headers() -> None:
    core, _ = make(policy("DLQ.q", dead_letter="final"))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"x"))
    core.handle(consumer, nack(only(out).id, requeue="false"))
    dlq_consumer, dlq_out = connect(core)
    core.handle(dlq_consumer, subscribe("/queue/DLQ.q", "d", CI))
    core.handle(dlq_consumer, nack(only(dlq_out).id, requeue="false", reason="invalid"))
    (final,) = drain(core, "final")
    names = [k for k, _ in final.headers if k.startswith("x-dead-letter-")]
    assert len(names) == len(set(names)) == 5
    assert header(final, "x-dead-letter-queue") == "DLQ.q"
    assert header(final, "x-dead-letter-reason") == "invalid"
    assert header(final, "x-dead-letter-destination") == "/queue/DLQ.q"


def test_a_dead_letter_queue_named_with_a_pattern_has_no_dead_letter_queue() -> None:
    core, _ = make(policy("orders", dead_letter="{name}-dead"))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/orders", "s", CI))
    core.handle(producer, send("/queue/orders", b"o"))
    core.handle(consumer, nack(only(out).id, requeue="false"))
    assert len(queue(core, "orders-dead")) == 1
    dlq_consumer, dlq_out = connect(core)
    core.handle(dlq_consumer, subscribe("/queue/orders-dead", "d", CI))
    core.handle(dlq_consumer, nack(only(dlq_out).id, requeue="false"))
    assert set(core.queues) == {"orders", "orders-dead"}


# -- 3. max deliveries -----------------------------------------------------------------------


def test_max_deliveries_by_nack_dead_letters_after_the_nth_delivery() -> None:
    core, clock = make(policy("q", max_deliveries=3))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"bad"))
    for n in (1, 2, 3):
        message = only(out)
        assert message.deliveries == n
        assert message.redelivered == (n > 1)
        clock.at(n * 10)
        core.handle(consumer, nack(message.id))
    assert out.take() == []  # never a fourth delivery
    q = queue(core, "q")
    assert (len(q), q.in_flight, q.delivered, q.dead_lettered) == (0, 0, 3, 1)
    (dead,) = drain(core, "DLQ.q")
    assert dead_letter_headers(dead) == {
        "x-dead-letter-reason": "max-deliveries",
        "x-dead-letter-queue": "q",
        "x-dead-letter-destination": "/queue/q",
        "x-dead-letter-deliveries": "3",
        "x-dead-letter-time": str(T0 + 30),
    }


def test_max_deliveries_by_disconnects_dead_letters_after_the_nth_delivery() -> None:
    core, _ = make(policy("q", max_deliveries=3))
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"crashes consumers"))
    for n in (1, 2, 3):
        consumer, out = connect(core)
        core.handle(consumer, subscribe("/queue/q", "s", CI))
        message = only(out)
        assert message.deliveries == n
        core.close_session(consumer)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    assert out.take() == []
    (dead,) = drain(core, "DLQ.q")
    assert header(dead, "x-dead-letter-reason") == "max-deliveries"
    assert header(dead, "x-dead-letter-deliveries") == "3"


def test_max_deliveries_by_unsubscribe() -> None:
    core, _ = make(policy("q", max_deliveries=2))
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"slow"))
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    assert only(out).deliveries == 1
    core.handle(consumer, unsubscribe("s"))
    core.handle(consumer, subscribe("/queue/q", "s2", CI))
    assert only(out).deliveries == 2
    core.handle(consumer, unsubscribe("s2"))
    core.handle(consumer, subscribe("/queue/q", "s3", CI))
    assert out.take() == []
    (dead,) = drain(core, "DLQ.q")
    assert header(dead, "x-dead-letter-reason") == "max-deliveries"


def test_max_deliveries_by_lease_expiry() -> None:
    core, clock = make(policy("q", max_deliveries=2, visibility_timeout=1000))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"slow"))
    assert only(out).deliveries == 1
    tick_at(core, clock, 1000)
    assert only(out).deliveries == 2
    tick_at(core, clock, 2000)  # the lease runs out at the limit: dead-lettered, not requeued
    assert out.take() == []
    (dead,) = drain(core, "DLQ.q")
    assert header(dead, "x-dead-letter-reason") == "max-deliveries"


def test_a_delayed_nack_at_the_limit_dead_letters_at_once() -> None:
    core, _ = make(policy("q", max_deliveries=1))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"x"))
    core.handle(consumer, nack(only(out).id, delay="60000"))
    assert queue(core, "q").store.scheduled == 0
    (dead,) = drain(core, "DLQ.q")
    assert header(dead, "x-dead-letter-reason") == "max-deliveries"


def test_max_deliveries_zero_means_no_limit() -> None:
    core, _ = make(policy("q", max_deliveries=0))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q"))
    for n in range(1, 26):
        message = only(out)
        assert message.deliveries == n
        core.handle(consumer, nack(message.id))
    assert "DLQ.q" not in core.queues


def test_the_default_delivery_limit_is_ten() -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q"))
    for _ in range(10):
        core.handle(consumer, nack(only(out).id))
    assert out.take() == []
    (dead,) = drain(core, "DLQ.q")
    assert header(dead, "x-dead-letter-deliveries") == "10"


# -- 4. TTL ----------------------------------------------------------------------------------


def test_an_expires_header_in_the_past_is_never_delivered() -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    core.handle(producer, send("/queue/q", b"late", expires=str(T0)))
    core.handle(producer, send("/queue/q", b"ok", expires=str(T0 + 1)))
    assert out.bodies() == [b"ok"]
    assert queue(core, "q").expired == 1
    (dead,) = drain(core, "DLQ.q")
    assert dead.body == b"late"
    assert header(dead, "x-dead-letter-reason") == "expired"
    assert header(dead, "x-dead-letter-deliveries") == "0"
    assert dead.expires == 0  # it does not expire again in the dead-letter queue


def test_a_message_expiring_at_the_head_is_not_delivered_to_a_late_consumer() -> None:
    core, clock = make()
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"old", expires=str(T0 + 1000)))
    core.handle(producer, send("/queue/q", b"new"))
    clock.at(1000)  # no tick, no sweep: the head check alone must catch it
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    assert out.bodies() == [b"new"]
    assert queue(core, "q").expired == 1
    assert [header(m, "x-dead-letter-reason") for m in drain(core, "DLQ.q")] == ["expired"]


def test_a_message_expiring_behind_others_leaves_the_queue_on_the_next_sweep() -> None:
    core, clock = make()
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"A"))
    core.handle(producer, send("/queue/q", b"B", expires=str(T0 + 200)))
    core.handle(producer, send("/queue/q", b"C", expires=str(T0 + 60_000)))
    q = queue(core, "q")
    tick_at(core, clock, 0)  # sweeps (nothing expired); the next sweep is a second later
    assert len(q) == 3
    tick_at(core, clock, 500)  # B has expired, but sweeps run at most once a second
    assert len(q) == 3
    tick_at(core, clock, 1000)
    assert len(q) == 2
    assert q.expired == 1
    assert q.store.ready_bytes == 2
    (dead,) = drain(core, "DLQ.q")
    assert (dead.body, header(dead, "x-dead-letter-reason")) == (b"B", "expired")
    assert header(dead, "x-dead-letter-time") == str(T0 + 1000)
    assert [m.body for m in drain(core, "q")] == [b"A", b"C"]


def test_expired_messages_without_a_dead_letter_queue_are_dropped_and_counted() -> None:
    core, clock = make(policy("q", dead_letter=""))
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"keep"))
    for i in range(3):
        core.handle(producer, send("/queue/q", b"e%d" % i, expires=str(T0 + 100)))
    tick_at(core, clock, 100)
    q = queue(core, "q")
    assert len(q) == 1
    assert q.expired == 3
    assert q.dead_lettered == 3
    assert set(core.queues) == {"q"}
    # And one expiring at the head, taken by dispatch rather than by a sweep.
    core.handle(producer, send("/queue/q", b"head", expires=str(T0 + 150), priority="9"))
    clock.at(150)
    assert [m.body for m in drain(core, "q")] == [b"keep"]
    assert q.expired == 4
    assert set(core.queues) == {"q"}


def test_the_queue_ttl_expires_messages_that_have_no_expires_header() -> None:
    core, clock = make(policy("q", ttl=1000))
    producer, _ = connect(core)
    tick_at(core, clock, 0)
    core.handle(producer, send("/queue/q", b"ttl"))  # expires at T0 + 1000
    core.handle(producer, send("/queue/q", b"long", expires=str(T0 + 5000)))  # the queue's ttl is shorter
    core.handle(producer, send("/queue/q", b"own", expires=str(T0 + 700)))  # its own is shorter
    clock.at(500)
    core.handle(producer, send("/queue/q", b"later"))  # expires at T0 + 1500
    clock.at(1200)
    core.handle(producer, send("/queue/q", b"fresh"))  # expires at T0 + 2200
    q = queue(core, "q")
    tick_at(core, clock, 1000)
    assert len(q) == 2
    assert q.expired == 3
    tick_at(core, clock, 1500)  # no sweep before T0 + 2000
    assert len(q) == 2
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))  # the head check catches "later"
    assert out.bodies() == [b"fresh"]
    assert q.expired == 4
    assert [m.body for m in drain(core, "DLQ.q")] == [b"ttl", b"long", b"own", b"later"]


def test_an_unacked_message_that_expires_and_comes_back_is_not_redelivered() -> None:
    core, clock = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"x", expires=str(T0 + 100)))
    message = only(out)
    clock.at(200)
    core.handle(consumer, nack(message.id))
    assert out.take() == []
    assert queue(core, "q").expired == 1
    (dead,) = drain(core, "DLQ.q")
    assert header(dead, "x-dead-letter-reason") == "expired"


# -- 5. priorities ---------------------------------------------------------------------------


def test_higher_priority_first_fifo_within_a_priority() -> None:
    core, _ = make()
    producer, _ = connect(core)
    sent = [("a", 0), ("b", 9), ("c", 4), ("d", 9), ("e", 0), ("f", 5), ("g", 4), ("h", 1)]
    for body, priority in sent:
        core.handle(producer, send("/queue/q", body.encode(), priority=str(priority)))
    core.handle(producer, send("/queue/q", b"default"))  # priority 4
    got = [(m.body, m.priority) for m in drain(core, "q")]
    assert got == [
        (b"b", 9),
        (b"d", 9),
        (b"f", 5),
        (b"c", 4),
        (b"g", 4),
        (b"default", 4),
        (b"h", 1),
        (b"a", 0),
        (b"e", 0),
    ]


def test_a_nacked_message_goes_back_to_the_head_of_its_priority() -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(producer, send("/queue/q", b"p5-1", priority="5"))
    core.handle(producer, send("/queue/q", b"p5-2", priority="5"))
    core.handle(producer, send("/queue/q", b"p3", priority="3"))
    core.handle(consumer, subscribe("/queue/q", "s", CI, prefetch_count="1"))
    first = only(out)
    assert first.body == b"p5-1"
    core.handle(producer, send("/queue/q", b"p8", priority="8"))
    core.handle(consumer, nack(first.id))
    bodies = []
    for _ in range(4):
        message = only(out)
        bodies.append(message.body)
        core.handle(consumer, ack(message.id))
    assert bodies == [b"p8", b"p5-1", b"p5-2", b"p3"]


def test_a_nacked_low_priority_message_does_not_jump_higher_ones() -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI, prefetch_count="1"))
    core.handle(producer, send("/queue/q", b"low", priority="1"))
    low = only(out)
    core.handle(producer, send("/queue/q", b"low2", priority="1"))
    core.handle(producer, send("/queue/q", b"high", priority="8"))
    core.handle(consumer, nack(low.id))
    bodies = []
    for _ in range(3):
        message = only(out)
        bodies.append(message.body)
        core.handle(consumer, ack(message.id))
    assert bodies == [b"high", b"low", b"low2"]


def test_messages_given_back_by_a_closed_connection_keep_their_order_at_the_head() -> None:
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI, prefetch_count="3"))
    for body in (b"1", b"2", b"3", b"4"):
        core.handle(producer, send("/queue/q", body))
    assert out.bodies() == [b"1", b"2", b"3"]
    core.close_session(consumer)
    got = drain(core, "q")
    assert [m.body for m in got] == [b"1", b"2", b"3", b"4"]
    assert [m.redelivered for m in got] == [True, True, True, False]


# -- 6. leases -------------------------------------------------------------------------------


def test_an_unacked_delivery_returns_after_the_visibility_timeout_to_another_consumer() -> None:
    core, clock = make(policy("q", visibility_timeout=1000))
    producer, _ = connect(core)
    a, out_a = connect(core)
    b, out_b = connect(core)
    core.handle(a, subscribe("/queue/q", "s", CI))
    core.handle(b, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"job"))
    first = only(out_a)
    assert out_b.take() == []
    tick_at(core, clock, 999)
    assert out_a.take() == out_b.take() == []
    tick_at(core, clock, 1000)
    again = only(out_b)
    assert out_a.take() == []
    assert again.id == first.id
    assert again.redelivered
    assert again.deliveries == 2
    assert sub_of(a, "s").unacked == {}
    # A late ACK, and a late NACK, of the first delivery are ignored, without error.
    core.handle(a, ack(first.id))
    core.handle(a, nack(first.id))
    core.handle(a, nack(first.id, requeue="false"))
    q = queue(core, "q")
    assert q.acked == 0
    assert q.in_flight == 1
    assert first.id in sub_of(b, "s").unacked
    assert "DLQ.q" not in core.queues
    assert out_a.take() == out_b.take() == []
    core.handle(b, ack(again.id))
    assert q.acked == 1
    assert q.in_flight == 0


def test_leases_running_out_together_swap_their_messages_between_consumers() -> None:
    core, clock = make(policy("q", visibility_timeout=1000))
    producer, _ = connect(core)
    a, out_a = connect(core)
    b, out_b = connect(core)
    core.handle(a, subscribe("/queue/q", "s", CI))
    core.handle(b, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"1"))
    core.handle(producer, send("/queue/q", b"2"))
    assert (out_a.bodies(), out_b.bodies()) == ([b"1"], [b"2"])
    out_a.take()
    out_b.take()
    tick_at(core, clock, 1000)  # neither goes back to the consumer that let it lapse
    assert (out_a.bodies(), out_b.bodies()) == ([b"2"], [b"1"])


def test_a_paused_subscription_keeps_what_it_holds_and_takes_nothing_new() -> None:
    core, _ = make()
    producer, _ = connect(core)
    a, out_a = connect(core)
    core.handle(a, subscribe("/queue/q", "s", CI, prefetch_count="2"))
    for body in (b"1", b"2", b"3"):
        core.handle(producer, send("/queue/q", body))
    held = [d.message for d in out_a.take()]
    assert [m.body for m in held] == [b"1", b"2"]
    core.handle(a, send("/queueit/flow", subscription="s", prefetch="0"))
    core.handle(a, ack(held[0].id))  # acking frees a slot, but a paused subscription takes nothing
    assert out_a.take() == []
    core.handle(a, ack(held[1].id))
    assert queue(core, "q").acked == 2
    core.handle(a, send("/queueit/flow", subscription="gone", prefetch="1"))  # ignored
    core.handle(a, send("/queueit/flow", subscription="s", prefetch="1"))
    assert out_a.bodies() == [b"3"]
    with pytest.raises(InvalidHeader, match="prefetch"):
        core.handle(a, send("/queueit/flow", subscription="s"))
    with pytest.raises(InvalidHeader, match="prefetch"):
        core.handle(a, send("/queueit/flow", subscription="s", prefetch="-1"))


def test_a_paused_auto_ack_subscription_takes_nothing() -> None:
    core, _ = make()
    producer, _ = connect(core)
    a, out_a = connect(core)
    core.handle(a, subscribe("/queue/q", "s"))
    core.handle(a, send("/queueit/flow", subscription="s", prefetch="0"))
    core.handle(producer, send("/queue/q", b"1"))
    assert out_a.take() == []
    assert len(queue(core, "q")) == 1


def test_a_nacked_message_goes_to_another_consumer_when_one_can_take_it() -> None:
    core, _ = make()
    producer, _ = connect(core)
    a, out_a = connect(core)
    b, out_b = connect(core)
    core.handle(a, subscribe("/queue/q", "s", CI))
    core.handle(b, subscribe("/queue/q", "s", CI, prefetch_count="1"))
    core.handle(producer, send("/queue/q", b"m"))
    message = only(out_a)
    core.handle(a, nack(message.id))
    again = only(out_b)
    assert (again.id, again.redelivered, again.deliveries) == (message.id, True, 2)
    assert out_a.take() == []
    # b is full (prefetch 1): a message b NACKs can go back to b only if nobody else can take it.
    core.handle(b, nack(again.id))
    third = only(out_a)
    assert third.id == message.id
    core.handle(a, nack(third.id))
    fourth = only(out_b)
    assert fourth.deliveries == 4
    core.handle(producer, send("/queue/q", b"n"))  # b is full: the new one goes to a
    assert out_a.bodies() == [b"n"]
    assert out_b.take() == []


def test_a_nacked_message_goes_back_to_the_same_consumer_when_no_other_can_take_it() -> None:
    core, _ = make()
    producer, _ = connect(core)
    a, out_a = connect(core)
    b, out_b = connect(core)
    core.handle(a, subscribe("/queue/q", "s", CI))
    core.handle(b, subscribe("/queue/q", "s", CI, prefetch_count="1"))
    core.handle(producer, send("/queue/q", b"to a"))
    core.handle(producer, send("/queue/q", b"to b"))
    assert out_b.bodies() == [b"to b"]  # b is now full
    message = only(out_a)
    core.handle(a, nack(message.id))
    again = only(out_a)
    assert (again.id, again.redelivered) == (message.id, True)


def test_a_late_ack_inside_a_transaction_is_ignored_too() -> None:
    core, clock = make(policy("q", visibility_timeout=1000))
    producer, _ = connect(core)
    a, out_a = connect(core)
    b, out_b = connect(core)
    core.handle(a, subscribe("/queue/q", "s", CI))
    core.handle(b, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q"))
    first = only(out_a)
    tick_at(core, clock, 1000)
    assert only(out_b).id == first.id
    core.handle(a, begin("t"))
    core.handle(a, ack(first.id, tx="t"))
    core.handle(a, nack(first.id, tx="t", requeue="false"))
    core.handle(a, commit("t"))
    q = queue(core, "q")
    assert (q.acked, q.in_flight) == (0, 1)
    assert first.id in sub_of(b, "s").unacked
    assert "DLQ.q" not in core.queues


def test_client_mode_deliveries_are_leased_too() -> None:
    core, clock = make(policy("q", visibility_timeout=500))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", AckMode.CLIENT))
    core.handle(producer, send("/queue/q", b"1"))
    core.handle(producer, send("/queue/q", b"2"))
    assert out.bodies() == [b"1", b"2"]
    first = out.take()
    tick_at(core, clock, 500)
    again = out.take()
    assert [(d.message.body, d.message.redelivered) for d in again] == [(b"1", True), (b"2", True)]
    core.handle(consumer, ack(first[1].message.id))  # redelivered to this connection: a real ACK
    assert queue(core, "q").acked == 2


def test_settled_leases_are_dropped_in_small_rebuilds_not_kept_until_they_run_out() -> None:
    core, _ = make(policy("q", visibility_timeout=600_000))  # nothing runs out in this test
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI, **{"prefetch-count": "8"}))
    largest = 0
    for n in range(5 * COMPACT_MIN):
        core.handle(producer, send("/queue/q", b"%d" % n))
        for d in out.take():
            core.handle(consumer, ack(d.message.id))
        largest = max(largest, len(core.leases))
    # Stale entries of acked messages: at most COMPACT_MIN beyond twice the 8 in flight.
    assert largest <= COMPACT_MIN + 2 * 8 + 1
    assert len(core.leases) < largest  # rebuilt, more than once in 5 * COMPACT_MIN acks


def test_auto_ack_deliveries_are_not_leased() -> None:
    core, clock = make(policy("q", visibility_timeout=100))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    core.handle(producer, send("/queue/q"))
    assert len(out.take()) == 1
    assert len(core.leases) == 0
    tick_at(core, clock, 1000)
    assert out.take() == []


def test_an_ack_in_time_settles_for_good() -> None:
    core, clock = make(policy("q", visibility_timeout=1000))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q"))
    clock.at(999)
    core.handle(consumer, ack(only(out).id))
    tick_at(core, clock, 5000)
    assert out.take() == []
    q = queue(core, "q")
    assert (len(q), q.acked, q.in_flight) == (0, 1, 0)


def test_the_default_visibility_timeout_is_thirty_minutes() -> None:
    core, clock = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q"))
    message = only(out)
    tick_at(core, clock, 1_799_999)
    assert out.take() == []
    tick_at(core, clock, 1_800_000)
    assert only(out).id == message.id


@pytest.mark.parametrize(("header_ms", "expected_ms"), [(300, 300), (5000, 5000), (0, 1000)])
def test_the_subscribe_visibility_timeout_header_sets_the_subscriptions_lease(
    header_ms: int, expected_ms: int
) -> None:
    core, clock = make(policy("q", visibility_timeout=1000))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI, visibility_timeout=str(header_ms)))
    assert sub_of(consumer, "s").lease_ms == expected_ms
    clock.at(10)
    core.handle(producer, send("/queue/q"))
    assert only(out).lease_until == T0 + 10 + expected_ms


@pytest.mark.parametrize(("header_ms", "expected_ms"), [(300, 300), (5000, 5000), (0, 1000)])
def test_the_subscribe_visibility_timeout_header_overrides_the_queues(
    header_ms: int, expected_ms: int
) -> None:
    core, clock = make(policy("q", visibility_timeout=1000))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI, visibility_timeout=str(header_ms)))
    core.handle(producer, send("/queue/q"))
    message = only(out)
    tick_at(core, clock, expected_ms - 1)
    assert out.take() == []
    tick_at(core, clock, expected_ms)
    again = only(out)
    assert (again.id, again.redelivered) == (message.id, True)


def test_the_visibility_timeout_header_is_per_subscription() -> None:
    core, clock = make(policy("q", visibility_timeout=1000))
    producer, _ = connect(core)
    short, out_short = connect(core)
    default, out_default = connect(core)
    core.handle(short, subscribe("/queue/q", "s", CI, visibility_timeout="100"))
    core.handle(default, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"to short"))
    core.handle(producer, send("/queue/q", b"to default"))
    assert out_short.bodies() == [b"to short"]
    assert out_default.bodies() == [b"to default"]
    out_short.take()
    out_default.take()
    tick_at(core, clock, 100)  # only the short lease has run out
    (again,) = [d.message for d in out_short.take() + out_default.take()]
    assert (again.body, again.redelivered) == (b"to short", True)
    for s, sub_id in ((short, "s"), (default, "s")):
        if again.id in sub_of(s, sub_id).unacked:
            core.handle(s, ack(again.id))
    assert queue(core, "q").acked == 1
    tick_at(core, clock, 999)
    assert out_short.take() == out_default.take() == []
    tick_at(core, clock, 1000)
    (back,) = [d.message for d in out_short.take() + out_default.take()]
    assert (back.body, back.redelivered) == (b"to default", True)


@pytest.mark.parametrize("value", ["-1", "soon", "1.5", str(MAX_MS + 1)])
def test_a_bad_visibility_timeout_header_is_refused(value: str) -> None:
    core, _ = make()
    consumer, _ = connect(core)
    with pytest.raises(InvalidHeader, match="visibility-timeout"):
        core.handle(consumer, subscribe("/queue/q", "s", CI, visibility_timeout=value))
    assert consumer.subscriptions == {}


def test_a_lease_extension_moves_the_deadline() -> None:
    core, clock = make(policy("q", visibility_timeout=1000))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"long job"))
    message = only(out)
    clock.at(500)
    core.handle(consumer, send("/queueit/lease", id=message.id, lease="2000"))
    assert set(core.queues) == {"q"}  # nothing was published anywhere
    tick_at(core, clock, 1000)  # the old deadline: not taken back
    assert out.take() == []
    assert message.id in sub_of(consumer, "s").unacked
    tick_at(core, clock, 2499)
    assert out.take() == []
    tick_at(core, clock, 2500)
    again = only(out)
    assert (again.id, again.redelivered, again.deliveries) == (message.id, True, 2)


def test_a_lease_can_be_extended_repeatedly_and_then_acked() -> None:
    core, clock = make(policy("q", visibility_timeout=1000))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q"))
    message = only(out)
    for t in range(800, 10_000, 800):
        tick_at(core, clock, t)
        core.handle(consumer, send("/queueit/lease", id=message.id, lease="1000"))
    tick_at(core, clock, 10_000)
    assert out.take() == []
    core.handle(consumer, ack(message.id))
    tick_at(core, clock, 20_000)
    assert out.take() == []
    assert queue(core, "q").acked == 1


def test_a_lease_extension_in_a_transaction_applies_at_commit() -> None:
    core, clock = make(policy("q", visibility_timeout=1000))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q"))
    message = only(out)
    core.handle(consumer, begin("t"))
    core.handle(consumer, send("/queueit/lease", tx="t", id=message.id, lease="5000"))
    clock.at(900)
    core.handle(consumer, commit("t"))
    tick_at(core, clock, 5899)
    assert out.take() == []
    tick_at(core, clock, 5900)
    assert only(out).id == message.id


def test_lease_extensions_of_unknown_or_lost_ids_are_ignored() -> None:
    core, clock = make(policy("q", visibility_timeout=1000))
    producer, _ = connect(core)
    a, out_a = connect(core)
    b, out_b = connect(core)
    core.handle(a, subscribe("/queue/q", "s", CI))
    core.handle(b, subscribe("/queue/q", "s", CI))
    core.handle(a, send("/queueit/lease", id="m-never-seen", lease="1000"))
    core.handle(producer, send("/queue/q"))
    message = only(out_a)
    # Another connection cannot extend a's lease.
    core.handle(b, send("/queueit/lease", id=message.id, lease="60000"))
    tick_at(core, clock, 1000)
    again = only(out_b)
    assert again.id == message.id
    # a's lease is gone: its extension must not touch b's lease.
    core.handle(a, send("/queueit/lease", id=message.id, lease="60000"))
    tick_at(core, clock, 1999)
    assert out_a.take() == out_b.take() == []
    tick_at(core, clock, 2000)
    assert only(out_a).id == message.id
    # An extension of an acked id is ignored as well.
    core.handle(a, ack(message.id))
    core.handle(a, send("/queueit/lease", id=message.id, lease="1000"))
    assert queue(core, "q").acked == 1


@pytest.mark.parametrize("value", ["0", "-1", "soon", "1.5", str(MAX_MS + 1)])
def test_a_bad_lease_value_is_refused(value: str) -> None:
    core, clock = make(policy("q", visibility_timeout=1000))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q"))
    message = only(out)
    deadline = message.lease_until
    assert deadline == T0 + 1000
    clock.at(500)
    with pytest.raises(InvalidHeader, match="lease"):
        core.handle(consumer, send("/queueit/lease", id=message.id, lease=value))
    assert message.lease_until == deadline  # the lease was left as it was
    assert message.id in sub_of(consumer, "s").unacked


@pytest.mark.parametrize("headers", [{"lease": "1000"}, {"lease": "1000", "id": ""}])
def test_a_lease_extension_without_an_id_is_refused(headers: dict[str, str]) -> None:
    core, _ = make()
    consumer, _ = connect(core)
    with pytest.raises(InvalidHeader, match="id"):
        core.handle(consumer, send("/queueit/lease", b"", **headers))


def test_a_lease_extension_without_a_lease_value_does_not_cut_the_lease() -> None:
    core, clock = make(policy("q", visibility_timeout=10_000))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q"))
    message = only(out)
    try:
        core.handle(consumer, send("/queueit/lease", id=message.id))
    except InvalidHeader:
        return  # refusing it is fine
    tick_at(core, clock, 1)
    assert out.take() == []
    assert message.id in sub_of(consumer, "s").unacked


# -- 7. queue limits ---------------------------------------------------------------------------


def test_reject_publish_max_messages() -> None:
    core, _ = make(policy("q", max_messages=2))
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"1"))
    core.handle(producer, send("/queue/q", b"2"))
    with pytest.raises(QueueFull, match="'q' is full"):
        core.handle(producer, send("/queue/q", b"3"))
    q = queue(core, "q")
    assert (len(q), q.published, q.dropped, q.dead_lettered) == (2, 2, 0, 0)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI, prefetch_count="1"))
    assert out.bodies() == [b"1"]
    core.handle(producer, send("/queue/q", b"3"))  # room again: in-flight messages do not count
    assert len(q) == 2
    assert "DLQ.q" not in core.queues


def test_reject_publish_max_bytes() -> None:
    core, _ = make(policy("q", max_bytes=10))
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"123456"))
    core.handle(producer, send("/queue/q", b"7890"))  # exactly at the limit
    with pytest.raises(QueueFull):
        core.handle(producer, send("/queue/q", b"x"))
    core.handle(producer, send("/queue/q", b""))  # an empty body still fits the byte limit
    q = queue(core, "q")
    assert q.store.ready_bytes == 10
    assert [m.body for m in drain(core, "q")] == [b"123456", b"7890", b""]


def test_a_message_larger_than_max_bytes_is_rejected() -> None:
    core, _ = make(policy("q", max_bytes=10))
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"ok"))
    with pytest.raises(QueueFull):
        core.handle(producer, send("/queue/q", b"x" * 11))
    assert len(queue(core, "q")) == 1


def test_reject_publish_on_an_exchange_refuses_the_whole_publish() -> None:
    core, _ = make(policy("full", max_messages=1))
    core.declare_exchange("fan", ExchangeType.FANOUT)
    core.bind("fan", "roomy")
    core.bind("fan", "full")
    producer, _ = connect(core)
    core.handle(producer, send("/exchange/fan/k", b"1"))
    with pytest.raises(QueueFull):
        core.handle(producer, send("/exchange/fan/k", b"2"))
    assert (len(queue(core, "roomy")), len(queue(core, "full"))) == (1, 1)


def test_reject_publish_in_a_transaction_refuses_the_whole_commit() -> None:
    core, _ = make(policy("lim", max_messages=1))
    producer, _ = connect(core)
    other, _ = connect(core)
    core.handle(producer, send("/queue/lim", b"fill"))
    core.handle(producer, begin("t"))
    core.handle(producer, send("/queue/lim", b"x", tx="t"))  # room is checked at COMMIT, not now
    with pytest.raises(QueueFull):
        core.handle(producer, commit("t"))
    drain(core, "lim")
    core.handle(producer, begin("t2"))
    core.handle(producer, send("/queue/elsewhere", b"e", tx="t2"))
    core.handle(producer, send("/queue/lim", b"l", tx="t2"))  # room now
    core.handle(other, send("/queue/lim", b"theirs"))  # but not at COMMIT
    with pytest.raises(QueueFull):
        core.handle(producer, commit("t2"))
    assert len(core.queues.get("elsewhere") or []) == 0
    assert [m.body for m in drain(core, "lim")] == [b"theirs"]


def test_a_commit_whose_sends_together_overflow_the_queue_publishes_nothing() -> None:
    core, _ = make(policy("lim", max_messages=1))
    producer, _ = connect(core)
    core.handle(producer, begin("t"))
    core.handle(producer, send("/queue/lim", b"a", tx="t"))
    core.handle(producer, send("/queue/lim", b"b", tx="t"))
    with pytest.raises(QueueFull):
        core.handle(producer, commit("t"))
    assert len(queue(core, "lim")) == 0


def test_a_commit_with_a_send_to_an_exchange_bound_to_a_full_queue_publishes_nothing() -> None:
    core, _ = make(policy("full", max_messages=1))
    core.declare_exchange("fan", ExchangeType.FANOUT)
    core.bind("fan", "full")
    producer, _ = connect(core)
    core.handle(producer, send("/exchange/fan/k", b"fill"))
    core.handle(producer, begin("t"))
    core.handle(producer, send("/queue/elsewhere", b"e", tx="t"))
    core.handle(producer, send("/exchange/fan/k", b"over", tx="t"))
    with pytest.raises(QueueFull):
        core.handle(producer, commit("t"))
    assert len(core.queues.get("elsewhere") or []) == 0


def test_delayed_messages_do_not_push_a_queue_past_max_messages() -> None:
    core, clock = make(policy("lim", max_messages=1))
    producer, _ = connect(core)
    core.handle(producer, send("/queue/lim", b"a", delay="100"))
    with contextlib.suppress(QueueFull):  # refusing it is fine
        core.handle(producer, send("/queue/lim", b"b", delay="100"))
    tick_at(core, clock, 100)
    assert len(queue(core, "lim")) <= 1


def test_drop_head_drops_the_oldest_and_counts_them() -> None:
    core, _ = make(policy("q", max_messages=3, overflow="drop-head"))
    producer, _ = connect(core)
    for i in range(1, 6):
        core.handle(producer, send("/queue/q", str(i).encode()))
    q = queue(core, "q")
    assert (len(q), q.published, q.dropped, q.dead_lettered) == (3, 5, 2, 0)
    assert "DLQ.q" not in core.queues
    assert [m.body for m in drain(core, "q")] == [b"3", b"4", b"5"]


def test_drop_head_by_bytes() -> None:
    core, _ = make(policy("q", max_bytes=10, overflow="drop-head"))
    producer, _ = connect(core)
    for body in (b"aaaa", b"bbbb", b"cc", b"dddd"):
        core.handle(producer, send("/queue/q", body))
    q = queue(core, "q")
    assert q.store.ready_bytes == 10
    assert q.dropped == 1
    assert [m.body for m in drain(core, "q")] == [b"bbbb", b"cc", b"dddd"]


def test_drop_head_never_leaves_the_queue_over_max_bytes() -> None:
    core, _ = make(policy("q", max_bytes=10, overflow="drop-head"))
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"aaa"))
    core.handle(producer, send("/queue/q", b"bbb"))
    with contextlib.suppress(QueueFull):  # refusing it is fine
        core.handle(producer, send("/queue/q", b"x" * 20))
    assert queue(core, "q").store.ready_bytes <= 10


def test_dead_letter_overflow_moves_the_oldest_to_the_dead_letter_queue() -> None:
    core, clock = make(policy("q", max_messages=2, overflow="dead-letter"))
    producer, _ = connect(core)
    for i in range(1, 5):
        clock.at(i)
        core.handle(producer, send("/queue/q", str(i).encode(), x_n=str(i)))
    q = queue(core, "q")
    assert (len(q), q.dead_lettered, q.dropped) == (2, 2, 0)
    dead = drain(core, "DLQ.q")
    assert [m.body for m in dead] == [b"1", b"2"]
    assert dead_letter_headers(dead[0]) == {
        "x-dead-letter-reason": "overflow",
        "x-dead-letter-queue": "q",
        "x-dead-letter-destination": "/queue/q",
        "x-dead-letter-deliveries": "0",
        "x-dead-letter-time": str(T0 + 3),
    }
    assert header(dead[1], "x-n") == "2"
    assert [m.body for m in drain(core, "q")] == [b"3", b"4"]


def test_dead_letter_overflow_without_a_dead_letter_queue_drops() -> None:
    core, _ = make(policy("q", max_messages=1, overflow="dead-letter", dead_letter=""))
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"1"))
    core.handle(producer, send("/queue/q", b"2"))
    q = queue(core, "q")
    assert (len(q), q.dead_lettered) == (1, 1)
    assert set(core.queues) == {"q"}
    assert [m.body for m in drain(core, "q")] == [b"2"]


# -- 8. redelivery counting ------------------------------------------------------------------


def test_redelivered_and_deliveries_count_every_delivery() -> None:
    core, clock = make()
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"m"))
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    first = only(out)
    assert (first.redelivered, first.deliveries) == (False, 1)
    core.handle(consumer, nack(first.id))  # NACK
    second = only(out)
    assert (second.redelivered, second.deliveries) == (True, 2)
    core.close_session(consumer)  # disconnect
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    third = only(out)
    assert (third.redelivered, third.deliveries) == (True, 3)
    clock.at(0)
    core.handle(consumer, nack(third.id, delay="10"))  # NACK with a delay
    tick_at(core, clock, 10)
    fourth = only(out)
    assert (fourth.redelivered, fourth.deliveries) == (True, 4)
    core.handle(consumer, ack(fourth.id))
    assert queue(core, "q").delivered == 4
    assert queue(core, "q").acked == 1


def test_a_delivery_taken_back_by_its_lease_counts_as_a_delivery() -> None:
    core, clock = make(policy("q", visibility_timeout=1000))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"m"))
    first = only(out)
    assert (first.redelivered, first.deliveries) == (False, 1)
    tick_at(core, clock, 1000)
    second = only(out)
    assert (second.redelivered, second.deliveries) == (True, 2)
    tick_at(core, clock, 2000)
    third = only(out)
    assert (third.redelivered, third.deliveries) == (True, 3)
    assert queue(core, "q").delivered == 3


# -- the durable store -----------------------------------------------------------------------


def open_durable(path: Path, clock: MsClock, *policies: QueuePolicy) -> tuple[BrokerCore, DurableStore]:
    store = DurableStore(path)
    core, _ = make(*policies, store=store, clock=clock)
    return core, store


def pump(core: BrokerCore, store: DurableStore) -> None:
    """Run timers and journal answers until nothing more happens."""
    for _ in range(3):
        core.tick()
        store.flush()


def test_durable_a_delayed_message_survives_a_restart(tmp_path: Path) -> None:
    clock = MsClock()
    core, store = open_durable(tmp_path, clock)
    producer, _ = connect(core)
    core.handle(producer, send("/queue/q", b"later", delay="5000", persistent="true", x_k="v"))
    store.flush()
    store.close()
    core, store = open_durable(tmp_path, clock)
    try:
        consumer, out = connect(core)
        core.handle(consumer, subscribe("/queue/q", "s"))
        clock.at(4999)
        pump(core, store)
        assert out.take() == []
        clock.at(5000)
        pump(core, store)
        message = only(out)
        assert (message.body, header(message, "x-k")) == (b"later", "v")
    finally:
        store.close()


def test_durable_a_dead_lettered_message_survives_a_restart(tmp_path: Path) -> None:
    clock = MsClock()
    core, store = open_durable(tmp_path, clock)
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"poison"))  # not persistent: dead-lettering keeps it
    clock.at(7)
    core.handle(consumer, nack(only(out).id, requeue="false"))
    store.flush()
    store.close()
    core, store = open_durable(tmp_path, clock)
    try:
        assert len(queue(core, "DLQ.q")) == 1
        assert len(queue(core, "q")) == 0
        reader, dlq_out = connect(core)
        core.handle(reader, subscribe("/queue/DLQ.q", "d"))
        pump(core, store)
        dead = only(dlq_out)
        assert dead.body == b"poison"
        assert dead_letter_headers(dead) == {
            "x-dead-letter-reason": "rejected",
            "x-dead-letter-queue": "q",
            "x-dead-letter-destination": "/queue/q",
            "x-dead-letter-deliveries": "1",
            "x-dead-letter-time": str(T0 + 7),
        }
    finally:
        store.close()


def test_durable_a_nack_with_delay_survives_a_restart(tmp_path: Path) -> None:
    clock = MsClock()
    core, store = open_durable(tmp_path, clock)
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"retry", persistent="true"))
    core.handle(consumer, nack(only(out).id, delay="3000"))
    store.flush()
    store.close()
    core, store = open_durable(tmp_path, clock)
    try:
        consumer, out = connect(core)
        core.handle(consumer, subscribe("/queue/q", "s", CI))
        clock.at(2999)
        pump(core, store)
        assert out.take() == []
        clock.at(3000)
        pump(core, store)
        message = only(out)
        assert (message.body, message.redelivered, message.deliveries) == (b"retry", True, 2)
    finally:
        store.close()


def test_durable_the_delivery_count_survives_a_restart(tmp_path: Path) -> None:
    clock = MsClock()
    core, store = open_durable(tmp_path, clock, policy("q", max_deliveries=2))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"bad", persistent="true"))
    assert only(out).deliveries == 1
    core.close_session(consumer)  # given back: one delivery counted
    store.flush()
    store.close()
    core, store = open_durable(tmp_path, clock, policy("q", max_deliveries=2))
    try:
        consumer, out = connect(core)
        core.handle(consumer, subscribe("/queue/q", "s", CI))
        pump(core, store)
        message = only(out)
        assert message.deliveries == 2
        core.handle(consumer, nack(message.id))
        assert out.take() == []
        store.flush()
        reader, dlq_out = connect(core)
        core.handle(reader, subscribe("/queue/DLQ.q", "d"))
        pump(core, store)
        assert header(only(dlq_out), "x-dead-letter-reason") == "max-deliveries"
    finally:
        store.close()


def test_durable_messages_expiring_on_disk_leave_the_queue_on_a_sweep(tmp_path: Path) -> None:
    clock = MsClock()
    store = DurableStore(tmp_path, window=2)
    core, _ = make(store=store, clock=clock)
    try:
        producer, _ = connect(core)
        for i in range(6):
            headers = {"persistent": "true"} | ({"expires": str(T0 + 100)} if i == 4 else {})
            core.handle(producer, send("/queue/q", str(i).encode(), **headers))
        store.flush()
        q = queue(core, "q")
        assert len(q) == 6
        assert q.store.in_memory < 5  # the expiring one is on disk only
        clock.at(100)
        pump(core, store)
        assert len(q) == 5
        assert q.expired == 1
        consumer, out = connect(core)
        core.handle(consumer, subscribe("/queue/q", "s"))
        pump(core, store)
        assert out.bodies() == [b"0", b"1", b"2", b"3", b"5"]
        reader, dlq_out = connect(core)
        core.handle(reader, subscribe("/queue/DLQ.q", "d"))
        pump(core, store)
        dead = only(dlq_out)
        assert (dead.body, header(dead, "x-dead-letter-reason")) == (b"4", "expired")
    finally:
        store.close()


def test_a_consumer_waiting_on_an_empty_dead_letter_queue_gets_dead_lettered_messages() -> None:
    core, _ = make()
    producer, _ = connect(core)
    watcher, dlq_out = connect(core)
    core.handle(watcher, subscribe("/queue/DLQ.q", "w"))
    dlq = queue(core, "DLQ.q")
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"x"))
    core.handle(consumer, nack(only(out).id, requeue="false"))
    assert queue(core, "DLQ.q") is dlq
    assert only(dlq_out).body == b"x"


def test_durable_dead_letters_in_flight_when_another_arrives_survive_a_restart(tmp_path: Path) -> None:
    clock = MsClock()
    core, store = open_durable(tmp_path, clock)
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    core.handle(producer, send("/queue/q", b"one"))
    core.handle(consumer, nack(only(out).id, requeue="false"))
    reader, dlq_out = connect(core)
    core.handle(reader, subscribe("/queue/DLQ.q", "d", CI))
    pump(core, store)
    assert only(dlq_out).body == b"one"  # in flight, not acked: DLQ.q has no ready message
    core.handle(producer, send("/queue/q", b"two"))
    core.handle(consumer, nack(only(out).id, requeue="false"))
    store.flush()
    store.close()
    core, store = open_durable(tmp_path, clock)
    try:
        reader, dlq_out = connect(core)
        core.handle(reader, subscribe("/queue/DLQ.q", "d"))
        pump(core, store)
        assert sorted(dlq_out.bodies()) == [b"one", b"two"]
    finally:
        store.close()


def test_the_lease_heap_stays_bounded_when_every_message_is_acked() -> None:
    """Acked leases must not pile up (with their messages) until their 30-minute deadline."""
    core, _ = make()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    for i in range(50_000):
        core.handle(producer, send("/queue/q", b"%d" % i))
        core.handle(consumer, ack(only(out).id))
    assert len(core.leases) <= 20_000


def test_a_dead_letter_listing_with_bodies_comes_in_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dead_letters, "MAX_LISTING_BYTES", 1024 * 1024)  # 8 MiB: fewer, larger pages
    core, _ = make()
    producer, _ = connect(core)
    bodies = [b"%02d" % n + b"x" * 100_000 for n in range(30)] + [b"big" + b"y" * 2_000_000, b"last"]
    for body in bodies:
        core.handle(producer, send("/queue/DLQ.q", body))
    dlq = queue(core, "DLQ.q")
    pages: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        dead_letters.list_messages(dlq, 10_000, pages.append, with_bodies=True, offset=offset)
        offset = pages[-1]["next"]
    listed = [m["body"]["text"].encode() for page in pages for m in page["messages"]]
    assert listed == bodies  # every one, in order, none twice
    assert len(pages) == 5  # 10 of 100 KB a page, the 2 MB one alone, then the rest
    assert [len(p["messages"]) for p in pages] == [10, 10, 10, 1, 1]
    summaries: list[dict[str, Any]] = []
    dead_letters.list_messages(dlq, 10_000, summaries.append)  # no bodies: never cut
    assert len(summaries[0]["messages"]) == 32
    assert summaries[0]["next"] is None


def test_a_nack_saying_the_consumer_never_started_does_not_count_the_delivery() -> None:
    core, _ = make(policy("q", max_deliveries=3))
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(producer, send("/queue/q", b"prefetched"))
    core.handle(consumer, subscribe("/queue/q", "s", CI))
    for _ in range(5):  # past the limit of 3, were these counted
        message = only(out)
        assert not message.redelivered
        core.handle(consumer, nack(message.id, started="false"))
    message = only(out)
    core.handle(consumer, nack(message.id))  # counted
    message = only(out)
    assert message.redelivered
    assert message.deliveries == 2
    with pytest.raises(InvalidHeader, match="started must be true or false"):
        core.handle(consumer, nack(message.id, started="maybe"))
    assert message.id in consumer.pending  # refused before anything was taken: still held
    core.handle(consumer, begin("t"))
    with pytest.raises(InvalidHeader, match="started must be true or false"):
        core.handle(consumer, nack(message.id, "t", started="maybe"))  # refused as it comes, not at COMMIT
    core.handle(consumer, ack(message.id))
    assert "DLQ.q" not in core.queues  # nothing was dead-lettered
