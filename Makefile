# The two quick-start commands live here: `make demo` and `make test`.
# Both create .venv (scripts/setup) on first use.

.PHONY: setup demo serve test lint typecheck pytest

setup:
	@./scripts/setup

demo: setup
	@.venv/bin/queueit demo

serve: setup
	@.venv/bin/queueit serve --data-dir ./data

lint: setup
	.venv/bin/ruff check src tests benchmarks examples
	.venv/bin/ruff format --check src tests benchmarks examples

typecheck: setup
	.venv/bin/mypy

pytest: setup
	.venv/bin/python -m pytest -q

test: lint typecheck pytest
