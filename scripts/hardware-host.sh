#!/usr/bin/env bash
# Boots real operating systems through firmware on kiln-vmm, for hosts with
# hardware virtualization (VT-x/AMD-V), and waits until each is ready:
#
#   - the Debian disk image built by images/debian/build.sh
#     (scripts/build-debian-image.sh), through SeaBIOS (--firmware bios) or
#     OVMF (--firmware uefi); ready = cloud-init's final message and a login
#     prompt on the serial console;
#   - optionally a user-supplied Windows image (--windows FILE), through OVMF
#     by default; ready = the Emergency Management Services console (SAC) on
#     the serial port, or --windows-ready REGEX.
#
# Each VM runs on a throw-away qcow2 overlay (the image itself is never
# written), then is shut down through the ACPI power button.
#
#   scripts/hardware-host.sh [--dry-run] [--debian FILE] [--firmware bios|uefi]
#       [--windows FILE] [--windows-format qcow2|raw] [--windows-firmware bios|uefi]
#       [--windows-ready REGEX] [--cpus N] [--memory SIZE] [--timeout SECS]
#       [--vmm PATH] [--workdir DIR] [--keep]
#
# --dry-run checks the arguments and the images and prints, one per line,
# the kiln-vmm command each VM would run, without needing KVM.
# Windows note: Windows has no built-in virtio-blk driver. The image must
# have the virtio-win drivers (viostor for the disk, netkvm for the network)
# installed, or it stops with INACCESSIBLE_BOOT_DEVICE (stop code 0x7B).
# Enable EMS on COM1 in the image so this script sees it come up:
#   bcdedit /ems {current} on
#   bcdedit /emssettings EMSPORT:1 EMSBAUDRATE:115200
#
# This cannot run on hosts whose KVM is itself nested through PVM
# (/sys/module/kvm_pvm, as on Kiln's development machines): guest kernels
# stop there at instructions KVM's emulator lacks (see testbed.md).
# kilnd will take over starting these VMs (issue #5); until then the script
# runs kiln-vmm directly.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${KILN_CACHE:-$root/cache}

# Paths the KVM check looks at (overridable so that the refusal is testable).
kvm_dev=${KILN_KVM_DEVICE:-/dev/kvm}
pvm_module=${KILN_PVM_MODULE:-/sys/module/kvm_pvm}

dry_run=0
debian="$cache/images/debian-12.qcow2"
debian_fw=bios
windows=
windows_format=qcow2
windows_fw=uefi
windows_ready='SAC>|Computer is booting, SAC started'
cpus=2
memory=2G
timeout=900
vmm=
workdir=
keep=0

die() { echo "hardware-host.sh: $*" >&2; exit 2; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1; shift ;;
        --debian) debian=${2:?--debian needs a file}; shift 2 ;;
        --firmware) debian_fw=${2:?--firmware needs bios or uefi}; shift 2 ;;
        --windows) windows=${2:?--windows needs a file}; shift 2 ;;
        --windows-format) windows_format=${2:?--windows-format needs qcow2 or raw}; shift 2 ;;
        --windows-firmware) windows_fw=${2:?--windows-firmware needs bios or uefi}; shift 2 ;;
        --windows-ready) windows_ready=${2:?--windows-ready needs a regex}; shift 2 ;;
        --cpus) cpus=${2:?--cpus needs a number}; shift 2 ;;
        --memory) memory=${2:?--memory needs a size}; shift 2 ;;
        --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
        --vmm) vmm=${2:?--vmm needs a path}; shift 2 ;;
        --workdir) workdir=${2:?--workdir needs a directory}; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

