"""The ``queueit`` commands against a running broker, as a user types them."""

from __future__ import annotations

import json
import subprocess
import sys

from ..conftest import BrokerProcess


def run(broker: BrokerProcess, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "queueit", *args, "--port", str(broker.port)]
    return subprocess.run(cmd, input=stdin, capture_output=True, timeout=60, check=False)


def test_send_consume_stat(broker: BrokerProcess) -> None:
    assert run(broker, "send", "/queue/cli", "hello").returncode == 0
    assert run(broker, "send", "/queue/cli", "-", stdin=b"from stdin").returncode == 0
    assert run(broker, "send", "/queue/cli", "x", "-H", "x-trace:42").returncode == 0
    stat = run(broker, "stat", "--json")
    assert stat.returncode == 0, stat.stderr
    queues = {q["name"]: q for q in json.loads(stat.stdout)["queues"]}
    assert queues["cli"]["depth"] == 3
    assert queues["cli"]["consumers"] == 0
    consumed = run(broker, "consume", "/queue/cli", "--count", "3", "--headers")
    assert consumed.returncode == 0, consumed.stderr
    lines = consumed.stdout.decode().splitlines()
    assert lines[1::2] == ["hello", "from stdin", "x"]
    assert json.loads(lines[4])["x-trace"] == "42"
    table = run(broker, "stat").stdout.decode()
    assert "queue  depth  consumers  in-flight  delayed  unique keys  fsync" in table
    assert "cli    0      0          0          0        0            always" in table
    assert "groups: 0 open, 0 released, 0 expired   progress reports kept: 0" in table


def test_stat_counts_unique_keys_and_what_they_kept_out(broker: BrokerProcess) -> None:
    for body in ("first", "second"):
        assert run(broker, "send", "/queue/once", body, "-H", "unique-key:k").returncode == 0
    stat = json.loads(run(broker, "stat", "--json").stdout)
    (once,) = [q for q in stat["queues"] if q["name"] == "once"]
    assert (once["depth"], once["unique_keys"], once["kept_out"]) == (1, 1, 1)


def test_exchange_commands(broker: BrokerProcess) -> None:
    assert run(broker, "exchange", "declare", "events", "--type", "topic").returncode == 0
    assert run(broker, "exchange", "bind", "events", "--queue", "audit", "--key", "user.#").returncode == 0
    assert run(broker, "send", "/exchange/events/user.saved", "u1").returncode == 0
    stat = json.loads(run(broker, "stat", "--json").stdout)
    assert {"name": "events", "type": "topic", "bindings": [["user.#", "audit"]]} in stat["exchanges"]
    assert [q["depth"] for q in stat["queues"] if q["name"] == "audit"] == [1]
    clash = run(broker, "exchange", "declare", "events", "--type", "fanout")
    assert clash.returncode == 1
    assert b"exists with type topic" in clash.stderr
    missing = run(broker, "send", "/exchange/nope/k", "x")
    assert missing.returncode == 1
    assert b"No exchange named 'nope'" in missing.stderr


def test_errors_are_one_clear_line(broker: BrokerProcess) -> None:
    bad = run(broker, "send", "/bogus/x", "x")
    assert bad.returncode == 1
    assert bad.stderr.decode().startswith("queueit: Invalid destination: Unknown destination '/bogus/x'")
    assert b"Traceback" not in bad.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "queueit", "consume", "/queue/x", "--count", "0"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert usage.returncode == 2
    assert b"must be at least 1" in usage.stderr
