//! openstack_bench: the OpenStack API beside kilnd's own (issue 16).
//!
//! 1. A real `kilnd` with the real `kiln-vmm` and its TCP listener on
//!    loopback: `openstack server create --flavor k1.probe --image hold
//!    --nic none --wait` (python-openstackclient from
//!    `cache/venv-openstack`, on the `clouds.yaml` kilnd prints) beside
//!    `kiln server create --wait active` for the `hello` probe held
//!    guest, N of each, wall time per command end to end (process start,
//!    auth and polling included); `openstack token issue` alone shows
//!    what osc's start and Keystone auth cost.
//! 2. A `kilnd` whose VMM binary does not exist (servers go to ERROR at
//!    boot but are records) with M servers: requests per second on `GET
//!    /compute/v2.1/servers/detail` (Keystone token) and on `GET
//!    /v1/servers`, from C client threads over the unix socket for S
//!    seconds.
//!
//! Usage: openstack_bench [--runs N] [--records M] [--clients C]
//!                        [--seconds S] [--probe PATH]
//! Defaults 5, 1000, 4, 5. `kilnd`, `kiln` and `kiln-vmm` must be next
//! to this binary (`cargo build --release -p kiln-benches -p
//! kiln-manager -p kiln-vmm`). Needs root and /dev/kvm.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    runs: usize,
    records: usize,
    clients: usize,
    seconds: u64,
    probe: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        runs: 5,
        records: 1000,
        clients: 4,
        seconds: 5,
        probe: kiln_tests::cache_dir().join("probes/hello.elf"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{f} needs a value"));
        match f.as_str() {
            "--runs" => a.runs = v.parse().expect("--runs N"),
            "--records" => a.records = v.parse().expect("--records M"),
            "--clients" => a.clients = v.parse().expect("--clients C"),
            "--seconds" => a.seconds = v.parse().expect("--seconds S"),
            "--probe" => a.probe = v.into(),
            _ => panic!("unknown flag {f}"),
        }
    }
    a
}

fn sibling(name: &str) -> PathBuf {
    let p = std::env::current_exe().unwrap().with_file_name(name);
    assert!(p.exists(), "{} missing: build it first", p.display());
    p
}

/// A kilnd on a temporary directory, killed on drop.
struct Daemon {
    dir: tempfile_dir::Dir,
    child: Child,
}

