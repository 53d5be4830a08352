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
  pods)
    bash scripts/build.sh >/dev/null
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p hyperstart --target x86_64-unknown-linux-gnu --quiet
    install -m 0755 target/x86_64-unknown-linux-gnu/release/hyperstart target/release/hyperstart
    exec unshare --net --mount --propagation private -- bash -c 'ip link set lo up; exec python3 bench/pods.py "$0" "$1"' "$PWD/target/release" "$PWD/target/debug/fixtures"
    ;;
  vm)
    bash scripts/build.sh >/dev/null
    install -m 0644 target/debug/hyper-initrd.img target/release/hyper-initrd.img
    # The floor's trivial initrd: a 9 KB /init that prints its mark (bench/floor-init.c).
    gcc -static -nostdlib -Os -o target/release/floor-init bench/floor-init.c
    python3 scripts/build-initrd.py target/release/floor-init target/release/floor-initrd.img
    exec unshare --net --mount --propagation private -- bash -c 'ip link set lo up; exec python3 bench/vm.py "$0" "$1" "$2" "$3"' "$PWD/target/release" "$PWD/target/debug/fixtures" /var/cache/hyper/kernel/vmlinux "$PWD/target/release/floor-initrd.img"
    ;;
  net)
    bash scripts/build.sh >/dev/null
    install -m 0644 target/debug/hyper-initrd.img target/release/hyper-initrd.img
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p hyperstart --target x86_64-unknown-linux-gnu --quiet
    install -m 0755 target/x86_64-unknown-linux-gnu/release/hyperstart target/release/hyperstart
    exec unshare --net --mount --propagation private -- bash -c 'ip link set lo up; exec python3 bench/net.py "$0" "$1" "$2"' "$PWD/target/release" "$PWD/target/debug/fixtures" "$PWD/target/x86_64-unknown-linux-gnu/release/nettool"
    ;;
  *) echo "unknown benchmark $what" >&2; exit 2 ;;
esac
