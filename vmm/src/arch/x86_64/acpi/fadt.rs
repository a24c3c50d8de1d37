//! The FADT (signature "FACP", revision 6): a PC with the full ACPI
//! hardware model (not hardware-reduced). Its PM registers and reset
//! register are the platform's ([`AcpiPlatform::pm`],
//! [`AcpiPlatform::reset`]); there is no SMI_CMD port (always in ACPI
//! mode) and no GPE block.

use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::Aml;

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::arch::x86_64::platform::{AcpiPlatform, PmBlock};

/// IAPC_BOOT_ARCH: ISA devices (serial, RTC) are there, and so is an 8042.
pub const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
pub const IAPC_8042: u16 = 1 << 1;
/// CMOS RAM index of the century byte.
pub const RTC_CENTURY: u8 = 0x32;
/// Latencies above 100 (C2) and 1000 (C3) microseconds say "not supported".
const P_LVL2_LAT_NONE: u16 = 101;
const P_LVL3_LAT_NONE: u16 = 1001;

/// Byte offsets of the fields read by tests and by table loaders.
pub const FIRMWARE_CTRL: usize = 36;
pub const DSDT: usize = 40;
pub const SCI_INT: usize = 46;
pub const SMI_CMD: usize = 48;
pub const PM1A_EVT_BLK: usize = 56;
pub const PM1A_CNT_BLK: usize = 64;
pub const PM_TMR_BLK: usize = 76;
pub const PM1_EVT_LEN: usize = 88;
pub const PM1_CNT_LEN: usize = 89;
pub const PM_TMR_LEN: usize = 91;
pub const CENTURY: usize = 108;
pub const IAPC_BOOT_ARCH: usize = 109;
pub const FLAGS: usize = 112;
pub const RESET_REG: usize = 116;
pub const RESET_VALUE: usize = 128;
pub const X_FIRMWARE_CTRL: usize = 132;
pub const X_DSDT: usize = 140;
pub const X_PM1A_EVT_BLK: usize = 148;
pub const X_PM1A_CNT_BLK: usize = 172;
pub const X_PM_TMR_BLK: usize = 208;
pub const LENGTH: usize = 276;

/// The pointer fields (offset, size) that hold table addresses. Like QEMU,
/// the FACS is given by its 32-bit field only, the DSDT by both.
pub const POINTER_FIELDS: [(usize, u8); 3] = [(FIRMWARE_CTRL, 4), (DSDT, 4), (X_DSDT, 8)];

/// The FADT flags we set for the PM block `pm`.
pub fn flags(pm: &PmBlock) -> u32 {
    let mut flags = [
        Flags::Wbinvd,
        Flags::ProcC1,
        // No sleep button at all.
        Flags::SlpButton,
        // RTC alarms do not wake the machine through PM1 status.
        Flags::FixRtc,
        Flags::ResetRegSup,
    ]
    .iter()
    .fold(0, |acc, f| acc | *f as u32);
    if !pm.fixed_power_button {
        flags |= Flags::PwrButton as u32;
    }
    if pm.tmr_32bit {
        flags |= Flags::TmrValExt as u32;
    }
    flags
}

fn io_register(port: u16, len: u8, access: AccessSize) -> GAS {
    GAS::new(AddressSpace::SystemIo, 8 * len, 0, access, u64::from(port))
}

/// The FADT of `platform`, pointing at the FACS and DSDT at these guest
/// addresses (both below 4 GiB).
pub fn fadt(platform: &AcpiPlatform, facs_addr: u64, dsdt_addr: u64) -> Vec<u8> {
    let pm = &platform.pm;
    let evt = pm.base.wrapping_add(pm.evt_offset);
    let cnt = pm.base.wrapping_add(pm.cnt_offset);
    let tmr = pm.base.wrapping_add(pm.tmr_offset);
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .preferred_pm_profile(PmProfile::Unspecified);
    f.firmware_ctrl = (facs_addr as u32).into();
    f.dsdt = (dsdt_addr as u32).into();
    f.x_dsdt = dsdt_addr.into();
    f.sci_int = (platform.sci_irq as u16).into();
    f.pm1a_evt_blk = u32::from(evt).into();
    f.pm1a_cnt_blk = u32::from(cnt).into();
    f.pm_tmr_blk = u32::from(tmr).into();
    f.pm1_evt_len = pm.evt_len;
    f.pm1_cnt_len = pm.cnt_len;
    f.pm_tmr_len = pm.tmr_len;
    f.p_lvl2_lat = P_LVL2_LAT_NONE.into();
    f.p_lvl3_lat = P_LVL3_LAT_NONE.into();
    f.century = RTC_CENTURY;
    f.iapc_boot_arch = (IAPC_LEGACY_DEVICES | IAPC_8042).into();
    f.flags = flags(pm).into();
    f.reset_reg = io_register(platform.reset.port, 1, AccessSize::ByteAccess);
    f.reset_value = platform.reset.value;
    f.x_pm1a_evt_blk = io_register(evt, pm.evt_len, AccessSize::WordAccess);
    f.x_pm1a_cnt_blk = io_register(cnt, pm.cnt_len, AccessSize::WordAccess);
    f.x_pm_tmr_blk = io_register(tmr, pm.tmr_len, AccessSize::DwordAccess);
    let mut bytes = Vec::with_capacity(LENGTH);
    f.finalize().to_aml_bytes(&mut bytes);
    bytes
}
