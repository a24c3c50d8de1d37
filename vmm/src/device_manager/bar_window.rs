//! The BARs that live in the 32-bit PCI hole, looked up by address. The
//! MMIO bus is fixed once the vCPUs run, so the hole (the window the ACPI
//! tables announce, and the part above the ECAM up to the IOAPIC, where
//! SeaBIOS places BARs) is one bus device per range, [`BarWindowRange`],
//! that finds the BAR at the accessed address in a table that the device
//! families' BAR move handlers update (`virtio/`, `display.rs`). A BAR
//! that is a KVM memory slot (the display's framebuffer) needs no entry:
//! its accesses never exit. The legacy I/O BARs of transitional virtio
//! devices use a second [`BarWindow`] on the port bus.

use std::sync::{Arc, Mutex, RwLock};

use super::allocator::bar_ranges;
use crate::devices::bus::{Bus, BusDevice, BusError};
use crate::devices::pci::SharedPciDevice;

/// One BAR in a window.
pub(super) struct Mapping {
    pub slot: u8,
    pub bar: usize,
    pub addr: u64,
    pub len: u64,
    pub device: SharedPciDevice,
}
/// The BARs living in the 32-bit MMIO window, by current address.
#[derive(Default)]
pub struct BarWindow {
    maps: RwLock<Vec<Mapping>>,
}

impl BarWindow {
    /// Add BAR `bar` of the device in `slot`, now at `addr` (0: nowhere).
    pub(super) fn add(&self, m: Mapping) {
        self.maps.write().unwrap_or_else(|e| e.into_inner()).push(m);
    }

    /// Nothing is in the window.
    pub(super) fn is_empty(&self) -> bool {
        self.maps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    pub(super) fn find(&self, addr: u64) -> Option<(SharedPciDevice, usize, u64)> {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        maps.iter()
            .find(|m| m.addr != 0 && addr >= m.addr && addr - m.addr < m.len)
            .map(|m| (m.device.clone(), m.bar, addr - m.addr))
    }

    pub(super) fn set_addr(&self, slot: u8, bar: usize, addr: u64) {
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = maps.iter_mut().find(|m| m.slot == slot && m.bar == bar) {
            m.addr = addr;
        }
    }
}

/// [`BarWindow`] as the bus device covering the window from `base`.
pub(super) struct BarWindowRange {
    pub window: Arc<BarWindow>,
    pub base: u64,
}
impl BusDevice for BarWindowRange {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.window.find(self.base + offset) {
            Some((dev, bar, off)) => dev
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .bar_read(bar, off, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((dev, bar, off)) = self.window.find(self.base + offset) {
            dev.lock()
                .unwrap_or_else(|e| e.into_inner())
                .bar_write(bar, off, data);
        }
    }
}

/// Put `window` on the MMIO bus over every range of the PCI hole.
pub(super) fn insert(mmio: &mut Bus, window: &Arc<BarWindow>) -> Result<(), BusError> {
    for (start, stop) in bar_ranges() {
        mmio.insert(
            Arc::new(Mutex::new(BarWindowRange {
                window: window.clone(),
                base: start,
            })),
            start,
            stop - start,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout;
    use crate::device_manager::allocator::in_window;
    use crate::devices::pci::{BarMove, PciBar, PciDevice};

    struct Echo;
    impl PciDevice for Echo {
        fn config_read(&mut self, _: usize) -> u32 {
            0
        }
        fn config_write(&mut self, _: usize, _: u64, _: &[u8]) -> Option<BarMove> {
            None
        }
        fn bars(&self) -> Vec<PciBar> {
            Vec::new()
        }
        fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
            data.copy_from_slice(&(offset as u32 | (bar as u32) << 24).to_le_bytes()[..data.len()]);
        }
    }

    #[test]
    fn the_window_follows_bar_moves() {
        let window = Arc::new(BarWindow::default());
        let dev: SharedPciDevice = Arc::new(Mutex::new(Echo));
        window.add(Mapping {
            slot: 3,
            bar: 0,
            addr: 0xc000_0000,
            len: 0x8000,
            device: dev,
        });
        let mut range = BarWindowRange {
            window: window.clone(),
            base: layout::MMIO32_START,
        };
        let mut b = [0u8; 4];
        range.read(0x10, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x10);
        window.set_addr(3, 0, 0xc010_0000);
        range.read(0x10, &mut b);
        assert_eq!(b, [0xff; 4], "nothing at the old address");
        range.read(0x10_0010, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x10);
        range.read(0x10_8000, &mut b);
        assert_eq!(b, [0xff; 4], "past the BAR's end");
        // Unmapped (moved outside the window): nowhere.
        window.set_addr(3, 0, 0);
        range.read(0, &mut b);
        assert_eq!(b, [0xff; 4]);
        assert!(in_window(0xc000_0000, 0x8000));
        assert!(in_window(0xdfff_8000, 0x8000));
        assert!(!in_window(0xdfff_8000, 0x8001));
        assert!(!in_window(0xbfff_f000, 0x8000));
        assert!(!in_window(u64::MAX - 4, 0x8000));
        // SeaBIOS's top-down placement, below the IOAPIC; not the ECAM.
        assert!(in_window(0xfebf_8000, 0x8000));
        assert!(!in_window(0xfebf_8000, 0x8001));
        assert!(!in_window(layout::PCI_ECAM_START, 0x8000));
    }
}
