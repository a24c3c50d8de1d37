//! Guest RAM: anonymous or memfd-backed mappings, optionally on huge pages,
//! laid out by `arch::x86_64::layout` and registered with KVM.

use std::fs::File;
use std::os::fd::FromRawFd;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap};

use crate::arch::x86_64::layout;

pub use crate::devices::GuestMemoryMmap;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory size {0} MiB is out of range (1 MiB to 1 TiB)")]
    Size(u64),
    #[error("memfd_create failed")]
    Memfd(#[source] std::io::Error),
    #[error("sizing the memfd failed")]
    Truncate(#[source] std::io::Error),
    #[error("mapping {size} bytes of guest memory failed (hugepages: {hugepages})")]
    Map {
        size: usize,
        hugepages: bool,
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("assembling guest memory regions failed")]
    Regions(#[source] vm_memory::GuestRegionCollectionError),
    #[error("registering guest memory slot {slot} with KVM failed")]
    Register {
        slot: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// How guest RAM is backed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Backing {
    /// memfd (MAP_SHARED) rather than anonymous private memory.
    pub shared: bool,
    pub hugepages: bool,
    /// Leave the legacy VGA window (0xA0000-0xBFFFF) out of RAM: a
    /// display device emulates it.
    pub vga_hole: bool,
}

/// Map `size_mib` MiB of guest RAM at the addresses the layout gives.
pub fn create(size_mib: u64, backing: Backing) -> Result<GuestMemoryMmap, MemoryError> {
    let size = size_mib
        .checked_mul(1 << 20)
        .filter(|s| (1 << 20..=layout::MAX_MEMORY).contains(s))
        .ok_or(MemoryError::Size(size_mib))?;
    let memfd = if backing.shared {
        Some(create_memfd(size, backing.hugepages)?)
    } else {
        None
    };
    let mut regions = Vec::new();
    let mut file_offset = 0u64;
    for (addr, len) in layout::ram_regions(size, backing.vga_hole) {
        let mut builder =
            MmapRegionBuilder::new(len).with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE);
        let mut flags = libc::MAP_NORESERVE;
        match &memfd {
            Some(file) => {
                let file = file.try_clone().map_err(MemoryError::Memfd)?;
                builder = builder.with_file_offset(FileOffset::new(file, file_offset));
                flags |= libc::MAP_SHARED;
            }
            None => {
                flags |= libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
                if backing.hugepages {
                    flags |= libc::MAP_HUGETLB;
                }
            }
        }
        file_offset += len as u64;
        let mapping = builder
            .with_mmap_flags(flags)
            .with_hugetlbfs(backing.hugepages)
            .build()
            .map_err(|source| MemoryError::Map {
                size: len,
                hugepages: backing.hugepages,
                source,
            })?;
        // Cannot fail: the layout's regions never wrap the address space.
        regions.push(GuestRegionMmap::new(mapping, addr).expect("region fits the address space"));
    }
    vm_memory::GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Regions)
}

fn create_memfd(size: u64, hugepages: bool) -> Result<File, MemoryError> {
    let mut flags = libc::MFD_CLOEXEC;
    if hugepages {
        flags |= libc::MFD_HUGETLB;
    }
    // SAFETY: the name is a valid NUL-terminated string; the result is
    // checked before use.
    let fd = unsafe { libc::memfd_create(c"kiln-guest-ram".as_ptr(), flags) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(MemoryError::Truncate)?;
    Ok(file)
}

/// Register every region of `mem` as a KVM memory slot. Done before any vCPU
/// exists: on this host the same call after vCPU creation costs milliseconds
/// (testbed.md).
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .expect("a mapped region has a host address");
        let desc = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the host range [host, host + len) is a live mapping owned
        // by `mem`, which the VM keeps for as long as the VmFd lives.
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(|source| MemoryError::Register { slot, source })?;
    }
    Ok(())
}

/// Host address ranges of guest RAM, to subtract guest RAM from the VMM's
/// own memory use when reporting it.
pub fn host_ranges(mem: &GuestMemoryMmap) -> Vec<(u64, u64)> {
    mem.iter()
        .filter_map(|r| {
            let host = r.get_host_address(vm_memory::MemoryRegionAddress(0)).ok()?;
            Some((host as u64, r.len()))
        })
        .collect()
}

pub fn guest_end(mem: &GuestMemoryMmap) -> GuestAddress {
    mem.last_addr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn anonymous_and_shared_memory_follow_the_layout() {
        for shared in [false, true] {
            let mem = create(
                3 * 1024 + 64,
                Backing {
                    shared,
                    ..Default::default()
                },
            )
            .unwrap();
            let regions: Vec<_> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
            assert_eq!(
                regions,
                vec![(0, layout::MMIO32_START), (layout::FOUR_GIB, 64 << 20)]
            );
            mem.write_obj(0xdead_beefu32, GuestAddress(layout::FOUR_GIB + 8))
                .unwrap();
            assert_eq!(
                mem.read_obj::<u32>(GuestAddress(layout::FOUR_GIB + 8))
                    .unwrap(),
                0xdead_beef
            );
            assert!(mem
                .read_obj::<u32>(GuestAddress(layout::MMIO32_START))
                .is_err());
        }
    }

    #[test]
    fn a_display_leaves_the_vga_window_out_of_ram() {
        for shared in [false, true] {
            let backing = Backing {
                shared,
                vga_hole: true,
                ..Default::default()
            };
            let mem = create(64, backing).unwrap();
            let regions: Vec<_> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
            assert_eq!(
                regions,
                vec![
                    (0u64, layout::VGA_WINDOW_START),
                    (layout::VGA_WINDOW_END, (64 << 20) - layout::VGA_WINDOW_END)
                ]
            );
            for at in [
                layout::VGA_WINDOW_START,
                0xb_8000,
                layout::VGA_WINDOW_END - 1,
            ] {
                assert!(mem.read_obj::<u8>(GuestAddress(at)).is_err());
            }
            mem.write_obj(7u8, GuestAddress(layout::VGA_WINDOW_END))
                .unwrap();
            mem.write_obj(9u8, GuestAddress(layout::VGA_WINDOW_START - 1))
                .unwrap();
        }
    }

    #[test]
    fn refuses_absurd_sizes() {
        assert!(matches!(
            create(0, Backing::default()),
            Err(MemoryError::Size(0))
        ));
        assert!(matches!(
            create(u64::MAX / 2, Backing::default()),
            Err(MemoryError::Size(_))
        ));
    }
}
