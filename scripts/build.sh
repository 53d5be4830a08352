#!/usr/bin/env bash
# Build hyper: the workspace binaries, the static hyperstart agent, and the test fixtures.
#   target/debug/{hyperd,hyper}     the daemon and the CLI
#   target/debug/hyperstart         the agent, statically linked (it runs as PID 1 inside VMs too)
#   target/debug/fixtures/          a busybox image built from Debian's busybox-static
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build ${CARGO_BUILD_FLAGS:-}
# The agent must not depend on the host's libraries: glibc, linked statically. RUSTFLAGS with an explicit
# --target applies to the agent only, not to build scripts and proc-macros. Optimised and stripped: it is
# the /init of every VM, read and run under emulation on hosts without KVM.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p hyperstart --target x86_64-unknown-linux-gnu ${CARGO_BUILD_FLAGS:-}
install -m 0755 -s target/x86_64-unknown-linux-gnu/release/hyperstart target/debug/hyperstart
if [ ! -f target/debug/hyper-initrd.img ] || [ target/debug/hyperstart -nt target/debug/hyper-initrd.img ] || [ scripts/build-initrd.py -nt target/debug/hyper-initrd.img ]; then
  python3 scripts/build-initrd.py target/debug/hyperstart target/debug/hyper-initrd.img
fi

fixtures=target/debug/fixtures
mkdir -p "$fixtures"
if [ ! -f "$fixtures/toolbox.tar" ] || [ scripts/build-busybox-image.py -nt "$fixtures/toolbox.tar" ] || [ /bin/busybox -nt "$fixtures/toolbox.tar" ]; then
  python3 scripts/build-busybox-image.py "$fixtures/busybox.tar" busybox:latest >/dev/null
  python3 scripts/build-busybox-image.py "$fixtures/toolbox.tar" toolbox:latest toolbox >/dev/null
fi
# nettool (echo servers, sink, sender for network tests) in an image of its own.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p nettool --target x86_64-unknown-linux-gnu ${CARGO_BUILD_FLAGS:-}
if [ ! -f "$fixtures/nettools.tar" ] || [ target/x86_64-unknown-linux-gnu/release/nettool -nt "$fixtures/nettools.tar" ] || [ scripts/build-busybox-image.py -nt "$fixtures/nettools.tar" ]; then
  python3 scripts/build-busybox-image.py "$fixtures/nettools.tar" nettools:latest nettools target/x86_64-unknown-linux-gnu/release/nettool=/usr/bin/nettool >/dev/null
fi
