//! ACPI tables for a PC-like guest: RSDP (revision 2), XSDT, FADT
//! (revision 6, full hardware model), FACS, DSDT, MADT and MCFG.
//!
//! [`build_tables`] makes the bytes; [`create_acpi_tables`] writes them into
//! guest memory for a direct kernel boot. The layout it uses:
//!
//! ```text
//! layout::ACPI_START        RSDP (36 bytes), where a guest scans for it
//! layout::ACPI_START + 64   FACS (64-byte aligned), DSDT, MADT, MCFG, FADT,
//!                           XSDT: back to back, each 8-byte aligned,
//!                           ending below layout::SMBIOS_START
//! ```
//!
//! [`AcpiTables`] also lists every pointer field, so that firmware boot can
//! hand the same tables to a firmware's table loader (fw_cfg), which
//! allocates them itself and patches those pointers.
//!
//! What the tables describe comes from an [`AcpiPlatform`], which the
//! device manager fills from the devices it built (PM block, reset
//! register, SCI, PCI slots and their INTx GSIs, the PCI windows); the
//! fixed PC addresses (legacy ports, IOAPIC, LAPIC) are [`layout`]'s.

pub mod dsdt;
pub mod fadt;
pub mod madt;
pub mod tpm2;

#[cfg(test)]
mod aml_reader;
#[cfg(test)]
mod tests;

use acpi_tables::facs::FACS;
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout;
use super::platform::AcpiPlatform;

/// OEM fields of every table.
pub const OEM_ID: [u8; 6] = *b"KILN  ";
pub const OEM_TABLE_ID: [u8; 8] = *b"KILNVM  ";
pub const OEM_REVISION: u32 = 1;

/// Where the non-RSDP tables start by default; 64-byte aligned for the FACS.
const DEFAULT_TABLES_ADDR: u64 = layout::ACPI_START + 64;
const FACS_ALIGN: u64 = 64;
const TABLE_ALIGN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("a VM needs at least one vCPU")]
    NoCpus,
    #[error("guest memory size {0:#x} is outside 1 byte..={max:#x}", max = layout::MAX_MEMORY)]
    MemorySize(u64),
    #[error("{0} PCI INTx pins do not fit in one _PRT package (255 at most)")]
    TooManyPciIntx(usize),
    #[error("the ACPI tables need to start on a {FACS_ALIGN}-byte boundary, not at {0:#x}")]
    Misaligned(u64),
    #[error("the ACPI tables ({size:#x} bytes from {addr:#x}) do not fit below {end:#x}")]
    TooLarge { addr: u64, size: u64, end: u64 },
    #[error("cannot write the ACPI tables to guest memory at {addr:#x}")]
    GuestMemory {
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// One table inside [`AcpiTables::tables`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableEntry {
    pub signature: [u8; 4],
    pub offset: usize,
    pub len: usize,
}

/// Which byte vector of [`AcpiTables`] a pointer field lies in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blob {
    Rsdp,
    Tables,
}

/// A little-endian pointer field (4 or 8 bytes) whose value is the guest
/// address of something in [`AcpiTables::tables`], i.e. `tables_addr` plus
/// an offset. A table loader that places `tables` elsewhere adds the
/// difference, then fixes the checksum of the table holding the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointerField {
    pub blob: Blob,
    pub offset: usize,
    pub size: u8,
}

/// The tables of one VM, ready to copy into guest memory.
#[derive(Clone, Debug)]
pub struct AcpiTables {
    /// The RSDP, meant for `rsdp_addr`.
    pub rsdp: Vec<u8>,
    pub rsdp_addr: u64,
    /// Every other table back to back, meant for `tables_addr`.
    pub tables: Vec<u8>,
    pub tables_addr: u64,
    /// Where each table is in `tables`, in order.
    pub entries: Vec<TableEntry>,
    /// Every pointer field, in `rsdp` or `tables`.
    pub pointers: Vec<PointerField>,
    /// With a TPM: the offset in `tables` of the TPM2 table's LASA, which
    /// a table loader points at the event log ([`tpm2::LOG_FILE`]).
    pub tpm_log: Option<usize>,
}

impl AcpiTables {
    /// The bytes of the table with this signature (e.g. `b"FACP"`).
    pub fn table(&self, signature: &[u8; 4]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| &e.signature == signature)
            .map(|e| &self.tables[e.offset..e.offset + e.len])
    }
}

/// The tables of `platform`, laid out at the default place (RSDP at
/// [`layout::ACPI_START`]).
pub fn build_tables(platform: &AcpiPlatform) -> Result<AcpiTables, AcpiError> {
    let tables = build_tables_at(platform, layout::ACPI_START, DEFAULT_TABLES_ADDR)?;
    let end = tables.tables_addr + tables.tables.len() as u64;
    if end > layout::SMBIOS_START {
        return Err(AcpiError::TooLarge {
            addr: tables.tables_addr,
            size: tables.tables.len() as u64,
            end: layout::SMBIOS_START,
        });
    }
    Ok(tables)
}

