//! Firmware boot: map a firmware image (SeaBIOS `bios.bin`, OVMF
//! `OVMF_CODE.fd`) so that it ends at 4 GiB, where the vCPU's first
//! instruction (the reset vector, 0xFFFFFFF0, in real mode: KVM's vCPU
//! reset state, [`EntryMode::Reset`]) finds it.
//!
//! ```text
//! 4 GiB - code             code: a read-only KVM slot (KVM_MEM_READONLY;
//!                          guest writes exit as MMIO and are dropped)
//! 4 GiB - code - vars      OVMF variable store: the VM's own copy of
//!                          OVMF_VARS.fd, mapped shared, behind a CFI
//!                          flash device (see below)
//! 0xE0000..0x100000        the code's last 128 KiB copied into RAM, as a
//!                          PC aliases its BIOS there (SeaBIOS jumps to
//!                          F000:E05B right after the reset vector)
//! ```
//!
//! The variable store is a CFI flash as OVMF expects from QEMU's pflash
//! (the device manager makes it from the [`FlashStore`] this module maps:
//! `device_manager/firmware.rs`): in read-array mode its file mapping is a
//! read-only KVM slot (reads cost no exit; writes exit as MMIO and are
//! flash commands to the device on the MMIO bus); in the other modes
//! (status, program, erase, CFI) the slot is removed so that reads exit to
//! the device too, and put back when the guest returns to read-array mode.
//! OVMF then detects a writable flash and keeps its variables in the file,
//! so they survive reboots and power-offs. Without KVM's read-only slots
//! (never seen on a current kernel) the store falls back to plain shared
//! memory, which OVMF treats as RAM.
//!
//! [`EntryMode::Reset`]: super::regs::EntryMode::Reset

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::{Cap, VmFd};
use log::{info, warn};
use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, VolatileMemory};

use super::layout;
use crate::memory::GuestMemoryMmap;

/// Size of the legacy BIOS window below 1 MiB that mirrors the image's end.
pub const LEGACY_BIOS_SIZE: u64 = 0x2_0000;
/// Where that window ends.
pub const LEGACY_BIOS_END: u64 = 0x10_0000;
const PAGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("cannot open firmware file {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read firmware file {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("firmware file {} is {size} bytes: it must be a non-zero multiple of 4 KiB", .path.display())]
    Size { path: PathBuf, size: u64 },
    #[error("firmware ({size:#x} bytes with its variable store) is larger than the {max:#x} bytes below 4 GiB reserved for it", max = layout::FIRMWARE_MAX_SIZE)]
    TooLarge { size: u64 },
    #[error("mapping {size:#x} bytes for the firmware failed")]
    Map {
        size: u64,
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("copying the firmware into its mapping failed")]
    Copy(#[source] vm_memory::VolatileMemoryError),
    #[error("copying the firmware's last 128 KiB below 1 MiB failed (guest RAM too small?)")]
    LegacyAlias(#[source] vm_memory::GuestMemoryError),
    #[error("registering firmware memory slot {slot} at {addr:#x} with KVM failed")]
    Register {
        slot: u32,
        addr: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The firmware images of a VM.
#[derive(Clone, Copy, Debug)]
pub struct FirmwareImages<'a> {
    /// The code (or a whole single-file firmware such as SeaBIOS).
    pub code: &'a Path,
    /// The VM's own copy of a variable store (OVMF_VARS.fd), if any.
    pub vars: Option<&'a Path>,
}

/// One mapped firmware region.
pub struct FirmwareRegion {
    pub guest_addr: u64,
    pub size: u64,
    pub read_only: bool,
    /// Owned so that it outlives the KVM slot that maps it (None: the
    /// flash store owns it).
    _mapping: Option<MmapRegion<()>>,
}

/// Loaded firmware. Keep it for as long as the VM runs: KVM maps its
/// memory into the guest.
pub struct Firmware {
    pub code: FirmwareRegion,
    /// Where the variable store is (its mapping lives in `flash`, or here
    /// when it is plain memory).
    pub vars: Option<FirmwareRegion>,
    /// The variable store mapped as a read-only slot, for the device
    /// manager to hand to a flash device (`device_manager/firmware.rs`),
    /// which owns it from then on.
    pub flash_store: Option<FlashStore>,
}

/// A variable store in read-only KVM slot `slot` at `guest_addr`: the
/// flash device's memory, which it unmaps while out of read-array mode.
pub struct FlashStore {
    pub slot: u32,
    pub guest_addr: u64,
    pub map: MmapRegion<()>,
}

fn file_size(path: &Path, file: &File) -> Result<u64, FirmwareError> {
    let size = file
        .metadata()
        .map_err(|source| FirmwareError::Read {
            path: path.into(),
            source,
        })?
        .len();
    if size == 0 || !size.is_multiple_of(PAGE) {
        return Err(FirmwareError::Size {
            path: path.into(),
            size,
        });
    }
    Ok(size)
}

/// Where the code and the variable store go for images of these sizes:
/// `(code_addr, vars_addr)`. Errors if they do not fit in
/// [`layout::FIRMWARE_MAX_SIZE`].
pub fn placement(code_size: u64, vars_size: u64) -> Result<(u64, u64), FirmwareError> {
    let total = code_size.saturating_add(vars_size);
    if total > layout::FIRMWARE_MAX_SIZE {
        return Err(FirmwareError::TooLarge { size: total });
    }
    let code_addr = layout::FOUR_GIB - code_size;
    Ok((code_addr, code_addr - vars_size))
}

/// Read the code image into a private anonymous mapping.
fn map_code(path: &Path) -> Result<MmapRegion<()>, FirmwareError> {
    let file = File::open(path).map_err(|source| FirmwareError::Open {
        path: path.into(),
        source,
    })?;
    let size = file_size(path, &file)?;
    placement(size, 0)?;
    // Bounded: the file may have grown since its size was checked.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(size + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| FirmwareError::Read {
            path: path.into(),
            source,
        })?;
    if bytes.len() as u64 != size {
        return Err(FirmwareError::Size {
            path: path.into(),
            size: bytes.len() as u64,
        });
    }
    let mapping =
        MmapRegion::<()>::new(bytes.len()).map_err(|source| FirmwareError::Map { size, source })?;
    mapping
        .get_slice(0, bytes.len())
        .map_err(FirmwareError::Copy)?
        .copy_from(&bytes);
    Ok(mapping)
}

/// Map the variable store file shared and writable.
fn map_vars(path: &Path) -> Result<MmapRegion<()>, FirmwareError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| FirmwareError::Open {
            path: path.into(),
            source,
        })?;
    let size = file_size(path, &file)?;
    MmapRegion::<()>::from_file(FileOffset::new(file, 0), size as usize)
        .map_err(|source| FirmwareError::Map { size, source })
}

