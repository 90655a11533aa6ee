"""``queueit`` entry point: one sub-command per module, each only translating arguments."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._version import __version__
from . import demo, dlq, failed, messaging, scheduler, serve, users, worker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="queueit",
        description="queueit: an embedded STOMP 1.0-1.2 message broker, jobs and workers.",
        epilog="Start with 'queueit serve', then 'queueit send /queue/hello Hello' in another terminal.",
    )
    parser.add_argument("--version", action="version", version=f"queueit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.register(sub)
    messaging.register(sub)
    users.register(sub)
    dlq.register(sub)
    worker.register(sub)
    scheduler.register(sub)
    failed.register(sub)
    demo.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
