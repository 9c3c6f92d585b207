#!/usr/bin/env bash
# Starts a local Kubernetes control plane: etcd -> kube-apiserver (RBAC on) ->
# kube-controller-manager -> kube-scheduler -> kwok, then a few fake Nodes.
#
# Usage: cluster/up.sh STATE_DIR
#        CLUSTER_KUEUE=1 cluster/up.sh STATE_DIR   also Kueue (cluster/go/kueue), its CRDs and
#                                                  namespace kueue-system; no webhooks (see below)
# Everything listens on 127.0.0.1 on free ports. STATE_DIR receives the PKI, data, logs, PIDs,
# `kubeconfig`, and `cluster.env` (shell-sourceable facts that tests read). Stop with down.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${1:?usage: up.sh STATE_DIR}
mkdir -p "$state"
state=$(cd "$state" && pwd)
nodes=${CLUSTER_NODES:-3}
# KEP-5866 sharded list/watch (alpha in 1.36): on unless CLUSTER_SHARDED_LIST_AND_WATCH=false, so
# the operator's shard selectors are honoured; tests switch it with restart-apiserver.sh.
sharded_list=${CLUSTER_SHARDED_LIST_AND_WATCH:-true}
case $sharded_list in true|false) ;; *) echo "CLUSTER_SHARDED_LIST_AND_WATCH must be true or false" >&2; exit 1;; esac
kueue=${CLUSTER_KUEUE:-0}
case $kueue in 0|1) ;; *) echo "CLUSTER_KUEUE must be 0 or 1" >&2; exit 1;; esac
started=$SECONDS
log() { printf '[cluster up] %s\n' "$*" >&2; }
die() { printf '[cluster up] error: %s\n' "$*" >&2; exit 1; }

if [ -f "$state/cluster.env" ] && "$here/down.sh" --check "$state" 2>/dev/null; then
  die "a cluster is already running in $state (stop it with cluster/down.sh $state)"
fi
rm -rf "$state/pki" "$state/etcd-data" "$state/pids" "$state/logs" "$state/cluster.env"
mkdir -p "$state/pki" "$state/pids" "$state/logs"

bin=$("$here/build.sh" | tail -n 1)
[ -x "$bin/kube-apiserver" ] || die "build.sh did not produce binaries in $bin"
if [ "$kueue" = 1 ]; then
  kueue_bin=$("$here/build.sh" kueue | tail -n 1)
  [ -x "$kueue_bin/kueue" ] || die "build.sh kueue did not produce a binary in $kueue_bin"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
etcd_port=$(free_port); etcd_peer_port=$(free_port); api_port=$(free_port)
kcm_port=$(free_port); sched_port=$(free_port); kwok_port=$(free_port)

# --- PKI ---------------------------------------------------------------------------------------
pki=$state/pki
log "PKI"
openssl_q() { openssl "$@" 2>/dev/null; }
openssl_q req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 30 \
  -subj "/CN=agentic-local-ca"
cat > "$pki/apiserver.ext" <<EXT
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.0.0.1
extendedKeyUsage=serverAuth
EXT
openssl_q req -newkey rsa:2048 -nodes -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" -subj "/CN=kube-apiserver"
openssl_q x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -out "$pki/apiserver.crt" -days 30 -extfile "$pki/apiserver.ext"
echo "extendedKeyUsage=clientAuth" > "$pki/client.ext"
openssl_q req -newkey rsa:2048 -nodes -keyout "$pki/admin.key" -out "$pki/admin.csr" \
  -subj "/O=system:masters/CN=kubernetes-admin"
openssl_q x509 -req -in "$pki/admin.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -out "$pki/admin.crt" -days 30 -extfile "$pki/client.ext"
openssl_q genrsa -out "$pki/sa.key" 2048
openssl_q rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

kubeconfig=$state/kubeconfig
server=https://127.0.0.1:$api_port
cat > "$kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 < "$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 < "$pki/admin.crt")
    client-key-data: $(base64 -w0 < "$pki/admin.key")
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
KC

