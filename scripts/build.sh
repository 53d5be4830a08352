#!/usr/bin/env bash
# Build hyper: the workspace binaries and the test fixtures (under target/debug/fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace ${CARGO_BUILD_FLAGS:-}
fixtures=target/debug/fixtures
mkdir -p "$fixtures"
if [ ! -f "$fixtures/busybox.tar" ] || [ scripts/build-busybox-image.py -nt "$fixtures/busybox.tar" ] || [ /bin/busybox -nt "$fixtures/busybox.tar" ]; then
  python3 scripts/build-busybox-image.py "$fixtures/busybox.tar" busybox:latest >/dev/null
fi
