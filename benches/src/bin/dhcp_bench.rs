//! dhcp_bench: kilnd's DHCP server beside dnsmasq, DISCOVER→ACK round
//! trips from a client in a network namespace.
//!
//! Two namespace pairs, one per server, set up alike: a "host" namespace
//! with the server and its bridge, and a "guest" namespace whose veth
//! (with the port's MAC) has its peer on that bridge.
//! - kilnd (next to this binary; its VMM binary does not exist, so the
//!   server goes to ERROR but keeps its NIC's address): a `nat` network
//!   10.71.0.0/24 and a server with the fixed address 10.71.0.10.
//! - dnsmasq (Debian `dnsmasq-base`) on a bridge with 10.71.0.1/24:
//!   `--port=0` (no DNS), `--dhcp-range=...,static`, `--dhcp-host=MAC,IP`
//!   giving the same lease, `--quiet-dhcp` (kilnd logs no line per
//!   request either) and a lease file, as libvirt and Neutron run it.
//!
//! The client (dhcproto, on a UDP socket bound to the guest's veth) sends
//! DISCOVER, waits for the OFFER, sends REQUEST, waits for the ACK, and
//! checks the address: one round trip. N round trips each, after a
//! warm-up, alternating between the two servers in rounds of 100, and
//! prints p50 and p99 side by side with kilnd/dnsmasq ratios.
//!
//! Usage: dhcp_bench [--iterations N] [--quick]   (default 2000; quick 300)
//! Needs root, `ip`, `dnsmasq` (scripts/setup.sh), and kilnd built
//! (`cargo build --release -p kiln-manager`).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dhcproto::v4::{
    Decodable, Decoder, DhcpOption, Encodable, Flags, Message, MessageType, OptionCode,
};
use kiln_api::client;
use kiln_tests::netns::NetNs;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x71, 0x00, 0x0a];
const MAC_STR: &str = "52:54:00:71:00:0a";
const IP: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 10);
const ROUND: usize = 100;

/// A process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A veth `g0` in `guest` with the port's MAC, its peer on `bridge` in
/// `host`.
fn plug(host: &NetNs, guest: &NetNs, bridge: &str) {
    host.ip(&["link", "add", "g0", "type", "veth", "peer", "name", "g0p"]);
    host.ip(&["link", "set", "g0p", "master", bridge, "up"]);
    host.ip(&[
        "link",
        "set",
        "g0",
        "address",
        MAC_STR,
        "netns",
        guest.name(),
    ]);
    guest.ip(&["link", "set", "g0", "up"]);
    guest.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    // The guest has no address at all: else the client's DISCOVER would
    // leave with the peer's 10.9.0.1 as its source, which the host side
    // holds too and drops as a martian.
    guest.ip(&["link", "del", "veth1"]);
}

