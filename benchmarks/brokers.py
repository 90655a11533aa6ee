#!/usr/bin/env python3
"""Start, stop and locate the STOMP brokers compared by ``stomp_brokers.py``, one at a time, on 127.0.0.1.

Brokers:

- ``rabbitmq``: Debian ``rabbitmq-server`` with ``rabbitmq_stomp`` (``/etc/init.d/rabbitmq-server``);
- ``activemq``: Debian ``activemq``, instance ``main`` (``/etc/init.d/activemq``);
- ``queueit``: ``<repo>/.venv/bin/python -m queueit serve --host 127.0.0.1 --port PORT --data-dir DIR``
  with a fresh, empty data directory each start; ready once its stderr says ``ready on stomp://``.
  ``QUEUEIT_BUILD`` picks the build: ``compiled`` (the default: ``<repo>/build/compiled``, made by
  ``make compiled``, what a wheel ships) or ``pure`` (the source in ``.venv``'s editable install).

The two incumbents listen where ``setup_brokers.sh`` configured them (127.0.0.1:61613, login
guest/guest); queueit listens on the port given (default 61613 too). Only one broker may run at a
time: ``start`` refuses while another one is up or the port is taken.

Usage::

    brokers.py start NAME [--port N]   # prints the broker's pid once it answers a STOMP CONNECT
    brokers.py stop NAME
    brokers.py restart NAME            # graceful stop, start again with its data (queueit: same
                                       # --data-dir); prints pid, stop and start seconds
    brokers.py pid NAME                # exit status 1 if it is not running
    brokers.py stop-all
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BROKERS: tuple[str, ...] = ("queueit", "rabbitmq", "activemq")
INCUMBENT_PORT = 61613
DEFAULT_PORT = 61613
HOST = "127.0.0.1"
LOGIN = "guest"
PASSCODE = "guest"
REPO = Path(__file__).resolve().parent.parent
READY_MARKER = "ready on stomp://"
QUEUEIT_BUILDS = ("compiled", "pure")

RABBITMQ_INIT = Path("/etc/init.d/rabbitmq-server")
ACTIVEMQ_INIT = Path("/etc/init.d/activemq")
ACTIVEMQ_PIDFILE = Path("/var/run/activemq/main.pid")
ACTIVEMQ_INSTANCE = Path("/etc/activemq/instances-enabled/main")
RABBITMQ_PLUGINS = Path("/etc/rabbitmq/enabled_plugins")
# Where a queueit started by this module records itself, so that another process (the CLI, or a
# harness run after a crash) can find and stop it.
STATE_DIR = Path(tempfile.gettempdir()) / "queueit-bench-brokers"
QUEUEIT_STATE = STATE_DIR / "queueit.json"

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0


class BrokerError(RuntimeError):
    """A broker could not be started or stopped as asked."""


@dataclass(frozen=True)
class Running:
    """A broker that answers STOMP on ``host:port``."""

    name: str
    host: str
    port: int
    pid: int
    log: str | None = None  # queueit only: where its stdout/stderr go
    # Seconds from launching the broker (queueit's process, or the incumbent's init script) until
    # it answered a STOMP CONNECT (polled every 50 ms).
    connect_s: float | None = None
    # queueit only: seconds from launching the process until its stderr said READY_MARKER
    # (polled every 10 ms), and the directory holding data/ and the logs.
    ready_line_s: float | None = None
    base: str | None = None


# Popen handles of the queueit processes started by this process, so they can be reaped.
_children: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------------------------- helpers


def _log(msg: str) -> None:
    print(f"[brokers] {msg}", file=sys.stderr, flush=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _uid_of(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _pids_by_comm(comm: str, uid: int | None) -> list[int]:
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", encoding="utf-8", errors="replace") as f:
                if f.read().strip() != comm:
                    continue
            if uid is not None and os.stat(f"/proc/{entry}").st_uid != uid:
                continue
        except OSError:
            continue
        found.append(int(entry))
    return sorted(found)


def listening(port: int) -> bool:
    """True if any local TCP socket (IPv4 or IPv6) is in LISTEN state on ``port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def stomp_ping(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if a STOMP 1.2 CONNECT with guest/guest is answered with CONNECTED."""
    frame = (
        f"CONNECT\naccept-version:1.2\nhost:/\nlogin:{LOGIN}\npasscode:{PASSCODE}\nheart-beat:0,0\n\n\0"
    ).encode()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(frame)
            data = b""
            deadline = time.monotonic() + timeout
            while b"\0" not in data and time.monotonic() < deadline:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            ok = data.lstrip(b"\r\n").startswith(b"CONNECTED")
            if ok:
                with contextlib.suppress(OSError):
                    sock.sendall(b"DISCONNECT\n\n\0")
            return ok
    except OSError:
        return False


def _wait_stomp(
    name: str,
    host: str,
    port: int,
    timeout: float,
    pid_alive: int | None = None,
    poll: float = 0.5,
    launcher: subprocess.Popen[str] | None = None,
) -> None:
    """Wait until ``host:port`` answers a STOMP CONNECT. ``launcher``: an init script still running;
    if it fails before the broker answers, its output is in the error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stomp_ping(host, port):
            return
        if pid_alive is not None and not _alive(pid_alive):
            raise BrokerError(f"{name} exited before answering STOMP on {host}:{port}")
        if launcher is not None and launcher.poll() not in (None, 0):
            out, _ = launcher.communicate()
            raise BrokerError(f"{launcher.args!r} failed (exit {launcher.returncode}): {out.strip()[-800:]}")
        time.sleep(poll)
    raise BrokerError(f"{name} did not answer a STOMP CONNECT on {host}:{port} within {timeout:.0f} s")


def _wait_port_free(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while listening(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.3)
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    child = _children.get(pid)
    if child is not None:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        _children.pop(pid, None)
        return True
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _terminate(pid: int, what: str, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, grace):
        return
    _log(f"{what} (pid {pid}) ignored SIGTERM for {grace:.0f} s; sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, 10.0):
        raise BrokerError(f"{what} (pid {pid}) survived SIGKILL")


def _init_script(script: Path, action: str, timeout: float) -> None:
    try:
        proc = subprocess.run(
            [str(script), action], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"{script} {action} took more than {timeout:.0f} s") from exc
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip()
        raise BrokerError(f"{script} {action} failed (exit {proc.returncode}): {out[-800:]}")


def _init_script_async(script: Path, action: str) -> subprocess.Popen[str]:
    """Launch ``script action`` without waiting (see :func:`_finish_init_script`)."""
    return subprocess.Popen(
        [str(script), action],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish_init_script(proc: subprocess.Popen[str], timeout: float) -> None:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise BrokerError(f"{proc.args!r} took more than {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise BrokerError(f"{proc.args!r} failed (exit {proc.returncode}): {out.strip()[-800:]}")


# --------------------------------------------------------------------------------------------- queries


def unavailable(name: str, repo: Path = REPO) -> str | None:
    """Why ``name`` cannot be benchmarked here, or None if it can."""
    if name == "rabbitmq":
        if not RABBITMQ_INIT.exists():
            return "rabbitmq-server is not installed (run benchmarks/setup_brokers.sh)"
        try:
            plugins = RABBITMQ_PLUGINS.read_text()
        except OSError:
            plugins = ""
        if "rabbitmq_stomp" not in plugins:
            return "the rabbitmq_stomp plugin is not enabled (run benchmarks/setup_brokers.sh)"
        return None
    if name == "activemq":
        if not ACTIVEMQ_INIT.exists():
            return "activemq is not installed (run benchmarks/setup_brokers.sh)"
        if not ACTIVEMQ_INSTANCE.exists():
            return f"{ACTIVEMQ_INSTANCE} is missing (run benchmarks/setup_brokers.sh)"
        return None
    if name == "queueit":
        python = repo / ".venv" / "bin" / "python"
        if not python.exists():
            return f"{python} does not exist (create the venv with scripts/setup)"
        build = queueit_build()
        if build == "compiled" and (problem := compiled_build_problem(repo)) is not None:
            return problem
        probe = subprocess.run(
            [str(python), "-c", "from queueit.compiled import build_name; print(build_name())"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=repo,
            env=queueit_env(repo),
        )
        if probe.returncode != 0:
            return f"`{python} -m queueit` is not available: {probe.stderr.strip()[-300:]}"
        found = probe.stdout.strip()
        if found != {"compiled": "compiled", "pure": "pure Python"}[build]:
            return f"QUEUEIT_BUILD={build}, but queueit imports as the {found!r} build"
        return None
    return f"unknown broker {name!r} (known: {', '.join(BROKERS)})"


def queueit_build() -> str:
    """The queueit build the benchmarks run, from ``QUEUEIT_BUILD`` (``compiled`` by default)."""
    build = os.environ.get("QUEUEIT_BUILD", "compiled")
    if build not in QUEUEIT_BUILDS:
        raise BrokerError(f"QUEUEIT_BUILD must be one of {', '.join(QUEUEIT_BUILDS)}, got {build!r}")
    return build


def queueit_env(repo: Path = REPO) -> dict[str, str]:
    """The environment for a queueit process (broker, worker, CLI) of :func:`queueit_build`."""
    env = dict(os.environ)
    if queueit_build() == "compiled":
        env["PYTHONPATH"] = str(repo / "build" / "compiled")
    # "pure": the checkout's source through .venv's editable install, unless PYTHONPATH names
    # another source tree (jobs.py --queueit-src does).
    return env


def compiled_build_problem(repo: Path) -> str | None:
    """Why ``build/compiled`` cannot stand for the source, or None."""
    stamp = repo / "build" / "compiled" / ".stamp"
    if not stamp.exists():
        return f"{stamp.parent} has not been built (run `make compiled`, or set QUEUEIT_BUILD=pure)"
    built = stamp.stat().st_mtime
    newer = [p for p in (repo / "src").rglob("*.py") if p.stat().st_mtime > built]
    if newer:
        return f"{stamp.parent} is older than {newer[0].relative_to(repo)} (run `make compiled`)"
    return None


def _queueit_state() -> dict[str, object] | None:
    try:
        state = json.loads(QUEUEIT_STATE.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _state_int(state: dict[str, object], key: str) -> int | None:
    value = state.get(key)
    return value if isinstance(value, int) else None


def available(names: list[str], repo: Path = REPO) -> tuple[list[str], dict[str, str]]:
    """The brokers of ``names`` that can run here, and why each other one cannot (printed)."""
    ok: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        reason = unavailable(name, repo)
        if reason is None:
            ok.append(name)
        else:
            skipped[name] = reason
            print(f"!! skipping {name}: {reason}", flush=True)
    return ok, skipped


def pid(name: str) -> int | None:
    """The pid of the running broker's main process (beam.smp / java / python), or None."""
    if name == "rabbitmq":
        uid = _uid_of("rabbitmq")
        if uid is None:
            return None
        pids = _pids_by_comm("beam.smp", uid)
        return pids[0] if pids else None
    if name == "activemq":
        try:
            amq_pid = int(ACTIVEMQ_PIDFILE.read_text().strip())
        except (OSError, ValueError):
            return None
        return amq_pid if _alive(amq_pid) else None
    if name == "queueit":
        state = _queueit_state()
        if state is None:
            return None
        q_pid = _state_int(state, "pid")
        if q_pid is None or not _alive(q_pid):
            return None
        cmd = _cmdline(q_pid)
        return q_pid if "queueit" in cmd and "serve" in cmd else None
    raise BrokerError(f"unknown broker {name!r}")


def running() -> list[str]:
    return [name for name in BROKERS if pid(name) is not None]


# --------------------------------------------------------------------------------------------- start


def start(
    name: str,
    port: int = DEFAULT_PORT,
    repo: Path = REPO,
    timeout: float = START_TIMEOUT_S,
    queueit_base: Path | None = None,
) -> Running:
    """Start ``name`` and return once it answers a STOMP CONNECT.

    queueit starts on a fresh, empty data directory unless ``queueit_base`` (the ``base`` of an
    earlier :class:`Running`, whose ``data/`` is reused). The incumbents keep their data anyway.
    The init script runs while the STOMP port is polled, so ``connect_s`` does not include the
    fixed sleep of ActiveMQ's init script; the call still returns only after the script is done."""
    reason = unavailable(name, repo)
    if reason is not None:
        raise BrokerError(f"{name}: {reason}")
    others = running()
    if others:
        raise BrokerError(f"cannot start {name}: {', '.join(others)} already running (stop it first)")
    if name in ("rabbitmq", "activemq") and port != INCUMBENT_PORT:
        raise BrokerError(f"{name} listens on {INCUMBENT_PORT} (fixed by setup_brokers.sh), not {port}")
    if listening(port):
        raise BrokerError(f"cannot start {name}: something already listens on port {port}")
    if name in ("rabbitmq", "activemq"):
        script = RABBITMQ_INIT if name == "rabbitmq" else ACTIVEMQ_INIT
        started = time.monotonic()
        launcher = _init_script_async(script, "start")
        try:
            _wait_stomp(name, HOST, port, timeout, poll=0.05, launcher=launcher)
        except BaseException:
            with contextlib.suppress(BrokerError):
                _finish_init_script(launcher, 30)
            raise
        connect_s = time.monotonic() - started
        _finish_init_script(launcher, timeout + 30)
        found = pid(name)
        if found is None:
            what = "beam.smp of user rabbitmq" if name == "rabbitmq" else f"live pid in {ACTIVEMQ_PIDFILE}"
            raise BrokerError(f"{name} answers STOMP but no {what} was found")
        return Running(name, HOST, port, found, connect_s=connect_s)
    return _start_queueit(port, repo, timeout, queueit_base)


def _start_queueit(port: int, repo: Path, timeout: float, reuse: Path | None = None) -> Running:
    if reuse is None:
        base = Path(tempfile.mkdtemp(prefix="queueit-bench-"))
        data_dir = base / "data"
        data_dir.mkdir()
        err_path = base / "serve.stderr"
        out_path = base / "serve.stdout"
    else:
        base = reuse
        data_dir = base / "data"
        if not data_dir.is_dir():
            raise BrokerError(f"cannot restart queueit: {data_dir} does not exist")
        n = 1
        while (base / f"serve.{n}.stderr").exists():
            n += 1
        err_path = base / f"serve.{n}.stderr"
        out_path = base / f"serve.{n}.stdout"
    cmd = [
        str(repo / ".venv" / "bin" / "python"),
        "-m",
        "queueit",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=repo,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            env=queueit_env(repo),
        )
    _children[proc.pid] = proc
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    QUEUEIT_STATE.write_text(
        json.dumps({"pid": proc.pid, "port": port, "base": str(base), "cmd": cmd, "started": time.time()})
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            text = err_path.read_text(errors="replace")
            if READY_MARKER in text:
                ready_line_s = time.monotonic() - started
                break
            code = proc.poll()
            if code is not None:
                raise BrokerError(
                    f"`{' '.join(cmd)}` exited with status {code} before printing {READY_MARKER!r}; "
                    f"stderr (last 1500 chars):\n{text[-1500:]}"
                )
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"queueit did not print {READY_MARKER!r} within {timeout:.0f} s; "
                    f"stderr (last 1500 chars):\n{text[-1500:]}"
                )
            time.sleep(0.01)
        _wait_stomp("queueit", HOST, port, min(timeout, 15.0), pid_alive=proc.pid, poll=0.05)
        connect_s = time.monotonic() - started
    except BaseException:
        stop("queueit", keep_files=True)
        raise
    return Running(
        "queueit",
        HOST,
        port,
        proc.pid,
        log=str(err_path),
        connect_s=connect_s,
        ready_line_s=ready_line_s,
        base=str(base),
    )


# --------------------------------------------------------------------------------------------- stop


def stop(name: str, keep_files: bool = False) -> None:
    """Stop ``name`` if it runs (idempotent). queueit's data directory is removed unless ``keep_files``."""
    if name == "rabbitmq":
        if pid("rabbitmq") is not None:
            _init_script(RABBITMQ_INIT, "stop", STOP_TIMEOUT_S + 30)
            found = pid("rabbitmq")
            if found is not None and not _wait_gone(found, STOP_TIMEOUT_S):
                _terminate(found, "rabbitmq beam.smp", 10.0)
            _stop_epmd()
        if not _wait_port_free(INCUMBENT_PORT, STOP_TIMEOUT_S):
            raise BrokerError(f"port {INCUMBENT_PORT} still busy after stopping rabbitmq")
        return
    if name == "activemq":
        if pid("activemq") is not None:
            _init_script(ACTIVEMQ_INIT, "stop", STOP_TIMEOUT_S + 30)
            found = pid("activemq")
            if found is not None and not _wait_gone(found, STOP_TIMEOUT_S):
                _terminate(found, "activemq java", 10.0)
        if not _wait_port_free(INCUMBENT_PORT, STOP_TIMEOUT_S):
            raise BrokerError(f"port {INCUMBENT_PORT} still busy after stopping activemq")
        return
    if name == "queueit":
        state = _queueit_state()
        if state is None:
            return
        found = pid("queueit")
        if found is not None:
            _terminate(found, "queueit serve", 15.0)
        port = _state_int(state, "port")
        base = state.get("base")
        QUEUEIT_STATE.unlink(missing_ok=True)
        if isinstance(base, str) and not keep_files:
            shutil.rmtree(base, ignore_errors=True)
        elif isinstance(base, str):
            _log(f"queueit files kept in {base}")
        if port is not None and not _wait_port_free(port, 15.0):
            raise BrokerError(f"port {port} still busy after stopping queueit")
        return
    raise BrokerError(f"unknown broker {name!r}")


def graceful_stop(name: str, timeout: float = 600.0) -> tuple[float, str]:
    """Stop ``name`` gracefully, keeping its data (queueit: its data directory too).

    Returns (seconds until the broker's main process had exited, how it was stopped). queueit and
    ActiveMQ get SIGTERM and all the time they need (Debian's ``/etc/init.d/activemq stop`` sends
    SIGKILL when the JVM is still there 2 s after SIGTERM); RabbitMQ is stopped by its init script
    (``rabbitmqctl stop``, a clean shutdown). SIGKILL only after ``timeout`` seconds.
    """
    found = pid(name)
    if found is None:
        raise BrokerError(f"{name} is not running")
    started = time.monotonic()
    if name == "rabbitmq":
        _init_script(RABBITMQ_INIT, "stop", timeout)
        how = f"{RABBITMQ_INIT} stop"
    else:
        os.kill(found, signal.SIGTERM)
        how = "SIGTERM"
    if not _wait_gone(found, timeout):
        _terminate(found, name, 10.0)
        how += f", SIGKILL after {timeout:.0f} s"
    stopped_s = time.monotonic() - started
    if name == "queueit":
        state = _queueit_state()
        QUEUEIT_STATE.unlink(missing_ok=True)
        port = _state_int(state, "port") if state is not None else None
        if port is not None and not _wait_port_free(port, 15.0):
            raise BrokerError(f"port {port} still busy after stopping queueit")
    elif name == "activemq":
        ACTIVEMQ_PIDFILE.unlink(missing_ok=True)  # stale: the init script would not remove it
        if not _wait_port_free(INCUMBENT_PORT, STOP_TIMEOUT_S):
            raise BrokerError(f"port {INCUMBENT_PORT} still busy after stopping activemq")
    else:
        _stop_epmd()
        if not _wait_port_free(INCUMBENT_PORT, STOP_TIMEOUT_S):
            raise BrokerError(f"port {INCUMBENT_PORT} still busy after stopping rabbitmq")
    return stopped_s, how


def restart(
    name: str, port: int = DEFAULT_PORT, repo: Path = REPO, timeout: float = 600.0
) -> tuple[Running, float, str]:
    """Graceful stop, then start again on the same data. Returns (the new Running, stop seconds,
    how it was stopped); the start timings are in the Running."""
    base: Path | None = None
    if name == "queueit":
        state = _queueit_state()
        raw = state.get("base") if state is not None else None
        if not isinstance(raw, str):
            raise BrokerError("queueit was not started by this module (no state file)")
        base = Path(raw)
    stop_s, how = graceful_stop(name, timeout)
    return start(name, port, repo, timeout, queueit_base=base), stop_s, how


def _stop_epmd() -> None:
    """Stop the Erlang port mapper RabbitMQ leaves behind, if no Erlang node is registered any more."""
    epmd = shutil.which("epmd")
    if epmd is None or not _pids_by_comm("epmd", None):
        return
    names = subprocess.run([epmd, "-names"], capture_output=True, text=True, timeout=10, check=False)
    if "name " in names.stdout:  # a node is still registered: not ours to stop
        return
    subprocess.run([epmd, "-kill"], capture_output=True, timeout=10, check=False)


def stop_all() -> list[str]:
    """Stop every broker that runs; returns the names of those that were running."""
    was = running()
    for name in BROKERS:
        stop(name)
    return was


# --------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["start", "stop", "restart", "pid", "stop-all"])
    parser.add_argument("broker", nargs="?", choices=BROKERS)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="queueit's port (default %(default)s)")
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="queueit checkout with .venv (default %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.action != "stop-all" and args.broker is None:
        parser.error(f"{args.action} needs a broker name")
    try:
        if args.action == "start":
            started = start(args.broker, args.port, args.repo)
            if started.name == "queueit":
                # the process outlives this CLI; forget the handle so nothing reaps it here
                _children.pop(started.pid, None)
            print(started.pid)
        elif args.action == "stop":
            stop(args.broker)
        elif args.action == "restart":
            again, stop_s, how = restart(args.broker, args.port, args.repo)
            if again.name == "queueit":
                _children.pop(again.pid, None)
            _log(
                f"{args.broker}: stopped in {stop_s:.2f} s ({how}); STOMP CONNECT answered"
                f" {again.connect_s or 0:.2f} s after the start"
                + (f", ready line after {again.ready_line_s:.2f} s" if again.ready_line_s is not None else "")
            )
            print(again.pid)
        elif args.action == "pid":
            found = pid(args.broker)
            if found is None:
                return 1
            print(found)
        else:
            for name in stop_all():
                _log(f"stopped {name}")
    except BrokerError as exc:
        _log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
