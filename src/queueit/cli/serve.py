"""``queueit serve``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from ..broker.auth import UsersFileError
from ..broker.config import DEFAULT_PORT, ConfigError, load_settings
from ..broker.server import run_broker
from .args import port_number


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the broker",
        description="Run the queueit STOMP broker until SIGTERM or SIGINT.",
        epilog="Example: queueit serve --data-dir ./data   (then: queueit send /queue/hello 'Hello')",
    )
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=port_number,
        default=None,
        help=f"STOMP port (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="where the broker keeps its files (default ./data)",
    )
    p.add_argument("--config", type=Path, default=None, help="TOML config file (see docs/configuration.md)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def _print_first_steps(addresses: list[tuple[str, str, int]]) -> None:
    _, host, port = addresses[0]
    where = "" if host == "127.0.0.1" else f" --host {host}"
    where += "" if port == DEFAULT_PORT else f" --port {port}"
    # Name the command as the user can type it: `.venv/bin/queueit` when not on PATH.
    prog = sys.argv[0] if Path(sys.argv[0]).name == "queueit" and not shutil.which("queueit") else "queueit"
    print(
        f"Send a first message:   {prog} send{where} /queue/hello 'Hello, queueit'\n"
        f"Receive it:             {prog} consume{where} /queue/hello --count 1\n"
        f"See queues and topics:  {prog} stat{where}\n"
        "Stop with Ctrl-C.",
        file=sys.stderr,
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings(args.data_dir, args.config, host=args.host, port=args.port)
    except ConfigError as exc:
        print(f"queueit serve: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop  # optional speed-up; the stdlib loop works the same
    except ImportError:
        runner: Any = asyncio.run
    else:
        runner = uvloop.run

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_broker(settings, stop, on_ready=_print_first_steps)

    try:
        runner(main())
    except (UsersFileError, ConfigError) as exc:  # includes TLS files, data dir, exchanges
        print(f"queueit serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"queueit serve: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0