/// kilnd in `host` with the network and the server; its process.
fn start_kilnd(host: &NetNs, dir: &Path) -> Result<Proc, String> {
    let kilnd = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("kilnd");
    let cfg = dir.join("kilnd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[placement]\ntotal_vcpus = 8\ntotal_ram_mb = 4096\nreserved_host_memory_mb = 0\n\
             total_disk_gb = 10\n[vmm]\nbinary = \"/nonexistent/kiln-vmm\"\n\
             [images]\nimport_dirs = [{:?}]\n",
            dir.display().to_string()
        ),
    )
    .map_err(|e| e.to_string())?;
    let sock = dir.join("kiln.sock");
    let log = std::fs::File::create(dir.join("kilnd.log")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host.name()])
        .arg(&kilnd)
        .arg("--config")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    kiln_tests::die_with_parent(&mut cmd);
    let p = Proc(
        cmd.spawn()
            .map_err(|e| format!("start {}: {e}", kilnd.display()))?,
    );
    let req = |m: &str, path: &str, body: Option<String>| {
        client::request(
            &sock,
            m,
            path,
            body.as_deref().map(str::as_bytes),
            Duration::from_secs(30),
        )
        .map_err(|e| format!("{m} {path}: {e}"))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while req("GET", "/v1/host", None).is_err() {
        if Instant::now() > deadline {
            return Err("kilnd did not come up".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let kernel = dir.join("k.vmlinux");
    std::fs::write(&kernel, kiln_tests::tiny_elf()).map_err(|e| e.to_string())?;
    for (path, body) in [
        (
            "/v1/images",
            serde_json::json!({"type": "kernel", "name": "k", "kernel": kernel, "cmdline": ""}),
        ),
        (
            "/v1/networks",
            serde_json::json!({"name": "bn", "cidr": "10.71.0.0/24", "mode": "nat"}),
        ),
        (
            "/v1/servers",
            serde_json::json!({"name": "web-1", "flavor": "k1.probe", "image": "k",
                "networks": [{"network": "bn", "ip": IP.to_string(), "mac": MAC_STR}]}),
        ),
    ] {
        let r = req("POST", path, Some(body.to_string()))?;
        if !(200..300).contains(&r.status) {
            return Err(format!("POST {path}: {} {}", r.status, r.text()));
        }
    }
    Ok(p)
}

/// dnsmasq in `host` on bridge `dq0` giving the same lease.
fn start_dnsmasq(host: &NetNs, dir: &Path) -> Result<Proc, String> {
    host.ip(&["link", "add", "dq0", "type", "bridge"]);
    host.ip(&["addr", "add", "10.71.0.1/24", "dev", "dq0"]);
    host.ip(&["link", "set", "dq0", "up"]);
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        host.name(),
        "dnsmasq",
        "--keep-in-foreground",
    ])
    .args([
        "--conf-file=/dev/null",
        "--port=0",
        "--no-resolv",
        "--no-hosts",
    ])
    .args([
        "--interface=dq0",
        "--bind-interfaces",
        "--except-interface=lo",
    ])
    .args(["--dhcp-range=10.71.0.0,static,255.255.255.0,86400"])
    .arg(format!("--dhcp-host={MAC_STR},{IP},web-1"))
    .args(["--dhcp-option=option:mtu,1500", "--dhcp-authoritative"])
    .arg("--quiet-dhcp")
    .args(["--pid-file=", "--user=root", "--group=root"])
    .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
    .arg(format!(
        "--log-facility={}",
        dir.join("dnsmasq.log").display()
    ))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    kiln_tests::die_with_parent(&mut cmd);
    let p = Proc(cmd.spawn().map_err(|e| format!("start dnsmasq: {e}"))?);
    std::thread::sleep(Duration::from_millis(300));
    Ok(p)
}

/// The client: a UDP socket on 0.0.0.0:68 bound to `g0` (run on a thread
/// inside the guest namespace).
fn client_socket() -> Result<UdpSocket, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| e.to_string())?;
    s.set_reuse_address(true).map_err(|e| e.to_string())?;
    s.set_broadcast(true).map_err(|e| e.to_string())?;
    s.bind_device(Some(b"g0")).map_err(|e| e.to_string())?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())
        .map_err(|e| format!("bind :68: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    Ok(s.into())
}

fn send(s: &UdpSocket, xid: u32, kind: MessageType, extra: Vec<DhcpOption>) -> Result<(), String> {
    let mut m = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &MAC,
    );
    // The broadcast flag: a socket cannot take a unicast to an address
    // its interface does not hold yet (dnsmasq would unicast to yiaddr).
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ParameterRequestList(
        [1u8, 3, 6, 12, 15, 26, 28, 121]
            .iter()
            .map(|c| OptionCode::from(*c))
            .collect(),
    ));
    for o in extra {
        m.opts_mut().insert(o);
    }
    let b = m.to_vec().map_err(|e| e.to_string())?;
    s.send_to(&b, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))
        .map_err(|e| format!("send: {e}"))?;
    Ok(())
}

/// Waits for the answer of type `kind` to `xid`.
fn recv(s: &UdpSocket, xid: u32, kind: MessageType) -> Result<Message, String> {
    let mut buf = [0u8; 1500];
    loop {
        let n = s
            .recv(&mut buf)
            .map_err(|e| format!("waiting for {kind:?}: {e}"))?;
        let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else {
            continue;
        };
        if m.xid() == xid && m.opts().msg_type() == Some(kind) {
            return Ok(m);
        }
    }
}

