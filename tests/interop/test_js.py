"""Node.js over TCP: the npm package stompit (pinned in js/package-lock.json) against ``queueit serve``.

``js/client_individual.js`` connects offering STOMP 1.0-1.2, subscribes with
``ack:client-individual``, sends COUNT messages with receipts, ACKs every delivery with a
receipt (in ``nack-first`` mode it NACKs the first delivery of message 0) and prints a JSON
report, which the tests check. Install the packages with ``npm ci --prefix tests/interop/js``
(scripts/ci-deps does).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..conftest import BrokerProcess, require
from .test_stomppy import MakeClient, clients, leftovers

__all__ = ["clients"]  # the stomp.py client factory fixture, used here too

pytestmark = pytest.mark.node

JS_DIR = Path(__file__).parent / "js"
NODE_TIMEOUT = 30.0
"""Bound for one script run; the script gives up on its own after 20 s."""
DESTINATION = "/queue/interop-js"


@pytest.fixture(scope="session")
def node() -> str:
    node = shutil.which("node")
    require(node is not None, "node is not installed (scripts/ci-deps installs nodejs and npm)")
    assert node is not None
    require(
        (JS_DIR / "node_modules" / "stompit" / "package.json").is_file(),
        "tests/interop/js/node_modules is missing: run npm ci --prefix tests/interop/js (scripts/ci-deps)",
    )
    return node


def run_client(node: str, broker: BrokerProcess, count: int, mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [node, str(JS_DIR / "client_individual.js"), broker.host, str(broker.port), str(count), mode],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
        cwd=JS_DIR,
    )
    assert done.returncode == 0, f"node exited {done.returncode}:\n{done.stderr}{done.stdout}"
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def check_delivery(delivery: dict[str, Any], sent: list[str]) -> None:
    body = delivery["body"]
    assert body == sent[int(delivery["seq"])]
    assert delivery["destination"] == DESTINATION
    assert delivery["contentType"] == "text/plain; charset=utf-8"
    assert delivery["ack"], "STOMP 1.2 MESSAGE on a client-individual subscription needs an ack header"
    if delivery["contentLength"] is not None:
        assert delivery["contentLength"] == str(len(body.encode()))


def test_stompit_client_individual_send_receive_ack(
    node: str, broker: BrokerProcess, clients: MakeClient
) -> None:
    report = run_client(node, broker, 5, "ack")
    assert report["version"] == "1.2"
    sent: list[str] = report["sent"]
    assert sent == [f"message {i} from stompit: héllo ✓" for i in range(5)]
    assert sorted(report["receipts"]) == [str(i) for i in range(5)]
    deliveries = report["deliveries"]
    assert [d["body"] for d in deliveries] == sent  # each once, in order
    for delivery in deliveries:
        check_delivery(delivery, sent)
        assert delivery["redelivered"] in (None, "false")
    assert sorted(report["acked"]) == [str(i) for i in range(5)]
    checker = clients("1.2")
    assert leftovers(checker, checker, DESTINATION) == []


def test_stompit_nack_gets_the_message_redelivered(
    node: str, broker: BrokerProcess, clients: MakeClient
) -> None:
    report = run_client(node, broker, 3, "nack-first")
    sent: list[str] = report["sent"]
    deliveries = report["deliveries"]
    for delivery in deliveries:
        check_delivery(delivery, sent)
    seqs = [d["seq"] for d in deliveries]
    assert sorted(seqs) == ["0", "0", "1", "2"]
    first, again = (d for d in deliveries if d["seq"] == "0")
    assert first["redelivered"] in (None, "false")
    assert again["redelivered"] == "true"
    assert sorted(report["acked"]) == ["0", "1", "2"]
    checker = clients("1.2")
    assert leftovers(checker, checker, DESTINATION) == []
