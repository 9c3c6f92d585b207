#!/usr/bin/env bash
# The whole test suite against the cluster in AGENTIC_CLUSTER_DIR (see cluster/with-cluster.sh),
# then the RBAC minimality check over the API server's audit log of that run: every verb that
# deploy/base/rbac.yaml grants the operator must have been needed, and nothing denied
# (tests/deploy.rs, shipped_rbac_grants_exactly_what_the_suite_needed), and that every Secret
# list/watch it made carried a selector.
# Usage: tests/suite.sh [cargo args, e.g. --features ...]
set -euo pipefail
: "${AGENTIC_CLUSTER_DIR:?run through cluster/with-cluster.sh}"
since=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
cargo test --workspace "$@"
# Same package selection and cargo args (e.g. --features): the same feature resolution, so
# nothing is rebuilt.
AGENTIC_AUDIT_SINCE=$since cargo test --workspace "$@" --test deploy -- --ignored --exact \
  shipped_rbac_grants_exactly_what_the_suite_needed \
  the_operator_only_ever_lists_and_watches_secrets_by_selector \
  no_job_of_the_suite_carries_a_credential_as_a_plain_value

# The platform's own installation (SPEC §7): its CRDs, its operator's RBAC and ConfigMaps, then
# deploy/overlays/platform, on a cluster of its own (CRDs and ClusterRoles are cluster-wide).
# The lifecycle runs there under the platform's RBAC plus the overlay's; then the audit log of
# that cluster must hold no refused status write.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
platform=$repo/target/test-cluster-platform
"$repo/cluster/down.sh" "$platform" 2>/dev/null || true
"$repo/cluster/up.sh" "$platform"
trap '"$repo/cluster/down.sh" "$platform"' EXIT
AGENTIC_CLUSTER_DIR=$platform cargo test --workspace "$@" --test platform_crd -- --ignored \
  --skip no_status_write_was_refused_by_the_platforms_schema
AGENTIC_CLUSTER_DIR=$platform cargo test --workspace "$@" --test platform_crd -- --ignored --exact \
  no_status_write_was_refused_by_the_platforms_schema
