//! The device manager's AHCI part: the SATA disks (`bus: sata`) and
//! CD-ROMs of the configuration, opened before KVM ([`AhciDrives::open`],
//! SATA disks in order on ports 0.., then the CD-ROMs), and the
//! controller (`devices/ahci`) wired in: on the PCI root, its ABAR in the
//! PCI hole's [`BarWindow`] (following the guest's moves), INTx pin A on
//! the slot's GSI through `KVM_IRQ_LINE` (a level the device raises while
//! a port has an enabled interrupt pending, and lowers when none has).

use std::path::Path;
use std::sync::{Arc, Mutex};

use kiln_api::vm::{DiskBus, DiskFormat, VmConfig};
use kiln_block::{open_disk_chain, BackingFile, Disk, OpenOptions};
use kvm_ioctls::VmFd;

use super::allocator::{moved_bar_address, Allocator};
use super::bar_window::{BarWindow, Mapping};
use super::interrupts::{dup_vm_fd, InterruptError};
use super::Buses;
use crate::arch::x86_64::irq::intx_gsi;
use crate::devices::ahci::{Ahci, Drive, DriveKind, IrqLevel, ABAR, ABAR_SIZE};
use crate::devices::pci::{BarMove, BarMoveHandler, PciError, SharedPciDevice};
use crate::disks::{ClosableDisk, DiskSet};
use crate::memory::GuestMemoryMmap;

#[derive(Debug, thiserror::Error)]
pub enum AhciError {
    #[error("opening SATA disk {path} ({format})")]
    Disk {
        path: String,
        format: &'static str,
        #[source]
        source: kiln_block::Error,
    },
    #[error("opening CD-ROM image {path}")]
    Cdrom {
        path: String,
        #[source]
        source: kiln_block::Error,
    },
    #[error("the 32-bit MMIO window has no room for the AHCI controller's BAR")]
    WindowFull,
    #[error("the AHCI controller's PCI function")]
    Pci(#[from] PciError),
    #[error("duplicating the VM file descriptor for the AHCI interrupt")]
    DupVm(#[source] InterruptError),
}

/// The drives of the AHCI controller, opened, in port order.
pub struct AhciDrives {
    drives: Vec<Drive>,
    /// The SATA disks, for the VMM's orderly end (`disks.rs`).
    pub disks: DiskSet,
}

impl AhciDrives {
    /// Open the SATA disks and CD-ROMs of `config` (None: it has none).
    pub fn open(config: &VmConfig) -> Result<Option<Self>, AhciError> {
        let mut drives = Vec::new();
        let mut disks = DiskSet::default();
        for d in config.disks.iter().filter(|d| d.bus == DiskBus::Sata) {
            let chain: Vec<BackingFile> = d
                .backing
                .iter()
                .map(|b| BackingFile {
                    path: b.path.clone().into(),
                    format: b.format,
                })
                .collect();
            let opts = OpenOptions {
                read_only: d.readonly,
                direct: d.direct,
            };
            let disk =
                open_disk_chain(Path::new(&d.path), d.format, opts, &chain).map_err(|source| {
                    AhciError::Disk {
                        path: d.path.clone(),
                        format: d.format.as_str(),
                        source,
                    }
                })?;
            let port = drives.len();
            log::info!(
                "ahci port {port}: SATA disk {} ({}, {} bytes)",
                d.path,
                d.format,
                disk.size()
            );
            let disk = Arc::new(ClosableDisk::new(disk));
            disks.push(format!("sata{port}"), disk.clone());
            let serial = d
                .serial
                .clone()
                .unwrap_or_else(|| format!("KILN-SATA{port}"));
            drives.push(Drive::new(DriveKind::Disk, disk, serial));
        }
        for c in &config.cdroms {
            let opts = OpenOptions {
                read_only: true,
                direct: false,
            };
            let image = open_disk_chain(Path::new(&c.path), DiskFormat::Raw, opts, &[]).map_err(
                |source| AhciError::Cdrom {
                    path: c.path.clone(),
                    source,
                },
            )?;
            let port = drives.len();
            log::info!(
                "ahci port {port}: CD-ROM {} ({} bytes)",
                c.path,
                image.size()
            );
            let image: Arc<dyn Disk> = Arc::from(image);
            drives.push(Drive::new(
                DriveKind::Cdrom,
                image,
                format!("KILN-CD{port}"),
            ));
        }
        Ok((!drives.is_empty()).then_some(AhciDrives { drives, disks }))
    }
}

/// INTx through `KVM_IRQ_LINE` on one GSI.
struct KvmIrqLine {
    vm: VmFd,
    gsi: u32,
}

impl IrqLevel for KvmIrqLine {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, high) {
            log::warn!("ahci: setting GSI {} to {high}: {e}", self.gsi);
        }
    }
}

/// Follows the guest's moves of the ABAR.
struct AbarMover {
    slot: u8,
    window: Arc<BarWindow>,
}

impl BarMoveHandler for AbarMover {
    fn bar_moved(&self, slot: u8, mv: BarMove) {
        if slot == self.slot && mv.index == ABAR {
            let new = moved_bar_address("AHCI", &mv);
            self.window.set_addr(slot, ABAR, new);
            log::debug!("AHCI ABAR now at {new:#x}");
        }
    }
}

/// Build the controller with `drives` and wire it in; returns its disks.
pub(super) fn attach(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    buses: &mut Buses<'_>,
    alloc: &mut Allocator,
    window: &Arc<BarWindow>,
    drives: AhciDrives,
) -> Result<DiskSet, AhciError> {
    let abar = alloc.mmio_bar(ABAR_SIZE).ok_or(AhciError::WindowFull)?;
    let ahci = Arc::new(Mutex::new(Ahci::new(drives.drives, mem.clone(), abar)?));
    let shared: SharedPciDevice = ahci.clone();
    let mut root = buses.pci.lock().unwrap_or_else(|e| e.into_inner());
    let slot = root.add_device(shared.clone())?;
    let gsi = intx_gsi(slot);
    let line = KvmIrqLine {
        vm: dup_vm_fd(vm).map_err(AhciError::DupVm)?,
        gsi,
    };
    ahci.lock()
        .unwrap_or_else(|e| e.into_inner())
        .set_irq(Arc::new(line), gsi as u8);
    window.add(Mapping {
        slot,
        bar: ABAR,
        addr: abar,
        len: ABAR_SIZE,
        device: shared,
    });
    root.set_bar_move_handler(Arc::new(AbarMover {
        slot,
        window: window.clone(),
    }));
    log::info!("ahci: ICH9 AHCI at PCI 00:{slot:02x}.0, ABAR at {abar:#x}, GSI {gsi}");
    Ok(drives.disks)
}
