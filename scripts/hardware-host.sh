#!/usr/bin/env bash
# Boots real operating systems through firmware on Kiln, for hosts with
# hardware virtualization (VT-x/AMD-V), through kilnd as a user would, and
# prints how long each took to become ready:
#
#   - the Debian disk image built by images/debian/build.sh
#     (scripts/build-debian-image.sh), registered with `--firmware bios`
#     and again with `--firmware uefi` (--firmware picks one); ready = a
#     login prompt on the serial console (--debian-ready REGEX);
#   - optionally a user-supplied Windows image (--windows FILE or
#     KILN_WINDOWS_IMAGE), through OVMF by default; ready = the Emergency
#     Management Services console (SAC) on the serial port, the first thing
#     Windows prints there once its kernel is up (--windows-ready REGEX);
#   - optionally an unattended install of Windows 11 or Server 2025 from
#     its ISO (--windows-iso FILE with --virtio-win FILE, the virtio-win
#     driver ISO): TPM 2.0, Secure Boot, AHCI, the answer file and the
#     guest agent through kilnd, each step timed (scripts/hw/windows-install.sh
#     says how; --print-answer-file shows the answer file).
#
# Every server has the VGA display: once ready, its screen is saved through
# its VNC socket (vncdotool from cache/venv, scripts/setup.sh) as a PNG in
# --shots DIR (default target/hardware-host).
#
# The script starts its own kilnd (a temporary state directory and socket
# under the work directory, a config naming the firmware fetched into
# cache/guest and the kiln-vmm binary), makes a flavor of --cpus and
# --memory, a `nat` network `hwnet` (--guest-cidr, default 10.251.0.0/24;
# the host is its gateway) and a key pair `hw` that kilnd generates,
# registers each image (`kiln image create ... --firmware`),
# creates one server per image and firmware with
# `kiln server create ... --ready-console REGEX --wait ready`, prints the
# time each took, stops it (ACPI power button), deletes it, and finally
# stops kilnd and removes the work directory (unless --keep). kilnd makes
# each server's root disk, a qcow2 overlay (the images are never written),
# and for UEFI its own copy of OVMF_VARS.fd.
#
#   scripts/hardware-host.sh [--dry-run] [--debian FILE] [--firmware bios|uefi|both]
#       [--debian-ready REGEX] [--windows FILE] [--windows-format qcow2|raw]
#       [--windows-firmware bios|uefi] [--windows-ready REGEX] [--cpus N]
#       [--memory SIZE] [--timeout SECS] [--until ready|active] [--bin DIR]
#       [--guest-cidr CIDR] [--cpu-template NAME] [--shots DIR]
#       [--windows-iso FILE --virtio-win FILE [--windows-edition NAME]
#        [--windows-key KEY] [--windows-disk-bus sata|virtio]
#        [--install-timeout SECS] [--print-answer-file]]
#       [--vmm PATH] [--workdir DIR] [--keep]
#
# --dry-run checks the arguments and the images and prints the kilnd config
# (as `#` lines) and, one per line, the kilnd and kiln commands it would
# run, without needing KVM.
# --until active waits only until each server is ACTIVE (its kiln-vmm runs
# the firmware) instead of ready, checks that it is still ACTIVE 10 s later
# and shows its console; this much also runs on hosts whose KVM is nested
# through PVM, which the script otherwise refuses. (There, the Debian image
# gets through SeaBIOS to GRUB; OVMF stops in SEC on an instruction KVM's
# emulator lacks and the server goes ERROR: see testbed.md.)
# --bin DIR takes kilnd, kiln and kiln-vmm from DIR instead of building
# them (cargo build --release).
#
# The Debian servers are on `hwnet` with the key pair and user data that
# prints a marker on the console: the BIOS one is configured by the
# metadata service and DHCP, the UEFI one by a config drive (cloud-init
# prefers it). Once ready, the script waits for the marker and logs in
# over SSH as `debian` with the key pair, checking the hostname: stock
# cloud-init configured the guest from what kilnd served.
#
# Windows notes: Windows has no built-in virtio-blk driver. The image must
# have the virtio-win drivers (viostor for the disk, netkvm for the network)
# installed, or it stops with INACCESSIBLE_BOOT_DEVICE (stop code 0x7B).
# Enable EMS on COM1 in the image so this script sees it come up:
#   bcdedit /ems {current} on
#   bcdedit /emssettings EMSPORT:1 EMSBAUDRATE:115200
# The Windows image is registered with `--os-type windows`, so kilnd gives
# its server the Hyper-V enlightenments and an RTC in local time, as Nova
# does for os_type=windows.
#
# The CPU template (--cpu-template, default x86-64-v2) keeps SSE4.2 and
# POPCNT, which Windows 11 24H2 and Server 2025 require; the script checks
# that the host has them.
#
# Full boots cannot run on hosts whose KVM is itself nested through PVM
# (/sys/module/kvm_pvm, as on Kiln's development machines): guest kernels
# stop there at instructions KVM's emulator lacks (see testbed.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${KILN_CACHE:-$root/cache}

