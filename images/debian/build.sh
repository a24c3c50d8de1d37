#!/usr/bin/env bash
# Builds a Debian 12 (bookworm) disk image that boots through firmware, both
# BIOS (SeaBIOS) and UEFI (OVMF), with cloud-init, as a qcow2 file.
#
#   images/debian/build.sh [--output FILE] [--size 3G] [--suite bookworm]
#                          [--mirror URL] [--root-password PASS] [--compress]
#                          [--force]
#
# Default output: $KILN_CACHE/images/debian-12.qcow2, KILN_CACHE being
# <repo>/cache (git-ignored) unless set. If the
# output already exists the script does nothing (idempotent); --force
# rebuilds it. Needs root, loop devices with partition scanning (no
# device-mapper is used) and a reachable Debian mirror. Installs the host
# packages it needs with apt-get.
#
# The disk (GPT):
#   1  1 MiB    BIOS boot partition: GRUB's core.img for BIOS boot
#   2  127 MiB  EFI system partition (FAT32): GRUB as EFI/BOOT/BOOTX64.EFI
#               (the removable-media path: no NVRAM boot entry needed)
#   3  rest     root, ext4
# GRUB and the kernel use the serial port ttyS0 (115200 8n1) as well as the
# screen; a getty runs on ttyS0. cloud-init looks for a NoCloud seed (a
# config drive labelled "cidata", or `ds=nocloud` on the kernel command
# line) and otherwise runs with no data. The root account is locked unless
# --root-password is given.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root_dir=$(cd "$here/../.." && pwd)

cache=${KILN_CACHE:-$root_dir/cache}
output="$cache/images/debian-12.qcow2"
size=3G
suite=bookworm
mirror=http://deb.debian.org/debian
root_password=
compress=0
force=0

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
die() { echo "build.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --output) output=${2:?--output needs a file}; shift 2 ;;
        --size) size=${2:?--size needs a size}; shift 2 ;;
        --suite) suite=${2:?--suite needs a name}; shift 2 ;;
        --mirror) mirror=${2:?--mirror needs a URL}; shift 2 ;;
        --root-password) root_password=${2:?--root-password needs a value}; shift 2 ;;
        --compress) compress=1; shift ;;
        --force) force=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

if [ -e "$output" ] && [ "$force" = 0 ]; then
    echo "build.sh: $output exists (use --force to rebuild)"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root (loop devices, mounts, chroot)"
[ -e /dev/loop-control ] || die "no loop devices on this host (/dev/loop-control is missing)"

# --- host packages ---------------------------------------------------------
host_pkgs=(debootstrap fdisk dosfstools mtools e2fsprogs qemu-utils util-linux mount)
missing=()
for p in "${host_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "build.sh: installing host packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- work area and cleanup -------------------------------------------------
out_dir=$(dirname "$output")
mkdir -p "$out_dir"
work="$out_dir/.build-$(basename "$output")"
raw="$work/disk.raw"
mnt="$work/root"
loop=

