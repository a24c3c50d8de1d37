//! boot_bench: start-up time and memory overhead of `kiln-vmm` against
//! `qemu-system-x86_64 -enable-kvm` (`-M pc` and `-M microvm` by default),
//! on the same `hello` probe guest
//! (images/probes/hello.s), started N times each, interleaved.
//!
//! For every run it measures:
//! - spawn to first guest instruction: from just before `spawn` to the first
//!   byte on the VMM's stdout (the probe's first instructions write the debug
//!   port and then `*` to COM1, which both VMMs put on stdout);
//! - for kiln-vmm, also the first debug-port timestamp from `GET /v1/vm`
//!   (microseconds since the VMM process started, on the VMM's clock);
//! - the VMM's resident memory without guest RAM: the Rss of every mapping
//!   in /proc/PID/smaps except the guest RAM mapping, taken while the guest
//!   spins (the probe's `hold` mode) after printing `hello: holding`.
//!
//! Then it prints the median and p90 of each, the Kiln/QEMU ratios, and the
//! goals (at most 0.5x QEMU's start-up time, under 5 MiB overhead).
//!
//! Usage: boot_bench [--runs N] [--memory MIB] [--kiln PATH] [--qemu PATH]
//!                   [--qemu-machines pc,microvm]
//! (QEMU `-M pc` boots the probe through SeaBIOS and its PVH option ROM,
//! which this nested KVM emulates slowly; `-M microvm` through qboot.)
//! Build with `--release` for numbers that mean something: the kiln-vmm it
//! measures is `$KILN_VMM`, else the one in this binary's own target
//! profile directory (built or brought up to date there with cargo).

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kiln_api::client;
use kiln_api::control::{Request, VmInfo};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
const HOLDING: &str = "hello: holding";
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

struct Args {
    runs: usize,
    memory_mib: u64,
    kiln: Option<PathBuf>,
    qemu: String,
    qemu_machines: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        runs: 20,
        memory_mib: 64,
        kiln: std::env::var_os("KILN_VMM").map(PathBuf::from),
        qemu: "qemu-system-x86_64".to_string(),
        qemu_machines: "pc,microvm".to_string(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--memory" => a.memory_mib = value()?.parse().map_err(|e| format!("--memory: {e}"))?,
            "--kiln" => a.kiln = Some(PathBuf::from(value()?)),
            "--qemu" => a.qemu = value()?,
            "--qemu-machines" => a.qemu_machines = value()?,
            "-h" | "--help" => {
                return Err("usage: boot_bench [--runs N] [--memory MIB] [--kiln PATH] \
                            [--qemu PATH] [--qemu-machines pc,microvm]"
                    .to_string())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.runs == 0 || a.memory_mib < 16 {
        return Err("--runs must be > 0 and --memory at least 16".to_string());
    }
    Ok(a)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_path_buf()
}

/// kiln-vmm next to this binary (same target and profile), built (or
/// brought up to date) there with cargo.
fn find_kiln() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe.parent().ok_or("no exe dir")?;
    let bin = profile_dir.join("kiln-vmm");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let target = profile_dir.parent().ok_or("no target dir")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "kiln-vmm",
            "--bin",
            "kiln-vmm",
            "--target-dir",
        ])
        .arg(target);
    if profile == "release" {
        cmd.arg("--release");
    }
    let st = cmd.status().map_err(|e| format!("cargo: {e}"))?;
    if !st.success() || !bin.exists() {
        return Err(format!("building kiln-vmm failed ({st})"));
    }
    Ok(bin)
}

fn build_probe() -> Result<PathBuf, String> {
    let out = Command::new(repo_root().join("scripts/build-probes.sh"))
        .arg("hello")
        .output()
        .map_err(|e| format!("scripts/build-probes.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/build-probes.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(PathBuf::from(path))
}

/// One run's figures.
#[derive(Default, Clone, Copy)]
struct Sample {
    /// Spawn to the first byte on stdout, µs.
    first_byte_us: f64,
    /// First debug-port write on the VMM's own clock, µs (kiln only).
    first_debug_us: Option<f64>,
    /// Rss of everything but guest RAM, bytes.
    overhead: u64,
    /// Rss of the whole process, bytes.
    total_rss: u64,
}

/// Chunks of a child's stdout with their arrival times.
type Output = mpsc::Receiver<(Instant, Vec<u8>)>;

/// Kill a child on every path out.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawn `cmd` with stdout piped; return the child, the spawn instant and a
/// channel of (arrival, bytes) chunks from its stdout.
fn spawn_piped(mut cmd: Command) -> Result<(Guard, Instant, Output), String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok((Guard(child), t0, rx))
}

/// Wait for the first byte, then for `HOLDING`; returns the first byte's
/// arrival.
fn wait_output(rx: &Output, what: &str) -> Result<Instant, String> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut first = None;
    let mut text = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, bytes) = rx.recv_timeout(left).map_err(|_| {
            format!(
                "{what}: no {HOLDING:?} (output so far: {:?})",
                String::from_utf8_lossy(&text)
            )
        })?;
        first.get_or_insert(at);
        text.extend_from_slice(&bytes);
        if String::from_utf8_lossy(&text).contains(HOLDING) {
            return Ok(first.expect("set above"));
        }
    }
}

