# One entry point for dev tasks. `make dev` and `make test` do all the set-up
# they need on a fresh machine (tools are installed on first use).
SHELL := bash
.DEFAULT_GOAL := help
CARGO ?= cargo
TOOLS := .tools/bin
export PATH := $(CURDIR)/$(TOOLS):$(PATH)

.PHONY: help tools dev test generate lint record-histories bench-saga bench-controller kind

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
	$(CARGO) run -q -p paysaga-testenv --bin paysaga-dev

test: $(TOOLS)/.stamp ## all unit and integration tests, against the real parts
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

generate: ## regenerate checked-in files (crds/, docs/openapi.json, the chart's CRDs and goldens)
	$(CARGO) run -q -p paysaga-operator -- crd > crds/payment.yaml
	$(CARGO) run -q -p paysaga-operator -- openapi > docs/openapi.json
	cp crds/payment.yaml charts/paysaga/crds/payment.yaml
	PAYSAGA_UPDATE_GOLDENS=1 $(CARGO) test -q -p paysaga-operator --test chart renders_match >/dev/null

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

record-histories: ## record the workflow histories replayed by the tests: make record-histories VERSION=v2
	@test -n "$(VERSION)" || { echo "usage: make record-histories VERSION=vN"; exit 2; }
	$(CARGO) build --workspace --bins
	PAYSAGA_RECORD_HISTORIES=$(VERSION) $(CARGO) test -p paysaga-worker --test saga

bench-saga: $(TOOLS)/.stamp ## benchmark: end-to-end time of a payment with an instant gateway (prints numbers)
	$(CARGO) build --workspace --bins
	$(CARGO) run -q -p paysaga-worker --example saga_latency -- 300 1 20

bench-controller: $(TOOLS)/.stamp ## benchmark: the controller's latencies and API writes per payment (prints numbers)
	$(CARGO) build --workspace --bins
	$(CARGO) run -q -p paysaga-operator --example controller_latency -- 300 10

kind: $(TOOLS)/.stamp ## paysaga on a kind cluster (needs Docker): image, Traefik ingress, helm install, helm test
	tools/kind.sh
