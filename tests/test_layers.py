"""The package's shape: an explicit public API, and imports that only go one way.

Dependency rules (docs/broker.md, "Design"):

* ``queueit.stomp`` is sans-I/O: it imports only the standard library, and none of
  asyncio, socket, ssl, selectors or logging;
* ``queueit.broker.core`` and what it uses never import the session or the server;
* the clients never import the broker; the CLI is imported by nobody;
* transports import neither the jobs layer nor the broker; the jobs layer reaches brokers
  only through ``queueit.transports``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import queueit
import queueit.broker
import queueit.client
import queueit.jobs
import queueit.stomp
import queueit.transports

SRC = Path(queueit.__file__).parent
IO_MODULES = {"asyncio", "socket", "ssl", "selectors", "logging"}


def imports_of(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.add(node.module)
    return found


def modules_under(part: str) -> list[Path]:
    return sorted((SRC / part).rglob("*.py"))


@pytest.mark.parametrize("path", modules_under("stomp"), ids=lambda p: p.name)
def test_protocol_layer_is_sans_io(path: Path) -> None:
    for name in imports_of(path):
        top = name.split(".")[0]
        assert top not in IO_MODULES, f"{path.name} imports {name}"
        if top == "queueit":
            assert name.startswith("queueit.stomp"), f"{path.name} imports {name}"


@pytest.mark.parametrize(
    "module",
    [
        "core",
        "queues",
        "exchanges",
        "destinations",
        "messages",
        "admin",
        "auth",
        "storage/base.py",
        "storage/memory.py",
    ],
)
def test_broker_core_does_not_reach_the_network_layer(module: str) -> None:
    path = SRC / "broker" / (module if module.endswith(".py") else f"{module}.py")
    for name in imports_of(path):
        assert name not in {"queueit.broker.session", "queueit.broker.server"}, f"{module} imports {name}"
        assert name.split(".")[0] not in {"asyncio", "socket", "ssl"}, f"{module} imports {name}"


@pytest.mark.parametrize("path", modules_under("client") + modules_under("broker"), ids=lambda p: p.name)
def test_nothing_imports_the_cli_and_clients_do_not_import_the_broker(path: Path) -> None:
    for name in imports_of(path):
        assert name.split(".")[:2] != ["queueit", "cli"], f"{path} imports {name}"
        if "client" in path.parts:
            assert not name.startswith("queueit.broker"), f"{path} imports {name}"


@pytest.mark.parametrize("path", modules_under("transports") + modules_under("jobs"), ids=lambda p: p.name)
def test_transports_know_no_jobs_and_jobs_know_brokers_only_through_transports(path: Path) -> None:
    for name in imports_of(path):
        parts = name.split(".")
        assert parts[:2] not in (["queueit", "cli"], ["queueit", "broker"]), f"{path} imports {name}"
        if "transports" in path.parts:
            assert parts[:2] != ["queueit", "jobs"], f"{path} imports {name}"
        else:
            assert parts[:2] not in (["queueit", "client"], ["queueit", "stomp"]), f"{path} imports {name}"


@pytest.mark.parametrize(
    "module",
    [queueit, queueit.stomp, queueit.client, queueit.broker, queueit.jobs, queueit.transports],
    ids=lambda m: m.__name__,
)
def test_public_api_is_explicit_and_importable(module: object) -> None:
    # Sorting is ruff's job (RUF022); here: no duplicates, and every name is really there.
    names = list(module.__all__)  # type: ignore[attr-defined]
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(importlib.import_module(module.__name__), name) is not None  # type: ignore[attr-defined]
