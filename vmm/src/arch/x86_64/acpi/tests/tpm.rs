//! The tables of a VM with a TPM: the TPM2 table's fields, the XSDT entry,
//! the DSDT's MSFT0101 device (decoded, and evaluated by acpiexec), the
//! event log's loader commands and fw_cfg file; a byte-identity dump
//! (`golden_tpm.txt`, blessed with `KILN_BLESS_ACPI=1` like `golden.txt`,
//! which stays the dump of VMs without a TPM).

use std::fmt::Write;

use super::super::aml_reader::{self, Resource, Value};
use super::super::*;
use super::{acpiexec, sum, table, u32_at, u64_at, GIB, MIB};
use crate::arch::x86_64::fw_cfg::{self as pc_fw_cfg, table_loader};
use crate::arch::x86_64::platform::{TpmCrbInfo, Window};
use crate::device_manager::platform::describe;
use crate::devices::tpm::{CRB_BASE, CRB_CONTROL_AREA, CRB_SIZE};

fn with_tpm(cpus: u8, mem: u64, log_size: u32) -> AcpiPlatform {
    let mut p = describe(cpus, mem);
    p.tpm = Some(TpmCrbInfo {
        window: Window {
            start: CRB_BASE,
            size: CRB_SIZE,
        },
        control_area: CRB_CONTROL_AREA,
        log_size,
    });
    p
}

#[test]
fn tpm2_table_names_the_crb_and_the_log() {
    for (log, tables) in [
        (0, build_tables(&with_tpm(2, GIB, 0)).unwrap()),
        (
            tpm2::LOG_SIZE,
            build_tables_at(&with_tpm(2, GIB, tpm2::LOG_SIZE), 0, 0).unwrap(),
        ),
    ] {
        let t = table(&tables, b"TPM2");
        assert_eq!(t.len(), tpm2::LENGTH);
        assert_eq!(u32_at(t, 4) as usize, tpm2::LENGTH);
        assert_eq!(t[8], 4, "revision 4");
        assert_eq!(sum(t), 0, "checksum");
        assert_eq!(u32_at(t, 36), 0, "client platform class");
        assert_eq!(u64_at(t, tpm2::CONTROL_AREA), 0xfed4_0040);
        assert_eq!(u32_at(t, tpm2::START_METHOD), 7, "CRB");
        assert_eq!(&t[52..64], &[0; 12], "no start method parameters");
        assert_eq!(u32_at(t, tpm2::LAML), log);
        assert_eq!(u64_at(t, tpm2::LASA), 0, "a loader fills it");
        // Listed in the XSDT, after the FADT, MADT and MCFG.
        let xsdt = table(&tables, b"XSDT");
        assert_eq!(xsdt.len(), 36 + 4 * 8);
        let entry = tables
            .entries
            .iter()
            .find(|e| &e.signature == b"TPM2")
            .unwrap();
        assert_eq!(
            u64_at(xsdt, 36 + 3 * 8),
            tables.tables_addr + entry.offset as u64
        );
        let lasa = entry.offset + tpm2::LASA;
        assert_eq!(tables.tpm_log, (log > 0).then_some(lasa));
    }
    // Without a TPM: no table, no log.
    let plain = build_tables(&describe(2, GIB)).unwrap();
    assert!(plain.table(b"TPM2").is_none());
    assert_eq!(plain.tpm_log, None);
}

/// ACPICA's disassembler (Debian acpica-tools' `iasl -d`) reads the table
/// as a TPM2 of revision 4 with the fields where QEMU's are.
#[test]
fn iasl_reads_the_tpm2_table() {
    let t = build_tables_at(&with_tpm(1, GIB, tpm2::LOG_SIZE), 0, 0).unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-tpm2-iasl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tpm2.dat"), table(&t, b"TPM2")).unwrap();
    let out = std::process::Command::new("iasl")
        .current_dir(&dir)
        .args(["-d", "tpm2.dat"])
        .output()
        .expect("iasl (acpica-tools, scripts/setup.sh)");
    let dsl = std::fs::read_to_string(dir.join("tpm2.dsl")).unwrap_or_default();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "Table Length : 0000004C",
        "Revision : 04",
        "Control Address : 00000000FED40040",
        "Start Method : 07 [Command Response Buffer]",
        "Minimum Log Length : 00010000",
        "Log Address : 0000000000000000",
    ] {
        assert!(dsl.contains(want), "{want}:\n{dsl}");
    }
}

