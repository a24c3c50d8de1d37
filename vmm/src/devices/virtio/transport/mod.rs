//! The virtio-pci transport (virtio 1.2, 4.1): a modern (non-transitional)
//! PCI function whose BAR 0 holds every register block, found by the
//! driver through vendor capabilities in configuration space.
//!
//! BAR 0 (32-bit memory, [`BAR_SIZE`] bytes):
//! ```text
//! 0x0000 common configuration   (VIRTIO_PCI_CAP_COMMON_CFG)
//! 0x1000 ISR status             (VIRTIO_PCI_CAP_ISR_CFG)
//! 0x2000 device configuration   (VIRTIO_PCI_CAP_DEVICE_CFG)
//! 0x3000 queue notify, 4 bytes per queue (VIRTIO_PCI_CAP_NOTIFY_CFG);
//!        KVM ioeventfds catch these writes, so they never reach here
//!        once wired (a write that does is forwarded to the same eventfd)
//! 0x4000 MSI-X table; 0x5000 MSI-X PBA
//! ```
//! A VIRTIO_PCI_CAP_PCI_CFG capability also reaches BAR 0 through
//! configuration space, for drivers that cannot map it.
//! IDs are the modern ones (0x1040 + type), revision 1, subsystem
//! 0x1af4:0x1100, as QEMU gives its modern devices and the virtio-win
//! INFs match.
//!
//! A transitional device ([`VirtioPciDevice::new_transitional`]) has the
//! legacy IDs instead (0x1000 net, 0x1001 block, 0x1005 entropy;
//! revision 0, subsystem device = virtio type), the legacy register block
//! in I/O BAR 0 (`legacy.rs`), the layout above in BAR
//! [`TRANSITIONAL_MODERN_BAR`], and an INTx pin.

mod common;
mod interrupt;
mod legacy;

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use super::msix::{MsiVectors, ENTRY_SIZE};
use super::VirtioDevice;
use crate::devices::pci::{
    BarMove, PciBar, PciBarKind, PciConfiguration, PciDevice, PciError, PciHeader,
};
use crate::devices::GuestMemoryMmap;
use common::CommonConfig;
pub use interrupt::{VirtioInterrupt, NO_VECTOR};
pub use legacy::{
    legacy_layout, Mode, F_ANY_LAYOUT, LEGACY_ALIGN, LEGACY_BAR_INDEX, LEGACY_BAR_SIZE,
    LEGACY_NOTIFY, TRANSITIONAL_MODERN_BAR,
};

pub const VIRTIO_VENDOR_ID: u16 = 0x1af4;
pub const VIRTIO_DEVICE_ID_BASE: u16 = 0x1040;
pub const SUBSYSTEM_ID: u16 = 0x1100;

pub const BAR_INDEX: usize = 0;
pub const BAR_SIZE: u64 = 0x8000;
pub const COMMON_OFFSET: u64 = 0x0000;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
const REGION_SIZE: u64 = 0x1000;
/// Bytes between two queues' notify addresses.
pub const NOTIFY_MULTIPLIER: u32 = 4;

const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("building the PCI function")]
    Pci(#[from] PciError),
    #[error("creating a queue eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("virtio device type {0} has no transitional PCI ID")]
    NoLegacyId(u32),
}

/// A virtio device as a PCI function.
pub struct VirtioPciDevice {
    config: PciConfiguration,
    device: Box<dyn VirtioDevice>,
    common: CommonConfig,
    interrupt: Arc<VirtioInterrupt>,
    queue_evts: Vec<EventFd>,
    mem: GuestMemoryMmap,
    /// Configuration register holding the MSI-X message control (upper
    /// half).
    msix_reg: usize,
    /// First register of the VIRTIO_PCI_CAP_PCI_CFG capability.
    pci_cfg_reg: usize,
    /// The BAR holding the modern layout ([`BAR_INDEX`], or
    /// [`TRANSITIONAL_MODERN_BAR`] for a transitional device).
    modern_bar: usize,
    /// A transitional device: legacy block in I/O BAR 0.
    transitional: bool,
    /// The interface the driver chose (transitional devices).
    mode: Mode,
}

