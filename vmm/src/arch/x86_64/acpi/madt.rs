//! The MADT (signature "APIC"): one enabled local APIC per vCPU (APIC id and
//! ACPI processor UID = vCPU index), the IOAPIC with GSI base 0, the
//! interrupt source overrides (IRQ0 -> GSI2, the SCI level triggered, the
//! PCI INTx IRQs 10 and 11 level triggered active low), and LINT1 as NMI
//! on every processor.
//!
//! Built with `acpi_tables::sdt::Sdt`: the crate's MADT type cannot set the
//! PCAT_COMPAT flag nor hold override and NMI entries.
//!
//! IRQ0 -> GSI2 is what QEMU tells guests; it holds only if the VMM routes
//! GSI 0 (the in-kernel PIT) to IOAPIC pin 2, as QEMU's KVM routing does.
//!
//! IRQ 10 and 11 carry PCI INTx (the GSIs of the platform's INTx wiring,
//! [`AcpiPlatform::pci_intx`], which the DSDT's _PRT lists). Without an override an OS takes an ISA IRQ as edge
//! triggered, active high, while the _PRT's static entries make the same
//! GSIs level triggered, active low (PCI's INTx#; Linux registers them
//! so), so the overrides say level, active low too and every description
//! of the pin agrees (Linux lets the first user of a legacy IRQ reprogram
//! its pin, then refuses a user asking for other attributes).
//!
//! Level is what the line is: a resampling irqfd holds it asserted until
//! the guest's EOI (KVM then lowers it and signals the resampler, which
//! raises it again while a device still has an unread ISR), and a level
//! entry delivers again whenever the line is still or again asserted
//! after the EOI, which devices sharing a pin rely on; an edge entry would
//! see no new edge while another device holds the line.
//!
//! The polarity only has to be consistent: KVM's IOAPIC keeps a logical
//! line state per pin (`kvm_ioapic_set_irq`: asserted = 1 from any
//! source) and never looks at the redirection entry's polarity bit, so an
//! irqfd's "assert" fires an active-low entry exactly as an active-high
//! one (`tests/tests/virtio_legacy.rs` shows it on real KVM: a probe
//! programs the pin level, active low and gets the INTx with the entry's
//! remote IRR set). QEMU's PIIX tables say level, active high instead,
//! matching the Interrupt descriptors of its link devices; Kiln has no
//! links (see `dsdt::prt`).

use acpi_tables::sdt::Sdt;

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::arch::x86_64::layout;
use crate::arch::x86_64::platform::AcpiPlatform;

pub const REVISION: u8 = 3;
/// The machine also has dual 8259 PICs.
pub const PCAT_COMPAT: u32 = 1;
/// Structure types.
pub const TYPE_LOCAL_APIC: u8 = 0;
pub const TYPE_IOAPIC: u8 = 1;
pub const TYPE_INTERRUPT_OVERRIDE: u8 = 2;
pub const TYPE_LOCAL_APIC_NMI: u8 = 4;
pub const LOCAL_APIC_ENABLED: u32 = 1;
/// MPS INTI flags: polarity in bits 0-1, trigger mode in bits 2-3.
pub const INTI_CONFORMS: u16 = 0;
pub const INTI_ACTIVE_HIGH: u16 = 0b01;
pub const INTI_ACTIVE_LOW: u16 = 0b11;
pub const INTI_LEVEL: u16 = 0b11 << 2;
/// The IOAPIC's id; the in-kernel IOAPIC starts with id 0, like QEMU's.
pub const IOAPIC_ID: u8 = 0;
/// Processor UID meaning "all processors" in a local APIC NMI entry.
const ALL_PROCESSORS: u8 = 0xff;
/// The ISA timer IRQ and the GSI it arrives on.
pub const TIMER_IRQ: u8 = 0;
pub const TIMER_GSI: u32 = 2;

fn local_apic(id: u8) -> [u8; 8] {
    let mut e = [TYPE_LOCAL_APIC, 8, id, id, 0, 0, 0, 0];
    e[4..].copy_from_slice(&LOCAL_APIC_ENABLED.to_le_bytes());
    e
}

fn ioapic() -> [u8; 12] {
    let mut e = [0u8; 12];
    e[..4].copy_from_slice(&[TYPE_IOAPIC, 12, IOAPIC_ID, 0]);
    e[4..8].copy_from_slice(&(layout::IOAPIC_START as u32).to_le_bytes());
    // GSI base 0.
    e
}

fn interrupt_override(irq: u8, gsi: u32, flags: u16) -> [u8; 10] {
    let mut e = [0u8; 10];
    // Bus 0 (ISA).
    e[..4].copy_from_slice(&[TYPE_INTERRUPT_OVERRIDE, 10, 0, irq]);
    e[4..8].copy_from_slice(&gsi.to_le_bytes());
    e[8..].copy_from_slice(&flags.to_le_bytes());
    e
}

fn local_apic_nmi() -> [u8; 6] {
    // All processors, flags conform to the bus, LINT1.
    [TYPE_LOCAL_APIC_NMI, 6, ALL_PROCESSORS, 0, 0, 1]
}

/// The MADT of `platform`.
pub fn madt(platform: &AcpiPlatform) -> Vec<u8> {
    let mut sdt = Sdt::new(*b"APIC", 44, REVISION, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    sdt.write_u32(36, layout::LAPIC_START as u32);
    sdt.write_u32(40, PCAT_COMPAT);
    for id in 0..platform.cpus {
        sdt.append_slice(&local_apic(id));
    }
    sdt.append_slice(&ioapic());
    sdt.append_slice(&interrupt_override(TIMER_IRQ, TIMER_GSI, INTI_CONFORMS));
    let sci = platform.sci_irq;
    sdt.append_slice(&interrupt_override(
        sci as u8,
        sci,
        INTI_ACTIVE_HIGH | INTI_LEVEL,
    ));
    for irq in platform.pci_intx_gsis() {
        sdt.append_slice(&interrupt_override(
            irq as u8,
            irq,
            INTI_ACTIVE_LOW | INTI_LEVEL,
        ));
    }
    sdt.append_slice(&local_apic_nmi());
    sdt.as_slice().to_vec()
}
