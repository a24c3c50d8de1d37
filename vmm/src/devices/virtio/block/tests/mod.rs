//! virtio-blk request handling against in-process guest memory and a real
//! raw file: every request type, and every hostile framing.

mod seccomp;

mod limit;

use std::path::PathBuf;
use std::sync::Arc;

use kiln_block::{open_disk, DiskFormat, OpenOptions};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::devices::virtio::queue::QueueError;
use crate::devices::virtio::rate_limiter::{RateLimiter, TokenBucket};
use crate::devices::virtio::testing::{
    desc, mem_two_regions, BlkBuffers, GuestQueue, DESC_INDIRECT as INDIRECT, DESC_NEXT as NEXT,
    DESC_WRITE as WRITE,
};
use crate::devices::GuestMemoryMmap;

const HDR: u64 = 0x10000;
const DATA: u64 = 0x11000;
const STATUS: u64 = 0x20000;
const AT: BlkBuffers = BlkBuffers {
    hdr: HDR,
    data: DATA,
    status: STATUS,
};

/// A raw image file removed on drop.
struct TempImage(PathBuf);

impl TempImage {
    fn new(size: u64) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "kiln-virtio-blk-{}-{}.raw",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        TempImage(p)
    }

    fn backend(&self, read_only: bool) -> BlockBackend {
        let disk = open_disk(
            &self.0,
            DiskFormat::Raw,
            OpenOptions {
                read_only,
                direct: false,
            },
        )
        .unwrap();
        BlockBackend::new(Arc::from(disk), "kiln-disk-serial-0001-extra", read_only)
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn header(mem: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(at)).unwrap();
}

/// Offer header + data + status as three descriptors at 0, 1, 2.
fn three_part(q: &GuestQueue, kind: u32, sector: u64, data_len: u32, data_write: bool) {
    q.push_blk(0, kind, sector, AT, Some((data_len, data_write)));
}

fn status(mem: &GuestMemoryMmap) -> u8 {
    mem.read_obj(GuestAddress(STATUS)).unwrap()
}

fn run(mem: &GuestMemoryMmap, q: &mut virtio_queue::Queue, b: &mut BlockBackend) -> bool {
    let (notify, served) = process_queue(mem, q, b).unwrap();
    assert_eq!(served, Served::All);
    notify
}

#[test]
fn write_then_read_back_and_check_the_file() {
    let mem = mem_two_regions();
    let img = TempImage::new(1 << 20);
    let mut b = img.backend(false);
    let gq = GuestQueue::new(&mem, 0x1000, 16);
    let mut q = gq.queue();
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
    three_part(&gq, T_OUT, 8, 4096, false);
    assert!(run(&mem, &mut q, &mut b));
    assert_eq!(status(&mem), S_OK);
    assert_eq!(gq.used_elem(0), (0, 1));
    assert_eq!(&img.bytes()[4096..8192], &pattern[..]);

    mem.write_slice(&[0u8; 4096], GuestAddress(DATA)).unwrap();
    three_part(&gq, T_IN, 8, 4096, true);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_OK);
    assert_eq!(gq.used_elem(1), (0, 4097));
    let mut back = vec![0u8; 4096];
    mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back, pattern);
}

#[test]
fn large_requests_go_in_chunks_and_across_adjacent_regions() {
    let mem = mem_two_regions();
    let img = TempImage::new(8 << 20);
    let mut b = img.backend(false);
    let gq = GuestQueue::new(&mem, 0x1000, 16);
    let mut q = gq.queue();
    // 3 MiB + 512 starting just below the boundary of two touching regions.
    let len = (3 << 20) + 512;
    let at = 0x13f000;
    let pattern: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    mem.write_slice(&pattern, GuestAddress(at)).unwrap();
    header(&mem, HDR, T_OUT, 1);
    gq.set_desc(0, desc(HDR, 16, NEXT, 1));
    gq.set_desc(1, desc(at, len as u32, NEXT, 2));
    gq.set_desc(2, desc(STATUS, 1, WRITE, 0));
    gq.push_avail(0);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_OK);
    assert_eq!(&img.bytes()[512..512 + len], &pattern[..]);
}

