"""Destination names: parsing, validation, and topic-pattern matching.

Forms (RabbitMQ's, so its users feel at home):

* ``/queue/NAME``            a named queue, point-to-point, created on first use;
* ``/topic/KEY``             publish with routing key KEY to the built-in topic exchange;
                             SUBSCRIBE binds a private queue with KEY as a pattern;
* ``/exchange/NAME[/KEY]``   publish to a declared exchange, or SUBSCRIBE with a private
                             queue bound by KEY;
* ``/temp-queue/NAME``       a queue private to one connection, for request/reply: put it
                             in ``reply-to`` and the broker creates and subscribes it, and
                             rewrites the header to ``/reply-queue/SESSION/NAME``, the name
                             other connections send replies to;
* ``/queueit/admin``         admin requests (see :mod:`queueit.broker.admin`).

Topic patterns are ``.``-separated words where ``*`` matches one word and ``#`` zero or
more words.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass

from .errors import InvalidDestination

MAX_NAME_LENGTH = 255
_NAME_RE = re.compile(r"[^\x00-\x20\x7f~][^\x00-\x1f\x7f]*")
_KEY_RE = re.compile(r"[^\x00-\x1f\x7f]*")


class Kind(enum.Enum):
    QUEUE = "queue"
    TOPIC = "topic"
    EXCHANGE = "exchange"
    TEMP_QUEUE = "temp-queue"
    REPLY_QUEUE = "reply-queue"
    ADMIN = "queueit"


_PREFIXES = {
    "/queue/": Kind.QUEUE,
    "/topic/": Kind.TOPIC,
    "/exchange/": Kind.EXCHANGE,
    "/temp-queue/": Kind.TEMP_QUEUE,
    "/reply-queue/": Kind.REPLY_QUEUE,
    "/queueit/": Kind.ADMIN,
}


@dataclass(frozen=True, slots=True)
class Destination:
    kind: Kind
    name: str  # queue name, topic key, exchange name, temp-queue name
    key: str = ""  # routing key or binding pattern for exchanges

    def __str__(self) -> str:
        if self.kind is Kind.EXCHANGE:
            return f"/exchange/{self.name}/{self.key}" if self.key else f"/exchange/{self.name}"
        return f"/{self.kind.value}/{self.name}"


def check_name(name: str, what: str) -> str:
    if not name or len(name) > MAX_NAME_LENGTH or _NAME_RE.fullmatch(name) is None:
        raise InvalidDestination(
            f"Invalid {what} name {name[:80]!r}: use 1-{MAX_NAME_LENGTH} printable characters, "
            "not starting with a space or '~'."
        )
    return name


@functools.lru_cache(maxsize=4096)
def parse_destination(text: str) -> Destination:
    """Parse a ``destination`` header.

    Raises:
        InvalidDestination: unknown prefix or invalid name; the message says which forms exist.
    """
    for prefix, kind in _PREFIXES.items():
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            if kind is Kind.EXCHANGE:
                name, _, key = rest.partition("/")
                if len(key) > MAX_NAME_LENGTH or _KEY_RE.fullmatch(key) is None:
                    raise InvalidDestination(
                        f"Invalid routing key {key[:80]!r}: "
                        f"use at most {MAX_NAME_LENGTH} printable characters."
                    )
                return Destination(kind, check_name(name, "exchange"), key)
            return Destination(kind, check_name(rest, kind.value))
    raise InvalidDestination(
        f"Unknown destination {text[:80]!r}; use /queue/NAME, /topic/NAME, /exchange/NAME/KEY "
        "or /temp-queue/NAME."
    )


@functools.lru_cache(maxsize=16384)
def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more words."""
    return _match(tuple(pattern.split(".")) if pattern else (), tuple(key.split(".")) if key else ())


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    # Dynamic programming over (pattern position, word position): O(len(pattern) * len(words)),
    # so a pattern full of '#' cannot make matching exponential.
    reach = [False] * (len(words) + 1)  # reach[j]: pattern[:i] can match words[:j]
    reach[0] = True
    for part in pattern:
        if part == "#":
            seen = False
            for j in range(len(words) + 1):
                seen = seen or reach[j]
                reach[j] = seen
        else:
            reach = [False] + [reach[j] and (part == "*" or part == words[j]) for j in range(len(words))]
    return reach[len(words)]
