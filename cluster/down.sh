#!/usr/bin/env bash
# Stops a cluster started by up.sh, by the PIDs it recorded, in reverse start order.
# Usage: cluster/down.sh STATE_DIR        stop it (state kept for post-mortem logs)
#        cluster/down.sh --check STATE_DIR  exit 0 if every recorded process is alive
set -uo pipefail
check=false
if [ "${1:-}" = "--check" ]; then check=true; shift; fi
state=${1:?usage: down.sh [--check] STATE_DIR}
order=(kueue kwok kube-scheduler kube-controller-manager kube-apiserver etcd)

if $check; then
  for p in "${order[@]}"; do
    f=$state/pids/$p.pid
    # Kueue runs only when the cluster was started with CLUSTER_KUEUE=1.
    [ -f "$f" ] || [ "$p" != kueue ] || continue
    [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null || exit 1
  done
  exit 0
fi

# Operators that tests ran as child processes (tests/support/process.rs) and left behind; the
# cmdline check guards against a recycled PID.
for f in "$state"/pids/operator-*.pid; do
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  grep -qa agentic-operator "/proc/$pid/cmdline" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  rm -f "$f"
done

for p in "${order[@]}"; do
  f=$state/pids/$p.pid
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$f"
done
rm -f "$state/cluster.env"
echo "[cluster down] stopped the cluster in $state" >&2
