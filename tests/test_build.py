"""The build under test is the one asked for: pure Python, or compiled with mypyc.

``make pytest`` runs the suite on the source (pure Python); ``make pytest-compiled`` runs it
again with ``PYTHONPATH=build/compiled`` and ``QUEUEIT_EXPECT_BUILD=compiled``. Without this
check a broken build would quietly fall back to the ``.py`` files and the second run would
test nothing new.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import queueit
import queueit.stomp.parser
from queueit.compiled import COMPILED_MODULES, build_name, compiled_status

from .conftest import BrokerProcess


def test_the_build_is_the_one_the_run_asked_for() -> None:
    expected = os.environ.get("QUEUEIT_EXPECT_BUILD", "pure Python")
    assert build_name() == expected, (
        f"imported queueit from {queueit.stomp.parser.__file__}: {compiled_status()}; "
        f"QUEUEIT_EXPECT_BUILD={expected!r} (make pytest-compiled sets it and PYTHONPATH=build/compiled)"
    )


def test_the_status_reads_each_module_s_file() -> None:
    status = compiled_status()
    assert set(status) == set(COMPILED_MODULES)
    is_extension = queueit.stomp.parser.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert status["queueit.stomp.parser"] is is_extension


def test_no_module_outside_the_list_is_compiled() -> None:
    package = Path(queueit.__file__).parent
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = {
        ".".join(path.relative_to(package.parent).parts).split(".cpython")[0].removesuffix(".so")
        for path in package.rglob("*.so")
        if path.name.endswith(suffixes)
    }
    assert found <= set(COMPILED_MODULES), found - set(COMPILED_MODULES)


def test_every_listed_module_exists_and_the_package_s_compiled_module_is_not_listed() -> None:
    for name in COMPILED_MODULES:
        assert importlib.util.find_spec(name) is not None, name
    # setup.py reads the list from queueit/compiled.py before the package is installed.
    assert "queueit.compiled" not in COMPILED_MODULES


def test_a_broker_subprocess_runs_the_same_build_and_says_which(broker: BrokerProcess) -> None:
    # Brokers and workers started by the tests inherit PYTHONPATH: they run this build too.
    ready = next(line for line in broker.log if "ready on" in line)
    assert ready.endswith(f", {build_name()} build)"), ready


def test_version_names_the_build() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "queueit", "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout == f"queueit {queueit.__version__} ({build_name()} build)\n"
