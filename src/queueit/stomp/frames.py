"""STOMP commands and the frame value the parser produces."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Command(enum.Enum):
    CONNECT = "CONNECT"
    STOMP = "STOMP"
    SEND = "SEND"
    SUBSCRIBE = "SUBSCRIBE"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    ACK = "ACK"
    NACK = "NACK"
    BEGIN = "BEGIN"
    COMMIT = "COMMIT"
    ABORT = "ABORT"
    DISCONNECT = "DISCONNECT"
    CONNECTED = "CONNECTED"
    MESSAGE = "MESSAGE"
    RECEIPT = "RECEIPT"
    ERROR = "ERROR"

    # Members are singletons compared by identity: hash them by identity too, in C.
    # (Enum's own __hash__ is Python code, and a command is hashed on every frame.)
    __hash__ = object.__hash__


#: Lookup from the raw command line; commands are case-sensitive.
COMMANDS_BY_NAME: dict[bytes, Command] = {c.value.encode("ascii"): c for c in Command}
COMMANDS_BY_TEXT: dict[str, Command] = {c.value: c for c in Command}

CLIENT_COMMANDS = frozenset(
    {
        Command.CONNECT,
        Command.STOMP,
        Command.SEND,
        Command.SUBSCRIBE,
        Command.UNSUBSCRIBE,
        Command.ACK,
        Command.NACK,
        Command.BEGIN,
        Command.COMMIT,
        Command.ABORT,
        Command.DISCONNECT,
    }
)
SERVER_COMMANDS = frozenset({Command.CONNECTED, Command.MESSAGE, Command.RECEIPT, Command.ERROR})

#: "Only the SEND, MESSAGE, and ERROR frames MAY have a body. All other frames MUST NOT."
BODY_COMMANDS = frozenset({Command.SEND, Command.MESSAGE, Command.ERROR})

#: Frames whose headers are never escaped, for compatibility with STOMP 1.0.
UNESCAPED_COMMANDS = frozenset({Command.CONNECT, Command.STOMP, Command.CONNECTED})


@dataclass(slots=True)
class Frame:
    """One STOMP frame.

    ``headers`` keeps the first occurrence of each name, in arrival order (STOMP 1.2:
    "only the first header entry SHOULD be used"). Values are decoded text, unescaped
    according to the negotiated version; they are never trimmed.
    """

    command: Command
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
