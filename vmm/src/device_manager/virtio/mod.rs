//! The device manager's virtio part: the one place that knows both the
//! virtio device models and KVM.
//!
//! `models.rs` builds a device per configured disk, NIC and the entropy
//! source before KVM is touched ([`VirtioModels::open`]); [`attach`] wraps
//! each in the virtio-pci transport, gives it MSI-X vectors (a GSI and
//! irqfd per vector, through `super::interrupts`), puts it on the PCI
//! root, places its BAR 0 (from the device manager's allocator) in the
//! 32-bit MMIO window, and
//! registers a KVM ioeventfd on each queue's notify address so that a
//! guest notify wakes the device's worker without a vCPU exit.
//!
//! BARs can move: firmware or the guest kernel may reprogram them. The
//! MMIO bus is fixed once the vCPUs run, so the 32-bit PCI hole (the
//! window the ACPI tables announce, and the part above the ECAM up to the
//! IOAPIC, where SeaBIOS places BARs) is the device manager's one
//! [`BarWindow`] (`bar_window.rs`, shared with the display), that looks
//! up the BAR at the accessed address in a table the [`BarMover`] (a
//! `BarMoveHandler` of the PCI root) updates for virtio devices, moving
//! the notify ioeventfds with it. Nothing else may sit on the MMIO bus
//! there.
//!
//! Transitional devices (`transitional=on`) also have a legacy I/O BAR:
//! `legacy.rs` wires it (a second window on the port bus, PIO
//! ioeventfds, INTx).

mod legacy;
mod models;

use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

pub use models::VirtioModels;

