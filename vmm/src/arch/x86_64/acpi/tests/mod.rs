//! Tests of the ACPI tables: checksums, pointers through guest memory, and
//! the contents of each table read back field by field. The DSDT's AML is
//! checked in `dsdt_tests`.

mod dsdt;
mod golden;
mod tpm;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::device_manager::platform::describe;
use crate::devices::legacy::{pm, reset};

pub(super) const MIB: u64 = 1 << 20;
pub(super) const GIB: u64 = 1 << 30;

pub(super) fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

pub(super) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
pub(super) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
pub(super) fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

pub(super) fn table<'a>(t: &'a AcpiTables, sig: &[u8; 4]) -> &'a [u8] {
    t.table(sig)
        .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(sig)))
}

/// Runs acpiexec (Debian's acpica-tools) in batch mode on `tables`
/// (signature, bytes), executing `commands`; asserts it succeeded without
/// a complaint and returns what it printed. `tag` names the scratch
/// directory.
pub(super) fn acpiexec(tag: &str, tables: &[(&[u8; 4], &[u8])], commands: &str) -> String {
    let dir = std::env::temp_dir().join(format!("kiln-{tag}-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (sig, bytes) in tables {
        let path = dir.join(format!("{}.dat", String::from_utf8_lossy(*sig)));
        std::fs::write(&path, bytes).unwrap();
        files.push(path);
    }
    let out = std::process::Command::new("acpiexec")
        .arg("-b")
        .arg(commands)
        .args(&files)
        .output();
    std::fs::remove_dir_all(&dir).unwrap();
    let out = out.expect("acpiexec not found: install acpica-tools (scripts/setup.sh)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // acpiexec's own hardware self-tests ("aetests") complain about the
    // PM2 and GPE blocks this machine does not have; anything else counts.
    let complaints: Vec<_> = text
        .lines()
        .filter(|l| !l.contains("aetests"))
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("error") || l.contains("warning") || l.contains("fail")
        })
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}\n{text}");
    text
}

/// Guest memory covering the low MiB, where the tables go.
fn low_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MIB as usize)]).unwrap()
}

/// Read an SDT from guest memory at `addr`: its header's length, then all of it.
fn read_sdt(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
    assert!(
        (layout::ACPI_START..layout::ACPI_END).contains(&addr),
        "{addr:#x} outside the ACPI area"
    );
    let mut header = [0u8; 36];
    mem.read_slice(&mut header, GuestAddress(addr)).unwrap();
    let len = u32_at(&header, 4) as usize;
    assert!(len >= 36 && addr + len as u64 <= layout::ACPI_END);
    let mut bytes = vec![0u8; len];
    mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
    bytes
}

#[test]
fn every_table_has_a_valid_header_and_checksum() {
    for cpus in [1u8, 2, 8, 255] {
        let t = build_tables(&describe(cpus, 512 * MIB)).unwrap();
        let sigs: Vec<_> = t.entries.iter().map(|e| e.signature).collect();
        assert_eq!(
            sigs,
            [*b"FACS", *b"DSDT", *b"APIC", *b"MCFG", *b"FACP", *b"XSDT"]
        );
        for e in &t.entries {
            let bytes = &t.tables[e.offset..e.offset + e.len];
            assert_eq!(&bytes[..4], &e.signature);
            assert_eq!(u32_at(bytes, 4) as usize, e.len);
            assert_eq!(e.offset % 8, 0);
            if &e.signature == b"FACS" {
                // The FACS has no checksum; it must be 64-byte aligned.
                assert_eq!(e.len, 64);
                assert_eq!((t.tables_addr + e.offset as u64) % 64, 0);
            } else {
                assert_eq!(sum(bytes), 0, "{}", String::from_utf8_lossy(&e.signature));
                assert_eq!(&bytes[10..16], &OEM_ID);
            }
        }
        let rsdp = &t.rsdp;
        assert_eq!(rsdp.len(), 36);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(rsdp[15], 2, "revision");
        assert_eq!(u32_at(rsdp, 20), 36, "length");
        assert_eq!(u32_at(rsdp, 16), 0, "no RSDT");
        assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(rsdp), 0, "extended checksum");
        assert_eq!(t.rsdp_addr, layout::ACPI_START);
        assert_eq!(t.rsdp_addr % 16, 0);
        assert!(t.rsdp_addr + 36 <= t.tables_addr);
        assert!(t.tables_addr + t.tables.len() as u64 <= layout::ACPI_END);
    }
}

