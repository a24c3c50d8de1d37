#!/usr/bin/env bash
# Run every cargo-fuzz target for a bounded time (part of scripts/test.sh):
#   kiln-block: qcow2_open (headers and tables of hostile qcow2 files)
#   kiln-vmm:   virtio_chain (descriptor chains), virtio_blk_request (headers),
#               virtio_net_ctrl (virtio-net control-queue commands),
#               virtio_console_ctrl (virtio-console control messages, ports),
#               vga_registers (the VGA's ports, VBE, memory window, BAR 2),
#               i8042_mouse (the PS/2 mouse's commands), ahci_commands
#               (AHCI command lists, tables and PRDTs)
# KILN_FUZZ_SECS sets the time per target (default 30: eight targets in
# the CI budget; longer runs are for hunting). A crash fails the
# run and leaves its input under the fuzz crate's artifacts/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${KILN_FUZZ_SECS:-30}
export CARGO_TARGET_DIR=$root/cache/fuzz-target

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --quiet
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 1
fi

"$root/vmm/block/fuzz/run.sh" "$secs"
cd "$root/vmm/fuzz"
for target in virtio_chain virtio_blk_request virtio_net_ctrl virtio_console_ctrl vga_registers i8042_mouse ahci_commands; do
    mkdir -p "corpus/$target"
    cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10
done
