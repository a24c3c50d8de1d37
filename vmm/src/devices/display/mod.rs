//! QEMU's standard VGA (`-vga std`): PCI 1234:1111, class 0x0300, which
//! SeaBIOS's `vgabios-stdvga.bin`, OVMF's QemuVideoDxe, Windows' basic
//! display driver and Linux's bochs DRM driver all drive.
//!
//! - BAR 0: the framebuffer, [`VRAM_SIZE`] bytes of prefetchable memory.
//!   The device manager maps the [`Vram`] there as a KVM memory slot, so
//!   the guest draws at memory speed; VBE modes show from it.
//! - BAR 2: 4 KiB of MMIO in QEMU's layout: the VGA ports 0x3C0-0x3DF at
//!   0x400, the VBE dispi registers at 0x500 (register `i` at `0x500 +
//!   2i`), QEMU's extended registers at 0x600 (size, byte order).
//! - The legacy PC side: ports 0x3C0-0x3DF ([`VgaPorts`], `regs.rs`), the
//!   Bochs VBE index/data ports 0x1CE/0x1CF ([`VbePorts`], `vbe.rs`) and
//!   the 0xA0000-0xBFFFF window ([`VgaWindow`], `planes.rs`), all into the
//!   same video memory (text at 0xB8000, fonts in plane 2).
//! - `render.rs` draws the current picture from a [`Vga::snapshot`] of the
//!   registers and the video memory, off the vCPU threads.
//!
//! Lock order: the bus's lock of a port/window wrapper, then the `Vga`.

pub mod planes;
pub mod regs;
pub mod render;
pub mod vbe;
pub mod vram;

use std::sync::{Arc, Mutex};

use crate::devices::bus::BusDevice;
use crate::devices::pci::{
    BarMove, PciBar, PciBarKind, PciConfiguration, PciDevice, PciError, PciHeader,
};

pub use regs::VgaRegs;
pub use vbe::Vbe;
pub use vram::Vram;

pub const VENDOR_ID: u16 = 0x1234;
pub const DEVICE_ID: u16 = 0x1111;
/// Display controller, VGA compatible.
pub const CLASS_CODE: u32 = 0x03_00_00;
/// Video memory (QEMU's default `vgamem_mb`).
pub const VRAM_SIZE: usize = 16 << 20;
pub const FB_BAR: usize = 0;
pub const MMIO_BAR: usize = 2;
pub const MMIO_BAR_SIZE: u64 = 0x1000;
/// The VGA ports: 0x3C0..0x3E0.
pub const VGA_PORT_BASE: u16 = 0x3c0;
pub const VGA_PORT_LEN: u64 = 0x20;
/// The Bochs VBE index (0x1CE) and data (0x1CF) ports.
pub const VBE_PORT_BASE: u16 = 0x1ce;
pub const VBE_PORT_LEN: u64 = 2;
/// The legacy memory window.
pub const WINDOW_BASE: u64 = 0xa_0000;
pub const WINDOW_LEN: u64 = 0x2_0000;
/// The fw_cfg file SeaBIOS loads as this device's option ROM.
pub const ROM_FILE: &str = "pci1234,1111.rom";

const MMIO_VGA_PORTS: u64 = 0x400;
const MMIO_DISPI: u64 = 0x500;
const MMIO_QEXT: u64 = 0x600;
/// QEMU's extended registers: their size, and the framebuffer byte order
/// (this value: little endian).
const QEXT_SIZE: u32 = 8;
const QEXT_LITTLE_ENDIAN: u32 = 0xbebe_bebe;

/// The standard VGA device.
pub struct Vga {
    config: PciConfiguration,
    regs: VgaRegs,
    vbe: Vbe,
    vram: Arc<Vram>,
    /// Counts the guest's writes through the VMM (registers, the legacy
    /// window): a viewer redraws when it changed, or when the
    /// framebuffer's dirty log says the guest wrote there.
    generation: u64,
}

