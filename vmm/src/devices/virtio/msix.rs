//! MSI-X as the guest sees it: the vector table and pending-bit array in a
//! BAR, the enable and function-mask bits of the capability, and the rule
//! that a masked vector's interrupt waits in the PBA until it is unmasked.
//!
//! Interrupts leave through [`MsiVectors`]: the device code never sees KVM
//! (`device_manager/interrupts.rs` routes each vector to an irqfd; tests count).

use std::io;

/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Vector control bit 0: masked.
const VECTOR_MASKED: u32 = 1;
/// Message control bits in the capability.
pub const CONTROL_ENABLE: u16 = 1 << 15;
pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;

/// An MSI message: where to write and what.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// The interrupt vectors of one device, as the platform delivers them.
pub trait MsiVectors: Send + Sync {
    /// Point `vector` at `msg` (or nowhere).
    fn route(&self, vector: u16, msg: Option<MsiMessage>) -> io::Result<()>;
    /// Deliver `vector` (through its current route).
    fn trigger(&self, vector: u16) -> io::Result<()>;
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    control: u32,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            addr_lo: 0,
            addr_hi: 0,
            data: 0,
            control: VECTOR_MASKED,
        }
    }
}

impl Entry {
    fn message(&self) -> MsiMessage {
        MsiMessage {
            address: (u64::from(self.addr_hi) << 32) | u64::from(self.addr_lo),
            data: self.data,
        }
    }

    fn masked(&self) -> bool {
        self.control & VECTOR_MASKED != 0
    }
}

/// The MSI-X state of one function.
pub struct MsixTable {
    entries: Vec<Entry>,
    pending: Vec<u64>,
    enabled: bool,
    function_masked: bool,
}

impl MsixTable {
    pub fn new(vectors: u16) -> Self {
        MsixTable {
            entries: vec![Entry::default(); usize::from(vectors)],
            pending: vec![0; usize::from(vectors).div_ceil(64)],
            enabled: false,
            function_masked: false,
        }
    }

    pub fn num_vectors(&self) -> u16 {
        self.entries.len() as u16
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn deliverable(&self, v: usize) -> bool {
        self.enabled && !self.function_masked && !self.entries[v].masked()
    }

    fn route_one(&self, v: usize, out: &dyn MsiVectors) {
        if let Err(e) = out.route(v as u16, Some(self.entries[v].message())) {
            log::warn!("MSI-X: routing vector {v} failed: {e}");
        }
    }

    /// Deliver anything pending that is now deliverable.
    fn flush_pending(&mut self, out: &dyn MsiVectors) {
        for v in 0..self.entries.len() {
            if self.pending[v / 64] & (1 << (v % 64)) != 0 && self.deliverable(v) {
                self.pending[v / 64] &= !(1 << (v % 64));
                self.fire_now(v, out);
            }
        }
    }

    fn fire_now(&self, v: usize, out: &dyn MsiVectors) {
        if let Err(e) = out.trigger(v as u16) {
            log::warn!("MSI-X: triggering vector {v} failed: {e}");
        }
    }

    /// The guest wrote the capability's message control.
    pub fn set_control(&mut self, control: u16, out: &dyn MsiVectors) {
        let was_enabled = self.enabled;
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        if self.enabled && !was_enabled {
            for v in 0..self.entries.len() {
                if !self.entries[v].masked() {
                    self.route_one(v, out);
                }
            }
        }
        self.flush_pending(out);
    }

    /// Signal `vector`: delivered now, or left pending while masked. A
    /// vector past the table (or MSI-X disabled) is dropped.
    pub fn signal(&mut self, vector: u16, out: &dyn MsiVectors) {
        let v = usize::from(vector);
        if v >= self.entries.len() || !self.enabled {
            return;
        }
        if self.deliverable(v) {
            self.fire_now(v, out);
        } else {
            self.pending[v / 64] |= 1 << (v % 64);
        }
    }

    /// A guest read of the table.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let (v, field) = ((offset / ENTRY_SIZE) as usize, offset % ENTRY_SIZE);
        let Some(e) = self.entries.get(v) else {
            return;
        };
        let words = [e.addr_lo, e.addr_hi, e.data, e.control];
        match (data.len(), field) {
            (4, 0 | 4 | 8 | 12) => data.copy_from_slice(&words[field as usize / 4].to_le_bytes()),
            (8, 0 | 8) => {
                let i = field as usize / 4;
                data[..4].copy_from_slice(&words[i].to_le_bytes());
                data[4..].copy_from_slice(&words[i + 1].to_le_bytes());
            }
            _ => {}
        }
    }

