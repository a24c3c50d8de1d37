#!/usr/bin/env bash
# Install what building, running and testing Kiln needs on a fresh Debian 12
# machine (as root), then fetch guest material and build. Idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

need_pkgs=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in binutils cpio xz-utils iproute2 procps util-linux socat fio python3 python3-venv acpica-tools curl dmidecode openssh-client cloud-init; do have "$p" || need_pkgs+=("$p"); done
if ! have qemu-system-x86; then need_pkgs+=(qemu-system-x86); fi
# kilnd's firewall (`nft -j`, manager/src/net/nft.rs) and its tests.
have nftables || need_pkgs+=(nftables)
# DHCP: busybox's udhcpc is the client in manager/tests/dhcp.rs, dnsmasq the
# peer in benches/src/bin/dhcp_bench.rs.
for p in udhcpc dnsmasq-base; do have "$p" || need_pkgs+=("$p"); done
# The lvm disk backend and its test (manager/tests/lvm.rs).
for p in lvm2 thin-provisioning-tools; do have "$p" || need_pkgs+=("$p"); done
# Config drives: genisoimage builds them as Nova does; its isoinfo and
# cloud-init's own config-drive reader check them in the tests
# (manager/src/config_drive/).
for p in genisoimage cloud-init; do have "$p" || need_pkgs+=("$p"); done
# The TPM 2.0 device's backend and its tests: swtpm (as libvirt runs it),
# swtpm_setup for EK certificates, tpm2-tools to read PCRs afterwards.
for p in swtpm swtpm-tools tpm2-tools; do have "$p" || need_pkgs+=("$p"); done
# The browser console's test (manager/tests/remote_console.rs): Debian's
# chromium, headless; npm fetches noVNC for it (below).
have chromium || need_pkgs+=(chromium)
command -v npm >/dev/null || need_pkgs+=(npm)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # qemu-system-x86 (7.2, the benchmark peer) needs qemu-utils of the same
    # version; a machine that came with a newer qemu-utils from backports
    # gets the matching one, so qemu-img is always there (testbed.md).
    extra=()
    if [[ " ${need_pkgs[*]} " == *" qemu-system-x86 "* ]]; then
        v=$(apt-cache madison qemu-system-x86 | awk 'NR==1 {print $3}')
        extra=(--allow-downgrades "qemu-utils=$v")
    fi
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" "${extra[@]}" >/dev/null
fi
"$root/scripts/fetch-guest.sh"

# schemathesis (PyPI) fuzzes kilnd's API from its OpenAPI document in the
# tests; vncdotool (PyPI) is the real VNC client of tests/tests/vnc.rs.
# Both live in a virtualenv in the git-ignored cache.
# virt-firmware (PyPI, Red Hat's; Debian 12 has no package of it) enrolls
# Secure Boot keys into an OVMF variable store.
venv=$root/cache/venv
if [ ! -x "$venv/bin/st" ] || [ ! -x "$venv/bin/vncdo" ] || [ ! -x "$venv/bin/virt-fw-vars" ]; then
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis vncdotool \
        virt-firmware==26.10
fi

# Secure Boot servers' variable store template: Debian's empty 4 MiB store
# with Red Hat's PK and Microsoft's 2011 and 2023 KEK and db certificates
# enrolled and Secure Boot on (Debian's OVMF_VARS_4M.ms.fd has only the
# 2011 ones, which Microsoft's boot media stop using in 2026).
sb_vars=$root/cache/guest/OVMF_VARS_4M.ms2023.fd
if [ ! -e "$sb_vars" ]; then
    "$venv/bin/virt-fw-vars" --loglevel warning -i "$root/cache/guest/OVMF_VARS_4M.fd" \
        -o "$sb_vars.partial" --enroll-redhat --microsoft-kek all --microsoft-db all --sb
    mv "$sb_vars.partial" "$sb_vars"
fi

# The real `openstack` CLI (python-openstackclient, pinned with the SDK it
# drives, and osc-placement, its `resource provider` commands) for
# manager/tests/openstack_*.rs, in a virtualenv of its own so that its pins
# and schemathesis's never meet.
osc_venv=$root/cache/venv-openstack
osc_pins=(python-openstackclient==10.5.0 openstacksdk==4.22.0 keystoneauth1==5.18.1
    osc-placement==4.9.1)
if ! "$osc_venv/bin/pip" freeze 2>/dev/null | grep -qx 'python-openstackclient==10.5.0' ||
    ! "$osc_venv/bin/pip" freeze 2>/dev/null | grep -qx 'osc-placement==4.9.1'; then
    [ -x "$osc_venv/bin/pip" ] || python3 -m venv "$osc_venv"
    "$osc_venv/bin/pip" install --quiet --disable-pip-version-check "${osc_pins[@]}"
fi

# noVNC (the npm package @novnc/novnc: its core/ and vendor/ modules), the
# browser console's client, unpacked into the git-ignored cache; the tests'
# kilnd serves it from there ([console] novnc_dir).
novnc_version=1.7.0
novnc=$root/cache/novnc
if ! grep -qs "\"version\": \"$novnc_version\"" "$novnc/package.json"; then
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "@novnc/novnc@$novnc_version" >/dev/null)
    rm -rf "$novnc" && mkdir -p "$novnc"
    tar xzf "$tmp"/novnc-novnc-"$novnc_version".tgz -C "$novnc" --strip-components=1
    rm -rf "$tmp"
fi
