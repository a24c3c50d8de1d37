//! PCI root: configuration mechanism 1, ECAM, host bridge.
//!
//! How the parts fit:
//! - [`PciDevice`] is what a PCI function implements (virtio-pci devices
//!   later): configuration reads/writes, its BARs, and accesses to its BAR
//!   regions. Most embed a [`PciConfiguration`] (type-0 header, BARs with
//!   the sizing protocol, capability list) and forward to it;
//!   [`HeaderOnlyFunction`] is nothing more (the host bridge, the PIIX3
//!   ISA bridge).
//! - [`PciRoot`] is bus 0: a device per slot (function 0 only), the host
//!   bridge at 00:00.0. It is shared (`Arc<Mutex<PciRoot>>`) by the two
//!   ways the guest reaches configuration space:
//! - [`PciConfigIo`] (ports 0xCF8..0xD00, mechanism 1; also the reset
//!   control register at 0xCF9) and [`PciConfigMmio`] (ECAM), both
//!   [`BusDevice`]s.
//! - When a guest write reprograms a BAR, the device's `config_write`
//!   returns a [`BarMove`]; the root passes it, with the slot, to the
//!   [`BarMoveHandler`] the VMM registered, after releasing its lock, so the
//!   VMM can move the BAR's bus mapping (a [`PciBarRegion`]).
//!
//! Lock order: root, then device. BAR accesses lock only the device.

mod config_access;
mod configuration;
pub mod piix;
mod root;

use std::sync::{Arc, Mutex};

use crate::devices::bus::BusDevice;

pub use config_access::{PciConfigIo, PciConfigMmio, PCI_CONFIG_IO_LEN};
pub use configuration::{
    PciConfiguration, PciHeader, NUM_BARS, NUM_CONFIG_REGS, NUM_EXT_CONFIG_REGS,
};
pub use root::{host_bridge, HostBridgeIdentity, PciRoot, NUM_FUNCTIONS, NUM_SLOTS};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    #[error("BAR index {0} out of range")]
    BarIndex(usize),
    #[error("BAR {0} is already in use")]
    BarInUse(usize),
    #[error("invalid BAR size {0:#x}")]
    BarSize(u64),
    #[error("BAR address {0:#x} is not aligned to its size or out of range")]
    BarAddress(u64),
    #[error("no room for a {0}-byte capability")]
    CapabilitySpace(usize),
    #[error("PCI slot {0} is out of range or taken")]
    SlotUnavailable(u8),
    #[error("no free PCI slot")]
    NoFreeSlot,
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciBarKind {
    /// I/O ports.
    Io,
    /// Memory below 4 GiB.
    Memory32,
    /// Memory anywhere; takes two BAR registers.
    Memory64,
}

impl PciBarKind {
    /// True if the BAR is in I/O port space (else MMIO).
    pub fn is_io(self) -> bool {
        self == PciBarKind::Io
    }
}

/// A BAR: where it is now and how big.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciBar {
    /// BAR register number (0..6).
    pub index: usize,
    pub kind: PciBarKind,
    pub prefetchable: bool,
    /// Base address (0: not assigned).
    pub addr: u64,
    /// Size in bytes, a power of two.
    pub size: u64,
}

/// The guest moved a BAR from `old_addr` to `new_addr` (0 as `old_addr`:
/// it was not assigned before).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarMove {
    pub index: usize,
    pub kind: PciBarKind,
    pub old_addr: u64,
    pub new_addr: u64,
    pub size: u64,
}

/// A PCI function on bus 0.
pub trait PciDevice: Send {
    /// Read configuration register `reg_idx` (dword index, 0..1024).
    fn config_read(&mut self, reg_idx: usize) -> u32;

    /// Write `data` (1, 2 or 4 bytes, within the dword) at byte `offset` of
    /// register `reg_idx`. Returns the BAR move this write completed, if
    /// any (see [`PciConfiguration`] for when that is).
    fn config_write(&mut self, reg_idx: usize, offset: u64, data: &[u8]) -> Option<BarMove>;

    /// The BARs with their current addresses.
    fn bars(&self) -> Vec<PciBar>;

    /// A read at `offset` inside BAR `bar`'s region.
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        let _ = (bar, offset);
        data.fill(0xff);
    }

    /// A write at `offset` inside BAR `bar`'s region.
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        let _ = (bar, offset, data);
    }
}

pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// Told when the guest moves a BAR of the device in `slot`. Called from a
/// vCPU thread, with no PCI lock held.
pub trait BarMoveHandler: Send + Sync {
    fn bar_moved(&self, slot: u8, mv: BarMove);
}

/// One BAR of a device, as a [`BusDevice`] to insert on the I/O or MMIO bus
/// at the BAR's address.
pub struct PciBarRegion {
    device: SharedPciDevice,
    bar: usize,
}

impl PciBarRegion {
    pub fn new(device: SharedPciDevice, bar: usize) -> Self {
        PciBarRegion { device, bar }
    }
}

impl BusDevice for PciBarRegion {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bar_read(self.bar, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bar_write(self.bar, offset, data);
    }
}

/// Header-type register (dword 3): bit 23 says multi-function.
const HEADER_TYPE_REG: usize = 3;
const MULTI_FUNCTION: u32 = 0x80 << 16;
/// The first device-specific register (0x40).
const DEVICE_SPECIFIC_FIRST_REG: usize = 0x40 / 4;

/// A function that is only its configuration header, with no BARs: its
/// device-specific registers (0x40..0x100) read back what was written and
/// have no effect. The host bridge and the PIIX3 ISA bridge are such.
pub struct HeaderOnlyFunction {
    config: PciConfiguration,
}

impl HeaderOnlyFunction {
    /// `multi_function` sets the header-type bit that tells firmware to
    /// look for functions 1..7 in the slot.
    pub fn new(header: &PciHeader, multi_function: bool) -> Self {
        let mut config = PciConfiguration::new(header);
        if multi_function {
            config.set_reg(
                HEADER_TYPE_REG,
                config.reg(HEADER_TYPE_REG) | MULTI_FUNCTION,
            );
        }
        for reg in DEVICE_SPECIFIC_FIRST_REG..NUM_CONFIG_REGS {
            config.set_writable(reg, u32::MAX);
        }
        HeaderOnlyFunction { config }
    }
}

impl PciDevice for HeaderOnlyFunction {
    fn config_read(&mut self, reg_idx: usize) -> u32 {
        self.config.read_reg(reg_idx)
    }

    fn config_write(&mut self, reg_idx: usize, offset: u64, data: &[u8]) -> Option<BarMove> {
        self.config.write_reg(reg_idx, offset, data)
    }

    fn bars(&self) -> Vec<PciBar> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
