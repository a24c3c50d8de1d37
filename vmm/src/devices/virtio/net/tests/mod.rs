//! virtio-net request handling against in-process guest memory and a real
//! tap, created inside a network namespace private to the test's thread
//! (`unshare(CLONE_NEWNET)`, the in-process `unshare -n`): the "guest"
//! sends an ARP request through the transmit queue and the host kernel's
//! ARP reply comes back through the receive queue.

mod mq;

use std::process::Command;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use crate::devices::GuestMemoryMmap;

use super::*;
use crate::devices::virtio::queue::QueueError;
use crate::devices::virtio::testing::{desc, mem_two_regions, GuestQueue};
use crate::net::tap::Tap;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const HOST_IP: [u8; 4] = [10, 9, 0, 1];
const GUEST_IP: [u8; 4] = [10, 9, 0, 2];

/// Run `f` on a thread in a fresh network namespace with tap `kt0` up at
/// 10.9.0.1/24. The namespace goes away with the thread.
fn in_netns_with_tap(f: impl FnOnce(Tap) + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespaces.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        // Only the test's frames: no IPv6 neighbour discovery on the tap.
        let st = Command::new("sysctl")
            .args(["-qw", "net.ipv6.conf.default.disable_ipv6=1"])
            .status()
            .expect("run sysctl");
        assert!(st.success(), "sysctl disable_ipv6");
        let tap = Tap::open_named("kt0", false).expect("tap in the test namespace");
        assert_eq!(tap.name(), "kt0");
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", "10.9.0.1/24", "dev", "kt0"],
            &["link", "set", "kt0", "up"],
        ] {
            let st = Command::new("ip").args(args).status().expect("run ip");
            assert!(st.success(), "ip {args:?}");
        }
        f(tap);
    })
    .join()
    .unwrap();
}

fn arp_request() -> Vec<u8> {
    let mut f = vec![0u8; NET_HDR_LEN];
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&GUEST_IP);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&HOST_IP);
    f.resize(NET_HDR_LEN + 60, 0);
    f
}

fn is_arp_reply(frame: &[u8]) -> bool {
    let e = &frame[NET_HDR_LEN..];
    e.len() >= 42
        && e[0..6] == GUEST_MAC
        && e[12..14] == [8, 6]
        && e[20..22] == [0, 2]
        && e[28..32] == HOST_IP
}

