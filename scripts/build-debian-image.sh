#!/usr/bin/env bash
# Builds the Debian 12 disk image (BIOS + UEFI GRUB, cloud-init) into
# cache/images/debian-12.qcow2 unless it is already there. Arguments go to
# images/debian/build.sh (--force to rebuild, --help for the rest). Root.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
exec "$root/images/debian/build.sh" "$@"
