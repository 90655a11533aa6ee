"""What a job may be told: its retry policy and its per-job options (one typed value each).

Options never share a namespace with job arguments: a job's arguments are its own, and the
framework's options travel in :class:`JobOptions` (set by ``@app.job(...)``) and
:class:`SendOptions` (set per message by ``job.send_with(...)``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..transports.base import MAX_HOLD_FOR, check_queue_name
from .envelope import MAX_ID

#: Longest key a send may give (the job's name is put before it).
MAX_KEY = 200

#: A job may not run longer than this, whatever its timeout says (one day).
MAX_TIMEOUT = 86_400.0

#: The longest wait before a retry a policy or a job may ask for (a year); a transport with a
#: shorter limit (``Capabilities.max_delay``) waits its longest instead.
MAX_RETRY_DELAY = 365 * 86_400.0


@dataclass(frozen=True, slots=True)
class Retry:
    """When and how often a failed job runs again.

    A failed attempt ``n`` (1 for the first) waits ``min(cap, base * factor**(n-1))`` seconds,
    with full jitter when ``jitter`` (a random delay from half that value to all of it), before
    the next attempt. ``retries`` is how many times it runs again after the first attempt.

    Attributes:
        retries: further attempts after the first (0: fail at the first error).
        base: seconds before the first retry.
        factor: growth per attempt.
        cap: the longest wait, in seconds.
        jitter: spread retries of many jobs that failed together.
        retry_on: exception types that are retried (others fail at once).
        fail_on: exception types that fail at once even when ``retry_on`` matches.
    """

    retries: int = 3
    base: float = 1.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    fail_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.retries <= 1000:
            raise ValueError(f"retries must be from 0 to 1000, got {self.retries}")
        if not (0 <= self.base <= MAX_RETRY_DELAY and 0 <= self.cap <= MAX_RETRY_DELAY):
            raise ValueError(f"retry base and cap must be from 0 to {MAX_RETRY_DELAY:g} seconds")
        if not 1 <= self.factor <= 100:
            raise ValueError(f"retry factor must be from 1 to 100, got {self.factor}")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        wait = min(self.cap, self.base * self.factor ** min(attempt - 1, 64))
        return wait * (0.5 + rand() / 2) if self.jitter else wait

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether failed attempt ``attempt`` (1-based) with ``error`` runs again.

        :class:`FailNow` never does; :class:`RetryLater` does whatever ``retry_on`` and
        ``fail_on`` say, while retries are left.
        """
        if isinstance(error, FailNow):
            return False
        if not isinstance(error, RetryLater) and (
            isinstance(error, self.fail_on) or not isinstance(error, self.retry_on)
        ):
            return False
        return attempt <= self.retries

    def delay_after(self, error: BaseException, attempt: int) -> float:
        """Seconds before the retry of failed attempt ``attempt``: a :class:`RetryLater`'s own
        delay, or the back-off."""
        if isinstance(error, RetryLater) and error.delay is not None:
            return error.delay
        return self.delay(attempt)


class RetryLater(Exception):
    """Raise in a job to run it again later, after ``delay`` seconds (None: the job's back-off).

    It is retried whatever the policy's ``retry_on`` and ``fail_on`` say, and it still counts
    as an attempt: out of retries, the job fails like any other. Like Celery's
    ``self.retry(countdown=...)`` or Dramatiq's ``Retry``, for a job that knows when trying
    again makes sense (a rate limit's reset time, a resource not ready yet)::

        raise RetryLater("the API's rate limit is reached", delay=reset_in)

    Raises:
        ValueError: ``delay`` is not from 0 to :data:`MAX_RETRY_DELAY` seconds.
    """

    def __init__(self, message: str = "", *, delay: float | None = None) -> None:
        if delay is not None and not 0 <= delay <= MAX_RETRY_DELAY:
            raise ValueError(f"delay must be from 0 to {MAX_RETRY_DELAY:g} seconds, got {delay}")
        super().__init__(message or "retry later")
        self.delay = delay


