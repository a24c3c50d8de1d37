//! Tests of `etc/table-loader`: its byte encoding, and the ACPI tables a
//! firmware ends up with when it runs the commands the way SeaBIOS's
//! `romfile_loader` does (files read through fw_cfg DMA, allocated in the
//! F segment and high memory, pointers patched, checksums fixed). The
//! result is validated as an OS would walk it, and compared with the
//! tables Kiln builds directly for those addresses.

use std::collections::BTreeMap;

use super::super::tests::{fetch_file, guest_mem};
use crate::arch::x86_64::acpi::{self, AcpiTables, Blob, PointerField};
use crate::arch::x86_64::fw_cfg::table_loader::{self, Command, LoaderError, Zone, COMMAND_LEN};
use crate::arch::x86_64::fw_cfg::PcConfig;
use crate::device_manager::{self, platform::describe};

/// The guest memory a firmware allocates from, as separate blobs.
#[derive(Default)]
struct Loaded {
    /// name -> (guest address, bytes)
    files: BTreeMap<String, (u64, Vec<u8>)>,
}

impl Loaded {
    /// `len` bytes at guest address `addr`, which must lie in one blob.
    fn read(&self, addr: u64, len: usize) -> &[u8] {
        for (base, data) in self.files.values() {
            if addr >= *base && addr + len as u64 <= base + data.len() as u64 {
                let o = (addr - base) as usize;
                return &data[o..o + len];
            }
        }
        panic!("{len} bytes at {addr:#x} are in no loaded file");
    }

