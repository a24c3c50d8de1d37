//! openstack_bench: the OpenStack API beside kilnd's own (issue 16).
//!
//! 1. `openstack server create --flavor k1.probe --image hold --nic none
//!    --wait NAME` (python-openstackclient from cache/venv-openstack, on
//!    the clouds.yaml `kilnd --print-clouds-yaml` prints, over the TCP
//!    listener) beside `kiln server create NAME --flavor k1.probe --image
//!    hold --wait active` (kilnd's CLI on the unix socket), alternated for
//!    R rounds on one kilnd with the real kiln-vmm and the `hello` probe
//!    held; each server deleted after its round. Reports the medians and
//!    their ratio, and `openstack flavor list` alone: the Python start-up
//!    and token that every `openstack` command pays, so what is left is the
//!    API's own share.
//! 2. With M server records (a second kilnd whose VMM binary does not
//!    exist, so they settle in ERROR), C client threads for S seconds each
//!    send `GET /compute/v2.1/servers/detail` (a Keystone token, Nova's
//!    view of all M), `GET /compute/v2.1/servers` (the brief list), and
//!    kilnd's own list of the same records, `GET /v1/servers?status=ERROR`
//!    (a filter bypasses /v1's per-change cache, so it reads the store as
//!    Nova's views do; the cached `GET /v1/servers` is printed too), one
//!    connection per request on the unix socket; requests per second each
//!    and the ratios.
//!
//! Usage: openstack_bench [--rounds R] [--records M] [--clients C]
//!                        [--seconds S] [--quick]
//! Defaults 5, 1000, 4, 5; `--quick`: 3, 1000, 2, 3. `kilnd` and
//! `kiln-vmm` must be next to this binary (`cargo build --release -p
//! kiln-benches -p kiln-manager -p kiln-vmm`), the probe at
//! cache/probes/hello.elf and the venv at cache/venv-openstack
//! (`scripts/setup.sh`). Needs root and /dev/kvm.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_api::compute::ServerStatus;
use kiln_benches::kilnd::Daemon;
use kiln_benches::median;

const PASSWORD: &str = "bench-admin-password";

struct Args {
    rounds: usize,
    records: usize,
    clients: usize,
    seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        rounds: 5,
        records: 1000,
        clients: 4,
        seconds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || -> Result<usize, String> {
            let v = it.next().ok_or(format!("{flag} needs a value"))?;
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{flag}: expected a positive integer, got {v:?}"))
        };
        match flag.as_str() {
            "--rounds" => a.rounds = num()?,
            "--records" => a.records = num()?,
            "--clients" => a.clients = num()?,
            "--seconds" => a.seconds = num()? as u64,
            "--quick" => (a.rounds, a.clients, a.seconds) = (3, 2, 3),
            "-h" | "--help" => {
                println!(
                    "usage: openstack_bench [--rounds R] [--records M] [--clients C] \
                     [--seconds S] [--quick]"
                );
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {flag:?} (see --help)")),
        }
    }
    Ok(a)
}

fn config(extra: &str, records: usize) -> String {
    format!(
        "{extra}[placement]\ncpu_allocation_ratio = 1.0\nram_allocation_ratio = 1.0\n\
         total_vcpus = {}\nreserved_host_memory_mb = 512\ntotal_ram_mb = {}\n\
         total_disk_gb = 1000\n[openstack]\nadmin_password = \"{PASSWORD}\"\n",
        records + 8,
        512 + 64 * (records + 8)
    )
}

/// Runs `cmd`, which must succeed; its wall time.
fn timed(cmd: &mut Command) -> Result<Duration, String> {
    let t = Instant::now();
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(t.elapsed())
}

fn secs(v: Vec<f64>) -> String {
    format!("{:.3} s", median(v))
}