#[test]
fn pointers_resolve_in_guest_memory() {
    let mem = low_memory();
    let rsdp_addr = create_acpi_tables(&mem, &describe(4, 2 * GIB)).unwrap();
    assert_eq!(rsdp_addr, GuestAddress(layout::ACPI_START));
    let mut rsdp = [0u8; 36];
    mem.read_slice(&mut rsdp, rsdp_addr).unwrap();
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp), 0);

    let xsdt = read_sdt(&mem, u64_at(&rsdp, 24));
    assert_eq!(&xsdt[..4], b"XSDT");
    assert_eq!(sum(&xsdt), 0);
    let mut found = Vec::new();
    for i in 0..(xsdt.len() - 36) / 8 {
        let table = read_sdt(&mem, u64_at(&xsdt, 36 + 8 * i));
        assert_eq!(sum(&table), 0);
        found.push(table);
    }
    let sigs: Vec<_> = found.iter().map(|t| &t[..4]).collect();
    assert_eq!(sigs, [b"FACP", b"APIC", b"MCFG"]);

    let fadt = &found[0];
    let dsdt_addr = u64::from(u32_at(fadt, fadt::DSDT));
    assert_eq!(u64_at(fadt, fadt::X_DSDT), dsdt_addr);
    // Like QEMU, the FACS only through the 32-bit field.
    assert_eq!(u64_at(fadt, fadt::X_FIRMWARE_CTRL), 0);
    let dsdt = read_sdt(&mem, dsdt_addr);
    assert_eq!(&dsdt[..4], b"DSDT");
    assert_eq!(sum(&dsdt), 0);
    let facs_addr = u64::from(u32_at(fadt, fadt::FIRMWARE_CTRL));
    assert_eq!(facs_addr % 64, 0);
    let mut facs = [0u8; 8];
    mem.read_slice(&mut facs, GuestAddress(facs_addr)).unwrap();
    assert_eq!(&facs[..4], b"FACS");
    assert_eq!(u32_at(&facs, 4), 64);
}

#[test]
fn pointer_list_is_complete_and_relocatable() {
    let a = build_tables_at(&describe(3, GIB), 0, 0).unwrap();
    let b = build_tables(&describe(3, GIB)).unwrap();
    assert_eq!(a.tables.len(), b.tables.len());
    let delta = b.tables_addr;
    // Fields a loader patches, and checksum bytes of tables holding them.
    let mut patched = vec![false; a.tables.len()];
    for p in &a.pointers {
        let (a_blob, b_blob) = match p.blob {
            Blob::Rsdp => (&a.rsdp, &b.rsdp),
            Blob::Tables => (&a.tables, &b.tables),
        };
        let (va, vb) = match p.size {
            4 => (
                u64::from(u32_at(a_blob, p.offset)),
                u64::from(u32_at(b_blob, p.offset)),
            ),
            8 => (u64_at(a_blob, p.offset), u64_at(b_blob, p.offset)),
            s => panic!("pointer of size {s}"),
        };
        // With base 0, a pointer is the offset of a table in the blob.
        assert!(a.entries.iter().any(|e| e.offset as u64 == va), "{p:?}");
        assert_eq!(vb, va + delta, "{p:?}");
        if p.blob == Blob::Tables {
            patched[p.offset..p.offset + usize::from(p.size)].fill(true);
        }
    }
    for e in &a.entries {
        if &e.signature != b"FACS" {
            patched[e.offset + 9] = true;
        }
    }
    for (i, (x, y)) in a.tables.iter().zip(&b.tables).enumerate() {
        assert!(x == y || patched[i], "byte {i} differs but is no pointer");
    }
    // RSDP: only the XSDT address and the two checksums may differ.
    for (i, (x, y)) in a.rsdp.iter().zip(&b.rsdp).enumerate() {
        assert!(x == y || (24..32).contains(&i) || i == 8 || i == 32, "{i}");
    }
    assert_eq!(a.pointers.len(), 1 + 3 + 3);
}

