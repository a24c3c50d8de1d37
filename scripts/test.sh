#!/usr/bin/env bash
# The README's second command: every test Kiln has, on this machine.
#   1. setup: Debian packages, guest material (scripts/setup.sh), probes
#   2. format and lint: cargo fmt --check, cargo clippy -D warnings
#   3. build every binary the end-to-end tests start
#   4. cargo test over the whole workspace: unit tests, qemu-img interop,
#      probe guests on real KVM, the stock Debian kernel's early boot,
#      kilnd end to end
#   5. schemathesis against kilnd's OpenAPI document: no 5xx
#   6. the fuzz targets, each for a bounded time (scripts/fuzz.sh)
# Needs root, /dev/kvm and /dev/net/tun (see README). Exits non-zero on any
# failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n== %s\n' "$*"; }

step setup
scripts/setup.sh
scripts/build-probes.sh >/dev/null

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "build binaries"
cargo build --workspace --bins --quiet

step "cargo test"
cargo test --workspace --no-fail-fast

step "schemathesis against kilnd's /openapi.json"
PATH=$root/cache/venv/bin:$PATH manager/tests/schemathesis.sh "$root/target/debug/kilnd"

if [ -x scripts/fuzz.sh ]; then
    step "fuzz (bounded)"
    scripts/fuzz.sh
fi