case "$debian_fw" in bios|uefi) ;; *) die "--firmware must be bios or uefi, not '$debian_fw'" ;; esac
case "$windows_fw" in bios|uefi) ;; *) die "--windows-firmware must be bios or uefi, not '$windows_fw'" ;; esac
case "$windows_format" in qcow2|raw) ;; *) die "--windows-format must be qcow2 or raw, not '$windows_format'" ;; esac
[[ "$cpus" =~ ^[1-9][0-9]*$ ]] || die "--cpus must be a positive number, not '$cpus'"
[[ "$memory" =~ ^[1-9][0-9]*[MGT]?$ ]] || die "--memory must be a size such as 2048M or 2G, not '$memory'"
[[ "$timeout" =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds, not '$timeout'"

# --- the host ----------------------------------------------------------------
if [ "$dry_run" = 0 ]; then
    if [ -e "$pvm_module" ]; then
        die "refusing to run: this host's KVM is nested through PVM ($pvm_module exists); guest kernels and Windows cannot boot on it (see README.md). Use a host with hardware virtualization (VT-x/AMD-V), or --dry-run."
    fi
    if [ ! -e "$kvm_dev" ]; then
        die "refusing to run: $kvm_dev is missing. This script needs hardware virtualization (VT-x/AMD-V) with the kvm_intel or kvm_amd module loaded, or use --dry-run."
    fi
fi

# --- images and firmware ----------------------------------------------------
[ -f "$debian" ] || die "no Debian image at $debian: build it with scripts/build-debian-image.sh (or give --debian FILE)"
if [ -n "$windows" ]; then
    [ -f "$windows" ] || die "no Windows image at $windows"
fi
bios="$cache/guest/bios.bin"
ovmf_code="$cache/guest/OVMF_CODE.fd"
ovmf_vars="$cache/guest/OVMF_VARS.fd"
need_fw() {
    case "$1" in
        bios) [ -f "$bios" ] || die "no SeaBIOS at $bios: run scripts/fetch-guest.sh" ;;
        uefi) [ -f "$ovmf_code" ] && [ -f "$ovmf_vars" ] \
                  || die "no OVMF at $ovmf_code / $ovmf_vars: run scripts/fetch-guest.sh" ;;
    esac
}
need_fw "$debian_fw"
[ -z "$windows" ] || need_fw "$windows_fw"

if [ -z "$vmm" ]; then
    vmm="${CARGO_TARGET_DIR:-$root/target}/release/kiln-vmm"
    if [ "$dry_run" = 0 ]; then
        echo "hardware-host.sh: building kiln-vmm (release)"
        (cd "$root" && cargo build --quiet --release -p kiln-vmm --bin kiln-vmm)
    fi
fi
vmm_help=
if [ -x "$vmm" ]; then
    vmm_help=$("$vmm" --help 2>&1 || true)
elif [ "$dry_run" = 0 ]; then
    die "kiln-vmm is not executable at $vmm"
fi
has_flag() { grep -q -- "$1" <<<"$vmm_help"; }

if [ -z "$workdir" ]; then
    if [ "$dry_run" = 1 ]; then workdir=/tmp/kiln-hw.DRYRUN; else workdir=$(mktemp -d /tmp/kiln-hw.XXXXXX); fi
fi

# --- command lines ------------------------------------------------------------
# vm_command NAME FIRMWARE DISK: sets the array `cmd` to the kiln-vmm command.
vm_command() {
    local name=$1 fw=$2 disk=$3
    cmd=("$vmm")
    case "$fw" in
        bios) cmd+=(--firmware "$bios") ;;
        uefi) cmd+=(--firmware "$ovmf_code" --firmware-vars "$workdir/$name.OVMF_VARS.fd") ;;
    esac
    cmd+=(--disk "path=$disk,format=qcow2" --cpus "$cpus" --memory "$memory"
          --serial-log "$workdir/$name.serial.log" --api-socket "$workdir/$name.api.sock")
    if [ "$name" = windows ]; then
        if has_flag --hyperv; then cmd+=(--hyperv); fi
        if has_flag --rtc-local-time; then cmd+=(--rtc-local-time); fi
    fi
}

# Prints its arguments as one shell command line, quoting only where needed.
print_command() {
    local w out=()
    for w in "$@"; do
        if [[ "$w" =~ ^[A-Za-z0-9_./=,:+@%-]+$ ]]; then out+=("$w")
        else out+=("'${w//\'/\'\\\'\'}'"); fi
    done
    echo "${out[*]}"
}