/// (total Rss, Rss of the guest RAM mapping) from /proc/PID/smaps. The guest
/// RAM mapping is the anonymous or memfd mapping of at least `ram` bytes
/// (and at most 4 MiB more, for guard pages) with the largest Rss.
fn smaps_rss(pid: u32, ram: u64) -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map_err(|e| format!("smaps of {pid}: {e}"))?;
    let mut total = 0;
    let mut guest = 0;
    let mut size = 0u64;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let (a, b) = first.split_once('-').unwrap_or(("0", "0"));
            let a = u64::from_str_radix(a, 16).unwrap_or(0);
            let b = u64::from_str_radix(b, 16).unwrap_or(0);
            size = b.saturating_sub(a);
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            let rss = kb * KIB;
            total += rss;
            if size >= ram && size <= ram + 4 * MIB && rss > guest {
                guest = rss;
            }
        }
    }
    Ok((total, guest))
}

/// `GET /v1/vm` on the kiln-vmm control socket; the first debug-port time.
fn first_debug_us(sock: &Path) -> Result<Option<f64>, String> {
    let info: VmInfo = client::control(sock, &Request::Info, Duration::from_secs(5))
        .and_then(|r| r.json())
        .map_err(|e| format!("GET /v1/vm on {}: {e}", sock.display()))?;
    Ok(info.boot_progress.first().map(|p| p.time_us as f64))
}

fn wait_socket(sock: &Path, child: &mut Guard) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(sock).is_err() {
        if let Ok(Some(st)) = child.0.try_wait() {
            return Err(format!("kiln-vmm exited: {st}"));
        }
        if Instant::now() > deadline {
            return Err("kiln-vmm api socket did not come up".to_string());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn run_kiln(
    kiln: &Path,
    probe: &Path,
    mem: u64,
    scratch: &Path,
    i: usize,
) -> Result<Sample, String> {
    let sock = scratch.join(format!("api-{i}.sock"));
    let _ = std::fs::remove_file(&sock);
    let mut cmd = Command::new(kiln);
    cmd.arg("--kernel")
        .arg(probe)
        .args(["--cmdline", "hold", "--cpus", "1", "--memory"])
        .arg(format!("{mem}M"))
        .arg("--serial-stdout")
        .arg("--api-socket")
        .arg(&sock)
        .args(["--log-level", "warn"]);
    let (mut child, t0, rx) = spawn_piped(cmd)?;
    let first = wait_output(&rx, "kiln-vmm")?;
    let (total, guest) = smaps_rss(child.0.id(), mem * MIB)?;
    wait_socket(&sock, &mut child)?;
    let dbg = first_debug_us(&sock)?;
    drop(child);
    let _ = std::fs::remove_file(&sock);
    Ok(Sample {
        first_byte_us: first.duration_since(t0).as_secs_f64() * 1e6,
        first_debug_us: dbg,
        overhead: total - guest,
        total_rss: total,
    })
}

fn run_qemu(qemu: &str, machine: &str, probe: &Path, mem: u64) -> Result<Sample, String> {
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-enable-kvm",
        "-M",
        machine,
        "-cpu",
        "host,-arch-capabilities",
        "-m",
    ])
    .arg(mem.to_string())
    .args([
        "-display",
        "none",
        "-nodefaults",
        "-serial",
        "stdio",
        "-monitor",
        "none",
    ])
    .args(["-no-reboot", "-kernel"])
    .arg(probe)
    .args(["-append", "hold"]);
    let (child, t0, rx) = spawn_piped(cmd)?;
    let first = wait_output(&rx, "qemu")?;
    let (total, guest) = smaps_rss(child.0.id(), mem * MIB)?;
    drop(child);
    Ok(Sample {
        first_byte_us: first.duration_since(t0).as_secs_f64() * 1e6,
        first_debug_us: None,
        overhead: total - guest,
        total_rss: total,
    })
}

