//! The host's side of the comparison: `fio` on the benchmark file, a
//! plain positioned read/write loop in this process, and the file itself
//! (creation, warming the page cache).

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_benches::thread_cpu;
use kiln_block::AlignedBuf;

use crate::{Case, Run, MIB};

/// fio on `path`: ops and seconds from its JSON report.
pub fn run_fio(
    path: &Path,
    size: u64,
    case: Case,
    direct: bool,
    secs: f64,
    engine: &str,
) -> Result<Run, String> {
    let rw = match (case.random, case.write) {
        (true, false) => "randread",
        (true, true) => "randwrite",
        (false, false) => "read",
        (false, true) => "write",
    };
    let out = Command::new("fio")
        .arg("--name=kiln-vblk")
        .arg(format!("--filename={}", path.display()))
        .arg(format!("--rw={rw}"))
        .arg(format!("--bs={}", case.bs))
        .arg(format!("--size={size}"))
        .arg(format!("--ioengine={engine}"))
        .args(["--iodepth=1", "--numjobs=1"])
        .arg(format!("--direct={}", u8::from(direct)))
        // Keep the warm cache of the page-cache runs (fio drops it by default).
        .arg("--invalidate=0")
        .arg("--time_based")
        .arg(format!("--runtime={}ms", (secs * 1000.0) as u64))
        .arg("--output-format=json")
        .output()
        .map_err(|e| format!("running fio (Debian package fio): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "fio failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // fio may print notes before the JSON.
    let json = text.find('{').map(|i| &text[i..]).unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("fio JSON: {e}: {text}"))?;
    let dir = if case.write { "write" } else { "read" };
    let job = &v["jobs"][0];
    let ops = job[dir]["total_ios"]
        .as_u64()
        .ok_or_else(|| format!("fio JSON has no jobs[0].{dir}.total_ios"))?;
    let ms = job[dir]["runtime"]
        .as_u64()
        .ok_or_else(|| format!("fio JSON has no jobs[0].{dir}.runtime"))?;
    if ops == 0 || ms == 0 {
        return Err(format!("fio did no {dir} I/O"));
    }
    let cpu_pct = job["usr_cpu"].as_f64().unwrap_or(0.0) + job["sys_cpu"].as_f64().unwrap_or(0.0);
    let secs = ms as f64 / 1000.0;
    Ok(Run {
        ops,
        secs,
        device_secs: None,
        cpu: cpu_pct / 100.0 * secs,
    })
}

/// A plain positioned read/write loop on the file in this process.
pub fn run_pread(
    path: &Path,
    offs: &[u64],
    case: Case,
    direct: bool,
    secs: f64,
) -> Result<Run, String> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    let f = o
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = AlignedBuf::new(case.bs as usize);
    buf.fill(0x77);
    let budget = Duration::from_secs_f64(secs);
    let mut ops = 0u64;
    let mut next = offs.iter().cycle();
    let t0 = Instant::now();
    let c0 = thread_cpu();
    while t0.elapsed() < budget {
        let o = *next.next().ok_or("no offsets")?;
        if case.write {
            f.write_all_at(&buf, o)
        } else {
            f.read_exact_at(&mut buf, o)
        }
        .map_err(|e| format!("pread/pwrite at {o}: {e}"))?;
        ops += 1;
    }
    Ok(Run {
        ops,
        secs: t0.elapsed().as_secs_f64(),
        device_secs: None,
        cpu: (thread_cpu() - c0).as_secs_f64(),
    })
}

/// Bring the whole file into the page cache.
pub fn warm(path: &Path) -> Result<(), String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; MIB as usize];
    let mut off = 0;
    loop {
        let n = f.read_at(&mut buf, off).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        off += n as u64;
    }
}

pub fn create_file(path: &Path, size: u64) -> Result<(), String> {
    let f = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let chunk: Vec<u8> = (0..MIB).map(|i| (i * 31 + 7) as u8).collect();
    for i in 0..size / MIB {
        f.write_all_at(&chunk, i * MIB)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    f.sync_all().map_err(|e| e.to_string())
}
