"""FrameParser: framing, headers, bodies, EOLs and limits; every input fed whole and byte by byte."""

from __future__ import annotations

import pytest

from queueit.stomp import V10, V11, V12, Command, FrameParser, Limits, StompProtocolError
from queueit.stomp.frames import BODY_COMMANDS

from .helpers import (
    feed_until_error,
    headers_of,
    make_parser,
    parse_both,
    parse_error,
    parse_frames,
    parse_one,
)

ALL_VERSIONS = [V10, V11, V12]

# -- commands ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(Command))
@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_command_parses(command: Command, version: str) -> None:
    frame = parse_one(command.value.encode() + b"\nreceipt:1\n\n\x00", version=version)
    assert frame == (command, (("receipt", "1"),), b"")


@pytest.mark.parametrize("command", list(Command))
def test_every_command_without_headers(command: Command) -> None:
    assert parse_one(command.value.encode() + b"\n\n\x00") == (command, (), b"")


@pytest.mark.parametrize("line", [b"send", b"Send", b"SEND ", b" SEND", b"CONNECTX", b"FOO", b"\xff\xfe"])
def test_commands_are_case_sensitive_and_exact(line: bytes) -> None:
    message, receipt = parse_error(line + b"\nreceipt:1\n\n\x00")
    assert message == "Unknown command"
    assert receipt is None  # the headers were never parsed


@pytest.mark.parametrize(
    "junk",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"FROB\nx:1\n",
        b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0b\x0c\x0e\x0f",
    ],
)
def test_junk_is_refused_at_its_first_line_without_waiting_for_a_blank_line(junk: bytes) -> None:
    """No blank line ever comes: the error must not wait for one (nor for a size limit)."""
    assert parse_error(junk)[0] == "Unknown command"


def test_a_partial_command_is_not_refused_early() -> None:
    assert parse_frames(b"UNSUBSCRIB") == []


def test_unknown_command_error_names_the_command() -> None:
    parser = make_parser()
    parser.feed(b"send\n\n\x00")
    with pytest.raises(StompProtocolError) as info:
        parser.next_frame()
    assert "'send'" in info.value.detail


# -- headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_headers_are_never_trimmed(version: str) -> None:
    frame = parse_one(b"SEND\ndestination: /queue/a \n x : y\nempty:\n\n\x00", version=version)
    assert frame[1] == (("destination", " /queue/a "), (" x ", " y"), ("empty", ""))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_first_of_repeated_headers_wins(version: str) -> None:
    frame = parse_one(b"SEND\nfoo:1\nbar:x\nfoo:2\nfoo:3\n\n\x00", version=version)
    assert frame[1] == (("foo", "1"), ("bar", "x"))


