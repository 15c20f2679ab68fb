# streamload — the two commands: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := test
CARGO ?= cargo

.PHONY: test demo stack down lint bench fmt

stack:
	@scripts/stack.sh up

## Unit tests and integration tests against the real local stack.
test: stack
	@set -a; source .stack/env; set +a; \
	$(CARGO) fmt --all -- --check && \
	$(CARGO) test --workspace --no-fail-fast 2>&1 | tee .stack/test.log; \
	status=$${PIPESTATUS[0]}; \
	passed=$$(grep -Eo '[0-9]+ passed' .stack/test.log | awk '{s+=$$1} END {print s+0}'); \
	failed=$$(grep -Eo '[0-9]+ failed' .stack/test.log | awk '{s+=$$1} END {print s+0}'); \
	echo "$$passed passed, $$failed failed"; \
	exit $$status

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
