//! SMBIOS 3.0 tables (DMI): what the guest's dmidecode, `/sys/class/dmi`
//! and cloud-init's datasource detection read about the machine, built
//! from a plain [`SmbiosInfo`] into a 24-byte `_SM3_` entry point and the
//! structure table it points at ([`build`]).
//!
//! Direct boot writes both at [`layout::SMBIOS_START`] ([`write`]), in the
//! 0xF0000-0xFFFFF range Linux scans; a firmware boot hands them to the
//! firmware through fw_cfg (`etc/smbios/smbios-anchor`,
//! `etc/smbios/smbios-tables`, with the table address left 0 for the
//! firmware to fill, as QEMU does). Structures, in order:
//!
//! | type | what |
//! |---|---|
//! | 0 | BIOS: vendor "Kiln", "virtual machine" characteristic |
//! | 1 | system: manufacturer, product, version, serial, UUID, SKU, family |
//! | 2 | baseboard (manufacturer, product, version), in the type 3 chassis |
//! | 3 | chassis "Other", with the asset tag |
//! | 4 | one processor per vCPU |
//! | 16, 17 | one memory array and one device holding all guest RAM |
//! | 32 | system boot: no errors |
//! | 127 | end of table |

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::layout;

/// The entry point's length (SMBIOS 3.0).
pub const ANCHOR_LEN: usize = 24;
/// Where the entry point's table address sits in it.
pub const ANCHOR_TABLE_ADDR_OFFSET: usize = 16;
/// fw_cfg file names SeaBIOS and OVMF read.
pub const ANCHOR_FILE: &str = "etc/smbios/smbios-anchor";
pub const TABLES_FILE: &str = "etc/smbios/smbios-tables";
/// Where direct boot puts the structure table: right after the entry point.
const TABLE_OFFSET: u64 = 0x20;