    /// The ACPI table at `addr`, its length read from its header.
    fn table(&self, addr: u64) -> &[u8] {
        let len = u32::from_le_bytes(self.read(addr + 4, 4).try_into().unwrap());
        self.read(addr, len as usize)
    }
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// Run `loader` as SeaBIOS's romfile_loader does, with the same checks.
fn execute(loader: &[u8], fetch: &mut dyn FnMut(&str) -> Option<Vec<u8>>) -> Loaded {
    let mut out = Loaded::default();
    // SeaBIOS's F-segment and high zones, bump-allocated.
    let mut fseg = 0xf_5a30u64;
    let mut high = 0x0ff0_0000u64;
    for cmd in table_loader::decode(loader).unwrap() {
        match cmd {
            Command::Allocate { file, align, zone } => {
                assert!(align.is_power_of_two(), "alignment {align}");
                let data = fetch(&file).unwrap_or_else(|| panic!("no fw_cfg file {file}"));
                let next = match zone {
                    Zone::FSeg => &mut fseg,
                    Zone::High => &mut high,
                };
                let addr = next.next_multiple_of(u64::from(align));
                *next = addr + data.len() as u64;
                assert!(
                    out.files.insert(file, (addr, data)).is_none(),
                    "allocated twice"
                );
            }
            Command::AddPointer {
                dest,
                src,
                offset,
                size,
            } => {
                assert!(matches!(size, 1 | 2 | 4 | 8), "pointer size {size}");
                let src_addr = out.files.get(&src).expect("source allocated").0;
                let d = &mut out.files.get_mut(&dest).expect("destination allocated").1;
                let (o, n) = (offset as usize, usize::from(size));
                assert!(o + n <= d.len(), "pointer inside its file");
                let mut v = [0u8; 8];
                v[..n].copy_from_slice(&d[o..o + n]);
                let p = u64::from_le_bytes(v).wrapping_add(src_addr);
                d[o..o + n].copy_from_slice(&p.to_le_bytes()[..n]);
            }
            Command::AddChecksum {
                file,
                offset,
                start,
                length,
            } => {
                let d = &mut out.files.get_mut(&file).expect("file allocated").1;
                let (o, s, l) = (offset as usize, start as usize, length as usize);
                assert!(o < d.len() && s + l <= d.len(), "checksum inside its file");
                d[o] = d[o].wrapping_sub(sum(&d[s..s + l]));
            }
        }
    }
    out
}

/// Find the RSDP where an OS looks (16-byte aligned in 0xE0000..1 MiB) and
/// walk every table from it, checking signatures, lengths and checksums.
/// Returns the signatures found through the XSDT.
fn validate(l: &Loaded, cpus: u8) -> Vec<String> {
    let (&rsdp_addr, rsdp) = l
        .files
        .values()
        .filter(|(a, d)| {
            (0xe_0000..0x10_0000).contains(a) && a % 16 == 0 && d.starts_with(b"RSD PTR ")
        })
        .map(|(a, d)| (a, d))
        .next()
        .expect("an RSDP in the BIOS area");
    assert!(rsdp_addr + 36 <= 0x10_0000);
    assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
    assert_eq!(sum(&rsdp[..36]), 0, "RSDP extended checksum");
    assert_eq!(rsdp[15], 2, "revision");
    let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
    let xsdt = l.table(xsdt_addr);
    assert_eq!(&xsdt[..4], b"XSDT");
    assert_eq!(sum(xsdt), 0, "XSDT checksum");
    let mut seen = Vec::new();
    for entry in xsdt[36..].chunks(8) {
        let addr = u64::from_le_bytes(entry.try_into().unwrap());
        let t = l.table(addr);
        assert_eq!(sum(t), 0, "{} checksum", String::from_utf8_lossy(&t[..4]));
        seen.push(String::from_utf8_lossy(&t[..4]).into_owned());
        if &t[..4] == b"FACP" {
            let facs = u64::from(u32::from_le_bytes(t[36..40].try_into().unwrap()));
            let dsdt = u64::from(u32::from_le_bytes(t[40..44].try_into().unwrap()));
            let x_dsdt = u64::from_le_bytes(t[140..148].try_into().unwrap());
            assert_eq!(facs % 64, 0, "FACS alignment");
            assert_eq!(l.read(facs, 4), b"FACS");
            assert_eq!(dsdt, x_dsdt);
            let d = l.table(dsdt);
            assert_eq!((&d[..4], sum(d)), (&b"DSDT"[..], 0));
        }
        if &t[..4] == b"APIC" {
            // One local APIC entry (type 0) per vCPU.
            let mut n = 0;
            let mut o = 44;
            while o + 2 <= t.len() {
                if t[o] == 0 {
                    n += 1;
                }
                o += usize::from(t[o + 1]).max(2);
            }
            assert_eq!(n, cpus);
        }
    }
    seen
}

#[test]
fn firmware_installs_valid_tables_equal_to_direct_boot_ones() {
    for (cpus, mem_size) in [(1u8, 64u64 << 20), (2, 512 << 20), (8, 5 << 30)] {
        let mem = guest_mem();
        let mut dev =
            device_manager::fw_cfg::build(mem.clone(), &PcConfig::new(describe(cpus, mem_size)))
                .unwrap();
        let loader = fetch_file(&mut dev, &mem, table_loader::LOADER_FILE).unwrap();
        assert_eq!(loader.len() % COMMAND_LEN, 0);
        let loaded = execute(&loader, &mut |name| fetch_file(&mut dev, &mem, name));
        let seen = validate(&loaded, cpus);
        assert_eq!(seen, ["FACP", "APIC", "MCFG"]);

        // Byte for byte what Kiln builds for those addresses directly.
        let (rsdp_addr, rsdp) = &loaded.files[table_loader::RSDP_FILE];
        let (tables_addr, tables) = &loaded.files[table_loader::TABLES_FILE];
        let direct =
            acpi::build_tables_at(&describe(cpus, mem_size), *rsdp_addr, *tables_addr).unwrap();
        assert_eq!(rsdp, &direct.rsdp);
        assert_eq!(tables, &direct.tables);
    }
}

#[test]
fn commands_encode_to_the_documented_layout() {
    let cmds = vec![
        Command::Allocate {
            file: "etc/acpi/rsdp".into(),
            align: 16,
            zone: Zone::FSeg,
        },
        Command::AddPointer {
            dest: "a".into(),
            src: "b".into(),
            offset: 0x1234,
            size: 8,
        },
        Command::AddChecksum {
            file: "c".into(),
            offset: 9,
            start: 0,
            length: 0x40,
        },
    ];
    let bytes = table_loader::encode(&cmds).unwrap();
    assert_eq!(bytes.len(), 3 * COMMAND_LEN);
    let (a, p, c) = (&bytes[..128], &bytes[128..256], &bytes[256..]);
    assert_eq!(a[..4], 1u32.to_le_bytes());
    assert_eq!(&a[4..17], b"etc/acpi/rsdp");
    assert!(a[17..60].iter().all(|&b| b == 0));
    assert_eq!(a[60..64], 16u32.to_le_bytes());
    assert_eq!(a[64], 2);
    assert_eq!(p[..4], 2u32.to_le_bytes());
    assert_eq!((p[4], p[60]), (b'a', b'b'));
    assert_eq!(p[116..120], 0x1234u32.to_le_bytes());
    assert_eq!(p[120], 8);
    assert_eq!(c[..4], 3u32.to_le_bytes());
    assert_eq!(c[60..64], 9u32.to_le_bytes());
    assert_eq!(c[64..68], 0u32.to_le_bytes());
    assert_eq!(c[68..72], 0x40u32.to_le_bytes());
    assert!(c[72..].iter().all(|&b| b == 0));
    assert_eq!(table_loader::decode(&bytes).unwrap(), cmds);
}

#[test]
fn malformed_loader_input_is_an_error() {
    let long = "n".repeat(table_loader::NAME_LEN);
    assert_eq!(
        Command::AddChecksum {
            file: long.clone(),
            offset: 0,
            start: 0,
            length: 0
        }
        .encode(),
        Err(LoaderError::Name(long))
    );
    assert_eq!(
        table_loader::decode(&[0; 100]),
        Err(LoaderError::Length(100))
    );
    // Unknown commands (and the empty command 0) are skipped, as firmware
    // skips them.
    let mut unknown = [0u8; COMMAND_LEN];
    unknown[0] = 9;
    assert_eq!(table_loader::decode(&unknown).unwrap(), vec![]);
    let mut no_nul = [b'x'; COMMAND_LEN];
    no_nul[..4].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        table_loader::decode(&no_nul),
        Err(LoaderError::Malformed { index: 0, .. })
    ));
    let mut zone = Command::Allocate {
        file: "f".into(),
        align: 1,
        zone: Zone::High,
    }
    .encode()
    .unwrap();
    zone[64] = 7;
    assert!(matches!(
        table_loader::decode(&zone),
        Err(LoaderError::Malformed { index: 0, .. })
    ));
}

