//! The legacy (virtio 0.9.5) register block of a transitional device
//! (virtio 1.2, 4.1.4.8 "Legacy Interfaces: A Note on PCI Device Layout"),
//! in the I/O BAR 0 a transitional function has besides its modern BARs.
//!
//! ```text
//! 0x00 host features u32 (RO, bits 0-31)   0x04 guest features u32
//! 0x08 queue address u32 (PFN, 4 KiB)      0x0c queue size u16 (RO)
//! 0x0e queue select u16                    0x10 queue notify u16
//! 0x12 device status u8                    0x13 ISR u8 (RO, read clears)
//! with MSI-X enabled:
//! 0x14 config MSI-X vector u16             0x16 queue MSI-X vector u16
//! then the device configuration (0x18 with MSI-X enabled, else 0x14)
//! ```
//! The queue lives at PFN * 4096 in the legacy split-ring layout: the
//! descriptor table, the available ring right after it, and the used ring
//! at the next 4096-byte boundary; its size is the device's maximum
//! (read-only). There is no FEATURES_OK: the device goes live when the
//! driver sets DRIVER_OK. Accesses of the wrong width at a register read
//! all ones and are ignored on write, a queue select out of range reads a
//! size of zero, and a PFN whose rings do not lie in guest memory is
//! refused (logged, queue left unset).
//!
//! A driver uses one interface: the transport ([`Mode`]) follows whichever
//! the driver writes first after a reset, as QEMU does; writes to the
//! other one (except a reset) are then ignored.
//!
//! What changes for the devices without VERSION_1 (virtio 1.2, the
//! "Legacy Interface" sections of 5.1, 5.2, 5.4):
//! - virtio-net: the header has no `num_buffers` (10 bytes) unless
//!   MRG_RXBUF is negotiated (not offered), so the device tells the tap
//!   the same size.
//! - virtio-blk: the same 16-byte request header and configuration
//!   layout (guest-endian is little-endian on x86); a legacy driver may
//!   negotiate neither ANY_LAYOUT nor anything else and then puts header,
//!   data and status in separate descriptors, which the request parser
//!   takes as it takes any split. BARRIER and SCSI requests are not
//!   offered (their types complete as unsupported).
//! - virtio-rng: nothing.
//!
//! The legacy block offers ANY_LAYOUT (bit 27, implied by VERSION_1),
//! since every device here parses chains by byte offset.

use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueT};

use super::common::{Action, CommonConfig};
use super::interrupt::{VirtioInterrupt, NO_VECTOR};
use crate::devices::virtio::STATUS_DRIVER_OK;
use crate::devices::GuestMemoryMmap;

/// The legacy block is BAR 0 of a transitional function (where legacy
/// drivers, Linux's and SeaBIOS's included, look for it).
pub const LEGACY_BAR_INDEX: usize = 0;
/// Size of the I/O BAR: registers plus the largest device configuration.
pub const LEGACY_BAR_SIZE: u64 = 0x100;
/// The modern BAR of a transitional function (BAR 0 is the I/O BAR).
pub const TRANSITIONAL_MODERN_BAR: usize = 2;
/// Offset of the queue notify register in the I/O BAR.
pub const LEGACY_NOTIFY: u64 = 0x10;
/// Legacy rings: the used ring is aligned to this, the PFN counts it.
pub const LEGACY_ALIGN: u64 = 4096;
/// The transitional PCI device ID of virtio device type `t` (virtio 1.2,
/// 4.1.2.1), if it has one: not a formula (entropy is 0x1005).
pub fn legacy_device_id(t: u32) -> Option<u16> {
    Some(match t {
        1 => 0x1000, // net
        2 => 0x1001, // block
        3 => 0x1003, // console
        4 => 0x1005, // entropy
        5 => 0x1002, // balloon
        8 => 0x1004, // SCSI host
        9 => 0x1009, // 9P transport
        _ => return None,
    })
}

const HOST_FEATURES: u64 = 0x00;
const GUEST_FEATURES: u64 = 0x04;
const QUEUE_PFN: u64 = 0x08;
const QUEUE_NUM: u64 = 0x0c;
const QUEUE_SEL: u64 = 0x0e;
const STATUS: u64 = 0x12;
const ISR: u64 = 0x13;
const CONFIG_VECTOR: u64 = 0x14;
const QUEUE_VECTOR: u64 = 0x16;
const CONFIG_NO_MSIX: u64 = 0x14;
const CONFIG_MSIX: u64 = 0x18;

