//! A bus maps address ranges (I/O ports or MMIO) to devices. The vCPU
//! threads dispatch each KVM_EXIT_IO / KVM_EXIT_MMIO through one.
//!
//! The ranges are fixed once the vCPUs take their clones, except for
//! *movable* ranges ([`Bus::insert_movable`]): a device the guest relocates
//! (the ACPI PM block, whose base the firmware programs through the PIIX4
//! PM function) gets a [`MovableRange`] handle that moves or hides it for
//! every clone of the bus at once. A placed movable range is looked up
//! before the fixed ones: the guest put it there on purpose, possibly
//! inside a fixed catch-all range (a window of PCI I/O BARs covers OVMF's
//! PM base 0xB000). While no movable range is placed (always, for a direct
//! boot), an access costs one atomic load more than a fixed lookup.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A device on a bus. `offset` is relative to the start of the range the
/// device was inserted at; `data.len()` is the access size (1, 2, 4 or 8).
/// A device must tolerate any offset and size inside its range: the guest
/// chooses them.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// A device of byte-wide registers at consecutive offsets (the i8042, the
/// RTC): a wider access covers several, as `outw` to the RTC's index port
/// writes the index, then the data. Such a device implements this and is a
/// [`BusDevice`] by the impl below.
pub trait ByteRegisters: Send {
    fn read_byte(&mut self, offset: u64) -> u8;
    fn write_byte(&mut self, offset: u64, value: u8);
}

impl<T: ByteRegisters> BusDevice for T {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_byte(offset.saturating_add(i as u64));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            self.write_byte(offset.saturating_add(i as u64), b);
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("range {base:#x}+{len:#x} overlaps a device already on the bus")]
    Overlap { base: u64, len: u64 },
    #[error("empty range at {0:#x}")]
    Empty(u64),
}

struct Entry {
    len: u64,
    device: SharedDevice,
}

/// Address ranges to devices. Cloned cheaply by each vCPU thread.
#[derive(Default, Clone)]
pub struct Bus {
    ranges: Arc<BTreeMap<u64, Entry>>,
    /// Shared by every clone: moving a range is seen by all vCPUs.
    movable: Arc<MovableList>,
}

#[derive(Default)]
struct MovableList {
    /// How many ranges are placed (lets lookups skip the lock at 0).
    placed: AtomicUsize,
    ranges: RwLock<Vec<Movable>>,
}

struct Movable {
    /// Where the range is now (None: hidden).
    base: Option<u64>,
    len: u64,
    device: SharedDevice,
}

/// Moves or hides one movable range of a [`Bus`] (and of all its clones).
#[derive(Clone)]
pub struct MovableRange {
    list: Arc<MovableList>,
    index: usize,
}

impl MovableRange {
    /// Put the range at `base` (None: hide it). Errors, leaving it where it
    /// was, if the range would wrap around the address space or overlap
    /// another movable range.
    pub fn move_to(&self, base: Option<u64>) -> Result<(), BusError> {
        let mut list = self.list.ranges.write().unwrap_or_else(|e| e.into_inner());
        let len = list[self.index].len;
        if let Some(base) = base {
            let end = base
                .checked_add(len)
                .ok_or(BusError::Overlap { base, len })?;
            let clash = list.iter().enumerate().any(|(i, m)| {
                i != self.index && m.base.is_some_and(|b| b < end && base < b + m.len)
            });
            if clash {
                return Err(BusError::Overlap { base, len });
            }
        }
        let was = std::mem::replace(&mut list[self.index].base, base);
        match (was.is_some(), base.is_some()) {
            (false, true) => self.list.placed.fetch_add(1, Ordering::SeqCst),
            (true, false) => self.list.placed.fetch_sub(1, Ordering::SeqCst),
            _ => 0,
        };
        Ok(())
    }

    /// Where the range is now.
    pub fn base(&self) -> Option<u64> {
        self.list.ranges.read().unwrap_or_else(|e| e.into_inner())[self.index].base
    }
}

