"""stomp.py 9.x, the Python STOMP client most users have, against a real ``queueit serve``.

Each test talks to the ``broker`` fixture over TCP through ``stomp.Connection10/11/12``. The
listener hands frames over through a queue and a condition; every wait is bounded by ``WAIT``
seconds and fails with what was (not) received. Frames that can carry ``receipt`` are sent with
one and the test waits for the RECEIPT, so there is no sleeping to let the broker catch up.

"Nothing left behind" is checked without waiting for silence: :func:`leftovers` sends a sentinel
to the queue and collects what a fresh subscriber receives before it. Anything still queued, or
requeued after an UNSUBSCRIBE or a closed connection, arrives before the sentinel.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
import stomp

from ..conftest import BrokerProcess

WAIT = 10.0
"""Upper bound, in seconds, for any single wait on the broker."""

VERSIONS = ("1.0", "1.1", "1.2")
NACK_VERSIONS = ("1.1", "1.2")  # STOMP 1.0 has no NACK and no client-individual
CONNECTIONS: dict[str, Any] = {
    "1.0": stomp.Connection10,
    "1.1": stomp.Connection11,
    "1.2": stomp.Connection12,
}


@dataclass(frozen=True)
class Received:
    """A frame the broker sent, copied out of stomp.py's ``Frame``."""

    client: str
    command: str
    headers: dict[str, str]
    body: str | bytes


