"""``queueit worker MODULE:APP``: run jobs in supervised worker processes."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any
from urllib.parse import urlsplit

from ..jobs.app import App
from ..jobs.process import load_app
from ..jobs.supervisor import MAX_PROCESSES, run_supervisor
from ..jobs.worker import POOLS, WorkerSettings, check_inline
from .args import positive_int, queue_list


def positive_float(text: str) -> float:
    value = _seconds(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _seconds(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text}")
    return value


def process_count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_PROCESSES}, got {value}")
    return value


def in_process_only(app: App) -> str | None:
    """Why ``app`` cannot be served by separate processes (a ``memory://`` broker lives in
    the process that made it), or None."""
    if urlsplit(app.url).scheme != "memory":
        return None
    return (
        f"the app's broker is {app.url}, which lives inside one process: worker and scheduler "
        "processes would each get an empty one. Point the app at queueit://host:port (queueit "
        "serve) or amqp://...; to run jobs in a test, use queueit.jobs.testing.JobTester"
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run jobs: a supervisor with worker processes",
        description=(
            "Run the jobs of a queueit.App. A supervisor keeps --processes worker processes running, "
            "each running --concurrency jobs at once (async jobs on its event loop, sync jobs in "
            "threads, or with --pool inline on the loop's thread, one at a time). A job is acked "
            "after it finished; a crashed process's jobs are delivered again. "
            "SIGTERM/SIGINT: stop taking jobs, let running ones finish (--shutdown-timeout), hand the "
            "rest back; a second signal hands them back at once. SIGHUP: restart the processes "
            "gracefully (new code, no job lost)."
        ),
        epilog=(
            "Logs go to stderr at QUEUEIT_LOG_LEVEL (DEBUG, INFO by default, WARNING, ERROR). "
            "Example: queueit worker myproject.tasks:app --processes 2 --concurrency 16"
        ),
    )
    p.add_argument("app", metavar="MODULE:APP", help="where the queueit.App is, e.g. myproject.tasks:app")
    p.add_argument(
        "--queues",
        type=queue_list,
        default=(),
        help="comma-separated queues to take jobs from (default: every queue the app's jobs use)",
    )
    p.add_argument(
        "--processes",
        type=process_count,
        default=1,
        help=f"worker processes (default 1, at most {MAX_PROCESSES})",
    )
    p.add_argument("--concurrency", type=positive_int, default=8, help="jobs per process at once (default 8)")
    p.add_argument("--max-jobs", type=positive_int, help="replace a process after N jobs")
    p.add_argument("--max-memory", type=positive_int, metavar="MB", help="replace a process above MB RSS")
    p.add_argument("--max-time", type=positive_float, metavar="S", help="replace a process after S seconds")
    p.add_argument(
        "--shutdown-timeout",
        type=non_negative_float,
        default=30.0,
        metavar="S",
        help="seconds running jobs may take to finish when stopping (default 30; 0: hand them back at once)",
    )
    p.add_argument(
        "--lease",
        type=positive_float,
        default=60.0,
        metavar="S",
        help="seconds a job is leased before another worker may get it; renewed while it runs (default 60)",
    )
    p.add_argument(
        "--pool",
        choices=POOLS,
        default="threads",
        help="how sync jobs run: 'threads' (default: --concurrency threads per process) or 'inline' "
        "(on the event loop's thread, one at a time, like Celery's solo pool: fastest for short jobs; "
        "each is stopped after its timeout, at most a third of --lease)",
    )
    p.set_defaults(func=worker)


def worker(args: argparse.Namespace) -> int:
    try:
        app = load_app(args.app)  # fail here, with the reason, rather than in every process
        settings = WorkerSettings(
            queues=args.queues,
            concurrency=args.concurrency,
            lease=args.lease,
            max_jobs=args.max_jobs,
            max_memory_mb=args.max_memory,
            max_time=args.max_time,
            shutdown_timeout=args.shutdown_timeout,
            pool=args.pool,
        )
        check_inline(app, settings)
    except ValueError as exc:
        print(f"queueit worker: {exc}", file=sys.stderr)
        return 2
    if (why := in_process_only(app)) is not None:
        print(f"queueit worker: {why}", file=sys.stderr)
        return 2
    if not (settings.queues or app.queues() or app.listeners):
        print(f"queueit worker: {args.app} has no jobs or listeners: nothing to work on", file=sys.stderr)
        return 2
    known = set(app.queues() + app.listener_queues())
    for queue in settings.queues:
        if queue not in known:  # a typo, most likely; or jobs sent there with send_with(queue=...)
            uses = ", ".join(sorted(known)) or "none"
            print(
                f"queueit worker: warning: no job of {args.app} uses queue {queue!r} (its jobs use "
                f"{uses}); only jobs sent there with send_with(queue=...) will run",
                file=sys.stderr,
            )
    return run_supervisor(args.app, settings, args.processes)
