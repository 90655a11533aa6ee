"""Producers and consumers as threads of the test process, and the kill loop that runs them.

One *cycle*: start the clients against the broker, wait until they are all connected,
let them work for a random 50-400 ms, SIGKILL the broker, wait for every client to see
its connection end, start the broker again on the same data dir. After the last kill the
queues are drained (up to a sentinel sent after the restart), the broker is stopped
cleanly and started once more, and each queue must then be empty. Then
:func:`~tests.crash.ledger.check` judges the whole run.

Clients (every message persistent, to a ``/queue/``):

* ``single``: :class:`queueit.Client`, one SEND at a time, each waiting for its RECEIPT;
* ``pipelined``: a raw socket on :class:`queueit.stomp.ClientConnection`, up to a window
  of SENDs with receipts in flight;
* ``tx``: BEGIN, 1-12 SENDs, COMMIT (most with a receipt) or, now and then, ABORT;
* ``bigtx``: BEGIN, 20-300 SENDs and COMMIT (with a receipt) in one write, 3 in flight;
* ``individual``: ``ack:client-individual``, holds a random number of messages unacked
  and acks a random one of them, in random order, most ACKs with a receipt;
* ``cumulative``: ``ack:client``, acks every few messages with one ACK of the last one.

The seed fixes every random choice of the run (which clients, their windows, the kill
moments); the threads' interleaving and the broker's timing are not reproducible, so a
replay with the same seed runs the same plan, not the same byte sequence.
"""

from __future__ import annotations

import random
import selectors
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import queueit
from queueit import Client, ConnectionClosed, ReceiveTimeout, ServerRefused
from queueit.stomp import ClientConnection, Command, Connected, Receipt, ServerError

from .broker_proc import GUEST, CrashBroker, client
from .ledger import ACK_RECEIPTED, ACK_SENT, Delivery, Ledger, Verdict, body_for, check

QUEUES = ("/queue/crash-a", "/queue/crash-b")
#: Where the broker moves a message delivered too often (max_deliveries): must stay empty.
DEAD_LETTER_QUEUES = ("/queue/DLQ.crash-a", "/queue/DLQ.crash-b")
#: The load of a cycle runs this long (ms) before the SIGKILL, drawn uniformly.
KILL_AFTER_MS = (50, 400)
#: A client that has not noticed the dead broker after this long is a failure.
JOIN_SECONDS = 20.0
CLIENT_TIMEOUT = 10.0


class Gone(Exception):
    """The broker went away (expected at every kill)."""


class Worker:
    """One client thread of a cycle; ``body`` is its behaviour (one of :data:`KINDS`)."""

    def __init__(
        self,
        name: str,
        address: tuple[str, int],
        life: int,
        ledger: Ledger,
        rng: random.Random,
        stop: threading.Event,
        ready: threading.Semaphore,
        body: Callable[[Worker], None],
    ) -> None:
        self.name, self.address, self.life, self.ledger = name, address, life, ledger
        self.rng, self.stop, self._ready, self._body = rng, stop, ready, body
        self._signalled = False
        self._sockets: list[Client | RawConnection] = []  # closed when the thread ends
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def connected(self) -> None:
        """Tell the cycle this client is connected (once); the kill timer starts when all are."""
        if not self._signalled:
            self._signalled = True
            self._ready.release()

    def _main(self) -> None:
        try:
            self._body(self)
        except ServerRefused as exc:
            self.ledger.error(f"{self.name} (life {self.life}): the broker sent ERROR: {exc}")
        except (ConnectionClosed, OSError, Gone) as exc:
            if not self._signalled:  # the kill waits for every client: the broker was alive
                self.ledger.error(f"{self.name} (life {self.life}) could not connect: {exc!r}")
        except ReceiveTimeout as exc:
            self.ledger.error(f"{self.name} (life {self.life}): timed out waiting for the broker: {exc}")
        except Exception:
            self.ledger.error(f"{self.name} (life {self.life}) failed:\n{traceback.format_exc()}")
        finally:
            self.connected()  # never leave the cycle waiting for a client that could not connect
            for sock in self._sockets:
                sock.close()

    def connect(self) -> Client:
        c = client(self.address, CLIENT_TIMEOUT)
        self._sockets.append(c)
        c.connect()
        return c

    def connect_raw(self) -> RawConnection:
        raw = RawConnection(self.address)
        self._sockets.append(raw)
        raw.login()
        return raw

    def key(self) -> str:
        return self.ledger.new_key(self.life, self.name)


