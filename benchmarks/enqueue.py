#!/usr/bin/env python3
"""Sending many jobs at once: queueit's ``send_many`` against the incumbents, in one sitting.

Each run sends N no-op jobs from one thread of a fresh interpreter and times it from the first
call to the last one returning (one untimed warm-up job before); then it checks that the broker
holds N + 1 jobs. Rows:

* ``queueit-send``: ``noop.send()`` one by one on ``queueit://`` (what ``jobs.py`` times): each
  send waits for its own journal write and fsync;
* ``queueit-send-many``: ``app.send_many(noop.s() for ...)`` in chunks of ``--chunk`` (1,000): one
  transaction, one journal write and one fsync per chunk, all or nothing;
* ``queueit-amqp-send-many``: the same on RabbitMQ (``amqp://``, quorum queue): every message
  confirmed, all of a chunk in flight at once;
* ``rq-enqueue-many``: RQ's bulk API, ``Queue.enqueue_many`` (one Redis pipeline per chunk);
  Redis as Debian configures it (RDB snapshots, no AOF): nothing waits for a disk;
* ``dramatiq-rabbitmq``: Dramatiq's ``actor.send`` one by one, as fwbench configures it (no
  publisher confirms, Dramatiq's default). Dramatiq has no bulk send (its ``group().run()``
  sends one message at a time), and it was the fastest incumbent at enqueueing in every
  ``jobs.py`` sitting.

queueit's broker is started fresh for each run (``queueit serve``, a temporary data directory,
its default durability); Redis is flushed and the RabbitMQ queues are deleted before each run.
Runs are interleaved (the order reversed every other round); the table gives median [min-max]
and, per round, the ratio of ``queueit-send-many`` to the fastest incumbent row.

    make compiled
    python3 benchmarks/enqueue.py --runs 5                     # ~3 min
    python3 benchmarks/enqueue.py --runs 1 --n 2000            # smoke

Needs what ``jobs.py`` needs: Redis and RabbitMQ on 127.0.0.1 (started if they are not up) and
the fwbench copy with its venv (``--fwbench-dir``, built on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import brokers

import jobs

HERE = Path(__file__).resolve().parent

QUEUEIT_ROWS = ("queueit-send", "queueit-send-many", "queueit-amqp-send-many")
INCUMBENT_ROWS = ("rq-enqueue-many", "dramatiq-rabbitmq")
ROWS = QUEUEIT_ROWS + INCUMBENT_ROWS
QUEUE = "qbench-enqueue"
RESULT = "ENQUEUE_JSON "

# The incumbents' child: run by fwbench's venv python in the fwbench copy, so that its apps and
# its reset (Redis FLUSHALL, RabbitMQ queues deleted) are the ones jobs.py's sittings use.
INCUMBENT_CHILD = r"""
import json, sys, time
import fwbench
row, n, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fwbench.reset("dramatiq-rabbitmq" if row == "dramatiq-rabbitmq" else "rq")
if row == "rq-enqueue-many":
    from rq import Queue
    from fwbench_apps import rq_jobs
    q = Queue("fwbench", connection=fwbench.r_sync())
    q.enqueue(rq_jobs.noop)  # warm-up, not timed
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        q.enqueue_many([Queue.prepare_data(rq_jobs.noop) for _ in range(min(chunk, n - start))])
    took = time.perf_counter() - t0
    held = q.count
else:
    import pika
    from fwbench_apps import dramatiq_app as m
    m.noop.send()  # warm-up, not timed
    t0 = time.perf_counter()
    for _ in range(n):
        m.noop.send()
    took = time.perf_counter() - t0
    m.broker.close()
    channel = pika.BlockingConnection(pika.URLParameters(fwbench.AMQP_URL)).channel()
    held = channel.queue_declare("fwbench", passive=True).method.message_count
print("ENQUEUE_JSON " + json.dumps({"row": row, "n": n, "enqueue_s": took, "held": held}))
"""


def queueit_child(row: str, url: str, n: int, chunk: int) -> dict[str, Any]:
    """One queueit run in this (the queueit venv's) interpreter."""
    os.environ["QUEUEIT_BENCH_URL"] = url
    os.environ["QUEUEIT_BENCH_QUEUE"] = QUEUE
    if url.startswith("amqp"):
        jobs._amqp_reset(url, [QUEUE, f"DLQ.{QUEUE}"])
    import jobs_app

    app, noop = jobs_app.app, jobs_app.noop
    noop.send()  # warm-up: connection set-up, imports
    t0 = time.perf_counter()
    if row == "queueit-send":
        for _ in range(n):
            noop.send()
    else:
        for start in range(0, n, chunk):
            app.send_many(noop.s() for _ in range(min(chunk, n - start)))
    took = time.perf_counter() - t0
    app.close()
    return {"row": row, "n": n, "enqueue_s": took, "held": _held(url)}


def _held(url: str) -> int:
    """How many messages the queue holds now."""
    if url.startswith("amqp"):
        import asyncio

        import aio_pika

        async def count() -> int:
            connection = await aio_pika.connect(url.split("?", maxsplit=1)[0])
            try:
                channel = await connection.channel()
                queue = await channel.declare_queue(QUEUE, passive=True)
                return int(queue.declaration_result.message_count or 0)
            finally:
                await connection.close()

        return asyncio.run(count())
    host, port = url.removeprefix("queueit://").split(":")
    out = subprocess.run(
        [sys.executable, "-m", "queueit", "stat", "--json", "--host", host, "--port", port],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    queues = json.loads(out.stdout)["queues"]
    found = [q for q in queues if q["name"] == QUEUE]
    return int(found[0]["depth"]) if found else 0


def one_run(row: str, args: argparse.Namespace, fw_python: Path | None) -> dict[str, Any] | None:
    broker: brokers.Running | None = None
    if row in QUEUEIT_ROWS:
        if row == "queueit-amqp-send-many":
            url = jobs.AMQP_URL + "?queue_type=quorum"
        else:
            broker = brokers._start_queueit(jobs.free_port(), args.repo, brokers.START_TIMEOUT_S)
            url = f"queueit://{broker.host}:{broker.port}"
        python = args.repo / ".venv" / "bin" / "python"
        cmd = [str(python), str(HERE / "enqueue.py"), "--child", row, "--url", url]
        cmd += ["--n", str(args.n), "--chunk", str(args.chunk)]
        env, cwd = brokers.queueit_env(args.repo), HERE
    else:
        assert fw_python is not None
        cmd = [str(fw_python), "-c", INCUMBENT_CHILD, row, str(args.n), str(args.chunk)]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        cwd = args.fwbench_dir
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)
    finally:
        if broker is not None:
            brokers.stop("queueit")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)), None)
    if line is None:
        print(f"!! {row}: child failed rc={proc.returncode}\n{proc.stdout[-1500:]}\n{proc.stderr[-2500:]}")
        return None
    res: dict[str, Any] = json.loads(line[len(RESULT) :])
    res["enqueue_per_s"] = round(res["n"] / res["enqueue_s"], 1)
    res["ok"] = res["held"] == res["n"] + 1  # the warm-up job too
    return res


