"""The connection state machine, as one table (the only place that decides a state).

Server side::

    AWAITING_CONNECT --CONNECT--> AUTHENTICATING --accept--> CONNECTED --DISCONNECT--> CLOSED
          any state --protocol violation / reject / peer dead / close--> CLOSED

Client side::

    AWAITING_CONNECT --CONNECT sent--> AUTHENTICATING --CONNECTED--> CONNECTED --DISCONNECT--> CLOSED
"""

from __future__ import annotations

import enum

from .errors import LocalProtocolError


class State(enum.Enum):
    AWAITING_CONNECT = "awaiting-connect"
    AUTHENTICATING = "authenticating"
    CONNECTED = "connected"
    CLOSED = "closed"


class Trigger(enum.Enum):
    CONNECT = "connect"  # CONNECT frame received (server) or sent (client)
    ACCEPT = "accept"  # CONNECTED sent (server) or received (client)
    DISCONNECT = "disconnect"
    CLOSE = "close"  # ERROR, rejection, dead peer, transport closed


_TABLE: dict[tuple[State, Trigger], State] = {
    (State.AWAITING_CONNECT, Trigger.CONNECT): State.AUTHENTICATING,
    (State.AUTHENTICATING, Trigger.ACCEPT): State.CONNECTED,
    (State.CONNECTED, Trigger.DISCONNECT): State.CLOSED,
    (State.AWAITING_CONNECT, Trigger.CLOSE): State.CLOSED,
    (State.AUTHENTICATING, Trigger.CLOSE): State.CLOSED,
    (State.CONNECTED, Trigger.CLOSE): State.CLOSED,
    (State.CLOSED, Trigger.CLOSE): State.CLOSED,
}


def transition(state: State, trigger: Trigger) -> State:
    """Next state, or :class:`LocalProtocolError` for a transition the table lacks."""
    try:
        return _TABLE[(state, trigger)]
    except KeyError:
        raise LocalProtocolError(f"cannot {trigger.value} in state {state.value}") from None
