"""Issue 3, part 3: a torn WAL tail after a SIGKILL.

The broker is killed, then the end of ``queueit.db-wal`` is damaged as a crash of the
machine could leave it: garbage after the last frame, the last frame cut short, or the
last frame's bytes scrambled. Only writes made after every checked RECEIPT are damaged
(the WAL is read before and after them, see :mod:`.wal`), so the broker must start (no
crash loop) and keep every message whose receipt arrived, forget every message whose
ACK got a receipt, and keep the later messages as a prefix of their order (the WAL is a
log: recovery keeps whole transactions up to the damage).
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from .broker_proc import CrashBroker, client, drain
from .ledger import body_for
from .wal import FRAME_HEADER, Wal, read_wal

QUEUE = "/queue/torn"
FIRST = 40  # receipted before the WAL is read
CONSUMED = 15  # of those, delivered before the kill...
ACKED = 10  # ...and acked with a receipt; the other 5 are held when the broker dies
LATER = 8  # receipted after the WAL is read: the only writes that get damaged


def _send(address: tuple[str, int], keys: list[str]) -> None:
    with client(address) as producer:
        for key in keys:
            producer.send(QUEUE, body_for(key), headers={"persistent": "true", "x-key": key}, receipt=True)


def _damage(wal_path: Path, before: Wal, how: str, rng: random.Random) -> str:
    """Damage the frames written since ``before``; say what was done."""
    after = read_wal(wal_path)
    new = after.frames[len(before.frames) :] if after.salts == before.salts else after.frames
    commits = [f for f in new if f.commit]
    assert len(commits) >= LATER, f"expected a commit per later SEND in the WAL, found {len(commits)}"
    last = commits[-1]
    size = after.frame_size()
    if how == "garbage":
        # A frame header with the right salts and a wrong checksum, then noise.
        fake = struct.pack(">6I", 1, 1, *after.salts, 0, 0) + rng.randbytes(rng.randint(1, 3 * size))
        with wal_path.open("ab") as tail:
            tail.write(fake)
        return f"appended {len(fake)} bytes after frame {len(after.frames)}"
    if how == "truncate":
        cut = last.offset + rng.randint(1, size - 1)
        with wal_path.open("r+b") as f:
            f.truncate(cut)
        return f"cut the file at {cut}, inside the last commit frame ({last.offset}..{last.offset + size})"
    start = last.offset + FRAME_HEADER + rng.randrange(after.page_size - 64)
    with wal_path.open("r+b") as f:
        f.seek(start)
        old = f.read(64)
        f.seek(start)
        f.write(bytes(b ^ rng.randint(1, 255) for b in old))
    return f"scrambled 64 bytes at {start}, in the page of the last commit frame"


@pytest.mark.parametrize("how", ["garbage", "truncate", "scramble"])
def test_torn_wal_tail_keeps_every_receipted_message(tmp_path: Path, crash_seed: int, how: str) -> None:
    rng = random.Random(crash_seed)
    data, logs = tmp_path / "data", tmp_path / "logs"
    logs.mkdir()
    wal_path = data / "queueit.db-wal"
    first = [f"first-{i}" for i in range(FIRST)]
    later = [f"later-{i}" for i in range(LATER)]
    broker = CrashBroker.start(data, logs / "life-0.log")
    try:
        _send(broker.address, first)
        consumer = client(broker.address)
        consumer.connect()
        consumer.subscribe(QUEUE, ack="client-individual", prefetch=CONSUMED)
        taken = [consumer.receive() for _ in range(CONSUMED)]
        rng.shuffle(taken)
        acked = {m.headers["x-key"] for m in taken[:ACKED]}
        for message in taken[:ACKED]:
            consumer.ack(message, receipt=True)
        before = read_wal(wal_path)
        _send(broker.address, later)
        broker.kill()
        consumer.close()
        what = _damage(wal_path, before, how, rng)
        print(f"{how}: {what}")

        broker = CrashBroker.start(data, logs / "life-1.log")  # raises if it exits or hangs
        assert "recovery replayed" in broker.log(), "the cut-off WAL tail was not logged"
        got = drain(broker.address, QUEUE)
        keys = [m.headers["x-key"] for m in got]
        assert len(keys) == len(set(keys)), f"delivered twice: {keys}"
        assert not acked & set(keys), (
            f"acked with a receipt, yet delivered again: {sorted(acked & set(keys))}"
        )
        assert set(first) - acked <= set(keys), (
            f"receipted and lost ({what}): {sorted(set(first) - acked - set(keys))}"
        )
        kept_later = [k for k in later if k in keys]
        assert kept_later == later[: len(kept_later)], f"not a prefix of the send order: {kept_later}"
        if how == "garbage":
            assert kept_later == later, f"garbage after the last frame lost messages: {kept_later}"
        else:  # the damage must have hit: else this test would prove nothing
            assert len(kept_later) < LATER, f"the damage ({what}) did not remove the last transaction"
        assert all(m.headers.get("redelivered") == "true" for m in got), (
            "recovered after a crash: redelivered"
        )
        assert all(m.body == body_for(m.headers["x-key"]) for m in got)

        # The broker goes on working with the repaired journal: another crash, then a clean stop.
        _send(broker.address, ["after-0"])
        broker.kill()
        broker = CrashBroker.start(data, logs / "life-2.log")
        assert [m.headers["x-key"] for m in drain(broker.address, QUEUE)] == ["after-0"]
        assert broker.terminate() == 0
        bad = [
            line
            for n in range(3)
            for line in (logs / f"life-{n}.log").read_text().splitlines()
            if "Traceback" in line
        ]
        assert bad == [], "\n".join(bad)
    finally:
        broker.ensure_dead()