#[test]
fn flush_get_id_discard_and_write_zeroes() {
    let mem = mem_two_regions();
    let img = TempImage::new(1 << 20);
    std::fs::write(&img.0, vec![0xaau8; 1 << 20]).unwrap();
    let mut b = img.backend(false);
    let gq = GuestQueue::new(&mem, 0x1000, 16);
    let mut q = gq.queue();

    header(&mem, HDR, T_FLUSH, 0);
    gq.set_desc(0, desc(HDR, 16, NEXT, 1));
    gq.set_desc(1, desc(STATUS, 1, WRITE, 0));
    gq.push_avail(0);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_OK);

    three_part(&gq, T_GET_ID, 0, 20, true);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_OK);
    let mut id = [0u8; 20];
    mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id, b"kiln-disk-serial-000");
    assert_eq!(gq.used_elem(1), (0, 21));

    // Write zeroes over sectors 2..4 (UNMAP allowed), discard sector 100.
    let mut seg = [0u8; 16];
    seg[0..8].copy_from_slice(&2u64.to_le_bytes());
    seg[8..12].copy_from_slice(&2u32.to_le_bytes());
    seg[12..16].copy_from_slice(&1u32.to_le_bytes());
    mem.write_slice(&seg, GuestAddress(DATA)).unwrap();
    three_part(&gq, T_WRITE_ZEROES, 0, 16, false);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_OK);
    let bytes = img.bytes();
    assert!(bytes[1024..2048].iter().all(|&x| x == 0));
    assert_eq!(bytes[1023], 0xaa);
    assert_eq!(bytes[2048], 0xaa);

    seg[0..8].copy_from_slice(&100u64.to_le_bytes());
    seg[12..16].copy_from_slice(&0u32.to_le_bytes());
    mem.write_slice(&seg, GuestAddress(DATA)).unwrap();
    three_part(&gq, T_DISCARD, 0, 16, false);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_OK);
    // Discard with flags, and too many segments.
    seg[12..16].copy_from_slice(&1u32.to_le_bytes());
    mem.write_slice(&seg, GuestAddress(DATA)).unwrap();
    three_part(&gq, T_DISCARD, 0, 16, false);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_UNSUPP);
    three_part(&gq, T_DISCARD, 0, 16 * (MAX_DISCARD_SEGS + 1), false);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_IOERR);
    // Zeroes past the end.
    seg[0..8].copy_from_slice(&2047u64.to_le_bytes());
    seg[12..16].copy_from_slice(&0u32.to_le_bytes());
    mem.write_slice(&seg, GuestAddress(DATA)).unwrap();
    three_part(&gq, T_WRITE_ZEROES, 0, 16, false);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_IOERR);
}

#[test]
fn read_only_disks_refuse_writes() {
    let mem = mem_two_regions();
    let img = TempImage::new(1 << 20);
    let mut b = img.backend(true);
    let gq = GuestQueue::new(&mem, 0x1000, 16);
    let mut q = gq.queue();
    mem.write_slice(&[0x55u8; 512], GuestAddress(DATA)).unwrap();
    three_part(&gq, T_OUT, 0, 512, false);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_IOERR);
    assert!(img.bytes().iter().all(|&x| x == 0));
    three_part(&gq, T_IN, 0, 512, true);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_OK);
    let dev = BlockDevice::new(b.disk.clone(), BlockOptions::default(), "vda".into());
    use crate::devices::virtio::VirtioDevice;
    assert_ne!(dev.features() & F_RO, 0);
    assert_eq!(dev.features() & F_DISCARD, 0);
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 2048);
}

#[test]
fn malformed_requests_get_an_error_status() {
    let mem = mem_two_regions();
    let img = TempImage::new(1 << 20);
    let mut b = img.backend(false);
    let gq = GuestQueue::new(&mem, 0x1000, 16);
    let mut q = gq.queue();
    // Past the end; sector * 512 overflowing; data not whole sectors.
    for (kind, sector, len, w, want) in [
        (T_IN, 2047, 1024, true, S_IOERR),
        (T_IN, u64::MAX / 2, 512, true, S_IOERR),
        (T_OUT, u64::MAX, 512, false, S_IOERR),
        (T_IN, 0, 100, true, S_IOERR),
        (T_OUT, 0, 513, false, S_IOERR),
        (77, 0, 512, true, S_UNSUPP),
    ] {
        three_part(&gq, kind, sector, len, w);
        run(&mem, &mut q, &mut b);
        assert_eq!(status(&mem), want, "type {kind} sector {sector} len {len}");
    }
    // Header shorter than 16 bytes.
    gq.set_desc(0, desc(HDR, 8, NEXT, 1));
    gq.set_desc(1, desc(STATUS, 1, WRITE, 0));
    gq.push_avail(0);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_IOERR);
    // No writable byte at all: completed with nothing written.
    header(&mem, HDR, T_IN, 0);
    gq.set_desc(0, desc(HDR, 16, 0, 0));
    gq.push_avail(0);
    run(&mem, &mut q, &mut b);
    assert_eq!(gq.used_elem(gq.used_idx() - 1), (0, 0));
    // Header split over two descriptors is fine.
    header(&mem, HDR, T_GET_ID, 0);
    gq.set_desc(0, desc(HDR, 5, NEXT, 1));
    gq.set_desc(1, desc(HDR + 5, 11, NEXT, 2));
    gq.set_desc(2, desc(DATA, 20, WRITE | NEXT, 3));
    gq.set_desc(3, desc(STATUS, 1, WRITE, 0));
    gq.push_avail(0);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_OK);
}

