//! The whole NIC through the virtio-pci transport, as a driver drives it,
//! with its real worker thread and a real multi-queue tap in a network
//! namespace private to the test's thread: multiqueue negotiation, the
//! control queue (valid and hostile commands), receive and transmit on
//! queue pair 1, link down/up with the configuration interrupt and
//! generation, and the receive rate limiter.

use std::net::UdpSocket;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_api::vm::{RateLimitConfig, TokenBucketConfig};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::devices::pci::PciDevice;
use crate::devices::virtio::msix::tests::RecordingVectors;
use crate::devices::virtio::rate_limiter::RateLimiter;
use crate::devices::virtio::test_utils::{desc, mem_two_regions, GuestQueue};
use crate::devices::virtio::transport::{VirtioPciDevice, DEVICE_CFG_OFFSET, MSIX_TABLE_OFFSET};
use crate::devices::virtio::{
    VirtioDevice, F_VERSION_1, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK,
    STATUS_FEATURES_OK, STATUS_NEEDS_RESET,
};
use crate::memory::GuestMemoryMmap;
use crate::net::tap::Tap;
use crate::net::MacAddr;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x57];
const QSIZE: u16 = 16;
const BUF: u64 = 0x800;

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?}");
}

/// Run `f` on a thread in a fresh network namespace (IPv6 off) with the
/// `queues`-queue tap `kmq0` up at 10.9.1.1/24 and the guest's address
/// 10.9.1.2 resolved to [`GUEST_MAC`].
fn in_netns_with_mq_tap(queues: usize, f: impl FnOnce(Vec<Tap>) + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespaces.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
        let st = Command::new("sysctl")
            .args(["-qw", "net.ipv6.conf.default.disable_ipv6=1"])
            .status()
            .expect("run sysctl");
        assert!(st.success());
        let taps = Tap::open_queues("kmq0", queues).expect("multi-queue tap");
        assert_eq!(taps.len(), queues);
        ip(&["link", "set", "lo", "up"]);
        ip(&["addr", "add", "10.9.1.1/24", "dev", "kmq0"]);
        ip(&["link", "set", "kmq0", "up"]);
        ip(&[
            "neigh",
            "add",
            "10.9.1.2",
            "lladdr",
            "52:54:00:12:34:57",
            "dev",
            "kmq0",
        ]);
        f(taps);
    })
    .join()
    .unwrap();
}

/// Send one UDP datagram from the host to the guest's address on each
/// port in `ports` (distinct flows, which the tap spreads over its queues).
fn host_sends(ports: std::ops::Range<u16>) {
    for p in ports {
        let s = UdpSocket::bind(("10.9.1.1", 0)).unwrap();
        s.send_to(b"kiln-mq", ("10.9.1.2", p)).unwrap();
    }
}

fn arp_request() -> Vec<u8> {
    let mut f = vec![0u8; NET_HDR_LEN];
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[10, 9, 1, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 9, 1, 1]);
    f.resize(NET_HDR_LEN + 60, 0);
    f
}

fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A driver of the NIC: the transport, its queues in guest memory.
struct Driver<'a> {
    dev: VirtioPciDevice,
    mem: &'a GuestMemoryMmap,
    queues: Vec<GuestQueue<'a>>,
    vectors: Arc<RecordingVectors>,
    /// Next free byte of the control queue's command area.
    ctrl_next: u16,
}

