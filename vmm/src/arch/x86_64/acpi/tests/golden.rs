//! Byte identity: the tables for a set of machines (direct boot at the
//! default place; firmware boot at 0 with the loader files, with the PM
//! block where the layout puts it and where a firmware moved it; 1 to 255
//! vCPUs; RAM below and above the 32-bit hole) against `golden.txt`, a
//! hexdump made by the code before the tables were fed a platform
//! description. Regenerate it only for an intended change:
//! `KILN_BLESS_ACPI=1 cargo test -p kiln-vmm --lib golden`.

use std::fmt::Write;

use super::super::*;
use super::{GIB, MIB};
use crate::arch::x86_64::fw_cfg::table_loader;
use crate::device_manager::platform::describe;

const CPUS: [u8; 4] = [1, 2, 8, 255];
const MEM: [u64; 2] = [64 * MIB, 5 * GIB];
/// A PM base such as SeaBIOS programs (0xb000 on i440FX).
const FIRMWARE_PM_BASE: u16 = 0xb000;

pub(super) fn hex(out: &mut String, name: &str, bytes: &[u8]) {
    writeln!(out, "  {name} ({} bytes)", bytes.len()).unwrap();
    for (i, chunk) in bytes.chunks(64).enumerate() {
        write!(out, "    {:05x} ", i * 64).unwrap();
        for b in chunk {
            write!(out, "{b:02x}").unwrap();
        }
        out.push('\n');
    }
}

pub(super) fn dump_tables(out: &mut String, t: &AcpiTables) {
    writeln!(
        out,
        "  rsdp_addr {:#x} tables_addr {:#x}",
        t.rsdp_addr, t.tables_addr
    )
    .unwrap();
    writeln!(out, "  entries {:?}", t.entries).unwrap();
    writeln!(out, "  pointers {:?}", t.pointers).unwrap();
    hex(out, "rsdp", &t.rsdp);
    hex(out, "tables", &t.tables);
}

/// The dump of every machine, built by `direct`, `firmware` and
/// `firmware_moved_pm` (tables for (cpus, mem_size)).
pub(super) fn dump(
    direct: impl Fn(u8, u64) -> AcpiTables,
    firmware: impl Fn(u8, u64) -> AcpiTables,
    firmware_moved_pm: impl Fn(u8, u64, u16) -> AcpiTables,
) -> String {
    let mut out = String::new();
    for mem in MEM {
        for cpus in CPUS {
            writeln!(out, "direct boot, {cpus} vCPUs, {mem:#x} bytes").unwrap();
            dump_tables(&mut out, &direct(cpus, mem));
            writeln!(out, "firmware boot, {cpus} vCPUs, {mem:#x} bytes").unwrap();
            let t = firmware(cpus, mem);
            dump_tables(&mut out, &t);
            let files = table_loader::acpi_files(&t).unwrap();
            hex(&mut out, "etc/acpi/rsdp", &files.rsdp);
            assert_eq!(files.tables, t.tables, "etc/acpi/tables");
            hex(&mut out, "etc/table-loader", &files.loader);
            writeln!(
                out,
                "firmware boot, PM at {FIRMWARE_PM_BASE:#x}, {cpus} vCPUs, {mem:#x} bytes"
            )
            .unwrap();
            dump_tables(&mut out, &firmware_moved_pm(cpus, mem, FIRMWARE_PM_BASE));
        }
    }
    out
}

const GOLDEN: &str = "src/arch/x86_64/acpi/tests/golden.txt";

#[test]
fn tables_are_byte_identical_to_the_golden_dump() {
    let now = dump(
        |cpus, mem| build_tables(&describe(cpus, mem)).unwrap(),
        |cpus, mem| build_tables_at(&describe(cpus, mem), 0, 0).unwrap(),
        |cpus, mem, pm| build_tables_at(&describe(cpus, mem).with_pm_base(pm), 0, 0).unwrap(),
    );
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("KILN_BLESS_ACPI").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    if now != golden {
        let line = now
            .lines()
            .zip(golden.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(now.lines().count().min(golden.lines().count()));
        panic!(
            "the ACPI tables differ from {GOLDEN} at line {}:\n  now:    {:?}\n  golden: {:?}",
            line + 1,
            now.lines().nth(line),
            golden.lines().nth(line)
        );
    }
}
