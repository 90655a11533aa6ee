"""BrokerCore driven directly, with a fake clock and recording outlets (no sockets)."""

from __future__ import annotations

import pytest

from queueit.broker.admin import stat as admin_stat
from queueit.broker.auth import Permissions, User
from queueit.broker.core import BrokerCore
from queueit.broker.errors import (
    AccessDenied,
    AckError,
    InvalidDestination,
    InvalidHeader,
    SubscriptionError,
    TransactionError,
)
from queueit.broker.exchanges import ExchangeType
from queueit.broker.queues import FLOW_HIGH
from queueit.broker.storage import MemoryStore
from queueit.stomp import Abort, AckMode, Disconnect, Limits

from .helpers import (
    FakeClock,
    ack,
    begin,
    commit,
    connect,
    make_core,
    nack,
    send,
    subscribe,
    unsubscribe,
)


def test_queue_delivers_each_message_to_one_consumer_round_robin() -> None:
    core = make_core()
    producer, _ = connect(core)
    a, out_a = connect(core)
    b, out_b = connect(core)
    core.handle(a, subscribe("/queue/jobs", "s1"))
    core.handle(b, subscribe("/queue/jobs", "s1"))
    for i in range(10):
        core.handle(producer, send("/queue/jobs", str(i).encode()))
    got_a, got_b = out_a.bodies(), out_b.bodies()
    assert len(got_a) == 5
    assert len(got_b) == 5
    assert sorted(got_a + got_b) == sorted(str(i).encode() for i in range(10))


def test_queue_keeps_messages_until_a_consumer_arrives_in_fifo_order() -> None:
    core = make_core()
    producer, _ = connect(core)
    for i in range(3):
        core.handle(producer, send("/queue/q", str(i).encode()))
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    assert out.bodies() == [b"0", b"1", b"2"]


def test_headers_pass_through_and_ids_are_unique() -> None:
    core = make_core()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    core.handle(producer, send("/queue/q", b"a", x_custom="1", content_type="text/plain", receipt="r"))
    core.handle(producer, send("/queue/q", b"b"))
    first, second = out.take()
    assert ("x-custom", "1") in first.message.headers
    assert ("content-type", "text/plain") in first.message.headers
    names = [name for name, _ in first.message.headers]
    assert "receipt" not in names
    assert "destination" not in names
    assert first.message.id != second.message.id


def test_topic_copies_to_every_current_subscriber_and_drops_without_any() -> None:
    core = make_core()
    producer, _ = connect(core)
    core.handle(producer, send("/topic/news", b"nobody hears this"))
    subs = [connect(core) for _ in range(3)]
    for s, _ in subs:
        core.handle(s, subscribe("/topic/news", "t"))
    core.handle(producer, send("/topic/news", b"hello"))
    ids = set()
    for _, out in subs:
        (delivery,) = out.take()
        assert delivery.message.body == b"hello"
        assert delivery.message.destination == "/topic/news"
        ids.add(delivery.message.id)
    assert len(ids) == 3  # each copy has its own id, so acks never collide


def test_topic_wildcards() -> None:
    core = make_core()
    producer, _ = connect(core)
    s, out = connect(core)
    core.handle(s, subscribe("/topic/stock.*.nyse", "one"))
    core.handle(s, subscribe("/topic/stock.#", "all"))
    core.handle(producer, send("/topic/stock.ibm.nyse", b"1"))
    core.handle(producer, send("/topic/stock.ibm.lse", b"2"))
    got = sorted((d.subscription, d.message.body) for d in out.take())
    assert got == [("all", b"1"), ("all", b"2"), ("one", b"1")]


def test_exchanges_direct_fanout_topic_bound_to_queues() -> None:
    core = make_core()
    core.declare_exchange("direct-ex", ExchangeType.DIRECT)
    core.declare_exchange("fan", ExchangeType.FANOUT)
    core.declare_exchange("events", ExchangeType.TOPIC)
    core.bind("direct-ex", "email", "welcome")
    core.bind("fan", "a", "")
    core.bind("fan", "b", "")
    core.bind("events", "audit", "user.#")
    producer, _ = connect(core)
    core.handle(producer, send("/exchange/direct-ex/welcome", b"d1"))
    core.handle(producer, send("/exchange/direct-ex/other", b"d2"))
    core.handle(producer, send("/exchange/fan/anything", b"f"))
    core.handle(producer, send("/exchange/events/user.saved", b"e1"))
    core.handle(producer, send("/exchange/events/order.saved", b"e2"))
    depths = {name: len(q) for name, q in core.queues.items()}
    assert depths == {"email": 1, "a": 1, "b": 1, "audit": 1}