mod tempfile_dir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Daemon {
    fn start(tag: &str, config: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("os-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("kilnd.toml");
        let config = format!(
            "{config}\n[images]\nimport_dirs = [{:?}]\n[networks]\ndefault = false\n",
            dir.display().to_string()
        );
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.join("kilnd.log")).unwrap();
        let mut cmd = Command::new(sibling("kilnd"));
        kiln_tests::die_with_parent(&mut cmd);
        let child = cmd
            .args(["--config", cfg.to_str().unwrap(), "--state-dir"])
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(dir.join("kiln.sock"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon {
            dir: tempfile_dir::Dir(dir),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while req(&d.sock(), "GET", "/v1/host", &[], b"").0 == 0 {
            assert!(Instant::now() < deadline, "kilnd did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn sock(&self) -> PathBuf {
        self.dir.0.join("kiln.sock")
    }

    fn config(&self) -> PathBuf {
        self.dir.0.join("kilnd.toml")
    }

    fn register(&self, probe: &Path, name: &str, cmdline: &str) {
        let k = self.dir.0.join(format!("{name}.elf"));
        std::fs::copy(probe, &k).unwrap();
        let body =
            serde_json::json!({"type": "kernel", "name": name, "kernel": k, "cmdline": cmdline});
        let (s, b) = req(
            &self.sock(),
            "POST",
            "/v1/images",
            &[],
            body.to_string().as_bytes(),
        );
        assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on the unix socket: (status, body); status 0 if none.
fn req(
    sock: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return (0, vec![]);
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    if s.write_all(&out).is_err() {
        return (0, vec![]);
    }
    let mut resp = vec![];
    let _ = s.read_to_end(&mut resp);
    let status = String::from_utf8_lossy(&resp[..resp.len().min(16)])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |i| i + 4);
    (status, resp[at..].to_vec())
}

/// Wall time of one command, which must succeed.
fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let out = cmd.output().unwrap();
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Part 1: `openstack server create --wait` beside `kiln server create --wait active`.
fn creates(a: &Args) {
    let d = Daemon::start(
        "create",
        &format!(
            "[vmm]\nbinary = {:?}\n[tcp]\nlisten = \"127.0.0.1:18799\"\ntoken_file = {:?}\n[openstack]\nadmin_password = \"bench-pw-0\"\n",
            sibling("kiln-vmm").display().to_string(),
            {
                let t = std::env::temp_dir().join(format!("os-bench-token-{}", std::process::id()));
                std::fs::write(&t, "bench-bearer-token-0123\n").unwrap();
                t.display().to_string()
            }
        ),
    );
    d.register(&a.probe, "hold", "hold");
    let yaml = Command::new(sibling("kilnd"))
        .arg("--config")
        .arg(d.config())
        .arg("--state-dir")
        .arg(d.dir.0.join("state"))
        .arg("--print-clouds-yaml")
        .output()
        .unwrap();
    let clouds = d.dir.0.join("clouds.yaml");
    std::fs::write(&clouds, &yaml.stdout).unwrap();
    let osc = kiln_tests::cache_dir().join("venv-openstack/bin/openstack");
    let os = |args: &[&str]| {
        let mut c = Command::new(&osc);
        c.args(args)
            .env("OS_CLIENT_CONFIG_FILE", &clouds)
            .env("OS_CLOUD", "kiln");
        c
    };
    let (mut o, mut k, mut t) = (vec![], vec![], vec![]);
    for i in 0..a.runs {
        t.push(timed(&mut os(&["token", "issue"])));
        let name = format!("os{i}");
        o.push(timed(&mut os(&[
            "server", "create", "--flavor", "k1.probe", "--image", "hold", "--nic", "none",
            "--wait", &name,
        ])));
        timed(&mut os(&["server", "delete", "--wait", &name]));
        let name = format!("k{i}");
        let mut c = Command::new(sibling("kiln"));
        c.arg("--socket").arg(d.sock()).args([
            "server", "create", &name, "--flavor", "k1.probe", "--image", "hold", "--wait",
            "active",
        ]);
        k.push(timed(&mut c));
        let mut c = Command::new(sibling("kiln"));
        c.arg("--socket")
            .arg(d.sock())
            .args(["server", "delete", &name]);
        timed(&mut c);
    }
    let (mo, mk, mt) = (median(o), median(k), median(t));
    println!(
        "create -> ACTIVE of a held probe guest, end to end, median of {}:",
        a.runs
    );
    println!("  openstack server create --wait   {}", ms(mo));
    println!("  kiln server create --wait active {}", ms(mk));
    println!(
        "  openstack token issue (osc start + Keystone auth) {}",
        ms(mt)
    );
    println!(
        "  ratio openstack/kiln: {:.1}x",
        mo.as_secs_f64() / mk.as_secs_f64()
    );
}

/// Requests per second on `path` with `headers`, from `clients` threads.
fn rate(
    sock: &Path,
    path: &str,
    headers: &[(&str, &str)],
    clients: usize,
    secs: u64,
) -> (f64, usize) {
    let n = Arc::new(AtomicU64::new(0));
    let size = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..clients {
            let (n, size) = (n.clone(), size.clone());
            s.spawn(move || {
                while Instant::now() < end {
                    let (st, b) = req(sock, "GET", path, headers, b"");
                    assert_eq!(st, 200, "{path}: {}", String::from_utf8_lossy(&b));
                    size.store(b.len() as u64, Ordering::Relaxed);
                    n.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    (
        n.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64(),
        size.load(Ordering::Relaxed) as usize,
    )
}

/// Part 2: `servers/detail` with `records` servers.
fn lists(a: &Args) {
    let m = a.records;
    let d = Daemon::start(
        "list",
        &format!(
            "[vmm]\nbinary = \"/nonexistent/kiln-vmm\"\n[placement]\ntotal_vcpus = {}\ncpu_allocation_ratio = 1.0\ntotal_ram_mb = {}\ntotal_disk_gb = {}\n[openstack]\nadmin_password = \"bench-pw-0\"\n",
            m + 8,
            4096 + 64 * m,
            m + 8
        ),
    );
    d.register(&a.probe, "fake", "console=ttyS0");
    for i in 0..m {
        let body = format!(r#"{{"name":"r{i}","flavor":"k1.probe","image":"fake"}}"#);
        let (s, b) = req(&d.sock(), "POST", "/v1/servers", &[], body.as_bytes());
        assert_eq!(s, 202, "{}", String::from_utf8_lossy(&b));
    }
    // Every record out of BUILD.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, b) = req(&d.sock(), "GET", "/v1/servers?status=BUILD", &[], b"");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        if v["servers"].as_array().is_some_and(|l| l.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "records still in BUILD");
        std::thread::sleep(Duration::from_millis(200));
    }
    let auth = r#"{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"bench-pw-0"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}"#;
    let mut s = UnixStream::connect(d.sock()).unwrap();
    write!(s, "POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: l\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{auth}", auth.len()).unwrap();
    let mut t = String::new();
    s.read_to_string(&mut t).unwrap();
    let token = t
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-subject-token: ")
                .map(|v| v.trim().to_owned())
        })
        .expect("a token");
    let h = [
        ("X-Auth-Token", token.as_str()),
        ("OpenStack-API-Version", "compute 2.100"),
    ];
    let (os, os_size) = rate(
        &d.sock(),
        "/compute/v2.1/servers/detail",
        &h,
        a.clients,
        a.seconds,
    );
    let (brief, brief_size) = rate(&d.sock(), "/compute/v2.1/servers", &h, a.clients, a.seconds);
    let (v1, v1_size) = rate(&d.sock(), "/v1/servers", &[], a.clients, a.seconds);
    // Filtered: not the cached whole-list answer, every record from SQLite.
    let (v1f, v1f_size) = rate(
        &d.sock(),
        "/v1/servers?status=ERROR",
        &[],
        a.clients,
        a.seconds,
    );
    println!(
        "{m} servers, {} client threads, {} s each, unix socket:",
        a.clients, a.seconds
    );
    println!(
        "  GET /compute/v2.1/servers/detail (2.100, {} KiB): {os:.1} requests/s",
        os_size / 1024
    );
    println!(
        "  GET /compute/v2.1/servers (brief, {} KiB): {brief:.1} requests/s",
        brief_size / 1024
    );
    println!(
        "  GET /v1/servers (cached, {} KiB): {v1:.1} requests/s",
        v1_size / 1024
    );
    println!(
        "  GET /v1/servers?status=ERROR ({} KiB): {v1f:.1} requests/s",
        v1f_size / 1024
    );
}

fn main() {
    let a = args();
    assert!(
        a.probe.exists(),
        "{} missing: scripts/build-probes.sh",
        a.probe.display()
    );
    if a.runs > 0 {
        creates(&a);
    }
    lists(&a);
}
