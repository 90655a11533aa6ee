"""One worker process: ``python -m queueit.jobs.process SETTINGS_JSON`` (started by the supervisor).

Signals: the first SIGTERM or SIGINT stops taking jobs and lets running ones finish up to the
shutdown timeout; a second hands them back at once. A SIGTERM within :data:`SAME_STOP` s of
the first is the same stop, not a second one: systemd's default ``KillMode=control-group``
signals every process of the service at once, beside the supervisor's own forward, and Linux
may deliver the parent-death signal twice (the supervisor forwards a real second stop as
SIGINT). The exit code tells the supervisor what to do next: :data:`EXIT_STOPPED` (done),
:data:`EXIT_REPLACE` (start a fresh process now: recycled, or a sync job overran its hard
timeout), anything else is a crash (restart with back-off).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import importlib
import json
import logging
import os
import signal
import sys
import traceback
from dataclasses import asdict
from typing import Any

from . import logs
from .app import App
from .worker import EXIT_REPLACE, Exit, Worker, WorkerSettings, check_inline

EXIT_STOPPED = 0
EXIT_BAD_APP = 78  # EX_CONFIG: the app cannot be loaded; restarting will not help
#: The supervisor passes a pipe's write end in this variable, and its own pid in the next.
READY_FD_ENV = "QUEUEIT_READY_FD"
SUPERVISOR_PID_ENV = "QUEUEIT_SUPERVISOR_PID"
#: Seconds within which a repeated SIGTERM is the same stop.
SAME_STOP = 2.0
#: What a worker process writes on that pipe: its stop signals are handled from now on; then,
#: its app is imported (a reload stops the old processes only after this). End of file
#: without them: the process died first.
SIGNALS_READY = b"1"
APP_LOADED = b"2"
#: Then, maybe: it is to be replaced (recycled, or a job overran) and finishes its running
#: jobs first; the supervisor starts the replacement now rather than when it exits.
RETIRING = b"3"

log = logging.getLogger("queueit.worker")


def load_app(spec: str) -> App:
    """The :class:`App` named by ``module:attribute`` (the current directory is importable).

    Raises:
        ValueError: the spec is malformed, the module cannot be imported, or the attribute
            is missing or not an App.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute or module_name.startswith("."):
        raise ValueError(
            "give the app as MODULE:ATTRIBUTE, with an absolute module path, e.g. myproject.tasks:app "
            f"(got {spec[:200]!r})"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    except SyntaxError as exc:  # the code itself: say where, as Python would, in one line
        where = f"{exc.filename}, line {exc.lineno}"
        raise ValueError(f"cannot import {module_name!r}: {exc.msg} ({where})") from exc
    except Exception as exc:  # the module raised while it ran: where, in one line
        last = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{last.filename}, line {last.lineno}"
        raise ValueError(f"importing {module_name!r} raised {type(exc).__name__}: {exc} ({where})") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise ValueError(f"{module_name}.{attribute} is not a queueit.App (it is {type(app).__name__})")
    return app


def settings_to_json(app_spec: str, settings: WorkerSettings) -> str:
    return json.dumps({"app": app_spec, "settings": asdict(settings)})


def settings_from_json(text: str) -> tuple[str, WorkerSettings]:
    document: dict[str, Any] = json.loads(text)
    raw = document["settings"]
    raw["queues"] = tuple(raw["queues"])
    raw["reconnect_delays"] = tuple(raw["reconnect_delays"])
    return document["app"], WorkerSettings(**raw)


def _tell(fd: int | None, what: bytes) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):  # the supervisor is gone: nobody to tell
            os.write(fd, what)


def die_with_parent() -> bool:
    """Ask Linux to send SIGTERM when the supervisor dies (even by ``kill -9``); False if it
    is gone already. The death signal only covers a parent alive when it is asked for, so
    the parent is checked after asking: one that died while this process started (its
    imports take a while) would otherwise leave it an orphan, taking jobs for ever."""
    path = ctypes.util.find_library("c")
    if path is not None and sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(path, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    parent = os.environ.pop(SUPERVISOR_PID_ENV, "")
    return not parent.isdigit() or os.getppid() == int(parent)


async def serve(
    app: App, settings: WorkerSettings, early: list[int] | None = None, ready_fd: int | None = None
) -> Exit:
    """Run a worker until signalled; ``early`` holds signals that came while the process
    started; ``ready_fd`` is the supervisor's pipe (told when this process retires)."""
    worker = Worker(app, settings)
    worker.on_retire = lambda: _tell(ready_fd, RETIRING)
    loop = asyncio.get_running_loop()
    signals = 0
    first = 0.0

    def on_signal(signum: int) -> None:
        nonlocal signals, first
        now = loop.time()
        if signals and signum == signal.SIGTERM and now - first < SAME_STOP:
            log.debug("SIGTERM again within %g s: the same stop", SAME_STOP)
            return
        signals += 1
        first = first or now
        log.info("%s: %s", signal.Signals(signum).name, "stopping now" if signals > 1 else "stopping")
        worker.stop(now=signals > 1)

    def noted(signum: int, frame: object) -> None:
        worker.stop_signalled = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
        # In place of asyncio's no-op Python-level handler: the C-level one still writes to
        # the loop's wake-up fd (on_signal runs as before), and this runs at once.
        signal.signal(signum, noted)
        signal.siginterrupt(signum, False)  # as asyncio sets it
    for number in early or ():  # read after the handlers are in place: none is missed
        on_signal(number)
    return await worker.run()


def main(argv: list[str]) -> int:
    logs.configure("worker")
    # A stop signal may come while the app is still importing (a reload right after a
    # start): count it, and stop as soon as the worker exists, instead of dying mid-import.
    early: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: early.append(signum))
    if not die_with_parent():
        log.warning("the supervisor is gone; not starting")
        return EXIT_STOPPED
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor handles reloads
    ready = os.environ.pop(READY_FD_ENV, "")
    ready_fd = int(ready) if ready.isdigit() else None
    if ready_fd is not None:  # held for this process's life: not for processes its jobs start
        with contextlib.suppress(OSError):
            os.set_inheritable(ready_fd, False)
    _tell(ready_fd, SIGNALS_READY)
    app_spec, settings = settings_from_json(argv[0])
    try:
        app = load_app(app_spec)
        check_inline(app, settings)  # before saying "loaded": a reload refused here changes nothing
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_BAD_APP
    _tell(ready_fd, APP_LOADED)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    why = runner(serve(app, settings, early, ready_fd))  # the pipe closes as the process exits
    return EXIT_STOPPED if why is Exit.STOPPED else EXIT_REPLACE


if __name__ == "__main__":
    code = 1
    try:
        code = main(sys.argv[1:])
    except BaseException:  # a bug of ours: say where, then end as a crash (restarted)
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        # A sync job that overran its timeout may still run in a thread: do not wait for it.
        os._exit(code)
