//! kilnd's firewall end to end: a real kilnd in a network namespace the
//! test creates (the "host"), with an "uplink" namespace on a veth, and
//! guests played by namespaces of their own. kilnd's kiln-vmm does not
//! exist, so servers go to ERROR and keep their NICs; each guest is a veth
//! pair whose host end carries the name kilnd gave the NIC's tap (the rules
//! match taps by name) and sits on the network's bridge, and whose guest
//! end carries the NIC's MAC and address: a kernel IP stack plays the
//! guest, honest or not.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::api::{kernel_image, small_host};
use common::guest_net::{arp_request, listen, send, send_raw, tcp_to, Ns};
use common::Kilnd;
use kiln_api::compute::{Network, Server, ServerStatus};
use kiln_tests::netns::NetNs;

/// A guest on `nic`: namespace `g`'s `eth0` carries its MAC and address;
/// the other end, named as its tap, is on `bridge` in the host.
fn plug(host: &NetNs, g: &Ns, bridge: &str, nic: &kiln_api::compute::Nic, gw: &str) {
    let ipa = nic.ip.as_deref().expect("the NIC has an address");
    host.ip(&[
        "link", "add", &nic.tap, "type", "veth", "peer", "name", "eth0", "netns", &g.0,
    ]);
    host.ip(&["link", "set", &nic.tap, "master", bridge, "up"]);
    g.ip(&["link", "set", "eth0", "address", &nic.mac, "up"]);
    g.ip(&["addr", "add", &format!("{ipa}/24"), "dev", "eth0"]);
    g.ip(&["route", "add", "default", "via", gw]);
}

fn server(k: &Kilnd, name: &str, net: &str) -> Server {
    let r = k.req(
        "POST",
        "/v1/servers",
        Some(&format!(
            r#"{{"name":"{name}","flavor":"k1.probe","image":"img","networks":[{{"network":"{net}"}}]}}"#
        )),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let s: Server = r.json().unwrap();
    // No kiln-vmm here: ERROR, with its NIC kept.
    k.wait_status(&s.id, ServerStatus::Error, Duration::from_secs(30))
}

fn network(k: &Kilnd, body: &str) -> Network {
    let r = k.req("POST", "/v1/networks", Some(body));
    assert_eq!(r.status, 201, "{body}: {}", r.text());
    r.json().unwrap()
}

/// The kiln tables in `ns`, as `family name`.
fn kiln_tables(ns: &NetNs) -> Vec<String> {
    ns.exec(&["nft", "list", "tables"])
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .filter(|t| t.contains(" kiln_"))
        .map(str::to_owned)
        .collect()
}

/// The packets counted by the rule of `chain` (bridge family) whose text
/// contains `needle`.
fn counted(ns: &NetNs, table: &str, chain: &str, needle: &str) -> u64 {
    let out = ns.exec(&["nft", "list", "chain", "bridge", table, chain]);
    let line = out
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no rule with {needle:?} in {out}"));
    let w: Vec<&str> = line.split_whitespace().collect();
    let at = w.iter().position(|x| *x == "packets").unwrap();
    w[at + 1].parse().unwrap()
}

/// `nft -j list table FAMILY NAME`, without handles and counts (they
/// differ between two makings of the same rules).
fn table_json(ns: &NetNs, family: &str, name: &str) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("handle");
                if let Some(c) = m.get_mut("counter") {
                    *c = serde_json::Value::Null;
                }
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let out = ns.exec(&["nft", "-j", "list", "table", family, name]);
    let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
    strip(&mut v);
    v
}

fn got_from(got: &[(SocketAddr, String)], msg: &str) -> Vec<String> {
    got.iter()
        .filter(|(_, m)| m == msg)
        .map(|(f, _)| f.ip().to_string())
        .collect()
}

