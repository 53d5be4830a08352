#!/usr/bin/env bash
# Run a benchmark: bench/run.sh pull|...   (release build, inside a private network namespace)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 1; }
bash scripts/setup.sh
cargo build --release --workspace --quiet
what=${1:-pull}
case "$what" in
  pull)
    python3 bench/make_image.py /var/cache/hyper/bench/big-oci 300 10
    exec unshare --net -- bash -c 'ip link set lo up; exec python3 bench/pull.py "$0" "$1"' "$PWD/target/release" /var/cache/hyper/bench/big-oci
    ;;
  *) echo "unknown benchmark $what" >&2; exit 2 ;;
esac
