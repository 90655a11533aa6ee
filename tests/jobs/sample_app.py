"""The app the worker-process tests run (``queueit worker tests.jobs.sample_app:app``).

Jobs write what they do to the ledger file named by ``QUEUEIT_LEDGER``, one line per event,
so a test can check from outside that each job ran, and how often.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import os
import time

from queueit.jobs import App, Retry, current

# The reload test breaks this module's import on purpose, by creating this file.
if os.path.exists(os.environ.get("QUEUEIT_LEDGER", os.devnull) + ".broken"):
    raise ImportError("tests.jobs.sample_app is broken on purpose (a reload test)")

app = App(os.environ.get("QUEUEIT_URL", "memory://sample"))
_kept: list[bytearray] = []


def others_alive(kind: str) -> int:
    """Processes other than this one that recorded ``kind`` and still run. A zombie is dead,
    and so is a process in its exit whose files are closed already: the kernel closes its
    sockets (which makes the broker deliver its job again) before it becomes a zombie."""
    pids: set[int] = set()
    with contextlib.suppress(OSError), open(os.environ.get("QUEUEIT_LEDGER", os.devnull)) as f:
        pids = {int(p[2]) for p in (line.split() for line in f) if p and p[0] == kind}
    alive = 0
    for pid in pids - {os.getpid()}:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
            running = stat.read().rsplit(")", 1)[1].split()[0] != "Z"
            alive += running and bool(os.listdir(f"/proc/{pid}/fd"))
    return alive


def record(*parts: object) -> None:
    line = " ".join(str(p) for p in parts) + "\n"
    with open(os.environ.get("QUEUEIT_LEDGER", os.devnull), "a") as f:
        f.write(line)


@app.job(queue="work")
def add(n: int) -> None:
    record("add", n, os.getpid())


@app.job(queue="work")
async def async_add(n: int) -> None:
    await asyncio.sleep(0)
    record("async_add", n, os.getpid())


@app.job(queue="work", retry=Retry(retries=2, base=0.2, jitter=False))
def flaky(n: int, fail_times: int) -> None:
    attempt = current().attempt
    record("flaky", n, attempt, os.getpid())
    if attempt <= fail_times:
        raise RuntimeError(f"attempt {attempt} fails on purpose")


@app.job(queue="work", retry=Retry(retries=0))
def doomed(n: int) -> None:
    record("doomed", n, os.getpid())
    raise RuntimeError("fails at once, every time")


@app.job(queue="suspects", timeout=0.5, retry=Retry(retries=0))
def swallower(n: int) -> None:
    """Catches even the alarm that ends its timeout: the inline pool's watchdog ends its
    process, every time it runs."""
    record("swallower", n, os.getpid())
    while True:
        with contextlib.suppress(BaseException):  # on purpose: a job that will not stop
            time.sleep(0.05)


@app.job(queue="suspects")
def bystander(n: int) -> None:
    record("bystander", n, os.getpid())


@app.job(queue="slow")
def sleepy(n: int, seconds: float) -> None:
    record("start", n, os.getpid())
    time.sleep(seconds)
    record("end", n, os.getpid())


@app.job(queue="slow", timeout=1.0, retry=Retry(retries=0))
def runaway(n: int) -> None:
    record("runaway", n, os.getpid())
    time.sleep(30)


@app.job(queue="wedge", timeout=0.5, retry=Retry(retries=0))
def wedged(n: int) -> None:
    """Spins in C code that holds the GIL (no bytecode runs, so no signal handler and no other
    thread either), on its first delivery only."""
    record("wedged", n, os.getpid(), others_alive("wedged"))
    if current().delivery.delivery_count == 1:
        sum(itertools.repeat(1, 10**12))


@app.job(queue="wedge", timeout=0.5, retry=Retry(retries=0))
def stubborn(n: int) -> None:
    """Catches everything, its timeout's alarm included, and sleeps on; first delivery only."""
    record("stubborn", n, os.getpid())
    if current().delivery.delivery_count > 1:
        return
    end = time.monotonic() + 60
    while time.monotonic() < end:
        with contextlib.suppress(BaseException):  # the point: a job that swallows the alarm
            time.sleep(0.05)


@app.job(queue="work")
def hog(n: int, mb: int) -> None:
    _kept.append(bytearray(b"x" * (mb * 2**20)))
    record("hog", n, os.getpid())


@app.periodic(every=1, queue="periodic")
def tick() -> None:
    # Every tick carries its time (on transports without unique keys too).
    when = datetime.datetime.fromisoformat(current().envelope.headers["tick"])
    record("tick", round(when.timestamp()), os.getpid())


@app.job(queue="work")
def stages(n: int) -> None:
    for percent in (25, 50, 100):
        current().progress(percent, f"stage {percent}")
    record("stages", n, os.getpid())


@app.job(queue="work")
async def async_stages(n: int) -> None:
    current().progress(40, "halfway, nearly")
    await asyncio.sleep(0)
    record("async_stages", n, os.getpid())


@app.job(queue="slow")
def square(n: int, seconds: float = 0.0) -> int:
    record("square-start", n, os.getpid())
    time.sleep(seconds)
    record("square", n, os.getpid())
    return n * n


@app.job(queue="work")
def total(results: list[int], label: str) -> None:
    record("total", label, sum(results), len(results), os.getpid())
