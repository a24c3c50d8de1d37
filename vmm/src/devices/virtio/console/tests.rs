//! The console's control state machine and queue handling (plain
//! functions on test guest memory), and the whole device behind the
//! virtio-pci transport, driven by the test driver as a guest driver would,
//! with a real client on its unix socket.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};

use super::control::*;
use super::queues::*;
use super::*;
use crate::devices::pci::PciDevice;
use crate::devices::virtio::testing::{
    desc, mem_two_regions, wait_for, GuestQueue, RecordingVectors, TestDriver,
};
use crate::devices::virtio::transport::{VirtioPciDevice, DEVICE_CFG_OFFSET};
use crate::devices::virtio::{STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK};
use crate::devices::virtio::{STATUS_FEATURES_OK, STATUS_NEEDS_RESET};
use crate::devices::GuestMemoryMmap;

fn msg(id: u32, event: u16, value: u16) -> ControlMsg {
    ControlMsg { id, event, value }
}

fn drain(c: &mut Control) -> Vec<(ControlMsg, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(m) = c.front() {
        out.push((ControlMsg::parse(m).unwrap(), m[HEADER_LEN..].to_vec()));
        c.pop();
    }
    out
}

#[test]
fn control_messages_parse_and_encode() {
    assert_eq!(ControlMsg::parse(&[1, 0, 0, 0, 3, 0, 1]), None, "short");
    let m = msg(0x0403_0201, PORT_NAME, 0x0102);
    let raw = m.encode(b"ab");
    assert_eq!(raw, [1, 2, 3, 4, 7, 0, 2, 1, b'a', b'b']);
    assert_eq!(ControlMsg::parse(&raw), Some(m), "extra bytes ignored");
}

#[test]
fn port_state_machine_follows_the_spec_order() {
    let mut c = Control::new(false);
    // Nothing before DEVICE_READY.
    assert_eq!(c.handle(msg(1, PORT_READY, 1)), Handled::Ignored);
    assert_eq!(c.pending(), 0);
    assert_eq!(c.handle(msg(0, DEVICE_READY, 1)), Handled::Ok);
    let adds: Vec<_> = drain(&mut c).into_iter().map(|(m, _)| m).collect();
    assert_eq!(adds, [msg(0, DEVICE_ADD, 1), msg(1, DEVICE_ADD, 1)]);
    assert_eq!(c.handle(msg(0, DEVICE_READY, 1)), Handled::Ignored, "once");
    assert_eq!(c.pending(), 0);
    // Port 0: the console port. Port 1: its name, NUL-terminated.
    c.handle(msg(0, PORT_READY, 1));
    assert_eq!(drain(&mut c), [(msg(0, CONSOLE_PORT, 1), vec![])]);
    // The host side opens before the port is ready: told at PORT_READY.
    c.set_host_open(true);
    assert_eq!(c.pending(), 0);
    c.handle(msg(1, PORT_READY, 1));
    let mut name = AGENT_NAME.as_bytes().to_vec();
    name.push(0);
    assert_eq!(
        drain(&mut c),
        [(msg(1, PORT_NAME, 1), name), (msg(1, PORT_OPEN, 1), vec![])]
    );
    assert_eq!(c.handle(msg(1, PORT_READY, 1)), Handled::Ignored, "once");
    assert!(!c.agent_guest_open());
    assert_eq!(
        c.handle(msg(1, PORT_OPEN, 1)),
        Handled::AgentGuestOpen(true)
    );
    assert!(c.agent_guest_open());
    // Host side closes and opens again: each is one PORT_OPEN.
    c.set_host_open(false);
    c.set_host_open(false);
    c.set_host_open(true);
    assert_eq!(
        drain(&mut c),
        [
            (msg(1, PORT_OPEN, 0), vec![]),
            (msg(1, PORT_OPEN, 1), vec![])
        ]
    );
    assert_eq!(
        c.handle(msg(1, PORT_OPEN, 0)),
        Handled::AgentGuestOpen(false)
    );
    assert!(!c.agent_guest_open());
    // Ports that do not exist, events a driver does not send.
    for bad in [
        msg(2, PORT_READY, 1),
        msg(u32::MAX, PORT_OPEN, 1),
        msg(0, DEVICE_ADD, 1),
        msg(0, PORT_NAME, 1),
        msg(0, RESIZE, 1),
        msg(0, DEVICE_REMOVE, 1),
        msg(0, 0xffff, 0),
    ] {
        assert_eq!(c.handle(bad), Handled::Ignored, "{bad:?}");
    }
    assert_eq!(c.pending(), 0);
    // A port the driver failed to add is forgotten.
    c.handle(msg(1, PORT_READY, 0));
    assert_eq!(c.port(AGENT), Some(PortState::default()));
    assert_eq!(c.handle(msg(1, PORT_OPEN, 1)), Handled::Ignored);
}

