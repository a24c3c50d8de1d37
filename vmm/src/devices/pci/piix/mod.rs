//! The PIIX3/PIIX4 south bridge functions of QEMU's `pc` machine, present
//! for firmware boots only (next to the i440FX host bridge), because
//! SeaBIOS and OVMF look for them at 00:01.x:
//!
//! - 00:01.0 [`piix3_isa_bridge`] (8086:7000, ISA bridge, multi-function
//!   header): its device-specific registers (PIRQ routing at 0x60..0x63,
//!   which SeaBIOS programs) read back what was written and have no effect;
//!   Kiln's PCI devices interrupt through MSI-X.
//! - 00:01.3 [`Piix4Pm`] (8086:7113, PIIX4 ACPI power management): the
//!   PM I/O base PMBA (0x40, bits 15:6; bit 0 reads 1, I/O space) and
//!   PMREGMISC (0x80, bit 0 PMIOSE: decode the PM I/O space). While PMIOSE
//!   is set and PMBA is not 0, the ACPI PM block ([`crate::devices::legacy::pm`]:
//!   PM1a event/control, PM timer) answers at PMBA on the I/O bus, moved
//!   through a [`MovableRange`]; otherwise it is hidden, as after power-on.
//!   SeaBIOS and OVMF both program 0xB000. SMBBA (0x90) and SMBHSTCFG
//!   (0xD2) are stored for the firmware (there is no SMBus controller).
//!   DEVACTB says APMC is enabled (no SMM; see [`DEVACTB_APMC_EN`]).

use crate::devices::bus::MovableRange;

use super::configuration::{PciConfiguration, PciHeader};
use super::{BarMove, HeaderOnlyFunction, PciBar, PciDevice};

/// Where the south bridge sits: 00:01.
pub const PIIX_SLOT: u8 = 1;
pub const PIIX3_ISA_FUNCTION: u8 = 0;
pub const PIIX4_PM_FUNCTION: u8 = 3;

pub const PIIX3_ISA_DEVICE_ID: u16 = 0x7000;
pub const PIIX4_PM_DEVICE_ID: u16 = 0x7113;
const INTEL: u16 = 0x8086;

/// PM function registers (byte offsets) and their bits.
pub const PMBA: usize = 0x40;
pub const PMBA_IO_SPACE: u32 = 1;
pub const PMBA_MASK: u32 = 0xffc0;
pub const PMREGMISC: usize = 0x80;
pub const PMIOSE: u32 = 1;
pub const SMBBA: usize = 0x90;
const SMBBA_MASK: u32 = 0xfff0;
pub const SMBHSTCFG: usize = 0xd2;
/// DEVACTB (0x58), its byte 3 bit 1: APMC_EN. Set at power-on, as QEMU
/// does without SMM: it tells a firmware built with SMM support (SeaBIOS's
/// `bios-256k.bin`) that SMM is set up already, so it does not raise an
/// SMI through port 0xB2 and wait for a relocation that never comes.
pub const DEVACTB: usize = 0x58;
pub const DEVACTB_APMC_EN: u32 = 0x02 << 24;

/// 00:01.0, the PIIX3 PCI-to-ISA bridge (multi-function: the PM
/// function follows).
pub fn piix3_isa_bridge() -> HeaderOnlyFunction {
    HeaderOnlyFunction::new(
        &PciHeader {
            vendor_id: INTEL,
            device_id: PIIX3_ISA_DEVICE_ID,
            class_code: 0x06_01_00,
            revision_id: 0,
            subsystem_vendor_id: 0,
            subsystem_id: 0,
        },
        true,
    )
}

/// 00:01.3, the PIIX4 power-management function, placing the PM block.
pub struct Piix4Pm {
    config: PciConfiguration,
    pm_block: MovableRange,
}

impl Piix4Pm {
    /// The function in its power-on state (PMBA 0, PMIOSE clear: the PM
    /// block hidden); `pm_block` is the PM block's range on the I/O bus.
    pub fn new(pm_block: MovableRange) -> Self {
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: INTEL,
            device_id: PIIX4_PM_DEVICE_ID,
            class_code: 0x06_80_00,
            revision_id: 3,
            subsystem_vendor_id: 0,
            subsystem_id: 0,
        });
        config.set_reg(PMBA / 4, PMBA_IO_SPACE);
        config.set_writable(PMBA / 4, PMBA_MASK);
        config.set_writable(PMREGMISC / 4, PMIOSE);
        config.set_reg(SMBBA / 4, PMBA_IO_SPACE);
        config.set_writable(SMBBA / 4, SMBBA_MASK);
        config.set_writable(SMBHSTCFG / 4, 0xff << (8 * (SMBHSTCFG % 4)));
        config.set_reg(DEVACTB / 4, DEVACTB_APMC_EN);
        let mut pm = Piix4Pm { config, pm_block };
        pm.place_pm_block();
        pm
    }

    /// Where the PM block decodes now (None: nowhere).
    pub fn pm_base(&self) -> Option<u16> {
        let enabled = self.config.reg(PMREGMISC / 4) & PMIOSE != 0;
        let base = (self.config.reg(PMBA / 4) & PMBA_MASK) as u16;
        (enabled && base != 0).then_some(base)
    }

    fn place_pm_block(&mut self) {
        let base = self.pm_base();
        if self.pm_block.base() == base.map(u64::from) {
            return;
        }
        let at = base.map_or_else(|| "nowhere (disabled)".to_string(), |b| format!("{b:#x}"));
        match self.pm_block.move_to(base.map(u64::from)) {
            Ok(()) => log::info!("piix4: ACPI PM block at {at}"),
            Err(e) => {
                log::warn!("piix4: cannot put the ACPI PM block at {at}: {e}; hidden");
                let _ = self.pm_block.move_to(None);
            }
        }
    }
}

impl PciDevice for Piix4Pm {
    fn config_read(&mut self, reg_idx: usize) -> u32 {
        self.config.read_reg(reg_idx)
    }

    fn config_write(&mut self, reg_idx: usize, offset: u64, data: &[u8]) -> Option<BarMove> {
        let mv = self.config.write_reg(reg_idx, offset, data);
        if reg_idx == PMBA / 4 || reg_idx == PMREGMISC / 4 {
            self.place_pm_block();
        }
        mv
    }

    fn bars(&self) -> Vec<PciBar> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
