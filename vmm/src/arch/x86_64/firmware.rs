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
//! The variable store is a [`PflashDevice`] as OVMF expects from QEMU's
//! pflash: in read-array mode its file mapping is a read-only KVM slot
//! (reads cost no exit; writes exit as MMIO and are flash commands to the
//! device on the MMIO bus); in the other modes (status, program, erase,
//! CFI) [`KvmArrayMapping`] removes the slot so that reads exit to the
//! device too, and puts it back when the guest returns to read-array mode.
//! OVMF then detects a writable flash and keeps its variables in the file,
//! so they survive reboots and power-offs. Without KVM's read-only slots
//! (never seen on a current kernel) the store falls back to plain shared
//! memory, which OVMF treats as RAM.
//!
//! [`EntryMode::Reset`]: super::regs::EntryMode::Reset

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::{Cap, VmFd};
use log::{info, warn};
use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, VolatileMemory};

use super::layout;
use crate::devices::legacy::pflash::{ArrayMapping, MmapStore, PflashDevice};
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
    #[error("duplicating the VM file descriptor for the flash device")]
    DupVm(#[source] crate::interrupts::InterruptError),
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
    /// flash device owns it).
    _mapping: Option<MmapRegion<()>>,
}

/// Loaded firmware. Keep it for as long as the VM runs: KVM maps its
/// memory into the guest.
pub struct Firmware {
    pub code: FirmwareRegion,
    /// Where the variable store is (its mapping lives in `flash`, or here
    /// when it is plain memory).
    pub vars: Option<FirmwareRegion>,
    /// The variable store's flash device, to insert on the MMIO bus at
    /// `vars.guest_addr` for `vars.size` bytes.
    pub flash: Option<Arc<Mutex<VarsFlash>>>,
}

/// The flash device type of the variable store.
pub type VarsFlash = PflashDevice<MmapStore, KvmArrayMapping>;

/// Shows or hides the variable store's read-only KVM slot.
pub struct KvmArrayMapping {
    vm: VmFd,
    slot: u32,
    guest_addr: u64,
    host_addr: u64,
    size: u64,
}

