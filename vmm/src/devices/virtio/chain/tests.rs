//! Tests of the chain module: the walk's checks against hostile chains, and
//! copies between a chain's buffers and the device.

use super::*;
use crate::devices::virtio::testing::{desc, mem_two_regions, GuestQueue};

#[test]
fn simple_chain_splits_readable_and_writable() {
    let mem = mem_two_regions();
    let q = GuestQueue::new(&mem, 0x1000, 16);
    q.set_desc(0, desc(0x10000, 16, F_NEXT, 1));
    q.set_desc(1, desc(0x11000, 512, F_NEXT | F_WRITE, 2));
    q.set_desc(2, desc(0x12000, 1, F_WRITE, 0));
    let c = walk(&mem, q.desc_table, 16, 0).unwrap();
    assert_eq!(
        c.readable[..],
        [Segment {
            addr: 0x10000,
            len: 16
        }]
    );
    assert_eq!(c.writable.len(), 2);
    let b = Buffers {
        mem: &mem,
        chain: &c,
    };
    assert_eq!(b.writable_len(), 513);
    assert_eq!(b.write(510, &[1, 2, 3, 4]).unwrap(), 3);
    let mut x = [0u8; 3];
    mem.read_slice(&mut x[..2], GuestAddress(0x111fe)).unwrap();
    mem.read_slice(&mut x[2..], GuestAddress(0x12000)).unwrap();
    assert_eq!(x, [1, 2, 3]);
}

#[test]
fn header_loads_and_status_stores_take_the_short_path_or_fall_back() {
    let mem = mem_two_regions();
    let q = GuestQueue::new(&mem, 0x1000, 16);
    let hdr: Vec<u8> = (1..=16).collect();
    mem.write_slice(&hdr, GuestAddress(0x10000)).unwrap();
    // Header in one descriptor, then data and a separate status byte.
    q.set_desc(0, desc(0x10000, 16, F_NEXT, 1));
    q.set_desc(1, desc(0x11000, 8, F_NEXT | F_WRITE, 2));
    q.set_desc(2, desc(0x12000, 1, F_WRITE, 0));
    // The same header split 5 + 11, and a status sharing the data's
    // buffer (its last byte).
    q.set_desc(3, desc(0x10000, 5, F_NEXT, 4));
    q.set_desc(4, desc(0x10005, 11, F_NEXT, 5));
    q.set_desc(5, desc(0x13000, 9, F_WRITE, 0));
    for (head, status_at) in [(0u16, 0x12000u64), (3, 0x13008)] {
        let c = walk(&mem, q.desc_table, 16, head).unwrap();
        let b = Buffers {
            mem: &mem,
            chain: &c,
        };
        // Split: no short path; read() still gives the bytes.
        let want: [u8; 16] = hdr.clone().try_into().unwrap();
        match b.read_array::<16>(0) {
            Some(h) => assert_eq!((head, h), (0, want)),
            None => {
                assert_eq!(head, 3);
                let mut h = [0u8; 16];
                assert_eq!(b.read(0, &mut h), Ok(16));
                assert_eq!(h, want);
            }
        }
        assert_eq!(b.read_array::<4>(12), Some([13, 14, 15, 16]));
        // Past the end of the readable stream.
        assert_eq!(b.read_array::<4>(14), None);
        assert!(b.write_last(0x5a));
        assert_eq!(mem.read_obj::<u8>(GuestAddress(status_at)).unwrap(), 0x5a);
    }
    // No writable buffer: nothing to store the status in.
    q.set_desc(6, desc(0x10000, 16, 0, 0));
    let c = walk(&mem, q.desc_table, 16, 6).unwrap();
    let b = Buffers {
        mem: &mem,
        chain: &c,
    };
    assert!(!b.write_last(0));
}

#[test]
fn loops_are_refused() {
    let mem = mem_two_regions();
    let q = GuestQueue::new(&mem, 0x1000, 8);
    q.set_desc(0, desc(0x10000, 16, F_NEXT, 1));
    q.set_desc(1, desc(0x10000, 16, F_NEXT, 0));
    assert_eq!(walk(&mem, q.desc_table, 8, 0), Err(ChainError::TooLong(8)));
    // Self loop.
    q.set_desc(3, desc(0x10000, 16, F_NEXT, 3));
    assert_eq!(walk(&mem, q.desc_table, 8, 3), Err(ChainError::TooLong(8)));
}

