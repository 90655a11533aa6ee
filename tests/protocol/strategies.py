"""Hypothesis strategies for STOMP frames: what ``encode_frame`` can write in each version."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from queueit.stomp import V10, V11, V12, Command, encode_frame
from queueit.stomp.frames import BODY_COMMANDS, UNESCAPED_COMMANDS

#: The characters the escaping rules are about, mixed into random unicode text.
SPECIAL = ":\n\r\\\x00 "


def header_text(version: str, command: Command, *, name: bool) -> st.SearchStrategy[str]:
    """Header names or values that ``encode_frame`` can represent for ``command`` in ``version``."""
    chars = st.one_of(st.sampled_from(SPECIAL), st.characters(codec="utf-8"))
    text = st.text(chars, min_size=1 if name else 0, max_size=12)
    if command in UNESCAPED_COMMANDS or version == V10:
        # No escaping: no line breaks or NULs, and a ':' in a name would move the separator.
        banned = "\r\n\x00" + (":" if name else "")
        text = text.map(lambda s: "".join(c for c in s if c not in banned))
        if name:
            text = text.filter(bool)
    elif version == V11:
        text = text.map(lambda s: s.replace("\r", ""))  # 1.1 has no escape for CR
        if name:
            text = text.filter(bool)
    if name:
        text = text.filter(lambda s: s != "content-length")
    return text


@dataclass(frozen=True)
class FrameSpec:
    command: Command
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def encode(self, version: str) -> bytes:
        return encode_frame(self.command, self.headers, self.body, version=version)

    def expected(self) -> tuple[Command, tuple[tuple[str, str], ...], bytes]:
        """What the parser must make of the encoded frame: first of each name, content-length."""
        first: dict[str, str] = {}
        for name, value in self.headers:
            first.setdefault(name, value)
        if self.command in BODY_COMMANDS:
            first["content-length"] = str(len(self.body))
        return (self.command, tuple(first.items()), self.body)


@st.composite
def frame_specs(draw: st.DrawFn, version: str) -> FrameSpec:
    command = draw(st.sampled_from(list(Command)))
    pairs = st.tuples(header_text(version, command, name=True), header_text(version, command, name=False))
    headers = draw(st.lists(pairs, max_size=6))
    # Repeat some names so that "first one wins" is exercised.
    repeat: bool = draw(st.booleans())
    if headers and repeat:
        name = draw(st.sampled_from([n for n, _ in headers]))
        headers.append((name, draw(header_text(version, command, name=False))))
    body = draw(st.binary(max_size=64)) if command in BODY_COMMANDS else b""
    return FrameSpec(command, tuple(headers), body)


versions = st.sampled_from([V10, V11, V12])
escaping_versions = st.sampled_from([V11, V12])
interframe = st.lists(st.sampled_from([b"\n", b"\r\n", b"\x00"]), max_size=3).map(b"".join)
