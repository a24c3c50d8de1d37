//! The device manager's display part: the standard VGA
//! (`devices/display`) wired in when the configuration asks for one. Its
//! video memory becomes a KVM memory slot at BAR 0 (moved with the BAR),
//! BAR 2 goes into the PCI hole's [`BarWindow`], the legacy ports and the
//! 0xA0000 window (left out of guest RAM by `memory.rs` for a display) go
//! on the buses, and the VGA BIOS, when there is one, into fw_cfg as
//! `pci1234,1111.rom`, where SeaBIOS finds it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_api::vm::VmConfig;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;

use super::allocator::{moved_bar_address, Allocator};
use super::bar_window::{BarWindow, Mapping};
use super::interrupts::{dup_vm_fd, InterruptError};
use super::Buses;
use crate::devices::bus::BusError;
use crate::devices::display::{
    self, VbePorts, Vga, VgaPorts, VgaWindow, Vram, FB_BAR, MMIO_BAR, MMIO_BAR_SIZE, VRAM_SIZE,
};
use crate::devices::legacy::fw_cfg::{keys, FwCfg, FwCfgError};
use crate::devices::pci::{BarMove, BarMoveHandler, PciError, SharedPciDevice};

/// The KVM memory slot of the framebuffer: clear of RAM's slots (0..3)
/// and the firmware's (right after them).
pub const FB_SLOT: u32 = 32;

