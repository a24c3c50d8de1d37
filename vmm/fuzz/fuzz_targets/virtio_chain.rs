//! Fuzz the ring and descriptor-chain handling: the input is the guest's
//! memory image (descriptor table, available ring, buffers, indirect
//! tables), a queue size and an available index. Every chain is walked,
//! and the queue is served as virtio-blk, virtio-rng or virtio-input
//! (events delivered, then the rest taken as the status queue would). Nothing
//! may panic, hang, or complete more chains than were offered (or, when
//! the device's writes landed on the available ring, than it took).
#![no_main]

use std::sync::Arc;

use kiln_vmm::devices::virtio::testing::{fuzz, MemDisk};
use kiln_vmm::devices::virtio::{block, chain, input, rng};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((size, avail_idx, params, image)) = fuzz::queue_input(data, 1) else {
        return;
    };
    let as_blk = params[0] & 1 == 0;
    let mem = fuzz::ring_memory(image, avail_idx);
    for head in 0..size {
        let _ = chain::walk(&mem, fuzz::DESC, size, head);
    }
    let mut q = fuzz::queue(&mem, size);
    let r = if params[0] >> 6 == 3 {
        let mut events: std::collections::VecDeque<[u8; 8]> =
            (0..64).map(|i| input::event(input::EV_ABS, 0, i)).collect();
        input::deliver(&mem, &mut q, &mut events)
            .and_then(|_| input::drain_status(&mem, &mut q))
            .map(|_| ())
    } else if as_blk {
        let disk = Arc::new(MemDisk::new(64 << 10, params[0] & 2 != 0));
        let mut backend = block::BlockBackend::new(disk, "fuzz", false);
        block::process_queue(&mem, &mut q, &mut backend).map(|_| ())
    } else {
        rng::process_queue(&mem, &mut q, &mut Vec::new()).map(|_| ())
    };
    if r.is_ok() {
        fuzz::assert_no_more_used_than_offered(&mem, avail_idx, size);
        fuzz::assert_used_were_taken(&mem, &q);
    }
});