/// What the tables say, validated by the caller (strings without NULs,
/// at most 64 bytes; empty: not specified).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmbiosInfo {
    pub manufacturer: String,
    pub product: String,
    pub version: String,
    pub serial: String,
    /// RFC 4122 byte order (as written in text); the table stores the
    /// first three fields little-endian, as SMBIOS 2.6 and later say.
    pub uuid: [u8; 16],
    pub sku: String,
    pub family: String,
    pub asset_tag: String,
    pub cpus: u8,
    /// Guest RAM in bytes.
    pub mem_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SmbiosError {
    #[error("the SMBIOS tables ({0} bytes) do not fit below 1 MiB")]
    TooBig(usize),
    #[error("writing the SMBIOS tables to guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// A parsed UUID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex, either
/// case), in RFC 4122 byte order; None if `s` is not one.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12]
        || !groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    let hex: String = groups.concat();
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// One structure: its formatted area and its strings.
struct Structure {
    bytes: Vec<u8>,
    strings: Vec<String>,
}

impl Structure {
    fn new(kind: u8, len: u8, handle: u16) -> Self {
        let mut bytes = vec![0u8; usize::from(len)];
        bytes[0] = kind;
        bytes[1] = len;
        bytes[2..4].copy_from_slice(&handle.to_le_bytes());
        Structure {
            bytes,
            strings: Vec::new(),
        }
    }
    fn u8(&mut self, off: usize, v: u8) {
        self.bytes[off] = v;
    }
    fn u16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, off: usize, v: u64) {
        self.bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    /// Set the string field at `off` to `s` (index 0, "none", if empty).
    fn string(&mut self, off: usize, s: &str) {
        if s.is_empty() {
            return self.u8(off, 0);
        }
        self.strings.push(s.to_owned());
        self.bytes[off] = self.strings.len() as u8;
    }
    fn append_to(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes);
        if self.strings.is_empty() {
            out.push(0);
        }
        for s in self.strings {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        out.push(0);
    }
}

/// The SMBIOS UUID encoding of `uuid`: time_low, time_mid and
/// time_hi_and_version little-endian, the rest as is.
fn smbios_uuid(uuid: &[u8; 16]) -> [u8; 16] {
    let mut u = *uuid;
    u[0..4].reverse();
    u[4..6].reverse();
    u[6..8].reverse();
    u
}

/// The structure table for `info`.
pub fn structures(info: &SmbiosInfo) -> Vec<u8> {
    let mut out = Vec::new();
    let mut handle = 0u16;
    let mut next = |kind: u8, len: u8| {
        let s = Structure::new(kind, len, handle);
        handle += 1;
        s
    };

    let mut t = next(0, 0x18);
    t.string(4, "Kiln");
    t.string(5, env!("CARGO_PKG_VERSION"));
    t.u16(6, 0xe800);
    t.string(8, "01/01/2026");
    // Characteristics: "not supported" (bit 3); extension byte 2: the
    // table describes a virtual machine (bit 4).
    t.u64(10, 1 << 3);
    t.u8(19, 1 << 4);
    t.u8(20, 0);
    t.u8(21, 0);
    t.u8(22, 0xff);
    t.u8(23, 0xff);
    t.append_to(&mut out);

    let mut t = next(1, 0x1b);
    t.string(4, &info.manufacturer);
    t.string(5, &info.product);
    t.string(6, &info.version);
    t.string(7, &info.serial);
    t.bytes[8..24].copy_from_slice(&smbios_uuid(&info.uuid));
    t.u8(24, 6); // woken by the power switch
    t.string(25, &info.sku);
    t.string(26, &info.family);
    t.append_to(&mut out);

    let chassis_handle = 3u16;
    let mut t = next(2, 0x0f);
    t.string(4, &info.manufacturer);
    t.string(5, &info.product);
    t.string(6, &info.version);
    t.u8(9, 1); // a hosting board
    t.u16(11, chassis_handle);
    t.u8(13, 0x0a); // motherboard
    t.append_to(&mut out);

    let mut t = next(3, 0x16);
    debug_assert_eq!(u16::from_le_bytes([t.bytes[2], t.bytes[3]]), chassis_handle);
    t.string(4, &info.manufacturer);
    t.u8(5, 0x01); // other
    t.string(6, &info.version);
    t.string(8, &info.asset_tag);
    for off in 9..=11 {
        t.u8(off, 3); // boot-up, power supply, thermal: safe
    }
    t.u8(12, 2); // security: unknown
    t.string(21, &info.sku);
    t.append_to(&mut out);

    for cpu in 0..info.cpus {
        let mut t = next(4, 0x30);
        t.string(4, &format!("CPU {cpu}"));
        t.u8(5, 3); // central processor
        t.u8(6, 0x01); // family: other
        t.string(7, "Kiln");
        t.u16(20, 2000); // max speed, MHz
        t.u16(22, 2000); // current speed
        t.u8(24, 0x41); // socket populated, CPU enabled
        t.u8(25, 0x01); // upgrade: other
        for off in [26, 28, 30] {
            t.u16(off, 0xffff); // no cache information
        }
        t.u8(35, 1);
        t.u8(36, 1);
        t.u8(37, 1);
        t.u16(38, 1 << 2); // 64-bit capable
        t.u16(40, 0x01);
        t.u16(42, 1);
        t.u16(44, 1);
        t.u16(46, 1);
        t.append_to(&mut out);
    }

    let kib = info.mem_size >> 10;
    let array = next(16, 0x17);
    let array_handle = u16::from_le_bytes([array.bytes[2], array.bytes[3]]);
    let mut t = array;
    t.u8(4, 0x01); // location: other
    t.u8(5, 0x03); // system memory
    t.u8(6, 0x03); // no error correction
    match u32::try_from(kib) {
        Ok(k) if k < 0x8000_0000 => t.u32(7, k),
        _ => {
            t.u32(7, 0x8000_0000);
            t.u64(15, info.mem_size);
        }
    }
    t.u16(11, 0xfffe); // no error information
    t.u16(13, 1);
    t.append_to(&mut out);

    let mib = info.mem_size >> 20;
    let mut t = next(17, 0x28);
    t.u16(4, array_handle);
    t.u16(6, 0xfffe);
    t.u16(8, 64);
    t.u16(10, 64);
    match u16::try_from(mib) {
        Ok(m) if m < 0x7fff => t.u16(12, m),
        _ => {
            t.u16(12, 0x7fff);
            t.u32(28, mib as u32);
        }
    }
    t.u8(14, 0x09); // DIMM
    t.string(16, "DIMM 0");
    t.u8(18, 0x07); // RAM
    t.u16(19, 1 << 1); // type detail: other
    t.string(23, "Kiln");
    t.append_to(&mut out);

    let t = next(32, 0x0b); // reserved bytes and status 0: no errors
    t.append_to(&mut out);

    next(127, 4).append_to(&mut out);
    out
}

/// The 3.0 entry point for a structure table of `table_len` bytes at
/// `table_addr`.
pub fn anchor(table_len: usize, table_addr: u64) -> [u8; ANCHOR_LEN] {
    let mut a = [0u8; ANCHOR_LEN];
    a[0..5].copy_from_slice(b"_SM3_");
    a[6] = ANCHOR_LEN as u8;
    a[7] = 3; // SMBIOS 3.0.0
    a[10] = 1; // entry point revision: 3.0
    a[12..16].copy_from_slice(&(table_len as u32).to_le_bytes());
    a[ANCHOR_TABLE_ADDR_OFFSET..].copy_from_slice(&table_addr.to_le_bytes());
    a[5] = checksum(&a);
    a
}

/// The byte that makes `bytes` sum to 0.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |s, b| s.wrapping_add(*b))
        .wrapping_neg()
}

