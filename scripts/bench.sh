#!/usr/bin/env bash
# Every benchmark Kiln has, in one command: builds the benchmark binaries in
# release mode, then runs each program in benches/src/bin (NAME.rs or
# NAME/main.rs) with quick settings (or its own defaults with --full) and
# prints its output. Each benchmark runs its peer (QEMU, qemu-img, fio,
# a direct tap, dnsmasq, nginx; openstack_bench the `openstack` CLI beside
# `kiln`) in the same run and prints ratios.
#
# Usage: scripts/bench.sh [--full] [NAME...]   (NAME: e.g. virtio_blk_bench)
# Needs root, /dev/kvm, /dev/net/tun, fio, qemu-img, qemu-system-x86_64, dnsmasq
# (scripts/setup.sh installs them). Exits non-zero if any benchmark fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

full=0
names=()
for a in "$@"; do
    case "$a" in
        --full) full=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) names+=("$a") ;;
    esac
done
if [ ${#names[@]} -eq 0 ]; then
    for f in benches/src/bin/*.rs benches/src/bin/*/main.rs; do
        [ -e "$f" ] || continue
        case "$f" in
            */main.rs) names+=("$(basename "$(dirname "$f")")") ;;
            *) names+=("$(basename "$f" .rs)") ;;
        esac
    done
fi

# Quick settings per benchmark (unknown ones run with their defaults).
quick_args() {
    case "$1" in
        boot_bench) echo "--runs 5" ;;
        qcow2_bench) echo "--size-mib 256 --scale 0.25 --reps 1" ;;
        virtio_blk_bench) echo "--size-mib 256 --seconds 1 --rounds 3" ;;
        virtio_net_bench) echo "--seconds 1 --rounds 3" ;;
        kilnd_bench) echo "--quick" ;;
        dhcp_bench) echo "--quick" ;;
        display_bench) echo "--rounds 3" ;;
        metadata_bench) echo "--quick" ;;
        openstack_bench) echo "--quick" ;;
        *) echo "" ;;
    esac
}

printf '== build (release)\n'
cargo build --release --quiet -p kiln-benches --bins
cargo build --release --quiet -p kiln-vmm --bin kiln-vmm
cargo build --release --quiet -p kiln-manager --bin kilnd --bin kiln
target=${CARGO_TARGET_DIR:-$root/target}

failed=()
for n in "${names[@]}"; do
    bin="$target/release/$n"
    if [ ! -x "$bin" ]; then
        printf '\n== %s: no such benchmark binary (%s)\n' "$n" "$bin"
        failed+=("$n")
        continue
    fi
    args=""
    [ "$full" = 1 ] || args=$(quick_args "$n")
    printf '\n== %s %s\n' "$n" "$args"
    # shellcheck disable=SC2086 # args are words on purpose
    if ! "$bin" $args; then
        failed+=("$n")
    fi
done

if [ ${#failed[@]} -ne 0 ]; then
    printf '\nbench.sh: failed: %s\n' "${failed[*]}"
    exit 1
fi
printf '\nbench.sh: all %d benchmarks ran\n' "${#names[@]}"