def _headers(key: str) -> dict[str, str]:
    return {"persistent": "true", "x-key": key}


# -- producers -----------------------------------------------------------------------------


def single_producer(w: Worker) -> None:
    c = w.connect()
    w.connected()
    while not w.stop.is_set():
        queue = w.rng.choice(QUEUES)
        key = w.key()
        w.ledger.record_send(key, w.life, queue)
        c.send(queue, body_for(key), headers=_headers(key), receipt=True)
        w.ledger.record_receipt(key)


def tx_producer(w: Worker) -> None:
    c = w.connect()
    w.connected()
    n = 0
    while not w.stop.is_set():
        n += 1
        tx = f"L{w.life}.{w.name}.tx{n}"
        w.ledger.open_tx(tx, w.life)
        c.begin(tx)
        for _ in range(w.rng.randint(1, 12)):
            queue = w.rng.choice(QUEUES)  # a transaction may span queues
            key = w.key()
            w.ledger.record_send(key, w.life, queue, tx)
            c.send(queue, body_for(key), headers=_headers(key), transaction=tx)
        if w.rng.random() < 0.1:
            c.abort(tx, receipt=True)
            continue
        receipt = w.rng.random() < 0.8
        w.ledger.commit_sent(tx)
        c.commit(tx, receipt=receipt)
        if receipt:
            w.ledger.committed(tx)


class RawConnection:
    """A STOMP connection on a plain socket, for pipelining what :class:`Client` waits for."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=CLIENT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = ClientConnection()
        self.host = address[0]

    def login(self) -> None:
        self.sock.sendall(self.conn.connect(self.host, login=GUEST, passcode=GUEST))
        while not any(isinstance(e, Connected) for e in self.read(CLIENT_TIMEOUT)):
            pass

    def read(self, timeout: float) -> list[object]:
        """The events of what arrives within ``timeout`` (maybe none)."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            if not sel.select(timeout):
                return []
        data = self.sock.recv(65536)
        if not data:
            raise Gone("the broker closed the connection")
        now = time.monotonic()
        self.conn.receive_data(data, now)
        events: list[object] = []
        while (event := self.conn.next_event(now)) is not None:
            if isinstance(event, ServerError):
                raise ServerRefused(event.message, event.body.decode("utf-8", "replace"))
            events.append(event)
        return events

    def close(self) -> None:
        self.sock.close()


def pipelined_producer(w: Worker) -> None:
    """SENDs with receipts, up to ``window`` of them unanswered."""
    raw = w.connect_raw()
    w.connected()
    window = w.rng.randint(2, 64)
    waiting: dict[str, str] = {}  # receipt id -> key
    n = 0
    while not w.stop.is_set():
        burst = []
        for _ in range(w.rng.randint(1, window - len(waiting))):
            n += 1
            queue = w.rng.choice(QUEUES)
            key = w.key()
            rid = f"r{n}"
            headers = [("destination", queue), *_headers(key).items(), ("receipt", rid)]
            burst.append(raw.conn.frame(Command.SEND, headers, body_for(key)))
            w.ledger.record_send(key, w.life, queue)
            waiting[rid] = key
        raw.sock.sendall(b"".join(burst))
        while len(waiting) > window // 2:
            for event in raw.read(CLIENT_TIMEOUT):
                if isinstance(event, Receipt):
                    w.ledger.record_receipt(waiting.pop(event.receipt_id))


def big_tx_producer(w: Worker) -> None:
    """Transactions of 20-300 SENDs, each written at once with its BEGIN and COMMIT, 3 in flight."""
    raw = w.connect_raw()
    w.connected()
    waiting: set[str] = set()  # transactions whose COMMIT awaits its receipt (the receipt id)
    n = 0
    while not w.stop.is_set():
        while len(waiting) < 3:
            n += 1
            tx = f"L{w.life}.{w.name}.tx{n}"
            w.ledger.open_tx(tx, w.life)
            frames = [raw.conn.frame(Command.BEGIN, [("transaction", tx)])]
            for _ in range(w.rng.randint(20, 300)):
                queue = w.rng.choice(QUEUES)
                key = w.key()
                headers = [("destination", queue), ("transaction", tx), *_headers(key).items()]
                frames.append(raw.conn.frame(Command.SEND, headers, body_for(key)))
                w.ledger.record_send(key, w.life, queue, tx)
            frames.append(raw.conn.frame(Command.COMMIT, [("transaction", tx), ("receipt", tx)]))
            w.ledger.commit_sent(tx)
            raw.sock.sendall(b"".join(frames))
            waiting.add(tx)
        for event in raw.read(CLIENT_TIMEOUT):
            if isinstance(event, Receipt):
                waiting.discard(event.receipt_id)
                w.ledger.committed(event.receipt_id)