#[test]
fn owed_messages_are_bounded() {
    let mut c = Control::new(false);
    c.handle(msg(0, DEVICE_READY, 1));
    c.handle(msg(1, PORT_READY, 1));
    for i in 0..10_000 {
        c.set_host_open(i % 2 == 0);
    }
    assert_eq!(c.pending(), MAX_PENDING);
    assert!(c.dropped > 9000, "{}", c.dropped);
}

#[test]
fn control_queues_carry_messages_both_ways() {
    let mem = mem_two_regions();
    let tx = GuestQueue::new(&mem, 0x1000, 8);
    let rx = GuestQueue::new(&mem, 0x2000, 8);
    let (mut txq, mut rxq) = (tx.queue(), rx.queue());
    let mut c = Control::new(true);
    // DEVICE_READY split over two descriptors; a 3-byte message.
    mem.write_slice(&msg(0, DEVICE_READY, 1).encode(&[]), GuestAddress(0x10000))
        .unwrap();
    tx.set_desc(0, desc(0x10000, 5, 1, 1));
    tx.set_desc(1, desc(0x10005, 3, 0, 0));
    tx.set_desc(2, desc(0x10010, 3, 0, 0));
    tx.push_avail(0);
    tx.push_avail(2);
    let mut handled = Vec::new();
    process_ctrl_tx(&mem, &mut txq, &mut c, &mut handled).unwrap();
    assert_eq!(handled, [Handled::Ok, Handled::Ignored]);
    assert_eq!(
        (tx.used_idx(), tx.used_elem(0), tx.used_elem(1)),
        (2, (0, 0), (2, 0))
    );
    // Two messages owed; one buffer of 4 bytes (too small), one fine.
    assert_eq!(c.pending(), 2);
    rx.set_desc(0, desc(0x11000, 4, 2, 0));
    rx.set_desc(1, desc(0x12000, 64, 2, 0));
    rx.set_desc(2, desc(0x13000, 64, 2, 0));
    rx.push_avail(0);
    rx.push_avail(1);
    rx.push_avail(2);
    assert!(fill_ctrl_rx(&mem, &mut rxq, &mut c).unwrap());
    assert_eq!(rx.used_idx(), 2, "one buffer is left for later messages");
    assert_eq!(rx.used_elem(0), (0, 0));
    assert_eq!(rx.used_elem(1), (1, 8));
    let mut got = [0u8; 8];
    mem.read_slice(&mut got, GuestAddress(0x12000)).unwrap();
    assert_eq!(ControlMsg::parse(&got), Some(msg(1, DEVICE_ADD, 1)));
    assert_eq!(c.pending(), 0);
}

