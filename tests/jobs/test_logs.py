"""The worker's, supervisor's and scheduler's log lines (queueit.jobs.logs), in a fresh process:
logging is process-wide, so it is never configured inside the test runner."""

from __future__ import annotations

import os
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

logs.configure("worker[1] ")
try:
    raise aiormq.exceptions.ConnectionInternalError("INTERNAL_ERROR")
except aiormq.exceptions.AMQPError:
    logging.getLogger("aiormq.connection").warning("Cancelling cause reader exited abnormally", exc_info=True)
try:
    raise KeyError("ours")
except KeyError:
    logging.getLogger("queueit.worker").exception("a bug of ours")
logging.getLogger("queueit.worker").debug("debug line")
"""


def run(level: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "QUEUEIT_LOG_LEVEL"}
    if level is not None:
        env["QUEUEIT_LOG_LEVEL"] = level
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
    assert library.endswith(
        "WARNING worker[1] Cancelling cause reader exited abnormally"
        " (ConnectionInternalError: INTERNAL_ERROR)"
    ), library
    # Only queueit's own error keeps its traceback, and it ends with our exception.
    assert sum(line.startswith("Traceback") for line in lines) == 1
    assert lines[-1] == "KeyError: 'ours'"
    assert not any("debug line" in line for line in lines)


def test_debug_keeps_every_traceback() -> None:
    lines = run("debug")
    assert sum(line.startswith("Traceback") for line in lines) == 2
    assert "aiormq.exceptions.ConnectionInternalError: INTERNAL_ERROR" in lines
    assert lines[-1].endswith("DEBUG worker[1] debug line")


@pytest.mark.parametrize("level", ["loud", "x" * 5000])
def test_an_unknown_level_is_named_and_info_is_used(level: str) -> None:
    lines = run(level)
    [warning] = [line for line in lines if "QUEUEIT_LOG_LEVEL" in line]
    assert "is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL; logging at INFO" in warning
    assert len(warning) < 300  # a huge value is cut, not echoed whole
    assert not any("debug line" in line for line in lines)
