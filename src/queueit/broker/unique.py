"""Unique keys: a SEND that names a key another message of its queue holds is kept out.

A SEND to a queue may carry ``unique-key: K``. While a message with key K is in the queue
(ready, delayed, or delivered and not yet settled), another SEND with K to that queue is
dropped, and its RECEIPT says so (``unique-duplicate: true`` and the ``unique-ref`` of the
holder). ``unique-for: MS`` keeps the key held at least that long after the SEND, even when
its message has already been consumed: what a scheduler firing one tick from several
places needs. ``unique-ref`` (default: the message id) is what a kept-out sender is told.
A SEND with the same ``unique-ref`` as a hold whose message has left takes the hold over
(the job's own retry, sent while ``unique-for`` still holds the key), keeping the later of
the two times; any other SEND is kept out until then.

Within a COMMIT, ACKs and NACKs apply before SENDs, so a consumer that acks a message and
sends its retry (with the same key) in one transaction hands the key over, never losing
or doubling it.

Durability: a hold is a :class:`~queueit.broker.storage.Record` tied to its message's
journal entry (``seq``), written with the SEND (its receipt covers both). At start, a hold
whose message is gone is dropped, unless its ``unique-for`` time is still ahead; so a crash
between a message's removal and its hold's never leaves a key held by nothing.

Ownership: a :class:`UniqueKeys` belongs to one queue, on the event-loop thread.
Only SENDs take holds: a message moved by the broker (dead-lettered, redriven) does not,
so moving never drops one.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Container
from dataclasses import dataclass

from .messages import Message
from .storage import MessageStore, Record

#: Longest key and ref a SEND may give; longest ``unique-for`` (30 days).
MAX_KEY_LENGTH = 255
MAX_UNIQUE_FOR_MS = 30 * 86_400_000
NAMESPACE = "unique/"


@dataclass(slots=True)
class Hold:
    ref: str
    message_id: str  # "" once the message has left (the hold lasts only until ``until`` then)
    until: int  # epoch ms; 0: only while the message is in the queue


class UniqueKeys:
    """The keys held in one queue."""

    __slots__ = ("_clock", "_ns", "_store", "_timed", "holds", "kept_out")

    def __init__(self, queue: str, store: MessageStore, clock: Callable[[], int]) -> None:
        self._ns = NAMESPACE + queue
        self._store = store
        self._clock = clock
        self.holds: dict[str, Hold] = {}
        self._timed: list[tuple[int, str]] = []  # (until, key) of time-limited holds
        self.kept_out = 0  # SENDs dropped as duplicates

    def load(self, records: dict[str, Record]) -> None:
        """Holds kept from before this start (see the module doc)."""
        for key, record in records.items():
            message_id, _, ref = record.value.decode().partition("\n")
            self.holds[key] = Hold(ref, message_id if record.seq else "", record.until)
            if record.until:
                heapq.heappush(self._timed, (record.until, key))

    def holder(self, key: str) -> Hold | None:
        """The live hold on ``key``, if any."""
        hold = self.holds.get(key)
        if hold is not None and not hold.message_id and hold.until <= self._clock():
            self._forget(key)
            return None
        return hold

    def take(self, message: Message, ref: str, until: int) -> Hold:
        """``message`` holds its key (call :meth:`stored` once the queue has it)."""
        hold = self.holds[message.unique] = Hold(ref, message.id, until)
        if until:
            heapq.heappush(self._timed, (until, message.unique))
        return hold

    def stored(self, message: Message, hold: Hold) -> None:
        """Write the hold, unless it has already gone with its message (auto-acked in passing)."""
        if self.holds.get(message.unique) is hold:
            value = f"{message.id}\n{hold.ref}".encode()
            self._store.put_record(self._ns, message.unique, Record(value, hold.until, message.seq))

    def release(self, message: Message) -> None:
        """``message`` has left its queue: its key is free, or held until its time is up."""
        hold = self.holds.get(message.unique)
        if hold is None or hold.message_id != message.id:
            return  # a message that did not take the hold (a duplicate moved here, say)
        if hold.until > self._clock():
            hold.message_id = ""  # the record stays; it outlives the message by design
        else:
            self._forget(message.unique)

    def purged(self, in_flight: Container[str]) -> None:
        """The queue was purged: only delivered messages keep their holds. (Delayed
        messages, which a purge keeps, lose theirs too: documented, and rare enough.)"""
        for key, hold in list(self.holds.items()):
            if hold.message_id and hold.message_id not in in_flight:
                hold.message_id = ""
                if hold.until <= self._clock():
                    self._forget(key)

    def sweep(self) -> None:
        """Forget time holds whose time is up and whose message has gone."""
        now = self._clock()
        timed = self._timed
        while timed and timed[0][0] <= now:
            until, key = heapq.heappop(timed)
            hold = self.holds.get(key)
            if hold is not None and not hold.message_id and hold.until == until:
                self._forget(key)

    def drop(self) -> None:
        """The queue is deleted."""
        self.holds.clear()
        self._timed.clear()
        self._store.drop_records(self._ns)

    def _forget(self, key: str) -> None:
        del self.holds[key]
        self._store.delete_record(self._ns, key)