#[test]
fn indirect_requests_work() {
    let mem = mem_two_regions();
    let img = TempImage::new(1 << 20);
    let mut b = img.backend(false);
    let gq = GuestQueue::new(&mem, 0x1000, 16);
    let mut q = gq.queue();
    let table = 0x30000;
    header(&mem, HDR, T_OUT, 4);
    mem.write_slice(&[0x5au8; 1024], GuestAddress(DATA))
        .unwrap();
    gq.write_desc_at(table, 0, desc(HDR, 16, NEXT, 1));
    gq.write_desc_at(table, 1, desc(DATA, 1024, NEXT, 2));
    gq.write_desc_at(table, 2, desc(STATUS, 1, WRITE, 0));
    gq.set_desc(5, desc(table, 48, INDIRECT, 0));
    gq.push_avail(5);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_OK);
    assert_eq!(gq.used_elem(0), (5, 1));
    assert!(img.bytes()[2048..3072].iter().all(|&x| x == 0x5a));
}

/// The chain the backend walks every request into is kept between drains,
/// but not once a huge request (here 4101 readable segments through an
/// indirect table) has grown its lists past `KEPT_CHAIN_HEAP`.
#[test]
fn a_chain_grown_by_a_huge_request_is_not_kept() {
    let mem = mem_two_regions();
    let img = TempImage::new(4 << 20);
    let mut b = img.backend(false);
    let gq = GuestQueue::new(&mem, 0x1000, 16);
    let mut q = gq.queue();
    assert_eq!(b.kept_chain_heap(), None);
    three_part(&gq, T_IN, 0, 512, true);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_OK);
    assert_eq!(b.kept_chain_heap(), Some(0));
    // Header, 4100 data segments of one 512-byte buffer, status.
    let n: u16 = 4100;
    let table = 0x140000;
    header(&mem, HDR, T_OUT, 0);
    mem.write_slice(&[0x77u8; 512], GuestAddress(DATA)).unwrap();
    gq.write_desc_at(table, 0, desc(HDR, 16, NEXT, 1));
    for i in 1..=n {
        gq.write_desc_at(table, i, desc(DATA, 512, NEXT, i + 1));
    }
    gq.write_desc_at(table, n + 1, desc(STATUS, 1, WRITE, 0));
    gq.set_desc(3, desc(table, 16 * (u32::from(n) + 2), INDIRECT, 0));
    gq.push_avail(3);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_OK);
    assert_eq!(gq.used_elem(1), (3, 1));
    assert!(img.bytes()[..512 * usize::from(n)]
        .iter()
        .all(|&x| x == 0x77));
    assert_eq!(b.kept_chain_heap(), None, "a 64 KiB+ chain was kept");
    // The next drain walks into a fresh chain and keeps it again.
    three_part(&gq, T_IN, 0, 512, true);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_OK);
    assert_eq!(b.kept_chain_heap(), Some(0));
}

