"""The asyncio server: listeners, connection admission, authentication, shutdown.

``run_broker(settings, stop)`` is the whole life of a broker process: build the core
from the settings, listen (plain and TLS), serve until ``stop`` is set, then stop
accepting, flush and close every connection, and close the store.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from .._version import __version__
from ..compiled import build_name
from ..stomp import Connect
from .auth import Authenticator, User, UserDB
from .config import BrokerSettings, ConfigError
from .core import BrokerCore
from .errors import BrokerError
from .queue_settings import QueueSettingsTable
from .resources import ResourceMonitor
from .session import Session
from .storage import MemoryStore, MessageStore
from .storage.durable import DurableStore
from .storage.journal import JournalError

log = logging.getLogger("queueit.broker")

#: Password checks running at once (each is one scrypt in a worker thread).
LOGIN_CONCURRENCY = 4
#: How often the core's timers run (delayed messages fire within this, plus a loop turn).
TICK_SECONDS = 0.02
RESOURCE_CHECK_SECONDS = 0.5


class BrokerServer:
    def __init__(self, settings: BrokerSettings, core: BrokerCore, authenticator: Authenticator) -> None:
        self.settings = settings
        self.core = core
        self.authenticator = authenticator
        self.server_name = f"queueit/{__version__}"
        self.sessions: set[Session] = set()
        self._per_ip: Counter[str] = Counter()
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._login_slots = asyncio.Semaphore(LOGIN_CONCURRENCY)
        self.addresses: list[tuple[str, str, int]] = []  # (scheme, host, port)
        self._ticker: asyncio.TimerHandle | None = None
        #: Why publishers are held (memory or disk past its watermark), or None.
        self.alarm: str | None = None
        self.resources = ResourceMonitor(settings)
        self._next_resource_check = 0.0

    # -- listening ---------------------------------------------------------------------------

    def _tick(self) -> None:
        try:
            self.core.tick()
            now = time.monotonic()
            if now >= self._next_resource_check:
                self._next_resource_check = now + RESOURCE_CHECK_SECONDS
                self._check_resources()
        except Exception:
            log.exception("internal error in the broker's timers")
        self._ticker = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)

    def _check_resources(self) -> None:
        """Raise or clear the alarm that holds publishers (consumers and acks flow on)."""
        reason = self.resources.check(self.core.store.stats().get("error"))
        if reason == self.alarm:
            return
        if reason is not None:
            log.warning("holding publishers: %s", reason)
        else:
            log.warning("resources back under their watermarks: publishers resume")
        self.alarm = reason
        if reason is None:
            for session in list(self.sessions):
                session.unpark()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ticker = loop.call_later(TICK_SECONDS, self._tick)
        s = self.settings
        server = await loop.create_server(lambda: Session(self), s.host, s.port, reuse_address=True)
        self._servers.append(server)
        self.addresses.append(("stomp", *_bound(server)))
        if s.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                context.load_cert_chain(s.tls.cert, s.tls.key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"cannot load the TLS certificate {s.tls.cert} and key {s.tls.key}: {exc}"
                ) from exc
            tls_server = await loop.create_server(
                lambda: Session(self), s.tls.host or s.host, s.tls.port, ssl=context, reuse_address=True
            )
            self._servers.append(tls_server)
            self.addresses.append(("stomp+ssl", *_bound(tls_server)))

    async def stop(self) -> None:
        """Stop accepting, flush and close every connection, wait for them to go."""
        if self._ticker is not None:
            self._ticker.cancel()
        for server in self._servers:
            server.close()
        for session in list(self.sessions):
            session.shutdown()
        deadline = asyncio.get_running_loop().time() + self.settings.shutdown_timeout
        while self.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.abort()
        for server in self._servers:
            await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        self.core.store.close()

    # -- connections ---------------------------------------------------------------------------

    def admit(self, session: Session) -> str | None:
        """Count a new connection in, or say why it is refused."""
        s = self.settings
        ip = session.peer or "?"
        if len(self.sessions) >= s.max_connections:
            return f"The broker accepts at most {s.max_connections} connections."
        if self._per_ip[ip] >= s.max_connections_per_ip:
            return f"The broker accepts at most {s.max_connections_per_ip} connections from one address."
        self.sessions.add(session)
        self._per_ip[ip] += 1
        return None

    def forget(self, session: Session) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            ip = session.peer or "?"
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]

    async def authenticate(self, event: Connect, peer: str | None, wanted: Callable[[], bool]) -> User | str:
        """Check a CONNECT in a worker thread (scrypt takes tens of milliseconds).

        At most :data:`LOGIN_CONCURRENCY` checks run at once, and a check whose connection
        has gone by the time its turn comes is skipped, so a flood of CONNECTs costs bounded
        CPU and cannot starve other logins for long.
        """
        async with self._login_slots:
            if not wanted():
                return "connection closed"
            return await asyncio.to_thread(self.authenticator.authenticate, event.login, event.passcode, peer)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _bound(server: asyncio.Server) -> tuple[str, int]:
    host, port = server.sockets[0].getsockname()[:2]
    return (str(host), int(port))


def build_core(settings: BrokerSettings, store: MessageStore | None = None) -> BrokerCore:
    """The core with the config's exchanges and bindings.

    Raises:
        ConfigError: an exchange or binding of the config is invalid.
    """
    core = BrokerCore(
        store or MemoryStore(), settings.limits, queue_settings=QueueSettingsTable(settings.queues)
    )
    try:
        for spec in settings.exchanges:
            core.declare_exchange(spec.name, spec.type)
        for binding in settings.bindings:
            core.bind(binding.exchange, binding.queue, binding.key)
    except BrokerError as exc:
        raise ConfigError(f"[[exchanges]] / [[bindings]]: {exc.detail}") from exc
    return core


async def run_broker(
    settings: BrokerSettings,
    stop: asyncio.Event,
    on_ready: Callable[[list[tuple[str, str, int]]], None] | None = None,
) -> None:
    """Serve until ``stop`` is set; log one line when ready, then call ``on_ready``."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the data dir {settings.data_dir}: {exc.strerror}") from exc
    users = UserDB.load(settings.users_path)
    loop = asyncio.get_running_loop()
    try:
        # The journal writer is woken after the loop's writes of the iteration (see Journal.defer):
        # call_soon twice is the next iteration, after this one's flushes.
        store = DurableStore(
            settings.data_dir,
            post=loop.call_soon_threadsafe,
            defer=lambda wake: loop.call_soon(loop.call_soon, wake),
        )
    except JournalError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        server = BrokerServer(settings, build_core(settings, store), Authenticator(users, settings.auth))
        await server.start()
    except BaseException:
        store.close()
        raise
    where = ", ".join(f"{scheme}://{host}:{port}" for scheme, host, port in server.addresses)
    log.info(
        "queueit %s ready on %s (data dir %s, store %s, %s build)",
        __version__,
        where,
        settings.data_dir,
        server.core.store.capabilities.name,
        build_name(),
    )
    if on_ready is not None:
        on_ready(server.addresses)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: closing %d connection(s)", len(server.sessions))
        await server.stop()
        log.info("stopped")
