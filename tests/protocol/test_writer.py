"""encode_frame: every client and server frame round-trips through the parser."""

from __future__ import annotations

import pytest

from queueit.stomp import V10, V11, V12, Command, encode_frame
from queueit.stomp.frames import BODY_COMMANDS, CLIENT_COMMANDS, SERVER_COMMANDS
from queueit.stomp.writer import FRAME_END

from .helpers import parse_frames, parse_one

ALL_VERSIONS = [V10, V11, V12]

#: Typical headers of every frame (STOMP 1.2 "Frames and Headers").
TYPICAL: dict[Command, list[tuple[str, str]]] = {
    Command.CONNECT: [
        ("accept-version", "1.0,1.1,1.2"),
        ("host", "/"),
        ("login", "guest"),
        ("passcode", "p:a\\ss"),
        ("heart-beat", "1000,1000"),
    ],
    Command.STOMP: [("accept-version", "1.2"), ("host", "vhost")],
    Command.SEND: [("destination", "/queue/a"), ("content-type", "text/plain"), ("receipt", "r1")],
    Command.SUBSCRIBE: [("id", "0"), ("destination", "/queue/a"), ("ack", "client-individual")],
    Command.UNSUBSCRIBE: [("id", "0"), ("receipt", "r2")],
    Command.ACK: [("id", "m-1"), ("transaction", "tx1")],
    Command.NACK: [("id", "m-1"), ("subscription", "0")],
    Command.BEGIN: [("transaction", "tx1")],
    Command.COMMIT: [("transaction", "tx1")],
    Command.ABORT: [("transaction", "tx1")],
    Command.DISCONNECT: [("receipt", "bye")],
    Command.CONNECTED: [
        ("version", "1.2"),
        ("session", "s:1"),
        ("server", "queueit/0.1"),
        ("heart-beat", "0,0"),
    ],
    Command.MESSAGE: [
        ("destination", "/queue/a"),
        ("message-id", "ID:host-1"),
        ("subscription", "0"),
        ("ack", "ID:host-1"),
    ],
    Command.RECEIPT: [("receipt-id", "r1")],
    Command.ERROR: [("message", "Bad thing"), ("receipt-id", "r1"), ("content-type", "text/plain")],
}


def test_tables_cover_every_command() -> None:
    assert set(TYPICAL) == set(Command) == CLIENT_COMMANDS | SERVER_COMMANDS
    assert not CLIENT_COMMANDS & SERVER_COMMANDS


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("command", list(Command))
def test_every_frame_round_trips(command: Command, version: str) -> None:
    headers = TYPICAL[command]
    body = b"hello\x00world\n" if command in BODY_COMMANDS else b""
    data = encode_frame(command, headers, body, version=version)
    expected = list(headers)
    if command in BODY_COMMANDS:
        expected.append(("content-length", str(len(body))))
    assert parse_one(data, version=version) == (command, tuple(expected), body)


@pytest.mark.parametrize("version", [V11, V12])
def test_escaped_headers_round_trip(version: str) -> None:
    headers = [("destination", "/queue/a:b"), ("multi\nline", "x\ny"), ("back\\slash", "\\"), ("u", "ü:日")]
    data = encode_frame(Command.SEND, headers, b"", version=version)
    assert b"destination:/queue/a\\cb\n" in data
    assert b"multi\\nline:x\\ny\n" in data
    assert b"back\\\\slash:\\\\\n" in data
    frame = parse_one(data, version=version)
    assert frame[1][:4] == tuple(headers)


def test_1_2_escapes_carriage_return() -> None:
    data = encode_frame(Command.SEND, [("x", "a\rb")], version=V12)
    assert b"x:a\\rb\n" in data
    assert parse_one(data, version=V12)[1][0] == ("x", "a\rb")


def test_1_1_cannot_represent_carriage_return() -> None:
    with pytest.raises(ValueError, match="CR"):
        encode_frame(Command.SEND, [("x", "a\rb")], version=V11)
    with pytest.raises(ValueError, match="CR"):
        encode_frame(Command.SEND, [("a\rb", "x")], version=V11)


