# tokend — the two commands a new machine needs are `make run` and `make test`.
# Everything else is for profiling and development.

CARGO ?= cargo
# Flags for `make run` (see `tokend serve --help`), e.g. ARGS="--shards 4".
ARGS ?=

.PHONY: run build test lint fmt bench clean

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

## Micro-benchmarks (criterion).
bench:
	$(CARGO) bench --locked

clean:
	$(CARGO) clean
