# The project's stable entry points. `make help` lists them.
SHELL := bash
CLUSTER_DIR := $(CURDIR)/.cluster
# Test-only hooks (tests/faults.rs injects handler panics); never in release builds.
TEST_FEATURES := agentic-operator/fault-injection

.PHONY: help deps dev cluster-build cluster-up cluster-down image test test-unit lint bench-queue bench-e2e bench-kueue bench-scale test-faults-scale

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

deps: ## install the Debian packages building and testing need (idempotent; quiet when nothing is missing)
	@cluster/install-deps.sh

dev: deps ## local cluster + operator + a sample session, phases shown live; Ctrl-C to stop
	@cluster/dev.sh

cluster-build: ## build (or reuse cached) control-plane binaries from Go modules
	@cluster/build.sh

cluster-up: ## start a persistent local cluster; kubeconfig at .cluster/kubeconfig
	@cluster/up.sh $(CLUSTER_DIR)
	@echo
	@echo "Cluster is up. Use it with:"
	@echo "  export KUBECONFIG=$(CLUSTER_DIR)/kubeconfig"
	@echo "  kubectl get nodes"
	@echo "Run the test suite against it: AGENTIC_CLUSTER_DIR=$(CLUSTER_DIR) make test"
	@echo "Stop it with: make cluster-down"

cluster-down: ## stop the cluster started by cluster-up
	@cluster/down.sh $(CLUSTER_DIR)

image: ## the operator image FROM scratch (static binary, buildah, offline): target/image/agentic-operator.oci.tar
	image/build.sh

lint: ## formatting, clippy (warnings are errors), and no import circle between src/'s top-level modules
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo test --locked --features $(TEST_FEATURES) --test layout

test-unit: ## unit tests only (no cluster)
	cargo test --workspace --locked --lib --bins

test: deps lint ## the whole suite: lint, unit tests, integration tests on a real control plane, RBAC check
	cluster/build.sh >/dev/null
	cluster/build.sh kueue >/dev/null
	image/build.sh
	cargo test --workspace --locked --features $(TEST_FEATURES) --no-run
	cluster/with-cluster.sh tests/suite.sh --locked --features $(TEST_FEATURES)

bench-queue: ## queue benchmarks, ours vs client-go vs kube-runtime; report in target/bench-report/
	bash benches/run-queue-bench.sh

bench-e2e: ## operator end to end: 1k/5k sessions (E2E_10K=1 adds 10k), both engines vs a bare client, start-up with 10k
	E2E_SIZES="$${E2E_SIZES-1000 5000$(if $(E2E_10K), 10000)}" bash benches/run-e2e-bench.sh

bench-kueue: ## queueing with Kueue (#27): 1000 finishing sessions over 10 projects, quota 100 (one ClusterQueue; one per project), beside the same work without Kueue
	E2E_SIZES="$${E2E_SIZES-1000}" E2E_MODES="$${E2E_MODES-finishing kueue kueue-per-project}" E2E_STARTUP=0 bash benches/run-e2e-bench.sh

bench-scale: ## the cluster that made the original run out of memory (#1299): first start and restart, both engines
	E2E_SIZES="" E2E_STARTUP=0 E2E_SCALE=1 bash benches/run-e2e-bench.sh

test-faults-scale: ## the fault tests (tests/faults.rs) with 1000 sessions each, on a throwaway cluster
	FAULT_SESSIONS=$${FAULT_SESSIONS:-1000} cluster/with-cluster.sh \
	  cargo test --release --features $(TEST_FEATURES) --test faults -- --test-threads=1
