//! Direct kernel boot: load an ELF `vmlinux` or a `bzImage` with
//! `linux-loader`, then the initramfs and command line, and describe the
//! machine to the kernel in `boot_params` (64-bit Linux boot protocol) or
//! `hvm_start_info` (PVH).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_api::vm::{BootProtocol, KernelConfig};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{self, BzImage, Cmdline, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, ReadVolatile};

use super::layout::{self, E820Entry};
use super::regs::EntryMode;
use crate::memory::GuestMemoryMmap;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load kernel {}", .path.display())]
    Kernel {
        path: PathBuf,
        #[source]
        source: loader::Error,
    },
    #[error("kernel {} has no PVH entry note, but the PVH protocol was asked for", .0.display())]
    NoPvhEntry(PathBuf),
    #[error("kernel entry point {entry:#x} is outside guest RAM")]
    EntryOutsideRam { entry: u64 },
    #[error("PVH needs an ELF kernel; {} is a bzImage", .0.display())]
    PvhNeedsElf(PathBuf),
    #[error("kernel command line is invalid or longer than {} bytes", layout::CMDLINE_MAX_SIZE - 1)]
    Cmdline(#[source] linux_loader::cmdline::Error),
    #[error("writing the command line into guest memory failed")]
    LoadCmdline(#[source] loader::Error),
    #[error("initramfs {} ({size} bytes) does not fit in guest memory below {limit:#x} above the kernel", .path.display())]
    InitramfsTooBig {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("reading initramfs {} into guest memory failed", .path.display())]
    Initramfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing boot parameters failed")]
    BootParams(#[source] linux_loader::configurator::Error),
}

/// What the boot vCPU needs to start the loaded kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    pub entry: EntryMode,
    pub kernel_end: u64,
    pub initramfs: Option<(u64, u64)>,
}

/// Whether the file starts with the ELF magic (else it is taken for a
/// bzImage, whose loader checks its own header).
fn is_elf(file: &mut File) -> bool {
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF"
}

/// Load the kernel, initramfs and command line of `cfg` into `mem` (of
/// `mem_size` bytes of RAM) and write the boot parameters that point the
/// kernel at them and at the ACPI tables (`rsdp`).
pub fn load(
    mem: &GuestMemoryMmap,
    cfg: &KernelConfig,
    mem_size: u64,
    rsdp: GuestAddress,
) -> Result<BootInfo, BootError> {
    let path = Path::new(&cfg.path);
    let mut file = File::open(path).map_err(|source| BootError::Open {
        path: path.into(),
        source,
    })?;
    let himem = Some(GuestAddress(layout::HIMEM_START));
    let kerr = |source| BootError::Kernel {
        path: path.into(),
        source,
    };
    let elf = is_elf(&mut file);
    let loaded = if elf {
        Elf::load(mem, None, &mut file, himem).map_err(kerr)?
    } else {
        BzImage::load(mem, None, &mut file, himem).map_err(kerr)?
    };
    let pvh_entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => Some(addr.raw_value()),
        _ => None,
    };
    let entry = match (cfg.protocol, pvh_entry) {
        (BootProtocol::Pvh, Some(e)) | (BootProtocol::Auto, Some(e)) => EntryMode::Pvh(e),
        (BootProtocol::Pvh, None) if !elf => return Err(BootError::PvhNeedsElf(path.into())),
        (BootProtocol::Pvh, None) => return Err(BootError::NoPvhEntry(path.into())),
        // bzImage: the 64-bit entry is 0x200 past the protected-mode code.
        _ if !elf => EntryMode::Linux64(loaded.kernel_load.raw_value() + 0x200),
        _ => EntryMode::Linux64(loaded.kernel_load.raw_value()),
    };

    let entry_addr = match entry {
        EntryMode::Pvh(a) | EntryMode::Linux64(a) => a,
        EntryMode::Reset => 0,
    };
    if !mem.address_in_range(GuestAddress(entry_addr)) {
        return Err(BootError::EntryOutsideRam { entry: entry_addr });
    }

    let cmdline =
        Cmdline::try_from(&cfg.cmdline, layout::CMDLINE_MAX_SIZE).map_err(BootError::Cmdline)?;
    loader::load_cmdline(mem, GuestAddress(layout::CMDLINE_START), &cmdline)
        .map_err(BootError::LoadCmdline)?;
    let cmdline_size = cfg.cmdline.len() as u32 + 1;

    let header = loaded.setup_header;
    let initrd_max = match header {
        Some(h) if h.version >= 0x203 && h.initrd_addr_max != 0 => u64::from(h.initrd_addr_max),
        _ => 0x7fff_ffff,
    };
    let initramfs = match &cfg.initramfs {
        Some(p) => Some(load_initramfs(
            mem,
            Path::new(p),
            loaded.kernel_end,
            initrd_max,
        )?),
        None => None,
    };
    let e820 = layout::e820_map(mem_size);
    match entry {
        EntryMode::Pvh(_) => write_start_info(mem, &e820, initramfs, rsdp)?,
        _ => write_boot_params(mem, &e820, header, cmdline_size, initramfs, rsdp)?,
    }
    Ok(BootInfo {
        entry,
        kernel_end: loaded.kernel_end,
        initramfs,
    })
}

