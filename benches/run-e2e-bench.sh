#!/usr/bin/env bash
# End-to-end bench (make bench-e2e): N sessions created at once across M managed namespaces,
# for the work-queue engine, the legacy engine and a bare-client baseline (the same API writes,
# no operator), each on a fresh local control plane; plus start-up with a backlog of sessions
# under each engine.
#
# Usage: benches/run-e2e-bench.sh            1k and 5k sessions, then start-up with 10k (each engine)
#        E2E_SIZES="1000 5000 10000" ...     other sizes (make bench-e2e E2E_10K=1 adds 10k)
#        E2E_STARTUP=0 ...                   skip the start-up measurement (E2E_STARTUP=N: N sessions)
#        E2E_MODES="baseline queue" ...      a subset of the modes (baseline queue legacy, and
#                                            sharded failover: E2E_REPLICAS replicas with
#                                            --sharding, failover killing one of them
#                                            E2E_KILL_AFTER seconds into the burst; and
#                                            finishing kueue kueue-per-project: below)
#        E2E_STARTUP_ENGINES="queue" ...     engines measured at start-up (default: queue legacy)
#        E2E_STARTUP_TIMEOUT=1200            how long to follow the start-up backlog (s)
#        E2E_SETTLE=420 ...                  keep sampling the operator's RSS this long after each run
#        E2E_RUNS_DIR=dir ...                raw results elsewhere (default target/bench-report/e2e-runs)
#        E2E_OPERATOR_BIN=path ...           run another operator binary or a wrapper (e.g. heaptrack)
#        E2E_SCALE=1 ...                     also the cluster that made the original run out of
#                                            memory (ambient-code/platform #1299): 674 managed +
#                                            89 other namespaces, 3842 finished and 477 running
#                                            sessions; first start, then a restart (make bench-scale
#                                            runs only this); E2E_SCALE_ENGINES="queue legacy"
#
#        E2E_MODES="finishing kueue kueue-per-project" (make bench-kueue)
#                                            queueing with Kueue (issue 27): runners that succeed after
#                                            1 s, followed until every session has ended; kueue runs
#                                            the cluster with Kueue and the operator with --kueue, every
#                                            namespace's runners queued in one ClusterQueue admitting
#                                            E2E_KUEUE_QUOTA (100) at once; kueue-per-project: a
#                                            ClusterQueue per namespace with an equal share, in one
#                                            cohort; finishing is the same work without Kueue (the
#                                            comparison); not in the default modes
#
# Writes target/bench-report/e2e.json, e2e.md and e2e-*.png; raw per-run results and operator
# logs under target/bench-report/e2e-runs/.
#
# Choices, documented in the report too:
# - Runners request 1m CPU / 1Mi memory (operator flags; the baseline writes the same Jobs), so
#   the scheduler's work does not depend on the default requests. The 3 fake nodes
#   (cluster/kwok/stages.yaml) hold 10k runner pods either way, init-hydrate's LimitRange
#   defaults (250m / 256Mi a pod) included.
# - The operator runs with its defaults otherwise (10 workers); the baseline uses 10 concurrent
#   "reconciles". Both authenticate as their own ServiceAccount (bound to cluster-admin) whose
#   FlowSchema sends them to the exempt priority level, as the admin certificate would be; the
#   API server counts their requests per FlowSchema
#   (apiserver_flowcontrol_dispatched_requests_total), read before and after the burst.
# - Runners hang (SIM_OUTCOME=hang) so Running is observable; each run gets a fresh cluster,
#   which is stopped and deleted afterwards (no namespace deletion storms between runs).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=$root/target/bench-report
runs=${E2E_RUNS_DIR:-$out/e2e-runs}
mkdir -p "$out" "$runs"
sizes=${E2E_SIZES-1000 5000}
modes=${E2E_MODES:-baseline queue legacy}
startup=${E2E_STARTUP:-10000}
namespaces=${E2E_NAMESPACES:-10}
log() { printf '[bench-e2e] %s\n' "$*" >&2; }