# Paths the KVM check looks at (overridable so that the refusal is testable).
kvm_dev=${KILN_KVM_DEVICE:-/dev/kvm}
pvm_module=${KILN_PVM_MODULE:-/sys/module/kvm_pvm}

dry_run=0
debian="$cache/images/debian-12.qcow2"
debian_fw=both
debian_ready='login:'
windows=${KILN_WINDOWS_IMAGE:-}
windows_format=qcow2
windows_fw=uefi
windows_ready='SAC>|Computer is booting, SAC started'
cpus=2
memory=2G
timeout=900
until=ready
bin=
vmm=
workdir=
keep=0
guest_cidr=10.251.0.0/24
cpu_template=x86-64-v2
shots=$root/target/hardware-host
windows_iso=
virtio_win=
windows_edition="Windows 11 Pro"
windows_key=
windows_disk_bus=sata
windows_driver_dir=w11
install_timeout=5400
print_answer=0

die() { echo "hardware-host.sh: $*" >&2; exit 2; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1; shift ;;
        --debian) debian=${2:?--debian needs a file}; shift 2 ;;
        --firmware) debian_fw=${2:?--firmware needs bios, uefi or both}; shift 2 ;;
        --debian-ready) debian_ready=${2:?--debian-ready needs a regex}; shift 2 ;;
        --windows) windows=${2:?--windows needs a file}; shift 2 ;;
        --windows-format) windows_format=${2:?--windows-format needs qcow2 or raw}; shift 2 ;;
        --windows-firmware) windows_fw=${2:?--windows-firmware needs bios or uefi}; shift 2 ;;
        --windows-ready) windows_ready=${2:?--windows-ready needs a regex}; shift 2 ;;
        --cpus) cpus=${2:?--cpus needs a number}; shift 2 ;;
        --memory) memory=${2:?--memory needs a size}; shift 2 ;;
        --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
        --until) until=${2:?--until needs ready or active}; shift 2 ;;
        --bin) bin=${2:?--bin needs a directory}; shift 2 ;;
        --vmm) vmm=${2:?--vmm needs a path}; shift 2 ;;
        --workdir) workdir=${2:?--workdir needs a directory}; shift 2 ;;
        --keep) keep=1; shift ;;
        --guest-cidr) guest_cidr=${2:?--guest-cidr needs a subnet}; shift 2 ;;
        --cpu-template) cpu_template=${2:?--cpu-template needs a name}; shift 2 ;;
        --shots) shots=${2:?--shots needs a directory}; shift 2 ;;
        --windows-iso) windows_iso=${2:?--windows-iso needs a file}; shift 2 ;;
        --virtio-win) virtio_win=${2:?--virtio-win needs a file}; shift 2 ;;
        --windows-edition) windows_edition=${2:?--windows-edition needs a name}; shift 2 ;;
        --windows-key) windows_key=${2:?--windows-key needs a product key}; shift 2 ;;
        --windows-disk-bus) windows_disk_bus=${2:?--windows-disk-bus needs sata or virtio}; shift 2 ;;
        --install-timeout) install_timeout=${2:?--install-timeout needs seconds}; shift 2 ;;
        --print-answer-file) print_answer=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

