"""Typed client frames, as the server-side connection hands them to the broker.

The connection validates each frame against its version before turning it into one of
these events, so the broker never looks at raw headers to find required fields.
Every event keeps ``headers`` (first occurrence of each name) for extensions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class AckMode(enum.Enum):
    AUTO = "auto"
    CLIENT = "client"  # cumulative
    CLIENT_INDIVIDUAL = "client-individual"


@dataclass(frozen=True, slots=True)
class Connect:
    version: str
    host: str | None
    login: str | None
    passcode: str | None
    heartbeat: tuple[int, int]
    headers: dict[str, str]
    receipt: str | None = None


@dataclass(frozen=True, slots=True)
class Send:
    destination: str
    headers: dict[str, str]
    body: bytes
    transaction: str | None
    receipt: str | None


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: str
    destination: str
    ack: AckMode
    headers: dict[str, str]
    receipt: str | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: str
    headers: dict[str, str]
    receipt: str | None


@dataclass(frozen=True, slots=True)
class Ack:
    id: str
    subscription: str | None
    transaction: str | None
    headers: dict[str, str]
    receipt: str | None


@dataclass(frozen=True, slots=True)
class Nack:
    id: str
    subscription: str | None
    transaction: str | None
    headers: dict[str, str]
    receipt: str | None


@dataclass(frozen=True, slots=True)
class Begin:
    transaction: str
    receipt: str | None


@dataclass(frozen=True, slots=True)
class Commit:
    transaction: str
    receipt: str | None


@dataclass(frozen=True, slots=True)
class Abort:
    transaction: str
    receipt: str | None


@dataclass(frozen=True, slots=True)
class Disconnect:
    receipt: str | None


ClientEvent = Connect | Send | Subscribe | Unsubscribe | Ack | Nack | Begin | Commit | Abort | Disconnect


# -- events a client-side connection produces from server frames --------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    version: str
    heartbeat: tuple[int, int]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Message:
    destination: str
    message_id: str
    subscription: str
    ack: str | None
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Receipt:
    receipt_id: str
    headers: dict[str, str] = field(default_factory=dict)  # the others: what the broker adds


@dataclass(frozen=True, slots=True)
class ServerError:
    message: str
    receipt_id: str | None
    headers: dict[str, str]
    body: bytes


ServerEvent = Connected | Message | Receipt | ServerError
