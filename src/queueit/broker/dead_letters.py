"""Dead-letter queue tooling behind ``queueit dlq list|show|redrive|purge QUEUE``
(and ``queueit failed``, which reads them as failed jobs).

A dead-lettered message carries ``x-dead-letter-reason`` (rejected, invalid, expired,
max-deliveries, overflow), ``x-dead-letter-queue`` (where it was), ``-destination`` (what
its producer addressed), ``-deliveries`` and ``-time`` (epoch ms). Redrive moves it back
to that queue without those headers, with a fresh delivery count, one journal
transaction per message (never lost, never doubled).

Listing reads messages without taking them; redrive takes them, so it waits for messages
read back from disk, and answers when done (or at ``limit``). A listing with bodies is cut
into pages of about :data:`MAX_LISTING_BYTES` (``offset``, ``next``): a client reads a reply
as one frame, and a few hundred failed jobs with their tracebacks already fill one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import InvalidDestination
from .messages import Message

if TYPE_CHECKING:
    from .core import BrokerCore
    from .queues import Queue

DEAD_LETTER_HEADER_PREFIX = "x-dead-letter-"
#: Messages one list, show or redrive request handles at most.
MAX_BATCH = 10_000
#: A listing with bodies adds no more dead letters past this many bytes of JSON (one always):
#: within the 32 MiB the admin client reads, few pages (each reads the oldest ones again).
MAX_LISTING_BYTES = 8 * 1024 * 1024

Respond = Callable[[dict[str, Any]], None]


def dead_letter_queue_of(core: BrokerCore, name: str) -> str:
    """The dead-letter queue's name for queue ``name``.

    Raises:
        InvalidDestination: the queue has no dead-letter queue.
    """
    target = core.queue_settings.for_queue(name).dead_letter_queue(name)
    if target is None:
        raise InvalidDestination(
            f"Queue {name!r} has no dead-letter queue (its dead_letter setting is empty)."
        )
    return target


def summary(message: Message) -> dict[str, Any]:
    h = dict(message.headers)
    return {
        "id": message.id,
        "reason": h.get("x-dead-letter-reason"),
        "queue": h.get("x-dead-letter-queue"),
        "destination": h.get("x-dead-letter-destination", message.destination),
        "deliveries": int(h.get("x-dead-letter-deliveries", "0") or 0),
        "time": int(h.get("x-dead-letter-time", "0") or 0),
        "size": len(message.body),
    }


def detail(message: Message) -> dict[str, Any]:
    try:
        body: dict[str, str] = {"text": message.body.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"base64": base64.b64encode(message.body).decode("ascii")}
    return {**summary(message), "headers": [list(pair) for pair in message.headers], "body": body}


def list_messages(
    dlq: Queue | None, limit: int, respond: Respond, *, with_bodies: bool = False, offset: int = 0
) -> None:
    """Up to ``limit`` dead letters from the ``offset``-th on, oldest first, among the oldest
    :data:`MAX_BATCH`; with their bodies, at most about :data:`MAX_LISTING_BYTES` of them, and
    ``next`` is the offset to ask for the rest (None when nothing was left out)."""
    if dlq is None:
        respond({"depth": 0, "messages": [], "next": None})
        return

    def page(messages: list[Message]) -> None:
        listed: list[dict[str, Any]] = []
        size = 0
        for m in messages[offset:]:
            described = detail(m) if with_bodies else summary(m)
            if with_bodies:
                size += len(json.dumps(described))
                if listed and size > MAX_LISTING_BYTES:
                    break
            listed.append(described)
        cut = len(listed) < len(messages[offset:])
        respond({"depth": len(dlq), "messages": listed, "next": offset + len(listed) if cut else None})

    dlq.store.peek(min(MAX_BATCH, offset + limit), page)


def show_message(dlq: Queue | None, message_id: str, respond: Respond) -> None:
    def found(messages: list[Message]) -> None:
        for m in messages:
            if m.id == message_id:
                respond({"message": detail(m)})
                return
        respond(
            {"ok": False, "error": f"No message {message_id!r} among the first {MAX_BATCH} dead letters."}
        )

    if dlq is None:
        found([])
    else:
        dlq.store.peek(MAX_BATCH, found)


def redrive(core: BrokerCore, dlq: Queue, only_id: str | None, limit: int, respond: Respond) -> None:
    """Move dead letters back to the queues they came from, oldest first."""
    _take_out(core, dlq, only_id, limit, lambda m: core.redrive(dlq, m), "moved", respond)


def delete(core: BrokerCore, dlq: Queue, only_id: str, respond: Respond) -> None:
    """Delete the dead letter ``only_id``."""

    def drop(message: Message) -> bool:
        dlq.forget(message)
        return True

    _take_out(core, dlq, only_id, 1, drop, "purged", respond)


def _take_out(
    core: BrokerCore,
    dlq: Queue,
    only_id: str | None,
    limit: int,
    act: Callable[[Message], bool],
    done: str,
    respond: Respond,
) -> None:
    """Take dead letters (all up to ``limit``, or the one with ``only_id``) and ``act`` on
    each; a message ``act`` declines, or that is not the one asked for, is put back."""
    count = 0
    passed: list[Message] = []  # taken while looking for ``only_id``: put back at the end
    store = dlq.store
    dispatch = store.on_ready

    def finish(error: str | None = None) -> None:
        store.on_ready = dispatch
        if passed:
            store.requeue(passed)
        now = core.now_ms()
        dlq.dispatch(now)
        if error is not None:
            respond({"ok": False, "error": error, done: count})
        else:
            respond({done: count, "left": len(dlq)})

    def step() -> None:
        nonlocal count
        while count < limit and len(passed) < MAX_BATCH:
            message = store.take()
            if message is None:
                if len(store):  # the next ones are being read back from disk
                    store.on_ready = step
                    return
                break
            if (only_id is not None and message.id != only_id) or not act(message):
                passed.append(message)
                continue
            count += 1
            if only_id is not None:
                break
        if only_id is not None and not count:
            finish(f"No message {only_id!r} among the first {MAX_BATCH} dead letters.")
        else:
            finish()

    step()