case "$debian_fw" in bios|uefi|both) ;; *) die "--firmware must be bios or uefi (or both), not '$debian_fw'" ;; esac
case "$windows_fw" in bios|uefi) ;; *) die "--windows-firmware must be bios or uefi, not '$windows_fw'" ;; esac
case "$windows_format" in qcow2|raw) ;; *) die "--windows-format must be qcow2 or raw, not '$windows_format'" ;; esac
case "$until" in ready|active) ;; *) die "--until must be ready or active, not '$until'" ;; esac
[[ "$cpus" =~ ^[1-9][0-9]*$ ]] || die "--cpus must be a positive number, not '$cpus'"
[[ "$memory" =~ ^([1-9][0-9]*)([MGT]?)$ ]] || die "--memory must be a size such as 2048M or 2G, not '$memory'"
case "${BASH_REMATCH[2]}" in
    ''|M) ram_mb=${BASH_REMATCH[1]} ;;
    G) ram_mb=$((BASH_REMATCH[1] * 1024)) ;;
    T) ram_mb=$((BASH_REMATCH[1] * 1024 * 1024)) ;;
esac
[[ "$timeout" =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds, not '$timeout'"
[[ "$install_timeout" =~ ^[1-9][0-9]*$ ]] || die "--install-timeout must be a positive number of seconds, not '$install_timeout'"
case "$windows_disk_bus" in sata|virtio) ;; *) die "--windows-disk-bus must be sata or virtio, not '$windows_disk_bus'" ;; esac
case "$cpu_template" in host|x86-64-v2) ;; *) die "--cpu-template must be host or x86-64-v2 (Windows needs SSE4.2 and POPCNT), not '$cpu_template'" ;; esac
[[ "$windows_key" =~ ^([A-Z0-9]{5}-){4}[A-Z0-9]{5}$ || -z "$windows_key" ]] || die "--windows-key must look like XXXXX-XXXXX-XXXXX-XXXXX-XXXXX"
[[ "$windows_edition" =~ ^[A-Za-z0-9\ .()-]+$ ]] || die "--windows-edition must be an edition name such as 'Windows 11 Pro', not '$windows_edition'"
case "$windows_edition" in *Server*2025*) windows_driver_dir=2k25 ;; *Server*2022*) windows_driver_dir=2k22 ;; esac
# ram for the Windows install: at least the 4 GiB Windows 11 asks for.
win_ram_mb=$(( ram_mb > 4096 ? ram_mb : 4096 ))
# shellcheck source=hw/windows-install.sh
. "$root/scripts/hw/windows-install.sh"
if [ "$print_answer" = 1 ]; then
    windows_password=PASSWORD-MADE-AT-RUN windows_answer_file
    exit 0
fi
if [ -n "$windows_iso$virtio_win" ]; then
    [ -n "$windows_iso" ] && [ -n "$virtio_win" ] || die "--windows-iso and --virtio-win go together (setup needs the drivers and the guest agent from virtio-win)"
    for iso in "$windows_iso" "$virtio_win"; do
        [ -f "$iso" ] || die "no ISO at $iso"
        [ "$(dd if="$iso" bs=1 skip=32769 count=5 status=none | tr -d '\0')" = CD001 ] || die "$iso is not an ISO 9660 image"
    done
fi

# --- the host ----------------------------------------------------------------
if [ "$dry_run" = 0 ]; then
    if [ -e "$pvm_module" ] && [ "$until" = ready ]; then
        die "refusing to run: this host's KVM is nested through PVM ($pvm_module exists); guest kernels and Windows cannot boot on it (see README.md). Use a host with hardware virtualization (VT-x/AMD-V), --until active, or --dry-run."
    fi
    if [ ! -e "$kvm_dev" ]; then
        die "refusing to run: $kvm_dev is missing. This script needs hardware virtualization (VT-x/AMD-V) with the kvm_intel or kvm_amd module loaded, or use --dry-run."
    fi
    for flag in sse4_2 popcnt; do
        grep -qw "$flag" /proc/cpuinfo || die "refusing to run: the host CPU lacks $flag, which Windows and the x86-64-v2 template need"
    done
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
        both) need_fw bios; need_fw uefi ;;
    esac
}
need_fw "$debian_fw"
[ -z "$windows" ] || need_fw "$windows_fw"