impl ArrayMapping for KvmArrayMapping {
    fn set_mapped(&mut self, mapped: bool) {
        let desc = kvm_userspace_memory_region {
            slot: self.slot,
            flags: KVM_MEM_READONLY,
            guest_phys_addr: self.guest_addr,
            // Size 0 deletes the slot.
            memory_size: if mapped { self.size } else { 0 },
            userspace_addr: self.host_addr,
        };
        // SAFETY: the host range is the store's mapping, owned by the
        // flash device that owns this mapping object, so it outlives the
        // slot; the guest range is the store's, clear of RAM.
        if let Err(e) = unsafe { self.vm.set_user_memory_region(desc) } {
            log::error!("pflash: cannot change the variable store slot (mapped {mapped}): {e}");
        }
    }
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
    let (vars, flash) = match vars_map {
        Some(m) if read_only => {
            register(vm, slot + 1, vars_addr, &m, true)?;
            let mapping = KvmArrayMapping {
                vm: crate::interrupts::dup_vm_fd(vm).map_err(FirmwareError::DupVm)?,
                slot: slot + 1,
                guest_addr: vars_addr,
                host_addr: m.as_ptr() as u64,
                size: vars_size,
            };
            let flash = PflashDevice::new(MmapStore::new(m), mapping);
            (
                Some(FirmwareRegion {
                    guest_addr: vars_addr,
                    size: vars_size,
                    read_only: true,
                    _mapping: None,
                }),
                Some(Arc::new(Mutex::new(flash))),
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
                if flash.is_some() {
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
        flash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_ioctls::{Kvm, VcpuExit};

    const KIB4: usize = 4096;

    /// A 4 KiB real-mode program for the reset vector: port 0x80 gets
    /// 0x42, then (after trying to overwrite its own first byte) the byte
    /// it reads back there; then it programs 0x77 into 0xFFFFE000 (the
    /// variable store when one is mapped) with the flash's byte-program
    /// command, sends the status it reads there to port 0x80, returns the
    /// flash to read-array mode, sends the byte it reads there, and halts.
    fn probe_image() -> Vec<u8> {
        let mut img = vec![0u8; KIB4];
        let code: &[u8] = &[
            0xb0, 0x42, // mov al, 0x42
            0xe6, 0x80, // out 0x80, al
            0x2e, 0xc6, 0x06, 0x00, 0xf0, 0x99, // mov byte [cs:0xf000], 0x99
            0x2e, 0xa0, 0x00, 0xf0, // mov al, [cs:0xf000]
            0xe6, 0x80, // out 0x80, al
            0x2e, 0xc6, 0x06, 0x00, 0xe0, 0x10, // mov byte [cs:0xe000], 0x10
            0x2e, 0xc6, 0x06, 0x00, 0xe0, 0x77, // mov byte [cs:0xe000], 0x77
            0x2e, 0xa0, 0x00, 0xe0, // mov al, [cs:0xe000]
            0xe6, 0x80, // out 0x80, al
            0x2e, 0xc6, 0x06, 0x00, 0xe0, 0xff, // mov byte [cs:0xe000], 0xff
            0x2e, 0xa0, 0x00, 0xe0, // mov al, [cs:0xe000]
            0xe6, 0x80, // out 0x80, al
            0xf4, // hlt
        ];
        img[..code.len()].copy_from_slice(code);
        // Reset vector (CS base 0xffff0000, IP 0xfff0): jmp near 0xf000.
        img[0xff0..0xff3].copy_from_slice(&[0xe9, 0x0d, 0xf0]);
        img
    }

    fn temp_file(tag: &str, bytes: &[u8]) -> PathBuf {
        let p = std::env::temp_dir().join(format!("kiln-fw-{}-{tag}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Out(u16, u8),
        MmioWrite(u64, u8),
        MmioRead(u64),
        /// Handled by the flash device.
        Flash,
        Hlt,
    }

    /// Run a one-vCPU VM with 16 MiB of RAM on `images` until HLT; MMIO to
    /// the variable store goes to its flash device.
    fn run(images: FirmwareImages<'_>) -> (Vec<Seen>, Firmware, GuestMemoryMmap) {
        use crate::devices::bus::BusDevice;
        let kvm = Kvm::new().expect("/dev/kvm (these tests run a real KVM vCPU)");
        let vm = kvm.create_vm().unwrap();
        let mem = crate::memory::create(16, Default::default()).unwrap();
        crate::memory::register(&vm, &mem).unwrap();
        vm.set_tss_address(0xfeff_d000).unwrap();
        let fw = load(&vm, &mem, images).unwrap();
        let flash = |addr: u64| {
            let v = fw.vars.as_ref()?;
            let f = fw.flash.as_ref()?;
            (addr >= v.guest_addr && addr - v.guest_addr < v.size)
                .then(|| (f.clone(), addr - v.guest_addr))
        };
        let mut vcpu = vm.create_vcpu(0).unwrap();
        let mut seen = Vec::new();
        for _ in 0..100 {
            match vcpu.run().unwrap() {
                VcpuExit::IoOut(port, data) => seen.push(Seen::Out(port, data[0])),
                VcpuExit::MmioWrite(addr, data) => match flash(addr) {
                    Some((f, off)) => {
                        f.lock().unwrap().write(off, data);
                        seen.push(Seen::Flash);
                    }
                    None => seen.push(Seen::MmioWrite(addr, data[0])),
                },
                VcpuExit::MmioRead(addr, data) => match flash(addr) {
                    Some((f, off)) => {
                        f.lock().unwrap().read(off, data);
                        seen.push(Seen::Flash);
                    }
                    None => {
                        data.fill(0xff);
                        seen.push(Seen::MmioRead(addr));
                    }
                },
                VcpuExit::Hlt => {
                    seen.push(Seen::Hlt);
                    break;
                }
                other => panic!("unexpected exit {other:?} after {seen:?}"),
            }
        }
        (seen, fw, mem)
    }

    #[test]
    fn vcpu_starts_at_the_reset_vector_in_a_read_only_rom() {
        let path = temp_file("rom", &probe_image());
        let (seen, fw, mem) = run(FirmwareImages {
            code: &path,
            vars: None,
        });
        std::fs::remove_file(&path).unwrap();
        assert_eq!(fw.code.guest_addr, 0xffff_f000);
        assert!(fw.vars.is_none());
        if fw.code.read_only {
            assert_eq!(
                seen,
                vec![
                    Seen::Out(0x80, 0x42),
                    Seen::MmioWrite(0xffff_f000, 0x99),
                    Seen::Out(0x80, 0xb0),
                    Seen::MmioWrite(0xffff_e000, 0x10),
                    Seen::MmioWrite(0xffff_e000, 0x77),
                    Seen::MmioRead(0xffff_e000),
                    Seen::Out(0x80, 0xff),
                    Seen::MmioWrite(0xffff_e000, 0xff),
                    Seen::MmioRead(0xffff_e000),
                    Seen::Out(0x80, 0xff),
                    Seen::Hlt
                ]
            );
        } else {
            assert_eq!(seen[0], Seen::Out(0x80, 0x42));
        }
        // The image's end is copied to end at 1 MiB.
        let mut low = vec![0u8; KIB4];
        mem.read_slice(&mut low, GuestAddress(LEGACY_BIOS_END - KIB4 as u64))
            .unwrap();
        assert_eq!(low, probe_image());
    }

    #[test]
    fn variable_store_is_a_flash_backed_by_its_file() {
        let code = temp_file("code", &probe_image());
        let vars = temp_file("vars", &[0xffu8; KIB4]);
        let (seen, fw, _mem) = run(FirmwareImages {
            code: &code,
            vars: Some(&vars),
        });
        let v = fw.vars.as_ref().unwrap();
        assert_eq!((v.guest_addr, v.size), (0xffff_e000, 4096));
        let on_disk = std::fs::read(&vars).unwrap();
        std::fs::remove_file(&code).unwrap();
        std::fs::remove_file(&vars).unwrap();
        assert_eq!((on_disk[0], on_disk[1]), (0x77, 0xff));
        if !v.read_only {
            // No read-only slots: plain memory, no flash device.
            assert!(fw.flash.is_none());
            return;
        }
        // Program command and data, then a status read, all through the
        // device (the slot is gone meanwhile); the read-array command, and
        // then the byte read straight from the re-added slot (no exit).
        assert_eq!(
            seen,
            vec![
                Seen::Out(0x80, 0x42),
                Seen::MmioWrite(0xffff_f000, 0x99),
                Seen::Out(0x80, 0xb0),
                Seen::Flash,
                Seen::Flash,
                Seen::Flash,
                Seen::Out(0x80, crate::devices::legacy::pflash::SR_READY),
                Seen::Flash,
                Seen::Out(0x80, 0x77),
                Seen::Hlt
            ]
        );
    }

    #[test]
    fn only_the_last_128k_go_below_1m() {
        let kvm = Kvm::new().expect("/dev/kvm");
        let vm = kvm.create_vm().unwrap();
        let mem = crate::memory::create(16, Default::default()).unwrap();
        crate::memory::register(&vm, &mem).unwrap();
        let img: Vec<u8> = (0..0x4_0000u32).map(|i| (i / 4096) as u8).collect();
        let path = temp_file("256k", &img);
        let fw = load(
            &vm,
            &mem,
            FirmwareImages {
                code: &path,
                vars: None,
            },
        )
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(fw.code.guest_addr, 0xfffc_0000);
        let mut low = vec![0u8; 0x2_0000];
        mem.read_slice(&mut low, GuestAddress(0xe_0000)).unwrap();
        assert_eq!(low, img[0x2_0000..]);
        // Below the window, RAM is untouched.
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0xd_ffff)).unwrap(), 0);
    }

    #[test]
    fn bad_images_are_refused_with_a_reason() {
        let kvm = Kvm::new().expect("/dev/kvm");
        let vm = kvm.create_vm().unwrap();
        let mem = crate::memory::create(16, Default::default()).unwrap();
        let missing = std::env::temp_dir().join("kiln-fw-does-not-exist");
        let err = load(
            &vm,
            &mem,
            FirmwareImages {
                code: &missing,
                vars: None,
            },
        );
        assert!(matches!(err, Err(FirmwareError::Open { .. })));
        for (tag, len) in [("empty", 0usize), ("odd", 5000)] {
            let p = temp_file(tag, &vec![0; len]);
            let err = load(
                &vm,
                &mem,
                FirmwareImages {
                    code: &p,
                    vars: None,
                },
            );
            std::fs::remove_file(&p).unwrap();
            assert!(
                matches!(err, Err(FirmwareError::Size { size, .. }) if size == len as u64),
                "{tag}"
            );
        }
        let big = temp_file("big", &vec![0; layout::FIRMWARE_MAX_SIZE as usize]);
        let vars = temp_file("bigvars", &[0; KIB4]);
        let err = load(
            &vm,
            &mem,
            FirmwareImages {
                code: &big,
                vars: Some(&vars),
            },
        );
        assert!(matches!(err, Err(FirmwareError::TooLarge { .. })));
        std::fs::remove_file(&big).unwrap();
        std::fs::remove_file(&vars).unwrap();
        assert_eq!(placement(0x2_0000, 0).unwrap(), (0xfffe_0000, 0xfffe_0000));
        assert_eq!(
            placement(0x1e_0000, 0x2_0000).unwrap(),
            (0xffe2_0000, 0xffe0_0000)
        );
    }
}
