"""A ``queueit serve`` process for crash tests: its log goes to a file, it dies by SIGKILL.

Unlike :func:`tests.conftest.start_broker`, the log is not a pipe: a broker that runs a
long time (a soak run) cannot block on a full pipe, and every life's log stays on disk
for the report of a failure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from queueit import Client, Message

from ..conftest import READY_RE

#: Log lines that mean the broker itself noticed something wrong.
BAD_LOG_RE = re.compile(r"Traceback|^\S+ \S+ (ERROR|CRITICAL) ", re.MULTILINE)
GUEST = "guest"  # the built-in user, accepted from loopback


def client(address: tuple[str, int], timeout: float = 10.0) -> Client:
    """A :class:`queueit.Client` for ``address``, logged in as guest (not yet connected)."""
    return Client(*address, login=GUEST, passcode=GUEST, timeout=timeout)


class BrokerStartError(RuntimeError):
    """The broker exited, or printed no ready line in time."""


@dataclass
class CrashBroker:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    data_dir: Path
    log_path: Path

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @classmethod
    def start(cls, data_dir: Path, log_path: Path, timeout: float = 30.0) -> CrashBroker:
        """Start ``python -m queueit serve`` on a free port of 127.0.0.1; wait until it is ready."""
        cmd = [sys.executable, "-m", "queueit", "serve", "--host", "127.0.0.1", "--port", "0"]
        cmd += ["--data-dir", str(data_dir)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while True:
            text = log_path.read_text("utf-8", "replace")
            match = READY_RE.search(text)
            if match:
                return cls(proc, match["host"], int(match["port"]), data_dir, log_path)
            rc = proc.poll()
            if rc is not None:
                raise BrokerStartError(f"queueit serve exited with {rc} before it was ready:\n{text}")
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise BrokerStartError(f"queueit serve was not ready after {timeout:.0f} s:\n{text}")
            time.sleep(0.002)

    def kill(self) -> None:
        """SIGKILL, and wait until the process is gone."""
        self.process.send_signal(signal.SIGKILL)
        rc = self.process.wait(30)
        if rc != -signal.SIGKILL:
            raise AssertionError(f"broker exited with {rc} before the SIGKILL:\n{self.log()}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (a clean stop); the exit code, or AssertionError if it hangs."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"broker did not stop within {timeout:.0f} s of SIGTERM:\n{self.log()}"
            ) from None

    def ensure_dead(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def bad_log_lines(self) -> list[str]:
        return [line for line in self.log().splitlines() if BAD_LOG_RE.search(line)]


def drain(address: tuple[str, int], queue: str) -> list[Message]:
    """Everything in ``queue`` up to a sentinel sent now, each acked with a receipt."""
    got: list[Message] = []
    with client(address) as c:
        c.send(queue, b"end", headers={"persistent": "true", "x-key": "end"}, receipt=True)
        c.subscribe(queue, ack="client-individual", prefetch=200)
        while True:
            message = c.receive(15.0)
            c.ack(message, receipt=True)
            if message.headers.get("x-key") == "end":
                return got
            got.append(message)
