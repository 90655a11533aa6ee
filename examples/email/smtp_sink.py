"""A local SMTP sink: accepts every mail and writes it to a folder, one file per mail.

    python -m examples.email.smtp_sink --port 2525 --out ./mail

Enough SMTP (RFC 5321: HELO/EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) for smtplib to
deliver to it; nothing is relayed anywhere. For the email example and its test.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from pathlib import Path

MAX_LINE = 1000  # RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF
MAX_MAIL = 10 * 1024 * 1024


class SmtpSink:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self._numbers = itertools.count(len(list(out.glob("*.eml"))) + 1)

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._session, host, port, limit=MAX_LINE + 2)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def reply(line: str) -> None:
            writer.write(line.encode("ascii") + b"\r\n")

        reply("220 queueit-example SMTP sink")
        sender, recipients = "", list[str]()
        try:
            while line := await reader.readline():
                verb = line[:4].decode("ascii", "replace").upper()
                if verb in ("HELO", "EHLO"):
                    reply("250 queueit-example")
                elif verb == "MAIL":
                    sender, recipients = line.decode().strip()[10:], []
                    reply("250 OK")
                elif verb == "RCPT":
                    recipients.append(line.decode().strip()[8:])
                    reply("250 OK")
                elif verb == "DATA":
                    reply("354 End data with <CR><LF>.<CR><LF>")
                    await writer.drain()
                    body = await self._data(reader)
                    path = self.out / f"{next(self._numbers):06d}.eml"
                    envelope = f"X-Sink-From: {sender}\r\nX-Sink-To: {', '.join(recipients)}\r\n".encode()
                    path.write_bytes(envelope + body)
                    reply("250 OK: queued")
                elif verb in ("RSET", "NOOP"):
                    reply("250 OK")
                elif verb == "QUIT":
                    reply("221 Bye")
                    break
                else:
                    reply("502 Command not implemented")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # a broken client: drop it
        finally:
            writer.close()

    async def _data(self, reader: asyncio.StreamReader) -> bytes:
        lines, size = [], 0
        while (line := await reader.readline()) not in (b".\r\n", b""):
            size += len(line)
            if size > MAX_MAIL:
                raise ValueError("mail too large")
            lines.append(line[1:] if line.startswith(b"..") else line)  # undo dot-stuffing
        return b"".join(lines)


async def main(host: str, port: int, out: Path) -> None:
    server = await SmtpSink(out).serve(host, port)
    print(f"SMTP sink on {host}:{server.sockets[0].getsockname()[1]}, writing mails to {out}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--out", type=Path, default=Path("mail"))
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, args.out))
