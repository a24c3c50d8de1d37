//! Wiring of transitional virtio devices: their legacy I/O BAR on the
//! port bus, the queue-notify PIO ioeventfds that follow it, and INTx.
//!
//! The I/O BARs live in [`IO_WINDOW`], one [`BarWindow`] on the port bus
//! (the bus is fixed once the vCPUs run, as for MMIO). The VMM places them
//! from [`IO_FIRST`](crate::device_manager::allocator::IO_FIRST) (where SeaBIOS starts too); Linux may move them
//! anywhere in the window. Each queue's eventfd is a KVM PIO ioeventfd on
//! the notify register (BAR + 0x10) matching a 2-byte write of the queue's
//! index, so a legacy notify costs no exit to user space either.
//!
//! INTx: pin A, on the ISA IRQ that SeaBIOS's i440FX routing gives the
//! slot (10, 10, 11, 11 by slot, as QEMU's PIIX), so the interrupt line
//! SeaBIOS writes names the GSI the VMM raises. The line is level, as PCI
//! INTx is: a KVM irqfd with a resample eventfd asserts it and keeps it
//! asserted until the guest's EOI; then KVM lowers it and signals the
//! resample eventfd, and [`IntxResampler`] (one small thread for all
//! transitional devices) raises it again if the device still has ISR bits
//! the driver has not read (an event that came while the interrupt was in
//! service would otherwise be lost on a level-triggered pin). Devices
//! sharing a GSI share the line, as on a PC. The ACPI tables describe the
//! same routing for every slot and pin ([`pci_pin_gsi`](crate::arch::x86_64::irq::pci_pin_gsi): the DSDT's _PRT,
//! the MADT's level overrides of IRQ 10 and 11).

use std::io;
use std::sync::Arc;

use kvm_ioctls::{IoEventAddress, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::{BarWindow, BarWindowRange, WiringError};
use crate::arch::x86_64::irq::intx_gsi;
#[cfg(test)]
use crate::device_manager::allocator::in_io_window;
use crate::device_manager::allocator::IO_WINDOW;
use crate::devices::bus::Bus;
use crate::devices::virtio::transport::{
    TransportError, VirtioInterrupt, VirtioPciDevice, LEGACY_NOTIFY,
};
use crate::devices::virtio::worker::{Wake, Worker, WorkerHandler};
use crate::devices::Interrupt;

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

struct IntxLine(EventFd);

impl Interrupt for IntxLine {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// One device's INTx, as the resampler needs it.
pub struct IntxWire {
    gsi: u32,
    resample: EventFd,
    trigger: EventFd,
    irq: Arc<VirtioInterrupt>,
}

impl IntxWire {
    pub fn gsi(&self) -> u32 {
        self.gsi
    }
}

fn evt() -> Result<EventFd, WiringError> {
    EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
        .map_err(|e| WiringError::Transport(TransportError::EventFd(e)))
}

/// Give a transitional device in `slot` its INTx line (a resampling
/// irqfd on the slot's GSI).
pub fn wire_intx(vm: &VmFd, dev: &mut VirtioPciDevice, slot: u8) -> Result<IntxWire, WiringError> {
    let gsi = intx_gsi(slot);
    let (trigger, resample) = (evt()?, evt()?);
    vm.register_irqfd_with_resample(&trigger, &resample, gsi)
        .map_err(|source| WiringError::Intx { gsi, source })?;
    let line = trigger
        .try_clone()
        .map_err(|e| WiringError::Transport(TransportError::EventFd(e)))?;
    dev.interrupt().set_intx(Arc::new(IntxLine(line)));
    dev.set_interrupt_line(gsi as u8);
    Ok(IntxWire {
        gsi,
        resample,
        trigger,
        irq: dev.interrupt().clone(),
    })
}

/// The thread that raises INTx lines again after the guest's EOI while
/// their devices still have unread ISR bits: a virtio [`Worker`] woken by
/// the resample eventfds; stopped and joined on drop.
pub struct IntxResampler {
    _worker: Worker,
}

/// The resampler's side of the worker loop: wake-up `i` is wire `i`'s EOI.
struct Resample(Vec<(EventFd, Arc<VirtioInterrupt>)>);

impl WorkerHandler for Resample {
    fn handle(&mut self, wake: Wake) {
        if let Wake::Queue(i) = wake {
            if let Some((trigger, irq)) = self.0.get(i) {
                if irq.intx_pending() {
                    let _ = trigger.write(1);
                }
            }
        }
    }
}

impl IntxResampler {
    pub fn spawn(wires: Vec<IntxWire>) -> io::Result<Self> {
        let (resamples, lines) = wires
            .into_iter()
            .map(|w| (w.resample, (w.trigger, w.irq)))
            .unzip();
        let worker = Worker::spawn("intx-resample".into(), resamples, Resample(lines))?;
        Ok(IntxResampler { _worker: worker })
    }
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
    use crate::arch::x86_64::irq::{pci_pin_gsi, PIRQ_GSIS};

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
        // Pins B-D rotate through the links: slot 1 INTB# is PIRQB#,
        // slot 2 INTD# is PIRQA# (wrapping), slot 4 INTC# is PIRQB#.
        assert_eq!(pci_pin_gsi(1, 2), 10);
        assert_eq!(pci_pin_gsi(1, 3), 11);
        assert_eq!(pci_pin_gsi(2, 4), 10);
        assert_eq!(pci_pin_gsi(3, 2), 11);
        assert_eq!(pci_pin_gsi(4, 3), 10);
        assert_eq!(pci_pin_gsi(4, 2), 10);
        assert_eq!(pci_pin_gsi(31, 1), 11);
        for slot in 0..=u8::MAX {
            assert_eq!(pci_pin_gsi(slot, 1), intx_gsi(slot));
            for pin in [0, 5, u8::MAX] {
                assert!(PIRQ_GSIS.contains(&pci_pin_gsi(slot, pin)), "no panic");
            }
        }
    }

    fn wait_count(evt: &EventFd) -> u64 {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_secs(5) {
            if let Ok(n) = evt.read() {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        0
    }

    /// After an EOI (the resample eventfd), the line is raised again only
    /// while the driver has unread ISR bits and MSI-X is off.
    #[test]
    fn the_resampler_raises_the_line_again_while_the_isr_is_unread() {
        use crate::devices::virtio::msix::tests::RecordingVectors;
        let irq = Arc::new(VirtioInterrupt::new(
            2,
            1,
            Arc::new(RecordingVectors::default()),
        ));
        let (resample, trigger) = (evt().unwrap(), evt().unwrap());
        let wire = IntxWire {
            gsi: 10,
            resample: resample.try_clone().unwrap(),
            trigger: trigger.try_clone().unwrap(),
            irq: irq.clone(),
        };
        let _r = IntxResampler::spawn(vec![wire]).unwrap();
        // Nothing pending: the EOI leaves the line low.
        resample.write(1).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(trigger.read().is_err(), "not raised");
        // An event the driver has not read yet: raised again.
        irq.signal_queue(0);
        resample.write(1).unwrap();
        assert_eq!(wait_count(&trigger), 1, "raised again");
        // Read (cleared): low after the next EOI.
        assert_eq!(irq.take_isr(), 1);
        resample.write(1).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(trigger.read().is_err(), "stays low");
    }
}
