//! The `etc/table-loader` file: commands that tell a firmware (SeaBIOS's
//! `romfile_loader`, OVMF's `AcpiPlatformDxe`) to allocate fw_cfg files in
//! guest memory, patch pointers between them and fix checksums. This is
//! how Kiln's own ACPI tables reach a guest booted through firmware.
//!
//! Each command is 128 bytes, little-endian:
//!
//! ```text
//! ALLOCATE (1)     file[56] align:u32 zone:u8      zone 1 = high, 2 = F-segment
//! ADD_POINTER (2)  dest[56] src[56] offset:u32 size:u8
//!                  dest[offset..offset+size] += address of src
//! ADD_CHECKSUM (3) file[56] offset:u32 start:u32 length:u32
//!                  file[offset] -= sum of file[start..start+length]
//! ```
//!
//! [`acpi_files`] turns [`AcpiTables`] built with pointers as offsets
//! (`build_tables_at(platform, 0, 0)`) into the three files QEMU uses:
//! `etc/acpi/rsdp`, `etc/acpi/tables` and `etc/table-loader`.

use crate::arch::x86_64::acpi::{AcpiTables, Blob};

/// Size of one command.
pub const COMMAND_LEN: usize = 128;
/// Size of a file name field, NUL included.
pub const NAME_LEN: usize = 56;

pub const CMD_ALLOCATE: u32 = 1;
pub const CMD_ADD_POINTER: u32 = 2;
pub const CMD_ADD_CHECKSUM: u32 = 3;

pub const RSDP_FILE: &str = "etc/acpi/rsdp";
pub const TABLES_FILE: &str = "etc/acpi/tables";
pub const LOADER_FILE: &str = "etc/table-loader";

/// Where an allocation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Zone {
    /// Anywhere in RAM below 4 GiB (SeaBIOS: the top of low RAM).
    High = 1,
    /// The F segment (0xF0000..0x100000), where an OS scans for the RSDP.
    FSeg = 2,
}

