//! Tests of the DSDT: its AML decoded back (by `aml_reader`) into the
//! devices, resources and sleep states it must describe.

use super::super::aml_reader::{self, Node, Resource, Value};
use super::super::tests::{acpiexec, table, GIB, MIB};
use super::super::*;
use crate::device_manager::platform::describe;
use crate::devices::legacy::pm;

fn dsdt_nodes(cpus: u8, mem_size: u64) -> Vec<Node> {
    let t = build_tables(&describe(cpus, mem_size)).unwrap();
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
    let s5 = u64::from(pm::S5_SLEEP_TYPE);
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
    assert_eq!(hid("\\_SB_.MOU_"), "PNP0F13");
    assert_eq!(crs(&nodes, "\\_SB_.MOU_"), vec![Resource::IrqMask(1 << 12)]);
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

/// The GSI of `pin` (0 = INTA#) of `slot` written out from SeaBIOS's
/// i440FX routing, independently of `irq::pci_pin_gsi`: link
/// `(pin + slot - 1) & 3`, links A-D on IRQ 10, 10, 11, 11.
fn seabios_gsi(slot: u8, pin: u8) -> u64 {
    [10, 10, 11, 11][usize::from((pin + slot - 1) & 3)]
}

/// The decoded _PRT: (slot, pin, source, GSI) per entry, in table order.
fn decoded_prt(nodes: &[Node]) -> Vec<(u64, u64, Value, u64)> {
    let Some(Value::Package(entries)) = aml_reader::find_name(nodes, "\\_SB_.PCI0._PRT") else {
        panic!("no \\_SB_.PCI0._PRT package");
    };
    entries
        .iter()
        .map(|e| match e {
            Value::Package(f) => match f.as_slice() {
                [Value::Int(addr), Value::Int(pin), source, Value::Int(gsi)] => {
                    assert_eq!(addr & 0xffff, 0xffff, "{addr:#x}: any function");
                    (addr >> 16, *pin, source.clone(), *gsi)
                }
                f => panic!("_PRT entry {f:?}"),
            },
            e => panic!("_PRT entry {e:?} is not a package"),
        })
        .collect()
}

#[test]
fn prt_routes_every_pin_of_every_slot_to_the_gsi_the_vmm_raises() {
    let nodes = dsdt_nodes(2, GIB);
    let prt = decoded_prt(&nodes);
    let mut expect = Vec::new();
    for slot in 1..32u8 {
        for pin in 0..4u8 {
            expect.push((u64::from(slot), u64::from(pin), seabios_gsi(slot, pin)));
        }
    }
    let got: Vec<_> = prt
        .iter()
        .map(|(slot, pin, source, gsi)| {
            assert_eq!(*source, Value::Int(0), "a GSI, not a link device");
            (*slot, *pin, *gsi)
        })
        .collect();
    assert_eq!(got, expect, "slots 1-31 × INTA#..INTD#, SeaBIOS's swizzle");
    // The same function decides the wiring: INTA# is where wire_intx
    // raises a transitional device's interrupt.
    for &(slot, pin, gsi) in &got {
        let (slot, pin) = (slot as u8, pin as u8);
        assert_eq!(
            gsi,
            u64::from(crate::arch::x86_64::irq::pci_pin_gsi(slot, pin + 1))
        );
        if pin == 0 {
            assert_eq!(gsi, u64::from(crate::arch::x86_64::irq::intx_gsi(slot)));
        }
    }
    assert_eq!(
        describe(1, 64 * MIB)
            .pci_intx
            .iter()
            .map(|e| (u64::from(e.slot), u64::from(e.pin), u64::from(e.gsi)))
            .collect::<Vec<_>>(),
        got
    );
    // Spot checks against QEMU's PIIX: slot 1 INTA# is LNKA, slot 2 INTD#
    // wraps to LNKA, slot 3 INTA# is LNKC.
    assert_eq!(got[0], (1, 0, 10));
    assert_eq!(got[7], (2, 3, 10));
    assert_eq!(got[8], (3, 0, 11));
    // The tables given to firmware through fw_cfg (built at address 0,
    // for the table loader to place) hold the same _PRT.
    let fw = build_tables_at(&describe(8, 8 * GIB), 0, 0).unwrap();
    let fw_nodes = aml_reader::parse(&table(&fw, b"DSDT")[36..]).unwrap();
    assert_eq!(decoded_prt(&fw_nodes), prt);
}

/// Every GSI in the _PRT is an ISA IRQ the MADT overrides to itself as
/// level triggered, active low: what a static _PRT entry means, so the
/// OS never sees two descriptions of one pin.
#[test]
fn madt_overrides_agree_with_the_prt() {
    let t = build_tables(&describe(2, GIB)).unwrap();
    let madt = table(&t, b"APIC");
    let mut overrides = Vec::new();
    let mut off = 44;
    while off < madt.len() {
        let (kind, len) = (madt[off], usize::from(madt[off + 1]));
        if kind == madt::TYPE_INTERRUPT_OVERRIDE {
            let e = &madt[off..off + len];
            overrides.push((
                u64::from(e[3]),
                u64::from(super::super::tests::u32_at(e, 4)),
                super::super::tests::u16_at(e, 8),
            ));
        }
        off += len;
    }
    let mut gsis: Vec<u64> = decoded_prt(&dsdt_nodes(2, GIB))
        .iter()
        .map(|e| e.3)
        .collect();
    gsis.sort_unstable();
    gsis.dedup();
    assert_eq!(gsis, vec![10, 11]);
    for gsi in gsis {
        let o: Vec<_> = overrides.iter().filter(|o| o.0 == gsi).collect();
        assert_eq!(
            o,
            vec![&(gsi, gsi, madt::INTI_ACTIVE_LOW | madt::INTI_LEVEL)],
            "IRQ {gsi}"
        );
        assert_ne!(gsi, u64::from(layout::SCI_IRQ), "not shared with the SCI");
    }
}

/// ACPICA (acpiexec from Debian's acpica-tools) evaluates \_SB.PCI0._PRT
/// and checks it against the predefined-name rules for _PRT (a package of
/// four-element packages with the right types) without a complaint.
#[test]
fn acpica_evaluates_the_prt() {
    let t = build_tables(&describe(2, GIB)).unwrap();
    let tables = [b"DSDT", b"FACP", b"APIC"].map(|sig| (sig, table(&t, sig)));
    let text = acpiexec("prt", &tables, "evaluate \\_SB.PCI0._PRT");
    let result = text
        .split_once("Evaluation of \\_SB.PCI0._PRT returned")
        .unwrap_or_else(|| panic!("no _PRT evaluation\n{text}"))
        .1;
    assert!(
        result.contains("[Package] Contains 124 Elements:"),
        "{text}"
    );
    // ACPICA's integers, four per entry, as the OS will read them.
    let ints: Vec<u64> = result
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[Integer] = "))
        .map(|v| u64::from_str_radix(v, 16).unwrap())
        .collect();
    let mut expect = Vec::new();
    for slot in 1..32u8 {
        for pin in 0..4u8 {
            let addr = (u64::from(slot) << 16) | 0xffff;
            expect.extend([addr, u64::from(pin), 0, seabios_gsi(slot, pin)]);
        }
    }
    assert_eq!(ints, expect, "{text}");
}
