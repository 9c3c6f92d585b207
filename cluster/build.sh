#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kwok) from Go modules with the plain `go` command, and caches the binaries.
#
# Prints the directory holding the binaries on its last line of stdout. A warm run (same versions,
# same Go, same go.sum files) only prints that directory. Progress goes to stderr.
#
# `build.sh kueue` builds Kueue instead (cluster/go/kueue), cached apart under its own key, with
# its CRDs copied from the module's source into `crds/` beside the binary.
#
# Cache root: $AGENTIC_CACHE_DIR (default ~/.cache/agentic-operator).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

command -v go >/dev/null || { echo "build.sh: go is not on PATH" >&2; exit 1; }
cache_root=${AGENTIC_CACHE_DIR:-$HOME/.cache/agentic-operator}

if [ "${1:-}" = kueue ]; then
  module=$here/go/kueue
  key=$( { go version; cat "$module/go.mod" "$module/go.sum"; } | sha256sum | cut -c1-16)
  bin="$cache_root/kueue-bin/$key"
  if [ -x "$bin/kueue" ] && [ -d "$bin/crds" ]; then echo "$bin"; exit 0; fi
  mkdir -p "$cache_root/kueue-bin"
  tmp=$(mktemp -d "$cache_root/kueue-bin/.build-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  version=$(cd "$module" && go list -m -f '{{.Version}}' sigs.k8s.io/kueue)
  printf '[cluster build] kueue %s (cold: a few minutes on 2 cores)\n' "$version" >&2
  (cd "$module" && go build -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$version" \
    -o "$tmp/kueue" sigs.k8s.io/kueue/cmd/kueue)
  mkdir "$tmp/crds"
  cp "$(cd "$module" && go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)"/config/components/crd/bases/*.yaml "$tmp/crds/"
  chmod u+w "$tmp"/crds/*.yaml
  rm -rf "$bin"; mv "$tmp" "$bin"; trap - EXIT
  echo "$bin"; exit 0
fi

# The control plane's modules only: Kueue's has a key of its own.
modules=("$here"/go/{etcd,kubernetes,kwok})
key=$( { cat "$here/versions.env"; go version; for m in "${modules[@]}"; do cat "$m/go.mod"; done
         for m in "${modules[@]}"; do cat "$m/go.sum"; done; } | sha256sum | cut -c1-16)
bin="$cache_root/cluster-bin/$key"
wanted=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

have_all() { for b in "${wanted[@]}"; do [ -x "$bin/$b" ] || return 1; done; }
if have_all; then echo "$bin"; exit 0; fi

log() { printf '[cluster build] %s\n' "$*" >&2; }
mkdir -p "$cache_root/cluster-bin"
tmp=$(mktemp -d "$cache_root/cluster-bin/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS

minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

log "kubernetes $KUBERNETES_VERSION: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (cold: ~20 min on 2 cores)"
(cd "$here/go/kubernetes" && go build -trimpath -ldflags "-s -w$stamp" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
log "kubernetes done after $((SECONDS - start))s; etcd $ETCD_VERSION"
(cd "$here/go/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
log "etcd done after $((SECONDS - start))s; kwok $KWOK_VERSION"
(cd "$here/go/kwok" && go build -trimpath -ldflags "-s -w" -o "$tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
log "all built in $((SECONDS - start))s"

rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "$bin"
