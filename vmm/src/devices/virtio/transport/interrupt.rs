//! How a device's worker interrupts the driver: the ISR byte, the vector
//! of each queue and of configuration changes, and MSI-X delivery. Shared
//! (`Arc`) between the transport on the vCPU threads and the worker.

use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::devices::virtio::msix::{MsiVectors, MsixTable};
use crate::devices::virtio::{STATUS_DRIVER_OK, STATUS_NEEDS_RESET};
use crate::devices::Interrupt;

/// "No vector" in the common configuration's vector fields.
pub const NO_VECTOR: u16 = 0xffff;
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

pub struct VirtioInterrupt {
    msix: Mutex<MsixTable>,
    vectors: Arc<dyn MsiVectors>,
    isr: AtomicU8,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    /// The device status byte (the transport's copy of record).
    status: AtomicU8,
    /// Transitional devices: the INTx line used while MSI-X is off.
    intx: OnceLock<Arc<dyn Interrupt>>,
    /// `config_generation` of the common configuration: changes with every
    /// change of the device configuration space.
    config_generation: AtomicU8,
}

impl VirtioInterrupt {
    pub fn new(num_vectors: u16, num_queues: usize, vectors: Arc<dyn MsiVectors>) -> Self {
        VirtioInterrupt {
            msix: Mutex::new(MsixTable::new(num_vectors)),
            vectors,
            isr: AtomicU8::new(0),
            config_vector: AtomicU16::new(NO_VECTOR),
            queue_vectors: (0..num_queues).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
            status: AtomicU8::new(0),
            intx: OnceLock::new(),
            config_generation: AtomicU8::new(0),
        }
    }

    /// Give the device an INTx line, raised instead of MSI-X vectors while
    /// the driver leaves MSI-X disabled (a legacy driver may). The wiring
    /// keeps it level: raised again after EOI while [`Self::intx_pending`].
    pub fn set_intx(&self, line: Arc<dyn Interrupt>) {
        let _ = self.intx.set(line);
    }

    pub(crate) fn msix(&self) -> MutexGuard<'_, MsixTable> {
        self.msix.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn vectors(&self) -> &dyn MsiVectors {
        &*self.vectors
    }

    fn signal(&self, vector: u16) {
        let mut msix = self.msix();
        if msix.enabled() || self.intx.get().is_none() {
            if vector != NO_VECTOR {
                msix.signal(vector, &*self.vectors);
            }
        } else if let Some(line) = self.intx.get() {
            drop(msix);
            if let Err(e) = line.trigger() {
                log::warn!("virtio: raising INTx failed: {e}");
            }
        }
    }

    /// The device used buffers of queue `q`.
    pub fn signal_queue(&self, q: usize) {
        self.isr.fetch_or(ISR_QUEUE, Ordering::SeqCst);
        if let Some(v) = self.queue_vectors.get(q) {
            self.signal(v.load(Ordering::Acquire));
        }
    }

    /// The device configuration changed.
    pub fn signal_config(&self) {
        self.isr.fetch_or(ISR_CONFIG, Ordering::SeqCst);
        self.signal(self.config_vector.load(Ordering::Acquire));
    }

    /// The device changed its configuration space: a new generation, and
    /// the configuration-change interrupt once the driver is live (the
    /// driver reads the configuration itself when it gets there).
    pub fn config_changed(&self) {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        if self.status.load(Ordering::Acquire) & STATUS_DRIVER_OK != 0 {
            self.signal_config();
        }
    }

    pub fn config_generation(&self) -> u8 {
        self.config_generation.load(Ordering::Acquire)
    }

    /// The driver broke the protocol: set NEEDS_RESET and tell it.
    pub fn set_needs_reset(&self) {
        if self.status.load(Ordering::Acquire) & STATUS_DRIVER_OK != 0 {
            self.status.fetch_or(STATUS_NEEDS_RESET, Ordering::SeqCst);
            self.signal_config();
        }
    }

    pub fn status(&self) -> u8 {
        self.status.load(Ordering::Acquire)
    }

    pub(crate) fn set_status(&self, s: u8) {
        self.status.store(s, Ordering::Release);
    }

    /// Whether a raised INTx should stay raised: MSI-X is off and the
    /// driver has not read the ISR since the device set a bit in it.
    pub fn intx_pending(&self) -> bool {
        !self.msix().enabled() && self.isr.load(Ordering::SeqCst) != 0
    }

    /// Read and clear the ISR.
    pub(crate) fn take_isr(&self) -> u8 {
        self.isr.swap(0, Ordering::SeqCst)
    }

    pub(crate) fn config_vector(&self) -> &AtomicU16 {
        &self.config_vector
    }

    pub(crate) fn queue_vector(&self, q: usize) -> Option<&AtomicU16> {
        self.queue_vectors.get(q)
    }

    /// Back to the state after a device reset (MSI-X table untouched).
    pub(crate) fn reset(&self) {
        self.isr.store(0, Ordering::SeqCst);
        self.config_vector.store(NO_VECTOR, Ordering::SeqCst);
        for v in &self.queue_vectors {
            v.store(NO_VECTOR, Ordering::SeqCst);
        }
        self.status.store(0, Ordering::SeqCst);
    }
}
