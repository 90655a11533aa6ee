"""The examples/ folder, run as its README says: real broker, real worker processes, the
talk's PHP producer (php-stomp), and a local SMTP sink."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from queueit.client import Client

from ..conftest import BrokerProcess, require, wait_until

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def env(broker: BrokerProcess, tmp_path: Path) -> dict[str, str]:
    return dict(
        os.environ,
        QUEUEIT_URL=f"queueit://{broker.host}:{broker.port}",
        QUEUEIT_STOMP_URL=f"tcp://{broker.host}:{broker.port}",
        PYTHONUNBUFFERED="1",
    )


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Start a process (stopped with SIGTERM at teardown); returns where its output goes."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(*argv: str, env: dict[str, str]) -> Path:
        log_path = tmp_path / f"proc-{len(started)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append((proc, log_path))
        return log_path

    yield start
    for proc, log_path in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        assert "Traceback" not in log_path.read_text(errors="replace"), log_path.read_text()


def worker(spawn: Callable[..., Path], app: str, env: dict[str, str]) -> None:
    """Start a worker and wait until it consumes: an event emitted before its listener
    group's queue is bound reaches nobody (that is what a topic is)."""
    log = spawn(sys.executable, "-m", "queueit", "worker", app, "--processes", "1", env=env)
    wait_until(
        lambda: " taking jobs from " in log.read_text(errors="replace"), f"{app} to consume", timeout=30
    )


@pytest.mark.php
def test_the_talks_email_queue_end_to_end(
    env: dict[str, str], spawn: Callable[..., Path], tmp_path: Path, broker: BrokerProcess
) -> None:
    php = shutil.which("php")
    require(php is not None, "php-cli is not installed (scripts/ci-deps installs php-cli and php-stomp)")
    assert php is not None
    mail = tmp_path / "mail"
    smtp_port = free_port()
    env = dict(env, SMTP_PORT=str(smtp_port))
    worker(spawn, "examples.email.tasks:app", env)
    # The SMTP server is down at first: the first attempts fail and are retried.
    produced = subprocess.run(
        [php, str(REPO / "examples/email/producer.php"), "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert produced.returncode == 0, produced.stderr
    assert produced.stdout.strip() == "saved 3 users"
    with Client(broker.host, broker.port) as c:  # no recipient: invalid, never retried
        c.send("/queue/email", b'{"subject": "to nobody"}', headers={"persistent": "true"}, receipt=True)
    time.sleep(0.5)
    assert not mail.exists()
    spawn(
        sys.executable,
        "-m",
        "examples.email.smtp_sink",
        "--port",
        str(smtp_port),
        "--out",
        str(mail),
        env=env,
    )
    wait_until(lambda: len(list(mail.glob("*.eml"))) == 3, "three mails in the sink")
    received = sorted(p.read_bytes().decode() for p in mail.glob("*.eml"))
    assert all("Subject: Welcome" in m for m in received)
    assert {m.split("X-Sink-To: ")[1].split("\r\n")[0] for m in received} == {
        f"<user{i}@example.com>" for i in (1, 2, 3)
    }
    failed = subprocess.run(
        [sys.executable, "-m", "queueit", "failed", "list", "--json", "--app", "examples.email.tasks:app"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    [invalid] = json.loads(failed.stdout)
    assert invalid["reason"] == "invalid"
    assert invalid["error"] == "EmailQueue.validate() refused the message"


def test_the_thumbnail_pipeline(env: dict[str, str], spawn: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "thumbs"
    env = dict(env, THUMBNAILS_DIR=str(out))
    image = tmp_path / "photo.ppm"
    width, height = 120, 80
    pixels = bytes(
        (x * 2 % 256, y * 3 % 256, 128)[c] for y in range(height) for x in range(width) for c in range(3)
    )
    image.write_bytes(b"P6\n# a test image\n%d %d\n255\n" % (width, height) + pixels)
    worker(spawn, "examples.thumbnails.tasks:app", env)
    sent = subprocess.run(
        [sys.executable, "-m", "examples.thumbnails.send", str(image)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "pipeline started" in sent.stdout
    index = out / "gallery.jsonl"
    # Whole lines only: the file exists from its open(), before its line is written.
    wait_until(lambda: index.exists() and index.read_text().endswith("\n"), "the published thumbnail")
    [entry] = [json.loads(line) for line in index.read_text().splitlines()]
    thumbnail = Path(entry["thumbnail"])
    assert thumbnail.name == "photo-64-framed.ppm"
    header = thumbnail.read_bytes()[:20].split(b"\n")
    assert header[:3] == [b"P6", b"64 43", b"255"]


def test_event_listeners(env: dict[str, str], spawn: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "events"
    env = dict(env, EVENTS_DIR=str(out))
    worker(spawn, "examples.events.tasks:app", env)
    worker(spawn, "examples.events.tasks:app", env)  # two workers: each event once per group
    subprocess.run(
        [sys.executable, "-m", "examples.events.emit", "alice@example.com", "bob@example.com"],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=30,
        check=True,
    )

    def lines(name: str) -> list[dict[str, str]]:
        path = out / f"{name}.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    wait_until(lambda: len(lines("welcome")) == 2 and len(lines("search-index")) == 2, "both listener groups")
    time.sleep(0.5)
    assert sorted(e["to"] for e in lines("welcome")) == ["alice@example.com", "bob@example.com"]
    assert sorted(e["email"] for e in lines("search-index")) == ["alice@example.com", "bob@example.com"]