# -- consumers -----------------------------------------------------------------------------


def _receive(w: Worker, c: Client, timeout: float) -> queueit.Message | None:
    try:
        return c.receive(timeout)
    except ReceiveTimeout:
        return None


def record(ledger: Ledger, life: int, consumer: str, message: queueit.Message) -> Delivery:
    headers = message.headers
    return ledger.record_delivery(
        headers.get("x-key", "?"), life, consumer, headers.get("redelivered") == "true", message.body
    )


def individual_consumer(w: Worker) -> None:
    """client-individual: holds up to ``keep`` messages, acks a random one of them."""
    c = w.connect()
    prefetch = w.rng.randint(2, 50)
    keep = w.rng.randint(0, prefetch - 1)
    receipt_share = w.rng.choice((1.0, 0.8, 0.5))
    c.subscribe(w.rng.choice(QUEUES), ack="client-individual", prefetch=prefetch)
    w.connected()
    held: list[tuple[queueit.Message, Delivery]] = []
    while not w.stop.is_set():
        message = _receive(w, c, 0.05)
        if message is not None:
            held.append((message, record(w.ledger, w.life, w.name, message)))
        while len(held) > keep or (message is None and held and w.rng.random() < 0.5):
            m, d = held.pop(w.rng.randrange(len(held)))
            receipt = w.rng.random() < receipt_share
            d.ack = ACK_SENT
            c.ack(m, receipt=receipt)
            if receipt:
                d.ack = ACK_RECEIPTED
            if message is None:
                break


def cumulative_consumer(w: Worker) -> None:
    """client (cumulative): one ACK of the newest message covers every earlier one."""
    c = w.connect()
    prefetch = w.rng.randint(2, 50)
    batch = w.rng.randint(1, prefetch)
    c.subscribe(w.rng.choice(QUEUES), ack="client", prefetch=prefetch)
    w.connected()
    held: list[tuple[queueit.Message, Delivery]] = []
    while not w.stop.is_set():
        message = _receive(w, c, 0.05)
        if message is not None:
            held.append((message, record(w.ledger, w.life, w.name, message)))
        if held and (len(held) >= batch or message is None):
            receipt = w.rng.random() < 0.8
            for _, d in held:
                d.ack = ACK_SENT
            c.ack(held[-1][0], receipt=receipt)
            if receipt:
                for _, d in held:
                    d.ack = ACK_RECEIPTED
            held.clear()


KINDS: dict[str, Callable[[Worker], None]] = {
    "single": single_producer,
    "pipelined": pipelined_producer,
    "tx": tx_producer,
    "bigtx": big_tx_producer,
    "individual": individual_consumer,
    "cumulative": cumulative_consumer,
}


# -- the kill loop ---------------------------------------------------------------------------


@dataclass
class RunReport:
    seed: int
    kills: int
    seconds: float
    verdict: Verdict
    log_dir: Path
    kill_delays_ms: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.verdict.violations

    def summary(self) -> str:
        return (
            f"seed={self.seed} kills={self.kills} in {self.seconds:.1f} s: {self.verdict.summary()} "
            f"(broker logs in {self.log_dir})"
        )


def draw_clients(rng: random.Random) -> list[str]:
    """The clients of one cycle: at least one producer of each kind and two consumers."""
    kinds = ["single", "pipelined", "tx", "bigtx", "individual", "cumulative"]
    kinds += rng.choices(["single", "pipelined", "tx", "individual", "cumulative"], k=rng.randint(0, 3))
    return kinds


def run_cycle(broker: CrashBroker, life: int, ledger: Ledger, rng: random.Random, kill_after_ms: int) -> None:
    """Run clients against ``broker``, SIGKILL it ``kill_after_ms`` after they are connected."""
    stop = threading.Event()
    ready = threading.Semaphore(0)
    workers = [
        Worker(
            f"{kind}{i}",
            broker.address,
            life,
            ledger,
            random.Random(rng.getrandbits(64)),
            stop,
            ready,
            KINDS[kind],
        )
        for i, kind in enumerate(draw_clients(rng))
    ]
    for w in workers:
        w.thread.start()
    try:
        for _ in workers:
            if not ready.acquire(timeout=JOIN_SECONDS):
                ledger.error(f"life {life}: the clients did not all connect within {JOIN_SECONDS:.0f} s")
                break
        time.sleep(kill_after_ms / 1000)
    finally:
        broker.kill()
        stop.set()
        for w in workers:
            w.thread.join(JOIN_SECONDS)
            if w.thread.is_alive():
                ledger.error(
                    f"life {life}: client {w.name} still running {JOIN_SECONDS:.0f} s after the kill"
                )


