//! A type-0 PCI configuration header with BARs and a capability list, for
//! devices to embed.
//!
//! The header registers enforce their writable bits (command, cache line,
//! latency timer, interrupt line; everything else read-only). BARs follow
//! the sizing protocol: the address bits below the BAR's size are hardwired
//! to zero, so writing all ones and reading back gives the size mask, for
//! I/O, 32-bit and 64-bit memory BARs alike.
//!
//! A BAR "moves" when the guest programs an address different from the one
//! last reported (initially the one the VMM gave it); the write that
//! completes the address returns a [`BarMove`]. A write of all ones is
//! sizing, never a move. For a 64-bit BAR the move is reported on the write
//! of its upper half, which both Linux and SeaBIOS write after the lower
//! half. Decoding enables in the command register are not tracked: the VMM
//! keeps a BAR mapped wherever it was last programmed.

use super::{BarMove, PciBar, PciBarKind, PciError};

/// Registers (dwords) of the conventional configuration space.
pub const NUM_CONFIG_REGS: usize = 64;
/// Registers of the whole (PCIe extended) configuration space.
pub const NUM_EXT_CONFIG_REGS: usize = 1024;
pub const NUM_BARS: usize = 6;

const COMMAND_REG: usize = 1;
const BIST_HEADER_REG: usize = 3;
const BAR0_REG: usize = 4;
const SUBSYSTEM_REG: usize = 11;
const CAP_PTR_REG: usize = 13;
const INTERRUPT_REG: usize = 15;
const FIRST_CAP_OFFSET: usize = 0x40;
const CONFIG_SPACE_BYTES: usize = NUM_CONFIG_REGS * 4;

/// Command register bits a guest may set: I/O, memory, bus master, parity
/// error response, SERR#, INTx disable.
const COMMAND_WRITABLE: u32 = 0x0547;
const STATUS_CAP_LIST: u32 = 1 << (16 + 4);

/// The identity a device shows in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciHeader {
    pub vendor_id: u16,
    pub device_id: u16,
    /// Class, subclass and programming interface (e.g. 0x060000).
    pub class_code: u32,
    pub revision_id: u8,
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BarSlot {
    Unused,
    Bar {
        kind: PciBarKind,
        prefetchable: bool,
        size: u64,
        /// What the guest programmed (bits below the size are zero).
        addr: u64,
        /// Where the VMM was last told the BAR is.
        reported: u64,
    },
    /// The upper half of the 64-bit BAR before it.
    Upper,
}

/// A type-0 configuration header plus capability list.
#[derive(Clone, Debug)]
pub struct PciConfiguration {
    regs: [u32; NUM_CONFIG_REGS],
    writable: [u32; NUM_CONFIG_REGS],
    bars: [BarSlot; NUM_BARS],
    last_cap: Option<usize>,
    next_cap: usize,
}

fn byte_lane_mask(offset: usize, len: usize) -> u32 {
    let bits = if len >= 4 {
        u32::MAX
    } else {
        (1u32 << (len * 8)) - 1
    };
    bits << (offset * 8)
}

/// Merge a sub-dword write into `old`; None if the access is malformed.
fn merge(old: u32, offset: u64, data: &[u8]) -> Option<(u32, u32)> {
    let len = data.len();
    let offset = usize::try_from(offset).ok()?;
    if !matches!(len, 1 | 2 | 4) || offset.checked_add(len)? > 4 {
        return None;
    }
    let mut value = [0u8; 4];
    value[offset..offset + len].copy_from_slice(data);
    let mask = byte_lane_mask(offset, len);
    Some(((old & !mask) | (u32::from_le_bytes(value) & mask), mask))
}