/// One loader command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Allocate {
        file: String,
        align: u32,
        zone: Zone,
    },
    AddPointer {
        dest: String,
        src: String,
        offset: u32,
        size: u8,
    },
    AddChecksum {
        file: String,
        offset: u32,
        start: u32,
        length: u32,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoaderError {
    #[error("loader file name {0:?} does not fit in {NAME_LEN} bytes with its NUL")]
    Name(String),
    #[error("table-loader is {0} bytes, not a whole number of {COMMAND_LEN}-byte commands")]
    Length(usize),
    #[error("loader command {index}: {what}")]
    Malformed { index: usize, what: &'static str },
    #[error("ACPI {what} at {offset:#x} does not fit in {len} bytes")]
    OutOfRange {
        what: &'static str,
        offset: usize,
        len: usize,
    },
}

fn put_name(out: &mut [u8], name: &str) -> Result<(), LoaderError> {
    if name.len() >= NAME_LEN || name.contains('\0') {
        return Err(LoaderError::Name(name.to_string()));
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(())
}

fn get_name(field: &[u8], index: usize) -> Result<String, LoaderError> {
    let end = field
        .iter()
        .position(|&b| b == 0)
        .ok_or(LoaderError::Malformed {
            index,
            what: "file name without a NUL",
        })?;
    String::from_utf8(field[..end].to_vec()).map_err(|_| LoaderError::Malformed {
        index,
        what: "file name is not UTF-8",
    })
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

impl Command {
    /// The 128 bytes of this command.
    pub fn encode(&self) -> Result<[u8; COMMAND_LEN], LoaderError> {
        let mut c = [0u8; COMMAND_LEN];
        let body = 4;
        match self {
            Command::Allocate { file, align, zone } => {
                c[..4].copy_from_slice(&CMD_ALLOCATE.to_le_bytes());
                put_name(&mut c[body..body + NAME_LEN], file)?;
                c[body + NAME_LEN..body + NAME_LEN + 4].copy_from_slice(&align.to_le_bytes());
                c[body + NAME_LEN + 4] = *zone as u8;
            }
            Command::AddPointer {
                dest,
                src,
                offset,
                size,
            } => {
                c[..4].copy_from_slice(&CMD_ADD_POINTER.to_le_bytes());
                put_name(&mut c[body..body + NAME_LEN], dest)?;
                put_name(&mut c[body + NAME_LEN..body + 2 * NAME_LEN], src)?;
                let at = body + 2 * NAME_LEN;
                c[at..at + 4].copy_from_slice(&offset.to_le_bytes());
                c[at + 4] = *size;
            }
            Command::AddChecksum {
                file,
                offset,
                start,
                length,
            } => {
                c[..4].copy_from_slice(&CMD_ADD_CHECKSUM.to_le_bytes());
                put_name(&mut c[body..body + NAME_LEN], file)?;
                let at = body + NAME_LEN;
                for (i, v) in [offset, start, length].into_iter().enumerate() {
                    c[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        Ok(c)
    }
}

/// The bytes of a whole loader file.
pub fn encode(commands: &[Command]) -> Result<Vec<u8>, LoaderError> {
    let mut out = Vec::with_capacity(commands.len() * COMMAND_LEN);
    for c in commands {
        out.extend_from_slice(&c.encode()?);
    }
    Ok(out)
}

/// Parse a loader file as a firmware does. Unknown commands are skipped
/// (as SeaBIOS and OVMF skip them); malformed ones are errors.
pub fn decode(bytes: &[u8]) -> Result<Vec<Command>, LoaderError> {
    if !bytes.len().is_multiple_of(COMMAND_LEN) {
        return Err(LoaderError::Length(bytes.len()));
    }
    let mut out = Vec::new();
    for (index, c) in bytes.chunks_exact(COMMAND_LEN).enumerate() {
        let body = &c[4..];
        match le32(c) {
            CMD_ALLOCATE => {
                let zone = match body[NAME_LEN + 4] {
                    1 => Zone::High,
                    2 => Zone::FSeg,
                    _ => {
                        return Err(LoaderError::Malformed {
                            index,
                            what: "unknown allocation zone",
                        })
                    }
                };
                out.push(Command::Allocate {
                    file: get_name(&body[..NAME_LEN], index)?,
                    align: le32(&body[NAME_LEN..]),
                    zone,
                });
            }
            CMD_ADD_POINTER => out.push(Command::AddPointer {
                dest: get_name(&body[..NAME_LEN], index)?,
                src: get_name(&body[NAME_LEN..2 * NAME_LEN], index)?,
                offset: le32(&body[2 * NAME_LEN..]),
                size: body[2 * NAME_LEN + 4],
            }),
            CMD_ADD_CHECKSUM => out.push(Command::AddChecksum {
                file: get_name(&body[..NAME_LEN], index)?,
                offset: le32(&body[NAME_LEN..]),
                start: le32(&body[NAME_LEN + 4..]),
                length: le32(&body[NAME_LEN + 8..]),
            }),
            _ => {}
        }
    }
    Ok(out)
}

/// The fw_cfg files that carry a VM's ACPI tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiFiles {
    pub rsdp: Vec<u8>,
    pub tables: Vec<u8>,
    pub loader: Vec<u8>,
}

/// Offsets of the checksum fields.
const SDT_CHECKSUM: usize = 9;
const RSDP_CHECKSUM: usize = 8;
const RSDP_V1_LEN: usize = 20;
const RSDP_EXT_CHECKSUM: usize = 32;
const RSDP_V2_LEN: usize = 36;
/// The FACS has no checksum.
const NO_CHECKSUM: [&[u8; 4]; 1] = [b"FACS"];

fn u32_of(v: usize, what: &'static str, len: usize) -> Result<u32, LoaderError> {
    u32::try_from(v).map_err(|_| LoaderError::OutOfRange {
        what,
        offset: v,
        len,
    })
}

/// The loader commands and files for `tables`, which must have been
/// built with pointer fields holding offsets into `tables.tables`
/// (`tables_addr == 0`).
pub fn acpi_files(tables: &AcpiTables) -> Result<AcpiFiles, LoaderError> {
    let t_len = tables.tables.len();
    let r_len = tables.rsdp.len();
    if r_len < RSDP_V2_LEN {
        return Err(LoaderError::OutOfRange {
            what: "RSDP",
            offset: 0,
            len: r_len,
        });
    }
    let mut cmds = vec![
        Command::Allocate {
            file: RSDP_FILE.into(),
            align: 16,
            zone: Zone::FSeg,
        },
        // 64: the FACS, first in the blob, needs it.
        Command::Allocate {
            file: TABLES_FILE.into(),
            align: 64,
            zone: Zone::High,
        },
    ];
    for p in &tables.pointers {
        let (dest, len) = match p.blob {
            Blob::Rsdp => (RSDP_FILE, r_len),
            Blob::Tables => (TABLES_FILE, t_len),
        };
        if p.offset + usize::from(p.size) > len {
            return Err(LoaderError::OutOfRange {
                what: "pointer field",
                offset: p.offset,
                len,
            });
        }
        cmds.push(Command::AddPointer {
            dest: dest.into(),
            src: TABLES_FILE.into(),
            offset: u32_of(p.offset, "pointer field", len)?,
            size: p.size,
        });
    }
    if let Some(lasa) = tables.tpm_log {
        if lasa + 8 > t_len {
            return Err(LoaderError::OutOfRange {
                what: "TPM2 log address",
                offset: lasa,
                len: t_len,
            });
        }
        // The event log: anywhere in reserved RAM; LASA gets its address.
        cmds.push(Command::Allocate {
            file: crate::arch::x86_64::acpi::tpm2::LOG_FILE.into(),
            align: 64,
            zone: Zone::High,
        });
        cmds.push(Command::AddPointer {
            dest: TABLES_FILE.into(),
            src: crate::arch::x86_64::acpi::tpm2::LOG_FILE.into(),
            offset: u32_of(lasa, "TPM2 log address", t_len)?,
            size: 8,
        });
    }
    for e in &tables.entries {
        if NO_CHECKSUM.contains(&&e.signature) {
            continue;
        }
        if e.len <= SDT_CHECKSUM || e.offset + e.len > t_len {
            return Err(LoaderError::OutOfRange {
                what: "table",
                offset: e.offset,
                len: t_len,
            });
        }
        cmds.push(Command::AddChecksum {
            file: TABLES_FILE.into(),
            offset: u32_of(e.offset + SDT_CHECKSUM, "table", t_len)?,
            start: u32_of(e.offset, "table", t_len)?,
            length: u32_of(e.len, "table", t_len)?,
        });
    }
    // The RSDP's first checksum, then the extended one that covers it.
    for (offset, length) in [
        (RSDP_CHECKSUM, RSDP_V1_LEN),
        (RSDP_EXT_CHECKSUM, RSDP_V2_LEN),
    ] {
        cmds.push(Command::AddChecksum {
            file: RSDP_FILE.into(),
            offset: offset as u32,
            start: 0,
            length: length as u32,
        });
    }
    Ok(AcpiFiles {
        rsdp: tables.rsdp.clone(),
        tables: tables.tables.clone(),
        loader: encode(&cmds)?,
    })
}