class Recorder:
    """stomp.py listener for one connection (stomp.py calls ``on_*`` methods looked up by name)."""

    def __init__(self, name: str, inbox: queue.Queue[Received]) -> None:
        self.name = name
        self.inbox = inbox
        self.cond = threading.Condition()
        self.connected: Received | None = None
        self.receipts: list[str] = []
        self.errors: list[Received] = []
        self.heartbeats = 0
        self.heartbeat_timeouts = 0
        self.disconnected = False
        self.disconnect_receipt: str | None = None

    def _copy(self, frame: Any) -> Received:
        headers = {str(key): str(value) for key, value in frame.headers.items()}
        return Received(self.name, str(frame.cmd), headers, frame.body)

    def on_connected(self, frame: Any) -> None:
        with self.cond:
            self.connected = self._copy(frame)
            self.cond.notify_all()

    def on_message(self, frame: Any) -> None:
        self.inbox.put(self._copy(frame))

    def on_receipt(self, frame: Any) -> None:
        with self.cond:
            self.receipts.append(str(frame.headers["receipt-id"]))
            self.cond.notify_all()

    def on_error(self, frame: Any) -> None:
        with self.cond:
            self.errors.append(self._copy(frame))
            self.cond.notify_all()

    def on_heartbeat(self) -> None:
        with self.cond:
            self.heartbeats += 1
            self.cond.notify_all()

    def on_heartbeat_timeout(self) -> None:
        with self.cond:
            self.heartbeat_timeouts += 1
            self.cond.notify_all()

    def on_disconnected(self) -> None:
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def on_send(self, frame: Any) -> None:
        if frame.cmd == "DISCONNECT":
            self.disconnect_receipt = frame.headers.get("receipt")

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Wait until ``predicate()`` holds; fail on timeout or on an ERROR frame."""
        with self.cond:
            done = self.cond.wait_for(lambda: predicate() or bool(self.errors), timeout)
            if self.errors:
                raise AssertionError(f"{self.name}: ERROR frame while waiting for {what}: {self.errors}")
            if not done:
                raise AssertionError(f"{self.name}: no {what} within {timeout} s")


class Client:
    """One stomp.py connection with receipt-confirmed operations."""

    def __init__(
        self,
        broker: BrokerProcess,
        version: str,
        name: str,
        *,
        heartbeats: tuple[int, int] = (0, 0),
        auto_decode: bool = True,
        inbox: queue.Queue[Received] | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"auto_decode": auto_decode}
        if version != "1.0":
            kwargs["heartbeats"] = heartbeats
        self.version = version
        self.name = name
        self.inbox: queue.Queue[Received] = inbox if inbox is not None else queue.Queue()
        self.conn: Any = CONNECTIONS[version]([broker.address], **kwargs)
        self.rec = Recorder(name, self.inbox)
        self.conn.set_listener("recorder", self.rec)
        self._ids = itertools.count(1)

    def next_id(self, kind: str) -> str:
        return f"{self.name}-{kind}-{next(self._ids)}"

    def connect(self, *, login: bool = True, with_connect_command: bool = False) -> Received:
        """CONNECT (or STOMP, stomp.py's default on 1.1/1.2) and wait for CONNECTED."""
        kwargs: dict[str, Any] = {"wait": False}
        if self.version != "1.0":
            kwargs["with_connect_command"] = with_connect_command
        if login:
            self.conn.connect("guest", "guest", **kwargs)
        else:
            self.conn.connect(**kwargs)
        self.rec.wait_for(lambda: self.rec.connected is not None, "CONNECTED")
        assert self.rec.connected is not None
        return self.rec.connected

    def wait_receipt(self, receipt: str) -> None:
        self.rec.wait_for(lambda: receipt in self.rec.receipts, f"RECEIPT {receipt}")

    def send(
        self,
        destination: str,
        body: str | bytes,
        headers: dict[str, str] | None = None,
        *,
        transaction: str | None = None,
        content_type: str | None = None,
    ) -> None:
        frame_headers = dict(headers or {})
        if transaction is not None:
            frame_headers["transaction"] = transaction
        receipt = frame_headers["receipt"] = self.next_id("send")
        self.conn.send(destination, body, content_type=content_type, headers=frame_headers)
        self.wait_receipt(receipt)

    def subscribe(self, destination: str, ack: str = "auto", headers: dict[str, str] | None = None) -> str:
        sub_id = self.next_id("sub")
        frame_headers = dict(headers or {})
        receipt = frame_headers["receipt"] = self.next_id("subscribe")
        self.conn.subscribe(destination, id=sub_id, ack=ack, headers=frame_headers)
        self.wait_receipt(receipt)
        return sub_id

    def unsubscribe(self, sub_id: str) -> None:
        receipt = self.next_id("unsubscribe")
        self.conn.unsubscribe(id=sub_id, headers={"receipt": receipt})
        self.wait_receipt(receipt)

    def ack(self, message: Received, *, transaction: str | None = None) -> None:
        """ACK as each version spells it: 1.0 message-id, 1.1 message-id + subscription, 1.2 id."""
        receipt = self.next_id("ack")
        if self.version == "1.0":
            self.conn.ack(message.headers["message-id"], transaction=transaction, receipt=receipt)
        elif self.version == "1.1":
            self.conn.ack(
                message.headers["message-id"],
                message.headers["subscription"],
                transaction=transaction,
                receipt=receipt,
            )
        else:
            self.conn.ack(message.headers["ack"], transaction=transaction, receipt=receipt)
        self.wait_receipt(receipt)

    def nack(self, message: Received) -> None:
        receipt = self.next_id("nack")
        if self.version == "1.1":
            self.conn.nack(message.headers["message-id"], message.headers["subscription"], receipt=receipt)
        else:
            self.conn.nack(message.headers["ack"], receipt=receipt)
        self.wait_receipt(receipt)

    def begin(self, transaction: str) -> None:
        receipt = self.next_id("begin")
        self.conn.begin(transaction, headers={"receipt": receipt})
        self.wait_receipt(receipt)

    def commit(self, transaction: str) -> None:
        receipt = self.next_id("commit")
        self.conn.commit(transaction, headers={"receipt": receipt})
        self.wait_receipt(receipt)

    def abort(self, transaction: str) -> None:
        receipt = self.next_id("abort")
        self.conn.abort(transaction, headers={"receipt": receipt})
        self.wait_receipt(receipt)

    def receive(self, timeout: float = WAIT) -> Received:
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"{self.name}: no MESSAGE within {timeout} s (ERROR frames: {self.rec.errors})"
            ) from None

    def receive_bodies(self, count: int) -> list[Received]:
        return [self.receive() for _ in range(count)]

    def receive_until(self, body: str) -> list[Received]:
        """Messages received before the one whose body is ``body`` (which is consumed)."""
        before: list[Received] = []
        while (message := self.receive()).body != body:
            before.append(message)
        return before

    def pending(self) -> list[Received]:
        """Messages already received and not yet taken, without waiting."""
        taken: list[Received] = []
        while True:
            try:
                taken.append(self.inbox.get_nowait())
            except queue.Empty:
                return taken

    def close(self) -> None:
        """DISCONNECT with a receipt; stomp.py closes the socket when the RECEIPT arrives."""
        if not self.conn.is_connected():
            return
        self.conn.disconnect()
        self.rec.wait_for(lambda: self.rec.disconnected, "closed connection after DISCONNECT")

    def force_close(self) -> None:
        """Teardown: close gracefully if possible, else drop the socket."""
        try:
            self.close()
        except AssertionError:
            pass
        finally:
            if self.conn.is_connected():
                self.conn.transport.disconnect_socket()


