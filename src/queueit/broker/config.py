"""Broker settings: one frozen value built from defaults, a TOML file and CLI flags.

Config file (TOML), every key optional::

    [server]
    host = "127.0.0.1"
    port = 61613
    max_connections = 10000
    max_connections_per_ip = 1000
    login_timeout = 10.0          # seconds from accept to CONNECT
    heartbeat = [1000, 1000]      # what the server offers: can-send, wants-to-receive (ms)
    heartbeat_grace = 2.0         # a peer is dead after interval * grace without a byte
    shutdown_timeout = 10.0

    [tls]
    port = 61614
    cert = "server.pem"           # relative paths are relative to the config file
    key = "server.key"

    [auth]
    users_file = "users.json"     # default: <data-dir>/users.json
    guest = "loopback"            # or "off"

    [limits]                      # any field of queueit.stomp.Limits
    max_frame_size = 4259840

    [[exchanges]]
    name = "events"
    type = "topic"                # direct, fanout or topic

    [[bindings]]
    exchange = "events"
    queue = "audit"
    key = "user.#"

    [[queues]]                    # per-queue delivery settings: see queueit.broker.queue_settings
    match = "orders.*"
    max_deliveries = 5

    [resources]                   # backpressure: past these, publishers are held (see docs/reliability.md)
    memory_limit = 0              # bytes of broker RSS; 0 = 40% of the machine's RAM
    disk_free_limit = 268435456   # bytes that must stay free on the data dir's file system
    publish_timeout = 30.0        # seconds a held SEND waits before it gets an ERROR
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..stomp import Limits
from .auth import AuthSettings
from .exchanges import ExchangeType
from .queue_settings import QueuePolicy, QueueSettingsError, parse_policy

DEFAULT_PORT = 61613


class ConfigError(Exception):
    """The config file or a flag is invalid; the message names the key and the fix."""


@dataclass(frozen=True, slots=True)
class TLSSettings:
    port: int
    cert: Path
    key: Path
    host: str | None = None


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    name: str
    type: ExchangeType


@dataclass(frozen=True, slots=True)
class BindingSpec:
    exchange: str
    queue: str
    key: str = ""


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_connections: int = 10_000
    max_connections_per_ip: int = 1_000
    login_timeout: float = 10.0
    heartbeat: tuple[int, int] = (1000, 1000)
    heartbeat_grace: float = 2.0
    shutdown_timeout: float = 10.0
    tls: TLSSettings | None = None
    users_file: Path | None = None
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: Limits = field(default_factory=Limits)
    exchanges: tuple[ExchangeSpec, ...] = ()
    bindings: tuple[BindingSpec, ...] = ()
    queues: tuple[QueuePolicy, ...] = ()
    memory_limit: int = 0
    disk_free_limit: int = 256 * 1024 * 1024
    publish_timeout: float = 30.0

    @property
    def users_path(self) -> Path:
        return self.users_file or self.data_dir / "users.json"


_SERVER_KEYS = {
    "host": str,
    "port": int,
    "max_connections": int,
    "max_connections_per_ip": int,
    "login_timeout": float,
    "heartbeat": list,
    "heartbeat_grace": float,
    "shutdown_timeout": float,
}


def load_settings(
    data_dir: Path, config_file: Path | None = None, *, host: str | None = None, port: int | None = None
) -> BrokerSettings:
    """Defaults, then the config file, then the flags given.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or out-of-range value.
    """
    settings = BrokerSettings(data_dir=data_dir)
    if config_file is not None:
        settings = _apply_file(settings, config_file)
    if host is not None:
        settings = replace(settings, host=host)
    if port is not None:
        settings = replace(settings, port=port)
    _check_port(settings.port, "--port / server.port")
    return settings


def _apply_file(settings: BrokerSettings, path: Path) -> BrokerSettings:
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    base = path.parent
    _only(raw, {"server", "tls", "auth", "limits", "exchanges", "bindings", "queues", "resources"}, "")
    changes: dict[str, Any] = {}
    server = _table(raw, "server")
    _only(server, set(_SERVER_KEYS), "server.")
    for key, kind in _SERVER_KEYS.items():
        if key in server:
            changes[key] = _typed(server[key], kind, f"server.{key}")
    if "heartbeat" in changes:
        hb = changes["heartbeat"]
        if len(hb) != 2 or not all(isinstance(v, int) and 0 <= v <= 86_400_000 for v in hb):
            raise ConfigError("server.heartbeat must be two integers of milliseconds, like [1000, 1000]")
        changes["heartbeat"] = (hb[0], hb[1])
    for key in ("login_timeout", "heartbeat_grace", "shutdown_timeout"):
        if key in changes and not 0 < changes[key] <= 3600:
            raise ConfigError(f"server.{key} must be between 0 and 3600 seconds")
    if changes.get("heartbeat_grace", 2.0) < 1.0:
        raise ConfigError("server.heartbeat_grace must be at least 1.0")
    for key in ("max_connections", "max_connections_per_ip"):
        if key in changes and changes[key] < 1:
            raise ConfigError(f"server.{key} must be at least 1")
    tls = _table(raw, "tls")
    if tls:
        _only(tls, {"port", "cert", "key", "host"}, "tls.")
        for key in ("port", "cert", "key"):
            if key not in tls:
                raise ConfigError(f"tls.{key} is required when [tls] is present")
        port = _typed(tls["port"], int, "tls.port")
        _check_port(port, "tls.port")
        changes["tls"] = TLSSettings(
            port,
            base / _typed(tls["cert"], str, "tls.cert"),
            base / _typed(tls["key"], str, "tls.key"),
            _typed(tls["host"], str, "tls.host") if "host" in tls else None,
        )
    auth = _table(raw, "auth")
    _only(auth, {"users_file", "guest"}, "auth.")
    if "users_file" in auth:
        changes["users_file"] = base / _typed(auth["users_file"], str, "auth.users_file")
    if "guest" in auth:
        guest = _typed(auth["guest"], str, "auth.guest")
        if guest not in ("loopback", "off"):
            raise ConfigError('auth.guest must be "loopback" or "off"')
        changes["auth"] = AuthSettings(guest=guest)
    limits = _table(raw, "limits")
    if limits:
        _only(limits, set(Limits.field_names()), "limits.")
        try:
            changes["limits"] = Limits(**{k: _typed(v, int, f"limits.{k}") for k, v in limits.items()})
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    changes["exchanges"] = tuple(_exchange(e) for e in _array(raw, "exchanges"))
    changes["bindings"] = tuple(_binding(b) for b in _array(raw, "bindings"))
    try:
        changes["queues"] = tuple(parse_policy(q, i) for i, q in enumerate(_array(raw, "queues")))
    except QueueSettingsError as exc:
        raise ConfigError(str(exc)) from None
    resources = _table(raw, "resources")
    _only(resources, {"memory_limit", "disk_free_limit", "publish_timeout"}, "resources.")
    for key in ("memory_limit", "disk_free_limit"):
        if key in resources:
            value = _typed(resources[key], int, f"resources.{key}")
            if not 0 <= value <= 2**62:
                raise ConfigError(f"resources.{key} must be a number of bytes, 0 or more")
            changes[key] = value
    if "publish_timeout" in resources:
        timeout = _typed(resources["publish_timeout"], float, "resources.publish_timeout")
        if not 0 < timeout <= 3600:
            raise ConfigError("resources.publish_timeout must be between 0 and 3600 seconds")
        changes["publish_timeout"] = timeout
    return replace(settings, **changes)


def _exchange(entry: dict[str, Any]) -> ExchangeSpec:
    _only(entry, {"name", "type"}, "exchanges[].")
    name = _typed(entry.get("name"), str, "exchanges[].name")
    kind = _typed(entry.get("type", "direct"), str, "exchanges[].type")
    try:
        return ExchangeSpec(name, ExchangeType(kind))
    except ValueError:
        raise ConfigError(f"exchange {name!r}: type must be direct, fanout or topic, not {kind!r}") from None


def _binding(entry: dict[str, Any]) -> BindingSpec:
    _only(entry, {"exchange", "queue", "key"}, "bindings[].")
    return BindingSpec(
        _typed(entry.get("exchange"), str, "bindings[].exchange"),
        _typed(entry.get("queue"), str, "bindings[].queue"),
        _typed(entry.get("key", ""), str, "bindings[].key"),
    )


def _table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def _array(raw: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = raw.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"[[{name}]] must be an array of tables")
    return value


def _only(table: dict[str, Any], allowed: set[str], prefix: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known: {', '.join(sorted(prefix + k for k in allowed))}"
        )


def _typed(value: Any, kind: type, name: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{name} must be {_KIND_NAMES[kind]}, got {value!r}")
    return value


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", list: "a list"}


def _check_port(port: int, name: str) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name} must be a port number from 0 to 65535, got {port}")


__all__ = [
    "BindingSpec",
    "BrokerSettings",
    "ConfigError",
    "ExchangeSpec",
    "TLSSettings",
    "load_settings",
]