/// Every ring-protocol violation is a QueueError (the device then sets
/// NEEDS_RESET); none panics, hangs or touches memory outside the guest.
#[test]
fn hostile_chains_are_queue_errors() {
    let mem = mem_two_regions();
    let img = TempImage::new(1 << 20);
    type Setup = Box<dyn Fn(&GuestQueue)>;
    let cases: Vec<(&str, Setup)> = vec![
        (
            "loop",
            Box::new(|gq| {
                header(gq.mem, HDR, T_IN, 0);
                gq.set_desc(0, desc(HDR, 16, NEXT, 1));
                gq.set_desc(1, desc(DATA, 512, WRITE | NEXT, 0));
                gq.push_avail(0);
            }),
        ),
        (
            "data outside guest memory",
            Box::new(|gq| {
                header(gq.mem, HDR, T_IN, 0);
                gq.set_desc(0, desc(HDR, 16, NEXT, 1));
                gq.set_desc(1, desc(0x3_0000_0000, 512, WRITE | NEXT, 2));
                gq.set_desc(2, desc(STATUS, 1, WRITE, 0));
                gq.push_avail(0);
            }),
        ),
        (
            "data across the hole between regions",
            Box::new(|gq| {
                header(gq.mem, HDR, T_IN, 0);
                gq.set_desc(0, desc(HDR, 16, NEXT, 1));
                gq.set_desc(1, desc(0x3fe00, 1024, WRITE | NEXT, 2));
                gq.set_desc(2, desc(STATUS, 1, WRITE, 0));
                gq.push_avail(0);
            }),
        ),
        (
            "nested indirect",
            Box::new(|gq| {
                gq.write_desc_at(0x30000, 0, desc(0x30000, 16, INDIRECT, 0));
                gq.set_desc(0, desc(0x30000, 16, INDIRECT, 0));
                gq.push_avail(0);
            }),
        ),
        (
            "avail idx beyond the queue size",
            Box::new(|gq| gq.set_avail_idx(gq.size + 1)),
        ),
        ("head outside the table", Box::new(|gq| gq.push_avail(300))),
        (
            "huge length wrapping the address space",
            Box::new(|gq| {
                gq.set_desc(0, desc(u64::MAX - 8, 4096, WRITE, 0));
                gq.push_avail(0);
            }),
        ),
    ];
    for (name, setup) in cases {
        let gq = GuestQueue::new(&mem, 0x1000, 16);
        let mut q = gq.queue();
        let mut b = img.backend(false);
        setup(&gq);
        let r = process_queue(&mem, &mut q, &mut b);
        assert!(
            matches!(r, Err(QueueError::AvailIndex | QueueError::Chain { .. })),
            "{name}: {r:?}"
        );
        assert_eq!(gq.used_idx(), 0, "{name}: nothing completed");
    }
}

#[test]
fn rate_limiter_throttles_and_resumes() {
    let mem = mem_two_regions();
    let img = TempImage::new(1 << 20);
    let mut b = img.backend(false);
    b.limiter = Some(
        RateLimiter::new(
            None,
            TokenBucket::new(1, 0, std::time::Duration::from_millis(20)),
        )
        .unwrap(),
    );
    let gq = GuestQueue::new(&mem, 0x1000, 16);
    let mut q = gq.queue();
    header(&mem, HDR, T_FLUSH, 0);
    header(&mem, 0x10100, T_FLUSH, 0);
    gq.set_desc(0, desc(HDR, 16, NEXT, 1));
    gq.set_desc(1, desc(STATUS, 1, WRITE, 0));
    gq.set_desc(2, desc(0x10100, 16, NEXT, 3));
    gq.set_desc(3, desc(STATUS + 1, 1, WRITE, 0));
    gq.push_avail(0);
    gq.push_avail(2);
    let (_, served) = process_queue(&mem, &mut q, &mut b).unwrap();
    assert_eq!(served, Served::Throttled);
    assert_eq!(gq.used_idx(), 1);
    b.limiter.as_mut().unwrap().on_timer();
    let (_, served) = process_queue(&mem, &mut q, &mut b).unwrap();
    assert_eq!(served, Served::All);
    assert_eq!(gq.used_idx(), 2);
    assert_eq!(gq.used_elem(1), (2, 1));
}

