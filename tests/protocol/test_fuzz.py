"""Fuzz: random and mutated input never raises anything but StompProtocolError, and stays bounded.

The limits are small so that random input reaches them; every input is also fed in random
chunks and must give the same frames, and fail or not, as when fed whole. (When one frame
breaks two limits, which one is reported may depend on where the input was split: the
incremental checks report the first one they see.)
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from queueit.stomp import (
    V10,
    V11,
    V12,
    ClientConnection,
    Connect,
    Limits,
    ServerConnection,
    State,
    StompProtocolError,
)

from .helpers import make_parser, parse_chunks, split
from .strategies import frame_specs, versions

FUZZ = settings(max_examples=200, deadline=None)

LIMITS = Limits(
    max_frame_size=300,
    max_body_size=120,
    max_headers=6,
    max_header_line=60,
    pre_connect_frame_size=200,
)

#: Bytes that matter to the grammar, mixed into random bytes so that frames do happen.
TOKENS = [
    b"\n",
    b"\r\n",
    b"\r",
    b"\x00",
    b":",
    b"\\",
    b"\\c",
    b"\\n",
    b"\\t",
    b"SEND\n",
    b"MESSAGE\n",
    b"SUBSCRIBE\n",
    b"ACK\n",
    b"CONNECT\n",
    b"STOMP\n",
    b"DISCONNECT\n",
    b"BEGIN\n",
    b"CONNECTED\n",
    b"RECEIPT\n",
    b"ERROR\n",
    b"version:1.1\n",
    b"CONNECTED\nversion:1.2\n\n\x00",
    b"ERROR\nmessage:m\n\n\x00",
    b"RECEIPT\nreceipt-id:1\n\n\x00",
    b"MESSAGE\ndestination:/q\nmessage-id:1\nsubscription:0\n\n\x00",
    b"destination:/q\n",
    b"id:1\n",
    b"receipt:r\n",
    b"transaction:t\n",
    b"accept-version:1.0,1.1,1.2\n",
    b"heart-beat:1,1\n",
    b"content-length:",
    b"content-length:3\n",
    b"5",
    b"-1",
    b"\xff",
    b"x" * 70,
]

noise = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=8)), max_size=40).map(b"".join)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """Valid frames of one version, then flipped, inserted, deleted and duplicated octets."""
    version = draw(versions)
    data = bytearray(
        b"".join(draw(frame_specs(version)).encode(version) for _ in range(draw(st.integers(1, 3))))
    )
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "token"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 4))]
        elif op == "duplicate":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 30))]
        else:
            data[pos:pos] = draw(st.sampled_from(TOKENS))
    return version, bytes(data)


chunk_sizes = st.lists(st.integers(min_value=0, max_value=50), max_size=40)


def check_parser(data: bytes, version: str, sizes: list[int]) -> None:
    """Feed ``data`` whole, in chunks and byte by byte; compare, and check the bound."""
    for max_frame_size in (LIMITS.max_frame_size, LIMITS.pre_connect_frame_size):
        parser = make_parser(version=version, limits=LIMITS, max_frame_size=max_frame_size)
        for chunk in split(data, sizes):
            parser.feed(chunk)
            try:
                while parser.next_frame() is not None:
                    pass
            except StompProtocolError:
                break
            # At most one incomplete frame is held, and it is within the frame limit.
            assert parser.buffered <= max_frame_size
        whole = parse_chunks([data], version=version, limits=LIMITS, max_frame_size=max_frame_size)
        chunked = parse_chunks(
            split(data, sizes), version=version, limits=LIMITS, max_frame_size=max_frame_size
        )
        assert (chunked.frames, chunked.heartbeats) == (whole.frames, whole.heartbeats)
        assert (chunked.error is None) == (whole.error is None), (chunked.error, whole.error)


@FUZZ
@given(noise, versions, chunk_sizes)
def test_random_bytes_in_the_parser(data: bytes, version: str, sizes: list[int]) -> None:
    check_parser(data, version, sizes)


@FUZZ
@given(st.binary(max_size=400), versions, chunk_sizes)
def test_raw_binary_in_the_parser(data: bytes, version: str, sizes: list[int]) -> None:
    check_parser(data, version, sizes)


@FUZZ
@given(mutated(), chunk_sizes)
def test_mutated_frames_in_the_parser(case: tuple[str, bytes], sizes: list[int]) -> None:
    version, data = case
    check_parser(data, version, sizes)


CONNECTS = {
    V10: b"CONNECT\nlogin:u\n\n\x00",
    V11: b"STOMP\naccept-version:1.1\nhost:/\nheart-beat:10,10\n\n\x00",
    V12: b"CONNECT\naccept-version:1.2\nhost:/\n\n\x00",
}


def drive_server(chunks: list[bytes]) -> None:
    """Feed a ServerConnection, accepting any CONNECT; only StompProtocolError may come out."""
    conn = ServerConnection(LIMITS, heartbeat=(10, 10))
    now = 0.0
    for chunk in chunks:
        now += 0.001
        conn.receive_data(chunk, now)
        try:
            while (event := conn.next_event()) is not None:
                if isinstance(event, Connect):
                    conn.accept("s", now)
        except StompProtocolError as exc:
            conn.error_for(exc)
            assert conn.state is State.CLOSED
            return
        limit = (
            LIMITS.pre_connect_frame_size if conn.state is State.AWAITING_CONNECT else LIMITS.max_frame_size
        )
        if conn.state is not State.CLOSED:
            assert conn.buffered <= limit
        conn.on_timer(now)


@FUZZ
@given(noise, chunk_sizes, st.sampled_from([None, V10, V11, V12]))
def test_random_bytes_in_a_server_connection(data: bytes, sizes: list[int], connect: str | None) -> None:
    prefix = b"" if connect is None else CONNECTS[connect]
    drive_server(split(prefix + data, sizes))


@FUZZ
@given(mutated(), chunk_sizes)
def test_mutated_frames_in_a_server_connection(case: tuple[str, bytes], sizes: list[int]) -> None:
    version, data = case
    drive_server(split(CONNECTS[version] + data, sizes))


@FUZZ
@given(noise, chunk_sizes)
def test_random_bytes_in_a_client_connection(data: bytes, sizes: list[int]) -> None:
    client = ClientConnection(LIMITS)
    client.connect("/", heartbeat=(10, 10))
    prefix = b"CONNECTED\nversion:1.2\nheart-beat:10,10\n\n\x00"
    try:
        for chunk in split(prefix + data, sizes):
            client.receive_data(chunk, 0.0)
            while client.next_event(0.0) is not None:
                pass
            assert client._parser.buffered <= LIMITS.max_frame_size
    except StompProtocolError:
        pass
