"""queueit's own blocking and asyncio clients against a real broker."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from queueit.client import AsyncClient, Client, ConnectionClosed, ReceiveTimeout, ServerRefused

from ..conftest import BrokerProcess


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_sync_client_on_each_version(broker: BrokerProcess, version: str) -> None:
    client = Client(*broker.address, versions=(version,))
    connected = client.connect()
    assert connected.version == version
    client.subscribe("/queue/v" + version, ack="client-individual", receipt=True)
    client.send("/queue/v" + version, "text: with\nnewline", headers={"x-k": "a:b"}, receipt=True)
    message = client.receive()
    assert message.body == b"text: with\nnewline"
    assert message.headers["x-k"] == "a:b"
    client.ack(message, receipt=True)
    client.disconnect()


def test_sync_client_ack_nack_transactions(broker: BrokerProcess) -> None:
    with Client(*broker.address) as producer, Client(*broker.address) as consumer:
        consumer.subscribe("/queue/work", ack="client-individual", prefetch=10, receipt=True)
        tx = producer.begin()
        producer.send("/queue/work", b"1", transaction=tx)
        producer.send("/queue/work", b"2", transaction=tx)
        with pytest.raises(ReceiveTimeout):
            consumer.receive(timeout=0.3)
        producer.commit(tx)
        first, second = consumer.receive(), consumer.receive()
        assert (first.body, second.body) == (b"1", b"2")
        consumer.nack(first, receipt=True)
        again = consumer.receive()
        assert again.body == b"1"
        assert again.headers["redelivered"] == "true"
        consumer.ack(again)
        consumer.ack(second, receipt=True)


def test_async_client_round_trip(broker: BrokerProcess) -> None:
    async def main() -> list[bytes]:
        async with AsyncClient(*broker.address) as client:
            await client.subscribe("/topic/a.*", receipt=True)
            await client.subscribe("/queue/aq", ack="client-individual", receipt=True)
            await client.send("/topic/a.b", b"topic", receipt=True)
            await client.send("/queue/aq", b"queue", receipt=True)
            got = []
            for _ in range(2):
                message = await client.receive(timeout=5)
                got.append(message.body)
                if message.ack:
                    await client.ack(message, receipt=True)
            return sorted(got)

    assert asyncio.run(main()) == [b"queue", b"topic"]


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="TCP_CORK is Linux's")
def test_a_corked_async_client_sends_everything_and_a_receipt_uncorks_it(broker: BrokerProcess) -> None:
    async def main() -> tuple[list[bytes], list[bool]]:
        states = []
        async with AsyncClient(*broker.address) as producer, AsyncClient(*broker.address) as consumer:
            await consumer.subscribe("/queue/corked", ack="client-individual", prefetch=10, receipt=True)
            producer.cork(True)
            states.append(producer.corked)
            for n in range(3):
                await producer.send("/queue/corked", str(n).encode())  # held: no receipt asked
            states.append(producer.corked)
            await producer.send("/queue/corked", b"3", receipt=True)  # uncorks before it waits
            states.append(producer.corked)
            got = []
            for _ in range(4):
                message = await consumer.receive(timeout=5)
                got.append(message.body)
                consumer.cork(True)  # ACKs held, then the one with a receipt takes them along
                await consumer.ack(message, receipt=message.body == b"3")
            states.append(consumer.corked)
            return got, states

    got, states = asyncio.run(main())
    assert got == [b"0", b"1", b"2", b"3"]
    assert states == [True, True, False, False]


def test_many_producers_and_consumers_lose_nothing(broker: BrokerProcess) -> None:
    per_producer, producers, consumers = 500, 4, 4
    expected = {f"{p}-{i}".encode() for p in range(producers) for i in range(per_producer)}
    received: list[bytes] = []
    lock = threading.Lock()
    done = threading.Event()

    def consume() -> None:
        with Client(*broker.address) as client:
            client.subscribe("/queue/load", ack="client-individual", prefetch=20, receipt=True)
            while not done.is_set():
                try:
                    message = client.receive(timeout=0.2)
                except ReceiveTimeout:
                    continue
                client.ack(message)
                with lock:
                    received.append(message.body)
                    if len(received) >= len(expected):
                        done.set()

    def produce(p: int) -> None:
        with Client(*broker.address) as client:
            for i in range(per_producer):
                client.send("/queue/load", f"{p}-{i}".encode())

    threads = [threading.Thread(target=consume) for _ in range(consumers)]
    threads += [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    done.wait(60)
    done.set()
    for t in threads:
        t.join(30)
    assert len(received) == len(expected)
    assert set(received) == expected


def test_async_client_errors_are_client_errors(broker: BrokerProcess) -> None:
    async def main() -> None:
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            free_port = probe.getsockname()[1]
        with pytest.raises(ConnectionClosed, match="cannot connect"):
            await AsyncClient("127.0.0.1", free_port, timeout=2).connect()
        with pytest.raises(ServerRefused, match="Bad login"):
            await AsyncClient(*broker.address, login="nobody", passcode="x", timeout=5).connect()
        client = AsyncClient(*broker.address, timeout=30)
        await client.connect()
        await client.subscribe("/queue/wake", receipt=True)
        waiter = asyncio.ensure_future(client.receive())  # waits; the broker then refuses a frame
        await client.send("/nowhere/x", b"")
        started = asyncio.get_running_loop().time()
        with pytest.raises(ServerRefused, match="Invalid destination"):
            await waiter
        assert asyncio.get_running_loop().time() - started < 10  # woken by the failure, not the timeout
        await client.close()

    asyncio.run(main())