def test_send_to_undeclared_exchange_is_refused() -> None:
    core = make_core()
    producer, _ = connect(core)
    with pytest.raises(InvalidDestination, match="No exchange named 'nope'"):
        core.handle(producer, send("/exchange/nope/key"))


def test_exchange_subscription_gets_a_private_bound_queue() -> None:
    core = make_core()
    core.declare_exchange("events", ExchangeType.TOPIC)
    producer, _ = connect(core)
    s, out = connect(core)
    core.handle(s, subscribe("/exchange/events/user.*", "s"))
    core.handle(producer, send("/exchange/events/user.saved", b"u"))
    assert out.bodies() == [b"u"]
    core.close_session(s)
    assert not core.exchanges["events"].bindings


def test_unknown_destination_prefix() -> None:
    core = make_core()
    s, _ = connect(core)
    with pytest.raises(InvalidDestination, match="/queue/NAME"):
        core.handle(s, send("/bogus/x"))


def test_client_individual_ack_and_prefetch_window() -> None:
    core = make_core()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", AckMode.CLIENT_INDIVIDUAL, prefetch_count="2"))
    for i in range(5):
        core.handle(producer, send("/queue/q", str(i).encode()))
    first = out.take()
    assert [d.message.body for d in first] == [b"0", b"1"]
    core.handle(consumer, ack(first[1].message.id))
    (third,) = out.take()
    assert third.message.body == b"2"
    assert core.queues["q"].in_flight == 2
    with pytest.raises(AckError):
        core.handle(consumer, ack(first[1].message.id))  # already acked


def test_client_ack_is_cumulative_within_the_subscription() -> None:
    core = make_core()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", AckMode.CLIENT, prefetch_count="10"))
    for i in range(4):
        core.handle(producer, send("/queue/q", str(i).encode()))
    deliveries = out.take()
    core.handle(consumer, ack(deliveries[2].message.id))
    queue = core.queues["q"]
    assert queue.in_flight == 1
    assert queue.acked == 3
    core.handle(consumer, ack(deliveries[3].message.id))
    assert queue.in_flight == 0


def test_ack_on_auto_subscription_or_unknown_id_is_an_error() -> None:
    core = make_core()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    core.handle(producer, send("/queue/q"))
    (delivery,) = out.take()
    with pytest.raises(AckError, match="no message with this id"):
        core.handle(consumer, ack(delivery.message.id))
    with pytest.raises(AckError):
        core.handle(consumer, ack("m-unknown"))


def test_ack_from_another_connection_is_refused() -> None:
    core = make_core()
    producer, _ = connect(core)
    consumer, out = connect(core)
    other, _ = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", AckMode.CLIENT_INDIVIDUAL))
    core.handle(producer, send("/queue/q"))
    (delivery,) = out.take()
    with pytest.raises(AckError):
        core.handle(other, ack(delivery.message.id))


def test_nack_requeues_at_the_head_marked_redelivered_for_the_next_consumer() -> None:
    core = make_core()
    producer, _ = connect(core)
    a, out_a = connect(core)
    b, out_b = connect(core)
    core.handle(a, subscribe("/queue/q", "s", AckMode.CLIENT_INDIVIDUAL, prefetch_count="1"))
    core.handle(b, subscribe("/queue/q", "s", AckMode.CLIENT_INDIVIDUAL, prefetch_count="1"))
    core.handle(producer, send("/queue/q", b"first"))
    core.handle(producer, send("/queue/q", b"second"))
    core.handle(producer, send("/queue/q", b"third"))
    (to_a,) = out_a.take()
    (to_b,) = out_b.take()
    assert to_b.message.body == b"second"
    core.handle(a, nack(to_a.message.id))
    (again,) = out_a.take() or out_b.take()
    assert again.message.body == to_a.message.body
    assert again.message.redelivered
    assert again.message.deliveries == 2


def test_nack_without_requeue_drops_the_message() -> None:
    core = make_core()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", AckMode.CLIENT_INDIVIDUAL))
    core.handle(producer, send("/queue/q"))
    (delivery,) = out.take()
    core.handle(consumer, nack(delivery.message.id, requeue="false"))
    assert len(core.queues["q"]) == 0
    assert core.queues["q"].in_flight == 0