impl Vga {
    /// A VGA showing `vram`, its framebuffer BAR at `fb_addr` and its
    /// MMIO BAR at `mmio_addr` (0: not assigned).
    pub fn new(vram: Arc<Vram>, fb_addr: u64, mmio_addr: u64) -> Result<Self, PciError> {
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: VENDOR_ID,
            device_id: DEVICE_ID,
            class_code: CLASS_CODE,
            revision_id: 2,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x1100,
        });
        config.add_bar(&PciBar {
            index: FB_BAR,
            kind: PciBarKind::Memory32,
            prefetchable: true,
            addr: fb_addr,
            size: (vram.len() as u64).next_power_of_two(),
        })?;
        config.add_bar(&PciBar {
            index: MMIO_BAR,
            kind: PciBarKind::Memory32,
            prefetchable: false,
            addr: mmio_addr,
            size: MMIO_BAR_SIZE,
        })?;
        let vbe = Vbe::new(vram.len());
        Ok(Vga {
            config,
            regs: VgaRegs::default(),
            vbe,
            vram,
            generation: 0,
        })
    }

    /// Bumped by every write the VMM sees (not the framebuffer's, which
    /// KVM's dirty log tracks).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The registers as they are now, for the renderer.
    pub fn snapshot(&self) -> (VgaRegs, Vbe) {
        (self.regs.clone(), self.vbe.clone())
    }

    pub fn vram(&self) -> &Arc<Vram> {
        &self.vram
    }

    /// Read VGA port 0x3C0 + `offset`.
    pub fn port_read(&mut self, offset: u64) -> u8 {
        self.regs.read((offset & 0x1f) as u8)
    }

    /// Write VGA port 0x3C0 + `offset`.
    pub fn port_write(&mut self, offset: u64, value: u8) {
        self.generation = self.generation.wrapping_add(1);
        self.regs.write((offset & 0x1f) as u8, value);
    }

    pub fn vbe_read(&self, index: usize) -> u16 {
        self.vbe.read(index)
    }

    /// Write dispi register `index`, carrying out a mode switch.
    pub fn vbe_write(&mut self, index: usize, value: u16) {
        self.generation = self.generation.wrapping_add(1);
        match self.vbe.write(index, value) {
            vbe::VbeEffect::Enabled { clear } => {
                self.vram.clear(0, clear);
                // The legacy window now shows the banked linear memory.
                self.regs.sr[regs::SR_MEMORY_MODE] |= 0x08;
                self.regs.gr[regs::GR_MISC] = (self.regs.gr[regs::GR_MISC] & !0x0c) | 0x05;
            }
            vbe::VbeEffect::Disabled | vbe::VbeEffect::None => {}
        }
    }

    /// A read of the legacy window at `addr` (from 0xA0000).
    pub fn window_read(&mut self, addr: u64) -> u8 {
        planes::read(&mut self.regs, &self.vbe, &self.vram, addr)
    }

    pub fn window_write(&mut self, addr: u64, value: u8) {
        self.generation = self.generation.wrapping_add(1);
        planes::write(&mut self.regs, &self.vbe, &self.vram, addr, value);
    }

    fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match offset {
            o if (MMIO_VGA_PORTS..MMIO_VGA_PORTS + VGA_PORT_LEN).contains(&o) => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = self.port_read(o - MMIO_VGA_PORTS + i as u64);
                }
            }
            o if (MMIO_DISPI..MMIO_DISPI + 2 * vbe::NUM_REGS as u64).contains(&o) => {
                let v = self.vbe_read(((o - MMIO_DISPI) / 2) as usize).to_le_bytes();
                let first = (o & 1) as usize;
                for (b, v) in data.iter_mut().zip(&v[first..]) {
                    *b = *v;
                }
            }
            o if (MMIO_QEXT..MMIO_QEXT + 8).contains(&o) => {
                let regs = [QEXT_SIZE.to_le_bytes(), QEXT_LITTLE_ENDIAN.to_le_bytes()].concat();
                let first = (o - MMIO_QEXT) as usize;
                for (b, v) in data.iter_mut().zip(&regs[first..]) {
                    *b = *v;
                }
            }
            _ => {}
        }
    }

    fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if (MMIO_VGA_PORTS..MMIO_VGA_PORTS + VGA_PORT_LEN).contains(&o) => {
                for (i, &b) in data.iter().enumerate() {
                    self.port_write(o - MMIO_VGA_PORTS + i as u64, b);
                }
            }
            o if (MMIO_DISPI..MMIO_DISPI + 2 * vbe::NUM_REGS as u64).contains(&o)
                && o % 2 == 0
                && data.len() >= 2 =>
            {
                let v = u16::from_le_bytes([data[0], data[1]]);
                self.vbe_write(((o - MMIO_DISPI) / 2) as usize, v);
            }
            // QEMU's byte-order register: only little endian is offered.
            _ => {}
        }
    }
}

