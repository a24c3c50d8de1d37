//! Device models and the buses they sit on.
//!
//! Devices never see KVM: they are driven through [`bus::BusDevice`] by the
//! vCPU threads, raise interrupts through [`Interrupt`], and ask things of
//! the VM as a whole (power off, reset) through [`VmRequests`]. So each is
//! unit-tested without `/dev/kvm`.

pub mod bus;
pub mod legacy;
pub mod pci;
pub mod virtio;

use std::sync::{Arc, Mutex};

/// An interrupt line (an irqfd on a GSI, or an MSI vector).
pub trait Interrupt: Send + Sync {
    fn trigger(&self) -> std::io::Result<()>;
}

/// What a device may ask of the VM as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmRequest {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest asked for a reset (i8042 pulse, 0xCF9).
    Reset,
}

/// Where devices send [`VmRequest`]s; the VM's control loop listens.
pub trait VmRequests: Send + Sync {
    fn request(&self, req: VmRequest);
}

/// Records requests in memory: for tests of devices.
#[derive(Default)]
pub struct RecordedRequests(pub Mutex<Vec<VmRequest>>);

impl VmRequests for RecordedRequests {
    fn request(&self, req: VmRequest) {
        self.0.lock().unwrap().push(req);
    }
}

/// Counts triggers: for tests of devices.
#[derive(Default)]
pub struct CountingInterrupt(pub std::sync::atomic::AtomicUsize);

impl Interrupt for CountingInterrupt {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

pub type SharedRequests = Arc<dyn VmRequests>;