def test_closed_connection_requeues_unacked_for_another_consumer_first() -> None:
    core = make_core()
    producer, _ = connect(core)
    a, out_a = connect(core)
    core.handle(a, subscribe("/queue/q", "s", AckMode.CLIENT_INDIVIDUAL, prefetch_count="2"))
    for body in (b"1", b"2", b"3"):
        core.handle(producer, send("/queue/q", body))
    held = out_a.take()
    assert [d.message.body for d in held] == [b"1", b"2"]
    core.close_session(a)
    b, out_b = connect(core)
    core.handle(b, subscribe("/queue/q", "s", AckMode.CLIENT_INDIVIDUAL, prefetch_count="10"))
    got = out_b.take()
    assert [d.message.body for d in got] == [b"1", b"2", b"3"]
    assert [d.message.redelivered for d in got] == [True, True, False]


def test_unsubscribe_requeues_what_it_held() -> None:
    core = make_core()
    producer, _ = connect(core)
    a, out = connect(core)
    core.handle(a, subscribe("/queue/q", "s", AckMode.CLIENT))
    core.handle(producer, send("/queue/q"))
    assert len(out.take()) == 1
    core.handle(a, unsubscribe("s"))
    assert len(core.queues["q"]) == 1
    core.handle(a, unsubscribe("s"))  # a second UNSUBSCRIBE is harmless


def test_duplicate_subscription_id_and_subscription_limit() -> None:
    core = make_core(Limits(max_subscriptions=2))
    s, _ = connect(core)
    core.handle(s, subscribe("/queue/a", "x"))
    with pytest.raises(SubscriptionError, match="already exists"):
        core.handle(s, subscribe("/queue/b", "x"))
    core.handle(s, subscribe("/queue/b", "y"))
    with pytest.raises(SubscriptionError, match="at most 2"):
        core.handle(s, subscribe("/queue/c", "z"))


def test_prefetch_is_validated_and_capped() -> None:
    core = make_core(Limits(max_unacked=50, default_prefetch=10))
    s, _ = connect(core)
    with pytest.raises(InvalidHeader, match="prefetch-count"):
        core.handle(s, subscribe("/queue/a", "x", prefetch_count="lots"))
    core.handle(s, subscribe("/queue/a", "y", AckMode.CLIENT, prefetch_count="1000"))
    core.handle(s, subscribe("/queue/b", "z", AckMode.CLIENT))
    core.handle(s, subscribe("/queue/c", "w", AckMode.CLIENT, **{"activemq.prefetchSize": "3"}))
    assert s.subscriptions["y"].prefetch == 50
    assert s.subscriptions["z"].prefetch == 10
    assert s.subscriptions["w"].prefetch == 3


def test_unwritable_outlet_stops_dispatch_until_resume() -> None:
    core = make_core()
    producer, _ = connect(core)
    slow, slow_out = connect(core)
    core.handle(slow, subscribe("/queue/q", "s"))
    slow_out.writable = False
    for _ in range(3):
        core.handle(producer, send("/queue/q"))
    assert slow_out.deliveries == []
    fast, fast_out = connect(core)
    core.handle(fast, subscribe("/queue/q", "s"))
    assert len(fast_out.take()) == 3  # the slow consumer does not hold others up
    core.handle(producer, send("/queue/q"))
    slow_out.writable = True
    core.resume(slow)
    assert len(slow_out.take()) + len(fast_out.take()) == 1


def test_transactions_apply_sends_and_acks_on_commit_only() -> None:
    core = make_core()
    producer, _ = connect(core)
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s", AckMode.CLIENT_INDIVIDUAL))
    core.handle(producer, begin("t1"))
    core.handle(producer, send("/queue/q", b"tx", tx="t1"))
    assert out.deliveries == []
    core.handle(producer, commit("t1"))
    (delivery,) = out.take()
    core.handle(consumer, begin("t2"))
    core.handle(consumer, ack(delivery.message.id, tx="t2"))
    assert core.queues["q"].in_flight == 1
    core.handle(consumer, commit("t2"))
    assert core.queues["q"].in_flight == 0


def test_abort_discards_sends_and_leaves_acks_pending() -> None:
    core = make_core()
    producer, _ = connect(core)
    core.handle(producer, begin("t"))
    core.handle(producer, send("/queue/q", tx="t"))
    core.handle(producer, Abort("t", None))
    assert "q" not in core.queues or len(core.queues["q"]) == 0


