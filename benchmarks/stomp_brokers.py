#!/usr/bin/env python3
"""Run the same STOMP workload against queueit, RabbitMQ and ActiveMQ in one sitting and compare.

Scenarios (1 KiB bodies, non-persistent, no receipts, auto ack; see benchmarks/README.md and
shared/reference/baselines.md for the incumbents' reference figures):

- S3a  queue, 1 producer / 1 consumer, as fast as possible       -> received msg/s
- S3b  queue, 4 producers / 4 consumers, as fast as possible     -> received msg/s
- S4   topic fan-out, 1 producer -> 10 subscribers               -> deliveries/s
- S5   queue at a fixed rate (default 2,000 msg/s), 1P/1C        -> send->deliver latency p50 / p99

Each round starts every broker fresh, one at a time, warms it up (not recorded) and runs the selected
scenarios with stompbench (shared/tools/stompbench, built here if missing). The broker order alternates
from round to round. Every stompbench call is bounded by --count/--duration plus a hard --timeout.
Each run appends stompbench's final JSON line (plus scenario/broker/round and host CPU accounting) to
OUT/stomp-runs.jsonl; at the end a markdown table gives median [min-max] per broker and the per-round
ratio queueit / best incumbent.

    python3 benchmarks/stomp_brokers.py                                   # all brokers, 3 rounds
    python3 benchmarks/stomp_brokers.py --brokers rabbitmq,activemq --quick --rounds 1
    python3 benchmarks/stomp_brokers.py --summarize OUT/stomp-runs.jsonl  # table from saved runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import brokers

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STOMPBENCH_SRC = REPO.parent / "shared" / "tools" / "stompbench"
DEFAULT_TARGET_DIR = Path(tempfile.gettempdir()) / "stompbench"
SCENARIO_NAMES: tuple[str, ...] = ("S3a", "S3b", "S4", "S5")
RUNS_FILE = "stomp-runs.jsonl"

Run = dict[str, Any]
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOISY_SHARE = 0.25  # other processes using more than this share of one core make a run "noisy"
DASH = "\u2013"  # en dash, for ranges in the markdown table
TIMES = "\u00d7"  # multiplication sign, for ratios


# --------------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Metric:
    label: str
    get: Callable[[Run], float | None]
    higher_is_better: bool
    ratio: bool = True  # include in the queueit / best-incumbent column


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    args: tuple[str, ...]
    timeout_s: int
    metrics: tuple[Metric, ...]


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _lat(key: str) -> Callable[[Run], float | None]:
    def get(run: Run) -> float | None:
        lat = run.get("lat_us")
        return _num(lat.get(key)) if isinstance(lat, dict) else None

    return get


def _field(key: str) -> Callable[[Run], float | None]:
    def get(run: Run) -> float | None:
        return _num(run.get(key))

    return get


def _broker_cpu_us_per_op(run: Run) -> float | None:
    cpu, sent, received = _num(run.get("broker_cpu_s")), _num(run.get("sent")), _num(run.get("received"))
    if cpu is None or sent is None or received is None or sent + received <= 0:
        return None
    return 1e6 * cpu / (sent + received)


CPU_METRIC = Metric("broker CPU µs per message op (send + delivery)", _broker_cpu_us_per_op, False)


def argv(*parts: str) -> tuple[str, ...]:
    """Command-line words: every part is split on whitespace (no quoting needed here)."""
    return tuple(word for part in parts for word in part.split())


@dataclass(frozen=True)
class Shape:
    """Sizes of one sitting: full (the baselines.md bounds) or --quick (a smoke run)."""

    quick: bool
    s5_rate: int
    s5_duration: int
    s5_persistent: bool
    size: int


def build_scenarios(shape: Shape) -> list[Scenario]:
    q = shape.quick
    common = argv(f"-s {shape.size} --idle-timeout {5 if q else 10}")
    fast = argv("--persistent off --confirm none --ack auto", *common)
    s3_count, s3_dur, s3_timeout = (50_000, 5, 60) if q else (300_000, 60, 300)
    s4_count, s4_dur, s4_timeout = (5_000, 5, 60) if q else (50_000, 60, 300)
    if shape.s5_persistent:
        s5_mode = argv("--persistent on --confirm window --window 64 --ack client-individual --prefetch 64")
        s5_desc = "persistent, receipts window 64, client-individual ack prefetch 64"
    else:
        s5_mode = argv("--persistent off --confirm none --ack auto")
        s5_desc = "non-persistent, no receipts, auto ack"
    received = Metric("received msg/s", _field("received_per_s"), True)
    sent = Metric("sent msg/s", _field("sent_per_s"), True)
    return [
        Scenario(
            "S3a",
            "queue, 1 producer / 1 consumer, non-persistent, no receipts, auto ack",
            argv(*fast, f"-p 1 -c 1 -n {s3_count} -d {s3_dur}"),
            s3_timeout,
            (received, sent, CPU_METRIC),
        ),
        Scenario(
            "S3b",
            "queue, 4 producers / 4 consumers, non-persistent, no receipts, auto ack",
            argv(*fast, f"-p 4 -c 4 -n {s3_count} -d {s3_dur}"),
            s3_timeout,
            (received, sent, CPU_METRIC),
        ),
        Scenario(
            "S4",
            "topic fan-out, 1 producer -> 10 subscribers, non-persistent, auto ack",
            argv("--dest /topic/stompbench-fan --fanout", *fast, f"-p 1 -c 10 -n {s4_count} -d {s4_dur}"),
            s4_timeout,
            (
                Metric("deliveries/s (all subscribers)", _field("received_per_s"), True),
                Metric("published msg/s", _field("sent_per_s"), True),
                CPU_METRIC,
            ),
        ),
        Scenario(
            "S5",
            f"queue at a fixed {shape.s5_rate:,} msg/s for {shape.s5_duration} s, 1P/1C, {s5_desc}",
            argv(*s5_mode, *common, f"-p 1 -c 1 --rate {shape.s5_rate} -d {shape.s5_duration}"),
            shape.s5_duration + 120,
            (
                Metric("latency p50 µs", _lat("p50"), False),
                Metric("latency p99 µs", _lat("p99"), False),
                Metric("latency max µs", _lat("max"), False, ratio=False),
                Metric("max producer schedule slip ms", _field("max_slip_ms"), False, ratio=False),
            ),
        ),
    ]


def warmup_runs(shape: Shape) -> list[tuple[tuple[str, ...], int]]:
    """Not recorded: ~100k messages 2P/2C (20k with --quick), as in baselines.md §3, plus 5k persistent
    messages with receipts when S5 is persistent (so the disk path is warm too)."""
    count = 20_000 if shape.quick else 100_000
    runs = [(argv(f"--persistent off --ack auto -p 2 -c 2 -n {count} -d 30"), 90)]
    if shape.s5_persistent:
        persistent = "--persistent on --confirm window --window 64 --ack client-individual --prefetch 64"
        runs.append((argv(persistent, "-n 5000 -d 30"), 90))
    return runs


# --------------------------------------------------------------------------------------------- stompbench


def common_args(ap: argparse.ArgumentParser) -> None:
    """The options every benchmark harness here shares (body size, broker, stompbench, output)."""
    ap.add_argument("--size", type=int, default=1024, help="body bytes (default 1024)")
    ap.add_argument("--port", type=int, default=brokers.DEFAULT_PORT, help="queueit's port (default 61613)")
    ap.add_argument("--repo", type=Path, default=REPO, help="queueit checkout with .venv (default: this one)")
    ap.add_argument("--subject", default="queueit", help="broker compared with the best other (queueit)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the unrecorded warm-up runs")
    ap.add_argument("--pause", type=float, default=2.0, help="seconds between runs (default 2)")
    ap.add_argument("--stompbench", type=Path, help="use this stompbench binary instead of building one")
    ap.add_argument(
        "--target-dir", type=Path, default=DEFAULT_TARGET_DIR, help="cargo --target-dir (default %(default)s)"
    )
    ap.add_argument("--summarize", type=Path, metavar="JSONL", help="only print the table for saved runs")


def parse_lists(ap: argparse.ArgumentParser, args: argparse.Namespace, scenario_names: Sequence[str]) -> None:
    """``--brokers`` and ``--scenarios`` (comma lists) into ``args.broker_list``/``scenario_list``."""
    args.broker_list = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = [b for b in args.broker_list if b not in brokers.BROKERS]
    if unknown or not args.broker_list or len(set(args.broker_list)) != len(args.broker_list):
        ap.error(f"--brokers: give distinct names among {', '.join(brokers.BROKERS)}")
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not args.scenario_list or any(s not in scenario_names for s in args.scenario_list):
        ap.error(f"--scenarios: choose among {', '.join(scenario_names)}")


def ensure_stompbench(explicit: Path | None, target_dir: Path) -> Path:
    """Path of a usable stompbench binary; builds it (cargo, offline) when missing or out of date."""
    if explicit is not None:
        if not os.access(explicit, os.X_OK):
            raise SystemExit(f"--stompbench {explicit}: not an executable file")
        return explicit
    binary = target_dir / "release" / "stompbench"
    manifest = STOMPBENCH_SRC / "Cargo.toml"
    sources = [manifest, STOMPBENCH_SRC / "Cargo.lock", *sorted((STOMPBENCH_SRC / "src").glob("*.rs"))]
    if binary.exists():
        built = binary.stat().st_mtime
        if all(not src.exists() or src.stat().st_mtime <= built for src in sources):
            return binary
    if not manifest.exists():
        if binary.exists():
            return binary
        raise SystemExit(f"stompbench sources not found at {STOMPBENCH_SRC} and no binary at {binary}")
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not os.access(cargo, os.X_OK):
        if binary.exists():
            print(f"!! cargo not found; using possibly stale {binary}", file=sys.stderr)
            return binary
        raise SystemExit("cargo not found: cannot build stompbench (or pass --stompbench PATH)")
    cmd = [cargo, *argv("build --release --offline --manifest-path"), str(manifest)]
    cmd += ["--target-dir", str(target_dir)]
    print(f"== building stompbench: {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, timeout=1200, check=False)
    if proc.returncode != 0 or not binary.exists():
        raise SystemExit(f"building stompbench failed (exit {proc.returncode})")
    return binary


def _cpu_times() -> list[int]:
    with open("/proc/stat", encoding="ascii") as f:
        return [int(x) for x in f.readline().split()[1:]]


def _cpu_delta(before: list[int], after: list[int]) -> dict[str, float]:
    d = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(d[:8]) or 1  # user nice system idle iowait irq softirq steal
    busy = total - d[3] - d[4]
    return {
        "host_busy_pct": round(100.0 * busy / total, 1),
        "host_iowait_pct": round(100.0 * d[4] / total, 1),
        "host_steal_pct": round(100.0 * d[7] / total, 1),
        "host_busy_cpu_s": round(busy / CLK_TCK, 2),
    }


PF_KTHREAD = 0x00200000
ProcTimes = dict[tuple[int, int], int]  # (pid, start time) -> utime + stime, in clock ticks


def _proc_times() -> ProcTimes:
    """CPU time of every process, from /proc/PID/stat (per-task accounting: unlike the host-wide
    counters of /proc/stat, it also catches bursty processes that are idle at every timer tick)."""
    times: ProcTimes = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # after the command: state(0) ppid(1) ... flags(6) ... utime(11) stime(12) ... starttime(19).
            # Kernel threads (softirq work for our own loopback traffic among others) are left out.
            # cutime/cstime are not used: a shell reaping a long job would count all of it at once.
            if int(fields[6]) & PF_KTHREAD:
                continue
            times[(int(entry), int(fields[19]))] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return times


def _other_cpu_s(before: ProcTimes, after: ProcTimes, exclude: Iterable[int]) -> float:
    """CPU seconds used between two snapshots by processes not in ``exclude`` nor this one. A lower
    bound: processes that exit before the second snapshot are missed."""
    skip = {os.getpid(), *exclude}
    ticks = 0
    for key, total in after.items():
        if key[0] not in skip:
            ticks += max(0, total - before.get(key, 0))
    return ticks / CLK_TCK


def busy_cores_now(seconds: float = 2.0) -> float:
    """CPU cores kept busy, on average over the next ``seconds``, by other processes on the machine."""
    before = _proc_times()
    time.sleep(seconds)
    return _other_cpu_s(before, _proc_times(), ()) / seconds


def other_cpu_share(run: Run) -> float | None:
    """Share of one core used during the run by processes other than stompbench and the broker."""
    other, wall = _num(run.get("other_cpu_s")), _num(run.get("wall_s"))
    return other / wall if other is not None and wall else None


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_stompbench(
    binary: Path, args: Sequence[str], broker: brokers.Running, timeout_s: int, label: str
) -> tuple[Run | None, str, list[str]]:
    """One bounded stompbench run; returns (parsed final JSON line or None, output, command)."""
    pids = [broker.pid]
    if broker.name == "queueit":  # count worker processes too, if queueit ever forks any
        pids += _descendants(broker.pid)
    cmd = [str(binary), *argv(f"--host {broker.host} --port {broker.port} --quiet"), *args]
    cmd += [*argv(f"--timeout {timeout_s} --broker-pid {','.join(map(str, pids))}"), "--label", label]
    before, procs_before = _cpu_times(), _proc_times()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 60, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return None, f"stompbench overran its own --timeout {timeout_s} s by 60 s; killed\n{out}", cmd
    after, procs_after = _cpu_times(), _proc_times()
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith('{"stompbench"')), None)
    if line is None:
        return None, proc.stdout + proc.stderr, cmd
    run: Run = json.loads(line)
    run.update(_cpu_delta(before, after))
    run["other_cpu_s"] = round(_other_cpu_s(procs_before, procs_after, [*pids, *_descendants(broker.pid)]), 2)
    run["rc"] = proc.returncode
    run["cmd"] = " ".join(cmd)
    return run, proc.stdout, cmd


# --------------------------------------------------------------------------------------------- summary


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _spread(values: Sequence[float], suffix: str = "") -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return f"{_fmt(med)}{suffix}"
    return f"{_fmt(med)}{suffix} [{_fmt(min(values))}{DASH}{_fmt(max(values))}]"


def run_ok(run: Run) -> bool:
    return bool(run.get("ok")) and run.get("rc") == 0


def _round_key(run: Run) -> tuple[str, int]:
    return str(run.get("sitting", "")), int(run.get("round", 0))


def _ratio_cell(runs: Sequence[Run], metric: Metric, subject: str) -> str:
    per_round: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for run in runs:
        value = metric.get(run)
        if value is not None and run_ok(run):
            per_round[_round_key(run)][str(run["broker"])] = value
    ratios: list[float] = []
    best_names: Counter[str] = Counter()
    for values in per_round.values():
        mine = values.get(subject)
        others = {name: v for name, v in values.items() if name != subject}
        if mine is None or not others:
            continue
        pick = max if metric.higher_is_better else min
        best = pick(others, key=lambda name: others[name])
        if others[best] <= 0:
            continue
        ratios.append(mine / others[best])
        best_names[best] += 1
    if not ratios:
        return "—"
    vs = ", ".join(f"{n} {TIMES}{c}" if len(best_names) > 1 else n for n, c in best_names.most_common())
    return f"{_spread(ratios, TIMES)} vs {vs}"


def render_table(
    runs: Sequence[Run], scenarios: Sequence[Scenario], names: Sequence[str], subject: str
) -> str:
    """Markdown: one row per scenario and metric, median [min-max] per broker, per-round ratio."""
    if not runs:
        return "(no runs recorded)\n"
    present = [n for n in names if any(r.get("broker") == n for r in runs)]
    extra = sorted({str(r.get("broker")) for r in runs} - set(present))
    cols = present + extra
    others = "incumbent" if subject == "queueit" else "other"
    lines = [
        f"| scenario | metric | {' | '.join(cols)} | {subject} / best {others}, per round |",
        "|---|---|" + "---|" * len(cols) + "---|",
    ]
    problems: list[str] = []
    for sc in scenarios:
        sc_runs = [r for r in runs if r.get("scenario") == sc.name]
        if not sc_runs:
            continue
        for i, metric in enumerate(sc.metrics):
            cells: list[str] = []
            for name in cols:
                mine = [r for r in sc_runs if r.get("broker") == name and run_ok(r)]
                values = [v for v in (metric.get(r) for r in mine) if v is not None]
                cells.append(_spread(values) if values else "—")
            ratio = _ratio_cell(sc_runs, metric, subject) if metric.ratio else ""
            lines.append(f"| {sc.name if i == 0 else ''} | {metric.label} | {' | '.join(cells)} | {ratio} |")
        for name in cols:
            bad = [r for r in sc_runs if r.get("broker") == name and not run_ok(r)]
            for r in bad:
                problems.append(
                    f"{sc.name} {name} round {r.get('round')}: rc {r.get('rc')}, sent {r.get('sent')}, "
                    f"received {r.get('received')}, missing {r.get('missing')}, duplicates "
                    f"{r.get('duplicates')}, unexpected {r.get('unexpected')}, errors {r.get('errors')} "
                    f"{(r.get('error_list') or [])[:2]} (left out of the table)"
                )
    out = "\n".join(lines) + "\n"
    noisy = [
        f"{r.get('scenario')} {r.get('broker')} r{r.get('round')} {100 * share:.0f}%"
        for r in runs
        if (share := other_cpu_share(r)) is not None and share > NOISY_SHARE
    ]
    if noisy:
        out += (
            f"\nNoisy runs (other processes used more than {100 * NOISY_SHARE:.0f}% of one core): "
            + ", ".join(noisy)
            + "\n"
        )
    counts = Counter(str(r.get("broker")) for r in runs if run_ok(r))
    out += "\nComplete runs (no message missing, duplicated or unexpected, no error): " + ", ".join(
        f"{n} {counts.get(n, 0)}" for n in cols
    )
    out += "\n"
    if problems:
        out += "\nIncomplete runs:\n" + "".join(f"- {p}\n" for p in problems)
    return out


def describe(scenarios: Iterable[Scenario]) -> str:
    return "".join(f"- {sc.name}: {sc.title}\n" for sc in scenarios)


def load_runs(path: Path) -> list[Run]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------------------------- main


def _versions(names: Sequence[str]) -> dict[str, str]:
    versions: dict[str, str] = {}
    pkgs = {"rabbitmq": "rabbitmq-server", "activemq": "activemq"}
    for name in names:
        if name in pkgs:
            cmd = ["dpkg-query", "-W", "-f=${Version}", pkgs[name]]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
            versions[name] = proc.stdout.strip() or "?"
        elif name == "queueit":
            cmd = ["git", "-C", str(REPO), "describe", "--always", "--dirty"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
            versions[name] = f"{proc.stdout.strip() or '(no commit yet)'} ({brokers.queueit_build()} build)"
    return versions


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", default="queueit,rabbitmq,activemq", help="comma list (%(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, broker order alternating (default 3)")
    ap.add_argument("--quick", action="store_true", help="short runs for a smoke test (not comparable)")
    ap.add_argument("--out", type=Path, help="directory for stomp-runs.jsonl (default: a new temp dir)")
    ap.add_argument("--scenarios", default=",".join(SCENARIO_NAMES), help="subset (default: %(default)s)")
    ap.add_argument("--s5-rate", type=int, default=2000, help="S5 fixed send rate, msg/s (default 2000)")
    ap.add_argument("--s5-duration", type=int, help="S5 duration, s (default 20; 3 with --quick)")
    ap.add_argument(
        "--s5-persistent",
        action="store_true",
        help="S5 as in baselines.md: persistent, receipts window 64, client-individual prefetch 64",
    )
    common_args(ap)
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    parse_lists(ap, args, SCENARIO_NAMES)
    if args.s5_duration is None:
        args.s5_duration = 3 if args.quick else 20
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    shape = Shape(args.quick, args.s5_rate, args.s5_duration, args.s5_persistent, args.size)
    scenarios = [sc for sc in build_scenarios(shape) if sc.name in args.scenario_list]

    if args.summarize is not None:
        runs = load_runs(args.summarize)
        print(render_table(runs, build_scenarios(shape), args.broker_list, args.subject))
        return 0

    names, skipped = brokers.available(args.broker_list, args.repo)
    if not names:
        print("!! no broker left to benchmark", file=sys.stderr)
        return 1

    binary = ensure_stompbench(args.stompbench, args.target_dir)
    out_dir: Path = args.out or Path(tempfile.mkdtemp(prefix="queueit-stomp-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    runs_path = out_dir / RUNS_FILE
    sitting = time.strftime("%Y%m%dT%H%M%S")
    meta: dict[str, object] = {
        "sitting": sitting,
        "argv": sys.argv,
        "brokers": names,
        "skipped": skipped,
        "versions": _versions(names),
        "quick": args.quick,
        "rounds": args.rounds,
        "scenarios": {sc.name: {"title": sc.title, "args": list(sc.args)} for sc in scenarios},
        "stompbench": str(binary),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(f"== sitting {sitting}: {', '.join(names)}; {args.rounds} round(s); raw runs -> {runs_path}")
    print(describe(scenarios), end="", flush=True)

    signal.signal(signal.SIGTERM, _on_sigterm)
    was = brokers.stop_all()
    if was:
        print(f"== stopped already running broker(s): {', '.join(was)}", flush=True)
    idle_check = busy_cores_now(2.0)
    meta["busy_cores_before_start"] = round(idle_check, 2)
    if idle_check > NOISY_SHARE:
        print(
            f"!! the machine is not idle: {100 * idle_check:.0f}% of one core busy before starting;"
            " expect noisy figures (see the 'noisy runs' note at the end)",
            flush=True,
        )
    (out_dir / f"meta-{sitting}.json").write_text(json.dumps(meta, indent=2) + "\n")

    failures: list[str] = []
    recorded: list[Run] = []
    pause = min(args.pause, 1.0) if args.quick else args.pause
    try:
        for rnd in range(1, args.rounds + 1):
            order = names if rnd % 2 == 1 else list(reversed(names))
            for name in order:
                port = args.port if name == "queueit" else brokers.INCUMBENT_PORT
                try:
                    broker = brokers.start(name, port, args.repo)
                except brokers.BrokerError as exc:
                    failures.append(f"round {rnd}: {name} did not start: {exc}")
                    print(f"!! round {rnd}: {name} did not start: {exc}", flush=True)
                    continue
                print(f"== round {rnd}: {name} pid {broker.pid} on {broker.host}:{broker.port}", flush=True)
                try:
                    if not args.no_warmup:
                        for wargs, wtimeout in warmup_runs(shape):
                            wrun, wout, _ = run_stompbench(binary, wargs, broker, wtimeout, "warmup")
                            if wrun is None or not run_ok(wrun):
                                print(f"   (warm-up incomplete: {wout.strip()[-300:]})", flush=True)
                    for sc in scenarios:
                        time.sleep(pause)
                        label = f"{sitting}/{name}/{sc.name}/r{rnd}"
                        run, out, cmd = run_stompbench(binary, sc.args, broker, sc.timeout_s, label)
                        if run is None:
                            failures.append(f"round {rnd}: {name} {sc.name}: no result")
                            print(f"!! {name} {sc.name}: no JSON result from {' '.join(cmd)}\n{out[-1500:]}")
                            continue
                        run.update(
                            {
                                "scenario": sc.name,
                                "broker": name,
                                "round": rnd,
                                "sitting": sitting,
                                "quick": args.quick,
                                "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            }
                        )
                        with open(runs_path, "a", encoding="utf-8") as f:
                            f.write(json.dumps(run) + "\n")
                        recorded.append(run)
                        print(progress_line(run), flush=True)
                finally:
                    brokers.stop(name)
                time.sleep(1.0 if args.quick else 3.0)
    finally:
        brokers.stop_all()

    print()
    note = " (--quick smoke run: not comparable)" if args.quick else ""
    print(f"## STOMP brokers, sitting {sitting}{note}\n")
    print(describe(scenarios))
    table = render_table(recorded, scenarios, names, args.subject)
    print(table)
    print(
        f"Cells: median [min{DASH}max] over rounds. Ratio: per round, the subject's value over the best"
        " other broker's in the same round (highest rate; lowest latency/CPU), then median"
        f" [min{DASH}max]; for latency and CPU rows below 1{TIMES} means the subject is better."
    )
    for name, reason in skipped.items():
        print(f"Skipped {name}: {reason}")
    for failure in failures:
        print(f"Failure: {failure}")
    print(f"Raw runs: {runs_path}" if recorded else f"No runs recorded (output directory {out_dir})")
    (out_dir / f"summary-{sitting}.md").write_text(table)
    if failures:
        return 1
    return 0 if all(run_ok(r) for r in recorded) else 2


def progress_line(run: Run) -> str:
    lat = run.get("lat_us") or {}
    cpu = run.get("broker_cpu_s")
    return (
        f"   {run['broker']:8s} {run['scenario']:4s} sent/s {run['sent_per_s']:>9,.0f} "
        f"recv/s {run['received_per_s']:>9,.0f} "
        f"p50 {lat.get('p50', 0):>9,.0f}µs p99 {lat.get('p99', 0):>9,.0f}µs "
        f"missing {run['missing']} dup {run['duplicates']} err {run['errors']} "
        f"broker-cpu {cpu if cpu is not None else '?'}s wall {run['wall_s']:.1f}s "
        f"host-busy {run['host_busy_pct']}% steal {run['host_steal_pct']}% "
        f"other-procs {100 * (other_cpu_share(run) or 0):.0f}%"
    )


if __name__ == "__main__":
    sys.exit(main())