fn bench_create(bin: &Path, probe: &Path, root: &Path, a: &Args) -> Result<(), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("a free port: {e}"))?
        .port();
    let token_file = std::env::temp_dir().join(format!("osbench-token-{}", std::process::id()));
    std::fs::write(&token_file, "openstack-bench-v1-token\n").map_err(|e| e.to_string())?;
    let extra = format!(
        "[vmm]\nbinary = {:?}\n[tcp]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = {:?}\n",
        bin.join("kiln-vmm").display().to_string(),
        token_file.display().to_string()
    );
    let d = Daemon::start(&bin.join("kilnd"), "os-create", &config(&extra, 8))?;
    let _ = std::fs::remove_file(&token_file);
    let kernel = d.dir.join("hello.elf");
    std::fs::copy(probe, &kernel).map_err(|e| format!("copy the probe: {e}"))?;
    d.register_kernel("hold", &kernel, "hold")?;
    let clouds = d.dir.join("clouds.yaml");
    let out = Command::new(bin.join("kilnd"))
        .arg("--config")
        .arg(d.dir.join("kilnd.toml"))
        .arg("--state-dir")
        .arg(&d.state)
        .arg("--print-clouds-yaml")
        .output()
        .map_err(|e| format!("kilnd --print-clouds-yaml: {e}"))?;
    std::fs::write(&clouds, &out.stdout).map_err(|e| e.to_string())?;
    let osc = root.join("cache/venv-openstack/bin/openstack");
    let openstack = |args: &[&str]| {
        let mut c = Command::new(&osc);
        c.args(args)
            .env("OS_CLIENT_CONFIG_FILE", &clouds)
            .env("OS_CLOUD", "kiln");
        c
    };
    let kiln = |args: &[&str]| {
        let mut c = Command::new(bin.join("kiln"));
        c.arg("--socket").arg(&d.socket).args(args);
        c
    };
    let (mut os_t, mut kiln_t, mut fixed_t) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..a.rounds {
        let name = format!("os-{r}");
        let t = timed(&mut openstack(&[
            "server", "create", "--flavor", "k1.probe", "--image", "hold", "--nic", "none",
            "--wait", &name,
        ]))?;
        os_t.push(t.as_secs_f64());
        timed(&mut openstack(&["server", "delete", "--wait", &name]))?;
        let name = format!("kiln-{r}");
        let t = timed(&mut kiln(&[
            "server", "create", &name, "--flavor", "k1.probe", "--image", "hold", "--wait",
            "active",
        ]))?;
        kiln_t.push(t.as_secs_f64());
        timed(&mut kiln(&["server", "delete", &name]))?;
        fixed_t.push(timed(&mut openstack(&["flavor", "list"]))?.as_secs_f64());
    }
    let (os_m, kiln_m) = (median(os_t.clone()), median(kiln_t.clone()));
    println!(
        "create --wait, {} rounds (median): openstack {}, kiln {}: ratio kiln/openstack {:.3}",
        a.rounds,
        secs(os_t),
        secs(kiln_t),
        kiln_m / os_m
    );
    println!(
        "  `openstack flavor list` alone (Python start-up, token, one request): {}",
        secs(fixed_t)
    );
    Ok(())
}

/// `GET path` on `socket` with `token`, one connection; the status.
fn get(socket: &Path, path: &str, token: &str) -> std::io::Result<u16> {
    let mut s = UnixStream::connect(socket)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: kiln\r\nx-auth-token: {token}\r\nconnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let head = String::from_utf8_lossy(&out[..out.len().min(16)]).into_owned();
    Ok(head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

/// A Keystone token for `auth` (the `X-Subject-Token` of a 201).
fn keystone_token(socket: &Path, auth: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    write!(
        s,
        "POST /identity/v3/auth/tokens HTTP/1.1\r\nhost: kiln\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{auth}",
        auth.len()
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let head = out.split("\r\n\r\n").next().unwrap_or("");
    if !head.starts_with("HTTP/1.1 201") {
        return Err(format!("Keystone refused the bench's password: {out}"));
    }
    head.lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("x-subject-token"))
        })
        .map(|(_, v)| v.trim().to_owned())
        .ok_or_else(|| "no X-Subject-Token".into())
}

