"""Property tests: encode then parse is the identity; chunking never changes the result."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from queueit.stomp import V11, V12, escape, unescape

from .helpers import parse_both, parse_chunks, split
from .strategies import SPECIAL, escaping_versions, frame_specs, interframe, versions

PROPERTY = settings(max_examples=150, deadline=None)


@PROPERTY
@given(st.data(), escaping_versions)
def test_encode_then_parse_is_identity_in_1_1_and_1_2(data: st.DataObject, version: str) -> None:
    spec = data.draw(frame_specs(version))
    result = parse_both(spec.encode(version), version=version)
    assert result.error is None
    assert result.frames == (spec.expected(),)


@PROPERTY
@given(st.data(), versions)
def test_encode_then_parse_is_identity_in_every_version(data: st.DataObject, version: str) -> None:
    spec = data.draw(frame_specs(version))
    assert parse_chunks([spec.encode(version)], version=version).frames == (spec.expected(),)


@PROPERTY
@given(st.text(st.one_of(st.sampled_from(SPECIAL), st.characters(codec="utf-8"))), escaping_versions)
def test_escape_then_unescape_is_identity(text: str, version: str) -> None:
    if version == V11:
        text = text.replace("\r", "")
    escaped = escape(text, version)
    assert "\n" not in escaped
    assert ":" not in escaped
    if version == V12:
        assert "\r" not in escaped
    assert unescape(escaped, version) == text


@st.composite
def stream(draw: st.DrawFn) -> tuple[str, bytes, list[tuple[object, ...]]]:
    version = draw(versions)
    specs = draw(st.lists(frame_specs(version), min_size=1, max_size=5))
    parts = [draw(interframe)]
    for spec in specs:
        parts += [spec.encode(version), draw(interframe)]
    return version, b"".join(parts), [spec.expected() for spec in specs]


@PROPERTY
@given(stream(), st.lists(st.integers(min_value=0, max_value=40), max_size=60))
def test_random_chunking_equals_parsing_whole(
    case: tuple[str, bytes, list[tuple[object, ...]]], sizes: list[int]
) -> None:
    version, data, expected = case
    whole = parse_chunks([data], version=version)
    assert whole.error is None
    assert list(whole.frames) == expected
    assert parse_chunks(split(data, sizes), version=version) == whole


@settings(max_examples=60, deadline=None)
@given(stream())
def test_byte_by_byte_equals_parsing_whole(case: tuple[str, bytes, list[tuple[object, ...]]]) -> None:
    version, data, expected = case
    assert list(parse_both(data, version=version).frames) == expected


@PROPERTY
@given(stream(), st.integers(min_value=0, max_value=10_000))
def test_every_prefix_is_a_prefix_of_the_frames(
    case: tuple[str, bytes, list[tuple[object, ...]]], cut: int
) -> None:
    version, data, expected = case
    prefix = data[: cut % (len(data) + 1)]
    result = parse_chunks([prefix], version=version)
    assert result.error is None
    assert list(result.frames) == expected[: len(result.frames)]