impl Clone for Entry {
    fn clone(&self) -> Self {
        Entry {
            len: self.len,
            device: self.device.clone(),
        }
    }
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Put `device` at `[base, base + len)`. Done while building the VM,
    /// before vCPU threads take their clones.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::Empty(base));
        }
        let end = base
            .checked_add(len)
            .ok_or(BusError::Overlap { base, len })?;
        let overlaps = self
            .ranges
            .range(..end)
            .next_back()
            .is_some_and(|(&b, e)| b + e.len > base);
        if overlaps {
            return Err(BusError::Overlap { base, len });
        }
        Arc::make_mut(&mut self.ranges).insert(base, Entry { len, device });
        Ok(())
    }

    /// Add a device of `len` bytes that starts hidden; place it with the
    /// returned handle.
    pub fn insert_movable(
        &mut self,
        device: SharedDevice,
        len: u64,
    ) -> Result<MovableRange, BusError> {
        if len == 0 {
            return Err(BusError::Empty(0));
        }
        let mut list = self
            .movable
            .ranges
            .write()
            .unwrap_or_else(|e| e.into_inner());
        list.push(Movable {
            base: None,
            len,
            device,
        });
        Ok(MovableRange {
            list: self.movable.clone(),
            index: list.len() - 1,
        })
    }

    /// Run `f` on the device at `addr` with the offset into its range: a
    /// placed movable range there, else a fixed one.
    fn with_device<R>(&self, addr: u64, f: impl FnOnce(u64, &SharedDevice) -> R) -> Option<R> {
        if self.movable.placed.load(Ordering::SeqCst) > 0 {
            let list = self
                .movable
                .ranges
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let found = list.iter().find_map(|m| {
                let base = m.base?;
                (addr >= base && addr - base < m.len).then(|| (addr - base, m.device.clone()))
            });
            drop(list);
            if let Some((offset, device)) = found {
                return Some(f(offset, &device));
            }
        }
        let (&base, entry) = self.ranges.range(..=addr).next_back()?;
        (addr - base < entry.len).then(|| f(addr - base, &entry.device))
    }

    /// Read from the device at `addr`. Returns false (and leaves `data` as
    /// all ones, as an unclaimed bus reads) if no device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let found = self.with_device(addr, |offset, dev| {
            dev.lock()
                .unwrap_or_else(|e| e.into_inner())
                .read(offset, data)
        });
        if found.is_none() {
            data.fill(0xff);
        }
        found.is_some()
    }

    /// Write to the device at `addr`. Returns false if no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        self.with_device(addr, |offset, dev| {
            dev.lock()
                .unwrap_or_else(|e| e.into_inner())
                .write(offset, data)
        })
        .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<(u64, Vec<u8>)>);

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range_with_offsets() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b, [2]);
        assert!(bus.write(0x3ff, &[7]));
        assert!(!bus.write(0x400, &[7]));
        assert!(!bus.read(0x3f7, &mut b));
        assert_eq!(b, [0xff]);
        assert_eq!(dev.lock().unwrap().0, vec![(7, vec![7])]);
    }

    #[test]
    fn refuses_overlaps_and_empty_ranges() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x100, 0x10).unwrap();
        assert!(bus.insert(dev.clone(), 0x10f, 1).is_err());
        assert!(bus.insert(dev.clone(), 0xf8, 0x9).is_err());
        assert!(bus.insert(dev.clone(), 0x110, 0).is_err());
        assert!(bus.insert(dev.clone(), u64::MAX, 2).is_err());
        bus.insert(dev.clone(), 0x110, 1).unwrap();
        bus.insert(dev, 0xf0, 0x10).unwrap();
    }

    #[test]
    fn movable_ranges_move_for_every_clone() {
        let fixed = Arc::new(Mutex::new(Recorder::default()));
        let pm = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(fixed.clone(), 0x600, 0x40).unwrap();
        let handle = bus.insert_movable(pm.clone(), 0x40).unwrap();
        let vcpu = bus.clone();
        // Hidden at first.
        assert!(!vcpu.write(0xb004, &[1]));
        assert_eq!(handle.base(), None);
        handle.move_to(Some(0xb000)).unwrap();
        assert!(vcpu.write(0xb004, &[2]));
        assert_eq!(pm.lock().unwrap().0, vec![(4, vec![2])]);
        let mut d = [0u8; 1];
        assert!(vcpu.read(0xb03f, &mut d));
        assert_eq!(d, [0x3f]);
        assert!(!vcpu.read(0xb040, &mut d));
        // Placed over a fixed range (a catch-all window), it wins there;
        // the fixed range still answers around it.
        handle.move_to(Some(0x5f8)).unwrap();
        assert!(vcpu.write(0x604, &[3]));
        assert_eq!(pm.lock().unwrap().0.last(), Some(&(0xc, vec![3])));
        assert!(fixed.lock().unwrap().0.is_empty());
        assert!(vcpu.write(0x638, &[4]));
        assert_eq!(fixed.lock().unwrap().0, vec![(0x38, vec![4])]);
        // Hidden again: the fixed range answers; bad moves are refused and
        // change nothing.
        handle.move_to(None).unwrap();
        assert!(vcpu.write(0x604, &[5]));
        assert_eq!(fixed.lock().unwrap().0.last(), Some(&(4, vec![5])));
        assert!(handle.move_to(Some(u64::MAX - 4)).is_err());
        let other = bus.insert_movable(fixed.clone(), 8).unwrap();
        other.move_to(Some(0xc000)).unwrap();
        assert!(handle.move_to(Some(0xbfc8)).is_err());
        assert_eq!(handle.base(), None);
        handle.move_to(Some(0xbfc0)).unwrap();
        assert!(bus.insert_movable(pm, 0).is_err());
    }
}
