# One entry point for dev tasks. `make dev` and `make test` do all the set-up
# they need on a fresh machine (tools are installed on first use).
SHELL := bash
.DEFAULT_GOAL := help
CARGO ?= cargo
TOOLS := .tools/bin
export PATH := $(CURDIR)/$(TOOLS):$(PATH)

.PHONY: help tools dev test test-production generate lint record-histories bench-saga load stress perf chaos kind cluster

# Build profile of the binaries make load/stress run (debug, as make dev; or release).
PROFILE ?= debug
cargo_profile = $(if $(filter release,$(1)),release,dev)
# Options of paysaga-load: make load RATE=5 DURATION=2m MIX=decline=0.02,fraud=0.01
load_opts = $(if $(RATE),--rate $(RATE)) $(if $(DURATION),--duration $(DURATION)) $(if $(STAGE),--stage $(STAGE)) $(if $(MIX),--mix $(MIX))

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

tools: ## install pinned real parts into .tools/ (idempotent, cached by version)
	@tools/install.sh

# Re-run the installer when the pinned versions or the installer change.
$(TOOLS)/.stamp: tools/versions.env tools/install.sh
	@tools/install.sh
	@touch $@

dev: $(TOOLS)/.stamp ## run paysaga locally: control plane, Temporal (+UI), CRDs; Ctrl-C stops it
	$(CARGO) build --workspace --bins
	target/debug/paysaga-dev

# The tests that prove paysaga on the topology production runs: the saga, the
# review, the controller, refunds and recurring payments (Schedules); and the
# Go SDK peer make perf runs beside the saga on that server too.
PRODUCTION_TESTS = -p paysaga-worker --test saga --test review \
	-p paysaga-operator --test controller --test refunds --test recurring \
	-p paysaga-bench --test go_peer

test: $(TOOLS)/.stamp ## all unit and integration tests, against the real parts; then the production-server tier
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast
	PAYSAGA_TEMPORAL=production $(CARGO) test --no-fail-fast $(PRODUCTION_TESTS)

test-production: $(TOOLS)/.stamp ## only the production-server tier: the Temporal server on PostgreSQL instead of the dev server
	$(CARGO) build --workspace --bins
	PAYSAGA_TEMPORAL=production $(CARGO) test --no-fail-fast $(PRODUCTION_TESTS)

generate: ## regenerate checked-in files (crds/, docs/openapi.json, the chart's CRDs and goldens)
	$(CARGO) run -q -p paysaga-operator -- crd payment > crds/payment.yaml
	$(CARGO) run -q -p paysaga-operator -- crd idempotencykey > crds/idempotencykey.yaml
	$(CARGO) run -q -p paysaga-operator -- crd refund > crds/refund.yaml
	$(CARGO) run -q -p paysaga-operator -- crd recurringpayment > crds/recurringpayment.yaml
	$(CARGO) run -q -p paysaga-operator -- crd webhookendpoint > crds/webhookendpoint.yaml
	$(CARGO) run -q -p paysaga-operator -- openapi > docs/openapi.json
	cp crds/payment.yaml crds/idempotencykey.yaml crds/refund.yaml crds/recurringpayment.yaml crds/webhookendpoint.yaml charts/paysaga/crds/
	PAYSAGA_UPDATE_GOLDENS=1 $(CARGO) test -q -p paysaga-operator --test chart renders_match >/dev/null

lint: ## rustfmt and clippy, warnings are errors; gofmt and go vet on the Go SDK peer
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd bench/go-peer && test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: the files above"; exit 1; }
	cd bench/go-peer && GOTOOLCHAIN=local go vet .

record-histories: ## record the workflow histories replayed by the tests: make record-histories VERSION=v2
	@test -n "$(VERSION)" || { echo "usage: make record-histories VERSION=vN"; exit 2; }
	$(CARGO) build --workspace --bins
	PAYSAGA_RECORD_HISTORIES=$(VERSION) $(CARGO) test -p paysaga-worker --test saga --test review

bench-saga: $(TOOLS)/.stamp ## benchmark: end-to-end time of a payment with an instant gateway (prints numbers)
	$(CARGO) build --workspace --bins
	$(CARGO) run -q -p paysaga-worker --example saga_latency -- 300 1 20

load: $(TOOLS)/.stamp ## k6 load (k6/load.js) on a fresh make-dev stack, then the ledger audit and a report: RATE= DURATION= MIX=
	$(CARGO) build --workspace --bins --profile $(call cargo_profile,$(PROFILE))
	PAYSAGA_PROFILE=$(PROFILE) target/$(PROFILE)/paysaga-load k6/load.js $(load_opts)

stress: $(TOOLS)/.stamp ## k6 stress (k6/stress.js): a ramp past the breaking point, then the audit: RATE=<sustainable rate> STAGE=
	$(CARGO) build --workspace --bins --profile $(call cargo_profile,$(PROFILE))
	PAYSAGA_PROFILE=$(PROFILE) target/$(PROFILE)/paysaga-load k6/stress.js $(load_opts)

perf: $(TOOLS)/.stamp ## the performance harness (release build): history anatomy, the Go SDK beside paysaga, R_max, full path at 0.8 x R_max for 10 min, overload, memory (~30 min); PERF_ARGS="--temporal production" on the production server
	$(CARGO) build --workspace --bins --release
	PAYSAGA_PROFILE=release target/release/paysaga-perf $(PERF_ARGS)

chaos: $(TOOLS)/.stamp ## faults under k6 load (kill -9 and restart of each part, outages of Temporal and PostgreSQL): table + docs/reliability.md (~20 min)
	$(CARGO) build --workspace --bins
	target/debug/paysaga-chaos $(CHAOS_ARGS)

kind: $(TOOLS)/.stamp ## paysaga on a kind cluster (needs Docker): image, Traefik ingress, helm install, helm test
	tools/kind.sh

cluster: $(TOOLS)/.stamp ## paysaga on a real one-node cluster built here (root, no Docker): images, helm install, helm test; Ctrl-C tears down
	$(CARGO) build --workspace --bins --profile $(call cargo_profile,$(PROFILE))
	PAYSAGA_PROFILE=$(PROFILE) target/$(PROFILE)/paysaga-cluster
