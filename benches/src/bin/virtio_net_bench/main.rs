//! virtio_net_bench: frames per second and Gbit/s through kiln-vmm's
//! virtio-net device path and a real tap, against the host writing and
//! reading the same tap directly, in one run.
//!
//! Everything happens inside a network namespace this benchmark creates
//! (`ip netns add kiln-vnb-PID`, removed at the end): a bridge `kvbr0`
//! with the tap `kvtap0` and one end of a veth pair (`kvv0`) as ports; the
//! other end, `kvv1`, is the peer, where an `AF_PACKET` socket counts or
//! injects frames. IPv6 is off in the namespace so that only the
//! benchmark's frames (EtherType 0x88b5, local experimental) flow.
//!
//! - TX: the device path takes frames from a transmit queue in guest
//!   memory (one descriptor each: virtio-net header + frame) and writes
//!   them to the tap (`net::process_tx`), in batches of 128 chains; the
//!   host baseline writes the same header + frame bytes to the same tap fd
//!   in a loop. A reader on `kvv1` counts what arrives.
//! - RX: an injector on `kvv1` sends frames as fast as it can; they cross
//!   the bridge into the tap. The device path reads them from the tap into
//!   the receive queue's buffers in guest memory (`net::process_rx`), the
//!   harness re-offering each buffer as a driver would; the host baseline
//!   reads the tap fd into one buffer. Both wait in `poll` when the tap is
//!   empty.
//!
//! For each direction and frame size (64 and 1514 bytes, Ethernet header
//! included, no FCS) it prints frames/s, Gbit/s and the CPU time per frame
//! of the thread doing the work, for both, and the ratio device/host of the
//! frame rates (medians of `--rounds` runs, alternating which goes first).
//! Goal: the device path within 10% of the host's (ratio >= 0.90).
//!
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN for setns) and `ip`.
//! Usage: virtio_net_bench [--seconds S] [--rounds N] [--only SUBSTR]

mod netns;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_benches::{median, thread_cpu};
use kiln_vmm::devices::virtio::net::{process_rx, process_tx, RxBacklog, RxState, NET_HDR_LEN};
use kiln_vmm::devices::virtio::testing::{desc, GuestQueue, DESC_WRITE};
use kiln_vmm::memory::GuestMemoryMmap;
use kiln_vmm::net::tap::Tap;
use netns::{build_topology, enter_netns, packet_socket, Netns, BRIDGE, ETHERTYPE, PEER, TAP};
use vm_memory::{Bytes, GuestAddress};

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];
const QUEUE_SIZE: u16 = 256;
const TX_BATCH: u16 = 128;
const BUF_BASE: u64 = 0x100000;
const BUF_LEN: u64 = 2048;
const GUEST_MEM: usize = 4 << 20;

