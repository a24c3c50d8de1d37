//! Fuzz virtio-blk request handling: a well-formed chain (header,
//! optional data, status) whose header, data, lengths and split points come
//! from the input. The status written must be one of OK, IOERR, UNSUPP,
//! and an OK write must land on the disk exactly.
#![no_main]

use std::sync::Arc;

use kiln_vmm::devices::virtio::block;
use kiln_vmm::devices::virtio::testing::{desc, fuzz, MemDisk, DESC_NEXT, DESC_WRITE};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};

const HDR: u64 = 0x4000;
const DATA: u64 = 0x10000 - 0x800; // crosses into the adjacent region
const STATUS: u64 = 0x3000;

fuzz_target!(|data: &[u8]| {
    if data.len() < 24 {
        return;
    }
    let header = &data[..16];
    let data_len = u32::from(u16::from_le_bytes([data[16], data[17]])) % 0x1800;
    let hdr_split = u32::from(data[18]) % 17;
    let flags = data[19];
    let payload = &data[20..];
    let mem = fuzz::memory(&[]);
    mem.write_slice(header, GuestAddress(HDR)).unwrap();
    let n = payload.len().min(data_len as usize);
    mem.write_slice(&payload[..n], GuestAddress(DATA)).unwrap();
    mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    // Header in one or two pieces, then data, then the status byte.
    let gq = fuzz::guest_queue(&mem, 8);
    let mut i = 0u16;
    if hdr_split > 0 && hdr_split < 16 {
        gq.set_desc(i, desc(HDR, hdr_split, DESC_NEXT, i + 1));
        i += 1;
        let rest = HDR + u64::from(hdr_split);
        gq.set_desc(i, desc(rest, 16 - hdr_split, DESC_NEXT, i + 1));
    } else {
        gq.set_desc(i, desc(HDR, 16, DESC_NEXT, i + 1));
    }
    i += 1;
    let data_writable = flags & 1 != 0;
    if data_len > 0 {
        let data_flags = DESC_NEXT | if data_writable { DESC_WRITE } else { 0 };
        gq.set_desc(i, desc(DATA, data_len, data_flags, i + 1));
        i += 1;
    }
    gq.set_desc(i, desc(STATUS, 1, DESC_WRITE, 0));
    gq.push_avail(0);
    let disk = Arc::new(MemDisk::new(64 << 10, flags & 2 != 0));
    let mut backend = block::BlockBackend::new(disk.clone(), "fuzz-serial", flags & 4 != 0);
    let mut q = gq.queue();
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
