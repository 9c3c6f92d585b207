#!/usr/bin/env bash
# Restarts the kube-apiserver of a cluster started by up.sh, with exactly the command line it
# was started with, and waits until it is ready again. Used by the fault tests (tests/faults.rs).
#
# Usage: cluster/restart-apiserver.sh STATE_DIR [SIGNAL]   (SIGNAL: TERM, the default, or KILL)
#
# The command line comes from /proc/<pid>/cmdline of the running apiserver (what up.sh ran,
# argument for argument); a copy is kept in STATE_DIR/pids/kube-apiserver.cmdline so a restart
# still works if the process is already gone. The new PID replaces the recorded one, so
# down.sh stops the new process.
#
# CLUSTER_SHARDED_LIST_AND_WATCH=true|false restarts it with that ShardedListAndWatch feature gate
# instead (cluster.env records the new value); the sharding tests run both ways.
set -euo pipefail
state=${1:?usage: restart-apiserver.sh STATE_DIR [TERM|KILL]}
signal=${2:-TERM}
log() { printf '[restart-apiserver] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
pid_file=$state/pids/kube-apiserver.pid
cmd_file=$state/pids/kube-apiserver.cmdline
[ -f "$pid_file" ] || die "no $pid_file: not a cluster made by up.sh"
# shellcheck disable=SC1091
source "$state/cluster.env"

pid=$(cat "$pid_file")
if kill -0 "$pid" 2>/dev/null; then
  grep -qa kube-apiserver "/proc/$pid/cmdline" || die "PID $pid is not a kube-apiserver"
  cp "/proc/$pid/cmdline" "$cmd_file"
  kill "-$signal" "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid"; sleep 0.2; }
fi
[ -s "$cmd_file" ] || die "no recorded command line in $cmd_file"

mapfile -d '' argv < "$cmd_file"
if [ -n "${CLUSTER_SHARDED_LIST_AND_WATCH:-}" ]; then
  case $CLUSTER_SHARDED_LIST_AND_WATCH in true|false) ;; *) die "CLUSTER_SHARDED_LIST_AND_WATCH must be true or false";; esac
  gate="--feature-gates=ShardedListAndWatch=$CLUSTER_SHARDED_LIST_AND_WATCH"
  replaced=false
  for i in "${!argv[@]}"; do
    case ${argv[$i]} in --feature-gates=*) argv[$i]=$gate; replaced=true;; esac
  done
  $replaced || argv+=("$gate")
  printf '%s\0' "${argv[@]}" > "$cmd_file"
  sed -i '/^SHARDED_LIST_AND_WATCH=/d' "$state/cluster.env"
  echo "SHARDED_LIST_AND_WATCH=$CLUSTER_SHARDED_LIST_AND_WATCH" >> "$state/cluster.env"
fi
setsid "${argv[@]}" >> "$state/logs/kube-apiserver.log" 2>&1 < /dev/null &
echo $! > "$pid_file"
started=$SECONDS
pki=$state/pki
until curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "$API_SERVER/readyz" >/dev/null 2>&1; do
  kill -0 "$(cat "$pid_file")" 2>/dev/null || { tail -n 20 "$state/logs/kube-apiserver.log" >&2; die "the apiserver exited"; }
  [ $((SECONDS - started)) -lt 90 ] || die "the apiserver is not ready after 90 s"
  sleep 0.1
done
log "kube-apiserver restarted (pid $(cat "$pid_file")) and ready in $((SECONDS - started))s"