/// Requests per second on `path` from `clients` threads for `secs`.
fn throughput(
    socket: &Path,
    path: &str,
    token: &str,
    clients: usize,
    secs: u64,
) -> Result<f64, String> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (socket, path, token) = (socket.to_owned(), path.to_owned(), token.to_owned());
            let (done, stop) = (done.clone(), stop.clone());
            std::thread::spawn(move || -> Result<(), String> {
                while !stop.load(Ordering::Relaxed) {
                    match get(&socket, &path, &token) {
                        Ok(200) => done.fetch_add(1, Ordering::Relaxed),
                        Ok(s) => return Err(format!("GET {path}: HTTP {s}")),
                        Err(e) => return Err(format!("GET {path}: {e}")),
                    };
                }
                Ok(())
            })
        })
        .collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().map_err(|_| "a client panicked".to_string())??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64())
}

fn bench_detail(bin: &Path, probe: &Path, a: &Args) -> Result<(), String> {
    let extra = "[vmm]\nbinary = \"/nonexistent/kiln-vmm\"\n";
    let d = Arc::new(Daemon::start(
        &bin.join("kilnd"),
        "os-list",
        &config(extra, a.records),
    )?);
    let kernel = d.dir.join("hello.elf");
    std::fs::copy(probe, &kernel).map_err(|e| format!("copy the probe: {e}"))?;
    d.register_kernel("fake", &kernel, "")?;
    let dd = d.clone();
    kiln_benches::kilnd::fan_out(a.records, 4, move |i| {
        dd.create(&format!("rec-{i}"), "fake").map(drop)
    })?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !d
        .list()?
        .iter()
        .all(|s| s.status != ServerStatus::Build && s.task_state.is_none())
    {
        if Instant::now() > deadline {
            return Err("records still in BUILD after 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let auth = serde_json::json!({"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": "admin", "domain": {"id": "default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}});
    let token = keystone_token(&d.socket, &auth.to_string())?;
    // /v1/servers answers from a cache kept per store change; with a
    // filter it reads the store each time, as Nova's views always do.
    let rate = |path: &str| throughput(&d.socket, path, &token, a.clients, a.seconds);
    let detail = rate("/compute/v2.1/servers/detail")?;
    let brief = rate("/compute/v2.1/servers")?;
    let v1_cached = rate("/v1/servers")?;
    let v1 = rate("/v1/servers?status=ERROR")?;
    println!(
        "list of {} servers, {} clients, {} s each, requests/s: Nova detail {detail:.1}, \
         Nova brief {brief:.1}, /v1/servers?status=ERROR {v1:.1} (cached /v1/servers {v1_cached:.1})",
        a.records, a.clients, a.seconds
    );
    println!(
        "  ratio Nova detail / kilnd's uncached list {:.3}, Nova brief / it {:.3}",
        detail / v1,
        brief / v1
    );
    Ok(())
}

fn run() -> Result<(), String> {
    let a = parse_args()?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let bin: PathBuf = exe
        .parent()
        .ok_or("this binary's directory is unknown")?
        .to_owned();
    for b in ["kilnd", "kiln", "kiln-vmm"] {
        if !bin.join(b).is_file() {
            return Err(format!(
                "{} missing: `cargo build --release -p kiln-manager -p kiln-vmm` (same CARGO_TARGET_DIR)",
                bin.join(b).display()
            ));
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let probe = root.join("cache/probes/hello.elf");
    if !probe.is_file() || !root.join("cache/venv-openstack/bin/openstack").is_file() {
        return Err("the hello probe or cache/venv-openstack is missing: run scripts/setup.sh and scripts/build-probes.sh".into());
    }
    bench_create(&bin, &probe, &root, &a)?;
    bench_detail(&bin, &probe, &a)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("openstack_bench: {e}");
        std::process::exit(1);
    }
}