impl PciConfiguration {
    pub fn new(header: &PciHeader) -> Self {
        let mut regs = [0u32; NUM_CONFIG_REGS];
        let mut writable = [0u32; NUM_CONFIG_REGS];
        regs[0] = (u32::from(header.device_id) << 16) | u32::from(header.vendor_id);
        regs[2] = ((header.class_code & 0x00ff_ffff) << 8) | u32::from(header.revision_id);
        regs[SUBSYSTEM_REG] =
            (u32::from(header.subsystem_id) << 16) | u32::from(header.subsystem_vendor_id);
        writable[COMMAND_REG] = COMMAND_WRITABLE;
        // Cache line size and latency timer.
        writable[BIST_HEADER_REG] = 0x0000_ffff;
        // Interrupt line (the pin is set by the device).
        writable[INTERRUPT_REG] = 0x0000_00ff;
        PciConfiguration {
            regs,
            writable,
            bars: [BarSlot::Unused; NUM_BARS],
            last_cap: None,
            next_cap: FIRST_CAP_OFFSET,
        }
    }

    /// Declare a BAR at `bar.index` (a 64-bit one also takes `index + 1`),
    /// initially at `bar.addr` (0: not assigned).
    pub fn add_bar(&mut self, bar: &PciBar) -> Result<(), PciError> {
        let i = bar.index;
        let needs = if bar.kind == PciBarKind::Memory64 {
            2
        } else {
            1
        };
        if i + needs > NUM_BARS {
            return Err(PciError::BarIndex(i));
        }
        if self.bars[i..i + needs]
            .iter()
            .any(|b| *b != BarSlot::Unused)
        {
            return Err(PciError::BarInUse(i));
        }
        let (min, max) = match bar.kind {
            PciBarKind::Io => (4, 1 << 16),
            PciBarKind::Memory32 => (16, 1 << 31),
            PciBarKind::Memory64 => (16, 1 << 63),
        };
        if !bar.size.is_power_of_two() || bar.size < min || bar.size > max {
            return Err(PciError::BarSize(bar.size));
        }
        let limit = if bar.kind == PciBarKind::Memory64 {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        if bar.addr & (bar.size - 1) != 0 || bar.addr > limit - (bar.size - 1) {
            return Err(PciError::BarAddress(bar.addr));
        }
        self.bars[i] = BarSlot::Bar {
            kind: bar.kind,
            prefetchable: bar.prefetchable && bar.kind != PciBarKind::Io,
            size: bar.size,
            addr: bar.addr,
            reported: bar.addr,
        };
        if needs == 2 {
            self.bars[i + 1] = BarSlot::Upper;
        }
        Ok(())
    }

    /// The BARs with their current addresses.
    pub fn bars(&self) -> Vec<PciBar> {
        (0..NUM_BARS).filter_map(|i| self.bar(i)).collect()
    }

    pub fn bar(&self, index: usize) -> Option<PciBar> {
        match self.bars.get(index)? {
            BarSlot::Bar {
                kind,
                prefetchable,
                size,
                addr,
                ..
            } => Some(PciBar {
                index,
                kind: *kind,
                prefetchable: *prefetchable,
                addr: *addr,
                size: *size,
            }),
            _ => None,
        }
    }

    /// Append a capability (`id`, then `body`; the next pointer is filled
    /// in). Returns its offset in configuration space. Its bytes are
    /// read-only to the guest unless [`Self::set_writable`] says otherwise.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<usize, PciError> {
        let offset = self.next_cap;
        let len = body.len() + 2;
        let end = offset + len;
        if end > CONFIG_SPACE_BYTES {
            return Err(PciError::CapabilitySpace(len));
        }
        self.set_byte(offset, id);
        self.set_byte(offset + 1, 0);
        for (k, &b) in body.iter().enumerate() {
            self.set_byte(offset + 2 + k, b);
        }
        match self.last_cap {
            Some(prev) => self.set_byte(prev + 1, offset as u8),
            None => {
                self.regs[CAP_PTR_REG] = offset as u32;
                self.regs[COMMAND_REG] |= STATUS_CAP_LIST;
            }
        }
        self.last_cap = Some(offset);
        self.next_cap = end.next_multiple_of(4);
        Ok(offset)
    }

    /// Let the guest write `mask` bits of register `reg_idx` (for
    /// capability fields such as MSI-X control).
    pub fn set_writable(&mut self, reg_idx: usize, mask: u32) {
        if let Some(w) = self.writable.get_mut(reg_idx) {
            *w = mask;
        }
    }

    /// Set the interrupt pin (1 = INTA#) and line the guest sees.
    pub fn set_interrupt(&mut self, pin: u8, line: u8) {
        let r = &mut self.regs[INTERRUPT_REG];
        *r = (*r & !0xffff) | (u32::from(pin) << 8) | u32::from(line);
    }

