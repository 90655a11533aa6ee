"""queueit: an embedded STOMP 1.0-1.2 message broker, its clients, jobs and workers.

The public API is what ``__all__`` lists; everything else may change without notice.
"""

from ._version import __version__
from .client import AsyncClient, Client, ClientError, ConnectionClosed, ReceiveTimeout, ServerRefused
from .jobs import (
    App,
    Envelope,
    FailNow,
    InvalidMessage,
    Job,
    JobTimeout,
    Middleware,
    Progress,
    Queue,
    Retry,
    RetryLater,
    current,
)
from .stomp import Limits, Message

__all__ = [
    "App",
    "AsyncClient",
    "Client",
    "ClientError",
    "ConnectionClosed",
    "Envelope",
    "FailNow",
    "InvalidMessage",
    "Job",
    "JobTimeout",
    "Limits",
    "Message",
    "Middleware",
    "Progress",
    "Queue",
    "ReceiveTimeout",
    "Retry",
    "RetryLater",
    "ServerRefused",
    "__version__",
    "current",
]