#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error("allocating {VRAM_SIZE} bytes of video memory")]
    Vram(#[source] std::io::Error),
    #[error("the 32-bit MMIO window has no room for the display's BARs")]
    WindowFull,
    #[error("the display's PCI function")]
    Pci(#[from] PciError),
    #[error("duplicating the VM file descriptor for the display")]
    DupVm(#[source] InterruptError),
    #[error("mapping the framebuffer at {addr:#x}")]
    Slot {
        addr: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("placing {0} on the bus")]
    Bus(&'static str, #[source] BusError),
    #[error("cannot read the VGA BIOS {0}")]
    RomRead(String, #[source] std::io::Error),
    #[error("the VGA BIOS {0} is {1} bytes: an option ROM is 512 bytes to {MAX_ROM} bytes")]
    RomSize(String, usize),
    #[error("adding the VGA BIOS to fw_cfg")]
    FwCfg(#[from] FwCfgError),
}

/// The largest VGA BIOS accepted (the 0xC0000 option ROM area).
pub const MAX_ROM: usize = 128 << 10;
/// The VGA BIOS looked for beside the firmware when none is named.
pub const DEFAULT_ROM: &str = "vgabios-stdvga.bin";

/// The VGA BIOS `config` names, or the [`DEFAULT_ROM`] beside its
/// firmware (None: there is none, or no display); read before KVM is
/// opened, so that a ROM that cannot be read fails the VM first.
pub fn open_rom(config: &VmConfig) -> Result<Option<Vec<u8>>, DisplayError> {
    let Some(display) = &config.display else {
        return Ok(None);
    };
    let path = match (&display.rom, &config.firmware) {
        (Some(rom), _) => PathBuf::from(rom),
        (None, Some(fw)) => {
            let beside = Path::new(&fw.path).with_file_name(DEFAULT_ROM);
            if !beside.is_file() {
                log::info!(
                    "display: no {} beside the firmware; no VGA BIOS",
                    beside.display()
                );
                return Ok(None);
            }
            beside
        }
        (None, None) => return Ok(None),
    };
    let name = path.display().to_string();
    let rom = std::fs::read(&path).map_err(|e| DisplayError::RomRead(name.clone(), e))?;
    if rom.len() < 512 || rom.len() > MAX_ROM {
        return Err(DisplayError::RomSize(name, rom.len()));
    }
    log::info!("display: VGA BIOS {name} ({} bytes)", rom.len());
    Ok(Some(rom))
}

/// Firmware boot with a display: the VGA BIOS as `pci1234,1111.rom`, and
/// NOGRAPHIC off (there is a screen).
pub(super) fn firmware_files(fw_cfg: &mut FwCfg, rom: Option<Vec<u8>>) -> Result<(), DisplayError> {
    fw_cfg.set_item(keys::NOGRAPHIC, 0u16.to_le_bytes().to_vec())?;
    if let Some(rom) = rom {
        fw_cfg.add_file(display::ROM_FILE, rom)?;
    }
    Ok(())
}

/// The display of a VM, as the control API and the VNC server reach it.
#[derive(Clone)]
pub struct Display {
    pub vga: Arc<Mutex<Vga>>,
    pub slot: u8,
    mover: Arc<FbMover>,
}

impl Display {
    /// Whether the guest wrote to the framebuffer since the last call
    /// (KVM's dirty log of its slot, which this also clears). Always true
    /// without dirty logging (no `--vnc`), or while the slot is unmapped.
    pub fn framebuffer_written(&self) -> bool {
        if !self.mover.dirty_log {
            return true;
        }
        let _moving = self.mover.moving.lock().unwrap_or_else(|e| e.into_inner());
        match self.mover.vm.get_dirty_log(FB_SLOT, self.mover.vram.len()) {
            Ok(bitmap) => bitmap.iter().any(|&w| w != 0),
            Err(_) => true,
        }
    }
}

/// Follows the guest's moves of the display's BARs: the framebuffer's
/// memory slot, and BAR 2's entry in the window.
struct FbMover {
    vm: VmFd,
    pci_slot: u8,
    vram: Arc<Vram>,
    window: Arc<BarWindow>,
    /// The slot logs dirty pages (a VNC server watches for changes).
    dirty_log: bool,
    /// Held while the slot moves, so no dirty-log read sees it half moved.
    moving: Mutex<()>,
}

impl FbMover {
    /// Map the framebuffer at `addr` (0: unmap it).
    fn map(&self, addr: u64) -> Result<(), kvm_ioctls::Error> {
        let desc = kvm_userspace_memory_region {
            slot: FB_SLOT,
            flags: if self.dirty_log {
                KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
            guest_phys_addr: addr,
            memory_size: if addr == 0 { 0 } else { self.vram.len() as u64 },
            userspace_addr: self.vram.host_addr(),
        };
        // SAFETY: the host range is the video memory's mapping, which the
        // VGA device and this mover (owned by the VM's device manager)
        // keep alive as long as the VM; the guest range is inside the PCI
        // hole, clear of RAM and the firmware ([`moved_bar_address`]).
        unsafe { self.vm.set_user_memory_region(desc) }
    }
}

impl BarMoveHandler for FbMover {
    fn bar_moved(&self, slot: u8, mv: BarMove) {
        if slot != self.pci_slot {
            return;
        }
        let new = moved_bar_address("display", &mv);
        match mv.index {
            FB_BAR => {
                // A slot moves by deleting it and adding it again.
                let _moving = self.moving.lock().unwrap_or_else(|e| e.into_inner());
                let r = self.map(0).and_then(|()| match new {
                    0 => Ok(()),
                    a => self.map(a),
                });
                if let Err(e) = r {
                    log::error!("display: moving the framebuffer to {new:#x}: {e}");
                }
            }
            MMIO_BAR => self.window.set_addr(slot, MMIO_BAR, new),
            _ => return,
        }
        log::debug!("display BAR {} now at {new:#x}", mv.index);
    }
}

/// Build the VGA and wire it in.
pub(super) fn attach(
    vm: &VmFd,
    buses: &mut Buses<'_>,
    alloc: &mut Allocator,
    window: &Arc<BarWindow>,
    dirty_log: bool,
) -> Result<Display, DisplayError> {
    let vram = Arc::new(Vram::new(VRAM_SIZE).map_err(DisplayError::Vram)?);
    let fb = alloc
        .mmio_bar(VRAM_SIZE as u64)
        .ok_or(DisplayError::WindowFull)?;
    let mmio = alloc
        .mmio_bar(MMIO_BAR_SIZE)
        .ok_or(DisplayError::WindowFull)?;
    let vga = Arc::new(Mutex::new(Vga::new(vram.clone(), fb, mmio)?));
    let shared: SharedPciDevice = vga.clone();
    let mut root = buses.pci.lock().unwrap_or_else(|e| e.into_inner());
    let pci_slot = root.add_device(shared.clone())?;
    window.add(Mapping {
        slot: pci_slot,
        bar: MMIO_BAR,
        addr: mmio,
        len: MMIO_BAR_SIZE,
        device: shared,
    });
    let mover = Arc::new(FbMover {
        vm: dup_vm_fd(vm).map_err(DisplayError::DupVm)?,
        pci_slot,
        vram,
        window: window.clone(),
        dirty_log,
        moving: Mutex::new(()),
    });
    mover
        .map(fb)
        .map_err(|source| DisplayError::Slot { addr: fb, source })?;
    root.set_bar_move_handler(mover.clone());
    drop(root);
    buses
        .pio
        .insert(
            Arc::new(Mutex::new(VgaPorts(vga.clone()))),
            u64::from(display::VGA_PORT_BASE),
            display::VGA_PORT_LEN,
        )
        .map_err(|e| DisplayError::Bus("the VGA ports", e))?;
    buses
        .pio
        .insert(
            Arc::new(Mutex::new(VbePorts(vga.clone()))),
            u64::from(display::VBE_PORT_BASE),
            display::VBE_PORT_LEN,
        )
        .map_err(|e| DisplayError::Bus("the VBE ports", e))?;
    buses
        .mmio
        .insert(
            Arc::new(Mutex::new(VgaWindow(vga.clone()))),
            display::WINDOW_BASE,
            display::WINDOW_LEN,
        )
        .map_err(|e| DisplayError::Bus("the VGA memory window", e))?;
    log::info!("display: standard VGA at PCI 00:{pci_slot:02x}.0, framebuffer at {fb:#x}, MMIO at {mmio:#x}");
    Ok(Display {
        vga,
        slot: pci_slot,
        mover,
    })
}
