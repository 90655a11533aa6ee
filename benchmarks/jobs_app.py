"""The queueit side of ``benchmarks/jobs.py``: the same two jobs as fwbench's apps.

Like ``shared/tools/fwbench/fwbench_apps``, every job is a no-op apart from one Redis command on
127.0.0.1:6379: ``fwbench.noop`` does ``INCR fwbench:count`` (the drain counter) and
``fwbench.lat`` does ``RPUSH fwbench:lat <time.time() at body start>`` (the latency probe). Both are
plain ``def`` functions making one blocking round trip, as the incumbents' jobs do with redis-py.

Redis is reached through :class:`Resp`, a minimal RESP client over a socket, so that the queueit
environment needs no ``redis`` package (its lock file stays as it is). One connection per process
and thread, opened lazily (after the worker process started), as ``fwbench_apps.rconn`` does.

The broker comes from ``QUEUEIT_BENCH_URL`` (``queueit://127.0.0.1:61613`` by default), the queue
from ``QUEUEIT_BENCH_QUEUE`` (``qbench``; not fwbench's ``fwbench``, which Dramatiq declares on
RabbitMQ with other arguments). Run with ``queueit worker jobs_app:app`` from ``benchmarks/``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from queueit import App

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
COUNT_KEY = "fwbench:count"
LAT_KEY = "fwbench:lat"
URL = os.environ.get("QUEUEIT_BENCH_URL", "queueit://127.0.0.1:61613")
QUEUE = os.environ.get("QUEUEIT_BENCH_QUEUE", "qbench")


class RespError(Exception):
    """Redis answered with an error, or the connection broke."""


class Resp:
    """A blocking Redis connection speaking RESP2: just the commands the benchmark needs."""

    def __init__(self, host: str = REDIS_HOST, port: int = REDIS_PORT, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def call(self, *args: str | bytes | int) -> Any:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            raw = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self) -> Any:
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise RespError("connection to Redis closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.file.read(size + 2)[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        raise RespError(f"unexpected reply {line[:40]!r}")

    def incr(self, key: str) -> int:
        value: int = self.call("INCR", key)
        return value

    def rpush(self, key: str, value: str) -> int:
        length: int = self.call("RPUSH", key, value)
        return length

    def get_int(self, key: str) -> int:
        value: bytes | None = self.call("GET", key)
        return int(value) if value is not None else 0

    def blpop(self, key: str, timeout: float) -> bytes | None:
        """The popped value, or None after ``timeout`` seconds."""
        got: list[bytes] | None = self.call("BLPOP", key, repr(float(timeout)))
        return None if got is None else got[1]

    def flushall(self) -> None:
        self.call("FLUSHALL")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class _PerThread(threading.local):
    conn: Resp | None = None
    pid: int = 0


_local = _PerThread()


def rconn() -> Resp:
    """This process's and thread's Redis connection (a sync job runs in one of the worker's threads)."""
    if _local.conn is None or _local.pid != os.getpid():
        _local.conn, _local.pid = Resp(), os.getpid()
    return _local.conn


app = App(URL)


@app.job(queue=QUEUE, name="fwbench.noop")
def noop() -> None:
    rconn().incr(COUNT_KEY)


@app.job(queue=QUEUE, name="fwbench.lat")
def lat() -> None:
    rconn().rpush(LAT_KEY, repr(time.time()))
