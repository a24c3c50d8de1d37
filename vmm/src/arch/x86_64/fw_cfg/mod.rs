//! The fw_cfg contents of a Kiln PC, as SeaBIOS and OVMF read them from
//! QEMU's `pc` machine, assembled from an [`AcpiPlatform`] as plain
//! items and files ([`contents`]); the device manager puts them into the
//! fw_cfg device (`devices/legacy/fw_cfg`), which only serves them, and
//! maps each [`Item`] to its selector key:
//!
//! | item | contents |
//! |---|---|
//! | `RAM_SIZE` (0x03) | guest RAM in bytes, u64 LE |
//! | `NOGRAPHIC` (0x04) | 1: no display, so SeaBIOS uses COM1 as its console |
//! | `NB_CPUS` (0x05), `MAX_CPUS` (0x0f) | vCPU count, u16 LE (no hotplug) |
//! | `BOOT_MENU` (0x0e) | 0: no boot menu |
//! | `IRQ0_OVERRIDE` (0x8002) | 1: IRQ0 is wired to GSI2 (as our MADT says) |
//! | `etc/e820` | [`layout::e820_map`]: 20-byte LE entries (addr, size, type) |
//! | `etc/boot-cpus` | vCPU count, u16 LE |
//! | `bootorder` | OpenFirmware device paths, one a line |
//! | `etc/boot-fail-wait` | ms before rebooting when nothing boots, u32 LE (`u32::MAX`: never) |
//! | `etc/acpi/rsdp`, `etc/acpi/tables`, `etc/table-loader` | Kiln's ACPI tables ([`table_loader`]) |
//! | `etc/tpm/log` | with a TPM: the event log area (zeros) the TPM2 table's LASA points at |
//! | `UUID` (0x02), `etc/smbios/smbios-anchor`, `etc/smbios/smbios-tables` | the SMBIOS UUID, entry point and tables ([`smbios`]), when given |
//!
//! The device manager rebuilds `etc/acpi/tables` with [`acpi_tables_file`]
//! whenever the firmware selects it, naming the ACPI PM block at the I/O
//! base live at that moment (the firmware programs it through the PIIX4
//! PM function before it loads the tables: SeaBIOS in its PCI setup, OVMF
//! in PlatformPei), so the OS reads PM addresses that answer.

pub mod table_loader;

use table_loader::LoaderError;

use super::acpi::{self, AcpiError};
use super::layout;
use super::platform::AcpiPlatform;
use super::smbios::{self, SmbiosInfo};

/// CMOS bytes (index, value) for SeaBIOS's default boot order, used when
/// `bootorder` names nothing: 0x3d holds the first (low nibble) and second
/// device, 0x38 the third (high nibble) and, in bit 0, "skip the floppy
/// boot-signature check". Devices: 1 floppy, 2 hard disk, 3 CD, 4 network.
/// Kiln's order: hard disk, CD, network (QEMU's default puts the floppy
/// second).
pub const CMOS_BOOT_ORDER: [(u8, u8); 2] = [(0x3d, 0x32), (0x38, 0x41)];

/// Size of one `etc/e820` entry.
pub const E820_ENTRY_LEN: usize = 20;
/// `etc/boot-fail-wait` value that means "wait forever".
pub const BOOT_FAIL_WAIT_FOREVER: u32 = u32::MAX;

