//! Tests of the queue module: ring protocol checks, notification suppression
//! and interrupt decisions (a lost one hangs a guest).

use super::*;
use crate::devices::virtio::testing::{desc, mem_two_regions, GuestQueue};

fn read16(mem: &GuestMemoryMmap, at: u64) -> u16 {
    mem.read_obj(GuestAddress(at)).unwrap()
}

fn write16(mem: &GuestMemoryMmap, at: u64, v: u16) {
    mem.write_obj(v, GuestAddress(at)).unwrap();
}

/// A queue of 4 one-descriptor chains (heads 0..4).
fn four(mem: &GuestMemoryMmap) -> GuestQueue<'_> {
    let gq = GuestQueue::new(mem, 0x1000, 4);
    for i in 0..4 {
        gq.set_desc(i, desc(0x10000 + 8 * u64::from(i), 8, 0, 0));
    }
    gq
}

#[test]
fn pops_in_order_and_reports_used() {
    let mem = mem_two_regions();
    let gq = GuestQueue::new(&mem, 0x1000, 4);
    gq.set_desc(0, desc(0x10000, 8, 0, 0));
    gq.set_desc(1, desc(0x10008, 8, 2, 0));
    gq.push_avail(1);
    gq.push_avail(0);
    let mut q = gq.queue();
    assert!(has_pending(&mem, &q).unwrap());
    let mut b = Batch::new(&mem, &mut q).unwrap();
    let c = pop_chain(&mem, &mut b).unwrap().unwrap();
    assert_eq!(c.head, 1);
    complete(&mut b, c.head, 8).unwrap();
    let c = pop_chain(&mem, &mut b).unwrap().unwrap();
    assert_eq!(c.head, 0);
    assert!(pop_chain(&mem, &mut b).unwrap().is_none());
    // Not yet published: one used index store per batch.
    assert_eq!(gq.used_idx(), 0);
    assert!(b.finish().unwrap());
    assert_eq!(gq.used_idx(), 1);
    assert_eq!(gq.used_elem(0), (1, 8));
    // Dropping also publishes.
    complete(&mut b, 0, 3).unwrap();
    drop(b);
    assert_eq!(gq.used_idx(), 2);
    assert_eq!(gq.used_elem(1), (0, 3));
}

#[test]
fn avail_index_beyond_queue_size_is_an_error() {
    let mem = mem_two_regions();
    let gq = GuestQueue::new(&mem, 0x1000, 4);
    gq.set_avail_idx(5);
    let mut q = gq.queue();
    let mut b = Batch::new(&mem, &mut q).unwrap();
    assert!(matches!(
        pop_chain(&mem, &mut b),
        Err(QueueError::AvailIndex)
    ));
    // A head index outside the table.
    let gq = GuestQueue::new(&mem, 0x1000, 4);
    gq.push_avail(9);
    let mut q = gq.queue();
    let mut b = Batch::new(&mem, &mut q).unwrap();
    assert!(matches!(
        pop_chain(&mem, &mut b),
        Err(QueueError::Chain { head: 9, .. })
    ));
    // Completing a head outside the table.
    assert!(complete(&mut b, 4, 0).is_err());
}

#[test]
fn a_lying_index_read_later_in_the_batch_is_caught() {
    let mem = mem_two_regions();
    let gq = four(&mem);
    gq.push_avail(0);
    let mut q = gq.queue();
    let mut b = Batch::new(&mem, &mut q).unwrap();
    assert_eq!(pop_chain(&mem, &mut b).unwrap().unwrap().head, 0);
    // One taken; an index 5 past it is more than a queue's worth.
    gq.set_avail_idx(6);
    assert!(matches!(
        pop_chain(&mem, &mut b),
        Err(QueueError::AvailIndex)
    ));
}

