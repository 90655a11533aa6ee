"""Issue 3, part 4: restarts. A clean stop (SIGTERM) keeps every unacked persistent message
and forgets every acked one; and after any restart, the messages on disk reach a consumer
that subscribes at once, even while a producer keeps the broker busy (none stuck).
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from pathlib import Path

import pytest

from queueit import Message, ReceiveTimeout
from queueit.stomp import Command

from .broker_proc import CrashBroker, client, drain
from .ledger import body_for
from .load import RawConnection

A, B = "/queue/clean-a", "/queue/clean-b"


def _key(message: Message) -> str:
    return message.headers["x-key"]


def _send(address: tuple[str, int], queue: str, keys: list[str]) -> None:
    with client(address) as producer:
        for key in keys:
            producer.send(queue, body_for(key), headers={"persistent": "true", "x-key": key}, receipt=True)


def test_clean_restart_keeps_unacked_and_forgets_acked(tmp_path: Path) -> None:
    data, logs = tmp_path / "data", tmp_path / "logs"
    logs.mkdir()
    a_keys = [f"a{i}" for i in range(60)]
    b_keys = [f"b{i}" for i in range(40)]
    broker = CrashBroker.start(data, logs / "life-0.log")
    try:
        _send(broker.address, A, a_keys)
        _send(broker.address, B, b_keys)
        consumer = client(broker.address)
        consumer.connect()
        consumer.subscribe(A, ack="client-individual", prefetch=30)
        consumer.subscribe(B, ack="client", prefetch=20)
        got = [consumer.receive() for _ in range(50)]
        a_got = [m for m in got if m.destination == A]
        b_got = [m for m in got if m.destination == B]
        assert [_key(m) for m in a_got] == a_keys[:30]
        assert [_key(m) for m in b_got] == b_keys[:20]
        # A: 10 acks with receipts, 10 without, 10 held; B: one cumulative ACK of the 12th, 8 held.
        for message in a_got[0:30:3]:
            consumer.ack(message, receipt=True)
        for message in a_got[1:30:3]:
            consumer.ack(message)
        consumer.ack(b_got[11])
        # A frame that writes nothing: its receipt says the ACKs before it were applied, not
        # that they are on disk. The clean stop must write them.
        consumer.abort(consumer.begin(), receipt=True)
        # The ACKs made room: the broker delivered more before that receipt. Those are held too.
        refill = []
        with contextlib.suppress(ReceiveTimeout):
            while True:
                refill.append(consumer.receive(0.5))
        a_acked = {_key(m) for m in a_got[0:30:3] + a_got[1:30:3]}
        a_held = {_key(m) for m in a_got[2:30:3]} | {_key(m) for m in refill if m.destination == A}
        b_acked = set(b_keys[:12])
        b_held = set(b_keys[12:20]) | {_key(m) for m in refill if m.destination == B}
        assert len(a_held) == 30, sorted(a_held)  # prefetch 30, 20 acked: 20 more delivered
        assert len(b_held) == 20, sorted(b_held)  # prefetch 20, 12 acked at once: 12 more

        assert broker.terminate() == 0, broker.log()  # the consumer is still connected, holding 50
        consumer.close()
        assert broker.bad_log_lines() == []
        broker = CrashBroker.start(data, logs / "life-1.log")
        a_after, b_after = drain(broker.address, A), drain(broker.address, B)
        for after, keys, acked, held in (
            (a_after, a_keys, a_acked, a_held),
            (b_after, b_keys, b_acked, b_held),
        ):
            kept = [_key(m) for m in after]
            assert sorted(kept) == sorted(set(keys) - acked), f"acked: {sorted(acked & set(kept))}"
            flagged = {_key(m) for m in after if m.headers.get("redelivered") == "true"}
            assert flagged == held, "delivered before the stop: redelivered; never delivered: not"
            assert all(m.body == body_for(_key(m)) for m in after)

        # Everything is acked now: after another clean restart nothing is left.
        assert broker.terminate() == 0
        broker = CrashBroker.start(data, logs / "life-2.log")
        assert drain(broker.address, A) == []
        assert drain(broker.address, B) == []
        assert broker.terminate() == 0
        assert [
            line
            for n in range(3)
            for line in (logs / f"life-{n}.log").read_text().splitlines()
            if "Traceback" in line
        ] == []
    finally:
        broker.ensure_dead()


#: A producer's burst right after the restart: this many persistent SENDs of this many bytes.
BURST, BURST_BODY = 150, 100_000
#: The consumer subscribes this long (s) after the broker says it is ready, in turn.
SUBSCRIBE_AFTER = (0.03, 0.045, 0.06)


@pytest.mark.parametrize("stop", ["kill", "terminate"])
def test_messages_on_disk_reach_a_consumer_that_subscribes_during_a_burst(tmp_path: Path, stop: str) -> None:
    """A restart with messages on disk; a producer starts a burst to another queue at once,
    and a consumer subscribes a few ms later: it must get the messages, not wait forever."""
    seed = tmp_path / "seed"
    broker = CrashBroker.start(seed, tmp_path / "seed.log")
    try:
        _send(broker.address, A, [f"a{i}" for i in range(20)])
    finally:
        if stop == "kill":
            broker.kill()
        else:
            assert broker.terminate() == 0
    for attempt in range(6):
        data = tmp_path / f"data-{attempt}"
        shutil.copytree(seed, data)
        broker = CrashBroker.start(data, tmp_path / f"life-{attempt}.log")
        ready = time.monotonic()
        burst = RawConnection(broker.address)
        sender = threading.Thread(target=_burst, args=(burst,), daemon=True)
        try:
            burst.login()
            sender.start()
            time.sleep(max(0.0, SUBSCRIBE_AFTER[attempt % len(SUBSCRIBE_AFTER)] - (time.monotonic() - ready)))
            with client(broker.address) as consumer:
                consumer.subscribe(A, ack="client-individual", prefetch=1)
                try:
                    message = consumer.receive(10.0)
                except ReceiveTimeout:
                    after = time.monotonic() - ready - 10
                    pytest.fail(
                        f"attempt {attempt}: 20 messages on disk after a {stop} restart, yet nothing reached "
                        f"a consumer in 10 s (it subscribed {after:.3f} s after ready, during a producer's "
                        f"burst); broker log {broker.log_path}"
                    )
                assert _key(message) == "a0"
                consumer.ack(message, receipt=True)
        finally:
            broker.kill()
            burst.close()
            sender.join(10)
        shutil.rmtree(data)  # 15 MB of burst each


def _burst(raw: RawConnection) -> None:
    frame = raw.conn.frame(
        Command.SEND, [("destination", "/queue/clean-burst"), ("persistent", "true")], b"x" * BURST_BODY
    )
    with contextlib.suppress(OSError):  # the broker may be killed first
        raw.sock.sendall(frame * BURST)
