//! Fuzz the AHCI controller's command path: the input's first byte says
//! how many 6-byte ABAR register accesses (offset, value) follow, and the
//! bytes after them are guest memory at 0 (command lists, tables, PRDTs,
//! FISes; at most 4 KiB), on a controller
//! with a 64 KiB disk on port 0 and a 40 KiB CD-ROM on port 1, both ports
//! started with their command lists at 0. Nothing may panic, a guest
//! memory access stays inside the 1 MiB of guest memory (vm-memory), and
//! every few writes the parsers are run on their own over the memory too.
#![no_main]

use std::sync::Arc;

use kiln_vmm::devices::ahci::command::{read_command, SgList};
use kiln_vmm::devices::ahci::{Ahci, Drive, DriveKind, ABAR};
use kiln_vmm::devices::pci::PciDevice;
use kiln_vmm::devices::virtio::testing::MemDisk;
use kiln_vmm::devices::GuestMemoryMmap;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};

const MEM: usize = 1 << 20;

fn write(ahci: &mut Ahci, off: u64, v: u32) {
    ahci.bar_write(ABAR, off, &v.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let (ops, image) = rest.split_at(rest.len().min(usize::from(count) * 6));
    let image = &image[..image.len().min(4096)];
    mem.write_slice(image, GuestAddress(0)).unwrap();
    let drives = vec![
        Drive::new(DriveKind::Disk, Arc::new(MemDisk::new(64 << 10, false)), "d".into()),
        Drive::new(DriveKind::Cdrom, Arc::new(MemDisk::new(40 << 10, true)), "c".into()),
    ];
    let mut ahci = Ahci::new(drives, mem.clone(), 0xc000_0000).unwrap();
    write(&mut ahci, 0x04, 2);
    for port in 0..2u64 {
        let base = 0x100 + port * 0x80;
        write(&mut ahci, base + 0x08, 0x8000 + port as u32 * 0x100);
        write(&mut ahci, base + 0x14, u32::MAX);
        write(&mut ahci, base + 0x18, 0x11);
    }
    for (i, op) in ops.chunks_exact(6).enumerate() {
        let off = u64::from(u16::from_le_bytes([op[0], op[1]])) % 0x1000;
        let v = u32::from_le_bytes([op[2], op[3], op[4], op[5]]);
        if op[0] & 0x80 != 0 {
            let mut buf = [0u8; 4];
            ahci.bar_read(ABAR, off & !3, &mut buf);
        } else {
            write(&mut ahci, off, v);
        }
        if i % 8 == 0 {
            if let Ok(c) = read_command(&mem, u64::from(v) % MEM as u64, u32::from(op[0]) % 32) {
                if let Ok(sg) = SgList::read(&mem, &c.header, u64::from(v)) {
                    let mut buf = vec![0u8; (sg.len() as usize).min(1 << 16)];
                    let n = sg.read_into(&mem, 0, &mut buf);
                    assert!(n <= buf.len());
                    assert!(sg.write_from(&mem, 0, &buf[..n]) <= n);
                }
            }
        }
    }
});
