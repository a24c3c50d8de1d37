//! The DSDT: the AML namespace of the machine.
//!
//! ```text
//! \_SB.PCI0   PCI host bridge (PNP0A08, PNP0A03): segment 0, bus 0, the
//!             config ports, I/O, 32-bit and 64-bit MMIO windows, and the
//!             _PRT: each INTx pin of the platform to its GSI (see `prt`)
//! \_SB.COM1   16550 UART (PNP0501)
//! \_SB.RTC_   CMOS RTC (PNP0B00)
//! \_SB.KBD_   i8042 keyboard controller (PNP0303)
//! \_SB.MOU_   PS/2 mouse on the i8042's AUX port (PNP0F13), IRQ 12
//! \_SB.MBRD   motherboard resources (PNP0C02): the ECAM area, PM ports
//! \_SB.TPM_   TPM 2.0 (MSFT0101), CRB interface, its MMIO window; only
//!             when the VM has a TPM
//! \_SB.Cnnn   one processor device (ACPI0007) per vCPU, _UID = MADT UID
//! \_S0_ \_S5_ sleep states; SLP_TYP of S5 is the PM block's
//! ```
//!
//! The power button is the fixed-hardware one (see the FADT), so there is
//! no PNP0C0C device.

use acpi_tables::aml::{
    self, AddressSpace, AddressSpaceCacheable, Device, EISAName, Memory32Fixed, Name, Package,
    Path, ResourceTemplate, IO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::{Aml, AmlSink};

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::arch::x86_64::layout;
use crate::arch::x86_64::platform::{AcpiPlatform, PciIntx, TpmCrbInfo};

/// Revision 2: integers in AML are 64 bits wide.
pub const REVISION: u8 = 2;
/// ISA IRQs of devices that have no constant in `layout`.
pub const RTC_IRQ: u8 = 8;
pub const KBD_IRQ: u8 = 1;
const RTC_PORT_LEN: u8 = 2;
const I8042_COMMAND_PORT: u16 = layout::I8042_PORT + 4;

/// An ISA IRQ descriptor without flags (edge triggered, active high,
/// exclusive), as firmware describes ISA devices; the crate only has the
/// extended interrupt descriptor.
struct IrqNoFlags(u8);

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        // Small resource, type 4 (IRQ), two bytes: the IRQ mask.
        sink.byte(0x22);
        sink.word(1u16.checked_shl(u32::from(self.0)).unwrap_or(0));
    }
}

/// A Package holds at most 255 elements (its count is one byte).
pub const MAX_PRT_ENTRIES: usize = u8::MAX as usize;

/// `Name (_PRT, Package { Package { 0xSSSSFFFF, pin, Zero, gsi }, ... })`:
/// the address is the slot in the high word and "any function" (0xFFFF)
/// in the low one. The entries are the platform's INTx wiring
/// ([`AcpiPlatform::pci_intx`]), the GSIs the VMM really raises.
///
/// Static GSI entries (source 0), not link devices (LNKA-LNKD with
/// _PRS/_CRS/_SRS/_DIS as QEMU's PIIX AML has): a link device tells the OS
/// it may pick the IRQ from _PRS and program it with _SRS, and on a PIIX
/// that lands in the PIRQ route registers. Kiln does not emulate those
/// registers; each INTx line is a resampling irqfd registered on a fixed
/// GSI at start-up, so the only honest description is a fixed one. GSIs
/// 10 and 11 are the same line on the 8259s (ISA IRQ 10/11, slave pins 2
/// and 3) and on the IOAPIC (pins 10 and 11; see `irq::legacy_routes`),
/// so the same entries hold in PIC and APIC mode and no _PIC method is
/// needed. A static entry carries no trigger mode or polarity, so an OS
/// applies PCI's (INTx# is level-sensitive, asserted low; Linux's
/// `acpi_pci_irq_enable` registers the GSI so); the MADT's overrides for
/// the same GSIs say the same (see `madt.rs` on why the polarity does
/// not matter to KVM). The routing is PIIX's whichever identity the host
/// bridge shows (Q35's for direct boot): for a firmware boot (i440FX)
/// SeaBIOS writes the same lines with the same swizzle, and an ACPI OS
/// follows the _PRT, not the chipset.
fn prt(entries: &[PciIntx]) -> Name {
    let rows: Vec<(u32, u8, u32)> = entries
        .iter()
        .map(|e| ((u32::from(e.slot) << 16) | 0xffff, e.pin, e.gsi))
        .collect();
    let packages: Vec<Package> = rows
        .iter()
        .map(|(addr, pin, gsi)| Package::new(vec![addr, pin, &aml::ZERO, gsi]))
        .collect();
    let list: Vec<&dyn Aml> = packages.iter().map(|p| p as &dyn Aml).collect();
    Name::new("_PRT".into(), &Package::new(list))
}

fn emit(sink: &mut Vec<u8>, aml: &dyn Aml) {
    aml.to_aml_bytes(sink);
}

