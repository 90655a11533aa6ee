"""Groups: a callback message the broker releases once every member of a group has reported.

The job framework's ``app.group(a.s(), b.s()).then(done.s())`` (and any STOMP client) uses
two kinds of ``SEND /queueit/group``:

* **open**: ``group-id: G``, ``group-size: N`` (1-:data:`MAX_SIZE`), ``callback: /queue/Q``,
  and the callback message's body and headers. The broker keeps it, unreleased.
* **report**: ``group-id: G``, ``member: i`` (0 to N-1), ``outcome: done|failed``, and the
  member's result as a UTF-8 body (at most :data:`MAX_RESULT` bytes). A member reported
  twice (a job delivered again after a crash) counts once: the first report wins. A report
  for a group the broker does not hold (released already, or never opened) is ignored.

When the last member reports, the broker publishes the callback to ``Q``, persistent, with
the headers it was opened with plus ``group-id``, and a JSON body of content type
:data:`CONTENT_TYPE`: ``{"group": G, "body": <the callback's body>, "members": [{"outcome":
"done", "result": <text>}, ...]}`` in member order. Results beyond :data:`MAX_RESULTS` bytes
in all arrive as ``null`` (with ``"dropped": true``), so a released callback always fits a
frame.

Atomicity: a SEND of a report inside a transaction applies at its COMMIT, with the ACK of
the member's job, so a member's outcome is counted exactly when its job is settled; the
release, the group's deletion and the callback's journal write are one journal step.

Bounds and durability: at most :data:`MAX_OPEN` groups are held; each is kept at most
:data:`LIFETIME_MS` (a group whose members never all report is dropped then, with a
warning). Groups and reports are journal records (``group/<G>``), written with the frame
(its receipt covers them), and read back at start.

Permissions: opening needs ``write`` on the callback's queue; reporting needs it too (on the
queue the group was opened with), so a client that may not send there cannot release it.

Ownership: the core's one :class:`GroupTable`, on the event-loop thread.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from .errors import InvalidHeader
from .storage import MessageStore, Record

log = logging.getLogger("queueit.broker")

NAMESPACE_PREFIX = "group/"
CONTENT_TYPE = "application/vnd.queueit.group+json"
MAX_SIZE = 10_000
MAX_OPEN = 100_000
MAX_RESULT = 64 * 1024
MAX_RESULTS = 1024 * 1024
MAX_CALLBACK = 256 * 1024
LIFETIME_MS = 30 * 86_400_000
OUTCOMES = ("done", "failed")
#: Headers of an open SEND that steer the broker and are not passed on to the callback.
_CONTROL = frozenset({"destination", "receipt", "transaction", "content-length", "group-size", "callback"})


@dataclass(slots=True)
class Group:
    id: str
    size: int
    queue: str  # where the callback goes
    headers: tuple[tuple[str, str], ...]
    body: bytes
    until: int
    members: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # member -> (outcome, result)
    result_bytes: int = 0

    def callback_body(self) -> bytes:
        """The callback's body: the group's outcome (see the module doc)."""
        members: list[dict[str, object]] = []
        budget = MAX_RESULTS
        for i in range(self.size):
            outcome, result = self.members[i]
            entry: dict[str, object] = {"outcome": outcome, "result": None}
            if len(result) <= budget:
                entry["result"] = result.decode()
                budget -= len(result)
            else:
                entry["dropped"] = True
            members.append(entry)
        document = {"group": self.id, "body": self.body.decode(), "members": members}
        return json.dumps(document, ensure_ascii=False).encode()


class GroupTable:
    """The groups the broker holds, oldest first."""

    def __init__(self, store: MessageStore) -> None:
        self._store = store
        self.groups: dict[str, Group] = {}
        self.released = 0
        self.expired = 0

    def load(self, group_id: str, records: dict[str, Record]) -> None:
        head = records.get("")
        if head is None:
            self._store.drop_records(NAMESPACE_PREFIX + group_id)  # reports of a group not kept
            return
        spec = json.loads(head.value)
        group = Group(
            group_id,
            int(spec["size"]),
            str(spec["queue"]),
            tuple((str(k), str(v)) for k, v in spec["headers"]),
            str(spec["body"]).encode(),
            head.until,
        )
        for key, record in records.items():
            if key.startswith("m"):
                outcome, _, result = record.value.partition(b"\n")
                group.members[int(key[1:])] = (outcome.decode(), result)
        self.groups[group_id] = group

    def loaded(self) -> None:
        """After the last :meth:`load`: oldest first again (what :meth:`sweep` relies on)."""
        self.groups = dict(sorted(self.groups.items(), key=lambda item: item[1].until))

    def check_open(self, group_id: str) -> None:
        """Refuse an open (before anything of its frame, or its COMMIT, is applied).

        Raises:
            InvalidHeader: the group is open already, or the broker holds its most.
        """
        if group_id in self.groups:
            raise InvalidHeader(f"Group {group_id!r} is open already; use a new group-id.")
        if len(self.groups) >= MAX_OPEN:
            raise InvalidHeader(f"The broker holds {MAX_OPEN} open groups, its most; try again later.")

    def open(
        self, group_id: str, size: int, queue: str, headers: dict[str, str], body: bytes, now: int
    ) -> None:
        """Hold the group's callback (checked by :meth:`check_open`; a second open of one id
        within one COMMIT is ignored)."""
        if group_id in self.groups:
            return
        kept = tuple((k, v) for k, v in headers.items() if k not in _CONTROL)
        group = Group(group_id, size, queue, kept, body, now + LIFETIME_MS)
        self.groups[group_id] = group
        spec = {"size": size, "queue": queue, "headers": kept, "body": body.decode()}
        self._store.put_record(
            NAMESPACE_PREFIX + group_id, "", Record(json.dumps(spec).encode(), group.until)
        )

    def report(self, group_id: str, member: int, outcome: str, result: bytes) -> Group | None:
        """Count one member; the group once every member has reported (it is then gone)."""
        group = self.groups.get(group_id)
        if group is None or member in group.members or member >= group.size:
            return None
        group.members[member] = (outcome, result)
        if len(group.members) < group.size:
            self._store.put_record(
                NAMESPACE_PREFIX + group_id,
                f"m{member}",
                Record(outcome.encode() + b"\n" + result, group.until),
            )
            return None
        del self.groups[group_id]
        self._store.drop_records(NAMESPACE_PREFIX + group_id)
        self.released += 1
        return group

    def sweep(self, now: int) -> None:
        """Drop groups past their lifetime (oldest first, so this stops at the first live one)."""
        while self.groups:
            group = next(iter(self.groups.values()))
            if group.until > now:
                return
            del self.groups[group.id]
            self._store.drop_records(NAMESPACE_PREFIX + group.id)
            self.expired += 1
            log.warning(
                "group %s dropped: %d of its %d members reported within %d days",
                group.id, len(group.members), group.size, LIFETIME_MS // 86_400_000,
            )  # fmt: skip
