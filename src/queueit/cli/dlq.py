"""``queueit dlq list|show|redrive|purge QUEUE``: a queue's dead letters."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..client import ClientError
from .args import positive_int
from .messaging import admin_request, connection_args, fail, local_time, print_table


def register(sub: Any) -> None:
    p = sub.add_parser(
        "dlq",
        help="inspect and redrive a queue's dead letters",
        description=(
            "Dead letters are messages a queue gave up on: rejected (NACK requeue:false), invalid, "
            "expired, over max-deliveries, or pushed out by an overflow policy. They wait in the "
            "queue's dead-letter queue (DLQ.<queue> by default) with the reason, the delivery count "
            "and the time. Needs the admin permission on the queue and on its dead-letter queue."
        ),
    )
    p.add_argument("action", choices=["list", "show", "redrive", "purge"])
    p.add_argument("queue", help="the queue whose dead letters to handle (not the DLQ's own name)")
    p.add_argument("--id", help="show: the message id (required); redrive, purge: only this message")
    p.add_argument("--limit", type=positive_int, default=None, help="list/redrive at most N messages")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    connection_args(p)
    p.set_defaults(func=dlq)


def dlq(args: argparse.Namespace) -> int:
    headers = {"command": f"dlq-{args.action}", "queue": args.queue}
    if args.action == "show" and not args.id:
        print("queueit dlq show: --id is required (see queueit dlq list)")
        return 2
    if args.id:
        headers["id"] = args.id
    if args.limit is not None:
        headers["limit"] = str(args.limit)
    try:
        answer = admin_request(args, headers)
    except (ClientError, OSError) as exc:
        return fail(exc)
    if args.json:
        print(json.dumps(answer, indent=2))
    elif args.action == "list":
        print(f"{answer['dead_letter_queue']}: {answer['depth']} dead letter(s)")
        print_table(
            ["id", "reason", "from", "deliveries", "dead since", "bytes"],
            [
                (m["id"], m["reason"], m["queue"], m["deliveries"], local_time(m["time"]), m["size"])
                for m in answer["messages"]
            ],
        )
    elif args.action == "show":
        m = answer["message"]
        for name, value in m["headers"]:
            print(f"{name}: {value}")
        print()
        print(m["body"].get("text", m["body"].get("base64", "")))
    elif args.action == "redrive":
        print(f"moved {answer['moved']} message(s) back; {answer['left']} left in the dead-letter queue")
    else:
        print(f"purged {answer['purged']} message(s)")
    return 0
