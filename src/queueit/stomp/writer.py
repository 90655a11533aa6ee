"""Frame serialisation: the inverse of :mod:`queueit.stomp.parser`."""

from __future__ import annotations

from collections.abc import Iterable

from .frames import BODY_COMMANDS, UNESCAPED_COMMANDS, Command
from .grammar import V10, V11, escape

#: NUL, then one EOL. The grammar allows EOLs after the NUL, and some clients need one:
#: php-stomp (the talk's PHP ``Stomp`` class) reads two octets after a content-length body
#: and drops the frame unless they are NUL and LF.
FRAME_END = b"\x00\n"


def encode_frame(
    command: Command,
    headers: Iterable[tuple[str, str]],
    body: bytes = b"",
    *,
    version: str,
) -> bytes:
    """Serialise one frame for a peer speaking ``version``.

    Header names and values are escaped for the version (never in CONNECT, STOMP and
    CONNECTED frames, never in 1.0). A ``content-length`` header is added to frames that
    may carry a body unless the caller gave one, so a body may contain NUL octets.

    Raises:
        ValueError: a body on a frame that must not have one, or a header that cannot be
            represented in this version (a line break or NUL in 1.0 or in CONNECT, a CR
            in 1.1, which has no escape for it).
    """
    if body and command not in BODY_COMMANDS:
        raise ValueError(f"a {command.value} frame must not have a body")
    do_escape = version != V10 and command not in UNESCAPED_COMMANDS
    parts = [command.value]
    has_length = False
    for name, value in headers:
        if name == "content-length":
            has_length = True
        if do_escape:
            if version == V11 and ("\r" in name or "\r" in value):
                raise ValueError(f"header {name!r} cannot be sent in STOMP 1.1: it contains CR")
            name = escape(name, version)
            value = escape(value, version)
        elif _unrepresentable(name) or _unrepresentable(value):
            raise ValueError(f"header {name!r} cannot be sent unescaped: it contains CR, LF or NUL")
        parts.append(f"{name}:{value}")
    if not has_length and command in BODY_COMMANDS:
        parts.append(f"content-length:{len(body)}")
    parts.append("\n")
    return "\n".join(parts).encode("utf-8") + body + FRAME_END


def _unrepresentable(text: str) -> bool:
    return "\n" in text or "\r" in text or "\x00" in text
