//! The device manager's one address allocator: where the VMM places the
//! BARs it assigns (memory BARs in the 32-bit PCI window, legacy I/O BARs
//! in the port window), and which ranges a BAR that firmware or the guest
//! moves may occupy. Fixed platform ranges (COM1, the ECAM, the flash) are
//! placed by address on the buses, which refuse overlaps.

use crate::arch::x86_64::layout;

/// The ports where legacy I/O BARs may be: above the legacy PC devices
/// (everything the VMM puts on the port bus is below 0x1000).
pub const IO_WINDOW: (u64, u64) = (0x1000, 0x1_0000);
/// Where the VMM places the first I/O BAR.
pub const IO_FIRST: u64 = 0xc000;

/// Where a memory BAR may be: the 32-bit PCI window the ACPI tables
/// announce (where the VMM places BARs), and the rest of the hole below
/// the IOAPIC past the ECAM, where SeaBIOS allocates (top down from
/// 0xfec0_0000).
pub fn bar_ranges() -> [(u64, u64); 2] {
    [
        (
            layout::MMIO32_START,
            layout::MMIO32_START + layout::MMIO32_SIZE,
        ),
        (
            layout::PCI_ECAM_START + layout::PCI_ECAM_SIZE,
            layout::IOAPIC_START,
        ),
    ]
}

/// A memory BAR of `len` bytes at `addr` lies in one of [`bar_ranges`].
pub fn in_window(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    bar_ranges()
        .iter()
        .any(|&(start, stop)| addr >= start && end <= stop)
}

/// Where a memory BAR the guest moved is to be mapped: its new address if
/// that lies in the PCI hole ([`in_window`]), else 0 (unmapped), warning
/// about a nonzero address outside it. `what` names the device in the
/// warning.
pub fn moved_bar_address(what: &str, mv: &crate::devices::pci::BarMove) -> u64 {
    if in_window(mv.new_addr, mv.size) {
        return mv.new_addr;
    }
    if mv.new_addr != 0 {
        log::warn!(
            "{what} BAR {} moved to {:#x}, outside the 32-bit PCI hole; unmapped",
            mv.index,
            mv.new_addr
        );
    }
    0
}

/// An I/O BAR of `len` ports at `addr` lies in [`IO_WINDOW`].
pub fn in_io_window(addr: u64, len: u64) -> bool {
    addr.checked_add(len)
        .is_some_and(|end| addr >= IO_WINDOW.0 && end <= IO_WINDOW.1)
}

/// Hands out naturally aligned, non-overlapping ranges, bottom up.
#[derive(Debug)]
struct Range {
    next: u64,
    end: u64,
}

impl Range {
    fn take(&mut self, len: u64) -> Option<u64> {
        let align = len.checked_next_power_of_two()?.max(1);
        let addr = self.next.checked_next_multiple_of(align)?;
        let end = addr.checked_add(len)?;
        if end > self.end {
            return None;
        }
        self.next = end;
        Some(addr)
    }
}

/// The allocator of one VM.
#[derive(Debug)]
pub struct Allocator {
    mmio: Range,
    io: Range,
}

impl Default for Allocator {
    fn default() -> Self {
        Allocator {
            mmio: Range {
                next: layout::MMIO32_START,
                end: layout::MMIO32_START + layout::MMIO32_SIZE,
            },
            io: Range {
                next: IO_FIRST,
                end: IO_WINDOW.1,
            },
        }
    }
}

impl Allocator {
    /// A memory BAR of `len` bytes in the 32-bit PCI window.
    pub fn mmio_bar(&mut self, len: u64) -> Option<u64> {
        self.mmio.take(len)
    }

    /// A legacy I/O BAR of `len` ports in the port window.
    pub fn io_bar(&mut self, len: u64) -> Option<u64> {
        self.io.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_aligned_and_stay_in_their_windows() {
        let mut a = Allocator::default();
        assert_eq!(a.mmio_bar(0x8000), Some(layout::MMIO32_START));
        assert_eq!(a.mmio_bar(0x8000), Some(layout::MMIO32_START + 0x8000));
        assert_eq!(a.mmio_bar(0x1_0000), Some(layout::MMIO32_START + 0x1_0000));
        assert_eq!(a.io_bar(0x40), Some(IO_FIRST));
        assert_eq!(a.io_bar(0x40), Some(IO_FIRST + 0x40));
        assert_eq!(a.mmio_bar(layout::MMIO32_SIZE), None, "the window is full");
        let mut n = 2;
        while a.io_bar(0x40).is_some() {
            n += 1;
        }
        assert_eq!(n, ((IO_WINDOW.1 - IO_FIRST) / 0x40) as usize);
        assert!(in_io_window(0x1000, 0x40) && !in_io_window(0xffc0, 0x41));
    }
}
