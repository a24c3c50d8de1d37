//! kilnd's DHCP server end to end: a real kilnd in a network namespace
//! the test creates, real bridges, and a real DHCP client, busybox's
//! `udhcpc`, in a second namespace (the "guest") on a veth whose other
//! end is on the network's bridge and which carries a port's MAC. Its
//! `-s` script prints what the lease says. kilnd's VMM does not exist,
//! so servers go to ERROR at boot; they keep their NICs' addresses until
//! deleted, which is all DHCP needs.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::api::{kernel_image, small_host};
use common::Kilnd;
use kiln_api::compute::{Network, Server};
use kiln_tests::netns::NetNs;

/// The udhcpc script: on `bound`, configures the address and the
/// classless static routes (so a renewal can reach the server) and writes
/// the variables the test checks to `lease-IF`; on `renew`, writes them to
/// `renew-IF`.
fn write_script(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("udhcpc.sh");
    let body = r#"#!/bin/sh
case "$1" in
bound) out="$(dirname "$0")/lease-$interface"
       ip addr replace "$ip/$mask" dev "$interface"
       set -- $staticroutes
       while [ $# -ge 2 ]; do
           if [ "$2" = 0.0.0.0 ]; then ip route replace "$1" dev "$interface"
           else ip route replace "$1" via "$2" dev "$interface"; fi
           shift 2
       done ;;
renew) out="$(dirname "$0")/renew-$interface" ;;
*) exit 0 ;;
esac
for v in ip subnet router mtu hostname staticroutes dns serverid lease domain; do
    eval "echo $v=\$$v"
done > "$out.tmp"
mv "$out.tmp" "$out"
"#;
    std::fs::write(&script, body).unwrap();
    kiln_tests::run(Command::new("chmod").arg("755").arg(&script));
    script
}

/// A veth `dev` in `guest` with MAC `mac`, its peer `{dev}p` on `bridge`
/// in `host`.
fn plug(host: &NetNs, guest: &NetNs, bridge: &str, dev: &str, mac: &str) {
    let peer = format!("{dev}p");
    host.ip(&["link", "add", dev, "type", "veth", "peer", "name", &peer]);
    host.ip(&["link", "set", &peer, "master", bridge, "up"]);
    host.ip(&["link", "set", dev, "address", mac, "netns", guest.name()]);
    guest.ip(&["link", "set", dev, "up"]);
}

fn read_vars(path: &Path) -> Option<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect(),
    )
}

/// udhcpc on `dev` in `guest`: `-q`, it quits once it has a lease.
fn udhcpc(guest: &NetNs, dir: &Path, dev: &str, quit: bool) -> Command {
    let script = write_script(dir);
    let _ = std::fs::remove_file(dir.join(format!("lease-{dev}")));
    let mut c = Command::new("ip");
    c.args(["netns", "exec", guest.name(), "udhcpc"])
        .args(["-i", dev, "-f", "-n", "-t", "3", "-T", "1"])
        .args(["-O", "staticroutes", "-s"])
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if quit {
        c.arg("-q");
    }
    c
}

/// What a DHCP client on `dev` in `guest` gets: the variables of its
/// `bound` event, or None if no lease came within three tries.
fn lease(guest: &NetNs, dir: &Path, dev: &str) -> Option<HashMap<String, String>> {
    let st = udhcpc(guest, dir, dev, true).status().unwrap();
    let vars = read_vars(&dir.join(format!("lease-{dev}")));
    assert_eq!(st.success(), vars.is_some(), "udhcpc: {st} but {vars:?}");
    vars
}

/// A udhcpc that stays, bound, to renew on demand (killed on drop).
struct Bound {
    child: Child,
    dev: String,
}

impl Bound {
    fn start(guest: &NetNs, dir: &Path, dev: &str) -> (Bound, HashMap<String, String>) {
        let child = udhcpc(guest, dir, dev, false).spawn().unwrap();
        let b = Bound {
            child,
            dev: dev.to_owned(),
        };
        let vars = wait_vars(&dir.join(format!("lease-{dev}"))).expect("no lease");
        (b, vars)
    }

