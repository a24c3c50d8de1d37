//! The metadata service under load: kilnd in a network namespace this
//! benchmark creates, a network with a subnet, one server (its kiln-vmm
//! does not exist: it goes to ERROR and keeps its NIC, which is all the
//! service needs), and a "guest" namespace whose veth on the bridge has
//! the port's MAC and address. C client threads in the guest, each on one
//! keep-alive connection, GET `/openstack/latest/meta_data.json` for a
//! while; it prints requests per second and p50/p99 latency. Beside it,
//! the peer: Debian's nginx (from `cache/debs/nginx`, scripts/setup.sh)
//! serving the same bytes as a static file from a namespace of its own on
//! the same bridge, measured the same way, and the ratios.
//!
//! Usage: metadata_bench [--seconds S] [--clients C] [--quick]
//! Needs root; kilnd from target/release (scripts/bench.sh builds it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::netns::NetNs;

const PATH: &str = "/openstack/latest/meta_data.json";

fn main() {
    if let Err(e) = run() {
        eprintln!("metadata_bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let (mut seconds, mut clients) = (5u64, 4usize);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = || {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{a} needs a number"))
        };
        match a.as_str() {
            "--seconds" => seconds = num()?,
            "--clients" => clients = num()? as usize,
            "--quick" => (seconds, clients) = (2, 4),
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    let kilnd = target.join("release/kilnd");
    let nginx = kiln_tests::cache_dir().join("debs/nginx/usr/sbin/nginx");
    for p in [&kilnd, &nginx] {
        if !p.exists() {
            return Err(format!(
                "{} is missing (scripts/setup.sh, scripts/bench.sh)",
                p.display()
            ));
        }
    }
    let dir = tempfile_dir()?;
    let ns = NetNs::with_peer("mdbench");
    let _kilnd = Kilnd::start(&kilnd, &dir, ns.name())?;
    let sock = dir.join("kiln.sock");
    let api = |method: &str, path: &str, body: &str| -> Result<serde_json::Value, String> {
        let body = (!body.is_empty()).then_some(body.as_bytes());
        let r = kiln_api::client::request(&sock, method, path, body, Duration::from_secs(30))
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if r.status >= 300 {
            return Err(format!(
                "{method} {path}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        serde_json::from_slice(&r.body).map_err(|e| format!("{path}: {e}"))
    };
    std::fs::write(dir.join("k.vmlinux"), kiln_tests::tiny_elf()).map_err(|e| e.to_string())?;
    let kernel = dir.join("k.vmlinux").display().to_string();
    api(
        "POST",
        "/v1/images",
        &serde_json::json!({"type": "kernel", "name": "k", "kernel": kernel}).to_string(),
    )?;
    api(
        "POST",
        "/v1/networks",
        r#"{"name":"a","bridge":"mdb0","cidr":"10.77.0.0/24","mode":"isolated"}"#,
    )?;
    let s = api(
        "POST",
        "/v1/servers",
        r#"{"name":"s","flavor":"k1.probe","image":"k","networks":[{"network":"a","ip":"10.77.0.10"}]}"#,
    )?;
    let id = s["id"].as_str().unwrap_or_default().to_owned();
    let shown = api("GET", &format!("/v1/servers/{id}"), "")?;
    let mac = shown["nics"][0]["mac"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // The guest: its own namespace, its veth end on the bridge.
    let guest = format!("kiln-mdbg-{}", std::process::id());
    let _g = GuestNs::new(&guest)?;
    ns.ip(&[
        "link", "add", "gb0", "type", "veth", "peer", "name", "eth0", "netns", &guest,
    ]);
    ns.ip(&["link", "set", "gb0", "master", "mdb0", "up"]);
    let gip = |args: &[&str]| kiln_tests::netns::ip(&guest, args);
    gip(&["link", "set", "eth0", "address", &mac, "up"]);
    gip(&["addr", "add", "10.77.0.10/24", "dev", "eth0"]);
    gip(&["route", "add", "169.254.169.254", "dev", "eth0"]);

    // The peer: nginx with the same bytes, in a namespace of its own on
    // the same bridge (kilnd's firewall lets guests reach the host only
    // for DHCP and metadata), so its requests cross the bridge as ours.
    let body = in_ns(&guest, || fetch_once("169.254.169.254:80"))?;
    let peer_ns = format!("kiln-mdbp-{}", std::process::id());
    let _p = GuestNs::new(&peer_ns)?;
    ns.ip(&[
        "link", "add", "pb0", "type", "veth", "peer", "name", "eth0", "netns", &peer_ns,
    ]);
    ns.ip(&["link", "set", "pb0", "master", "mdb0", "up"]);
    kiln_tests::netns::ip(&peer_ns, &["link", "set", "eth0", "up"]);
    kiln_tests::netns::ip(&peer_ns, &["addr", "add", "10.77.0.3/24", "dev", "eth0"]);
    let www = dir.join("www/openstack/latest");
    std::fs::create_dir_all(&www).map_err(|e| e.to_string())?;
    std::fs::write(www.join("meta_data.json"), &body).map_err(|e| e.to_string())?;
    let _nginx = Nginx::start(&nginx, &dir, &peer_ns)?;

    let d = Duration::from_secs(seconds);
    println!(
        "metadata GETs of {PATH} ({} bytes), {clients} keep-alive connections, {seconds} s each",
        body.len()
    );
    let ours = load(&guest, "169.254.169.254:80", clients, d)?;
    in_ns(&guest, || fetch_once("10.77.0.3:8080"))?;
    let peer = load(&guest, "10.77.0.3:8080", clients, d)?;
    ours.print("kilnd metadata");
    peer.print("nginx (static)");
    println!(
        "ratio kilnd/nginx: {:.2}x requests/s, p99 {:.2}x",
        ours.rps / peer.rps,
        ours.p99.as_secs_f64() / peer.p99.as_secs_f64()
    );
    println!(
        "goal >= 5000/s and p99 <= 2 ms: {}",
        if ours.rps >= 5000.0 && ours.p99 <= Duration::from_millis(2) {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

struct Stats {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

impl Stats {
    fn print(&self, who: &str) {
        println!(
            "{who:16} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
            self.rps,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        );
    }
}

/// C threads in namespace `ns`, each a keep-alive connection to `addr`
/// doing GETs for `d`.
fn load(ns: &str, addr: &str, c: usize, d: Duration) -> Result<Stats, String> {
    let threads: Vec<_> = (0..c)
        .map(|_| {
            let (ns, addr) = (ns.to_owned(), addr.to_owned());
            std::thread::spawn(move || in_ns(&ns, || client(&addr, d)))
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| "client panicked".to_string())??);
    }
    all.sort_unstable();
    if all.is_empty() {
        return Err(format!("no answers from {addr}"));
    }
    let at = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Ok(Stats {
        rps: all.len() as f64 / d.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    })
}

fn client(addr: &str, d: Duration) -> Result<Vec<Duration>, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let req = format!("GET {PATH} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
    let mut lat = Vec::new();
    let end = Instant::now() + d;
    while Instant::now() < end {
        let t = Instant::now();
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        read_response(&mut s)?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

/// Reads one response (`Content-Length` framed); answers its body.
fn read_response(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 8192];
    loop {
        let n = s.read(&mut b).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&b[..n]);
        if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..h]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(format!("answer: {}", head.lines().next().unwrap_or("")));
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or("no content-length")?;
            while buf.len() < h + 4 + len {
                let n = s.read(&mut b).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed".into());
                }
                buf.extend_from_slice(&b[..n]);
            }
            return Ok(buf[h + 4..h + 4 + len].to_vec());
        }
    }
}

fn fetch_once(addr: &str) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = TcpStream::connect(addr)
            .map_err(|e| e.to_string())
            .and_then(|mut s| {
                let req = format!("GET {PATH} HTTP/1.1\r\nHost: x\r\n\r\n");
                s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
                read_response(&mut s)
            });
        match r {
            Ok(b) => return Ok(b),
            Err(e) if Instant::now() > deadline => return Err(format!("{addr}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Runs `f` on this thread inside namespace `ns`.
fn in_ns<T>(ns: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}")).map_err(|e| e.to_string())?;
    // SAFETY: setns on a valid netns fd; it affects only this thread.
    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    f()
}

struct GuestNs(String);

impl GuestNs {
    fn new(name: &str) -> Result<GuestNs, String> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        kiln_tests::try_run(Command::new("ip").args(["netns", "add", name]))?;
        kiln_tests::netns::ip(name, &["link", "set", "lo", "up"]);
        Ok(GuestNs(name.to_owned()))
    }
}

impl Drop for GuestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process killed on drop.
struct Proc(Child);

/// kilnd in the namespace, killed on drop.
struct Kilnd {
    _proc: Proc,
}

impl Kilnd {
    fn start(bin: &Path, dir: &Path, ns: &str) -> Result<Kilnd, String> {
        let cfg = dir.join("kilnd.toml");
        let config = format!(
            "[vmm]\nbinary = \"/nonexistent/kiln-vmm\"\n[images]\nimport_dirs = [{:?}]\n",
            dir.display().to_string()
        );
        std::fs::write(&cfg, config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("kilnd.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(bin);
        kiln_tests::die_with_parent(&mut cmd);
        let child = cmd
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(dir.join("kiln.sock"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start kilnd: {e}"))?;
        let k = Kilnd { _proc: Proc(child) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while kiln_api::client::request(
            &dir.join("kiln.sock"),
            "GET",
            "/v1/host",
            None,
            Duration::from_secs(5),
        )
        .is_err()
        {
            if Instant::now() > deadline {
                return Err("kilnd did not come up".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(k)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx in the namespace, killed on drop.
struct Nginx {
    _proc: Proc,
}

impl Nginx {
    fn start(bin: &Path, dir: &Path, ns: &str) -> Result<Nginx, String> {
        let d = dir.display();
        let conf = format!(
            "user root; worker_processes 1; daemon off; error_log stderr; pid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; default_type application/json;\n\
               client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3;\n\
               uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5; keepalive_requests 100000000;\n\
               server {{ listen 10.77.0.3:8080; root {d}/www; }} }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("nginx.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(bin);
        kiln_tests::die_with_parent(&mut cmd);
        let child = cmd
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start nginx: {e}"))?;
        Ok(Nginx { _proc: Proc(child) })
    }
}

fn tempfile_dir() -> Result<PathBuf, String> {
    let d = std::env::temp_dir().join(format!("kiln-mdbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    Ok(d)
}