impl<'a> Driver<'a> {
    fn new(mem: &'a GuestMemoryMmap, net: NetDevice) -> Self {
        let vectors = Arc::new(RecordingVectors::default());
        let dev = VirtioPciDevice::new(Box::new(net), mem.clone(), vectors.clone(), 0).unwrap();
        Driver {
            dev,
            mem,
            queues: Vec::new(),
            vectors,
            ctrl_next: 0,
        }
    }
    fn w8(&mut self, off: u64, v: u8) {
        self.dev.bar_write(0, off, &[v]);
    }
    fn w16(&mut self, off: u64, v: u16) {
        self.dev.bar_write(0, off, &v.to_le_bytes());
    }
    fn w32(&mut self, off: u64, v: u32) {
        self.dev.bar_write(0, off, &v.to_le_bytes());
    }
    fn r8(&mut self, off: u64) -> u8 {
        let mut b = [0u8; 1];
        self.dev.bar_read(0, off, &mut b);
        b[0]
    }
    fn r16(&mut self, off: u64) -> u16 {
        let mut b = [0u8; 2];
        self.dev.bar_read(0, off, &mut b);
        u16::from_le_bytes(b)
    }
    fn features(&mut self) -> u64 {
        self.w32(0, 0);
        let mut b = [0u8; 4];
        self.dev.bar_read(0, 4, &mut b);
        let lo = u32::from_le_bytes(b);
        self.w32(0, 1);
        self.dev.bar_read(0, 4, &mut b);
        u64::from(lo) | u64::from(u32::from_le_bytes(b)) << 32
    }
    fn generation(&mut self) -> u8 {
        self.r8(0x15)
    }
    /// Configuration space: (status, max_virtqueue_pairs).
    fn config(&mut self) -> (u16, u16) {
        (
            self.r16(DEVICE_CFG_OFFSET + 6),
            self.r16(DEVICE_CFG_OFFSET + 8),
        )
    }

    fn enable_msix(&mut self) {
        let mut ptr = (self.dev.config_read(13) & 0xff) as usize;
        while ptr != 0 {
            let r0 = self.dev.config_read(ptr / 4);
            if r0 & 0xff == 0x11 {
                self.dev.config_write(ptr / 4, 3, &[0x80]);
                return;
            }
            ptr = ((r0 >> 8) & 0xff) as usize;
        }
        panic!("no MSI-X capability");
    }

