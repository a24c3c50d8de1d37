//! virtio-blk (virtio 1.2, 5.2) on any [`kiln_block::Disk`] (raw or qcow2,
//! format always explicit).
//!
//! - `device.rs`: the [`VirtioDevice`](super::VirtioDevice): features,
//!   configuration space, activation of the worker.
//! - `request.rs`: serving the queue, a plain function of (memory, queue,
//!   backend): parses each request, does the I/O, writes the status.

mod device;
mod request;
#[cfg(test)]
mod tests;

pub use device::{BlockDevice, BlockOptions};
pub use request::{process_queue, BlockBackend, RequestError, Served};

pub const SECTOR_SIZE: u64 = 512;
/// The serial returned by GET_ID is at most this long.
pub const ID_BYTES: usize = 20;

/// Request types.
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;

/// Status byte values.
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

/// Feature bits.
pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;

/// Discard / write-zeroes segments accepted in one request.
pub const MAX_DISCARD_SEGS: u32 = 32;
