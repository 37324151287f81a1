# blockwatch — build, test and run targets. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
CARGO ?= cargo
ANVIL := .tools/bin/anvil
ANVIL_PORT ?= 8545
ANVIL_BLOCK_TIME ?= 2

.PHONY: build release test lint fmt tools anvil run demo devnet bench clean up down down-volumes

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release

## Installs the tools the tests need, idempotently: anvil, aiosmtpd and prometheus into .tools/;
## Debian's chromium (the browser tests) and postgresql (the cluster-mode tests, which start their own
## server; no service is started) as system packages (apt-get, as root).
tools:
	bash scripts/install-anvil.sh
	bash scripts/install-aiosmtpd.sh
	bash scripts/install-prometheus.sh
	bash scripts/install-chromium.sh
	bash scripts/install-postgres.sh

## Unit tests, then integration tests against a real anvil node.
test: tools
	$(CARGO) test --locked --all-targets

## Benchmarks: each prints Markdown tables, also written to target/bench/<name>.md; BENCHMARKS.md
## records them with the command of each. Installs anvil and PostgreSQL first, as make tools does.
## About 43 minutes on 2 cores from a fresh clone (the soak alone takes 10, SOAK_SECS shortens it;
## the cluster failovers 6; the many-chains runs 18, CHAINS_SECS shortens their longest).
BENCHES := overhead stream failover cluster soak chains
bench:
	bash scripts/install-anvil.sh
	bash scripts/install-postgres.sh
	@mkdir -p target/bench
	$(CARGO) bench --locked --no-run $(BENCHES:%=--bench %)
	set -o pipefail; for b in $(BENCHES); do s=$$SECONDS; \
	  $(CARGO) bench --locked --bench $$b | tee target/bench/$$b.md; \
	  echo "$$b: $$((SECONDS - s)) s" >&2; done
	@echo "results: target/bench/*.md"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## The simulated chain and the agent together, with scripted provider failures (Ctrl-C stops it).
demo:
	$(CARGO) run --locked --release --quiet -- demo

## The simulated chain alone on 127.0.0.1:8545 (control) and 8546.. (providers).
devnet:
	$(CARGO) run --locked --release --quiet -- devnet --listen 127.0.0.1:8545

## Starts a local anvil (block time $(ANVIL_BLOCK_TIME)s) and follows it with blockwatch.example.toml.
run: tools release
	@bash scripts/run-local.sh $(ANVIL_PORT) $(ANVIL_BLOCK_TIME)

## The observability stack with Docker (compose.yaml): anvil, blockwatch, the demo, two cluster
## replicas on PostgreSQL, the Collector, Prometheus, Loki, Tempo and Grafana on http://localhost:3000.
up:
	docker compose up -d --build
	@echo "Grafana: http://localhost:3000 (folder blockwatch) · agent: http://localhost:9464/status · demo: http://localhost:9465/status · cluster: http://localhost:9466/status, :9467/status"

down:
	docker compose down

## Also removes the stack's data volumes.
down-volumes:
	docker compose down --volumes

clean:
	$(CARGO) clean
	rm -rf .tools
