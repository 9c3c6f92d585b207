#!/usr/bin/env bash
# Runs a command with a control plane available, exporting AGENTIC_CLUSTER_DIR to it.
# If AGENTIC_CLUSTER_DIR already names a running cluster (made by up.sh) it is used as is;
# otherwise a fresh cluster, with Kueue (tests/kueue.rs), is started in target/test-cluster and
# stopped afterwards.
# Usage: cluster/with-cluster.sh COMMAND [ARGS...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
if [ -n "${AGENTIC_CLUSTER_DIR:-}" ]; then
  "$here/down.sh" --check "$AGENTIC_CLUSTER_DIR" \
    || { echo "AGENTIC_CLUSTER_DIR=$AGENTIC_CLUSTER_DIR is not a running cluster (start one with make cluster-up)" >&2; exit 1; }
  exec "$@"
fi
export AGENTIC_CLUSTER_DIR=$repo/target/test-cluster
"$here/down.sh" "$AGENTIC_CLUSTER_DIR" 2>/dev/null || true
trap '"$here/down.sh" "$AGENTIC_CLUSTER_DIR"' EXIT
CLUSTER_KUEUE=1 "$here/up.sh" "$AGENTIC_CLUSTER_DIR"
"$@"
