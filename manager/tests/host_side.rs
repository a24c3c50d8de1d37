//! The host side of networks with a subnet, end to end: a real kilnd in a
//! network namespace the test creates, real bridges. The host holds the
//! gateway where it is the gateway (`nat`, `isolated`) and the metadata
//! address 169.254.169.254/32 on every subnet's bridge, the bridge is up,
//! and a restarted kilnd puts back what was taken away.

mod common;

use common::Kilnd;
use kiln_tests::netns::NetNs;

/// The IPv4 addresses on `dev`, sorted, as `A.B.C.D/N`.
fn addrs(ns: &NetNs, dev: &str) -> Vec<String> {
    let out = ns.ip(&["-4", "-o", "addr", "show", "dev", dev]);
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "inet").and(w.next()).map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

fn is_up(ns: &NetNs, dev: &str) -> bool {
    ns.ip(&["-o", "link", "show", "dev", dev]).contains(",UP")
}

#[test]
fn subnet_bridges_carry_gateway_and_metadata_addresses() {
    let ns = NetNs::new("khost");
    let mut k = Kilnd::start_in(Some(ns.name()), "");
    for (body, bridge) in [
        (
            r#"{"name":"nat1","cidr":"10.61.0.0/24","mode":"nat"}"#,
            "nat1",
        ),
        (
            r#"{"name":"iso1","cidr":"10.62.0.0/28","gateway":"10.62.0.14","mode":"isolated"}"#,
            "iso1",
        ),
        (
            r#"{"name":"brd1","cidr":"10.63.0.0/24","mode":"bridged"}"#,
            "brd1",
        ),
        (r#"{"name":"l2only"}"#, "l2only"),
    ] {
        let r = k.req("POST", "/v1/networks", Some(body));
        assert_eq!(r.status, 201, "{body}: {}", r.text());
        assert!(ns.link(bridge).is_some(), "{bridge} missing");
    }
    let want = [
        ("nat1", vec!["10.61.0.1/24", "169.254.169.254/32"]),
        ("iso1", vec!["10.62.0.14/28", "169.254.169.254/32"]),
        // On a bridged network the gateway is the uplink's router.
        ("brd1", vec!["169.254.169.254/32"]),
        ("l2only", vec![]),
    ];
    for (dev, a) in &want {
        assert_eq!(addrs(&ns, dev), *a, "{dev}");
    }
    for dev in ["nat1", "iso1", "brd1"] {
        assert!(is_up(&ns, dev), "{dev} is not up");
    }

    // Taken away while kilnd is down (a host reboot loses all of it; an
    // admin may remove one): the next start puts back exactly these.
    k.kill9();
    ns.ip(&["addr", "flush", "dev", "nat1"]);
    ns.ip(&["addr", "add", "10.61.0.99/24", "dev", "nat1"]);
    ns.ip(&["link", "del", "iso1"]);
    k.spawn();
    for (dev, a) in &want {
        assert_eq!(addrs(&ns, dev), *a, "{dev} after a restart");
    }
    assert!(is_up(&ns, "iso1"), "the recreated iso1 is not up");

    for n in ["nat1", "iso1", "brd1", "l2only"] {
        let r = k.req("DELETE", &format!("/v1/networks/{n}"), None);
        assert_eq!(r.status, 204, "{n}: {}", r.text());
        assert!(ns.link(n).is_none(), "{n} left behind");
    }
}

#[test]
fn an_existing_bridge_keeps_its_own_addresses() {
    let ns = NetNs::new("khost2");
    // A user's bridge with the host's own address on it.
    ns.ip(&["link", "add", "ubr0", "type", "bridge"]);
    ns.ip(&["addr", "add", "192.168.50.2/24", "dev", "ubr0"]);
    let k = Kilnd::start_in(Some(ns.name()), "");
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(r#"{"name":"prov","bridge":"ubr0","cidr":"10.64.0.0/24","mode":"nat"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        addrs(&ns, "ubr0"),
        ["10.64.0.1/24", "169.254.169.254/32", "192.168.50.2/24"]
    );
    let r = k.req("DELETE", "/v1/networks/prov", None);
    assert_eq!(r.status, 204, "{}", r.text());
    // Not kilnd's bridge: it stays, with the user's address only.
    assert_eq!(addrs(&ns, "ubr0"), ["192.168.50.2/24"]);
}
