//! The guest physical address map, and the e820 map derived from it.
//!
//! ```text
//! 0x0000_0000  real-mode IVT, BDA                        RAM
//! 0x0000_0500  GDT, IDT, PVH start_info, boot_params, page tables, stack
//! 0x0002_0000  kernel command line (up to CMDLINE_MAX_SIZE)
//! 0x0009_fc00  EBDA                                      reserved
//! 0x000a_0000  VGA hole, option ROMs                      (not RAM)
//! 0x000e_0000  ACPI tables (RSDP first), BIOS area        reserved
//! 0x000f_0000  SMBIOS entry point and tables (direct boot)
//! 0x0010_0000  RAM up to min(size, MMIO32_START)
//! 0xc000_0000  PCI 32-bit MMIO window (512 MiB)
//! 0xe000_0000  PCI ECAM (MMCONFIG), bus 0 only (1 MiB)    reserved
//! 0xfec0_0000  IOAPIC;  0xfee0_0000 LAPIC
//! 0xffc0_0000  firmware (up to 4 MiB, ending at 4 GiB)
//! 0x1_0000_0000  the rest of RAM for guests larger than 3 GiB
//! then         PCI 64-bit MMIO window, 1 GiB aligned
//! ```

use vm_memory::GuestAddress;

pub const GDT_START: u64 = 0x500;
pub const IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`, then its memory map right after.
pub const PVH_INFO_START: u64 = 0x6000;
pub const PVH_MEMMAP_START: u64 = 0x6040;
/// Linux `boot_params` (the "zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack of the boot vCPU (grows down).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables: PML4, PDPT, and one PD mapping the first GiB.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
pub const CMDLINE_START: u64 = 0x20000;
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
pub const EBDA_START: u64 = 0x9fc00;
/// Where the ACPI tables go; the RSDP is at its start, inside the range a
/// guest scans for it (0xe0000..0x100000).
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_END: u64 = 0x10_0000;
/// Direct boot's SMBIOS entry point (the ACPI tables stay below it), in
/// the 0xF0000-0xFFFFF range Linux scans for it.
pub const SMBIOS_START: u64 = 0xf_0000;
/// Kernels are loaded above 1 MiB.
pub const HIMEM_START: u64 = 0x10_0000;

pub const MMIO32_START: u64 = 0xc000_0000;
pub const MMIO32_SIZE: u64 = 0x2000_0000;
pub const PCI_ECAM_START: u64 = 0xe000_0000;
/// One bus (bus 0): 32 devices x 8 functions x 4 KiB.
pub const PCI_ECAM_SIZE: u64 = 0x10_0000;
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const LAPIC_START: u64 = 0xfee0_0000;
pub const FIRMWARE_MAX_SIZE: u64 = 0x40_0000;
pub const FOUR_GIB: u64 = 0x1_0000_0000;
pub const MMIO64_ALIGN: u64 = 0x4000_0000;
pub const MMIO64_SIZE: u64 = 0x10_0000_0000;

/// Legacy I/O ports.
pub const COM1_PORT: u16 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
pub const DEBUG_PORT: u16 = 0x80;
pub const I8042_PORT: u16 = 0x60;
pub const I8042_IRQ: u32 = 1;
/// The i8042's AUX port (PS/2 mouse).
pub const I8042_AUX_IRQ: u32 = 12;
pub const RTC_PORT: u16 = 0x70;
pub const RTC_IRQ: u32 = 8;
pub const PCI_CONFIG_PORT: u16 = 0xcf8;
/// Reset control register (write 0x6 or 0xe to reset).
pub const RESET_CONTROL_PORT: u16 = 0xcf9;
/// ACPI fixed-hardware PM registers (the same ports as QEMU's PIIX4):
/// PM1a event block (status, enable) at +0, control at +4, PM timer at +8.
pub const PM_IO_BASE: u16 = 0x600;
pub const PM1A_EVT_PORT: u16 = PM_IO_BASE;
pub const PM1A_CNT_PORT: u16 = PM_IO_BASE + 4;
pub const PM_TMR_PORT: u16 = PM_IO_BASE + 8;
/// SCI interrupt (ACPI), as on a PC.
pub const SCI_IRQ: u32 = 9;

/// Largest guest RAM we lay out (1 TiB).
pub const MAX_MEMORY: u64 = 1 << 40;

/// The kind of an e820 entry (values from the e820 spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Kind {
    Ram = 1,
    Reserved = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Kind,
}

/// The legacy VGA memory window: left out of RAM when a display emulates it.
pub const VGA_WINDOW_START: u64 = 0xa_0000;
pub const VGA_WINDOW_END: u64 = 0xc_0000;

/// The guest RAM regions for `size` bytes of RAM: below the 32-bit MMIO hole
/// (around the VGA window if `vga_hole`), and the rest above 4 GiB.
pub fn ram_regions(size: u64, vga_hole: bool) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO32_START);
    let mut regions = if vga_hole && low > VGA_WINDOW_END {
        vec![
            (GuestAddress(0), VGA_WINDOW_START as usize),
            (
                GuestAddress(VGA_WINDOW_END),
                (low - VGA_WINDOW_END) as usize,
            ),
        ]
    } else {
        vec![(GuestAddress(0), low as usize)]
    };
    if size > low {
        regions.push((GuestAddress(FOUR_GIB), (size - low) as usize));
    }
    regions
}

/// First address after guest RAM.
pub fn ram_end(size: u64) -> u64 {
    if size > MMIO32_START {
        FOUR_GIB + (size - MMIO32_START)
    } else {
        size
    }
}

/// The 64-bit PCI MMIO window: above RAM and 4 GiB, 1 GiB aligned.
pub fn mmio64_window(size: u64) -> (u64, u64) {
    let start = ram_end(size).max(FOUR_GIB).next_multiple_of(MMIO64_ALIGN);
    (start, MMIO64_SIZE)
}

/// The e820 map the guest sees for `size` bytes of RAM.
pub fn e820_map(size: u64) -> Vec<E820Entry> {
    let low_end = size.min(MMIO32_START);
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820Kind::Ram,
        },
        E820Entry {
            addr: EBDA_START,
            size: 0xa0000 - EBDA_START,
            kind: E820Kind::Reserved,
        },
        E820Entry {
            addr: ACPI_START,
            size: ACPI_END - ACPI_START,
            kind: E820Kind::Reserved,
        },
    ];
    if low_end > HIMEM_START {
        map.push(E820Entry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820Kind::Ram,
        });
    }
    map.push(E820Entry {
        addr: PCI_ECAM_START,
        size: PCI_ECAM_SIZE,
        kind: E820Kind::Reserved,
    });
    if size > low_end {
        map.push(E820Entry {
            addr: FOUR_GIB,
            size: size - low_end,
            kind: E820Kind::Ram,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn ram_total(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820Kind::Ram)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn small_guest_has_legacy_hole_and_no_high_memory() {
        let map = e820_map(512 * MIB);
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: 0x9fc00,
                kind: E820Kind::Ram
            }
        );
        assert!(map.iter().all(|e| e.addr + e.size <= FOUR_GIB));
        // RAM seen = all but the EBDA and the 0xa0000..1 MiB hole.
        assert_eq!(ram_total(&map), 512 * MIB - (HIMEM_START - EBDA_START));
        assert!(!map
            .iter()
            .any(|e| e.kind == E820Kind::Ram && e.addr < HIMEM_START && e.addr + e.size > 0xa0000));
        assert_eq!(
            ram_regions(512 * MIB, false),
            vec![(GuestAddress(0), (512 * MIB) as usize)]
        );
    }

    #[test]
    fn large_guest_splits_around_the_mmio_hole() {
        let size = 5 * GIB;
        let map = e820_map(size);
        let high = map.iter().find(|e| e.addr == FOUR_GIB).unwrap();
        assert_eq!(high.size, 2 * GIB);
        assert_eq!(high.kind, E820Kind::Ram);
        // Nothing but the ECAM area between 3 GiB and 4 GiB.
        for e in &map {
            if e.addr >= MMIO32_START && e.addr < FOUR_GIB {
                assert_eq!((e.addr, e.kind), (PCI_ECAM_START, E820Kind::Reserved));
            }
        }
        assert_eq!(
            ram_regions(size, false),
            vec![
                (GuestAddress(0), (3 * GIB) as usize),
                (GuestAddress(FOUR_GIB), (2 * GIB) as usize)
            ]
        );
        assert_eq!(ram_end(size), 6 * GIB);
        assert_eq!(mmio64_window(size).0, 6 * GIB);
        assert_eq!(mmio64_window(512 * MIB).0, FOUR_GIB);
    }

    #[test]
    fn e820_entries_are_sorted_and_disjoint() {
        for size in [64 * MIB, 3 * GIB, 3 * GIB + MIB, 64 * GIB] {
            let map = e820_map(size);
            for w in map.windows(2) {
                assert!(w[0].addr + w[0].size <= w[1].addr, "{size}: {w:?}");
            }
        }
    }
}
