"""How the worker processes, their supervisor and the scheduler set up logging.

One record is one line, except under ``QUEUEIT_LOG_LEVEL=DEBUG``. The client libraries a
transport runs on (aiormq and aio-pika for ``amqp://``) log a full traceback when RabbitMQ
closes a connection, for example the ``INTERNAL_ERROR`` a consumer gets when a second worker
process subscribes to a quorum queue that the first one is still creating. The transport
turns that close into a ``TransportError``, and the worker logs it once and connects again.
The library's traceback would be a second, alarming report of an error already handled.
Those records keep their message and get the exception's one-line summary instead.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from typing import Any

#: Top-level names of the loggers of the client libraries the transports use.
LIBRARY_LOGGERS = frozenset({"aiormq", "aio_pika"})

#: The values ``QUEUEIT_LOG_FORMAT`` takes (any case): one text line or one JSON object per record.
FORMATS = ("text", "json")

#: The values ``QUEUEIT_LOG_LEVEL`` takes (any case).
LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


class OneLineLibraryRecords(logging.Filter):
    """Turn a client library's record with a traceback into one line naming the exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.partition(".")[0] in LIBRARY_LOGGERS:
            error = record.exc_info[1]
            if error is not None:
                record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
                record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


#: The attributes every LogRecord has; the others came in ``extra=`` (the job fields).
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonLines(logging.Formatter):
    """One JSON object per record (``QUEUEIT_LOG_FORMAT=json``), for log collectors.

    Fields: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``role`` (worker, supervisor,
    scheduler), ``pid``, ``message`` (the text line's message), the record's own fields
    (a job's records carry ``job``, ``job_id``, ``attempt``, ``outcome``, ``ms``, ``queue``,
    ``trace_id`` and, when it failed, ``error``), and ``exception`` with its traceback.
    """

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "role": self.role,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in document:
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str)


#: Each process role, and how its text lines are tagged.
PREFIXES = {"worker": "worker[%(process)d] ", "supervisor": "supervisor ", "scheduler": ""}


def configure(role: str) -> None:
    """Log to stderr at ``QUEUEIT_LOG_LEVEL`` (INFO by default): text lines tagged with the
    ``role`` (one of :data:`PREFIXES`), or JSON lines with ``QUEUEIT_LOG_FORMAT=json``."""
    prefix = PREFIXES[role]
    wanted = os.environ.get("QUEUEIT_LOG_LEVEL", "INFO").strip().upper()
    level = LEVELS.get(wanted, logging.INFO)
    form = os.environ.get("QUEUEIT_LOG_FORMAT", "text").strip().lower()
    logging.basicConfig(
        level=level, format=f"%(asctime)s %(levelname)s {prefix}%(message)s", stream=sys.stderr
    )
    if form == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLines(role))
    if wanted not in LEVELS:
        logging.getLogger(__name__).warning(
            "QUEUEIT_LOG_LEVEL=%.40r is not one of %s; logging at INFO", wanted, ", ".join(LEVELS)
        )
    if form not in FORMATS:
        logging.getLogger(__name__).warning(
            "QUEUEIT_LOG_FORMAT=%.40r is not one of %s; logging text", form, ", ".join(FORMATS)
        )
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for handler in logging.getLogger().handlers:
            handler.addFilter(OneLineLibraryRecords())
