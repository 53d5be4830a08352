#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what hyper needs, build it, start hyperd (if it is not
# running already), import a busybox image built from Debian's busybox-static, and list images.
# Idempotent: run it again and it reuses the running daemon and the imported image.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "quickstart.sh: run as root (hyperd manages mounts, namespaces and VMs)" >&2; exit 1; }
bash scripts/setup.sh
bash scripts/build.sh
bin=$PWD/target/debug
export HYPER_HOST=unix:///run/hyper/hyper.sock
if ! "$bin/hyper" version >/dev/null 2>&1; then
  mkdir -p /var/log/hyper
  echo "quickstart: starting hyperd (log: /var/log/hyper/hyperd.log)"
  setsid "$bin/hyperd" >>/var/log/hyper/hyperd.log 2>&1 < /dev/null &
  for _ in $(seq 100); do "$bin/hyper" version >/dev/null 2>&1 && break; sleep 0.1; done
fi
"$bin/hyper" load -i "$bin/fixtures/busybox.tar"
"$bin/hyper" images
echo
echo "hyperd is running; talk to it with $bin/hyper (HYPER_HOST=$HYPER_HOST)."