/// Put the initramfs as high as it may go in low memory, page-aligned.
fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    addr_max: u64,
) -> Result<(u64, u64), BootError> {
    let mut file = File::open(path).map_err(|source| BootError::Open {
        path: path.into(),
        source,
    })?;
    let ioerr = |source| BootError::Initramfs {
        path: path.into(),
        source,
    };
    let size = file.metadata().map_err(ioerr)?.len();
    let low_end = mem.iter().next().map_or(0, |r| r.len());
    let limit = low_end.min(addr_max.saturating_add(1));
    let addr = limit
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end.max(layout::HIMEM_START))
        .ok_or_else(|| BootError::InitramfsTooBig {
            path: path.into(),
            size,
            limit,
        })?;
    let mut slice = mem
        .get_slice(GuestAddress(addr), size as usize)
        .map_err(|e| ioerr(std::io::Error::other(e)))?;
    file.read_exact_volatile(&mut slice)
        .map_err(|e| ioerr(std::io::Error::other(e)))?;
    Ok((addr, size))
}

fn write_boot_params(
    mem: &GuestMemoryMmap,
    e820: &[E820Entry],
    header: Option<linux_loader::loader::bootparam::setup_header>,
    cmdline_size: u32,
    initramfs: Option<(u64, u64)>,
    rsdp: GuestAddress,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    } else {
        params.hdr.boot_flag = 0xaa55;
        params.hdr.header = 0x5372_6448; // "HdrS"
        params.hdr.kernel_alignment = 0x100_0000;
    }
    params.hdr.type_of_loader = 0xff;
    params.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_size;
    if let Some((addr, size)) = initramfs {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.acpi_rsdp_addr = rsdp.raw_value();
    for (i, e) in e820.iter().take(params.e820_table.len()).enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind as u32,
        };
    }
    params.e820_entries = e820.len().min(params.e820_table.len()) as u8;
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(layout::ZERO_PAGE_START)),
        mem,
    )
    .map_err(BootError::BootParams)
}

const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
const PVH_MODLIST_START: u64 = layout::PVH_INFO_START + 0x800;

