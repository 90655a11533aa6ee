"""Errors of the queueit STOMP client.

Tree::

    ClientError
    ├── ConnectionClosed     the socket closed, or the server closed the connection
    │   └── ServerRefused    the server sent an ERROR frame (``message``, ``detail``)
    └── ReceiveTimeout       nothing arrived within the time asked for
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error raised by :mod:`queueit.client`."""


class ConnectionClosed(ClientError):
    pass


class ServerRefused(ConnectionClosed):
    def __init__(self, message: str, detail: str = "", receipt_id: str | None = None) -> None:
        super().__init__(f"{message}: {detail}" if detail else message)
        self.message = message
        self.detail = detail
        self.receipt_id = receipt_id


class ReceiveTimeout(ClientError):
    pass
