//! virtio 1.x devices on PCI: block, net, entropy, console and input.
//!
//! How the parts fit:
//! - [`transport`]: the virtio-pci "modern" function. Its BAR 0 holds the
//!   common configuration, ISR, device configuration and notification
//!   areas, and the MSI-X table and PBA; its configuration space has the
//!   matching vendor capabilities. It negotiates features, collects the
//!   queues the driver sets up, and activates the device on DRIVER_OK.
//! - [`msix`]: the MSI-X table seen by the guest, and [`msix::MsiVectors`],
//!   the small trait through which interrupts leave the device (KVM irqfds
//!   in `device_manager/interrupts.rs`; a counter in tests).
//! - [`chain`]: walks one descriptor chain with every check a hostile
//!   driver calls for (loops, nesting, addresses outside guest memory).
//!   [`segments`]: its buffer lists, inline (no heap) for the usual
//!   request.
//! - [`queue`]: pops chains off a `virtio_queue::Queue` and returns them,
//!   turning ring errors into [`queue::QueueError`] (the device then needs a
//!   reset). `queue::pop_chain_into` walks each chain into a slot the
//!   device keeps (virtio-blk does), so a request copies no chain.
//! - [`worker`]: a thread per activated device, woken by the queue
//!   eventfds (which KVM signals straight from the guest's notify write).
//! - [`block`], [`net`], [`rng`], [`console`], [`input`] (a tablet): the devices. Request handling is a plain
//!   function of (memory, queue, backend), tested without a thread.
//! - [`rate_limiter`]: token buckets (bytes/s and ops/s).
//! - [`cli`]: the `--disk`, `--net` flag parsers.
//! - `testing` (tests, and the `testing` feature for benches and fuzz
//!   targets): the virtio test driver.

pub mod block;
pub mod chain;
pub mod console;
pub mod input;
pub mod msix;
pub mod net;
pub mod queue;
pub mod rate_limiter;
pub mod rng;
pub mod segments;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transport;
pub mod worker;

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::devices::GuestMemoryMmap;
pub use transport::{VirtioInterrupt, VirtioPciDevice};

/// Device types (virtio 1.2, 5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_CONSOLE: u32 = 3;
pub const TYPE_RNG: u32 = 4;

/// Feature bits common to all devices.
pub const F_INDIRECT_DESC: u64 = 1 << 28;
pub const F_EVENT_IDX: u64 = 1 << 29;
pub const F_VERSION_1: u64 = 1 << 32;

/// Device status bits (virtio 1.2, 2.1).
pub const STATUS_ACKNOWLEDGE: u8 = 1;
pub const STATUS_DRIVER: u8 = 2;
pub const STATUS_DRIVER_OK: u8 = 4;
pub const STATUS_FEATURES_OK: u8 = 8;
pub const STATUS_NEEDS_RESET: u8 = 0x40;
pub const STATUS_FAILED: u8 = 0x80;

/// What a device gets when the driver sets DRIVER_OK.
pub struct ActivateContext {
    pub mem: GuestMemoryMmap,
    /// The queues the driver enabled, in order (a disabled queue is
    /// `None`).
    pub queues: Vec<Option<virtio_queue::Queue>>,
    /// One per queue: written by KVM (ioeventfd) when the guest notifies.
    pub queue_evts: Vec<EventFd>,
    pub interrupt: Arc<VirtioInterrupt>,
    /// The features both sides agreed on.
    pub acked_features: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("queue {0} is required but was not enabled")]
    MissingQueue(usize),
    #[error("duplicating an eventfd failed")]
    EventFd(#[source] std::io::Error),
    #[error("starting the worker thread failed")]
    Thread(#[source] std::io::Error),
    #[error("the backend refused")]
    Backend(#[source] std::io::Error),
}

/// One virtio device model behind the PCI transport.
pub trait VirtioDevice: Send {
    /// [`TYPE_BLOCK`] etc.
    fn device_type(&self) -> u32;
    /// PCI class code (class, subclass, interface).
    fn class_code(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Features offered (including [`F_VERSION_1`]).
    fn features(&self) -> u64;
    /// Read the device configuration space; bytes past its end read zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Write the device configuration space (most devices ignore it).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }
    /// Start serving the queues (normally on a worker thread).
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// Stop serving (device reset); must return only once no worker
    /// touches guest memory any more.
    fn reset(&mut self);
}

/// Read `data.len()` bytes at `offset` of `config`, zero past its end.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}

#[cfg(test)]
mod tests;
