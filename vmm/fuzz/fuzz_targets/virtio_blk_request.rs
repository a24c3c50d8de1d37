//! Fuzz virtio-blk request handling: a well-formed chain (header,
//! optional data, status) whose header, data, lengths and split points come
//! from the input. The status written must be one of OK, IOERR, UNSUPP,
//! and an OK write must land on the disk exactly.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::Arc;

use kiln_vmm::devices::virtio::block;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};

const HDR: u64 = 0x4000;
const DATA: u64 = 0x10000 - 0x800; // crosses into the adjacent region
const STATUS: u64 = 0x3000;

fn desc(
    mem: &kiln_vmm::memory::GuestMemoryMmap,
    i: u16,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) {
    let at = GuestAddress(common::DESC + 16 * u64::from(i));
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    mem.write_slice(&d, at).unwrap();
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 24 {
        return;
    }
    let header = &data[..16];
    let data_len = u32::from(u16::from_le_bytes([data[16], data[17]])) % 0x1800;
    let hdr_split = u32::from(data[18]) % 17;
    let flags = data[19];
    let payload = &data[20..];
    let mem = common::memory(&[]);
    mem.write_slice(header, GuestAddress(HDR)).unwrap();
    let n = payload.len().min(data_len as usize);
    mem.write_slice(&payload[..n], GuestAddress(DATA)).unwrap();
    mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    // Header in one or two pieces, then data, then the status byte.
    let mut i = 0u16;
    if hdr_split > 0 && hdr_split < 16 {
        desc(&mem, i, HDR, hdr_split, 1, i + 1);
        i += 1;
        desc(
            &mem,
            i,
            HDR + u64::from(hdr_split),
            16 - hdr_split,
            1,
            i + 1,
        );
    } else {
        desc(&mem, i, HDR, 16, 1, i + 1);
    }
    i += 1;
    let data_writable = flags & 1 != 0;
    if data_len > 0 {
        desc(
            &mem,
            i,
            DATA,
            data_len,
            1 | if data_writable { 2 } else { 0 },
            i + 1,
        );
        i += 1;
    }
    desc(&mem, i, STATUS, 1, 2, 0);
    mem.write_obj(0u16, GuestAddress(common::AVAIL + 4))
        .unwrap();
    mem.write_obj(1u16, GuestAddress(common::AVAIL + 2))
        .unwrap();
    let disk = Arc::new(common::MemDisk::new(64 << 10, flags & 2 != 0));
    let mut backend = block::BlockBackend::new(disk.clone(), "fuzz-serial", flags & 4 != 0);
    let mut q = common::queue(&mem, 8);
    match block::process_queue(&mem, &mut q, &mut backend) {
        Ok(_) => {
            let status: u8 = mem.read_obj(GuestAddress(STATUS)).unwrap();
            assert!(
                matches!(status, block::S_OK | block::S_IOERR | block::S_UNSUPP),
                "status {status}"
            );
            let kind = u32::from_le_bytes(header[0..4].try_into().unwrap());
            let sector = u64::from_le_bytes(header[8..16].try_into().unwrap());
            if status == block::S_OK && kind == block::T_OUT && data_len > 0 && !data_writable {
                let mut want = vec![0u8; data_len as usize];
                mem.read_slice(&mut want, GuestAddress(DATA)).unwrap();
                let off = (sector * 512) as usize;
                assert_eq!(&disk.data.lock().unwrap()[off..off + want.len()], &want[..]);
            }
        }
        // Every chain built here is well framed.
        Err(e) => panic!("unexpected queue error: {e}"),
    }
});
