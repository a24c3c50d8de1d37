#!/usr/bin/env bash
# The slow tests, kept out of scripts/test.sh: builds the Debian disk image
# if it is missing (debootstrap, about 5 minutes) and boots it under QEMU's
# software emulation (TCG) through SeaBIOS and OVMF, each to a login prompt
# (3 to 5 minutes each), then on kiln-vmm through SeaBIOS as far as GRUB
# starting Linux (2 to 4 minutes on the nested KVM); then boots the same
# image under TCG as a server kilnd made, configured by the stock
# cloud-init from kilnd's config drive and from its metadata service and
# DHCP (about 3 minutes each). Needs root, /dev/kvm, loop devices and a
# Debian mirror.
# Extra arguments go to the test binary (e.g. a test name).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
scripts/setup.sh
cargo test -p kiln-tests --test debian_image -- --ignored --test-threads=1 --nocapture "$@"
exec cargo test -p kiln-manager --test cloud_init_tcg -- --ignored --test-threads=1 --nocapture "$@"
