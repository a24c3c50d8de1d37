#!/bin/sh
# Makes a small seed corpus for the qcow2_open fuzz target from qemu-img
# images (512-byte and 4 KiB clusters, compressed, with a backing name).
set -eu
out="${1:-$(dirname "$0")/corpus/qcow2_open}"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{ head -c 6000 /dev/urandom; yes kiln-block-fuzz-seed | head -c 14000; } > "$tmp/data.raw"
qemu-img create -q -f qcow2 -o cluster_size=512 "$out/empty512.qcow2" 64k
qemu-img convert -f raw -O qcow2 -o cluster_size=512 "$tmp/data.raw" "$out/data512.qcow2"
qemu-img convert -f raw -O qcow2 -o cluster_size=4096 "$tmp/data.raw" "$out/data4k.qcow2"
qemu-img convert -c -f raw -O qcow2 -o cluster_size=512 "$tmp/data.raw" "$out/zlib512.qcow2"
qemu-img convert -c -f raw -O qcow2 -o cluster_size=512,compression_type=zstd "$tmp/data.raw" "$out/zstd512.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=512,compat=0.10 "$out/v2.qcow2" 64k
qemu-img create -q -f qcow2 -u -o cluster_size=512 -b base.raw -F raw "$out/backing.qcow2" 64k
