//! Every disk path a guest drives, served by [`process_queue`] on a thread
//! under the virtio worker's seccomp filter in kill mode (the filter
//! kiln-vmm's disk worker installs), on real qcow2 files made by
//! `qemu-img`: copy-on-write out of zlib- and zstd-compressed clusters (in
//! place, from a backing file, two overlays deep), O_DIRECT, write-zeroes
//! with and without unmap, discard, flush, reads of every kind of cluster,
//! a rate-limit wait, and an image that cannot grow (the write fails with
//! EFBIG under `RLIMIT_FSIZE`, as it would with ENOSPC: the worker reports
//! an I/O error and goes on).
//!
//! Each case runs in a fresh copy of this test binary (no filter may land
//! on the test process) whose glibc is set up as kiln-vmm's
//! ([`crate::malloc::configure`]: one arena; through `GLIBC_TUNABLES`,
//! since the test harness starts threads before any test code runs). A
//! system call missing from the filter kills the child with SIGSYS.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use kiln_block::{header_chain, open_disk_chain, DiskFormat, OpenOptions};
use vm_memory::{Bytes, GuestAddress};

use super::super::*;
use crate::devices::virtio::rate_limiter::{RateLimiter, TokenBucket};
use crate::devices::virtio::testing::{mem_two_regions, BlkBuffers, GuestQueue};
use crate::devices::GuestMemoryMmap;
use crate::seccomp::{apply_with, SeccompMode, ThreadKind};

const CHILD_ENV: &str = "KILN_BLK_SECCOMP_CHILD";
const HDR: u64 = 0x10000;
const DATA: u64 = 0x11000;
const STATUS: u64 = 0x20000;
/// qcow2's default cluster size, in sectors.
const CLUSTER_SECTORS: u64 = 128;

fn run_child(case: &str) -> Output {
    let exe = std::env::current_exe().expect("current_exe");
    Command::new(exe)
        .args([
            "--exact",
            "devices::virtio::block::tests::seccomp::child_entry",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, case)
        .env("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
        .output()
        .expect("run the test binary")
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img (scripts/setup.sh installs it)");
    assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
}

/// Byte `i` of guest sector `s` in the base image.
fn base_byte(s: u64, i: usize) -> u8 {
    (s as usize * 31 + i / 16) as u8 | 1
}

/// A compressed qcow2 (`compression`: zlib or zstd) of 1 MiB whose first 6
/// clusters hold data (all compressed), in `dir`.
fn compressed_base(dir: &Path, compression: &str) -> std::path::PathBuf {
    let raw = dir.join("base.raw");
    let mut data = vec![0u8; 1 << 20];
    for s in 0..6 * CLUSTER_SECTORS {
        for i in 0..512 {
            data[s as usize * 512 + i] = base_byte(s, i);
        }
    }
    std::fs::write(&raw, &data).unwrap();
    let base = dir.join(format!("base-{compression}.qcow2"));
    let opt = format!("compression_type={compression}");
    let (r, b) = (raw.to_str().unwrap(), base.to_str().unwrap());
    qemu_img(&[
        "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", &opt, r, b,
    ]);
    base
}

fn overlay(dir: &Path, backing: &Path, name: &str) -> std::path::PathBuf {
    let ov = dir.join(name);
    let (b, o) = (backing.to_str().unwrap(), ov.to_str().unwrap());
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", b, "-F", "qcow2", o]);
    ov
}

/// One request on the queue: header, optional data, status.
struct Guest<'a> {
    mem: &'a GuestMemoryMmap,
    gq: GuestQueue<'a>,
    q: virtio_queue::Queue,
}

impl Guest<'_> {
    fn request(
        &mut self,
        b: &mut BlockBackend,
        kind: u32,
        sector: u64,
        data: Option<(u32, bool)>,
    ) -> u8 {
        let at = BlkBuffers {
            hdr: HDR,
            data: DATA,
            status: STATUS,
        };
        self.gq.push_blk(0, kind, sector, at, data);
        loop {
            let (_, served) = process_queue(self.mem, &mut self.q, b).unwrap();
            match served {
                Served::All => break,
                // The real worker waits on the limiter's timerfd in epoll.
                Served::Throttled => {
                    std::thread::sleep(Duration::from_millis(5));
                    b.limiter.as_mut().unwrap().on_timer();
                }
            }
        }
        self.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    fn write(&mut self, b: &mut BlockBackend, sector: u64, data: &[u8]) -> u8 {
        self.mem.write_slice(data, GuestAddress(DATA)).unwrap();
        self.request(b, T_OUT, sector, Some((data.len() as u32, false)))
    }

    fn read(&mut self, b: &mut BlockBackend, sector: u64, len: usize) -> Vec<u8> {
        assert_eq!(
            self.request(b, T_IN, sector, Some((len as u32, true))),
            S_OK
        );
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(DATA)).unwrap();
        v
    }

    /// Write-zeroes (`unmap`) or discard of one segment.
    fn segment(&mut self, b: &mut BlockBackend, kind: u32, sector: u64, n: u32, unmap: bool) -> u8 {
        let mut seg = [0u8; 16];
        seg[0..8].copy_from_slice(&sector.to_le_bytes());
        seg[8..12].copy_from_slice(&n.to_le_bytes());
        seg[12..16].copy_from_slice(&u32::from(unmap).to_le_bytes());
        self.mem.write_slice(&seg, GuestAddress(DATA)).unwrap();
        self.request(b, kind, 0, Some((16, false)))
    }
}

