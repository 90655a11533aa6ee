"""Issue 3, part 1: SIGKILL the broker under load from real clients, restart it, count.

At least 30 kills at random moments 50-400 ms into the load (see :mod:`.load` for the
clients and :mod:`.ledger` for the checks). ``scripts/soak-crash`` runs the same loop for
longer.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from queueit.stomp import Command, Receipt
from queueit.stomp import Message as StompMessage

from .broker_proc import CrashBroker, client
from .conftest import SEED_ENV
from .load import RawConnection, run_kill_loop

KILLS = int(os.environ.get("QUEUEIT_CRASH_KILLS", "40"))


def test_kill_9_under_load_keeps_every_receipted_message(tmp_path: Path, crash_seed: int) -> None:
    report = run_kill_loop(tmp_path / "data", tmp_path / "logs", crash_seed, KILLS, progress=print)
    print(report.summary())
    replay = f"replay with {SEED_ENV}={crash_seed}; broker logs in {report.log_dir}"
    assert report.kills == KILLS
    assert report.ok, f"{report.summary()}\n{report.verdict.details()}\n({replay})"
    # The run must have exercised what it checks, or its silence proves nothing.
    counts = report.verdict.counts
    assert counts["receipted"] > 1000, report.summary()
    assert counts["acks_receipted"] > 100, report.summary()
    assert counts["redelivered"] > 100, report.summary()  # deliveries of recovered messages
    assert counts["durable_txs_recovered"] > 0, report.summary()


#: The transaction of the all-or-nothing test, and how long after its first MESSAGE the kill comes (ms).
TX_SENDS = 5000
KILL_AFTER_FIRST_MESSAGE_MS = (0, 3, 6, 10, 0, 3, 6, 10)


def test_kill_9_during_a_commit_keeps_all_or_nothing_of_the_transaction(tmp_path: Path) -> None:
    """A COMMIT of 5,000 SENDs; SIGKILL as its first MESSAGE reaches a consumer (the journal
    is then writing it); after the restart the queue holds none or all of the transaction."""
    counts = []
    for attempt, delay_ms in enumerate(KILL_AFTER_FIRST_MESSAGE_MS):
        data = tmp_path / f"data-{attempt}"
        broker = CrashBroker.start(data, tmp_path / f"life-{attempt}-0.log")
        watcher = RawConnection(broker.address)
        producer = RawConnection(broker.address)
        try:
            watcher.login()
            sub = [("destination", "/queue/tx"), ("id", "w"), ("ack", "client-individual")]
            watcher.sock.sendall(watcher.conn.frame(Command.SUBSCRIBE, [*sub, ("receipt", "s")]))
            while not any(isinstance(e, Receipt) for e in watcher.read(10.0)):
                pass
            producer.login()
            frames = [producer.conn.frame(Command.BEGIN, [("transaction", "t")])]
            send = [("destination", "/queue/tx"), ("persistent", "true"), ("transaction", "t")]
            frames += [producer.conn.frame(Command.SEND, send, b"x" * 200)] * TX_SENDS
            frames.append(producer.conn.frame(Command.COMMIT, [("transaction", "t"), ("receipt", "c")]))
            producer.sock.sendall(b"".join(frames))
            while not any(isinstance(e, StompMessage) for e in watcher.read(10.0)):
                pass
            time.sleep(delay_ms / 1000)
        finally:
            broker.kill()
            watcher.close()
            producer.close()
        broker = CrashBroker.start(data, tmp_path / f"life-{attempt}-1.log")
        try:
            with client(broker.address) as c:
                c.send("/queue/tx", b"end", headers={"x-end": "1"}, receipt=True)
                c.subscribe("/queue/tx", ack="auto", prefetch=1000)
                n = 0
                while not c.receive(15.0).headers.get("x-end"):
                    n += 1
            counts.append(n)
        finally:
            broker.kill()
    print(f"messages of the transaction kept after each kill: {counts}")
    torn = [n for n in counts if 0 < n < TX_SENDS]
    assert not torn, (
        f"a COMMIT of {TX_SENDS} SENDs came back in part after a kill -9: messages kept per attempt "
        f"{counts} (each must be 0 or {TX_SENDS})"
    )
