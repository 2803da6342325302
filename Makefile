# Everyday commands. `make run` serves the app locally; `make test` runs the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: help venv run test lint fmt check k8s-check bench bench-quick bench-deps soak clean

help:
	@echo "make run    - web + worker + local SQS on http://127.0.0.1:8000 (no Docker, no API key)"
	@echo "make test   - the test suite against real PostgreSQL, Redis, SQS server, Chromium"
	@echo "make lint   - ruff, mypy, import contracts (lint-imports), manage.py check, makemigrations --check, k8s-check"
	@echo "make k8s-check - render deploy/k8s overlays, validate every object, checkov scan"
	@echo "make fmt    - ruff format + autofix"
	@echo "make bench  - benchmarks (bench/README.md); bench-quick for a short run"
	@echo "make soak   - chaos soak: 10,000 jobs while processes die and services restart (SOAK_JOBS=N)"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	scripts/bootstrap.sh $(VENV)

run: venv
	scripts/run-local.sh

# fauxqs (the SQS server of the chaos soak in tests/integration/test_soak.py and the benchmarks)
BENCH_NODE := bench/node_modules/.package-lock.json

$(BENCH_NODE): bench/package.json bench/package-lock.json
	cd bench && npm ci --no-audit --no-fund --loglevel=error

# In parallel (pytest-xdist): PYTEST_WORKERS processes, each with its own test database, cache
# prefix, SQS server and fake LLM. Tests marked xdist_group run in one worker (they share a
# module's servers or the browser); the ones marked slow are handed out first (tests/conftest.py).
# PYTEST_WORKERS=0 runs them all in one process.
PYTEST_WORKERS ?= 3
test: venv $(BENCH_NODE)
	scripts/ensure-system.sh
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run
	$(MAKE) k8s-check

# deploy/k8s, with no cluster: kustomize renders each overlay, every object is validated against
# its schema (Kubernetes', KEDA's, the Prometheus Operator's), checkov scans them
# (scripts/k8s_check.py). checkov has a virtualenv of its own: its pins clash with the project's.
CHECKOV_VENV ?= .venv-checkov

$(CHECKOV_VENV)/.installed: deploy/k8s/requirements-checkov.txt
	rm -rf $(CHECKOV_VENV)
	"$$(scripts/find-python.sh)" -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r deploy/k8s/requirements-checkov.txt
	touch $@

k8s-check: venv $(CHECKOV_VENV)/.installed
	$(PY) scripts/k8s_check.py --checkov $(CHECKOV_VENV)/bin/checkov

fmt: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

check: lint

bench-deps: venv
	$(VENV)/bin/pip install -q -r bench/requirements.txt
	cd bench && npm ci --no-audit --no-fund --loglevel=error
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -q wrk) || echo "wrk missing: apt-get install wrk (the API section is skipped without it)"

bench: bench-deps
	scripts/ensure-system.sh
	$(PY) -m bench.run $(BENCH_ARGS)
	$(PY) -m bench.streaming

bench-quick: bench-deps
	scripts/ensure-system.sh
	$(PY) -m bench.run --quick $(BENCH_ARGS)
	$(PY) -m bench.streaming --quick

# The chaos soak on services of its own (bench/soak): prints its table, appends it to
# bench/RESULTS.md, exits non-zero if an invariant fails. `make test` runs a short version.
SOAK_JOBS ?= 10000
soak: venv $(BENCH_NODE)
	$(PY) -m bench.soak --jobs $(SOAK_JOBS) --record $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .pytest_cache .ruff_cache .mypy_cache test-artifacts .run