#[test]
fn indices_and_addresses_out_of_range_are_refused() {
    let mem = mem_two_regions();
    let q = GuestQueue::new(&mem, 0x1000, 8);
    assert!(matches!(
        walk(&mem, q.desc_table, 8, 8),
        Err(ChainError::IndexOutOfRange { index: 8, size: 8 })
    ));
    q.set_desc(0, desc(0x10000, 16, F_NEXT, 200));
    assert!(matches!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::IndexOutOfRange { index: 200, .. })
    ));
    // Past the end of guest memory, and wrapping the address space.
    q.set_desc(0, desc(0x7_0000_0000, 16, 0, 0));
    assert!(matches!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::BufferOutOfMemory { .. })
    ));
    q.set_desc(0, desc(u64::MAX - 4, 16, 0, 0));
    assert!(matches!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::BufferOutOfMemory { .. })
    ));
    // Across the gap between the two regions.
    q.set_desc(0, desc(0x3f000, 0x2000, 0, 0));
    assert!(matches!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::BufferOutOfMemory { .. })
    ));
    // A descriptor table outside memory.
    assert!(matches!(
        walk(&mem, 0x7_0000_0000, 8, 0),
        Err(ChainError::TableOutOfMemory(_))
    ));
}

#[test]
fn buffers_across_adjacent_regions_work() {
    let mem = mem_two_regions();
    let q = GuestQueue::new(&mem, 0x1000, 8);
    // [0x100000, 0x140000) and [0x140000, 0x600000) are two regions
    // that touch: a buffer may cross from one into the other.
    q.set_desc(0, desc(0x13f000, 0x2000, F_WRITE, 0));
    let c = walk(&mem, q.desc_table, 8, 0).unwrap();
    let b = Buffers {
        mem: &mem,
        chain: &c,
    };
    let data: Vec<u8> = (0..0x2000u32).map(|i| i as u8).collect();
    assert_eq!(b.write(0, &data).unwrap(), 0x2000);
    let mut back = vec![0u8; 0x2000];
    mem.read_slice(&mut back, GuestAddress(0x13f000)).unwrap();
    assert_eq!(back, data);
}

#[test]
fn indirect_tables_are_checked() {
    let mem = mem_two_regions();
    let q = GuestQueue::new(&mem, 0x1000, 8);
    // A good indirect table of 2 entries at 0x20000.
    q.write_desc_at(0x20000, 0, desc(0x10000, 16, F_NEXT, 1));
    q.write_desc_at(0x20000, 1, desc(0x11000, 1, F_WRITE, 0));
    q.set_desc(0, desc(0x20000, 32, F_INDIRECT, 0));
    let c = walk(&mem, q.desc_table, 8, 0).unwrap();
    assert_eq!((c.readable.len(), c.writable.len()), (1, 1));
    // Nested.
    q.write_desc_at(0x20000, 1, desc(0x20000, 32, F_INDIRECT, 0));
    assert_eq!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::NestedIndirect)
    );
    // Loop inside the indirect table.
    q.write_desc_at(0x20000, 1, desc(0x11000, 1, F_NEXT, 0));
    assert_eq!(walk(&mem, q.desc_table, 8, 0), Err(ChainError::TooLong(8)));
    // Bad lengths, NEXT with INDIRECT, a table outside memory.
    q.set_desc(0, desc(0x20000, 33, F_INDIRECT, 0));
    assert_eq!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::IndirectLength(33))
    );
    q.set_desc(0, desc(0x20000, 0, F_INDIRECT, 0));
    assert_eq!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::IndirectLength(0))
    );
    q.set_desc(0, desc(0x20000, 32, F_INDIRECT | F_NEXT, 1));
    assert_eq!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::IndirectWithNext)
    );
    q.set_desc(0, desc(0x7_0000_0000, 32, F_INDIRECT, 0));
    assert!(matches!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::TableOutOfMemory(_))
    ));
    // Far too big a table (more than u16::MAX entries).
    q.set_desc(0, desc(0x20000, 0x10_0000, F_INDIRECT, 0));
    assert_eq!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::IndirectLength(0x10_0000))
    );
}

