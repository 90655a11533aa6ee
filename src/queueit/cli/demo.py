"""``queueit demo``: the broker, two worker processes and a producer, with a progress bar.

It starts ``queueit serve`` (embedded, data in ``--data-dir``) and ``queueit worker
queueit.demo:app``, sends the demo jobs (welcome emails through an event listener, thumbnail
pipelines), and draws their progress from the broker's queue counts until every job is done
or failed; then it says how to look at what failed and stops both (or keeps them running).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..client import Client, ClientError
from .args import positive_int

READY = re.compile(r"ready on stomp://(?P<host>[0-9.]+):(?P<port>\d+)")
QUEUES = ("demo.email", "demo.images")
LISTENER_QUEUE = "events.demo.welcome.user.signed_up"
WORKER_ARGS = ("--processes", "2", "--concurrency", "8")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the broker with demo workers and watch jobs flow",
        description=(
            "Start a broker and a worker supervisor (2 processes) running the demo app "
            "(queueit.demo: an email queue fed by an event listener, and a thumbnail pipeline), "
            "send jobs, and show their progress. Some attempts fail on purpose, so retries "
            "and failed jobs show too."
        ),
    )
    p.add_argument("--jobs", type=positive_int, default=500, help="signups to send (default 500)")
    p.add_argument(
        "--data-dir", type=Path, default=Path("demo-data"), help="the broker's data (default ./demo-data)"
    )
    p.add_argument("--port", type=int, default=0, help="broker port (default: a free one)")
    p.add_argument("--keep-running", action="store_true", help="leave broker and workers running at the end")
    p.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> int:
    broker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "queueit",
            "serve",
            "--port",
            str(args.port),
            "--data-dir",
            str(args.data_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker: subprocess.Popen[bytes] | None = None
    try:
        host, port = _wait_ready(broker)
        url = f"queueit://{host}:{port}"
        print(f"broker ready on {url} (data in {args.data_dir})")
        log_path = args.data_dir / "worker.log"
        with log_path.open("ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "queueit", "worker", "queueit.demo:app", *WORKER_ARGS],
                env=dict(os.environ, QUEUEIT_URL=url),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        print(f"2 worker processes started (log: {log_path})")
        os.environ["QUEUEIT_URL"] = url
        from .. import demo as demo_app

        with Client(host, port) as client:
            _wait_for_workers(client)
            started = time.monotonic()
            total = _produce(demo_app, args.jobs)
            _watch(client, total, started)
        print(
            "\nLook at what failed:  "
            f"queueit failed list --app queueit.demo:app --url {url}\n"
            f"Queues:               queueit stat --port {port}"
        )
        if args.keep_running:
            print("Broker and workers keep running; stop them with Ctrl-C.")
            worker.wait()
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        for proc in (worker, broker):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _wait_ready(broker: subprocess.Popen[str]) -> tuple[str, int]:
    assert broker.stderr is not None
    seen = []
    while line := broker.stderr.readline():
        seen.append(line)
        match = READY.search(line)
        if match:
            return match["host"], int(match["port"])
    raise SystemExit("queueit demo: the broker did not start:\n" + "".join(seen))


def _produce(demo_app: Any, signups: int) -> int:
    """Send the demo's jobs; returns how many jobs they make in all."""
    app = demo_app.app
    for i in range(signups):
        # Every 50th address is broken: those jobs fail and wait in 'queueit failed list'.
        app.emit("user.signed_up", {"email": f"user{i}@" + ("example.com" if i % 50 != 49 else "")})
    pipelines = max(1, signups // 10)
    for i in range(pipelines):
        app.pipeline(demo_app.resize.s(f"photo{i}.png", 200), demo_app.upload.s(bucket="thumbs")).send()
    app.close()
    print(f"sent {signups} signup events (each makes a welcome email) and {pipelines} thumbnail pipelines")
    return signups + 2 * pipelines  # an email per signup; two steps per pipeline


def _wait_for_workers(client: Client, timeout: float = 60.0) -> None:
    """Until the workers consume: an event sent before its listener group exists is lost."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        consumers = {q["name"]: q["consumers"] for q in _stat(client).get("queues", [])}
        if all(consumers.get(name, 0) for name in (*QUEUES, LISTENER_QUEUE)):
            return
        time.sleep(0.1)
    raise SystemExit("queueit demo: the workers did not start; see the worker log")


def _watch(client: Client, total: int, started: float) -> None:
    while True:
        counts = _counts(client)
        waiting, failed = counts["waiting"], counts["failed"]
        done = max(0, total - waiting - failed)
        _draw(done, failed, total, waiting, time.monotonic() - started)
        if waiting == 0 and done + failed >= total:
            break
        time.sleep(0.2)
    print()


def _stat(client: Client) -> dict[str, Any]:
    client.send("/queueit/admin", b"", headers={"command": "stat", "reply-to": "/temp-queue/demo"})
    try:
        answer: dict[str, Any] = json.loads(client.receive(timeout=10).body)
    except (ClientError, ValueError):
        return {}
    return answer


def _counts(client: Client) -> dict[str, int]:
    answer = _stat(client)
    if not answer:
        return {"waiting": 1, "failed": 0}
    waiting = failed = 0
    for q in answer["queues"]:
        if q["name"] in QUEUES or q["name"].startswith("events."):
            waiting += q["depth"] + q["in_flight"] + q["scheduled"]
        elif q["name"] in {f"DLQ.{name}" for name in QUEUES}:
            failed += q["depth"]
    return {"waiting": waiting, "failed": failed}


def _draw(done: int, failed: int, total: int, waiting: int, elapsed: float) -> None:
    width = 40
    filled = int(width * min(1.0, (done + failed) / total))
    bar = "#" * filled + "." * (width - filled)
    rate = done / elapsed if elapsed > 0 else 0.0
    line = f"\r[{bar}] {done}/{total} done, {failed} failed, {waiting} waiting  {rate:,.0f} jobs/s"
    sys.stdout.write(line)
    sys.stdout.flush()
