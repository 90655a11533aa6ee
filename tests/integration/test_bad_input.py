"""Every kind of bad input over a real socket: a spec-correct ERROR, then close, and
nothing else is affected (the broker fixture also fails on any traceback in the log)."""

from __future__ import annotations

import json

import pytest

from queueit.client import Client

from ..conftest import BrokerProcess
from .raw import RawPeers

CASES: list[tuple[str, bytes, str, str | None]] = [
    # (name, bytes after CONNECT, ERROR message, expected receipt-id)
    ("unknown command", b"FROB\nreceipt:r1\n\n\x00", "Unknown command", None),
    ("lowercase command", b"send\ndestination:/queue/a\n\n\x00", "Unknown command", None),
    ("missing destination", b"SEND\nreceipt:r2\n\nbody\x00", "Missing destination header", "r2"),
    (
        "bad escape",
        b"SEND\ndestination:/queue/a\nx:\\t\nreceipt:r3\n\n\x00",
        "Undefined escape sequence in header",
        None,
    ),
    ("header without colon", b"SEND\ndestination:/queue/a\nnocolon\n\n\x00", "Malformed header", None),
    (
        "bad content-length",
        b"SEND\ndestination:/queue/a\ncontent-length:-1\nreceipt:r4\n\n\x00",
        "Invalid content-length",
        "r4",
    ),
    (
        "no NUL after content-length",
        b"SEND\ndestination:/queue/a\ncontent-length:2\n\nabc\x00",
        "Frame body not terminated",
        None,
    ),
    ("body on SUBSCRIBE", b"SUBSCRIBE\ndestination:/queue/a\nid:1\n\nbody\x00", "Unexpected body", None),
    (
        "subscribe without id",
        b"SUBSCRIBE\ndestination:/queue/a\nreceipt:r5\n\n\x00",
        "Missing id header",
        "r5",
    ),
    (
        "bad ack mode",
        b"SUBSCRIBE\ndestination:/queue/a\nid:1\nack:sometimes\n\n\x00",
        "Invalid ack mode",
        None,
    ),
    ("ack of unknown id", b"ACK\nid:nope\nreceipt:r6\n\n\x00", "Unknown ack id", "r6"),
    (
        "duplicate subscription",
        b"SUBSCRIBE\ndestination:/queue/a\nid:1\n\n\x00SUBSCRIBE\ndestination:/queue/b\nid:1\nreceipt:r7\n\n\x00",
        "Duplicate subscription id",
        "r7",
    ),
    ("unknown destination", b"SEND\ndestination:/nowhere/x\nreceipt:r8\n\n\x00", "Invalid destination", "r8"),
    ("commit unknown tx", b"COMMIT\ntransaction:t9\nreceipt:r9\n\n\x00", "Transaction error", "r9"),
    ("second CONNECT", b"CONNECT\naccept-version:1.2\nhost:x\n\n\x00", "Unexpected frame", None),
    ("server frame from client", b"MESSAGE\ndestination:/queue/a\n\n\x00", "Unexpected frame", None),
    ("stray CR", b"SEND\rdestination:/queue/a\n\n\x00", "Unknown command", None),
    (
        "bad priority",
        b"SEND\ndestination:/queue/a\npriority:99\nreceipt:r10\n\n\x00",
        "Invalid header",
        "r10",
    ),
]


@pytest.mark.parametrize(("name", "data", "message", "receipt_id"), CASES, ids=[c[0] for c in CASES])
def test_bad_frame_gets_error_and_close(
    broker: BrokerProcess, raw: RawPeers, name: str, data: bytes, message: str, receipt_id: str | None
) -> None:
    bystander = Client(*broker.address)
    bystander.connect()
    bystander.subscribe("/queue/bystander", ack="client-individual", receipt=True)
    peer = raw(broker.address)
    peer.connect()
    peer.write(data)
    error = peer.read_frame()
    assert error.command.value == "ERROR"
    assert error.headers["message"] == message
    assert error.headers.get("receipt-id") == receipt_id
    assert int(error.headers["content-length"]) == len(error.body)
    assert error.body  # the body says what to do
    assert peer.wait_closed()
    # Another connection is untouched.
    bystander.send("/queue/bystander", b"still fine", receipt=True)
    assert bystander.receive().body == b"still fine"
    bystander.disconnect()


