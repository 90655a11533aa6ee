"""Build hook: with QUEUEIT_COMPILE=1, compile the broker's hot modules to C with mypyc.

Everything else about the package is in pyproject.toml. Without the variable (the default,
and what an editable install does) the build is pure Python. A compiled build needs mypy (the
version pinned in requirements-dev.lock) and a C compiler, and is made without build
isolation so that it uses that pinned mypy:

    QUEUEIT_COMPILE=1 pip install --no-build-isolation .

``make compiled`` builds one for the tests and benchmarks; docs/performance.md says more.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def _ext_modules() -> list[object]:
    flag = os.environ.get("QUEUEIT_COMPILE", "")
    if flag not in ("", "0", "1"):
        raise SystemExit(f"QUEUEIT_COMPILE must be 0 or 1, got {flag!r}")
    if flag != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        raise SystemExit(
            "QUEUEIT_COMPILE=1 needs mypy's mypyc: install the pinned dev tools "
            "(pip install -r requirements-dev.lock) and build with --no-build-isolation"
        ) from None
    listed = runpy.run_path(str(HERE / "src" / "queueit" / "compiled.py"))["COMPILED_MODULES"]
    paths = [str(Path("src", *name.split(".")).with_suffix(".py")) for name in listed]
    # opt_level 3 is mypyc's default; debug_level 0 keeps the extension small.
    return list(mypycify(paths, opt_level="3", debug_level="0"))


setup(ext_modules=_ext_modules())
