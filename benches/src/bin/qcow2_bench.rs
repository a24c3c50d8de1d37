//! qcow2 engine benchmark, side by side with `qemu-img bench` on the same
//! image files and the same request pattern (size, step, depth, read/write,
//! `-t none` = O_DIRECT). Prints ops/s (and MiB/s) for both and the ratio
//! Kiln/QEMU for each case.
//!
//! Queue depth: Kiln's `Disk` is `Sync`; depth N means N threads issuing
//! blocking requests on one shared disk, which is what `qemu-img bench`'s
//! default thread-pool AIO does too.
//!
//! Usage: `qcow2_bench [--dir DIR] [--size-mib N] [--scale F] [--only SUBSTR] [--aio threads|native] [--reps N]
//! [--engine uring|aio|sync]`
//! (each case runs N times per tool, alternating which goes first; medians
//! are printed)
//! (defaults: a directory under /var/tmp, 1024 MiB, scale 1.0).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kiln_block::{open_disk_chain, AlignedBuf, BackingFile, Disk, DiskFormat, OpenOptions};

#[derive(Clone, Copy)]
enum Image {
    /// `qemu-img create -o preallocation=metadata`.
    Prealloc,
    /// A fresh overlay on a raw base full of data; writes copy up.
    Overlay,
}

#[derive(Clone, Copy)]
struct Case {
    image: Image,
    write: bool,
    bufsize: u64,
    step: u64,
    depth: u64,
    count: u64,
}

impl Case {
    fn name(&self) -> String {
        format!(
            "{:<8} {:<5} {:>3}K step {:>3}K depth {:>2}",
            match self.image {
                Image::Prealloc => "prealloc",
                Image::Overlay => "overlay",
            },
            if self.write { "write" } else { "read" },
            self.bufsize / 1024,
            self.step / 1024,
            self.depth
        )
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("qemu-img must be installed");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_bench(img: &Path, c: &Case, aio: &str) -> f64 {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["bench", "-f", "qcow2", "-t", "none", "-i", aio]);
    cmd.args(["-c", &c.count.to_string(), "-d", &c.depth.to_string()]);
    cmd.args(["-s", &c.bufsize.to_string(), "-S", &c.step.to_string()]);
    if c.write {
        cmd.arg("-w");
    }
    cmd.arg(img);
    let out = run(&mut cmd);
    // "Run completed in 1.234 seconds."
    let secs: f64 = out
        .split("Run completed in ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse qemu-img bench output: {out}"));
    c.count as f64 / secs
}

