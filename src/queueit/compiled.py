"""Which modules a compiled build turns into C extensions, and whether this install did.

The source is pure Python, always; it runs as it is (an editable install, ``scripts/setup``)
and it is what the tests read first. A compiled build (``QUEUEIT_COMPILE=1``, see
``docs/performance.md``) also translates the modules below to C with mypyc, from the same
source and its type annotations. They are the broker's per-frame path: the STOMP parser and
writer, the session, the core, queues and the store's RAM side. Compiled, the broker needs
about half the CPU per message (measured in ``docs/benchmarks.md``).

Invariants:

- Nothing in this list may depend on Python-only behaviour that mypyc changes: no
  monkeypatching of its functions or classes, no subclasses of its classes outside the list,
  attribute types exactly as annotated (mypyc checks them at run time). The test suite runs
  once on each build (``make test``), so a difference is a test failure, not a surprise.
- ``setup.py`` reads :data:`COMPILED_MODULES` with ``runpy`` before queueit is installed, so
  this module imports nothing but the standard library.
"""

from __future__ import annotations

import importlib
import importlib.machinery
from typing import Final

#: Modules compiled by a ``QUEUEIT_COMPILE=1`` build, in dependency order.
COMPILED_MODULES: Final[tuple[str, ...]] = (
    "queueit.stomp.grammar",
    "queueit.stomp.frames",
    "queueit.stomp.events",
    "queueit.stomp.state",
    "queueit.stomp.heartbeat",
    "queueit.stomp.writer",
    "queueit.stomp.parser",
    "queueit.stomp.connection",
    "queueit.broker.messages",
    "queueit.broker.destinations",
    "queueit.broker.auth",
    "queueit.broker.exchanges",
    "queueit.broker.unique",
    "queueit.broker.queue_settings",
    "queueit.broker.dead_letters",
    "queueit.broker.storage.ready",
    "queueit.broker.storage.schedule",
    "queueit.broker.storage.memory",
    "queueit.broker.storage.durable",
    "queueit.broker.queues",
    "queueit.broker.core",
    "queueit.broker.session",
)


def compiled_status() -> dict[str, bool]:
    """For each module of :data:`COMPILED_MODULES`: is it a compiled extension here?

    Imports the modules (all of them are imported by the broker anyway).
    """
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    status: dict[str, bool] = {}
    for name in COMPILED_MODULES:
        origin = getattr(importlib.import_module(name), "__file__", None) or ""
        status[name] = origin.endswith(suffixes)
    return status


def build_name() -> str:
    """``"compiled"`` when every listed module is compiled, ``"pure Python"`` when none is.

    ``"partly compiled"`` means a broken install (a module's ``.py`` shadowing its extension,
    or the reverse); it works, at pure-Python speed for the modules that are not compiled.
    """
    values = compiled_status().values()
    if all(values):
        return "compiled"
    return "partly compiled" if any(values) else "pure Python"