def test_transaction_errors_and_limits() -> None:
    core = make_core(Limits(max_transactions=1, max_transaction_frames=2))
    s, _ = connect(core)
    with pytest.raises(TransactionError, match="send BEGIN first"):
        core.handle(s, send("/queue/q", tx="nope"))
    with pytest.raises(TransactionError):
        core.handle(s, commit("nope"))
    core.handle(s, begin("t"))
    with pytest.raises(TransactionError, match="already open"):
        core.handle(s, begin("t"))
    with pytest.raises(TransactionError, match="at most 1"):
        core.handle(s, begin("u"))
    core.handle(s, send("/queue/q", tx="t"))
    core.handle(s, send("/queue/q", tx="t"))
    with pytest.raises(TransactionError, match="too large"):
        core.handle(s, send("/queue/q", tx="t"))


def test_open_transactions_are_aborted_when_the_connection_closes() -> None:
    core = make_core()
    s, _ = connect(core)
    core.handle(s, begin("t"))
    core.handle(s, send("/queue/q", tx="t"))
    core.handle(s, Disconnect(None))
    core.close_session(s)
    assert len(core.queues.get("q") or []) == 0


def test_expired_messages_are_not_delivered() -> None:
    clock = FakeClock()
    core = make_core(clock=clock)
    producer, _ = connect(core)
    now_ms = int(clock.now * 1000)
    core.handle(producer, send("/queue/q", b"old", expires=str(now_ms + 1000)))
    core.handle(producer, send("/queue/q", b"fresh", expires=str(now_ms + 60_000)))
    core.handle(producer, send("/queue/q", b"forever"))
    clock.now += 5
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    assert out.bodies() == [b"fresh", b"forever"]
    assert core.queues["q"].expired == 1


@pytest.mark.parametrize(("name", "value"), [("priority", "10"), ("priority", "high"), ("expires", "-5")])
def test_bad_priority_and_expires_are_refused(name: str, value: str) -> None:
    core = make_core()
    s, _ = connect(core)
    with pytest.raises(InvalidHeader, match=name):
        core.handle(s, send("/queue/q", b"x", **{name: value}))


def test_permissions_are_checked_per_destination() -> None:
    core = make_core()
    alice = User("alice", "", Permissions(read=("/queue/in*",), write=("/queue/out",), admin=("/queue/*",)))
    s, _ = connect(core, alice)
    core.handle(s, send("/queue/out"))
    with pytest.raises(AccessDenied, match="'write' permission on '/queue/inbox'") as info:
        core.handle(s, send("/queue/inbox"))
    assert info.value.message == "Access refused: write on /queue/inbox"
    core.handle(s, subscribe("/queue/inbox", "s"))
    with pytest.raises(AccessDenied, match="read"):
        core.handle(s, subscribe("/queue/out", "t"))


def test_creating_a_queue_needs_admin() -> None:
    core = make_core()
    bob = User("bob", "", Permissions(read=("*",), write=("*",)))
    guest_session, _ = connect(core)
    core.handle(guest_session, send("/queue/existing"))
    s, _ = connect(core, bob)
    core.handle(s, send("/queue/existing"))
    with pytest.raises(AccessDenied, match="admin"):
        core.handle(s, send("/queue/new"))


def test_temp_queue_request_reply() -> None:
    core = make_core()
    requester, req_out = connect(core)
    responder, resp_out = connect(core)
    core.handle(responder, subscribe("/queue/rpc", "s"))
    core.handle(requester, send("/queue/rpc", b"ping", reply_to="/temp-queue/answers"))
    (request,) = resp_out.take()
    reply_to = dict(request.message.headers)["reply-to"]
    assert reply_to.startswith("/reply-queue/")
    core.handle(responder, send(reply_to, b"pong"))
    (reply,) = req_out.take()
    assert reply.message.body == b"pong"
    assert reply.subscription == "/temp-queue/answers"
    core.close_session(requester)
    assert not any(name.startswith("~temp/") for name in core.queues)
    core.handle(responder, send(reply_to, b"late"))  # the requester is gone: dropped quietly


