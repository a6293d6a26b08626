# webfarm — every target installs what it needs first (scripts/install.sh is idempotent).
PY      := .venv/bin/python
PYTEST  := $(PY) -m pytest
SHARED  ?= $(abspath ../shared)
export WEBFARM_SHARED := $(SHARED)

.PHONY: install test test-fast test-unit test-functional test-integration lint bench demo demo-down

install:
	@bash scripts/install.sh

test: install
	$(PYTEST) -p no:cacheprovider --durations=30 tests/unit tests/functional tests/integration

test-fast: install
	$(PYTEST) -p no:cacheprovider tests/unit tests/functional

test-unit: install
	$(PYTEST) -p no:cacheprovider tests/unit

test-functional: install
	$(PYTEST) -p no:cacheprovider tests/functional

test-integration: install
	$(PYTEST) -p no:cacheprovider tests/integration

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

bench: install
	@set -e; for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

demo: install
	$(PY) -m demo up

demo-down: install
	$(PY) -m demo down
