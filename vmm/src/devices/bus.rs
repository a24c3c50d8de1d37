//! A bus maps address ranges (I/O ports or MMIO) to devices. The vCPU
//! threads dispatch each KVM_EXIT_IO / KVM_EXIT_MMIO through one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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

    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (&base, entry) = self.ranges.range(..=addr).next_back()?;
        (addr - base < entry.len).then_some((addr - base, &entry.device))
    }

    /// Read from the device at `addr`. Returns false (and leaves `data` as
    /// all ones, as an unclaimed bus reads) if no device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Write to the device at `addr`. Returns false if no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(offset, data);
                true
            }
            None => false,
        }
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
}
