"""RabbitMQ specifics the contract does not reach: URLs, delay buckets, counting across
delayed releases and lost connections, delayed broadcasts, refusals and errors."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest

from queueit.transports import Outgoing, TransportClosed, TransportRefused, open_transport
from queueit.transports.amqp import MAX_DELIVERIES, AmqpTransport, delay_bucket

from ..rabbitmq import RabbitNode, free_port
from .contract import Backend, dead_letters, drain, fresh, get, nothing, taken


@pytest.fixture
def quorum(rabbitmq: RabbitNode) -> Backend:
    return Backend("amqp-quorum", lambda: AmqpTransport(rabbitmq.url))


def test_urls_pick_the_queue_type() -> None:
    t = open_transport("amqp://u:p@rabbit.example:5673/prod?heartbeat=30")
    assert isinstance(t, AmqpTransport)
    assert t.queue_type == "quorum"
    assert not t.capabilities.priority
    assert (t.capabilities.lease, t.capabilities.atomic_settle) == ("connection", False)
    classic = AmqpTransport.from_url("amqp://u:p@rabbit.example/%2F?queue_type=classic&heartbeat=30")
    assert classic.queue_type == "classic"
    assert classic.capabilities.priority
    assert classic.url == "amqp://u:p@rabbit.example/%2F?heartbeat=30"
    for bad in ("amqp://host/?queue_type=stream", "http://host/", "amqp://host:99999/"):
        with pytest.raises(ValueError, match=r"queue_type|amqp://|port"):
            AmqpTransport.from_url(bad)


@pytest.mark.parametrize(
    ("delay", "ms"),
    [(0.0001, 1), (0.6, 600), (0.8, 800), (1.234, 1300), (5, 5000), (30, 30_000), (86_401, 87_000_000)],
)
def test_delays_round_up_to_two_significant_digits(delay: float, ms: int) -> None:
    assert delay_bucket(delay) == ms
    assert delay_bucket(delay) >= delay * 1000


def test_a_delayed_release_keeps_the_count_up_to_the_dead_letter_queue(quorum: Backend) -> None:
    async def scenario() -> None:
        q = fresh()
        async with quorum.open() as t:
            await t.publish(q, Outgoing(b"slow poison"))
            await t.consume(q, prefetch=1, lease=30)
            for count in range(1, MAX_DELIVERIES + 1):
                d = await get(t)
                assert (d.delivery_count, d.redelivered) == (count, count > 1)
                # Alternate: RabbitMQ counts the plain releases, our header the delayed ones.
                await t.release(d, delay=0.01 if count % 2 else 0)
            await nothing(t, 0.3)
            [dead] = await dead_letters(t, q, 1)
            assert (dead.body, dead.reason) == (b"slow poison", "max-deliveries")
            assert dead.headers["x-dead-letter-deliveries"] == str(MAX_DELIVERIES)
            assert "x-queueit-deliveries" not in dead.headers

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_lost_connections_count_too(quorum: Backend) -> None:
    async def scenario() -> None:
        q = fresh()
        async with quorum.open() as t:
            # Delayed: its x-death then lists the delay queue too, before the delivery limit.
            await t.publish(q, Outgoing(b"crasher", delay=0.05))
        for count in range(1, MAX_DELIVERIES + 1):
            async with quorum.open() as t:
                await t.consume(q, prefetch=1, lease=30)
                assert (await get(t)).delivery_count == count
        async with quorum.open() as t:
            await t.consume(q, prefetch=1, lease=30)
            await nothing(t, 0.3)
            [dead] = await dead_letters(t, q, 1)
            assert dead.reason == "max-deliveries"  # RabbitMQ's delivery_limit
            assert dead.headers["x-dead-letter-queue"] == q
            assert [m.message_id for m in await t.dead_letters(q, 10)] == [dead.message_id]  # not taken
            assert await t.redrive(q, dead.message_id) == 1
            again = await get(t)
            assert (again.body, again.delivery_count) == (b"crasher", 1)
            await t.ack(again)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_pause_hands_back_what_was_prefetched_but_not_handed_out(quorum: Backend) -> None:
    async def scenario() -> None:
        q = fresh()
        async with quorum.open() as t:
            for i in range(5):
                await t.publish(q, Outgoing(str(i).encode()))
            await t.consume(q, prefetch=5, lease=30)
            held = await get(t)
            await asyncio.sleep(0.2)  # the other four arrive in the transport's buffer
            await t.pause()
            await nothing(t, 0.3)
            async with quorum.open() as other:
                await other.consume(q, prefetch=5, lease=30)
                rest = [await get(other) for _ in range(4)]
                assert sorted(d.body for d in rest) == [b"1", b"2", b"3", b"4"]
                for d in rest:
                    await other.ack(d)
            await t.ack(held)  # still ackable after pause

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_delayed_broadcasts_reach_the_groups_later(quorum: Backend) -> None:
    async def scenario() -> None:
        topic, group = fresh("t"), fresh("g")
        async with quorum.open() as t:
            await t.listen(topic, group=group, prefetch=5)
            started = time.monotonic()
            await t.broadcast(topic, Outgoing(b"later", delay=0.4))
            await t.broadcast(fresh("nobody"), Outgoing(b"to no one", delay=0.1))
            d = await get(t)
            assert d.body == b"later"
            assert time.monotonic() - started >= 0.38
            await t.ack(d)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_refusals_and_lost_connections_are_transport_errors(rabbitmq: RabbitNode) -> None:
    async def scenario() -> None:
        q = fresh()
        async with Backend("c", lambda: AmqpTransport(rabbitmq.url, queue_type="classic")).open() as t:
            await t.publish(q, Outgoing(b"classic"))
        quorum = AmqpTransport(rabbitmq.url)
        await quorum.connect()
        try:
            with pytest.raises(TransportRefused, match="x-queue-type"):
                await quorum.publish(q, Outgoing(b"quorum"))
            await quorum.publish(fresh(), Outgoing(b"still usable"))
            await quorum.consume(fresh(), prefetch=1, lease=30)
            # The broker side going away (here: the client library's connection closing).
            connection = quorum._connection
            assert connection is not None
            await connection.close()
            with pytest.raises(TransportClosed):
                await quorum.next_delivery(1)
        finally:
            await quorum.close()
        with pytest.raises(TransportRefused):
            await AmqpTransport(rabbitmq.url.replace("guest:guest", "guest:wrong")).connect()
        with pytest.raises(TransportClosed):
            await AmqpTransport(f"amqp://guest:guest@127.0.0.1:{free_port()}/", timeout=2).connect()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_leader_publishes_to_a_queue_deleted_behind_its_back(quorum: Backend) -> None:
    # In a transaction RabbitMQ drops an unroutable message unseen (no confirm, no return):
    # the mark would move on without its message. The leader declares the queue each time.
    async def scenario() -> None:
        name, q = fresh("lead"), fresh()
        async with quorum.open() as t:
            lead = await t.lead(name)
            assert lead is not None
            await lead.publish(q, Outgoing(b"first"), "1")
            assert isinstance(t, AmqpTransport)
            assert t._connection is not None
            channel = await t._connection.channel()
            await channel.queue_delete(q)  # what an operator might do
            await channel.close()
            await lead.publish(q, Outgoing(b"second"), "2")
            await t.consume(q, prefetch=10, lease=30)
            assert (await get(t)).body == b"second"
            await nothing(t)

    asyncio.run(asyncio.wait_for(scenario(), 60))


@contextlib.contextmanager
def memory_alarm(rabbitmq: RabbitNode) -> Iterator[None]:
    """A memory alarm on the node: RabbitMQ stops reading from connections that publish."""
    rabbitmq.ctl("set_vm_memory_high_watermark", "0.000001")
    try:
        time.sleep(2)  # the node checks its memory about once a second
        yield
    finally:
        rabbitmq.ctl("set_vm_memory_high_watermark", "0.4")


def test_a_call_rabbitmq_does_not_answer_drops_the_connection_instead_of_hanging(
    rabbitmq: RabbitNode,
) -> None:
    # A publish whose confirm never comes may still land once the alarm ends: its outcome is
    # unknown, so the connection is dropped (deliveries go back, as on any lost connection)
    # rather than the publish repeated on it or anything waiting on it for ever.
    async def scenario() -> None:
        q = fresh()
        t = AmqpTransport(rabbitmq.url, timeout=2)
        await t.connect()
        await t.publish(q, Outgoing(b"before"))
        await t.consume(q, prefetch=1, lease=30)
        await get(t)  # held, not settled
        with memory_alarm(rabbitmq):
            started = time.monotonic()
            with pytest.raises(TransportClosed, match="did not answer within 2 s"):
                await t.publish(q, Outgoing(b"during"))
            with pytest.raises(TransportClosed):
                await t.next_delivery(1)  # the worker's loop learns it at once, and reconnects
            with contextlib.suppress(TransportClosed):
                await t.pause()  # a stopping worker is not held up...
            await t.close()  # ...nor is its close
            assert time.monotonic() - started < 12
        async with Backend("after", lambda: AmqpTransport(rabbitmq.url)).open() as after:
            bodies = await drain(after, q)
        assert bodies.count(b"before") == 1  # given back by the dropped connection
        assert bodies.count(b"during") <= 1

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_a_leaders_publish_rabbitmq_does_not_answer_lands_with_its_mark_or_not_at_all(
    rabbitmq: RabbitNode,
) -> None:
    async def scenario() -> None:
        name, q = fresh("lead"), fresh()
        t = AmqpTransport(rabbitmq.url, timeout=2)
        await t.connect()
        lead = await t.lead(name)
        assert lead is not None
        await lead.publish(q, Outgoing(b"tick-1"), "1")
        with memory_alarm(rabbitmq):
            with pytest.raises(TransportClosed, match="did not answer"):
                await lead.publish(q, Outgoing(b"tick-2"), "2")
            await t.close()
        async with Backend("next", lambda: AmqpTransport(rabbitmq.url)).open() as after:
            successor = await taken(after, name, timeout=30)  # once RabbitMQ let the old one go
            bodies = await drain(after, q)
        # Both or neither: the next leader starts after the last tick that was sent.
        assert bodies == ([b"tick-1", b"tick-2"] if successor.mark == "2" else [b"tick-1"]), (
            successor.mark,
            bodies,
        )

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_a_queue_deleted_under_its_consumer_loses_the_connection_so_the_worker_comes_back(
    quorum: Backend,
) -> None:
    async def scenario() -> None:
        q = fresh()
        async with quorum.open() as t, quorum.open() as operator:
            await t.consume(q, prefetch=1, lease=30)
            assert isinstance(operator, AmqpTransport)
            assert operator._connection is not None
            channel = await operator._connection.channel()
            await channel.queue_delete(q)
            await channel.close()
            with pytest.raises(TransportClosed, match="cancelled the consumer"):
                await t.next_delivery(5)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_dead_letter_queue_deleted_behind_the_transports_back_is_declared_again(quorum: Backend) -> None:
    async def scenario() -> None:
        q = fresh()
        async with quorum.open() as t:
            await t.publish(q, Outgoing(b"bad"))
            await t.consume(q, prefetch=1, lease=30)
            delivery = await get(t)
            assert isinstance(t, AmqpTransport)
            assert t._connection is not None
            channel = await t._connection.channel()
            await channel.queue_delete(t.dead_letter_queue(q))
            await channel.close()
            await t.reject(delivery, "invalid", "not a job")
            [dead] = await dead_letters(t, q, 1)
            assert (dead.body, dead.reason) == (b"bad", "invalid")

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_redrive_longer_than_the_timeout_is_bounded_per_call_not_as_a_whole(rabbitmq: RabbitNode) -> None:
    # Each call to RabbitMQ is bounded (a resource alarm); a redrive makes thousands of them.
    async def scenario() -> None:
        q = fresh()
        async with Backend("short", lambda: AmqpTransport(rabbitmq.url, timeout=2)).open() as t:
            for i in range(4_000):
                await t.publish(t.dead_letter_queue(q), Outgoing(str(i).encode()))
            started = time.monotonic()
            assert await t.redrive(q, None) == 4_000
            took = time.monotonic() - started
            bodies = await drain(t, q, settle=1.0)
        assert sorted(map(int, bodies)) == list(range(4_000))
        assert took > 2, f"the redrive took {took:.1f} s: too quick to show anything"

    asyncio.run(asyncio.wait_for(scenario(), 300))
