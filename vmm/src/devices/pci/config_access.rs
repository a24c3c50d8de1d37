//! The guest's two ways into PCI configuration space.
//!
//! [`PciConfigIo`] is configuration mechanism 1 at I/O ports 0xCF8..0xD00:
//! a dword write to 0xCF8 sets the address (bit 31 enable, bus, device,
//! function, register), then 0xCFC..0xCFF read or write its bytes. Port
//! 0xCF9, inside that range, is the chipset's reset control register on a
//! PC: byte accesses there go to the device given with
//! [`PciConfigIo::with_port_cf9`] (legacy::reset::ResetControl), as the bus
//! cannot hold both ranges.
//!
//! [`PciConfigMmio`] is ECAM (MMCONFIG): each function's 4 KiB of
//! configuration space at `bus << 20 | device << 15 | function << 12`.

use std::sync::{Arc, Mutex};

use super::root::PciRoot;
use crate::devices::bus::{BusDevice, SharedDevice};

/// Ports 0xCF8..0xD00.
pub const PCI_CONFIG_IO_LEN: u64 = 8;

const CONFIG_ADDRESS_ENABLE: u32 = 0x8000_0000;
/// Bus, device, function, register (dword-aligned) and enable.
const CONFIG_ADDRESS_MASK: u32 = 0x80ff_fffc;
/// Port 0xCF9.
const RESET_CONTROL_OFFSET: u64 = 1;

fn lock(root: &Mutex<PciRoot>) -> std::sync::MutexGuard<'_, PciRoot> {
    root.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read `data.len()` bytes at byte `offset` of a configuration register.
fn read_config(
    root: &Mutex<PciRoot>,
    bdf: (u8, u8, u8),
    reg: usize,
    offset: usize,
    data: &mut [u8],
) {
    if !matches!(data.len(), 1 | 2 | 4) || offset + data.len() > 4 {
        data.fill(0xff);
        return;
    }
    let value = lock(root)
        .config_read(bdf.0, bdf.1, bdf.2, reg)
        .to_le_bytes();
    data.copy_from_slice(&value[offset..offset + data.len()]);
}

/// Write, then tell the BAR move handler (with the root unlocked).
fn write_config(root: &Mutex<PciRoot>, bdf: (u8, u8, u8), reg: usize, offset: usize, data: &[u8]) {
    let (moved, handler) = {
        let root = lock(root);
        let moved = root.config_write(bdf.0, bdf.1, bdf.2, reg, offset as u64, data);
        (moved, root.bar_move_handlers())
    };
    if let Some((slot, mv)) = moved {
        log::debug!("PCI 00:{slot:02x}.0 BAR {} moved: {mv:?}", mv.index);
        for h in handler {
            h.bar_moved(slot, mv);
        }
    }
}

/// Configuration mechanism 1 (and a way through to port 0xCF9).
pub struct PciConfigIo {
    root: Arc<Mutex<PciRoot>>,
    address: u32,
    port_cf9: Option<SharedDevice>,
}

impl PciConfigIo {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        PciConfigIo {
            root,
            address: 0,
            port_cf9: None,
        }
    }

    /// Forward byte accesses to port 0xCF9 to `device` (at its offset 0).
    /// Without one, they read all ones and writes are dropped.
    pub fn with_port_cf9(mut self, device: SharedDevice) -> Self {
        self.port_cf9 = Some(device);
        self
    }

    /// (bus, device, function), register, if the address is enabled.
    fn target(&self) -> Option<((u8, u8, u8), usize)> {
        if self.address & CONFIG_ADDRESS_ENABLE == 0 {
            return None;
        }
        let a = self.address;
        let bdf = (
            (a >> 16) as u8,
            ((a >> 11) & 0x1f) as u8,
            ((a >> 8) & 0x7) as u8,
        );
        Some((bdf, ((a >> 2) & 0x3f) as usize))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (RESET_CONTROL_OFFSET, 1) => match &self.port_cf9 {
                Some(dev) => dev.lock().unwrap_or_else(|e| e.into_inner()).read(0, data),
                None => data.fill(0xff),
            },
            (4..=7, _) => match self.target() {
                Some((bdf, reg)) => read_config(&self.root, bdf, reg, offset as usize - 4, data),
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 4) => {
                let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                self.address = v & CONFIG_ADDRESS_MASK;
            }
            (RESET_CONTROL_OFFSET, 1) => {
                if let Some(dev) = &self.port_cf9 {
                    dev.lock().unwrap_or_else(|e| e.into_inner()).write(0, data);
                }
            }
            (4..=7, _) => {
                if let Some((bdf, reg)) = self.target() {
                    write_config(&self.root, bdf, reg, offset as usize - 4, data);
                }
            }
            // Other sub-dword accesses to 0xCF8..0xCFB are not configuration
            // cycles on a PC.
            _ => {}
        }
    }
}

/// ECAM for bus 0 (and all ones for any other bus a larger window covers).
pub struct PciConfigMmio {
    root: Arc<Mutex<PciRoot>>,
}

impl PciConfigMmio {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        PciConfigMmio { root }
    }

    /// (bus, device, function), register, byte offset; None past bus 255.
    fn decode(offset: u64) -> Option<((u8, u8, u8), usize, usize)> {
        let bus = u8::try_from(offset >> 20).ok()?;
        let bdf = (
            bus,
            ((offset >> 15) & 0x1f) as u8,
            ((offset >> 12) & 0x7) as u8,
        );
        Some((bdf, ((offset & 0xfff) >> 2) as usize, (offset & 3) as usize))
    }
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // An aligned 8-byte access is two dword accesses.
        if data.len() == 8 && offset & 7 == 0 {
            let (lo, hi) = data.split_at_mut(4);
            self.read(offset, lo);
            self.read(offset + 4, hi);
            return;
        }
        match Self::decode(offset) {
            Some((bdf, reg, byte)) => read_config(&self.root, bdf, reg, byte, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 8 && offset & 7 == 0 {
            self.write(offset, &data[..4]);
            self.write(offset + 4, &data[4..]);
            return;
        }
        if let Some((bdf, reg, byte)) = Self::decode(offset) {
            if matches!(data.len(), 1 | 2 | 4) && byte + data.len() <= 4 {
                write_config(&self.root, bdf, reg, byte, data);
            }
        }
    }
}
