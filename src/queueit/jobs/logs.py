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

import logging
import os
import sys

#: Top-level names of the loggers of the client libraries the transports use.
LIBRARY_LOGGERS = frozenset({"aiormq", "aio_pika"})

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


def configure(prefix: str) -> None:
    """Log to stderr at ``QUEUEIT_LOG_LEVEL`` (INFO by default), each line tagged ``prefix``."""
    wanted = os.environ.get("QUEUEIT_LOG_LEVEL", "INFO").strip().upper()
    level = LEVELS.get(wanted, logging.INFO)
    logging.basicConfig(
        level=level, format=f"%(asctime)s %(levelname)s {prefix}%(message)s", stream=sys.stderr
    )
    if wanted not in LEVELS:
        logging.getLogger(__name__).warning(
            "QUEUEIT_LOG_LEVEL=%.40r is not one of %s; logging at INFO", wanted, ", ".join(LEVELS)
        )
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for handler in logging.getLogger().handlers:
            handler.addFilter(OneLineLibraryRecords())
