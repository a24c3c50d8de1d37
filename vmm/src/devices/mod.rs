//! Device models and the buses they sit on.
//!
//! Devices never see KVM: they are driven through [`bus::BusDevice`] by the
//! vCPU threads, raise interrupts through [`Interrupt`], and ask things of
//! the VM as a whole (power off, reset) through [`VmRequests`]. So each is
//! unit-tested without `/dev/kvm`.
//!
//! This is the lowest layer of kiln-vmm: devices depend only on what this
//! module declares (the bus, interrupts, the guest memory type
//! [`GuestMemoryMmap`], VM requests, and [`ThreadStart`], the hook a
//! device thread runs first, which is where the VMM installs its seccomp
//! filter) and on library crates. They never import the VMM's `arch`,
//! `vm`, `memory`, `seccomp` or `net` modules; the device manager hands
//! them what those provide (a tap comes as a
//! [`virtio::net::TapQueue`]). `tests/layering.rs` fails if one does.

pub mod ahci;
pub mod bus;
pub mod display;
pub mod legacy;
pub mod pci;
pub mod tpm;
pub mod virtio;

use std::sync::{Arc, Mutex, OnceLock};

/// Guest memory as devices see it (the VMM's `memory.rs` creates it).
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// What a device thread (virtio worker, RTC timer) runs first, before it
/// touches guest data: the VMM installs its seccomp filter here.
pub trait ThreadStart: Send + Sync {
    /// Set up the calling thread; an error stops the thread.
    fn thread_start(&self) -> Result<(), String>;
    /// Set up a device thread that also serves a unix socket (the
    /// virtio-console's agent port): accept, send, receive.
    fn socket_thread_start(&self) -> Result<(), String> {
        self.thread_start()
    }
}

static THREAD_START: OnceLock<Box<dyn ThreadStart>> = OnceLock::new();

/// Install the process's [`ThreadStart`] hook (once, before any device
/// thread starts; later calls are ignored). Without one, device threads
/// start unconfined (unit tests).
pub fn set_thread_start(hook: Box<dyn ThreadStart>) {
    let _ = THREAD_START.set(hook);
}

/// Run the [`ThreadStart`] hook on the calling thread.
pub fn thread_start() -> Result<(), String> {
    THREAD_START.get().map_or(Ok(()), |h| h.thread_start())
}

/// Run the [`ThreadStart`] socket hook on the calling thread.
pub fn socket_thread_start() -> Result<(), String> {
    THREAD_START
        .get()
        .map_or(Ok(()), |h| h.socket_thread_start())
}

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
