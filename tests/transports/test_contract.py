"""Every transport passes every scenario of the delivery contract (contract.py)."""

from __future__ import annotations

import pytest

from queueit.transports.amqp import AmqpTransport
from queueit.transports.memory import MemoryBroker, MemoryTransport
from queueit.transports.stomp import QueueitTransport

from ..conftest import BrokerProcess
from ..rabbitmq import RabbitNode
from .contract import SCENARIOS, Backend, run


@pytest.fixture
def memory_backend() -> Backend:
    broker = MemoryBroker()
    return Backend("memory", lambda: MemoryTransport(broker))


@pytest.fixture
def queueit_backend(broker: BrokerProcess) -> Backend:
    return Backend("queueit", lambda: QueueitTransport(broker.host, broker.port))


@pytest.fixture(params=["quorum", "classic"])
def amqp_backend(request: pytest.FixtureRequest, rabbitmq: RabbitNode) -> Backend:
    url = f"{rabbitmq.url}?queue_type={request.param}"
    return Backend(f"amqp-{request.param}", lambda: AmqpTransport.from_url(url))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_memory(memory_backend: Backend, name: str) -> None:
    run(memory_backend, name)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_queueit(queueit_backend: Backend, name: str) -> None:
    run(queueit_backend, name)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_amqp(amqp_backend: Backend, name: str) -> None:
    run(amqp_backend, name)