def test_1_0_is_never_escaped() -> None:
    data = encode_frame(Command.SEND, [("destination", "/queue/a:b"), ("x", "\\c")], version=V10)
    assert data == b"SEND\ndestination:/queue/a:b\nx:\\c\ncontent-length:0\n\n" + FRAME_END
    assert parse_one(data, version=V10)[1][:2] == (("destination", "/queue/a:b"), ("x", "\\c"))


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b"])
@pytest.mark.parametrize(
    ("command", "version"),
    [(Command.SEND, V10), (Command.CONNECT, V12), (Command.STOMP, V11), (Command.CONNECTED, V12)],
)
def test_unescaped_frames_refuse_line_breaks(command: Command, version: str, value: str) -> None:
    with pytest.raises(ValueError, match="unescaped"):
        encode_frame(command, [("x", value)], version=version)
    with pytest.raises(ValueError, match="unescaped"):
        encode_frame(command, [(value, "x")], version=version)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_connected_is_never_escaped(version: str) -> None:
    data = encode_frame(Command.CONNECTED, [("session", "a:b\\c")], version=version)
    assert data == b"CONNECTED\nsession:a:b\\c\n\n" + FRAME_END
    assert parse_one(data, version=version)[1] == (("session", "a:b\\c"),)


def test_exact_wire_format() -> None:
    data = encode_frame(Command.SEND, [("destination", "/q")], b"hi", version=V12)
    assert data == b"SEND\ndestination:/q\ncontent-length:2\n\nhi" + FRAME_END
    assert encode_frame(Command.DISCONNECT, [], version=V12) == b"DISCONNECT\n\n" + FRAME_END
    assert encode_frame(Command.SUBSCRIBE, [("id", "1")], version=V12) == b"SUBSCRIBE\nid:1\n\n" + FRAME_END


def test_frame_end_is_nul_then_at_most_eols() -> None:
    # The grammar: ``frame = command EOL *( header EOL ) EOL *OCTET NULL *( EOL )``.
    assert FRAME_END.startswith(b"\x00")
    assert FRAME_END[1:] in {b"", b"\n", b"\r\n"}


@pytest.mark.parametrize("command", [c for c in Command if c in BODY_COMMANDS])
def test_content_length_is_added_to_body_frames(command: Command) -> None:
    data = encode_frame(command, [], b"", version=V12)
    assert parse_one(data)[1] == (("content-length", "0"),)
    data = encode_frame(command, [], b"\x00\x00", version=V12)
    assert parse_one(data) == (command, (("content-length", "2"),), b"\x00\x00")


def test_callers_content_length_is_kept() -> None:
    data = encode_frame(Command.SEND, [("content-length", "3"), ("x", "y")], b"abc", version=V12)
    assert data.count(b"content-length") == 1
    assert parse_one(data) == (Command.SEND, (("content-length", "3"), ("x", "y")), b"abc")


@pytest.mark.parametrize("command", [c for c in Command if c not in BODY_COMMANDS])
def test_body_on_a_frame_without_body_is_refused(command: Command) -> None:
    with pytest.raises(ValueError, match="must not have a body"):
        encode_frame(command, [], b"x", version=V12)
    assert b"content-length" not in encode_frame(command, [], version=V12)


def test_repeated_headers_are_written_and_the_first_wins() -> None:
    data = encode_frame(Command.SEND, [("a", "1"), ("a", "2")], b"", version=V12)
    assert b"a:1\na:2\n" in data
    assert parse_one(data)[1][0] == ("a", "1")


def test_encoded_frames_concatenate() -> None:
    frames = [
        encode_frame(Command.SEND, [("destination", "/q")], b"\x00one", version=V12),
        b"\n",
        encode_frame(Command.BEGIN, [("transaction", "t")], version=V12),
        encode_frame(Command.MESSAGE, [("x", "a:b")], b"two", version=V12),
    ]
    parsed = parse_frames(b"".join(frames))
    assert [(f[0], f[2]) for f in parsed] == [
        (Command.SEND, b"\x00one"),
        (Command.BEGIN, b""),
        (Command.MESSAGE, b"two"),
    ]
