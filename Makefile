# The two quick-start commands live here: `make serve` and `make test`.
# Both create .venv (scripts/setup) on first use.

.PHONY: setup serve test lint typecheck pytest

setup:
	@./scripts/setup

serve: setup
	@.venv/bin/queueit serve --data-dir ./data

lint: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks

typecheck: setup
	.venv/bin/mypy

pytest: setup
	.venv/bin/python -m pytest -q

test: lint typecheck pytest
