//! virtio-blk under a bytes rate limit: requests larger than the bucket,
//! served by `process_queue` from a real file into in-process guest memory,
//! retried when the limiter's real timerfd fires, get no more than the rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_block::{open_disk, DiskFormat, OpenOptions};
use vm_memory::{Bytes, GuestAddress};

use super::super::*;
use crate::devices::virtio::rate_limiter::{RateLimiter, TokenBucket};
use crate::devices::virtio::testing::{
    desc, mem_two_regions, GuestQueue, DESC_NEXT as NEXT, DESC_WRITE as WRITE,
};

const HDR: u64 = 0x10000;
const STATUS: u64 = 0x20000;
const DATA: u64 = 0x200000;

/// Bytes bucket: 1 KiB refilled each millisecond (1000 KiB/s).
const BUCKET: u64 = 1024;
const REFILL: Duration = Duration::from_millis(1);
/// Each read moves 256 times the bucket.
const REQ: u32 = 256 << 10;

#[test]
fn large_requests_are_throttled_to_the_byte_rate() {
    let path = std::env::temp_dir().join(format!("kiln-blk-limit-{}.raw", std::process::id()));
    std::fs::write(&path, vec![0x5au8; 1 << 20]).unwrap();
    let disk = open_disk(&path, DiskFormat::Raw, OpenOptions::default()).unwrap();
    let _ = std::fs::remove_file(&path);
    let mut b = BlockBackend::new(Arc::from(disk), "limit", false);
    let mem = mem_two_regions();
    let gq = GuestQueue::new(&mem, 0x1000, 16);
    let mut q = gq.queue();
    // One read of REQ bytes at sector 0, offered again each time it is done.
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&T_IN.to_le_bytes());
    mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    gq.set_desc(0, desc(HDR, 16, NEXT, 1));
    gq.set_desc(1, desc(DATA, REQ, WRITE | NEXT, 2));
    gq.set_desc(2, desc(STATUS, 1, WRITE, 0));

    // The bucket starts full at `created`; every refill is counted from it.
    let created = Instant::now();
    let bw = TokenBucket::new(BUCKET, 0, REFILL);
    b.limiter = Some(RateLimiter::new(bw, None).unwrap());
    let (mut offered, mut throttled) = (0u16, 0u32);
    while created.elapsed() < Duration::from_millis(600) {
        if gq.used_idx() == offered {
            mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
            gq.push_avail(0);
            offered = offered.wrapping_add(1);
        }
        let (_, s) = process_queue(&mem, &mut q, &mut b).unwrap();
        if s == Served::Throttled {
            throttled += 1;
            // Blocks until the timer the limiter armed fires.
            b.limiter.as_mut().unwrap().on_timer();
        }
    }
    let elapsed = created.elapsed();
    let served = u64::from(gq.used_idx());
    // Each served request really moved its bytes (the used length counts
    // the data only when the status is OK).
    assert!(served >= 1);
    for i in 0..served.min(16) as u16 {
        assert_eq!(gq.used_elem(i), (0, REQ + 1));
    }
    let mut data = vec![0u8; REQ as usize];
    mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
    assert!(data.iter().all(|&x| x == 0x5a));
    // What passed: at most the refill since the start, plus the full
    // bucket at the start, plus the excess of the last request. Measured
    // after the last request, so a slow machine only loosens the bound.
    let refilled = elapsed.as_nanos() * u128::from(BUCKET) / REFILL.as_nanos();
    let bound = refilled + u128::from(BUCKET) + u128::from(REQ);
    let passed = u128::from(served) * u128::from(REQ);
    assert!(
        passed <= bound,
        "{served} requests of {REQ} bytes in {elapsed:?}: {passed} bytes, the rate allows {bound}"
    );
    assert!(throttled >= 1, "the limiter never refused");
}
