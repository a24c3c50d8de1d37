#!/usr/bin/env bash
# The README's first command: set up this machine, build Kiln, and boot the
# minimal Linux guest (Debian's stock kernel + a busybox initramfs) with
# kiln-vmm, its serial console on this terminal. Ctrl-A x ends the VM.
#
# On a host with hardware virtualization the guest reaches a shell. On
# machines whose KVM is nested through PVM (/sys/module/kvm_pvm), guest
# kernel code runs in KVM's instruction emulator: you see the kernel's early
# boot (banner, e820 map, ACPI, SMP) over about a minute, then it stops.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
cargo build --release --manifest-path "$root/Cargo.toml" -p kiln-vmm
g=$root/cache/guest
cmdline="console=ttyS0 earlyprintk=ttyS0 panic=-1"
template=host
if [ -d /sys/module/kvm_pvm ]; then
    echo "note: nested KVM (PVM) here: the kernel's early boot only; see README" >&2
    cmdline="$cmdline noxsave"
    template=kvm-nested
fi
run=$(mktemp -d /tmp/kiln-demo.XXXXXX)
echo "serial log: $run/serial.log   control API: $run/api.sock" >&2
exec "$root/target/release/kiln-vmm" \
    --kernel "$g/vmlinux" --initramfs "$g/initramfs.cpio.gz" \
    --cmdline "$cmdline" --cpus 2 --memory 512M --cpu-template "$template" \
    --serial-log "$run/serial.log" --api-socket "$run/api.sock" --serial-stdout "$@"
