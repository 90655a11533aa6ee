"""Shared fixtures: a real ``queueit serve`` process on 127.0.0.1 and a random port.

Tests that need an outside service call :func:`require` with the reason it is missing:
locally the test is skipped with that reason, in CI (``CI=true``) it fails instead, so a
missing install step in ``.ci/run`` can never pass silently.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from queueit.jobs import Exit, Worker

from .rabbitmq import RabbitNode, server_script, start_rabbit

READY_RE = re.compile(r"ready on stomp://(?P<host>[0-9.]+):(?P<port>\d+)")


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (CI) when ``condition`` is false."""
    if condition:
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def run_worker_until(worker: Worker, done: Callable[[], bool], seconds: float = 20.0) -> Exit:
    """Run ``worker`` on a fresh event loop until ``done()`` (looked at every 10 ms) or for
    ``seconds``, then stop it; returns why it stopped."""

    async def scenario() -> Exit:
        running = asyncio.ensure_future(worker.run())
        deadline = time.monotonic() + seconds
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        worker.stop()
        return await running

    return asyncio.run(scenario())


def make_test_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` and 127.0.0.1, valid a day: (cert, key)."""
    require(
        subprocess.run(["which", "openssl"], capture_output=True, check=False).returncode == 0,
        "openssl is needed to make a test certificate",
    )
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = 20.0, log: Callable[[], str] = str
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` (and showing ``log()``) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{log()}")


@dataclass
class BrokerProcess:
    """A running ``queueit serve``; ``log`` holds what it printed so far."""

    process: subprocess.Popen[str]
    host: str
    port: int
    data_dir: Path
    log: list[str]

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            rc = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            rc = self.process.wait(5)
        assert self.process.stderr is not None
        self.log.extend(self.process.stderr.read().splitlines())
        self.process.stderr.close()
        return rc


def start_broker(data_dir: Path, *extra: str, timeout: float = 20.0) -> BrokerProcess:
    """Start ``python -m queueit serve`` on port 0 and wait for its ready line."""
    cmd = [
        sys.executable,
        "-m",
        "queueit",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        *extra,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    log: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        log.append(line.rstrip("\n"))
        match = READY_RE.search(line)
        if match:
            return BrokerProcess(proc, match["host"], int(match["port"]), data_dir, log)
    proc.kill()
    rest = proc.stderr.read()
    proc.wait()
    proc.stderr.close()
    raise RuntimeError("queueit serve did not become ready:\n" + "\n".join(log) + rest)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A fresh broker with the default configuration (guest/guest on loopback)."""
    proc = start_broker(tmp_path / "data")
    try:
        yield proc
    finally:
        rc = proc.stop()
        assert rc == 0, "broker did not shut down cleanly:\n" + "\n".join(proc.log)
        assert not any("Traceback" in line for line in proc.log), "\n".join(proc.log)


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A RabbitMQ node of our own, started once per session (it takes seconds to boot)."""
    script = server_script()
    require(script is not None, "rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    assert script is not None
    node = start_rabbit(tmp_path_factory.mktemp("rabbitmq"), script)
    try:
        yield node
    finally:
        node.stop()