class MakeClient(Protocol):
    def __call__(
        self,
        version: str = "1.2",
        *,
        heartbeats: tuple[int, int] = (0, 0),
        auto_decode: bool = True,
        inbox: queue.Queue[Received] | None = None,
        connect: bool = True,
    ) -> Client: ...


@pytest.fixture
def clients(broker: BrokerProcess) -> Iterator[MakeClient]:
    """Factory of connected stomp.py clients; all are closed before the broker stops."""
    made: list[Client] = []

    def make(
        version: str = "1.2",
        *,
        heartbeats: tuple[int, int] = (0, 0),
        auto_decode: bool = True,
        inbox: queue.Queue[Received] | None = None,
        connect: bool = True,
    ) -> Client:
        client = Client(
            broker, version, f"c{len(made) + 1}", heartbeats=heartbeats, auto_decode=auto_decode, inbox=inbox
        )
        made.append(client)
        if connect:
            client.connect()
        return client

    yield make
    for client in made:
        client.force_close()


def leftovers(producer: Client, consumer: Client, destination: str) -> list[Received]:
    """What is still queued at ``destination``, found by sending a sentinel and reading up to it."""
    sentinel = f"sentinel-{uuid.uuid4()}"
    producer.send(destination, sentinel)
    sub_id = consumer.subscribe(destination)
    before = consumer.receive_until(sentinel)
    consumer.unsubscribe(sub_id)
    return before


def bodies(messages: list[Received]) -> list[str | bytes]:
    return [message.body for message in messages]


# --- connecting -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("login", [True, False], ids=["guest", "no-login"])
def test_connect_negotiates_the_requested_version(clients: MakeClient, version: str, login: bool) -> None:
    client = clients(version, connect=False)
    connected = client.connect(login=login)
    assert connected.command == "CONNECTED"
    # A 1.0 CONNECT has no accept-version; a 1.0 CONNECTED may leave version out.
    assert connected.headers.get("version", "1.0") == version


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_connect_frame_works_like_stomp_frame(clients: MakeClient, version: str) -> None:
    client = clients(version, connect=False)
    connected = client.connect(with_connect_command=True)
    assert connected.headers["version"] == version
    client.subscribe("/queue/connect-frame")
    client.send("/queue/connect-frame", "hello")
    assert client.receive().body == "hello"


# --- queues and topics ----------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_queue_send_and_receive(clients: MakeClient, version: str) -> None:
    client = clients(version)
    sub_id = client.subscribe("/queue/greetings")
    sent = [f"hello {i} from stomp.py {version}" for i in range(3)]
    for body in sent:
        client.send("/queue/greetings", body)
    received = client.receive_bodies(3)
    assert bodies(received) == sent
    for message in received:
        assert message.command == "MESSAGE"
        assert message.headers["destination"] == "/queue/greetings"
        assert message.headers["message-id"]
        if version != "1.0":
            assert message.headers["subscription"] == sub_id
    assert len({message.headers["message-id"] for message in received}) == 3


def test_queue_holds_messages_until_a_consumer_subscribes(clients: MakeClient) -> None:
    producer, consumer = clients("1.2"), clients("1.1")
    producer.send("/queue/later", "kept for later")
    consumer.subscribe("/queue/later")
    assert consumer.receive().body == "kept for later"


def test_queue_consumers_compete_each_message_delivered_once(clients: MakeClient) -> None:
    shared: queue.Queue[Received] = queue.Queue()
    first, second = clients("1.2", inbox=shared), clients("1.1", inbox=shared)
    producer = clients("1.0")
    first.subscribe("/queue/work")
    second.subscribe("/queue/work")
    sent = [f"job {i}" for i in range(20)]
    for body in sent:
        producer.send("/queue/work", body)
    received = first.receive_bodies(len(sent))  # both subscriptions feed `shared`
    assert sorted(bodies(received), key=str) == sorted(sent)
    assert leftovers(producer, first, "/queue/work") == []
    assert shared.empty(), f"delivered more than once: {bodies(list(shared.queue))}"