    /// The raw register, for the device itself.
    pub fn reg(&self, reg_idx: usize) -> u32 {
        self.regs.get(reg_idx).copied().unwrap_or(0)
    }

    /// Set a raw register, bypassing writability (for the device itself).
    pub fn set_reg(&mut self, reg_idx: usize, value: u32) {
        if let Some(r) = self.regs.get_mut(reg_idx) {
            *r = value;
        }
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.regs[COMMAND_REG] as u16
    }

    fn set_byte(&mut self, offset: usize, value: u8) {
        let shift = (offset % 4) * 8;
        let r = &mut self.regs[offset / 4];
        *r = (*r & !(0xff << shift)) | (u32::from(value) << shift);
    }

    /// A configuration read of register `reg_idx` as the guest sees it.
    /// The extended space (0x100..0x1000) reads zero: no extended
    /// capabilities.
    pub fn read_reg(&self, reg_idx: usize) -> u32 {
        if reg_idx >= NUM_CONFIG_REGS {
            return if reg_idx < NUM_EXT_CONFIG_REGS {
                0
            } else {
                u32::MAX
            };
        }
        if (BAR0_REG..BAR0_REG + NUM_BARS).contains(&reg_idx) {
            return self.read_bar(reg_idx - BAR0_REG);
        }
        self.regs[reg_idx]
    }

    fn read_bar(&self, i: usize) -> u32 {
        match self.bars[i] {
            BarSlot::Unused => 0,
            BarSlot::Upper => match self.bars[i - 1] {
                BarSlot::Bar { addr, .. } => (addr >> 32) as u32,
                _ => 0,
            },
            BarSlot::Bar {
                kind,
                prefetchable,
                addr,
                ..
            } => {
                let flags = match kind {
                    PciBarKind::Io => 0x1,
                    PciBarKind::Memory32 => 0x0,
                    PciBarKind::Memory64 => 0x4,
                } | if prefetchable { 0x8 } else { 0 };
                addr as u32 | flags
            }
        }
    }

    /// A configuration write by the guest: `data` (1, 2 or 4 bytes) at byte
    /// `offset` of register `reg_idx`. Malformed accesses are ignored.
    /// Returns the BAR move this write completed, if any.
    pub fn write_reg(&mut self, reg_idx: usize, offset: u64, data: &[u8]) -> Option<BarMove> {
        if reg_idx >= NUM_CONFIG_REGS {
            return None;
        }
        if (BAR0_REG..BAR0_REG + NUM_BARS).contains(&reg_idx) {
            let i = reg_idx - BAR0_REG;
            let (value, _) = merge(self.read_bar(i), offset, data)?;
            return self.write_bar(i, value);
        }
        let (value, lanes) = merge(self.regs[reg_idx], offset, data)?;
        let mask = self.writable[reg_idx] & lanes;
        self.regs[reg_idx] = (self.regs[reg_idx] & !mask) | (value & mask);
        None
    }

