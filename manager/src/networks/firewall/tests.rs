//! The rules [`derive`] makes, read as nft's own syntax.

use super::*;

fn net(id: &str, bridge: &str, cidr: Option<&str>, mode: NetworkMode) -> Network {
    Network {
        id: id.into(),
        name: id.into(),
        bridge: bridge.into(),
        mtu: 1500,
        managed: true,
        created_at: String::new(),
        servers: vec![],
        cidr: cidr.map(str::to_owned),
        gateway: None,
        dhcp: true,
        dns_nameservers: vec![],
        mode,
    }
}

fn port(network: &str, tap: &str, mac: &str, ip: Option<&str>) -> Port {
    Port {
        network: network.into(),
        tap: tap.into(),
        mac: mac.into(),
        ip: ip.map(|i| i.parse().unwrap()),
    }
}

/// Each chain of `family` as (name, its rules as text).
fn chains(tables: &[Table], family: Family) -> Vec<(String, Vec<String>)> {
    tables
        .iter()
        .filter(|t| t.family == family)
        .flat_map(|t| &t.chains)
        .map(|c| {
            (
                c.name.clone(),
                c.rules.iter().map(|r| r.to_string()).collect(),
            )
        })
        .collect()
}

fn chain(tables: &[Table], family: Family, name: &str) -> Vec<String> {
    chains(tables, family)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no chain {name}"))
        .1
}

#[test]
fn nothing_needs_no_table() {
    assert!(derive(&[], &[]).is_empty());
    // L2-only and bridged networks without ports need no rule.
    let nets = [
        net("a", "bra", None, NetworkMode::Bridged),
        net("b", "brb", Some("10.1.0.0/24"), NetworkMode::Bridged),
    ];
    assert!(derive(&nets, &[]).is_empty());
}

