"""Heart-beat header parsing, negotiation, deadlines, and the connections' timers (fake ``now``)."""

from __future__ import annotations

import pytest

from queueit.stomp import (
    EOL,
    BeatAction,
    ClientConnection,
    Command,
    Connect,
    Connected,
    HeartbeatClock,
    Limits,
    ServerConnection,
    State,
    StompProtocolError,
    encode_frame,
    negotiate,
    parse_heartbeat,
)
from queueit.stomp.heartbeat import MAX_INTERVAL_MS

from .helpers import headers_of, parse_one

# -- parse_heartbeat ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (None, (0, 0)),
        ("0,0", (0, 0)),
        ("10000,5000", (10000, 5000)),
        ("0,250", (0, 250)),
        ("007,1", (7, 1)),
        (f"{MAX_INTERVAL_MS},{MAX_INTERVAL_MS}", (MAX_INTERVAL_MS, MAX_INTERVAL_MS)),
        (" 5,6 ", (5, 6)),  # spaces around the numbers are tolerated
    ],
)
def test_parse_heartbeat(value: str | None, parsed: tuple[int, int]) -> None:
    assert parse_heartbeat(value) == parsed


@pytest.mark.parametrize(
    "value",
    [
        "a,b",
        "1",
        "",
        ",",
        "1,",
        ",1",
        "1,2,3",
        "-1,0",
        "0,-5",
        "1.5,2",
        "1;2",
        "\u0663,0",  # an Arabic-Indic digit is a digit to str.isdigit, not to STOMP
        "\t1,0",
        f"{MAX_INTERVAL_MS + 1},0",
        f"0,{MAX_INTERVAL_MS + 1}",
        "9" * 5000 + ",0",  # more digits than int() accepts
        "0," + "1" * 20,
    ],
)
def test_malformed_heartbeat_is_an_error(value: str) -> None:
    with pytest.raises(StompProtocolError) as info:
        parse_heartbeat(value, receipt_id="r")
    assert info.value.message == "Invalid heart-beat header"
    assert info.value.receipt_id == "r"


def test_heartbeat_with_leading_zeros_beyond_int_limit() -> None:
    assert parse_heartbeat("0" * 5000 + "5,0") == (5, 0)


# -- negotiate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "remote", "result"),
    [
        ((0, 0), (0, 0), (0, 0)),
        ((1000, 1000), (0, 0), (0, 0)),
        ((0, 0), (1000, 1000), (0, 0)),
        ((1000, 0), (0, 1000), (1000, 0)),  # only we send
        ((0, 1000), (1000, 0), (0, 1000)),  # only they send
        ((1000, 2000), (3000, 500), (1000, 3000)),  # max() each way
        ((5000, 5000), (100, 100), (5000, 5000)),
        ((100, 100), (5000, 5000), (5000, 5000)),
        ((1000, 0), (1000, 1000), (1000, 0)),  # we do not want beats
        ((0, 1000), (1000, 1000), (0, 1000)),  # we cannot send
    ],
)
def test_negotiate(local: tuple[int, int], remote: tuple[int, int], result: tuple[int, int]) -> None:
    assert negotiate(local, remote) == result


@pytest.mark.parametrize("client", [(0, 0), (1000, 0), (0, 1000), (1000, 2000), (7000, 300)])
@pytest.mark.parametrize("server", [(0, 0), (500, 500), (3000, 0), (0, 3000), (2000, 9000)])
def test_both_sides_agree(client: tuple[int, int], server: tuple[int, int]) -> None:
    c_send, c_recv = negotiate(client, server)
    s_send, s_recv = negotiate(server, client)
    assert (c_send, c_recv) == (s_recv, s_send)


# -- HeartbeatClock ---------------------------------------------------------------------------


def test_clock_without_intervals_has_no_deadline() -> None:
    clock = HeartbeatClock.start(0, 0, 2.0, now=10.0)
    assert clock.next_deadline() is None
    assert clock.check(1e9) is BeatAction.NOTHING


