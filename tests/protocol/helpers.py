"""Shared helpers for the STOMP layer tests: parse a byte string whole and byte by byte.

Every parser rule is checked through :func:`parse_both`, which feeds the same input to two
fresh parsers, once in one piece and once one byte at a time, and asserts that both give the
same frames, the same heart-beat count and the same error (the idea of h11's ``tr`` helper).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from queueit.stomp import V12, Command, Frame, FrameParser, Limits, StompProtocolError

#: A frame as a comparable value: header order and content are both significant.
FrameTuple = tuple[Command, tuple[tuple[str, str], ...], bytes]


def as_tuple(frame: Frame) -> FrameTuple:
    return (frame.command, tuple(frame.headers.items()), frame.body)


@dataclass(frozen=True)
class Parsed:
    """What a parser made of an input: frames, heart-beats, and the error that stopped it."""

    frames: tuple[FrameTuple, ...]
    heartbeats: int
    error: tuple[str, str | None] | None  # (message, receipt_id)


def make_parser(
    *, version: str = V12, limits: Limits | None = None, max_frame_size: int | None = None
) -> FrameParser:
    limits = limits or Limits()
    parser = FrameParser(
        limits, max_frame_size=limits.max_frame_size if max_frame_size is None else max_frame_size
    )
    parser.version = version
    return parser


def parse_chunks(
    chunks: Iterable[bytes],
    *,
    version: str = V12,
    limits: Limits | None = None,
    max_frame_size: int | None = None,
) -> Parsed:
    """Feed ``chunks`` in order, draining frames after each; stop at the first error."""
    parser = make_parser(version=version, limits=limits, max_frame_size=max_frame_size)
    frames: list[FrameTuple] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (frame := parser.next_frame()) is not None:
                frames.append(as_tuple(frame))
    except StompProtocolError as exc:
        return Parsed(tuple(frames), parser.heartbeats, (exc.message, exc.receipt_id))
    return Parsed(tuple(frames), parser.heartbeats, None)


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def parse_both(
    data: bytes,
    *,
    version: str = V12,
    limits: Limits | None = None,
    max_frame_size: int | None = None,
) -> Parsed:
    """Parse ``data`` whole and one byte at a time; assert equal results and return them."""
    whole = parse_chunks([data], version=version, limits=limits, max_frame_size=max_frame_size)
    split = parse_chunks(bytewise(data), version=version, limits=limits, max_frame_size=max_frame_size)
    assert whole == split, f"whole {whole!r} != byte by byte {split!r}"
    return whole


def parse_frames(
    data: bytes, *, version: str = V12, limits: Limits | None = None, max_frame_size: int | None = None
) -> list[FrameTuple]:
    """Frames of ``data`` (both ways); fails the test on a protocol error."""
    result = parse_both(data, version=version, limits=limits, max_frame_size=max_frame_size)
    assert result.error is None, f"unexpected error {result.error}"
    return list(result.frames)


def parse_one(
    data: bytes, *, version: str = V12, limits: Limits | None = None, max_frame_size: int | None = None
) -> FrameTuple:
    frames = parse_frames(data, version=version, limits=limits, max_frame_size=max_frame_size)
    assert len(frames) == 1, frames
    return frames[0]


def parse_error(
    data: bytes, *, version: str = V12, limits: Limits | None = None, max_frame_size: int | None = None
) -> tuple[str, str | None]:
    """The ``(message, receipt_id)`` of the error ``data`` causes (both ways)."""
    result = parse_both(data, version=version, limits=limits, max_frame_size=max_frame_size)
    if result.error is None:
        pytest.fail(f"no error; frames {result.frames!r}")
    return result.error


def headers_of(frame: FrameTuple) -> dict[str, str]:
    return dict(frame[1])


def feed_until_error(
    parser: FrameParser, chunk: bytes, *, bound: int, limit: int = 100_000
) -> tuple[str, int]:
    """Feed ``chunk`` again and again until the parser refuses; return (message, octets fed).

    After every chunk that is accepted, no frame may come out and ``parser.buffered`` must stay
    within ``bound``.
    """
    fed = 0
    while fed < limit:
        parser.feed(chunk)
        fed += len(chunk)
        try:
            frame = parser.next_frame()
        except StompProtocolError as exc:
            return exc.message, fed
        assert frame is None
        assert parser.buffered <= bound, (parser.buffered, bound)
    pytest.fail(f"no error after {fed} octets")


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` cut into pieces of the given sizes, then the rest."""
    chunks, pos = [], 0
    for size in sizes:
        chunks.append(data[pos : pos + size])
        pos += size
    chunks.append(data[pos:])
    return chunks
