"""The README's main command: ``queueit demo`` runs a broker, workers and jobs to the end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_demo_runs_every_job_to_an_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "queueit", "demo", "--jobs", "100", "--data-dir", str(tmp_path / "demo")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    last_frame = result.stdout.split("\r")[-1]
    # 100 signups (two with a broken address fail at once) and 10 two-step pipelines.
    assert "118/120 done, 2 failed, 0 waiting" in last_frame, result.stdout
    assert "queueit failed list --app queueit.demo:app" in result.stdout
    log = (tmp_path / "demo" / "worker.log").read_text()
    assert "Traceback" not in log
    assert "outcome=failed" in log