/// Which interface the driver drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Nothing written since the last reset.
    Unset,
    Legacy,
    Modern,
}

/// VIRTIO_F_ANY_LAYOUT: legacy drivers may lay out chains freely.
pub const F_ANY_LAYOUT: u64 = 1 << 27;

/// The features the legacy block offers: the low half of the device's,
/// plus ANY_LAYOUT.
fn legacy_host_features(device: u64) -> u32 {
    (device | F_ANY_LAYOUT) as u32
}

/// Where the legacy rings of a `size`-entry queue at `base` lie:
/// (descriptor table, available ring, used ring, end).
pub fn legacy_layout(base: u64, size: u16) -> (u64, u64, u64, u64) {
    let n = u64::from(size);
    let avail = base + 16 * n;
    let used = (avail + 6 + 2 * n).next_multiple_of(LEGACY_ALIGN);
    (base, avail, used, used + 6 + 8 * n)
}

/// Where the device configuration starts in the I/O BAR.
pub fn config_offset(msix_enabled: bool) -> u64 {
    if msix_enabled {
        CONFIG_MSIX
    } else {
        CONFIG_NO_MSIX
    }
}

/// What a legacy access reached.
pub enum LegacyAccess {
    /// A transport register (handled).
    Register(Action),
    /// The driver notified queue `n`.
    Notify(u16),
    /// Device configuration at this offset.
    Config(u64),
}

fn value(data: &[u8]) -> Option<u32> {
    match data.len() {
        1 => Some(u32::from(data[0])),
        2 => Some(u32::from(u16::from_le_bytes([data[0], data[1]]))),
        4 => Some(u32::from_le_bytes(data.try_into().ok()?)),
        _ => None,
    }
}

/// The register at `offset` and its width, given whether MSI-X is on.
fn register(offset: u64, msix: bool) -> Option<usize> {
    Some(match offset {
        HOST_FEATURES | GUEST_FEATURES | QUEUE_PFN => 4,
        QUEUE_NUM | QUEUE_SEL | LEGACY_NOTIFY => 2,
        STATUS | ISR => 1,
        CONFIG_VECTOR | QUEUE_VECTOR if msix => 2,
        _ => return None,
    })
}

impl CommonConfig {
    fn legacy_pfn(&self) -> u32 {
        self.queues
            .get(usize::from(self.queue_select))
            .filter(|q| q.ready())
            .map_or(0, |q| (q.desc_table() / LEGACY_ALIGN) as u32)
    }

    /// A legacy read at `offset` of the I/O BAR.
    pub fn legacy_read(
        &mut self,
        offset: u64,
        data: &mut [u8],
        irq: &VirtioInterrupt,
        msix: bool,
    ) -> Option<u64> {
        let cfg = config_offset(msix);
        if offset >= cfg {
            return Some(offset - cfg);
        }
        let ok = register(offset, msix) == Some(data.len());
        let sel = usize::from(self.queue_select);
        let v: u32 = match offset {
            _ if !ok => {
                data.fill(0xff);
                return None;
            }
            HOST_FEATURES => legacy_host_features(self.device_features),
            GUEST_FEATURES => self.driver_features as u32,
            QUEUE_PFN => self.legacy_pfn(),
            QUEUE_NUM => self.queues.get(sel).map_or(0, |q| u32::from(q.max_size())),
            QUEUE_SEL => u32::from(self.queue_select),
            LEGACY_NOTIFY => 0,
            STATUS => u32::from(irq.status()),
            ISR => u32::from(irq.take_isr()),
            CONFIG_VECTOR => u32::from(irq.config_vector().load(Ordering::Acquire)),
            _ => irq.queue_vector(sel).map_or(u32::from(NO_VECTOR), |v| {
                u32::from(v.load(Ordering::Acquire))
            }),
        };
        data.copy_from_slice(&v.to_le_bytes()[..data.len()]);
        None
    }

