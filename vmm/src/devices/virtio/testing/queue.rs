//! [`GuestQueue`]: a split virtqueue in guest memory seen from the
//! driver's side. It lays out (or adopts) the descriptor table and both
//! rings, writes descriptors, offers chains, reads what the device used,
//! and hands out the device-side `virtio_queue::Queue` configured to match.
//!
//! Its stores go straight into the guest memory region holding the queue
//! (looked up once), as a guest driver's plain stores would, and fall back
//! to the general guest memory path elsewhere: the benchmarks time this
//! side with the device, so its cost must stay small. A misuse (an index
//! outside the table, memory that is not there) panics: this is a test
//! driver.

use std::cell::Cell;
use std::sync::atomic::{fence, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, VolatileMemory,
    VolatileSlice,
};

use super::{desc, DESC_NEXT, DESC_WRITE};
use crate::devices::GuestMemoryMmap;

/// A split queue of `size` entries in guest memory: the descriptor table
/// at `desc_table`, the available ring at `avail`, the used ring at `used`.
pub struct GuestQueue<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub size: u16,
    pub desc_table: u64,
    pub avail: u64,
    pub used: u64,
    /// The driver's available index (what it last published).
    avail_idx: Cell<u16>,
    /// The guest memory region holding the descriptor table, and where it
    /// starts.
    region: Option<(VolatileSlice<'a>, u64)>,
}

