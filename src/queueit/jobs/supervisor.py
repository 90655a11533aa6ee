"""``queueit worker``: a supervisor keeping P worker processes running.

* A process recycled by ``--max-jobs``/``--max-memory``/``--max-time``, or whose sync job
  overran its hard timeout, says so (:data:`~queueit.jobs.process.RETIRING`) and is replaced at
  once; it finishes its running jobs meanwhile, and its exit
  (:data:`~queueit.jobs.worker.EXIT_REPLACE`) needs nothing more.
* A process that crashes (any other exit, ``kill -9`` included) is restarted after a back-off
  that doubles from 0.5 s to 30 s, and resets once a process has run for a minute. Its
  unfinished jobs come back from the broker on their own (their connection dropped).
* A process that cannot load the app: at start, the supervisor stops (the command is wrong);
  later (code on disk broken since, found by a recycled or restarted process), the others
  carry on and the slot is retried with the crash back-off.
* SIGTERM/SIGINT: forwarded once to every process (stop taking jobs, finish running ones up to
  the shutdown timeout, hand back the rest); a second signal is forwarded too, as SIGINT
  (hand back now).
* SIGHUP: a graceful reload: fresh processes start (importing the code anew), and each old
  one is told to stop as with SIGTERM once its replacement has imported the app; no job is
  lost, none is refused meanwhile. New code that cannot be imported changes nothing: the old
  processes keep running and the supervisor says why.

Worker processes run in their own process group (a terminal's Ctrl-C reaches only the
supervisor, which forwards it once) and get SIGTERM if the supervisor dies.

Ownership: the supervisor's event loop owns the process table. Every process it started and
has not reaped is in ``_children``, in a slot or not yet (a reload's while it imports), so a
stop reaches it and the supervisor exits only after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from . import logs
from .process import APP_LOADED, EXIT_BAD_APP, READY_FD_ENV, RETIRING, SUPERVISOR_PID_ENV, settings_to_json
from .worker import EXIT_REPLACE, WorkerSettings

log = logging.getLogger("queueit.supervisor")

BACKOFF_START = 0.5
#: Seconds a new process may take to import the app before a stop signal is sent anyway.
STARTUP_TIMEOUT = 60.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
#: Worker processes one supervisor keeps (--processes): beyond this, run more supervisors.
MAX_PROCESSES = 256


@dataclass
class Startup:
    """How far a new process got: its stop signals are handled (``ready``: a stop signal
    sent earlier would kill it mid-import), and then whether it imported the app."""

    ready: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # loaded, or the pipe closed
    loaded: bool = False


@dataclass
class Slot:
    """One of the P places a worker process fills; it keeps its crash back-off."""

    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    backoff: float = 0.0
    retired: list[asyncio.subprocess.Process] = field(default_factory=list)


class Supervisor:
    def __init__(self, app_spec: str, settings: WorkerSettings, processes: int) -> None:
        if not 1 <= processes <= MAX_PROCESSES:
            raise ValueError(f"processes must be from 1 to {MAX_PROCESSES}, got {processes}")
        self.app_spec = app_spec
        self.settings = settings
        self.slots = [Slot(i) for i in range(processes)]
        self.stopping = 0  # stop signals received
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # pid -> how far it started (it says so on a pipe).
        self._startups: dict[int, Startup] = {}
        self._children: set[asyncio.subprocess.Process] = set()
        self._loaded_once = False  # a process loaded the app: the command itself is right
        self.exit_code = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop, signal.SIGTERM)
        loop.add_signal_handler(signal.SIGINT, self._on_stop, signal.SIGINT)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)
        log.info("supervising %d worker process(es) of %s", len(self.slots), self.app_spec)
        for slot in self.slots:
            if self.stopping:  # a stop signal came while the first ones started
                break
            await self._spawn(slot)
        while not self.stopping or self._alive():
            await self._wake.wait()
            self._wake.clear()
        log.info("all worker processes stopped")
        return self.exit_code

    def _alive(self) -> bool:
        return bool(self._children)

    async def _spawn(self, slot: Slot) -> None:
        process = await self._start()
        if slot.process is not None:  # a reload filled the slot while this one started: one too many
            slot.retired.append(process)
            self._watch(slot, process)
            self._terminate(process)
            return
        slot.process, slot.started = process, time.monotonic()
        log.info("worker process %d started (slot %d)", process.pid, slot.index)
        self._watch(slot, process)

    async def _start(self) -> asyncio.subprocess.Process:
        loop = asyncio.get_running_loop()
        read_end, write_end = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "queueit.jobs.process",
                settings_to_json(self.app_spec, self.settings),
                start_new_session=True,
                pass_fds=(write_end,),
                env={**os.environ, READY_FD_ENV: str(write_end), SUPERVISOR_PID_ENV: str(os.getpid())},
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        startup = self._startups[process.pid] = Startup()
        self._children.add(process)
        if self.stopping:  # told to stop while it was being started
            self._terminate(process, signal.SIGTERM if self.stopping == 1 else signal.SIGINT)

        def on_pipe() -> None:  # SIGNALS_READY, APP_LOADED, maybe RETIRING; end of file at exit
            try:
                said = os.read(read_end, 16)
            except OSError:
                said = b""
            startup.ready.set()  # whatever came: a signal no longer kills it mid-import
            if APP_LOADED in said:
                startup.loaded = self._loaded_once = True
            if APP_LOADED in said or not said:
                startup.done.set()
            if RETIRING in said:
                self._retire(process)
            if not said:
                loop.remove_reader(read_end)
                os.close(read_end)

        loop.add_reader(read_end, on_pipe)
        return process

    def _retire(self, process: asyncio.subprocess.Process) -> None:
        """``process`` finishes its running jobs, to be replaced: replace it now."""
        for slot in self.slots:
            if slot.process is process and not self.stopping:
                slot.retired.append(process)
                slot.process = None
                log.info("worker process %d is finishing its jobs to be replaced", process.pid)
                self._background(self._spawn(slot))

    def _terminate(self, process: asyncio.subprocess.Process, signum: int = signal.SIGTERM) -> None:
        """Send ``process`` a stop signal (SIGTERM or SIGINT) once it is ready to take it."""
        startup = self._startups.get(process.pid)
        if startup is None or startup.ready.is_set():
            if process.returncode is None:
                process.send_signal(signum)
            return

        async def when_ready() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STARTUP_TIMEOUT):
                    await startup.ready.wait()
            if process.returncode is None:
                process.send_signal(signum)

        self._background(when_ready())

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _watch(self, slot: Slot, process: asyncio.subprocess.Process) -> None:
        self._background(self._reap(slot, process))

    async def _reap(self, slot: Slot, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self._forget(process)
        if process in slot.retired:  # replaced already (a reload, or it retired): nothing more
            slot.retired.remove(process)
            log.info("worker process %d (replaced) exited with %d", process.pid, code)
            self._wake.set()
            return
        slot.process = None
        lived = time.monotonic() - slot.started
        if self.stopping:
            log.info("worker process %d exited with %d", process.pid, code)
        elif code == EXIT_BAD_APP and not self._loaded_once:
            log.error("worker process %d cannot load %s; stopping", process.pid, self.app_spec)
            self.exit_code = 1
            self._on_stop(signal.SIGTERM)
        elif code == EXIT_REPLACE:
            log.info("worker process %d asked to be replaced; starting a fresh one", process.pid)
            await self._spawn(slot)
        else:
            fresh = lived >= STABLE_AFTER or not slot.backoff
            slot.backoff = BACKOFF_START if fresh else min(BACKOFF_MAX, slot.backoff * 2)
            what = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
            if code == EXIT_BAD_APP:
                what = (
                    f"cannot load {self.app_spec} as its code is now (its log says why); the other "
                    "processes carry on"
                )
            log.warning("worker process %d %s; restarting in %.1f s", process.pid, what, slot.backoff)
            await asyncio.sleep(slot.backoff)
            if not self.stopping and slot.process is None:  # a reload may have filled it since
                await self._spawn(slot)
        self._wake.set()

    def _on_stop(self, signum: int) -> None:
        self.stopping += 1
        what = "handing running jobs back now" if self.stopping > 1 else "stopping"
        log.info("%s: %s", signal.Signals(signum).name, what)
        # The second stop goes out as SIGINT (a worker counts either): two SIGTERMs sent
        # before the process ran would merge into one pending signal, and the second be lost.
        forward = signal.SIGTERM if self.stopping == 1 else signal.SIGINT
        for process in self._children:
            self._terminate(process, forward)
        self._wake.set()

    def _forget(self, process: asyncio.subprocess.Process) -> None:
        """``process`` was reaped."""
        self._startups.pop(process.pid, None)
        self._children.discard(process)
        self._wake.set()

    def _on_reload(self) -> None:
        if self.stopping:
            return
        log.info("SIGHUP: starting fresh worker processes, then stopping the old ones")
        self._background(self._reload())

    async def _reload(self) -> None:
        for slot in self.slots:
            if self.stopping:
                return
            fresh = await self._start()
            startup = self._startups[fresh.pid]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STARTUP_TIMEOUT):
                    await startup.done.wait()
            if not startup.loaded or fresh.returncode is not None:
                log.error(
                    "SIGHUP: a new worker process could not import %s (its log says why); the "
                    "running processes carry on with the code they have",
                    self.app_spec,
                )
                if fresh.returncode is None:
                    fresh.kill()  # stuck importing: it holds no job yet
                await fresh.wait()
                self._forget(fresh)
                return
            if self.stopping > 0:  # told to stop while it started (_on_stop did): it stops with the others
                slot.retired.append(fresh)
                self._watch(slot, fresh)
                return
            old, slot.process, slot.started = slot.process, fresh, time.monotonic()
            log.info("worker process %d started (slot %d, reload)", fresh.pid, slot.index)
            self._watch(slot, fresh)
            if old is not None:
                slot.retired.append(old)
                self._terminate(old)


def run_supervisor(app_spec: str, settings: WorkerSettings, processes: int) -> int:
    logs.configure("supervisor")
    return asyncio.run(Supervisor(app_spec, settings, processes).run())