    fn write_bar(&mut self, i: usize, value: u32) -> Option<BarMove> {
        let sizing = value == u32::MAX;
        let (index, upper) = match self.bars[i] {
            BarSlot::Unused => return None,
            BarSlot::Upper => (i - 1, true),
            BarSlot::Bar { .. } => (i, false),
        };
        let BarSlot::Bar {
            kind,
            size,
            addr,
            reported,
            ..
        } = &mut self.bars[index]
        else {
            return None;
        };
        let mask = !(*size - 1);
        if upper {
            *addr = ((u64::from(value) << 32) | (*addr & 0xffff_ffff)) & mask;
        } else {
            let flag_bits = if *kind == PciBarKind::Io { 0x3 } else { 0xf };
            let low = u64::from(value) & !flag_bits;
            *addr = ((*addr & !0xffff_ffff) | low) & mask;
        }
        // A 64-bit BAR is complete once its upper half is written.
        let completes = upper || *kind != PciBarKind::Memory64;
        if sizing || !completes || *addr == *reported {
            return None;
        }
        let mv = BarMove {
            index,
            kind: *kind,
            old_addr: *reported,
            new_addr: *addr,
            size: *size,
        };
        *reported = *addr;
        Some(mv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PciConfiguration {
        PciConfiguration::new(&PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1042,
            class_code: 0x010000,
            revision_id: 1,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x0002,
        })
    }

    fn write32(c: &mut PciConfiguration, reg: usize, v: u32) -> Option<BarMove> {
        c.write_reg(reg, 0, &v.to_le_bytes())
    }

    #[test]
    fn header_fields_and_writable_bits() {
        let mut c = config();
        assert_eq!(c.read_reg(0), 0x1042_1af4);
        assert_eq!(c.read_reg(2), 0x0100_0001);
        assert_eq!(c.read_reg(11), 0x0002_1af4);
        // Vendor/device are read-only.
        write32(&mut c, 0, 0);
        assert_eq!(c.read_reg(0), 0x1042_1af4);
        // Only the defined command bits stick.
        write32(&mut c, 1, 0xffff_ffff);
        assert_eq!(c.read_reg(1), COMMAND_WRITABLE);
        assert_eq!(c.command(), 0x0547);
        c.set_interrupt(1, 0);
        c.write_reg(15, 0, &[11]);
        c.write_reg(15, 1, &[4]);
        assert_eq!(c.read_reg(15) & 0xffff, 0x010b);
        // Malformed accesses are ignored.
        c.write_reg(1, 3, &[0, 0]);
        c.write_reg(1, 0, &[0, 0, 0]);
        c.write_reg(1, u64::MAX, &[0]);
        assert_eq!(c.command(), 0x0547);
        assert_eq!(c.read_reg(100), 0);
        assert_eq!(c.read_reg(5000), u32::MAX);
    }

    #[test]
    fn bar_checks() {
        let mut c = config();
        let bar = |index, kind, addr, size| PciBar {
            index,
            kind,
            prefetchable: false,
            addr,
            size,
        };
        assert!(c.add_bar(&bar(5, PciBarKind::Memory64, 0, 0x1000)).is_err());
        assert!(c.add_bar(&bar(6, PciBarKind::Io, 0, 0x10)).is_err());
        assert!(c.add_bar(&bar(0, PciBarKind::Memory32, 0, 0x1800)).is_err());
        assert!(c
            .add_bar(&bar(0, PciBarKind::Memory32, 0x800, 0x1000))
            .is_err());
        assert!(c
            .add_bar(&bar(0, PciBarKind::Memory32, 0xffff_f000, 0x2000))
            .is_err());
        c.add_bar(&bar(0, PciBarKind::Memory64, 0x1_0000_0000, 0x1000))
            .unwrap();
        assert!(c.add_bar(&bar(1, PciBarKind::Io, 0, 0x10)).is_err());
        assert_eq!(c.read_reg(4), 0x4);
        assert_eq!(c.read_reg(5), 0x1);
        assert_eq!(c.bars().len(), 1);
    }

    #[test]
    fn capability_chain() {
        let mut c = config();
        let a = c.add_capability(0x09, &[14, 1, 2, 3]).unwrap();
        let b = c.add_capability(0x11, &[0; 10]).unwrap();
        assert_eq!((a, b), (0x40, 0x48));
        assert_ne!(c.read_reg(1) & STATUS_CAP_LIST, 0);
        assert_eq!(c.read_reg(13) & 0xff, 0x40);
        let r = c.read_reg(0x40 / 4);
        assert_eq!(
            (r & 0xff, (r >> 8) & 0xff, (r >> 16) & 0xff),
            (0x09, 0x48, 14)
        );
        assert_eq!(c.read_reg(0x48 / 4) & 0xffff, 0x0011);
        // Read-only unless made writable.
        c.write_reg(0x48 / 4, 2, &[0xff, 0xff]);
        assert_eq!(c.read_reg(0x48 / 4) >> 16, 0);
        c.set_writable(0x48 / 4, 0xc000_0000);
        c.write_reg(0x48 / 4, 2, &[0xff, 0xff]);
        assert_eq!(c.read_reg(0x48 / 4) >> 16, 0xc000);
        assert!(c.add_capability(0x10, &[0; 200]).is_err());
    }
}
