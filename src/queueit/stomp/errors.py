"""Errors of the STOMP protocol layer.

Tree::

    StompError
    ├── StompProtocolError      the peer broke the protocol; answer with ERROR and close
    └── LocalProtocolError      our own code used the connection object wrongly (a bug)

A ``StompProtocolError`` carries everything the ERROR frame needs: a short fixed
``message``, an optional longer ``detail`` for the body, the ``receipt-id`` of the
offending frame when it asked for one, and the ``version`` header for failed negotiation.
"""

from __future__ import annotations


class StompError(Exception):
    """Base of every error raised by :mod:`queueit.stomp`."""


class StompProtocolError(StompError):
    """The remote peer sent something the protocol forbids."""

    def __init__(
        self,
        message: str,
        *,
        detail: str = "",
        receipt_id: str | None = None,
        versions: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.receipt_id = receipt_id
        self.versions = versions


class LocalProtocolError(StompError):
    """This side tried to do something the connection state does not allow."""
