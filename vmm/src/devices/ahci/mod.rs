//! An ICH9-compatible AHCI SATA controller (PCI 8086:2922, class
//! 01/06/01): the HBA registers in a 4 KiB memory BAR 5 (ABAR), six
//! ports, SATA disks and ATAPI CD-ROMs on them, and INTx (pin A, level).
//! What guests without virtio drivers boot from and install onto:
//! SeaBIOS's and OVMF's AHCI drivers, Windows' storahci.
//!
//! - `command.rs`: the command list, command tables, PRDTs and FISes in
//!   guest memory, every address and length checked.
//! - `port.rs`: a port's registers and its commands, run on the vCPU
//!   thread that writes PxCI.
//! - `ata.rs`: the ATA commands of a disk; `atapi.rs` the SCSI commands
//!   of a CD-ROM; `drive.rs` what both share (the drive, the task file a
//!   command ends with, the data transfer).
//!
//! The device sees no KVM: its interrupt is an [`IrqLevel`] the device
//! manager wires to the slot's GSI.

pub mod ata;
pub mod atapi;
pub mod command;
pub mod drive;
pub mod port;

use std::sync::Arc;

use crate::devices::pci::{
    BarMove, PciBar, PciBarKind, PciConfiguration, PciDevice, PciError, PciHeader,
};
use crate::devices::GuestMemoryMmap;
pub use drive::{Drive, DriveKind};
use port::Port;

/// The ports an ICH9 AHCI controller has.
pub const NUM_PORTS: usize = 6;
/// ABAR: BAR 5, 4 KiB of memory.
pub const ABAR: usize = 5;
pub const ABAR_SIZE: u64 = 0x1000;

/// HBA register offsets.
const CAP: u64 = 0x00;
const GHC: u64 = 0x04;
const IS: u64 = 0x08;
const PI: u64 = 0x0c;
const VS: u64 = 0x10;
/// The first port's registers, and each port's size.
const PORTS: u64 = 0x100;
const PORT_LEN: u64 = 0x80;

/// CAP: 64-bit addresses, NCQ, command list override, Gen1, AHCI only,
/// 32 command slots, six ports.
const CAP_VALUE: u32 =
    (1 << 31) | (1 << 30) | (1 << 24) | (1 << 20) | (1 << 18) | (31 << 8) | (NUM_PORTS as u32 - 1);
const GHC_HR: u32 = 1 << 0;
const GHC_IE: u32 = 1 << 1;
const GHC_AE: u32 = 1 << 31;
/// AHCI 1.3.
const VS_VALUE: u32 = 0x0001_0300;

/// A level-triggered interrupt line (INTx).
pub trait IrqLevel: Send + Sync {
    fn set_level(&self, high: bool);
}

/// The controller, a PCI function.
pub struct Ahci {
    config: PciConfiguration,
    ghc: u32,
    ports: Vec<Port>,
    mem: GuestMemoryMmap,
    /// The interrupt line (None: not wired yet).
    irq: Option<Arc<dyn IrqLevel>>,
    /// The line's level as last set.
    level: bool,
}

impl Ahci {
    /// A controller with `drives` on ports 0.. (at most [`NUM_PORTS`]),
    /// its ABAR at `abar`.
    pub fn new(drives: Vec<Drive>, mem: GuestMemoryMmap, abar: u64) -> Result<Self, PciError> {
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: 0x8086,
            device_id: 0x2922,
            class_code: 0x01_06_01,
            revision_id: 2,
            subsystem_vendor_id: 0x8086,
            subsystem_id: 0x2922,
        });
        config.add_bar(&PciBar {
            index: ABAR,
            kind: PciBarKind::Memory32,
            prefetchable: false,
            addr: abar,
            size: ABAR_SIZE,
        })?;
        let mut drives = drives.into_iter();
        let ports = (0..NUM_PORTS).map(|_| Port::new(drives.next())).collect();
        Ok(Ahci {
            config,
            ghc: GHC_AE,
            ports,
            mem,
            irq: None,
            level: false,
        })
    }

    /// Wire INTx pin A to `irq`, which the guest reads as `line`.
    pub fn set_irq(&mut self, irq: Arc<dyn IrqLevel>, line: u8) {
        self.config.set_interrupt(1, line);
        self.irq = Some(irq);
    }

    fn is(&self) -> u32 {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.pending())
            .fold(0, |acc, (i, _)| acc | (1 << i))
    }

    fn update_irq(&mut self) {
        let level = self.ghc & GHC_IE != 0 && self.is() != 0;
        if level != self.level {
            self.level = level;
            if let Some(irq) = &self.irq {
                irq.set_level(level);
            }
        }
    }

    fn read_reg(&self, off: u64) -> u32 {
        match off {
            CAP => CAP_VALUE,
            GHC => self.ghc,
            IS => self.is(),
            PI => (1 << NUM_PORTS) - 1,
            VS => VS_VALUE,
            o if o >= PORTS => {
                let i = ((o - PORTS) / PORT_LEN) as usize;
                self.ports
                    .get(i)
                    .map_or(0, |p| p.read((o - PORTS) % PORT_LEN))
            }
            _ => 0,
        }
    }

    fn write_reg(&mut self, off: u64, v: u32) {
        match off {
            GHC if v & GHC_HR != 0 => {
                for p in &mut self.ports {
                    p.reset();
                }
                self.ghc = GHC_AE;
            }
            GHC => self.ghc = GHC_AE | (v & GHC_IE),
            o if o >= PORTS => {
                let i = ((o - PORTS) / PORT_LEN) as usize;
                if let Some(p) = self.ports.get_mut(i) {
                    p.write(&self.mem, (o - PORTS) % PORT_LEN, v);
                }
            }
            // IS is the ports' summary: clearing PxIS clears it.
            _ => {}
        }
        self.update_irq();
    }

    /// A register access of the ABAR (dwords; a qword is two).
    fn abar_access(&mut self, offset: u64, data: &mut [u8], write: bool) {
        if !offset.is_multiple_of(4) || !matches!(data.len(), 4 | 8) {
            if !write {
                data.fill(0);
            }
            return;
        }
        for (k, chunk) in data.chunks_mut(4).enumerate() {
            let off = offset + 4 * k as u64;
            if write {
                let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                self.write_reg(off, v);
            } else {
                chunk.copy_from_slice(&self.read_reg(off).to_le_bytes());
            }
        }
    }
}

impl PciDevice for Ahci {
    fn config_read(&mut self, reg_idx: usize) -> u32 {
        self.config.read_reg(reg_idx)
    }

    fn config_write(&mut self, reg_idx: usize, offset: u64, data: &[u8]) -> Option<BarMove> {
        self.config.write_reg(reg_idx, offset, data)
    }

    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if bar == ABAR {
            self.abar_access(offset, data, false);
        } else {
            data.fill(0xff);
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar == ABAR {
            let mut d = data.to_vec();
            self.abar_access(offset, &mut d, true);
        }
    }
}

#[cfg(test)]
mod tests;