# Unmounts everything under $mnt (deepest first) and detaches every loop
# device backed by $raw: after a failure, and left over from a killed run.
cleanup() {
    local m
    if [ -d "$mnt" ]; then
        for m in $(findmnt -rn -o TARGET | grep -F "$mnt" | sort -r); do
            umount "$m" 2>/dev/null || umount -l "$m" || true
        done
    fi
    if [ -e "$raw" ]; then
        for l in $(losetup -j "$raw" -O NAME -n 2>/dev/null); do
            partx -d "$l" 2>/dev/null || true
            losetup -d "$l" || true
        done
    fi
}
# True if nothing is mounted under $mnt any more (so rm -rf is safe).
unmounted() { ! findmnt -rn -o TARGET | grep -qF "$mnt"; }
on_exit() {
    local rc=$?
    cleanup
    if [ $rc -ne 0 ]; then
        rm -f "$raw" "$work/disk.qcow2"
        unmounted && rm -rf "$mnt"
        echo "build.sh: failed (status $rc); logs kept in $work" >&2
    fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

cleanup
unmounted || die "could not unmount the previous build under $mnt"
rm -rf "$work"
mkdir -p "$mnt"
debs="$cache/debs/debootstrap-$suite"
mkdir -p "$debs"

t0=$(date +%s)
step() { printf 'build.sh: [%4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

# --- partitions and file systems -------------------------------------------
step "partitioning a $size raw disk"
truncate -s "$size" "$raw"
sfdisk --quiet --label gpt "$raw" <<PARTS
size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name="bios"
size=127MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="esp"
type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"
PARTS
loop=$(losetup --find --show --partscan "$raw")
# Some kernels (these machines' among them) set the partscan flag but do not
# scan; partx asks for the partitions explicitly.
for _ in $(seq 20); do [ -b "${loop}p3" ] && break; sleep 0.1; done
[ -b "${loop}p3" ] || partx -a "$loop" 2>/dev/null || true
for _ in $(seq 50); do [ -b "${loop}p3" ] && break; sleep 0.1; done
[ -b "${loop}p3" ] || die "no partition device ${loop}p3 (losetup --partscan, partx -a)"

mkfs.vfat -F 32 -n ESP "${loop}p2" >/dev/null
mkfs.ext4 -q -L root "${loop}p3"
root_uuid=$(blkid -s UUID -o value "${loop}p3")
esp_uuid=$(blkid -s UUID -o value "${loop}p2")
mount "${loop}p3" "$mnt"

# --- root file system ------------------------------------------------------
step "debootstrap $suite (minbase) from $mirror"
debootstrap --variant=minbase --cache-dir="$debs" "$suite" "$mnt" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

mkdir -p "$mnt/boot/efi"
mount -t proc proc "$mnt/proc"
mount -t sysfs sysfs "$mnt/sys"
# The chroot's own /dev (the host's is never written): the usual nodes, the
# loop device and its partitions, and the by-uuid link that grub-mkconfig
# needs to put root=UUID=... on the kernel command line (no udev here).
mount -t tmpfs -o mode=755 devtmp "$mnt/dev"
mknod -m 666 "$mnt/dev/null" c 1 3
mknod -m 666 "$mnt/dev/zero" c 1 5
mknod -m 666 "$mnt/dev/full" c 1 7
mknod -m 666 "$mnt/dev/random" c 1 8
mknod -m 666 "$mnt/dev/urandom" c 1 9
mknod -m 666 "$mnt/dev/tty" c 5 0
mkdir -p "$mnt/dev/pts" "$mnt/dev/shm" "$mnt/dev/disk/by-uuid"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$mnt/dev/pts"
ln -s pts/ptmx "$mnt/dev/ptmx"
ln -s /proc/self/fd "$mnt/dev/fd"
ln -s /proc/self/fd/0 "$mnt/dev/stdin"
ln -s /proc/self/fd/1 "$mnt/dev/stdout"
ln -s /proc/self/fd/2 "$mnt/dev/stderr"
for b in "$loop" "${loop}p1" "${loop}p2" "${loop}p3"; do
    n=$(basename "$b")
    IFS=: read -r major minor <"/sys/class/block/$n/dev"
    mknod -m 660 "$mnt/dev/$n" b "$major" "$minor"
done
ln -s "../../$(basename "$loop")p3" "$mnt/dev/disk/by-uuid/$root_uuid"
ln -s "../../$(basename "$loop")p2" "$mnt/dev/disk/by-uuid/$esp_uuid"
mount -t tmpfs tmpfs "$mnt/run"

in_root() { chroot "$mnt" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }

# No services start inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' >"$mnt/usr/sbin/policy-rc.d"
chmod 755 "$mnt/usr/sbin/policy-rc.d"

cat >"$mnt/etc/apt/sources.list" <<SRC
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
SRC
cat >"$mnt/etc/fstab" <<FSTAB
UUID=$root_uuid  /          ext4  errors=remount-ro  0  1
UUID=$esp_uuid   /boot/efi  vfat  umask=0077,nofail  0  2
FSTAB
echo debian >"$mnt/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$mnt/etc/hosts"

# GRUB settings first, so that the kernel's postinst hooks already see them.
mkdir -p "$mnt/etc/default/grub.d"
cp "$here/grub.cfg" "$mnt/etc/default/grub.d/50-kiln.cfg"

step "installing the kernel, GRUB, systemd and cloud-init"
# Downloaded packages are kept on the host for the next build.
mkdir -p "$debs/apt"
mount --bind "$debs/apt" "$mnt/var/cache/apt/archives"
in_root apt-get update -qq >>"$work/apt.log" 2>&1
in_root apt-get install -y -qq --no-install-recommends \
    linux-image-amd64 initramfs-tools systemd-sysv udev kmod dbus \
    grub2-common grub-pc-bin grub-efi-amd64-bin \
    cloud-init cloud-guest-utils ifupdown isc-dhcp-client iproute2 netbase \
    openssh-server sudo less procps >>"$work/apt.log" 2>&1 \
    || { tail -30 "$work/apt.log" >&2; die "installing packages in the image failed (log above)"; }

# cloud-init: NoCloud (a "cidata" drive or ds=nocloud), else no datasource.
cp "$here/cloud.cfg" "$mnt/etc/cloud/cloud.cfg.d/90_kiln.cfg"

if [ -n "$root_password" ]; then
    echo "root:$root_password" | in_root chpasswd
else
    in_root passwd -l root >/dev/null
fi

step "installing GRUB for BIOS (i386-pc) and UEFI (x86_64-efi, removable path)"
in_root grub-install --target=i386-pc --recheck "$loop" >>"$work/grub.log" 2>&1 \
    || { cat "$work/grub.log" >&2; die "grub-install i386-pc failed"; }
# UEFI: the host kernel may have no vfat (these machines' has none), so the
# ESP is never mounted here. GRUB's EFI image is made as grub-install would
# (an embedded config that finds the root file system by UUID, modules
# under /boot/grub/x86_64-efi) and copied onto the FAT with mtools.
mkdir -p "$mnt/boot/grub"
rm -rf "$mnt/boot/grub/x86_64-efi"
cp -r "$mnt/usr/lib/grub/x86_64-efi" "$mnt/boot/grub/x86_64-efi"
rm -f "$mnt"/boot/grub/x86_64-efi/*.efi "$mnt"/boot/grub/x86_64-efi/*.img
cat >"$mnt/boot/grub/x86_64-efi/load.cfg" <<LOADCFG
search.fs_uuid $root_uuid root
set prefix=(\$root)/boot/grub
LOADCFG
in_root grub-mkimage -O x86_64-efi -o /boot/grub/x86_64-efi/core.efi \
    -c /boot/grub/x86_64-efi/load.cfg -p /boot/grub \
    part_gpt part_msdos fat ext2 search_fs_uuid normal configfile echo test \
    linux gzio serial terminal efi_gop efi_uga all_video >>"$work/grub.log" 2>&1 \
    || { cat "$work/grub.log" >&2; die "grub-mkimage x86_64-efi failed"; }
export MTOOLS_SKIP_CHECK=1
{ mmd -i "${loop}p2" ::/EFI ::/EFI/BOOT \
    && mcopy -i "${loop}p2" "$mnt/boot/grub/x86_64-efi/core.efi" ::/EFI/BOOT/BOOTX64.EFI; } >>"$work/grub.log" 2>&1 \
    || { cat "$work/grub.log" >&2; die "copying GRUB onto the ESP (mtools) failed"; }
in_root grub-mkconfig -o /boot/grub/grub.cfg >>"$work/grub.log" 2>&1 \
    || { cat "$work/grub.log" >&2; die "grub-mkconfig failed"; }
grep -q "root=UUID=$root_uuid" "$mnt/boot/grub/grub.cfg" \
    || { grep -m3 'linux\s*/boot' "$mnt/boot/grub/grub.cfg" >&2
         die "grub.cfg does not boot root=UUID=$root_uuid (its linux lines above)"; }
mdir -i "${loop}p2" -b ::/EFI/BOOT 2>/dev/null | grep -q 'BOOTX64.EFI' || die "no EFI/BOOT/BOOTX64.EFI on the ESP"

# --- tidy up and convert ---------------------------------------------------
step "cleaning the image"
umount "$mnt/var/cache/apt/archives"
in_root apt-get clean
rm -f "$mnt/usr/sbin/policy-rc.d"
rm -f "$mnt"/etc/ssh/ssh_host_*     # made at first boot (cloud-init / sshd)
: >"$mnt/etc/machine-id"            # systemd makes a new one at first boot
rm -f "$mnt/var/lib/dbus/machine-id"
rm -rf "$mnt"/var/lib/apt/lists/* "$mnt"/tmp/* "$mnt"/var/log/*.log
fstrim "$mnt" >/dev/null 2>&1 || true

cleanup
loop=

step "converting to qcow2"
convert_args=(convert -O qcow2)
[ "$compress" = 1 ] && convert_args+=(-c)
qemu-img "${convert_args[@]}" "$raw" "$work/disk.qcow2"
qemu-img check -q "$work/disk.qcow2"
mv -f "$work/disk.qcow2" "$output"
rm -rf "$work"
step "done: $output ($(du -h "$output" | cut -f1) on disk, $size virtual)"