use super::allocator::{in_io_window, in_window, moved_bar_address, Allocator};
pub(super) use super::bar_window::{BarWindow, BarWindowRange, Mapping};
use super::interrupts::{dup_vm_fd, InterruptError, MsiRouter};
use super::Buses;
use crate::devices::bus::BusError;
use crate::devices::pci::{BarMove, BarMoveHandler, PciError, SharedPciDevice};
use crate::devices::virtio::net::NetLink;
use crate::devices::virtio::transport::{
    TransportError, VirtioPciDevice, BAR_SIZE, LEGACY_BAR_INDEX, LEGACY_BAR_SIZE,
};
use crate::devices::virtio::VirtioDevice;
use crate::disks::DiskSet;
use crate::memory::GuestMemoryMmap;
use crate::net::tap::TapError;

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("opening disk {path} ({format})")]
    Disk {
        path: String,
        format: &'static str,
        #[source]
        source: kiln_block::Error,
    },
    #[error("opening the tap of NIC {index}")]
    Tap {
        index: usize,
        #[source]
        source: TapError,
    },
    #[error("NIC {index}: MAC address {mac:?} is invalid")]
    Mac { index: usize, mac: String },
    #[error("NIC {0}: give exactly one of tap=, fd= and fds=")]
    NetBackend(usize),
    #[error("NIC {0}: queues must be 1 to 16, and match the number of fds (fd= is one queue)")]
    NetQueues(usize),
    #[error("NIC {index}")]
    Net {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("MSI-X interrupts")]
    Interrupts(#[from] InterruptError),
    #[error("virtio-pci transport")]
    Transport(#[from] TransportError),
    #[error("PCI bus")]
    Pci(#[from] PciError),
    #[error("the 32-bit MMIO window is full")]
    WindowFull,
    #[error("registering the notify ioeventfd at {addr:#x}")]
    Ioevent {
        addr: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("placing the PCI BAR window on the MMIO bus")]
    Bus(#[source] BusError),
    #[error("starting the entropy device")]
    Rng(#[source] std::io::Error),
    #[error("cannot listen on the agent socket {path}")]
    Agent {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("making the tablet's eventfd")]
    Input(#[source] std::io::Error),
    #[error("registering the INTx irqfd of GSI {gsi}")]
    Intx {
        gsi: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("the legacy I/O port window is full")]
    IoWindowFull,
    #[error("starting the INTx resampler")]
    Resampler(#[source] std::io::Error),
}

/// What the [`BarMover`] knows of one device.
struct SlotNotify {
    slot: u8,
    /// The BAR with the modern layout.
    modern_bar: usize,
    /// The device has a legacy I/O BAR (BAR 0).
    transitional: bool,
    /// The queue eventfds.
    evts: Vec<EventFd>,
}

/// Follows BAR moves: the windows' tables and the notify ioeventfds.
pub struct BarMover {
    vm: VmFd,
    window: Arc<BarWindow>,
    /// The legacy I/O BARs of transitional devices.
    io_window: Arc<BarWindow>,
    notify: Mutex<Vec<SlotNotify>>,
}

impl BarMover {
    fn ioevents(&self, evts: &[EventFd], bar_addr: u64, register: bool) {
        for (q, evt) in evts.iter().enumerate() {
            let addr = IoEventAddress::Mmio(VirtioPciDevice::notify_addr(bar_addr, q));
            let r = if register {
                self.vm.register_ioevent(evt, &addr, NoDatamatch)
            } else {
                self.vm.unregister_ioevent(evt, &addr, NoDatamatch)
            };
            if let Err(e) = r {
                log::warn!("virtio: ioeventfd at {addr:?} (register {register}): {e}");
            }
        }
    }
}

impl BarMover {
    fn legacy_bar_moved(&self, slot: u8, mv: BarMove, dev: &SlotNotify) {
        let new = if in_io_window(mv.new_addr, mv.size) {
            mv.new_addr
        } else {
            if mv.new_addr != 0 {
                log::warn!(
                    "PCI 00:{slot:02x}.0 I/O BAR moved to {:#x}, outside the port window; unmapped",
                    mv.new_addr
                );
            }
            0
        };
        self.io_window.set_addr(slot, mv.index, new);
        if mv.old_addr != 0 && in_io_window(mv.old_addr, mv.size) {
            legacy::ioevents(&self.vm, &dev.evts, mv.old_addr, false);
        }
        if new != 0 {
            legacy::ioevents(&self.vm, &dev.evts, new, true);
        }
        log::debug!(
            "PCI 00:{slot:02x}.0 I/O BAR now at {new:#x} (was {:#x})",
            mv.old_addr
        );
    }
}

impl BarMoveHandler for BarMover {
    fn bar_moved(&self, slot: u8, mv: BarMove) {
        let notify = self.notify.lock().unwrap_or_else(|e| e.into_inner());
        let Some(dev) = notify.iter().find(|d| d.slot == slot) else {
            return;
        };
        if dev.transitional && mv.index == LEGACY_BAR_INDEX && mv.kind.is_io() {
            self.legacy_bar_moved(slot, mv, dev);
            return;
        }
        if mv.index != dev.modern_bar {
            return;
        }
        let new = moved_bar_address(&format!("PCI 00:{slot:02x}.0"), &mv);
        self.window.set_addr(slot, mv.index, new);
        if mv.old_addr != 0 && in_window(mv.old_addr, mv.size) {
            self.ioevents(&dev.evts, mv.old_addr, false);
        }
        if new != 0 {
            self.ioevents(&dev.evts, new, true);
        }
        log::debug!(
            "PCI 00:{slot:02x}.0 BAR {} now at {new:#x} (was {:#x})",
            mv.index,
            mv.old_addr
        );
    }
}

/// The virtio devices of a VM; dropping it stops their workers.
pub struct VirtioDevices {
    /// (PCI slot, device) in the order they were created: disks, NICs,
    /// entropy.
    pub devices: Vec<(u8, Arc<Mutex<VirtioPciDevice>>)>,
    /// The link of each NIC, in configuration order (the control API's
    /// `PUT /v1/vm/net/{index}`).
    pub nets: Vec<Arc<NetLink>>,
    /// Every disk, as its device serves it: the main thread closes them
    /// when the VMM ends (`disks.rs`).
    pub disks: DiskSet,
    /// The virtio-input tablet's host handle (VNC pointer events).
    pub tablet: Option<crate::devices::virtio::input::Tablet>,
    _router: Option<Arc<MsiRouter>>,
    /// Transitional devices' INTx resampling thread.
    _intx: Option<legacy::IntxResampler>,
}

/// What wiring the devices in shares: KVM, memory, the MSI router, the
/// BAR windows and the mover that follows BAR moves, the INTx lines.
struct Wiring<'a> {
    vm: &'a VmFd,
    mem: &'a GuestMemoryMmap,
    router: Arc<MsiRouter>,
    window: Arc<BarWindow>,
    io_window: Arc<BarWindow>,
    mover: Arc<BarMover>,
    intx: Vec<legacy::IntxWire>,
}

/// Wire the virtio device models in: PCI root, MMIO bus (`mmio`, before
/// the vCPUs take their copies), the port bus (`pio`, for transitional
/// devices' I/O BARs), KVM routes, irqfds and ioeventfds. Addresses come
/// from the device manager's one allocator (`alloc`).
pub(super) fn attach(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    buses: &mut Buses<'_>,
    alloc: &mut Allocator,
    window: &Arc<BarWindow>,
    models: VirtioModels,
) -> Result<VirtioDevices, WiringError> {
    let VirtioModels {
        models,
        links,
        disks,
        tablet,
    } = models;
    if models.is_empty() {
        return Ok(VirtioDevices {
            devices: Vec::new(),
            nets: Vec::new(),
            disks,
            tablet,
            _router: None,
            _intx: None,
        });
    }
    let window = window.clone();
    let io_window = Arc::new(BarWindow::default());
    let mut w = Wiring {
        vm,
        mem,
        router: MsiRouter::new(vm)?,
        mover: Arc::new(BarMover {
            vm: dup_vm_fd(vm)?,
            window: window.clone(),
            io_window: io_window.clone(),
            notify: Mutex::new(Vec::new()),
        }),
        window,
        io_window,
        intx: Vec::new(),
    };
    let mut devices = Vec::new();
    for (m, (model, transitional)) in models.into_iter().enumerate() {
        let link = links.iter().find(|(at, _)| *at == m).map(|(_, l)| l);
        devices.push(w.add(buses, alloc, model, transitional, link)?);
    }
    w.insert_windows(buses)?;
    Ok(VirtioDevices {
        devices,
        nets: links.into_iter().map(|(_, l)| l).collect(),
        disks,
        tablet,
        _router: Some(w.router),
        _intx: match w.intx.is_empty() {
            true => None,
            false => Some(legacy::IntxResampler::spawn(w.intx).map_err(WiringError::Resampler)?),
        },
    })
}

impl Wiring<'_> {
    /// One device: MSI-X vectors, BAR 0 (and for a transitional device
    /// the I/O BAR and INTx), notify ioeventfds, a slot on the PCI root,
    /// the windows' and the mover's tables.
    fn add(
        &mut self,
        buses: &mut Buses<'_>,
        alloc: &mut Allocator,
        model: Box<dyn VirtioDevice>,
        transitional: bool,
        link: Option<&Arc<NetLink>>,
    ) -> Result<(u8, Arc<Mutex<VirtioPciDevice>>), WiringError> {
        let (vm, mem) = (self.vm, self.mem);
        let vectors = self
            .router
            .allocate(VirtioPciDevice::vectors_for(model.queue_max_sizes().len()))?;
        let addr = alloc.mmio_bar(BAR_SIZE).ok_or(WiringError::WindowFull)?;
        let dev = if transitional {
            let io = alloc
                .io_bar(LEGACY_BAR_SIZE)
                .ok_or(WiringError::IoWindowFull)?;
            VirtioPciDevice::new_transitional(model, mem.clone(), vectors, addr, io)?
        } else {
            VirtioPciDevice::new(model, mem.clone(), vectors, addr)?
        };
        if let Some(link) = link {
            link.attach_interrupt(dev.interrupt().clone());
        }
        let evts = dev
            .queue_evts()
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| WiringError::Transport(TransportError::EventFd(e)))?;
        for (q, evt) in evts.iter().enumerate() {
            let at = VirtioPciDevice::notify_addr(addr, q);
            vm.register_ioevent(evt, &IoEventAddress::Mmio(at), NoDatamatch)
                .map_err(|source| WiringError::Ioevent { addr: at, source })?;
        }
        let io_addr = dev.io_addr();
        if transitional {
            legacy::register_ioevents(vm, &evts, io_addr)?;
        }
        let kind = dev.device_type();
        let modern_bar = dev.modern_bar();
        let dev = Arc::new(Mutex::new(dev));
        let shared: SharedPciDevice = dev.clone();
        let slot = buses
            .pci
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add_device(shared.clone())?;
        if transitional {
            let wire =
                legacy::wire_intx(vm, &mut dev.lock().unwrap_or_else(|e| e.into_inner()), slot)?;
            let gsi = wire.gsi();
            self.intx.push(wire);
            log::info!(
                "virtio type {kind} is transitional: I/O BAR 0 at port {io_addr:#x}, INTx GSI {gsi}"
            );
            self.io_window.add(Mapping {
                slot,
                bar: LEGACY_BAR_INDEX,
                addr: io_addr,
                len: LEGACY_BAR_SIZE,
                device: shared.clone(),
            });
        }
        self.window.add(Mapping {
            slot,
            bar: modern_bar,
            addr,
            len: BAR_SIZE,
            device: shared,
        });
        self.mover
            .notify
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(SlotNotify {
                slot,
                modern_bar,
                transitional,
                evts,
            });
        log::info!("virtio type {kind} at PCI 00:{slot:02x}.0, BAR {modern_bar} at {addr:#x}");
        Ok((slot, dev))
    }

    /// The I/O window on the port bus (only if a transitional device
    /// uses it), and the mover on the PCI root. The MMIO window goes on
    /// the bus once every device family has added its BARs (`mod.rs`).
    fn insert_windows(&self, buses: &mut Buses<'_>) -> Result<(), WiringError> {
        if !self.io_window.is_empty() {
            legacy::insert_io_window(buses.pio, &self.io_window)?;
        }
        buses
            .pci
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_bar_move_handler(self.mover.clone());
        Ok(())
    }
}