fn vendor_cap(bar: usize, cfg_type: u8, offset: u64, length: u64, extra: Option<u32>) -> Vec<u8> {
    // After id and next: cap_len, cfg_type, bar, id, padding[2], offset, length.
    let len = if extra.is_some() { 20 } else { 16 };
    let mut b = vec![len, cfg_type, bar as u8, 0, 0, 0];
    b.extend_from_slice(&(offset as u32).to_le_bytes());
    b.extend_from_slice(&(length as u32).to_le_bytes());
    if let Some(x) = extra {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

impl VirtioPciDevice {
    /// Wrap `device`; its BAR 0 starts at `bar_addr` (0: unassigned).
    /// `vectors` delivers its MSI-X vectors (one per queue, plus one for
    /// configuration changes).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        vectors: Arc<dyn MsiVectors>,
        bar_addr: u64,
    ) -> Result<Self, TransportError> {
        Self::build(device, mem, vectors, bar_addr, None)
    }

    /// A transitional device: as [`Self::new`] with the modern layout in
    /// BAR [`TRANSITIONAL_MODERN_BAR`] at `bar_addr`, plus the legacy
    /// block in I/O BAR 0 at port `io_addr` (0: unassigned), the legacy
    /// IDs and INTA#. Give it its INTx line with
    /// [`VirtioInterrupt::set_intx`] and say which GSI that is with
    /// [`Self::set_interrupt_line`].
    pub fn new_transitional(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        vectors: Arc<dyn MsiVectors>,
        bar_addr: u64,
        io_addr: u64,
    ) -> Result<Self, TransportError> {
        Self::build(device, mem, vectors, bar_addr, Some(io_addr))
    }

    fn build(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        vectors: Arc<dyn MsiVectors>,
        bar_addr: u64,
        io_addr: Option<u64>,
    ) -> Result<Self, TransportError> {
        let max_sizes = device.queue_max_sizes();
        let num_queues = max_sizes.len();
        let num_vectors = Self::vectors_for(num_queues);
        let dev_type = device.device_type();
        let transitional = io_addr.is_some();
        let modern_bar = if transitional {
            TRANSITIONAL_MODERN_BAR
        } else {
            BAR_INDEX
        };
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: VIRTIO_VENDOR_ID,
            device_id: if transitional {
                legacy::legacy_device_id(dev_type).ok_or(TransportError::NoLegacyId(dev_type))?
            } else {
                VIRTIO_DEVICE_ID_BASE + dev_type as u16
            },
            class_code: device.class_code(),
            revision_id: if transitional { 0 } else { 1 },
            subsystem_vendor_id: VIRTIO_VENDOR_ID,
            subsystem_id: if transitional {
                dev_type as u16
            } else {
                SUBSYSTEM_ID
            },
        });
        if let Some(io) = io_addr {
            config.add_bar(&PciBar {
                index: LEGACY_BAR_INDEX,
                kind: PciBarKind::Io,
                prefetchable: false,
                addr: io,
                size: LEGACY_BAR_SIZE,
            })?;
            config.set_interrupt(1, 0);
        }
        config.add_bar(&PciBar {
            index: modern_bar,
            kind: PciBarKind::Memory32,
            prefetchable: false,
            addr: bar_addr,
            size: BAR_SIZE,
        })?;
        config.add_capability(
            CAP_VENDOR,
            &vendor_cap(modern_bar, CFG_COMMON, COMMON_OFFSET, REGION_SIZE, None),
        )?;
        config.add_capability(
            CAP_VENDOR,
            &vendor_cap(
                modern_bar,
                CFG_NOTIFY,
                NOTIFY_OFFSET,
                REGION_SIZE,
                Some(NOTIFY_MULTIPLIER),
            ),
        )?;
        config.add_capability(
            CAP_VENDOR,
            &vendor_cap(modern_bar, CFG_ISR, ISR_OFFSET, REGION_SIZE, None),
        )?;
        config.add_capability(
            CAP_VENDOR,
            &vendor_cap(modern_bar, CFG_DEVICE, DEVICE_CFG_OFFSET, REGION_SIZE, None),
        )?;
        // The BAR access window through configuration space (a driver
        // that cannot map the BAR uses it): bar, offset, length, data.
        let mut pci_cfg = vendor_cap(modern_bar, CFG_PCI, 0, 0, Some(0));
        pci_cfg[2] = 0;
        let pci_cfg_cap = config.add_capability(CAP_VENDOR, &pci_cfg)?;
        let pci_cfg_reg = pci_cfg_cap / 4;
        config.set_writable(pci_cfg_reg + 1, 0x0000_00ff);
        for r in 2..5 {
            config.set_writable(pci_cfg_reg + r, u32::MAX);
        }
        // MSI-X: message control (table size - 1), table and PBA in BAR 0.
        let mut msix = Vec::with_capacity(10);
        msix.extend_from_slice(&(num_vectors - 1).to_le_bytes());
        msix.extend_from_slice(&(MSIX_TABLE_OFFSET as u32 | modern_bar as u32).to_le_bytes());
        msix.extend_from_slice(&(MSIX_PBA_OFFSET as u32 | modern_bar as u32).to_le_bytes());
        let msix_cap = config.add_capability(CAP_MSIX, &msix)?;
        let msix_reg = msix_cap / 4;
        // Enable and function mask are the guest's to write.
        config.set_writable(msix_reg, 0xc000_0000);
        let interrupt = Arc::new(VirtioInterrupt::new(num_vectors, num_queues, vectors));
        let queue_evts = (0..num_queues)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))
            .collect::<Result<Vec<_>, _>>()
            .map_err(TransportError::EventFd)?;
        Ok(VirtioPciDevice {
            config,
            common: CommonConfig::new(&max_sizes, device.features()),
            device,
            interrupt,
            queue_evts,
            mem,
            msix_reg,
            pci_cfg_reg,
            modern_bar,
            transitional,
            mode: Mode::Unset,
        })
    }

    /// The BAR holding the modern layout (common configuration, notify,
    /// MSI-X table).
    pub fn modern_bar(&self) -> usize {
        self.modern_bar
    }

    /// True for a transitional device (legacy block in I/O BAR 0).
    pub fn is_transitional(&self) -> bool {
        self.transitional
    }

    /// The interface the driver chose since the last reset.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The interrupt line register (the GSI of the device's INTx).
    pub fn set_interrupt_line(&mut self, line: u8) {
        if self.transitional {
            self.config.set_interrupt(1, line);
        }
    }

    /// The port of the legacy block (0: none or unassigned).
    pub fn io_addr(&self) -> u64 {
        match self.transitional {
            true => self.config.bar(LEGACY_BAR_INDEX).map_or(0, |b| b.addr),
            false => 0,
        }
    }

    /// MSI-X vectors for a device with `num_queues` queues.
    pub fn vectors_for(num_queues: usize) -> u16 {
        (num_queues + 1).min(256) as u16
    }

    /// The eventfd the guest's notify write for queue `q` signals; the VMM
    /// registers each as a KVM ioeventfd at [`Self::notify_addr`].
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// Guest physical address of queue `q`'s notify register, given BAR 0
    /// at `bar_addr`.
    pub fn notify_addr(bar_addr: u64, q: usize) -> u64 {
        bar_addr + NOTIFY_OFFSET + q as u64 * u64::from(NOTIFY_MULTIPLIER)
    }

    pub fn bar_addr(&self) -> u64 {
        self.config.bar(self.modern_bar).map_or(0, |b| b.addr)
    }

    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// The BAR access the VIRTIO_PCI_CAP_PCI_CFG window describes, if
    /// valid: offset and length (1, 2 or 4, aligned, inside BAR 0).
    fn pci_cfg_access(&self) -> Option<(u64, usize)> {
        let bar = self.config.reg(self.pci_cfg_reg + 1) & 0xff;
        let offset = u64::from(self.config.reg(self.pci_cfg_reg + 2));
        let len = self.config.reg(self.pci_cfg_reg + 3) as usize;
        (bar == self.modern_bar as u32
            && matches!(len, 1 | 2 | 4)
            && offset.is_multiple_of(len as u64)
            && offset + len as u64 <= BAR_SIZE)
            .then_some((offset, len))
    }

    fn read_bar0(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            o if o < ISR_OFFSET => self.common.read(o, data, &self.interrupt),
            o if o < DEVICE_CFG_OFFSET => {
                data.fill(0);
                if o == ISR_OFFSET && !data.is_empty() {
                    data[0] = self.interrupt.take_isr();
                }
            }
            o if o < NOTIFY_OFFSET => self.device.read_config(o - DEVICE_CFG_OFFSET, data),
            o if o < MSIX_TABLE_OFFSET => data.fill(0),
            o if o < MSIX_PBA_OFFSET => self
                .interrupt
                .msix()
                .read_table(o - MSIX_TABLE_OFFSET, data),
            o if o < MSIX_PBA_OFFSET + REGION_SIZE => {
                self.interrupt.msix().read_pba(o - MSIX_PBA_OFFSET, data)
            }
            _ => data.fill(0),
        }
    }

    fn write_bar0(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o < ISR_OFFSET => {
                if !self.choose(Mode::Modern, o == 0x14 && data == [0]) {
                    return;
                }
                let action = self.common.write(o, data, &self.interrupt);
                self.apply(action);
            }
            o if o < DEVICE_CFG_OFFSET => {}
            o if o < NOTIFY_OFFSET => self.device.write_config(o - DEVICE_CFG_OFFSET, data),
            o if o < MSIX_TABLE_OFFSET => {
                let q = ((o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER)) as usize;
                if let Some(evt) = self.queue_evts.get(q) {
                    // Normally KVM's ioeventfd takes this write; here only
                    // if it is not registered (tests, a BAR out of place).
                    log::debug!("virtio: queue {q} notified through a vCPU exit");
                    let _ = evt.write(1);
                }
            }
            o if o < MSIX_PBA_OFFSET => {
                let interrupt = self.interrupt.clone();
                let mut msix = interrupt.msix();
                if (o - MSIX_TABLE_OFFSET) < u64::from(msix.num_vectors()) * ENTRY_SIZE {
                    msix.write_table(o - MSIX_TABLE_OFFSET, data, interrupt.vectors());
                }
            }
            _ => {}
        }
    }

    fn apply(&mut self, action: common::Action) {
        match action {
            common::Action::None => {}
            common::Action::Reset => {
                log::debug!("virtio type {}: reset by the driver", self.device_type());
                self.device.reset();
                self.common.reset();
                self.interrupt.reset();
                self.mode = Mode::Unset;
            }
            common::Action::Activate => {
                match self
                    .common
                    .activation(&self.mem, &self.interrupt, &self.queue_evts)
                {
                    Ok(ctx) => {
                        if let Err(e) = self.device.activate(ctx) {
                            log::error!(
                                "virtio type {}: activation failed: {e}",
                                self.device_type()
                            );
                            self.interrupt.set_needs_reset();
                        }
                    }
                    Err(e) => {
                        log::error!("virtio type {}: cannot activate: {e}", self.device_type());
                        self.interrupt.set_needs_reset();
                    }
                }
            }
        }
    }
}

