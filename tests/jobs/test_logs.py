"""The worker's, supervisor's and scheduler's log lines (queueit.jobs.logs), in a fresh process:
logging is process-wide, so it is never configured inside the test runner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from .conftest import REPO

# Logs what a transport's client library logs when RabbitMQ closes a connection (a record
# with the exception attached), then an error of queueit's own with its traceback.
SCRIPT = """
import logging
import aiormq.exceptions
from queueit.jobs import logs

logs.configure("worker")
try:
    raise aiormq.exceptions.ConnectionInternalError("INTERNAL_ERROR")
except aiormq.exceptions.AMQPError:
    logging.getLogger("aiormq.connection").warning("Cancelling cause reader exited abnormally", exc_info=True)
try:
    raise KeyError("ours")
except KeyError:
    logging.getLogger("queueit.worker").exception("a bug of ours")
logging.getLogger("queueit.worker").debug("debug line")
logging.getLogger("queueit.worker").info(
    "job=j id=1 outcome=done", extra={"job": "j", "job_id": "1", "outcome": "done", "ms": 0.5}
)
"""


def run(level: str | None, form: str | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QUEUEIT_LOG_LEVEL", "QUEUEIT_LOG_FORMAT")}
    if level is not None:
        env["QUEUEIT_LOG_LEVEL"] = level
    if form is not None:
        env["QUEUEIT_LOG_FORMAT"] = form
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    return done.stderr.splitlines()


def test_a_client_library_traceback_becomes_one_line_and_ours_stay_whole() -> None:
    lines = run(None)
    [library] = [line for line in lines if "Cancelling" in line]
    assert re.search(
        r"WARNING worker\[\d+\] Cancelling cause reader exited abnormally"
        r" \(ConnectionInternalError: INTERNAL_ERROR\)$",
        library,
    ), library
    # Only queueit's own error keeps its traceback, and it ends with our exception.
    assert sum(line.startswith("Traceback") for line in lines) == 1
    assert lines[-2] == "KeyError: 'ours'"
    assert lines[-1].endswith("job=j id=1 outcome=done")
    assert not any("debug line" in line for line in lines)


def test_debug_keeps_every_traceback() -> None:
    lines = run("debug")
    assert sum(line.startswith("Traceback") for line in lines) == 2
    assert "aiormq.exceptions.ConnectionInternalError: INTERNAL_ERROR" in lines
    assert re.search(r"DEBUG worker\[\d+\] debug line$", lines[-2]), lines[-2]


@pytest.mark.parametrize("level", ["loud", "x" * 5000])
def test_an_unknown_level_is_named_and_info_is_used(level: str) -> None:
    lines = run(level)
    [warning] = [line for line in lines if "QUEUEIT_LOG_LEVEL" in line]
    assert "is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL; logging at INFO" in warning
    assert len(warning) < 300  # a huge value is cut, not echoed whole
    assert not any("debug line" in line for line in lines)


def test_json_lines_carry_the_records_fields() -> None:
    lines = run(None, "JSON")
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    library, ours, job = records
    assert library["message"].endswith("(ConnectionInternalError: INTERNAL_ERROR)")
    assert "exception" not in library  # one line, as in text
    assert ours["level"] == "ERROR"
    assert ours["exception"].endswith("KeyError: 'ours'")
    assert (job["role"], job["logger"], job["job"], job["job_id"], job["outcome"], job["ms"]) == (
        "worker",
        "queueit.worker",
        "j",
        "1",
        "done",
        0.5,
    )
    assert job["time"].endswith("+00:00")
    assert isinstance(job["pid"], int)


def test_an_unknown_format_is_named_and_text_is_used() -> None:
    lines = run(None, "xml")
    assert any("QUEUEIT_LOG_FORMAT='xml' is not one of text, json; logging text" in line for line in lines)
    assert not lines[0].startswith("{")