#[test]
fn tables_with_pointers_outside_them_are_refused() {
    let good: AcpiTables = acpi::build_tables_at(&describe(1, 64 << 20), 0, 0).unwrap();
    let mut bad = good.clone();
    bad.pointers.push(PointerField {
        blob: Blob::Tables,
        offset: good.tables.len() - 4,
        size: 8,
    });
    assert!(matches!(
        table_loader::acpi_files(&bad),
        Err(LoaderError::OutOfRange { .. })
    ));
    let mut short = good.clone();
    short.rsdp.truncate(20);
    assert!(table_loader::acpi_files(&short).is_err());
    let mut past = good;
    past.entries[1].len = past.tables.len();
    assert!(table_loader::acpi_files(&past).is_err());
}

#[test]
fn tables_name_the_pm_block_where_it_is_when_the_firmware_reads_them() {
    use crate::arch::x86_64::acpi::fadt;
    use crate::arch::x86_64::layout;
    use std::sync::{Arc, Mutex};
    let (cpus, mem_size) = (2u8, 512u64 << 20);
    let cfg = PcConfig::new(describe(cpus, mem_size));
    let mem = guest_mem();
    let mut dev = device_manager::fw_cfg::build(mem.clone(), &cfg).unwrap();
    let live: Arc<Mutex<Option<u16>>> = Arc::default();
    let l = live.clone();
    device_manager::fw_cfg::follow_pm_base(&mut dev, &cfg, move || *l.lock().unwrap()).unwrap();
    let u32_at = |t: &[u8], o: usize| u32::from_le_bytes(t[o..o + 4].try_into().unwrap());
    let u64_at = |t: &[u8], o: usize| u64::from_le_bytes(t[o..o + 8].try_into().unwrap());
    // (PM base the firmware programmed or None, base the tables must name)
    for (programmed, named) in [
        (None, layout::PM_IO_BASE),
        (Some(0xb000u16), 0xb000),
        (Some(0x600), 0x600),
        (None, 0x600),
    ] {
        *live.lock().unwrap() = programmed;
        let loader = fetch_file(&mut dev, &mem, table_loader::LOADER_FILE).unwrap();
        let loaded = execute(&loader, &mut |name| fetch_file(&mut dev, &mem, name));
        assert_eq!(validate(&loaded, cpus), ["FACP", "APIC", "MCFG"]);
        let (tables_addr, tables) = &loaded.files[table_loader::TABLES_FILE];
        let (rsdp_addr, _) = &loaded.files[table_loader::RSDP_FILE];
        let direct = acpi::build_tables_at(
            &describe(cpus, mem_size).with_pm_base(named),
            *rsdp_addr,
            *tables_addr,
        )
        .unwrap();
        assert_eq!(tables, &direct.tables, "{programmed:?}");
        let f = direct.table(b"FACP").unwrap();
        let base = u32::from(named);
        assert_eq!(u32_at(f, fadt::PM1A_EVT_BLK), base);
        assert_eq!(u32_at(f, fadt::PM1A_CNT_BLK), base + 4);
        assert_eq!(u32_at(f, fadt::PM_TMR_BLK), base + 8);
        // The 64-bit GAS forms: address at +4.
        assert_eq!(u64_at(f, fadt::X_PM1A_EVT_BLK + 4), u64::from(base));
        assert_eq!(u64_at(f, fadt::X_PM1A_CNT_BLK + 4), u64::from(base + 4));
        assert_eq!(u64_at(f, fadt::X_PM_TMR_BLK + 4), u64::from(base + 8));
    }
}
