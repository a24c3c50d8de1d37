//! Builds the VM's devices and puts them on its two buses (I/O ports and
//! MMIO), wiring their interrupts to KVM irqfds. One owner for all buses and
//! address allocations, so devices never need to know about each other.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kiln_api::control::BootProgress;
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout;
use crate::devices::bus::{Bus, BusDevice, BusError};
use crate::devices::legacy::debug_port::DebugPort;
use crate::devices::legacy::i8042::I8042Device;
use crate::devices::legacy::pm::PmDevice;
use crate::devices::legacy::reset::ResetControl;
use crate::devices::legacy::serial::SerialDevice;
use crate::devices::{Interrupt, VmRequests};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("creating an eventfd failed")]
    EventFd(#[source] std::io::Error),
    #[error("registering an irqfd for GSI {gsi} failed")]
    Irqfd {
        gsi: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("placing {name} on the bus failed")]
    Bus {
        name: &'static str,
        #[source]
        source: BusError,
    },
}

/// A GSI driven through an irqfd: the fast path that needs no vCPU exit.
pub struct IrqLine {
    evt: EventFd,
}

impl Interrupt for IrqLine {
    fn trigger(&self) -> std::io::Result<()> {
        self.evt.write(1)
    }
}

fn irq_line(vm: &VmFd, gsi: u32) -> Result<Arc<IrqLine>, DeviceError> {
    let evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(DeviceError::EventFd)?;
    vm.register_irqfd(&evt, gsi)
        .map_err(|source| DeviceError::Irqfd { gsi, source })?;
    Ok(Arc::new(IrqLine { evt }))
}

/// The devices of a VM, as the control loop needs to reach them.
pub struct DeviceManager {
    pub pio: Bus,
    pub mmio: Bus,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub pm: Arc<Mutex<PmDevice>>,
    pub boot_progress: Arc<Mutex<Vec<BootProgress>>>,
}

fn put<D: BusDevice + 'static>(
    bus: &mut Bus,
    name: &'static str,
    dev: D,
    base: u64,
    len: u64,
) -> Result<Arc<Mutex<D>>, DeviceError> {
    let dev = Arc::new(Mutex::new(dev));
    bus.insert(dev.clone(), base, len)
        .map_err(|source| DeviceError::Bus { name, source })?;
    Ok(dev)
}

/// Port 0xCF8..0xCFF is PCI configuration mechanism 1, except that a byte
/// access to 0xCF9 is the reset control register, as on a PC chipset.
struct CfPorts {
    pci: Option<Arc<Mutex<dyn BusDevice>>>,
    reset: ResetControl,
}

impl BusDevice for CfPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (&self.pci, offset, data.len()) {
            (_, 1, 1) => self.reset.read(0, data),
            (Some(pci), ..) => pci
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read(offset, data),
            (None, ..) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (&self.pci, offset, data.len()) {
            (_, 1, 1) => self.reset.write(0, data),
            (Some(pci), ..) => pci
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write(offset, data),
            (None, ..) => {}
        }
    }
}

impl DeviceManager {
    /// Create the legacy devices. `console` receives the UART's output;
    /// `requests` hears power-off and reset; `start` is the VMM's start time
    /// that debug-port timestamps count from.
    pub fn new(
        vm: &VmFd,
        console: Box<dyn Write + Send>,
        requests: Arc<dyn VmRequests>,
        start: Instant,
    ) -> Result<Self, DeviceError> {
        let mut pio = Bus::new();
        let mmio = Bus::new();
        let serial = put(
            &mut pio,
            "COM1",
            SerialDevice::new(irq_line(vm, layout::COM1_IRQ)?, console),
            u64::from(layout::COM1_PORT),
            8,
        )?;
        put(
            &mut pio,
            "i8042",
            I8042Device::new(requests.clone()),
            u64::from(layout::I8042_PORT),
            5,
        )?;
        let debug = DebugPort::new(start);
        let boot_progress = debug.log();
        put(
            &mut pio,
            "debug port",
            debug,
            u64::from(layout::DEBUG_PORT),
            1,
        )?;
        let pm = put(
            &mut pio,
            "ACPI PM",
            PmDevice::new(irq_line(vm, layout::SCI_IRQ)?, requests.clone()),
            u64::from(layout::PM_IO_BASE),
            12,
        )?;
        put(
            &mut pio,
            "PCI config / reset",
            CfPorts {
                pci: None,
                reset: ResetControl::new(requests),
            },
            u64::from(layout::PCI_CONFIG_PORT),
            8,
        )?;
        Ok(DeviceManager {
            pio,
            mmio,
            serial,
            pm,
            boot_progress,
        })
    }
}
