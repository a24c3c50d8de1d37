#!/usr/bin/env bash
# What CI on a new machine will see: clean this machine of what earlier Kiln
# runs left, then run the README's test command (`scripts/test.sh`, which
# `.ci/run` runs) in a fresh clone of this repository's HEAD with a fresh
# CARGO_TARGET_DIR. Run as root before submitting.
#
#   scripts/ci-fresh.sh [--packages] [--keep]
#
# Cleaned (a new machine has none of these):
#   - kilnd and kiln-vmm processes, and network namespaces made by tests
#     (`kiln-*`);
#   - kilnd's nftables tables (`kiln_*`) and the default network's bridge
#     (`kilnbr0`);
#   - in the host namespace: taps marked by a kilnd (alias `kiln:...`) or
#     named `kt...`, and the bridges of networks kilnd manages in
#     /var/lib/kiln;
#   - the `kiln` group, /var/lib/kiln, /run/kiln, kilnd's group lock;
#   - the clone's cache (guest material, probes, the schemathesis and vncdotool venv,
#     noVNC) and
#     target dir, which start empty.
# With --packages, also the Debian packages scripts/setup.sh installs that
# a new machine of this kind lacks (it comes with qemu-utils 10.0 from
# backports: setup.sh installs qemu-utils 7.2 beside qemu-system-x86, and
# that one stays). --keep keeps the clone and its target dir afterwards.
# Cargo's download cache (~/.cargo/registry) is kept: CI fetches crates by
# name as this does.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
packages=0 keep=0
for a in "$@"; do
    case $a in
        --packages) packages=1 ;;
        --keep) keep=1 ;;
        *) echo "usage: $0 [--packages] [--keep]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "ci-fresh.sh: run as root (the tests need it)" >&2; exit 2; }

say() { printf '== %s\n' "$*"; }

say "stopping kilnd and kiln-vmm"
pkill -x kilnd 2>/dev/null || true
pkill -x kiln-vmm 2>/dev/null || true
sleep 1
pkill -9 -x kilnd 2>/dev/null || true
pkill -9 -x kiln-vmm 2>/dev/null || true

say "network namespaces made by tests"
for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^kiln-/ {print $1}'); do
    ip netns delete "$ns" && echo "  deleted netns $ns"
done

say "Kiln's links in the host namespace"
# Bridges of managed networks, read from kilnd's store before it goes.
db=/var/lib/kiln/kiln.db
if [ -f "$db" ]; then
    for br in $(/usr/bin/python3 - "$db" <<'PY' 2>/dev/null || true
import sqlite3, sys
for (b,) in sqlite3.connect(sys.argv[1]).execute("SELECT bridge FROM networks WHERE managed = 1"):
    print(b)
PY
    ); do
        ip link delete "$br" 2>/dev/null && echo "  deleted bridge $br"
    done
fi
ip -o link show | while read -r _ name rest; do
    name=${name%:}; name=${name%@*}
    alias=$(ip -o link show dev "$name" 2>/dev/null | grep -o 'alias kiln:[^ ]*' || true)
    if [[ $name == kt* || -n $alias ]]; then
        ip link delete "$name" 2>/dev/null && echo "  deleted $name"
    fi
done

# The default network's bridge, left by a kilnd whose store is gone.
if ip -d link show dev kilnbr0 2>/dev/null | grep -qw bridge; then
    ip link delete kilnbr0 && echo "  deleted bridge kilnbr0"
fi

say "kilnd's nftables tables (kiln_*, families inet and bridge)"
if command -v nft >/dev/null; then
    nft list tables 2>/dev/null | while read -r _ family name; do
        if [[ $name == kiln_* ]]; then
            nft delete table "$family" "$name" && echo "  deleted table $family $name"
        fi
    done
fi

say "group, state and runtime directories"
if getent group kiln >/dev/null; then groupdel kiln && echo "  deleted group kiln"; fi
rm -rf /var/lib/kiln /run/kiln /run/lock/kiln-groupadd.lock

if [ "$packages" = 1 ]; then
    say "packages setup.sh installs that a new machine lacks"
    export DEBIAN_FRONTEND=noninteractive
    apt-get purge -y -qq cpio socat fio acpica-tools dmidecode qemu-system-x86 \
        lvm2 thin-provisioning-tools genisoimage cloud-init nftables \
        swtpm swtpm-tools tpm2-tools udhcpc dnsmasq-base chromium npm >/dev/null || true
    apt-get autoremove -y -qq --purge >/dev/null || true
fi

work=$(mktemp -d /tmp/kiln-ci-fresh.XXXXXX)
log=/tmp/kiln-ci-fresh.log
say "fresh clone of HEAD ($(git -C "$root" rev-parse --short HEAD)) in $work"
git clone -q "$root" "$work/kiln"
cleanup() { [ "$keep" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT

say "the README's test command (.ci/run), fresh CARGO_TARGET_DIR"
start=$(date +%s)
set +e
(cd "$work/kiln" && env -u KILN_CACHE CARGO_TARGET_DIR="$work/kiln/target" CI=true bash .ci/run) \
    </dev/null 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
end=$(date +%s)
say ".ci/run exited $rc after $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s (log: $log)"
exit "$rc"
