"""The broker process end to end: shutdown, heart-beats, limits, auth, TLS, receipts."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from queueit import App
from queueit.client import Client, ServerRefused
from queueit.jobs import Worker, WorkerSettings
from queueit.transports import TransportError, open_transport

from ..conftest import BrokerProcess, make_test_certificate, run_worker_until, start_broker
from .raw import CONNECT_12, RawPeers


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, "utf-8")
    return path


def queueit(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "queueit", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly_with_clients_connected(tmp_path: Path, sig: int) -> None:
    broker = start_broker(tmp_path / "data")
    client = Client(*broker.address)
    client.connect()
    client.subscribe("/queue/a", receipt=True)
    assert broker.stop(sig) == 0
    assert any("stopped" in line for line in broker.log)
    assert any("Send a first message:" in line and "/queue/hello" in line for line in broker.log)
    assert not any("Traceback" in line for line in broker.log)
    with pytest.raises(Exception, match="closed"):
        client.receive(timeout=5)


def test_receipts_for_every_frame_and_disconnect(broker: BrokerProcess, raw: RawPeers) -> None:
    peer = raw(broker.address)
    peer.write(CONNECT_12.replace(b"\n\n", b"\nreceipt:c0\n\n"))
    assert peer.read_frame().command.value == "CONNECTED"
    assert peer.read_frame().headers["receipt-id"] == "c0"
    frames = [
        b"SUBSCRIBE\ndestination:/queue/r\nid:s\nack:client\nreceipt:r1\n\n\x00",
        b"BEGIN\ntransaction:t\nreceipt:r2\n\n\x00",
        b"SEND\ndestination:/queue/r\ntransaction:t\nreceipt:r3\n\nx\x00",
        b"COMMIT\ntransaction:t\nreceipt:r4\n\n\x00",
    ]
    peer.write(b"".join(frames))
    seen: list[str] = []
    message = None
    while len(seen) < 4 or message is None:
        frame = peer.read_frame()
        if frame.command.value == "MESSAGE":
            message = frame
        else:
            seen.append(frame.headers["receipt-id"])
    assert seen == ["r1", "r2", "r3", "r4"]
    ack_id = message.headers["ack"].encode()
    peer.write(b"ACK\nid:" + ack_id + b"\nreceipt:r5\n\n\x00UNSUBSCRIBE\nid:s\nreceipt:r6\n\n\x00")
    assert [peer.read_frame().headers["receipt-id"] for _ in range(2)] == ["r5", "r6"]
    peer.write(b"DISCONNECT\nreceipt:bye\n\n\x00")
    assert peer.read_frame().headers["receipt-id"] == "bye"
    assert peer.wait_closed()


def test_server_sends_heartbeats_and_closes_a_silent_client(tmp_path: Path, raw: RawPeers) -> None:
    broker = start_broker(tmp_path / "data")
    try:
        peer = raw(broker.address)
        connected = peer.connect(CONNECT_12.replace(b"\n\n", b"\nheart-beat:500,500\n\n"))
        assert connected.headers["heart-beat"] == "1000,1000"  # max() of ours (1000) and theirs (500)
        start = time.monotonic()
        assert peer.wait_closed(timeout=10)
        elapsed = time.monotonic() - start
        assert 1.5 < elapsed < 6, elapsed  # dead after interval * grace (2 s), not before
        assert peer.parser.next_frame() is None  # only heart-beat EOLs arrived meanwhile...
        assert peer.parser.heartbeats >= 1  # ...at least one of them
    finally:
        assert broker.stop() == 0


def test_client_that_beats_stays_connected(broker: BrokerProcess) -> None:
    with Client(*broker.address, heartbeat=(1000, 1000)) as client:
        client.pump(4.5)  # idle for more than three intervals, beating
        client.send("/queue/hb", b"alive", receipt=True)


def test_login_timeout_and_connection_limits(tmp_path: Path, raw: RawPeers) -> None:
    config = write_config(tmp_path / "q.toml", "[server]\nlogin_timeout = 1.0\nmax_connections_per_ip = 2\n")
    broker = start_broker(tmp_path / "data", "--config", str(config))
    try:
        first = raw(broker.address)
        second = raw(broker.address)
        third = raw(broker.address)
        error = third.read_frame()
        assert error.headers["message"] == "Too many connections"
        assert third.wait_closed()
        timeout_error = first.read_frame(timeout=5)
        assert timeout_error.headers["message"] == "Login timeout"
        assert second.read_frame(timeout=5).headers["message"] == "Login timeout"
        again = raw(broker.address)  # slots are freed
        again.connect()
    finally:
        assert broker.stop() == 0


def test_users_permissions_and_guest_off(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = queueit(
        "user",
        "add",
        "alice",
        "--data-dir",
        str(data),
        "--password-stdin",
        "--read",
        "/queue/in*",
        "--write",
        "/queue/out",
        "--admin",
        "/queue/*",
        stdin="s3cret:pw\n",
    )
    assert added.returncode == 0, added.stderr
    listed = queueit("user", "list", "--data-dir", str(data))
    assert "alice\tread=/queue/in*\twrite=/queue/out\tadmin=/queue/*" in listed.stdout
    assert "s3cret" not in (data / "users.json").read_text()
    duplicate = queueit("user", "add", "alice", "--data-dir", str(data), "--password-stdin", stdin="x\n")
    assert duplicate.returncode == 2
    assert "exists" in duplicate.stderr
    config = write_config(tmp_path / "q.toml", '[auth]\nguest = "off"\n')
    broker = start_broker(data, "--config", str(config))
    try:
        with Client(*broker.address, login="alice", passcode="s3cret:pw") as alice:
            alice.send("/queue/out", b"ok", receipt=True)
        refused = Client(*broker.address, login="alice", passcode="s3cret:pw")
        refused.connect()
        with pytest.raises(ServerRefused, match="Access refused: write on /queue/elsewhere"):
            refused.send("/queue/elsewhere", b"no", receipt=True)
        with pytest.raises(ServerRefused, match="Bad login"):
            Client(*broker.address, login="alice", passcode="wrong").connect()
        with pytest.raises(ServerRefused, match="Bad login"):
            Client(*broker.address).connect()  # guest is off
    finally:
        assert broker.stop() == 0
    changed = queueit("user", "passwd", "alice", "--data-dir", str(data), "--password-stdin", stdin="new\n")
    assert changed.returncode == 0
    removed = queueit("user", "remove", "alice", "--data-dir", str(data))
    assert removed.returncode == 0
    assert "alice" not in queueit("user", "list", "--data-dir", str(data)).stdout


def test_tls_listener(tmp_path: Path) -> None:
    cert, key = make_test_certificate(tmp_path)
    config = write_config(tmp_path / "q.toml", f'[tls]\nport = 0\ncert = "{cert}"\nkey = "{key}"\n')
    broker = start_broker(tmp_path / "data", "--config", str(config))
    try:
        tls_line = next(line for line in broker.log if "stomp+ssl://" in line)
        tls_port = int(tls_line.split("stomp+ssl://127.0.0.1:")[1].split()[0].rstrip(","))
        context = ssl.create_default_context(cafile=str(cert))
        with Client("127.0.0.1", tls_port, tls=context) as client:
            client.subscribe("/queue/secure", receipt=True)
            client.send("/queue/secure", b"over tls", receipt=True)
            assert client.receive().body == b"over tls"
        # The job framework's queueits:// URL: sent and run over TLS, the certificate checked.
        app = App(f"queueits://localhost:{tls_port}?ca={cert}")
        ran: list[int] = []

        @app.job(queue="secure-jobs")
        def secure(n: int) -> None:
            ran.append(n)

        secure.send(7)

        run_worker_until(Worker(app, WorkerSettings()), lambda: bool(ran), 5)
        app.close()
        assert ran == [7]
        untrusted = App(f"queueits://localhost:{tls_port}")  # the system's CAs: not this one
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.job(queue="secure-jobs")(lambda: None).send()
        untrusted.close()
    finally:
        assert broker.stop() == 0


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("queueit://localhost?ca=/x.pem", "unknown or repeated URL options"),
        ("queueits://localhost?verify=no", "unknown or repeated URL options"),
        ("queueits://localhost?ca=/no/such/ca.pem", "cannot read the CA certificates"),
    ],
)
def test_bad_queueit_urls_are_refused_with_the_reason(url: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        open_transport(url)


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "q.toml", "[server]\nprot = 1\n")
    result = queueit("serve", "--data-dir", str(tmp_path), "--config", str(config))
    assert result.returncode == 2
    assert "unknown config key(s) server.prot" in result.stderr
    bad_port = queueit("serve", "--port", "99999")
    assert bad_port.returncode == 2
    assert "port must be 0-65535" in bad_port.stderr


def test_flow_control_parks_a_fast_producer_and_loses_nothing(broker: BrokerProcess) -> None:
    total = 30_000
    consumer = Client(*broker.address)
    consumer.connect()
    consumer.subscribe("/queue/flow", ack="client-individual", prefetch=200, receipt=True)
    producer = Client(*broker.address)
    producer.connect()
    for i in range(total):
        producer.send("/queue/flow", str(i).encode())
    seen = 0
    while seen < total:
        message = consumer.receive(timeout=20)
        assert message.body == str(seen).encode()  # in order, nothing lost or repeated
        consumer.ack(message)
        seen += 1
    producer.disconnect()  # its RECEIPT comes after every parked SEND was replayed
    with Client(*broker.address) as admin:
        admin.send("/queueit/admin", b"", headers={"command": "stat", "reply-to": "/temp-queue/s"})
        stat = json.loads(admin.receive().body)
    (queue,) = [q for q in stat["queues"] if q["name"] == "flow"]
    assert queue["flow_blocks"] >= 1  # the producer really was held back
    assert queue["depth"] == 0
    consumer.disconnect()


def test_a_client_that_errs_gives_its_messages_back_even_if_it_never_reads(
    broker: BrokerProcess, raw: RawPeers
) -> None:
    greedy = raw(broker.address)
    greedy.connect()
    greedy.write(
        b"SUBSCRIBE\ndestination:/queue/held\nid:1\nack:client-individual\nprefetch-count:50\nreceipt:s\n\n\x00"
    )
    assert greedy.read_frame().headers["receipt-id"] == "s"
    with Client(*broker.address) as producer:
        for i in range(50):
            producer.send("/queue/held", b"x" * 60_000, headers={"n": str(i)})  # fills its socket
        producer.send("/queue/held", b"done", receipt=True)
    greedy.write(b"FROB\n\n\x00")  # an ERROR, and greedy still reads nothing
    with Client(*broker.address) as other:
        other.subscribe("/queue/held", ack="client-individual", prefetch=100)
        got = [other.receive(timeout=10) for _ in range(51)]
    assert {m.headers.get("n") for m in got} == {str(i) for i in range(50)} | {None}
    # What greedy held comes back marked (what its full socket kept it from taking never left).
    assert any(m.headers.get("redelivered") == "true" for m in got)


def test_messages_given_back_at_disconnect_go_to_other_connections(
    broker: BrokerProcess, raw: RawPeers
) -> None:
    peer = raw(broker.address)
    peer.connect()
    peer.write(
        b"SUBSCRIBE\ndestination:/queue/back\nid:a\nack:client-individual\nprefetch-count:3\n\n\x00"
        b"SUBSCRIBE\ndestination:/queue/back\nid:b\nack:client-individual\nprefetch-count:10\nreceipt:s\n\n\x00"
    )
    assert peer.read_frame().headers["receipt-id"] == "s"
    with Client(*broker.address) as producer:
        for i in range(6):
            producer.send("/queue/back", str(i).encode(), receipt=True)
    held = [peer.read_frame() for _ in range(6)]
    assert sorted(f.body for f in held) == [str(i).encode() for i in range(6)]
    peer.write(b"DISCONNECT\nreceipt:bye\n\n\x00")
    assert peer.read_frame().headers["receipt-id"] == "bye"  # and nothing after it
    assert peer.wait_closed()
    assert peer.parser.next_frame() is None
    with Client(*broker.address) as other:
        other.subscribe("/queue/back", ack="client-individual", prefetch=10)
        again = sorted(other.receive(timeout=10).body for _ in range(6))
    assert again == [str(i).encode() for i in range(6)]


def test_a_subscribe_receipt_comes_before_the_first_message(broker: BrokerProcess, raw: RawPeers) -> None:
    """Clients (stompbench, stomp-php) wait for the receipt and may drop what comes before it."""
    producer = raw(broker.address)
    producer.connect()
    producer.write(b"".join(b"SEND\ndestination:/queue/first\nreceipt:p%d\n\nm\x00" % i for i in range(3)))
    assert [producer.read_frame().headers["receipt-id"] for _ in range(3)] == ["p0", "p1", "p2"]
    for persistent in (False, True):
        consumer = raw(broker.address)
        consumer.connect()
        dest = b"/queue/first" if not persistent else b"/queue/first-new"
        if persistent:  # a queue the SUBSCRIBE creates (a journal write) with messages right after
            consumer.write(
                b"SUBSCRIBE\ndestination:" + dest + b"\nid:s\nack:client-individual\nreceipt:r\n\n\x00"
            )
            producer.write(b"SEND\ndestination:" + dest + b"\npersistent:true\n\nm\x00")
        else:
            consumer.write(
                b"SUBSCRIBE\ndestination:" + dest + b"\nid:s\nack:client-individual\nreceipt:r\n\n\x00"
            )
        first = consumer.read_frame()
        assert first.command.value == "RECEIPT", first
        assert consumer.read_frame().command.value == "MESSAGE"
