"""ServerConnection and ClientConnection without sockets: rules, events, output, and a pair."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from queueit.stomp import (
    V10,
    V11,
    V12,
    Abort,
    Ack,
    AckMode,
    Begin,
    ClientConnection,
    ClientEvent,
    Command,
    Commit,
    Connect,
    Connected,
    Disconnect,
    Limits,
    LocalProtocolError,
    Message,
    Nack,
    Receipt,
    Send,
    ServerConnection,
    ServerError,
    ServerEvent,
    State,
    StompProtocolError,
    Subscribe,
    Unsubscribe,
    encode_frame,
)
from queueit.stomp.writer import FRAME_END

from .helpers import FrameTuple, bytewise, headers_of, parse_one

ALL_VERSIONS = [V10, V11, V12]

# -- helpers ---------------------------------------------------------------------------------


def events_of(conn: ServerConnection, data: bytes, *, now: float = 0.0) -> list[ClientEvent]:
    """Events from ``data`` fed whole, checked against the same bytes fed one at a time."""
    results = []
    for chunks in ([data], bytewise(data)):
        twin = ServerConnection(conn.limits)
        _replay(twin, conn)
        events: list[ClientEvent] = []
        for chunk in chunks:
            twin.receive_data(chunk, now)
            while (event := twin.next_event()) is not None:
                events.append(event)
        results.append((events, twin.state))
    assert results[0] == results[1]
    for chunk in [data]:
        conn.receive_data(chunk, now)
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    assert events == results[0][0]
    return events


def _replay(twin: ServerConnection, conn: ServerConnection) -> None:
    """Bring a fresh connection to the state of ``conn`` (connected with its version)."""
    if conn.state is State.AWAITING_CONNECT:
        return
    twin.receive_data(CONNECT_FOR[conn.version], 0.0)
    assert isinstance(twin.next_event(), Connect)
    if conn.state is State.CONNECTED:
        twin.accept("s", 0.0)


def _drain(conn: ServerConnection, chunks: list[bytes]) -> None:
    for chunk in chunks:
        conn.receive_data(chunk, 0.0)
        while conn.next_event() is not None:
            pass


def error_of(conn: ServerConnection, data: bytes) -> StompProtocolError:
    """The protocol error ``data`` causes (fed whole and byte by byte, same message and receipt)."""
    found = []
    for chunks in ([data], bytewise(data)):
        twin = ServerConnection(conn.limits)
        _replay(twin, conn)
        with pytest.raises(StompProtocolError) as info:
            _drain(twin, chunks)
        found.append((info.value.message, info.value.receipt_id, info.value.versions))
    assert found[0] == found[1]
    with pytest.raises(StompProtocolError) as info:
        _drain(conn, [data])
    return info.value


def state_of(conn: ServerConnection | ClientConnection) -> State:
    """The state, read through a call so that mypy does not narrow it between two asserts."""
    return conn.state


CONNECT_FOR = {
    V10: b"CONNECT\nlogin:u\npasscode:p\n\n\x00",
    V11: b"CONNECT\naccept-version:1.1\nhost:/\n\n\x00",
    V12: b"CONNECT\naccept-version:1.0,1.1,1.2\nhost:/\n\n\x00",
}


def connected(version: str = V12, limits: Limits | None = None) -> ServerConnection:
    conn = ServerConnection(limits or Limits())
    conn.receive_data(CONNECT_FOR[version], 0.0)
    event = conn.next_event()
    assert isinstance(event, Connect)
    assert event.version == version
    conn.accept("sess-1", 0.0)
    assert conn.state is State.CONNECTED
    return conn


def frame(command: str, *headers: str, body: bytes = b"") -> bytes:
    return (command + "\n" + "".join(h + "\n" for h in headers) + "\n").encode() + body + b"\x00"


def parsed(data: bytes, version: str = V12) -> FrameTuple:
    return parse_one(data, version=version)


# -- CONNECT ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["CONNECT", "STOMP"])
def test_connect_event(command: str) -> None:
    conn = ServerConnection(Limits())
    data = frame(
        command,
        "accept-version:1.1,1.2",
        "host:vh",
        "login:guest",
        "passcode:pa\\cs:s",
        "heart-beat:100,200",
        "client-id:c",
        "receipt:r0",
    )
    [event] = events_of(conn, data)
    assert event == Connect(
        version=V12,
        host="vh",
        login="guest",
        passcode="pa\\cs:s",  # CONNECT headers are never unescaped
        heartbeat=(100, 200),
        headers={
            "accept-version": "1.1,1.2",
            "host": "vh",
            "login": "guest",
            "passcode": "pa\\cs:s",
            "heart-beat": "100,200",
            "client-id": "c",
            "receipt": "r0",
        },
        receipt="r0",
    )
    assert conn.state is State.AUTHENTICATING
    assert conn.version == V12


@pytest.mark.parametrize(
    ("accept_version", "version"), [(None, V10), ("1.0,1.1,1.2", V12), ("1.1", V11), ("1.0", V10)]
)
def test_connect_negotiates_the_version(accept_version: str | None, version: str) -> None:
    conn = ServerConnection(Limits())
    headers = [] if accept_version is None else [f"accept-version:{accept_version}"]
    [event] = events_of(conn, frame("CONNECT", *headers))
    assert isinstance(event, Connect)
    assert event.version == version == conn.version
    assert parsed(conn.accept("s", 0.0), version)[1][0] == ("version", version)


def test_connect_without_common_version() -> None:
    conn = ServerConnection(Limits())
    exc = error_of(conn, frame("CONNECT", "accept-version:2.0", "receipt:r"))
    assert exc.versions == "1.0,1.1,1.2"
    assert exc.receipt_id == "r"
    assert conn.state is State.AWAITING_CONNECT
    headers = headers_of(parsed(conn.error_for(exc), V10))
    assert headers["version"] == "1.0,1.1,1.2"
    assert headers["receipt-id"] == "r"
    assert state_of(conn) is State.CLOSED


@pytest.mark.parametrize(
    "data",
    [
        frame("SEND", "destination:/q", "receipt:r"),
        frame("SUBSCRIBE", "id:1", "destination:/q", "receipt:r"),
        frame("DISCONNECT", "receipt:r"),
        frame("MESSAGE", "receipt:r"),
        frame("CONNECTED", "receipt:r"),
    ],
)
def test_frame_before_connect_is_an_error(data: bytes) -> None:
    exc = error_of(ServerConnection(Limits()), data)
    assert (exc.message, exc.receipt_id) == ("Not connected", "r")


def test_next_event_waits_for_accept() -> None:
    conn = ServerConnection(Limits())
    conn.receive_data(CONNECT_FOR[V12] + frame("SEND", "destination:/q", body=b"x"), 0.0)
    assert isinstance(conn.next_event(), Connect)
    assert conn.next_event() is None
    assert conn.next_event() is None
    assert conn.buffered > 0
    assert conn.state is State.AUTHENTICATING
    conn.accept("s", 0.0)
    event = conn.next_event()
    assert isinstance(event, Send)
    assert event.body == b"x"
    assert conn.buffered == 0


@pytest.mark.parametrize("command", ["CONNECT", "STOMP"])
def test_second_connect_is_an_error(command: str) -> None:
    exc = error_of(connected(), frame(command, "accept-version:1.2", "receipt:r"))
    assert (exc.message, exc.receipt_id) == ("Unexpected frame", "r")
    assert "only once" in exc.detail


@pytest.mark.parametrize("command", ["CONNECTED", "MESSAGE", "RECEIPT", "ERROR"])
def test_server_frames_from_the_client_are_errors(command: str) -> None:
    exc = error_of(connected(), frame(command, "receipt:r"))
    assert (exc.message, exc.receipt_id) == ("Unexpected frame", "r")
    assert "server frame" in exc.detail


def test_unknown_command_is_an_error() -> None:
    exc = error_of(connected(), frame("send", "destination:/q"))
    assert exc.message == "Unknown command"


def test_pre_connect_frame_size_then_full_size() -> None:
    limits = Limits(pre_connect_frame_size=128, max_frame_size=4096, max_body_size=2048)
    exc = error_of(ServerConnection(limits), frame("CONNECT", "login:" + "x" * 130))
    assert exc.message == "Frame too large"
    # A SEND is refused by size before it is refused for arriving before CONNECT.
    exc = error_of(ServerConnection(limits), frame("SEND", "destination:/q", body=b"x" * 200))
    assert exc.message == "Frame too large"
    conn = connected(V12, limits)
    [event] = events_of(conn, frame("SEND", "destination:/q", body=b"x" * 2000))
    assert isinstance(event, Send)
    assert event.body == b"x" * 2000


def test_pre_connect_limit_holds_until_accept() -> None:
    limits = Limits(pre_connect_frame_size=128)
    conn = ServerConnection(limits)
    conn.receive_data(CONNECT_FOR[V12] + frame("SEND", "destination:/q", body=b"x" * 500), 0.0)
    assert isinstance(conn.next_event(), Connect)
    assert conn.next_event() is None  # not parsed while authenticating
    conn.accept("s", 0.0)
    event = conn.next_event()
    assert isinstance(event, Send)
    assert len(event.body) == 500


# -- client frames ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_send_event(version: str) -> None:
    [event] = events_of(
        connected(version),
        frame("SEND", "destination:/queue/a", "transaction:t", "receipt:r", "x:y", body=b"b\x00dy"),
    )
    # Without content-length, the body ends at the first NUL.
    assert event == Send(
        destination="/queue/a",
        headers={"destination": "/queue/a", "transaction": "t", "receipt": "r", "x": "y"},
        body=b"b",
        transaction="t",
        receipt="r",
    )


def test_send_unescapes_destination_in_1_2() -> None:
    [event] = events_of(connected(V12), frame("SEND", "destination:/queue/a\\cb"))
    assert isinstance(event, Send)
    assert event.destination == "/queue/a:b"
    assert event.transaction is None
    assert event.receipt is None


@pytest.mark.parametrize("header", [None, "destination:"])
def test_send_without_destination_is_an_error(header: str | None) -> None:
    headers = ["receipt:r"] + ([header] if header else [])
    exc = error_of(connected(), frame("SEND", *headers))
    assert (exc.message, exc.receipt_id) == ("Missing destination header", "r")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_subscribe_event(version: str) -> None:
    [event] = events_of(connected(version), frame("SUBSCRIBE", "id:7", "destination:/q", "ack:client"))
    assert event == Subscribe(
        id="7",
        destination="/q",
        ack=AckMode.CLIENT,
        headers={"id": "7", "destination": "/q", "ack": "client"},
        receipt=None,
    )


@pytest.mark.parametrize(("ack", "mode"), [(None, AckMode.AUTO), *((m.value, m) for m in AckMode)])
def test_subscribe_ack_modes(ack: str | None, mode: AckMode) -> None:
    headers = ["id:1", "destination:/q"] + ([f"ack:{ack}"] if ack else [])
    [event] = events_of(connected(), frame("SUBSCRIBE", *headers))
    assert isinstance(event, Subscribe)
    assert event.ack is mode


@pytest.mark.parametrize("ack", ["AUTO", "individual", "", " auto"])
def test_subscribe_invalid_ack_mode(ack: str) -> None:
    exc = error_of(connected(), frame("SUBSCRIBE", "id:1", "destination:/q", f"ack:{ack}", "receipt:r"))
    assert (exc.message, exc.receipt_id) == ("Invalid ack mode", "r")


@pytest.mark.parametrize("version", [V11, V12])
def test_subscribe_without_id_is_an_error_in_1_1_and_1_2(version: str) -> None:
    exc = error_of(connected(version), frame("SUBSCRIBE", "destination:/q", "receipt:r"))
    assert (exc.message, exc.receipt_id) == ("Missing id header", "r")


def test_subscribe_without_id_defaults_to_destination_in_1_0() -> None:
    [event] = events_of(connected(V10), frame("SUBSCRIBE", "destination:/queue/a"))
    assert isinstance(event, Subscribe)
    assert event.id == "/queue/a"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_subscribe_without_destination_is_an_error(version: str) -> None:
    exc = error_of(connected(version), frame("SUBSCRIBE", "id:1"))
    assert exc.message == "Missing destination header"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_unsubscribe(version: str) -> None:
    [event] = events_of(connected(version), frame("UNSUBSCRIBE", "id:7", "receipt:r"))
    assert event == Unsubscribe(id="7", headers={"id": "7", "receipt": "r"}, receipt="r")


def test_unsubscribe_by_destination_in_1_0_only() -> None:
    [event] = events_of(connected(V10), frame("UNSUBSCRIBE", "destination:/q"))
    assert isinstance(event, Unsubscribe)
    assert event.id == "/q"
    exc = error_of(connected(V12), frame("UNSUBSCRIBE", "destination:/q"))
    assert exc.message == "Missing id header"


@pytest.mark.parametrize(("command", "cls"), [("ACK", Ack), ("NACK", Nack)])
@pytest.mark.parametrize(
    ("version", "headers", "expected"),
    [
        (V12, ["id:A"], "A"),
        (V12, ["message-id:M"], "M"),  # fallback
        (V12, ["message-id:M", "id:A"], "A"),  # id first in 1.2
        (V11, ["message-id:M", "subscription:s"], "M"),
        (V11, ["id:A"], "A"),  # fallback
        (V11, ["id:A", "message-id:M"], "M"),  # message-id first in 1.1
        (V10, ["message-id:M"], "M"),
        (V10, ["id:A"], "A"),
        (V10, ["id:A", "message-id:M"], "M"),
    ],
)
def test_ack_id_rules(
    command: str, cls: type[Ack] | type[Nack], version: str, headers: list[str], expected: str
) -> None:
    all_headers = [*headers, "transaction:t", "receipt:r"]
    [event] = events_of(connected(version), frame(command, *all_headers))
    assert isinstance(event, cls)
    assert event.id == expected
    assert event.transaction == "t"
    assert event.receipt == "r"
    assert event.subscription == ("s" if "subscription:s" in headers else None)


@pytest.mark.parametrize(
    ("version", "missing"),
    [(V12, "Missing id header"), (V11, "Missing message-id header"), (V10, "Missing message-id header")],
)
@pytest.mark.parametrize("command", ["ACK", "NACK"])
def test_ack_without_id_is_an_error(version: str, missing: str, command: str) -> None:
    exc = error_of(connected(version), frame(command, "subscription:s", "id:", "receipt:r"))
    assert (exc.message, exc.receipt_id) == (missing, "r")


@pytest.mark.parametrize(("command", "cls"), [("BEGIN", Begin), ("COMMIT", Commit), ("ABORT", Abort)])
def test_transaction_frames(command: str, cls: type[Begin] | type[Commit] | type[Abort]) -> None:
    [event] = events_of(connected(), frame(command, "transaction:tx\\c1", "receipt:r"))
    assert event == cls(transaction="tx:1", receipt="r")
    exc = error_of(connected(), frame(command, "receipt:r2"))
    assert (exc.message, exc.receipt_id) == ("Missing transaction header", "r2")


def test_disconnect_closes() -> None:
    conn = connected()
    [event] = events_of(conn, frame("DISCONNECT", "receipt:bye") + frame("SEND", "destination:/q"))
    assert event == Disconnect(receipt="bye")
    assert conn.state is State.CLOSED
    assert conn.next_event() is None
    conn.receive_data(frame("SEND", "destination:/q"), 1.0)
    assert conn.next_event() is None
    assert parsed(conn.receipt("bye")) == (Command.RECEIPT, (("receipt-id", "bye"),), b"")


def test_events_in_order_from_one_chunk() -> None:
    data = b"".join(
        [
            frame("SUBSCRIBE", "id:0", "destination:/q"),
            b"\n\n",
            frame("BEGIN", "transaction:t"),
            frame("SEND", "destination:/q", "transaction:t", body=b"1"),
            frame("ACK", "id:m"),
            frame("COMMIT", "transaction:t"),
            frame("UNSUBSCRIBE", "id:0"),
            frame("DISCONNECT"),
        ]
    )
    events = events_of(connected(), data)
    assert [type(e) for e in events] == [Subscribe, Begin, Send, Ack, Commit, Unsubscribe, Disconnect]


# -- server output -----------------------------------------------------------------------------


def test_accept_output_and_state() -> None:
    conn = ServerConnection(Limits(), server_name="queueit/9")
    with pytest.raises(LocalProtocolError):
        conn.accept("s", 0.0)
    conn.receive_data(CONNECT_FOR[V11], 0.0)
    assert isinstance(conn.next_event(), Connect)
    data = conn.accept("sess:1", 0.0, extra_headers=[("x-extra", "a:b")])
    assert conn.state is State.CONNECTED
    assert conn.session_id == "sess:1"
    assert parsed(data, V11) == (
        Command.CONNECTED,
        (
            ("version", "1.1"),
            ("server", "queueit/9"),
            ("session", "sess:1"),
            ("heart-beat", "0,0"),
            ("x-extra", "a:b"),
        ),
        b"",
    )
    with pytest.raises(LocalProtocolError):
        conn.accept("s", 0.0)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_error_frame(version: str) -> None:
    conn = connected(version)
    data = conn.error("Bad thing", "It went\nwrong: ü", receipt_id="r:1")
    assert conn.state is State.CLOSED
    command, headers, body = parsed(data, version)
    assert command is Command.ERROR
    assert dict(headers) == {
        "message": "Bad thing",
        "receipt-id": "r:1",
        "content-type": "text/plain",
        "content-length": str(len(body)),
    }
    assert body == "It went\nwrong: ü".encode()


def test_error_for_a_protocol_error() -> None:
    conn = connected()
    exc = error_of(conn, frame("SEND", "receipt:r7"))
    headers = headers_of(parsed(conn.error_for(exc)))
    assert headers["message"] == "Missing destination header"
    assert headers["receipt-id"] == "r7"
    assert "version" not in headers


def test_error_before_connect_and_without_receipt() -> None:
    conn = ServerConnection(Limits())
    command, headers, body = parsed(conn.error("Login timeout"), V10)
    assert command is Command.ERROR
    assert dict(headers) == {"message": "Login timeout", "content-type": "text/plain", "content-length": "0"}
    assert body == b""
    assert conn.state is State.CLOSED
    assert conn.next_event() is None


@pytest.mark.parametrize("version", [V11, V12])
def test_message_escapes_headers(version: str) -> None:
    conn = connected(version)
    data = conn.message("/queue/a:b", "ID:1", "sub\n1", "ID:1", [("x:y", "v\\w"), ("n", "l\nm")], b"b\x00dy")
    assert b"destination:/queue/a\\cb\n" in data
    assert b"message-id:ID\\c1\n" in data
    assert b"x\\cy:v\\\\w\n" in data
    assert parsed(data, version) == (
        Command.MESSAGE,
        (
            ("destination", "/queue/a:b"),
            ("message-id", "ID:1"),
            ("subscription", "sub\n1"),
            ("ack", "ID:1"),
            ("x:y", "v\\w"),
            ("n", "l\nm"),
            ("content-length", "4"),
        ),
        b"b\x00dy",
    )


def test_message_does_not_escape_in_1_0() -> None:
    conn = connected(V10)
    data = conn.message("/queue/a:b", "ID:1", "0", None, [("x", "v\\w:z")], b"body")
    assert data == (
        b"MESSAGE\ndestination:/queue/a:b\nmessage-id:ID:1\nsubscription:0\n"
        b"x:v\\w:z\ncontent-length:4\n\nbody" + FRAME_END
    )
    assert parsed(data, V10)[1][:4] == (
        ("destination", "/queue/a:b"),
        ("message-id", "ID:1"),
        ("subscription", "0"),
        ("x", "v\\w:z"),
    )


@pytest.mark.parametrize(
    ("version", "bad"),
    [
        (V10, ("x", "a\n\nINJECTED")),
        (V10, ("x", "a\rb")),
        (V10, ("x\ny", "v")),
        (V10, ("content-length:0", "x")),
        (V10, ("x", "a\x00b")),
        (V11, ("x", "a\rb")),
        (V11, ("x\r", "v")),
    ],
)
def test_message_leaves_out_headers_the_version_cannot_represent(version: str, bad: tuple[str, str]) -> None:
    conn = connected(version)
    data = conn.message("/q", "m", "0", None, [("before", "1"), bad, ("after", "2")], b"body")
    assert parsed(data, version) == (
        Command.MESSAGE,
        (
            ("destination", "/q"),
            ("message-id", "m"),
            ("subscription", "0"),
            ("before", "1"),
            ("after", "2"),
            ("content-length", "4"),
        ),
        b"body",
    )


def test_message_keeps_carriage_returns_in_1_2() -> None:
    data = connected(V12).message("/q", "m", "0", None, [("x", "a\rb")], b"")
    assert headers_of(parsed(data))["x"] == "a\rb"


# -- ClientConnection --------------------------------------------------------------------------


def test_client_connect_frame() -> None:
    client = ClientConnection()
    data = client.connect("/", login="u", passcode="pa\\cs:s", heartbeat=(5, 6), headers=[("client-id", "c")])
    assert client.state is State.AUTHENTICATING
    assert b"passcode:pa\\cs:s\n" in data  # CONNECT is never escaped
    assert parsed(data)[1] == (
        ("accept-version", "1.0,1.1,1.2"),
        ("host", "/"),
        ("heart-beat", "5,6"),
        ("login", "u"),
        ("passcode", "pa\\cs:s"),
        ("client-id", "c"),
    )
    with pytest.raises(LocalProtocolError):
        client.connect("/")


def test_client_refuses_frames_before_connected() -> None:
    client = ClientConnection()
    with pytest.raises(LocalProtocolError):
        client.frame(Command.SEND, [("destination", "/q")])
    client.connect("/")
    with pytest.raises(LocalProtocolError):
        client.frame(Command.SEND, [("destination", "/q")])


def test_client_error_and_receipt_events() -> None:
    client = ClientConnection()
    client.connect("/")
    client.receive_data(encode_frame(Command.RECEIPT, [("receipt-id", "a\\b")], version=V12), 0.0)
    assert client.next_event(0.0) == Receipt("a\\b")
    data = encode_frame(Command.ERROR, [("message", "no"), ("receipt-id", "r")], b"why", version=V12)
    client.receive_data(data, 0.0)
    event = client.next_event(0.0)
    assert event == ServerError(
        "no", "r", {"message": "no", "receipt-id": "r", "content-length": "3"}, b"why"
    )
    assert client.state is State.CLOSED


def test_client_rejects_unsupported_version_and_client_frames() -> None:
    client = ClientConnection()
    client.connect("/")
    client.receive_data(b"CONNECTED\nversion:2.0\n\n\x00", 0.0)
    with pytest.raises(StompProtocolError, match="Unsupported version"):
        client.next_event(0.0)
    client = ClientConnection()
    client.connect("/")
    client.receive_data(b"SEND\ndestination:/q\n\n\x00", 0.0)
    with pytest.raises(StompProtocolError, match="Unexpected frame"):
        client.next_event(0.0)


def test_client_refuses_a_second_or_unasked_connected() -> None:
    client = ClientConnection()
    client.connect("/")
    client.receive_data(b"CONNECTED\nversion:1.2\n\n\x00" * 2, 0.0)
    assert isinstance(client.next_event(0.0), Connected)
    with pytest.raises(StompProtocolError, match="Unexpected frame"):
        client.next_event(0.0)
    client = ClientConnection()
    client.receive_data(b"CONNECTED\nversion:1.2\n\n\x00", 0.0)
    with pytest.raises(StompProtocolError, match="Unexpected frame"):
        client.next_event(0.0)


def test_client_connected_without_version_header_means_1_0() -> None:
    client = ClientConnection()
    client.connect("/", versions=[V10])
    client.receive_data(b"CONNECTED\nsession:1\n\n\x00", 0.0)
    event = client.next_event(0.0)
    assert event == Connected(V10, (0, 0), {"session": "1"})
    assert client.version == V10
    assert client.state is State.CONNECTED


# -- a client and a server, without sockets ---------------------------------------------------


@dataclass
class ConnectionPair:
    """A ClientConnection wired to a ServerConnection; bytes move only when a test says so."""

    client: ClientConnection = field(default_factory=ClientConnection)
    server: ServerConnection = field(default_factory=lambda: ServerConnection(Limits()))
    now: float = 0.0

    def to_server(self, data: bytes) -> list[ClientEvent]:
        self.server.receive_data(data, self.now)
        events = []
        while (event := self.server.next_event()) is not None:
            events.append(event)
        return events

    def to_client(self, data: bytes) -> list[ServerEvent]:
        self.client.receive_data(data, self.now)
        events = []
        while (event := self.client.next_event(self.now)) is not None:
            events.append(event)
        return events

    def handshake(self, version: str, login: str | None = None, passcode: str | None = None) -> Connect:
        [event] = self.to_server(self.client.connect("/", versions=[version], login=login, passcode=passcode))
        assert isinstance(event, Connect)
        [connected_event] = self.to_client(self.server.accept("s-1", self.now))
        assert isinstance(connected_event, Connected)
        assert connected_event.version == version == self.client.version == self.server.version
        assert self.client.state is self.server.state is State.CONNECTED
        return event


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_pair_full_conversation(version: str) -> None:
    pair = ConnectionPair()
    connect = pair.handshake(version, login="guest", passcode="gu:e\\st")
    assert (connect.login, connect.passcode, connect.host) == ("guest", "gu:e\\st", "/")

    ack_mode = "client" if version == V10 else "client-individual"
    subscribe = pair.client.frame(
        Command.SUBSCRIBE, [("id", "sub-0"), ("destination", "/queue/a"), ("ack", ack_mode)]
    )
    [sub] = pair.to_server(subscribe)
    assert isinstance(sub, Subscribe)
    assert (sub.id, sub.destination, sub.ack.value) == ("sub-0", "/queue/a", ack_mode)

    user = [("x-note", "a:b\\c\nd")] if version != V10 else [("x-note", "a:b\\c")]
    send = pair.client.frame(
        Command.SEND, [("destination", "/queue/a"), *user, ("receipt", "s1")], b"hi\x00there"
    )
    [sent] = pair.to_server(send)
    assert isinstance(sent, Send)
    assert sent.headers["x-note"] == user[0][1]
    assert sent.body == b"hi\x00there"
    [receipt] = pair.to_client(pair.server.receipt("s1"))
    assert receipt == Receipt("s1")

    message_bytes = pair.server.message("/queue/a", "ID:m:1", "sub-0", "ID:m:1", user, sent.body)
    [message] = pair.to_client(message_bytes)
    assert isinstance(message, Message)
    assert (message.destination, message.message_id, message.subscription, message.ack) == (
        "/queue/a",
        "ID:m:1",
        "sub-0",
        "ID:m:1",
    )
    assert message.headers["x-note"] == user[0][1]
    assert message.body == b"hi\x00there"

    expected_ack_headers = {
        V12: [("id", "ID:m:1")],
        V11: [("message-id", "ID:m:1"), ("subscription", "sub-0")],
        V10: [("message-id", "ID:m:1")],
    }[version]
    assert pair.client.ack_headers(message) == expected_ack_headers
    [ack] = pair.to_server(pair.client.frame(Command.ACK, pair.client.ack_headers(message)))
    assert isinstance(ack, Ack)
    assert ack.id == "ID:m:1"
    assert ack.subscription == ("sub-0" if version == V11 else None)

    [bye] = pair.to_server(pair.client.frame(Command.DISCONNECT, [("receipt", "bye")]))
    assert bye == Disconnect("bye")
    assert pair.client.state is pair.server.state is State.CLOSED
    assert pair.to_client(pair.server.receipt("bye")) == [Receipt("bye")]


def test_pair_1_2_ack_uses_the_ack_header_and_falls_back_to_message_id() -> None:
    pair = ConnectionPair()
    pair.handshake(V12)
    [message] = pair.to_client(pair.server.message("/q", "mid", "0", "tok", [], b""))
    assert isinstance(message, Message)
    assert pair.client.ack_headers(message) == [("id", "tok")]
    [nack] = pair.to_server(pair.client.frame(Command.NACK, pair.client.ack_headers(message)))
    assert isinstance(nack, Nack)
    assert nack.id == "tok"
    [auto] = pair.to_client(pair.server.message("/q", "mid2", "0", None, [], b""))
    assert isinstance(auto, Message)
    assert pair.client.ack_headers(auto) == [("id", "mid2")]


def test_pair_server_error_closes_both() -> None:
    pair = ConnectionPair()
    pair.handshake(V12)
    [event] = pair.to_client(pair.server.error("Access refused", "no", receipt_id="r"))
    assert isinstance(event, ServerError)
    assert (event.message, event.receipt_id, event.body) == ("Access refused", "r", b"no")
    assert pair.client.state is pair.server.state is State.CLOSED


def test_pair_version_refused() -> None:
    pair = ConnectionPair()
    data = pair.client.connect("/", versions=["2.0"])
    with pytest.raises(StompProtocolError) as info:
        pair.to_server(data)
    [event] = pair.to_client(pair.server.error_for(info.value))
    assert isinstance(event, ServerError)
    assert event.headers["version"] == "1.0,1.1,1.2"