if [ -z "$bin" ]; then
    bin="${CARGO_TARGET_DIR:-$root/target}/release"
    if [ "$dry_run" = 0 ]; then
        echo "hardware-host.sh: building kilnd, kiln and kiln-vmm (release)"
        (cd "$root" && cargo build --quiet --release -p kiln-vmm -p kiln-manager)
    fi
fi
kilnd=$bin/kilnd
kiln_bin=$bin/kiln
[ -n "$vmm" ] || vmm=$bin/kiln-vmm
if [ "$dry_run" = 0 ]; then
    for b in "$kilnd" "$kiln_bin" "$vmm"; do [ -x "$b" ] || die "$b is not executable"; done
fi

if [ -z "$workdir" ]; then
    if [ "$dry_run" = 1 ]; then workdir=/tmp/kiln-hw.DRYRUN; else workdir=$(mktemp -d /tmp/kiln-hw.XXXXXX); fi
fi
socket=$workdir/kiln.sock
config=$workdir/kilnd.toml

# --- what runs ------------------------------------------------------------------
# Prints its arguments as one shell command line, quoting only where needed.
print_command() {
    local w out=()
    for w in "$@"; do
        if [[ "$w" =~ ^[A-Za-z0-9_./=,:+@%-]+$ ]]; then out+=("$w")
        else out+=("'${w//\'/\'\\\'\'}'"); fi
    done
    echo "${out[*]}"
}

# kilnd imports by path only from the directories its config allows
# (images.import_dirs): those of the images given here, as image_cmd names
# them (resolved).
import_dirs() {
    local line name file dirs=()
    for line in "${servers[@]}"; do
        IFS=$'\t' read -r name file _ <<<"$line"
        dirs+=("\"$(dirname "$(realpath "$file")")\"")
    done
    for file in "$windows_iso" "$virtio_win"; do
        [ -n "$file" ] || continue
        dirs+=("\"$(dirname "$(realpath "$file")")\"")
    done
    printf '%s' "$(printf '%s\n' "${dirs[@]}" | sort -u | paste -sd, -)"
}

kilnd_config() {
    cat <<CONF
[images]
import_dirs = [$(import_dirs)]
[firmware]
bios = "$bios"
uefi_code = "$ovmf_code"
uefi_vars_template = "$ovmf_vars"
[networks]
default = false
[vmm]
binary = "$vmm"
boot_timeout_s = 60
stop_timeout_s = 120
cpu_template = "$cpu_template"
CONF
}
kilnd_cmd=("$kilnd" --config "$config" --state-dir "$workdir/state" --socket "$socket")
kiln=("$kiln_bin" --socket "$socket")
flavor_cmd=("${kiln[@]}" flavor create hw.vm --vcpus "$cpus" --ram-mb "$ram_mb" --disk-gb 0)
network_cmd=("${kiln[@]}" network create hwnet --cidr "$guest_cidr" --mode nat)
key=$workdir/hw_key
keypair_cmd=("${kiln[@]}" keypair create hw --private-key-file "$key")
user_data=$workdir/user-data

# The servers: NAME IMAGE_FILE FORMAT FIRMWARE READY_REGEX, one per line
# (tab-separated).
servers=()
for fw in bios uefi; do
    if [ "$debian_fw" = "$fw" ] || [ "$debian_fw" = both ]; then
        servers+=("debian-$fw"$'\t'"$debian"$'\t'qcow2$'\t'"$fw"$'\t'"$debian_ready")
    fi
done
[ -z "$windows" ] || servers+=("windows"$'\t'"$windows"$'\t'"$windows_format"$'\t'"$windows_fw"$'\t'"$windows_ready")

# image_cmd / server_cmd NAME FILE FORMAT FIRMWARE READY: set `cmd`.
image_cmd() {
    cmd=("${kiln[@]}" image create "$1" --path "$(realpath "$2")" --format "$3" --firmware "$4")
    if [ "$1" = windows ]; then cmd+=(--os-type windows); fi
}
server_cmd() {
    cmd=("${kiln[@]}" server create "$1" --flavor hw.vm --image "$1" --network hwnet --display vga)
    case "$1" in
        debian-bios) cmd+=(--key-name hw --user-data "$user_data") ;;
        debian-uefi) cmd+=(--key-name hw --user-data "$user_data" --config-drive) ;;
    esac
    cmd+=(--wait "$until" --timeout "$timeout")
    if [ "$until" = ready ]; then cmd+=(--ready-console "$5"); fi
}

