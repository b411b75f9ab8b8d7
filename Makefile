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
BENCH_OUT ?= target/bench
# Short criterion settings so that `make bench` takes minutes, not tens of them.
CRITERION_ARGS ?= --warm-up-time 1 --measurement-time 3

.PHONY: run build test lint fmt bench bench-micro bench-load clean

## Start the server on the default data dir (./snapshots), release build.
run:
	$(CARGO) run --release --locked --bin tokend -- serve $(ARGS)

build:
	$(CARGO) build --release --locked

## Every test: unit, property, HTTP integration; benches are compiled too.
test:
	$(CARGO) test --locked --all-features
	$(CARGO) build --locked --benches

## Formatting and lints, as CI checks them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Everything: the criterion suites, then the load profile and the restore
## profile over HTTP against a release server (results in $(BENCH_OUT)).
bench:
	$(MAKE) bench-micro
	$(MAKE) bench-load

## Micro-benchmarks (criterion), short settings.
bench-micro:
	$(CARGO) bench --locked --bench engine -- $(CRITERION_ARGS)
	$(CARGO) bench --locked --bench wal -- $(CRITERION_ARGS)

## HTTP load profiles: `tokend-load` spawns `target/release/tokend` on a fresh
## temporary data dir for each.
bench-load:
	$(CARGO) build --release --locked --bins
	$(CARGO) run --release --locked --quiet --bin tokend-load -- --spawn \
		--profile $(PROFILE) --connections $(C) --duration-secs $(D) --tokens $(N) \
		--fsync $(FSYNC) --out $(BENCH_OUT)
	$(CARGO) run --release --locked --quiet --bin tokend-load -- --spawn \
		--profile restore --tokens $(RESTORE_N) --fsync $(FSYNC) --out $(BENCH_OUT)

clean:
	$(CARGO) clean
