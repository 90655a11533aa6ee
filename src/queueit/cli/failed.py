"""``queueit failed list|show|retry|delete|purge``: jobs that ran out of retries, or could not run."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from ..jobs import failed as ops
from ..jobs.app import DEFAULT_URL
from ..jobs.process import load_app
from ..transports import Transport, TransportError, open_transport
from .args import positive_int, queue_name
from .messaging import fail, local_time, print_table


def register(sub: Any) -> None:
    p = sub.add_parser(
        "failed",
        help="list, show, retry and delete failed jobs",
        description=(
            "Failed jobs wait in their queue's dead-letter queue: out of retries (with every error "
            "and traceback), invalid messages (the raw bytes and the reason), or given up on by the "
            "broker (max deliveries, expired). 'retry' moves them back, with fresh retries; each "
            "move is one atomic broker step. Name the queues with --app (every queue of its jobs) "
            "or --queue."
        ),
        epilog="Example: queueit failed list --app myproject.tasks:app --job myproject.tasks.send_email",
    )
    p.add_argument("action", choices=["list", "show", "retry", "delete", "purge"])
    p.add_argument("id", nargs="?", help="show, retry, delete: the failed job's id (or its job id)")
    p.add_argument("--app", metavar="MODULE:APP", help="take the broker URL and the queues from this app")
    p.add_argument("--url", help=f"the broker (default: the app's, else {DEFAULT_URL})")
    p.add_argument(
        "--queue", action="append", type=queue_name, default=[], help="a queue to look at (repeatable)"
    )
    p.add_argument("--job", help="list, retry, delete: only failed jobs of this job name")
    p.add_argument("--all", action="store_true", help="retry, delete: every failed job of the queues")
    p.add_argument("--limit", type=positive_int, default=100, help="list at most N (default 100)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=failed)


def failed(args: argparse.Namespace) -> int:
    try:
        url, queues = _target(args)
        transport = open_transport(url)
    except ValueError as exc:
        print(f"queueit failed: {exc}", file=sys.stderr)
        return 2
    selectors = [bool(args.id), bool(args.job), args.all]
    if args.action in ("retry", "delete") and sum(selectors) != 1:
        print(f"queueit failed {args.action}: give one of ID, --job NAME or --all", file=sys.stderr)
        return 2
    if args.action == "purge" and (args.id or args.job):
        print(
            "queueit failed purge: deletes every failed job of the queues; for some of them, use "
            "'queueit failed delete ID' or 'delete --job NAME'",
            file=sys.stderr,
        )
        return 2
    if args.action == "list" and args.id:
        print("queueit failed list: takes no ID; see one with 'queueit failed show ID'", file=sys.stderr)
        return 2
    if args.action == "show" and not args.id:
        print("queueit failed show: give the failed job's id (see queueit failed list)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(transport, queues, args))
    except TransportError as exc:
        return fail(exc)


def _target(args: argparse.Namespace) -> tuple[str, list[str]]:
    url, queues = args.url, list(args.queue)
    if args.app:
        app = load_app(args.app)
        url = url or app.url
        queues = queues or app.queues() + app.listener_queues()
    if not queues:
        raise ValueError("name the queues: --app MODULE:APP or --queue NAME")
    return url or DEFAULT_URL, queues


async def _run(transport: Transport, queues: list[str], args: argparse.Namespace) -> int:
    await transport.connect()
    try:
        if args.action == "list":
            found = await ops.list_failed(transport, queues, job=args.job, limit=args.limit + 1)
            _print_list(found[: args.limit], args.json)
            if len(found) > args.limit and not args.json:
                print(f"(the first {args.limit}; there are more: --limit N shows more)")
            return 0
        if args.action == "purge":
            print(f"deleted {await ops.delete(transport, queues, None)} failed job(s)")
            return 0
        selected: list[ops.FailedJob] | None = None
        if args.id:
            one = await ops.find(transport, queues, args.id)
            if one is None:
                print(
                    f"queueit failed: no failed job {args.id!r} among the oldest {ops.MAX_LISTED:,} "
                    f"dead letters of {', '.join(queues)}",
                    file=sys.stderr,
                )
                return 1
            selected = [one]
        elif args.job and args.action in ("retry", "delete"):
            count = await ops.retry_or_delete_job(
                transport, queues, args.job, delete_them=args.action == "delete"
            )
            print(
                f"moved {count} failed job(s) back to their queues"
                if args.action == "retry"
                else f"deleted {count} failed job(s)"
            )
            return 0
        elif args.job:
            selected = await ops.list_failed(transport, queues, job=args.job)
        if args.action == "show":
            assert selected is not None
            _print_detail(selected[0], args.json)
        elif args.action == "retry":
            print(f"moved {await ops.retry(transport, queues, selected)} failed job(s) back to their queues")
        else:
            print(f"deleted {await ops.delete(transport, queues, selected)} failed job(s)")
        return 0
    finally:
        await transport.close()


def _print_list(found: list[ops.FailedJob], as_json: bool) -> None:
    rows = [f.summary() for f in found]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print_table(
        ["id", "queue", "job", "reason", "attempts", "failed at", "last error"],
        [_row(r) for r in rows],
    )


def _row(r: dict[str, Any]) -> tuple[Any, ...]:
    error = (r["error"] or "-")[:60]
    return (r["id"], r["queue"], r["job"], r["reason"], r["attempts"], local_time(r["time"]), error)


def _print_detail(found: ops.FailedJob, as_json: bool) -> None:
    d = found.detail()
    if as_json:
        print(json.dumps(d, indent=2))
        return
    for key in ("id", "queue", "job", "job_id", "reason", "attempts", "trace_id"):
        print(f"{key}: {d.get(key)}")
    if d["reason"] != "failed" and d.get("error"):
        print(f"why: {d['error']}")  # an invalid message's reason, say: its errors are not ours
    print(f"failed at: {local_time(d['time'])}")
    if "args" in d:
        print(f"args: {json.dumps(d['args'])}")
        print(f"kwargs: {json.dumps(d['kwargs'])}")
    for error in d.get("errors", []):
        print(f"\n--- attempt {error.get('attempt')} ({error.get('worker', '?')}): {error.get('type')}")
        print(error.get("traceback", "").rstrip())
    if found.envelope is None:
        print(f"\nbody: {d['body']}")
