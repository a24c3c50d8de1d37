//! virtio_blk_bench: throughput of kiln-vmm's virtio-blk device path
//! against the host's own I/O on the same file, in one run.
//!
//! Device path: requests are laid out as a driver would (header, data and
//! status descriptors in a split virtqueue in guest memory, a
//! `vm_memory::GuestMemoryMmap` in this process) and served by the device's
//! request handler (`block::process_queue`) from a `kiln_block` raw disk on
//! the file. Host: `fio` (ioengine psync, one job, queue depth 1) on the
//! same file with the same block size and pattern. A third row, a plain
//! `pread`/`pwrite` loop in this process, shows the cost of the syscall
//! alone without fio's own per-I/O bookkeeping.
//!
//! Cases: 4 KiB random read, 4 KiB random write, 64 KiB sequential read,
//! 64 KiB sequential write; each with the page cache (`--direct=0`, the
//! file warm in the cache before every run) and with `O_DIRECT`.
//! Random offsets are block-aligned and uniform, each block once per pass
//! (fio's default random map; here a shuffled permutation). Both paths are
//! synchronous, one request at a time: the device serves the chains of a
//! batch (`--batch`, default 1: one request per queue notification, like a
//! guest at queue depth 1) one after another.
//!
//! Every case runs `--rounds` times per path, alternating which goes
//! first; medians are printed with the ratio device/fio. The time of the
//! device path is wall time including this harness playing the driver
//! (writing descriptors, checking status bytes: plain stores and loads
//! into the queue's memory region, as a guest's would be, see
//! `devices::virtio::testing::GuestQueue`); the device's own share (`process_queue` only) is
//! printed beside it. Goal: device path within
//! 10% of the host's throughput (ratio >= 0.90).
//!
//! For O_DIRECT writes, fio is also run with `ioengine=io_uring` at depth
//! 1 as a reference row (kiln_block uses its io_uring/AIO engines only
//! while another write of the file is in flight; the device path, one
//! request at a time, writes with `pwrite`).
//!
//! Last, the wake-up floor of a real VM (`wake.rs`: notify eventfd ->
//! worker `epoll_wait` -> interrupt eventfd, measured with no I/O) is
//! printed, with the ratio each case would have if every request paid it
//! (one request per notification, depth 1): what the device path costs in
//! a VM beyond `process_queue`, not part of the ratio above. Then the same
//! round trip through kiln-vmm's real worker loop, sleeping in epoll and
//! with adaptive polling (`--poll-us`, default 50, as `--disk poll_us=`),
//! with each case's ratio to fio if it paid one or the other.
//!
//! Usage: virtio_blk_bench [--file PATH] [--size-mib N] [--seconds S]
//!        [--rounds N] [--batch N] [--only SUBSTR] [--modes cache,direct]
//!        [--poll-us N]
//! Build with --release.

mod host;
mod wake;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use host::{create_file, run_fio, run_pread, warm};
use kiln_benches::{median, thread_cpu};
use kiln_block::{open_disk, DiskFormat, OpenOptions};
use kiln_vmm::devices::virtio::block::{process_queue, BlockBackend, S_OK, T_IN, T_OUT};
use kiln_vmm::devices::virtio::testing::{BlkBuffers, GuestQueue};
use kiln_vmm::memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;
/// Guest memory layout: the queue, headers, status bytes, then data.
const QUEUE_BASE: u64 = 0x1000;
const HDR_BASE: u64 = 0x10000;
const STATUS_BASE: u64 = 0x20000;
const DATA_BASE: u64 = 0x100000;
const QUEUE_SIZE: u16 = 256;
const GUEST_MEM: u64 = 16 * MIB;