def test_clock_sends_a_beat_after_half_the_send_interval_idle() -> None:
    clock = HeartbeatClock.start(1000, 0, 2.0, now=100.0)
    assert clock.next_deadline() == 100.5
    assert clock.check(100.499) is BeatAction.NOTHING
    assert clock.check(100.5) is BeatAction.SEND_BEAT
    clock.last_sent = 100.5
    assert clock.next_deadline() == 101.0
    assert clock.check(100.9) is BeatAction.NOTHING


def test_clock_late_beat_within_grace_is_fine() -> None:
    clock = HeartbeatClock.start(0, 1000, 2.0, now=100.0)
    assert clock.next_deadline() == 102.0
    assert clock.check(101.5) is BeatAction.NOTHING  # late, but within 2x
    clock.last_received = 101.9
    assert clock.check(103.8) is BeatAction.NOTHING
    assert clock.next_deadline() == pytest.approx(103.9)
    assert clock.check(103.9) is BeatAction.PEER_DEAD


def test_clock_beyond_grace_is_peer_dead_even_when_a_beat_is_due() -> None:
    clock = HeartbeatClock.start(500, 1000, 1.5, now=0.0)
    assert clock.next_deadline() == 0.25
    assert clock.check(1.49) is BeatAction.SEND_BEAT
    assert clock.check(1.5) is BeatAction.PEER_DEAD


# -- ServerConnection --------------------------------------------------------------------------


def connected_server(
    client_hb: str | None, server_hb: tuple[int, int] = (1000, 1000), now: float = 100.0
) -> tuple[ServerConnection, dict[str, str]]:
    conn = ServerConnection(Limits(), heartbeat=server_hb, grace=2.0)
    headers = [("accept-version", "1.2"), ("host", "/")]
    if client_hb is not None:
        headers.append(("heart-beat", client_hb))
    conn.receive_data(encode_frame(Command.CONNECT, headers, version="1.2"), now)
    event = conn.next_event()
    assert isinstance(event, Connect)
    return conn, headers_of(parse_one(conn.accept("s1", now)))


def test_accept_emits_negotiated_heartbeat() -> None:
    conn, headers = connected_server("4000,500", server_hb=(1000, 2000))
    # server->client max(1000, 500) = 1000; client->server max(4000, 2000) = 4000
    assert headers["heart-beat"] == "1000,4000"
    assert conn.heartbeat_intervals == (1.0, 4.0)


def test_accept_without_client_heartbeat_turns_beats_off() -> None:
    conn, headers = connected_server(None)
    assert headers["heart-beat"] == "0,0"
    assert conn.next_deadline() is None
    assert conn.on_timer(1e9) is BeatAction.NOTHING
    assert conn.heartbeat_intervals == (0.0, 0.0)


def test_server_timers_with_fake_now() -> None:
    conn, _ = connected_server("1000,3000", server_hb=(1000, 1000), now=100.0)
    # send every 3 s (a beat after 1.5 s), expect a beat every 1 s, dead after 2 s (grace 2.0)
    assert conn.heartbeat_intervals == (3.0, 1.0)
    assert conn.next_deadline() == 101.5
    assert conn.on_timer(101.0) is BeatAction.NOTHING
    conn.receive_data(EOL, 101.4)  # any byte proves the peer alive
    assert conn.next_deadline() == 101.5
    assert conn.on_timer(101.5) is BeatAction.SEND_BEAT  # 1.5 s since accept, the CONNECTED frame
    assert conn.next_deadline() == pytest.approx(103.0)
    assert conn.on_timer(102.9) is BeatAction.NOTHING
    assert conn.on_timer(103.0) is BeatAction.SEND_BEAT
    assert conn.next_deadline() == pytest.approx(103.4)
    assert conn.on_timer(103.39) is BeatAction.NOTHING
    assert conn.on_timer(103.4) is BeatAction.PEER_DEAD