#[test]
fn rings_outside_guest_memory_are_refused() {
    let mem = mem_two_regions();
    let gq = GuestQueue::new(&mem, 0x1000, 4);
    let mut q = gq.queue();
    // The used ring in the gap between regions.
    q.set_used_ring_address(Some(0x80000), Some(0));
    assert!(Batch::new(&mem, &mut q).is_err());
    q.set_used_ring_address(Some(gq.used as u32), Some(0));
    q.set_avail_ring_address(Some(0x3fffe), Some(0));
    assert!(Batch::new(&mem, &mut q).is_err());
    q.set_ready(false);
    assert!(Batch::new(&mem, &mut q).is_err());
}

#[test]
fn entries_added_while_serving_are_served_in_the_same_drain() {
    let mem = mem_two_regions();
    let gq = four(&mem);
    gq.push_avail(0);
    let mut q = gq.queue();
    let mut served = Vec::new();
    let mut round = 0;
    let d = drain(&mem, &mut q, |b| {
        while let Some(c) = pop_chain(&mem, b)? {
            served.push(c.head);
            complete(b, c.head, 0)?;
            // The driver adds one while the first is being served
            // (seen by re-reading the index), and one more after the
            // queue looked empty but before notifications are back
            // on (seen only by the re-check after enabling).
            if c.head == 0 {
                gq.push_avail(1);
            }
        }
        if round == 0 {
            gq.push_avail(2);
        }
        round += 1;
        Ok(true)
    })
    .unwrap();
    assert_eq!(served, [0, 1, 2]);
    assert_eq!(round, 2);
    assert!(d.all && d.notify);
    assert_eq!(gq.used_idx(), 3);
    // Notifications are enabled again (flags 0) after the drain.
    assert_eq!(read16(&mem, gq.used), 0);
}

#[test]
fn notifications_are_suppressed_while_serving_and_restored() {
    let mem = mem_two_regions();
    let gq = four(&mem);
    gq.push_avail(0);
    let mut q = gq.queue();
    drain(&mem, &mut q, |b| {
        assert_eq!(read16(&mem, gq.used), USED_F_NO_NOTIFY);
        while let Some(c) = pop_chain(&mem, b)? {
            complete(b, c.head, 0)?;
        }
        Ok(true)
    })
    .unwrap();
    assert_eq!(read16(&mem, gq.used), 0);
    // A stop (throttled) leaves them suppressed: the device comes back
    // by its timer, and nothing was lost.
    gq.push_avail(1);
    let d = drain(&mem, &mut q, |b| {
        let c = pop_chain(&mem, b)?.unwrap();
        assert_eq!(c.head, 1);
        b.go_to_previous_position();
        Ok(false)
    })
    .unwrap();
    assert_eq!(
        d,
        Drained {
            all: false,
            notify: false
        }
    );
    let d = drain(&mem, &mut q, |b| {
        let c = pop_chain(&mem, b)?.unwrap();
        assert_eq!(c.head, 1);
        complete(b, c.head, 0)?;
        Ok(true)
    })
    .unwrap();
    assert!(d.all && d.notify);
}

#[test]
fn event_idx_avail_event_points_past_what_was_taken() {
    let mem = mem_two_regions();
    let gq = four(&mem);
    let mut q = gq.queue();
    q.set_event_idx(true);
    let avail_event = gq.used + 4 + 8 * 4;
    gq.push_avail(0);
    gq.push_avail(1);
    drain(&mem, &mut q, |b| {
        while let Some(c) = pop_chain(&mem, b)? {
            complete(b, c.head, 0)?;
        }
        Ok(true)
    })
    .unwrap();
    assert_eq!(read16(&mem, avail_event), 2);
    // Flags untouched with EVENT_IDX.
    assert_eq!(read16(&mem, gq.used), 0);
    // Throttled before taking any: avail_event is where the device
    // stopped, not where the driver is, so a later notify is not
    // skipped.
    gq.push_avail(2);
    gq.push_avail(3);
    let mut b = Batch::new(&mem, &mut q).unwrap();
    assert_eq!(pop_chain(&mem, &mut b).unwrap().unwrap().head, 2);
    assert!(b.enable_notification().unwrap(), "3 is pending");
    assert_eq!(read16(&mem, avail_event), 3);
}