command -v gnuplot >/dev/null || {
  log "installing gnuplot-nox (plots)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get install -y -qq gnuplot-nox >/dev/null
}

log "building the operator and the load generator (release)"
cargo build --release --bin agentic-operator --example loadgen
operator_bin=${E2E_OPERATOR_BIN:-$root/target/release/agentic-operator}
loadgen=$root/target/release/examples/loadgen
runner_flags=(--runner-cpu-request 1m --runner-memory-request 1Mi)

state=""
cleanup() { if [ -n "$state" ]; then cluster/down.sh "$state" >/dev/null 2>&1 || true; rm -rf "$state" "$state.up.log"; fi; }
trap cleanup EXIT

# Fresh cluster with the CRDs, two bench identities (operator, baseline) and their FlowSchemas.
# CLUSTER_KUEUE=1 in the environment: Kueue runs too.
fresh_cluster() {
  cleanup
  state=$(mktemp -d /tmp/e2e-cluster.XXXXXX)
  cluster/up.sh "$state" >/dev/null 2>"$state.up.log" || { cat "$state.up.log" >&2; exit 1; }
  # shellcheck disable=SC1091
  source "$state/cluster.env"
  kc() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG" "$@"; }
  kc apply --server-side -f deploy/crds/agenticsessions.vteam.ambient-code.yaml \
    -f deploy/crds/projectsettings.vteam.ambient-code.yaml >/dev/null
  kc wait --for=condition=Established --timeout=60s \
    crd/agenticsessions.vteam.ambient-code crd/projectsettings.vteam.ambient-code >/dev/null
  kc create namespace bench-system >/dev/null
  for who in operator baseline; do
    kc -n bench-system create serviceaccount "$who" >/dev/null
    kc create clusterrolebinding "bench-$who" --clusterrole cluster-admin \
      --serviceaccount "bench-system:$who" >/dev/null
    kc apply -f - >/dev/null <<FS
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: bench-$who}
spec:
  matchingPrecedence: 50
  priorityLevelConfiguration: {name: exempt}
  rules:
  - subjects: [{kind: ServiceAccount, serviceAccount: {name: $who, namespace: bench-system}}]
    resourceRules: [{verbs: ["*"], apiGroups: ["*"], resources: ["*"], namespaces: ["*"], clusterScope: true}]
    nonResourceRules: [{verbs: ["*"], nonResourceURLs: ["*"]}]
FS
    token=$(kc -n bench-system create token "$who" --duration 24h)
    cp "$KUBECONFIG" "$state/$who.kubeconfig"
    kc --kubeconfig "$state/$who.kubeconfig" config set-credentials "bench-$who" --token "$token" >/dev/null
    kc --kubeconfig "$state/$who.kubeconfig" config set-context local --user "bench-$who" >/dev/null
  done
}