    /// Negotiate `features`, set up `n` queues (queue q on vector q,
    /// configuration changes on vector `n`), DRIVER_OK.
    fn setup(&mut self, features: u64, n: usize) -> u8 {
        self.enable_msix();
        self.w8(0x14, 0);
        self.w8(0x14, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        self.w32(0x08, 0);
        self.w32(0x0c, features as u32);
        self.w32(0x08, 1);
        self.w32(0x0c, (features >> 32) as u32);
        self.w8(
            0x14,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_ne!(self.r8(0x14) & STATUS_FEATURES_OK, 0, "features accepted");
        for v in 0..=n as u64 {
            let e = MSIX_TABLE_OFFSET + 16 * v;
            self.w32(e, 0xfee0_0000);
            self.w32(e + 4, 0);
            self.w32(e + 8, 0x40 + v as u32);
            self.w32(e + 12, 0);
        }
        self.w16(0x10, n as u16);
        self.queues.clear();
        for q in 0..n {
            let gq = GuestQueue::new(self.mem, 0x1000 + 0x1000 * q as u64, QSIZE);
            self.w16(0x16, q as u16);
            self.w16(0x18, QSIZE);
            self.w16(0x1a, q as u16);
            for (off, v) in [(0x20, gq.desc_table), (0x28, gq.avail), (0x30, gq.used)] {
                self.w32(off, v as u32);
                self.w32(off + 4, (v >> 32) as u32);
            }
            self.w16(0x1c, 1);
            self.queues.push(gq);
        }
        self.w8(
            0x14,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        self.r8(0x14)
    }

    fn buf(q: usize, i: u16) -> u64 {
        0x200000 + 0x10000 * q as u64 + BUF * u64::from(i)
    }

    fn notify(&self, q: usize) {
        self.dev.queue_evts()[q].write(1).unwrap();
    }

    /// Offer every receive buffer of receive queue `q`.
    fn offer_rx(&mut self, q: usize) {
        for i in 0..QSIZE {
            self.queues[q].set_desc(i, desc(Self::buf(q, i), BUF as u32, 2, 0));
            self.queues[q].push_avail(i);
        }
        self.notify(q);
    }

    /// Frames received on receive queue `q` so far.
    fn received(&self, q: usize) -> Vec<Vec<u8>> {
        let gq = &self.queues[q];
        (0..gq.used_idx())
            .map(|u| {
                let (id, len) = gq.used_elem(u);
                let mut f = vec![0u8; len as usize];
                self.mem
                    .read_slice(&mut f, GuestAddress(Self::buf(q, id as u16)))
                    .unwrap();
                f
            })
            .collect()
    }

    /// Transmit `frame` on transmit queue `q` (descriptor `slot`).
    fn send(&mut self, q: usize, slot: u16, frame: &[u8]) {
        let at = Self::buf(q, slot);
        self.mem.write_slice(frame, GuestAddress(at)).unwrap();
        self.queues[q].set_desc(slot, desc(at, frame.len() as u32, 0, 0));
        self.queues[q].push_avail(slot);
        self.notify(q);
    }

    /// Send control command `cmd` (readable) with `ack_len` writable bytes
    /// on queue `q`; the ack byte (None: used length 0) once it is used.
    fn command(&mut self, q: usize, cmd: &[u8], ack_len: u32) -> Option<u8> {
        let slot = self.ctrl_next % QSIZE;
        self.ctrl_next += 2;
        let at = Self::buf(q, slot);
        self.mem.write_slice(cmd, GuestAddress(at)).unwrap();
        self.mem
            .write_slice(&[0xaa; 8], GuestAddress(at + 0x400))
            .unwrap();
        let gq = &self.queues[q];
        let before = gq.used_idx();
        if ack_len == 0 {
            gq.set_desc(slot, desc(at, cmd.len() as u32, 0, 0));
        } else {
            gq.set_desc(slot, desc(at, cmd.len() as u32, 1, slot + 1));
            gq.set_desc(slot + 1, desc(at + 0x400, ack_len, 2, 0));
        }
        gq.push_avail(slot);
        self.notify(q);
        let gq = &self.queues[q];
        let ok = wait_for(|| gq.used_idx() != before);
        assert!(ok, "command {cmd:?} answered; status {:#x}", self.r8(0x14));
        let (id, len) = gq.used_elem(before);
        assert_eq!(id, u32::from(slot));
        if len == 0 {
            return None;
        }
        assert_eq!(len, 1);
        let ack: u8 = self
            .mem
            .read_obj(GuestAddress(at + 0x400 + u64::from(ack_len) - 1))
            .unwrap();
        Some(ack)
    }
}

fn is_udp_to_guest(f: &[u8]) -> bool {
    let e = &f[NET_HDR_LEN..];
    e.len() >= 42 && e[0..6] == GUEST_MAC && e[12..14] == [8, 0] && e[23] == 17
}

fn is_arp_reply(f: &[u8]) -> bool {
    let e = &f[NET_HDR_LEN..];
    e.len() >= 42 && e[0..6] == GUEST_MAC && e[12..14] == [8, 6] && e[20..22] == [0, 2]
}

const FEATURES: u64 = F_VERSION_1 | F_MAC | F_STATUS | F_MQ | F_CTRL_VQ;

#[test]
fn multiqueue_control_queue_and_pair_1() {
    in_netns_with_mq_tap(2, |taps| {
        let mem = mem_two_regions();
        let net = NetDevice::new(taps, MacAddr(GUEST_MAC), None, None, "vnet-mq".into()).unwrap();
        assert_eq!(
            net.queue_max_sizes().len(),
            5,
            "2 pairs and the control queue"
        );
        let mut d = Driver::new(&mem, net);
        let offered = d.features();
        assert_eq!(offered & (F_MQ | F_CTRL_VQ), F_MQ | F_CTRL_VQ);
        assert_eq!(d.r16(0x12), 5, "num_queues");
        assert_eq!(d.config(), (STATUS_LINK_UP, 2));
        let st = d.setup(FEATURES, 5);
        assert_eq!(st & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
        d.offer_rx(0);
        d.offer_rx(2);

        // One pair until VQ_PAIRS_SET: 32 flows all arrive on pair 0.
        host_sends(5000..5032);
        assert!(wait_for(|| d
            .received(0)
            .iter()
            .filter(|f| is_udp_to_guest(f))
            .count()
            == 16));
        assert!(
            d.received(2).is_empty(),
            "nothing on pair 1 before VQ_PAIRS_SET"
        );
        // Make room again on pair 0 (the same buffers, offered again).
        for i in 0..QSIZE {
            d.queues[0].push_avail(i);
        }
        d.notify(0);

        // Hostile and invalid commands: ERR (or no answer without an ack
        // byte), never a panic or NEEDS_RESET.
        assert_eq!(d.command(4, &[4], 1), Some(CTRL_ERR), "short header");
        assert_eq!(d.command(4, &[], 1), Some(CTRL_ERR), "empty command");
        assert_eq!(d.command(4, &[9, 0, 2, 0], 1), Some(CTRL_ERR), "bad class");
        assert_eq!(
            d.command(4, &[4, 7, 2, 0], 1),
            Some(CTRL_ERR),
            "bad command"
        );
        assert_eq!(
            d.command(4, &[4, 0, 3, 0], 1),
            Some(CTRL_ERR),
            "3 pairs of 2"
        );
        assert_eq!(d.command(4, &[4, 0, 0xff, 0xff], 1), Some(CTRL_ERR), "huge");
        assert_eq!(d.command(4, &[4, 0, 0, 0], 1), Some(CTRL_ERR), "0 pairs");
        assert_eq!(d.command(4, &[4, 0, 2], 1), Some(CTRL_ERR), "short data");
        assert_eq!(
            d.command(4, &[4, 0, 2, 0, 0], 1),
            Some(CTRL_ERR),
            "long data"
        );
        assert_eq!(d.command(4, &[4, 0, 2, 0], 0), None, "no ack byte");
        assert_eq!(d.r8(0x14) & STATUS_NEEDS_RESET, 0);
        // The ack is the last writable byte.
        assert_eq!(d.command(4, &[4, 0, 1, 0], 4), Some(CTRL_OK));
        assert_eq!(d.command(4, &[4, 0, 2, 0], 1), Some(CTRL_OK));

        // Now flows spread over both tap queues; pair 1 receives some.
        let t0 = Instant::now();
        let mut port = 6000;
        while d.received(2).iter().filter(|f| is_udp_to_guest(f)).count() < 3
            && t0.elapsed() < Duration::from_secs(5)
        {
            host_sends(port..port + 8);
            port += 8;
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            d.received(2).iter().filter(|f| is_udp_to_guest(f)).count() >= 3,
            "UDP frames received on pair 1 after VQ_PAIRS_SET 2"
        );
        assert!(
            d.vectors.fired.lock().unwrap().contains(&2),
            "rx 1 interrupt"
        );

        // Transmit on pair 1: the host answers the ARP request.
        let arp = arp_request();
        d.send(3, 0, &arp);
        assert!(wait_for(|| d.queues[3].used_idx() == 1), "tx 1 used");
        assert!(
            wait_for(|| d.received(2).iter().any(|f| is_arp_reply(f))
                || d.received(0).iter().any(|f| is_arp_reply(f))),
            "the ARP request sent on pair 1 was answered"
        );
        assert!(
            d.vectors.fired.lock().unwrap().contains(&3),
            "tx 1 interrupt"
        );

        // A malformed control chain (a loop) is a queue error: NEEDS_RESET
        // and the configuration interrupt, not a panic.
        let slot = d.ctrl_next % QSIZE;
        d.queues[4].set_desc(slot, desc(Driver::buf(4, slot), 4, 1, slot));
        d.queues[4].push_avail(slot);
        d.notify(4);
        assert!(wait_for(|| d.r8(0x14) & STATUS_NEEDS_RESET != 0));
        assert!(d.vectors.fired.lock().unwrap().contains(&5));
    });
}

#[test]
fn link_down_and_up_interrupt_and_stop_frames() {
    in_netns_with_mq_tap(1, |taps| {
        let mem = mem_two_regions();
        let net = NetDevice::new(taps, MacAddr(GUEST_MAC), None, None, "vnet-link".into()).unwrap();
        let link = net.link();
        let mut d = Driver::new(&mem, net);
        link.attach_interrupt(d.dev.interrupt().clone());
        assert_eq!(d.features() & (F_MQ | F_CTRL_VQ), 0, "one queue: no MQ");
        assert_eq!(d.config(), (STATUS_LINK_UP, 1));
        // Before DRIVER_OK: a new generation, no interrupt.
        let g0 = d.generation();
        assert!(link.set_up(false));
        assert!(!link.set_up(false), "no change, nothing announced");
        assert_ne!(d.generation(), g0);
        assert_eq!(d.config().0, 0);
        assert!(link.set_up(true));
        assert!(d.vectors.fired.lock().unwrap().is_empty());

        d.setup(F_VERSION_1 | F_MAC | F_STATUS, 2);
        d.offer_rx(0);
        host_sends(7000..7001);
        assert!(wait_for(|| d.received(0).len() == 1), "link up: delivered");

        // Down: config interrupt (vector 2), generation, status 0.
        let g1 = d.generation();
        d.vectors.fired.lock().unwrap().clear();
        assert!(link.set_up(false));
        assert_eq!(d.config().0, 0);
        assert_ne!(d.generation(), g1);
        assert!(d.vectors.fired.lock().unwrap().contains(&2));
        let mut isr = [0u8; 1];
        d.dev.bar_read(0, 0x1000, &mut isr);
        assert_eq!(isr[0] & 2, 2, "ISR configuration bit");
        // Nothing comes in; what the guest sends is dropped (but used).
        host_sends(7001..7005);
        d.send(1, 0, &arp_request());
        assert!(wait_for(|| d.queues[1].used_idx() == 1));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(d.received(0).len(), 1, "nothing delivered while down");

        // Up again: announced, and frames flow.
        let g2 = d.generation();
        assert!(link.set_up(true));
        assert_ne!(d.generation(), g2);
        assert_eq!(d.config().0, STATUS_LINK_UP);
        assert_eq!(*d.vectors.fired.lock().unwrap().last().unwrap(), 2);
        d.send(1, 1, &arp_request());
        assert!(
            wait_for(|| d.received(0).iter().any(|f| is_arp_reply(f))),
            "link up: the ARP request is answered"
        );
        assert_eq!(
            d.received(0).iter().filter(|f| is_udp_to_guest(f)).count(),
            1,
            "frames sent while down were dropped, not queued"
        );
    });
}

#[test]
fn rx_limiter_leaves_frames_in_the_tap_until_its_timer() {
    in_netns_with_mq_tap(1, |mut taps| {
        let mut tap = taps.remove(0);
        let mem = mem_two_regions();
        let gq = GuestQueue::new(&mem, 0x1000, QSIZE);
        let mut q = gq.queue();
        for i in 0..QSIZE {
            gq.set_desc(i, desc(Driver::buf(0, i), BUF as u32, 2, 0));
            gq.push_avail(i);
        }
        // 2 frames per 400 ms.
        let c = RateLimitConfig {
            bandwidth: None,
            ops: Some(TokenBucketConfig {
                size: 2,
                one_time_burst: 0,
                refill_time_ms: 400,
            }),
        };
        let mut l = RateLimiter::from_config(&c).unwrap().unwrap();
        host_sends(8000..8006);
        let mut pending = RxBacklog::default();
        assert!(wait_for(|| {
            let (_, st) =
                process_rx_limited(&mem, &mut q, &mut tap, &mut pending, Some(&mut l)).unwrap();
            st == RxState::Throttled
        }));
        assert_eq!(gq.used_idx(), 2, "two frames, then the limit");
        assert!(pending.frame.is_some(), "the refused frame waits");
        // Nothing more until the timer fires, however often we try.
        for _ in 0..3 {
            let (n, st) =
                process_rx_limited(&mem, &mut q, &mut tap, &mut pending, Some(&mut l)).unwrap();
            assert!(!n);
            assert_eq!(st, RxState::Throttled);
        }
        assert_eq!(gq.used_idx(), 2);
        // The timer fd becomes readable (the worker sleeps in epoll on it).
        let mut p = libc::pollfd {
            fd: l.timer_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let t0 = Instant::now();
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 3000) }, 1, "timer fired");
        assert!(t0.elapsed() >= Duration::from_millis(100));
        l.on_timer();
        let (notify, _) =
            process_rx_limited(&mem, &mut q, &mut tap, &mut pending, Some(&mut l)).unwrap();
        assert!(notify);
        assert!(gq.used_idx() > 2 && gq.used_idx() <= 4, "{}", gq.used_idx());
    });
}
