//! Subnets and fixed addresses end to end: a real kilnd inside a network
//! namespace the test creates (its host routes are the namespace's: the
//! peer's 10.9.0.0/24 on veth1), real SQLite, real bridges. Its kiln-vmm
//! does not exist, so servers go to ERROR at boot; they keep their
//! allocation and their addresses until deleted, which is all IPAM needs.

mod common;

use std::collections::HashSet;

use common::api::{kernel_image, small_host};
use common::Kilnd;
use kiln_api::compute::{Network, NetworkList, Server, ServerList};
use kiln_tests::netns::NetNs;

fn post(k: &Kilnd, path: &str, body: &str) -> (u16, String) {
    let r = k.req("POST", path, Some(body));
    (r.status, r.text())
}

/// Only `names` are networks, and only their bridges exist: a refused
/// create left nothing.
fn assert_networks(k: &Kilnd, ns: &NetNs, names: &[&str], refused: &[&str]) {
    let l: NetworkList = k.req("GET", "/v1/networks", None).json().unwrap();
    let mut got: Vec<_> = l.networks.iter().map(|n| n.name.as_str()).collect();
    got.sort_unstable();
    assert_eq!(got, names);
    for r in refused {
        assert!(ns.link(r).is_none(), "bridge {r} was made");
    }
}

fn server_count(k: &Kilnd) -> usize {
    let l: ServerList = k.req("GET", "/v1/servers", None).json().unwrap();
    l.servers.len()
}