struct Args {
    file: Option<PathBuf>,
    size_mib: u64,
    seconds: f64,
    rounds: usize,
    batch: u16,
    only: Option<String>,
    modes: Vec<bool>,
    poll_us: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        file: None,
        size_mib: 512,
        seconds: 2.0,
        rounds: 3,
        batch: 1,
        only: None,
        modes: vec![false, true],
        poll_us: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--file" => a.file = Some(PathBuf::from(value()?)),
            "--size-mib" => a.size_mib = value()?.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--rounds" => a.rounds = value()?.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--batch" => a.batch = value()?.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--only" => a.only = Some(value()?),
            "--poll-us" => a.poll_us = value()?.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--modes" => {
                a.modes = value()?
                    .split(',')
                    .map(|m| match m {
                        "cache" => Ok(false),
                        "direct" => Ok(true),
                        other => Err(format!("--modes: unknown mode {other}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => {
                return Err("usage: virtio_blk_bench [--file PATH] [--size-mib N] \
                            [--seconds S] [--rounds N] [--batch N] [--only SUBSTR] \
                            [--modes cache,direct] [--poll-us N]"
                    .to_string())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.size_mib < 16 || a.rounds == 0 || a.seconds <= 0.0 {
        return Err("--size-mib must be >= 16, --rounds > 0, --seconds > 0".to_string());
    }
    // Three descriptors per request; 64 KiB of data each must fit.
    if a.batch == 0 || 3 * u64::from(a.batch) > u64::from(QUEUE_SIZE) || a.batch > 64 {
        return Err("--batch must be in 1..=64".to_string());
    }
    Ok(a)
}

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    bs: u64,
    random: bool,
    write: bool,
}

const CASES: [Case; 4] = [
    Case {
        name: "4k-randread",
        bs: 4096,
        random: true,
        write: false,
    },
    Case {
        name: "4k-randwrite",
        bs: 4096,
        random: true,
        write: true,
    },
    Case {
        name: "64k-seqread",
        bs: 65536,
        random: false,
        write: false,
    },
    Case {
        name: "64k-seqwrite",
        bs: 65536,
        random: false,
        write: true,
    },
];

/// Block offsets of one pass over a file of `size` bytes: in order, or a
/// permutation (xorshift-driven Fisher-Yates: every block once per pass).
fn offsets(size: u64, bs: u64, random: bool) -> Vec<u64> {
    let mut v: Vec<u64> = (0..size / bs).map(|i| i * bs).collect();
    if random {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..v.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }
    v
}

/// One measurement: operations done and the time they took.
#[derive(Clone, Copy, Default)]
struct Run {
    ops: u64,
    secs: f64,
    /// Device path only: time inside `process_queue`.
    device_secs: Option<f64>,
    /// CPU time (user + system) of the thread (fio: of the job).
    cpu: f64,
}

impl Run {
    fn iops(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    fn cpu_us_per_op(&self) -> f64 {
        self.cpu / self.ops as f64 * 1e6
    }
}

/// The device path: batches of requests through a virtqueue in guest
/// memory, served by `process_queue` from a kiln_block raw disk.
fn run_device(
    path: &Path,
    offs: &[u64],
    case: Case,
    direct: bool,
    secs: f64,
    batch: u16,
) -> Result<Run, String> {
    let disk = open_disk(
        path,
        DiskFormat::Raw,
        OpenOptions {
            read_only: false,
            direct,
        },
    )
    .map_err(|e| format!("opening {} with kiln_block: {e}", path.display()))?;
    let mut backend = BlockBackend::new(Arc::from(disk), "kiln-vblk-bench", false);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), GUEST_MEM as usize)])
        .map_err(|e| format!("guest memory: {e}"))?;
    // Each data buffer gets its own fill byte so writes can be checked.
    for k in 0..u64::from(batch) {
        let fill = vec![0xa0u8.wrapping_add(k as u8); case.bs as usize];
        mem.write_slice(&fill, GuestAddress(DATA_BASE + k * case.bs))
            .map_err(|e| format!("guest memory: {e}"))?;
    }
    let dq = GuestQueue::new(&mem, QUEUE_BASE, QUEUE_SIZE);
    let mut q = dq.queue();
    let budget = Duration::from_secs_f64(secs);
    let mut ops = 0u64;
    let mut in_device = Duration::ZERO;
    let mut last_write = None;
    let mut next = offs.iter().cycle();
    let t0 = Instant::now();
    let c0 = thread_cpu();
    while t0.elapsed() < budget {
        for k in 0..batch {
            let o = *next.next().ok_or("no offsets")?;
            let k64 = u64::from(k);
            let at = BlkBuffers {
                hdr: HDR_BASE + 16 * k64,
                data: DATA_BASE + k64 * case.bs,
                status: STATUS_BASE + k64,
            };
            let kind = if case.write { T_OUT } else { T_IN };
            dq.push_blk(
                3 * k,
                kind,
                o / 512,
                at,
                Some((case.bs as u32, !case.write)),
            );
            last_write = Some((o, k));
        }
        let t = Instant::now();
        process_queue(&mem, &mut q, &mut backend).map_err(|e| format!("device: {e}"))?;
        in_device += t.elapsed();
        for k in 0..u64::from(batch) {
            let st = dq.read_u8(STATUS_BASE + k);
            if st != S_OK {
                return Err(format!("device returned status {st} for request {k}"));
            }
        }
        ops += u64::from(batch);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (thread_cpu() - c0).as_secs_f64();
    if dq.used_idx() != dq.avail_idx() {
        return Err("the device did not complete every request".to_string());
    }
    // A written block holds its buffer's fill byte in the file.
    if let (true, Some((o, k))) = (case.write, last_write) {
        drop(backend);
        let f = File::open(path).map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, o + case.bs - 1)
            .map_err(|e| e.to_string())?;
        if b[0] != 0xa0u8.wrapping_add(k as u8) {
            return Err(format!("block at {o} does not hold what the device wrote"));
        }
    }
    Ok(Run {
        ops,
        secs: elapsed,
        device_secs: Some(in_device.as_secs_f64()),
        cpu,
    })
}

