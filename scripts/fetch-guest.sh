#!/usr/bin/env bash
# Fetch guest material from Debian packages, by name, into the git-ignored cache.
#   cache/debs/<pkg>/      the extracted package (dpkg -x; qemu-guest-agent's
#                          usr/sbin/qemu-ga for the guest agent tests)
#   cache/guest/vmlinuz    the stock Debian kernel (bzImage)
#   cache/guest/vmlinux    the same kernel decompressed (ELF, with its PVH note)
#   cache/guest/initramfs.cpio.gz  busybox-static + images/linux/init
#   cache/guest/bios.bin   SeaBIOS (bios-256k.bin: with TPM support; vgabios-stdvga.bin: its VGA BIOS), cache/guest/OVMF_CODE.fd / OVMF_VARS.fd
# Idempotent: a package already extracted is not downloaded again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${KILN_CACHE:-$root/cache}
mkdir -p "$cache/debs" "$cache/guest"

apt_ready() {
    # apt-get download needs package lists; update them once per cache.
    if [ ! -e "$cache/.apt-updated" ]; then
        apt-get update -qq
        touch "$cache/.apt-updated"
    fi
}

# fetch_deb NAME: download and extract a Debian package (resolving a
# metapackage such as linux-image-amd64 to the package it depends on).
fetch_deb() {
    local name=$1 real
    if [ -d "$cache/debs/$name" ]; then return; fi
    apt_ready
    real=$name
    case $name in
        linux-image-amd64)
            real=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
            ;;
    esac
    local tmp
    tmp=$(mktemp -d)
    chmod 755 "$tmp"
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$real")
    dpkg -x "$tmp"/*.deb "$cache/debs/$name.partial"
    rm -rf "$tmp"
    mv "$cache/debs/$name.partial" "$cache/debs/$name"
    echo "fetched $real"
}

fetch_deb linux-image-amd64
fetch_deb busybox-static
fetch_deb seabios
fetch_deb ovmf
# nginx: the metadata benchmark's peer (benches/), run from the cache with
# its own config, so no nginx service is installed on the host.
fetch_deb nginx
# qemu-guest-agent: the real qemu-ga answers kilnd's guest agent client in
# manager/tests/agent.rs, run from the cache on a socket in the test's
# temp dir (installing the package would add a service; its libraries come
# with qemu-system-x86).
fetch_deb qemu-guest-agent

g=$cache/guest
if [ ! -e "$g/vmlinuz" ]; then
    cp "$(ls "$cache"/debs/linux-image-amd64/boot/vmlinuz-* | head -n1)" "$g/vmlinuz"
fi
if [ ! -e "$g/vmlinux" ]; then
    # The bzImage carries an XZ stream; decompressing it here spares the guest
    # its slow in-guest decompressor (testbed.md). xz ends with a complaint
    # about the trailing bytes after the stream, which is expected.
    off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$g/vmlinuz" | head -n1 | cut -d: -f1)
    tail -c +"$((off + 1))" "$g/vmlinuz" | xz -dc > "$g/vmlinux.partial" 2>/dev/null || true
    head -c 4 "$g/vmlinux.partial" | grep -q $'\x7fELF' || { echo "vmlinux extraction failed" >&2; exit 1; }
    mv "$g/vmlinux.partial" "$g/vmlinux"
fi
cp -f "$cache/debs/seabios/usr/share/seabios/bios.bin" "$g/bios.bin"
# The 256 KiB build is the one with TPM support (tcgbios): the TPM tests.
cp -f "$cache/debs/seabios/usr/share/seabios/bios-256k.bin" "$g/bios-256k.bin"
# SeaBIOS's VGA BIOS for the standard VGA: kiln-vmm finds it beside bios.bin.
cp -f "$cache/debs/seabios/usr/share/seabios/vgabios-stdvga.bin" "$g/vgabios-stdvga.bin"
cp -f "$cache/debs/ovmf/usr/share/OVMF/OVMF_CODE.fd" "$g/OVMF_CODE.fd" 2>/dev/null || true
cp -f "$cache/debs/ovmf/usr/share/OVMF/OVMF_VARS.fd" "$g/OVMF_VARS.fd" 2>/dev/null || true
# Secure Boot servers: the 4 MiB build (enforces Secure Boot without SMM)
# and its empty variable store, which setup.sh enrolls keys into.
cp -f "$cache/debs/ovmf/usr/share/OVMF/OVMF_CODE_4M.fd" "$g/OVMF_CODE_4M.fd"
cp -f "$cache/debs/ovmf/usr/share/OVMF/OVMF_VARS_4M.fd" "$g/OVMF_VARS_4M.fd"

# The minimal Linux guest's initramfs: busybox-static and our /init.
if [ ! -e "$g/initramfs.cpio.gz" ] || [ "$root/images/linux/init" -nt "$g/initramfs.cpio.gz" ]; then
    ir=$(mktemp -d)
    mkdir -p "$ir"/{bin,sbin,dev,proc,sys,tmp,etc,root}
    cp "$cache/debs/busybox-static/bin/busybox" "$ir/bin/busybox"
    install -m 0755 "$root/images/linux/init" "$ir/init"
    (cd "$ir" && find . | cpio -o -H newc --quiet | gzip -9) > "$g/initramfs.cpio.gz"
    rm -rf "$ir"
fi
echo "guest material in $g"
