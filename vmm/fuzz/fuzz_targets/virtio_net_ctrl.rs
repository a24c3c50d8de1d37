//! Fuzz virtio-net's control queue: the input is the guest's memory image
//! (descriptor table, available ring, command and ack buffers), a queue
//! size, an available index, whether MQ was negotiated and the device's
//! pair count. Every queued command is parsed and answered; nothing may
//! panic, hang, accept a pair count outside 1..=max, or complete more
//! chains than were offered. `parse_ctrl` is also fed the raw bytes.
#![no_main]

#[path = "common.rs"]
mod common;

use kiln_vmm::devices::virtio::net::{self, CtrlCommand};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let size = 1u16 << (data[0] % 9);
    let avail_idx = u16::from_le_bytes([data[1], data[2]]);
    let mq = data[3] & 1 != 0;
    let max = u16::from(data[4] % 17).max(1);
    if let CtrlCommand::SetPairs(n) = net::parse_ctrl(&data[5..], data.len() as u64 - 5, mq, max)
    {
        assert!(mq && (1..=max).contains(&n));
    }
    let mem = common::ring_memory(&data[5..], avail_idx);
    let mut q = common::queue(&mem, size);
    let r = net::process_ctrl(&mem, &mut q, mq, max, &mut |n| {
        assert!(mq && (1..=max).contains(&n), "accepted {n} of {max}");
        true
    });
    if r.is_ok() {
        common::assert_no_more_used_than_offered(&mem, avail_idx, size);
    }
});