def test_topic_delivers_to_every_subscriber_and_keeps_nothing(clients: MakeClient) -> None:
    alice, bob, publisher = clients("1.2"), clients("1.1"), clients("1.0")
    alice.subscribe("/topic/news")
    bob.subscribe("/topic/news")
    sent = ["news 1", "news 2", "news 3"]
    for body in sent:
        publisher.send("/topic/news", body)
    assert bodies(alice.receive_bodies(3)) == sent
    assert bodies(bob.receive_bodies(3)) == sent
    # A late subscriber sees only what is published after it subscribed.
    carol = clients("1.2")
    carol.subscribe("/topic/news")
    publisher.send("/topic/news", "news 4")
    assert carol.receive().body == "news 4"
    assert alice.receive().body == "news 4"
    assert bob.receive().body == "news 4"


def test_prefetch_count_limits_unacknowledged_deliveries(clients: MakeClient) -> None:
    producer, slow, fast = clients(), clients(), clients()
    slow.subscribe("/queue/prefetch", ack="client-individual", headers={"prefetch-count": "1"})
    producer.send("/queue/prefetch", "first")
    producer.send("/queue/prefetch", "second")
    held = slow.receive()
    assert held.body == "first"
    # `slow` may hold one unacknowledged message, so "second" is still queued for someone else.
    fast.subscribe("/queue/prefetch")
    assert fast.receive().body == "second"
    assert slow.pending() == []
    slow.ack(held)


# --- ack modes --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_auto_ack_consumes_on_delivery(clients: MakeClient, version: str) -> None:
    producer, consumer = clients(version), clients(version)
    sub_id = consumer.subscribe("/queue/auto")
    for body in ("a1", "a2", "a3"):
        producer.send("/queue/auto", body)
    assert bodies(consumer.receive_bodies(3)) == ["a1", "a2", "a3"]
    consumer.unsubscribe(sub_id)
    assert leftovers(producer, consumer, "/queue/auto") == []


@pytest.mark.parametrize("version", VERSIONS)
def test_client_ack_of_the_last_message_acks_all(clients: MakeClient, version: str) -> None:
    producer, consumer = clients(version), clients(version)
    sub_id = consumer.subscribe("/queue/cumulative", ack="client")
    for body in ("m1", "m2", "m3"):
        producer.send("/queue/cumulative", body)
    received = consumer.receive_bodies(3)
    assert bodies(received) == ["m1", "m2", "m3"]
    consumer.ack(received[2])
    consumer.unsubscribe(sub_id)
    assert leftovers(producer, consumer, "/queue/cumulative") == []


@pytest.mark.parametrize("version", VERSIONS)
def test_client_ack_leaves_later_messages_unacknowledged(clients: MakeClient, version: str) -> None:
    producer, consumer = clients(version), clients(version)
    sub_id = consumer.subscribe("/queue/cumulative", ack="client")
    for body in ("m1", "m2", "m3"):
        producer.send("/queue/cumulative", body)
    received = consumer.receive_bodies(3)
    consumer.ack(received[1])  # acknowledges m1 and m2, not m3
    consumer.unsubscribe(sub_id)  # requeues m3
    left = leftovers(producer, consumer, "/queue/cumulative")
    assert bodies(left) == ["m3"]
    assert left[0].headers.get("redelivered") == "true"


@pytest.mark.parametrize("version", NACK_VERSIONS)
def test_client_individual_ack_acks_only_that_message(clients: MakeClient, version: str) -> None:
    producer, consumer = clients(version), clients(version)
    sub_id = consumer.subscribe("/queue/individual", ack="client-individual")
    for body in ("m1", "m2", "m3"):
        producer.send("/queue/individual", body)
    received = consumer.receive_bodies(3)
    assert bodies(received) == ["m1", "m2", "m3"]
    if version == "1.2":
        assert all(message.headers["ack"] for message in received)
    consumer.ack(received[1])
    consumer.unsubscribe(sub_id)  # requeues m1 and m3
    left = leftovers(producer, consumer, "/queue/individual")
    assert sorted(bodies(left), key=str) == ["m1", "m3"]
    assert [message.headers.get("redelivered") for message in left] == ["true", "true"]