def test_durable_topic_subscription_keeps_receiving_while_away() -> None:
    core = make_core()
    producer, _ = connect(core)
    s, out = connect(core, client_id="app-1")
    core.handle(
        s, subscribe("/topic/orders", "sub", AckMode.CLIENT_INDIVIDUAL, durable_subscription_name="orders")
    )
    core.handle(producer, send("/topic/orders", b"1"))
    assert out.bodies() == [b"1"]
    core.close_session(s)  # unacked "1" goes back to the durable queue
    core.handle(producer, send("/topic/orders", b"2"))
    again, out2 = connect(core, client_id="app-1")
    core.handle(
        again,
        subscribe("/topic/orders", "sub", AckMode.CLIENT_INDIVIDUAL, durable_subscription_name="orders"),
    )
    assert out2.bodies() == [b"1", b"2"]
    core.handle(again, unsubscribe("sub", durable="true"))
    assert not any(name.startswith("~durable/") for name in core.queues)


def test_durable_subscription_in_use_is_refused() -> None:
    core = make_core()
    a, _ = connect(core, client_id="c")
    b, _ = connect(core, client_id="c")
    core.handle(a, subscribe("/topic/t", "s", durable="true"))
    with pytest.raises(SubscriptionError, match="in use"):
        core.handle(b, subscribe("/topic/t", "s", durable="true"))


def test_flow_control_blocks_a_publisher_to_a_backed_up_queue_until_it_drains() -> None:
    core = make_core()
    producer, producer_out = connect(core)
    consumer, consumer_out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    consumer_out.writable = False  # the consumer cannot keep up
    for _ in range(FLOW_HIGH):
        core.handle(producer, send("/queue/q"))
    assert not producer_out.is_blocked()
    core.handle(producer, send("/queue/q"))
    assert producer_out.is_blocked()
    consumer_out.writable = True
    core.resume(consumer)
    assert not producer_out.is_blocked()
    assert len(consumer_out.take()) == FLOW_HIGH + 1


def test_flow_control_releases_publishers_when_the_last_consumer_leaves() -> None:
    core = make_core()
    producer, producer_out = connect(core)
    consumer, consumer_out = connect(core)
    core.handle(consumer, subscribe("/queue/q", "s"))
    consumer_out.writable = False
    for _ in range(FLOW_HIGH + 1):
        core.handle(producer, send("/queue/q"))
    assert producer_out.is_blocked()
    core.close_session(consumer)
    assert not producer_out.is_blocked()


def test_a_publisher_that_consumes_the_queue_is_never_blocked_by_it() -> None:
    core = make_core()
    s, out = connect(core)
    core.handle(s, subscribe("/queue/q", "s", AckMode.CLIENT, prefetch_count="1"))
    for _ in range(FLOW_HIGH + 10):
        core.handle(s, send("/queue/q"))
    assert not out.is_blocked()  # it could not ack its way out


def test_commit_is_all_or_nothing() -> None:
    core = make_core()
    guest, _ = connect(core)
    core.handle(guest, send("/queue/a", b"setup"))
    core.handle(guest, send("/queue/b", b"setup"))
    consumer, out = connect(core)
    core.handle(consumer, subscribe("/queue/a", "s"))
    out.take()
    bob = User("bob", "", Permissions(write=("*",), read=("*",)))  # may not create queues
    b, _ = connect(core, bob)
    core.handle(b, begin("t"))
    core.handle(b, send("/queue/a", b"first", tx="t"))
    core.handle(b, send("/queue/b", b"second", tx="t"))  # /queue/b exists now: accepted
    with pytest.raises(AccessDenied, match="admin"):
        core.handle(b, send("/queue/c", b"third", tx="t"))  # refused when it arrives
    core.delete_queue(core.queues["b"])  # re-creating it at COMMIT would need admin
    with pytest.raises(AccessDenied, match="admin"):
        core.handle(b, commit("t"))
    assert out.take() == []  # "first" was not applied either


def test_temp_queue_subscribe_with_the_destination_as_id_has_one_consumer() -> None:
    core = make_core()
    s, out = connect(core)
    responder, _ = connect(core)
    core.handle(s, send("/queue/rpc", b"ask", reply_to="/temp-queue/r"))  # automatic subscription
    core.handle(s, subscribe("/temp-queue/r", "/temp-queue/r", AckMode.CLIENT_INDIVIDUAL))
    reply_queue = core.queues[f"~temp/{s.id}/r"]
    assert len(reply_queue.consumers) == 1
    core.handle(responder, send(f"/reply-queue/{s.id}/r", b"answer"))
    (delivery,) = out.take()
    core.handle(s, ack(delivery.message.id))


