"""queueit: an embedded STOMP 1.0-1.2 message broker, its clients, jobs and workers.

The public API is what ``__all__`` lists; everything else may change without notice.
"""

from ._version import __version__
from .client import AsyncClient, Client, ClientError, ConnectionClosed, ReceiveTimeout, ServerRefused
from .jobs import App, Envelope, InvalidMessage, Job, JobTimeout, Middleware, Progress, Queue, Retry, current
from .stomp import Limits, Message

__all__ = [
    "App",
    "AsyncClient",
    "Client",
    "ClientError",
    "ConnectionClosed",
    "Envelope",
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
    "ServerRefused",
    "__version__",
    "current",
]