@pytest.mark.parametrize("version", VERSIONS)
def test_closed_connection_requeues_unacknowledged_messages(clients: MakeClient, version: str) -> None:
    producer, consumer, successor = clients(version), clients(version), clients(version)
    consumer.subscribe("/queue/crash", ack="client")
    producer.send("/queue/crash", "unfinished", headers={"x-job": "42"})
    first = consumer.receive()
    assert first.headers.get("redelivered") != "true"
    consumer.close()
    successor.subscribe("/queue/crash", ack="client")
    again = successor.receive()
    assert again.body == "unfinished"
    assert again.headers.get("redelivered") == "true"
    assert again.headers["x-job"] == "42"
    successor.ack(again)


@pytest.mark.parametrize("version", NACK_VERSIONS)
def test_nack_requeues_and_redelivers_with_redelivered_header(clients: MakeClient, version: str) -> None:
    producer, consumer = clients(version), clients(version)
    sub_id = consumer.subscribe("/queue/retry", ack="client-individual")
    producer.send("/queue/retry", "try me", headers={"x-attempt-note": "kept"})
    first = consumer.receive()
    assert first.headers.get("redelivered") != "true"
    consumer.nack(first)
    again = consumer.receive()
    assert again.body == "try me"
    assert again.headers.get("redelivered") == "true"
    assert again.headers["x-attempt-note"] == "kept"
    consumer.ack(again)
    consumer.unsubscribe(sub_id)
    assert leftovers(producer, consumer, "/queue/retry") == []


# --- transactions -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_transaction_commit_delivers_and_abort_discards(clients: MakeClient, version: str) -> None:
    producer, consumer = clients(version), clients(version)
    consumer.subscribe("/queue/tx")
    producer.begin("tx-commit")
    producer.send("/queue/tx", "in tx-commit", transaction="tx-commit")
    producer.send("/queue/tx", "outside any transaction")
    # The transactional SEND came first but must not be delivered before COMMIT.
    assert consumer.receive().body == "outside any transaction"
    producer.commit("tx-commit")
    assert consumer.receive().body == "in tx-commit"

    producer.begin("tx-abort")
    producer.send("/queue/tx", "in tx-abort", transaction="tx-abort")
    producer.abort("tx-abort")
    producer.send("/queue/tx", "after abort")
    assert consumer.receive().body == "after abort"


@pytest.mark.parametrize("version", VERSIONS)
def test_transactional_ack_takes_effect_on_commit_only(clients: MakeClient, version: str) -> None:
    producer, consumer = clients(version), clients(version)
    mode = "client" if version == "1.0" else "client-individual"
    sub_id = consumer.subscribe("/queue/txack", ack=mode)
    producer.send("/queue/txack", "acked in committed tx")
    producer.send("/queue/txack", "acked in aborted tx")
    committed, aborted = consumer.receive_bodies(2)
    assert (committed.body, aborted.body) == ("acked in committed tx", "acked in aborted tx")
    consumer.begin("tx-1")
    consumer.ack(committed, transaction="tx-1")
    consumer.commit("tx-1")
    consumer.begin("tx-2")
    consumer.ack(aborted, transaction="tx-2")
    consumer.abort("tx-2")
    consumer.unsubscribe(sub_id)  # the aborted ACK never happened: that message is requeued
    left = leftovers(producer, consumer, "/queue/txack")
    assert bodies(left) == ["acked in aborted tx"]
    assert left[0].headers.get("redelivered") == "true"


# --- receipts, headers, bodies ------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_every_frame_with_receipt_gets_its_receipt_in_order(clients: MakeClient, version: str) -> None:
    client = clients(version)
    sub_id = client.subscribe("/queue/receipts", ack="client")
    client.send("/queue/receipts", "r1")
    client.ack(client.receive())
    client.begin("tx-r")
    client.send("/queue/receipts", "r2", transaction="tx-r")
    client.commit("tx-r")
    client.ack(client.receive())
    client.begin("tx-a")
    client.abort("tx-a")
    client.unsubscribe(sub_id)
    client.close()
    disconnect_receipt = client.rec.disconnect_receipt
    assert disconnect_receipt is not None
    client.wait_receipt(disconnect_receipt)
    *ours, last = client.rec.receipts
    assert [receipt.split("-")[1] for receipt in ours] == [
        "subscribe",
        "send",
        "ack",
        "begin",
        "send",
        "commit",
        "ack",
        "begin",
        "abort",
        "unsubscribe",
    ]
    assert last == disconnect_receipt