/// One DISCOVER→OFFER→REQUEST→ACK exchange.
fn exchange(s: &UdpSocket, xid: u32) -> Result<Duration, String> {
    let t0 = Instant::now();
    send(s, xid, MessageType::Discover, vec![])?;
    let offer = recv(s, xid, MessageType::Offer)?;
    let server = match offer.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(a)) => *a,
        _ => return Err("an OFFER without a server identifier".into()),
    };
    send(
        s,
        xid,
        MessageType::Request,
        vec![
            DhcpOption::ServerIdentifier(server),
            DhcpOption::RequestedIpAddress(offer.yiaddr()),
        ],
    )?;
    let ack = recv(s, xid, MessageType::Ack)?;
    let t = t0.elapsed();
    if ack.yiaddr() != IP {
        return Err(format!("leased {} instead of {IP}", ack.yiaddr()));
    }
    Ok(t)
}

/// Exchanges until `n` succeed in a row (the first packets on a new
/// veth may be lost while its carrier comes up); at most 10 failures.
fn warm_up(guest: &NetNs, n: usize) -> Result<(), String> {
    guest.run(move || {
        let s = client_socket()?;
        let (mut ok, mut failed) = (0, 0);
        let mut xid = 1;
        while ok < n {
            xid += 1;
            match exchange(&s, xid) {
                Ok(_) => ok += 1,
                Err(e) if failed < 10 => {
                    failed += 1;
                    ok = 0;
                    let _ = e;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
}

/// `n` exchanges from `guest`'s client.
fn run_rounds(guest: &NetNs, n: usize, base: u32) -> Result<Vec<Duration>, String> {
    guest.run(move || {
        let s = client_socket()?;
        (0..n)
            .map(|i| exchange(&s, base.wrapping_add(i as u32)))
            .collect()
    })
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn run() -> Result<(), String> {
    let mut n = 2000;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => n = 300,
            "--iterations" => {
                n = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|v| *v > 0)
                    .ok_or("--iterations needs a positive integer")?
            }
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    let dir = std::env::temp_dir().join(format!("dhcp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (kh, kg) = (NetNs::with_peer("bdhk"), NetNs::with_peer("bdhkg"));
    let (dh, dg) = (NetNs::with_peer("bdhd"), NetNs::with_peer("bdhdg"));
    let kdir = dir.join("kilnd");
    let ddir = dir.join("dnsmasq");
    for d in [&kdir, &ddir] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let _kilnd = start_kilnd(&kh, &kdir)?;
    plug(&kh, &kg, "bn");
    let _dnsmasq = start_dnsmasq(&dh, &ddir)?;
    plug(&dh, &dg, "dq0");
    // Warm-up (ARP, caches, the store's page cache), then alternate.
    warm_up(&kg, 20).map_err(|e| format!("kilnd: {e}"))?;
    warm_up(&dg, 20).map_err(|e| format!("dnsmasq: {e}"))?;
    let (mut k, mut d) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut base = 1000u32;
    while k.len() < n {
        let r = ROUND.min(n - k.len());
        k.extend(run_rounds(&kg, r, base).map_err(|e| format!("kilnd: {e}"))?);
        d.extend(run_rounds(&dg, r, base).map_err(|e| format!("dnsmasq: {e}"))?);
        base = base.wrapping_add(r as u32);
    }
    k.sort();
    d.sort();
    println!("dhcp: {n} DISCOVER→OFFER→REQUEST→ACK round trips each, client in a namespace");
    println!("{:<16}{:>12}{:>12}", "", "p50", "p99");
    for (name, v) in [("kilnd", &k), ("dnsmasq", &d)] {
        println!("{name:<16}{:>12}{:>12}", ms(pct(v, 0.5)), ms(pct(v, 0.99)));
    }
    println!(
        "{:<16}{:>11.2}x{:>11.2}x",
        "kilnd/dnsmasq",
        pct(&k, 0.5).as_secs_f64() / pct(&d, 0.5).as_secs_f64(),
        pct(&k, 0.99).as_secs_f64() / pct(&d, 0.99).as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("dhcp_bench: {e}");
        std::process::exit(1);
    }
}
