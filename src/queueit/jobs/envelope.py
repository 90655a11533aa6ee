"""The job envelope: what a queued job looks like on the wire (version 1).

A job message body is one UTF-8 JSON object (documented in ``docs/jobs.md``, "The envelope")::

    {
      "queueit": 1,                      # envelope version; a consumer refuses versions it does not know
      "id": "4f0c…",                     # job id: unique, kept across retries
      "job": "send_email",               # the registered job name
      "queue": "email",
      "args": [],                        # positional arguments (JSON values)
      "kwargs": {"to": "a@example.com"}, # keyword arguments (JSON values)
      "attempt": 0,                      # attempts made before this one
      "created_at": 1764230000123,       # epoch milliseconds when first sent
      "trace_id": "9b1d…",               # kept across retries, workflows and events it causes
      "headers": {},                     # free string metadata
      "unique": "",                      # the unique key the job holds in its queue ("": none)
      "errors": []                       # one entry per failed attempt: attempt, type, message,
                                         # traceback, at (epoch ms)
    }

Unknown fields are kept when the worker re-publishes a job (a retry), so newer producers can
add fields without breaking older workers. A body that is JSON but not an envelope (the talk's
PHP ``json_encode([...])``) is a *plain message*: :func:`decode` returns it as such and the
queue's handler takes it as its argument.

Errors: :class:`InvalidMessage` (not UTF-8, not JSON, or a malformed envelope). It is never
retried: the worker moves the raw bytes to the dead-letter queue with the reason.
"""

from __future__ import annotations

import contextvars
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..transports.base import MAX_UNIQUE_KEY, QUEUE_NAME

VERSION = 1
#: Error entries an envelope keeps (the oldest are dropped first); tracebacks are cut to this size.
MAX_ERRORS = 20
MAX_TRACEBACK = 8_000
#: The longest job id and trace id: a job id travels in a header of every copy of the job.
MAX_ID = 255
#: The longest job name (it travels in the ``job`` header).
MAX_JOB_NAME = 1_000


#: The trace id of the job running in this context, set by the worker while it runs: the
#: envelopes made meanwhile (jobs it sends, events it emits) carry it on, so that one trace id
#: follows all the work one message causes. "" outside a job.
running_trace: contextvars.ContextVar[str] = contextvars.ContextVar("queueit_running_trace", default="")


class InvalidMessage(ValueError):
    """A message that cannot become a job; the reason is the message text."""


@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    job: str
    queue: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 0
    created_at: int = 0
    trace_id: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    errors: tuple[Mapping[str, Any], ...] = ()
    unique: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # fields this version does not know

    @classmethod
    def new(
        cls,
        job: str,
        queue: str,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        trace_id: str | None = None,
        job_id: str | None = None,
        unique: str = "",
    ) -> Envelope:
        random_id, random_trace = _random_ids()
        return cls(
            id=job_id or random_id,
            job=job,
            queue=queue,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            created_at=int(time.time() * 1000),
            trace_id=trace_id or running_trace.get() or random_trace,
            headers=dict(headers or {}),
            unique=unique,
        )

    def encode(self) -> bytes:
        """The JSON body.

        Raises:
            TypeError: an argument is not a JSON value (str, int, float, bool, None, list, dict).
        """
        document = {
            **self.extra,
            "queueit": VERSION,
            "id": self.id,
            "job": self.job,
            "queue": self.queue,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "attempt": self.attempt,
            "created_at": self.created_at,
            "trace_id": self.trace_id,
            "headers": dict(self.headers),
            "errors": list(self.errors),
        }
        if self.unique:
            document["unique"] = self.unique
        try:
            return _ENCODER.encode(document).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"job {self.job!r}: arguments must be JSON values (str, int, float, bool, None, list, "
                f"dict, or a pydantic/msgspec model): {exc}"
            ) from None

    def next_attempt(self, error: Mapping[str, Any]) -> Envelope:
        """This job after a failed attempt: one more attempt made, the error recorded."""
        return replace(self, attempt=self.attempt + 1, errors=(*self.errors, error)[-MAX_ERRORS:])

    def failed(self, error: Mapping[str, Any]) -> Envelope:
        """The record kept for a job out of retries: ready to run again with fresh retries
        (``attempt`` 0) when redriven, every error kept in ``errors``."""
        return replace(self, attempt=0, errors=(*self.errors, error)[-MAX_ERRORS:])


@dataclass(frozen=True, slots=True)
class Plain:
    """A JSON message that is not an envelope, published by any client in any language."""

    value: Any


#: Compact JSON, UTF-8 kept as is, no NaN (not JSON); made once, not per message.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _random_ids() -> tuple[str, str]:
    """Two random ids in UUID4 hex form, from one read of the OS's random source."""
    raw = bytearray(os.urandom(32))
    for at in (0, 16):
        raw[at + 6] = raw[at + 6] & 0x0F | 0x40  # version 4
        raw[at + 8] = raw[at + 8] & 0x3F | 0x80  # RFC 4122 variant
    text = raw.hex()
    return text[:32], text[32:]


