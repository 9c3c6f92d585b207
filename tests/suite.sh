#!/usr/bin/env bash
# The whole test suite against the cluster in AGENTIC_CLUSTER_DIR (see cluster/with-cluster.sh),
# then the RBAC minimality check over the API server's audit log of that run: every verb that
# deploy/base/rbac/rbac.yaml grants the operator must have been needed, and nothing denied
# (tests/deploy.rs, shipped_rbac_grants_exactly_what_the_suite_needed), and that every Secret
# list/watch it made carried a selector. Beside it, on a second cluster, the platform's own
# installation (tests/platform_crd.rs).
# Usage: tests/suite.sh [cargo args, e.g. --features ...]
set -euo pipefail
: "${AGENTIC_CLUSTER_DIR:?run through cluster/with-cluster.sh}"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The platform's own installation (SPEC §7): its CRDs, its operator's RBAC and ConfigMaps, then
# deploy/overlays/platform, on a cluster of its own (CRDs and ClusterRoles are cluster-wide),
# beside the main run: the lifecycle under the platform's RBAC plus the overlay's and the
# backend's 330 s journey (which mostly waits), then the audit log of that cluster must hold no
# refused status write. The binary is run directly, so the two runs share no cargo lock.
platform=$repo/target/test-cluster-platform
platform_binary=$(cargo test --workspace "$@" --test platform_crd --no-run 2>&1 \
  | sed -n 's/.*Executable tests\/platform_crd.rs (\(.*\))$/\1/p')
[ -x "$repo/$platform_binary" ] || { echo "suite.sh: no platform_crd test binary" >&2; exit 1; }
"$repo/cluster/down.sh" "$platform" 2>/dev/null || true
"$repo/cluster/up.sh" "$platform" 2>"$repo/target/test-cluster-platform.up.log"
platform_tests=""
stop_platform() {
  [ -z "$platform_tests" ] || kill "$platform_tests" 2>/dev/null || true
  "$repo/cluster/down.sh" "$platform"
}
trap stop_platform EXIT
(
  cd "$repo"
  export AGENTIC_CLUSTER_DIR=$platform
  "$platform_binary" --ignored --skip no_status_write_was_refused_by_the_platforms_schema
  "$platform_binary" --ignored --exact no_status_write_was_refused_by_the_platforms_schema
) >"$platform/tests.log" 2>&1 &
platform_tests=$!

since=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
cargo test --workspace "$@"
# Same package selection and cargo args (e.g. --features): the same feature resolution, so
# nothing is rebuilt.
AGENTIC_AUDIT_SINCE=$since cargo test --workspace "$@" --test deploy -- --ignored --exact \
  shipped_rbac_grants_exactly_what_the_suite_needed \
  the_operator_only_ever_lists_and_watches_secrets_by_selector \
  no_job_of_the_suite_carries_a_credential_as_a_plain_value

echo "[suite] the platform installation (tests/platform_crd.rs, its own cluster):"
if wait "$platform_tests"; then
  platform_tests=""
  grep -E '^(test |test result)' "$platform/tests.log"
else
  cat "$platform/tests.log"
  echo "[suite] tests/platform_crd.rs failed" >&2
  exit 1
fi
