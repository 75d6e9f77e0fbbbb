# AvatarForge: two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Exact pin: a local CPU wheel is served for this version; an unpinned torch pulls GBs of CUDA packages.
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed
EXTRAS ?= dev
# Exact versions of every package (direct and transitive) that the tests ran with; pip reads it
# as constraints, so pyproject.toml keeps its compatible ranges for people installing the package
# into their own environment. `make lock` regenerates it.
LOCK   := requirements.lock
# The CPU the suite must also hold on: no AVX-512 kernels and no native bf16 in ATen or oneDNN,
# which makes perf.amp=auto run in fp32 (avatarforge.device.cpu_has_native_bf16).
NO_BF16 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2

.PHONY: install web-assets lock demo test test-numerics-fp32 test-all bench bench-quick lint format clean

install: $(STAMP) web-assets

# Browser files the server serves itself (Swagger UI for /docs: no page loads anything from another
# host), pinned by package.json + package-lock.json. --ignore-scripts: no install scripts run (the
# package's analytics dependency has one). Without npm the server still runs; /docs says how to add them.
web-assets: node_modules/.package-lock.json

node_modules/.package-lock.json: package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --ignore-scripts --no-audit --no-fund; \
	else echo "npm not found: /docs will not have Swagger UI (install Node.js's npm, then make install)"; fi

# Re-install only when the package metadata or the lock changes (idempotent `make demo` / `make test`).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -c $(LOCK) pip
	$(PIP) install --quiet -c $(LOCK) "$(TORCH)"
	$(PIP) install --quiet -c $(LOCK) -e ".[$(EXTRAS)]"
	touch $(STAMP)

lock:
	PYTHON=$(PYTHON) TORCH="$(TORCH)" EXTRAS=$(EXTRAS) tools/lock.sh

demo: install
	$(PY) -m avatarforge quickstart

test: install
	$(PY) -m pytest -q

# The tests whose outcome depends on trained weights or float rounding (marker `numerics`),
# again on an emulated CPU without AVX-512/bf16 (fp32 training): CI runs this after `make test`.
test-numerics-fp32: install
	$(NO_BF16) $(PY) -m pytest -q -m "numerics and not slow"

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
