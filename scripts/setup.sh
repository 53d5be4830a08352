#!/usr/bin/env bash
# Install everything hyper needs to build, run and test on Debian 12, idempotently.
# Slow steps are cached: apt runs only when a package is missing, the guest kernel and the
# busybox test image are rebuilt only when their inputs change (see scripts/build-*.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # build
  build-essential pkg-config libssl-dev bc bison flex libelf-dev cpio xz-utils patch
  # runtime: VMs, images, networking
  qemu-system-x86 busybox-static linux-source-6.1 iproute2 iptables nftables e2fsprogs erofs-utils
  # tests and baselines
  docker-registry skopeo umoci apache2-utils openssl crun podman hyperfine procps psmisc
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # policy-rc.d keeps package scripts from starting services (docker-registry) on the host.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  rm -f /usr/sbin/policy-rc.d
fi

# The guest kernel (several minutes, once per machine; cached under /var/cache/hyper/kernel).
bash scripts/build-kernel.sh