#[test]
fn dsdt_has_the_tpm_device_only_with_a_tpm() {
    let t = build_tables(&with_tpm(1, GIB, 0)).unwrap();
    let nodes = aml_reader::parse(&table(&t, b"DSDT")[36..]).unwrap();
    let hid = aml_reader::find_name(&nodes, "\\_SB_.TPM_._HID");
    assert_eq!(hid, Some(&Value::Str("MSFT0101".into())));
    let Some(Value::Buffer(crs)) = aml_reader::find_name(&nodes, "\\_SB_.TPM_._CRS") else {
        panic!("no _CRS");
    };
    assert_eq!(
        aml_reader::resources(crs).unwrap(),
        vec![Resource::Memory32Fixed {
            base: 0xfed4_0000,
            len: 0x1000
        }]
    );
    assert_eq!(
        aml_reader::find_name(&nodes, "\\_SB_.TPM_._STA"),
        Some(&Value::Int(0xf))
    );
    let plain = build_tables(&describe(1, GIB)).unwrap();
    let nodes = aml_reader::parse(&table(&plain, b"DSDT")[36..]).unwrap();
    assert_eq!(aml_reader::find_name(&nodes, "\\_SB_.TPM_._HID"), None);
    // ACPICA loads the DSDT and finds the device's resources.
    let out = acpiexec(
        "tpm-dsdt",
        &[(b"DSDT", table(&t, b"DSDT"))],
        "evaluate \\_SB_.TPM_._CRS",
    );
    assert!(
        out.contains("Evaluation of \\_SB_.TPM_._CRS returned"),
        "{out}"
    );
}

#[test]
fn the_loader_allocates_the_log_and_points_lasa_at_it() {
    let p = with_tpm(2, GIB, tpm2::LOG_SIZE);
    let t = build_tables_at(&p, 0, 0).unwrap();
    let lasa = t.tpm_log.unwrap();
    let files = table_loader::acpi_files(&t).unwrap();
    let cmds = table_loader::decode(&files.loader).unwrap();
    let alloc = cmds
        .iter()
        .position(|c| matches!(c, table_loader::Command::Allocate { file, zone: table_loader::Zone::High, .. } if file == tpm2::LOG_FILE))
        .expect("the log is allocated");
    let pointer = cmds
        .iter()
        .position(|c| {
            *c == table_loader::Command::AddPointer {
                dest: table_loader::TABLES_FILE.into(),
                src: tpm2::LOG_FILE.into(),
                offset: lasa as u32,
                size: 8,
            }
        })
        .expect("LASA points at the log");
    assert!(alloc < pointer);
    // The TPM2 table's checksum is fixed after the pointer is patched.
    let entry = t.entries.iter().find(|e| &e.signature == b"TPM2").unwrap();
    let checksum = cmds
        .iter()
        .position(|c| matches!(c, table_loader::Command::AddChecksum { start, .. } if *start as usize == entry.offset))
        .unwrap();
    assert!(pointer < checksum);
    // fw_cfg carries the log file, zeroed, of LAML bytes.
    let contents = pc_fw_cfg::contents(&pc_fw_cfg::PcConfig::new(p)).unwrap();
    let log = contents
        .files
        .iter()
        .find(|(n, _)| *n == tpm2::LOG_FILE)
        .unwrap();
    assert_eq!(log.1.len(), tpm2::LOG_SIZE as usize);
    assert!(log.1.iter().all(|&b| b == 0));
    // Without a TPM, no such file.
    let plain = pc_fw_cfg::contents(&pc_fw_cfg::PcConfig::new(describe(2, GIB))).unwrap();
    assert!(plain.files.iter().all(|(n, _)| *n != tpm2::LOG_FILE));
}

const GOLDEN_TPM: &str = "src/arch/x86_64/acpi/tests/golden_tpm.txt";

#[test]
fn tpm_tables_are_byte_identical_to_their_golden_dump() {
    let mut now = String::new();
    for (cpus, mem) in [(1, 64 * MIB), (4, 5 * GIB)] {
        let direct = build_tables(&with_tpm(cpus, mem, 0)).unwrap();
        writeln!(now, "direct boot with a TPM, {cpus} vCPUs, {mem:#x} bytes").unwrap();
        super::golden::dump_tables(&mut now, &direct);
        let fw = build_tables_at(&with_tpm(cpus, mem, tpm2::LOG_SIZE), 0, 0).unwrap();
        writeln!(
            now,
            "firmware boot with a TPM, {cpus} vCPUs, {mem:#x} bytes"
        )
        .unwrap();
        writeln!(now, "  tpm_log {:?}", fw.tpm_log).unwrap();
        super::golden::dump_tables(&mut now, &fw);
        let files = table_loader::acpi_files(&fw).unwrap();
        super::golden::hex(&mut now, "etc/table-loader", &files.loader);
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN_TPM);
    if std::env::var_os("KILN_BLESS_ACPI").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    assert!(now == golden, "the TPM tables differ from {GOLDEN_TPM}");
}
