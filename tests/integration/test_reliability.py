"""Reliable delivery over real sockets: restarts, dead letters, leases, delays, limits, alarms."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from queueit import Client
from queueit.client import ReceiveTimeout, ServerRefused

from ..conftest import BrokerProcess, start_broker

#: How far the wall clock (the broker's, for due times) may move against time.monotonic()
#: during one test.
WALL_CLOCK_SLACK = 0.2


def client(b: BrokerProcess) -> Client:
    """A client; ``with`` connects it."""
    return Client(b.host, b.port, timeout=10)


def connected(b: BrokerProcess) -> Client:
    c = client(b)
    c.connect()
    return c


def cli(b: BrokerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "queueit", *args, "--port", str(b.port)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def stat(b: BrokerProcess) -> dict[str, dict[str, object]]:
    out = cli(b, "stat", "--json")
    assert out.returncode == 0, out.stderr
    return {q["name"]: q for q in json.loads(out.stdout)["queues"]}


@pytest.fixture
def configured(tmp_path: Path) -> tuple[Path, Path]:
    """A data dir and a config file the test writes before starting the broker."""
    return tmp_path / "data", tmp_path / "queueit.toml"


def stop_clean(b: BrokerProcess) -> None:
    assert b.stop() == 0, "\n".join(b.log)
    assert not any("Traceback" in line for line in b.log), "\n".join(b.log)


def test_persistent_messages_survive_a_restart_and_stat_shows_the_fsync_policy(tmp_path: Path) -> None:
    b = start_broker(tmp_path / "data")
    with client(b) as c:
        for i in range(5):
            c.send("/queue/keep", f"p{i}", headers={"persistent": "true"}, receipt=True)
        c.send("/queue/keep", "transient", receipt=True)
    q = stat(b)["keep"]
    assert q["fsync"] == "always"
    assert q["depth"] == 6
    stop_clean(b)
    b = start_broker(tmp_path / "data")
    try:
        with client(b) as c:
            c.subscribe("/queue/keep", ack="client-individual")
            got = [c.receive(timeout=5) for _ in range(5)]
            assert [m.body for m in got] == [f"p{i}".encode() for i in range(5)]
            assert all("redelivered" not in m.headers for m in got)  # a clean stop flags nothing
            with pytest.raises(ReceiveTimeout):
                c.receive(timeout=0.5)  # the non-persistent one did not survive
            for m in got:
                c.ack(m, receipt=True)
    finally:
        stop_clean(b)


def test_dead_letters_list_show_redrive_purge(broker: BrokerProcess) -> None:
    with client(broker) as c:
        for i in range(3):
            c.send("/queue/work", f"job{i}", headers={"persistent": "true", "x-job": str(i)}, receipt=True)
        c.subscribe("/queue/work", ack="client-individual", prefetch=10)
        got = [c.receive(timeout=5) for _ in range(3)]
        c.nack(got[0], requeue=False, receipt=True)
        c.nack(got[1], requeue=False, reason="invalid", receipt=True)
        c.ack(got[2], receipt=True)

        listing = cli(broker, "dlq", "list", "work", "--json")
        assert listing.returncode == 0, listing.stderr
        answer = json.loads(listing.stdout)
        assert answer["dead_letter_queue"] == "DLQ.work"
        assert answer["depth"] == 2
        assert [(m["id"], m["reason"], m["queue"], m["deliveries"]) for m in answer["messages"]] == [
            (got[0].message_id, "rejected", "work", 1),
            (got[1].message_id, "invalid", "work", 1),
        ]
        table = cli(broker, "dlq", "list", "work").stdout
        assert "DLQ.work: 2 dead letter(s)" in table
        assert "invalid" in table

        shown = cli(broker, "dlq", "show", "work", "--id", got[1].message_id)
        assert shown.returncode == 0, shown.stderr
        assert "x-job: 1" in shown.stdout
        assert "x-dead-letter-reason: invalid" in shown.stdout
        assert shown.stdout.rstrip().endswith("job1")

        redriven = cli(broker, "dlq", "redrive", "work", "--id", got[0].message_id)
        assert redriven.returncode == 0, redriven.stderr
        assert "moved 1 message(s) back; 1 left" in redriven.stdout
        back = c.receive(timeout=5)
        assert back.body == b"job0"
        assert back.headers["x-job"] == "0"
        assert not any(k.startswith("x-dead-letter-") for k in back.headers)
        c.ack(back, receipt=True)

        purged = cli(broker, "dlq", "purge", "work")
        assert purged.returncode == 0
        assert "purged 1 message(s)" in purged.stdout
        assert stat(broker)["DLQ.work"]["depth"] == 0
        missing = cli(broker, "dlq", "show", "work", "--id", "nope")
        assert missing.returncode == 1
        assert "No message 'nope'" in missing.stderr


def test_max_deliveries_sends_a_poison_message_to_the_dead_letter_queue(
    configured: tuple[Path, Path],
) -> None:
    data, config = configured
    config.write_text('[[queues]]\nmatch = "poison"\nmax_deliveries = 3\n')
    b = start_broker(data, "--config", str(config))
    try:
        with client(b) as producer:
            producer.send("/queue/poison", "boom", headers={"persistent": "true"}, receipt=True)
        for attempt in range(3):  # each consumer dies without acking, as a crashing worker would
            c = connected(b)
            c.subscribe("/queue/poison", ack="client-individual")
            m = c.receive(timeout=5)
            assert m.body == b"boom"
            if attempt:
                assert m.headers["redelivered"] == "true"
                assert m.headers["x-delivery-count"] == str(attempt)
            c.close()
        with client(b) as c:
            c.subscribe("/queue/poison", ack="client-individual")
            with pytest.raises(ReceiveTimeout):
                c.receive(timeout=0.5)
            c.subscribe("/queue/DLQ.poison", ack="client-individual")
            dead = c.receive(timeout=5)
            assert dead.body == b"boom"
            assert dead.headers["x-dead-letter-reason"] == "max-deliveries"
            assert dead.headers["x-dead-letter-deliveries"] == "3"
            c.ack(dead, receipt=True)
    finally:
        stop_clean(b)


def test_an_unacked_lease_returns_to_another_consumer_and_can_be_extended(broker: BrokerProcess) -> None:
    with client(broker) as producer:
        producer.send("/queue/lease", "slow", receipt=True)
        producer.send("/queue/lease", "long", receipt=True)
    first = connected(broker)
    first.subscribe("/queue/lease", ack="client-individual", headers={"visibility-timeout": "2000"})
    slow = first.receive(timeout=5)
    long = first.receive(timeout=5)
    assert (slow.body, long.body) == (b"slow", b"long")
    first.extend_lease(long, 60_000, receipt=True)
    with client(broker) as second:
        second.subscribe("/queue/lease", ack="client-individual")
        again = second.receive(timeout=8)  # the lease of "slow" ran out after 2 s
        assert again.body == b"slow"
        assert again.headers["redelivered"] == "true"
        assert again.headers["x-delivery-count"] == "1"
        with pytest.raises(ReceiveTimeout):
            second.receive(timeout=1.0)  # "long" is still leased to the first consumer
        first.ack(slow, receipt=True)  # too late, and harmless: the connection stays up
        first.ack(long, receipt=True)
        second.ack(again, receipt=True)
    first.disconnect()


def test_delayed_messages_and_nack_with_delay(broker: BrokerProcess) -> None:
    with client(broker) as c:
        c.subscribe("/queue/later", ack="client-individual")
        sent = time.monotonic()
        c.send("/queue/later", "in 700 ms", headers={"delay": "700", "persistent": "true"}, receipt=True)
        c.send("/queue/later", "now", receipt=True)
        assert c.receive(timeout=5).body == b"now"
        m = c.receive(timeout=5)
        waited = time.monotonic() - sent
        assert m.body == b"in 700 ms"
        assert 0.7 - WALL_CLOCK_SLACK <= waited < 5
        assert stat(broker)["later"]["scheduled"] == 0
        nacked = time.monotonic()
        c.nack(m, delay_ms=5000, receipt=True)  # long enough for `queueit stat` to start and ask
        assert stat(broker)["later"]["scheduled"] == 1
        again = c.receive(timeout=10)
        assert again.body == b"in 700 ms"
        assert again.headers["redelivered"] == "true"
        # The broker keeps due times on the wall clock (they survive a restart), which a VM's
        # host may adjust against this monotonic one: tens of ms seen in a 5 s wait.
        assert time.monotonic() - nacked >= 5.0 - WALL_CLOCK_SLACK
        c.ack(again, receipt=True)


def test_reject_publish_refuses_with_an_error_receipt(configured: tuple[Path, Path]) -> None:
    data, config = configured
    config.write_text('[[queues]]\nmatch = "small"\nmax_messages = 2\n')
    b = start_broker(data, "--config", str(config))
    try:
        with client(b) as c:
            c.send("/queue/small", "1", receipt=True)
            c.send("/queue/small", "2", receipt=True)
            with pytest.raises(ServerRefused) as refused:
                c.send("/queue/small", "3", receipt=True)
            assert refused.value.message == "Queue full"
            assert "max_messages=2" in refused.value.detail
        assert stat(b)["small"]["depth"] == 2
    finally:
        stop_clean(b)


def test_memory_alarm_holds_publishers_but_consumers_drain(configured: tuple[Path, Path]) -> None:
    data, config = configured
    b = start_broker(data)
    with client(b) as c:
        for i in range(3):
            c.send("/queue/backlog", f"m{i}", headers={"persistent": "true"}, receipt=True)
    stop_clean(b)
    # A memory limit of one byte: the broker is past it from the start.
    config.write_text("[resources]\nmemory_limit = 1\npublish_timeout = 1.5\n")
    b = start_broker(data, "--config", str(config))
    try:
        time.sleep(0.6)  # the first resource check
        with client(b) as consumer, client(b) as producer:
            consumer.subscribe("/queue/backlog", ack="client-individual")
            started = time.monotonic()
            with pytest.raises(ServerRefused) as refused:
                producer.send("/queue/backlog", "held", receipt=True)
            assert refused.value.message == "Broker out of resources"
            assert "memory use" in refused.value.detail
            assert time.monotonic() - started >= 1.4
            got = [consumer.receive(timeout=5) for _ in range(3)]
            assert [m.body for m in got] == [b"m0", b"m1", b"m2"]
            for m in got:
                consumer.ack(m, receipt=True)
    finally:
        stop_clean(b)
    assert any("holding publishers: memory use" in line for line in b.log), "\n".join(b.log)


def test_a_durable_subscription_keeps_its_binding_and_messages_across_a_restart(tmp_path: Path) -> None:
    def subscriber(b: BrokerProcess) -> Client:
        c = Client(b.host, b.port, timeout=10, client_id="reporting")
        c.connect()
        c.subscribe("/topic/sales.*", id="s1", ack="client-individual", headers={"durable": "true"})
        return c

    b = start_broker(tmp_path / "data")
    subscriber(b).disconnect()
    with client(b) as c:
        c.send("/topic/sales.eu", "before the restart", headers={"persistent": "true"}, receipt=True)
    stop_clean(b)
    b = start_broker(tmp_path / "data")
    try:
        with client(b) as c:  # the subscription is bound again before its client comes back
            c.send("/topic/sales.us", "after the restart", headers={"persistent": "true"}, receipt=True)
            c.send("/topic/other", "not for it", receipt=True)
        s = subscriber(b)
        got = [s.receive(timeout=5) for _ in range(2)]
        assert [m.body for m in got] == [b"before the restart", b"after the restart"]
        for m in got:
            s.ack(m, receipt=True)
        with pytest.raises(ReceiveTimeout):
            s.receive(timeout=0.3)
        s.disconnect()
    finally:
        stop_clean(b)


def test_disk_watermark_holds_publishers_and_they_resume(configured: tuple[Path, Path]) -> None:
    data, config = configured
    # More free space required than any disk has: the broker is past its disk watermark.
    config.write_text("[resources]\ndisk_free_limit = 4611686018427387904\npublish_timeout = 1.0\n")
    b = start_broker(data, "--config", str(config))
    try:
        time.sleep(0.6)
        with client(b) as producer:
            with pytest.raises(ServerRefused) as refused:
                producer.send("/queue/disk", "held", headers={"persistent": "true"}, receipt=True)
            assert refused.value.message == "Broker out of resources"
            assert "free disk space" in refused.value.detail
        admin = cli(b, "stat", "--json")  # admin requests pass while publishers are held
        assert admin.returncode == 0, admin.stderr
        assert "disk" not in {q["name"] for q in json.loads(admin.stdout)["queues"]}  # nothing got in
    finally:
        stop_clean(b)
    assert any("holding publishers: free disk space" in line for line in b.log), "\n".join(b.log)


def test_a_stuck_consumer_does_not_slow_the_others_and_memory_stays_bounded(broker: BrokerProcess) -> None:
    stuck = connected(broker)
    stuck.subscribe("/queue/shared", ack="client-individual", prefetch=5, receipt=True)  # never acks
    with client(broker) as worker, client(broker) as producer:
        worker.subscribe("/queue/shared", ack="client-individual", prefetch=50, receipt=True)
        rss_before = _rss_kib(broker)
        body = "x" * 1024
        received = 0
        for chunk in range(40):
            for i in range(500):
                producer.send("/queue/shared", body, receipt=i == 499)
            wanted = (chunk + 1) * 500 - 5  # all but the five the stuck consumer holds
            while received < wanted:
                worker.ack(worker.receive(timeout=5))
                received += 1
        with pytest.raises(ReceiveTimeout):
            worker.receive(timeout=0.3)
        assert received == 20_000 - 5
        assert _rss_kib(broker) - rss_before < 64 * 1024, "the broker kept what it delivered"
    stuck.close()


def _rss_kib(b: BrokerProcess) -> int:
    for line in Path(f"/proc/{b.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
