//! The device manager: one owner for the VM's buses (I/O ports and MMIO),
//! its PCI root, the address allocator (`allocator.rs`: BARs in the PCI
//! windows, I/O BARs in the port window), MSI routing (`interrupts.rs`),
//! ioeventfds and INTx. Its parts build devices and wire them in:
//! `platform.rs` (the PC's legacy devices at fixed ports), `virtio/` (the
//! virtio-pci devices; their models are opened from the configuration
//! before KVM exists), `firmware.rs` (the variable store's CFI flash) and
//! `ahci.rs` (the AHCI controller with the SATA disks and CD-ROMs).
//! Devices never learn about each other or about KVM.

pub mod ahci;
pub mod allocator;
mod bar_window;
pub mod display;
pub mod firmware;
pub mod fw_cfg;
pub mod interrupts;
pub mod platform;
pub mod virtio;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kiln_api::vm::VmConfig;
use kvm_ioctls::VmFd;

pub use platform::{IrqLine, Platform};
pub use virtio::{VirtioDevices, VirtioModels, WiringError};

use crate::arch::x86_64::fw_cfg::PcFwCfgError;
use crate::arch::x86_64::platform::{AcpiPlatform, TpmCrbInfo, Window};
use crate::devices::bus::{Bus, BusError};
use crate::devices::legacy::fw_cfg::FwCfgError;
use crate::devices::pci::{PciError, PciRoot};
use crate::devices::tpm;
use crate::devices::VmRequests;
use crate::memory::GuestMemoryMmap;
use allocator::Allocator;

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
    #[error("building the firmware configuration (fw_cfg)")]
    FwCfg(#[from] PcFwCfgError),
    #[error("adding a fw_cfg item")]
    FwCfgItem(#[from] FwCfgError),
    #[error("placing the PIIX3/PIIX4 functions on PCI bus 0")]
    Piix(#[from] PciError),
    #[error("starting the RTC timer thread")]
    RtcTimer(#[source] std::io::Error),
    #[error("virtio devices")]
    Virtio(#[from] WiringError),
    #[error("the firmware variable store's flash")]
    Flash(#[from] firmware::FlashError),
    #[error("the display")]
    Display(#[from] display::DisplayError),
    #[error("placing the PCI BAR window on the MMIO bus")]
    BarWindow(#[source] BusError),
    #[error("the AHCI controller")]
    Ahci(#[from] ahci::AhciError),
    #[error("placing {name} on the bus failed")]
    Bus {
        name: &'static str,
        #[source]
        source: BusError,
    },
}

/// The buses a part of the device manager places devices on.
pub(crate) struct Buses<'a> {
    pub pio: &'a mut Bus,
    pub mmio: &'a mut Bus,
    pub pci: &'a Arc<Mutex<PciRoot>>,
}

/// Every device of a VM, and the buses and addresses they occupy.
pub struct DeviceManager {
    pub pio: Bus,
    pub mmio: Bus,
    pub pci: Arc<Mutex<PciRoot>>,
    /// The PC's legacy devices (serial, PM, boot progress, fw_cfg).
    pub platform: Platform,
    /// The machine as the ACPI tables describe it (direct boot writes
    /// them from this; a firmware reads them from fw_cfg).
    pub acpi: AcpiPlatform,
    /// The virtio devices (dropping them stops their workers).
    pub virtio: VirtioDevices,
    /// Firmware boot with a variable store: its flash device.
    pub flash: Option<Arc<Mutex<firmware::VarsFlash>>>,
    /// The display, when the configuration has one.
    pub display: Option<display::Display>,
    /// The TPM's swtpm, for its orderly end.
    pub tpm: Option<crate::tpm::Swtpm>,
}

/// What the device manager needs to build a VM's devices besides KVM.
pub struct DeviceContext {
    /// Receives the UART's output.
    pub console: Box<dyn Write + Send>,
    /// Hears power-off and reset.
    pub requests: Arc<dyn VmRequests>,
    /// The VMM's start, that debug-port timestamps count from.
    pub start: Instant,
    /// The display's VGA BIOS, read before KVM ([`display::open_rom`]).
    pub display_rom: Option<Vec<u8>>,
    /// The TPM's backend (swtpm, connected before KVM), if any.
    pub tpm: Option<crate::tpm::Swtpm>,
    /// The AHCI controller's drives (opened before KVM), if any.
    pub ahci: Option<ahci::AhciDrives>,
}

impl DeviceManager {
    /// Build the platform devices and wire in the virtio `models` (opened
    /// from `config` before KVM was).
    pub fn new(
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        config: &VmConfig,
        ctx: DeviceContext,
        models: VirtioModels,
    ) -> Result<Self, DeviceError> {
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let tpm_info = ctx.tpm.as_ref().map(|_| TpmCrbInfo {
            window: Window {
                start: tpm::CRB_BASE,
                size: tpm::CRB_SIZE,
            },
            control_area: tpm::CRB_CONTROL_AREA,
            log_size: 0,
        });
        let (platform, pci, acpi) = Platform::new(
            vm,
            &mut pio,
            &mut mmio,
            ctx.console,
            ctx.requests,
            ctx.start,
            config.memory.size_mib << 20,
            config.cpus.count,
            config
                .firmware
                .as_ref()
                .map(|_| (mem, crate::config::smbios_info(config))),
            config.rtc_local_time,
            tpm_info,
        )?;
        if let Some(backend) = &ctx.tpm {
            let crb = tpm::TpmCrb::new(Box::new(backend.clone()));
            mmio.insert(Arc::new(Mutex::new(crb)), tpm::CRB_BASE, tpm::CRB_SIZE)
                .map_err(|source| DeviceError::Bus {
                    name: "TPM CRB",
                    source,
                })?;
        }
        let mut alloc = Allocator::default();
        let window = Arc::new(bar_window::BarWindow::default());
        let mut buses = Buses {
            pio: &mut pio,
            mmio: &mut mmio,
            pci: &pci,
        };
        let mut virtio = virtio::attach(vm, mem, &mut buses, &mut alloc, &window, models)?;
        // After the virtio devices, so that their slots stay where they
        // are without a display.
        let display = match &config.display {
            Some(d) => Some(display::attach(
                vm,
                &mut buses,
                &mut alloc,
                &window,
                d.vnc.is_some(),
            )?),
            None => None,
        };
        if let Some(drives) = ctx.ahci {
            let disks = ahci::attach(vm, mem, &mut buses, &mut alloc, &window, drives)?;
            virtio.disks.extend(disks);
        }
        if !window.is_empty() {
            bar_window::insert(&mut mmio, &window).map_err(DeviceError::BarWindow)?;
        }
        if let (Some(fw_cfg), Some(_)) = (&platform.fw_cfg, &display) {
            display::firmware_files(
                &mut fw_cfg.lock().unwrap_or_else(|e| e.into_inner()),
                ctx.display_rom,
            )?;
        }
        Ok(DeviceManager {
            pio,
            mmio,
            pci,
            platform,
            acpi,
            virtio,
            flash: None,
            display,
            tpm: ctx.tpm,
        })
    }
}