/// The tables of `platform` with the RSDP meant for `rsdp_addr` and the
/// rest for `tables_addr` (64-byte aligned). With both 0, pointer fields
/// hold offsets into `tables`, as a firmware table loader expects. A
/// firmware boot names the PM block where the firmware programmed the
/// PIIX4 PM function ([`AcpiPlatform::with_pm_base`]); the tables' sizes
/// do not depend on where it is.
pub fn build_tables_at(
    platform: &AcpiPlatform,
    rsdp_addr: u64,
    tables_addr: u64,
) -> Result<AcpiTables, AcpiError> {
    if platform.cpus == 0 {
        return Err(AcpiError::NoCpus);
    }
    let mem_size = platform.mem_size;
    if mem_size == 0 || mem_size > layout::MAX_MEMORY {
        return Err(AcpiError::MemorySize(mem_size));
    }
    if platform.pci_intx.len() > dsdt::MAX_PRT_ENTRIES {
        return Err(AcpiError::TooManyPciIntx(platform.pci_intx.len()));
    }
    if !tables_addr.is_multiple_of(FACS_ALIGN) {
        return Err(AcpiError::Misaligned(tables_addr));
    }

    let mut b = Builder {
        tables_addr,
        tables: Vec::new(),
        entries: Vec::new(),
        pointers: Vec::new(),
    };
    let facs = b.add(*b"FACS", &to_bytes(&FACS::new()));
    let dsdt = b.add(*b"DSDT", &dsdt::dsdt(platform));
    let madt = b.add(*b"APIC", &madt::madt(platform));
    let mcfg = b.add(*b"MCFG", &mcfg(platform));
    // After the MCFG, so that a VM without a TPM has the same tables.
    let tpm = platform
        .tpm
        .as_ref()
        .map(|t| b.add(*b"TPM2", &tpm2::tpm2(t)));
    let fadt_bytes = fadt::fadt(platform, b.addr(facs), b.addr(dsdt));
    let fadt = b.add(*b"FACP", &fadt_bytes);
    for field in fadt::POINTER_FIELDS {
        b.pointer(fadt + field.0, field.1);
    }

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let listed: Vec<usize> = [fadt, madt, mcfg].into_iter().chain(tpm).collect();
    for &table in &listed {
        xsdt.add_entry(b.addr(table));
    }
    let xsdt = b.add(*b"XSDT", &to_bytes(&xsdt));
    for i in 0..listed.len() {
        b.pointer(xsdt + XSDT_ENTRIES + 8 * i, 8);
    }

    let rsdp = to_bytes(&Rsdp::new(OEM_ID, b.addr(xsdt)));
    b.pointers.push(PointerField {
        blob: Blob::Rsdp,
        offset: RSDP_XSDT_ADDRESS,
        size: 8,
    });
    Ok(AcpiTables {
        rsdp,
        rsdp_addr,
        tables: b.tables,
        tables_addr,
        entries: b.entries,
        pointers: b.pointers,
        tpm_log: tpm
            .filter(|_| platform.tpm.is_some_and(|t| t.log_size > 0))
            .map(|t| t + tpm2::LASA),
    })
}

/// Write the tables of `platform` into `mem` and return the RSDP address,
/// for a direct kernel boot (the boot protocol passes it to the kernel).
pub fn create_acpi_tables(
    mem: &GuestMemoryMmap,
    platform: &AcpiPlatform,
) -> Result<GuestAddress, AcpiError> {
    let t = build_tables(platform)?;
    for (bytes, addr) in [(&t.rsdp, t.rsdp_addr), (&t.tables, t.tables_addr)] {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|source| AcpiError::GuestMemory { addr, source })?;
    }
    Ok(GuestAddress(t.rsdp_addr))
}

/// Offset of the XSDT address in the RSDP.
const RSDP_XSDT_ADDRESS: usize = 24;
/// Offset of the first entry in the XSDT (right after the header).
const XSDT_ENTRIES: usize = 36;

struct Builder {
    tables_addr: u64,
    tables: Vec<u8>,
    entries: Vec<TableEntry>,
    pointers: Vec<PointerField>,
}

impl Builder {
    /// Append a table; returns its offset.
    fn add(&mut self, signature: [u8; 4], bytes: &[u8]) -> usize {
        let offset = self.tables.len().next_multiple_of(TABLE_ALIGN);
        self.tables.resize(offset, 0);
        self.tables.extend_from_slice(bytes);
        self.entries.push(TableEntry {
            signature,
            offset,
            len: bytes.len(),
        });
        offset
    }

    fn addr(&self, offset: usize) -> u64 {
        self.tables_addr + offset as u64
    }

    fn pointer(&mut self, offset: usize, size: u8) {
        self.pointers.push(PointerField {
            blob: Blob::Tables,
            offset,
            size,
        });
    }
}

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// The MCFG: the ECAM area of segment 0, for as many buses as it holds
/// (1 MiB per bus).
fn mcfg(platform: &AcpiPlatform) -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(platform.pci_ecam.start, 0, 0, platform.last_pci_bus());
    to_bytes(&mcfg)
}