struct Args {
    seconds: f64,
    rounds: usize,
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 1.0,
        rounds: 3,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--rounds" => a.rounds = value()?.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--only" => a.only = Some(value()?),
            "-h" | "--help" => {
                return Err(
                    "usage: virtio_net_bench [--seconds S] [--rounds N] [--only SUBSTR]"
                        .to_string(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.rounds == 0 || a.seconds <= 0.0 {
        return Err("--rounds must be > 0 and --seconds > 0".to_string());
    }
    Ok(a)
}

/// An Ethernet frame of `len` bytes (no FCS) with the virtio-net header
/// (all zero: no offloads) in front.
fn frame(len: usize, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; NET_HDR_LEN + len];
    let e = &mut f[NET_HDR_LEN..];
    e[0..6].copy_from_slice(&dst);
    e[6..12].copy_from_slice(&src);
    e[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    for (i, b) in e[14..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

fn wait_readable(fd: i32, ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls one pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// One measurement.
#[derive(Clone, Copy, Default)]
struct Run {
    /// Frames the measured side handled (sent for TX, received for RX).
    frames: u64,
    secs: f64,
    /// CPU time of the measuring thread.
    cpu: f64,
    /// TX: frames the peer counted. RX: frames the injector sent.
    other: u64,
}

impl Run {
    fn fps(&self) -> f64 {
        self.frames as f64 / self.secs
    }
}

/// Counts our frames of length `len` arriving on `sock` until `stop`.
fn spawn_reader(
    sock: Arc<OwnedFd>,
    len: usize,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: reads at most buf.len() bytes into buf.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n == len as isize && buf[12..14] == ETHERTYPE.to_be_bytes() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// Drain whatever the peer socket holds (between runs).
fn drain_socket(sock: &OwnedFd) {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: reads at most buf.len() bytes into buf.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return;
        }
    }
}

fn drain_tap(tap: &Tap) {
    let mut buf = vec![0u8; 70000];
    while tap.read(&mut buf).is_ok() {}
}

/// TX through the device path (`device`) or straight to the tap.
fn tx(
    tap: &mut Tap,
    peer: &Arc<OwnedFd>,
    len: usize,
    device: bool,
    secs: f64,
) -> Result<Run, String> {
    drain_socket(peer);
    let f = frame(len, PEER_MAC, GUEST_MAC);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let reader = spawn_reader(peer.clone(), len, stop.clone(), count.clone());
    let budget = Duration::from_secs_f64(secs);
    let mut frames = 0u64;
    let (t0, c0);
    if device {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), GUEST_MEM)])
            .map_err(|e| format!("guest memory: {e}"))?;
        for k in 0..u64::from(TX_BATCH) {
            mem.write_slice(&f, GuestAddress(BUF_BASE + k * BUF_LEN))
                .map_err(|e| e.to_string())?;
        }
        let dq = GuestQueue::new(&mem, 0x1000, QUEUE_SIZE);
        let mut q = dq.queue();
        let mut buf = Vec::new();
        t0 = Instant::now();
        c0 = thread_cpu();
        while t0.elapsed() < budget {
            for k in 0..TX_BATCH {
                dq.set_desc(
                    k,
                    desc(BUF_BASE + u64::from(k) * BUF_LEN, f.len() as u32, 0, 0),
                );
                dq.push_avail(k);
            }
            process_tx(&mem, &mut q, tap, &mut buf, None).map_err(|e| format!("device: {e}"))?;
            frames += u64::from(TX_BATCH);
        }
        if dq.used_idx() != dq.avail_idx() {
            return Err("the device did not complete every transmit chain".to_string());
        }
    } else {
        t0 = Instant::now();
        c0 = thread_cpu();
        while t0.elapsed() < budget {
            for _ in 0..TX_BATCH {
                if let Err(e) = tap.write(&f) {
                    if e.kind() != std::io::ErrorKind::WouldBlock {
                        return Err(format!("tap write: {e}"));
                    }
                }
            }
            frames += u64::from(TX_BATCH);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (thread_cpu() - c0).as_secs_f64();
    // Let the reader catch up, then stop it.
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    reader.join().map_err(|_| "reader thread panicked")?;
    Ok(Run {
        frames,
        secs,
        cpu,
        other: count.load(Ordering::Relaxed),
    })
}

/// Sends frames on `sock` in batches until `stop`; counts them.
fn spawn_injector(
    sock: Arc<OwnedFd>,
    len: usize,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let f = frame(len, GUEST_MAC, PEER_MAC);
        let eth = &f[NET_HDR_LEN..];
        const BATCH: usize = 64;
        let mut iov: Vec<libc::iovec> = (0..BATCH)
            .map(|_| libc::iovec {
                iov_base: eth.as_ptr() as *mut libc::c_void,
                iov_len: eth.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: an all-zero mmsghdr is valid; iov is set below.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: `msgs` points at BATCH headers whose iovecs point at
            // `eth`, all alive for the call.
            let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
            if n > 0 {
                count.fetch_add(n as u64, Ordering::Relaxed);
            } else {
                std::thread::yield_now();
            }
        }
    })
}

/// RX through the device path (`device`) or read straight from the tap.
fn rx(
    tap: &mut Tap,
    peer: &Arc<OwnedFd>,
    len: usize,
    device: bool,
    secs: f64,
) -> Result<Run, String> {
    drain_tap(tap);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let want = NET_HDR_LEN + len;
    let budget = Duration::from_secs_f64(secs);
    let mut frames = 0u64;
    let mut others = 0u64;
    let injector;
    let (t0, c0);
    if device {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), GUEST_MEM)])
            .map_err(|e| format!("guest memory: {e}"))?;
        let dq = GuestQueue::new(&mem, 0x1000, QUEUE_SIZE);
        for k in 0..QUEUE_SIZE {
            let addr = BUF_BASE + u64::from(k) * BUF_LEN;
            dq.set_desc(k, desc(addr, BUF_LEN as u32, DESC_WRITE, 0));
            dq.push_avail(k);
        }
        let mut q = dq.queue();
        let mut pending = RxBacklog::default();
        let mut seen = 0u16;
        injector = spawn_injector(peer.clone(), len, stop.clone(), sent.clone());
        t0 = Instant::now();
        c0 = thread_cpu();
        while t0.elapsed() < budget {
            let (_, state) =
                process_rx(&mem, &mut q, tap, &mut pending).map_err(|e| format!("device: {e}"))?;
            // The driver: take each used buffer, check it, offer it again.
            let used = dq.used_idx();
            while seen != used {
                let (head, n) = dq.used_elem(seen);
                let at = BUF_BASE + u64::from(head) * BUF_LEN + (NET_HDR_LEN + 12) as u64;
                let ty: [u8; 2] = mem.read_obj(GuestAddress(at)).map_err(|e| e.to_string())?;
                if n as usize == want && ty == ETHERTYPE.to_be_bytes() {
                    frames += 1;
                } else {
                    others += 1;
                }
                dq.push_avail(head as u16);
                seen = seen.wrapping_add(1);
            }
            if state == RxState::Drained {
                wait_readable(tap.as_raw_fd(), 10);
            }
        }
    } else {
        let mut buf = vec![0u8; 70000];
        injector = spawn_injector(peer.clone(), len, stop.clone(), sent.clone());
        t0 = Instant::now();
        c0 = thread_cpu();
        while t0.elapsed() < budget {
            match tap.read(&mut buf) {
                Ok(n)
                    if n == want
                        && buf[NET_HDR_LEN + 12..NET_HDR_LEN + 14] == ETHERTYPE.to_be_bytes() =>
                {
                    frames += 1
                }
                Ok(_) => others += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    wait_readable(tap.as_raw_fd(), 10)
                }
                Err(e) => return Err(format!("tap read: {e}")),
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (thread_cpu() - c0).as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    injector.join().map_err(|_| "injector thread panicked")?;
    if others > frames / 100 + 10 {
        return Err(format!("{others} unexpected frames came through the tap"));
    }
    Ok(Run {
        frames,
        secs,
        cpu,
        other: sent.load(Ordering::Relaxed),
    })
}

struct Row {
    label: String,
    len: usize,
    host: Vec<Run>,
    device: Vec<Run>,
    tx: bool,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("virtio_net_bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    let args = parse_args()?;
    let ns = Netns::create()?;
    println!(
        "virtio_net_bench: namespace {}, tap {TAP} on bridge {BRIDGE}, peer {PEER}; \
         {} s per run, {} rounds",
        ns.0, args.seconds, args.rounds
    );
    // Work on a thread of our own inside the namespace; the namespace is
    // deleted (Netns::drop) after it ends.
    let ns_name = ns.0.clone();
    let result = std::thread::spawn(move || -> Result<Vec<Row>, String> {
        enter_netns(&ns_name)?;
        let mut tap = build_topology(&ns_name)?;
        let peer = Arc::new(packet_socket(PEER)?);
        let mut rows = Vec::new();
        for tx_dir in [true, false] {
            for len in [64usize, 1514] {
                let label = format!("{} {len}-byte", if tx_dir { "TX" } else { "RX" });
                if args.only.as_ref().is_some_and(|s| !label.contains(s)) {
                    continue;
                }
                let mut row = Row {
                    label,
                    len,
                    host: Vec::new(),
                    device: Vec::new(),
                    tx: tx_dir,
                };
                for round in 0..args.rounds {
                    for step in 0..2 {
                        let device = (round + step) % 2 == 0;
                        let run = if tx_dir {
                            tx(&mut tap, &peer, len, device, args.seconds)?
                        } else {
                            rx(&mut tap, &peer, len, device, args.seconds)?
                        };
                        if run.frames == 0 {
                            return Err(format!("{}: no frames moved", row.label));
                        }
                        if device {
                            row.device.push(run);
                        } else {
                            row.host.push(run);
                        }
                    }
                }
                print_row(&row);
                rows.push(row);
            }
        }
        Ok(rows)
    })
    .join()
    .map_err(|_| "benchmark thread panicked".to_string())?;
    drop(ns);
    let rows = result?;
    summary(&rows);
    Ok(())
}

fn stats(runs: &[Run], len: usize) -> (f64, f64, f64, f64) {
    let fps = median(runs.iter().map(Run::fps).collect());
    let gbit = fps * len as f64 * 8.0 / 1e9;
    let cpu_us = median(runs.iter().map(|r| r.cpu / r.frames as f64 * 1e6).collect());
    let other = median(runs.iter().map(|r| r.other as f64 / r.secs).collect());
    (fps, gbit, cpu_us, other)
}

fn print_row(r: &Row) {
    let (hf, hg, hc, ho) = stats(&r.host, r.len);
    let (df, dg, dc, d_o) = stats(&r.device, r.len);
    let other = if r.tx { "peer got" } else { "injected" };
    println!(
        "{:<14} host   {:>9.0} frames/s {:>6.2} Gbit/s {:>6.2} us CPU/frame ({other} {:>9.0}/s)",
        r.label, hf, hg, hc, ho
    );
    println!(
        "{:<14} device {:>9.0} frames/s {:>6.2} Gbit/s {:>6.2} us CPU/frame ({other} {:>9.0}/s)",
        "", df, dg, dc, d_o
    );
}

fn summary(rows: &[Row]) {
    println!();
    println!(
        "{:<14} {:>16} {:>22} {:>8}",
        "case (medians)", "device/host fps", "CPU/frame device/host", "goal"
    );
    let mut met = 0;
    for r in rows {
        let (hf, _, hc, _) = stats(&r.host, r.len);
        let (df, _, dc, _) = stats(&r.device, r.len);
        let ok = df / hf >= 0.90;
        met += usize::from(ok);
        println!(
            "{:<14} {:>16.3} {:>22.3} {:>8}",
            r.label,
            df / hf,
            dc / hc,
            if ok { "MET" } else { "NOT MET" }
        );
    }
    println!(
        "goal: device path within 10% of the host's frame rate: met in {met} of {} cases",
        rows.len()
    );
}
