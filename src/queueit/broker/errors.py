"""Errors of the broker core.

Tree::

    BrokerError                 a client's request cannot be served; ERROR frame + close
    ├── AccessDenied            the user lacks read / write / admin on a destination
    ├── InvalidDestination      unknown prefix, bad name, missing exchange
    ├── SubscriptionError       duplicate id, unknown id, too many subscriptions
    ├── AckError                ACK/NACK of an id that is not pending on the connection
    ├── TransactionError        unknown, duplicate or oversized transaction
    ├── InvalidHeader           a header value the broker cannot accept (priority, expires, ...)
    ├── QueueFull               the queue is at its limit and its overflow policy rejects
    └── ResourceAlarm           memory or disk past its watermark for longer than the timeout

Each error carries a short ``message`` (the ERROR frame's ``message`` header) and a
``detail`` that tells the user what to do; ``str(exc)`` is never sent to a client.
"""

from __future__ import annotations


class BrokerError(Exception):
    message = "Request refused"

    def __init__(self, detail: str, *, message: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if message is not None:
            self.message = message


class AccessDenied(BrokerError):
    message = "Access refused"

    def __init__(self, user: str, permission: str, destination: str) -> None:
        super().__init__(
            f"User {user!r} lacks the {permission!r} permission on {destination!r}; "
            "grant it in the users file (queueit user add/passwd --read/--write/--admin).",
            message=f"Access refused: {permission} on {destination}",
        )
        self.permission = permission
        self.destination = destination


class InvalidDestination(BrokerError):
    message = "Invalid destination"


class SubscriptionError(BrokerError):
    message = "Subscription error"


class AckError(BrokerError):
    message = "Unknown ack id"


class TransactionError(BrokerError):
    message = "Transaction error"


class InvalidHeader(BrokerError):
    message = "Invalid header"


class QueueFull(BrokerError):
    message = "Queue full"


class ResourceAlarm(BrokerError):
    message = "Broker out of resources"