def test_first_wins_after_unescaping() -> None:
    frame = parse_one(b"SEND\na\\cb:1\na:b:2\n\n\x00", version=V12)
    assert frame[1] == (("a:b", "1"), ("a", "b:2"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_value_may_contain_colons(version: str) -> None:
    frame = parse_one(b"SEND\nurl:http://h:80/p\n\n\x00", version=version)
    assert headers_of(frame) == {"url": "http://h:80/p"}


@pytest.mark.parametrize("line", [b":value", b":", b"no-colon", b""])
def test_malformed_header_lines(line: bytes) -> None:
    data = b"SEND\nreceipt:r9\n" + line + b"\nx:y\n\n\x00"
    if line == b"":
        # An empty line ends the headers; "x:y\n\n" becomes body of a SEND... which is fine.
        assert parse_one(data)[2] == b"x:y\n\n"
        return
    assert parse_error(data) == ("Malformed header", "r9")


@pytest.mark.parametrize("bad", [b"caf\xe9:x", b"x:caf\xe9", b"x:\xed\xa0\x80", b"x:\xc0\xaf"])
def test_invalid_utf8_is_an_error(bad: bytes) -> None:
    assert parse_error(b"SEND\nreceipt:r\n" + bad + b"\n\n\x00") == ("Malformed header", "r")


def test_utf8_headers() -> None:
    frame = parse_one("SEND\nnäme:日本語 ✓\n\n\x00".encode())
    assert headers_of(frame) == {"näme": "日本語 ✓"}


def test_nul_inside_headers_is_kept() -> None:
    frame = parse_one(b"SEND\nx:a\x00b\n\nbody\x00")
    assert frame == (Command.SEND, (("x", "a\x00b"),), b"body")


# -- bodies --------------------------------------------------------------------------------


def test_content_length_body_may_contain_nul() -> None:
    frame = parse_one(b"SEND\ncontent-length:5\n\na\x00b\x00c\x00")
    assert frame[2] == b"a\x00b\x00c"


@pytest.mark.parametrize("value", [b" 5 ", b"5 ", b" 5", b"005", b"  5  "])
def test_content_length_with_spaces_or_zeros(value: bytes) -> None:
    frame = parse_one(b"SEND\ncontent-length:" + value + b"\n\nab\x00de\x00")
    assert frame[2] == b"ab\x00de"


def test_content_length_zero() -> None:
    assert parse_one(b"SEND\ncontent-length:0\n\n\x00")[2] == b""


@pytest.mark.parametrize(
    "value", [b"-1", b"abc", b"", b"+5", b"5.0", b"0x5", b"\t5", b"5a", "\u0665".encode(), b"1 2"]
)
def test_bad_content_length_is_an_error(value: bytes) -> None:
    data = b"SEND\nreceipt:r\ncontent-length:" + value + b"\n\nhello\x00"
    assert parse_error(data) == ("Invalid content-length", "r")


@pytest.mark.parametrize("digits", [b"9" * 30, b"9" * 5000, b"1" + b"0" * 4400])
def test_huge_content_length_is_too_large_not_a_crash(digits: bytes) -> None:
    # int() refuses more than 4300 digits; the parser must answer with a protocol error.
    data = b"SEND\nreceipt:r\ncontent-length:" + digits + b"\n\nx\x00"
    assert parse_error(data, limits=Limits(max_header_line=6000)) == ("Frame too large", "r")


def test_content_length_with_thousands_of_leading_zeros() -> None:
    data = b"SEND\ncontent-length:" + b"0" * 5000 + b"1\n\nx\x00"
    assert parse_one(data, limits=Limits(max_header_line=6000))[2] == b"x"


@pytest.mark.parametrize("tail", [b"X", b"\n", b"ab\x00"])
def test_byte_after_content_length_bytes_must_be_nul(tail: bytes) -> None:
    data = b"SEND\nreceipt:77\ncontent-length:3\n\nabc" + tail
    assert parse_error(data) == ("Frame body not terminated", "77")


def test_body_without_content_length_ends_at_first_nul() -> None:
    frames = parse_frames(b"SEND\n\nab\x00SEND\n\ncd\x00")
    assert [f[2] for f in frames] == [b"ab", b"cd"]
    # The octets after the first NUL are the start of the next frame.
    assert parse_error(b"SEND\n\nab\x00cd\x00\n\n\x00") == ("Unknown command", None)


def test_body_may_contain_eols_and_crs() -> None:
    assert parse_one(b"SEND\n\n\r\n\n\rx\n\x00")[2] == b"\r\n\n\rx\n"


@pytest.mark.parametrize("command", [c for c in Command if c not in BODY_COMMANDS])
def test_body_only_on_send_message_error(command: Command) -> None:
    head = command.value.encode() + b"\nreceipt:r1\n"
    assert parse_error(head + b"\nbody\x00") == ("Unexpected body", "r1")
    assert parse_error(head + b"content-length:1\n\n\x00\x00") == ("Unexpected body", "r1")
    # An empty body is fine, with or without content-length.
    assert parse_one(head + b"content-length:0\n\n\x00")[0] is command


@pytest.mark.parametrize("command", [c for c in Command if c in BODY_COMMANDS])
def test_body_commands_carry_bodies(command: Command) -> None:
    assert parse_one(command.value.encode() + b"\n\nhello\x00") == (command, (), b"hello")


# -- EOLs, NULs, heart-beats -------------------------------------------------------------------


def test_eols_and_nuls_between_frames_are_skipped_and_beats_counted() -> None:
    data = b"\n\r\n\x00\x00SEND\n\na\x00\n\n\x00\r\nSEND\n\nb\x00\r\n"
    result = parse_both(data)
    assert result.error is None
    assert [f[2] for f in result.frames] == [b"a", b"b"]
    assert result.heartbeats == 6


def test_only_heartbeats() -> None:
    result = parse_both(b"\n" * 5 + b"\r\n" * 3)
    assert result == type(result)((), 8, None)


def test_heartbeat_counter_can_be_reset_by_owner() -> None:
    parser = make_parser()
    parser.feed(b"\n\n")
    assert parser.next_frame() is None
    assert parser.heartbeats == 2
    parser.heartbeats = 0
    parser.feed(b"\r\n")
    assert parser.next_frame() is None
    assert parser.heartbeats == 1
    assert parser.buffered == 0


def test_lone_cr_at_end_of_input_waits_for_more() -> None:
    parser = make_parser()
    parser.feed(b"\r")
    assert parser.next_frame() is None
    assert parser.buffered == 1
    parser.feed(b"\nSEND\n\n\x00")
    frame = parser.next_frame()
    assert frame is not None
    assert frame.command is Command.SEND
    assert parser.heartbeats == 1


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_crlf_line_endings(version: str) -> None:
    frame = parse_one(b"SEND\r\ndestination:/q\r\nx:y\r\n\r\nbody\x00", version=version)
    assert frame == (Command.SEND, (("destination", "/q"), ("x", "y")), b"body")


def test_mixed_line_endings() -> None:
    assert parse_one(b"SEND\r\na:1\nb:2\r\n\nz\x00") == (Command.SEND, (("a", "1"), ("b", "2")), b"z")
    assert parse_one(b"DISCONNECT\r\n\r\n\x00") == (Command.DISCONNECT, (), b"")
    assert parse_one(b"SEND\na:1\n\r\nz\x00") == (Command.SEND, (("a", "1"),), b"z")


@pytest.mark.parametrize(
    "data",
    [
        b"\rSEND\n\n\x00",  # between frames
        b"SEND\n\n\x00\rX",  # after a frame
        b"SE\rND\n\n\x00",  # mid command
        b"SEND\r\r\n\n\x00",  # end of command
        b"SEND\nx:a\rb\n\n\x00",  # in a header value
        b"SEND\nx:a\r\r\n\n\x00",  # doubled CR before LF
        b"SEND\n\rx:y\n\n\x00",  # start of a header line
    ],
)
def test_cr_not_followed_by_lf_is_an_error(data: bytes) -> None:
    assert parse_error(data)[0] in {"Malformed frame", "Malformed header", "Unknown command"}


def test_cr_error_messages() -> None:
    assert parse_error(b"\r\x00") == ("Malformed frame", None)
    assert parse_error(b"SEND\nreceipt:q\nx:a\rb\n\n\x00") == ("Malformed header", "q")
    assert parse_error(b"SE\rND\n\n\x00") == ("Unknown command", None)


def test_several_frames_in_one_chunk_and_trailing_partial() -> None:
    parser = make_parser()
    parser.feed(b"SEND\n\n1\x00SEND\n\n2\x00SEND\n\n3")
    bodies = []
    while (frame := parser.next_frame()) is not None:
        bodies.append(frame.body)
    assert bodies == [b"1", b"2"]
    assert parser.buffered == len(b"SEND\n\n3")
    parser.feed(b"\x00")
    frame = parser.next_frame()
    assert frame is not None
    assert frame.body == b"3"
    assert parser.buffered == 0


def test_resume_at_every_split_point() -> None:
    data = (
        b"SEND\r\ndestination:/q\\c1\r\ncontent-length:4\r\n\r\na\x00\r\n\x00\n\r\nMESSAGE\nx:\\\\\n\nhi\x00"
    )
    expected = parse_frames(data)
    for cut in range(len(data) + 1):
        parser = make_parser()
        got = []
        for part in (data[:cut], data[cut:]):
            parser.feed(part)
            while (frame := parser.next_frame()) is not None:
                got.append((frame.command, tuple(frame.headers.items()), frame.body))
        assert got == expected, cut


# -- limits ------------------------------------------------------------------------------------

SMALL = Limits(max_frame_size=100, max_body_size=60, max_headers=3, max_header_line=20)


@pytest.mark.parametrize("content_length", [False, True])
def test_frame_of_exactly_max_frame_size_is_accepted(content_length: bool) -> None:
    head = b"SEND\na:" + b"b" * 18 + b"\nc:" + b"d" * 18 + b"\n\n"
    size = 100 - len(head) - 1 - (len(b"content-length:NN\n") if content_length else 0)
    if content_length:
        head = head.replace(b"SEND\n", b"SEND\ncontent-length:%d\n" % size)
    data = head + b"x" * size + b"\x00"
    assert len(data) == SMALL.max_frame_size
    assert parse_one(data, limits=SMALL)[2] == b"x" * size
    # One more octet is too much.
    data = head.replace(b"length:%d" % size, b"length:%d" % (size + 1)) + b"x" * (size + 1) + b"\x00"
    assert parse_error(data, limits=SMALL) == ("Frame too large", None)


def test_frame_larger_than_max_frame_size() -> None:
    head = b"SEND\na:" + b"b" * 18 + b"\nc:" + b"d" * 18 + b"\n\n"
    # body within max_body_size, but head + body + NUL > max_frame_size
    assert parse_error(head + b"x" * 52 + b"\x00", limits=SMALL) == ("Frame too large", None)
    assert parse_one(head + b"x" * 51 + b"\x00", limits=SMALL)[2] == b"x" * 51


def test_frame_too_large_with_content_length_raised_before_body_arrives() -> None:
    parser = make_parser(limits=SMALL)
    parser.feed(b"SEND\nreceipt:r\ncontent-length:90\n\n")
    with pytest.raises(StompProtocolError) as info:
        parser.next_frame()
    assert (info.value.message, info.value.receipt_id) == ("Frame too large", "r")


def test_body_larger_than_max_body_size_with_content_length() -> None:
    limits = Limits(max_frame_size=1000, max_body_size=60)
    assert parse_one(b"SEND\ncontent-length:60\n\n" + b"x" * 60 + b"\x00", limits=limits)[2] == b"x" * 60
    data = b"SEND\nreceipt:r\ncontent-length:61\n\n"
    assert parse_error(data, limits=limits) == ("Frame too large", "r")  # no body needed


def test_body_larger_than_max_body_size_without_content_length() -> None:
    limits = Limits(max_frame_size=1000, max_body_size=60)
    assert parse_one(b"SEND\n\n" + b"x" * 60 + b"\x00", limits=limits)[2] == b"x" * 60
    assert parse_error(b"SEND\nreceipt:r\n\n" + b"x" * 61 + b"\x00", limits=limits) == (
        "Frame too large",
        "r",
    )


def test_body_limit_without_content_length_is_detected_early() -> None:
    limits = Limits(max_frame_size=10_000, max_body_size=1000)
    parser = make_parser(limits=limits)
    parser.feed(b"SEND\n\n")
    assert feed_until_error(parser, b"x" * 100, bound=6 + 1000) == ("Frame too large", 1100)


def test_header_count_limit() -> None:
    ok = b"SEND\na:1\nb:2\nc:3\n\n\x00"
    assert len(parse_one(ok, limits=SMALL)[1]) == 3
    assert parse_error(b"SEND\na:1\nb:2\nc:3\nd:4\n\n\x00", limits=SMALL)[0] == "Too many headers"
    # Repeated names cost memory too, so they count.
    assert parse_error(b"SEND\na:1\na:2\na:3\na:4\n\n\x00", limits=SMALL)[0] == "Too many headers"


def test_header_count_limit_is_detected_before_the_blank_line() -> None:
    parser = make_parser(limits=SMALL)
    parser.feed(b"SEND\na:1\nb:2\nc:3\n")
    assert parser.next_frame() is None
    parser.feed(b"d:4\n")
    with pytest.raises(StompProtocolError, match="Too many headers"):
        parser.next_frame()


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_header_line_limit(eol: bytes) -> None:
    line = b"k:" + b"v" * 18  # exactly max_header_line (20) octets
    assert headers_of(parse_one(b"SEND" + eol + line + eol + eol + b"\x00", limits=SMALL)) == {"k": "v" * 18}
    data = b"SEND" + eol + b"receipt:r" + eol + line + b"v" + eol + eol + b"\x00"
    # No receipt-id: split into pieces the long line is refused before any header is parsed.
    assert parse_error(data, limits=SMALL) == ("Header line too long", None)


def test_command_line_limit() -> None:
    limits = Limits(max_header_line=8)
    assert parse_error(b"SENDSENDS\n\n\x00", limits=limits) == ("Header line too long", None)
    assert parse_one(b"SEND\n\n\x00", limits=limits)[0] is Command.SEND


def test_huge_header_line_is_refused_early_and_buffer_stays_bounded() -> None:
    limits = Limits()
    parser = make_parser(limits=limits)
    parser.feed(b"SEND\ndestination:/q\nx:")
    assert parser.next_frame() is None
    message, fed = feed_until_error(parser, b"y" * 1000, bound=limits.max_header_line + 100)
    assert message == "Header line too long"
    line = len(b"x:") + fed
    assert line - 1000 <= limits.max_header_line < line  # refused by the first chunk past the limit


@pytest.mark.parametrize("line", [b"x" * 21, b"SEND\nk:" + b"v" * 19, b"SEND\na:1\r\nk:" + b"v" * 19])
def test_long_line_completed_inside_one_chunk_is_refused_at_once(line: bytes) -> None:
    # The head is not complete yet; the long line must not wait for the blank line.
    parser = make_parser(limits=SMALL)
    parser.feed(line + b"\nb:2\n")
    with pytest.raises(StompProtocolError, match="Header line too long"):
        parser.next_frame()


def test_huge_frame_head_is_refused_at_max_frame_size() -> None:
    limits = Limits(max_frame_size=4096, max_body_size=4096, max_headers=1000, max_header_line=100)
    parser = make_parser(limits=limits)
    parser.feed(b"SEND\n")
    message, fed = feed_until_error(parser, b"h:" + b"v" * 48 + b"\n", bound=4096)
    assert message == "Frame too large"
    assert 4096 < 5 + fed <= 4096 + 51


def test_pre_connect_frame_size_is_the_default_parser_limit() -> None:
    limits = Limits(pre_connect_frame_size=64)
    parser = FrameParser(limits)
    assert parser.max_frame_size == 64
    parser.feed(b"CONNECT\nlogin:" + b"x" * 60 + b"\n\n\x00")
    with pytest.raises(StompProtocolError, match="Frame too large"):
        parser.next_frame()
    parser = FrameParser(limits, max_frame_size=limits.max_frame_size)
    parser.feed(b"CONNECT\nlogin:" + b"x" * 60 + b"\n\n\x00")
    assert parser.next_frame() is not None


# -- receipts on errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"SEND\nreceipt:R\ncontent-length:x\n\n\x00", "Invalid content-length"),
        (b"SEND\nreceipt:R\ncontent-length:1\n\nab\x00", "Frame body not terminated"),
        (b"SUBSCRIBE\nreceipt:R\n\nbody\x00", "Unexpected body"),
        (b"SEND\nreceipt:R\n:x\n\n\x00", "Malformed header"),
        (b"SEND\nreceipt:R\nx:\\t\n\n\x00", "Undefined escape sequence in header"),
        (b"SEND\nreceipt:R\nx:\xff\n\n\x00", "Malformed header"),
    ],
)
def test_errors_carry_the_receipt_id(data: bytes, message: str) -> None:
    assert parse_error(data) == (message, "R")


def test_receipt_id_is_unescaped_and_first_wins() -> None:
    data = b"SEND\nreceipt:a\\cb\nreceipt:zzz\ncontent-length:x\n\n\x00"
    assert parse_error(data) == ("Invalid content-length", "a:b")


def test_error_before_the_receipt_header_has_no_receipt_id() -> None:
    assert parse_error(b"SEND\n:x\nreceipt:R\n\n\x00") == ("Malformed header", None)