/// Throughput of the device path (requests in guest memory, served by
/// `process_queue` from a real file) against the same reads and writes
/// done directly on the file, in one run. Page-cache resident, so it
/// measures the device path's own overhead. Run with
/// `cargo test -p kiln-vmm --release -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput_against_direct_file_io() {
    use std::os::unix::fs::FileExt;
    use std::time::Instant;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
    let img = TempImage::new(256 << 20);
    std::fs::write(&img.0, vec![0x3cu8; 256 << 20]).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img.0)
        .unwrap();
    let mut b = img.backend(false);
    let qsize = 256u16;
    let batch = 64u16;
    // Pseudo-random sector offsets (xorshift), the same for both paths.
    let offsets = |n: usize, bs: u64, random: bool| -> Vec<u64> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n as u64)
            .map(|i| {
                if random {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % ((256 << 20) / bs)) * bs
                } else {
                    (i * bs) % (256 << 20)
                }
            })
            .collect()
    };
    for (name, bs, random, write) in [
        ("4k-randread", 4096u64, true, false),
        ("4k-randwrite", 4096, true, true),
        ("64k-seqread", 65536, false, false),
        ("64k-seqwrite", 65536, false, true),
    ] {
        let n = if bs == 4096 { 40_000 } else { 8_000 };
        let offs = offsets(n, bs, random);
        // Best of three rounds each, alternating, against the noise of a
        // shared machine.
        let mut buf = vec![0u8; bs as usize];
        let (mut direct, mut device) = (std::time::Duration::MAX, std::time::Duration::MAX);
        let gq = GuestQueue::new(&mem, 0x1000, qsize);
        let mut q = gq.queue();
        for _round in 0..3 {
            let t = Instant::now();
            for &o in &offs {
                if write {
                    file.write_all_at(&buf, o).unwrap();
                } else {
                    file.read_exact_at(&mut buf, o).unwrap();
                }
            }
            direct = direct.min(t.elapsed());
            // Device path: batches of chains (header, data, status); only
            // the device's work is timed, not the test playing the driver.
            let mut spent = std::time::Duration::ZERO;
            for chunk in offs.chunks(usize::from(batch)) {
                for (k, &o) in chunk.iter().enumerate() {
                    let k = k as u16;
                    let hdr = 0x100000 + u64::from(k) * 16;
                    let data = 0x200000 + u64::from(k) * bs;
                    let status = 0x180000 + u64::from(k);
                    header(&mem, hdr, if write { T_OUT } else { T_IN }, o / 512);
                    let f = if write { NEXT } else { NEXT | WRITE };
                    gq.set_desc(3 * k, desc(hdr, 16, NEXT, 3 * k + 1));
                    gq.set_desc(3 * k + 1, desc(data, bs as u32, f, 3 * k + 2));
                    gq.set_desc(3 * k + 2, desc(status, 1, WRITE, 0));
                    mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
                    gq.push_avail(3 * k);
                }
                let t = Instant::now();
                process_queue(&mem, &mut q, &mut b).unwrap();
                spent += t.elapsed();
                for k in 0..chunk.len() as u64 {
                    assert_eq!(
                        mem.read_obj::<u8>(GuestAddress(0x180000 + k)).unwrap(),
                        S_OK
                    );
                }
            }
            device = device.min(spent);
        }
        assert_eq!(gq.used_idx(), (3 * n) as u16);
        let mb = |d: std::time::Duration| (n as f64 * bs as f64) / d.as_secs_f64() / 1e6;
        println!(
            "{name}: direct {:.0} MB/s, device path {:.0} MB/s, ratio {:.2}",
            mb(direct),
            mb(device),
            mb(device) / mb(direct)
        );
    }
}

#[test]
fn header_with_data_and_data_with_status_in_one_descriptor() {
    let mem = mem_two_regions();
    let img = TempImage::new(1 << 20);
    let mut b = img.backend(false);
    let gq = GuestQueue::new(&mem, 0x1000, 16);
    let mut q = gq.queue();
    // A write whose header and 1 KiB of data share one readable buffer.
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 13 + 5) as u8).collect();
    header(&mem, HDR, T_OUT, 3);
    mem.write_slice(&pattern, GuestAddress(HDR + 16)).unwrap();
    mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    gq.set_desc(0, desc(HDR, 16 + 1024, NEXT, 1));
    gq.set_desc(1, desc(STATUS, 1, WRITE, 0));
    gq.push_avail(0);
    run(&mem, &mut q, &mut b);
    assert_eq!(status(&mem), S_OK);
    assert_eq!(&img.bytes()[3 * 512..3 * 512 + 1024], &pattern[..]);
    // A read whose data and status byte share one writable buffer.
    header(&mem, HDR, T_IN, 3);
    mem.write_slice(&[0xeeu8; 1025], GuestAddress(DATA))
        .unwrap();
    gq.set_desc(2, desc(HDR, 16, NEXT, 3));
    gq.set_desc(3, desc(DATA, 1025, WRITE, 0));
    gq.push_avail(2);
    run(&mem, &mut q, &mut b);
    assert_eq!(gq.used_elem(1), (2, 1025));
    let mut back = vec![0u8; 1025];
    mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(&back[..1024], &pattern[..]);
    assert_eq!(back[1024], S_OK);
}
