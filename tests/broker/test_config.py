"""Config files: every key read, every mistake named."""

from __future__ import annotations

from pathlib import Path

import pytest

from queueit.broker.config import ConfigError, load_settings
from queueit.broker.exchanges import ExchangeType
from queueit.broker.server import build_core

from .helpers import connect, send

FULL = """
[server]
host = "127.0.0.2"
port = 7000
max_connections = 50
max_connections_per_ip = 5
login_timeout = 3
heartbeat = [2000, 5000]
heartbeat_grace = 3.0
shutdown_timeout = 2.5

[tls]
port = 7001
cert = "certs/server.pem"
key = "certs/server.key"

[auth]
users_file = "people.json"
guest = "off"

[limits]
max_body_size = 1024
max_frame_size = 4096
default_prefetch = 5

[[exchanges]]
name = "events"
type = "topic"

[[exchanges]]
name = "mail"
type = "fanout"

[[bindings]]
exchange = "events"
queue = "audit"
key = "user.#"

[[bindings]]
exchange = "mail"
queue = "email"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "queueit.toml"
    path.write_text(text, "utf-8")
    return path


def test_every_key_is_read(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "data", write(tmp_path, FULL))
    assert (s.host, s.port, s.max_connections, s.max_connections_per_ip) == ("127.0.0.2", 7000, 50, 5)
    assert (s.login_timeout, s.heartbeat, s.heartbeat_grace, s.shutdown_timeout) == (
        3.0,
        (2000, 5000),
        3.0,
        2.5,
    )
    assert s.tls is not None
    assert (s.tls.port, s.tls.cert, s.tls.key) == (
        7001,
        tmp_path / "certs/server.pem",
        tmp_path / "certs/server.key",
    )
    assert s.users_path == tmp_path / "people.json"
    assert s.auth.guest == "off"
    assert (s.limits.max_body_size, s.limits.max_frame_size, s.limits.default_prefetch) == (1024, 4096, 5)
    assert [(e.name, e.type) for e in s.exchanges] == [
        ("events", ExchangeType.TOPIC),
        ("mail", ExchangeType.FANOUT),
    ]


def test_flags_override_the_file(tmp_path: Path) -> None:
    s = load_settings(tmp_path, write(tmp_path, FULL), host="127.0.0.1", port=0)
    assert (s.host, s.port) == ("127.0.0.1", 0)


def test_defaults_without_a_file(tmp_path: Path) -> None:
    s = load_settings(tmp_path)
    assert (s.host, s.port, s.tls, s.users_path) == ("127.0.0.1", 61613, None, tmp_path / "users.json")


def test_exchanges_and_bindings_from_the_config_route(tmp_path: Path) -> None:
    core = build_core(load_settings(tmp_path, write(tmp_path, FULL)))
    producer, _ = connect(core)
    core.handle(producer, send("/exchange/events/user.created", b"1"))
    core.handle(producer, send("/exchange/mail/whatever", b"2"))
    assert {name: len(q) for name, q in core.queues.items()} == {"audit": 1, "email": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "unknown config key(s) server.prot"),
        ("[sever]\n", "unknown config key(s) sever"),
        ('[server]\nport = "x"\n', "server.port must be an integer"),
        ("[server]\nport = 70000\n", "port number from 0 to 65535"),
        ("[server]\nheartbeat = [1]\n", "server.heartbeat must be two integers"),
        ("[server]\nheartbeat_grace = 0.5\n", "heartbeat_grace must be at least 1.0"),
        ("[server]\nlogin_timeout = 0\n", "login_timeout must be between 0 and 3600"),
        ("[server]\nmax_connections = 0\n", "max_connections must be at least 1"),
        ("[tls]\nport = 1\n", "tls.cert is required"),
        ('[auth]\nguest = "maybe"\n', 'auth.guest must be "loopback" or "off"'),
        ("[limits]\nmax_body_size = 0\n", "max_body_size must be a positive integer"),
        ("[limits]\nmax_body_size = 10\nmax_frame_size = 5\n", "must not exceed max_frame_size"),
        ("[limits]\nmax_everything = 1\n", "unknown config key(s) limits.max_everything"),
        ('[[exchanges]]\nname = "x"\ntype = "headers"\n', "type must be direct, fanout or topic"),
        ("[[bindings]]\nqueue = 1\n", "bindings[].exchange must be a string"),
        ("this is not toml", "is not valid TOML"),
        ('[[queues]]\nfsync = "always"\n', "queues[0].match is required"),
        ('[[queues]]\nmatch = "*"\nfsync = "sometimes"\n', "fsync policy must be always, never or interval"),
        ('[[queues]]\nmatch = "*"\noverflow = "explode"\n', "queues[0].overflow must be one of"),
        ('[[queues]]\nmatch = "*"\nmax_deliveries = -1\n', "queues[0].max_deliveries must be an integer"),
        ('[[queues]]\nmatch = "*"\ndead_letter = "a/b"\n', "queues[0].dead_letter must be a queue name"),
        ('[[queues]]\nmatch = "*"\nttl = "1h"\n', "queues[0].ttl must be an integer"),
        ('[[queues]]\nmatch = "*"\nvisibility = 5\n', "queues[0]: unknown key(s) visibility"),
        ("[resources]\nmemory_limit = -1\n", "resources.memory_limit must be a number of bytes"),
        ("[resources]\npublish_timeout = 0\n", "publish_timeout must be between 0 and 3600"),
        ("[resources]\ndisk = 1\n", "unknown config key(s) resources.disk"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(tmp_path, write(tmp_path, text))
    assert message in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path, tmp_path / "absent.toml")


def test_queue_settings_and_resources_are_read_and_matched_in_order(tmp_path: Path) -> None:
    from queueit.broker.queue_settings import DEAD_LETTER_DEFAULTS, QueueSettings, QueueSettingsTable

    text = """
[[queues]]
match = "orders.*"
fsync = "interval:100"
max_deliveries = 3
dead_letter = "{name}.dead"
ttl = 60000
visibility_timeout = 5000
max_messages = 10
max_bytes = 4096
overflow = "drop-head"

[[queues]]
match = "*"
fsync = "never"

[resources]
memory_limit = 1073741824
disk_free_limit = 0
publish_timeout = 5
"""
    s = load_settings(tmp_path / "data", write(tmp_path, text))
    table = QueueSettingsTable(s.queues)
    orders = table.for_queue("orders.eu")
    assert (str(orders.fsync), orders.max_deliveries, orders.ttl, orders.visibility_timeout) == (
        "interval:100",
        3,
        60000,
        5000,
    )
    assert (orders.max_messages, orders.max_bytes, orders.overflow) == (10, 4096, "drop-head")
    assert orders.dead_letter_queue("orders.eu") == "orders.eu.dead"
    assert str(table.for_queue("anything").fsync) == "never"  # the first match wins
    assert (s.memory_limit, s.disk_free_limit, s.publish_timeout) == (1 << 30, 0, 5.0)
    bare = QueueSettingsTable()
    assert bare.for_queue("work") == QueueSettings()
    assert bare.for_queue("DLQ.work") == DEAD_LETTER_DEFAULTS
    assert QueueSettings().dead_letter_queue("work") == "DLQ.work"
