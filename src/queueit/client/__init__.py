"""queueit's STOMP clients: blocking (:class:`Client`) and asyncio (:class:`AsyncClient`)."""

from ..stomp import Message
from .aio import AsyncClient
from .errors import ClientError, ConnectionClosed, ReceiveTimeout, ServerRefused
from .sync import Client

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "ConnectionClosed",
    "Message",
    "ReceiveTimeout",
    "ServerRefused",
]
