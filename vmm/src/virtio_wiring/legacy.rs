//! Wiring of transitional virtio devices: their legacy I/O BAR on the
//! port bus, the queue-notify PIO ioeventfds that follow it, and INTx.
//!
//! The I/O BARs live in [`IO_WINDOW`], one [`BarWindow`] on the port bus
//! (the bus is fixed once the vCPUs run, as for MMIO). The VMM places them
//! from [`IO_FIRST`] (where SeaBIOS starts too); Linux may move them
//! anywhere in the window. Each queue's eventfd is a KVM PIO ioeventfd on
//! the notify register (BAR + 0x10) matching a 2-byte write of the queue's
//! index, so a legacy notify costs no exit to user space either.
//!
//! INTx: pin A, on the ISA IRQ that SeaBIOS's i440FX routing gives the
//! slot (10, 10, 11, 11 by slot, as QEMU's PIIX), so the interrupt line
//! SeaBIOS writes names the GSI the VMM raises. The line is pulsed through
//! a plain irqfd (edge); the guest's handler reads the ISR.

use std::sync::Arc;

use kvm_ioctls::{IoEventAddress, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::{BarWindow, BarWindowRange, WiringError};
use crate::devices::bus::Bus;
use crate::devices::virtio::transport::{TransportError, VirtioPciDevice, LEGACY_NOTIFY};
use crate::devices::Interrupt;

/// The ports where legacy I/O BARs may be: above the legacy PC devices
/// (everything the VMM puts on the port bus is below 0x1000).
pub const IO_WINDOW: (u64, u64) = (0x1000, 0x1_0000);
/// Where the VMM places the first I/O BAR.
pub const IO_FIRST: u64 = 0xc000;

pub fn in_io_window(addr: u64, len: u64) -> bool {
    addr.checked_add(len)
        .is_some_and(|end| addr >= IO_WINDOW.0 && end <= IO_WINDOW.1)
}

/// The port of queue `q`'s notify register and the value that means it.
fn notify(io_addr: u64, q: usize) -> (IoEventAddress, u16) {
    (IoEventAddress::Pio(io_addr + LEGACY_NOTIFY), q as u16)
}

/// (Un)register the legacy notify ioeventfds of a device at `io_addr`.
pub fn ioevents(vm: &VmFd, evts: &[EventFd], io_addr: u64, register: bool) {
    for (q, evt) in evts.iter().enumerate() {
        let (addr, value) = notify(io_addr, q);
        let r = if register {
            vm.register_ioevent(evt, &addr, value)
        } else {
            vm.unregister_ioevent(evt, &addr, value)
        };
        if let Err(e) = r {
            log::warn!("virtio legacy: PIO ioeventfd at {addr:?} (register {register}): {e}");
        }
    }
}

/// Register the notify ioeventfds at the initial address (errors are
/// fatal here, unlike on a later move).
pub fn register_ioevents(vm: &VmFd, evts: &[EventFd], io_addr: u64) -> Result<(), WiringError> {
    for (q, evt) in evts.iter().enumerate() {
        let (addr, value) = notify(io_addr, q);
        vm.register_ioevent(evt, &addr, value)
            .map_err(|source| WiringError::Ioevent {
                addr: io_addr + LEGACY_NOTIFY,
                source,
            })?;
    }
    Ok(())
}

/// The GSI of INTA# for a device in `slot` (i440FX/PIIX routing).
pub fn intx_gsi(slot: u8) -> u32 {
    const PCI_IRQS: [u32; 4] = [10, 10, 11, 11];
    PCI_IRQS[usize::from(slot.wrapping_sub(1) & 3)]
}

struct IntxLine(EventFd);

impl Interrupt for IntxLine {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Give a transitional device in `slot` its INTx line.
pub fn wire_intx(vm: &VmFd, dev: &mut VirtioPciDevice, slot: u8) -> Result<u32, WiringError> {
    let gsi = intx_gsi(slot);
    let evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
        .map_err(|e| WiringError::Transport(TransportError::EventFd(e)))?;
    vm.register_irqfd(&evt, gsi)
        .map_err(|source| WiringError::Intx { gsi, source })?;
    dev.interrupt().set_intx(Arc::new(IntxLine(evt)));
    dev.set_interrupt_line(gsi as u8);
    Ok(gsi)
}

/// Put the I/O window on the port bus.
pub fn insert_io_window(pio: &mut Bus, window: &Arc<BarWindow>) -> Result<(), WiringError> {
    pio.insert(
        Arc::new(std::sync::Mutex::new(BarWindowRange {
            window: window.clone(),
            base: IO_WINDOW.0,
        })),
        IO_WINDOW.0,
        IO_WINDOW.1 - IO_WINDOW.0,
    )
    .map_err(WiringError::Bus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_window_and_intx_routing() {
        assert!(in_io_window(0xc000, 0x100));
        assert!(in_io_window(0xff00, 0x100));
        assert!(!in_io_window(0xff01, 0x100));
        assert!(!in_io_window(0x3f8, 8));
        assert!(!in_io_window(u64::MAX, 2));
        // SeaBIOS: pci_irqs[(pin - 1 + slot - 1) & 3] with pin A.
        assert_eq!(
            [1, 2, 3, 4, 5].map(intx_gsi),
            [10, 10, 11, 11, 10],
            "slot → GSI"
        );
    }
}
