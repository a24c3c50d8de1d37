//! The virtio test driver: what a guest driver does to our devices, for
//! the unit tests (`cfg(test)`), the benchmarks and the fuzz targets
//! (kiln-vmm's `testing` feature; a production build leaves it out).
//!
//! - [`GuestQueue`] (`queue.rs`): a split virtqueue in guest memory from the
//!   driver's side: descriptors, available ring, used ring, the matching
//!   device-side `virtio_queue::Queue`, and one-call virtio-blk requests
//!   ([`BlkBuffers`]).
//! - [`TestDriver`] (`pci.rs`): register access to a virtio-pci function as
//!   a driver makes it (capability walk, feature negotiation, MSI-X table),
//!   and [`RecordingVectors`], interrupts that are only recorded.
//! - [`NetDriver`] (`net.rs`): a whole virtio-net NIC driven through the
//!   transport (queues, receive buffers, transmit, control commands).
//! - `disk.rs`: a virtio-blk device on a temporary file, and [`MemDisk`],
//!   a disk held in memory (fast enough for millions of fuzz runs).
//! - [`fuzz`]: the fuzz targets' fixed guest layout and input format, and
//!   the invariants they check after serving a queue.
//! - Here: guest memory with awkward regions, descriptors as bytes, and
//!   [`wait_for`] for what a worker thread does.

mod disk;
pub mod fuzz;
mod net;
mod pci;
mod queue;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use vm_memory::GuestAddress;

use crate::devices::GuestMemoryMmap;

pub use disk::{temp_block_device, MemDisk};
pub use net::{arp_request, NetDriver, GUEST_MAC, NET_BUF, NET_QSIZE};
pub use pci::{RecordingVectors, TestDriver};
pub use queue::{BlkBuffers, GuestQueue};

/// Descriptor flags (virtio 1.2, 2.7.5).
pub const DESC_NEXT: u16 = 1;
pub const DESC_WRITE: u16 = 2;
pub const DESC_INDIRECT: u16 = 4;

/// A descriptor as 16 raw bytes (little-endian, as in guest memory).
#[inline]
pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    d
}

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

/// Whether `cond` holds within 5 s (polled every 2 ms): for what a worker
/// thread does.
pub fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}