class FailNow(Exception):
    """Raise in a job to fail it at once, whatever its retry policy: it goes to the failed
    jobs with this error, retries left or not. For errors that no retry can mend (bad input
    found late, a resource that is gone), like Symfony's unrecoverable exceptions."""


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Options of one job definition.

    Attributes:
        queue: the queue its messages go to.
        retry: the retry policy.
        timeout: seconds an attempt may run; over it, the attempt fails with
            :class:`JobTimeout` (and is retried or failed by ``retry``). None: no limit
            but :data:`MAX_TIMEOUT`.
        priority: the default priority of its messages (0-9, higher first); None: 4.
        unique: every run holds a unique key made of the job's name and arguments: a second
            send with the same arguments is kept out while the first is queued or running.
        unique_for: seconds a run's key stays held after it was sent, even once it has run.
    """

    queue: str = "default"
    retry: Retry = field(default_factory=Retry)
    timeout: float | None = None
    priority: int | None = None
    unique: bool = False
    unique_for: float = 0.0

    def __post_init__(self) -> None:
        check_queue_name(self.queue)
        if not 0 <= self.unique_for <= MAX_HOLD_FOR:
            raise ValueError(f"unique_for must be from 0 to {MAX_HOLD_FOR:g} seconds, got {self.unique_for}")
        if self.timeout is not None and not 0 < self.timeout <= MAX_TIMEOUT:
            raise ValueError(f"timeout must be from 0 to {MAX_TIMEOUT:g} seconds, got {self.timeout}")
        if self.priority is not None and not 0 <= self.priority <= 9:
            raise ValueError(f"priority must be from 0 to 9, got {self.priority}")


@dataclass(frozen=True, slots=True)
class SendOptions:
    """Options of one message (``job.send_with(...)``).

    Attributes:
        delay: seconds the broker holds the job before it can run.
        eta: epoch seconds before which it does not run (instead of ``delay``).
        priority: 0-9, higher first; None: the job's default.
        queue: another queue than the job's.
        headers: string metadata carried in the envelope.
        job_id: the job's id (default: a new random one).
        key: a unique key: while a run of this job holding it is queued or running, another
            send with it is kept out (and gets that run's job id back).
        unique_for: seconds the key stays held after the send (None: the job's ``unique_for``).
    """

    delay: float | None = None
    eta: float | None = None
    priority: int | None = None
    queue: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    job_id: str | None = None
    key: str | None = None
    unique_for: float | None = None

    def __post_init__(self) -> None:
        if self.job_id is not None and not 0 < len(self.job_id) <= MAX_ID:
            raise ValueError(f"job_id must be 1-{MAX_ID} characters long")
        if self.key is not None and not 0 < len(self.key) <= MAX_KEY:
            raise ValueError(f"key must be 1-{MAX_KEY} characters long")
        if self.unique_for is not None and not 0 <= self.unique_for <= MAX_HOLD_FOR:
            raise ValueError(f"unique_for must be from 0 to {MAX_HOLD_FOR:g} seconds, got {self.unique_for}")
        if self.delay is not None and self.eta is not None:
            raise ValueError("give delay or eta, not both")
        if self.delay is not None and self.delay < 0:
            raise ValueError(f"delay must not be negative, got {self.delay}")
        if self.priority is not None and not 0 <= self.priority <= 9:
            raise ValueError(f"priority must be from 0 to 9, got {self.priority}")
        if self.queue is not None:
            check_queue_name(self.queue)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()):
            raise TypeError("headers must map strings to strings")

    def delay_from(self, now: float) -> float:
        if self.eta is not None:
            return max(0.0, self.eta - now)
        return self.delay or 0.0


#: The options of a plain ``job.send(...)``: made once (nothing in it is ever changed).
PLAIN_SEND = SendOptions()


class JobTimeout(Exception):
    """An attempt ran longer than its job's timeout."""


class JobExited(Exception):
    """A job raised SystemExit or KeyboardInterrupt: the attempt fails like any error (and
    is retried by the job's policy); the worker process lives on."""