    /// SIGUSR1: udhcpc renews, by unicast to the server identifier from
    /// its address; the variables of its `renew` event, if one came.
    fn renew(&self, dir: &Path) -> Option<HashMap<String, String>> {
        let out = dir.join(format!("renew-{}", self.dev));
        let _ = std::fs::remove_file(&out);
        // SAFETY: kill(2) of our own child (`ip netns exec` execs udhcpc).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGUSR1) };
        wait_vars(&out)
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_vars(path: &Path) -> Option<HashMap<String, String>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(v) = read_vars(path) {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The UDP sockets on port 67 in `ns` (`ss -uapn`), as `addr%dev:67`.
fn dhcp_sockets(ns: &NetNs) -> Vec<String> {
    ns.exec(&["ss", "-uapn"])
        .lines()
        .filter(|l| l.contains("kilnd"))
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter(|a| a.ends_with(":67"))
        .map(str::to_owned)
        .collect()
}

fn post<T: serde::de::DeserializeOwned>(k: &Kilnd, path: &str, body: &str, status: u16) -> T {
    let r = k.req("POST", path, Some(body));
    assert_eq!(r.status, status, "{body}: {}", r.text());
    r.json().unwrap()
}

#[test]
fn ports_get_their_fixed_lease_and_nothing_else_does() {
    let ns = NetNs::with_peer("kdhcp");
    // One guest per network; neither holds the peer's address (a source
    // the host side would drop as its own).
    let (gn, gb) = (NetNs::with_peer("kdhcpn"), NetNs::with_peer("kdhcpb"));
    for g in [&gn, &gb] {
        g.ip(&["link", "del", "veth1"]);
    }
    let mut k = Kilnd::start_in(Some(ns.name()), &small_host(8, 1.0, 4096, 100));
    kernel_image(&k, "img");
    let nat: Network = post(
        &k,
        "/v1/networks",
        r#"{"name":"dnat","cidr":"10.61.0.0/24","mode":"nat","mtu":1400}"#,
        201,
    );
    let brd: Network = post(
        &k,
        "/v1/networks",
        r#"{"name":"dbrd","cidr":"10.63.0.0/24","mode":"bridged","dns_nameservers":["10.63.0.53"]}"#,
        201,
    );
    let _off: Network = post(
        &k,
        "/v1/networks",
        r#"{"name":"doff","cidr":"10.64.0.0/24","dhcp":false}"#,
        201,
    );
    let _l2: Network = post(&k, "/v1/networks", r#"{"name":"dl2"}"#, 201);
    let mut socks = dhcp_sockets(&ns);
    socks.sort();
    assert_eq!(socks, ["0.0.0.0%dbrd:67", "0.0.0.0%dnat:67"]);

    let srv: Server = post(
        &k,
        "/v1/servers",
        r#"{"name":"Web_1","flavor":"k1.probe","image":"img",
            "networks":[{"network":"dnat","ip":"10.61.0.10"},{"network":"dbrd","ip":"10.63.0.20"}]}"#,
        202,
    );
    let dir = tempfile::tempdir().unwrap();
    plug(&ns, &gn, "dnat", "g0", &srv.nics[0].mac);
    plug(&ns, &gb, "dbrd", "g1", &srv.nics[1].mac);
    plug(&ns, &gn, "dnat", "g9", "52:54:00:de:ad:09");

    let host_dns = kiln_manager::dhcp::resolv_nameservers(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    );
    let host_dns: Vec<String> = host_dns.iter().map(|a| a.to_string()).collect();
    let want_nat = |l: &HashMap<String, String>| {
        for (key, want) in [
            ("ip", "10.61.0.10"),
            ("subnet", "255.255.255.0"),
            ("router", "10.61.0.1"),
            ("mtu", "1400"),
            ("hostname", "web-1"),
            ("serverid", "10.61.0.1"),
            ("lease", "86400"),
            ("domain", ""),
            (
                "staticroutes",
                "169.254.169.254/32 10.61.0.1 0.0.0.0/0 10.61.0.1",
            ),
            // No nameservers on the network: the host's (non-loopback).
            ("dns", &host_dns.join(" ")),
        ] {
            assert_eq!(l.get(key).map(String::as_str), Some(want), "{key} in {l:?}");
        }
    };
    let want_brd = |l: &HashMap<String, String>| {
        for (key, want) in [
            ("ip", "10.63.0.20"),
            ("subnet", "255.255.255.0"),
            ("router", "10.63.0.1"),
            ("mtu", "1500"),
            ("hostname", "web-1"),
            // The host holds no address in a bridged subnet.
            ("serverid", "169.254.169.254"),
            (
                "staticroutes",
                "169.254.169.254/32 0.0.0.0 0.0.0.0/0 10.63.0.1",
            ),
            ("dns", "10.63.0.53"),
        ] {
            assert_eq!(l.get(key).map(String::as_str), Some(want), "{key} in {l:?}");
        }
    };
    let d = dir.path();
    want_nat(&lease(&gn, d, "g0").expect("no lease on the nat network"));
    want_brd(&lease(&gb, d, "g1").expect("no lease on the bridged network"));
    // An unknown MAC: heard, and not answered.
    assert_eq!(lease(&gn, d, "g9"), None);
    assert!(
        k.log().contains("52:54:00:de:ad:09"),
        "kilnd never saw the unknown MAC's request:\n{}",
        k.log()
    );

    // Clients that stay bound (their script configured the address and
    // routes) renew by unicast to the server identifier, and are answered
    // by unicast to their address; again after kill -9 and a restart,
    // which keeps no lease state.
    let (cn, l) = Bound::start(&gn, d, "g0");
    want_nat(&l);
    let (cb, l) = Bound::start(&gb, d, "g1");
    want_brd(&l);
    for round in ["first", "after a restart"] {
        if round != "first" {
            k.kill9();
            assert!(dhcp_sockets(&ns).is_empty());
            k.spawn();
        }
        let before = k.log().len();
        want_nat(
            &cn.renew(d)
                .unwrap_or_else(|| panic!("no renewal ({round})")),
        );
        want_brd(
            &cb.renew(d)
                .unwrap_or_else(|| panic!("no renewal ({round})")),
        );
        // kilnd logs each answer (at debug) right after sending it.
        for to in ["10.61.0.10:68", "10.63.0.20:68"] {
            let deadline = Instant::now() + Duration::from_secs(3);
            while !k.log()[before..].contains(to) {
                assert!(
                    Instant::now() < deadline,
                    "no unicast answer to {to} ({round}):\n{}",
                    &k.log()[before..]
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    drop((cn, cb));
    want_nat(&lease(&gn, d, "g0").expect("no lease after a restart"));
    want_brd(&lease(&gb, d, "g1").expect("no lease after a restart"));

    // A deleted server's MACs get nothing.
    k.delete_server(&srv.id);
    assert_eq!(lease(&gn, d, "g0"), None);
    assert_eq!(lease(&gb, d, "g1"), None);

    // Deleting a network stops its server: its socket is gone, the
    // others' stay.
    for dev in ["g0p", "g1p", "g9p"] {
        ns.ip(&["link", "del", dev]);
    }
    for (n, left) in [(&nat, vec!["0.0.0.0%dbrd:67"]), (&brd, vec![])] {
        let r = k.req("DELETE", &format!("/v1/networks/{}", n.id), None);
        assert_eq!(r.status, 204, "{}", r.text());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while dhcp_sockets(&ns) != left {
            assert!(
                std::time::Instant::now() < deadline,
                "after deleting {}: {:?}",
                n.name,
                dhcp_sockets(&ns)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