    /// A guest write to the table.
    pub fn write_table(&mut self, offset: u64, data: &[u8], out: &dyn MsiVectors) {
        let (v, field) = ((offset / ENTRY_SIZE) as usize, offset % ENTRY_SIZE);
        if v >= self.entries.len() {
            return;
        }
        let mut words: Vec<(u64, u32)> = Vec::with_capacity(2);
        match (data.len(), field) {
            (4, 0 | 4 | 8 | 12) => {
                words.push((field, u32::from_le_bytes(data.try_into().expect("4 bytes"))))
            }
            (8, 0 | 8) => {
                words.push((field, u32::from_le_bytes(data[..4].try_into().expect("4"))));
                words.push((
                    field + 4,
                    u32::from_le_bytes(data[4..].try_into().expect("4")),
                ));
            }
            _ => return,
        }
        let was_masked = self.entries[v].masked();
        let old = self.entries[v].message();
        for (f, w) in words {
            let e = &mut self.entries[v];
            match f {
                0 => e.addr_lo = w,
                4 => e.addr_hi = w,
                8 => e.data = w,
                _ => e.control = w & VECTOR_MASKED,
            }
        }
        let e = self.entries[v];
        if self.enabled && !e.masked() && (was_masked || e.message() != old) {
            self.route_one(v, out);
        }
        if was_masked && !e.masked() {
            self.flush_pending(out);
        }
    }

    /// A guest read of the pending-bit array.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let bytes: Vec<u8> = self.pending.iter().flat_map(|w| w.to_le_bytes()).collect();
        super::read_config_bytes(&bytes, offset, data);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Moved to the test driver; the name stays for tests that use it here.
    pub use crate::devices::virtio::testing::RecordingVectors;

    #[test]
    fn masking_defers_to_pba_and_unmask_delivers() {
        let out = RecordingVectors::default();
        let mut t = MsixTable::new(3);
        // Disabled: dropped.
        t.signal(0, &out);
        t.set_control(CONTROL_ENABLE, &out);
        t.write_table(16, &0xfee0_0000u32.to_le_bytes(), &out);
        t.write_table(24, &0x41u32.to_le_bytes(), &out);
        // Entry 1 still masked: pending.
        t.signal(1, &out);
        let mut pba = [0u8; 8];
        t.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0b10);
        assert!(out.fired.lock().unwrap().is_empty());
        // Unmask: routed and delivered.
        t.write_table(28, &0u32.to_le_bytes(), &out);
        assert_eq!(*out.fired.lock().unwrap(), vec![1]);
        assert_eq!(
            out.routes.lock().unwrap().last().unwrap(),
            &(
                1,
                Some(MsiMessage {
                    address: 0xfee0_0000,
                    data: 0x41
                })
            )
        );
        t.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0);
        // Function mask holds it back too.
        t.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK, &out);
        t.signal(1, &out);
        assert_eq!(out.fired.lock().unwrap().len(), 1);
        t.set_control(CONTROL_ENABLE, &out);
        assert_eq!(out.fired.lock().unwrap().len(), 2);
        // Reads back; odd accesses and out-of-table vectors are ignored.
        let mut w = [0u8; 4];
        t.read_table(24, &mut w);
        assert_eq!(u32::from_le_bytes(w), 0x41);
        t.write_table(3 * 16, &[1, 2, 3, 4], &out);
        t.write_table(17, &[1, 2, 3, 4], &out);
        t.write_table(16, &[1, 2], &out);
        t.signal(200, &out);
        t.read_table(16, &mut w);
        assert_eq!(u32::from_le_bytes(w), 0xfee0_0000);
        assert_eq!(out.fired.lock().unwrap().len(), 2);
    }
}
