#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what hyper needs (the guest kernel included), build it,
# start hyperd (if it is not running already) with the default driver (a VM per pod), import a busybox image
# built from Debian's busybox-static, and run a two-container pod in a VM.
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
podfile=$(mktemp --suffix=.json)
cat > "$podfile" <<'POD'
{"id": "quickstart", "hostname": "quickstart",
 "containers": [
   {"name": "web", "image": "busybox", "command": ["sh", "-c", "echo hello > /tmp/index.html; sleep 1000"]},
   {"name": "shell", "image": "busybox", "command": ["sleep", "1000"]}],
 "resource": {"vcpu": 1, "memory": 128}}
POD
"$bin/hyper" rm -f quickstart >/dev/null 2>&1 || true
"$bin/hyper" run -d "$podfile"
rm -f "$podfile"
"$bin/hyper" list
echo "--- inside the pod's VM:"
"$bin/hyper" exec quickstart/shell sh -c 'echo "kernel $(uname -r), hostname $(hostname)"; ps -o pid,args'
"$bin/hyper" rm -f quickstart >/dev/null
echo
echo "hyperd is running; talk to it with $bin/hyper (HYPER_HOST=$HYPER_HOST)."