impl Drop for VirtioPciDevice {
    fn drop(&mut self) {
        self.device.reset();
    }
}

impl PciDevice for VirtioPciDevice {
    fn config_read(&mut self, reg_idx: usize) -> u32 {
        if reg_idx == self.pci_cfg_reg + 4 {
            if let Some((offset, len)) = self.pci_cfg_access() {
                let mut b = [0u8; 4];
                self.read_bar0(offset, &mut b[..len]);
                self.config.set_reg(reg_idx, u32::from_le_bytes(b));
            }
        }
        self.config.read_reg(reg_idx)
    }

    fn config_write(&mut self, reg_idx: usize, offset: u64, data: &[u8]) -> Option<BarMove> {
        let mv = self.config.write_reg(reg_idx, offset, data);
        if reg_idx == self.pci_cfg_reg + 4 {
            if let Some((bar_offset, len)) = self.pci_cfg_access() {
                let b = self.config.reg(reg_idx).to_le_bytes();
                self.write_bar0(bar_offset, &b[..len]);
            }
        }
        if reg_idx == self.msix_reg {
            let control = (self.config.reg(reg_idx) >> 16) as u16;
            let interrupt = self.interrupt.clone();
            interrupt.msix().set_control(control, interrupt.vectors());
        }
        mv
    }

    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if bar == self.modern_bar && offset < BAR_SIZE {
            self.read_bar0(offset, data);
        } else if self.transitional && bar == LEGACY_BAR_INDEX && offset < LEGACY_BAR_SIZE {
            self.read_legacy(offset, data);
        } else {
            data.fill(0xff);
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar == self.modern_bar && offset < BAR_SIZE {
            self.write_bar0(offset, data);
        } else if self.transitional && bar == LEGACY_BAR_INDEX && offset < LEGACY_BAR_SIZE {
            self.write_legacy(offset, data);
        }
    }
}

#[cfg(test)]
mod tests;