#[test]
fn arp_through_a_real_tap() {
    in_netns_with_tap(|mut tap| {
        let mem = mem_two_regions();
        let txq = GuestQueue::new(&mem, 0x1000, 16);
        let rxq = GuestQueue::new(&mem, 0x3000, 16);
        let (mut tx, mut rx) = (txq.queue(), rxq.queue());
        // Transmit: header and frame split over two descriptors.
        let req = arp_request();
        mem.write_slice(&req, GuestAddress(0x10000)).unwrap();
        txq.set_desc(0, desc(0x10000, NET_HDR_LEN as u32, 1, 1));
        txq.set_desc(
            1,
            desc(
                0x10000 + NET_HDR_LEN as u64,
                (req.len() - NET_HDR_LEN) as u32,
                0,
                0,
            ),
        );
        txq.push_avail(0);
        let mut buf = Vec::new();
        let (notify, throttled) = process_tx(&mem, &mut tx, &mut tap, &mut buf, None).unwrap();
        assert!(notify && !throttled);
        assert_eq!(txq.used_elem(0), (0, 0));

        // Receive: offer 16 buffers of 2 KiB and wait for the ARP reply.
        for i in 0..16u16 {
            rxq.set_desc(i, desc(0x100000 + u64::from(i) * 0x800, 0x800, 2, 0));
            rxq.push_avail(i);
        }
        let mut pending = RxBacklog::default();
        let t0 = Instant::now();
        let mut found = false;
        let mut seen = 0;
        while !found && t0.elapsed() < Duration::from_secs(3) {
            let (_, state) = process_rx(&mem, &mut rx, &mut tap, &mut pending).unwrap();
            assert_eq!(state, RxState::Drained);
            while seen < rxq.used_idx() {
                let (id, len) = rxq.used_elem(seen);
                let mut f = vec![0u8; len as usize];
                mem.read_slice(&mut f, GuestAddress(0x100000 + u64::from(id) * 0x800))
                    .unwrap();
                assert_eq!(u16::from_le_bytes([f[10], f[11]]), 1, "num_buffers");
                found |= is_arp_reply(&f);
                seen += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(found, "the host's ARP reply came back through the rx queue");
    });
}

#[test]
fn rx_without_buffers_leaves_frames_in_the_tap_and_small_buffers_drop_them() {
    in_netns_with_tap(|mut tap| {
        let mem = mem_two_regions();
        let txq = GuestQueue::new(&mem, 0x1000, 16);
        let rxq = GuestQueue::new(&mem, 0x3000, 16);
        let (mut tx, mut rx) = (txq.queue(), rxq.queue());
        let req = arp_request();
        mem.write_slice(&req, GuestAddress(0x10000)).unwrap();
        txq.set_desc(0, desc(0x10000, req.len() as u32, 0, 0));
        txq.push_avail(0);
        process_tx(&mem, &mut tx, &mut tap, &mut Vec::new(), None).unwrap();
        // No buffers: nothing is read, the reply waits in the tap.
        let mut pending = RxBacklog::default();
        let (notify, state) = process_rx(&mem, &mut rx, &mut tap, &mut pending).unwrap();
        assert!(!notify);
        assert_eq!(state, RxState::NoBuffers);
        assert!(pending.frame.is_none());
        wait_readable(&tap);
        // A buffer too small for it: dropped, the buffer stays available.
        rxq.set_desc(0, desc(0x100000, 20, 2, 0));
        rxq.push_avail(0);
        let (_, state) = process_rx(&mem, &mut rx, &mut tap, &mut pending).unwrap();
        assert_eq!(state, RxState::Drained);
        assert!(pending.frame.is_none());
        assert_eq!(rxq.used_idx(), 0);
        // The reply was taken from the tap (other frames, IPv6 neighbour
        // discovery, may follow it).
        let mut b = [0u8; 2048];
        while let Ok(n) = tap.read(&mut b) {
            assert!(!is_arp_reply(&b[..n]), "the ARP reply is still in the tap");
        }
    });
}

/// Wait (up to 3 s) until the tap has a frame.
fn wait_readable(tap: &Tap) {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: tap.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, 3000) };
    assert_eq!(r, 1, "a frame arrived in the tap");
}

#[test]
fn hostile_tx_chains() {
    in_netns_with_tap(|mut tap| {
        let mem = mem_two_regions();
        // Too short and too long frames are dropped, not sent, and returned.
        let gq = GuestQueue::new(&mem, 0x1000, 16);
        let mut q = gq.queue();
        gq.set_desc(0, desc(0x10000, 4, 0, 0));
        gq.set_desc(1, desc(0x100000, (MAX_FRAME + 1) as u32, 0, 0));
        gq.push_avail(0);
        gq.push_avail(1);
        process_tx(&mem, &mut q, &mut tap, &mut Vec::new(), None).unwrap();
        assert_eq!(gq.used_idx(), 2);
        // A loop is a queue error.
        let gq = GuestQueue::new(&mem, 0x1000, 16);
        let mut q = gq.queue();
        gq.set_desc(0, desc(0x10000, 64, 1, 0));
        gq.push_avail(0);
        assert!(matches!(
            process_tx(&mem, &mut q, &mut tap, &mut Vec::new(), None),
            Err(QueueError::Chain { .. })
        ));
        // A receive buffer outside guest memory is a queue error too
        // (once a frame arrives to be put there).
        let gq = GuestQueue::new(&mem, 0x3000, 16);
        let mut q = gq.queue();
        gq.set_desc(0, desc(0x9_0000_0000, 2048, 2, 0));
        gq.push_avail(0);
        let mut pending = RxBacklog::default();
        pending.frame = Some(arp_request());
        assert!(process_rx(&mem, &mut q, &mut tap, &mut pending).is_err());
    });
}

