# blockwatch — build, test and run targets. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
CARGO ?= cargo
ANVIL := .tools/bin/anvil
ANVIL_PORT ?= 8545
ANVIL_BLOCK_TIME ?= 2

.PHONY: build release test lint fmt tools anvil run clean

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release

## Installs the tools the tests need (idempotent; nothing global).
tools:
	bash scripts/install-anvil.sh

## Unit tests, then integration tests against a real anvil node.
test: tools
	$(CARGO) test --locked --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Starts a local anvil (block time $(ANVIL_BLOCK_TIME)s) and follows it with blockwatch.example.toml.
run: tools release
	@bash scripts/run-local.sh $(ANVIL_PORT) $(ANVIL_BLOCK_TIME)

clean:
	$(CARGO) clean
	rm -rf .tools