    /// A legacy write at `offset` of the I/O BAR.
    pub fn legacy_write(
        &mut self,
        offset: u64,
        data: &[u8],
        irq: &VirtioInterrupt,
        mem: &GuestMemoryMmap,
        msix: bool,
    ) -> LegacyAccess {
        let cfg = config_offset(msix);
        if offset >= cfg {
            return LegacyAccess::Config(offset - cfg);
        }
        let none = LegacyAccess::Register(Action::None);
        let (true, Some(v)) = (register(offset, msix) == Some(data.len()), value(data)) else {
            log::debug!(
                "virtio legacy: {}-byte write at {offset:#x} ignored",
                data.len()
            );
            return none;
        };
        let live = self.live;
        match offset {
            GUEST_FEATURES if !live => {
                // Only what the device offers; VERSION_1 cannot be set here.
                self.driver_features = u64::from(v & legacy_host_features(self.device_features));
            }
            QUEUE_PFN if !live => self.legacy_set_pfn(v, mem),
            QUEUE_SEL => self.queue_select = v as u16,
            LEGACY_NOTIFY => return LegacyAccess::Notify(v as u16),
            STATUS => return LegacyAccess::Register(self.legacy_status(v as u8, irq)),
            CONFIG_VECTOR => irq.config_vector().store(v as u16, Ordering::Release),
            QUEUE_VECTOR => {
                if let Some(q) = irq.queue_vector(usize::from(self.queue_select)) {
                    q.store(v as u16, Ordering::Release);
                }
            }
            _ => {}
        }
        none
    }

    /// The driver placed the selected queue at `pfn` (0: no queue).
    fn legacy_set_pfn(&mut self, pfn: u32, mem: &GuestMemoryMmap) {
        let sel = self.queue_select;
        let Some(q) = self.queues.get_mut(usize::from(sel)) else {
            log::warn!("virtio legacy: queue address for queue {sel}, which does not exist");
            return;
        };
        if pfn == 0 {
            q.reset();
            return;
        }
        let size = q.max_size();
        let (desc, avail, used, _) = legacy_layout(u64::from(pfn) * LEGACY_ALIGN, size);
        // Both the probe and the queue get the rings and become ready.
        let place = |q: &mut Queue| {
            let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
            let (lo, hi) = split(desc);
            q.set_desc_table_address(lo, hi);
            let (lo, hi) = split(avail);
            q.set_avail_ring_address(lo, hi);
            let (lo, hi) = split(used);
            q.set_used_ring_address(lo, hi);
            q.set_ready(true);
        };
        let mut probe = Queue::new(size).expect("the queue was built with this size");
        place(&mut probe);
        if !probe.is_valid(mem) {
            log::warn!(
                "virtio legacy: queue {sel} at PFN {pfn:#x} is not in guest memory; ignored"
            );
            return;
        }
        q.set_size(size);
        place(q);
    }

    fn legacy_status(&mut self, value: u8, irq: &VirtioInterrupt) -> Action {
        if value == 0 {
            return Action::Reset;
        }
        let old = irq.status();
        // DRIVER_OK once set stays set until reset.
        let new = value | (old & STATUS_DRIVER_OK);
        irq.set_status(new);
        if new & STATUS_DRIVER_OK != 0 && !self.live {
            self.live = true;
            return Action::Activate;
        }
        Action::None
    }
}

impl super::VirtioPciDevice {
    /// Whether an access to the `want` interface may go on, choosing it
    /// if the driver has not chosen yet. A reset (`is_reset`) always may.
    pub(super) fn choose(&mut self, want: Mode, is_reset: bool) -> bool {
        if !self.transitional || is_reset {
            return true;
        }
        match self.mode {
            Mode::Unset => {
                log::debug!(
                    "virtio type {}: the driver uses the {want:?} interface",
                    self.device_type()
                );
                self.mode = want;
                true
            }
            m if m == want => true,
            m => {
                log::warn!(
                    "virtio type {}: the driver touched the {want:?} interface after choosing {m:?}; ignored",
                    self.device_type()
                );
                false
            }
        }
    }

    pub(super) fn read_legacy(&mut self, offset: u64, data: &mut [u8]) {
        let msix = self.interrupt.msix().enabled();
        if let Some(cfg) = self.common.legacy_read(offset, data, &self.interrupt, msix) {
            self.device.read_config(cfg, data);
        }
    }

    pub(super) fn write_legacy(&mut self, offset: u64, data: &[u8]) {
        let msix = self.interrupt.msix().enabled();
        let is_reset = offset == STATUS && data == [0];
        if !self.choose(Mode::Legacy, is_reset) {
            return;
        }
        match self
            .common
            .legacy_write(offset, data, &self.interrupt, &self.mem, msix)
        {
            LegacyAccess::Register(action) => self.apply(action),
            LegacyAccess::Notify(q) => {
                // Normally KVM's PIO ioeventfd takes this write.
                if let Some(evt) = self.queue_evts.get(usize::from(q)) {
                    log::debug!("virtio legacy: queue {q} notified through a vCPU exit");
                    let _ = evt.write(1);
                }
            }
            LegacyAccess::Config(o) => self.device.write_config(o, data),
        }
    }
}
