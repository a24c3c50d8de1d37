//! The tablet's configuration space, reports and event delivery, without
//! a worker thread.

use super::*;
use crate::devices::virtio::testing::{desc, mem_two_regions, GuestQueue, DESC_WRITE};
use vm_memory::{Bytes, GuestAddress};

fn select(dev: &mut InputDevice, select: u8, subsel: u8) -> (u8, Vec<u8>) {
    dev.write_config(0, &[select, subsel]);
    let mut cfg = [0u8; CONFIG_LEN];
    dev.read_config(0, &mut cfg);
    assert_eq!(cfg[..2], [select, subsel]);
    let size = cfg[2];
    (size, cfg[8..8 + usize::from(size)].to_vec())
}

fn active_tablet() -> (InputDevice, Tablet) {
    let (dev, tablet) = InputDevice::tablet().unwrap();
    dev.shared.active.store(true, Ordering::Release);
    (dev, tablet)
}

#[test]
fn config_space_describes_a_tablet() {
    let (mut dev, _) = InputDevice::tablet().unwrap();
    assert_eq!(
        select(&mut dev, CFG_ID_NAME, 0),
        (11, b"Kiln Tablet".to_vec())
    );
    let (size, abs) = select(&mut dev, CFG_EV_BITS, EV_ABS as u8);
    assert_eq!((size, abs), (1, vec![0x03]));
    let (size, keys) = select(&mut dev, CFG_EV_BITS, EV_KEY as u8);
    assert_eq!(usize::from(size), 0x112 / 8 + 1);
    assert_eq!(keys[0x110 / 8], 0x07);
    assert_eq!(select(&mut dev, CFG_EV_BITS, EV_REL as u8), (2, vec![0, 1]));
    let (size, info) = select(&mut dev, CFG_ABS_INFO, ABS_Y as u8);
    assert_eq!(size, 20);
    assert_eq!(info[4..8], ABS_MAX.to_le_bytes());
    assert_eq!(select(&mut dev, CFG_ID_DEVIDS, 0).0, 8);
    // Unknown selects and axes: size 0.
    assert_eq!(select(&mut dev, CFG_ABS_INFO, 7).0, 0);
    assert_eq!(select(&mut dev, 0xff, 0xff).0, 0);
    assert_eq!(select(&mut dev, CFG_EV_BITS, 0x15).0, 0);
    // Reads past the end are zero; odd offsets are harmless.
    let mut far = [0xffu8; 4];
    dev.read_config(u64::MAX - 1, &mut far);
    assert_eq!(far, [0; 4]);
    dev.write_config(u64::MAX, &[1, 2]);
}

#[test]
fn reports_become_event_groups() {
    let (_dev, tablet) = InputDevice::tablet().unwrap();
    tablet.report(1, 2, LEFT, 0);
    assert_eq!(tablet.pending(), 0, "no driver: dropped");
    let (dev, tablet) = active_tablet();
    tablet.report(100, 40000, LEFT, 0);
    tablet.report(5, 6, LEFT, -1);
    tablet.report(5, 6, RIGHT, 0);
    let q: Vec<[u8; 8]> = dev
        .shared
        .events
        .lock()
        .unwrap()
        .queue
        .iter()
        .copied()
        .collect();
    assert_eq!(
        q,
        [
            event(EV_ABS, ABS_X, 100),
            event(EV_ABS, ABS_Y, ABS_MAX),
            event(EV_KEY, BTN_LEFT, 1),
            event(EV_SYN, SYN_REPORT, 0),
            event(EV_ABS, ABS_X, 5),
            event(EV_ABS, ABS_Y, 6),
            event(EV_REL, REL_WHEEL, u32::MAX),
            event(EV_SYN, SYN_REPORT, 0),
            event(EV_ABS, ABS_X, 5),
            event(EV_ABS, ABS_Y, 6),
            event(EV_KEY, BTN_LEFT, 0),
            event(EV_KEY, BTN_RIGHT, 1),
            event(EV_SYN, SYN_REPORT, 0),
        ]
    );
    // A guest that takes nothing: whole reports only, bounded.
    for i in 0..1000 {
        tablet.report(i, i, (i % 2) as u8, 0);
    }
    assert!(tablet.pending() <= MAX_EVENTS);
    let q = &dev.shared.events.lock().unwrap().queue;
    assert_eq!(q.back(), Some(&event(EV_SYN, SYN_REPORT, 0)));
}

#[test]
fn delivery_fills_buffers_and_waits_for_more() {
    let mem = mem_two_regions();
    let gq = GuestQueue::new(&mem, 0x1000, 8);
    let mut q = gq.queue();
    let mut pending: VecDeque<[u8; 8]> = (0..3).map(|i| event(EV_ABS, ABS_X, i)).collect();
    // No buffers yet: everything waits, no interrupt.
    assert!(!deliver(&mem, &mut q, &mut pending).unwrap());
    assert_eq!(pending.len(), 3);
    // A buffer too short is given back empty; the event goes in the next.
    gq.set_desc(0, desc(0x10000, 4, DESC_WRITE, 0));
    gq.set_desc(1, desc(0x10010, 8, DESC_WRITE, 0));
    gq.push_avail(0);
    gq.push_avail(1);
    assert!(deliver(&mem, &mut q, &mut pending).unwrap());
    assert_eq!(gq.used_elem(0), (0, 0));
    assert_eq!(gq.used_elem(1), (1, 8));
    let mut got = [0u8; 8];
    mem.read_slice(&mut got, GuestAddress(0x10010)).unwrap();
    assert_eq!(got, event(EV_ABS, ABS_X, 0));
    assert_eq!(pending.len(), 2);
    // A read-only buffer takes nothing either.
    gq.set_desc(2, desc(0x10020, 8, 0, 0));
    gq.push_avail(2);
    deliver(&mem, &mut q, &mut pending).unwrap();
    assert_eq!(gq.used_elem(2), (2, 0));
    assert_eq!(pending.len(), 2);
}

#[test]
fn hostile_chains_are_queue_errors() {
    let mem = mem_two_regions();
    let gq = GuestQueue::new(&mem, 0x1000, 8);
    let mut q = gq.queue();
    // A chain that loops on itself.
    gq.set_desc(0, desc(0x10000, 8, DESC_WRITE | 1, 0));
    gq.push_avail(0);
    let mut pending: VecDeque<[u8; 8]> = [event(EV_SYN, SYN_REPORT, 0)].into();
    assert!(deliver(&mem, &mut q, &mut pending).is_err());
    // A buffer outside guest memory, on the status queue.
    let gq = GuestQueue::new(&mem, 0x3000, 8);
    let mut q = gq.queue();
    gq.set_desc(0, desc(u64::MAX - 4, 8, 0, 0));
    gq.push_avail(0);
    assert!(drain_status(&mem, &mut q).is_err());
}
