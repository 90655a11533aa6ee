"""Message storage behind one narrow interface (see :mod:`.base`)."""

from .base import ALWAYS, MessageStore, QueueStore, Record, StoreCapabilities, SyncPolicy
from .memory import MemoryQueueStore, MemoryStore

__all__ = [
    "ALWAYS",
    "MemoryQueueStore",
    "MemoryStore",
    "MessageStore",
    "QueueStore",
    "Record",
    "StoreCapabilities",
    "SyncPolicy",
]