#[test]
fn nat_isolation_and_anti_spoofing() {
    let host = NetNs::with_peer("kfw");
    let up = Ns::new("kfwup");
    // The uplink: the host's 192.168.77.1 on up0, the peer's .2 beyond it.
    host.ip(&[
        "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", &up.0,
    ]);
    host.ip(&["addr", "add", "192.168.77.1/24", "dev", "up0"]);
    host.ip(&["link", "set", "up0", "up"]);
    up.ip(&["addr", "add", "192.168.77.2/24", "dev", "up1"]);
    up.ip(&["link", "set", "up1", "up"]);

    let mut k = Kilnd::start_in(Some(host.name()), &small_host(64, 1.0, 8704, 100));
    kernel_image(&k, "img");
    network(&k, r#"{"name":"nat1","cidr":"10.61.0.0/24","mode":"nat"}"#);
    network(&k, r#"{"name":"nat2","cidr":"10.65.0.0/24","mode":"nat"}"#);
    network(
        &k,
        r#"{"name":"iso1","cidr":"10.62.0.0/24","mode":"isolated"}"#,
    );
    assert_eq!(
        host.exec(&["sysctl", "-n", "net.ipv4.ip_forward"]).trim(),
        "1"
    );
    let names = [("a", "nat1"), ("b", "nat1"), ("c", "iso1"), ("d", "nat2")];
    let guests: Vec<(Ns, Server)> = names
        .iter()
        .map(|(n, net)| (Ns::new(&format!("kfw{n}")), server(&k, n, net)))
        .collect();
    for ((g, s), (_, net)) in guests.iter().zip(names) {
        let gw = match net {
            "nat1" => "10.61.0.1",
            "nat2" => "10.65.0.1",
            _ => "10.62.0.1",
        };
        plug(&host, g, net, &s.nics[0], gw);
    }
    let ip_of = |i: usize| guests[i].1.nics[0].ip.clone().unwrap();
    let ns_of = |i: usize| guests[i].0 .0.clone();
    let (a, b, c, d) = (0, 1, 2, 3);
    let tables = kiln_tables(&host);
    assert_eq!(tables.len(), 2, "{tables:?}");
    let table = tables[0].split_whitespace().nth(1).unwrap().to_owned();

    // NAT: a reaches the uplink's peer, which sees the host's uplink
    // address, and the answer comes back.
    let l = listen(&up.0, "192.168.77.2:7000", true);
    let echo = send(&ns_of(a), "0.0.0.0:0", "192.168.77.2:7000", "out-a");
    let got = l.join().unwrap();
    assert_eq!(got_from(&got, "out-a")[0], "192.168.77.1", "{got:?}");
    assert_eq!(
        echo.as_deref(),
        Some("out-a"),
        "the reply did not come back"
    );

    // Isolated: c cannot get out.
    let l = listen(&up.0, "192.168.77.2:7000", true);
    assert_eq!(
        send(&ns_of(c), "0.0.0.0:0", "192.168.77.2:7000", "out-c"),
        None
    );
    assert!(got_from(&l.join().unwrap(), "out-c").is_empty());

    // No two networks reach each other: nat1 to nat2, nat2 to nat1,
    // nat1 to iso1.
    for (from, to) in [(a, d), (d, a), (a, c), (c, a)] {
        let l = listen(&ns_of(to), &format!("{}:5000", ip_of(to)), false);
        send(
            &ns_of(from),
            "0.0.0.0:0",
            &format!("{}:5000", ip_of(to)),
            "x-net",
        );
        let got = l.join().unwrap();
        assert!(
            got.is_empty(),
            "{} reached {}: {got:?}",
            ip_of(from),
            ip_of(to)
        );
    }

    // The host itself: only DHCP, metadata and replies; not this port.
    let l = listen(host.name(), "10.61.0.1:9999", false);
    send(&ns_of(a), "0.0.0.0:0", "10.61.0.1:9999", "to-host");
    assert!(l.join().unwrap().is_empty(), "a guest reached the host");
    // TCP: the metadata address answers (a connection, or a reset where
    // nothing listens); any other port of the host stays silent.
    assert_eq!(tcp_to(&ns_of(a), "169.254.169.254:80"), "answered");
    assert_eq!(tcp_to(&ns_of(a), "10.61.0.1:80"), "silent");
    assert_eq!(tcp_to(&ns_of(a), "10.61.0.1:22"), "silent");

    // Anti-spoofing, between a and b on nat1. The honest frame passes.
    let to_b = format!("{}:5000", ip_of(b));
    let chain = format!("port_{}", guests[a].1.nics[0].tap);
    let l = listen(&ns_of(b), &to_b, false);
    send(&ns_of(a), "0.0.0.0:0", &to_b, "honest");
    assert_eq!(got_from(&l.join().unwrap(), "honest")[0], ip_of(a));

    // A spoofed source IP (another address of the subnet) is dropped.
    guests[a]
        .0
        .ip(&["addr", "add", "10.61.0.99/32", "dev", "eth0"]);
    let before = counted(&host, &table, &chain, "ip saddr !=");
    let l = listen(&ns_of(b), &to_b, false);
    send(&ns_of(a), "10.61.0.99:0", &to_b, "spoofed-ip");
    assert!(got_from(&l.join().unwrap(), "spoofed-ip").is_empty());
    assert!(counted(&host, &table, &chain, "ip saddr !=") > before);

    // A spoofed ARP sender: asking for b from the spoofed address.
    guests[a].0.ip(&["neigh", "flush", "dev", "eth0"]);
    let before = counted(&host, &table, &chain, "arp saddr ip");
    send(&ns_of(a), "10.61.0.99:0", &to_b, "spoofed-arp");
    assert!(counted(&host, &table, &chain, "arp saddr ip") > before);
    let neigh = guests[b].0.ip(&["neigh", "show", "10.61.0.99"]);
    assert!(
        neigh.trim().is_empty(),
        "b learnt the spoofed sender: {neigh}"
    );
    guests[a]
        .0
        .ip(&["addr", "del", "10.61.0.99/32", "dev", "eth0"]);

    // An ARP sender MAC other than the frame's (and the port's) is
    // dropped; the honest request passes, and b learns a's MAC from it.
    let fake = "52:54:00:de:ad:02";
    let mac = guests[a].1.nics[0].mac.clone();
    guests[b].0.ip(&["neigh", "flush", "dev", "eth0"]);
    let before = counted(&host, &table, &chain, "arp saddr ether");
    send_raw(
        &ns_of(a),
        "eth0",
        arp_request(&mac, fake, &ip_of(a), &ip_of(b)),
    );
    send_raw(
        &ns_of(a),
        "eth0",
        arp_request(&mac, &mac, &ip_of(a), &ip_of(b)),
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        counted(&host, &table, &chain, "arp saddr ether"),
        before + 1
    );
    let neigh = guests[b].0.ip(&["neigh", "show", &ip_of(a)]);
    assert!(
        neigh.contains(&mac) && !neigh.contains(fake),
        "b's entry for a: {neigh}"
    );

    // A spoofed source MAC.
    guests[a]
        .0
        .ip(&["link", "set", "eth0", "address", "52:54:00:de:ad:01"]);
    let before = counted(&host, &table, &chain, "ether saddr !=");
    let l = listen(&ns_of(b), &to_b, false);
    send(&ns_of(a), "0.0.0.0:0", &to_b, "spoofed-mac");
    assert!(got_from(&l.join().unwrap(), "spoofed-mac").is_empty());
    assert!(counted(&host, &table, &chain, "ether saddr !=") > before);
    guests[a].0.ip(&["link", "set", "eth0", "address", &mac]);

    // A DHCP server's reply (udp 67 to 68, broadcast) from a guest is
    // dropped; the same broadcast from another port passes.
    let l = listen(&ns_of(b), "0.0.0.0:68", false);
    send(&ns_of(a), "0.0.0.0:67", "255.255.255.255:68", "offer");
    send(&ns_of(a), "0.0.0.0:6767", "255.255.255.255:68", "not-dhcp");
    let got = l.join().unwrap();
    assert!(got_from(&got, "offer").is_empty(), "{got:?}");
    assert_eq!(got_from(&got, "not-dhcp")[0], ip_of(a));

    // kill -9 and a restart: the same tables again, and they still work.
    let before: Vec<_> = tables
        .iter()
        .map(|t| {
            let mut w = t.split_whitespace();
            table_json(&host, w.next().unwrap(), w.next().unwrap())
        })
        .collect();
    k.kill9();
    host.exec(&["nft", "flush", "table", "inet", &table]);
    k.spawn();
    let after: Vec<_> = tables
        .iter()
        .map(|t| {
            let mut w = t.split_whitespace();
            table_json(&host, w.next().unwrap(), w.next().unwrap())
        })
        .collect();
    assert_eq!(before, after, "the tables differ after a restart");
    let l = listen(&up.0, "192.168.77.2:7000", true);
    send(&ns_of(a), "0.0.0.0:0", "192.168.77.2:7000", "again");
    assert_eq!(got_from(&l.join().unwrap(), "again")[0], "192.168.77.1");

    // Everything deleted: no kiln table is left.
    for (_, s) in &guests {
        host.ip(&["link", "del", &s.nics[0].tap]);
        k.delete_server(&s.id);
    }
    assert_eq!(
        kiln_tables(&host).len(),
        1,
        "inet only, once no port is left"
    );
    for n in ["nat1", "nat2", "iso1"] {
        let r = k.req("DELETE", &format!("/v1/networks/{n}"), None);
        assert_eq!(r.status, 204, "{n}: {}", r.text());
    }
    assert_eq!(kiln_tables(&host), Vec::<String>::new());
}

#[test]
fn the_default_network_is_made_once_per_config() {
    let ns = NetNs::with_peer("kfwdef");
    let cfg = "[networks]\ndefault = true\n";
    let mut k = Kilnd::start_in(Some(ns.name()), cfg);
    let n: Network = k.req("GET", "/v1/networks/default", None).json().unwrap();
    assert_eq!(
        (n.bridge.as_str(), n.cidr.as_deref(), n.mode.as_str()),
        ("kilnbr0", Some("192.168.150.0/24"), "nat")
    );
    assert!(ns.link("kilnbr0").is_some());
    let inet = kiln_tables(&ns);
    assert_eq!(inet.len(), 1, "{inet:?}");
    let rules = ns.exec(&["nft", "list", "ruleset"]);
    assert!(
        rules.contains(r#"ip saddr 192.168.150.0/24 oifname != "kilnbr0" masquerade"#),
        "{rules}"
    );

    // Deleted, it stays deleted across restarts.
    let r = k.req("DELETE", "/v1/networks/default", None);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(kiln_tables(&ns).is_empty());
    k.stop();
    k.spawn();
    assert_eq!(k.req("GET", "/v1/networks/default", None).status, 404);

    // A changed cidr makes it again; one overlapping a host route (the
    // peer's 10.9.0.0/24) is skipped with a warning.
    let text = std::fs::read_to_string(&k.config).unwrap();
    let with = |cidr: &str| text.replace(cfg, &format!("{cfg}default_cidr = {cidr:?}\n"));
    std::fs::write(&k.config, with("192.168.151.0/24")).unwrap();
    k.stop();
    k.spawn();
    let n: Network = k.req("GET", "/v1/networks/default", None).json().unwrap();
    assert_eq!(n.cidr.as_deref(), Some("192.168.151.0/24"));
    let r = k.req("DELETE", "/v1/networks/default", None);
    assert_eq!(r.status, 204, "{}", r.text());
    std::fs::write(&k.config, with("10.9.0.0/24")).unwrap();
    k.stop();
    k.spawn();
    assert_eq!(k.req("GET", "/v1/networks/default", None).status, 404);
    assert!(
        k.log().contains("overlaps the host route 10.9.0.0/24"),
        "{}",
        k.log()
    );
    assert!(ns.link("kilnbr0").is_none());
    assert!(kiln_tables(&ns).is_empty());
}
