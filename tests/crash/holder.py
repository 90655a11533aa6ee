"""A consumer process for the consumer-kill test: it acks some messages, then holds the rest.

``python -m tests.crash.holder HOST PORT QUEUE ACK_MODE PREFETCH ACKS`` subscribes with
``ack:ACK_MODE`` and ``prefetch-count:PREFETCH``, acks ACKS of the first PREFETCH
messages (with receipts; client-individual: every other one, client: one cumulative ACK
of the ACKS-th), receives until it holds PREFETCH unacked messages, prints one line per
message (``ACKED key`` / ``HELD key``) and ``READY``, and waits to be killed.
"""

from __future__ import annotations

import sys
import time

from .broker_proc import client


def main(argv: list[str]) -> None:
    host, port, queue, mode, prefetch_arg, acks_arg = argv
    prefetch, acks = int(prefetch_arg), int(acks_arg)
    c = client((host, int(port)))
    c.connect()
    c.subscribe(queue, ack=mode, prefetch=prefetch)
    first = [c.receive() for _ in range(prefetch)]
    if mode == "client":
        acked = first[:acks]
        c.ack(acked[-1], receipt=True)
    else:
        acked = first[1::2][:acks]
        for message in acked:
            c.ack(message, receipt=True)
    held = [m for m in first if m not in acked]
    held += [c.receive() for _ in range(len(acked))]  # the broker refills the prefetch window
    for message in acked:
        print("ACKED", message.headers["x-key"])
    for message in held:
        print("HELD", message.headers["x-key"])
    print("READY", flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1:])
