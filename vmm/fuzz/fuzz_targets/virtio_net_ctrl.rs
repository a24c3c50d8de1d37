//! Fuzz virtio-net's control queue: the input is the guest's memory image
//! (descriptor table, available ring, command and ack buffers), a queue
//! size, an available index, whether MQ was negotiated and the device's
//! pair count. Every queued command is parsed and answered; nothing may
//! panic, hang, accept a pair count outside 1..=max, or complete more
//! chains than were offered. `parse_ctrl` is also fed the raw bytes.
#![no_main]

use kiln_vmm::devices::virtio::net::{self, CtrlCommand};
use kiln_vmm::devices::virtio::testing::fuzz;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((size, avail_idx, params, image)) = fuzz::queue_input(data, 2) else {
        return;
    };
    let mq = params[0] & 1 != 0;
    let max = u16::from(params[1] % 17).max(1);
    if let CtrlCommand::SetPairs(n) = net::parse_ctrl(image, image.len() as u64, mq, max) {
        assert!(mq && (1..=max).contains(&n));
    }
    let mem = fuzz::ring_memory(image, avail_idx);
    let mut q = fuzz::queue(&mem, size);
    let r = net::process_ctrl(&mem, &mut q, mq, max, &mut |n| {
        assert!(mq && (1..=max).contains(&n), "accepted {n} of {max}");
        true
    });
    if r.is_ok() {
        fuzz::assert_no_more_used_than_offered(&mem, avail_idx, size);
    }
});
