"""Message storage behind one narrow interface (see :mod:`.base`)."""

from .base import MessageStore, QueueStore, StoreCapabilities
from .memory import MemoryQueueStore, MemoryStore

__all__ = ["MemoryQueueStore", "MemoryStore", "MessageStore", "QueueStore", "StoreCapabilities"]