/// The entry point and the structure table, the table at `table_addr`.
pub fn build(info: &SmbiosInfo, table_addr: u64) -> ([u8; ANCHOR_LEN], Vec<u8>) {
    let tables = structures(info);
    (anchor(tables.len(), table_addr), tables)
}

/// Direct boot: write the entry point at [`layout::SMBIOS_START`] and the
/// table right after it.
pub fn write<M: GuestMemory>(mem: &M, info: &SmbiosInfo) -> Result<(), SmbiosError> {
    let table_addr = layout::SMBIOS_START + TABLE_OFFSET;
    let (anchor, tables) = build(info, table_addr);
    if table_addr + tables.len() as u64 > layout::ACPI_END {
        return Err(SmbiosError::TooBig(tables.len()));
    }
    mem.write_slice(&anchor, GuestAddress(layout::SMBIOS_START))
        .map_err(SmbiosError::Write)?;
    mem.write_slice(&tables, GuestAddress(table_addr))
        .map_err(SmbiosError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn info() -> SmbiosInfo {
        SmbiosInfo {
            manufacturer: "OpenStack Foundation".into(),
            product: "OpenStack Nova".into(),
            version: "1.0".into(),
            serial: "8a1c2e0e-3b4f-4d5e-9f60-718293a4b5c6".into(),
            uuid: parse_uuid("8A1C2E0E-3B4F-4D5E-9F60-718293A4B5C6").unwrap(),
            sku: String::new(),
            family: "Virtual Machine".into(),
            asset_tag: "tag-42".into(),
            cpus: 2,
            mem_size: 40 << 30,
        }
    }

    #[test]
    fn uuids_parse_strictly() {
        let u = parse_uuid("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        assert_eq!(u[0], 0x00);
        assert_eq!(u[15], 0xff);
        assert_eq!(
            smbios_uuid(&u)[..8],
            [0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66]
        );
        for bad in [
            "",
            "00112233445566778899aabbccddeeff",
            "0011223-34455-6677-8899-aabbccddeeff",
            "00112233-4455-6677-8899-aabbccddeefg",
            "+0112233-4455-6677-8899-aabbccddeeff",
            "00112233-4455-6677-8899-aabbccddeeff0",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn entry_point_sums_to_zero_and_names_the_table() {
        let (a, t) = build(&info(), 0xf0020);
        assert_eq!(&a[..5], b"_SM3_");
        assert_eq!(a.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(
            u32::from_le_bytes(a[12..16].try_into().unwrap()) as usize,
            t.len()
        );
        assert_eq!(u64::from_le_bytes(a[16..24].try_into().unwrap()), 0xf0020);
        assert_eq!(&t[t.len() - 6..], &[127, 4, 9, 0, 0, 0]);
    }

    /// dmidecode (Debian's) decodes the tables, from a file in its
    /// `--dump-bin` layout (entry point at 0, table at 0x20), without a
    /// warning, and reads back every configured value.
    #[test]
    fn dmidecode_decodes_the_tables() {
        let Ok(path) = which("dmidecode") else {
            panic!("dmidecode is missing: scripts/setup.sh installs it");
        };
        let (a, t) = build(&info(), TABLE_OFFSET);
        let mut dump = a.to_vec();
        dump.resize(TABLE_OFFSET as usize, 0);
        dump.extend_from_slice(&t);
        let file = std::env::temp_dir().join(format!("kiln-smbios-{}.bin", std::process::id()));
        std::fs::write(&file, &dump).unwrap();
        let out = Command::new(path)
            .arg("--from-dump")
            .arg(&file)
            .output()
            .unwrap();
        std::fs::remove_file(&file).unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stderr.trim().is_empty(), "dmidecode warned: {stderr}");
        for warning in [
            "Invalid",
            "<BAD INDEX>",
            "wrong",
            "Truncated",
            "Unknown Type",
            "OUT OF SPEC",
        ] {
            assert!(!stdout.contains(warning), "{warning:?} in:\n{stdout}");
        }
        for want in [
            "SMBIOS 3.0.0 present.",
            "Manufacturer: OpenStack Foundation",
            "Product Name: OpenStack Nova",
            "Serial Number: 8a1c2e0e-3b4f-4d5e-9f60-718293a4b5c6",
            "UUID: 8a1c2e0e-3b4f-4d5e-9f60-718293a4b5c6",
            "Family: Virtual Machine",
            "Asset Tag: tag-42",
            "Socket Designation: CPU 1",
            "Maximum Capacity: 40 GB",
            "Size: 40 GB",
            "No errors detected",
            "System is a virtual machine",
            "End Of Table",
        ] {
            assert!(stdout.contains(want), "{want:?} missing from:\n{stdout}");
        }
        let handles = stdout.matches("Handle 0x").count();
        assert_eq!(handles, 10, "{stdout}");
    }

    fn which(name: &str) -> Result<std::path::PathBuf, ()> {
        ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(name))
            .find(|p| p.exists())
            .ok_or(())
    }
}