for n in $sizes; do
  for mode in $modes; do
    log "$n sessions, $mode: fresh cluster"
    case $mode in kueue*) CLUSTER_KUEUE=1 fresh_cluster ;; *) CLUSTER_KUEUE=0 fresh_cluster ;; esac
    result=$runs/$mode-$n.json
    case $mode in
      baseline)
        "$loadgen" --mode baseline --kubeconfig "$KUBECONFIG" --sessions "$n" --namespaces "$namespaces" \
          --actor-kubeconfig "$state/baseline.kubeconfig" --flow-schema bench-baseline \
          --concurrency 10 --out "$result" ;;
      queue|legacy)
        engine=(); [ "$mode" = legacy ] && engine=(--legacy-watch)
        "$loadgen" --mode operator --kubeconfig "$KUBECONFIG" --sessions "$n" --namespaces "$namespaces" \
          --flow-schema bench-operator --operator-bin "$operator_bin" --operator-log "$runs/$mode-$n.log" \
          --settle-secs "${E2E_SETTLE:-0}" \
          --out "$result" -- --kubeconfig "$state/operator.kubeconfig" --namespace default \
          "${runner_flags[@]}" "${engine[@]}" ;;
      sharded|failover)
        kill=(); [ "$mode" = failover ] && kill=(--kill-first-after-secs "${E2E_KILL_AFTER:-30}")
        "$loadgen" --mode operator --kubeconfig "$KUBECONFIG" --sessions "$n" --namespaces "$namespaces" \
          --flow-schema bench-operator --operator-bin "$operator_bin" --operator-log "$runs/$mode-$n.log" \
          --settle-secs "${E2E_SETTLE:-0}" --replicas "${E2E_REPLICAS:-3}" "${kill[@]}" \
          --out "$result" -- --kubeconfig "$state/operator.kubeconfig" --namespace default \
          "${runner_flags[@]}" --sharding --sharding-ring bench ;;
      finishing|kueue|kueue-per-project)
        kueue=(); flag=()
        case $mode in
          kueue) kueue=(--kueue-quota "${E2E_KUEUE_QUOTA:-100}" --kueue-layout shared); flag=(--kueue) ;;
          kueue-per-project) kueue=(--kueue-quota "${E2E_KUEUE_QUOTA:-100}" --kueue-layout per-project); flag=(--kueue) ;;
        esac
        "$loadgen" --mode operator --kubeconfig "$KUBECONFIG" --sessions "$n" --namespaces "$namespaces" \
          --flow-schema bench-operator --operator-bin "$operator_bin" --operator-log "$runs/$mode-$n.log" \
          --outcome succeed --run-for 1s --until terminal "${kueue[@]}" \
          --settle-secs "${E2E_SETTLE:-0}" \
          --out "$result" -- --kubeconfig "$state/operator.kubeconfig" --namespace default \
          "${runner_flags[@]}" "${flag[@]}" ;;
      *) log "unknown mode $mode"; exit 2 ;;
    esac
  done
done

if [ "$startup" != 0 ]; then
  for mode in ${E2E_STARTUP_ENGINES:-queue legacy}; do
    engine=(); [ "$mode" = legacy ] && engine=(--legacy-watch)
    log "start-up with $startup existing sessions, $mode: fresh cluster, populate"
    fresh_cluster
    "$loadgen" --mode populate --kubeconfig "$KUBECONFIG" --sessions "$startup" \
      --namespaces "$namespaces" --create-concurrency 64 --out "$runs/populate-$mode-$startup.json"
    log "start-up, $mode: operator against the backlog, probes while it drains"
    "$loadgen" --mode startup --kubeconfig "$KUBECONFIG" --sessions "$startup" --namespaces "$namespaces" \
      --probes 5 --operator-bin "$operator_bin" --operator-log "$runs/startup-$mode-$startup.log" \
      --timeout-secs "${E2E_STARTUP_TIMEOUT:-1200}" --out "$runs/startup-$mode-$startup.json" -- \
      --kubeconfig "$state/operator.kubeconfig" --namespace default "${runner_flags[@]}" "${engine[@]}"
  done
fi
if [ "${E2E_SCALE:-0}" != 0 ]; then
  for mode in ${E2E_SCALE_ENGINES:-queue legacy}; do
    engine=(); [ "$mode" = legacy ] && engine=(--legacy-watch)
    log "the #1299 cluster, $mode: fresh cluster, build the shape, start, restart"
    fresh_cluster
    "$loadgen" --mode scale --kubeconfig "$KUBECONFIG" --namespaces 674 --unmanaged-namespaces 89 \
      --finished-sessions 3842 --sessions 477 --create-concurrency 64 --flow-schema bench-operator \
      --operator-bin "$operator_bin" --operator-log "$runs/scale-$mode.log" \
      --restart-window-secs "${E2E_RESTART_WINDOW:-30}" --out "$runs/scale-$mode.json" -- \
      --kubeconfig "$state/operator.kubeconfig" --namespace default "${runner_flags[@]}" "${engine[@]}"
  done
fi
cleanup; state=""

python3 "$root/benches/e2e/report.py" "$runs" "$out"
log "report: $out/e2e.md"