/// The guest's requests, on a thread under the worker filter.
fn drive(disk: &Path, direct: bool, cannot_grow: bool) {
    let chain = header_chain(disk, DiskFormat::Qcow2).unwrap();
    let disk = open_disk_chain(
        disk,
        DiskFormat::Qcow2,
        OpenOptions {
            read_only: false,
            direct,
        },
        &chain,
    )
    .unwrap();
    let mut b = BlockBackend::new(Arc::from(disk), "seccomp-paths", false);
    // Made where the device makes it: at build, before any filter.
    b.limiter =
        Some(RateLimiter::new(None, TokenBucket::new(4, 0, Duration::from_millis(10))).unwrap());
    let t = std::thread::spawn(move || {
        apply_with(ThreadKind::Worker, SeccompMode::Kill).unwrap();
        let mem = mem_two_regions();
        let gq = GuestQueue::new(&mem, 0x1000, 16);
        let q = gq.queue();
        let mut g = Guest { mem: &mem, gq, q };
        let b = &mut b;
        let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        if cannot_grow {
            // Every write here needs a new cluster, which the file cannot
            // take: an I/O error for the guest, the worker goes on.
            assert_eq!(g.write(b, 1, &pattern), S_IOERR);
            assert_eq!(g.write(b, CLUSTER_SECTORS + 2, &pattern), S_IOERR);
            assert_eq!(g.read(b, 1, 512), g.read(b, 1, 512));
            println!("PATHS-OK");
            return;
        }
        // Reads of compressed clusters, then copy-on-write out of them.
        for s in [0, 1, CLUSTER_SECTORS + 5] {
            let got = g.read(b, s, 512);
            assert!(
                got.iter().enumerate().all(|(i, &x)| x == base_byte(s, i)),
                "sector {s}"
            );
        }
        for s in [1, CLUSTER_SECTORS + 2, 2 * CLUSTER_SECTORS + 64] {
            assert_eq!(g.write(b, s, &pattern), S_OK, "write at {s}");
            assert_eq!(g.read(b, s, 4096), pattern, "read back at {s}");
        }
        // Untouched parts of a copied-up cluster keep the base's bytes.
        let after = CLUSTER_SECTORS + 2 + 8;
        let got = g.read(b, after, 512);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, &x)| x == base_byte(after, i)));
        // Write-zeroes: a whole compressed cluster with unmap, a partial
        // one without; discard of whole clusters (compressed, copied-up).
        assert_eq!(
            g.segment(b, T_WRITE_ZEROES, 3 * CLUSTER_SECTORS, 128, true),
            S_OK
        );
        assert_eq!(
            g.segment(b, T_WRITE_ZEROES, 4 * CLUSTER_SECTORS + 3, 5, false),
            S_OK
        );
        assert!(g.read(b, 3 * CLUSTER_SECTORS, 4096).iter().all(|&x| x == 0));
        assert!(g
            .read(b, 4 * CLUSTER_SECTORS + 3, 2560)
            .iter()
            .all(|&x| x == 0));
        assert_eq!(
            g.segment(b, T_DISCARD, 5 * CLUSTER_SECTORS, 128, false),
            S_OK
        );
        assert_eq!(
            g.segment(b, T_DISCARD, 2 * CLUSTER_SECTORS, 128, false),
            S_OK
        );
        assert_eq!(g.request(b, T_FLUSH, 0, None), S_OK);
        // Fresh clusters past the data, then a flush of it all.
        assert_eq!(g.write(b, 1000, &pattern), S_OK);
        assert_eq!(g.read(b, 1000, 4096), pattern);
        assert_eq!(g.request(b, T_FLUSH, 0, None), S_OK);
        println!("PATHS-OK");
    });
    t.join().expect("the filtered thread");
}

#[test]
fn child_entry() {
    let Ok(case) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = tempfile_dir(&case);
    let d = dir.as_path();
    match case.as_str() {
        "zlib-in-place" => drive(&compressed_base(d, "zlib"), false, false),
        "zstd-in-place" => drive(&compressed_base(d, "zstd"), false, false),
        "zlib-overlay" => {
            let base = compressed_base(d, "zlib");
            drive(&overlay(d, &base, "ov.qcow2"), false, false)
        }
        "zstd-two-deep-direct" => {
            let base = compressed_base(d, "zstd");
            let mid = overlay(d, &base, "mid.qcow2");
            drive(&overlay(d, &mid, "top.qcow2"), true, false)
        }
        "cannot-grow" => {
            let base = compressed_base(d, "zstd");
            let ov = overlay(d, &base, "ov.qcow2");
            let len = std::fs::metadata(&ov).unwrap().len();
            let lim = libc::rlimit {
                rlim_cur: len,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: ignoring SIGXFSZ makes an oversized write fail with
            // EFBIG instead of killing the process; setrlimit reads `lim`.
            unsafe {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
            }
            drive(&ov, false, true)
        }
        other => panic!("unknown case {other}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(case: &str) -> std::path::PathBuf {
    // On the disk (not tmpfs), so that O_DIRECT works.
    let d = std::env::temp_dir().join(format!("kiln-blk-seccomp-{}-{case}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn check(case: &str) {
    let out = run_child(case);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_ne!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "{case}: killed by the worker's seccomp filter: {out:?}"
    );
    assert!(
        out.status.success() && text.contains("PATHS-OK"),
        "{case}: {out:?}"
    );
}

#[test]
fn zlib_compressed_image_written_in_place() {
    check("zlib-in-place");
}

#[test]
fn zstd_compressed_image_written_in_place() {
    check("zstd-in-place");
}

#[test]
fn overlay_over_a_zlib_compressed_image() {
    check("zlib-overlay");
}

#[test]
fn two_overlays_over_a_zstd_compressed_image_with_o_direct() {
    check("zstd-two-deep-direct");
}

#[test]
fn an_image_that_cannot_grow_fails_the_write_not_the_worker() {
    check("cannot-grow");
}