def test_temp_queues_per_connection_are_limited() -> None:
    core = make_core(Limits(max_subscriptions=3))
    s, _ = connect(core)
    for i in range(3):
        core.handle(s, send("/queue/q", reply_to=f"/temp-queue/t{i}"))
        core.handle(s, unsubscribe(f"/temp-queue/t{i}"))
    with pytest.raises(SubscriptionError, match="temp queues"):
        core.handle(s, send("/queue/q", reply_to="/temp-queue/t9"))


@pytest.mark.parametrize(
    ("header", "value"),
    [("expires", "9" * 5000), ("priority", "0" * 5000 + "1"), ("prefetch-count", "9" * 5000)],
)
def test_huge_numbers_are_refused_not_crashed(header: str, value: str) -> None:
    core = make_core()
    s, _ = connect(core)
    event = (
        subscribe("/queue/q", "s", prefetch_count=value)
        if header == "prefetch-count"
        else send("/queue/q", b"x", **{header: value})
    )
    with pytest.raises(InvalidHeader, match=header):
        core.handle(s, event)


def test_routing_keys_with_control_characters_are_refused() -> None:
    core = make_core()
    core.declare_exchange("ev", ExchangeType.TOPIC)
    s, _ = connect(core)
    with pytest.raises(InvalidDestination, match="routing key"):
        core.handle(s, send("/exchange/ev/a\nmessage-id:FORGED"))


def test_durable_subscriptions_belong_to_their_user() -> None:
    core = make_core()
    alice = User("alice", "", Permissions.everything())
    bob = User("bob", "", Permissions.everything())
    producer, _ = connect(core)
    a, _ = connect(core, alice, client_id="app")
    core.handle(a, subscribe("/topic/pay", "s", durable_subscription_name="pay"))
    core.close_session(a)
    core.handle(producer, send("/topic/pay", b"salary"))
    b, out_b = connect(core, bob, client_id="app")  # same client-id, another user
    core.handle(b, subscribe("/topic/pay", "s", durable_subscription_name="pay"))
    assert out_b.bodies() == []
    a2, out_a = connect(core, alice, client_id="app")
    core.handle(a2, subscribe("/topic/pay", "s", durable_subscription_name="pay"))
    assert out_a.bodies() == [b"salary"]


def test_creating_a_durable_subscription_needs_admin() -> None:
    core = make_core()
    reader = User("reader", "", Permissions(read=("/topic/*",)))
    s, _ = connect(core, reader)
    core.handle(s, subscribe("/topic/news", "plain"))  # a plain subscription is fine
    with pytest.raises(AccessDenied, match="admin"):
        core.handle(s, subscribe("/topic/news", "keep", durable="true"))


def test_transaction_bytes_are_limited_per_connection() -> None:
    core = BrokerCore(MemoryStore(), Limits(), max_transaction_bytes=3000)
    s, _ = connect(core)
    core.handle(s, begin("a"))
    core.handle(s, begin("b"))
    core.handle(s, send("/queue/q", b"x" * 1400, tx="a"))
    core.handle(s, send("/queue/q", b"x" * 1400, tx="b"))
    with pytest.raises(TransactionError, match="all open transactions"):
        core.handle(s, send("/queue/q", b"x" * 400, tx="a"))


def test_stat_shows_only_what_the_user_administers() -> None:
    core = make_core()
    core.declare_exchange("ev", ExchangeType.TOPIC)
    core.bind("ev", "audit", "#")
    guest, _ = connect(core)
    core.handle(guest, send("/queue/billing"))
    core.handle(guest, subscribe("/exchange/ev/x.*", "private"))
    alice = User("alice", "", Permissions(admin=("/queue/aud*", "/exchange/ev")))
    connect(core, alice)
    view = admin_stat(core, lambda d: alice.permissions.allows("admin", d))
    assert [q["name"] for q in view["queues"]] == ["audit"]
    assert view["connections"] is None
    assert (view["groups"], view["progress_reports"]) == (None, None)  # broker-wide: admins of it only
    assert view["exchanges"] == [{"name": "ev", "type": "topic", "bindings": [["#", "audit"]]}]
    full = admin_stat(core, lambda d: True)
    assert full["connections"] == 2
    assert full["groups"] == {"open": 0, "released": 0, "expired": 0}
    assert {q["name"] for q in full["queues"]} == {"audit", "billing"}
