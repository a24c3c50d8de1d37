//! Fuzz virtio-console's control queues: the input is the guest's memory
//! image (descriptor table, available ring, control messages), a queue
//! size, an available index and whether a client is connected. Every
//! queued message is parsed and handled by the port state machine, then
//! the answers go out on the same ring as if it were the control receive
//! queue; nothing may panic, hang, queue more than MAX_PENDING answers,
//! mark a port open that is not ready, or complete more chains than were
//! offered. `ControlMsg::parse` is also fed the raw bytes.
#![no_main]

use kiln_vmm::devices::virtio::console::control::{Control, ControlMsg, MAX_PENDING, NR_PORTS};
use kiln_vmm::devices::virtio::console::queues;
use kiln_vmm::devices::virtio::testing::fuzz;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((size, avail_idx, params, image)) = fuzz::queue_input(data, 1) else {
        return;
    };
    if let Some(m) = ControlMsg::parse(image) {
        assert_eq!(ControlMsg::parse(&m.encode(&[])), Some(m));
    }
    let mut ctrl = Control::new(params[0] & 1 != 0);
    let mem = fuzz::ring_memory(image, avail_idx);
    let mut q = fuzz::queue(&mem, size);
    let mut handled = Vec::new();
    let r = queues::process_ctrl_tx(&mem, &mut q, &mut ctrl, &mut handled);
    assert!(ctrl.pending() <= MAX_PENDING);
    for id in 0..NR_PORTS {
        let p = ctrl.port(id).unwrap();
        assert!(!p.guest_open || p.ready, "port {id} open but not ready");
    }
    if r.is_ok() {
        fuzz::assert_no_more_used_than_offered(&mem, avail_idx, size);
        fuzz::assert_used_were_taken(&mem, &q);
        // The answers, into a fresh ring over the same memory.
        let mem = fuzz::ring_memory(image, avail_idx);
        let mut q = fuzz::queue(&mem, size);
        if queues::fill_ctrl_rx(&mem, &mut q, &mut ctrl).is_ok() {
            fuzz::assert_used_were_taken(&mem, &q);
        }
    }
});
