"""The two ways to define work: ``@app.job`` functions and the talk's ``Queue`` classes.

Both become a :class:`Handler` the worker runs: it turns a received message (an envelope or
a plain JSON message) into one call, or says the message is invalid.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, Protocol, TypeVar

from ..transports.base import MAX_UNIQUE_KEY, check_queue_name
from .arguments import Signature, convert, to_json_value
from .envelope import Envelope, InvalidMessage, Plain
from .options import PLAIN_SEND, JobOptions, Retry, SendOptions
from .workflows import Step

if TYPE_CHECKING:
    from .app import App

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Handler(Protocol):
    """What the worker needs of a job definition."""

    @property
    def name(self) -> str: ...

    @property
    def options(self) -> JobOptions: ...

    @property
    def is_async(self) -> bool: ...

    def prepare(self, message: Envelope | Plain) -> Callable[[], Any]:
        """A call that runs the job on this message (returns a coroutine when ``is_async``).

        Raises:
            InvalidMessage: the message does not fit (arguments, types, ``validate()``).
        """
        ...


class _Function:
    """What the function-based definitions share: the function, its name and its options."""

    def __init__(self, fn: Callable[..., Any], name: str, options: JobOptions) -> None:
        self.fn = fn
        self._name = name
        self._options = options
        self.__doc__ = fn.__doc__

    @property
    def name(self) -> str:
        return self._name

    @property
    def options(self) -> JobOptions:
        return self._options

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


def unique_key(job: str, key: str) -> str:
    """The key a run holds in its queue: the job's name, then ``key`` (hashed when too long)."""
    full = f"{job}:{key}"
    return full if len(full) <= MAX_UNIQUE_KEY else "sha256:" + hashlib.sha256(full.encode()).hexdigest()


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    """A digest of bound arguments (parameter name -> value, defaults applied)."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def single_value(message: Envelope | Plain, what: str) -> Any:
    """The one value a message carries: a plain message's JSON, or an envelope's one argument.

    Raises:
        InvalidMessage: an envelope with other arguments.
    """
    if isinstance(message, Plain):
        return message.value
    if len(message.args) == 1 and not message.kwargs:
        return message.args[0]
    raise InvalidMessage(f"{what} takes one value per message, not {len(message.args)} arguments")


class Job(_Function, Generic[P, R]):
    """A job function, registered with ``@app.job``.

    Calling it runs the function here and now; :meth:`send` queues it for a worker, with
    the function's own parameters, so a wrong argument is a type error at the call site.
    """

    fn: Callable[P, R]

    def __init__(self, app: App, fn: Callable[P, R], name: str, options: JobOptions) -> None:
        super().__init__(fn, name, options)
        self.app = app
        self._signature = Signature(fn)
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Job {self._name} on queue {self._options.queue!r}>"

    # -- sending -----------------------------------------------------------------------------

    def send(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Queue a run with these arguments; returns the job id once the broker holds it.

        Raises:
            TypeError: the arguments do not fit the function, or are not JSON values.
            TransportError: the broker is unreachable or refused.
        """
        return Sender(self, PLAIN_SEND).send(*args, **kwargs)

    async def asend(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """:meth:`send` for async code."""
        return await Sender(self, PLAIN_SEND).asend(*args, **kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Step:
        """This job with some arguments, as a pipeline step (``app.pipeline(a.s(1), b.s())``)."""
        return Step(self._name, self._options.queue, args, kwargs)

    def send_with(
        self,
        *,
        delay: float | None = None,
        eta: float | None = None,
        priority: int | None = None,
        queue: str | None = None,
        headers: dict[str, str] | None = None,
        job_id: str | None = None,
        key: str | None = None,
        unique_for: float | None = None,
    ) -> Sender[P]:
        """Per-message options, then ``.send(...)`` with the job's arguments::

        send_email.send_with(delay=60, priority=8).send(to="a@example.com")
        sync_account.send_with(key=f"account-{account_id}").send(account_id)

        With ``key``, the send is kept out while a run of this job holding the same key is
        queued or running (and ``unique_for`` seconds after it was sent): ``send`` then
        returns that run's job id instead of a new one.
        """
        options = SendOptions(delay, eta, priority, queue, dict(headers or {}), job_id, key, unique_for)
        return Sender(self, options)

    def envelope(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: SendOptions) -> Envelope:
        """The envelope for one run, its arguments checked against the signature (that they
        are JSON values is checked when it is encoded, before anything is sent).

        Raises:
            TypeError: the arguments do not fit.
        """
        json_args, json_kwargs = to_json_value(list(args)), to_json_value(kwargs)
        try:
            self._signature.bind(tuple(json_args), json_kwargs)
        except InvalidMessage as exc:
            raise TypeError(f"{self._name}: {exc}") from None
        if options.key is not None:
            unique = unique_key(self._name, options.key)
        elif self._options.unique:
            bound = inspect.signature(self.fn).bind(*json_args, **json_kwargs)
            bound.apply_defaults()  # f(1) and f(account=1) are the same run
            unique = unique_key(self._name, arguments_digest(bound.arguments))
        else:
            unique = ""
        return Envelope.new(
            self._name,
            options.queue or self._options.queue,
            tuple(json_args),
            json_kwargs,
            headers=options.headers,
            job_id=options.job_id,
            unique=unique,
        )

    def prepare(self, message: Envelope | Plain) -> Callable[[], Any]:
        if isinstance(message, Plain):
            # A plain JSON object from another language: its keys are the arguments.
            if not isinstance(message.value, dict):
                raise InvalidMessage(
                    f"job {self._name!r} takes keyword arguments: a plain message must be a JSON object"
                )
            bound = self._signature.bind((), message.value)
        else:
            bound = self._signature.bind(message.args, message.kwargs)
        fn = self.fn
        return lambda: fn(*bound.args, **bound.kwargs)


class Sender(Generic[P]):
    """A job with per-message options; see :meth:`Job.send_with`."""

    def __init__(self, job: Job[P, Any], options: SendOptions) -> None:
        self.job = job
        self.options = options

    def send(self, *args: P.args, **kwargs: P.kwargs) -> str:
        envelope = self.job.envelope(args, kwargs, self.options)
        return self.job.app.publish_envelope(envelope, self.options, self.job.options)

    async def asend(self, *args: P.args, **kwargs: P.kwargs) -> str:
        envelope = self.job.envelope(args, kwargs, self.options)
        return await self.job.app.apublish_envelope(envelope, self.options, self.job.options)


class Queue:
    """The talk's ``AbstractQueue``: subclass it, name the queue, say what a valid message is
    and how to work on one::

        @app.register
        class EmailQueue(Queue):
            name = "email"
            retries = 5

            def validate(self, message: dict) -> bool:
                return "to" in message

            def work(self, message: dict) -> None:
                send_mail(message["to"], message["subject"])

        EmailQueue(app).publish({"to": "a@example.com", "subject": "Hi"})

    A message is any JSON value; messages published by other languages (PHP's
    ``json_encode``) are taken as they are. ``work`` may be ``async def``.
    """

    name: ClassVar[str] = ""
    retries: ClassVar[int] = 3
    timeout: ClassVar[float | None] = None
    priority: ClassVar[int | None] = None
    retry: ClassVar[Retry | None] = None  # the full policy, instead of ``retries``

    def __init__(self, app: App) -> None:
        self.app = app

    @classmethod
    def job_options(cls) -> JobOptions:
        if not cls.name:
            raise TypeError(f"{cls.__name__} needs a queue name: set the class attribute name = '...'")
        return JobOptions(
            queue=cls.name,
            retry=cls.retry if cls.retry is not None else Retry(retries=cls.retries),
            timeout=cls.timeout,
            priority=cls.priority,
        )

    def validate(self, message: Any) -> bool:
        """Whether ``message`` can be worked on; an invalid one goes to the dead-letter queue
        and is never retried. The default accepts everything."""
        return True

    def work(self, message: Any) -> Awaitable[None] | None:
        """Do the work; raise to fail the attempt (it is retried as the policy says)."""
        raise NotImplementedError(f"{type(self).__name__}.work() is not written")

    def publish(
        self,
        message: Any,
        *,
        delay: float | None = None,
        priority: int | None = None,
        job_id: str | None = None,
    ) -> str:
        """Queue ``message`` (a JSON value); returns the job id once the broker holds it.

        Raises:
            ValueError: ``validate()`` refuses it.
            TypeError: it is not a JSON value, or the class is not registered with the app.
        """
        envelope, options = self._envelope(message, delay, priority, job_id)
        return self.app.publish_envelope(envelope, options, self.job_options())

    async def apublish(
        self,
        message: Any,
        *,
        delay: float | None = None,
        priority: int | None = None,
        job_id: str | None = None,
    ) -> str:
        """:meth:`publish` for async code."""
        envelope, options = self._envelope(message, delay, priority, job_id)
        return await self.app.apublish_envelope(envelope, options, self.job_options())

    def _envelope(
        self, message: Any, delay: float | None, priority: int | None, job_id: str | None
    ) -> tuple[Envelope, SendOptions]:
        handler = self.app.handlers.get(self.name)
        if not (isinstance(handler, QueueHandler) and isinstance(self, handler.cls)):
            # Sent anyway, nothing would take it: the worker runs the app's registered classes.
            raise TypeError(
                f"{type(self).__name__} is not registered with this app, so no worker would take "
                f"its messages: decorate the class with @app.register"
            )
        value = to_json_value(message)
        if not self.validate(value):
            raise ValueError(f"{type(self).__name__}.validate() refused the message; it was not sent")
        options = SendOptions(delay=delay, priority=priority, job_id=job_id)
        envelope = Envelope.new(self.name, self.name, (value,), job_id=job_id)
        envelope.encode()
        return envelope, options


class QueueHandler:
    """A :class:`Queue` subclass, as the worker runs it (one instance per worker process)."""

    def __init__(self, app: App, cls: type[Queue]) -> None:
        self.cls = cls
        self._options = cls.job_options()
        self.instance = cls(app)

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def options(self) -> JobOptions:
        return self._options

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.instance.work)

    def prepare(self, message: Envelope | Plain) -> Callable[[], Any]:
        value = single_value(message, f"queue {self.name!r}")
        if not self.instance.validate(value):
            raise InvalidMessage(f"{self.cls.__name__}.validate() refused the message")
        work = self.instance.work
        return lambda: work(value)


class Listener(_Function):
    """An event listener (``@app.on("user.saved")``): gets each event's payload.

    Listeners with the same ``group`` share the events (each event goes to one of them);
    every group gets its own copy, kept while the group's workers are away.
    """

    def __init__(self, event: str, group: str, fn: Callable[[Any], Any], options: JobOptions) -> None:
        super().__init__(fn, f"{check_queue_name(event)}@{check_queue_name(group)}", options)
        self.event = event
        self.group = group

    def prepare(self, message: Envelope | Plain) -> Callable[[], Any]:
        payload = single_value(message, f"an event of {self.event!r}")
        fn = self.fn
        return lambda: fn(payload)


class BatchJob(_Function, Generic[T, R]):
    """A job that takes messages in bulk (``@app.batch``): the talk's "do it later, but in bulk".

    Each :meth:`send` queues one item; a worker calls the function with a list of up to
    ``size`` items, or with what arrived within ``wait`` seconds of the first one.
    """

    fn: Callable[[list[T]], R]

    def __init__(
        self, app: App, fn: Callable[[list[T]], R], name: str, options: JobOptions, size: int, wait: float
    ) -> None:
        if not 1 <= size <= 10_000:
            raise ValueError(f"batch size must be from 1 to 10000, got {size}")
        if not 0 < wait <= 600:
            raise ValueError(f"batch wait must be from 0 to 600 seconds, got {wait}")
        super().__init__(fn, name, options)
        self.app = app
        self.size = size
        self.wait = wait
        signature = Signature(fn)
        hints = list(signature.hints.items())
        item_hint = typing.get_args(hints[0][1]) if hints and hints[0][0] != "return" else ()
        self._item_hint: Any = item_hint[0] if item_hint else Any

    def __call__(self, items: list[T]) -> R:
        return self.fn(items)

    def item(self, message: Envelope | Plain) -> Any:
        """One message's item, checked against the list's item type.

        Raises:
            InvalidMessage: it is not one item of that type.
        """
        return convert(single_value(message, f"batch job {self._name!r}"), self._item_hint, "item")

    def prepare(self, message: Envelope | Plain) -> Callable[[], Any]:
        item = self.item(message)
        fn = self.fn
        return lambda: fn([item])

    def prepare_batch(self, items: list[Any]) -> Callable[[], Any]:
        fn = self.fn
        return lambda: fn(items)

    def send(self, item: T) -> str:
        """Queue one item; returns its job id once the broker holds it."""
        return self.app.publish_envelope(self._envelope(item), SendOptions(), self._options)

    async def asend(self, item: T) -> str:
        return await self.app.apublish_envelope(self._envelope(item), SendOptions(), self._options)

    def send_many(self, items: Iterable[T]) -> list[str]:
        """Queue many items in one broker step (see :meth:`App.send_many`, atomic on
        ``queueit://`` and ``memory://``); their job ids, once the broker holds them all."""
        return self.app.portal_call(self.asend_many(items))

    async def asend_many(self, items: Iterable[T]) -> list[str]:
        return await self.app.publish_many((self._envelope(item), self._options) for item in items)

    def _envelope(self, item: T) -> Envelope:
        value = to_json_value(item)
        try:
            convert(value, self._item_hint, "item")
        except InvalidMessage as exc:
            raise TypeError(f"{self._name}: {exc}") from None
        envelope = Envelope.new(self._name, self._options.queue, (value,))
        envelope.encode()
        return envelope