#[test]
fn port_data_is_bounded_both_ways() {
    let mem = mem_two_regions();
    let tx = GuestQueue::new(&mem, 0x1000, 8);
    let mut txq = tx.queue();
    // Guest to host: with nobody listening, dropped and returned.
    mem.write_slice(b"hello", GuestAddress(0x10000)).unwrap();
    tx.set_desc(0, desc(0x10000, 5, 0, 0));
    tx.push_avail(0);
    let pass = process_port_tx(&mem, &mut txq, None).unwrap();
    assert_eq!((pass.dropped, pass.blocked, tx.used_idx()), (5, false, 1));
    // With a client: collected; a huge chain gives CHAIN_MAX bytes, and
    // no chain is taken once TX_MAX bytes wait.
    tx.set_desc(1, desc(0x10000, 5, 0, 0));
    tx.set_desc(2, desc(0x100000, 0x200000, 0, 0));
    tx.set_desc(3, desc(0x10000, 5, 0, 0));
    for h in 1..4 {
        tx.push_avail(h);
    }
    let mut out = Vec::new();
    let pass = process_port_tx(&mem, &mut txq, Some(&mut out)).unwrap();
    assert_eq!(&out[..5], b"hello");
    assert_eq!(out.len(), 5 + CHAIN_MAX);
    assert!(pass.blocked);
    assert_eq!(pass.dropped, 0x200000 - CHAIN_MAX as u64);
    assert_eq!(tx.used_idx(), 3, "the last chain waits");
    out.clear();
    let pass = process_port_tx(&mem, &mut txq, Some(&mut out)).unwrap();
    assert_eq!(
        (out.as_slice(), pass.blocked, tx.used_idx()),
        (&b"hello"[..], false, 4)
    );

    // Host to guest: split over the buffers offered, what is left kept.
    let rx = GuestQueue::new(&mem, 0x2000, 8);
    let mut rxq = rx.queue();
    let mut data: VecDeque<u8> = b"0123456789".iter().copied().collect();
    rx.set_desc(0, desc(0x20000, 4, 2, 0));
    rx.set_desc(1, desc(0x21000, 4, 2, 0));
    rx.push_avail(0);
    rx.push_avail(1);
    assert!(fill_port_rx(&mem, &mut rxq, &mut data).unwrap());
    assert_eq!((rx.used_elem(0), rx.used_elem(1)), ((0, 4), (1, 4)));
    assert_eq!(data, b"89");
    let mut got = [0u8; 4];
    mem.read_slice(&mut got, GuestAddress(0x21000)).unwrap();
    assert_eq!(&got, b"4567");
}

#[test]
fn hostile_chains_are_queue_errors() {
    let mem = mem_two_regions();
    let q = GuestQueue::new(&mem, 0x1000, 8);
    // A loop, a buffer outside guest memory, a head past the table.
    let chains: [&dyn Fn(); 3] = [
        &|| {
            q.set_desc(0, desc(0x10000, 8, 1, 1));
            q.set_desc(1, desc(0x10000, 8, 1, 0));
        },
        &|| q.set_desc(0, desc(0x3000_0000, 8, 2, 0)),
        &|| {},
    ];
    for (i, make) in chains.iter().enumerate() {
        let mut dq = q.queue();
        q.set_avail_idx(0);
        make();
        if i == 2 {
            q.push_avail(100);
        } else {
            q.push_avail(0);
        }
        let mut c = Control::new(false);
        c.handle(msg(0, DEVICE_READY, 1));
        assert!(
            process_ctrl_tx(&mem, &mut dq, &mut c, &mut Vec::new()).is_err(),
            "{i}"
        );
        let mut dq = q.queue();
        assert!(
            process_port_tx(&mem, &mut dq, Some(&mut Vec::new())).is_err(),
            "{i}"
        );
        let mut dq = q.queue();
        assert!(fill_ctrl_rx(&mem, &mut dq, &mut c).is_err(), "{i}");
        let mut dq = q.queue();
        let mut d: VecDeque<u8> = [1u8].into_iter().collect();
        assert!(fill_port_rx(&mem, &mut dq, &mut d).is_err(), "{i}");
    }
}

mod device;
