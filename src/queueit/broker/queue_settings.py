"""Per-queue delivery settings, chosen by the first ``[[queues]]`` pattern a name matches.

Config (TOML), every key optional; an entry's missing keys take the defaults below::

    [[queues]]
    match = "orders.*"            # glob over queue names; the first matching entry wins
    fsync = "always"              # always | interval:<ms> | never
    max_deliveries = 10           # deliveries before a message is dead-lettered; 0 = no limit
    dead_letter = "DLQ.{name}"    # the queue's dead-letter queue; "" = drop instead
    ttl = 0                       # ms a message may wait before it expires; 0 = forever
    visibility_timeout = 1800000  # ms a client-ack delivery is leased for
    max_messages = 0              # ready messages at most; 0 = no limit
    max_bytes = 0                 # bytes of ready bodies at most; 0 = no limit
    overflow = "reject-publish"   # reject-publish | drop-head | dead-letter

A dead-letter queue (a queue some queue names as its ``dead_letter``, and any queue whose
name starts with ``DLQ.``) has no dead-letter queue and no delivery limit of its own
unless an entry says so, so nothing loops.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from .storage import ALWAYS, SyncPolicy

Overflow = Literal["reject-publish", "drop-head", "dead-letter"]
OVERFLOW_POLICIES: tuple[Overflow, ...] = ("reject-publish", "drop-head", "dead-letter")
DLQ_PREFIX = "DLQ."
MAX_MS = 10 * 365 * 86_400_000  # ten years: any longer is a typo


class QueueSettingsError(ValueError):
    """A ``[[queues]]`` entry is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class QueueSettings:
    fsync: SyncPolicy = ALWAYS
    max_deliveries: int = 10
    dead_letter: str = DLQ_PREFIX + "{name}"
    ttl: int = 0
    visibility_timeout: int = 1_800_000
    max_messages: int = 0
    max_bytes: int = 0
    overflow: Overflow = "reject-publish"

    def dead_letter_queue(self, name: str) -> str | None:
        """The name of ``name``'s dead-letter queue, or None to drop."""
        if not self.dead_letter:
            return None
        target = self.dead_letter.replace("{name}", name)
        return None if target == name else target


#: What a queue that is itself a dead-letter queue gets when no entry matches it.
DEAD_LETTER_DEFAULTS = QueueSettings(max_deliveries=0, dead_letter="")
#: Private queues (topic subscriptions, temp queues): nothing to keep, nothing to dead-letter.
PRIVATE = QueueSettings(fsync=SyncPolicy("never"), dead_letter="")


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    match: str
    settings: QueueSettings


class QueueSettingsTable:
    """The ``[[queues]]`` entries, in order."""

    def __init__(self, policies: tuple[QueuePolicy, ...] = ()) -> None:
        self.policies = policies
        # What the entries' dead_letter settings can name, "{name}" standing for any name.
        self._dead_letter_names = [
            re.compile(re.escape(p.settings.dead_letter).replace(re.escape("{name}"), ".+"))
            for p in policies
            if p.settings.dead_letter
        ]

    def for_queue(self, name: str) -> QueueSettings:
        for policy in self.policies:
            if fnmatch.fnmatchcase(name, policy.match):
                return policy.settings
        if name.startswith(DLQ_PREFIX) or any(r.fullmatch(name) for r in self._dead_letter_names):
            return DEAD_LETTER_DEFAULTS
        return QueueSettings()


_INT_KEYS = {
    "max_deliveries": (0, 1_000_000),
    "ttl": (0, MAX_MS),
    "visibility_timeout": (1, MAX_MS),
    "max_messages": (0, 10**12),
    "max_bytes": (0, 10**15),
}


def parse_policy(entry: dict[str, Any], index: int) -> QueuePolicy:
    """One ``[[queues]]`` table.

    Raises:
        QueueSettingsError: unknown key, wrong type or out-of-range value.
    """
    where = f"queues[{index}]"
    known = {"match", "fsync", "dead_letter", "overflow", *_INT_KEYS}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise QueueSettingsError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    match = entry.get("match")
    if not isinstance(match, str) or not match:
        raise QueueSettingsError(f'{where}.match is required: a glob over queue names, like "orders.*"')
    settings = QueueSettings()
    changes: dict[str, Any] = {}
    for key, (low, high) in _INT_KEYS.items():
        if key in entry:
            value = entry[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise QueueSettingsError(
                    f"{where}.{key} must be an integer from {low} to {high}, got {value!r}"
                )
            changes[key] = value
    if "fsync" in entry:
        raw = entry["fsync"]
        try:
            changes["fsync"] = SyncPolicy.parse(raw if isinstance(raw, str) else repr(raw))
        except ValueError as exc:
            raise QueueSettingsError(f"{where}.{exc}") from None
    if "dead_letter" in entry:
        target = entry["dead_letter"]
        if not isinstance(target, str) or len(target) > 200 or any(c in target for c in "/\x00\n\r"):
            raise QueueSettingsError(
                f'{where}.dead_letter must be a queue name (may use {{name}}) or "", got {target!r}'
            )
        changes["dead_letter"] = target
    if "overflow" in entry:
        overflow = entry["overflow"]
        if overflow not in OVERFLOW_POLICIES:
            raise QueueSettingsError(
                f"{where}.overflow must be one of {', '.join(OVERFLOW_POLICIES)}, got {overflow!r}"
            )
        changes["overflow"] = overflow
    return QueuePolicy(match, replace(settings, **changes))
