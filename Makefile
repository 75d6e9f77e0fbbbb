# AvatarForge: two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Exact pin: a local CPU wheel is served for this version; an unpinned torch pulls GBs of CUDA packages.
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed
EXTRAS ?= dev

.PHONY: install demo test test-all bench bench-quick lint format clean

install: $(STAMP)

# Re-install only when the package metadata changes (idempotent `make demo` / `make test`).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: install
	$(PY) -m avatarforge quickstart

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m "slow or not slow"

bench: install
	$(PY) -m benchmarks.run

bench-quick: install
	$(PY) -m benchmarks.run --quick

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
