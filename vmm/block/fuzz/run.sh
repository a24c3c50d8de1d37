#!/bin/sh
# Runs the qcow2_open fuzz target for a bounded time (default 60 s), for CI.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# A crash leaves its input in artifacts/qcow2_open/ and fails the run; copy
# it to ../tests/corpus/ so the `malformed` test replays it from then on.
set -eu
cd "$(dirname "$0")"
secs="${1:-60}"
[ -d corpus/qcow2_open ] || ./seed.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
exec cargo +nightly fuzz run qcow2_open corpus/qcow2_open -- \
    -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10
