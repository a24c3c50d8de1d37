//! kilnd_bench: the compute service's throughput and API latency, against
//! the goals of issue 5.
//!
//! 1. Starts a real `kilnd` (temporary state dir and socket) with the real
//!    `kiln-vmm`, registers the `hello` probe as a kernel image with the
//!    command line `hold` (the guest prints a line and halts: held guests
//!    cost no host CPU), creates N servers (flavor `k1.probe`) from C client
//!    threads and times each create -> ACTIVE (polling `GET
//!    /v1/servers/{id}`): p50, p99, and creates per second (N over the wall
//!    time until the last one is ACTIVE). Then checks every guest printed
//!    `hello: holding` on its console, deletes them all and checks no VMM
//!    process or record is left.
//! 2. Starts a second `kilnd` whose VMM binary does not exist, so servers
//!    go to ERROR at boot but are real records, inserts M of them, and
//!    times R sequential `GET /v1/servers` (each answer listing all M).
//!
//! Goals (issue 5): at least 50 creates per second; list p99 under 5 ms.
//!
//! Usage: kilnd_bench [--servers N] [--clients C] [--list-records M]
//!                    [--list-requests R] [--quick] [--probe PATH]
//! Defaults 100, 10, 1000, 500; `--quick` uses 20, 4, 200, 100. It builds
//! nothing: `kilnd` and `kiln-vmm` must be next to this binary (`cargo
//! build --release -p kiln-benches -p kiln-manager -p kiln-vmm`), and the
//! probe at cache/probes/hello.elf (`scripts/build-probes.sh`; or
//! `--probe PATH`, or `$KILN_PROBE`). Needs root and /dev/kvm.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_api::compute::ServerStatus;
use kiln_benches::kilnd::{fan_out, ms, percentile, verdict, Daemon};

const CREATES_PER_S_GOAL: f64 = 50.0;
const LIST_P99_GOAL: Duration = Duration::from_millis(5);
/// Longest a server may take to become ACTIVE (or the records to settle).
const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(10);

struct Args {
    servers: usize,
    clients: usize,
    list_records: usize,
    list_requests: usize,
    probe: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        servers: 100,
        clients: 10,
        list_records: 1000,
        list_requests: 500,
        probe: std::env::var_os("KILN_PROBE").map(PathBuf::from),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || -> Result<usize, String> {
            let v = it.next().ok_or(format!("{flag} needs a value"))?;
            match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{flag}: expected a positive integer, got {v:?}")),
            }
        };
        match flag.as_str() {
            "--servers" => a.servers = num()?,
            "--clients" => a.clients = num()?,
            "--list-records" => a.list_records = num()?,
            "--list-requests" => a.list_requests = num()?,
            "--quick" => {
                a.servers = 20;
                a.clients = 4;
                a.list_records = 200;
                a.list_requests = 100;
            }
            "--probe" => {
                a.probe = Some(PathBuf::from(
                    it.next().ok_or("--probe needs a value".to_string())?,
                ))
            }
            "-h" | "--help" => {
                println!(
                    "usage: kilnd_bench [--servers N] [--clients C] [--list-records M] \
                     [--list-requests R] [--quick] [--probe PATH]"
                );
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {flag:?} (see --help)")),
        }
    }
    Ok(a)
}

/// Placement totals that fit `n` k1.probe servers (1 vCPU, 64 MiB).
fn placement(n: usize) -> String {
    format!(
        "[placement]\ncpu_allocation_ratio = 1.0\nram_allocation_ratio = 1.0\n\
         total_vcpus = {}\nreserved_host_memory_mb = 512\ntotal_ram_mb = {}\ntotal_disk_gb = 1000\n",
        n + 8,
        512 + 64 * (n + 8)
    )
}

/// Part 1: create -> ACTIVE for `servers` real probe guests.
fn bench_creates(kilnd: &Path, vmm: &Path, probe: &Path, a: &Args) -> Result<bool, String> {
    let config = format!(
        "{}[vmm]\nbinary = \"{}\"\nstop_timeout_s = 2\nboot_timeout_s = 60\n",
        placement(a.servers),
        vmm.display()
    );
    let d = Arc::new(Daemon::start(kilnd, "create", &config)?);
    let kernel = d.dir.join("hello.elf");
    std::fs::copy(probe, &kernel).map_err(|e| format!("copy the probe: {e}"))?;
    d.register_kernel("hello", &kernel, "hold")?;
    println!(
        "creates: {} k1.probe servers (hello probe, `hold`) from {} client threads",
        a.servers, a.clients
    );
    let t0 = Instant::now();
    let dd = d.clone();
    let results = fan_out(a.servers, a.clients, move |i| {
        let start = Instant::now();
        let s = dd.create(&format!("bench-{i}"), "hello")?;
        loop {
            let s = dd.server(&s.id)?;
            match s.status {
                ServerStatus::Active if s.task_state.is_none() => {
                    return Ok((s.id, start.elapsed()))
                }
                ServerStatus::Build | ServerStatus::Active => {}
                other => {
                    return Err(format!(
                        "server {} went {other:?}: {}",
                        s.name,
                        s.fault.map(|f| f.message).unwrap_or_default()
                    ))
                }
            }
            if start.elapsed() > WAIT {
                return Err(format!("server {} not ACTIVE after {WAIT:?}", s.name));
            }
            std::thread::sleep(POLL);
        }
    })
    .map_err(|e| format!("{e}\nkilnd log (tail):\n{}", d.log_tail()))?;
    let total = t0.elapsed();
    let running = d.vmm_processes().len();
    if running != a.servers {
        return Err(format!(
            "{running} VMM processes running, expected {}",
            a.servers
        ));
    }
    // ACTIVE means the VMM runs; check every guest really booted too.
    for (id, _) in &results {
        d.wait_console(id, "hello: holding")?;
    }
    let mut lat: Vec<Duration> = results.iter().map(|r| r.1).collect();
    lat.sort();
    let rate = a.servers as f64 / total.as_secs_f64();
    println!(
        "  all {} ACTIVE in {:.2} s; create->ACTIVE p50 {}, p99 {}, max {}",
        a.servers,
        total.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat[lat.len() - 1])
    );
    let met = rate >= CREATES_PER_S_GOAL;
    println!(
        "  creates/s to ACTIVE: {rate:.1}   goal >= {CREATES_PER_S_GOAL:.0}: {}",
        verdict(met)
    );

    let ids: Arc<Vec<String>> = Arc::new(results.into_iter().map(|r| r.0).collect());
    let t1 = Instant::now();
    let dd = d.clone();
    let ids2 = ids.clone();
    fan_out(ids.len(), a.clients, move |i| {
        dd.expect("DELETE", &format!("/v1/servers/{}", ids2[i]), None, 204)
            .map(drop)
    })?;
    println!(
        "  deleted all {} in {:.2} s ({:.1} deletes/s)",
        ids.len(),
        t1.elapsed().as_secs_f64(),
        ids.len() as f64 / t1.elapsed().as_secs_f64()
    );
    let left = d.vmm_processes().len();
    if left != 0 || !d.list()?.is_empty() {
        return Err(format!(
            "after deleting: {left} VMM processes and {} records left",
            d.list()?.len()
        ));
    }
    Ok(met)
}

