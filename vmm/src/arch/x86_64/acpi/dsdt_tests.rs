//! Tests of the DSDT: its AML decoded back (by `aml_reader`) into the
//! devices, resources and sleep states it must describe.

use super::aml_reader::{self, Node, Resource, Value};
use super::tests::{table, GIB, MIB};
use super::*;
use crate::devices::legacy::pm;

fn dsdt_nodes(cpus: u8, mem_size: u64) -> Vec<Node> {
    let t = build_tables(cpus, mem_size).unwrap();
    let dsdt = table(&t, b"DSDT");
    assert_eq!(dsdt[8], 2, "64-bit integers");
    aml_reader::parse(&dsdt[36..]).unwrap()
}

fn crs(nodes: &[Node], device: &str) -> Vec<Resource> {
    let path = format!("{device}._CRS");
    match aml_reader::find_name(nodes, &path) {
        Some(Value::Buffer(b)) => aml_reader::resources(b).unwrap(),
        v => panic!("{path}: {v:?}"),
    }
}

/// Decode a compressed EISA id back to its 7-character form.
fn eisa_id(v: &Value) -> String {
    let Value::Int(v) = v else {
        panic!("{v:?} is not an EISA id")
    };
    let v = (*v as u32).swap_bytes();
    let letter = |shift: u32| char::from(b'@' + ((v >> shift) & 0x1f) as u8);
    format!(
        "{}{}{}{:04X}",
        letter(26),
        letter(21),
        letter(16),
        v & 0xffff
    )
}

#[test]
fn dsdt_has_the_sleep_states() {
    let nodes = dsdt_nodes(1, GIB);
    let s5 = u64::from(layout::S5_SLEEP_TYPE);
    assert_eq!(
        aml_reader::find_name(&nodes, "\\_S5_"),
        Some(&Value::Package(vec![
            Value::Int(s5),
            Value::Int(s5),
            Value::Int(0),
            Value::Int(0)
        ]))
    );
    assert!(matches!(
        aml_reader::find_name(&nodes, "\\_S0_"),
        Some(Value::Package(p)) if p[0] == Value::Int(0)
    ));
}

#[test]
fn dsdt_describes_the_pci_host_bridge() {
    for mem_size in [512 * MIB, 3 * GIB, 8 * GIB] {
        let nodes = dsdt_nodes(2, mem_size);
        let name = |n: &str| aml_reader::find_name(&nodes, &format!("\\_SB_.PCI0.{n}")).cloned();
        assert_eq!(eisa_id(&name("_HID").unwrap()), "PNP0A08");
        assert_eq!(eisa_id(&name("_CID").unwrap()), "PNP0A03");
        assert_eq!(name("_SEG"), Some(Value::Int(0)));
        assert_eq!(name("_BBN"), Some(Value::Int(0)));
        let (m64, m64_size) = layout::mmio64_window(mem_size);
        let m32_end = layout::MMIO32_START + layout::MMIO32_SIZE - 1;
        assert_eq!(
            crs(&nodes, "\\_SB_.PCI0"),
            vec![
                Resource::Address {
                    kind: 2,
                    min: 0,
                    max: 0,
                    len: 1
                },
                Resource::Io {
                    min: 0xcf8,
                    max: 0xcf8,
                    align: 1,
                    len: 8
                },
                Resource::Address {
                    kind: 1,
                    min: 0,
                    max: 0xcf7,
                    len: 0xcf8
                },
                Resource::Address {
                    kind: 1,
                    min: 0xd00,
                    max: 0xffff,
                    len: 0xf300
                },
                Resource::Address {
                    kind: 0,
                    min: layout::MMIO32_START,
                    max: m32_end,
                    len: layout::MMIO32_SIZE
                },
                Resource::Address {
                    kind: 0,
                    min: m64,
                    max: m64 + m64_size - 1,
                    len: m64_size
                },
            ]
        );
        // The 64-bit window is above RAM and 4 GiB.
        assert!(m64 >= layout::ram_end(mem_size) && m64 >= layout::FOUR_GIB);
    }
}

#[test]
fn dsdt_describes_the_legacy_devices() {
    let nodes = dsdt_nodes(1, GIB);
    let hid = |d: &str| eisa_id(aml_reader::find_name(&nodes, &format!("{d}._HID")).unwrap());
    assert_eq!(hid("\\_SB_.COM1"), "PNP0501");
    assert_eq!(
        crs(&nodes, "\\_SB_.COM1"),
        vec![
            Resource::Io {
                min: layout::COM1_PORT,
                max: layout::COM1_PORT,
                align: 1,
                len: 8
            },
            Resource::IrqMask(1 << layout::COM1_IRQ),
        ]
    );
    assert_eq!(hid("\\_SB_.RTC_"), "PNP0B00");
    assert!(crs(&nodes, "\\_SB_.RTC_").contains(&Resource::IrqMask(1 << 8)));
    assert_eq!(hid("\\_SB_.KBD_"), "PNP0303");
    assert_eq!(
        crs(&nodes, "\\_SB_.KBD_"),
        vec![
            Resource::Io {
                min: 0x60,
                max: 0x60,
                align: 1,
                len: 1
            },
            Resource::Io {
                min: 0x64,
                max: 0x64,
                align: 1,
                len: 1
            },
            Resource::IrqMask(1 << 1),
        ]
    );
    assert_eq!(hid("\\_SB_.MBRD"), "PNP0C02");
    let mbrd = crs(&nodes, "\\_SB_.MBRD");
    assert!(mbrd.contains(&Resource::Memory32Fixed {
        base: layout::PCI_ECAM_START as u32,
        len: layout::PCI_ECAM_SIZE as u32
    }));
    assert!(mbrd.contains(&Resource::Io {
        min: layout::PM_IO_BASE,
        max: layout::PM_IO_BASE,
        align: 1,
        len: pm::PM_IO_LEN as u8
    }));
    // A control-method power button device exactly when the FADT says so.
    let flat = aml_reader::flatten(&nodes);
    let has_button = flat.iter().any(|n| {
        matches!(n, Node::Name { path, value: value @ Value::Int(_) }
            if path.ends_with("._HID") && eisa_id(value) == "PNP0C0C")
    });
    assert_eq!(has_button, !pm::FIXED_POWER_BUTTON);
}

#[test]
fn dsdt_has_one_processor_device_per_cpu() {
    for cpus in [1u8, 16, 255] {
        let nodes = dsdt_nodes(cpus, GIB);
        let mut uids = Vec::new();
        for n in aml_reader::flatten(&nodes) {
            if let Node::Device { path, children } = n {
                let hid = children.iter().find_map(|c| match c {
                    Node::Name { path: p, value } if p.ends_with("._HID") => Some(value),
                    _ => None,
                });
                if hid == Some(&Value::Str("ACPI0007".into())) {
                    let uid = aml_reader::find_name(children, &format!("{path}._UID"));
                    uids.push(uid.cloned());
                }
            }
        }
        let expect: Vec<_> = (0..u64::from(cpus)).map(|i| Some(Value::Int(i))).collect();
        assert_eq!(uids, expect);
    }
}
