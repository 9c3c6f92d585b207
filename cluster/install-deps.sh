#!/usr/bin/env bash
# Installs what building and testing need that a fresh machine of this kind may lack.
# Idempotent: checks first, installs only what is missing (Debian packages via apt-get).
# Go and Rust (with rustfmt and clippy) come with the machine; their absence is an error.
set -euo pipefail
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need make make
need curl curl
need openssl openssl
need python3 python3
need setsid util-linux
need base64 coreutils
# tests/prometheus.rs runs a real Prometheus (the binary only; the package's service is not used).
need prometheus prometheus
# `make image` builds the operator image FROM scratch with buildah (no daemon, no base image).
need buildah buildah
if [ ${#missing[@]} -gt 0 ]; then
  echo "[deps] installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in go cargo rustfmt cargo-clippy; do
  command -v "$tool" >/dev/null 2>&1 || { echo "[deps] $tool is required but not installed" >&2; exit 1; }
done