#[test]
fn subnets_addresses_and_concurrent_creates_on_a_small_pool() {
    let ns = NetNs::with_peer("kipam");
    // Placement is never the limit here: 64 vCPUs, 8 GiB, 100 GB.
    let k = Kilnd::start_in(Some(ns.name()), &small_host(64, 1.0, 8704, 100));
    kernel_image(&k, "img");

    // Bad subnets: each a 4xx naming the problem, nothing made.
    for (body, status, why) in [
        (
            r#"{"name":"b1","cidr":"10.77.0.0"}"#,
            400,
            "not an IPv4 subnet",
        ),
        (
            r#"{"name":"b2","cidr":"10.77.0.1/28"}"#,
            400,
            "host bits set",
        ),
        (
            r#"{"name":"b3","cidr":"10.77.0.0/28","gateway":"10.78.0.1"}"#,
            400,
            "gateway 10.78.0.1 is not a host address",
        ),
        (r#"{"name":"b4","gateway":"10.78.0.1"}"#, 400, "need a cidr"),
        (
            r#"{"name":"b5","cidr":"10.9.0.0/16"}"#,
            409,
            "overlaps the host route 10.9.0.0/24 dev veth1",
        ),
        (
            r#"{"name":"b6","cidr":"10.77.0.0/28","mode":"router"}"#,
            400,
            "",
        ),
    ] {
        let (s, t) = post(&k, "/v1/networks", body);
        assert_eq!(s, status, "{body}: {t}");
        assert!(t.contains(why), "{body}: {t}");
    }
    assert_networks(&k, &ns, &[], &["b1", "b2", "b3", "b4", "b5", "b6"]);

    let (s, t) = post(
        &k,
        "/v1/networks",
        r#"{"name":"lan","cidr":"10.77.0.0/28","mode":"nat","dns_nameservers":["10.77.0.1"]}"#,
    );
    assert_eq!(s, 201, "{t}");
    let lan: Network = serde_json::from_str(&t).unwrap();
    assert_eq!(
        (lan.cidr.as_deref(), lan.gateway.as_deref(), lan.dhcp),
        (Some("10.77.0.0/28"), Some("10.77.0.1"), true)
    );
    let (s, t) = post(
        &k,
        "/v1/networks",
        r#"{"name":"wide","cidr":"10.77.0.0/16"}"#,
    );
    assert_eq!(s, 409, "{t}");
    assert!(
        t.contains("10.77.0.0/16 overlaps 10.77.0.0/28 of network \\\"lan\\\""),
        "{t}"
    );
    let (s, t) = post(&k, "/v1/networks", r#"{"name":"l2"}"#);
    assert_eq!(s, 201, "{t}");
    assert!(!t.contains("cidr"), "{t}");
    assert_networks(&k, &ns, &["l2", "lan"], &["wide"]);

    // An address asked for: checked against the subnet, then held.
    let create = |name: &str, nets: &str| {
        post(
            &k,
            "/v1/servers",
            &format!(r#"{{"name":"{name}","flavor":"k1.probe","image":"img","networks":{nets}}}"#),
        )
    };
    for (nets, status, why) in [
        (
            r#"[{"network":"lan","ip":"10.77.0.16"}]"#,
            400,
            "10.77.0.16 is not a host address of the subnet 10.77.0.0/28",
        ),
        (
            r#"[{"network":"lan","ip":"10.77.0.15"}]"#,
            400,
            "not a host address",
        ),
        (
            r#"[{"network":"lan","ip":"10.77.0.1"}]"#,
            400,
            "is the gateway",
        ),
        (
            r#"[{"network":"lan","ip":"ten"}]"#,
            400,
            "not an IPv4 address",
        ),
        (r#"[{"network":"l2","ip":"10.77.0.5"}]"#, 400, "has no cidr"),
    ] {
        let (s, t) = create("bad", nets);
        assert_eq!(s, status, "{nets}: {t}");
        assert!(t.contains(why), "{nets}: {t}");
    }
    let (s, t) = create(
        "fixed",
        r#"[{"network":"lan","ip":"10.77.0.10"},{"network":"l2"}]"#,
    );
    assert_eq!(s, 202, "{t}");
    let fixed: Server = serde_json::from_str(&t).unwrap();
    let shown = k.server(&fixed.id);
    assert_eq!(shown.nics[0].ip.as_deref(), Some("10.77.0.10"));
    assert_eq!(shown.nics[1].ip, None);
    let (s, t) = create("again", r#"[{"network":"lan","ip":"10.77.0.10"}]"#);
    assert_eq!(s, 409, "{t}");
    assert!(t.contains("already used by server \\\"fixed\\\""), "{t}");
    assert_eq!(server_count(&k), 1);
    // The CLI's Networks column, as `openstack server list`.
    let (ok, out, err) = k.cli(&["server", "list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("NETWORKS") && out.contains("lan=10.77.0.10; l2"),
        "{out}"
    );
    k.delete_server(&fixed.id);

    // 50 creates at once on the /28: 13 addresses (16 less network,
    // broadcast and gateway), so exactly 13 succeed, each with its own
    // address, and 37 get 409 naming the network; the refused leave no row.
    let results: Vec<(u16, String)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..50)
            .map(|i| {
                let create = &create;
                sc.spawn(move || create(&format!("c{i}"), r#"[{"network":"lan"}]"#))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips = HashSet::new();
    let mut refused = 0;
    for (s, t) in &results {
        match s {
            202 => {
                let srv: Server = serde_json::from_str(t).unwrap();
                assert!(
                    ips.insert(srv.nics[0].ip.clone().unwrap()),
                    "an address given twice: {t}"
                );
            }
            409 => {
                assert!(t.contains("network \\\"lan\\\" has no free address"), "{t}");
                refused += 1;
            }
            _ => panic!("{s}: {t}"),
        }
    }
    assert_eq!((ips.len(), refused), (13, 37));
    let want: HashSet<String> = (2..15).map(|h| format!("10.77.0.{h}")).collect();
    assert_eq!(ips, want);
    assert_eq!(server_count(&k), 13);

    // Released on delete: the freed address is the next one given.
    let l: ServerList = k.req("GET", "/v1/servers", None).json().unwrap();
    let victim = l
        .servers
        .iter()
        .find(|s| s.nics[0].ip.as_deref() == Some("10.77.0.7"))
        .unwrap();
    k.delete_server(&victim.id);
    let (ok, out, err) = k.cli(&[
        "server",
        "create",
        "back",
        "--flavor",
        "k1.probe",
        "--image",
        "img",
        "--network",
        "lan",
    ]);
    assert!(ok, "{out} {err}");
    let back: ServerList = k.req("GET", "/v1/servers?name=back", None).json().unwrap();
    assert_eq!(back.servers[0].nics[0].ip.as_deref(), Some("10.77.0.7"));
    // The CLI's own forms: a network with a subnet, a NIC with an address.
    let (ok, out, err) = k.cli(&[
        "network",
        "create",
        "lab",
        "--cidr",
        "10.80.0.0/24",
        "--gateway",
        "10.80.0.254",
        "--mode",
        "isolated",
        "--no-dhcp",
        "--dns",
        "10.80.0.254",
    ]);
    assert!(ok, "{out} {err}");
    assert!(
        out.contains("10.80.0.0/24") && out.contains("isolated"),
        "{out}"
    );
    let (ok, out, err) = k.cli(&[
        "server",
        "create",
        "labby",
        "--flavor",
        "k1.probe",
        "--image",
        "img",
        "--network",
        "lab:10.80.0.1",
    ]);
    assert!(ok, "{out} {err}");
    let (ok, out, _) = k.cli(&["server", "list"]);
    assert!(ok && out.contains("lab=10.80.0.1"), "{out}");
    let lab: Network = k.req("GET", "/v1/networks/lab", None).json().unwrap();
    assert!(
        !lab.dhcp && lab.dns_nameservers == ["10.80.0.254"],
        "{lab:?}"
    );
}
