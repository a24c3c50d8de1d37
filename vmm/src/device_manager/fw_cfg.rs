//! The firmware's fw_cfg device, filled with what `arch::x86_64::fw_cfg`
//! assembles from the platform description: its items under their
//! selector keys, its files in order, and `etc/acpi/tables` rebuilt for
//! the PM block's live base ([`follow_pm_base`]).

use super::DeviceError;
use crate::arch::x86_64::fw_cfg::{self as pc, Item, PcConfig};
use crate::devices::legacy::fw_cfg::{keys, FwCfg};
use crate::memory::GuestMemoryMmap;

/// The selector key of `item`.
fn key(item: Item) -> u16 {
    match item {
        Item::RamSize => keys::RAM_SIZE,
        Item::NoGraphic => keys::NOGRAPHIC,
        Item::NbCpus => keys::NB_CPUS,
        Item::MaxCpus => keys::MAX_CPUS,
        Item::BootMenu => keys::BOOT_MENU,
        Item::Uuid => keys::UUID,
        Item::Irq0Override => keys::IRQ0_OVERRIDE,
    }
}

/// A fw_cfg device holding the PC contents of `cfg`, doing DMA into `mem`.
pub fn build(mem: GuestMemoryMmap, cfg: &PcConfig) -> Result<FwCfg, DeviceError> {
    let contents = pc::contents(cfg)?;
    let mut dev = FwCfg::new(mem);
    for (item, data) in contents.items {
        dev.set_item(key(item), data)?;
    }
    for (name, data) in contents.files {
        dev.add_file(name, data)?;
    }
    Ok(dev)
}

/// Rebuild `etc/acpi/tables` of `dev` (built by [`build`] from `cfg`) each
/// time the firmware selects it, with the ACPI PM block at `pm_base()`
/// (None: not enabled yet; the tables then keep the base they have).
pub fn follow_pm_base(
    dev: &mut FwCfg,
    cfg: &PcConfig,
    pm_base: impl Fn() -> Option<u16> + Send + 'static,
) -> Result<(), DeviceError> {
    let platform = cfg.platform.clone();
    dev.set_refresh(
        pc::table_loader::TABLES_FILE,
        Box::new(move || {
            let base = pm_base()?;
            match pc::acpi_tables_file(&platform, base) {
                Ok(t) => Some(t),
                Err(e) => {
                    log::error!("fw_cfg: rebuilding the ACPI tables for PM base {base:#x}: {e}");
                    None
                }
            }
        }),
    )?;
    Ok(())
}
