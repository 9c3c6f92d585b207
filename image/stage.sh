#!/bin/sh
# Lays out every file of the operator image under DIR, from the static binary BIN:
#   /app/operator                      the binary; the platform's CronJobs run
#                                      `./operator session-trigger` from WORKDIR /app (SPEC §5.7)
#   /usr/local/bin/agentic-operator    the entrypoint, a relative symlink to it
#   /etc/nsswitch.conf                 `hosts: files dns`, so /etc/hosts (and a pod's hostAliases)
#                                      wins over DNS as in distroless; glibc's default without the
#                                      file asks DNS first
# The Dockerfile's build stage and image/build.sh both call it, so both images hold the same files.
# Usage: image/stage.sh BIN DIR
set -eu
bin=$1
dir=$2
rm -rf "$dir"
mkdir -p "$dir/app" "$dir/usr/local/bin" "$dir/etc"
cp "$bin" "$dir/app/operator"
chmod 0755 "$dir/app/operator"
ln -s ../../../app/operator "$dir/usr/local/bin/agentic-operator"
printf 'hosts: files dns\n' >"$dir/etc/nsswitch.conf"
chmod 0644 "$dir/etc/nsswitch.conf"