# --- processes ---------------------------------------------------------------------------------
start() { # name, command...
  local name=$1; shift
  setsid "$@" > "$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$state/pids/$name.pid"
}
wait_for() { # what, seconds, command...
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$state/logs/"*.log >&2; die "$what not ready after ${limit}s"; }
    sleep 0.2
  done
}
alive() { kill -0 "$(cat "$state/pids/$1.pid")" 2>/dev/null; }
curl_api() { curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$server$1"; }
kc() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

log "etcd on 127.0.0.1:$etcd_port"
start etcd "$bin/etcd" --name local --data-dir "$state/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "local=http://127.0.0.1:$etcd_peer_port" \
  --unsafe-no-fsync=true --auto-compaction-retention=1 --quota-backend-bytes=8589934592 --log-level=warn
wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

log "kube-apiserver on $server"
# Audit log of the operator's deployed ServiceAccount only: tests/deploy.rs compares what it
# used during the suite with the RBAC in deploy/. Bodies (Request level) for writes, which show
# the Roles, roleRefs and ownerReferences RBAC and admission check; never Secret bodies. Every
# stage is kept: a create in flight when a test kills the API server leaves only its
# RequestReceived event, and etcd may still have stored the object.
cat > "$state/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
  users: ["system:serviceaccount:ambient-code:agentic-operator"]
  resources: [{group: "", resources: [secrets]}]
- level: Request
  users: ["system:serviceaccount:ambient-code:agentic-operator"]
  verbs: [create, update, patch]
- level: Metadata
  users: ["system:serviceaccount:ambient-code:agentic-operator"]
- level: None
POLICY
# Watch cache off for PodTemplates only: the one kind nothing here uses, so tests can observe
# etcd compaction answered with 410 Gone straight from etcd.
start kube-apiserver "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.0.0.0/16 --authorization-mode Node,RBAC --allow-privileged=true \
  --watch-cache-sizes podtemplates#0 --max-requests-inflight 800 --max-mutating-requests-inflight 400 \
  --enable-admission-plugins OwnerReferencesPermissionEnforcement \
  "--feature-gates=ShardedListAndWatch=$sharded_list" \
  --audit-policy-file "$state/audit-policy.yaml" --audit-log-path "$state/logs/audit.log" \
  --audit-log-format json --audit-log-mode blocking
wait_for kube-apiserver 90 curl_api /readyz

log "kube-controller-manager, kube-scheduler"
start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --kube-api-qps 200 --kube-api-burst 400 --concurrent-job-syncs 20 --concurrent-gc-syncs 40
start kube-scheduler "$bin/kube-scheduler" --kubeconfig "$kubeconfig" --leader-elect=false \
  --bind-address 127.0.0.1 --secure-port "$sched_port"
wait_for kube-controller-manager 60 curl -fsSk "https://127.0.0.1:$kcm_port/healthz"
wait_for kube-scheduler 60 curl -fsSk "https://127.0.0.1:$sched_port/healthz"

log "kwok"
start kwok "$bin/kwok" --kubeconfig "$kubeconfig" --config "$here/kwok/stages.yaml" \
  --manage-all-nodes=true --node-lease-duration-seconds=40 --cidr=10.1.0.0/16 \
  --node-ip=10.2.0.1 --server-address "127.0.0.1:$kwok_port"

cat > "$state/cluster.env" <<ENV
# Written by cluster/up.sh; read by down.sh and by the integration tests.
CLUSTER_STATE_DIR=$state
KUBECONFIG=$kubeconfig
API_SERVER=$server
ETCD_ENDPOINT=http://127.0.0.1:$etcd_port
BIN_DIR=$bin
SHARDED_LIST_AND_WATCH=$sharded_list
ENV

log "$nodes fake nodes"
for i in $(seq 0 $((nodes - 1))); do
  cat <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {node.alpha.kubernetes.io/ttl: "0", kwok.x-k8s.io/node: fake}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
---
NODE
done | kc apply -f - >/dev/null
wait_for "Ready nodes" 90 kc wait --for=condition=Ready node --all --timeout=5s
wait_for "the default ServiceAccount" 60 kc -n default get serviceaccount default
wait_for "untainted nodes" 60 bash -c "[ -z \"\$('$bin/kubectl' --kubeconfig '$kubeconfig' get nodes -o jsonpath='{.items[*].spec.taints}')\" ]"
# OpenShift's restricted-v2 SCC as an admission policy, for namespaces carrying its range
# annotations (SPEC §7.4; see policies/restricted-v2.yaml).
kc apply -f "$here/policies/restricted-v2.yaml" >/dev/null

# --- Kueue (CLUSTER_KUEUE=1) -------------------------------------------------------------------
# Out of a cluster: no leader election, no internal certificates (they need a Secret mounted by a
# kubelet), no visibility API server. No webhook is registered: the operator creates its Jobs
# suspended and labelled, which is all Kueue's Job webhook would add. The webhook server still
# starts and needs a certificate, and the manager always reads its metrics certificate from the
# fixed path /etc/kueue/metrics/certs (the metrics listener itself is off).
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
if [ "$kueue" = 1 ]; then
  kdir=$state/kueue
  mkdir -p "$kdir/certs"
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$pki/kueue.ext"
  openssl_q req -newkey rsa:2048 -nodes -keyout "$kdir/certs/tls.key" -out "$pki/kueue.csr" \
    -subj "/CN=kueue-webhook"
  openssl_q x509 -req -in "$pki/kueue.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -out "$kdir/certs/tls.crt" -days 30 -extfile "$pki/kueue.ext"
  metrics_certs=/etc/kueue/metrics/certs
  if [ ! -r "$metrics_certs/tls.crt" ] || [ ! -r "$metrics_certs/tls.key" ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo mkdir -p "$metrics_certs" && $sudo cp "$kdir/certs/tls.crt" "$kdir/certs/tls.key" "$metrics_certs/" \
      || die "Kueue reads its metrics certificate from $metrics_certs, which cannot be written"
  fi
  kc create namespace kueue-system >/dev/null
  # Server-side: the Workload CRD (1.4 MB) is too large for client-side apply's annotation.
  kc apply --server-side --field-manager=cluster-up -f "$kueue_bin/crds/" >/dev/null
  kc wait --for condition=Established --timeout=60s -f "$kueue_bin/crds/" >/dev/null
  kueue_webhook_port=$(free_port); kueue_health_port=$(free_port)
  log "kueue (health on 127.0.0.1:$kueue_health_port)"
  cat > "$kdir/config.yaml" <<CFG
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
manageJobsWithoutQueueName: false
leaderElection: {leaderElect: false}
internalCertManagement: {enable: false}
webhook: {host: 127.0.0.1, port: $kueue_webhook_port, certDir: $kdir/certs}
metrics: {bindAddress: "0"}
health: {healthProbeBindAddress: "127.0.0.1:$kueue_health_port"}
clientConnection: {qps: 100, burst: 200}
integrations: {frameworks: ["batch/job"]}
featureGates: {VisibilityOnDemand: false}
CFG
  start kueue "$kueue_bin/kueue" --config "$kdir/config.yaml" --kubeconfig "$kubeconfig" --zap-log-level=2
  wait_for kueue 90 curl -fsS "http://127.0.0.1:$kueue_health_port/readyz"
  components+=(kueue)
  printf 'KUEUE=1\nKUEUE_HEALTH=127.0.0.1:%s\n' "$kueue_health_port" >> "$state/cluster.env"
fi
for p in "${components[@]}"; do
  alive "$p" || { tail -n 30 "$state/logs/$p.log" >&2; die "$p exited"; }
done
log "ready in $((SECONDS - started))s: $(kc version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