fn write_start_info(
    mem: &GuestMemoryMmap,
    e820: &[E820Entry],
    initramfs: Option<(u64, u64)>,
    rsdp: GuestAddress,
) -> Result<(), BootError> {
    let memmap: Vec<hvm_memmap_table_entry> = e820
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind as u32,
            reserved: 0,
        })
        .collect();
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: layout::CMDLINE_START,
        rsdp_paddr: rsdp.raw_value(),
        memmap_paddr: layout::PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&info, GuestAddress(layout::PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(layout::PVH_MEMMAP_START));
    if let Some((paddr, size)) = initramfs {
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_START;
        params = BootParams::new(&info, GuestAddress(layout::PVH_INFO_START));
        params.set_sections(&memmap, GuestAddress(layout::PVH_MEMMAP_START));
        let module = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        params.set_modules(&[module], GuestAddress(PVH_MODLIST_START));
    }
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(BootError::BootParams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn mem() -> GuestMemoryMmap {
        crate::memory::create(128, Default::default()).unwrap()
    }

    #[test]
    fn boot_params_carry_cmdline_e820_initrd_and_rsdp() {
        let mem = mem();
        let e820 = layout::e820_map(128 << 20);
        write_boot_params(
            &mem,
            &e820,
            None,
            12,
            Some((0x700_0000, 0x1234)),
            GuestAddress(0xe0000),
        )
        .unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(layout::ZERO_PAGE_START)).unwrap();
        let hdr = p.hdr;
        assert_eq!({ hdr.header }, 0x5372_6448);
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.type_of_loader }, 0xff);
        assert_eq!({ hdr.cmd_line_ptr }, layout::CMDLINE_START as u32);
        assert_eq!({ hdr.cmdline_size }, 12);
        assert_eq!(
            ({ hdr.ramdisk_image }, { hdr.ramdisk_size }),
            (0x700_0000, 0x1234)
        );
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(usize::from(p.e820_entries), e820.len());
        for (i, e) in e820.iter().enumerate() {
            let t = p.e820_table[i];
            assert_eq!(
                ({ t.addr }, { t.size }, { t.r#type }),
                (e.addr, e.size, e.kind as u32)
            );
        }
    }

    #[test]
    fn pvh_start_info_points_at_memmap_cmdline_and_module() {
        let mem = mem();
        let e820 = layout::e820_map(128 << 20);
        write_start_info(
            &mem,
            &e820,
            Some((0x600_0000, 0x4000)),
            GuestAddress(0xe0000),
        )
        .unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC_VALUE);
        assert_eq!(info.version, 1);
        assert_eq!(info.cmdline_paddr, layout::CMDLINE_START);
        assert_eq!(info.rsdp_paddr, 0xe0000);
        assert_eq!(info.memmap_entries as usize, e820.len());
        assert_eq!(info.nr_modules, 1);
        for (i, e) in e820.iter().enumerate() {
            let m: hvm_memmap_table_entry = mem
                .read_obj(GuestAddress(info.memmap_paddr + i as u64 * 24))
                .unwrap();
            assert_eq!((m.addr, m.size, m.type_), (e.addr, e.size, e.kind as u32));
        }
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), (0x600_0000, 0x4000));
        // The memory map must not run into the module list.
        assert!(info.memmap_paddr + e820.len() as u64 * 24 <= info.modlist_paddr);
    }

    #[test]
    fn initramfs_goes_high_and_refuses_to_overlap_the_kernel() {
        let mem = mem();
        let dir = std::env::temp_dir().join(format!("kiln-initrd-{}", std::process::id()));
        std::fs::write(&dir, vec![0x5a; 10_000]).unwrap();
        let (addr, size) = load_initramfs(&mem, &dir, 0x200_0000, 0x7fff_ffff).unwrap();
        assert_eq!(size, 10_000);
        assert_eq!(addr % 4096, 0);
        assert!(addr + size <= 128 << 20 && addr + 4096 + size > 128 << 20);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(addr + 9_999)).unwrap(),
            0x5a
        );
        let err = load_initramfs(&mem, &dir, (128 << 20) - 8192, 0x7fff_ffff).unwrap_err();
        assert!(matches!(err, BootError::InitramfsTooBig { .. }), "{err}");
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn missing_kernel_is_a_clear_error() {
        let cfg = KernelConfig {
            path: "/nonexistent/vmlinux".into(),
            ..Default::default()
        };
        let err = load(&mem(), &cfg, 128 << 20, GuestAddress(0)).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }
}
