# The two quick-start commands live here: `make demo` and `make test`.
# Both create .venv (scripts/setup) on first use.

.PHONY: setup demo serve test lint typecheck pytest compiled pytest-compiled

# The compiled build (docs/performance.md): the same source with the broker's hot modules
# compiled by mypyc, in build/compiled; rebuilt only when a source file changed.
COMPILED_STAMP := build/compiled/.stamp
BUILD_INPUTS := $(shell find src -name '*.py') setup.py pyproject.toml requirements-dev.lock scripts/build-compiled

setup:
	@./scripts/setup

demo: setup
	@.venv/bin/queueit demo

serve: setup
	@.venv/bin/queueit serve --data-dir ./data

lint: setup
	.venv/bin/ruff check src tests benchmarks examples setup.py
	.venv/bin/ruff format --check src tests benchmarks examples setup.py

typecheck: setup
	.venv/bin/mypy

pytest: setup
	.venv/bin/python -m pytest -q

compiled: setup $(COMPILED_STAMP)

$(COMPILED_STAMP): $(BUILD_INPUTS)
	@./scripts/build-compiled

# The whole suite again on the compiled build, so that what a wheel ships is what was tested.
# Test subprocesses (brokers, workers) inherit PYTHONPATH and run compiled too.
pytest-compiled: compiled
	QUEUEIT_EXPECT_BUILD=compiled PYTHONPATH=build/compiled .venv/bin/python -m pytest -q

test: lint typecheck pytest pytest-compiled
