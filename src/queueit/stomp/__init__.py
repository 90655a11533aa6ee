"""STOMP 1.0/1.1/1.2 protocol layer, sans-I/O.

Bytes go in, typed events come out, bytes to write come back; time is passed in as
``now``. This package imports only the standard library and nothing else of queueit.
"""

from .connection import EOL, ClientConnection, ServerConnection
from .errors import LocalProtocolError, StompError, StompProtocolError
from .events import (
    Abort,
    Ack,
    AckMode,
    Begin,
    ClientEvent,
    Commit,
    Connect,
    Connected,
    Disconnect,
    Message,
    Nack,
    Receipt,
    Send,
    ServerError,
    ServerEvent,
    Subscribe,
    Unsubscribe,
)
from .frames import Command, Frame
from .grammar import SUPPORTED_VERSIONS, V10, V11, V12, escape, negotiate_version, unescape
from .heartbeat import BeatAction, HeartbeatClock, negotiate, parse_heartbeat
from .limits import Limits
from .parser import FrameParser
from .state import State
from .writer import FRAME_END, encode_frame

__all__ = [
    "EOL",
    "FRAME_END",
    "SUPPORTED_VERSIONS",
    "V10",
    "V11",
    "V12",
    "Abort",
    "Ack",
    "AckMode",
    "BeatAction",
    "Begin",
    "ClientConnection",
    "ClientEvent",
    "Command",
    "Commit",
    "Connect",
    "Connected",
    "Disconnect",
    "Frame",
    "FrameParser",
    "HeartbeatClock",
    "Limits",
    "LocalProtocolError",
    "Message",
    "Nack",
    "Receipt",
    "Send",
    "ServerConnection",
    "ServerError",
    "ServerEvent",
    "State",
    "StompError",
    "StompProtocolError",
    "Subscribe",
    "Unsubscribe",
    "encode_frame",
    "escape",
    "negotiate",
    "negotiate_version",
    "parse_heartbeat",
    "unescape",
]
