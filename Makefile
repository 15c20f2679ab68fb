# streamload — the two commands: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := test
CARGO ?= cargo

.PHONY: test demo stack down lint bench bench-committer package

stack:
	@scripts/stack.sh up

## Unit tests and integration tests against the real local stack, then the template checks.
test: stack
	@scripts/test.sh

## Starts the stack, builds the release functions, feeds events/ through the Lambda Runtime API.
demo: stack
	@scripts/demo.sh

down:
	@scripts/stack.sh down

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: stack
	@set -a; source .stack/env; set +a; scripts/bench.sh

## The table committer against the local stack (BENCHMARKS.md §6): a live stream's windows
## and a 1 GB hour (BENCH_HOUR_MB to change it).
bench-committer: stack
	@set -a; source .stack/env; set +a; $(CARGO) bench -p table-committer --bench commit --profile bench-committer

## Both functions for arm64 Lambda (provided.al2023), zipped: what `sam build` produces.
package:
	@scripts/package.sh
