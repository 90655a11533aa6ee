"""Delayed delivery at scale: do a million delayed messages fire on time?

Issue 3's goal: delayed messages "fire on time (within 100 ms) with 1,000,000 scheduled".
One stompbench run against ``queueit serve`` (fsync ``always``): N persistent 1 KiB
messages sent at a fixed rate R, each SEND with ``delay:D`` (receipts pipelined, window
64), and a consumer subscribed from the start. stompbench's latency is the time from the
intended send to the delivery, so ``latency - D`` is how late a message fired (R is below
what the consumer takes, so no ready backlog adds to it). With N / R < D, all N are
scheduled at once before the first one is due.

Reported: lateness p50 / p99 / max (ms), how many messages were scheduled at the peak
(``queueit stat``: scheduled), broker RSS. There is no incumbent to compare with here:
RabbitMQ needs a plugin that keeps delayed messages in one Mnesia table on one node, and
ActiveMQ's scheduler is off in Debian's config.

    python3 benchmarks/delayed.py                      # 1,000,000 at 10,000/s, delay 120 s
    python3 benchmarks/delayed.py --count 100000 --delay-ms 15000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import brokers  # noqa: E402
import stomp_brokers  # noqa: E402


def peak_scheduled(repo: Path, port: int, stop: threading.Event, out: list[int]) -> None:
    """Poll ``queueit stat`` for the number of delayed messages held."""
    queueit = repo / ".venv" / "bin" / "queueit"
    while not stop.wait(1.0):
        proc = subprocess.run(
            [str(queueit), "stat", "--json", "--port", str(port)], capture_output=True, text=True, check=False
        )
        if proc.returncode == 0:
            queues = json.loads(proc.stdout)["queues"]
            out.append(sum(int(q.get("scheduled") or 0) for q in queues))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--delay-ms", type=int, default=120_000)
    p.add_argument("--rate", type=int, default=10_000, help="sends per second (default 10,000)")
    p.add_argument("--port", type=int, default=brokers.DEFAULT_PORT)
    p.add_argument("--out", type=Path, default=None, help="append the JSON result to this file")
    p.add_argument("--target-dir", type=Path, default=Path("/tmp/stompbench"))
    args = p.parse_args(argv)
    binary = stomp_brokers.ensure_stompbench(None, args.target_dir)
    broker = brokers.start("queueit", port=args.port)
    stop = threading.Event()
    samples: list[int] = []
    poller = threading.Thread(
        target=peak_scheduled, args=(brokers.REPO, args.port, stop, samples), daemon=True
    )
    poller.start()
    try:
        bench_args = stomp_brokers.argv(
            f"--persistent on --confirm window --window 64 --ack client-individual --prefetch 64 "
            f"-n {args.count} --rate {args.rate} --header delay:{args.delay_ms} "
            f"--idle-timeout {args.delay_ms // 1000 + 30}"
        )
        run, output, cmd = stomp_brokers.run_stompbench(
            binary,
            bench_args,
            broker,
            timeout_s=args.delay_ms // 1000 + args.count // args.rate + 300,
            label="delayed",
        )
    finally:
        stop.set()
        poller.join()
        brokers.stop("queueit")
    if run is None:
        print(output)
        print("stompbench failed", file=sys.stderr)
        return 1
    lat = run["lat_us"]
    late = {k: round(lat[k] / 1000 - args.delay_ms, 1) for k in ("p50", "p99", "max")}
    result = {
        "bench": "delayed",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "count": args.count,
        "delay_ms": args.delay_ms,
        "sent_per_s": run["sent_per_s"],
        "received": run["received"],
        "missing": run["missing"],
        "duplicates": run["duplicates"],
        "late_ms": late,
        "peak_scheduled": max(samples, default=0),
        "broker_rss_max_kb": run["broker_rss_max_kb"],
        "cmd": " ".join(cmd),
    }
    print(json.dumps(result, indent=2))
    peak = result["peak_scheduled"]
    print(
        f"\n{args.count:,} delayed messages (delay {args.delay_ms / 1000:g} s, up to {peak:,} scheduled "
        f"at once): fired late by p50 {late['p50']} ms, p99 {late['p99']} ms, max {late['max']} ms; "
        f"missing {run['missing']}, duplicates {run['duplicates']}; "
        f"broker RSS max {run['broker_rss_max_kb'] // 1024} MiB"
    )
    if args.out is not None:
        with args.out.open("a") as f:
            f.write(json.dumps(result) + "\n")
    return 0 if run["missing"] == 0 and run["duplicates"] == 0 else 2


if __name__ == "__main__":
    raise SystemExit(main())
