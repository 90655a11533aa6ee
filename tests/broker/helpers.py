"""Driving BrokerCore directly: a recording outlet, a fake clock, frame-event builders."""

from __future__ import annotations

from dataclasses import dataclass, field

from queueit.broker.auth import Permissions, User
from queueit.broker.core import BrokerCore, SessionState
from queueit.broker.messages import Message
from queueit.broker.queues import Queue, Subscription
from queueit.broker.storage import MemoryStore
from queueit.stomp import Ack, AckMode, Begin, Commit, Limits, Nack, Send, Subscribe, Unsubscribe


@dataclass
class Delivery:
    subscription: str
    message: Message


@dataclass(eq=False)  # compared and hashed by identity, like a real connection
class RecordingOutlet:
    """An Outlet that records deliveries; ``writable`` can be switched off."""

    writable: bool = True
    deliveries: list[Delivery] = field(default_factory=list)

    def deliver(self, subscription: Subscription, message: Message) -> None:
        self.deliveries.append(Delivery(subscription.id, message))

    blocked: bool = False

    def block(self, queue: Queue) -> None:
        self.blocked = True

    def unblock(self, queue: Queue) -> None:
        self.blocked = False

    def is_blocked(self) -> bool:
        return self.blocked

    def bodies(self) -> list[bytes]:
        return [d.message.body for d in self.deliveries]

    def take(self) -> list[Delivery]:
        taken, self.deliveries = self.deliveries, []
        return taken


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


GUEST = User("guest", "", Permissions.everything())


def make_core(limits: Limits | None = None, clock: FakeClock | None = None) -> BrokerCore:
    return BrokerCore(MemoryStore(), limits or Limits(), clock=clock or FakeClock())


def connect(
    core: BrokerCore, user: User = GUEST, client_id: str | None = None
) -> tuple[SessionState, RecordingOutlet]:
    outlet = RecordingOutlet()
    return core.open_session(outlet, user, client_id=client_id), outlet


def send(destination: str, body: bytes = b"x", tx: str | None = None, **headers: str) -> Send:
    h = {"destination": destination, **{k.replace("_", "-"): v for k, v in headers.items()}}
    return Send(destination, h, body, tx, None)


def subscribe(destination: str, sub_id: str, ack: AckMode = AckMode.AUTO, **headers: str) -> Subscribe:
    h = {"destination": destination, "id": sub_id, **{k.replace("_", "-"): v for k, v in headers.items()}}
    return Subscribe(sub_id, destination, ack, h, None)


def unsubscribe(sub_id: str, **headers: str) -> Unsubscribe:
    return Unsubscribe(sub_id, {"id": sub_id, **headers}, None)


def ack(message_id: str, tx: str | None = None) -> Ack:
    return Ack(message_id, None, tx, {"id": message_id}, None)


def nack(message_id: str, tx: str | None = None, **headers: str) -> Nack:
    return Nack(message_id, None, tx, {"id": message_id, **headers}, None)


def begin(tx: str) -> Begin:
    return Begin(tx, None)


def commit(tx: str) -> Commit:
    return Commit(tx, None)
