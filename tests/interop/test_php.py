"""The talk's PHP code (php-cli + the php-stomp extension, class ``Stomp``) against ``queueit serve``.

The scripts in ``php/`` are the talk's snippets made runnable: ``producer.php`` (slide 51),
``consumer.php`` (slides 52 and 67) and ``worker.php`` with ``queue.php`` (the AbstractQueue and
EmailQueue classes of slides 65-68). The extension speaks STOMP 1.0: CONNECT without login,
SUBSCRIBE with ``ack:client`` and no id, ACK carrying every header of the MESSAGE.

After a consumer has run, :func:`test_stomppy.leftovers` checks that nothing it read was left
on (or requeued to) the queue.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from ..conftest import BrokerProcess, require
from .test_stomppy import WAIT, Client, MakeClient, bodies, clients, leftovers

__all__ = ["clients"]  # the stomp.py client factory fixture, used here too

pytestmark = pytest.mark.php

PHP_DIR = Path(__file__).parent / "php"
PHP_TIMEOUT = 30.0
"""Bound for one PHP script run (consumer.php itself gives up after 20 s)."""


@pytest.fixture(scope="session")
def php() -> str:
    """Path of php-cli, which must have the stomp extension loaded."""
    php = shutil.which("php")
    require(php is not None, "php-cli is not installed (scripts/ci-deps installs php-cli and php-stomp)")
    assert php is not None
    modules = subprocess.run([php, "-m"], capture_output=True, text=True, timeout=PHP_TIMEOUT, check=True)
    loaded = {line.strip().lower() for line in modules.stdout.splitlines()}
    require("stomp" in loaded, "php has no stomp extension (scripts/ci-deps installs php-stomp)")
    return php


def url(broker: BrokerProcess) -> str:
    return f"tcp://{broker.host}:{broker.port}"


def run_php(php: str, script: str, *args: str) -> list[str]:
    """Run a script to completion; return its stdout lines, failing with its output otherwise."""
    command = [php, "-d", "display_errors=stderr", str(PHP_DIR / script), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PHP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as timeout:
        output = [
            part.decode() if isinstance(part, bytes) else part or ""
            for part in (timeout.stderr, timeout.output)
        ]
        raise AssertionError(
            f"php {script} still running after {PHP_TIMEOUT} s:\n{''.join(output)}"
        ) from None
    assert done.returncode == 0, f"php {script} exited {done.returncode}:\n{done.stderr}{done.stdout}"
    return done.stdout.splitlines()


def email(number: int) -> dict[str, object]:
    """The e-mail producer.php builds for user ``number``."""
    address = f"user{number}@example.com"
    return {"to": address, "subject": "Welcome", "message": f"Welcome to queueit, {address} ✓", "headers": []}


def test_talk_producer_then_consumer(php: str, broker: BrokerProcess, clients: MakeClient) -> None:
    sent = run_php(php, "producer.php", url(broker), "5")
    assert [json.loads(line) for line in sent] == [email(n) for n in range(1, 6)]
    received = run_php(php, "consumer.php", url(broker), "5")
    assert received == sent  # every body exactly once, byte for byte, in order
    checker = clients("1.2")
    assert leftovers(checker, checker, "/queue/email") == []


def test_php_consumer_receives_what_stomppy_sent(
    php: str, broker: BrokerProcess, clients: MakeClient
) -> None:
    producer = clients("1.2")
    sent = [
        json.dumps(
            {"to": f"py{n}@example.com", "subject": "Hallo", "message": f"Grüße Nr. {n} ✓", "headers": []},
            ensure_ascii=False,
        )
        for n in range(3)
    ]
    for body in sent:
        producer.send("/queue/email", body, content_type="application/json")
    assert run_php(php, "consumer.php", url(broker), "3") == sent
    assert leftovers(producer, producer, "/queue/email") == []


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_stomppy_receives_what_php_sent(
    php: str, broker: BrokerProcess, clients: MakeClient, version: str
) -> None:
    sent = run_php(php, "producer.php", url(broker), "3")
    consumer = clients(version)
    consumer.subscribe("/queue/email", ack="client")
    received = consumer.receive_bodies(3)
    assert bodies(received) == sent
    assert [message.headers["destination"] for message in received] == ["/queue/email"] * 3
    consumer.ack(received[-1])
    assert leftovers(consumer, consumer, "/queue/email") == []


def test_email_queue_worker_mails_valid_messages_and_drops_invalid(
    php: str, broker: BrokerProcess, clients: MakeClient
) -> None:
    messages = [
        {"to": "ada@example.com", "subject": "Hi Ada", "message": "First"},
        {"subject": "nobody to send this to", "message": "dropped by EmailQueue::validate"},
        {"to": "grace@example.com", "subject": "Hi Grace", "message": "Second ✓"},
    ]
    assert run_php(php, "worker.php", "publish", url(broker), *map(json.dumps, messages)) == []
    mailed = run_php(php, "worker.php", "dispatch", url(broker), str(len(messages)))
    assert [json.loads(line) for line in mailed] == [messages[0], messages[2]]
    checker = clients("1.2")
    assert leftovers(checker, checker, "/queue/email") == []  # the invalid one was acknowledged too


class LineReader:
    """Collects a pipe's lines on a thread so they can be waited for with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = WAIT) -> str:
        """The first line containing ``text``; fails with what was read instead."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} within {timeout} s; got {self.seen}") from None
            self.seen.append(line)
            if text in line:
                return line


@pytest.fixture
def worker(php: str, broker: BrokerProcess) -> Iterator[subprocess.Popen[str]]:
    """``worker.php dispatch`` without a limit: it runs until it gets a signal."""
    proc = subprocess.Popen(
        [php, "-d", "display_errors=stderr", str(PHP_DIR / "worker.php"), "dispatch", url(broker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(PHP_TIMEOUT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_email_queue_worker_stops_cleanly_on_sigterm(
    worker: subprocess.Popen[str], clients: MakeClient
) -> None:
    assert worker.stdout is not None
    assert worker.stderr is not None
    out, err = LineReader(worker.stdout), LineReader(worker.stderr)
    err.wait_for("subscribed to /queue/email")
    producer: Client = clients("1.2")
    mail = {"to": "live@example.com", "subject": "while running", "message": "handled live"}
    producer.send("/queue/email", json.dumps(mail))
    assert json.loads(out.wait_for("live@example.com")) == mail

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(WAIT) == 0, err.seen
    err.wait_for(f"stopping on signal {int(signal.SIGTERM)}")
    assert leftovers(producer, producer, "/queue/email") == []
