//! The `TPM2` table (TCG ACPI Specification, revision 4, as QEMU builds
//! it for `tpm-crb`): platform class client, the CRB control area, start
//! method 7 (Command Response Buffer), and the event log area a firmware
//! writes its measurements to (LAML/LASA).
//!
//! For a firmware boot the log is the fw_cfg file [`LOG_FILE`], which the
//! firmware's table loader allocates in reserved memory and whose address
//! it patches into LASA (SeaBIOS reads it from this table, OVMF from the
//! same place). A direct kernel boot has no firmware and so no log: LAML
//! and LASA are 0.

use acpi_tables::sdt::Sdt;

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::arch::x86_64::platform::TpmCrbInfo;

pub const REVISION: u8 = 4;
/// The whole table: header, class, reserved, control area, start method,
/// 12 bytes of start method parameters, LAML, LASA.
pub const LENGTH: usize = 76;
/// Offsets of the fields tests and the loader need.
pub const CONTROL_AREA: usize = 40;
pub const START_METHOD: usize = 48;
pub const LAML: usize = 64;
pub const LASA: usize = 68;
/// Start method 7: the Command Response Buffer interface.
pub const START_METHOD_CRB: u32 = 7;
/// The fw_cfg file that holds the event log (QEMU's name).
pub const LOG_FILE: &str = "etc/tpm/log";
/// The log's size: QEMU's minimum log area, 64 KiB.
pub const LOG_SIZE: u32 = 0x1_0000;

/// The TPM2 table of `tpm`; LASA holds 0 (for a loader: the offset into
/// [`LOG_FILE`]).
pub fn tpm2(tpm: &TpmCrbInfo) -> Vec<u8> {
    let mut sdt = Sdt::new(
        *b"TPM2",
        LENGTH as u32,
        REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    // Platform class 0 (client) and the reserved half-word stay 0.
    sdt.write_u64(CONTROL_AREA, tpm.control_area);
    sdt.write_u32(START_METHOD, START_METHOD_CRB);
    sdt.write_u32(LAML, tpm.log_size);
    sdt.update_checksum();
    sdt.as_slice().to_vec()
}
