"""``queueit.App``: the registry of jobs and the way to send them.

An app is built from a transport URL and holds no connection until it sends. Sending from
async code uses one producer connection per event loop. Sending a job from sync code uses a
blocking connection of the sending thread where the transport has one
(``Capabilities.blocking_publish``): no thread hop, which on an idle machine costs more than
the broker's own work. Everything else sync code does (and sends on other transports) goes
through a private event-loop thread (the *portal*), started on first use. :meth:`App.close`
closes both. Nothing happens at import time.

Ownership: the job registry is filled while the app module is imported and only read after;
producer transports belong to their event loop; the portal thread owns its loop; a blocking
publisher belongs to the thread that made it (and is closed when that thread ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from ..transports import (
    BlockingPublisher,
    Capabilities,
    Outgoing,
    Transport,
    TransportClosed,
    TransportError,
    Unique,
    Unsupported,
    open_transport,
)
from ..transports.base import MAX_PUBLISH_MANY, listener_queue
from .arguments import to_json_value
from .context import Progress
from .cron import Cron
from .definitions import BatchJob, Handler, Job, Listener, Queue, QueueHandler
from .envelope import MAX_JOB_NAME, Envelope
from .middleware import Middleware
from .options import PLAIN_SEND, JobOptions, Retry, SendOptions
from .scheduler import Every, Periodic
from .workflows import Group, Pipeline, Step

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
log = logging.getLogger("queueit.jobs")

DEFAULT_URL = "queueit://127.0.0.1:61613"
#: The most runs one :meth:`App.send_many` (or a batch job's ``send_many``) queues.
MAX_SEND_MANY = MAX_PUBLISH_MANY


class JobDecorator(Protocol):
    """What ``@app.job(...)`` returns: makes any function a :class:`Job` of the same type."""

    def __call__(self, fn: Callable[P, R], /) -> Job[P, R]: ...


class App:
    """Jobs, their queues, and the broker they go through.

    Args:
        url: ``queueit://host:port`` (queueit's broker, the default), ``amqp://...``
            (RabbitMQ) or ``memory://`` (in-process, for tests).
        middleware: hooks around enqueueing and processing (see :class:`Middleware`).
        transport_factory: build transports another way than from ``url`` (tests).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        middleware: Sequence[Middleware] = (),
        transport_factory: Callable[[], Transport] | None = None,
    ) -> None:
        self.url = url
        self.middleware: list[Middleware] = list(middleware)
        self.handlers: dict[str, Handler] = {}
        self.listeners: dict[str, Listener] = {}
        self.periodics: dict[str, Periodic] = {}  # job name -> when it runs (queueit scheduler)
        if transport_factory is None:
            open_transport(url)  # a bad URL fails here, where the app is built, not at first send
        self._factory = transport_factory or (lambda: open_transport(url))
        self._capabilities: Capabilities | None = None  # of the factory's transports, once asked
        self._producers: dict[asyncio.AbstractEventLoop, asyncio.Future[Transport]] = {}
        self._portal: _Portal | None = None
        self._portal_lock = threading.Lock()
        self._publishers = _ThreadPublishers()

    def __repr__(self) -> str:
        return f"<App {self.url} jobs={sorted(self.handlers)}>"

    def open_transport(self) -> Transport:
        """A new, unconnected transport to this app's broker."""
        return self._factory()

    @property
    def capabilities(self) -> Capabilities:
        """What this app's transport can do (asked before connecting, so refusals come at once)."""
        if self._capabilities is None:
            self._capabilities = self._factory().capabilities
        return self._capabilities

    def swap_transport(self, factory: Callable[[], Transport]) -> Callable[[], Transport]:
        """Build transports with ``factory`` from now on; returns the previous factory.

        Connections already open stay as they are; close them first (:meth:`close`). Used by
        :class:`~queueit.jobs.testing.JobTester`.
        """
        previous, self._factory = self._factory, factory
        self._capabilities = None
        self._publishers.close_all()  # no thread may go on sending through the old transport
        return previous

    # -- defining ----------------------------------------------------------------------------

    @overload
    def job(self, fn: Callable[P, R]) -> Job[P, R]: ...

    @overload
    def job(
        self,
        *,
        name: str | None = None,
        queue: str = "default",
        retries: int = 3,
        retry: Retry | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        unique: bool = False,
        unique_for: float = 0.0,
    ) -> JobDecorator: ...

    def job(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = "default",
        retries: int = 3,
        retry: Retry | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        unique: bool = False,
        unique_for: float = 0.0,
    ) -> Any:
        """Register a function (plain or ``async def``) as a job::

            @app.job(queue="email", retries=5, timeout=30)
            def send_email(to: str, subject: str) -> None: ...

            send_email.send(to="a@example.com", subject="Hi")

        Args:
            name: the job's name in messages (default: ``module.function``).
            queue: the queue its messages go to.
            retries: further attempts after a failure (a :class:`Retry` with defaults).
            retry: the full retry policy, instead of ``retries``.
            timeout: seconds an attempt may run.
            priority: the default priority (0-9, higher first).
            unique: a run with the same arguments as one queued or running is kept out
                (``send`` returns the id of that run). Needs a transport with unique keys.
            unique_for: seconds a run's key stays held after it was sent, even once it ran.
        """
        options = JobOptions(
            queue=queue,
            retry=retry if retry is not None else Retry(retries=retries),
            timeout=timeout,
            priority=priority,
            unique=unique,
            unique_for=unique_for,
        )

        def register(f: Callable[..., Any]) -> Job[..., Any]:
            job = Job(self, f, name or f"{f.__module__}.{f.__qualname__}", options)
            self._add(job)
            return job

        return register if fn is None else register(fn)

    def periodic(
        self,
        cron: str | None = None,
        *,
        every: float | None = None,
        tz: str | None = None,
        name: str | None = None,
        queue: str = "default",
        retries: int = 3,
        retry: Retry | None = None,
        timeout: float | None = None,
        priority: int | None = None,
    ) -> Callable[[Callable[[], R]], Job[[], R]]:
        """Register a function without parameters as a job that ``queueit scheduler`` sends
        on a schedule::

            @app.periodic("*/5 * * * *")          # cron: every 5 minutes
            def refresh_rates() -> None: ...

            @app.periodic("0 3 * * MON-FRI", tz="Europe/Berlin")
            def nightly_report() -> None: ...

            @app.periodic(every=30)               # every 30 seconds
            async def heartbeat() -> None: ...

        Several schedulers may run at once: each tick is still sent once (see
        :mod:`queueit.jobs.scheduler`). It is an ordinary job otherwise: ``send()`` runs it now.

        Args:
            cron: a five-field cron expression or alias (:mod:`queueit.jobs.cron`), or:
            every: seconds between runs (at least 1), ticking at the epoch multiples of it.
            tz: the zone a cron expression's wall-clock times are in (default UTC).
            name, queue, retries, retry, timeout, priority: as for :meth:`job`.

        Raises:
            ValueError: not exactly one of ``cron`` and ``every``, or a bad one (a
                :class:`~queueit.jobs.cron.CronError` says what is wrong).
        """
        if (cron is None) == (every is None):
            raise ValueError("give a cron expression or every=SECONDS (one of them)")
        if cron is not None:
            timetable: Cron | Every = Cron.parse(cron, tz)
        else:
            if tz is not None:
                raise ValueError("tz= applies to cron expressions, not to every=")
            assert every is not None
            timetable = Every(every)
        decorate = self.job(
            name=name, queue=queue, retries=retries, retry=retry, timeout=timeout, priority=priority
        )

        def register(fn: Callable[[], R]) -> Job[[], R]:
            if inspect.signature(fn).parameters:
                raise TypeError(f"a periodic job takes no arguments; {fn.__qualname__} has some")
            job: Job[[], R] = decorate(fn)
            self.periodics[job.name] = Periodic(job, timetable)
            return job

        return register

    @overload
    def on(
        self,
        event: str,
        handler: None = None,
        *,
        group: str | None = None,
        retries: int = 3,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> Callable[[Callable[[Any], R]], Callable[[Any], R]]: ...

    @overload
    def on(
        self,
        event: str,
        handler: Callable[[Any], R],
        *,
        group: str | None = None,
        retries: int = 3,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> Callable[[Any], R]: ...

    def on(
        self,
        event: str,
        handler: Callable[[Any], R] | None = None,
        *,
        group: str | None = None,
        retries: int = 3,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> Callable[[Callable[[Any], R]], Callable[[Any], R]] | Callable[[Any], R]:
        """Register a listener of ``event`` (plain or ``async def``, taking the payload), as a
        decorator or with the handler given (the talk's event manager)::

            @app.on("user.saved")
            def update_search_index(user: dict) -> None: ...

            app.on("user.saved", send_welcome_mail)

            app.emit("user.saved", {"id": 7})

        Args:
            group: listeners of one group share the events; each group gets every event
                (default: one group per listener function).
            retries, retry, timeout: as for :meth:`job`.
        """
        options = JobOptions(retry=retry if retry is not None else Retry(retries=retries), timeout=timeout)

        def register(fn: Callable[[Any], R]) -> Callable[[Any], R]:
            # A queue name starts with a letter or digit: a script's "__main__.f" gives "main__.f".
            named = re.sub(r"[^A-Za-z0-9._:-]", "_", f"{fn.__module__}.{fn.__qualname__}")[-200:]
            default = named.lstrip("_.:-") or "listener"
            listener = Listener(event, group or default, fn, options)
            if listener.name in self.listeners:
                raise ValueError(f"{listener.name!r} is already registered; give it another group=")
            self.listeners[listener.name] = listener
            return fn

        return register if handler is None else register(handler)

    def emit(self, event: str, payload: Any = None, *, headers: dict[str, str] | None = None) -> str:
        """Publish ``event`` with ``payload`` (a JSON value) to every listener group; returns its id."""
        return self.portal_call(self.aemit(event, payload, headers=headers))

    async def aemit(self, event: str, payload: Any = None, *, headers: dict[str, str] | None = None) -> str:
        """:meth:`emit` for async code."""
        envelope = Envelope.new(f"event:{event}", event, (to_json_value(payload),), headers=headers)
        outgoing = Outgoing(envelope.encode(), {"job": envelope.job, "job-id": envelope.id})
        return await self._enqueue(envelope, lambda t: t.broadcast(event, outgoing))

    def batch(
        self,
        *,
        size: int,
        wait: float,
        name: str | None = None,
        queue: str = "default",
        retries: int = 3,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> Callable[[Callable[[list[T]], R]], BatchJob[T, R]]:
        """Register a function of a list as a batch job::

            @app.batch(queue="metrics", size=500, wait=2.0)
            def store(points: list[dict]) -> None: ...

            store.send({"cpu": 0.5})     # one item; a worker calls store([...]) in bulk

        Args:
            size: the most items one call gets.
            wait: seconds to wait for more items after the first arrived.
            name, queue, retries, retry, timeout: as for :meth:`job` (a failed call fails
                each of its items, and each is retried on its own schedule).
        """
        options = JobOptions(
            queue=queue, retry=retry if retry is not None else Retry(retries=retries), timeout=timeout
        )

        def register(fn: Callable[[list[T]], R]) -> BatchJob[T, R]:
            job = BatchJob(self, fn, name or f"{fn.__module__}.{fn.__qualname__}", options, size, wait)
            self._add(job)
            return job

        return register

    def group(self, *members: Step) -> Group:
        """Members that run in parallel, and (with ``.then(step)``) a callback once all have
        finished::

            app.group(resize.s("a.png"), resize.s("b.png")).then(notify.s(user_id)).send()

        See :mod:`queueit.jobs.workflows`; the callback needs a transport with groups.
        """
        for step in members:
            self.check_step(step, "group member", fed=False)
        return Group(self, members)

    def send_many(self, steps: Iterable[Step]) -> list[str]:
        """Queue many runs in one broker step::

            ids = app.send_many(resize.s(path, width=200) for path in paths)

        Returns their job ids, in order, once the broker holds every one of them. On
        ``queueit://`` and ``memory://`` the step is atomic (on queueit's broker, one journal
        write): a refusal leaves none of the runs queued; a connection lost before the answer
        leaves all or none, unknown which, as for one send (and the one resend a lost
        connection gets may queue them twice). On ``amqp://`` each is confirmed on its own,
        all in flight together: after an error, some may have been queued. At most
        :data:`MAX_SEND_MANY` runs, and 32 MiB of messages, per call: split a longer list.

        Raises:
            ValueError: a step names no job of this app (or a batch job: use its own
                ``send_many``), a job with ``unique`` (send those one by one: whether a key
                kept a run out is answered per send), or too many steps.
            TypeError: a step's arguments do not fit its job, or are not JSON values.
            TransportError: the broker is unreachable or refused.
        """
        return self.portal_call(self.asend_many(steps))

    async def asend_many(self, steps: Iterable[Step]) -> list[str]:
        """:meth:`send_many` for async code."""
        return await self.publish_many(self._run_of(step) for step in steps)

    def _run_of(self, step: Step) -> tuple[Envelope, JobOptions]:
        handler = self.handlers.get(step.job)
        if not isinstance(handler, Job):
            batch = isinstance(handler, BatchJob)
            what = "a batch job (use its send_many)" if batch else "no job of this app"
            raise ValueError(f"send_many: {step.job!r} is {what}")
        envelope = handler.envelope(step.args, dict(step.kwargs), SendOptions(queue=step.queue))
        if envelope.unique:
            raise ValueError(
                f"send_many: job {step.job!r} keeps duplicates out (unique); send its runs one by one"
            )
        return envelope, handler.options

    async def publish_many(self, runs: Iterable[tuple[Envelope, JobOptions]]) -> list[str]:
        """Publish ``runs`` (envelopes, each with its job's options; at most
        :data:`MAX_SEND_MANY`) in one transport step, between the enqueue hooks, reconnecting
        once; their job ids. Each is encoded, and so checked, before the first hook runs.

        Raises:
            ValueError: more than :data:`MAX_SEND_MANY` runs (not read further than that).
        """
        envelopes: list[Envelope] = []
        publish: list[tuple[str, Outgoing]] = []
        for envelope, job in runs:
            if len(envelopes) == MAX_SEND_MANY:
                raise ValueError(f"send at most {MAX_SEND_MANY:,} runs at once; split the list")
            envelopes.append(envelope)
            publish.append((envelope.queue, self._outgoing(envelope, PLAIN_SEND, job)))
        for envelope in envelopes:
            self._before_enqueue(envelope)
        await self._produce(lambda t: t.publish_many(publish))
        return [self._after_enqueue(envelope, None) for envelope in envelopes]

    async def send_group(
        self, group_id: str, members: Sequence[tuple[str, Outgoing]], callback_queue: str, callback: Outgoing
    ) -> None:
        """Send a group's members and hold its callback, in one broker step (reconnecting once)."""
        await self._produce(lambda t: t.send_group(group_id, members, callback_queue, callback))

    def pipeline(self, *steps: Step) -> Pipeline:
        """Steps run one after the other, each fed the previous result (see ``workflows``)."""
        for i, step in enumerate(steps):
            if isinstance(self.handlers.get(step.job), BatchJob):
                # One result for many messages: each would send the next step again.
                raise TypeError(f"pipeline step {step.job!r} is a batch job, which cannot be a pipeline step")
            self.check_step(step, "pipeline step", fed=i > 0)
        return Pipeline(self, steps)

    def check_step(self, step: Step, role: str, *, fed: bool) -> None:
        """Check a workflow's ``step`` when the workflow is made, not when a worker gets it:
        a job of this app whose function takes these arguments (after the result it is
        ``fed`` first, for a pipeline's later steps and a group's callback).

        Raises:
            ValueError: no job of this app has the step's name.
            TypeError: the arguments do not fit the job's function.
        """
        handler = self.handlers.get(step.job)
        if handler is None:
            raise ValueError(f"{role} {step.job!r} is not a job of this app")
        if isinstance(handler, Job):
            fed_first = (None,) if fed else ()
            try:
                inspect.signature(handler.fn).bind(*fed_first, *step.args, **step.kwargs)
            except TypeError as exc:
                what = " (after the result it is given first)" if fed else ""
                raise TypeError(f"{role} {step.job!r}{what}: {exc}") from None

    def register(self, cls: type[Queue]) -> type[Queue]:
        """Register a :class:`Queue` subclass (usable as a class decorator)."""
        self._add(QueueHandler(self, cls))
        return cls

    def _add(self, handler: Handler) -> None:
        if not 0 < len(handler.name) <= MAX_JOB_NAME:
            raise ValueError(f"a job name is 1-{MAX_JOB_NAME} characters long; give a shorter name=")
        if handler.name in self.handlers:
            raise ValueError(f"a job named {handler.name!r} is already registered; give it another name=")
        self.handlers[handler.name] = handler

    def queues(self) -> list[str]:
        """Every queue a registered job uses, sorted."""
        return sorted({h.options.queue for h in self.handlers.values()})

    def listener_queues(self) -> list[str]:
        """The queue of each listener group (``events.<group>.<topic>``), sorted."""
        return sorted({listener_queue(ls.group, ls.event) for ls in self.listeners.values()})

    def handler_for(self, envelope_job: str | None, queue: str) -> Handler | None:
        """The handler of job ``envelope_job``; for a plain message (None), the one job of
        ``queue`` if it has exactly one."""
        if envelope_job is not None:
            return self.handlers.get(envelope_job)
        found = [h for h in self.handlers.values() if h.options.queue == queue]
        return found[0] if len(found) == 1 else None

    # -- sending -----------------------------------------------------------------------------

    def publish_envelope(self, envelope: Envelope, options: SendOptions, job: JobOptions) -> str:
        """Send from sync code; returns the job id (see :meth:`apublish_envelope`)."""
        outgoing = self._outgoing(envelope, options, job)
        if not self.capabilities.blocking_publish:
            return self.portal_call(self._enqueue(envelope, lambda t: t.publish(envelope.queue, outgoing)))
        self._before_enqueue(envelope)
        for attempt in (1, 2):  # a lost connection is reopened once, as in _produce
            publisher = self._publishers.mine(self._factory)
            try:
                held_by = publisher.publish(envelope.queue, outgoing)
                break
            except TransportClosed:
                self._publishers.forget_mine()
                if attempt == 2:
                    raise
        return self._after_enqueue(envelope, held_by)

    async def apublish_envelope(
        self,
        envelope: Envelope,
        options: SendOptions,
        job: JobOptions,
        *,
        via: Callable[[str, Outgoing], Awaitable[str | None]] | None = None,
    ) -> str:
        """Send from async code; returns the job id once the broker holds the message (or,
        when its unique key kept it out, the id of the job that holds the key).

        ``via(queue, message)`` publishes instead of this loop's producer (the scheduler
        publishes through a leadership); the enqueue hooks run around it all the same.
        """
        outgoing = self._outgoing(envelope, options, job)
        if via is not None:
            self._before_enqueue(envelope)
            return self._after_enqueue(envelope, await via(envelope.queue, outgoing))
        return await self._enqueue(envelope, lambda t: t.publish(envelope.queue, outgoing))

    @staticmethod
    def _outgoing(envelope: Envelope, options: SendOptions, job: JobOptions) -> Outgoing:
        priority = options.priority if options.priority is not None else job.priority
        hold_for = options.unique_for if options.unique_for is not None else job.unique_for
        return Outgoing(
            envelope.encode(),
            {"job": envelope.job, "job-id": envelope.id},
            delay=options.delay_from(time.time()),
            priority=priority,
            unique=Unique(envelope.unique, envelope.id, hold_for) if envelope.unique else None,
        )

    async def _enqueue(self, envelope: Envelope, step: Callable[[Transport], Awaitable[str | None]]) -> str:
        """``step`` (a publish or a broadcast) between the enqueue hooks; returns the job id,
        or the id of the job whose unique key kept this one out."""
        self._before_enqueue(envelope)
        return self._after_enqueue(envelope, await self._produce(step))

    def _before_enqueue(self, envelope: Envelope) -> None:
        for m in self.middleware:
            m.before_enqueue(envelope)

    def _after_enqueue(self, envelope: Envelope, held_by: str | None) -> str:
        if held_by is not None:
            log.info("job=%s id=%s outcome=kept-out unique=%s held-by=%s", envelope.job, envelope.id,
                     envelope.unique, held_by)  # fmt: skip
            return held_by
        for m in self.middleware:
            m.after_enqueue(envelope)
        return envelope.id

    async def publish(self, queue: str, message: Outgoing) -> None:
        """Put one message on ``queue`` through this loop's producer (reconnecting once)."""
        await self._produce(lambda t: t.publish(queue, message))

    async def _produce(self, step: Callable[[Transport], Awaitable[T]]) -> T:
        """Run ``step`` on this loop's producer; a lost connection is reopened once."""
        for attempt in (1, 2):
            transport = await self._producer()
            try:
                return await step(transport)
            except TransportClosed:
                if self._forget_producer(transport):
                    # Closed by the one send that forgets it, or its socket lingers till collected.
                    with contextlib.suppress(TransportError, OSError):
                        await transport.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _forget_producer(self, transport: Transport) -> bool:
        """Forget ``transport`` as this loop's producer if it still is (and say so): sends
        that lost it together forget it once, and none forgets the new one another send is
        opening."""
        loop = asyncio.get_running_loop()
        future = self._producers.get(loop)
        if (
            future is not None
            and future.done()
            and not future.cancelled()
            and future.exception() is None
            and future.result() is transport
        ):
            del self._producers[loop]
            return True
        return False

    async def _producer(self) -> Transport:
        loop = asyncio.get_running_loop()
        future = self._producers.get(loop)
        if future is None:
            # Loops closed without aclose() (each asyncio.run() in a script, say) leave their
            # producer here: forget them, or they would pile up for the app's lifetime.
            for gone in [other for other in self._producers if other.is_closed()]:
                del self._producers[gone]
            future = self._producers[loop] = loop.create_future()
            transport = self.open_transport()
            try:
                await transport.connect()
            except BaseException as exc:
                # Every send waiting on this connection learns why, and the next one tries anew.
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning
                if self._producers.get(loop) is future:
                    del self._producers[loop]
                raise
            future.set_result(transport)
        return await asyncio.shield(future)

    def portal_call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` from sync code, on the app's private event-loop thread (started on first use)."""
        with self._portal_lock:
            if self._portal is None:
                self._portal = _Portal()
            portal = self._portal
        return portal.call(coro)

    def progress(self, job_id: str) -> Progress | None:
        """The latest progress report of job ``job_id`` (see ``JobContext.progress``), or None.

        Raises:
            Unsupported: the transport keeps no progress (``amqp://``).
        """
        return self.portal_call(self.aprogress(job_id))

    async def aprogress(self, job_id: str) -> Progress | None:
        """:meth:`progress` for async code."""
        if not self.capabilities.progress:
            raise Unsupported("this app's transport keeps no job progress; use queueit:// or memory://")
        found = await self._produce(lambda t: t.read_progress(job_id))
        if found is None:
            return None
        try:
            return Progress.from_json(found[0])
        except ValueError:
            return None  # a report some other client sent, not in our format

    async def aclose(self) -> None:
        """Close this loop's producer connection."""
        future = self._producers.pop(asyncio.get_running_loop(), None)
        if future is not None and future.done() and not future.exception():
            await future.result().close()

    def close(self) -> None:
        """Close the sync portal and every thread's blocking publisher, with their connections
        (sending from sync code opens them again)."""
        self._publishers.close_all()
        with self._portal_lock:
            portal, self._portal = self._portal, None
        if portal is not None:
            portal.call(self.aclose())
            portal.stop()


class _Portal:
    """An event loop in a daemon thread, for sync callers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="queueit-portal", daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class _Seat:
    """A thread's blocking publisher; it lives in that thread's local storage only, so it is
    collected when the thread ends, and its finalizer closes the publisher."""

    __slots__ = ("__weakref__", "finalizer", "pid", "publisher")

    def __init__(self, publisher: BlockingPublisher) -> None:
        self.publisher = publisher
        self.pid = os.getpid()
        self.finalizer = weakref.finalize(self, _close_in, publisher, self.pid)
        self.finalizer.atexit = False  # at exit the process's sockets close anyway


def _close_in(publisher: BlockingPublisher, pid: int) -> None:
    """Close ``publisher`` unless this is a forked child: its connection is the parent's."""
    if os.getpid() == pid:
        publisher.close()


class _ThreadPublishers:
    """One blocking publisher per thread (and per process: a forked child makes its own
    rather than write on its parent's socket)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: weakref.WeakSet[_Seat] = weakref.WeakSet()
        self._lock = threading.Lock()

    def mine(self, factory: Callable[[], Transport]) -> BlockingPublisher:
        seat: _Seat | None = getattr(self._local, "seat", None)
        if seat is None or not seat.finalizer.alive or seat.pid != os.getpid():
            seat = self._local.seat = _Seat(factory().blocking_publisher())
            with self._lock:
                self._all.add(seat)
        return seat.publisher

    def forget_mine(self) -> None:
        seat: _Seat | None = getattr(self._local, "seat", None)
        self._local.seat = None
        if seat is not None:
            seat.finalizer()

    def close_all(self) -> None:
        """Close every thread's publisher; each thread makes a new one when it sends again."""
        with self._lock:
            seats = list(self._all)
            self._all.clear()
        for seat in seats:
            seat.finalizer()