/// (median, p90) by the nearest-rank method.
fn median_p90(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| {
        let r = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[r - 1]
    };
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, rank(0.9))
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("boot_bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    let args = parse_args()?;
    if !Path::new("/dev/kvm").exists() {
        return Err("/dev/kvm is absent: this benchmark runs real KVM guests".to_string());
    }
    let kiln = match &args.kiln {
        Some(p) => p.clone(),
        None => find_kiln()?,
    };
    let probe = build_probe()?;
    let scratch = std::env::temp_dir().join(format!("kiln-boot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let machines: Vec<&str> = args.qemu_machines.split(',').collect();
    println!(
        "boot_bench: {} runs each, guest {} MiB, probe {}\n  kiln: {}\n  qemu: {} -M {}",
        args.runs,
        args.memory_mib,
        probe.display(),
        kiln.display(),
        args.qemu,
        machines.join(", -M ")
    );
    let mut k = Vec::new();
    let mut q: Vec<Vec<Sample>> = vec![Vec::new(); machines.len()];
    let result = (|| {
        for i in 0..args.runs {
            k.push(run_kiln(&kiln, &probe, args.memory_mib, &scratch, i)?);
            for (m, samples) in machines.iter().zip(q.iter_mut()) {
                samples.push(run_qemu(&args.qemu, m, &probe, args.memory_mib)?);
            }
            eprint!(".");
        }
        eprintln!();
        Ok::<(), String>(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result?;
    report(&k, &machines, &q);
    Ok(())
}

fn ms(v: f64) -> f64 {
    v / 1000.0
}

fn mib(v: f64) -> f64 {
    v / MIB as f64
}

fn row_ms(label: &str, v: Vec<f64>) -> f64 {
    let (m, p90) = median_p90(v);
    println!("{label:<52} {:>9.2} ms {:>9.2} ms", ms(m), ms(p90));
    m
}

fn row_mib(label: &str, v: Vec<f64>) -> f64 {
    let (m, p90) = median_p90(v);
    println!("{label:<52} {:>8.2} MiB {:>8.2} MiB", mib(m), mib(p90));
    m
}

fn report(k: &[Sample], machines: &[&str], q: &[Vec<Sample>]) {
    println!();
    println!("{:<52} {:>12} {:>12}", "", "median", "p90");
    let kt = row_ms(
        "kiln-vmm: spawn -> first serial byte",
        k.iter().map(|s| s.first_byte_us).collect(),
    );
    let kd: Vec<f64> = k.iter().filter_map(|s| s.first_debug_us).collect();
    if kd.len() == k.len() {
        row_ms("kiln-vmm: VMM start -> first debug-port write", kd);
    } else {
        println!(
            "kiln-vmm: no debug-port timestamp in {} of {} runs",
            k.len() - kd.len(),
            k.len()
        );
    }
    let ko = row_mib(
        "kiln-vmm: RSS without guest RAM",
        k.iter().map(|s| s.overhead as f64).collect(),
    );
    row_mib(
        "kiln-vmm: whole RSS",
        k.iter().map(|s| s.total_rss as f64).collect(),
    );
    let mut ratios = Vec::new();
    for (m, samples) in machines.iter().zip(q) {
        let qt = row_ms(
            &format!("qemu -M {m}: spawn -> first serial byte"),
            samples.iter().map(|s| s.first_byte_us).collect(),
        );
        let qo = row_mib(
            &format!("qemu -M {m}: RSS without guest RAM"),
            samples.iter().map(|s| s.overhead as f64).collect(),
        );
        row_mib(
            &format!("qemu -M {m}: whole RSS"),
            samples.iter().map(|s| s.total_rss as f64).collect(),
        );
        ratios.push((m, kt / qt, ko / qo));
    }
    println!();
    for (m, time_ratio, mem_ratio) in &ratios {
        println!("ratio kiln/qemu -M {m} (medians): start-up {time_ratio:.3}, memory overhead {mem_ratio:.3}");
    }
    let worst = ratios.iter().map(|r| r.1).fold(0.0, f64::max);
    println!(
        "goal start-up <= 0.5x QEMU: {} (worst ratio {worst:.3}x)",
        if worst <= 0.5 { "MET" } else { "NOT MET" }
    );
    println!(
        "goal overhead < 5 MiB: {} ({:.2} MiB)",
        if ko < 5.0 * MIB as f64 {
            "MET"
        } else {
            "NOT MET"
        },
        mib(ko)
    );
}