fn pci_host_bridge(sink: &mut Vec<u8>, p: &AcpiPlatform) {
    let cfg = p.pci_config_ports.start as u16;
    let cfg_len = p.pci_config_ports.size as u16;
    let cfg_end = cfg + cfg_len;
    let bus = AddressSpace::<u16>::new_bus_number(0, u16::from(p.last_pci_bus()));
    let cfg_io = IO::new(cfg, cfg, 1, cfg_len as u8);
    let io_low = AddressSpace::<u16>::new_io(0, cfg - 1, None);
    let io_high = AddressSpace::<u16>::new_io(cfg_end, u16::MAX, None);
    let mmio32 = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        p.pci_mmio32.start as u32,
        p.pci_mmio32.last() as u32,
        None,
    );
    let mmio64 = AddressSpace::<u64>::new_memory(
        AddressSpaceCacheable::Cacheable,
        true,
        p.pci_mmio64.start,
        p.pci_mmio64.last(),
        None,
    );
    let crs = ResourceTemplate::new(vec![&bus, &cfg_io, &io_low, &io_high, &mmio32, &mmio64]);
    let prt = prt(&p.pci_intx);
    emit(
        sink,
        &Device::new(
            "_SB_.PCI0".into(),
            vec![
                &Name::new("_HID".into(), &EISAName::new("PNP0A08")),
                &Name::new("_CID".into(), &EISAName::new("PNP0A03")),
                &Name::new("_SEG".into(), &aml::ZERO),
                &Name::new("_BBN".into(), &aml::ZERO),
                &Name::new("_UID".into(), &aml::ZERO),
                &Name::new("_CRS".into(), &crs),
                &prt,
            ],
        ),
    );
}

/// A device with a _HID (EISA id), a _UID and a _CRS.
fn isa_device(sink: &mut Vec<u8>, path: &str, hid: &str, uid: u8, resources: Vec<&dyn Aml>) {
    let crs = ResourceTemplate::new(resources);
    emit(
        sink,
        &Device::new(
            path.into(),
            vec![
                &Name::new("_HID".into(), &EISAName::new(hid)),
                &Name::new("_UID".into(), &uid),
                &Name::new("_CRS".into(), &crs),
            ],
        ),
    );
}

fn legacy_devices(sink: &mut Vec<u8>, p: &AcpiPlatform) {
    let com1_io = IO::new(layout::COM1_PORT, layout::COM1_PORT, 1, 8);
    let com1_irq = IrqNoFlags(layout::COM1_IRQ as u8);
    isa_device(sink, "_SB_.COM1", "PNP0501", 1, vec![&com1_io, &com1_irq]);

    let rtc_io = IO::new(layout::RTC_PORT, layout::RTC_PORT, 1, RTC_PORT_LEN);
    let rtc_irq = IrqNoFlags(RTC_IRQ);
    isa_device(sink, "_SB_.RTC_", "PNP0B00", 0, vec![&rtc_io, &rtc_irq]);

    let kbd_data = IO::new(layout::I8042_PORT, layout::I8042_PORT, 1, 1);
    let kbd_cmd = IO::new(I8042_COMMAND_PORT, I8042_COMMAND_PORT, 1, 1);
    let kbd_irq = IrqNoFlags(KBD_IRQ);
    isa_device(
        sink,
        "_SB_.KBD_",
        "PNP0303",
        0,
        vec![&kbd_data, &kbd_cmd, &kbd_irq],
    );
    let mouse_irq = IrqNoFlags(layout::I8042_AUX_IRQ as u8);
    isa_device(sink, "_SB_.MOU_", "PNP0F13", 0, vec![&mouse_irq]);

    // Reserve what PCI must not hand out and an OS checks is reserved (the
    // ECAM area, for Linux's MMCONFIG check).
    let ecam = Memory32Fixed::new(true, p.pci_ecam.start as u32, p.pci_ecam.size as u32);
    let pm_io = IO::new(p.pm.base, p.pm.base, 1, p.pm.len);
    isa_device(sink, "_SB_.MBRD", "PNP0C02", 0, vec![&ecam, &pm_io]);
}

/// The TPM as QEMU's `tpm-crb` describes it: `MSFT0101` (a TPM 2.0 that
/// a TPM2 table says how to start), its window, present.
fn tpm(sink: &mut Vec<u8>, t: &TpmCrbInfo) {
    let window = Memory32Fixed::new(true, t.window.start as u32, t.window.size as u32);
    let crs = ResourceTemplate::new(vec![&window]);
    emit(
        sink,
        &Device::new(
            "_SB_.TPM_".into(),
            vec![
                &Name::new("_HID".into(), &"MSFT0101"),
                &Name::new("_STR".into(), &"TPM 2.0 Device"),
                &Name::new("_CRS".into(), &crs),
                &Name::new("_STA".into(), &0x0fu8),
            ],
        ),
    );
}

fn processors(sink: &mut Vec<u8>, num_cpus: u8) {
    for id in 0..num_cpus {
        let path = format!("_SB_.C{id:03X}");
        emit(
            sink,
            &Device::new(
                Path::new(&path),
                vec![
                    &Name::new("_HID".into(), &"ACPI0007"),
                    &Name::new("_UID".into(), &id),
                ],
            ),
        );
    }
}

fn sleep_states(sink: &mut Vec<u8>, p: &AcpiPlatform) {
    let s0 = 0u8;
    let s5 = p.pm.s5_sleep_type;
    // SLP_TYPa, SLP_TYPb, two reserved.
    emit(
        sink,
        &Name::new("_S0_".into(), &Package::new(vec![&s0, &s0, &0u8, &0u8])),
    );
    emit(
        sink,
        &Name::new("_S5_".into(), &Package::new(vec![&s5, &s5, &0u8, &0u8])),
    );
}

/// The AML definition block of `platform`, without the table header.
pub fn dsdt_aml(platform: &AcpiPlatform) -> Vec<u8> {
    let mut aml = Vec::new();
    pci_host_bridge(&mut aml, platform);
    legacy_devices(&mut aml, platform);
    if let Some(t) = &platform.tpm {
        tpm(&mut aml, t);
    }
    processors(&mut aml, platform.cpus);
    sleep_states(&mut aml, platform);
    aml
}

/// The DSDT of `platform`.
pub fn dsdt(platform: &AcpiPlatform) -> Vec<u8> {
    let mut sdt = Sdt::new(*b"DSDT", 36, REVISION, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    sdt.append_slice(&dsdt_aml(platform));
    sdt.as_slice().to_vec()
}
