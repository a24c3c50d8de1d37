#!/usr/bin/env bash
# The README's first command: set up this machine, build Kiln, start kilnd
# with its embedded default configuration (state in /var/lib/kiln, API on
# /run/kiln/kiln.sock), register the minimal Linux guest (Debian's stock
# kernel + a busybox initramfs) as a kernel image, boot a server `demo`
# from it, and attach to its serial console. Ctrl-] detaches; kilnd and
# the server keep running (`kiln server list`, `kiln server delete demo`).
#
# On a host with hardware virtualization the guest reaches a shell. On
# machines whose KVM is nested through PVM (/sys/module/kvm_pvm), guest
# kernel code runs in KVM's instruction emulator: you see the kernel's early
# boot (banner, e820 map, ACPI, SMP) over a minute or so, then it stops.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
cargo build --release --manifest-path "$root/Cargo.toml" -p kiln-vmm -p kiln-manager
bin=$root/target/release
kiln=$bin/kiln
g=$root/cache/guest
cmdline="console=ttyS0 earlyprintk=ttyS0 panic=-1"
# kilnd registers kernels only from the directories its config allows;
# state_dir/import is always one (root-only), so the guest goes there.
import=/var/lib/kiln/import
install -d -m 0700 "$import"
install -m 0600 "$g/vmlinux" "$g/initramfs.cpio.gz" "$import/"
args=()
if [ -d /sys/module/kvm_pvm ]; then
    echo "note: nested KVM (PVM) here: the kernel's early boot only; see README" >&2
    cmdline="$cmdline noxsave"
    # The only change to the embedded defaults: a CPU template this
    # machine's instruction emulator can run.
    conf=/run/kiln/kilnd-nested.toml
    mkdir -p /run/kiln
    printf '[vmm]\ncpu_template = "kvm-nested"\n' > "$conf"
    args=(--config "$conf")
fi

if ! "$kiln" host >/dev/null 2>&1; then
    mkdir -p /var/log
    nohup "$bin/kilnd" "${args[@]}" >> /var/log/kilnd.log 2>&1 &
    for _ in $(seq 100); do "$kiln" host >/dev/null 2>&1 && break; sleep 0.1; done
    echo "kilnd started (log: /var/log/kilnd.log)" >&2
fi
"$kiln" image show debian-minimal >/dev/null 2>&1 ||
    "$kiln" image kernel debian-minimal --kernel "$import/vmlinux" \
        --initramfs "$import/initramfs.cpio.gz" --cmdline "$cmdline"
"$kiln" server delete demo >/dev/null 2>&1 || true
"$kiln" server create demo --flavor m1.tiny --image debian-minimal --wait active
echo "attaching to the console of server demo (Ctrl-] detaches)" >&2
exec "$kiln" console demo