vms=(debian)
[ -z "$windows" ] || vms+=(windows)

if [ "$dry_run" = 1 ]; then
    for name in "${vms[@]}"; do
        if [ "$name" = debian ]; then vm_command debian "$debian_fw" "$workdir/debian.overlay.qcow2"
        else vm_command windows "$windows_fw" "$workdir/windows.overlay.qcow2"; fi
        print_command "${cmd[@]}"
    done
    if [ -n "$windows" ] && { ! has_flag --hyperv || ! has_flag --rtc-local-time; }; then
        echo "# note: this kiln-vmm has no --hyperv/--rtc-local-time; Windows runs without Hyper-V enlightenments and with the RTC in UTC" >&2
    fi
    exit 0
fi

# --- running ------------------------------------------------------------------
mkdir -p "$workdir"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ "$keep" = 1 ] || rm -rf "$workdir"
}
trap cleanup EXIT

# run_vm NAME FIRMWARE IMAGE FORMAT READY_REGEX...: boots NAME on an overlay
# and waits until the serial log matches every regex.
run_vm() {
    local name=$1 fw=$2 image=$3 format=$4; shift 4
    local overlay="$workdir/$name.overlay.qcow2" log="$workdir/$name.serial.log"
    qemu-img create -q -f qcow2 -F "$format" -b "$(realpath "$image")" "$overlay" || return 1
    if [ "$fw" = uefi ]; then cp "$ovmf_vars" "$workdir/$name.OVMF_VARS.fd" || return 1; fi
    vm_command "$name" "$fw" "$overlay"
    echo "hardware-host.sh: $name: $(print_command "${cmd[@]}")"
    local start=$SECONDS
    "${cmd[@]}" 2>"$workdir/$name.vmm.log" &
    local pid=$!
    pids+=("$pid")
    local re waiting=("$@")
    while :; do
        local still=()
        for re in "${waiting[@]}"; do
            grep -Eaq -- "$re" "$log" 2>/dev/null || still+=("$re")
        done
        waiting=("${still[@]+"${still[@]}"}")
        [ ${#waiting[@]} -eq 0 ] && break
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" && rc=0 || rc=$?
            echo "hardware-host.sh: $name: kiln-vmm exited with status $rc before it was ready; serial log tail:" >&2
            tail -n 30 "$log" >&2 || true
            tail -n 10 "$workdir/$name.vmm.log" >&2 || true
            return 1
        fi
        if [ $((SECONDS - start)) -ge "$timeout" ]; then
            echo "hardware-host.sh: $name: not ready after ${timeout}s (still waiting for: ${waiting[*]}); serial log tail:" >&2
            tail -n 30 "$log" >&2 || true
            return 1
        fi
        sleep 1
    done
    echo "hardware-host.sh: $name: ready after $((SECONDS - start)) s"
    # Graceful shutdown through the ACPI power button, then a hard stop.
    curl -s --unix-socket "$workdir/$name.api.sock" -X PUT http://vm/v1/vm/power-button >/dev/null || true
    local i
    for i in $(seq 120); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "hardware-host.sh: $name: no power-off 120 s after the power button; killing it"
        curl -s --unix-socket "$workdir/$name.api.sock" -X PUT http://vm/v1/vm/kill >/dev/null || kill "$pid" || true
    fi
    wait "$pid" && rc=0 || rc=$?
    echo "hardware-host.sh: $name: kiln-vmm exited with status $rc after $((SECONDS - start)) s"
}

failed=0
run_vm debian "$debian_fw" "$debian" qcow2 'Cloud-init v\. .* finished at' 'login:' || failed=1
if [ -n "$windows" ]; then
    echo "hardware-host.sh: windows: the image needs the virtio-win drivers (viostor) and EMS on COM1 (see --help)"
    run_vm windows "$windows_fw" "$windows" "$windows_format" "$windows_ready" || failed=1
fi
[ "$failed" = 0 ] && echo "hardware-host.sh: all VMs became ready" || echo "hardware-host.sh: some VMs failed" >&2
exit $failed
