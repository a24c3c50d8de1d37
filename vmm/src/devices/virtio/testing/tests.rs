//! The test driver's own checks: a virtio-blk request offered in one call
//! is served, its layout checks hold, and the in-memory disk keeps to its
//! size and read-only flag.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use kiln_block::Disk;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::devices::virtio::block::{process_queue, BlockBackend, T_IN};

#[test]
fn a_block_request_is_served_through_the_driver_queue() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let path = std::env::temp_dir().join(format!("kiln-bench-support-{}", std::process::id()));
    std::fs::write(&path, vec![0x5au8; 1 << 16]).unwrap();
    let disk = kiln_block::open_disk(
        &path,
        kiln_block::DiskFormat::Raw,
        kiln_block::OpenOptions::default(),
    )
    .unwrap();
    let _ = std::fs::remove_file(&path);
    let mut b = BlockBackend::new(Arc::from(disk), "x", false);
    let dq = GuestQueue::new(&mem, 0x1000, 8);
    let mut q = dq.queue();
    let at = BlkBuffers {
        hdr: 0x8000,
        data: 0x9000,
        status: 0x7000,
    };
    dq.push_blk(0, T_IN, 8, at, Some((4096, true)));
    process_queue(&mem, &mut q, &mut b).unwrap();
    assert_eq!(dq.used_idx(), 1);
    assert_eq!(dq.used_elem(0), (0, 4097));
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x7000)).unwrap(), 0);
    assert_eq!(dq.read_u8(0x7000), 0);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x9fff)).unwrap(), 0x5a);
    // A descriptor outside the table, a queue size the device refuses.
    assert!(catch_unwind(AssertUnwindSafe(|| dq.set_desc(8, desc(0, 0, 0, 0)))).is_err());
    assert!(catch_unwind(|| GuestQueue::new(&mem, 0x1000, 3).queue()).is_err());
}

#[test]
fn stores_across_regions_land_in_guest_memory() {
    // The queue's region ends at 0x40000; an indirect table in the next
    // region goes through the general path.
    let mem = mem_two_regions();
    let gq = GuestQueue::new(&mem, 0x3f000, 16);
    gq.write_desc_at(0x100000, 1, desc(0x1234, 7, DESC_WRITE, 0));
    let mut d = [0u8; 16];
    mem.read_slice(&mut d, GuestAddress(0x100010)).unwrap();
    assert_eq!(d, desc(0x1234, 7, DESC_WRITE, 0));
    gq.set_desc(3, desc(0x5000, 9, DESC_NEXT, 4));
    mem.read_slice(&mut d, GuestAddress(0x3f030)).unwrap();
    assert_eq!(d, desc(0x5000, 9, DESC_NEXT, 4));
    gq.push_avail(3);
    assert_eq!(gq.avail_idx_in_memory(), 1);
    assert_eq!(mem.read_obj::<u16>(GuestAddress(gq.avail + 4)).unwrap(), 3);
}

#[test]
fn the_memory_disk_keeps_to_its_size_and_read_only_flag() {
    let d = MemDisk::new(1024, false);
    d.write_at(1000, &[1; 24]).unwrap();
    assert!(d.write_at(1001, &[1; 24]).is_err());
    let mut b = [0u8; 24];
    d.read_at(1000, &mut b).unwrap();
    assert_eq!(b, [1; 24]);
    d.write_zeroes(1000, 24).unwrap();
    d.read_at(1000, &mut b).unwrap();
    assert_eq!(b, [0; 24]);
    let ro = MemDisk::new(1024, true);
    assert!(ro.write_at(0, &[1]).is_err());
    assert!(ro.read_only());
}
