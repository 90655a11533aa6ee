"""A consumer process for the corked-ACK test: it acks with its socket corked, then dies.

``python -m tests.crash.corked_acker HOST PORT QUEUE PREFETCH ACKS`` subscribes with
``ack:client-individual`` and ``prefetch-count:PREFETCH``, receives PREFETCH messages, corks
its connection (:meth:`queueit.AsyncClient.cork`), acks the first ACKS of them without
receipts, prints ``ACKED key`` per ACK and ``UNSENT n`` (the bytes the kernel still holds
unsent: the ACKs are corked, not on the wire), and SIGKILLs itself at once, well inside the
kernel's 200 ms cork ceiling.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import struct
import sys

from queueit import AsyncClient

#: Linux's ioctl for the bytes of a socket's send queue not yet sent (linux/sockios.h).
SIOCOUTQNSD = 0x894B


async def main(argv: list[str]) -> None:
    host, port, queue, prefetch_arg, acks_arg = argv
    prefetch, acks = int(prefetch_arg), int(acks_arg)
    client = AsyncClient(host, int(port), login="guest", passcode="guest")
    await client.connect()
    await client.subscribe(queue, ack="client-individual", prefetch=prefetch, receipt=True)
    received = [await client.receive() for _ in range(prefetch)]
    client.cork(True)
    for message in received[:acks]:
        await client.ack(message)
        print("ACKED", message.headers["x-key"])
    assert client.corked
    sock = client._writer.get_extra_info("socket")  # type: ignore[union-attr]  # a test's peek
    unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, struct.pack("i", 0)))[0]
    print("UNSENT", unsent, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
