//! The driver's side of a split virtqueue, for benchmarks that drive the
//! device request handlers ([`process_queue`](super::process_queue),
//! `net::process_tx`/`process_rx`) with no guest: [`DriverQueue`] lays the
//! descriptor table and both rings out in guest memory, fills descriptors
//! and publishes them as a driver would, and hands out the device-side
//! `virtio_queue::Queue` configured to match. [`DriverQueue::push_block`]
//! offers one virtio-blk request (header, data, status).
//!
//! The driver's stores go straight into the guest memory region holding
//! the queue (looked up once), as a guest driver's plain stores would:
//! this side stands in for the guest's vCPU, so its cost should not weigh
//! on the device path the benchmarks time beside it.
//!
//! Used by `benches/src/bin/virtio_blk_bench.rs` and `virtio_net_bench.rs`;
//! the unit tests have their own helper (`test_utils.rs`, test-only).

use std::sync::atomic::{fence, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryRegion,
    VolatileMemory, VolatileSlice,
};

use super::{T_IN, T_OUT};
use crate::memory::GuestMemoryMmap;

/// Descriptor flags.
pub const DESC_NEXT: u16 = 1;
pub const DESC_WRITE: u16 = 2;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("guest memory access failed")]
    Memory(#[source] GuestMemoryError),
    #[error("queue size {0} is not a power of two in 1..=32768")]
    Size(u16),
    #[error("descriptor index {index} is outside a table of {size}")]
    Index { index: u16, size: u16 },
    #[error("the device rejected the queue layout")]
    Layout,
    #[error("the queue at {0:#x} is not in guest memory")]
    NoRegion(u64),
}

/// A split queue in guest memory, seen from the driver: the descriptor
/// table at `base`, the available ring after it, the used ring after that.
pub struct DriverQueue<'m> {
    mem: &'m GuestMemoryMmap,
    size: u16,
    desc_table: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    /// The guest memory region holding the queue, and where it starts.
    region: VolatileSlice<'m>,
    region_start: u64,
}