/// Removes the benchmark file on every way out.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("virtio_blk_bench: {e}");
        std::process::exit(1);
    }
}

struct Row {
    label: String,
    bs: u64,
    fio: f64,
    pread: f64,
    device: f64,
    device_only: f64,
    /// fio with ioengine=io_uring, depth 1 (O_DIRECT writes only).
    fio_uring: Option<f64>,
    /// CPU µs per operation: fio, pread loop, device path.
    cpu: [f64; 3],
}

fn real_main() -> Result<(), String> {
    let args = parse_args()?;
    let size = args.size_mib * MIB;
    let path = args.file.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "/var/tmp/kiln-vblk-bench-{}.raw",
            std::process::id()
        ))
    });
    create_file(&path, size)?;
    let _scratch = Scratch(path.clone());
    println!(
        "virtio_blk_bench: {} ({} MiB), {} s per run, {} rounds, batch {}, one request at a time",
        path.display(),
        args.size_mib,
        args.seconds,
        args.rounds,
        args.batch
    );
    let mut rows = Vec::new();
    for &direct in &args.modes {
        for case in CASES {
            let label = format!(
                "{} {}",
                case.name,
                if direct { "O_DIRECT" } else { "page-cache" }
            );
            if args.only.as_ref().is_some_and(|s| !label.contains(s)) {
                continue;
            }
            let offs = offsets(size, case.bs, case.random);
            let (mut f, mut p, mut d) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..args.rounds {
                // Alternate the order: device first on even rounds.
                for step in 0..3 {
                    if !direct {
                        warm(&path)?;
                    }
                    match (step + round) % 3 {
                        0 => d.push(run_device(
                            &path,
                            &offs,
                            case,
                            direct,
                            args.seconds,
                            args.batch,
                        )?),
                        1 => f.push(run_fio(&path, size, case, direct, args.seconds, "psync")?),
                        _ => p.push(run_pread(&path, &offs, case, direct, args.seconds)?),
                    }
                }
            }
            // kiln_block sends overlapping O_DIRECT writes through Linux AIO
            // or io_uring (a lone one with pwrite): fio with io_uring at
            // depth 1 shows what such an engine costs on the host itself.
            let mut uring = Vec::new();
            if direct && case.write {
                for _ in 0..args.rounds {
                    uring.push(run_fio(
                        &path,
                        size,
                        case,
                        direct,
                        args.seconds,
                        "io_uring",
                    )?);
                }
            }
            let row = Row {
                fio_uring: (!uring.is_empty())
                    .then(|| median(uring.iter().map(Run::iops).collect())),
                label,
                bs: case.bs,
                fio: median(f.iter().map(Run::iops).collect()),
                pread: median(p.iter().map(Run::iops).collect()),
                device: median(d.iter().map(Run::iops).collect()),
                cpu: [
                    median(f.iter().map(Run::cpu_us_per_op).collect()),
                    median(p.iter().map(Run::cpu_us_per_op).collect()),
                    median(d.iter().map(Run::cpu_us_per_op).collect()),
                ],
                device_only: median(
                    d.iter()
                        .map(|r| r.ops as f64 / r.device_secs.unwrap_or(r.secs))
                        .collect(),
                ),
            };
            print_row(&row);
            rows.push(row);
        }
    }
    let floor = wake::round_trip(args.seconds, args.rounds)?;
    let poll = Duration::from_micros(args.poll_us);
    let (epoll_rt, _) = wake::worker_round_trip(args.seconds, args.rounds, Duration::ZERO)?;
    let (poll_rt, kicked) = wake::worker_round_trip(args.seconds, args.rounds, poll)?;
    summary(&rows, floor);
    polling_summary(&rows, args.poll_us, epoll_rt, poll_rt, kicked);
    Ok(())
}