#[test]
fn readable_after_writable_and_huge_chains_are_refused() {
    let mem = mem_two_regions();
    let q = GuestQueue::new(&mem, 0x1000, 8);
    q.set_desc(0, desc(0x10000, 16, F_NEXT | F_WRITE, 1));
    q.set_desc(1, desc(0x11000, 16, 0, 0));
    assert_eq!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::ReadableAfterWritable)
    );
    // Two 3 GiB buffers would need a 6 GiB guest: use the same small
    // buffer with a huge length in the check instead.
    q.set_desc(0, desc(0x10000, u32::MAX, 0, 0));
    assert!(matches!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::BufferOutOfMemory { .. })
    ));
}

#[test]
fn buffers_in_several_regions_are_checked_each() {
    let mem = mem_two_regions();
    let q = GuestQueue::new(&mem, 0x1000, 8);
    // The walk keeps the last region it looked up: buffers that hop
    // between regions, and one across two adjacent ones, still pass.
    q.set_desc(0, desc(0x10000, 16, F_NEXT, 1));
    q.set_desc(1, desc(0x150000, 16, F_NEXT, 2));
    q.set_desc(2, desc(0x100000, 16, F_NEXT, 3));
    q.set_desc(3, desc(0x13f000, 0x2000, F_NEXT, 4));
    q.set_desc(4, desc(0x5ff000, 0x1000, 0, 0));
    let c = walk(&mem, q.desc_table, 8, 0).unwrap();
    assert_eq!(c.readable.len(), 5);
    // Past the end of the region last used, and across the gap after
    // the first region, with good buffers before.
    q.set_desc(4, desc(0x5ff000, 0x1001, 0, 0));
    assert!(matches!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::BufferOutOfMemory { addr: 0x5ff000, .. })
    ));
    q.set_desc(4, desc(0x3f000, 0x2000, 0, 0));
    assert!(matches!(
        walk(&mem, q.desc_table, 8, 0),
        Err(ChainError::BufferOutOfMemory { addr: 0x3f000, .. })
    ));
    // A table whose last descriptor hangs off the end of a region.
    assert!(matches!(
        walk(&mem, 0x40000 - 8, 8, 0),
        Err(ChainError::TableOutOfMemory(_))
    ));
}

#[test]
fn long_chains_spill_to_the_heap_and_still_copy() {
    let mem = mem_two_regions();
    let q = GuestQueue::new(&mem, 0x1000, 32);
    let n = INLINE_SEGMENTS as u16 * 2 + 3;
    q.set_desc(0, desc(0x10000, 16, F_NEXT, 1));
    for i in 1..=n {
        let flags = if i == n { F_WRITE } else { F_WRITE | F_NEXT };
        q.set_desc(i, desc(0x20000 + u64::from(i) * 0x100, 8, flags, i + 1));
    }
    let c = walk(&mem, q.desc_table, 32, 0).unwrap();
    assert!(c.writable.spilled() && !c.readable.spilled());
    assert_eq!(c.writable.len(), usize::from(n));
    let b = Buffers {
        mem: &mem,
        chain: &c,
    };
    let data: Vec<u8> = (0..u32::from(n) * 8).map(|i| i as u8).collect();
    assert_eq!(b.write(0, &data).unwrap(), data.len());
    for i in 1..=u64::from(n) {
        let mut got = [0u8; 8];
        mem.read_slice(&mut got, GuestAddress(0x20000 + i * 0x100))
            .unwrap();
        let at = (i as usize - 1) * 8;
        assert_eq!(&got[..], &data[at..at + 8]);
    }
    // Looping back into the writable part runs past the queue size.
    q.set_desc(n, desc(0x20000, 8, F_WRITE | F_NEXT, 1));
    assert_eq!(
        walk(&mem, q.desc_table, 32, 0),
        Err(ChainError::TooLong(32))
    );
}

#[test]
fn walk_into_reuses_a_chain() {
    let mem = mem_two_regions();
    let q = GuestQueue::new(&mem, 0x1000, 32);
    for i in 0..20u16 {
        q.set_desc(i, desc(0x20000 + u64::from(i) * 0x100, 8, F_NEXT, i + 1));
    }
    q.set_desc(20, desc(0x30000, 4, F_WRITE, 0));
    let mut c = walk(&mem, q.desc_table, 32, 0).unwrap();
    assert!(c.readable.spilled());
    walk_into(&mem, q.desc_table, 32, 19, &mut c).unwrap();
    assert_eq!(c, walk(&mem, q.desc_table, 32, 19).unwrap());
    assert_eq!((c.head, c.readable.len(), c.writable.len()), (19, 1, 1));
}