impl<'m> DriverQueue<'m> {
    /// Lay out a queue of `size` entries at `base` and clear its rings.
    pub fn new(mem: &'m GuestMemoryMmap, base: u64, size: u16) -> Result<Self, DriverError> {
        if size == 0 || !size.is_power_of_two() || size > 32768 {
            return Err(DriverError::Size(size));
        }
        let avail = base + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size)).next_multiple_of(4);
        let end = used + 6 + 8 * u64::from(size);
        mem.write_slice(&vec![0u8; (end - base) as usize], GuestAddress(base))
            .map_err(DriverError::Memory)?;
        let r = mem
            .find_region(GuestAddress(base))
            .ok_or(DriverError::NoRegion(base))?;
        Ok(DriverQueue {
            mem,
            size,
            desc_table: base,
            avail,
            used,
            avail_idx: 0,
            region: r
                .as_volatile_slice()
                .map_err(|_| DriverError::NoRegion(base))?,
            region_start: r.start_addr().0,
        })
    }

    /// Store `v` at guest address `addr`: a plain store when it lies in
    /// the queue's region, else through the general guest memory path.
    fn store<T: ByteValued>(&self, addr: u64, v: T) -> Result<(), DriverError> {
        let at = addr
            .checked_sub(self.region_start)
            .and_then(|off| usize::try_from(off).ok())
            .and_then(|off| self.region.get_ref::<T>(off).ok());
        match at {
            Some(r) => {
                r.store(v);
                Ok(())
            }
            None => self
                .mem
                .write_obj(v, GuestAddress(addr))
                .map_err(DriverError::Memory),
        }
    }

    /// The byte at guest address `addr` (a request's status).
    pub fn read_u8(&self, addr: u64) -> Result<u8, DriverError> {
        let at = addr
            .checked_sub(self.region_start)
            .and_then(|off| usize::try_from(off).ok())
            .and_then(|off| self.region.get_ref::<u8>(off).ok());
        match at {
            Some(r) => Ok(r.load()),
            None => self
                .mem
                .read_obj(GuestAddress(addr))
                .map_err(DriverError::Memory),
        }
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Write descriptor `index`.
    pub fn set_desc(
        &self,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result<(), DriverError> {
        if index >= self.size {
            return Err(DriverError::Index {
                index,
                size: self.size,
            });
        }
        let at = self.desc_table + 16 * u64::from(index);
        let hi = u64::from(len) | u64::from(flags) << 32 | u64::from(next) << 48;
        self.store(at, addr.to_le())?;
        self.store(at + 8, hi.to_le())
    }

    /// Offer the chain starting at `head` (publishes the available index).
    pub fn push_avail(&mut self, head: u16) -> Result<(), DriverError> {
        let slot = u64::from(self.avail_idx % self.size);
        self.store(self.avail + 4 + 2 * slot, head.to_le())?;
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // The entry before the index that publishes it, as a driver does.
        fence(Ordering::Release);
        self.store(self.avail + 2, self.avail_idx.to_le())
    }

    /// How many chains the driver has offered (wrapping).
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// The device's used index.
    pub fn used_idx(&self) -> Result<u16, DriverError> {
        self.mem
            .read_obj(GuestAddress(self.used + 2))
            .map_err(DriverError::Memory)
    }

    /// (head, bytes written) of used element `i` (taken modulo the size).
    pub fn used_elem(&self, i: u16) -> Result<(u32, u32), DriverError> {
        let at = self.used + 4 + 8 * u64::from(i % self.size);
        let id = self
            .mem
            .read_obj(GuestAddress(at))
            .map_err(DriverError::Memory)?;
        let len = self
            .mem
            .read_obj(GuestAddress(at + 4))
            .map_err(DriverError::Memory)?;
        Ok((id, len))
    }

    /// The device-side queue, configured and enabled as the transport
    /// would after the driver set it up.
    pub fn device_queue(&self) -> Result<Queue, DriverError> {
        let mut q = Queue::new(self.size).map_err(|_| DriverError::Size(self.size))?;
        q.set_size(self.size);
        q.set_desc_table_address(
            Some(self.desc_table as u32),
            Some((self.desc_table >> 32) as u32),
        );
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_ready(true);
        if !q.is_valid(self.mem) {
            return Err(DriverError::Layout);
        }
        Ok(q)
    }

    /// Offer one virtio-blk read (`write == false`: T_IN, the data buffer
    /// device-writable) or write (T_OUT) of `len` bytes at `sector`, as
    /// descriptors `first`, `first + 1`, `first + 2`: the 16-byte header
    /// written at `hdr`, the data at `data`, the status byte at `status`
    /// (preset to 0xff so that a request the device never finished shows).
    #[allow(clippy::too_many_arguments)]
    pub fn push_block(
        &mut self,
        first: u16,
        write: bool,
        sector: u64,
        hdr: u64,
        data: u64,
        len: u32,
        status: u64,
    ) -> Result<(), DriverError> {
        let kind = if write { T_OUT } else { T_IN };
        // type, reserved (0), sector.
        self.store(hdr, u64::from(kind).to_le())?;
        self.store(hdr + 8, sector.to_le())?;
        self.store(status, 0xffu8)?;
        let data_flags = if write {
            DESC_NEXT
        } else {
            DESC_NEXT | DESC_WRITE
        };
        self.set_desc(first, hdr, 16, DESC_NEXT, first.wrapping_add(1))?;
        self.set_desc(
            first.wrapping_add(1),
            data,
            len,
            data_flags,
            first.wrapping_add(2),
        )?;
        self.set_desc(first.wrapping_add(2), status, 1, DESC_WRITE, 0)?;
        self.push_avail(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_request_is_served_through_the_driver_queue() {
        use std::sync::Arc;
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
        let mut b = super::super::BlockBackend::new(Arc::from(disk), "x", false);
        let mut dq = DriverQueue::new(&mem, 0x1000, 8).unwrap();
        let mut q = dq.device_queue().unwrap();
        dq.push_block(0, false, 8, 0x8000, 0x9000, 4096, 0x7000)
            .unwrap();
        super::super::process_queue(&mem, &mut q, &mut b).unwrap();
        assert_eq!(dq.used_idx().unwrap(), 1);
        assert_eq!(dq.used_elem(0).unwrap(), (0, 4097));
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x7000)).unwrap(), 0);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x9fff)).unwrap(), 0x5a);
        assert!(dq.set_desc(8, 0, 0, 0, 0).is_err());
        assert!(DriverQueue::new(&mem, 0x1000, 3).is_err());
    }
}
