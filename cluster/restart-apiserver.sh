#!/usr/bin/env bash
# Restarts the kube-apiserver of a cluster started by up.sh, with exactly the command line it
# was started with, and waits until it is ready again; then restarts the controllers that watch
# it (see the end of this file). Used by the fault tests (tests/faults.rs) and the sharding tests.
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

stop_pid() { # pid, signal: sends it, waits up to 10 s for the process to exit, then KILLs it
  kill "-$2" "$1"
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1"; sleep 0.2
}
wait_ready() { # name, seconds, url, curl options...: until the URL answers; dies if name exits
  local name=$1 limit=$2 url=$3; shift 3
  local since=$SECONDS
  until curl -fsS "$@" "$url" >/dev/null 2>&1; do
    kill -0 "$(cat "$state/pids/$name.pid")" 2>/dev/null \
      || { tail -n 20 "$state/logs/$name.log" >&2; die "$name exited"; }
    [ $((SECONDS - since)) -lt "$limit" ] || die "$name is not ready after $limit s"
    sleep 0.1
  done
}

pid=$(cat "$pid_file")
if kill -0 "$pid" 2>/dev/null; then
  grep -qa kube-apiserver "/proc/$pid/cmdline" || die "PID $pid is not a kube-apiserver"
  cp "/proc/$pid/cmdline" "$cmd_file"
  stop_pid "$pid" "$signal"
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
wait_ready kube-apiserver 90 "$API_SERVER/readyz" \
  --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key"
log "kube-apiserver restarted (pid $(cat "$pid_file")) and ready in $((SECONDS - started))s"

# --- the controllers that watch it -------------------------------------------------------------
# The controller-manager, the scheduler and Kueue are restarted too, each with its own command
# line. Their client-go reflectors back off between failed list/watch attempts
# (0.8 s doubling to 30 s, jittered up to twice that) and forget the backoff only after two
# minutes without a failure. A test file restarts the API server several times a minute apart,
# so each restart left the controller-manager's pod informer longer before it relisted, and Jobs
# got no pods meanwhile: 4 s, then 15 s, then 50 s after three restarts in 90 s (its --v=4 log:
# "Watch failed - backing off", then "too old resource version" and the relist). The last of
# those overran a fault test's allowance, which is for the operator's recovery, not theirs. A
# fresh process starts with a fresh backoff; the operator under test is not restarted. Nor is
# kwok: a new kwok finds its nodes' Leases held by the old one and runs no pod until they expire
# (about 30 s), which would be the same stall by another road.
value_after() { # flag, argv...: the argument that follows flag
  local flag=$1; shift
  while [ $# -gt 1 ]; do [ "$1" = "$flag" ] && { printf '%s' "$2"; return 0; }; shift; done
  return 1
}
for name in kube-controller-manager kube-scheduler kueue; do
  file=$state/pids/$name.pid
  [ -f "$file" ] || continue # Kueue runs only with CLUSTER_KUEUE=1
  pid=$(cat "$file")
  kill -0 "$pid" 2>/dev/null && grep -qa "$name" "/proc/$pid/cmdline" || die "$name (PID $pid) is not running"
  mapfile -d '' argv < "/proc/$pid/cmdline"
  stop_pid "$pid" TERM
  setsid "${argv[@]}" >> "$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$file"
  case $name in
    kube-controller-manager|kube-scheduler)
      wait_ready "$name" 60 "https://127.0.0.1:$(value_after --secure-port "${argv[@]}")/healthz" -k ;;
    kueue) wait_ready kueue 60 "http://${KUEUE_HEALTH:?cluster.env has no KUEUE_HEALTH}/readyz" ;;
  esac
done
log "restarted the controllers that watch it"