def test_frame_before_connect(broker: BrokerProcess, raw: RawPeers) -> None:
    peer = raw(broker.address)
    peer.write(b"SEND\ndestination:/queue/a\nreceipt:early\n\nx\x00")
    error = peer.read_frame()
    assert error.headers["message"] == "Not connected"
    assert error.headers["receipt-id"] == "early"
    assert peer.wait_closed()


def test_unsupported_version_lists_ours(broker: BrokerProcess, raw: RawPeers) -> None:
    peer = raw(broker.address)
    peer.write(b"CONNECT\naccept-version:2.0\nhost:x\n\n\x00")
    error = peer.read_frame()
    assert error.headers["version"] == "1.0,1.1,1.2"
    assert peer.wait_closed()


def test_oversized_pre_connect_frame_is_cut_early(broker: BrokerProcess, raw: RawPeers) -> None:
    peer = raw(broker.address)
    peer.write(b"CONNECT\nx:" + b"a" * 20_000)  # far beyond the 8 KiB pre-CONNECT limit, no end
    error = peer.read_frame()
    assert error.headers["message"] in {"Frame too large", "Header line too long"}
    assert peer.wait_closed()


def test_oversized_body_is_refused(broker: BrokerProcess, raw: RawPeers) -> None:
    peer = raw(broker.address)
    peer.connect()
    peer.write(b"SEND\ndestination:/queue/a\ncontent-length:999999999\n\n")
    error = peer.read_frame()
    assert error.headers["message"] == "Frame too large"
    assert peer.wait_closed()


def test_too_many_headers(broker: BrokerProcess, raw: RawPeers) -> None:
    peer = raw(broker.address)
    peer.connect()
    headers = b"".join(b"h%d:v\n" % i for i in range(500))
    peer.write(b"SEND\ndestination:/queue/a\n" + headers + b"\n\x00")
    error = peer.read_frame()
    assert error.headers["message"] == "Too many headers"
    assert peer.wait_closed()


def test_bad_login_is_refused(broker: BrokerProcess, raw: RawPeers) -> None:
    peer = raw(broker.address)
    peer.write(b"CONNECT\naccept-version:1.2\nhost:x\nlogin:guest\npasscode:wrong\nreceipt:c\n\n\x00")
    error = peer.read_frame()
    assert error.headers["message"] == "Access refused"
    assert error.headers["receipt-id"] == "c"
    assert peer.wait_closed()


def test_garbage_then_healthy_broker(broker: BrokerProcess, raw: RawPeers) -> None:
    for junk in (b"\xff\xfegarbage\n\n\x00", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256))):
        peer = raw(broker.address)
        peer.write(junk)
        error = peer.read_frame()
        assert error.command.value == "ERROR"
        assert peer.wait_closed()
    with Client(*broker.address) as client:
        client.send("/queue/ok", b"1", receipt=True)


def test_bad_clients_leave_nothing_behind(broker: BrokerProcess, raw: RawPeers) -> None:
    for i in range(50):
        peer = raw(broker.address)
        peer.connect()
        peer.write(b"SUBSCRIBE\ndestination:/topic/t\nid:%d\n\n\x00" % i)
        peer.write(b"SUBSCRIBE\ndestination:/queue/leak\nid:q\nack:client\n\n\x00")
        peer.write(b"BEGIN\ntransaction:t\n\n\x00SEND\ndestination:/queue/leak\ntransaction:t\n\nx\x00")
        peer.write(b"FROB\n\n\x00")
        assert peer.read_frame().headers["message"] == "Unknown command"
        assert peer.wait_closed()
    with Client(*broker.address) as client:
        client.send("/queueit/admin", b"", headers={"command": "stat", "reply-to": "/temp-queue/s"})
        stat = json.loads(client.receive().body)
    assert stat["connections"] == 1
    assert stat["topics"] == []
    assert [(q["name"], q["depth"], q["consumers"]) for q in stat["queues"]] == [("leak", 0, 0)]