impl PciDevice for Vga {
    fn config_read(&mut self, reg_idx: usize) -> u32 {
        self.config.read_reg(reg_idx)
    }

    fn config_write(&mut self, reg_idx: usize, offset: u64, data: &[u8]) -> Option<BarMove> {
        self.config.write_reg(reg_idx, offset, data)
    }

    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        match bar {
            MMIO_BAR => self.mmio_read(offset, data),
            // The framebuffer is a memory slot; an access that exits
            // anyway (slot being moved) goes to the same memory.
            FB_BAR => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = self.vram.read_u8(offset as usize + i);
                }
            }
            _ => data.fill(0xff),
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        match bar {
            MMIO_BAR => self.mmio_write(offset, data),
            FB_BAR => {
                self.generation = self.generation.wrapping_add(1);
                for (i, &b) in data.iter().enumerate() {
                    self.vram.write_u8(offset as usize + i, b);
                }
            }
            _ => {}
        }
    }
}

fn lock(vga: &Mutex<Vga>) -> std::sync::MutexGuard<'_, Vga> {
    vga.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ports 0x3C0-0x3DF on the port bus; a wide access covers consecutive
/// ports (`outw 0x3C4` writes the sequencer's index, then its data).
pub struct VgaPorts(pub Arc<Mutex<Vga>>);

impl BusDevice for VgaPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut vga = lock(&self.0);
        for (i, b) in data.iter_mut().enumerate() {
            *b = vga.port_read(offset + i as u64);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut vga = lock(&self.0);
        for (i, &b) in data.iter().enumerate() {
            vga.port_write(offset + i as u64, b);
        }
    }
}

/// The Bochs VBE ports: 0x1CE the index, 0x1CF the data (16 bits wide).
pub struct VbePorts(pub Arc<Mutex<Vga>>);

fn word(data: &[u8]) -> u16 {
    let mut v = [0u8; 2];
    for (o, b) in v.iter_mut().zip(data) {
        *o = *b;
    }
    u16::from_le_bytes(v)
}

impl BusDevice for VbePorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let vga = lock(&self.0);
        let v = match offset {
            0 => vga.vbe.index,
            _ => vga.vbe_read(usize::from(vga.vbe.index)),
        };
        for (b, v) in data
            .iter_mut()
            .zip(v.to_le_bytes().iter().chain([0, 0].iter()))
        {
            *b = *v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut vga = lock(&self.0);
        match offset {
            0 => vga.vbe.index = word(data),
            _ => {
                let index = usize::from(vga.vbe.index);
                vga.vbe_write(index, word(data));
            }
        }
    }
}

/// The legacy window 0xA0000-0xBFFFF on the MMIO bus.
pub struct VgaWindow(pub Arc<Mutex<Vga>>);

impl BusDevice for VgaWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut vga = lock(&self.0);
        for (i, b) in data.iter_mut().enumerate() {
            *b = vga.window_read(offset + i as u64);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut vga = lock(&self.0);
        for (i, &b) in data.iter().enumerate() {
            vga.window_write(offset + i as u64, b);
        }
    }
}

#[cfg(test)]
mod tests;