# The user data: cloud-config that prints a marker with the hostname on
# the serial console when it has run.
user_data_file() {
    cat <<'UD'
#cloud-config
runcmd:
  - [sh, -c, 'echo "KILN-HW-USERDATA $(hostname)" > /dev/ttyS0']
UD
}

# configured NAME: after a Debian server is ready, waits for its user
# data's marker, then logs in with the key pair over SSH and checks the
# hostname.
configured() {
    local name=$1 ip console
    ip=$("${kiln[@]}" --json server show "$name" | sed -n 's/^ *"ip": "\(.*\)",\{0,1\}$/\1/p' | head -1)
    for _ in $(seq 120); do
        console=$("${kiln[@]}" server console "$name" --tail 400 2>/dev/null || true)
        grep -q "KILN-HW-USERDATA $name" <<<"$console" && break
        sleep 1
    done
    grep -q "KILN-HW-USERDATA $name" <<<"$console" \
        || { echo "hardware-host.sh: $name: the user data did not run" >&2; return 1; }
    echo "hardware-host.sh: $name: $(grep -o 'datasource [A-Za-z]*' <<<"$console" | tail -1), address $ip"
    local got
    got=$(ssh -i "$key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
              -o BatchMode=yes -o ConnectTimeout=30 "debian@$ip" hostname) \
        || { echo "hardware-host.sh: $name: cannot log in to $ip with the key pair" >&2; return 1; }
    [ "$got" = "$name" ] \
        || { echo "hardware-host.sh: $name: hostname is '$got'" >&2; return 1; }
    echo "hardware-host.sh: $name: logged in with the key pair; hostname $got"
}

if [ "$dry_run" = 1 ]; then
    kilnd_config | sed 's/^/# /'
    print_command "${kilnd_cmd[@]}"
    print_command "${flavor_cmd[@]}"
    print_command "${network_cmd[@]}"
    print_command "${keypair_cmd[@]}"
    for s in "${servers[@]}"; do
        IFS=$'\t' read -r name file format fw ready <<<"$s"
        image_cmd "$name" "$file" "$format" "$fw" "$ready"; print_command "${cmd[@]}"
        server_cmd "$name" "$file" "$format" "$fw" "$ready"; print_command "${cmd[@]}"
    done
    if [ -n "$windows_iso" ]; then
        for step in windows_iso_cmd virtio_win_cmd windows_flavor_cmd windows_server_cmd; do
            "$step"; print_command "${cmd[@]}"
        done
    fi
    exit 0
fi

# --- running ------------------------------------------------------------------
mkdir -p "$workdir"
kilnd_config > "$config"
user_data_file > "$user_data"
kilnd_pid=
cleanup() {
    if [ -n "$kilnd_pid" ]; then
        # Deleting a server ends its kiln-vmm (they outlive kilnd otherwise).
        local id
        for id in $("${kiln[@]}" --json server list 2>/dev/null | sed -n 's/^ *"id": "\(.*\)",$/\1/p'); do
            "${kiln[@]}" server delete "$id" >/dev/null 2>&1 || true
        done
        # The network's bridge (and kilnd's firewall table) go with it.
        for _ in $(seq 50); do
            "${kiln[@]}" network delete hwnet >/dev/null 2>&1 && break
            "${kiln[@]}" network show hwnet >/dev/null 2>&1 || break
            sleep 0.2
        done
        kill "$kilnd_pid" 2>/dev/null || true
        wait "$kilnd_pid" 2>/dev/null || true
    fi
    if [ "$keep" = 1 ]; then echo "hardware-host.sh: kept $workdir"; else rm -rf "$workdir"; fi
}
trap cleanup EXIT