#[test]
fn madt_lists_each_cpu_the_ioapic_and_the_overrides() {
    for cpus in [1u8, 2, 7, 255] {
        let t = build_tables(&describe(cpus, GIB)).unwrap();
        let madt = table(&t, b"APIC");
        assert_eq!(u32_at(madt, 36), layout::LAPIC_START as u32);
        assert_eq!(u32_at(madt, 40) & 1, 1, "PCAT_COMPAT");
        let mut lapics = Vec::new();
        let mut ioapics = Vec::new();
        let mut overrides = Vec::new();
        let mut nmis = Vec::new();
        let mut off = 44;
        while off < madt.len() {
            let (kind, len) = (madt[off], usize::from(madt[off + 1]));
            assert!(len >= 2 && off + len <= madt.len());
            let e = &madt[off..off + len];
            match kind {
                0 => {
                    assert_eq!(len, 8);
                    lapics.push((e[2], e[3], u32_at(e, 4)));
                }
                1 => {
                    assert_eq!(len, 12);
                    ioapics.push((e[2], u32_at(e, 4), u32_at(e, 8)));
                }
                2 => {
                    assert_eq!(len, 10);
                    overrides.push((e[2], e[3], u32_at(e, 4), u16_at(e, 8)));
                }
                4 => {
                    assert_eq!(len, 6);
                    nmis.push((e[2], u16_at(e, 3), e[5]));
                }
                k => panic!("unexpected MADT entry type {k}"),
            }
            off += len;
        }
        assert_eq!(off, madt.len());
        let expect: Vec<_> = (0..cpus).map(|i| (i, i, 1)).collect();
        assert_eq!(lapics, expect, "uid, APIC id, enabled");
        assert_eq!(ioapics, vec![(0, layout::IOAPIC_START as u32, 0)]);
        assert_eq!(
            overrides,
            vec![
                (0, 0, 2, 0),
                (0, layout::SCI_IRQ as u8, layout::SCI_IRQ, 0b1101),
                (0, 10, 10, 0b1111),
                (0, 11, 11, 0b1111),
            ],
            "IRQ0 -> GSI2; SCI active high, level; PCI INTx IRQs active low, level"
        );
        assert_eq!(nmis, vec![(0xff, 0, 1)], "LINT1 of all processors");
    }
}

#[test]
fn mcfg_describes_the_ecam_area() {
    let t = build_tables(&describe(1, GIB)).unwrap();
    let mcfg = table(&t, b"MCFG");
    assert_eq!(mcfg.len(), 44 + 16);
    let e = &mcfg[44..];
    assert_eq!(u64_at(e, 0), layout::PCI_ECAM_START);
    assert_eq!(u16_at(e, 8), 0, "segment");
    let (start_bus, end_bus) = (e[10], e[11]);
    assert_eq!((start_bus, end_bus), (0, 0));
    assert_eq!(
        (u64::from(end_bus) - u64::from(start_bus) + 1) * MIB,
        layout::PCI_ECAM_SIZE
    );
}

#[test]
fn fadt_points_at_the_pm_and_reset_registers() {
    let t = build_tables(&describe(2, GIB)).unwrap();
    let f = table(&t, b"FACP");
    assert_eq!(f.len(), fadt::LENGTH);
    assert_eq!(f[8], 6, "revision");
    assert_eq!(u16_at(f, fadt::SCI_INT), layout::SCI_IRQ as u16);
    assert_eq!(u32_at(f, fadt::SMI_CMD), 0, "always in ACPI mode");
    let ports = [
        (
            fadt::PM1A_EVT_BLK,
            fadt::PM1_EVT_LEN,
            fadt::X_PM1A_EVT_BLK,
            layout::PM1A_EVT_PORT,
            4,
        ),
        (
            fadt::PM1A_CNT_BLK,
            fadt::PM1_CNT_LEN,
            fadt::X_PM1A_CNT_BLK,
            layout::PM1A_CNT_PORT,
            2,
        ),
        (
            fadt::PM_TMR_BLK,
            fadt::PM_TMR_LEN,
            fadt::X_PM_TMR_BLK,
            layout::PM_TMR_PORT,
            4,
        ),
    ];
    for (blk, len, x_blk, port, bytes) in ports {
        assert_eq!(u32_at(f, blk), u32::from(port));
        assert_eq!(f[len], bytes);
        // X_ GAS: system I/O, bit width = length, the same port.
        assert_eq!(f[x_blk], 1);
        assert_eq!(f[x_blk + 1], 8 * bytes);
        assert_eq!(u64_at(f, x_blk + 4), u64::from(port));
    }
    // The PM block of the device covers all three.
    assert_eq!(
        u64::from(layout::PM_TMR_PORT - layout::PM_IO_BASE) + 4,
        pm::PM_IO_LEN
    );
    let flags = u32_at(f, fadt::FLAGS);
    assert_eq!(flags & (1 << 20), 0, "not hardware-reduced");
    assert_eq!(
        flags & (1 << 4) == 0,
        pm::FIXED_POWER_BUTTON,
        "PWR_BUTTON clear: fixed-hardware power button"
    );
    assert_eq!(flags & (1 << 8) != 0, pm::PM_TMR_BITS == 32, "TMR_VAL_EXT");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    assert_ne!(flags & 1, 0, "WBINVD");
    // Reset register: system I/O, 8 bits, byte access, port 0xCF9.
    let r = &f[fadt::RESET_REG..fadt::RESET_REG + 12];
    assert_eq!(&r[..4], &[1, 8, 0, 1]);
    assert_eq!(u64_at(r, 4), u64::from(layout::RESET_CONTROL_PORT));
    assert_eq!(layout::RESET_CONTROL_PORT, 0xcf9);
    assert_eq!(f[fadt::RESET_VALUE], 0x06);
    assert_eq!(f[fadt::RESET_VALUE] & reset::RST_CPU, reset::RST_CPU);
    assert_eq!(f[fadt::CENTURY], 0x32);
    let boot_arch = u16_at(f, fadt::IAPC_BOOT_ARCH);
    assert_ne!(boot_arch & 0b10, 0, "8042 present");
    assert_eq!(boot_arch & (1 << 5), 0, "CMOS RTC present");
}