#[test]
fn nat_network_masquerades_forwards_out_and_guards_the_host() {
    let nets = [net("n", "nat1", Some("10.61.0.0/24"), NetworkMode::Nat)];
    let t = derive(&nets, &[]);
    assert_eq!(t.len(), 1, "inet only: no ports");
    assert_eq!(
        chain(&t, Family::Inet, "forward"),
        [
            r#"iifname "nat1" oifname "nat1" accept"#,
            r#"iifname "nat1" ip saddr 10.61.0.0/24 accept"#,
            r#"oifname "nat1" ct state established,related accept"#,
            r#"iifname "nat1" counter drop"#,
            r#"oifname "nat1" counter drop"#,
        ]
    );
    assert_eq!(
        chain(&t, Family::Inet, "input"),
        [
            r#"iifname "nat1" ct state established,related accept"#,
            r#"iifname "nat1" udp dport 67 accept"#,
            r#"iifname "nat1" ip daddr 169.254.169.254 tcp dport 80 accept"#,
            r#"iifname "nat1" counter drop"#,
        ]
    );
    assert_eq!(
        chain(&t, Family::Inet, "postrouting"),
        [r#"ip saddr 10.61.0.0/24 oifname != "nat1" masquerade"#]
    );
}

#[test]
fn isolated_network_forwards_nothing_and_has_no_nat() {
    let mut iso = net("i", "iso1", Some("10.62.0.0/28"), NetworkMode::Isolated);
    iso.dhcp = false;
    let t = derive(&[iso], &[]);
    assert_eq!(
        chain(&t, Family::Inet, "forward"),
        [
            r#"iifname "iso1" oifname "iso1" accept"#,
            r#"iifname "iso1" counter drop"#,
            r#"oifname "iso1" counter drop"#,
        ]
    );
    // No DHCP served: no hole for it.
    assert_eq!(
        chain(&t, Family::Inet, "input"),
        [
            r#"iifname "iso1" ct state established,related accept"#,
            r#"iifname "iso1" ip daddr 169.254.169.254 tcp dport 80 accept"#,
            r#"iifname "iso1" counter drop"#,
        ]
    );
    assert!(chains(&t, Family::Inet)
        .iter()
        .all(|(n, _)| n != "postrouting"));
}

#[test]
fn two_networks_do_not_forward_to_each_other_and_bridged_is_left_alone() {
    let nets = [
        net("a", "nat1", Some("10.61.0.0/24"), NetworkMode::Nat),
        net("b", "nat2", Some("10.65.0.0/24"), NetworkMode::Nat),
        net("c", "iso1", Some("10.62.0.0/24"), NetworkMode::Isolated),
        net("d", "uplink", Some("192.168.1.0/24"), NetworkMode::Bridged),
    ];
    let t = derive(&nets, &[]);
    let fwd = chain(&t, Family::Inet, "forward");
    assert!(fwd.contains(&r#"iifname "nat1" oifname { "nat2", "iso1" } counter drop"#.into()));
    assert!(fwd.contains(&r#"iifname "nat2" oifname { "nat1", "iso1" } counter drop"#.into()));
    // nat1's drop of others comes before its accept of its subnet.
    let drop = fwd
        .iter()
        .position(|r| r.contains(r#"iifname "nat1" oifname {"#));
    let out = fwd.iter().position(|r| r.contains("ip saddr 10.61.0.0/24"));
    assert!(drop < out, "{fwd:#?}");
    for (_, rules) in chains(&t, Family::Inet) {
        assert!(
            rules.iter().all(|r| !r.contains("uplink")),
            "a bridged network is never named: {rules:#?}"
        );
    }
    assert_eq!(chain(&t, Family::Inet, "postrouting").len(), 2);
}

#[test]
fn ports_get_mac_ip_arp_and_dhcp_checks() {
    let nets = [
        net("n", "nat1", Some("10.61.0.0/24"), NetworkMode::Nat),
        net("l", "l2", None, NetworkMode::Bridged),
    ];
    let ports = [
        port("n", "kt0a1b2c3d0", "52:54:00:00:00:01", Some("10.61.0.5")),
        port("l", "kt0a1b2c3d1", "52:54:00:00:00:02", None),
        // A NIC of a network that is not (any longer) active: no rules.
        port("gone", "kt99999999", "52:54:00:00:00:03", None),
    ];
    let t = derive(&nets, &ports);
    assert_eq!(
        chain(&t, Family::Bridge, "prerouting"),
        [
            r#"iifname "kt0a1b2c3d0" jump port_kt0a1b2c3d0"#,
            r#"iifname "kt0a1b2c3d1" jump port_kt0a1b2c3d1"#,
        ]
    );
    assert_eq!(
        chain(&t, Family::Bridge, "port_kt0a1b2c3d0"),
        [
            "ether saddr != 52:54:00:00:00:01 counter drop",
            "ether type arp arp saddr ether != 52:54:00:00:00:01 counter drop",
            "ether type arp arp saddr ip != { 0.0.0.0, 10.61.0.5 } counter drop",
            "ether type arp accept",
            "ether type ip udp sport 67 counter drop",
            "ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept",
            "ether type ip ip saddr != 10.61.0.5 counter drop",
            "ether type ip accept",
            "counter drop",
        ]
    );
    // L2 only: the MAC is all kilnd knows.
    assert_eq!(
        chain(&t, Family::Bridge, "port_kt0a1b2c3d1"),
        ["ether saddr != 52:54:00:00:00:02 counter drop"]
    );
}

#[test]
fn the_batch_replaces_both_families_and_deletes_an_unneeded_one() {
    let nets = [net("n", "nat1", Some("10.61.0.0/24"), NetworkMode::Nat)];
    let doc = nft::batch("kiln_0123abcd", &derive(&nets, &[]));
    let cmds = doc["nftables"].as_array().unwrap();
    let ops: Vec<String> = cmds
        .iter()
        .map(|c| {
            let (op, body) = c.as_object().unwrap().iter().next().unwrap();
            let (what, obj) = body.as_object().unwrap().iter().next().unwrap();
            format!("{op} {what} {}", obj["family"].as_str().unwrap())
        })
        .collect();
    // inet: add, delete, add, then its chains and rules; bridge: add and
    // delete only (no ports), so no bridge table is left.
    assert_eq!(
        &ops[..3],
        ["add table inet", "delete table inet", "add table inet"]
    );
    assert_eq!(
        &ops[ops.len() - 2..],
        ["add table bridge", "delete table bridge"]
    );
    assert_eq!(table_name("0123abcdef0123456789"), "kiln_0123abcd");
}
