//! virtio-net (virtio 1.2, 5.1) on a tap device: one receive and one
//! transmit queue, the MAC and link status in configuration space, and
//! checksum/TSO/UFO offloads passed through to the tap as the guest
//! accepts them.
//!
//! - `device.rs`: features, configuration space, the worker (woken by the
//!   two queues, the tap and the rate limiter's timer).
//! - `rxtx.rs`: moving frames between the queues and a [`FrameIo`] (the
//!   tap), plain functions of (memory, queue, backend).

mod device;
mod rxtx;
#[cfg(test)]
mod tests;

pub use device::NetDevice;
pub use rxtx::{
    process_rx, process_rx_hdr, process_tx, process_tx_hdr, FrameIo, RxState, MAX_FRAME,
};

/// virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start,
/// csum_offset, num_buffers.
pub const NET_HDR_LEN: usize = crate::net::tap::VNET_HDR_LEN;
/// The header a legacy driver (no VERSION_1, no MRG_RXBUF) uses:
/// virtio_net_hdr without `num_buffers`.
pub const LEGACY_HDR_LEN: usize = 10;

pub const F_CSUM: u64 = 1 << 0;
pub const F_GUEST_CSUM: u64 = 1 << 1;
pub const F_MAC: u64 = 1 << 5;
pub const F_GUEST_TSO4: u64 = 1 << 7;
pub const F_GUEST_TSO6: u64 = 1 << 8;
pub const F_GUEST_UFO: u64 = 1 << 10;
pub const F_HOST_TSO4: u64 = 1 << 11;
pub const F_HOST_TSO6: u64 = 1 << 12;
pub const F_HOST_UFO: u64 = 1 << 14;
pub const F_STATUS: u64 = 1 << 16;

pub const STATUS_LINK_UP: u16 = 1;
