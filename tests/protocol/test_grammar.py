"""Versions, header escaping, limits and the state table (grammar.py, limits.py, state.py)."""

from __future__ import annotations

import pytest

from queueit.stomp import (
    SUPPORTED_VERSIONS,
    V10,
    V11,
    V12,
    Command,
    Limits,
    LocalProtocolError,
    StompProtocolError,
    encode_frame,
    escape,
    negotiate_version,
    unescape,
)
from queueit.stomp.state import State, Trigger, transition

from .helpers import headers_of, parse_error, parse_one

# -- version negotiation ---------------------------------------------------------------------


def test_supported_versions() -> None:
    assert SUPPORTED_VERSIONS == ("1.0", "1.1", "1.2")


def test_missing_accept_version_means_1_0() -> None:
    assert negotiate_version(None) == V10


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ("1.0,1.1,1.2", V12),
        ("1.2,1.1,1.0", V12),
        ("1.1", V11),
        ("1.0", V10),
        ("1.0,1.1", V11),
        ("1.1,2.0", V11),
        ("1.2,3.0", V12),
    ],
)
def test_highest_common_version_wins(offered: str, chosen: str) -> None:
    assert negotiate_version(offered) == chosen


@pytest.mark.parametrize("offered", ["2.0", "", "0.9,2.0", "1.3"])
def test_no_common_version_is_an_error_listing_ours(offered: str) -> None:
    with pytest.raises(StompProtocolError) as info:
        negotiate_version(offered)
    assert info.value.versions == "1.0,1.1,1.2"
    assert "1.0,1.1,1.2" in info.value.message


# -- escaping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (r"a\nb", "a\nb"),
        (r"a\cb", "a:b"),
        ("a\\\\b", "a\\b"),
        (r"a\rb", "a\rb"),
        (r"\r\n\c\\", "\r\n:\\"),
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_unescape_1_2(raw: str, decoded: str) -> None:
    assert unescape(raw, V12) == decoded


def test_unescape_1_1_knows_no_carriage_return() -> None:
    assert unescape(r"a\nb\cc\\d", V11) == "a\nb:c\\d"
    with pytest.raises(StompProtocolError, match="Undefined escape"):
        unescape(r"a\rb", V11)


@pytest.mark.parametrize("version", [V11, V12])
@pytest.mark.parametrize("raw", [r"a\tb", "trailing\\", r"\x", r"\C", "\\ "])
def test_undefined_escape_is_fatal(version: str, raw: str) -> None:
    with pytest.raises(StompProtocolError, match="Undefined escape"):
        unescape(raw, version)


def test_unescape_does_not_decode_twice() -> None:
    # "\\c" is an escaped backslash followed by 'c', not a colon.
    assert unescape("\\\\c", V12) == "\\c"
    assert unescape("\\\\n", V11) == "\\n"


@pytest.mark.parametrize(
    ("text", "v12", "v11"),
    [
        ("a:b", r"a\cb", r"a\cb"),
        ("a\nb", r"a\nb", r"a\nb"),
        ("a\\b", "a\\\\b", "a\\\\b"),
        ("a\rb", r"a\rb", "a\rb"),
        ("plain ü", "plain ü", "plain ü"),
    ],
)
def test_escape_per_version(text: str, v12: str, v11: str) -> None:
    assert escape(text, V12) == v12
    assert escape(text, V11) == v11
    assert escape(text, V10) == text


@pytest.mark.parametrize("text", ["a:b", "x\ny", "back\\slash", "\\c", "\\n:\n", "日本:語\\", " spaced "])
@pytest.mark.parametrize("version", [V11, V12])
def test_escape_reparses_to_the_same_value(text: str, version: str) -> None:
    assert unescape(escape(text, version), version) == text
    frame = b"SEND\nx:" + escape(text, version).encode() + b"\n\n\x00"
    assert headers_of(parse_one(frame, version=version))["x"] == text


def test_escape_1_2_carriage_return_reparses() -> None:
    assert unescape(escape("a\r\nb", V12), V12) == "a\r\nb"


@pytest.mark.parametrize("version", [V11, V12])
def test_frames_unescape_names_and_values(version: str) -> None:
    frame = parse_one(b"SEND\ndestination:/queue/a\\cb\nna\\cme:v\\na\\\\l\n\n\x00", version=version)
    assert frame[1] == (("destination", "/queue/a:b"), ("na:me", "v\na\\l"))


