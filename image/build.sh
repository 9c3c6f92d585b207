#!/usr/bin/env bash
# `make image`: the operator image built offline, FROM scratch, with buildah (Debian package,
# installed by cluster/install-deps.sh). Builds the static release binary (crt-static on the
# host's gnu target), lays out its files with image/stage.sh, runs only the Dockerfile's final
# stage (its `build` stage is replaced by that directory, nothing is pulled), and writes
#   target/image/agentic-operator.oci.tar   OCI archive, tag agentic-operator:<version>
# Quick when nothing changed: cargo finds the binary fresh and the image is kept while the
# binary, the Dockerfile, stage.sh and the labels are the same (target/image/inputs.sha256).
# Needs root (buildah's storage); the storage is private to target/image and removed afterwards.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Run from a test (tests/image.rs), this inherits what cargo sets for a crate (CARGO_PKG_NAME,
# CARGO_MANIFEST_DIR, OUT_DIR, …). ring's build script reruns when those change, and with it
# everything above ring: the release build would flip between two fingerprints.
for var in $(compgen -e); do
  case $var in
    CARGO_PKG_* | CARGO_MANIFEST_* | CARGO_CRATE_NAME | CARGO_BIN_* | CARGO_PRIMARY_PACKAGE | \
      CARGO_TARGET_TMPDIR | CARGO_RUSTC_CURRENT_DIR | OUT_DIR) unset "$var" ;;
  esac
done
out=target/image
archive=$out/agentic-operator.oci.tar
triple=$(rustc -vV | sed -n 's/^host: //p')
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain 2>/dev/null)" ] || revision=$revision-dirty
# The commit's time for the image's creation date and file times: same inputs, same image.
created=$(git log -1 --format=%ct 2>/dev/null || echo 0)

echo "[image] static release binary ($triple)" >&2
# The same flags as the Dockerfile's build stage (see there why getrandom_backend).
RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' nice -n 5 \
  cargo build --release --locked --target "$triple" -p agentic-operator
bin=target/$triple/release/agentic-operator

mkdir -p "$out"
inputs=$( { sha256sum "$bin" Dockerfile image/stage.sh; echo "$version $revision $created"; } | sha256sum)
if [ -f "$archive" ] && [ "$(cat "$out/inputs.sha256" 2>/dev/null)" = "$inputs" ]; then
  echo "[image] $archive is up to date" >&2
  exit 0
fi

command -v buildah >/dev/null || { echo "[image] buildah is missing: run cluster/install-deps.sh" >&2; exit 1; }
rm -f "$archive" "$out/inputs.sha256"
image/stage.sh "$bin" "$out/build/stage"
storage=$out/storage
rm -rf "$storage"
trap 'rm -rf "$storage"' EXIT
b() { buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs "$@"; }
tag=localhost/agentic-operator:$version
b bud --quiet --pull=never --layers=false --timestamp "$created" \
  --build-context build="$out/build" \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  -f Dockerfile -t "$tag" "$out/build" >/dev/null
b push --quiet "$tag" "oci-archive:$archive:agentic-operator:$version"
echo "$inputs" >"$out/inputs.sha256"
echo "[image] $archive ($(du -h "$archive" | cut -f1), tag agentic-operator:$version, revision $revision)" >&2
