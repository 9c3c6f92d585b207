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
