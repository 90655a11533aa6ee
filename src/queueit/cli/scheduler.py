"""``queueit scheduler MODULE:APP``: send the app's periodic jobs at their ticks."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import signal
import sys
from typing import Any

from ..jobs import logs
from ..jobs.process import load_app
from ..jobs.scheduler import Scheduler
from ..transports import TransportError
from .worker import in_process_only


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scheduler",
        help="send periodic jobs (@app.periodic) on their schedule",
        description=(
            "Send the periodic jobs of a queueit.App (@app.periodic) at their ticks; workers run them. "
            "Run several schedulers for availability: each tick is still sent once (queueit:// keeps "
            "the other copies out by a unique key; on amqp:// one scheduler leads each job and the "
            "others stand by, taking over when it goes). Ticks from before the start are not sent; "
            "a tick up to 5 minutes late is. SIGTERM/SIGINT stop it."
        ),
        epilog=(
            "Logs go to stderr at QUEUEIT_LOG_LEVEL (DEBUG, INFO by default, WARNING, ERROR). "
            "Example: queueit scheduler myproject.tasks:app"
        ),
    )
    p.add_argument("app", metavar="MODULE:APP", help="where the queueit.App is, e.g. myproject.tasks:app")
    p.add_argument(
        "--list", action="store_true", help="print each periodic job and its next 3 ticks, then exit"
    )
    p.set_defaults(func=scheduler)


def scheduler(args: argparse.Namespace) -> int:
    try:
        app = load_app(args.app)
    except ValueError as exc:
        print(f"queueit scheduler: {exc}", file=sys.stderr)
        return 2
    if not app.periodics:
        print(
            f"queueit scheduler: {args.app} has no periodic jobs (@app.periodic): nothing to send",
            file=sys.stderr,
        )
        return 2
    if args.list:
        now = datetime.datetime.now(datetime.UTC)
        for periodic in app.periodics.values():
            ticks, t = [], now
            for _ in range(3):
                t = periodic.timetable.next_after(t)
                ticks.append(t.isoformat())
            print(f"{periodic.describe()}: {', '.join(ticks)}")
        return 0
    if (why := in_process_only(app)) is not None:
        print(f"queueit scheduler: {why}", file=sys.stderr)
        return 2
    logs.configure("scheduler")
    try:
        asyncio.run(_run(Scheduler(app)))
    except TransportError as exc:
        print(f"queueit scheduler: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run(s: Scheduler) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, s.stop)
    await s.run()
    await s.app.aclose()
