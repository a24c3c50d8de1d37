//! The legacy interrupt routing of a PC, as KVM must be told it: ISA IRQs
//! 0-15 to the two PICs, GSIs 0-23 to the IOAPIC, except that the PIT's
//! IRQ 0 arrives at IOAPIC pin 2 (the MADT says so with an interrupt source
//! override, as every PC firmware does). KVM's default routing sends GSI 0
//! to pin 0, so Kiln installs this table before any device interrupt is
//! used. Whoever adds MSI routes later must keep these entries: one
//! KVM_SET_GSI_ROUTING call replaces the whole table.

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
    KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQ_ROUTING_IRQCHIP,
};
use kvm_ioctls::VmFd;

/// IOAPIC pins.
pub const IOAPIC_PINS: u32 = 24;

/// The GSIs of PIIX's four PCI interrupt links PIRQA#..PIRQD#, as SeaBIOS
/// routes them on i440FX (its `pci_irqs`). Fixed: the VMM does not
/// emulate the PIIX route registers, so nothing can move a link.
pub const PIRQ_GSIS: [u32; 4] = [10, 10, 11, 11];

/// The GSI that interrupt pin `pin` (1 = INTA# .. 4 = INTD#, as in the
/// PCI interrupt-pin register) of a device in bus-0 `slot` is raised on:
/// PIIX's swizzle, link `(pin - 1 + slot - 1) & 3`. This is the one place
/// that decides it: the device manager's INTx wiring
/// (`device_manager/virtio/legacy.rs`) raises INTA# here, and the
/// platform description the device manager fills from it
/// (`device_manager::platform::describe`) gives the DSDT's _PRT and the
/// MADT's overrides.
pub fn pci_pin_gsi(slot: u8, pin: u8) -> u32 {
    let link = pin.wrapping_sub(1).wrapping_add(slot.wrapping_sub(1)) & 3;
    PIRQ_GSIS[usize::from(link)]
}

/// The GSI of INTA# for a device in `slot` (i440FX/PIIX routing).
pub fn intx_gsi(slot: u8) -> u32 {
    pci_pin_gsi(slot, 1)
}

fn route(gsi: u32, irqchip: u32, pin: u32) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip, pin },
        },
        ..Default::default()
    }
}

/// (gsi, chip, pin) of every legacy route.
pub fn legacy_routes() -> Vec<kvm_irq_routing_entry> {
    let mut routes = Vec::new();
    for gsi in 0..16 {
        if gsi == 2 {
            continue; // the cascade
        }
        let (chip, pin) = if gsi < 8 {
            (KVM_IRQCHIP_PIC_MASTER, gsi)
        } else {
            (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
        };
        routes.push(route(gsi, chip, pin));
    }
    for gsi in 0..IOAPIC_PINS {
        match gsi {
            0 => routes.push(route(0, KVM_IRQCHIP_IOAPIC, 2)),
            2 => {}
            _ => routes.push(route(gsi, KVM_IRQCHIP_IOAPIC, gsi)),
        }
    }
    routes
}

/// Install `routes` as the VM's whole GSI routing table.
pub fn set_routes(vm: &VmFd, routes: &[kvm_irq_routing_entry]) -> Result<(), kvm_ioctls::Error> {
    let table =
        KvmIrqRouting::from_entries(routes).map_err(|_| kvm_ioctls::Error::new(libc::E2BIG))?;
    vm.set_gsi_routing(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin_of(routes: &[kvm_irq_routing_entry], gsi: u32, chip: u32) -> Option<u32> {
        routes.iter().find_map(|r| {
            // SAFETY: every entry built here is an irqchip route.
            let ic = unsafe { r.u.irqchip };
            (r.gsi == gsi && ic.irqchip == chip).then_some(ic.pin)
        })
    }

    #[test]
    fn pit_reaches_ioapic_pin_2_and_the_rest_are_identity() {
        let routes = legacy_routes();
        assert_eq!(pin_of(&routes, 0, KVM_IRQCHIP_IOAPIC), Some(2));
        assert_eq!(pin_of(&routes, 2, KVM_IRQCHIP_IOAPIC), None);
        for gsi in [1, 4, 8, 9, 15, 16, 23] {
            assert_eq!(pin_of(&routes, gsi, KVM_IRQCHIP_IOAPIC), Some(gsi));
        }
        assert_eq!(pin_of(&routes, 0, KVM_IRQCHIP_PIC_MASTER), Some(0));
        assert_eq!(pin_of(&routes, 9, KVM_IRQCHIP_PIC_SLAVE), Some(1));
        assert_eq!(pin_of(&routes, 16, KVM_IRQCHIP_PIC_SLAVE), None);
        assert_eq!(routes.len(), 15 + 23);
    }
}
