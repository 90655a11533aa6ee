"""Admin requests over STOMP, and the read-only snapshot behind ``queueit stat``.

A client with the ``admin`` permission sends to ``/queueit/admin`` with a ``command``
header and a ``reply-to`` (normally ``/temp-queue/NAME``); the broker answers there
with a JSON body ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.

Commands and their headers:

* ``stat``                                      queues, topics, exchanges, connections
* ``exchange-declare`` ``name``, ``type``       type: direct, fanout, topic
* ``exchange-delete``  ``name``
* ``bind`` / ``unbind`` ``exchange``, ``queue``, ``key``
* ``queue-purge`` / ``queue-delete`` ``queue``
* ``dlq-list``  ``queue``, ``limit``          the queue's dead letters, oldest first
* ``dlq-show``  ``queue``, ``id``             one dead letter with headers and body
* ``dlq-redrive`` ``queue``, [``id``], [``limit``]  move them back to their queue
* ``dlq-purge`` ``queue``

Only destinations the user may administer are shown or changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..stomp import Send
from . import dead_letters
from .destinations import check_name
from .errors import AccessDenied, BrokerError, InvalidDestination
from .exchanges import TOPIC_EXCHANGE, ExchangeType
from .queues import QueueKind

if TYPE_CHECKING:
    from .core import BrokerCore, SessionState


def handle_admin(core: BrokerCore, s: SessionState, ev: Send, respond: Callable[[bytes], None]) -> None:
    """Run one admin request; ``respond`` gets the JSON reply body (now, or once the
    messages it reads are back from disk)."""
    command = ev.headers.get("command", "")

    def answer(result: dict[str, Any]) -> None:
        respond(json.dumps({"ok": True, **result}).encode())

    try:
        if command.startswith("dlq-"):
            _dead_letters(core, s, command, ev.headers, answer)
        else:
            answer(_run(core, s, command, ev.headers))
    except BrokerError as exc:
        respond(json.dumps({"ok": False, "error": exc.detail}).encode())


def _need(s: SessionState, destination: str) -> None:
    if not s.user.permissions.allows("admin", destination):
        raise AccessDenied(s.user.name, "admin", destination)


def _dead_letters(
    core: BrokerCore,
    s: SessionState,
    command: str,
    h: dict[str, str],
    answer: Callable[[dict[str, Any]], None],
) -> None:
    name = check_name(h.get("queue", ""), "queue")
    _need(s, f"/queue/{name}")
    dlq_name = dead_letters.dead_letter_queue_of(core, name)
    _need(s, f"/queue/{dlq_name}")
    dlq = core.queues.get(dlq_name)
    limit = _limit(h.get("limit"))
    if command == "dlq-list":
        dead_letters.list_messages(
            dlq,
            limit,
            lambda r: answer({"queue": name, "dead_letter_queue": dlq_name, **r}),
            with_bodies=h.get("detail") == "true",
            offset=_count(h.get("offset"), "offset", 0, dead_letters.MAX_BATCH - 1, 0),
        )
    elif command == "dlq-show":
        dead_letters.show_message(dlq, h.get("id", ""), answer)
    elif command == "dlq-redrive":
        if dlq is None:
            answer({"moved": 0, "left": 0})
        else:
            dead_letters.redrive(core, dlq, h.get("id") or None, limit, answer)
    elif command == "dlq-purge":
        only_id = h.get("id")
        if not only_id:
            answer({"purged": dlq.purge() if dlq is not None else 0})
        elif dlq is None:
            answer({"ok": False, "error": f"No message {only_id!r} among the dead letters.", "purged": 0})
        else:
            dead_letters.delete(core, dlq, only_id, answer)
    else:
        raise InvalidDestination(
            f"Unknown admin command {command!r}; use dlq-list, dlq-show, dlq-redrive or dlq-purge."
        )


def _limit(raw: str | None) -> int:
    return _count(raw, "limit", 1, dead_letters.MAX_BATCH, dead_letters.MAX_BATCH)


def _count(raw: str | None, name: str, low: int, high: int, default: int) -> int:
    if raw is None or raw == "":
        return default
    if len(raw) > 12 or not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidDestination(f"{name} must be an integer from {low} to {high}, got {raw[:20]!r}.")
    return int(raw)


def _run(core: BrokerCore, s: SessionState, command: str, h: dict[str, str]) -> dict[str, Any]:
    perms = s.user.permissions

    if command == "stat":
        return stat(core, lambda d: perms.allows("admin", d))
    if command == "exchange-declare":
        name = check_name(h.get("name", ""), "exchange")
        _need(s, f"/exchange/{name}")
        try:
            kind = ExchangeType(h.get("type", "direct"))
        except ValueError:
            raise InvalidDestination("type must be direct, fanout or topic") from None
        core.declare_exchange(name, kind)
        return {}
    if command == "exchange-delete":
        name = h.get("name", "")
        _need(s, f"/exchange/{name}")
        exchange = core.exchanges.get(name)
        if exchange is None or exchange.builtin:
            raise InvalidDestination(f"No deletable exchange named {name!r}.")
        for key, queue in list(exchange.bindings):
            exchange.unbind(queue, key)
        del core.exchanges[name]
        return {}
    if command in ("bind", "unbind"):
        exchange_name, queue_name, key = h.get("exchange", ""), h.get("queue", ""), h.get("key", "")
        _need(s, f"/exchange/{exchange_name}")
        _need(s, f"/queue/{queue_name}")
        if command == "bind":
            core.bind(exchange_name, queue_name, key)
        else:
            found, bound = core.exchanges.get(exchange_name), core.queues.get(queue_name)
            if found is None or bound is None:
                raise InvalidDestination("No such exchange or queue.")
            found.unbind(bound, key)
        return {}
    if command in ("queue-purge", "queue-delete"):
        name = h.get("queue", "")
        _need(s, f"/queue/{name}")
        target = core.queues.get(name)
        if target is None or target.kind is not QueueKind.NAMED:
            raise InvalidDestination(f"No queue named {name!r}.")
        if command == "queue-purge":
            purged = target.purge()
            target.dispatch(core.now_ms())  # releases publishers held back by the backlog
            return {"purged": purged}
        if target.consumers:
            raise InvalidDestination(f"Queue {name!r} has consumers; unsubscribe them first.")
        core.delete_queue(target)
        return {}
    raise InvalidDestination(
        f"Unknown admin command {command!r}; use stat, exchange-declare, exchange-delete, bind, unbind, "
        "queue-purge or queue-delete."
    )


def stat(core: BrokerCore, visible: Callable[[str], bool]) -> dict[str, Any]:
    """What ``visible`` (the user's admin permission) lets the user see.

    Private queues (``~...``: subscriptions, temp and reply queues) are never named, and
    the connection count is shown only to those who may administer the broker itself.
    """
    queues = []
    topics: dict[str, int] = {}
    durable = []
    for queue in core.queues.values():
        if queue.kind is QueueKind.NAMED and visible(f"/queue/{queue.name}"):
            queues.append(
                {
                    "name": queue.name,
                    "depth": len(queue),
                    "consumers": len(queue.consumers),
                    "in_flight": queue.in_flight,
                    "published": queue.published,
                    "delivered": queue.delivered,
                    "acked": queue.acked,
                    "expired": queue.expired,
                    "flow_blocks": queue.flow_blocks,
                    "scheduled": queue.store.scheduled,
                    "dead_lettered": queue.dead_lettered,
                    "dropped": queue.dropped,
                    "fsync": str(queue.store.policy) if queue.store.policy is not None else None,
                    "in_memory": queue.store.in_memory,
                    "unique_keys": 0 if queue.unique is None else len(queue.unique.holds),
                    "kept_out": 0 if queue.unique is None else queue.unique.kept_out,
                }
            )
        elif queue.kind is QueueKind.DURABLE and any(
            visible(_topic_or_exchange(ex, key)) for ex, key in queue.bindings
        ):
            durable.append(
                {
                    "name": queue.name.removeprefix("~durable/"),
                    "depth": len(queue),
                    "active": bool(queue.consumers),
                }
            )
    for key, queue in core.exchanges[TOPIC_EXCHANGE].bindings:
        if visible(f"/topic/{key}"):
            topics[key] = topics.get(key, 0) + len(queue.consumers)
    exchanges = [
        {
            "name": e.name,
            "type": e.type.value,
            "bindings": [[k, q.name] for k, q in e.bindings if q.kind is QueueKind.NAMED],
        }
        for e in core.exchanges.values()
        if not e.builtin and visible(f"/exchange/{e.name}")
    ]
    return {
        "store": core.store.capabilities.name,
        "journal": core.store.stats() if visible(ADMIN_DESTINATION) else None,
        "connections": len(core.sessions) if visible(ADMIN_DESTINATION) else None,
        # Broker-wide counts (no names: a group's or job's id may not be this user's business).
        "groups": {
            "open": len(core.groups.groups),
            "released": core.groups.released,
            "expired": core.groups.expired,
        }
        if visible(ADMIN_DESTINATION)
        else None,
        "progress_reports": len(core.progress) if visible(ADMIN_DESTINATION) else None,
        "queues": sorted(queues, key=lambda q: q["name"]),
        "topics": [{"name": k, "subscribers": v} for k, v in sorted(topics.items())],
        "durable_subscriptions": durable,
        "exchanges": exchanges,
    }


ADMIN_DESTINATION = "/queueit/admin"


def _topic_or_exchange(exchange: str, key: str) -> str:
    return f"/topic/{key}" if exchange == TOPIC_EXCHANGE else f"/exchange/{exchange}/{key}"