#[test]
fn bad_requests_are_errors() {
    assert!(matches!(
        build_tables(&describe(0, GIB)),
        Err(AcpiError::NoCpus)
    ));
    assert!(matches!(
        build_tables(&describe(1, 0)),
        Err(AcpiError::MemorySize(0))
    ));
    assert!(matches!(
        build_tables(&describe(1, layout::MAX_MEMORY + 1)),
        Err(AcpiError::MemorySize(_))
    ));
    assert!(matches!(
        build_tables_at(&describe(1, GIB), 0, 0x1010),
        Err(AcpiError::Misaligned(0x1010))
    ));
    // Guest memory that ends before the ACPI area.
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0xa0000)]).unwrap();
    let err = create_acpi_tables(&mem, &describe(1, GIB)).unwrap_err();
    assert!(matches!(err, AcpiError::GuestMemory { .. }), "{err}");
    // The largest machine still fits, below the SMBIOS tables.
    let big = build_tables(&describe(255, layout::MAX_MEMORY)).unwrap();
    assert!(big.tables_addr + (big.tables.len() as u64) <= layout::SMBIOS_START);
}

/// ACPICA, the interpreter inside Linux, loads all the tables (acpiexec
/// from Debian's acpica-tools) without a warning and evaluates \_S5_.
#[test]
fn acpica_loads_the_tables_cleanly() {
    let t = build_tables(&describe(4, 8 * GIB)).unwrap();
    let tables: Vec<_> = t
        .entries
        .iter()
        .filter(|e| &e.signature != b"XSDT")
        .map(|e| (&e.signature, &t.tables[e.offset..e.offset + e.len]))
        .collect();
    let text = acpiexec("acpi", &tables, "evaluate \\_S5_; evaluate \\_SB.PCI0._CRS");
    assert!(text.contains("successfully acquired and loaded"), "{text}");
    let s5 = format!("[Integer] = {:016X}", pm::S5_SLEEP_TYPE);
    assert_eq!(text.matches(&s5).count(), 2, "{text}");
    assert!(
        text.contains("Evaluation of \\_SB.PCI0._CRS returned"),
        "{text}"
    );
}

#[test]
fn pm_ports_match_the_device() {
    use crate::arch::x86_64::layout;
    assert_eq!(
        layout::PM1A_EVT_PORT,
        layout::PM_IO_BASE + pm::PM1_STS as u16
    );
    assert_eq!(
        layout::PM1A_CNT_PORT,
        layout::PM_IO_BASE + pm::PM1_CNT as u16
    );
    assert_eq!(layout::PM_TMR_PORT, layout::PM_IO_BASE + pm::PM_TMR as u16);
}

#[test]
fn a_prt_too_long_for_one_package_is_an_error() {
    let mut p = describe(1, 64 * MIB);
    let intx = p.pci_intx[0];
    p.pci_intx = vec![intx; super::dsdt::MAX_PRT_ENTRIES + 1];
    assert!(matches!(
        build_tables(&p),
        Err(AcpiError::TooManyPciIntx(256))
    ));
    p.pci_intx.truncate(super::dsdt::MAX_PRT_ENTRIES);
    assert!(build_tables(&p).is_ok());
}
