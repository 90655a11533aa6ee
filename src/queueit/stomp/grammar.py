"""The STOMP grammar rules that are more than framing: versions and header escaping.

STOMP 1.2, "Augmented BNF"::

    frame        = command EOL *( header EOL ) EOL *OCTET NULL *( EOL )
    EOL          = [CR] LF
    header       = header-name ":" header-value

"Value Encoding" (1.1 and 1.2): "C style string literal escapes are used to encode any
carriage returns, line feeds or colon found within the UTF-8 encoded headers":

    ``\\r`` -> CR (1.2 only), ``\\n`` -> LF, ``\\c`` -> ``:``, ``\\\\`` -> ``\\``.
    "Undefined escape sequences such as \\t (octet 92 and 116) MUST be treated as a fatal
    protocol error."

CONNECT and CONNECTED frames are never escaped, so that 1.0 peers can read them, and
STOMP 1.0 escapes nothing at all.
"""

from __future__ import annotations

import re

from .errors import StompProtocolError

V10 = "1.0"
V11 = "1.1"
V12 = "1.2"
SUPPORTED_VERSIONS: tuple[str, ...] = (V10, V11, V12)
SUPPORTED_VERSIONS_HEADER = ",".join(SUPPORTED_VERSIONS)

_DECODE_12 = {"r": "\r", "n": "\n", "c": ":", "\\": "\\"}
_DECODE_11 = {"n": "\n", "c": ":", "\\": "\\"}
_ESCAPE_RE = re.compile(r"\\(.?)", re.DOTALL)
_NEEDS_ESCAPE_12 = re.compile(r"[\\\r\n:]")
_NEEDS_ESCAPE_11 = re.compile(r"[\\\n:]")
_ENCODE_12 = str.maketrans({"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"})
_ENCODE_11 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c"})


def negotiate_version(accept_version: str | None) -> str:
    """Pick the highest version both sides speak.

    A missing ``accept-version`` header means the client speaks 1.0 only.

    Raises:
        StompProtocolError: no common version; the ERROR frame lists ours.
    """
    if accept_version is None:
        return V10
    offered = {v for v in accept_version.split(",") if v}
    for version in reversed(SUPPORTED_VERSIONS):
        if version in offered:
            return version
    raise StompProtocolError(
        "Supported protocol versions are " + SUPPORTED_VERSIONS_HEADER,
        detail=f"The client accepts {accept_version!r}; this server speaks {SUPPORTED_VERSIONS_HEADER}.",
        versions=SUPPORTED_VERSIONS_HEADER,
    )


def unescape(text: str, version: str) -> str:
    """Decode header escapes for ``version`` (caller skips 1.0 and CONNECT frames).

    Raises:
        StompProtocolError: an escape sequence the version does not define.
    """
    table = _DECODE_12 if version == V12 else _DECODE_11

    def replace(match: re.Match[str]) -> str:
        char = match.group(1)
        decoded = table.get(char)
        if decoded is None:
            shown = "\\" + char if char else "\\ at the end of the header"
            raise StompProtocolError(
                "Undefined escape sequence in header",
                detail=f"STOMP {version} does not define the escape {shown!r}; escape a backslash as '\\\\'.",
            )
        return decoded

    return _ESCAPE_RE.sub(replace, text)


def escape(text: str, version: str) -> str:
    """Encode a header name or value for ``version`` (1.0 and CONNECTED: no escaping)."""
    if version == V12:
        if _NEEDS_ESCAPE_12.search(text) is None:
            return text
        return text.translate(_ENCODE_12)
    if version == V11:
        if _NEEDS_ESCAPE_11.search(text) is None:
            return text
        return text.translate(_ENCODE_11)
    return text
