#!/usr/bin/env bash
# Build the guest kernel from Debian's linux-source-6.1 with guest/patches/*.patch applied and
# guest/kernel.config merged over tinyconfig.
# Outputs: vmlinux (uncompressed ELF, stripped: what the qemu driver boots, through its PVH entry point, with
# no decompression, which under TCG takes as long as the rest of the boot) and vmlinuz (the same kernel as
# a bzImage, for boot loaders that want one).
# Cached: rebuilt only when the config fragment, the patches or the source tarball change.
# Usage: scripts/build-kernel.sh [OUTDIR]   (default: /var/cache/hyper/kernel)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-/var/cache/hyper/kernel}
src_tar=/usr/src/linux-source-6.1.tar.xz
frag=$here/guest/kernel.config
patches=$(ls "$here"/guest/patches/*.patch 2>/dev/null || true)
patches_key=$(cat /dev/null $patches | sha256sum | cut -c1-16)
[ -f "$src_tar" ] || { echo "build-kernel: $src_tar missing (run scripts/setup.sh)" >&2; exit 1; }
key=$( (sha256sum < "$frag"; echo "$patches_key"; stat -c '%s %Y' "$src_tar") | sha256sum | cut -c1-16)
if [ -f "$out/vmlinuz" ] && [ -f "$out/vmlinux" ] && [ "$(cat "$out/key" 2>/dev/null)" = "$key" ]; then
  exit 0
fi
mkdir -p "$out"
work=$out/build
# A tree patched differently (or not at all) is unpacked afresh.
if [ ! -d "$work/linux-source-6.1" ] || [ "$(cat "$work/patches" 2>/dev/null)" != "$patches_key" ]; then
  rm -rf "$work"; mkdir -p "$work"
  echo "build-kernel: unpacking $src_tar"
  tar -C "$work" -xf "$src_tar"
  for p in $patches; do patch -d "$work/linux-source-6.1" -p1 -s < "$p"; done
  echo "$patches_key" > "$work/patches"
fi
cd "$work/linux-source-6.1"
make -s tinyconfig
scripts/kconfig/merge_config.sh -m .config "$frag" >/dev/null
make -s olddefconfig
# Every line of the fragment that asks for =y must have survived olddefconfig, or the guest lacks a feature.
missing=$(grep -E '^CONFIG_[A-Z0-9_]+=y' "$frag" | while read -r l; do grep -qx "$l" .config || echo "$l"; done)
if [ -n "$missing" ]; then echo "build-kernel: options dropped by kconfig:" $missing >&2; fi
echo "build-kernel: building ($(nproc) jobs), this takes several minutes once per machine"
nice make -s -j"$(nproc)" bzImage
cp arch/x86/boot/bzImage "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"
objcopy --strip-all vmlinux "$out/vmlinux.tmp" && mv "$out/vmlinux.tmp" "$out/vmlinux"
cp .config "$out/config"
echo "$key" > "$out/key"
echo "build-kernel: $out/vmlinux ($(stat -c %s "$out/vmlinux") bytes), $out/vmlinuz ($(stat -c %s "$out/vmlinuz") bytes)"

