//! virtio-net (virtio 1.2, 5.1) on a tap device: one receive/transmit
//! queue pair per tap queue (`VIRTIO_NET_F_MQ` with a control queue when
//! the tap has several), the MAC and link status in configuration space,
//! and checksum/TSO/UFO offloads passed through to the tap as the guest
//! accepts them.
//!
//! - `device.rs`: features, configuration space, activation.
//! - `worker.rs`: the one worker thread of an activated device, serving
//!   every queue pair, the control queue, the link and the rate limiters.
//! - `rxtx.rs`: moving frames between the queues and a [`FrameIo`] (the
//!   tap), plain functions of (memory, queue, backend).
//! - `ctrl.rs`: the control queue's commands (`VIRTIO_NET_CTRL_MQ`).
//! - `link.rs`: [`NetLink`], the link state the control API changes.
//! - `tap_queue.rs`: [`TapQueue`], what the device needs of a tap queue
//!   (the VMM's `net/tap.rs` implements it); `mac.rs`: MAC addresses.
//!
//! Tests: `tests/mod.rs` (frames through a real tap), `tests/mq.rs` (the whole
//! NIC through the transport with a multi-queue tap, driven by
//! `testing::NetDriver`).

mod ctrl;
mod device;
mod link;
pub mod mac;
mod rxtx;
mod tap_queue;
#[cfg(test)]
mod tests;
mod worker;

pub use ctrl::{parse_ctrl, process_ctrl, CtrlCommand, CTRL_ERR, CTRL_OK};
pub use device::{NetDevice, MAX_QUEUE_PAIRS};
pub use link::NetLink;
pub use rxtx::{
    process_rx, process_rx_hdr, process_rx_limited, process_tx, process_tx_hdr, FrameIo, RxBacklog,
    RxState, MAX_FRAME,
};
pub use tap_queue::TapQueue;

/// virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start,
/// csum_offset, num_buffers.
pub const NET_HDR_LEN: usize = 12;
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
pub const F_CTRL_VQ: u64 = 1 << 17;
pub const F_MQ: u64 = 1 << 22;

pub const STATUS_LINK_UP: u16 = 1;