def test_1_2_frames_decode_carriage_return() -> None:
    frame = parse_one(b"SEND\nx:a\\rb\n\n\x00", version=V12)
    assert headers_of(frame)["x"] == "a\rb"


def test_1_1_frames_reject_carriage_return_escape() -> None:
    assert parse_error(b"SEND\nx:a\\rb\n\n\x00", version=V11)[0] == "Undefined escape sequence in header"


@pytest.mark.parametrize("version", [V11, V12])
@pytest.mark.parametrize("bad", [b"a\\tb", b"trailing\\", b"\\"])
def test_frames_with_undefined_escapes_are_errors(version: str, bad: bytes) -> None:
    message, _ = parse_error(b"SEND\ndestination:/q\nx:" + bad + b"\n\n\x00", version=version)
    assert message == "Undefined escape sequence in header"


def test_undefined_escape_in_a_header_name_is_an_error() -> None:
    assert parse_error(b"SEND\nx\\t:1\n\n\x00")[0] == "Undefined escape sequence in header"


def test_undefined_escape_error_carries_the_receipt() -> None:
    message, receipt = parse_error(b"SEND\nreceipt:r-1\nx:a\\tb\n\n\x00")
    assert (message, receipt) == ("Undefined escape sequence in header", "r-1")


def test_1_0_never_unescapes() -> None:
    frame = parse_one(b"SEND\ndestination:/queue/a\\cb\nx:a\\tb\\\n\n\x00", version=V10)
    assert frame[1] == (("destination", "/queue/a\\cb"), ("x", "a\\tb\\"))


@pytest.mark.parametrize("version", [V10, V11, V12])
@pytest.mark.parametrize("command", [b"CONNECT", b"STOMP", b"CONNECTED"])
def test_connect_and_connected_are_never_unescaped(version: str, command: bytes) -> None:
    frame = parse_one(command + b"\nlogin:us\\er\npasscode:pa\\cs:s\nx:\\t\\\n\n\x00", version=version)
    assert frame[1] == (("login", "us\\er"), ("passcode", "pa\\cs:s"), ("x", "\\t\\"))


@pytest.mark.parametrize("version", [V10, V11, V12])
def test_connect_is_never_escaped_on_output(version: str) -> None:
    data = encode_frame(Command.CONNECT, [("passcode", "pa\\cs:s")], version=version)
    assert b"passcode:pa\\cs:s\n" in data
    assert headers_of(parse_one(data, version=version))["passcode"] == "pa\\cs:s"


# -- limits ----------------------------------------------------------------------------------


def test_limit_defaults_are_sane() -> None:
    limits = Limits()
    assert limits.max_body_size <= limits.max_frame_size
    assert limits.pre_connect_frame_size < limits.max_frame_size
    assert "max_frame_size" in Limits.field_names()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_headers": 0},
        {"max_frame_size": -1},
        {"max_header_line": True},
        {"max_body_size": 10, "max_frame_size": 5},
        {"default_prefetch": 11, "max_unacked": 10},
    ],
)
def test_invalid_limits_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="limit"):
        Limits(**kwargs)


# -- state table -------------------------------------------------------------------------------


def test_state_table_happy_path() -> None:
    state = transition(State.AWAITING_CONNECT, Trigger.CONNECT)
    assert state is State.AUTHENTICATING
    state = transition(state, Trigger.ACCEPT)
    assert state is State.CONNECTED
    assert transition(state, Trigger.DISCONNECT) is State.CLOSED


@pytest.mark.parametrize("state", list(State))
def test_close_is_allowed_from_every_state(state: State) -> None:
    assert transition(state, Trigger.CLOSE) is State.CLOSED


@pytest.mark.parametrize(
    ("state", "trigger"),
    [
        (State.AWAITING_CONNECT, Trigger.ACCEPT),
        (State.AWAITING_CONNECT, Trigger.DISCONNECT),
        (State.AUTHENTICATING, Trigger.CONNECT),
        (State.CONNECTED, Trigger.CONNECT),
        (State.CONNECTED, Trigger.ACCEPT),
        (State.CLOSED, Trigger.CONNECT),
        (State.CLOSED, Trigger.DISCONNECT),
    ],
)
def test_missing_transitions_are_local_errors(state: State, trigger: Trigger) -> None:
    with pytest.raises(LocalProtocolError):
        transition(state, trigger)
