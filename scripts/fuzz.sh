#!/usr/bin/env bash
# Fuzz the parsers and decoders that take untrusted input (cargo-fuzz, nightly toolchain).
# Usage: scripts/fuzz.sh [SECONDS-PER-TARGET] [TARGET...]   (default 60 s, every target)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
secs=${1:-60}; shift || true
targets=${*:-podfile agent_frames session_frames image_metadata layer_unpack passwd}
for t in $targets; do
  echo "== $t ($secs s)"
  cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | grep -E '^Done|ERROR|panicked' || true
done
