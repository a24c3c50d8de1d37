//! Test helpers: guest memory with awkward regions, and a split virtqueue
//! laid out in it that tests fill descriptor by descriptor, as a driver
//! (or a hostile one) would.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;

/// Guest memory: [0, 0x40000), a gap, then [0x100000, 0x140000) and
/// [0x140000, 0x600000), two regions that touch.
pub fn mem_two_regions() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x40000),
        (GuestAddress(0x100000), 0x40000),
        (GuestAddress(0x140000), 0x4c0000),
    ])
    .unwrap()
}

/// A descriptor as 16 raw bytes.
pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    d
}

/// A split queue in guest memory: descriptor table at `base`, available
/// ring after it, used ring after that (4-aligned).
pub struct GuestQueue<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub size: u16,
    pub desc_table: u64,
    pub avail: u64,
    pub used: u64,
    avail_idx: std::cell::Cell<u16>,
}

impl<'a> GuestQueue<'a> {
    pub fn new(mem: &'a GuestMemoryMmap, base: u64, size: u16) -> Self {
        Self::with_align(mem, base, size, 4)
    }

    /// A queue in the legacy (virtio 0.9.5) layout: the used ring at the
    /// next 4096-byte boundary, as a legacy driver places it at a PFN.
    pub fn legacy(mem: &'a GuestMemoryMmap, base: u64, size: u16) -> Self {
        Self::with_align(mem, base, size, 4096)
    }

    fn with_align(mem: &'a GuestMemoryMmap, base: u64, size: u16, align: u64) -> Self {
        let avail = base + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size)).next_multiple_of(align);
        let q = GuestQueue {
            mem,
            size,
            desc_table: base,
            avail,
            used,
            avail_idx: std::cell::Cell::new(0),
        };
        // Clear the rings.
        let end = used + 6 + 8 * u64::from(size);
        mem.write_slice(&vec![0u8; (end - base) as usize], GuestAddress(base))
            .unwrap();
        q
    }

    pub fn set_desc(&self, i: u16, d: [u8; 16]) {
        self.write_desc_at(self.desc_table, i, d);
    }

    pub fn write_desc_at(&self, table: u64, i: u16, d: [u8; 16]) {
        self.mem
            .write_slice(&d, GuestAddress(table + 16 * u64::from(i)))
            .unwrap();
    }

    /// Offer the chain at `head`.
    pub fn push_avail(&self, head: u16) {
        let idx = self.avail_idx.get();
        let slot = u64::from(idx % self.size);
        self.mem
            .write_obj(head, GuestAddress(self.avail + 4 + 2 * slot))
            .unwrap();
        self.set_avail_idx(idx.wrapping_add(1));
    }

    /// Write the available index directly (a hostile driver may lie).
    pub fn set_avail_idx(&self, idx: u16) {
        self.avail_idx.set(idx);
        self.mem
            .write_obj(idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// (id, len) of used element `i`.
    pub fn used_elem(&self, i: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(i % self.size);
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    /// A device-side queue configured as a driver would.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.set_desc_table_address(
            Some(self.desc_table as u32),
            Some((self.desc_table >> 32) as u32),
        );
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_ready(true);
        assert!(q.is_valid(self.mem));
        q
    }
}
