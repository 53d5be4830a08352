#!/usr/bin/env bash
# Run the whole test suite: setup (idempotent), build, then every test as root inside a private network
# namespace, so registries, daemons and pods under test only ever talk over their own loopback.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: the suite needs root (namespaces, mounts, device nodes)" >&2; exit 1; }
bash scripts/setup.sh
bash scripts/build.sh
cargo test --workspace --no-run --quiet 2>/dev/null || cargo test --workspace --no-run
exec unshare --net --mount --propagation private -- bash -c '
  set -e
  ip link set lo up
  exec cargo test --workspace --offline --no-fail-fast "$@"
' test.sh "$@"
