"""``scripts/soak-crash``: the kill loop of ``test_broker_kill`` for as long as you like.

Runs rounds of the kill loop (:func:`tests.crash.load.run_kill_loop`) on one data dir:
each round kills the broker ``--round`` times under load, drains the queues, stops the
broker cleanly and checks every promise; the next round goes on with the same data dir
(its journal keeps growing and being reused). Stops after ``--kills`` kills or
``--duration`` seconds, whichever comes first, or at the first round with a violation.
Exit status: 0 if every round passed, 1 if not.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .conftest import SEED_ENV, pick_seed
from .load import run_kill_loop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/soak-crash", description=__doc__.split("\n\n")[1])
    p.add_argument("--kills", type=int, default=1000, help="kills in all (default 1000)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--round", type=int, default=100, help="kills per round, between checks (default 100)")
    p.add_argument("--seed", type=int, default=None, help=f"seed of round 1 (default: ${SEED_ENV} or random)")
    p.add_argument("--dir", type=Path, default=None, help="data dir and logs here (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir even when every round passed")
    p.add_argument("-v", "--verbose", action="store_true", help="print a line per kill")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else pick_seed()
    base = args.dir or Path(tempfile.mkdtemp(prefix="queueit-soak-"))
    deadline = None if args.duration is None else time.monotonic() + args.duration
    print(f"soak-crash: seed {seed}, up to {args.kills} kills, {args.round} per round, in {base}", flush=True)
    started = time.monotonic()
    kills = rounds = failed = 0
    totals: dict[str, int] = {}
    while kills < args.kills and (deadline is None or time.monotonic() < deadline):
        round_seed = seed + rounds
        n = min(args.round, args.kills - kills)
        progress = (lambda line: print("  " + line, flush=True)) if args.verbose else None
        report = run_kill_loop(
            base / "data", base / f"logs-{rounds}", round_seed, n, deadline=deadline, progress=progress
        )
        rounds += 1
        kills += report.kills
        for name, value in report.verdict.counts.items():
            totals[name] = totals.get(name, 0) + value
        print(f"round {rounds}: {report.summary()}", flush=True)
        if not report.ok:
            failed += 1
            print(report.verdict.details(), flush=True)
            print(f"replay this round's plan: scripts/soak-crash --seed {round_seed} --round {n} --kills {n}")
            break
    elapsed = time.monotonic() - started
    print(
        f"soak-crash summary: {'FAILED' if failed else 'ok'}: {kills} kills in {rounds} rounds, "
        f"{elapsed:.0f} s, seed {seed}; " + ", ".join(f"{k}={v}" for k, v in totals.items()),
        flush=True,
    )
    if failed or args.keep or args.dir is not None:
        print(f"data dir and broker logs kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
