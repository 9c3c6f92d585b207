#!/usr/bin/env bash
# `make dev`: the operator's main job on a local real control plane.
# Builds what is missing (control plane from Go modules, the operator), starts (or reuses) the
# cluster in .cluster, installs the CRDs, starts the operator, applies a sample session and
# prints its phase transitions until it finishes; then keeps the operator running until Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
state=$repo/.cluster
say() { printf '\n==> %s\n' "$*"; }

say "control plane binaries (built from Go modules on first use, then cached)"
bin=$("$here/build.sh" | tail -n 1)
kc() { "$bin/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }

if "$here/down.sh" --check "$state" 2>/dev/null; then
  say "reusing the running cluster in .cluster"
else
  say "starting a local cluster in .cluster"
  "$here/up.sh" "$state"
fi

say "building the operator"
(cd "$repo" && cargo build -p agentic-operator)

say "installing the CRDs"
kc apply --server-side --force-conflicts -f "$repo/deploy/crds/agenticsessions.vteam.ambient-code.yaml" \
  -f "$repo/deploy/crds/projectsettings.vteam.ambient-code.yaml" >/dev/null
kc wait --for=condition=Established --timeout=60s \
  crd/agenticsessions.vteam.ambient-code crd/projectsettings.vteam.ambient-code >/dev/null

say "starting the operator (logs: .cluster/logs/operator.log)"
if [ -f "$state/pids/dev-operator.pid" ] && kill -0 "$(cat "$state/pids/dev-operator.pid")" 2>/dev/null; then
  kill "$(cat "$state/pids/dev-operator.pid")"; sleep 1
fi
DEV_MODE=true "$repo/target/debug/agentic-operator" --kubeconfig "$state/kubeconfig" \
  --agent-registry-path "$repo/deploy/base/config/agent-registry.json" \
  --models-manifest-path "$repo/deploy/base/config/models.json" \
  --metrics-bind-address 127.0.0.1:8080 --health-probe-bind-address 127.0.0.1:8081 \
  > "$state/logs/operator.log" 2>&1 &
operator=$!
echo $operator > "$state/pids/dev-operator.pid"
trap 'kill $operator 2>/dev/null; rm -f "$state/pids/dev-operator.pid"; echo; echo "operator stopped (the cluster keeps running: make cluster-down)"' EXIT
for _ in $(seq 1 100); do
  curl -fsS 127.0.0.1:8081/readyz >/dev/null 2>&1 && break
  kill -0 $operator 2>/dev/null || { tail -20 "$state/logs/operator.log"; exit 1; }
  sleep 0.2
done

say "applying a sample session in namespace demo (managed)"
kc apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {ambient-code.io/managed: "true"}
---
# The runners' model credentials: a managed namespace needs them before sessions start.
apiVersion: v1
kind: Secret
metadata:
  name: ambient-runner-secrets
  namespace: demo
stringData:
  ANTHROPIC_API_KEY: sk-ant-replace-me
YAML
kc -n demo delete agenticsession hello --ignore-not-found --wait=true >/dev/null
# Watch first, so even a phase that lasts milliseconds is seen.
exec {watch}< <(kc -n demo get agenticsessions --watch --request-timeout=180s \
  -o jsonpath='{.metadata.name}{"|"}{.status.phase}{"|"}{.status.message}{"\n"}')
sleep 0.5
kc apply -f - <<YAML
apiVersion: vteam.ambient-code/v1alpha1
kind: AgenticSession
metadata:
  name: hello
  namespace: demo
spec:
  displayName: Hello from make dev
  initialPrompt: Say hello
  timeout: 120
  environmentVariables:
    SIM_RUN_FOR: 5s   # the local cluster simulates a runner that works for 5 s, then succeeds
YAML

say "phase transitions of demo/hello"
last=""
while IFS='|' read -r -u "$watch" name phase message; do
  [ "$name" = hello ] || continue
  phase=${phase:-Pending}
  if [ "$phase" != "$last" ]; then
    printf '%s  %-10s %s\n' "$(date +%H:%M:%S)" "$phase" "${message:-created}"
    last=$phase
  fi
  case "$phase" in Completed|Failed|Stopped) break ;; esac
done
exec {watch}<&-
echo
kc -n demo get agenticsession hello
echo
echo "Events:"
kc -n demo get events --field-selector involvedObject.name=hello \
  -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message --sort-by=.lastTimestamp 2>/dev/null || true

cat <<MSG

The operator keeps running (metrics: http://127.0.0.1:8080/metrics, probes: :8081/healthz /readyz).
Try it:  export KUBECONFIG=$state/kubeconfig
         kubectl -n demo annotate agenticsession hello ambient-code.io/desired-phase=Running --overwrite
         kubectl -n demo get agenticsessions -w
Ctrl-C stops the operator; make cluster-down stops the cluster.
MSG
wait $operator