def render(runs: Sequence[dict[str, Any]], rows: Sequence[str]) -> str:
    lines = ["| row | runs ok | enqueue jobs/s, median [min-max] |", "|---|---|---|"]
    for row in rows:
        rates = [r["enqueue_per_s"] for r in runs if r["row"] == row and r["ok"]]
        ok = len(rates)
        cell = f"{statistics.median(rates):,.0f} [{min(rates):,.0f}-{max(rates):,.0f}]" if rates else "-"
        lines.append(f"| {row} | {ok}/{len([r for r in runs if r['row'] == row])} | {cell} |")
    ratios = []
    for run_no in sorted({r["run"] for r in runs}):
        mine = {r["row"]: r["enqueue_per_s"] for r in runs if r["run"] == run_no and r["ok"]}
        theirs = [mine[row] for row in INCUMBENT_ROWS if row in mine]
        if "queueit-send-many" in mine and theirs:
            ratios.append(mine["queueit-send-many"] / max(theirs))
    if ratios:
        each = ", ".join(f"{x:.2f}" for x in ratios)
        lines.append(
            f"\nqueueit-send-many / fastest incumbent, per round: {statistics.median(ratios):.2f}x "
            f"[{min(ratios):.2f}-{max(ratios):.2f}] ({each})"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--n", type=int, default=20_000, help="jobs per run (default 20,000)")
    ap.add_argument("--chunk", type=int, default=1_000, help="jobs per send_many / enqueue_many call")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
    ap.add_argument(
        "--out", type=Path, help="JSON lines file (default benchmarks/results/DATE-enqueue.jsonl)"
    )
    ap.add_argument(
        "--fwbench-dir", type=Path, default=jobs.DEFAULT_FWBENCH_DIR, help="writable fwbench copy"
    )
    ap.add_argument("--repo", type=Path, default=jobs.REPO, help="queueit checkout with .venv")
    ap.add_argument("--child", choices=QUEUEIT_ROWS, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not 1 <= args.chunk <= 10_000 or args.n < 1 or args.runs < 1:
        ap.error("--chunk is 1-10000; --n and --runs at least 1")
    args.row_list = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(args.row_list) - set(ROWS)
    if unknown:
        ap.error(f"unknown rows: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(RESULT + json.dumps(queueit_child(args.child, args.url, args.n, args.chunk)), flush=True)
        return 0
    rows: list[str] = args.row_list
    fw_python = jobs.ensure_fwbench(args.fwbench_dir) if set(rows) & set(INCUMBENT_ROWS) else None
    if set(rows) & set(QUEUEIT_ROWS) and brokers.queueit_build() == "compiled":
        problem = brokers.compiled_build_problem(args.repo)
        if problem is not None:
            print(f"!! queueit: {problem}")
            return 1
    jobs.ensure_services(["rabbitmq"] if any("amqp" in r or "rabbitmq" in r for r in rows) else [])
    sitting = time.strftime("%Y%m%dT%H%M%S")
    out: Path = args.out or jobs.RESULTS_DIR / f"{time.strftime('%Y-%m-%d')}-enqueue.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"== sitting {sitting}: {', '.join(rows)}; {args.runs} round(s); N={args.n}; chunk {args.chunk}")
    build = brokers.queueit_build()
    print(f"== build {build}; raw runs -> {out}", flush=True)
    recorded: list[dict[str, Any]] = []
    for run_no in range(1, args.runs + 1):
        for row in rows if run_no % 2 == 1 else list(reversed(rows)):
            res = one_run(row, args, fw_python)
            if res is None:
                continue
            res.update({"run": run_no, "sitting": sitting, "chunk": args.chunk, "build": build})
            with open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps(res) + "\n")
            recorded.append(res)
            print(
                f"{row:24s} run {run_no}: {res['enqueue_per_s']:10,.0f} jobs/s  held {res['held']}",
                flush=True,
            )
    print(f"\n## Sending many, sitting {sitting} (N={args.n}, chunk {args.chunk})\n")
    print(render(recorded, rows))
    return 0 if recorded and all(r["ok"] for r in recorded) else 2


if __name__ == "__main__":
    sys.exit(main())
