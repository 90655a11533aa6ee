"""``queueit send``, ``consume``, ``stat`` and ``exchange``: clients of a running broker."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ..client import Client, ClientError, ReceiveTimeout
from .args import header, port_number, positive_int


def connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="broker address (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=61613, help="broker port (default 61613)")
    p.add_argument(
        "--login",
        default=os.environ.get("QUEUEIT_LOGIN"),
        help="user name (default: $QUEUEIT_LOGIN, else guest)",
    )
    p.add_argument(
        "--passcode", default=os.environ.get("QUEUEIT_PASSCODE"), help="password (default: $QUEUEIT_PASSCODE)"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker (default 10)")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "send", help="send one message", description="Send one message and wait for its receipt."
    )
    p.add_argument("destination", help="e.g. /queue/email or /topic/news")
    p.add_argument("body", nargs="?", default="-", help="message body; '-' (default) reads standard input")
    p.add_argument(
        "-H",
        "--header",
        type=header,
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="extra header, may repeat",
    )
    p.add_argument("--content-type", default=None)
    connection_args(p)
    p.set_defaults(func=send)

    p = sub.add_parser(
        "consume",
        help="receive messages and print them",
        description="Subscribe, print each message body on a line, and ack it.",
    )
    p.add_argument("destination")
    p.add_argument(
        "--count", type=positive_int, default=None, help="stop after N messages (default: run until Ctrl-C)"
    )
    p.add_argument("--ack", choices=["auto", "client", "client-individual"], default="client-individual")
    p.add_argument("--prefetch", type=positive_int, default=None)
    p.add_argument(
        "--wait",
        type=float,
        default=None,
        help="stop when no message arrives for this many seconds (default: wait forever)",
    )
    p.add_argument("--headers", action="store_true", help="print the headers as JSON before each body")
    connection_args(p)
    p.set_defaults(func=consume)

    p = sub.add_parser(
        "stat",
        help="show queues, topics and connections",
        description="Show queue depth, consumers and in-flight messages, and topic subscribers.",
    )
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    connection_args(p)
    p.set_defaults(func=stat)

    p = sub.add_parser(
        "exchange",
        help="declare exchanges and bind queues to them",
        description="Manage exchanges on a running broker (needs the admin permission).",
    )
    p.add_argument("action", choices=["declare", "delete", "bind", "unbind"])
    p.add_argument("name", help="exchange name")
    p.add_argument("--type", choices=["direct", "fanout", "topic"], default="direct", help="for declare")
    p.add_argument("--queue", help="for bind/unbind")
    p.add_argument("--key", default="", help="routing key or pattern, for bind/unbind")
    connection_args(p)
    p.set_defaults(func=exchange)


def _client(args: argparse.Namespace) -> Client:
    return Client(args.host, args.port, login=args.login, passcode=args.passcode, timeout=args.timeout)


def fail(exc: Exception) -> int:
    print(f"queueit: {exc}", file=sys.stderr)
    return 1


def send(args: argparse.Namespace) -> int:
    body: bytes = sys.stdin.buffer.read() if args.body == "-" else args.body.encode("utf-8")
    content_type = args.content_type or ("text/plain;charset=utf-8" if args.body != "-" else None)
    try:
        with _client(args) as client:
            client.send(
                args.destination, body, headers=dict(args.header), receipt=True, content_type=content_type
            )
    except (ClientError, OSError) as exc:
        return fail(exc)
    return 0


def consume(args: argparse.Namespace) -> int:
    received = 0
    try:
        with _client(args) as client:
            client.subscribe(args.destination, ack=args.ack, prefetch=args.prefetch)
            while args.count is None or received < args.count:
                try:
                    message = client.receive(timeout=args.wait if args.wait is not None else 3600.0)
                except ReceiveTimeout:
                    if args.wait is not None:
                        break
                    continue
                if args.headers:
                    print(json.dumps(message.headers), flush=True)
                sys.stdout.buffer.write(message.body + b"\n")
                sys.stdout.flush()
                received += 1
                if args.ack != "auto":
                    client.ack(message)
    except (ClientError, OSError) as exc:
        return fail(exc)
    return 0


def admin_request(args: argparse.Namespace, headers: dict[str, str]) -> dict[str, Any]:
    with _client(args) as client:
        client.send("/queueit/admin", b"", headers={**headers, "reply-to": "/temp-queue/admin"})
        reply = client.receive(timeout=args.timeout)
    try:
        answer: dict[str, Any] = json.loads(reply.body)
    except ValueError:
        raise ClientError(f"the broker's admin reply is not JSON: {reply.body[:80]!r}") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        raise ClientError(answer.get("error", "admin request failed"))
    return answer


def stat(args: argparse.Namespace) -> int:
    try:
        answer = admin_request(args, {"command": "stat"})
    except (ClientError, OSError) as exc:
        return fail(exc)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    connections = answer["connections"]
    print(f"store: {answer['store']}   connections: {'-' if connections is None else connections}")
    groups = answer.get("groups")
    if groups is not None:
        print(
            f"groups: {groups['open']} open, {groups['released']} released, {groups['expired']} expired   "
            f"progress reports kept: {answer['progress_reports']}"
        )
    rows = [
        (
            q["name"],
            q["depth"],
            q["consumers"],
            q["in_flight"],
            q["scheduled"],
            q["unique_keys"],
            q["fsync"] or "-",
        )
        for q in answer["queues"]
    ]
    print_table(["queue", "depth", "consumers", "in-flight", "delayed", "unique keys", "fsync"], rows)
    print_table(["topic", "subscribers"], [(t["name"], t["subscribers"]) for t in answer["topics"]])
    if answer["durable_subscriptions"]:
        print_table(
            ["durable subscription", "depth", "active"],
            [(d["name"], d["depth"], d["active"]) for d in answer["durable_subscriptions"]],
        )
    if answer["exchanges"]:
        print_table(
            ["exchange", "type", "bindings"],
            [(e["name"], e["type"], len(e["bindings"])) for e in answer["exchanges"]],
        )
    return 0


def exchange(args: argparse.Namespace) -> int:
    headers = {"command": f"exchange-{args.action}", "name": args.name, "type": args.type}
    if args.action in ("bind", "unbind"):
        if not args.queue:
            print("queueit exchange: --queue is required for bind and unbind", file=sys.stderr)
            return 2
        headers = {"command": args.action, "exchange": args.name, "queue": args.queue, "key": args.key}
    try:
        admin_request(args, headers)
    except (ClientError, OSError) as exc:
        return fail(exc)
    return 0


def print_table(header_row: list[str], rows: list[tuple[Any, ...]]) -> None:
    # One line per row: a cell's own line breaks and tabs (a multi-line error) become spaces.
    cells = [header_row, *[[" ".join(str(c).split()) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header_row))]
    print()
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if not rows:
        print("(none)")


def local_time(epoch_ms: int) -> str:
    """``epoch_ms`` as local ``YYYY-MM-DD HH:MM:SS``; ``-`` for 0 (unknown)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_ms / 1000)) if epoch_ms else "-"