/// The depth-1 cost through kiln-vmm's worker loop, sleeping in epoll
/// versus adaptive polling (`--disk ...,poll_us=N`), as ratios to fio.
fn polling_summary(rows: &[Row], poll_us: u64, epoll_rt: Duration, poll_rt: Duration, kicked: f64) {
    let (e, p) = (epoll_rt.as_secs_f64(), poll_rt.as_secs_f64());
    println!();
    println!(
        "kiln worker round trip (no I/O): epoll {:.2} us, polling (poll_us={poll_us}) {:.2} us \
         ({:.0}% of requests kicked the notify eventfd); polling/epoll {:.3}",
        e * 1e6,
        p * 1e6,
        kicked * 100.0,
        p / e
    );
    println!(
        "{:<24} {:>18} {:>20}",
        "case (medians)", "+ epoll wake / fio", "+ polling wake / fio"
    );
    for r in rows {
        let with = |w: f64| 1.0 / (1.0 / r.device + w) / r.fio;
        println!("{:<24} {:>18.3} {:>20.3}", r.label, with(e), with(p));
    }
    println!(
        "(the device path's rate if each request also paid that worker round trip, as at depth 1 in a VM)"
    );
}

fn mbs(iops: f64, bs: u64) -> f64 {
    iops * bs as f64 / 1e6
}

fn print_row(r: &Row) {
    println!("{}", r.label);
    println!(
        "  fio         {:>8.0} IOPS {:>8.1} MB/s {:>7.2} us CPU/op",
        r.fio,
        mbs(r.fio, r.bs),
        r.cpu[0]
    );
    if let Some(u) = r.fio_uring {
        println!(
            "  fio io_uring{:>9.0} IOPS {:>8.1} MB/s (reference: kiln_block's engine for overlapping O_DIRECT writes)",
            u,
            mbs(u, r.bs)
        );
    }
    println!(
        "  pread loop  {:>8.0} IOPS {:>8.1} MB/s {:>7.2} us CPU/op",
        r.pread,
        mbs(r.pread, r.bs),
        r.cpu[1]
    );
    println!(
        "  device path {:>8.0} IOPS {:>8.1} MB/s {:>7.2} us CPU/op (in process_queue only: {:.0} IOPS)",
        r.device,
        mbs(r.device, r.bs),
        r.cpu[2],
        r.device_only
    );
}

fn summary(rows: &[Row], floor: Duration) {
    let f = floor.as_secs_f64();
    println!();
    println!(
        "wake-up floor (notify eventfd -> worker epoll_wait -> irq eventfd, no I/O): {:.2} us per request",
        f * 1e6
    );
    println!(
        "{:<24} {:>11} {:>17} {:>19} {:>8} {:>17}",
        "case (medians)",
        "device/fio",
        "device/pread loop",
        "CPU/op device/fio",
        "goal",
        "+ wake-up / fio"
    );
    let mut met = 0;
    for r in rows {
        let ratio = r.device / r.fio;
        let ok = ratio >= 0.90;
        met += usize::from(ok);
        let with_wake = 1.0 / (1.0 / r.device + f);
        println!(
            "{:<24} {:>11.3} {:>17.3} {:>19.3} {:>8} {:>17.3}",
            r.label,
            ratio,
            r.device / r.pread,
            r.cpu[2] / r.cpu[0],
            if ok { "MET" } else { "NOT MET" },
            with_wake / r.fio
        );
    }
    println!(
        "goal: device path within 10% of the host's (fio's) throughput: met in {met} of {} cases",
        rows.len()
    );
    println!(
        "(+ wake-up / fio: the ratio if each request also paid the wake-up floor, as at depth 1 in a VM)"
    );
}
