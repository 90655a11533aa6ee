#!/usr/bin/env python3
"""Persistent messaging (issue 3): queueit (fsync ``always``) against RabbitMQ and ActiveMQ, one sitting.

Scenarios (1 KiB persistent bodies, ``persistent:true`` on every SEND, a RECEIPT asked for every SEND,
consumers ``client-individual`` with prefetch 64, 1 producer / 1 consumer):

- S1   one receipt at a time (``--confirm sync``)                          -> received msg/s
- S2   pipelined receipts (``--confirm window --window 64``)               -> received msg/s (the
       "steady-state rate" of S6)
- S6   fill N persistent messages (default 1,000,000; receipts window 64), then drain them
       (``--fill-drain``)                                                   -> fill and drain msg/s,
       drain / S2 rate, broker RSS (VmHWM). Then, on the same broker: a backlog of N more messages,
       a graceful stop, a start on the same data (queueit: same ``--data-dir``), timed until the ready
       line (queueit) and until a STOMP CONNECT is answered (all), the depth checked where the broker
       tells it (``queueit stat``, ``rabbitmqctl list_queues``), and the whole backlog drained by a
       checker that counts every tagged message (lost / duplicated / unexpected).

Alongside the rates: queueit's journal counters (``queueit stat --json``: fsyncs, operations per
commit, fsync time; deltas over each run), and for every broker the flush requests the disk holding
its data saw during the run (``/proc/diskstats``; whole machine, so only meaningful on an idle one).

S1/S2 run ``--rounds`` rounds (broker order alternating, each broker started fresh and warmed up in
each round); S6 runs ``--s6-rounds`` times on a fresh broker each (default 1: a 1M fill-drain takes
minutes per incumbent). JSON lines go to ``--out`` (default
``benchmarks/results/DATE-persistent-issue3.jsonl``, a temporary directory with ``--quick``); the
markdown table at the end gives median [min-max] per broker and the per-round ratio queueit / best
incumbent.

    python3 benchmarks/persistent_brokers.py                           # full: 3 rounds S1/S2, S6 1M once
    python3 benchmarks/persistent_brokers.py --quick --rounds 1        # smoke run (not comparable)
    python3 benchmarks/persistent_brokers.py --scenarios S6 --s6-count 200000
    python3 benchmarks/persistent_brokers.py --summarize benchmarks/results/2026-11-27-persistent-issue3.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import brokers
import stomp_brokers as sb

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
SCENARIO_NAMES: tuple[str, ...] = ("S1", "S2", "S6")
RESTART = "S6r"  # the restart-with-backlog record of an S6 session
STEM = "persistent-issue3"
PERSISTENT = "--persistent on --ack client-individual --prefetch 64"
WINDOW = "--confirm window --window 64"
PREFETCH = 64
DRAIN_GOAL = 0.8  # issue 3: drain rate >= 80% of the steady-state (S2) rate

Run = dict[str, Any]
argv = sb.argv
_num = sb._num


# --------------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Shape:
    quick: bool
    size: int
    s6_count: int
    restart_count: int
    restart_producers: int


def _per_message(key: str, per: str = "sent") -> Callable[[Run], float | None]:
    def get(run: Run) -> float | None:
        value, count = _num(run.get(key)), _num(run.get(per))
        return value / count if value is not None and count else None

    return get


def _mib(key: str) -> Callable[[Run], float | None]:
    def get(run: Run) -> float | None:
        kb = _num(run.get(key))
        return kb / 1024 if kb is not None else None

    return get


def _nested(*keys: str) -> Callable[[Run], float | None]:
    def get(run: Run) -> float | None:
        value: object = run
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return _num(value)

    return get


def _journal_metrics() -> tuple[sb.Metric, ...]:
    return (
        sb.Metric("fsyncs per message (queueit journal)", _per_message("journal_fsyncs"), False, ratio=False),
        sb.Metric("journal fsyncs", sb._field("journal_fsyncs"), False, ratio=False),
        sb.Metric("mean batch (journal operations per commit)", sb._field("journal_mean_batch"), True, False),
        sb.Metric("fsync ms, mean", sb._field("journal_fsync_ms_mean"), False, ratio=False),
        sb.Metric(
            "disk flush requests per message (/proc/diskstats)", _per_message("disk_flushes"), False, False
        ),
    )


def build_scenarios(shape: Shape) -> list[sb.Scenario]:
    q = shape.quick
    common = argv(PERSISTENT, f"-s {shape.size} -p 1 -c 1")
    s1_count, s1_dur, s2_count, s2_dur = (3_000, 5, 20_000, 5) if q else (20_000, 30, 200_000, 30)
    idle = 5 if q else 10
    received = sb.Metric("received msg/s", sb._field("received_per_s"), True)
    sent = sb.Metric("sent msg/s (receipted)", sb._field("sent_per_s"), True)
    lat = (
        sb.Metric("latency p50 µs (send -> consumer)", sb._lat("p50"), False, ratio=False),
        sb.Metric("latency p99 µs", sb._lat("p99"), False, ratio=False),
    )
    s6_idle = 10 if q else 60
    return [
        sb.Scenario(
            "S1",
            "persistent queue, 1P/1C, one receipt at a time (--confirm sync), client-individual prefetch 64",
            argv("--confirm sync", *common, f"-n {s1_count} -d {s1_dur} --idle-timeout {idle}"),
            s1_dur + 120,
            (received, sent, *lat, *_journal_metrics(), sb.CPU_METRIC),
        ),
        sb.Scenario(
            "S2",
            "persistent queue, 1P/1C, receipts window 64, client-individual prefetch 64",
            argv(WINDOW, *common, f"-n {s2_count} -d {s2_dur} --idle-timeout {idle}"),
            s2_dur + 120,
            (received, sent, *lat, *_journal_metrics(), sb.CPU_METRIC),
        ),
        sb.Scenario(
            "S6",
            f"fill {shape.s6_count:,} persistent messages (receipts window 64), then drain them"
            " (client-individual prefetch 64); fresh broker",
            argv("--fill-drain", WINDOW, *common, f"-n {shape.s6_count} --idle-timeout {s6_idle}"),
            600 + shape.s6_count // 500,
            (
                sb.Metric("fill msg/s", sb._field("fill_per_s"), True),
                sb.Metric("drain msg/s", sb._field("drain_per_s"), True),
                sb.Metric(
                    f"drain / S2 received rate (goal ≥ {DRAIN_GOAL})",
                    sb._field("drain_over_steady"),
                    True,
                    ratio=False,
                ),
                sb.Metric("broker peak RSS MiB (VmHWM)", _mib("broker_hwm_kb"), False),
                sb.Metric("broker RSS MiB before fill", _mib("broker_rss_before_kb"), False, ratio=False),
                sb.Metric("broker RSS MiB after fill", _mib("broker_rss_after_fill_kb"), False, ratio=False),
                *_journal_metrics(),
                sb.CPU_METRIC,
            ),
        ),
    ]


def restart_scenario(shape: Shape) -> sb.Scenario:
    return sb.Scenario(
        RESTART,
        f"restart with a backlog of {shape.restart_count:,} persistent messages"
        f" ({shape.restart_producers} producer(s), receipts window 64), same broker as S6",
        (),
        0,
        (
            sb.Metric("backlog fill msg/s", _nested("fill", "sent_per_s"), True, ratio=False),
            sb.Metric("graceful stop s", sb._field("stop_s"), False),
            sb.Metric("start -> STOMP CONNECT answered, s", sb._field("restart_connect_s"), False),
            sb.Metric("start -> ready line, s (queueit)", sb._field("restart_ready_line_s"), False, False),
            sb.Metric("same start, empty broker: -> CONNECT s", sb._field("fresh_connect_s"), False, False),
            sb.Metric("queue depth after restart", sb._field("depth_after"), True, ratio=False),
            sb.Metric("backlog drained after restart", _nested("drain", "unique"), True, ratio=False),
            sb.Metric(
                "post-restart drain msg/s (Python checker, client-bound)",
                _nested("drain", "per_s"),
                True,
                ratio=False,
            ),
        ),
    )


# --------------------------------------------------------------------------------------------- counters


def queueit_stat(repo: Path, port: int) -> dict[str, Any] | None:
    """``queueit stat --json`` of the broker on ``port``, or None (the reason is printed)."""
    cmd = [str(repo / ".venv" / "bin" / "queueit"), "stat", "--json", "--host", brokers.HOST]
    cmd += ["--port", str(port), "--timeout", "30"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        print(f"!! {' '.join(cmd)} took more than 60 s", flush=True)
        return None
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = None
    if proc.returncode != 0 or not isinstance(data, dict):
        print(f"!! {' '.join(cmd)}: exit {proc.returncode}: {(proc.stdout + proc.stderr)[-500:]}", flush=True)
        return None
    return data


def _journal(stat: dict[str, Any] | None) -> dict[str, Any] | None:
    journal = stat.get("journal") if stat is not None else None
    return journal if isinstance(journal, dict) else None


def journal_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> Run:
    """Journal counters over one run (the counters are cumulative since the broker started)."""
    jb, ja = _journal(before), _journal(after)
    if jb is None or ja is None:
        return {"journal": None}
    out: Run = {}
    for key in ("batches", "operations", "fsyncs", "failures"):
        b, a = _num(jb.get(key)), _num(ja.get(key))
        out[f"journal_{key}"] = int(a - b) if a is not None and b is not None else None
    fs_b, fs_a = _num(jb.get("fsyncs")) or 0.0, _num(ja.get("fsyncs")) or 0.0
    ms_b, ms_a = _num(jb.get("fsync_ms_mean")) or 0.0, _num(ja.get("fsync_ms_mean")) or 0.0
    fsyncs, batches, ops = out["journal_fsyncs"], out["journal_batches"], out["journal_operations"]
    out["journal_fsync_ms_mean"] = round((ms_a * fs_a - ms_b * fs_b) / fsyncs, 3) if fsyncs else None
    out["journal_mean_batch"] = round(ops / batches, 2) if ops is not None and batches else None
    out["journal_error"] = ja.get("error")
    return out


def queue_depth(stat: dict[str, Any] | None, name: str) -> int | None:
    queues = stat.get("queues") if stat is not None else None
    for q in queues if isinstance(queues, list) else []:
        if isinstance(q, dict) and q.get("name") == name:
            depth = q.get("depth")
            return depth if isinstance(depth, int) else None
    return None


def block_device(path: Path) -> str | None:
    """Name of the disk (``vda``, not ``vda1``) holding ``path``, as /proc/diskstats calls it."""
    try:
        dev = path.stat().st_dev
    except OSError:
        return None
    sys_dir = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    try:
        real = sys_dir.resolve(strict=True)
    except OSError:
        return None
    return real.parent.name if (real / "partition").exists() else real.name


def disk_counters(device: str | None) -> dict[str, int] | None:
    if device is None:
        return None
    try:
        with open("/proc/diskstats", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 20 and parts[2] == device:
                    # fields after the name: writes completed = 4, sectors written = 6, flushes = 15
                    return {"writes": int(parts[7]), "sectors": int(parts[9]), "flushes": int(parts[18])}
    except (OSError, ValueError):
        return None
    return None


def disk_delta(before: dict[str, int] | None, after: dict[str, int] | None) -> Run:
    if before is None or after is None:
        return {"disk_flushes": None}
    return {
        "disk_flushes": after["flushes"] - before["flushes"],
        "disk_writes": after["writes"] - before["writes"],
        "disk_written_mb": round((after["sectors"] - before["sectors"]) * 512 / 1e6, 1),
    }


def rabbitmq_queue(name: str) -> dict[str, Any] | None:
    """``rabbitmqctl list_queues``: durable flag, messages and persistent messages of queue ``name``."""
    cmd = ["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name", "durable", "messages"]
    cmd.append("messages_persistent")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[0] == name:
            try:
                return {"durable": parts[1] == "true", "messages": int(parts[2]), "persistent": int(parts[3])}
            except ValueError:
                break
    return {"error": f"queue {name!r} not listed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"}


def rabbitmq_delete_queue(name: str) -> None:
    cmd = ["rabbitmqctl", "delete_queue", "-q", name]
    subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def queueit_log_problems(broker: brokers.Running) -> list[str]:
    """ERROR / CRITICAL / Traceback lines in every log of this queueit data directory."""
    if broker.base is None:
        return []
    found: list[str] = []
    for path in sorted(Path(broker.base).glob("serve*.std*")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                found.append(f"{path.name}: {line.strip()[:300]}")
    return found


# --------------------------------------------------------------------------------------------- drain checker


class _Frames:
    """Incremental STOMP frame reader: yields (command, headers block, body)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data

    def frames(self) -> list[tuple[bytes, bytes, bytes]]:
        out: list[tuple[bytes, bytes, bytes]] = []
        buf = self.buf
        pos, n = 0, len(buf)
        while pos < n:
            while pos < n and buf[pos] in (10, 13):  # heart-beats / EOLs between frames
                pos += 1
            head_end = buf.find(b"\n\n", pos)
            if head_end < 0:
                break
            head = bytes(buf[pos:head_end])
            command, _, headers = head.partition(b"\n")
            length = -1
            cl = headers.find(b"content-length:")
            if cl >= 0 and (cl == 0 or headers[cl - 1] == 10):
                end_cl = headers.find(b"\n", cl)
                length = int(headers[cl + 15 : end_cl if end_cl >= 0 else len(headers)])
            start = head_end + 2
            if length >= 0:
                if start + length >= n:
                    break
                end = start + length
            else:
                end = buf.find(b"\0", start)
                if end < 0:
                    break
            out.append((command.rstrip(b"\r"), headers, bytes(buf[start:end])))
            pos = end + 1
        del buf[:pos]
        return out


