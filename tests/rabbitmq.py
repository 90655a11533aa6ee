"""A private RabbitMQ node for tests: its own name, ports, data, config and Erlang port mapper.

It never touches the system's RabbitMQ (port 5672, the benchmarks' one): everything it
writes is under one temporary directory, it listens on 127.0.0.1 ports picked at random,
and it registers with an ``epmd`` of its own on a random port, started and stopped here, so
no Erlang daemon outlives the test session and no node name can clash with a leftover.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika

#: Boot usually takes 3-8 s; a loaded CI machine can take much longer.
START_TIMEOUT = 90.0


def server_script() -> Path | None:
    """The real ``rabbitmq-server`` script, or None when RabbitMQ is not installed.

    Debian's ``/usr/sbin/rabbitmq-server`` is a wrapper that switches to the ``rabbitmq``
    user (who cannot write our temporary directory) and loses our environment; the script it
    calls sits beside it under the same name.
    """
    found = shutil.which("rabbitmq-server") or (
        "/usr/sbin/rabbitmq-server" if os.path.exists("/usr/sbin/rabbitmq-server") else None
    )
    if found is None:
        return None
    real = Path(found).resolve()
    if real.name != "rabbitmq-server":
        real = (real.parent / "rabbitmq-server").resolve()
    return real if real.is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(n: int) -> list[int]:
    """``n`` different free ports (the kernel may hand the same one out twice in a row)."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


@dataclass
class RabbitNode:
    """A running private node; ``url`` reaches it as guest/guest."""

    base: Path
    port: int
    process: subprocess.Popen[bytes]
    epmd: subprocess.Popen[bytes]
    log_file: Path
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    script: Path | None = None

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl ARGS`` against this node (the real script, as for the server)."""
        assert self.script is not None
        done = subprocess.run(
            [str(self.script.parent / "rabbitmqctl"), "-n", self.env["RABBITMQ_NODENAME"], *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
        return done.stdout

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def log_tail(self, lines: int = 60) -> str:
        text = ""
        for path in [self.log_file, *sorted((self.base / "log").glob("*.log"))]:
            with contextlib.suppress(OSError):
                text += f"--- {path.name}\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-lines:]
                )
        return text

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node (SIGTERM: a clean shutdown), then its epmd; kill what lingers."""
        for proc in (self.process, self.epmd):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # The node's beam and its helpers run in the process group we created for it.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            # Helpers (erl_child_setup, inet_gethost) can outlive a crashed beam; they are ours.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def start_rabbit(base: Path, script: Path, *, timeout: float = START_TIMEOUT) -> RabbitNode:
    """Start a node with everything under ``base``; return once it accepts AMQP connections.

    Raises:
        RuntimeError: it did not become ready in ``timeout`` seconds (the message has its log).
    """
    base.mkdir(parents=True, exist_ok=True)
    port, dist_port, epmd_port = free_ports(3)
    (base / "enabled_plugins").write_text("[].\n")  # no management, no STOMP: faster and no ports
    (base / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq/rabbitmq-env.conf
    config = base / "rabbitmq.conf"
    config.write_text(
        f"listeners.tcp.1 = 127.0.0.1:{port}\n"
        "log.console = false\n"
        "log.file.level = info\n"
        # The default 50 MB can stop publishers on a crowded CI disk; the tests write little.
        "disk_free_limit.absolute = 1MB\n"
    )
    env = {
        **os.environ,
        "HOME": str(base),  # the Erlang cookie goes here, not into the user's home
        "RABBITMQ_NODENAME": f"queueit-test-{uuid.uuid4().hex[:10]}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CONFIG_FILE": str(config),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    log_file = base / "server.out"
    epmd = subprocess.Popen(
        [shutil.which("epmd") or "/usr/bin/epmd", "-port", str(epmd_port), "-address", "127.0.0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            [str(script)],
            cwd=base,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    node = RabbitNode(base, port, process, epmd, log_file, env=env, script=script)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if asyncio.run(_accepts(node.url, port)):
            return node
        time.sleep(0.25)
    node.stop()
    raise RuntimeError(f"RabbitMQ did not start in {timeout:g} s:\n{node.log_tail()}")


async def _accepts(url: str, port: int) -> bool:
    """The node takes an AMQP login (a bare TCP connect is tried first: aiormq logs each refusal)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    except OSError:
        return False
    try:
        connection = await aio_pika.connect(url, timeout=2)
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError):
        return False
    await connection.close()
    return True
