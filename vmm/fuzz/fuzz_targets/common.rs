//! Shared by the fuzz targets: guest memory with awkward regions, a queue
//! laid out in it, and an in-memory disk (fast enough for millions of
//! runs; the real raw and qcow2 backends have their own tests and fuzzing
//! in kiln-block). Each target uses only part of it.
#![allow(dead_code)]

use std::sync::Mutex;

use kiln_block::Disk;
use kiln_vmm::memory::GuestMemoryMmap;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

pub const DESC: u64 = 0x0;
pub const AVAIL: u64 = 0x1000;
pub const USED: u64 = 0x2000;

/// [0, 0x10000) and [0x10000, 0x20000) touch; [0x30000, 0x40000) is
/// after a hole.
pub fn memory(image: &[u8]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x10000),
        (GuestAddress(0x10000), 0x10000),
        (GuestAddress(0x30000), 0x10000),
    ])
    .expect("fixed layout");
    let n = image.len().min(0x20000);
    mem.write_slice(&image[..n], GuestAddress(0)).expect("fits");
    mem
}

/// The input of the queue targets: the queue size (a power of two up to
/// 256, from byte 0), the available index (bytes 1 and 2), `n` bytes of
/// the target's own parameters, and the guest memory image (the rest).
/// None if the input is shorter than that.
pub fn queue_input(data: &[u8], n: usize) -> Option<(u16, u16, &[u8], &[u8])> {
    if data.len() < 3 + n {
        return None;
    }
    let size = 1u16 << (data[0] % 9);
    let avail_idx = u16::from_le_bytes([data[1], data[2]]);
    Some((size, avail_idx, &data[3..3 + n], &data[3 + n..]))
}

/// [`memory`] from `image` with the rings' indices set: the available
/// index to `avail_idx`, the used index to 0.
pub fn ring_memory(image: &[u8], avail_idx: u16) -> GuestMemoryMmap {
    let mem = memory(image);
    mem.write_obj(avail_idx, GuestAddress(AVAIL + 2))
        .expect("fixed layout");
    mem.write_obj(0u16, GuestAddress(USED + 2))
        .expect("fixed layout");
    mem
}

/// After a queue of `size` entries was served without an error, no more
/// chains may be complete than were offered. Unless the available index
/// itself changed: a device-writable buffer may lie on the ring, and then
/// the device's own writes (random bytes from virtio-rng, disk data) offer
/// more; [`assert_used_were_taken`] still holds then.
pub fn assert_no_more_used_than_offered(mem: &GuestMemoryMmap, avail_idx: u16, size: u16) {
    let now: u16 = mem.read_obj(GuestAddress(AVAIL + 2)).expect("fixed layout");
    if now != avail_idx {
        return;
    }
    let used: u16 = mem.read_obj(GuestAddress(USED + 2)).expect("fixed layout");
    assert!(
        used <= avail_idx.min(size),
        "completed {used} of {avail_idx}"
    );
}

/// After serving without an error, the used index the driver sees is the
/// device's count of completions, and the device completed no chain it
/// did not take (both counts start at 0; a run takes far fewer than
/// 65536).
pub fn assert_used_were_taken(mem: &GuestMemoryMmap, q: &Queue) {
    let used: u16 = mem.read_obj(GuestAddress(USED + 2)).expect("fixed layout");
    assert_eq!(used, q.next_used(), "published used index");
    assert!(
        q.next_used() <= q.next_avail(),
        "completed {} of {} taken",
        q.next_used(),
        q.next_avail()
    );
}

/// A ready queue of `size` entries (a power of two) at the fixed layout.
pub fn queue(mem: &GuestMemoryMmap, size: u16) -> Queue {
    let mut q = Queue::new(256).expect("256 is valid");
    q.set_size(size);
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_ready(true);
    assert!(q.is_valid(mem));
    q
}

/// A disk held in memory.
pub struct MemDisk {
    pub data: Mutex<Vec<u8>>,
    pub read_only: bool,
}

impl MemDisk {
    pub fn new(size: usize, read_only: bool) -> Self {
        MemDisk {
            data: Mutex::new(vec![0; size]),
            read_only,
        }
    }

    fn range(&self, offset: u64, len: u64) -> kiln_block::Result<std::ops::Range<usize>> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize..end as usize),
            _ => Err(kiln_block::Error::OutOfRange { offset, len, size }),
        }
    }
}

impl Disk for MemDisk {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> kiln_block::Result<()> {
        let r = self.range(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.data.lock().unwrap()[r]);
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> kiln_block::Result<()> {
        if self.read_only {
            return Err(kiln_block::Error::ReadOnly);
        }
        let r = self.range(offset, buf.len() as u64)?;
        self.data.lock().unwrap()[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> kiln_block::Result<()> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> kiln_block::Result<()> {
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> kiln_block::Result<()> {
        if self.read_only {
            return Err(kiln_block::Error::ReadOnly);
        }
        let r = self.range(offset, len)?;
        self.data.lock().unwrap()[r].fill(0);
        Ok(())
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
}
