//! Unit tests of the fw_cfg device: the selector/data port protocol, the
//! file directory's byte layout, and DMA (select, read, skip, write,
//! errors), read the way SeaBIOS and OVMF read them.

mod loader;

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::arch::x86_64::fw_cfg::{self as pc, PcConfig};
use crate::arch::x86_64::layout;
use crate::device_manager::{self, platform::describe};

const MEM_SIZE: u64 = 0x10_0000;
const DESC: u64 = 0x1000;
const BUF: u64 = 0x2000;

pub(super) fn guest_mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

pub(super) fn select(dev: &mut FwCfg, key: u16) {
    dev.write(0, &key.to_le_bytes());
}

pub(super) fn port_read(dev: &mut FwCfg, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            let mut b = [0u8; 1];
            dev.read(1, &mut b);
            b[0]
        })
        .collect()
}

/// Write a DMA descriptor at `DESC`, trigger it the way SeaBIOS does (the
/// low half of the address only) and return the control word written back.
pub(super) fn dma(
    dev: &mut FwCfg,
    mem: &GuestMemoryMmap,
    control: u32,
    len: u32,
    addr: u64,
) -> u32 {
    let mut desc = [0u8; 16];
    desc[0..4].copy_from_slice(&control.to_be_bytes());
    desc[4..8].copy_from_slice(&len.to_be_bytes());
    desc[8..16].copy_from_slice(&addr.to_be_bytes());
    mem.write_slice(&desc, GuestAddress(DESC)).unwrap();
    dev.write(8, &(DESC as u32).to_be_bytes());
    u32::from_be_bytes(mem.read_obj::<[u8; 4]>(GuestAddress(DESC)).unwrap())
}