/// `base`: the raw base of an overlay (named explicitly: kiln-block opens
/// no backing file on a header's say).
fn kiln_bench(img: &Path, base: Option<&Path>, c: &Case) -> f64 {
    let opts = OpenOptions {
        read_only: !c.write,
        direct: true,
    };
    let chain: Vec<BackingFile> = base
        .map(|b| BackingFile {
            path: b.to_owned(),
            format: DiskFormat::Raw,
        })
        .into_iter()
        .collect();
    let disk: Arc<dyn Disk> = open_disk_chain(img, DiskFormat::Qcow2, opts, &chain)
        .expect("open")
        .into();
    let size = disk.size();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..c.depth)
        .map(|_| {
            let disk = disk.clone();
            let next = next.clone();
            let c = *c;
            // Returns when this thread's last request completed: the run
            // ends with the last request, as `qemu-img bench` times it, not
            // with the thread's exit (which destroys its AIO context:
            // io_destroy waits for an RCU grace period, ~30 ms here).
            std::thread::spawn(move || -> Instant {
                let mut buf = AlignedBuf::new(c.bufsize as usize);
                buf.fill(0xa5);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= c.count {
                        break;
                    }
                    let mut off = (i * c.step) % size;
                    if off + c.bufsize > size {
                        off = 0;
                    }
                    if c.write {
                        disk.write_at(off, &buf).expect("write");
                    } else {
                        disk.read_at(off, &mut buf).expect("read");
                    }
                }
                Instant::now()
            })
        })
        .collect();
    let mut end = start;
    for t in threads {
        end = end.max(t.join().expect("bench thread"));
    }
    let secs = (end - start).as_secs_f64();
    drop(disk); // writes back metadata, like qemu-img closing the image
    c.count as f64 / secs
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn fill_base(path: &Path, size: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create base");
    let mut chunk = vec![0u8; 1 << 20];
    let mut x = 0x1234_5678_9abc_def1u64;
    for b in chunk.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes());
    }
    for i in 0..size >> 20 {
        chunk[0] = i as u8;
        f.write_all(&chunk).expect("write base");
    }
    f.sync_all().expect("sync base");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].clone())
    };
    let dir = PathBuf::from(arg("--dir").unwrap_or_else(|| "/var/tmp/kiln-qcow2-bench".into()));
    let size_mib: u64 = arg("--size-mib")
        .map(|s| s.parse().expect("size"))
        .unwrap_or(1024);
    let scale: f64 = arg("--scale")
        .map(|s| s.parse().expect("scale"))
        .unwrap_or(1.0);
    let only = arg("--only");
    // QEMU's AIO engine: "threads" (qemu-img's default) or "native" (Linux AIO).
    let aio = arg("--aio").unwrap_or_else(|| "threads".into());
    // Kiln's O_DIRECT write engine: aio (default), uring or sync.
    let engine = arg("--engine").unwrap_or_else(|| "aio".into());
    kiln_block::set_write_engine(match engine.as_str() {
        "uring" => kiln_block::WriteEngine::IoUring,
        "aio" => kiln_block::WriteEngine::LinuxAio,
        "sync" => kiln_block::WriteEngine::Sync,
        e => panic!("unknown --engine {e} (uring, aio, sync)"),
    });
    let reps: usize = arg("--reps").map(|s| s.parse().expect("reps")).unwrap_or(3);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let size = size_mib << 20;
    let prealloc = dir.join("prealloc.qcow2");
    let base = dir.join("base.raw");
    let overlay = dir.join("overlay.qcow2");
    let s = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let make_prealloc = || {
        let _ = std::fs::remove_file(&prealloc);
        run(Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                "preallocation=metadata",
            ])
            .arg(&prealloc)
            .arg(size.to_string()));
    };
    make_prealloc();
    fill_base(&base, size);

    let clusters = size / 65536;
    let sc = |n: u64| ((n as f64 * scale) as u64).max(64);
    let mut cases = Vec::new();
    for image in [Image::Prealloc, Image::Overlay] {
        for write in [false, true] {
            for bufsize in [4096u64, 65536] {
                for depth in [1u64, 32] {
                    let (step, count) = match (image, write) {
                        // Each overlay write lands in a new cluster: a copy-up.
                        (Image::Overlay, true) => (
                            65536,
                            sc(clusters / if depth == 1 { 8 } else { 4 }).min(clusters),
                        ),
                        _ if bufsize == 4096 => {
                            (4096, sc(if depth == 1 { 10_000 } else { 50_000 }))
                        }
                        _ => (65536, sc(if depth == 1 { 4_000 } else { 16_000 })),
                    };
                    cases.push(Case {
                        image,
                        write,
                        bufsize,
                        step,
                        depth,
                        count,
                    });
                }
            }
        }
    }
    println!(
        "qcow2 bench: {size_mib} MiB images in {}, O_DIRECT, qemu aio={aio}, kiln engine={engine}, {}",
        dir.display(),
        run(Command::new("qemu-img").arg("--version"))
            .lines()
            .next()
            .unwrap_or("?")
    );
    println!(
        "{:<42} {:>10} {:>10} {:>9} {:>9} {:>7}",
        "case", "qemu op/s", "kiln op/s", "qemu MiB/s", "kiln MiB/s", "ratio"
    );
    let mut worst: f64 = f64::INFINITY;
    for c in &cases {
        if let Some(o) = &only {
            if !c.name().contains(o.as_str()) {
                continue;
            }
        }
        let (img, img_base) = match c.image {
            Image::Prealloc => (prealloc.clone(), None),
            Image::Overlay => (overlay.clone(), Some(base.as_path())),
        };
        // Every run starts from the same state: a fresh overlay, and for
        // writes a fresh preallocated image (its data clusters are holes
        // that the first writer would otherwise fill for the second).
        let fresh = || match c.image {
            Image::Overlay => {
                let _ = std::fs::remove_file(&overlay);
                run(Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2", "-b", &s(&base), "-F", "raw"])
                    .arg(&overlay));
            }
            Image::Prealloc if c.write => make_prealloc(),
            Image::Prealloc => {}
        };
        // Alternate which tool goes first and keep the median of `reps`
        // runs each: the shared disk of these machines is noisy.
        let (mut qs, mut ks) = (Vec::new(), Vec::new());
        for rep in 0..reps {
            if rep % 2 == 0 {
                fresh();
                qs.push(qemu_bench(&img, c, &aio));
                fresh();
                ks.push(kiln_bench(&img, img_base, c));
            } else {
                fresh();
                ks.push(kiln_bench(&img, img_base, c));
                fresh();
                qs.push(qemu_bench(&img, c, &aio));
            }
        }
        let (q, k) = (median(&mut qs), median(&mut ks));
        let mib = |ops: f64| ops * c.bufsize as f64 / (1 << 20) as f64;
        let ratio = k / q;
        worst = worst.min(ratio);
        println!(
            "{:<42} {:>10.0} {:>10.0} {:>9.1} {:>9.1} {:>7.2}",
            c.name(),
            q,
            k,
            mib(q),
            mib(k),
            ratio
        );
    }
    println!("worst ratio kiln/qemu: {worst:.2}");
    let _ = std::fs::remove_file(&overlay);
}
