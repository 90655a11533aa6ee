"""queueit: an embedded STOMP 1.0-1.2 message broker, its clients and its CLI.

The public API is what ``__all__`` lists; everything else may change without notice.
"""

from ._version import __version__
from .client import AsyncClient, Client, ClientError, ConnectionClosed, ReceiveTimeout, ServerRefused
from .stomp import Limits, Message

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "ConnectionClosed",
    "Limits",
    "Message",
    "ReceiveTimeout",
    "ServerRefused",
    "__version__",
]