def test_note_sent_postpones_the_beat() -> None:
    conn, _ = connected_server("0,1000", server_hb=(1000, 0), now=0.0)
    assert conn.heartbeat_intervals == (1.0, 0.0)
    conn.note_sent(0.4)
    assert conn.on_timer(0.5) is BeatAction.NOTHING
    assert conn.next_deadline() == pytest.approx(0.9)
    assert conn.on_timer(0.9) is BeatAction.SEND_BEAT
    assert conn.next_deadline() == pytest.approx(1.4)


def test_heartbeats_are_counted_by_the_parser_after_accept() -> None:
    conn, _ = connected_server("1000,1000")
    conn.receive_data(b"\n\r\n", 100.5)
    assert conn.next_event() is None
    assert conn.buffered == 0


def test_closed_connection_has_no_timer_actions() -> None:
    conn, _ = connected_server("1000,1000")
    conn.close()
    assert conn.state is State.CLOSED
    assert conn.on_timer(1e9) is BeatAction.NOTHING


def test_1_0_connection_has_no_heartbeats() -> None:
    conn = ServerConnection(Limits(), heartbeat=(1000, 1000))
    conn.receive_data(b"CONNECT\nheart-beat:1000,1000\n\n\x00", 0.0)
    event = conn.next_event()
    assert isinstance(event, Connect)
    assert event.version == "1.0"
    assert event.heartbeat == (0, 0)  # 1.0 has no heart-beating; the header is ignored
    headers = headers_of(parse_one(conn.accept("s", 0.0), version="1.0"))
    assert "heart-beat" not in headers
    assert conn.next_deadline() is None


def test_bad_heartbeat_in_connect_is_an_error_with_receipt() -> None:
    conn = ServerConnection(Limits())
    conn.receive_data(b"CONNECT\naccept-version:1.2\nheart-beat:x\nreceipt:c1\n\n\x00", 0.0)
    with pytest.raises(StompProtocolError) as info:
        conn.next_event()
    assert (info.value.message, info.value.receipt_id) == ("Invalid heart-beat header", "c1")


# -- ClientConnection --------------------------------------------------------------------------


def test_client_derives_the_same_intervals_from_connected() -> None:
    client = ClientConnection()
    server = ServerConnection(Limits(), heartbeat=(1000, 2000))
    server.receive_data(client.connect("/", heartbeat=(4000, 500)), 50.0)
    assert isinstance(server.next_event(), Connect)
    client.receive_data(server.accept("s", 50.0), 50.0)
    event = client.next_event(50.0)
    assert isinstance(event, Connected)
    assert event.heartbeat == (1000, 4000)
    # client sends every 4 s (a beat after 2 s), expects a beat every 1 s (dead after 2 s, grace 2.0)
    assert client.next_deadline() == 52.0
    assert client.on_timer(51.0) is BeatAction.NOTHING
    client.receive_data(b"\n", 51.0)
    assert client.next_event(51.0) is None
    assert client.next_deadline() == 52.0  # its own beat, 2 s after CONNECT
    client.note_sent(52.0)
    assert client.next_deadline() == 53.0  # the server is dead unless a byte comes by then
    assert client.on_timer(53.0) is BeatAction.PEER_DEAD
    client.receive_data(b"\n", 53.0)
    assert client.on_timer(53.9) is BeatAction.NOTHING
    assert client.on_timer(54.0) is BeatAction.SEND_BEAT
    assert client.on_timer(54.9) is BeatAction.NOTHING
    assert client.on_timer(55.0) is BeatAction.PEER_DEAD


def test_client_sends_beats() -> None:
    client = ClientConnection()
    assert client.on_timer(0.0) is BeatAction.NOTHING  # no clock before CONNECTED
    assert client.next_deadline() is None
    server = ServerConnection(Limits(), heartbeat=(0, 1000))
    server.receive_data(client.connect("/", heartbeat=(1000, 0)), 0.0)
    assert isinstance(server.next_event(), Connect)
    client.receive_data(server.accept("s", 0.0), 0.0)
    assert isinstance(client.next_event(0.0), Connected)
    assert client.next_deadline() == 0.5
    assert client.on_timer(0.5) is BeatAction.SEND_BEAT
    assert client.next_deadline() == 1.0
