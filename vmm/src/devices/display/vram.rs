//! The display's video memory: one anonymous mapping that the device
//! manager also gives the guest as a KVM memory slot (the framebuffer BAR),
//! so the guest's framebuffer writes cost no exit. Every access from the
//! VMM goes through a bounds-checked volatile view: an offset the guest
//! chose (a bank, a start address, a plane address) can never reach past
//! the mapping; reads there give 0xff and writes are dropped.

use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, VolatileMemory};

/// Video memory of a fixed size.
pub struct Vram {
    map: MmapRegion<()>,
}

impl Vram {
    /// `size` bytes of zeroed video memory.
    pub fn new(size: usize) -> std::io::Result<Self> {
        let map = MmapRegion::new(size).map_err(std::io::Error::other)?;
        Ok(Vram { map })
    }

    pub fn len(&self) -> usize {
        self.map.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mapping's host address, for the KVM memory slot.
    pub fn host_addr(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    pub fn read_u8(&self, offset: usize) -> u8 {
        self.map
            .as_volatile_slice()
            .read_obj::<u8>(offset)
            .unwrap_or(0xff)
    }

    pub fn write_u8(&self, offset: usize, value: u8) {
        let _ = self.map.as_volatile_slice().write_obj(value, offset);
    }

    /// The four planes' bytes at plane address `addr` (plane p in byte p).
    pub fn read_u32(&self, addr: usize) -> u32 {
        addr.checked_mul(4)
            .and_then(|o| self.map.as_volatile_slice().read_obj::<u32>(o).ok())
            .map_or(u32::MAX, u32::from_le)
    }

    pub fn write_u32(&self, addr: usize, value: u32) {
        if let Some(o) = addr.checked_mul(4) {
            let _ = self.map.as_volatile_slice().write_obj(value.to_le(), o);
        }
    }

    /// Copy `buf.len()` bytes from `offset`; what lies past the end reads
    /// as 0.
    pub fn read_into(&self, offset: usize, buf: &mut [u8]) {
        buf.fill(0);
        let Some(avail) = self.len().checked_sub(offset) else {
            return;
        };
        let n = avail.min(buf.len());
        if n == 0 {
            return;
        }
        if let Ok(s) = self.map.get_slice(offset, n) {
            s.copy_to(&mut buf[..n]);
        }
    }

    /// Fill `len` bytes from `offset` (clamped to the end) with zeroes.
    pub fn clear(&self, offset: usize, len: usize) {
        let Some(avail) = self.len().checked_sub(offset) else {
            return;
        };
        let zeros = [0u8; 4096];
        let slice = self.map.as_volatile_slice();
        let end = offset + avail.min(len);
        let mut at = offset;
        while at < end {
            let n = (end - at).min(zeros.len());
            let _ = slice.write_slice(&zeros[..n], at);
            at += n;
        }
    }
}
