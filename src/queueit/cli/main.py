"""``queueit`` entry point: one sub-command per module, each only translating arguments."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .._version import __version__
from . import demo, dlq, failed, messaging, scheduler, serve, users, worker


class _Version(argparse.Action):
    """``--version``: the version and the build (pure Python or compiled), worked out only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **_: object) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version and exit"
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from ..compiled import build_name  # imports the broker's modules: only for this option

        print(f"queueit {__version__} ({build_name()} build)")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="queueit",
        description="queueit: an embedded STOMP 1.0-1.2 message broker, jobs and workers.",
        epilog="Start with 'queueit serve', then 'queueit send /queue/hello Hello' in another terminal.",
    )
    parser.add_argument("--version", action=_Version)
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
    except BrokenPipeError:
        # The reader went away (``queueit failed list | head``): nothing more to say. Point
        # stdout at /dev/null, or the interpreter's last flush raises again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