#[derive(Debug, thiserror::Error)]
pub enum PcFwCfgError {
    #[error("building the ACPI tables")]
    Acpi(#[from] AcpiError),
    #[error("building the ACPI table loader")]
    Loader(#[from] LoaderError),
}

/// What a PC's fw_cfg describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcConfig {
    /// The machine (RAM, vCPUs, what the ACPI tables say).
    pub platform: AcpiPlatform,
    /// Boot devices in order, as OpenFirmware paths (e.g.
    /// `/pci@i0cf8/scsi@4/disk@0,0` for a virtio-blk disk in slot 4);
    /// empty: the firmware's own order.
    pub bootorder: Vec<String>,
    /// Milliseconds before the firmware reboots after finding nothing to
    /// boot; [`BOOT_FAIL_WAIT_FOREVER`] to wait forever.
    pub boot_fail_wait_ms: u32,
    /// The SMBIOS tables' contents; None: no SMBIOS files, UUID 0.
    pub smbios: Option<SmbiosInfo>,
}

impl PcConfig {
    pub fn new(platform: AcpiPlatform) -> Self {
        PcConfig {
            platform,
            bootorder: Vec::new(),
            boot_fail_wait_ms: BOOT_FAIL_WAIT_FOREVER,
            smbios: None,
        }
    }
}

/// `etc/e820` for `mem_size` bytes of RAM.
pub fn e820_file(mem_size: u64) -> Vec<u8> {
    let map = layout::e820_map(mem_size);
    let mut out = Vec::with_capacity(map.len() * E820_ENTRY_LEN);
    for e in map {
        out.extend_from_slice(&e.addr.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&(e.kind as u32).to_le_bytes());
    }
    out
}

/// `bootorder`: the paths one a line, NUL-terminated (as QEMU writes it);
/// empty when there are none.
pub fn bootorder_file(paths: &[String]) -> Vec<u8> {
    if paths.is_empty() {
        return Vec::new();
    }
    let mut out = paths.join("\n").into_bytes();
    out.push(0);
    out
}

/// The `bootorder` path of a virtio-blk disk in slot `slot` of PCI bus 0,
/// as QEMU writes it: SeaBIOS matches it by slot, OVMF translates it to
/// the UEFI device path of that virtio-blk device.
pub fn virtio_blk_boot_path(slot: u8) -> String {
    format!("/pci@i0cf8/scsi@{slot:x}/disk@0,0")
}

/// The `bootorder` path of a virtio-net NIC (network boot) in slot `slot`.
pub fn virtio_net_boot_path(slot: u8) -> String {
    format!("/pci@i0cf8/ethernet@{slot:x}/ethernet-phy@0")
}

/// The fixed items of the module table (selector keys below 0x20 and
/// architecture-local ones), named; the fw_cfg device knows their keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    RamSize,
    NoGraphic,
    NbCpus,
    MaxCpus,
    BootMenu,
    Uuid,
    Irq0Override,
}

/// Everything in the module table: items and files, in the order they
/// are to be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcFwCfg {
    pub items: Vec<(Item, Vec<u8>)>,
    pub files: Vec<(&'static str, Vec<u8>)>,
}

/// The contents of a PC's fw_cfg for `cfg`.
pub fn contents(cfg: &PcConfig) -> Result<PcFwCfg, PcFwCfgError> {
    let p = &cfg.platform;
    let cpus = u16::from(p.cpus);
    let items = vec![
        (Item::RamSize, p.mem_size.to_le_bytes().to_vec()),
        (Item::NoGraphic, 1u16.to_le_bytes().to_vec()),
        (Item::NbCpus, cpus.to_le_bytes().to_vec()),
        (Item::MaxCpus, cpus.to_le_bytes().to_vec()),
        (Item::BootMenu, 0u16.to_le_bytes().to_vec()),
        (
            Item::Uuid,
            cfg.smbios.as_ref().map_or(vec![0; 16], |s| s.uuid.to_vec()),
        ),
        (Item::Irq0Override, 1u32.to_le_bytes().to_vec()),
    ];
    let tables = acpi::build_tables_at(p, 0, 0)?;
    let acpi = table_loader::acpi_files(&tables)?;
    let mut files = vec![
        ("etc/e820", e820_file(p.mem_size)),
        ("etc/boot-cpus", cpus.to_le_bytes().to_vec()),
        ("bootorder", bootorder_file(&cfg.bootorder)),
        (
            "etc/boot-fail-wait",
            cfg.boot_fail_wait_ms.to_le_bytes().to_vec(),
        ),
        (table_loader::RSDP_FILE, acpi.rsdp),
        (table_loader::TABLES_FILE, acpi.tables),
        (table_loader::LOADER_FILE, acpi.loader),
    ];
    if let Some(t) = p.tpm.filter(|t| t.log_size > 0) {
        files.push((acpi::tpm2::LOG_FILE, vec![0; t.log_size as usize]));
    }
    if let Some(info) = &cfg.smbios {
        // The firmware places the table and fills in its address.
        let (anchor, tables) = smbios::build(info, 0);
        files.push((smbios::ANCHOR_FILE, anchor.to_vec()));
        files.push((smbios::TABLES_FILE, tables));
    }
    Ok(PcFwCfg { items, files })
}

/// `etc/acpi/tables` ([`table_loader::TABLES_FILE`]) of `platform` with
/// the ACPI PM block at `pm_base`: what the file holds once the firmware
/// has moved the block there. Its size does not depend on `pm_base`.
pub fn acpi_tables_file(platform: &AcpiPlatform, pm_base: u16) -> Result<Vec<u8>, AcpiError> {
    Ok(acpi::build_tables_at(&platform.with_pm_base(pm_base), 0, 0)?.tables)
}