echo "hardware-host.sh: $(print_command "${kilnd_cmd[@]}")"
"${kilnd_cmd[@]}" >"$workdir/kilnd.log" 2>&1 &
kilnd_pid=$!
for _ in $(seq 200); do "${kiln[@]}" host >/dev/null 2>&1 && break; sleep 0.1; done
"${kiln[@]}" host >/dev/null || { tail -n 20 "$workdir/kilnd.log" >&2; die "kilnd did not start"; }
"${flavor_cmd[@]}" >/dev/null
"${network_cmd[@]}" >/dev/null
"${keypair_cmd[@]}" >/dev/null

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

status_of() { "${kiln[@]}" --json server show "$1" | sed -n 's/^ *"status": "\(.*\)",$/\1/p'; }

# run NAME FILE FORMAT FIRMWARE READY: registers, boots, waits, stops, deletes.
run() {
    local name=$1
    image_cmd "$@"
    echo "hardware-host.sh: $name: $(print_command "${cmd[@]}")"
    local t0; t0=$(now)
    "${cmd[@]}" >/dev/null || return 1
    echo "hardware-host.sh: $name: image registered in $(since "$t0") s"
    server_cmd "$@"
    echo "hardware-host.sh: $name: $(print_command "${cmd[@]}")"
    t0=$(now)
    if "${cmd[@]}" >/dev/null; then
        echo "hardware-host.sh: $name: $until after $(since "$t0") s (kilnd's ready_after_ms: $("${kiln[@]}" --json server show "$name" | sed -n 's/^ *"ready_after_ms": \([0-9]*\).*/\1/p'))"
    else
        echo "hardware-host.sh: $name: not $until; server and console tail:" >&2
        "${kiln[@]}" server show "$name" >&2 || true
        "${kiln[@]}" server console "$name" --tail 30 >&2 || true
        "${kiln[@]}" server delete "$name" >/dev/null 2>&1 || true
        return 1
    fi
    "${kiln[@]}" server show "$name"
    [ "$until" != ready ] || shot "$name" ready
    if [ "$until" = ready ] && [ "${name#debian-}" != "$name" ]; then
        configured "$name" || { "${kiln[@]}" server delete "$name" >/dev/null 2>&1 || true; return 1; }
    fi
    if [ "$until" = active ]; then
        # ACTIVE only says that kiln-vmm runs: check that the firmware
        # still runs a little later, and show how far the console got.
        sleep 10
        local now_status; now_status=$(status_of "$name")
        echo "hardware-host.sh: $name: $now_status 10 s after ACTIVE; console tail:"
        "${kiln[@]}" server console "$name" --tail 5 | tr -d '\033' | cut -c1-160 || true
        echo
        if [ "$now_status" != ACTIVE ]; then
            "${kiln[@]}" server show "$name" >&2 || true
            "${kiln[@]}" server delete "$name" >/dev/null 2>&1 || true
            return 1
        fi
    fi
    # Graceful: the ACPI power button, forced after kilnd's stop timeout.
    t0=$(now)
    "${kiln[@]}" server stop "$name"
    local status=
    for _ in $(seq 300); do
        status=$(status_of "$name")
        [ "$status" = SHUTOFF ] && break
        sleep 0.5
    done
    echo "hardware-host.sh: $name: $status $(since "$t0") s after stop"
    "${kiln[@]}" server delete "$name"
}

failed=0
for s in "${servers[@]}"; do
    IFS=$'\t' read -r name file format fw ready <<<"$s"
    [ "$name" != windows ] || echo "hardware-host.sh: windows: the image needs the virtio-win drivers (viostor) and EMS on COM1 (see --help)"
    run "$name" "$file" "$format" "$fw" "$ready" || failed=1
done
if [ -n "$windows_iso" ] && [ "$until" = active ]; then
    echo "hardware-host.sh: windows: the install needs --until ready (it waits for the agent); skipped"
elif [ -n "$windows_iso" ]; then
    windows_password=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 16)Aa1
    echo "hardware-host.sh: windows: installing '$windows_edition' unattended; user kiln, password $windows_password"
    windows_install || failed=1
fi
if [ "$failed" = 0 ]; then
    echo "hardware-host.sh: every server became $until"
else
    echo "hardware-host.sh: some servers failed (kilnd log: $workdir/kilnd.log, kept with --keep)" >&2
fi
exit $failed
