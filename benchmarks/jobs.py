#!/usr/bin/env python3
"""Job frameworks: queueit against Celery, Dramatiq, RQ, Huey and arq, in one sitting, measured alike.

The incumbents are measured by fwbench (``shared/tools/fwbench``, the harness behind the job-framework
figures of ``shared/reference/baselines.md``), called through its own command line from a writable copy
(``--fwbench-dir``, built there on first use: ``python3 -m venv`` + ``pip install --no-deps -r
requirements-lock.txt``). queueit is measured here by code that repeats fwbench's ``one_run`` step by
step (see :func:`one_run`), with the same counter, keys, defaults and the same idle-gap sequence:

1. reset: Redis ``FLUSHALL`` (on RabbitMQ: delete queueit's queue and its dead-letter queue;
   queueit's own broker is started fresh for every run, ``queueit serve`` on a random port with a
   temporary data directory and its default durability: persistent messages, fsync before the
   receipt);
2. one untimed warm-up send, then N no-op jobs sent one by one with the ordinary API
   (``noop.send()``), timed -> enqueue jobs/s;
3. start ``queueit worker jobs_app:app --processes 2 --concurrency C`` and poll the Redis counter
   (each job does one ``INCR``) every 5 ms until it reaches N+1 -> drain jobs/s, from spawning the
   workers and from the first to the last job;
4. with the workers idle, 50 times: sleep a random gap (uniform 0.2-1.0 s, the same seeded sequence
   as fwbench's), send one job whose body ``RPUSH``es ``time.time()`` when it starts, ``BLPOP`` it
   -> enqueue -> start latency;
5. SIGTERM to the worker's process group (SIGKILL after 20 s), one JSON line per run.

Total concurrency 2 = ``--processes 2 --concurrency 1`` (fwbench: ``celery -c 2``, ``dramatiq
--processes 2 --threads 1``, two RQ workers, ``huey_consumer -w 2``, two arq workers). queueit's
default ``--concurrency 8`` is a supplementary row, like fwbench's ``dramatiq-redis-t8``.
``queueit-queueit-inline`` (``--pool inline --concurrency 8``) also runs two jobs at once in all:
each process runs its sync jobs one at a time on its event loop, with 8 prefetched.

Runs are interleaved (run 1 of every framework, then run 2, ...; the order reversed every other
round) and each (framework, run) executes in a fresh child interpreter. Every run's JSON line is
appended to ``--out`` (default ``benchmarks/results/DATE-jobs.jsonl``); at the end a markdown table
gives median [min-max] per framework and, per round, queueit's ratio to the best incumbent.

    python3 benchmarks/jobs.py                                  # everything, 3 rounds (~50 min)
    python3 benchmarks/jobs.py --runs 1 --n 2000 --lat 10 --fw queueit-queueit,huey   # smoke
    python3 benchmarks/jobs.py --summarize benchmarks/results/2026-11-27-jobs.jsonl

Needs Redis on 127.0.0.1:6379 and, for the RabbitMQ rows, the Debian RabbitMQ on 127.0.0.1:5672
(``/etc/init.d/redis-server start`` and ``brokers.py start rabbitmq`` are run if they are not up;
both are left running).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import brokers
import stomp_brokers as sb

if TYPE_CHECKING:
    from jobs_app import Resp

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
FWBENCH_SRC = REPO.parent / "shared" / "tools" / "fwbench"
DEFAULT_FWBENCH_DIR = Path(tempfile.gettempdir()) / "fwbench"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_INIT = Path("/etc/init.d/redis-server")
QUEUE = "qbench"
DASH, TIMES = sb.DASH, sb.TIMES
Run = dict[str, Any]

#: fwbench's combinations, in its order; the goals compare queueit with the best of these.
INCUMBENTS: tuple[str, ...] = (
    "celery-rabbitmq",
    "celery-redis",
    "dramatiq-rabbitmq",
    "dramatiq-redis",
    "rq",
    "huey",
    "arq",
)
#: fwbench's supplementary row: Dramatiq+Redis with its default 8 threads per process.
SUPPLEMENTARY_INCUMBENTS: tuple[str, ...] = ("dramatiq-redis-t8",)

#: What a job's delivery guarantee is in the configuration fwbench runs (its apps' defaults).
DELIVERY: dict[str, str] = {
    "celery-rabbitmq": "acks early (Celery's default; at-least-once needs task_acks_late), durable queue, "
    "persistent messages, no publisher confirms",
    "celery-redis": "acks early (Celery's default), Redis without fsync",
    "dramatiq-rabbitmq": "acks after the actor ran (its default), durable queue, persistent messages, "
    "no publisher confirms",
    "dramatiq-redis": "acks after the actor ran (its default; unacked messages of dead workers requeued), "
    "Redis without fsync",
    "dramatiq-redis-t8": "as dramatiq-redis",
    "rq": "no redelivery: a job whose worker died is moved to the FailedJobRegistry; Redis without fsync",
    "huey": "at most once: BRPOP removes the job before it runs; Redis without fsync",
    "arq": "at least once (job stays queued until done; re-run after the in-progress timeout), "
    "Redis without fsync",
    "queueit-queueit": "acks after the job returned; send returns after the broker's journal fsync",
    "queueit-queueit-c8": "as queueit-queueit",
    "queueit-queueit-inline": "as queueit-queueit",
    "queueit-rabbitmq": "acks after the job returned; quorum queue, send returns on the publisher confirm",
    "queueit-rabbitmq-c8": "as queueit-rabbitmq",
    "queueit-rabbitmq-classic": "acks after the job returned; classic durable queue, publisher confirms",
}


@dataclass(frozen=True)
class Setup:
    """One queueit configuration measured by this script."""

    broker: str  # "queueit" (queueit serve) or "rabbitmq"
    concurrency: int
    supplementary: bool = False
    amqp_query: str = ""
    pool: str = "threads"  # --pool: "inline" runs one sync job at a time per process


QUEUEIT: dict[str, Setup] = {
    "queueit-queueit": Setup("queueit", 1),
    "queueit-rabbitmq": Setup("rabbitmq", 1),
    "queueit-queueit-c8": Setup("queueit", 8, supplementary=True),
    # Two sync jobs at once in all, as the headline rows, each process prefetching 8.
    "queueit-queueit-inline": Setup("queueit", 8, pool="inline"),
    "queueit-rabbitmq-c8": Setup("rabbitmq", 8, supplementary=True),
    "queueit-rabbitmq-classic": Setup("rabbitmq", 1, supplementary=True, amqp_query="?queue_type=classic"),
}
ALL = (*INCUMBENTS, *SUPPLEMENTARY_INCUMBENTS, *QUEUEIT)
DEFAULT_FWS = ALL


def worker_command(setup: Setup) -> list[str]:
    return ["queueit", "worker", "jobs_app:app", "--processes", "2", "--concurrency", str(setup.concurrency),
            "--pool", setup.pool]  # fmt: skip


# --------------------------------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_cpu_s(pid: int) -> float | None:
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / sb.CLK_TCK


def tree_cpu_s(root: int) -> tuple[float, list[int]]:
    """utime+stime (+ reaped children's) of ``root`` and all its descendants, and their pids.

    fwbench sums its workers' process groups; queueit's supervisor starts each worker process in
    a session of its own, so the tree is followed instead."""
    pids = [root, *sb._descendants(root)]
    total = 0.0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += sum(int(x) for x in fields[11:15]) / sb.CLK_TCK
    return total, pids


def broker_pids(queueit_pid: int | None = None) -> dict[str, int]:
    """Redis, the Debian RabbitMQ (beam.smp of user rabbitmq) and the queueit broker of this run."""
    found: dict[str, int] = {}
    redis = brokers._pids_by_comm("redis-server", brokers._uid_of("redis"))
    if redis:
        found["redis"] = redis[0]
    rabbit = system_rabbitmq_pid()
    if rabbit is not None:
        found["rabbitmq"] = rabbit
    if queueit_pid is not None:
        found["queueit"] = queueit_pid
    return found


def system_rabbitmq_pid() -> int | None:
    """The Debian node's beam.smp (user rabbitmq, home /var/lib/rabbitmq); test nodes started by other
    tools (their own home and ports) are not it."""
    uid = brokers._uid_of("rabbitmq")
    for pid in brokers._pids_by_comm("beam.smp", uid) if uid is not None else []:
        cmd = brokers._cmdline(pid)
        if "/var/lib/rabbitmq" in cmd and "-home" in cmd:
            return pid
    return None


# --------------------------------------------------------------------------------------------- child


def _amqp_reset(url: str, queues: Sequence[str]) -> None:
    import aio_pika

    async def go() -> None:
        connection = await aio_pika.connect(url)
        try:
            for name in queues:
                channel = await connection.channel()
                with contextlib.suppress(aio_pika.exceptions.AMQPError):
                    await channel.queue_delete(name)
                with contextlib.suppress(aio_pika.exceptions.AMQPError):
                    await channel.close()
        finally:
            await connection.close()

    asyncio.run(go())


def _start_workers(setup: Setup, url: str, logf: Any, log_level: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, QUEUEIT_BENCH_URL=url, QUEUEIT_BENCH_QUEUE=QUEUE, QUEUEIT_LOG_LEVEL=log_level)
    venv_bin = Path(sys.executable).parent
    cmd = worker_command(setup)
    # `timeout` bounds the workers' life even if this harness dies (as in fwbench)
    return subprocess.Popen(
        ["timeout", "-s", "TERM", "-k", "10", "900", str(venv_bin / cmd[0]), *cmd[1:]],
        cwd=HERE,
        env=env,
        stdout=logf,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop_workers(proc: subprocess.Popen[bytes], pids: Sequence[int]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # the supervisor forwards it to its worker processes
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    for pid in {proc.pid, *pids}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # each worker process leads a group of its own
    if proc.poll() is None:
        proc.wait(timeout=10)


def lat_samples(
    send: Callable[[], object], r: Resp, nlat: int, gap: tuple[float, float], seed: int
) -> list[float]:
    """fwbench's ``lat_samples``: ``nlat`` single jobs, each after an idle gap; ms from send to body start."""
    from jobs_app import LAT_KEY

    rng = random.Random(seed)
    lats: list[float] = []
    time.sleep(1.0)
    for _ in range(nlat):
        time.sleep(rng.uniform(*gap))
        t0 = time.time()
        send()
        got = r.blpop(LAT_KEY, 30)
        if got is None:
            break
        lats.append((float(got) - t0) * 1000.0)
    return lats


def one_run(fw: str, args: argparse.Namespace) -> Run:
    """One (framework, run) of queueit, as fwbench's ``one_run`` does it for the others."""
    setup = QUEUEIT[fw]
    os.environ["QUEUEIT_BENCH_URL"] = args.url
    os.environ["QUEUEIT_BENCH_QUEUE"] = QUEUE
    sys.path.insert(0, str(HERE))
    import jobs_app

    from queueit.compiled import build_name

    r = jobs_app.Resp()
    r.flushall()
    if setup.broker == "rabbitmq":
        _amqp_reset(args.url, [QUEUE, f"DLQ.{QUEUE}"])
    n, total = args.n, args.n + 1
    # warm the enqueue path (connection set-up, imports) with one job, not timed
    jobs_app.noop.send()
    t0 = time.perf_counter()
    for _ in range(n):
        jobs_app.noop.send()
    enq_s = time.perf_counter() - t0
    bp = broker_pids(args.broker_pid or None)
    bcpu0 = {k: pid_cpu_s(v) for k, v in bp.items()}
    logdir = Path(args.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    with open(logdir / f"{fw}-run{args.run_no}.log", "w") as logf:
        t_spawn = time.perf_counter()
        proc = _start_workers(setup, args.url, logf, args.worker_log_level)
        t_first: float | None = None
        t_done: float | None = None
        deadline = t_spawn + 600
        last = 0
        err: str | None = None
        t_progress = t_spawn
        while time.perf_counter() < deadline:
            c = r.get_int(jobs_app.COUNT_KEY)
            now = time.perf_counter()
            if c > 0 and t_first is None:
                t_first = now
            if c != last:
                t_progress = now
            elif now - t_progress > 60:
                err = f"no progress for 60 s at {c}/{total}"
                break
            if c >= total:
                t_done = now
                break
            if proc.poll() is not None:
                err = "the worker supervisor exited early"
                break
            last = c
            time.sleep(0.005)
        count = r.get_int(jobs_app.COUNT_KEY)
        if t_done is None and err is None:
            err = f"drain timeout with {count}/{total}"
        wcpu, wpids = tree_cpu_s(proc.pid)
        bcpu: dict[str, float | None] = {}
        for k, v in bp.items():
            now_cpu, before = pid_cpu_s(v), bcpu0.get(k)
            bcpu[k] = now_cpu - before if now_cpu is not None and before is not None else None
        lats: list[float] = []
        if err is None:
            lats = lat_samples(jobs_app.lat.send, r, args.lat, args.gap, args.seed)
            if len(lats) < args.lat:
                err = f"latency job {len(lats)} did not run within 30 s"
        _stop_workers(proc, wpids)
    jobs_app.app.close()
    r.close()
    res = result(fw, args, enq_s, count, total, err, t_done, t_spawn, t_first, wcpu, bcpu, lats)
    res["workers"] = [" ".join(worker_command(setup))]
    res["url"] = args.url
    res["queueit_module"] = sys.modules["queueit"].__file__
    res["queueit_build"] = build_name()
    return res


def result(
    fw: str,
    args: argparse.Namespace,
    enq_s: float,
    count: int,
    total: int,
    err: str | None,
    t_done: float | None,
    t_spawn: float,
    t_first: float | None,
    wcpu: float,
    bcpu: dict[str, float | None],
    lats: list[float],
) -> Run:
    """fwbench's result fields (same names, same rounding), plus p99 and the raw latencies."""
    n = args.n
    srt = sorted(lats)
    return {
        "fw": fw,
        "run": args.run_no,
        "n": n,
        "enqueue_s": round(enq_s, 4),
        "enqueue_per_s": round(n / enq_s, 1),
        "count": count,
        "expected": total,
        "ok": err is None and count == total,
        "lat_gap_s": list(args.gap),
        "drain_wall_s": round(t_done - t_spawn, 4) if t_done else None,
        "drain_wall_per_s": round(total / (t_done - t_spawn), 1) if t_done else None,
        "drain_steady_s": round(t_done - t_first, 4) if t_done and t_first else None,
        "drain_steady_per_s": round((total - 1) / (t_done - t_first), 1)
        if t_done and t_first and t_done > t_first
        else None,
        "startup_to_first_job_s": round(t_first - t_spawn, 3) if t_first else None,
        "worker_cpu_s": round(wcpu, 2),
        "broker_cpu_s": {k: (round(v, 2) if v is not None else None) for k, v in bcpu.items()},
        "lat_ms_p50": round(statistics.median(lats), 3) if lats else None,
        "lat_ms_p90": round(srt[int(0.9 * (len(srt) - 1))], 3) if lats else None,
        "lat_ms_p99": round(p99(srt), 3) if lats else None,
        "lat_ms_max": round(max(lats), 3) if lats else None,
        "lat_ms_min": round(min(lats), 3) if lats else None,
        "lat_n": len(lats),
        "lat_ms": [round(x, 3) for x in lats],
        "error": err,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def p99(sorted_values: Sequence[float]) -> float:
    """Nearest-rank 99th percentile: with 50 samples (up to 100), the slowest one."""
    rank = max(1, -(-99 * len(sorted_values) // 100))
    return sorted_values[rank - 1]


# --------------------------------------------------------------------------------------------- fwbench


def fwbench_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for rel in ["fwbench.py", *sorted(p.name for p in (directory / "fwbench_apps").glob("*.py"))]:
        path = directory / rel if rel == "fwbench.py" else directory / "fwbench_apps" / rel
        digest.update(rel.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_fwbench(directory: Path) -> Path:
    """A writable copy of shared/tools/fwbench with its venv; returns its python. The copy must be
    identical to the reference (fwbench.py and its apps), or the harness stops."""
    python = directory / ".venv" / "bin" / "python"
    if not (directory / "fwbench.py").exists():
        if not FWBENCH_SRC.exists():
            raise SystemExit(f"fwbench not found at {FWBENCH_SRC} nor {directory}")
        print(f"== copying {FWBENCH_SRC} -> {directory}", flush=True)
        shutil.copytree(FWBENCH_SRC, directory, dirs_exist_ok=True)
        for path in [directory, *directory.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    if FWBENCH_SRC.exists() and fwbench_hash(directory) != fwbench_hash(FWBENCH_SRC):
        raise SystemExit(f"{directory} differs from the reference {FWBENCH_SRC}: copy it again")
    if not python.exists():
        print(f"== building {directory}/.venv (pip install --no-deps -r requirements-lock.txt)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(directory / ".venv")], check=True, timeout=300)
        pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "-r", "requirements-lock.txt"]
        subprocess.run(pip, cwd=directory, check=True, timeout=1200)
    return python


def run_fwbench(fw: str, run_no: int, args: argparse.Namespace, python: Path, tmp: Path) -> Run | None:
    """One fwbench run of one combination, through its command line; its JSON line, or None."""
    out = tmp / f"fw-{fw}-r{run_no}.jsonl"
    out.unlink(missing_ok=True)
    cmd = [str(python), "fwbench.py", "--fw", fw, "--runs", "1", "--n", str(args.n), "--lat", str(args.lat)]
    cmd += ["--lat-gap", args.lat_gap, "--out", str(out), "--logdir", str(tmp / "logs")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # --queueit-src is for queueit only
    proc = subprocess.run(
        cmd, cwd=args.fwbench_dir, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    if not out.exists():
        print(f"!! fwbench {fw}: no result (rc {proc.returncode})\n{proc.stdout[-1500:]}")
        print(proc.stderr[-1500:])
        return None
    lines = [ln for ln in out.read_text().splitlines() if ln.strip()]
    res: Run = json.loads(lines[-1])
    res["fwbench_run"] = res.get("run")
    res["cmd"] = " ".join(cmd[1:])
    return res


# --------------------------------------------------------------------------------------------- driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_queueit(fw: str, run_no: int, args: argparse.Namespace, tmp: Path, seed: int) -> Run | None:
    setup = QUEUEIT[fw]
    python = args.repo / ".venv" / "bin" / "python"
    broker: brokers.Running | None = None
    if setup.broker == "queueit":
        broker = brokers._start_queueit(free_port(), args.repo, brokers.START_TIMEOUT_S)
        url = f"queueit://{broker.host}:{broker.port}"
    else:
        url = AMQP_URL + setup.amqp_query
    cmd = [str(python), str(HERE / "jobs.py"), "--single", fw, "--run-no", str(run_no), "--url", url]
    cmd += ["--n", str(args.n), "--lat", str(args.lat), "--lat-gap", args.lat_gap, "--seed", str(seed)]
    cmd += ["--logdir", str(tmp / "logs"), "--worker-log-level", args.worker_log_level]
    if broker is not None:
        cmd += ["--broker-pid", str(broker.pid)]
    try:
        # The child (producer) and its workers run the build QUEUEIT_BUILD picks, as the broker does.
        env = brokers.queueit_env(args.repo)
        proc = subprocess.run(
            cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=1500, check=False
        )
    finally:
        if broker is not None:
            brokers.stop("queueit")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("FWBENCH_JSON ")), None)
    if line is None:
        print(f"!! {fw} run {run_no}: child failed rc={proc.returncode}\n{proc.stdout[-2000:]}")
        print(proc.stderr[-3000:])
        return None
    res: Run = json.loads(line[len("FWBENCH_JSON ") :])
    res["cmd"] = " ".join(cmd[1:])
    return res


def progress_line(res: Run) -> str:
    return (
        f"{res['fw']:24s} run {res['run']}: enqueue {res['enqueue_per_s'] or 0:8.0f}/s  drain(steady) "
        f"{res['drain_steady_per_s']}/s  drain(wall) {res['drain_wall_per_s']}/s  first-job "
        f"{res['startup_to_first_job_s']}s  lat p50 {res['lat_ms_p50']} ms p90 {res['lat_ms_p90']} ms "
        f"p99 {res.get('lat_ms_p99')} ms  count {res['count']}/{res['expected']}  "
        f"wcpu {res['worker_cpu_s']}s "
        f"bcpu {res['broker_cpu_s']}  other-procs {100 * (res.get('other_cores') or 0):.0f}%"
        + (f"  ERROR {res['error']}" if res.get("error") else "")
    )


def ensure_services(fws: Sequence[str]) -> None:
    if not brokers._pids_by_comm("redis-server", None):
        if REDIS_INIT.exists():
            print(f"== starting Redis ({REDIS_INIT} start)", flush=True)
            subprocess.run([str(REDIS_INIT), "start"], capture_output=True, timeout=60, check=False)
            time.sleep(1.0)
        if not brokers._pids_by_comm("redis-server", None):
            raise SystemExit("Redis is not running on 127.0.0.1:6379 (apt-get install -y redis-server)")
    if any("rabbitmq" in fw for fw in fws) and system_rabbitmq_pid() is None:
        print("== starting RabbitMQ (benchmarks/brokers.py)", flush=True)
        brokers.start("rabbitmq")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.single:
        print("FWBENCH_JSON " + json.dumps(one_run(args.single, args)), flush=True)
        return 0
    if args.summarize is not None:
        print(render(sb.load_runs(args.summarize)))
        return 0

    fws: list[str] = args.fw_list
    incumbents = [fw for fw in fws if fw not in QUEUEIT]
    fw_python = ensure_fwbench(args.fwbench_dir) if incumbents else None
    if args.queueit_src is not None:
        # queueit's broker, the enqueuing child and the workers inherit it (PYTHONPATH comes
        # before the venv's editable install of the checkout)
        os.environ["PYTHONPATH"] = str(args.queueit_src.resolve())
        os.environ["QUEUEIT_BUILD"] = "pure"  # that tree as it is, not build/compiled
    if any(fw in QUEUEIT for fw in fws) and brokers.queueit_build() == "compiled":
        problem = brokers.compiled_build_problem(args.repo)
        if problem is not None:
            print(f"!! queueit: {problem}")
            return 1
    ensure_services(fws)
    sitting = time.strftime("%Y%m%dT%H%M%S")
    out: Path = args.out or RESULTS_DIR / f"{time.strftime('%Y-%m-%d')}-jobs.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="queueit-jobs-bench-"))
    meta = {
        "sitting": sitting,
        "argv": sys.argv,
        "fws": fws,
        "fwbench": str(args.fwbench_dir),
        "fwbench_hash": fwbench_hash(args.fwbench_dir) if incumbents else None,
        "queueit": sb._versions(["queueit"]).get("queueit"),
        "queueit_build": brokers.queueit_build(),
        "queueit_src": str(args.queueit_src) if args.queueit_src else None,
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "busy_cores_before_start": round(sb.busy_cores_now(2.0), 2),
    }
    print(f"== sitting {sitting}: {', '.join(fws)}; {args.runs} run(s); N={args.n}; raw runs -> {out}")
    print(f"== logs in {tmp}/logs; {json.dumps(meta)}", flush=True)
    signal.signal(signal.SIGTERM, sb._on_sigterm)
    recorded: list[Run] = []
    failures = 0
    for run_no in range(1, args.runs + 1):
        order = fws if run_no % 2 == 1 else list(reversed(fws))
        for fw in order:
            procs_before = sb._proc_times()
            t0 = time.monotonic()
            res: Run | None
            if fw in QUEUEIT:
                res = run_queueit(fw, run_no, args, tmp, seed=1000 + 1)
            else:
                assert fw_python is not None
                res = run_fwbench(fw, run_no, args, fw_python, tmp)
            wall = time.monotonic() - t0
            if res is None:
                failures += 1
                continue
            exclude = [*broker_pids().values(), *brokers._pids_by_comm("epmd", brokers._uid_of("rabbitmq"))]
            other = sb._other_cpu_s(procs_before, sb._proc_times(), exclude)
            res.update(
                {
                    "run": run_no,
                    "sitting": sitting,
                    "source": "fwbench" if fw not in QUEUEIT else "jobs.py",
                    "other_cpu_s": round(other, 2),
                    "other_cores": round(other / wall, 3) if wall > 0 else None,
                    "run_wall_s": round(wall, 1),
                    "delivery": DELIVERY.get(fw),
                }
            )
            if res.get("lat_ms_p99") is None and res.get("lat_n") and res["lat_n"] <= 100:
                res["lat_ms_p99"] = res.get("lat_ms_max")  # nearest-rank p99 of <= 100 samples
            with open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps(res) + "\n")
            recorded.append(res)
            print(progress_line(res), flush=True)
            time.sleep(args.pause)
    print()
    print(f"## Job frameworks, sitting {sitting} (N={args.n}, {args.lat} latency samples)\n")
    print(render(recorded))
    print(f"Raw runs: {out}")
    return 1 if failures else (0 if all(r.get("ok") for r in recorded) else 2)


# --------------------------------------------------------------------------------------------- table


def _values(runs: Sequence[Run], key: str) -> list[float]:
    return [float(r[key]) for r in runs if r.get("ok") and isinstance(r.get(key), int | float)]


def _cell(runs: Sequence[Run], key: str, scale: float = 1.0) -> str:
    values = [v * scale for v in _values(runs, key)]
    return sb._spread(values) if values else "—"


def _cpu_per_job_ms(run: Run) -> float | None:
    cpu, count = run.get("worker_cpu_s"), run.get("count")
    if isinstance(cpu, int | float) and isinstance(count, int) and count > 0:
        return 1000.0 * cpu / count
    return None


METRICS: tuple[tuple[str, str, bool], ...] = (
    ("enqueue jobs/s", "enqueue_per_s", True),
    ("drain jobs/s (first→last job)", "drain_steady_per_s", True),
    ("latency p50 ms", "lat_ms_p50", False),
    ("latency p99 ms", "lat_ms_p99", False),
)
GOALS: dict[str, tuple[float, bool]] = {"drain_steady_per_s": (2.0, True), "lat_ms_p50": (0.5, False)}


def ratios(runs: Sequence[Run], subject: str, against: Sequence[str], key: str, higher: bool) -> str:
    """Per round: the subject's value over the best of ``against`` in that round; median [min-max]."""
    by_round: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for r in runs:
        value = r.get(key)
        if r.get("ok") and isinstance(value, int | float):
            by_round[(str(r.get("sitting")), int(r["run"]))][str(r["fw"])] = float(value)
    found: list[float] = []
    best_names: list[str] = []
    for values in by_round.values():
        others = {fw: v for fw, v in values.items() if fw in against}
        if subject not in values or not others:
            continue
        best = (max if higher else min)(others, key=lambda fw: others[fw])
        if others[best] > 0:
            found.append(values[subject] / others[best])
            best_names.append(best)
    if not found:
        return "—"
    names = sorted(set(best_names), key=best_names.count, reverse=True)
    return f"{sb._spread(found, TIMES)} vs {'/'.join(names)}"


def render(runs: Sequence[Run]) -> str:
    if not runs:
        return "(no runs recorded)\n"
    present = [fw for fw in ALL if any(r.get("fw") == fw for r in runs)]
    lines = [
        "| framework + broker | runs ok | enqueue jobs/s | drain jobs/s (first→last job) | drain jobs/s incl."
        " worker start | latency p50 ms | p90 ms | p99 ms | worker CPU ms/job |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fw in present:
        mine = [r for r in runs if r.get("fw") == fw]
        ok = sum(1 for r in mine if r.get("ok"))
        cpu = [v for v in (_cpu_per_job_ms(r) for r in mine if r.get("ok")) if v is not None]
        lines.append(
            f"| {fw} | {ok}/{len(mine)} | {_cell(mine, 'enqueue_per_s')} | "
            f"{_cell(mine, 'drain_steady_per_s')} | {_cell(mine, 'drain_wall_per_s')} | "
            f"{_cell(mine, 'lat_ms_p50')} | {_cell(mine, 'lat_ms_p90')} | "
            f"{_cell(mine, 'lat_ms_p99')} | {sb._spread(cpu) if cpu else '—'} |"
        )
    out = "\n".join(lines) + "\n"
    headline = [fw for fw in INCUMBENTS if fw in present]
    everyone = [fw for fw in (*INCUMBENTS, *SUPPLEMENTARY_INCUMBENTS) if fw in present]
    subjects = [fw for fw in QUEUEIT if fw in present]
    if subjects and headline:
        out += (
            "\nRatios, per round: queueit's value over the best incumbent's in the same round"
            f" (headline rows: the {len(headline)} fwbench combinations at total concurrency 2;"
            " supplementary queueit rows also against dramatiq-redis-t8)."
            f" Goals: drain ≥ 2{TIMES}, p50 ≤ 0.5{TIMES}.\n\n"
        )
        out += "| queueit row | " + " | ".join(label for label, _, _ in METRICS) + " |\n"
        out += "|---|" + "---|" * len(METRICS) + "\n"
        for fw in subjects:
            against = everyone if QUEUEIT[fw].supplementary else headline
            cells = []
            for _, key, higher in METRICS:
                cell = ratios(runs, fw, against, key, higher)
                goal = GOALS.get(key)
                if goal is not None and cell != "—":
                    value = float(cell.split(TIMES)[0].replace(",", ""))
                    met = value >= goal[0] if goal[1] else value <= goal[0]
                    cell += f" ({'goal met' if met else 'goal missed'})"
                cells.append(cell)
            out += f"| {fw} | " + " | ".join(cells) + " |\n"
    noisy = [
        f"{r['fw']} r{r['run']} {100 * r['other_cores']:.0f}%"
        for r in runs
        if isinstance(r.get("other_cores"), int | float) and r["other_cores"] > sb.NOISY_SHARE
    ]
    if noisy:
        out += (
            f"\nNoisy runs (other processes used more than {100 * sb.NOISY_SHARE:.0f}% of one core"
            " on average): " + ", ".join(noisy) + "\n"
        )
    errors = [f"- {r['fw']} run {r['run']}: {r['error']}" for r in runs if r.get("error")]
    if errors:
        out += "\nFailed runs (left out):\n" + "\n".join(errors) + "\n"
    return out


# --------------------------------------------------------------------------------------------- args


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fw", default=",".join(DEFAULT_FWS), help=f"comma list among {', '.join(ALL)}")
    ap.add_argument("--n", type=int, default=20000, help="no-op jobs per run (default 20000, as fwbench)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each framework, interleaved (default 3)")
    ap.add_argument("--lat", type=int, default=50, help="idle-latency samples per run (default 50)")
    ap.add_argument("--lat-gap", default="0.2,1.0", help="idle gap before each latency job, uniform a,b s")
    ap.add_argument("--out", type=Path, help="JSON lines (default benchmarks/results/DATE-jobs.jsonl)")
    ap.add_argument("--fwbench-dir", type=Path, default=DEFAULT_FWBENCH_DIR, help="writable fwbench copy")
    ap.add_argument(
        "--worker-log-level",
        default="WARNING",
        help="QUEUEIT_LOG_LEVEL of queueit's worker processes (default WARNING, as fwbench runs Celery"
        " with -l WARNING and RQ/Huey with -q; INFO logs one line per job)",
    )
    ap.add_argument("--pause", type=float, default=2.0, help="seconds between runs (default 2)")
    ap.add_argument("--repo", type=Path, default=REPO, help="queueit checkout with .venv (default: this one)")
    ap.add_argument("--summarize", type=Path, metavar="JSONL", help="only print the table for saved runs")
    ap.add_argument(
        "--queueit-src",
        type=Path,
        help="run queueit from this src/ directory (e.g. a `git archive COMMIT src` extract), so that a"
        " sitting measures one fixed version while the checkout changes; QUEUEIT_BUILD is then ignored",
    )
    # child mode (one queueit run in a fresh interpreter of the queueit venv)
    ap.add_argument("--single", default="", help=argparse.SUPPRESS)
    ap.add_argument("--run-no", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--url", default="", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=1001, help=argparse.SUPPRESS)
    ap.add_argument("--broker-pid", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument(
        "--logdir", default=str(Path(tempfile.gettempdir()) / "queueit-jobs-logs"), help=argparse.SUPPRESS
    )
    args = ap.parse_args(argv)
    args.gap = tuple(float(x) for x in args.lat_gap.split(","))
    args.fw_list = [fw.strip() for fw in args.fw.split(",") if fw.strip()]
    unknown = [fw for fw in args.fw_list if fw not in ALL]
    if unknown:
        ap.error(f"--fw: unknown {', '.join(unknown)}; choose among {', '.join(ALL)}")
    if args.single and args.single not in QUEUEIT:
        ap.error("--single takes a queueit row")
    return args


if __name__ == "__main__":
    sys.exit(main())