def drain(broker: CrashBroker, life: int, ledger: Ledger) -> None:
    """Consume every queue up to a sentinel sent now; ack everything (the last ACK with a receipt)."""
    sentinels = {}
    with client(broker.address, CLIENT_TIMEOUT) as producer:
        for queue in QUEUES:
            sentinels[queue] = f"sentinel-{life}-{queue}"
            producer.send(
                queue, b"end", headers={"persistent": "true", "x-sentinel": sentinels[queue]}, receipt=True
            )
    with client(broker.address, CLIENT_TIMEOUT) as c:
        for queue in QUEUES:
            c.subscribe(queue, ack="client-individual", prefetch=500)
        pending = set(QUEUES)
        while pending:
            try:
                message = c.receive(30.0)
            except ReceiveTimeout:
                ledger.error(
                    f"drain in life {life}: no sentinel on {sorted(pending)} within 30 s: messages stuck"
                )
                return
            sentinel = message.headers.get("x-sentinel")
            if sentinel is not None:
                pending.discard(message.destination)
                c.ack(message, receipt=True)
                continue
            record(ledger, life, "drain", message).ack = ACK_SENT
            c.ack(message)


def expect_empty(broker: CrashBroker, life: int, ledger: Ledger, why: str) -> None:
    """Each queue's first message must be a sentinel sent now: nothing else is left."""
    sentinel = f"empty-{life}"
    with client(broker.address, CLIENT_TIMEOUT) as c:
        for queue in (*QUEUES, *DEAD_LETTER_QUEUES):
            c.send(queue, b"end", headers={"persistent": "true", "x-sentinel": sentinel}, receipt=True)
            sub = c.subscribe(queue, ack="client-individual", prefetch=100)
            while True:
                message = c.receive(30.0)
                c.ack(message)
                if message.headers.get("x-sentinel") == sentinel:
                    break
                d = record(ledger, life, "leftover", message)
                ledger.error(f"{why}: {queue} still held {d.key} (redelivered={d.redelivered})")
            c.unsubscribe(sub, receipt=True)


def run_kill_loop(
    data_dir: Path,
    log_dir: Path,
    seed: int,
    kills: int,
    *,
    deadline: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunReport:
    """``kills`` cycles (fewer if the ``time.monotonic()`` ``deadline`` passes), then drain and judge."""
    rng = random.Random(seed)
    ledger = Ledger()
    started = time.monotonic()
    delays: list[int] = []
    log_dir.mkdir(parents=True, exist_ok=True)
    life = 0
    broker = CrashBroker.start(data_dir, log_dir / f"life-{life}.log")
    bad_logs: list[str] = []
    try:
        while len(delays) < kills and (deadline is None or time.monotonic() < deadline):
            delay = rng.randint(*KILL_AFTER_MS)
            delays.append(delay)
            run_cycle(broker, life, ledger, rng, delay)
            bad_logs += [f"life {life}: {line}" for line in broker.bad_log_lines()]
            if progress is not None:
                progress(f"kill {len(delays)}/{kills} at {delay} ms: {ledger.stats()}")
            life += 1
            broker = CrashBroker.start(data_dir, log_dir / f"life-{life}.log")
        drain(broker, life, ledger)
        rc = broker.terminate()
        if rc != 0:
            ledger.error(f"life {life}: the broker exited with {rc} after SIGTERM")
        bad_logs += [f"life {life}: {line}" for line in broker.bad_log_lines()]
        life += 1
        broker = CrashBroker.start(data_dir, log_dir / f"life-{life}.log")
        expect_empty(broker, life, ledger, "after the drain and a clean restart")
        rc = broker.terminate()
        if rc != 0:
            ledger.error(f"life {life}: the broker exited with {rc} after SIGTERM")
        bad_logs += [f"life {life}: {line}" for line in broker.bad_log_lines()]
    finally:
        broker.ensure_dead()
    for line in bad_logs:
        ledger.error(f"broker log: {line}")
    return RunReport(seed, len(delays), time.monotonic() - started, check(ledger), log_dir, delays)