#: The envelope's fields and their JSON types (see docs/jobs.md), in the order of
#: :class:`Envelope`'s; id and job are required.
_FIELDS: tuple[tuple[str, type], ...] = (
    ("id", str),
    ("job", str),
    ("queue", str),
    ("args", list),
    ("kwargs", dict),
    ("attempt", int),
    ("created_at", int),
    ("trace_id", str),
    ("headers", dict),
    ("errors", list),
    ("unique", str),
)
_REQUIRED = ("id", "job")
_MISSING: Any = object()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


#: One decoder for every message (``json.loads`` checks its keyword arguments on each call).
#: Python's own JSON reads NaN and Infinity, which are not JSON: refused here, as the encoder
#: refuses them. (A number beyond a float's range, 1e400, is JSON and becomes infinity, which
#: the encoder refuses too: the worker sends such a job to the dead letters when a copy of it
#: cannot be encoded. A hook on every float to refuse it here would slow float-heavy bodies
#: by half.)
_DECODER = json.JSONDecoder(parse_constant=_no_constant)
#: The keys of an error entry that must be strings where present (``queueit failed`` shows them).
_ERROR_TEXTS = ("type", "message", "traceback")


def decode(body: bytes) -> Envelope | Plain:
    """An envelope or a plain JSON message.

    Raises:
        InvalidMessage: not UTF-8 JSON, or an envelope with a missing or mistyped field, or a
            version this worker does not know.
    """
    try:
        text = body.decode("utf-8")  # json.loads(bytes) would also guess UTF-16 and UTF-32
    except UnicodeDecodeError:
        raise InvalidMessage("the body is not UTF-8 text") from None
    try:
        value = _DECODER.decode(text)
    except ValueError as exc:
        raise InvalidMessage(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidMessage("the body is JSON nested too deeply to read") from None
    if type(value) is not dict or "queueit" not in value:
        return Plain(value)
    version = value.pop("queueit")
    if version != VERSION:
        raise InvalidMessage(
            f"envelope version {version!r} is not one this worker reads (it reads {VERSION})"
        )
    # Every known field is taken out of ``value`` in one pass; what is left is ``extra``.
    found = [value.pop(name, _MISSING) for name, _ in _FIELDS]
    for (name, kind), got in zip(_FIELDS, found, strict=True):
        if got is _MISSING:
            if name in _REQUIRED:
                raise InvalidMessage(f"the envelope has no {name!r} field")
        # json.loads makes exact types, so an exact check is the JSON type check (and a
        # bool, which isinstance counts as an int, is refused where a number is due).
        elif type(got) is not kind:
            raise InvalidMessage(f"the envelope's {name!r} field must be a JSON {kind.__name__}")
    ident, job, queue, args, kwargs, attempt, created_at, trace_id, headers, errors, unique = found
    if headers is _MISSING:
        headers = {}
    elif not all(type(v) is str for v in headers.values()):
        raise InvalidMessage("the envelope's headers must all be strings")
    if attempt is _MISSING:
        attempt = 0
    elif attempt < 0:
        raise InvalidMessage("the envelope's attempt must not be negative")
    # Bounded here, where a message from outside is read, not where a copy of it would be
    # refused later (a retry's headers, a unique key, ``queueit failed``'s listing).
    if not 0 < len(ident) <= MAX_ID or not 0 < len(job) <= MAX_JOB_NAME:
        raise InvalidMessage(f"the envelope's id must be 1-{MAX_ID} characters and its job 1-{MAX_JOB_NAME}")
    if trace_id is not _MISSING and len(trace_id) > MAX_ID:
        raise InvalidMessage(f"the envelope's trace_id must be at most {MAX_ID} characters")
    if unique is not _MISSING and len(unique) > MAX_UNIQUE_KEY:
        raise InvalidMessage(f"the envelope's unique key must be at most {MAX_UNIQUE_KEY} characters")
    if queue is not _MISSING and queue and not QUEUE_NAME.fullmatch(queue):
        raise InvalidMessage("the envelope's queue is not a valid queue name")
    if errors is not _MISSING and not all(
        type(e) is dict and all(type(e.get(k, "")) is str for k in _ERROR_TEXTS) for e in errors
    ):
        raise InvalidMessage("the envelope's errors must be objects with string type, message and traceback")
    return Envelope(
        ident,
        job,
        "" if queue is _MISSING else queue,
        () if args is _MISSING else tuple(args),
        {} if kwargs is _MISSING else kwargs,
        attempt,
        0 if created_at is _MISSING else created_at,
        "" if trace_id is _MISSING else trace_id,
        headers,
        () if errors is _MISSING else tuple(errors[-MAX_ERRORS:]),
        "" if unique is _MISSING else unique,
        value,
    )