/// A transmit chain claiming more than a frame is dropped and charged as
/// nothing sent (one operation), so it puts no debt on the bytes bucket:
/// the valid frame after it goes at once.
#[test]
fn a_dropped_tx_chain_costs_no_bytes() {
    use crate::devices::virtio::rate_limiter::{RateLimiter, TokenBucket};
    in_netns_with_tap(|mut tap| {
        let mem = mem_two_regions();
        let gq = GuestQueue::new(&mem, 0x1000, 16);
        let mut q = gq.queue();
        // 4 MiB in guest memory: 32 times the 128 KiB bucket.
        gq.set_desc(0, desc(0x140000, 4 << 20, 0, 0));
        let req = arp_request();
        mem.write_slice(&req, GuestAddress(0x10000)).unwrap();
        gq.set_desc(1, desc(0x10000, req.len() as u32, 0, 0));
        gq.push_avail(0);
        gq.push_avail(1);
        let bw = TokenBucket::new(128 << 10, 0, Duration::from_millis(100));
        let mut l = RateLimiter::new(bw, None).unwrap();
        let (_, throttled) =
            process_tx(&mem, &mut q, &mut tap, &mut Vec::new(), Some(&mut l)).unwrap();
        assert!(!throttled, "the dropped chain left a debt");
        assert_eq!(gq.used_idx(), 2);
        assert!(!l.is_blocked());
    });
}

#[test]
fn offloads_follow_guest_features() {
    use crate::net::tap::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
    assert_eq!(
        NetDevice::tap_offloads(F_GUEST_TSO4),
        0,
        "TSO needs checksum offload"
    );
    assert_eq!(
        NetDevice::tap_offloads(F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6),
        TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
    );
}

/// Transmit throughput through a real tap: 1514-byte frames (to a MAC
/// nobody has, so the host drops them after the tap), batches of 128.
/// Run with `cargo test -p kiln-vmm --release -- --ignored --nocapture
/// tx_throughput`.
#[test]
#[ignore]
fn tx_throughput_through_a_real_tap() {
    in_netns_with_tap(|mut tap| {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let gq = GuestQueue::new(&mem, 0x1000, 256);
        let mut q = gq.queue();
        let frame_len = NET_HDR_LEN + 1514;
        let mut frame = vec![0u8; frame_len];
        frame[NET_HDR_LEN..NET_HDR_LEN + 6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        frame[NET_HDR_LEN + 6..NET_HDR_LEN + 12].copy_from_slice(&GUEST_MAC);
        frame[NET_HDR_LEN + 12..NET_HDR_LEN + 14].copy_from_slice(&[0x08, 0x00]);
        for k in 0..128u64 {
            mem.write_slice(&frame, GuestAddress(0x100000 + k * 2048))
                .unwrap();
        }
        let rounds = 2000;
        let mut buf = Vec::new();
        let mut spent = Duration::ZERO;
        for _ in 0..rounds {
            for k in 0..128u16 {
                gq.set_desc(
                    k,
                    desc(0x100000 + u64::from(k) * 2048, frame_len as u32, 0, 0),
                );
                gq.push_avail(k);
            }
            let t = Instant::now();
            process_tx(&mem, &mut q, &mut tap, &mut buf, None).unwrap();
            spent += t.elapsed();
        }
        let frames = rounds as f64 * 128.0;
        assert_eq!(gq.used_idx(), (rounds * 128) as u16);
        println!(
            "virtio-net tx: {:.0} frames/s, {:.2} Gbit/s of 1514-byte frames",
            frames / spent.as_secs_f64(),
            frames * 1514.0 * 8.0 / spent.as_secs_f64() / 1e9
        );
    });
}