HEADERS_ALL_VERSIONS = {
    "x-app": "queueit",
    "x-number": "42",
    "correlation-id": "c-7",
    "reply-to": "/queue/replies",
    "x-utf8": "héllo wörld ✓",
}
HEADERS_ESCAPED = {  # need the 1.1+ escapes \c \n \\ (1.0 has no escaping at all)
    "x-colon": "urn:queueit:job:1",
    "x-newline": "line one\nline two",
    "x-backslash": "C:\\temp\\queue",
}


@pytest.mark.parametrize("version", VERSIONS)
def test_custom_headers_pass_through_end_to_end(clients: MakeClient, version: str) -> None:
    producer, consumer = clients(version), clients(version)
    headers = dict(HEADERS_ALL_VERSIONS)
    if version != "1.0":
        headers |= HEADERS_ESCAPED
    if version == "1.2":
        headers["x-carriage-return"] = "before\rafter"
    consumer.subscribe("/queue/headers")
    producer.send("/queue/headers", '{"ok": true}', headers=headers, content_type="application/json")
    message = consumer.receive()
    assert message.body == '{"ok": true}'
    assert message.headers["content-type"] == "application/json"
    assert {name: message.headers.get(name) for name in headers} == headers


@pytest.mark.parametrize("version", VERSIONS)
def test_body_with_nul_bytes_is_delivered_intact(clients: MakeClient, version: str) -> None:
    producer, consumer = clients(version), clients(version, auto_decode=False)
    body = b"\x00starts with NUL\x00" + bytes(range(256)) + b"\x00\x00ends with two NULs\x00\x00"
    consumer.subscribe("/queue/binary")
    producer.send("/queue/binary", body)  # stomp.py adds content-length
    message = consumer.receive()
    assert message.body == body
    assert message.headers["content-length"] == str(len(body))


def test_utf8_text_body_is_delivered_byte_for_byte(clients: MakeClient) -> None:
    producer, consumer = clients("1.2"), clients("1.2")
    body = "Grüße aus Köln / 東京 / ✓ / 🚀"
    consumer.subscribe("/queue/utf8")
    producer.send("/queue/utf8", body, content_type="text/plain; charset=utf-8")
    message = consumer.receive()
    assert message.body == body
    if "content-length" in message.headers:  # optional here, but if present it counts bytes
        assert message.headers["content-length"] == str(len(body.encode()))


# --- heart-beats ----------------------------------------------------------------------------------


IDLE_SECONDS = 4.5  # more than three negotiated 1000 ms intervals


@pytest.mark.parametrize(
    ("version", "heartbeats"),
    [("1.1", (500, 500)), ("1.2", (500, 500)), ("1.2", (1000, 1000))],
)
def test_heartbeats_keep_an_idle_connection_alive(
    clients: MakeClient, version: str, heartbeats: tuple[int, int]
) -> None:
    client = clients(version, heartbeats=heartbeats)
    connected = client.rec.connected
    assert connected is not None
    # queueit offers heart-beat:1000,1000; each direction negotiates to max(client, server).
    assert connected.headers["heart-beat"] == "1000,1000"
    assert client.conn.heartbeats == (1000, 1000)
    client.subscribe("/queue/heartbeat")

    started = time.monotonic()
    # The broker must send a heart-beat about every second while nothing else flows.
    client.rec.wait_for(lambda: client.rec.heartbeats >= 4, "4 heart-beats from the broker", timeout=12.0)
    # Stay idle (stomp.py sends our heart-beats meanwhile) for the full period, then check.
    time.sleep(max(0.0, IDLE_SECONDS - (time.monotonic() - started)))

    assert client.rec.heartbeat_timeouts == 0
    assert not client.rec.disconnected, "broker closed an idle connection that was sending heart-beats"
    assert client.conn.is_connected()
    client.send("/queue/heartbeat", "still alive")
    assert client.receive().body == "still alive"