/// Part 2: `GET /v1/servers` with `list_records` records.
fn bench_list(kilnd: &Path, probe: &Path, a: &Args) -> Result<bool, String> {
    // A VMM binary that does not exist: each server goes to ERROR at boot,
    // and stays a record that is listed.
    let config = format!(
        "{}[vmm]\nbinary = \"/nonexistent/kiln-vmm\"\n",
        placement(a.list_records)
    );
    let d = Arc::new(Daemon::start(kilnd, "list", &config)?);
    // Never booted: any kernel kilnd accepts will do.
    let kernel = d.dir.join("fake.vmlinux");
    std::fs::copy(probe, &kernel).map_err(|e| format!("copy the probe: {e}"))?;
    d.register_kernel("fake", &kernel, "console=ttyS0")?;
    let t0 = Instant::now();
    let dd = d.clone();
    fan_out(a.list_records, a.clients, move |i| {
        dd.create(&format!("rec-{i}"), "fake").map(drop)
    })?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "list: {} server records made in {secs:.2} s ({:.0} creates accepted/s; they go ERROR: no VMM)",
        a.list_records,
        a.list_records as f64 / secs
    );
    // Let every record settle (out of BUILD) so each answer is the same.
    let deadline = Instant::now() + WAIT;
    loop {
        let l = d.list()?;
        if l.len() != a.list_records {
            return Err(format!(
                "{} records listed, expected {}",
                l.len(),
                a.list_records
            ));
        }
        if l.iter()
            .all(|s| s.status != ServerStatus::Build && s.task_state.is_none())
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("records still in BUILD after {WAIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..10 {
        d.list()?;
    }
    let mut lat = Vec::with_capacity(a.list_requests);
    let mut bytes = 0;
    for _ in 0..a.list_requests {
        let t = Instant::now();
        let r = d.expect("GET", "/v1/servers", None, 200)?;
        lat.push(t.elapsed());
        bytes = r.body.len();
    }
    let n = d.list()?.len();
    if n != a.list_records {
        return Err(format!("{n} records listed, expected {}", a.list_records));
    }
    lat.sort();
    let p99 = percentile(&lat, 0.99);
    println!(
        "  GET /v1/servers ({} records, {} KiB), {} requests one at a time: p50 {}, max {}",
        a.list_records,
        bytes / 1024,
        a.list_requests,
        ms(percentile(&lat, 0.5)),
        ms(lat[lat.len() - 1])
    );
    let met = p99 < LIST_P99_GOAL;
    println!(
        "  list p99: {}   goal < {}: {}",
        ms(p99),
        ms(LIST_P99_GOAL),
        verdict(met)
    );
    Ok(met)
}

fn run() -> Result<(), String> {
    let a = parse_args()?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let bin_dir = exe
        .parent()
        .ok_or("this binary's directory is unknown")?
        .to_owned();
    let kilnd = bin_dir.join("kilnd");
    let vmm = bin_dir.join("kiln-vmm");
    for b in [&kilnd, &vmm] {
        if !b.is_file() {
            return Err(format!(
                "{} missing: build it next to this binary with \
                 `cargo build --release -p kiln-manager -p kiln-vmm` (same CARGO_TARGET_DIR)",
                b.display()
            ));
        }
    }
    let probe = a
        .probe
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../cache/probes/hello.elf"));
    if !probe.is_file() {
        return Err(format!(
            "{} missing: run scripts/build-probes.sh (or pass --probe PATH)",
            probe.display()
        ));
    }
    let probe = probe
        .canonicalize()
        .map_err(|e| format!("{}: {e}", probe.display()))?;
    println!("kilnd_bench: {}", kilnd.display());
    let creates_met = bench_creates(&kilnd, &vmm, &probe, &a)?;
    let list_met = bench_list(&kilnd, &probe, &a)?;
    println!(
        "summary: creates/s goal {}, list p99 goal {}",
        verdict(creates_met),
        verdict(list_met)
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("kilnd_bench: {e}");
        std::process::exit(1);
    }
}