#[test]
fn event_idx_interrupts_exactly_when_used_event_is_crossed() {
    let mem = mem_two_regions();
    // Exhaustive over small windows: the decision must match
    // vring_need_event for every used_event and batch size, across
    // the 16-bit wrap.
    for start in [0u16, 65534] {
        for event_off in 0u16..6 {
            for batch in 0u16..4 {
                let gq = four(&mem);
                let mut q = gq.queue();
                q.set_event_idx(true);
                q.set_next_avail(start);
                q.set_next_used(start);
                gq.set_avail_idx(start);
                write16(&mem, gq.used + 2, start);
                let event = start.wrapping_add(event_off).wrapping_sub(1);
                write16(&mem, gq.avail + 4 + 2 * 4, event);
                let mut b = Batch::new(&mem, &mut q).unwrap();
                for _ in 0..batch {
                    complete(&mut b, 0, 0).unwrap();
                }
                // Wanted: the driver asked to hear when the entry at
                // index `event` is used, i.e. event in [start, start+batch).
                let want = event_off >= 1 && event_off <= batch;
                assert_eq!(
                    b.finish().unwrap(),
                    want,
                    "start {start} used_event {event} batch {batch}"
                );
                assert_eq!(gq.used_idx(), start.wrapping_add(batch));
                // The decision covers only what is new since.
                assert!(!b.finish().unwrap());
            }
        }
    }
}

#[test]
fn event_idx_interrupt_decided_over_the_whole_rx_batch() {
    // The receive path completes over one long batch; a used_event
    // the driver set at the first element must still interrupt at
    // the end.
    let mem = mem_two_regions();
    let gq = four(&mem);
    let mut q = gq.queue();
    q.set_event_idx(true);
    write16(&mem, gq.avail + 4 + 2 * 4, 0);
    for i in 0..3 {
        gq.push_avail(i);
    }
    let mut b = Batch::new(&mem, &mut q).unwrap();
    while let Some(c) = pop_chain(&mem, &mut b).unwrap() {
        complete(&mut b, c.head, 0).unwrap();
    }
    assert!(b.finish().unwrap());
}

#[test]
fn pop_chain_into_reuses_one_chain_and_checks_each_walk() {
    // Chains of different shapes walked one after another into the same
    // slot: each comes out as a fresh walk would give it, nothing of
    // the one before left over.
    let mem = mem_two_regions();
    let gq = GuestQueue::new(&mem, 0x1000, 8);
    gq.set_desc(0, desc(0x10000, 16, 1, 1));
    gq.set_desc(1, desc(0x11000, 512, 1 | 2, 2));
    gq.set_desc(2, desc(0x12000, 1, 2, 0));
    gq.set_desc(3, desc(0x13000, 8, 0, 0));
    gq.set_desc(4, desc(0x14000, 16, 1, 4)); // a loop
    for head in [0, 3, 0, 4, 3] {
        gq.push_avail(head);
    }
    let mut q = gq.queue();
    let mut b = Batch::new(&mem, &mut q).unwrap();
    let mut c = Chain::default();
    for head in [0, 3, 0] {
        assert!(pop_chain_into(&mem, &mut b, &mut c).unwrap());
        assert_eq!(c, chain::walk(&mem, gq.desc_table, 8, head).unwrap());
        complete(&mut b, c.head, 0).unwrap();
    }
    assert_eq!(c.readable.len() + c.writable.len(), 3);
    // A malformed chain is still refused when walked into a used slot.
    assert!(matches!(
        pop_chain_into(&mem, &mut b, &mut c),
        Err(QueueError::Chain {
            head: 4,
            source: ChainError::TooLong(8)
        })
    ));
    assert!(pop_chain_into(&mem, &mut b, &mut c).unwrap());
    assert_eq!((c.head, c.readable.len(), c.writable.len()), (3, 1, 0));
    // Nothing more offered: false, and the slot is left as it was.
    assert!(!pop_chain_into(&mem, &mut b, &mut c).unwrap());
    assert_eq!(c.head, 3);
}
