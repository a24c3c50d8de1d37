//! Fuzz target: arbitrary bytes opened as a qcow2 image (headers, extensions,
//! L1/L2 and refcount tables), then read, written, zeroed, discarded and
//! flushed. Run: `cargo +nightly fuzz run qcow2_open -- -max_total_time=60`.
//! Inputs that crashed are copied to `vmm/block/tests/corpus/` and replayed
//! by the `malformed` integration test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kiln_block::qcow2::fuzz_one(data);
});
