"""The delivery contract (docs/delivery.md), one scenario per promise, for every transport.

``test_contract.py`` runs each scenario against each transport; a transport module adds
itself there with a :class:`Backend`. Scenarios use fresh queue names, so backends may
share one broker between tests. A scenario that needs a capability the transport does not
declare checks that asking for it raises ``Unsupported`` instead.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import pytest

from queueit.transports import (
    Delivery,
    Leadership,
    MemberReport,
    Outgoing,
    StoredMessage,
    Transport,
    TransportClosed,
    TransportRefused,
    Unique,
    Unsupported,
)
from queueit.transports.base import MAX_PUBLISH_MANY, MAX_PUBLISH_MANY_BYTES


@dataclass
class Backend:
    """How to open connected transports to one broker."""

    name: str
    make: Callable[[], Transport]

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Transport]:
        transport = self.make()
        await transport.connect()
        try:
            yield transport
        finally:
            await transport.close()


Scenario = Callable[[Backend], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


def fresh(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def get(t: Transport, timeout: float = 5.0) -> Delivery:
    delivery = await t.next_delivery(timeout)
    assert delivery is not None, f"nothing delivered within {timeout} s"
    return delivery


async def nothing(t: Transport, timeout: float = 0.3) -> None:
    delivery = await t.next_delivery(timeout)
    assert delivery is None, f"unexpected delivery {delivery.body!r}"


async def dead_letters(t: Transport, queue: str, count: int, timeout: float = 10.0) -> list[StoredMessage]:
    """``queue``'s dead letters once there are ``count`` of them, or what there is after
    ``timeout`` s: RabbitMQ dead-letters a message past its delivery limit on its own time."""
    deadline = time.monotonic() + timeout
    while len(dead := await t.dead_letters(queue, 10)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return dead


async def drain(t: Transport, queue: str, settle: float = 3.0) -> list[bytes]:
    """Every body ``queue`` delivers within ``settle`` seconds of quiet, acked."""
    await t.consume(queue, prefetch=50, lease=30)
    bodies = []
    while (delivery := await t.next_delivery(settle)) is not None:
        bodies.append(delivery.body)
        await t.ack(delivery)
    return bodies


@scenario
async def published_messages_arrive_unchanged(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        await t.publish(q, Outgoing(b'{"n": 1}', {"x-custom": "yes", "job": "a.b"}))
        await t.publish(q, Outgoing(b"\x00binary\xff", content_type="application/octet-stream"))
        await t.consume(q, prefetch=10, lease=30)
        first, second = await get(t), await get(t)
        assert (first.body, second.body) == (b'{"n": 1}', b"\x00binary\xff")
        assert first.headers["x-custom"] == "yes"
        assert first.headers["job"] == "a.b"
        assert (first.queue, first.redelivered, first.delivery_count) == (q, False, 1)
        assert first.message_id != second.message_id
        await t.ack(first)
        await t.ack(second)
        await nothing(t)


@scenario
async def acked_messages_are_gone_for_every_consumer(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        await t.publish(q, Outgoing(b"once"))
        await t.consume(q, prefetch=1, lease=30)
        await t.ack(await get(t))
    async with b.open() as t:
        await t.consume(q, prefetch=1, lease=30)
        await nothing(t, 0.5)


@scenario
async def a_consumer_holds_no_more_than_its_prefetch(b: Backend) -> None:
    q = fresh()
    async with b.open() as t, b.open() as other:
        for i in range(4):
            await t.publish(q, Outgoing(str(i).encode()))
        await t.consume(q, prefetch=2, lease=30)
        first, second = await get(t), await get(t)
        await nothing(t, 0.3)  # two held: no third
        await other.consume(q, prefetch=5, lease=30)
        rest = [await get(other), await get(other)]  # the other two go to a free consumer
        assert sorted(d.body for d in (first, second, *rest)) == [b"0", b"1", b"2", b"3"]
        for d in (first, second):
            await t.ack(d)
        for d in rest:
            await other.ack(d)


@scenario
async def a_slot_freed_by_any_settlement_takes_the_next_message(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        for i in range(4):
            await t.publish(q, Outgoing(str(i).encode()))
        await t.consume(q, prefetch=1, lease=30)
        first = await get(t)
        await t.reject(first, "invalid")  # frees the only slot
        second = await get(t)
        await t.settle(second, [])
        third = await get(t)
        await t.release(third, delay=60)
        fourth = await get(t)
        assert [d.body for d in (first, second, third, fourth)] == [b"0", b"1", b"2", b"3"]
        await t.ack(fourth)


@scenario
async def a_lost_connection_gives_its_deliveries_back_marked_redelivered(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        await t.publish(q, Outgoing(b"job"))
        await t.consume(q, prefetch=1, lease=30)
        first = await get(t)
    async with b.open() as t:
        await t.consume(q, prefetch=1, lease=30)
        again = await get(t)
        assert again.body == b"job"
        assert again.message_id == first.message_id
        assert again.redelivered
        assert again.delivery_count == 2
        await t.ack(again)


@scenario
async def a_lease_that_runs_out_returns_the_message_to_another_consumer(b: Backend) -> None:
    q = fresh()
    async with b.open() as slow, b.open() as other:
        if slow.capabilities.lease != "timed":
            # Connection leases: held while the connection lives, however long the job runs.
            await slow.publish(q, Outgoing(b"long"))
            await slow.consume(q, prefetch=1, lease=0.2)
            held = await get(slow)
            await other.consume(q, prefetch=1, lease=0.2)
            await nothing(other, 1.0)
            await slow.ack(held)
            return
        await slow.publish(q, Outgoing(b"long"))
        await slow.consume(q, prefetch=1, lease=1.5)
        held = await get(slow)
        await other.consume(q, prefetch=1, lease=30)
        await nothing(other, 0.3)  # a second of slack on the lease for a loaded machine
        again = await get(other, 8.0)
        assert (again.message_id, again.redelivered, again.delivery_count) == (held.message_id, True, 2)
        await other.ack(again)


@scenario
async def an_extended_lease_keeps_the_message(b: Backend) -> None:
    q = fresh()
    async with b.open() as worker, b.open() as other:
        await worker.publish(q, Outgoing(b"long"))
        await worker.consume(q, prefetch=1, lease=2.0)
        held = await get(worker)
        await other.consume(q, prefetch=1, lease=30)
        for _ in range(8):  # 4 s in all: twice the lease; 1.5 s of slack at each extension
            await worker.extend(held, 2.0)
            await nothing(other, 0.5)
        await worker.ack(held)
        await nothing(other, 2.5)  # past the last extension: the ack, not the lease, kept it


@scenario
async def released_messages_come_back_after_their_delay(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        await t.publish(q, Outgoing(b"again"))
        await t.consume(q, prefetch=1, lease=30)
        await t.release(await get(t))
        now = await get(t)
        assert (now.redelivered, now.delivery_count) == (True, 2)
        started = time.monotonic()
        await t.release(now, delay=0.6)
        later = await get(t)
        assert time.monotonic() - started >= 0.55
        assert later.delivery_count == 3
        await t.ack(later)


@scenario
async def delayed_messages_wait_on_the_broker(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        if not t.capabilities.delay:
            with pytest.raises(Unsupported):
                await t.publish(q, Outgoing(b"later", delay=1))
            return
        started = time.monotonic()
        await t.publish(q, Outgoing(b"later", delay=0.8))
        await t.publish(q, Outgoing(b"now"))
        await t.consume(q, prefetch=5, lease=30)
        first = await get(t)
        assert first.body == b"now"
        await t.ack(first)
        second = await get(t)
        assert second.body == b"later"
        assert time.monotonic() - started >= 0.75
        await t.ack(second)


@scenario
async def higher_priorities_are_delivered_first(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        if not t.capabilities.priority:
            with pytest.raises(Unsupported):
                await t.publish(q, Outgoing(b"p", priority=9))
            return
        for body, priority in ((b"low-1", 1), (b"high", 9), (b"low-2", 1), (b"default", None)):
            await t.publish(q, Outgoing(body, priority=priority))
        await t.consume(q, prefetch=1, lease=30)
        got = []
        for _ in range(4):
            d = await get(t)
            got.append(d.body)
            await t.ack(d)
        assert got == [b"high", b"default", b"low-1", b"low-2"]


@scenario
async def settle_acks_and_publishes_together(b: Backend) -> None:
    q, retry, failed = fresh(), fresh("retry"), fresh("failed")
    async with b.open() as t:
        await t.publish(q, Outgoing(b"attempt-1"))
        await t.consume(q, prefetch=1, lease=30)
        d = await get(t)
        await t.settle(d, [(retry, Outgoing(b"attempt-2", {"attempt": "2"})), (failed, Outgoing(b"record"))])
        await nothing(t, 0.3)
    async with b.open() as t:
        await t.consume(retry, prefetch=5, lease=30)
        await t.consume(failed, prefetch=5, lease=30)
        got = {(await get(t)).body, (await get(t)).body}
        assert got == {b"attempt-2", b"record"}


@scenario
async def a_settle_refused_before_sending_sends_nothing_and_leaves_the_delivery_held(b: Backend) -> None:
    q, retry = fresh(), fresh("retry")
    async with b.open() as t:
        await t.publish(q, Outgoing(b"attempt-1"))
        await t.consume(q, prefetch=1, lease=30)
        d = await get(t)
        for _ in range(20):  # more than a connection's open transactions (16 on queueit://)
            with pytest.raises(ValueError, match="bad queue name"):
                await t.settle(d, [(retry, Outgoing(b"never")), ("bad name!", Outgoing(b"never"))])
        await t.settle(d, [(retry, Outgoing(b"attempt-2"))])  # still held, still settles
        await nothing(t)
        await t.consume(retry, prefetch=5, lease=30)
        assert (await get(t)).body == b"attempt-2"
        await nothing(t)


@scenario
async def publish_many_puts_every_message_on_its_queue(b: Backend) -> None:
    q, other, later = fresh(), fresh("other"), fresh("later")
    async with b.open() as t:
        await t.publish_many([])  # nothing to do
        many = [(q, Outgoing(b"%d" % i, {"n": str(i)})) for i in range(2_000)]
        await t.publish_many([*many, (other, Outgoing(b"elsewhere")), (later, Outgoing(b"late", delay=0.5))])
        sent = time.monotonic()
        await t.consume(q, prefetch=100, lease=30)
        got = []
        for _ in range(2_000):
            d = await get(t)
            got.append(d.body)
            assert d.headers["n"] == d.body.decode()
            await t.ack(d)
        await nothing(t)
        # Order holds except across redeliveries, which none of these had.
        assert got == [b"%d" % i for i in range(2_000)]
    async with b.open() as t:
        await t.consume(other, prefetch=5, lease=30)
        assert (await get(t)).body == b"elsewhere"
        await t.consume(later, prefetch=5, lease=30)
        assert (await get(t)).body == b"late"
        assert time.monotonic() - sent >= 0.45


@scenario
async def publish_many_refuses_before_sending_any(b: Backend) -> None:
    q = fresh()
    good = (q, Outgoing(b"never"))
    async with b.open() as t:
        for _ in range(20):  # more than a connection's open transactions (16 on queueit://)
            with pytest.raises(ValueError, match="bad queue name"):
                await t.publish_many([good, ("bad name!", Outgoing(b"never"))])
        with pytest.raises(ValueError, match="at most 10000 messages"):
            await t.publish_many([good] * (MAX_PUBLISH_MANY + 1))
        big = (q, Outgoing(b"x" * (MAX_PUBLISH_MANY_BYTES // 8 + 1)))
        with pytest.raises(ValueError, match="bytes"):
            await t.publish_many([big] * 8)
        with pytest.raises(Unsupported, match="unique key"):
            await t.publish_many([good, (q, Outgoing(b"never", unique=Unique("k")))])
        if t.capabilities.priority:
            with pytest.raises(ValueError, match="priority"):
                Outgoing(b"", priority=10)
        else:
            with pytest.raises(Unsupported):
                await t.publish_many([good, (q, Outgoing(b"never", priority=9))])
        await t.publish_many([(q, Outgoing(b"sent"))])  # the connection is fine
        await t.consume(q, prefetch=5, lease=30)
        assert (await get(t)).body == b"sent"
        await nothing(t)


@scenario
async def rejected_messages_go_to_the_dead_letter_queue_unchanged(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        await t.publish(q, Outgoing(b"\xffnot json", {"x-keep": "1"}))
        await t.publish(q, Outgoing(b"second"))
        await t.consume(q, prefetch=2, lease=30)
        bad, second = await get(t), await get(t)
        await t.reject(bad, "invalid", "the body is not UTF-8 text")
        await t.reject(second, "rejected")
        await nothing(t, 0.3)
        dead = await t.dead_letters(q, 10)
        assert [(m.body, m.reason) for m in dead] == [(b"\xffnot json", "invalid"), (b"second", "rejected")]
        assert dead[0].headers["x-keep"] == "1"
        assert dead[0].headers["x-dead-letter-error"] == "the body is not UTF-8 text"
        assert "x-dead-letter-error" not in dead[1].headers
        assert await t.delete_dead_letters(q, dead[1].message_id) == 1
        assert await t.redrive(q, None) == 1
        back = await get(t)
        assert back.body == b"\xffnot json"
        await t.ack(back)
        assert await t.dead_letters(q, 10) == []


@scenario
async def a_message_given_back_too_often_is_dead_lettered(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        await t.publish(q, Outgoing(b"poison"))
        await t.consume(q, prefetch=1, lease=30)
        for count in range(1, 11):
            d = await get(t)
            assert d.delivery_count == count
            await t.release(d)
        await nothing(t, 0.5)
        dead = await dead_letters(t, q, 1)
        assert [(m.body, m.reason) for m in dead] == [(b"poison", "max-deliveries")]


@scenario
async def a_delivery_handed_back_unstarted_does_not_count_and_a_resumed_consumer_receives_again(
    b: Backend,
) -> None:
    q = fresh()
    async with b.open() as t:
        await t.publish(q, Outgoing(b"prefetched"))
        await t.consume(q, prefetch=1, lease=30)
        if not t.capabilities.uncounted_release:
            with pytest.raises(Unsupported):
                await t.resume()
            return
        for _ in range(15):  # past the delivery limit (10), were these counted
            d = await get(t)
            assert (d.body, d.delivery_count, d.redelivered) == (b"prefetched", 1, False)
            await t.release(d, started=False)
        d = await get(t)
        await t.release(d)  # counted: the next delivery is the second
        d = await get(t)
        assert (d.delivery_count, d.redelivered) == (2, True)
        await t.pause()
        await t.release(d, started=False)
        await nothing(t)
        await t.resume()
        d = await get(t)
        assert (d.delivery_count, d.redelivered) == (2, True)  # its earlier counted delivery
        await t.ack(d)
        await nothing(t)


@scenario
async def a_paused_consumer_keeps_what_it_holds_and_gets_nothing_new(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        for i in range(3):
            await t.publish(q, Outgoing(str(i).encode()))
        await t.consume(q, prefetch=1, lease=30)
        held = await get(t)
        await t.pause()
        await t.ack(held)
        await nothing(t, 0.5)
    async with b.open() as t:
        await t.consume(q, prefetch=5, lease=30)
        rest = sorted([(await get(t)).body, (await get(t)).body])
        assert rest == [b"1", b"2"]


@scenario
async def each_listener_group_gets_one_copy_of_a_broadcast(b: Backend) -> None:
    topic = fresh("user.saved")
    g1, g2 = fresh("mailer"), fresh("audit")
    async with AsyncExitStack() as stack:
        a1, a2, c = [await stack.enter_async_context(b.open()) for _ in range(3)]
        if not a1.capabilities.topics:
            with pytest.raises(Unsupported):
                await a1.listen(topic, group=g1, prefetch=1)
            return
        q1 = await a1.listen(topic, group=g1, prefetch=10)
        assert await a2.listen(topic, group=g1, prefetch=10) == q1
        q2 = await c.listen(topic, group=g2, prefetch=10)
        assert q2 != q1
        for i in range(4):
            await c.broadcast(topic, Outgoing(f"event-{i}".encode()))
        got_c = []
        for _ in range(4):
            d = await get(c)
            assert d.queue == q2
            got_c.append(d.body)
            await c.ack(d)
        assert got_c == [b"event-0", b"event-1", b"event-2", b"event-3"]
        shared = []
        for t in (a1, a2):
            while (maybe := await t.next_delivery(0.5)) is not None:
                shared.append(maybe.body)
                await t.ack(maybe)
        assert sorted(shared) == got_c


@scenario
async def a_listeners_lease_is_the_one_it_asked_for(b: Backend) -> None:
    topic, group = fresh("job.done"), fresh("slow")
    async with b.open() as slow, b.open() as other:
        if not slow.capabilities.topics or slow.capabilities.lease != "timed":
            return  # connection leases: held while the connection lives (the scenario above)
        await slow.listen(topic, group=group, prefetch=1, lease=1.5)
        await slow.broadcast(topic, Outgoing(b"event"))
        held = await get(slow)
        await other.listen(topic, group=group, prefetch=1, lease=30)
        again = await get(other, 8.0)  # its 1.5 s ran out, not a default lease of a minute
        assert (again.message_id, again.delivery_count) == (held.message_id, 2)
        await other.ack(again)


@scenario
async def a_group_keeps_its_events_while_its_listeners_are_away(b: Backend) -> None:
    topic, group = fresh("order.paid"), fresh("invoices")
    async with b.open() as t:
        if not t.capabilities.topics:
            return
        await t.listen(topic, group=group, prefetch=1)
    async with b.open() as t:
        await t.broadcast(topic, Outgoing(b"while away"))
    async with b.open() as t:
        await t.listen(topic, group=group, prefetch=1)
        d = await get(t)
        assert d.body == b"while away"
        await t.ack(d)


@scenario
async def what_a_transport_cannot_do_is_refused_before_sending(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        limit = t.capabilities.max_message_bytes
        if limit is not None:
            with pytest.raises(Unsupported):
                await t.publish(q, Outgoing(b"x" * (limit + 1)))
        with pytest.raises(ValueError, match="priority"):
            Outgoing(b"", priority=10)
        with pytest.raises(ValueError, match="bad queue name"):
            await t.publish("bad name!", Outgoing(b""))
        await t.consume(q, prefetch=1, lease=30)
        await nothing(t, 0.2)


@scenario
async def a_unique_key_keeps_a_second_copy_out_while_the_first_is_queued_or_leased(b: Backend) -> None:
    q, other = fresh(), fresh()
    async with b.open() as t:
        first = Outgoing(b"1", unique=Unique("k", ref="job-1"))
        if not t.capabilities.unique:
            with pytest.raises(Unsupported, match="unique key"):
                await t.publish(q, first)
            return
        assert await t.publish(q, first) is None
        assert await t.publish(q, Outgoing(b"2", unique=Unique("k", ref="job-2"))) == "job-1"
        assert await t.publish(other, Outgoing(b"3", unique=Unique("k"))) is None  # per queue
        await t.consume(q, prefetch=1, lease=30)
        d = await get(t)
        assert d.body == b"1"
        assert await t.publish(q, Outgoing(b"4", unique=Unique("k"))) == "job-1"  # leased: still held
        await t.release(d)
        d = await get(t)
        assert await t.publish(q, Outgoing(b"5", unique=Unique("k"))) == "job-1"
        await t.ack(d)
        assert await t.publish(q, Outgoing(b"6", unique=Unique("k", ref="job-6"))) is None
        assert (await get(t)).body == b"6"


@scenario
async def a_retry_settled_with_its_original_takes_over_the_key(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        if not t.capabilities.unique:
            return  # refused at publish: see the scenario above
        await t.publish(q, Outgoing(b"attempt-1", unique=Unique("k", ref="job")))
        await t.consume(q, prefetch=1, lease=30)
        d = await get(t)
        await t.settle(d, [(q, Outgoing(b"attempt-2", delay=0.3, unique=Unique("k", ref="job")))])
        assert await t.publish(q, Outgoing(b"copy", unique=Unique("k"))) == "job"  # delayed: held
        d = await get(t)
        assert d.body == b"attempt-2"
        await t.reject(d, "rejected")  # dead-lettered: the key is free
        assert await t.publish(q, Outgoing(b"new", unique=Unique("k"))) is None


@scenario
async def hold_for_keeps_the_key_after_the_message_is_gone(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        if not t.capabilities.unique:
            return
        await t.publish(q, Outgoing(b"tick", unique=Unique("tick-1", ref="a", hold_for=1.0)))
        await t.consume(q, prefetch=1, lease=30)
        await t.ack(await get(t))
        assert await t.publish(q, Outgoing(b"again", unique=Unique("tick-1", ref="b"))) == "a"
        await asyncio.sleep(1.1)
        assert await t.publish(q, Outgoing(b"later", unique=Unique("tick-1", ref="c"))) is None


@scenario
async def the_latest_progress_report_of_a_job_is_kept_and_readable(b: Backend) -> None:
    job = fresh("job")
    async with b.open() as t:
        if not t.capabilities.progress:
            with pytest.raises(Unsupported, match="progress"):
                await t.report_progress(job, b"{}")
            with pytest.raises(Unsupported, match="progress"):
                await t.read_progress(job)
            return
        assert await t.read_progress(job) is None
        await t.report_progress(job, b'{"percent": 10}')
        await t.report_progress(job, b'{"percent": 90}')
        with pytest.raises(ValueError, match="utf-8"):
            await t.report_progress(job, b"\xff")
    async with b.open() as t:  # another connection reads it
        found = await t.read_progress(job)
        assert found is not None
        body, updated = found
        assert body == b'{"percent": 90}'
        assert abs(updated / 1000 - time.time()) < 60


@scenario
async def a_group_callback_is_released_once_every_member_reported(b: Backend) -> None:
    work, done, group = fresh("work"), fresh("done"), fresh("group")
    members = [(work, Outgoing(f"member-{i}".encode())) for i in range(3)]
    async with b.open() as t:
        if not t.capabilities.groups:
            with pytest.raises(Unsupported, match="group"):
                await t.send_group(group, members, done, Outgoing(b"callback"))
            return
        await t.send_group(group, members, done, Outgoing(b'{"then": 1}', {"x-kept": "yes"}))
        await t.consume(work, prefetch=3, lease=30)
        got = [await get(t) for _ in range(3)]
        assert sorted(d.body for d in got) == [b"member-0", b"member-1", b"member-2"]
        await t.settle(got[2], [], MemberReport(group, 2, "done", b'"r2"'))
        await t.settle(got[0], [], MemberReport(group, 0, "failed", b'"r0"'))
    async with b.open() as t:
        await t.consume(done, prefetch=1, lease=30)
        await nothing(t, 0.3)  # one member has not reported yet
    async with b.open() as t:
        await t.consume(work, prefetch=1, lease=30)
        last = await get(t)
        await t.settle(last, [], MemberReport(group, 1, "done", b'"r1"'))
        await t.consume(done, prefetch=1, lease=30)
        callback = await get(t)
        assert callback.body == b'{"then": 1}'
        assert callback.headers["x-kept"] == "yes"
        assert callback.group is not None
        assert callback.group.group_id == group
        assert callback.group.members == (("failed", b'"r0"'), ("done", b'"r1"'), ("done", b'"r2"'))
        await t.ack(callback)
    async with b.open() as t:
        await t.send_group(fresh("group"), members, done, Outgoing(b"{}"))
        # Open already (on queueit://, the broker's ERROR also ends the connection).
        other = fresh("group")
        await t.send_group(other, members, done, Outgoing(b"{}"))
        with pytest.raises(TransportRefused, match="open already"):
            await t.send_group(other, members, done, Outgoing(b"{}"))


@scenario
async def a_blocking_publisher_publishes_from_sync_code_in_its_own_thread(b: Backend) -> None:
    q = fresh()
    async with b.open() as t:
        if not t.capabilities.blocking_publish:
            with pytest.raises(Unsupported, match="blocking publisher"):
                t.blocking_publisher()
            return
        publisher = t.blocking_publisher()

        def send_from_a_thread() -> list[str | None]:
            said = [publisher.publish(q, Outgoing(b"sync-1", {"x-from": "thread"}, priority=7))]
            if t.capabilities.unique:
                said.append(publisher.publish(q, Outgoing(b"sync-2", unique=Unique("k", ref="job-2"))))
                said.append(publisher.publish(q, Outgoing(b"sync-3", unique=Unique("k", ref="job-3"))))
            with pytest.raises(ValueError, match="bad queue name"):
                publisher.publish("bad name!", Outgoing(b""))
            publisher.close()
            return said

        # No event loop in that thread: the publisher needs none.
        said = await asyncio.to_thread(send_from_a_thread)
        assert said == ([None, None, "job-2"] if t.capabilities.unique else [None])
        with pytest.raises(TransportClosed):
            await asyncio.to_thread(publisher.publish, q, Outgoing(b"after close"))
        await t.consume(q, prefetch=10, lease=30)
        first = await get(t)
        assert (first.body, first.headers["x-from"]) == (b"sync-1", "thread")
        if t.capabilities.unique:
            assert (await get(t)).body == b"sync-2"
        await nothing(t)


async def taken(t: Transport, name: str, timeout: float = 5.0) -> Leadership:
    """The leadership ``name``, once its holder's connection is gone (RabbitMQ deletes an
    exclusive queue as it closes the connection, not before the close returns)."""
    deadline = time.monotonic() + timeout
    while (lead := await t.lead(name)) is None:
        assert time.monotonic() < deadline, f"{name} was not freed within {timeout} s"
        await asyncio.sleep(0.05)
    return lead


@scenario
async def one_connection_at_a_time_leads_and_the_next_finds_the_last_mark(b: Backend) -> None:
    name, q = fresh("lead"), fresh()
    async with b.open() as first, b.open() as second:
        if not first.capabilities.leadership:
            with pytest.raises(Unsupported, match="no leaderships"):
                await first.lead(name)
            return
        lead = await first.lead(name)
        assert lead is not None
        assert lead.mark is None
        assert await second.lead(name) is None
        await lead.publish(q, Outgoing(b"tick-1", {"tick": "1"}), "1")
        await lead.publish(q, Outgoing(b"tick-2"), "2")
        with pytest.raises(Unsupported, match="without a delay"):
            await lead.publish(q, Outgoing(b"late", delay=1.0), "3")
        with pytest.raises(ValueError, match="mark"):
            await lead.publish(q, Outgoing(b"no mark"), "")
        assert await second.lead(name) is None  # asking again took nothing from the holder
        again = await first.lead(name)  # its own connection may ask again
        assert again is not None
        assert again.mark == "2"
        await first.close()  # the leadership goes with the connection...
        with pytest.raises(TransportClosed):
            await lead.publish(q, Outgoing(b"stale leader"), "9")
        successor = await taken(second, name)  # ...to the next that asks, with the last mark
        assert successor.mark == "2"
        await first.connect()  # the same transport connected again holds nothing it held before
        with pytest.raises(TransportClosed):
            await lead.publish(q, Outgoing(b"stale leader"), "9")
        await second.consume(q, prefetch=10, lease=30)
        delivered = [await get(second), await get(second)]
        assert [d.body for d in delivered] == [b"tick-1", b"tick-2"]
        assert delivered[0].headers["tick"] == "1"
        await nothing(second)
    async with b.open() as third:  # the mark outlives every holder's connection
        assert (await taken(third, name)).mark == "2"


@scenario
async def a_connection_told_its_loop_may_block_works_as_any_other(b: Backend) -> None:
    # The inline pool's connections: keep-alives widened (checked for real, with a job longer
    # than the usual heart-beat, in tests/jobs/test_inline_pool.py).
    q = fresh()
    t = b.make()
    t.tolerate_blocking(30.0)
    await t.connect()
    try:
        await t.publish(q, Outgoing(b"x"))
        await t.consume(q, prefetch=1, lease=30)
        delivery = await get(t)
        await asyncio.sleep(0.2)
        await t.ack(delivery)
        await nothing(t)
    finally:
        await t.close()


def run(backend: Backend, name: str) -> None:
    asyncio.run(asyncio.wait_for(SCENARIOS[name](backend), 60))
