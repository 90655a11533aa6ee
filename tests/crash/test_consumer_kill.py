"""Issue 3, part 2: a consumer process killed (SIGKILL) while it holds unacked messages.

Every message it held goes to another consumer, flagged ``redelivered:true``, without
delay; what it acked (with receipts) never comes back; nothing is lost or left behind.
The broker itself keeps running.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from queueit import Client, Message, ReceiveTimeout

from .broker_proc import CrashBroker, client
from .ledger import body_for

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 120
PREFETCH = 16
ACKS = 6
#: The held messages must reach the other consumer this soon after the kill.
REDELIVERY_SECONDS = 10.0


def _key(message: Message) -> str:
    return message.headers["x-key"]


def _ack_and_check_nothing_is_left(consumer: Client, queue: str, received: list[Message]) -> None:
    """Ack ``received``, then check the queue held nothing else: the next message to arrive is
    one sent after them."""
    for m in received:
        consumer.ack(m)
    consumer.send(queue, b"end", headers={"x-key": "end"}, receipt=True)
    last = consumer.receive(REDELIVERY_SECONDS)
    assert _key(last) == "end", f"left in the queue: {_key(last)}"
    consumer.ack(last, receipt=True)


@pytest.mark.parametrize("mode", ["client-individual", "client"])
def test_killed_consumer_gives_back_what_it_held(tmp_path: Path, mode: str) -> None:
    broker = CrashBroker.start(tmp_path / "data", tmp_path / "broker.log")
    holder: subprocess.Popen[str] | None = None
    queue = "/queue/held-" + mode
    try:
        keys = [f"m{i}" for i in range(MESSAGES)]
        with client(broker.address) as producer:
            for key in keys:
                producer.send(
                    queue, body_for(key), headers={"persistent": "true", "x-key": key}, receipt=True
                )
        args = [*map(str, broker.address), queue, mode, str(PREFETCH), str(ACKS)]
        holder = subprocess.Popen(
            [sys.executable, "-m", "tests.crash.holder", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None
        acked: list[str] = []
        held: list[str] = []
        for line in holder.stdout:
            word, _, key = line.strip().partition(" ")
            if word == "READY":
                break
            (acked if word == "ACKED" else held).append(key)
        assert len(acked) == ACKS, (acked, held, holder.poll())
        assert len(held) == PREFETCH, (acked, held, holder.poll())

        with client(broker.address) as other:
            other.subscribe(queue, ack="client-individual", prefetch=MESSAGES)
            fresh = [other.receive() for _ in range(MESSAGES - ACKS - PREFETCH)]
            assert {_key(m) for m in fresh} == set(keys) - set(acked) - set(held)
            assert not [m for m in fresh if m.headers.get("redelivered")], "never delivered before"
            with pytest.raises(ReceiveTimeout):
                other.receive(0.3)  # the holder's messages stay with the holder while it lives

            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            killed_at = time.monotonic()
            again = [other.receive(REDELIVERY_SECONDS) for _ in range(PREFETCH)]
            took = time.monotonic() - killed_at
            assert sorted(_key(m) for m in again) == sorted(held), "exactly what the killed consumer held"
            assert all(m.headers.get("redelivered") == "true" for m in again), [m.headers for m in again]
            assert all(m.body == body_for(_key(m)) for m in again)
            assert took < REDELIVERY_SECONDS
            _ack_and_check_nothing_is_left(other, queue, fresh + again)
        assert broker.terminate() == 0
        assert broker.bad_log_lines() == []
    finally:
        if holder is not None:
            if holder.poll() is None:
                holder.kill()
            holder.wait()
            if holder.stdout is not None:
                holder.stdout.close()
        broker.ensure_dead()


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="TCP_CORK is Linux's")
def test_a_consumer_killed_with_corked_acks_loses_none_of_them(tmp_path: Path) -> None:
    """ACKs held by a corked socket (the inline pool's coalescing) reach the broker even when
    the process dies before the cork is lifted: the kernel sends them as it closes the socket."""
    broker = CrashBroker.start(tmp_path / "data", tmp_path / "broker.log")
    queue, prefetch, acks = "/queue/corked", 8, 5
    keys = [f"c{i}" for i in range(prefetch)]
    try:
        with client(broker.address) as producer:
            for key in keys:
                producer.send(
                    queue, body_for(key), headers={"persistent": "true", "x-key": key}, receipt=True
                )
        args = [*map(str, broker.address), queue, str(prefetch), str(acks)]
        acker = subprocess.run(
            [sys.executable, "-m", "tests.crash.corked_acker", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,  # it ends itself with SIGKILL
        )
        assert acker.returncode == -signal.SIGKILL, acker.stderr
        lines = [line.split() for line in acker.stdout.splitlines()]
        acked = [key for word, key in lines if word == "ACKED"]
        unsent = [int(n) for word, n in lines if word == "UNSENT"]
        assert len(acked) == acks, acker.stdout
        assert len(unsent) == 1, acker.stdout
        assert unsent[0] > 0, f"the ACKs were on the wire already: {acker.stdout}"

        with client(broker.address) as other:
            other.subscribe(queue, ack="client-individual", prefetch=prefetch)
            again = [other.receive(REDELIVERY_SECONDS) for _ in range(prefetch - acks)]
            assert sorted(_key(m) for m in again) == sorted(set(keys) - set(acked))
            _ack_and_check_nothing_is_left(other, queue, again)
        assert broker.terminate() == 0
        assert broker.bad_log_lines() == []
    finally:
        broker.ensure_dead()
