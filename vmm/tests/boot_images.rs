//! Direct boot of the stock Debian kernel in both of its forms, checked in
//! guest memory without running it: the decompressed ELF `vmlinux` (PVH
//! entry and 64-bit entry) and the `bzImage` (`vmlinuz`, whose in-guest XZ
//! decompressor is too slow to run on the nested test machines). Needs the
//! kernel fetched by `scripts/fetch-guest.sh`.

use std::path::PathBuf;

use kiln_api::vm::{BootProtocol, KernelConfig};
use kiln_vmm::arch::x86_64::regs::EntryMode;
use kiln_vmm::arch::x86_64::{boot, layout};
use linux_loader::loader::bootparam::boot_params;
use vm_memory::{Bytes, GuestAddress};

fn kernel(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../cache/guest")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-guest.sh",
        p.display()
    );
    p.display().to_string()
}

const MEM: u64 = 256 << 20;

fn load(
    path: String,
    protocol: BootProtocol,
) -> (kiln_vmm::memory::GuestMemoryMmap, boot::BootInfo) {
    let mem = kiln_vmm::memory::create(MEM >> 20, Default::default()).unwrap();
    let cfg = KernelConfig {
        path,
        initramfs: None,
        cmdline: "console=ttyS0 quiet".into(),
        protocol,
    };
    let info = boot::load(&mem, &cfg, MEM, GuestAddress(layout::ACPI_START)).unwrap();
    (mem, info)
}

fn cmdline_at(mem: &kiln_vmm::memory::GuestMemoryMmap) -> String {
    let mut buf = [0u8; 32];
    mem.read_slice(&mut buf, GuestAddress(layout::CMDLINE_START))
        .unwrap();
    let end = buf.iter().position(|&b| b == 0).unwrap();
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[test]
fn vmlinux_boots_by_pvh_or_64_bit_entry() {
    let (mem, pvh) = load(kernel("vmlinux"), BootProtocol::Auto);
    let EntryMode::Pvh(entry) = pvh.entry else {
        panic!("Debian's vmlinux has a PVH note: {pvh:?}")
    };
    assert!(entry > layout::HIMEM_START && entry < pvh.kernel_end);
    assert_eq!(cmdline_at(&mem), "console=ttyS0 quiet");

    let (mem, linux) = load(kernel("vmlinux"), BootProtocol::Linux);
    // The ELF entry of x86_64 vmlinux is startup_64 at its load address, 16 MiB.
    assert_eq!(linux.entry, EntryMode::Linux64(0x100_0000));
    let params: boot_params = mem.read_obj(GuestAddress(layout::ZERO_PAGE_START)).unwrap();
    assert_eq!({ params.hdr.header }, 0x5372_6448);
    assert_eq!({ params.hdr.cmd_line_ptr }, layout::CMDLINE_START as u32);
    assert_eq!({ params.acpi_rsdp_addr }, layout::ACPI_START);
    assert_eq!(
        usize::from(params.e820_entries),
        layout::e820_map(MEM).len()
    );
}

#[test]
fn bzimage_boots_by_its_64_bit_entry_with_its_setup_header() {
    let (mem, info) = load(kernel("vmlinuz"), BootProtocol::Auto);
    // Protected-mode code at 1 MiB, 64-bit entry 0x200 past it.
    assert_eq!(info.entry, EntryMode::Linux64(layout::HIMEM_START + 0x200));
    let params: boot_params = mem.read_obj(GuestAddress(layout::ZERO_PAGE_START)).unwrap();
    let hdr = params.hdr;
    assert_eq!({ hdr.header }, 0x5372_6448, "the kernel's own setup header");
    assert!(
        { hdr.version } >= 0x020c,
        "64-bit entry needs boot protocol 2.12+"
    );
    assert_ne!({ hdr.xloadflags } & 1, 0, "XLF_KERNEL_64");
    assert_eq!({ hdr.type_of_loader }, 0xff);
    assert_eq!({ hdr.cmd_line_ptr }, layout::CMDLINE_START as u32);
    assert_eq!({ hdr.cmdline_size }, "console=ttyS0 quiet".len() as u32 + 1);
    assert_eq!(
        usize::from(params.e820_entries),
        layout::e820_map(MEM).len()
    );
    // PVH needs an ELF kernel.
    let mem = kiln_vmm::memory::create(MEM >> 20, Default::default()).unwrap();
    let cfg = KernelConfig {
        path: kernel("vmlinuz"),
        protocol: BootProtocol::Pvh,
        ..Default::default()
    };
    let err = boot::load(&mem, &cfg, MEM, GuestAddress(0)).unwrap_err();
    assert!(err.to_string().contains("PVH needs an ELF kernel"), "{err}");
}
