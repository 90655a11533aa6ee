"""Hooks around a job's life, with typed no-op defaults: subclass and override what you need.

Hooks run in the order the middleware were given (``App(middleware=[...])``). They observe;
an exception a hook raises is logged and does not change the job's outcome, except in
:meth:`Middleware.before_enqueue`, where it stops the send (the caller sees it).
"""

from __future__ import annotations

from .envelope import Envelope


class Middleware:
    """Override any of these; each gets the job's envelope."""

    def before_enqueue(self, envelope: Envelope) -> None:
        """Before a job is sent; raising stops the send."""

    def after_enqueue(self, envelope: Envelope) -> None:
        """After the broker holds the job."""

    def before_process(self, envelope: Envelope) -> None:
        """A worker is about to run an attempt."""

    def after_process(self, envelope: Envelope, error: BaseException | None) -> None:
        """An attempt ended: ``error`` is None when it succeeded."""

    def on_retry(self, envelope: Envelope, error: BaseException, delay: float) -> None:
        """An attempt failed and the job runs again after ``delay`` seconds."""

    def on_fail(self, envelope: Envelope, error: BaseException) -> None:
        """The job is out of retries (or failed at once) and is kept as a failed job."""

    def on_invalid(self, raw: bytes, reason: str) -> None:
        """A message could not become a job and went to the dead-letter queue."""