fn mem_bytes(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

/// Read file `name` as SeaBIOS does: directory count by DMA select+read,
/// the entries by sequential DMA reads, then the file by select+read.
pub(super) fn fetch_file(dev: &mut FwCfg, mem: &GuestMemoryMmap, name: &str) -> Option<Vec<u8>> {
    let sel_read = (u32::from(keys::FILE_DIR) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
    assert_eq!(dma(dev, mem, sel_read, 4, BUF), 0);
    let count = u32::from_be_bytes(mem.read_obj(GuestAddress(BUF)).unwrap());
    let mut found = None;
    for _ in 0..count {
        assert_eq!(dma(dev, mem, DMA_CTL_READ, 64, BUF), 0);
        let e = mem_bytes(mem, BUF, 64);
        let size = u32::from_be_bytes(e[0..4].try_into().unwrap());
        let key = u16::from_be_bytes(e[4..6].try_into().unwrap());
        let end = e[8..].iter().position(|&b| b == 0).unwrap();
        if &e[8..8 + end] == name.as_bytes() {
            found = Some((key, size));
        }
    }
    let (key, size) = found?;
    let at = 0x4_0000;
    let control = (u32::from(key) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
    assert_eq!(dma(dev, mem, control, size, at), 0);
    Some(mem_bytes(mem, at, size as usize))
}

#[test]
fn signature_and_id_through_the_ports() {
    let mut dev = FwCfg::new(guest_mem());
    select(&mut dev, keys::SIGNATURE);
    assert_eq!(port_read(&mut dev, 4), b"QEMU");
    // Past the end: zeros.
    assert_eq!(port_read(&mut dev, 2), [0, 0]);
    select(&mut dev, keys::ID);
    let id = u32::from_le_bytes(port_read(&mut dev, 4).try_into().unwrap());
    assert_eq!(id, ID_TRADITIONAL | ID_DMA);
    // The write-channel bit is ignored; selecting rewinds.
    select(&mut dev, keys::WRITE_CHANNEL | keys::SIGNATURE);
    let mut wide = [0u8; 4];
    dev.read(1, &mut wide);
    assert_eq!(&wide, b"QEMU");
    // Data-port writes are ignored.
    select(&mut dev, keys::SIGNATURE);
    dev.write(1, &[0x55]);
    dev.write(0, &[0x55]);
    assert_eq!(port_read(&mut dev, 4), b"QEMU");
    // Nothing selected, or an unknown key: zeros.
    for key in [keys::INVALID, 0x1234, keys::ARCH_LOCAL | 0x100] {
        select(&mut dev, key);
        assert_eq!(port_read(&mut dev, 4), [0; 4], "{key:#x}");
    }
}

#[test]
fn dma_register_reads_back_its_signature() {
    let mut dev = FwCfg::new(guest_mem());
    let mut sig = [0u8; 8];
    for (i, b) in sig.iter_mut().enumerate() {
        let mut one = [0u8; 1];
        dev.read(4 + i as u64, &mut one);
        *b = one[0];
    }
    assert_eq!(&sig, b"QEMU CFG");
    let mut high = [0u8; 4];
    dev.read(4, &mut high);
    assert_eq!(&high, b"QEMU");
}

#[test]
fn file_directory_is_sorted_big_endian_and_nul_padded() {
    let mut dev = FwCfg::new(guest_mem());
    dev.add_file("etc/b", vec![1, 2, 3]).unwrap();
    dev.add_file("bootorder", vec![]).unwrap();
    let long = "x".repeat(FILE_NAME_MAX);
    dev.add_file(&long, vec![9; 300]).unwrap();
    select(&mut dev, keys::FILE_DIR);
    let dir = port_read(&mut dev, 4 + 3 * FILE_ENTRY_LEN);
    assert_eq!(dir[0..4], 3u32.to_be_bytes());
    let entries: Vec<(u32, u16, u16, Vec<u8>)> = dir[4..]
        .chunks(FILE_ENTRY_LEN)
        .map(|e| {
            (
                u32::from_be_bytes(e[0..4].try_into().unwrap()),
                u16::from_be_bytes(e[4..6].try_into().unwrap()),
                u16::from_be_bytes(e[6..8].try_into().unwrap()),
                e[8..].to_vec(),
            )
        })
        .collect();
    let names: Vec<String> = entries
        .iter()
        .map(|e| {
            let end = e.3.iter().position(|&b| b == 0).unwrap();
            assert!(e.3[end..].iter().all(|&b| b == 0), "NUL padding");
            String::from_utf8(e.3[..end].to_vec()).unwrap()
        })
        .collect();
    assert_eq!(
        names,
        vec!["bootorder".to_string(), "etc/b".into(), long.clone()]
    );
    assert_eq!(
        entries.iter().map(|e| (e.0, e.1, e.2)).collect::<Vec<_>>(),
        vec![(0, 0x20, 0), (3, 0x21, 0), (300, 0x22, 0)]
    );
    assert_eq!(dev.file_key("etc/b"), Some(0x21));
    select(&mut dev, 0x21);
    assert_eq!(port_read(&mut dev, 4), [1, 2, 3, 0]);
    // A key past the last file selects nothing.
    select(&mut dev, 0x23);
    assert_eq!(port_read(&mut dev, 1), [0]);
}

#[test]
fn items_and_files_are_checked() {
    let mut dev = FwCfg::new(guest_mem());
    let too_long = "y".repeat(FILE_NAME_MAX + 1);
    for bad in ["", too_long.as_str(), "a\0b"] {
        assert_eq!(
            dev.add_file(bad, vec![]),
            Err(FwCfgError::FileName(bad.into()))
        );
    }
    dev.add_file("a", vec![]).unwrap();
    assert_eq!(
        dev.add_file("a", vec![1]),
        Err(FwCfgError::DuplicateFile("a".into()))
    );
    for key in [
        keys::FILE_DIR,
        keys::FILE_FIRST,
        0x3fff,
        keys::ARCH_LOCAL | 0x20,
    ] {
        assert_eq!(dev.set_item(key, vec![]), Err(FwCfgError::Key(key)));
    }
    dev.set_item(keys::IRQ0_OVERRIDE, vec![1]).unwrap();
    assert_eq!(
        dev.replace_file("nope", vec![]),
        Err(FwCfgError::NoSuchFile("nope".into()))
    );
    dev.replace_file("a", vec![7, 7]).unwrap();
    assert_eq!(dev.file("a"), Some(&[7u8, 7][..]));
    select(&mut dev, keys::FILE_DIR);
    let dir = port_read(&mut dev, 8);
    assert_eq!(
        dir[4..8],
        2u32.to_be_bytes(),
        "size updated in the directory"
    );
}

#[test]
fn dma_select_read_and_zeros_past_the_end() {
    let mem = guest_mem();
    let mut dev = FwCfg::new(mem.clone());
    mem.write_slice(&[0xaa; 16], GuestAddress(BUF)).unwrap();
    let control = (u32::from(keys::ID) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
    assert_eq!(dma(&mut dev, &mem, control, 8, BUF), 0);
    let got = mem_bytes(&mem, BUF, 9);
    assert_eq!(got[..4], (ID_TRADITIONAL | ID_DMA).to_le_bytes());
    assert_eq!(got[4..8], [0; 4], "zeros past the item's end");
    assert_eq!(got[8], 0xaa, "nothing beyond length");
    // Select alone, then a read of zero bytes: both succeed, touch nothing.
    let control = (u32::from(keys::SIGNATURE) << 16) | DMA_CTL_SELECT;
    assert_eq!(dma(&mut dev, &mem, control, 4, BUF), 0);
    assert_eq!(dma(&mut dev, &mem, DMA_CTL_READ, 0, BUF), 0);
    assert_eq!(dma(&mut dev, &mem, DMA_CTL_READ, 2, BUF + 100), 0);
    assert_eq!(mem_bytes(&mem, BUF + 100, 2), b"QE");
    // The port and DMA share the offset.
    assert_eq!(port_read(&mut dev, 1), b"M");
    assert_eq!(dma(&mut dev, &mem, DMA_CTL_READ, 1, BUF + 200), 0);
    assert_eq!(mem_bytes(&mem, BUF + 200, 1), b"U");
}

#[test]
fn dma_skip_moves_the_offset() {
    let mem = guest_mem();
    let mut dev = FwCfg::new(mem.clone());
    dev.add_file("f", (0..100u8).collect()).unwrap();
    let key = dev.file_key("f").unwrap();
    select(&mut dev, key);
    assert_eq!(dma(&mut dev, &mem, DMA_CTL_SKIP, 10, 0), 0);
    assert_eq!(dma(&mut dev, &mem, DMA_CTL_READ, 3, BUF), 0);
    assert_eq!(mem_bytes(&mem, BUF, 3), [10, 11, 12]);
    // A skip past the end stops there; reads then give zeros.
    assert_eq!(dma(&mut dev, &mem, DMA_CTL_SKIP, 1000, 0), 0);
    assert_eq!(port_read(&mut dev, 1), [0]);
}

#[test]
fn dma_write_only_into_writable_files_within_their_size() {
    let mem = guest_mem();
    let mut dev = FwCfg::new(mem.clone());
    dev.add_writable_file("etc/w", vec![0; 8]).unwrap();
    dev.add_file("etc/ro", vec![0; 8]).unwrap();
    mem.write_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9], GuestAddress(BUF))
        .unwrap();
    let w = u32::from(dev.file_key("etc/w").unwrap()) << 16;
    assert_eq!(
        dma(&mut dev, &mem, w | DMA_CTL_SELECT | DMA_CTL_WRITE, 4, BUF),
        0
    );
    // The offset moved: the next write continues at 4.
    assert_eq!(dma(&mut dev, &mem, DMA_CTL_WRITE, 2, BUF + 4), 0);
    assert_eq!(dev.file("etc/w").unwrap(), [1, 2, 3, 4, 5, 6, 0, 0]);
    // Past the end: an error, and nothing written.
    assert_eq!(dma(&mut dev, &mem, DMA_CTL_WRITE, 3, BUF), DMA_CTL_ERROR);
    assert_eq!(dev.file("etc/w").unwrap(), [1, 2, 3, 4, 5, 6, 0, 0]);
    let ro = u32::from(dev.file_key("etc/ro").unwrap()) << 16;
    assert_eq!(
        dma(&mut dev, &mem, ro | DMA_CTL_SELECT | DMA_CTL_WRITE, 1, BUF),
        DMA_CTL_ERROR
    );
    assert_eq!(dev.file("etc/ro").unwrap(), [0; 8]);
    // Legacy items are never writable, nor is "nothing".
    let sig = u32::from(keys::SIGNATURE) << 16;
    assert_eq!(
        dma(&mut dev, &mem, sig | DMA_CTL_SELECT | DMA_CTL_WRITE, 1, BUF),
        DMA_CTL_ERROR
    );
    select(&mut dev, keys::INVALID);
    assert_eq!(dma(&mut dev, &mem, DMA_CTL_WRITE, 1, BUF), DMA_CTL_ERROR);
}

#[test]
fn dma_outside_guest_memory_is_an_error_not_a_panic() {
    let mem = guest_mem();
    let mut dev = FwCfg::new(mem.clone());
    dev.add_writable_file("etc/w", vec![5; 8]).unwrap();
    let sig = (u32::from(keys::SIGNATURE) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
    for addr in [MEM_SIZE, MEM_SIZE - 2, u64::MAX - 1, u64::MAX] {
        assert_eq!(
            dma(&mut dev, &mem, sig, 4, addr),
            DMA_CTL_ERROR,
            "{addr:#x}"
        );
    }
    // Zero fill past the item's end, into memory that ends: an error.
    assert_eq!(
        dma(&mut dev, &mem, sig, 0x2000, MEM_SIZE - 0x1000),
        DMA_CTL_ERROR
    );
    let w = (u32::from(dev.file_key("etc/w").unwrap()) << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE;
    assert_eq!(dma(&mut dev, &mem, w, 8, MEM_SIZE - 4), DMA_CTL_ERROR);
    // A huge length does not allocate: zeros go out in chunks and fail at
    // the end of memory.
    assert_eq!(dma(&mut dev, &mem, sig, u32::MAX, BUF), DMA_CTL_ERROR);

    // A descriptor outside guest memory: nothing happens.
    dev.write(4, &0x1u32.to_be_bytes());
    dev.write(8, &0x1000u32.to_be_bytes());
    dev.write(4, &0u32.to_be_bytes());
    dev.write(8, &(MEM_SIZE as u32 - 8).to_be_bytes());
    // An odd-sized access to the DMA register is ignored.
    dev.write(5, &[1, 2]);
}

#[test]
fn dma_high_address_half_is_used_once() {
    let mem = guest_mem();
    let mut dev = FwCfg::new(mem.clone());
    let control = (u32::from(keys::SIGNATURE) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
    let mut desc = [0u8; 16];
    desc[0..4].copy_from_slice(&control.to_be_bytes());
    desc[4..8].copy_from_slice(&4u32.to_be_bytes());
    desc[8..16].copy_from_slice(&BUF.to_be_bytes());
    mem.write_slice(&desc, GuestAddress(DESC)).unwrap();
    // High half 1: the descriptor would be at 4 GiB + DESC, outside memory.
    dev.write(4, &1u32.to_be_bytes());
    dev.write(8, &(DESC as u32).to_be_bytes());
    assert_eq!(
        mem.read_obj::<[u8; 4]>(GuestAddress(DESC)).unwrap(),
        control.to_be_bytes()
    );
    // The high half was reset by that trigger: the low half alone works.
    dev.write(8, &(DESC as u32).to_be_bytes());
    assert_eq!(mem.read_obj::<[u8; 4]>(GuestAddress(DESC)).unwrap(), [0; 4]);
    assert_eq!(mem_bytes(&mem, BUF, 4), b"QEMU");
    // A 64-bit write of the whole address works too.
    mem.write_slice(&desc, GuestAddress(DESC)).unwrap();
    mem.write_slice(&[0; 4], GuestAddress(BUF)).unwrap();
    dev.write(4, &DESC.to_be_bytes());
    assert_eq!(mem_bytes(&mem, BUF, 4), b"QEMU");
}

#[test]
fn pc_items_as_seabios_reads_them() {
    let mem = guest_mem();
    let size = 5 << 30;
    let mut dev =
        device_manager::fw_cfg::build(mem.clone(), &PcConfig::new(describe(3, size))).unwrap();
    let item = |dev: &mut FwCfg, key: u16, n: usize| {
        select(dev, key);
        port_read(dev, n)
    };
    assert_eq!(item(&mut dev, keys::RAM_SIZE, 8), size.to_le_bytes());
    assert_eq!(item(&mut dev, keys::NB_CPUS, 2), 3u16.to_le_bytes());
    assert_eq!(item(&mut dev, keys::MAX_CPUS, 2), 3u16.to_le_bytes());
    assert_eq!(item(&mut dev, keys::NOGRAPHIC, 2), 1u16.to_le_bytes());
    assert_eq!(item(&mut dev, keys::IRQ0_OVERRIDE, 4), 1u32.to_le_bytes());

    // etc/e820, parsed as SeaBIOS's qemu_early_e820 does.
    let e820 = fetch_file(&mut dev, &mem, "etc/e820").unwrap();
    assert_eq!(e820.len() % pc::E820_ENTRY_LEN, 0);
    let parsed: Vec<(u64, u64, u32)> = e820
        .chunks(pc::E820_ENTRY_LEN)
        .map(|e| {
            (
                u64::from_le_bytes(e[0..8].try_into().unwrap()),
                u64::from_le_bytes(e[8..16].try_into().unwrap()),
                u32::from_le_bytes(e[16..20].try_into().unwrap()),
            )
        })
        .collect();
    let expected: Vec<_> = layout::e820_map(size)
        .iter()
        .map(|e| (e.addr, e.size, e.kind as u32))
        .collect();
    assert_eq!(parsed, expected);
    let (mut low, mut high) = (0u64, 0u64);
    for (addr, len, kind) in &parsed {
        if *kind == 1 && *addr < layout::FOUR_GIB {
            low = low.max(addr + len);
        } else if *kind == 1 {
            high = high.max(addr + len - layout::FOUR_GIB);
        }
    }
    assert_eq!((low, high), (layout::MMIO32_START, 2 << 30));

    assert_eq!(
        fetch_file(&mut dev, &mem, "etc/boot-fail-wait").unwrap(),
        u32::MAX.to_le_bytes()
    );
    assert_eq!(
        fetch_file(&mut dev, &mem, "etc/boot-cpus").unwrap(),
        3u16.to_le_bytes()
    );
    assert_eq!(fetch_file(&mut dev, &mem, "bootorder").unwrap(), b"");
    assert!(fetch_file(&mut dev, &mem, "etc/nonexistent").is_none());
}

#[test]
fn bootorder_is_lines_and_a_nul() {
    assert_eq!(pc::bootorder_file(&[]), b"");
    let paths = vec![pc::virtio_blk_boot_path(4), pc::virtio_net_boot_path(0x1a)];
    assert_eq!(
        pc::bootorder_file(&paths),
        b"/pci@i0cf8/scsi@4/disk@0,0\n/pci@i0cf8/ethernet@1a/ethernet-phy@0\0"
    );
    let mut cfg = PcConfig::new(describe(1, 64 << 20));
    cfg.bootorder = paths.clone();
    cfg.boot_fail_wait_ms = 5000;
    let mem = guest_mem();
    let mut dev = device_manager::fw_cfg::build(mem.clone(), &cfg).unwrap();
    assert_eq!(
        fetch_file(&mut dev, &mem, "bootorder").unwrap(),
        pc::bootorder_file(&paths)
    );
    assert_eq!(
        fetch_file(&mut dev, &mem, "etc/boot-fail-wait").unwrap(),
        5000u32.to_le_bytes()
    );
}

#[test]
fn smbios_files_when_given() {
    use crate::arch::x86_64::smbios::{self, SmbiosInfo};
    let mem = guest_mem();
    let mut dev =
        device_manager::fw_cfg::build(mem.clone(), &PcConfig::new(describe(1, 64 << 20))).unwrap();
    assert!(fetch_file(&mut dev, &mem, smbios::ANCHOR_FILE).is_none());
    let info = SmbiosInfo {
        manufacturer: "M".into(),
        uuid: [7; 16],
        cpus: 1,
        mem_size: 64 << 20,
        ..Default::default()
    };
    let mut cfg = PcConfig::new(describe(1, 64 << 20));
    cfg.smbios = Some(info.clone());
    let mut dev = device_manager::fw_cfg::build(mem.clone(), &cfg).unwrap();
    let anchor = fetch_file(&mut dev, &mem, smbios::ANCHOR_FILE).unwrap();
    let tables = fetch_file(&mut dev, &mem, smbios::TABLES_FILE).unwrap();
    // The firmware fills in the table address.
    assert_eq!(anchor, smbios::build(&info, 0).0);
    assert_eq!(tables, smbios::structures(&info));
    let uuid = pc::contents(&cfg).unwrap().items;
    assert!(uuid.contains(&(pc::Item::Uuid, vec![7; 16])));
}

#[test]
fn a_refreshed_file_changes_on_select_but_never_its_size() {
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;
    let mem = guest_mem();
    let mut dev = FwCfg::new(mem);
    dev.add_file("etc/x", vec![0; 4]).unwrap();
    let n = Arc::new(AtomicU8::new(0));
    let counter = n.clone();
    dev.set_refresh(
        "etc/x",
        Box::new(move || {
            let v = counter.fetch_add(1, Ordering::SeqCst) + 1;
            // The third refresh has the wrong size and is ignored.
            Some(vec![v; if v == 3 { 5 } else { 4 }])
        }),
    )
    .unwrap();
    let key = dev.file_key("etc/x").unwrap();
    for want in [1u8, 2, 2, 4] {
        select(&mut dev, key);
        assert_eq!(port_read(&mut dev, 4), vec![want; 4]);
    }
    // Reading on without selecting again does not refresh.
    assert_eq!(port_read(&mut dev, 1), vec![0]);
    assert_eq!(n.load(Ordering::SeqCst), 4);
    assert_eq!(
        dev.set_refresh("etc/none", Box::new(|| None)),
        Err(FwCfgError::NoSuchFile("etc/none".into()))
    );
}