def _header(headers: bytes, name: bytes) -> bytes | None:
    for line in headers.split(b"\n"):
        if line.startswith(name + b":"):
            return line[len(name) + 1 :].rstrip(b"\r")
    return None


def drain_check(host: str, port: int, dest: str, counts: Sequence[int], timeout: float, idle: float) -> Run:
    """Consume ``dest`` (client-individual, prefetch 64) until every tagged message of a stompbench run
    with ``counts[i]`` messages from producer i arrived, or nothing came for ``idle`` seconds.

    Counts unique, duplicated and unexpected (untagged or out of range) messages; frames are handled
    in arrival order whatever comes first (MESSAGE frames before the SUBSCRIBE's RECEIPT are counted
    and reported as ``messages_before_receipt``)."""
    seen = [bytearray(c) for c in counts]
    total = sum(counts)
    res: Run = {"expected": total, "unique": 0, "duplicates": 0, "unexpected": 0, "errors": []}
    before_receipt = 0
    got_receipt = False
    reader = _Frames()
    started = time.monotonic()
    first = last = started
    try:
        sock = socket.create_connection((host, port), timeout=10)
    except OSError as exc:
        res["errors"].append(f"connect: {exc}")
        return res
    with sock:
        login = f"login:{brokers.LOGIN}\npasscode:{brokers.PASSCODE}\n"
        sock.sendall(f"CONNECT\naccept-version:1.2\nhost:/\n{login}heart-beat:0,0\n\n\0".encode())
        sub = (
            f"SUBSCRIBE\nid:0\ndestination:{dest}\nack:client-individual\nreceipt:drain-sub\n"
            f"prefetch-count:{PREFETCH}\nactivemq.prefetchSize:{PREFETCH}\n\n\0"
        )
        sent_sub = False
        sock.settimeout(0.5)
        deadline = started + timeout
        while True:
            now = time.monotonic()
            if res["unique"] == total and got_receipt:
                break
            if now >= deadline:
                res["errors"].append(f"timeout after {timeout:.0f} s")
                break
            if now - last > idle:
                res["errors"].append(f"idle {idle:.0f} s with {res['unique']} of {total} messages")
                break
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as exc:
                res["errors"].append(f"recv: {exc}")
                break
            if not data:
                res["errors"].append("connection closed by the broker")
                break
            reader.feed(data)
            acks: list[bytes] = []
            for command, headers, body in reader.frames():
                if command == b"MESSAGE":
                    last = time.monotonic()
                    if res["unique"] + res["duplicates"] + res["unexpected"] == 0:
                        first = last
                    if not got_receipt:
                        before_receipt += 1
                    ack = _header(headers, b"ack") or _header(headers, b"message-id") or b""
                    acks.append(b"ACK\nid:" + ack + b"\n\n\0")
                    if len(body) >= 38 and body[:2] == b"SB" and body[2:18].isdigit():
                        producer, seq = int(body[2:6]), int(body[6:18])
                        if producer < len(seen) and seq < len(seen[producer]):
                            if seen[producer][seq]:
                                res["duplicates"] += 1
                            else:
                                seen[producer][seq] = 1
                                res["unique"] += 1
                            continue
                    res["unexpected"] += 1
                elif command == b"CONNECTED":
                    sock.sendall(sub.encode())
                    sent_sub = True
                    last = time.monotonic()
                elif command == b"RECEIPT":
                    got_receipt = got_receipt or _header(headers, b"receipt-id") == b"drain-sub"
                elif command == b"ERROR":
                    msg = _header(headers, b"message") or b""
                    res["errors"].append(f"ERROR frame: {msg.decode(errors='replace')} {body[:200]!r}")
            if acks:
                sock.sendall(b"".join(acks))
            if res["errors"]:
                break
        if sent_sub:
            try:
                sock.settimeout(10)
                sock.sendall(b"DISCONNECT\nreceipt:drain-bye\n\n\0")
                sock.recv(4096)
            except OSError:
                pass
    res["missing"] = total - res["unique"]
    res["messages_before_receipt"] = before_receipt
    res["receipt"] = got_receipt
    span = last - first
    res["drain_s"] = round(span, 3)
    res["per_s"] = round(res["unique"] / span, 1) if span > 0 else None
    res["ok"] = not res["errors"] and res["missing"] == 0 and not res["duplicates"] and not res["unexpected"]
    return res