/// Copy the last 128 KiB of the code (or all of it if smaller) to end at
/// 1 MiB in guest RAM.
fn copy_legacy_alias(mem: &GuestMemoryMmap, code: &MmapRegion<()>) -> Result<(), FirmwareError> {
    let size = code.size() as u64;
    let len = size.min(LEGACY_BIOS_SIZE);
    let mut tail = vec![0u8; len as usize];
    code.get_slice((size - len) as usize, len as usize)
        .map_err(FirmwareError::Copy)?
        .copy_to(&mut tail[..]);
    mem.write_slice(&tail, GuestAddress(LEGACY_BIOS_END - len))
        .map_err(FirmwareError::LegacyAlias)
}

fn register(
    vm: &VmFd,
    slot: u32,
    guest_addr: u64,
    mapping: &MmapRegion<()>,
    read_only: bool,
) -> Result<(), FirmwareError> {
    let desc = kvm_userspace_memory_region {
        slot,
        flags: if read_only { KVM_MEM_READONLY } else { 0 },
        guest_phys_addr: guest_addr,
        memory_size: mapping.size() as u64,
        userspace_addr: mapping.as_ptr() as u64,
    };
    // SAFETY: the host range is a live mapping owned by the returned
    // `Firmware`, which the VM keeps while its VmFd lives; the guest range
    // lies below 4 GiB above the PCI hole, clear of guest RAM.
    unsafe { vm.set_user_memory_region(desc) }.map_err(|source| FirmwareError::Register {
        slot,
        addr: guest_addr,
        source,
    })
}

/// Map `images` for `vm`, whose RAM is `mem`: KVM slots right after RAM's
/// (slot numbers `mem.num_regions()` and up), the code ending at 4 GiB,
/// and its tail copied below 1 MiB. The vCPUs then start at the reset
/// vector.
pub fn load(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    images: FirmwareImages<'_>,
) -> Result<Firmware, FirmwareError> {
    let code_map = map_code(images.code)?;
    let vars_map = images.vars.map(map_vars).transpose()?;
    let code_size = code_map.size() as u64;
    let vars_size = vars_map.as_ref().map_or(0, |m| m.size() as u64);
    let (code_addr, vars_addr) = placement(code_size, vars_size)?;
    copy_legacy_alias(mem, &code_map)?;

    let read_only = vm.check_extension(Cap::ReadonlyMem);
    if !read_only {
        warn!("KVM lacks read-only memory slots: the firmware code is writable by the guest");
    }
    let slot = mem.num_regions() as u32;
    register(vm, slot, code_addr, &code_map, read_only)?;
    let (vars, flash_store) = match vars_map {
        Some(m) if read_only => {
            register(vm, slot + 1, vars_addr, &m, true)?;
            (
                Some(FirmwareRegion {
                    guest_addr: vars_addr,
                    size: vars_size,
                    read_only: true,
                    _mapping: None,
                }),
                Some(FlashStore {
                    slot: slot + 1,
                    guest_addr: vars_addr,
                    map: m,
                }),
            )
        }
        Some(m) => {
            register(vm, slot + 1, vars_addr, &m, false)?;
            (
                Some(FirmwareRegion {
                    guest_addr: vars_addr,
                    size: vars_size,
                    read_only: false,
                    _mapping: Some(m),
                }),
                None,
            )
        }
        None => (None, None),
    };
    info!(
        "firmware {} mapped at {code_addr:#x} ({code_size:#x} bytes{}){}",
        images.code.display(),
        if read_only { ", read-only" } else { "" },
        match (&vars, images.vars) {
            (Some(v), Some(p)) => format!(
                ", variable store {} at {:#x} ({:#x} bytes, {})",
                p.display(),
                v.guest_addr,
                v.size,
                if flash_store.is_some() {
                    "CFI flash"
                } else {
                    "plain memory"
                }
            ),
            _ => String::new(),
        }
    );
    Ok(Firmware {
        code: FirmwareRegion {
            guest_addr: code_addr,
            size: code_size,
            read_only,
            _mapping: Some(code_map),
        },
        vars,
        flash_store,
    })
}

#[cfg(test)]
mod tests;
