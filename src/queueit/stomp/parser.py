"""Incremental, bounded STOMP frame parser (sans-I/O).

Feed bytes with :meth:`FrameParser.feed`, take frames with :meth:`FrameParser.next_frame`
until it returns ``None``. The parser never rescans bytes it has already searched, so a
frame arriving one byte at a time costs linear time, and it holds at most one incomplete
frame, bounded by :class:`~queueit.stomp.limits.Limits`.

Tolerated between frames (as RabbitMQ and ActiveMQ tolerate them): any number of EOLs
(heart-beats) and NUL octets. CRLF line endings are accepted in every version; a CR that
is not followed by LF is a protocol error.
"""

from __future__ import annotations

import itertools

from .errors import StompProtocolError
from .frames import BODY_COMMANDS, COMMANDS_BY_NAME, COMMANDS_BY_TEXT, UNESCAPED_COMMANDS, Command, Frame
from .grammar import V10, unescape
from .limits import Limits

#: The longest command (UNSUBSCRIBE) plus a CR: a longer first line cannot be a command.
_MAX_COMMAND_LINE = max(len(c) for c in COMMANDS_BY_NAME) + 1

_LF = 0x0A
_CR = 0x0D
_NUL = 0x00


class FrameParser:
    """Turns a byte stream into :class:`Frame` values.

    ``version`` selects the header escaping rules; the connection object sets it once the
    version is negotiated. ``max_frame_size`` starts at the pre-CONNECT limit and is raised
    by the connection after authentication.
    """

    __slots__ = (
        "_body_scan",
        "_body_start",
        "_buf",
        "_content_length",
        "_frame",
        "_head_lines",
        "_head_scan",
        "_header_end",
        "_last_lf",
        "_max_body_digits",
        "heartbeats",
        "limits",
        "max_frame_size",
        "version",
    )

    def __init__(self, limits: Limits, *, max_frame_size: int | None = None) -> None:
        self.limits = limits
        self.max_frame_size = limits.pre_connect_frame_size if max_frame_size is None else max_frame_size
        self._max_body_digits = len(str(limits.max_body_size))
        self.version = V10
        #: EOLs seen between frames (heart-beats); the owner may read and reset it.
        self.heartbeats = 0
        self._buf = bytearray()
        self._head_scan = 0  # how far the search for the end of headers has looked
        self._head_lines = 0  # LFs counted in buf[:_head_scan]
        self._last_lf = -1  # position of the last LF in buf[:_head_scan]
        self._frame: Frame | None = None  # headers parsed, body pending
        self._header_end = 0
        self._body_start = 0
        self._body_scan = 0
        self._content_length: int | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or ``None`` when more bytes are needed.

        Raises:
            StompProtocolError: the input breaks the grammar or a limit. The parser is
                unusable afterwards; the connection must be closed.
        """
        if self._frame is None and not (self._skip_interframe() and self._parse_head()):
            return None
        return self._parse_body()

    # -- frame start -------------------------------------------------------------------

    def _skip_interframe(self) -> bool:
        """Drop EOLs and NULs before a command; True when a command byte is next."""
        buf = self._buf
        n = len(buf)
        i = 0
        while i < n:
            b = buf[i]
            if b == _LF:
                self.heartbeats += 1
                i += 1
            elif b == _NUL:
                i += 1
            elif b == _CR:
                if i + 1 >= n:
                    break
                if buf[i + 1] != _LF:
                    raise StompProtocolError(
                        "Malformed frame", detail="A CR between frames must be followed by LF."
                    )
                self.heartbeats += 1
                i += 2
            else:
                break
        if i:
            del buf[:i]
            self._reset_head()
        return bool(buf) and buf[0] not in (_CR, _LF, _NUL)

    def _parse_head(self) -> bool:
        """Parse command and headers once the blank line has arrived."""
        buf = self._buf
        start = max(self._head_scan - 2, 0)
        end = buf.find(b"\n\n", start)
        # Look for a CRLF blank line only before the LF one: the buffer may hold many frames,
        # and scanning all of them for every frame would cost quadratic time.
        crlf = buf.find(b"\n\r\n", start, len(buf) if end == -1 else end + 1)
        if crlf != -1 and (end == -1 or crlf < end):
            end, body_start = crlf, crlf + 3
        elif end != -1:
            body_start = end + 2
        else:
            self._check_head_bounds()
            self._head_scan = len(buf)
            return False
        if body_start > self.max_frame_size:
            raise self._too_large()
        raw = bytes(buf[:end])
        parsed = self._parse_ascii_head(raw) if raw.isascii() and b"\r" not in raw else None
        if parsed is None:
            lines = raw.split(b"\n")
            if len(lines) - 1 > self.limits.max_headers:
                raise StompProtocolError(
                    "Too many headers",
                    detail=f"A frame may carry at most {self.limits.max_headers} headers.",
                )
            command = self._parse_command(lines[0])
            parsed = (command, self._parse_headers(command, lines))
        command, headers = parsed
        self._frame = Frame(command, headers)
        self._body_start = self._body_scan = body_start
        self._content_length = self._parse_content_length(headers)
        return True

    def _parse_ascii_head(self, raw: bytes) -> tuple[Command, dict[str, str]] | None:
        """Fast path for the usual head (ASCII, LF line ends, well-formed).

        Returns ``None`` at the first thing out of the ordinary; the caller then parses the
        head again on the exact path, which gives the precise error. Same result either way.
        """
        lines = raw.decode("ascii").split("\n")
        command = COMMANDS_BY_TEXT.get(lines[0])
        if command is None or len(lines) - 1 > self.limits.max_headers:
            return None
        headers: dict[str, str] = {}
        decode = self.version != V10 and command not in UNESCAPED_COMMANDS
        max_line = self.limits.max_header_line
        for line in itertools.islice(lines, 1, None):
            name, colon, value = line.partition(":")
            if not colon or not name or len(line) > max_line:
                return None
            if decode and "\\" in line:
                try:
                    name = unescape(name, self.version) if "\\" in name else name
                    value = unescape(value, self.version) if "\\" in value else value
                except StompProtocolError:
                    return None
            if name not in headers:
                headers[name] = value
        return (command, headers)

    def _check_head_bounds(self) -> None:
        """Bound an incomplete head, looking only at bytes not looked at before."""
        buf = self._buf
        if len(buf) > self.max_frame_size:
            raise self._too_large()
        # Every line completed by the new bytes, then the partial line at the end: a long
        # line must be refused however the input was split.
        pos = self._head_scan
        if self._head_lines == 0 and buf.find(b"\n", pos) == -1 and len(buf) > _MAX_COMMAND_LINE:
            self._parse_command(bytes(buf[:_MAX_COMMAND_LINE]))  # no command is this long: refuse now
        while (lf := buf.find(b"\n", pos)) != -1:
            if self._head_lines == 0:
                # Junk (an HTTP request, random bytes) is refused at its first line, not after
                # the blank line that may never come.
                self._parse_command(bytes(buf[:lf]))
            self._check_line_length(lf)
            self._last_lf = lf
            self._head_lines += 1
            if self._head_lines > self.limits.max_headers + 1:
                raise StompProtocolError(
                    "Too many headers",
                    detail=f"A frame may carry at most {self.limits.max_headers} headers.",
                )
            pos = lf + 1
        self._check_line_length(len(buf))

    def _check_line_length(self, end: int) -> None:
        """Bound the line from the last LF to ``end``, not counting the CR of a CRLF."""
        length = end - self._last_lf - 1
        if length > 0 and self._buf[end - 1] == _CR:
            length -= 1
        if length > self.limits.max_header_line:
            raise self._line_too_long()

    def _parse_command(self, line: bytes) -> Command:
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.limits.max_header_line:
            raise self._line_too_long()
        command = COMMANDS_BY_NAME.get(line)
        if command is None:
            shown = line[:40].decode("ascii", "replace")
            raise StompProtocolError(
                "Unknown command",
                detail=f"Could not interpret command {shown!r}; commands are upper case, "
                "for example SEND or SUBSCRIBE.",
            )
        return command

    def _parse_headers(self, command: Command, lines: list[bytes]) -> dict[str, str]:
        headers: dict[str, str] = {}
        decode = self.version != V10 and command not in UNESCAPED_COMMANDS
        max_line = self.limits.max_header_line
        for raw in lines[1:]:
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > max_line:
                # No receipt-id: fed in pieces, this is found before any header is parsed.
                raise self._line_too_long()
            if b"\r" in raw:
                raise StompProtocolError(
                    "Malformed header",
                    detail="A header line contains a CR that is not part of a CRLF line ending.",
                    receipt_id=headers.get("receipt"),
                )
            colon = raw.find(b":")
            if colon <= 0:
                raise StompProtocolError(
                    "Malformed header",
                    detail="Every header line must be 'name:value' with a non-empty name.",
                    receipt_id=headers.get("receipt"),
                )
            try:
                name = raw[:colon].decode("utf-8")
                value = raw[colon + 1 :].decode("utf-8")
            except UnicodeDecodeError:
                raise StompProtocolError(
                    "Malformed header",
                    detail="Header names and values must be UTF-8.",
                    receipt_id=headers.get("receipt"),
                ) from None
            if decode:
                try:
                    if "\\" in name:
                        name = unescape(name, self.version)
                    if "\\" in value:
                        value = unescape(value, self.version)
                except StompProtocolError as exc:
                    exc.receipt_id = headers.get("receipt")
                    raise
            if name not in headers:
                headers[name] = value
        return headers

    def _parse_content_length(self, headers: dict[str, str]) -> int | None:
        raw = headers.get("content-length")
        if raw is None:
            return None
        text = raw.strip(" ")
        if not text.isdigit() or not text.isascii():
            raise StompProtocolError(
                "Invalid content-length",
                detail=f"content-length must be a non-negative integer, got {raw!r}.",
                receipt_id=headers.get("receipt"),
            )
        # Compare digit counts first: int() refuses strings of more than 4300 digits.
        digits = text.lstrip("0")
        if len(digits) > self._max_body_digits:
            raise self._too_large(headers.get("receipt"))
        length = int(digits or "0")
        if length > self.limits.max_body_size or self._body_start + length + 1 > self.max_frame_size:
            raise self._too_large(headers.get("receipt"))
        return length

    # -- body ------------------------------------------------------------------------------

    def _parse_body(self) -> Frame | None:
        frame = self._frame
        assert frame is not None
        buf = self._buf
        start = self._body_start
        if self._content_length is not None:
            end = start + self._content_length
            if len(buf) <= end:
                return None
            if buf[end] != _NUL:
                raise StompProtocolError(
                    "Frame body not terminated",
                    detail=f"Expected a NUL octet after the {self._content_length} body octets "
                    "given by content-length.",
                    receipt_id=frame.headers.get("receipt"),
                )
        else:
            end = buf.find(b"\x00", self._body_scan)
            if end == -1:
                self._body_scan = len(buf)
                if len(buf) - start > self.limits.max_body_size or len(buf) > self.max_frame_size:
                    raise self._too_large(frame.headers.get("receipt"))
                return None
            if end - start > self.limits.max_body_size or end + 1 > self.max_frame_size:
                raise self._too_large(frame.headers.get("receipt"))
        if end > start:
            if frame.command not in BODY_COMMANDS:
                raise StompProtocolError(
                    "Unexpected body",
                    detail=f"A {frame.command.value} frame must not have a body.",
                    receipt_id=frame.headers.get("receipt"),
                )
            frame.body = bytes(buf[start:end])
        del buf[: end + 1]
        self._frame = None
        self._reset_head()
        return frame

    def _reset_head(self) -> None:
        self._head_scan = 0
        self._head_lines = 0
        self._last_lf = -1

    def _too_large(self, receipt_id: str | None = None) -> StompProtocolError:
        return StompProtocolError(
            "Frame too large",
            detail=f"This connection accepts frames of at most {self.max_frame_size} bytes "
            f"and bodies of at most {self.limits.max_body_size} bytes.",
            receipt_id=receipt_id,
        )

    def _line_too_long(self, receipt_id: str | None = None) -> StompProtocolError:
        return StompProtocolError(
            "Header line too long",
            detail=f"A command or header line may be at most {self.limits.max_header_line} bytes.",
            receipt_id=receipt_id,
        )