impl<'a> GuestQueue<'a> {
    /// Lay out a queue at `base` (available ring after the table, used ring
    /// after that, 4-aligned) and clear it.
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
        let end = used + 6 + 8 * u64::from(size);
        mem.write_slice(&vec![0u8; (end - base) as usize], GuestAddress(base))
            .expect("the queue lies in guest memory");
        Self::at(mem, size, base, avail, used)
    }

    /// Adopt the queue whose parts a driver placed at these addresses,
    /// leaving memory as it is (a fuzz input's rings); the driver's
    /// available index starts at 0.
    pub fn at(mem: &'a GuestMemoryMmap, size: u16, desc_table: u64, avail: u64, used: u64) -> Self {
        let region = mem.find_region(GuestAddress(desc_table)).and_then(|r| {
            let slice = r.as_volatile_slice().ok()?;
            Some((slice, r.start_addr().0))
        });
        GuestQueue {
            mem,
            size,
            desc_table,
            avail,
            used,
            avail_idx: Cell::new(0),
            region,
        }
    }

    /// Store `v` at guest address `addr`: a plain store when it lies in
    /// the queue's region, else through the general guest memory path.
    fn store<T: ByteValued>(&self, addr: u64, v: T) {
        let at = self.region.as_ref().and_then(|(slice, start)| {
            let off = usize::try_from(addr.checked_sub(*start)?).ok()?;
            slice.get_ref::<T>(off).ok()
        });
        match at {
            Some(r) => r.store(v),
            None => self
                .mem
                .write_obj(v, GuestAddress(addr))
                .expect("a driver store lies in guest memory"),
        }
    }

    /// The value at guest address `addr`, read as [`store`](Self::store)
    /// writes.
    fn load<T: ByteValued>(&self, addr: u64) -> T {
        let at = self.region.as_ref().and_then(|(slice, start)| {
            let off = usize::try_from(addr.checked_sub(*start)?).ok()?;
            slice.get_ref::<T>(off).ok()
        });
        match at {
            Some(r) => r.load(),
            None => self
                .mem
                .read_obj(GuestAddress(addr))
                .expect("a driver load lies in guest memory"),
        }
    }

    /// The byte at guest address `addr` (a request's status).
    pub fn read_u8(&self, addr: u64) -> u8 {
        self.load(addr)
    }

    /// Write descriptor `i` of the queue's table (`d` from [`desc`]).
    pub fn set_desc(&self, i: u16, d: [u8; 16]) {
        assert!(
            i < self.size,
            "descriptor {i} outside a table of {}",
            self.size
        );
        self.write_desc_at(self.desc_table, i, d);
    }

    /// Write descriptor `i` of the table at `table` (an indirect one, or a
    /// hostile driver's).
    pub fn write_desc_at(&self, table: u64, i: u16, d: [u8; 16]) {
        self.store(table + 16 * u64::from(i), d);
    }

    /// Offer the chain at `head` (publishes the available index).
    pub fn push_avail(&self, head: u16) {
        let idx = self.avail_idx.get();
        let slot = u64::from(idx % self.size);
        self.store(self.avail + 4 + 2 * slot, head.to_le());
        // The entry before the index that publishes it, as a driver does.
        fence(Ordering::Release);
        self.set_avail_idx(idx.wrapping_add(1));
    }

    /// Write the available index directly (a hostile driver may lie).
    pub fn set_avail_idx(&self, idx: u16) {
        self.avail_idx.set(idx);
        self.store(self.avail + 2, idx.to_le());
    }

    /// How many chains the driver has offered (wrapping).
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx.get()
    }

    /// The available index in guest memory now (the device's writes may
    /// have changed it when a device-writable buffer lies on the ring).
    pub fn avail_idx_in_memory(&self) -> u16 {
        u16::from_le(self.load(self.avail + 2))
    }

    /// Chains offered and not yet used.
    pub fn free(&self) -> u16 {
        self.avail_idx.get().wrapping_sub(self.used_idx())
    }

    /// The device's used index.
    pub fn used_idx(&self) -> u16 {
        u16::from_le(self.load(self.used + 2))
    }

    /// (head, bytes written) of used element `i` (taken modulo the size).
    pub fn used_elem(&self, i: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(i % self.size);
        (u32::from_le(self.load(at)), u32::from_le(self.load(at + 4)))
    }

    /// The device-side queue, configured and enabled as the transport
    /// would after the driver set it up.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).expect("a queue size in 1..=32768, a power of two");
        q.set_size(self.size);
        q.set_desc_table_address(
            Some(self.desc_table as u32),
            Some((self.desc_table >> 32) as u32),
        );
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_ready(true);
        assert!(q.is_valid(self.mem), "the device accepts the queue layout");
        q
    }

    /// Write a virtio-blk request header at `at`: `kind` (T_IN etc.),
    /// reserved 0, `sector`.
    pub fn write_blk_header(&self, at: u64, kind: u32, sector: u64) {
        self.store(at, u64::from(kind).to_le());
        self.store(at + 8, sector.to_le());
    }

    /// Offer one virtio-blk request of type `kind` at `sector` from
    /// descriptor `first` on: the 16-byte header written at `at.hdr`, the
    /// data buffer at `at.data` if `data` gives its length and whether the
    /// device writes it, the status byte at `at.status` (preset to 0xff so
    /// that a request the device never finished shows).
    pub fn push_blk(
        &self,
        first: u16,
        kind: u32,
        sector: u64,
        at: BlkBuffers,
        data: Option<(u32, bool)>,
    ) {
        self.write_blk_header(at.hdr, kind, sector);
        self.store(at.status, 0xffu8);
        let mut i = first;
        let next = i.wrapping_add(1);
        self.set_desc(i, desc(at.hdr, 16, DESC_NEXT, next));
        if let Some((len, device_writes)) = data {
            i = next;
            let next = i.wrapping_add(1);
            let flags = if device_writes {
                DESC_NEXT | DESC_WRITE
            } else {
                DESC_NEXT
            };
            self.set_desc(i, desc(at.data, len, flags, next));
        }
        self.set_desc(i.wrapping_add(1), desc(at.status, 1, DESC_WRITE, 0));
        self.push_avail(first);
    }
}

/// Where a virtio-blk request's parts lie in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct BlkBuffers {
    pub hdr: u64,
    pub data: u64,
    pub status: u64,
}