# --------------------------------------------------------------------------------------------- runs


@dataclass
class Context:
    binary: Path
    repo: Path
    sitting: str
    quick: bool
    runs_path: Path
    disk: dict[str, str | None]  # broker -> block device of its data
    recorded: list[Run]
    failures: list[str]


def bench(
    ctx: Context, broker: brokers.Running, args: Sequence[str], timeout_s: int, label: str
) -> tuple[Run | None, str, list[str]]:
    """One stompbench run with the journal (queueit) and disk counters around it."""
    stat_before = queueit_stat(ctx.repo, broker.port) if broker.name == "queueit" else None
    disk_before = disk_counters(ctx.disk.get(broker.name))
    run, out, cmd = sb.run_stompbench(ctx.binary, args, broker, timeout_s, label)
    disk_after = disk_counters(ctx.disk.get(broker.name))
    stat_after = queueit_stat(ctx.repo, broker.port) if broker.name == "queueit" else None
    if run is not None:
        run.update(disk_delta(disk_before, disk_after))
        run["disk_device"] = ctx.disk.get(broker.name)
        if broker.name == "queueit":
            run.update(journal_delta(stat_before, stat_after))
    return run, out, cmd


def record(ctx: Context, run: Run, scenario: str, broker: str, rnd: int) -> None:
    run.update(
        {
            "scenario": scenario,
            "broker": broker,
            "round": rnd,
            "sitting": ctx.sitting,
            "quick": ctx.quick,
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    )
    with open(ctx.runs_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(run) + "\n")
    ctx.recorded.append(run)


def _fmt_opt(value: object, spec: str = ",.0f") -> str:
    number = _num(value)
    return "?" if number is None else format(number, spec)


def progress(run: Run) -> str:
    line = sb.progress_line(run)
    if run.get("journal_fsyncs") is not None:
        line += (
            f" fsyncs {run['journal_fsyncs']} ({_fmt_opt(_per_message('journal_fsyncs')(run), '.3f')}/msg)"
            f" batch {run.get('journal_mean_batch')}"
        )
    line += f" disk-flushes {run.get('disk_flushes')}"
    if run.get("scenario") == "S6":
        line += (
            f"\n            fill/s {_fmt_opt(run.get('fill_per_s'))}"
            f" drain/s {_fmt_opt(run.get('drain_per_s'))}"
            f" drain/steady {_fmt_opt(run.get('drain_over_steady'), '.2f')}"
            f" RSS MiB before {_fmt_opt(_mib('broker_rss_before_kb')(run))}"
            f" after-fill {_fmt_opt(_mib('broker_rss_after_fill_kb')(run))}"
            f" VmHWM {_fmt_opt(_mib('broker_hwm_kb')(run))}"
        )
    return line


def warm_up(ctx: Context, broker: brokers.Running, size: int) -> None:
    shape = sb.Shape(ctx.quick, 2000, 20, True, size)
    for wargs, wtimeout in sb.warmup_runs(shape):
        wrun, wout, _ = sb.run_stompbench(ctx.binary, wargs, broker, wtimeout, "warmup")
        if wrun is None or not sb.run_ok(wrun):
            print(f"   (warm-up incomplete: {wout.strip()[-300:]})", flush=True)


def steady_rates(runs: Sequence[Run]) -> dict[tuple[str, str], float]:
    """(sitting, broker) -> median S2 received msg/s over the complete runs."""
    rates: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        value = _num(run.get("received_per_s"))
        if run.get("scenario") == "S2" and sb.run_ok(run) and value is not None:
            rates.setdefault((str(run.get("sitting")), str(run.get("broker"))), []).append(value)
    return {key: statistics.median(values) for key, values in rates.items()}


def attach_steady(runs: Sequence[Run]) -> None:
    """Give every S6 run its broker's S2 rate of the same sitting and the drain / S2 ratio."""
    steady = steady_rates(runs)
    for run in runs:
        if run.get("scenario") != "S6":
            continue
        rate = steady.get((str(run.get("sitting")), str(run.get("broker"))))
        drain = _num(run.get("drain_per_s"))
        run["steady_per_s"] = round(rate, 1) if rate is not None else None
        run["drain_over_steady"] = round(drain / rate, 3) if rate and drain is not None else None


def restart_test(
    ctx: Context, broker: brokers.Running, shape: Shape, rnd: int, fresh_connect_s: float | None
) -> tuple[Run, brokers.Running | None]:
    """Backlog, graceful stop, start on the same data, depth check, full drain check.

    Returns the record and the broker as it now runs (None if it did not come back)."""
    name = broker.name
    queue = f"qbench-restart-{ctx.sitting}-{name}-r{rnd}"
    dest = f"/queue/{queue}"
    producers = shape.restart_producers
    count = shape.restart_count
    rec: Run = {"restart_count": count, "dest": dest, "fresh_connect_s": fresh_connect_s, "errors": []}
    fill_args = argv(WINDOW, f"--persistent on -s {shape.size} -p {producers} -c 0 -n {count}")
    fill_args += ("--dest", dest, "--no-unique")
    label = f"{ctx.sitting}/{name}/{RESTART}-fill/r{rnd}"
    fill, out, cmd = bench(ctx, broker, fill_args, 600 + count // 500, label)
    rec["fill"] = fill
    if fill is None or not sb.run_ok(fill) or fill.get("confirmed") != count:
        rec["errors"].append(f"backlog fill incomplete: {' '.join(cmd)}: {out.strip()[-500:]}")
        return rec, broker
    print(
        f"   {name:8s} {RESTART}  backlog {count:,} in {fill['send_s']:.1f} s ({fill['sent_per_s']:,.0f}/s);"
        " stopping",
        flush=True,
    )
    if name == "queueit":
        rec["depth_before"] = queue_depth(queueit_stat(ctx.repo, broker.port), queue)
    elif name == "rabbitmq":
        rec["rabbitmq_before"] = info = rabbitmq_queue(queue)
        rec["depth_before"] = info.get("messages") if info else None
    problems_before = queueit_log_problems(broker) if name == "queueit" else []
    try:
        again, stop_s, how = brokers.restart(name, broker.port, ctx.repo, timeout=max(600.0, count / 500))
    except brokers.BrokerError as exc:
        rec["errors"].append(f"restart failed: {exc}")
        return rec, None
    rec.update(
        {
            "stop_s": round(stop_s, 3),
            "stop_how": how,
            "restart_connect_s": round(again.connect_s, 3) if again.connect_s is not None else None,
            "restart_ready_line_s": round(again.ready_line_s, 3) if again.ready_line_s is not None else None,
            "pid_after": again.pid,
        }
    )
    if name == "queueit":
        stat = queueit_stat(ctx.repo, again.port)
        rec["depth_after"] = queue_depth(stat, queue)
        journal = _journal(stat)
        rec["recovery_seconds"] = journal.get("recovery_seconds") if journal else None
        logs = queueit_log_problems(again)
        rec["log_problems"] = [p for p in logs if p not in problems_before]
        try:  # the log of the process that was stopped
            rec["clean_stop_logged"] = "queueit.broker: stopped" in Path(broker.log or "").read_text()
        except OSError:
            rec["clean_stop_logged"] = None
    elif name == "rabbitmq":
        rec["rabbitmq_after"] = info = rabbitmq_queue(queue)
        rec["depth_after"] = info.get("messages") if info else None
        if info is not None and (not info.get("durable") or info.get("persistent") != info.get("messages")):
            rec["errors"].append(f"rabbitmq queue not durable/persistent after restart: {info}")
    print(
        f"   {name:8s} {RESTART}  stopped in {stop_s:.2f} s ({how}); CONNECT answered"
        f" {_fmt_opt(again.connect_s, '.2f')} s after the start"
        + (f", ready line {again.ready_line_s:.2f} s" if again.ready_line_s is not None else "")
        + f"; depth {rec.get('depth_before', '?')} -> {rec.get('depth_after', '?')}; draining",
        flush=True,
    )
    per = [count // producers + (1 if i < count % producers else 0) for i in range(producers)]
    drained = drain_check(again.host, again.port, dest, per, timeout=600 + count / 200, idle=60.0)
    rec["drain"] = drained
    if name == "rabbitmq":
        rabbitmq_delete_queue(queue)
    if not drained["ok"]:
        rec["errors"].append(
            f"drain after restart: unique {drained['unique']} of {count}, duplicates {drained['duplicates']},"
            f" unexpected {drained['unexpected']}, errors {drained['errors'][:3]}"
        )
    if rec.get("log_problems"):
        rec["errors"].append(f"queueit log: {rec['log_problems'][:3]}")
    depth_after = rec.get("depth_after")
    if depth_after is not None and depth_after != count:
        rec["errors"].append(f"depth after restart {depth_after}, expected {count}")
    return rec, again


def session_s6(
    ctx: Context, name: str, port: int, shape: Shape, sc: sb.Scenario, rnd: int, args: argparse.Namespace
) -> None:
    try:
        broker = brokers.start(name, port, ctx.repo)
    except brokers.BrokerError as exc:
        ctx.failures.append(f"S6 round {rnd}: {name} did not start: {exc}")
        print(f"!! S6 round {rnd}: {name} did not start: {exc}", flush=True)
        return
    print(f"== S6 round {rnd}: {name} pid {broker.pid}, CONNECT after {broker.connect_s:.2f} s", flush=True)
    current: brokers.Running | None = broker
    keep = False
    try:
        if not args.no_warmup:
            warm_up(ctx, broker, shape.size)
        time.sleep(args.pause)
        label = f"{ctx.sitting}/{name}/S6/r{rnd}"
        run, out, cmd = bench(ctx, broker, sc.args, sc.timeout_s, label)
        if run is None:
            ctx.failures.append(f"S6 round {rnd}: {name}: no result")
            print(f"!! {name} S6: no JSON result from {' '.join(cmd)}\n{out[-1500:]}", flush=True)
            return
        run["broker_connect_s"] = broker.connect_s
        attach_steady([*ctx.recorded, run])
        record(ctx, run, "S6", name, rnd)
        print(progress(run), flush=True)
        if name == "queueit" and (problems := queueit_log_problems(broker)):
            ctx.failures.append(f"S6 round {rnd}: queueit log: {problems[:3]}")
            keep = True
        if args.no_restart:
            return
        if not sb.run_ok(run):
            print(f"   {name:8s} {RESTART}  skipped: the S6 run is incomplete", flush=True)
            return
        time.sleep(args.pause)
        rec, current = restart_test(ctx, broker, shape, rnd, broker.connect_s)
        rec["ok"] = not rec["errors"]
        rec["rc"] = 0 if rec["ok"] else 2
        record(ctx, rec, RESTART, name, rnd)
        drain = rec.get("drain") or {}
        print(
            f"   {name:8s} {RESTART}  drained {drain.get('unique', 0):,} of {rec['restart_count']:,}"
            f" (dup {drain.get('duplicates')}, unexpected {drain.get('unexpected')},"
            f" before-receipt {drain.get('messages_before_receipt')}) in {drain.get('drain_s')} s;"
            f" {'ok' if rec['ok'] else 'PROBLEM: ' + '; '.join(rec['errors'])}",
            flush=True,
        )
        if not rec["ok"]:
            ctx.failures.append(f"{RESTART} round {rnd}: {name}: {'; '.join(rec['errors'])}")
            keep = keep or name == "queueit"
    finally:
        if current is None:
            print(f"!! {name} did not come back after the restart; stopping what is left", flush=True)
        brokers.stop(name, keep_files=keep)


def session_s12(
    ctx: Context,
    name: str,
    port: int,
    shape: Shape,
    scenarios: Sequence[sb.Scenario],
    rnd: int,
    args: argparse.Namespace,
) -> None:
    try:
        broker = brokers.start(name, port, ctx.repo)
    except brokers.BrokerError as exc:
        ctx.failures.append(f"round {rnd}: {name} did not start: {exc}")
        print(f"!! round {rnd}: {name} did not start: {exc}", flush=True)
        return
    print(f"== round {rnd}: {name} pid {broker.pid} on {broker.host}:{broker.port}", flush=True)
    keep = False
    try:
        if not args.no_warmup:
            warm_up(ctx, broker, shape.size)
        for sc in scenarios:
            time.sleep(args.pause)
            label = f"{ctx.sitting}/{name}/{sc.name}/r{rnd}"
            run, out, cmd = bench(ctx, broker, sc.args, sc.timeout_s, label)
            if run is None:
                ctx.failures.append(f"round {rnd}: {name} {sc.name}: no result")
                print(f"!! {name} {sc.name}: no JSON result from {' '.join(cmd)}\n{out[-1500:]}", flush=True)
                continue
            record(ctx, run, sc.name, name, rnd)
            print(progress(run), flush=True)
        if name == "queueit" and (problems := queueit_log_problems(broker)):
            ctx.failures.append(f"round {rnd}: queueit log: {problems[:3]}")
            keep = True
    finally:
        brokers.stop(name, keep_files=keep)


# --------------------------------------------------------------------------------------------- summary


def goals(runs: Sequence[Run]) -> str:
    """Issue 3's goals, read off the per-round ratios and the S6 drain ratio."""
    lines: list[str] = []
    for scenario in ("S1", "S2"):
        per_round: dict[tuple[str, int], dict[str, float]] = {}
        for run in runs:
            value = _num(run.get("received_per_s"))
            if run.get("scenario") == scenario and sb.run_ok(run) and value is not None:
                per_round.setdefault(sb._round_key(run), {})[str(run["broker"])] = value
        ratios = [
            v["queueit"] / max(o for n, o in v.items() if n != "queueit")
            for v in per_round.values()
            if "queueit" in v and len(v) > 1
        ]
        if ratios:
            med = statistics.median(ratios)
            verdict = "met" if med >= 1 else "NOT met"
            lines.append(
                f"- {scenario}: queueit / faster incumbent = {med:.2f}{sb.TIMES} (median of {len(ratios)}"
                f" round(s)): goal (≥ 1{sb.TIMES}) {verdict}"
            )
    drains = [
        v
        for r in runs
        if r.get("scenario") == "S6" and r.get("broker") == "queueit" and sb.run_ok(r)
        for v in [_num(r.get("drain_over_steady"))]
        if v is not None
    ]
    if drains:
        med = statistics.median(drains)
        verdict = "met" if med >= DRAIN_GOAL else "NOT met"
        lines.append(f"- S6: queueit drain / its S2 rate = {med:.2f}: goal (≥ {DRAIN_GOAL}) {verdict}")
    bad = [r for r in runs if r.get("broker") == "queueit" and r.get("scenario") and not sb.run_ok(r)]
    if bad:
        lines.append(f"- {len(bad)} queueit run(s) incomplete (listed above): the goals cannot be claimed")
    return "Goals (issue 3):\n" + "\n".join(lines) + "\n" if lines else ""


def summarize(runs: list[Run], shape: Shape, names: Sequence[str], subject: str) -> str:
    attach_steady(runs)
    scenarios = [*build_scenarios(shape), restart_scenario(shape)]
    table = sb.render_table(runs, scenarios, names, subject)
    restart_problems = [
        f"- {RESTART} {r.get('broker')} round {r.get('round')}: {'; '.join(r.get('errors') or [])}"
        for r in runs
        if r.get("scenario") == RESTART and not sb.run_ok(r)
    ]
    if restart_problems:
        table += "\nRestart checks that failed:\n" + "\n".join(restart_problems) + "\n"
    return table + "\n" + goals(runs)


def load_runs(path: Path) -> list[Run]:
    return [r for r in sb.load_runs(path) if r.get("scenario")]


# --------------------------------------------------------------------------------------------- main


def parse_args(argv_: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", default="queueit,rabbitmq,activemq", help="comma list (%(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="S1/S2 rounds, broker order alternating (3)")
    ap.add_argument("--s6-rounds", type=int, default=1, help="S6 sessions per broker, fresh each (1)")
    ap.add_argument("--s6-count", type=int, help="S6 fill-drain count (1,000,000; 20,000 with --quick)")
    ap.add_argument("--restart-count", type=int, help="backlog for the restart check (default: --s6-count)")
    ap.add_argument("--restart-producers", type=int, default=1, help="producers filling that backlog (1)")
    ap.add_argument("--no-restart", action="store_true", help="skip the restart-with-backlog check")
    ap.add_argument("--scenarios", default=",".join(SCENARIO_NAMES), help="subset (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="short runs for a smoke test (not comparable)")
    ap.add_argument(
        "--out",
        type=Path,
        help="directory for DATE-persistent-issue3.jsonl (appended) and the summary"
        " (default: benchmarks/results; a new temp dir with --quick)",
    )
    sb.common_args(ap)
    args = ap.parse_args(argv_)
    if args.rounds < 0 or args.s6_rounds < 0:
        ap.error("--rounds/--s6-rounds must not be negative")
    sb.parse_lists(ap, args, SCENARIO_NAMES)
    if args.s6_count is None:
        args.s6_count = 20_000 if args.quick else 1_000_000
    if args.restart_count is None:
        args.restart_count = args.s6_count
    if args.s6_count < 1 or args.restart_count < args.restart_producers or args.restart_producers < 1:
        ap.error("--s6-count, --restart-count and --restart-producers must be positive (count >= producers)")
    if args.quick:
        args.pause = min(args.pause, 1.0)
    return args


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv_: Sequence[str] | None = None) -> int:
    args = parse_args(argv_)
    shape = Shape(args.quick, args.size, args.s6_count, args.restart_count, args.restart_producers)
    all_scenarios = build_scenarios(shape)
    if args.summarize is not None:
        print(summarize(load_runs(args.summarize), shape, args.broker_list, args.subject))
        return 0
    s12 = [sc for sc in all_scenarios if sc.name in args.scenario_list and sc.name != "S6"]
    s6 = next((sc for sc in all_scenarios if sc.name == "S6" and "S6" in args.scenario_list), None)

    names, skipped = brokers.available(args.broker_list, args.repo)
    if not names:
        print("!! no broker left to benchmark", file=sys.stderr)
        return 1

    binary = sb.ensure_stompbench(args.stompbench, args.target_dir)
    out_dir: Path = args.out or (
        Path(tempfile.mkdtemp(prefix="queueit-persistent-")) if args.quick else RESULTS_DIR
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y-%m-%d")
    stem = f"{date}-{STEM}{'-quick' if args.quick else ''}"
    runs_path = out_dir / f"{stem}.jsonl"
    sitting = time.strftime("%Y%m%dT%H%M%S")
    disk = {
        "queueit": block_device(Path(tempfile.gettempdir())),
        "rabbitmq": block_device(Path("/var/lib/rabbitmq")),
        "activemq": block_device(Path("/var/lib/activemq")),
    }
    ctx = Context(binary, args.repo, sitting, args.quick, runs_path, disk, [], [])
    scenarios_meta = {
        sc.name: {"title": sc.title, "args": list(sc.args)} for sc in [*s12, *([s6] if s6 else [])]
    }
    meta: dict[str, object] = {
        "record": "meta",
        "sitting": sitting,
        "argv": sys.argv,
        "brokers": names,
        "skipped": skipped,
        "versions": sb._versions(names),
        "quick": args.quick,
        "rounds": args.rounds,
        "s6_rounds": args.s6_rounds,
        "s6_count": args.s6_count,
        "restart_count": None if args.no_restart else args.restart_count,
        "restart_producers": args.restart_producers,
        "scenarios": scenarios_meta,
        "stompbench": str(binary),
        "disk_devices": disk,
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(f"== sitting {sitting}: {', '.join(names)}; raw runs -> {runs_path}")
    print(sb.describe([*s12, *([s6] if s6 else [])]), end="", flush=True)

    signal.signal(signal.SIGTERM, _on_sigterm)
    was = brokers.stop_all()
    if was:
        print(f"== stopped already running broker(s): {', '.join(was)}", flush=True)
    idle_check = sb.busy_cores_now(2.0)
    meta["busy_cores_before_start"] = round(idle_check, 2)
    if idle_check > sb.NOISY_SHARE:
        print(
            f"!! the machine is not idle: {100 * idle_check:.0f}% of one core busy before starting",
            flush=True,
        )
    with open(runs_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(meta) + "\n")

    def port_of(name: str) -> int:
        return args.port if name == "queueit" else brokers.INCUMBENT_PORT

    try:
        if s12:
            for rnd in range(1, args.rounds + 1):
                order = names if rnd % 2 == 1 else list(reversed(names))
                for name in order:
                    session_s12(ctx, name, port_of(name), shape, s12, rnd, args)
                    time.sleep(1.0 if args.quick else 3.0)
        if s6 is not None:
            for rnd in range(1, args.s6_rounds + 1):
                order = names if rnd % 2 == 1 else list(reversed(names))
                for name in order:
                    session_s6(ctx, name, port_of(name), shape, s6, rnd, args)
                    time.sleep(1.0 if args.quick else 3.0)
    finally:
        brokers.stop_all()

    note = " (--quick smoke run: not comparable)" if args.quick else ""
    print(f"\n## Persistent messaging (issue 3), sitting {sitting}{note}\n")
    print(sb.describe([*s12, *([s6] if s6 else []), *([] if args.no_restart else [restart_scenario(shape)])]))
    table = summarize(ctx.recorded, shape, names, args.subject)
    print(table)
    print(
        f"Cells: median [min{sb.DASH}max] over rounds. Ratio: per round, the subject's value over the best"
        " other broker's in the same round (highest rate; lowest time/RSS/CPU)."
    )
    for name, reason in skipped.items():
        print(f"Skipped {name}: {reason}")
    for failure in ctx.failures:
        print(f"Failure: {failure}")
    print(f"Raw runs: {runs_path}")
    (out_dir / f"{stem}-summary-{sitting}.md").write_text(table)
    if ctx.failures:
        return 1
    return 0 if all(sb.run_ok(r) for r in ctx.recorded) else 2


if __name__ == "__main__":
    sys.exit(main())
