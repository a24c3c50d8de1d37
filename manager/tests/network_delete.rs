//! Deleting a managed network never cuts off links that are not this
//! kilnd's, end to end: two kilnds (own state dirs and sockets) in one
//! network namespace the test creates. A makes bridge `kdbr` for its
//! network (managed); B's network uses that bridge as it finds it
//! (unmanaged) and runs a server with a NIC on it. Deleting A's network is
//! refused (409 naming B's tap and instance) while B's tap, or a veth an
//! admin added, is on the bridge; an interrupted delete finished at start
//! is rolled back the same way; with only A's own taps on it, the bridge
//! goes as before. And the race: a port that joins between the check and
//! the delete is reported (`teardown::delete_bridge_between`).

mod common;

use common::vm::*;
use common::{alive, Kilnd};
use kiln_api::compute::{Network, ServerStatus};
use kiln_tests::netns::{ip, NetNs};

const BRIDGE: &str = "kdbr";

fn network(k: &Kilnd, name: &str) -> Network {
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(&format!(r#"{{"name":"{name}","bridge":"{BRIDGE}"}}"#)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json().unwrap()
}

fn on_bridge(ns: &NetNs, dev: &str) -> bool {
    ns.link(dev)
        .is_some_and(|l| l.contains(&format!("master {BRIDGE}")))
}

/// The ifindex of link `dev`.
fn index_of(ns: &NetNs, dev: &str) -> u32 {
    let out = ip(ns.name(), &["-o", "link", "show", "dev", dev]);
    out.split(':').next().unwrap().trim().parse().unwrap()
}

/// `DELETE /v1/networks/lan` on A: 409 whose message names `port` and
/// contains each of `also`; the network and the bridge (the same link)
/// stay.
fn refused(a: &Kilnd, ns: &NetNs, bridge_index: u32, port: &str, also: &[&str]) -> String {
    let r = a.req("DELETE", "/v1/networks/lan", None);
    assert_eq!(r.status, 409, "{}", r.text());
    let msg = r.text();
    assert!(msg.contains(port) && msg.contains(BRIDGE), "{msg}");
    for s in also {
        assert!(msg.contains(s), "{s:?} in {msg}");
    }
    assert_eq!(index_of(ns, BRIDGE), bridge_index, "the bridge is kept");
    let net: Network = a.req("GET", "/v1/networks/lan", None).json().unwrap();
    assert!(net.managed, "the network is kept, still managed: {net:?}");
    assert!(on_bridge(ns, port), "{port} is still on the bridge");
    msg
}

#[test]
fn deleting_a_network_leaves_others_ports_and_their_bridge() {
    let ns = NetNs::with_peer("kndel");
    let mut a = start_kilnd_in(Some(ns.name()), "");
    let b = start_kilnd_in(Some(ns.name()), "");
    assert!(network(&a, "lan").managed, "A makes the bridge");
    let bridge_index = index_of(&ns, BRIDGE);
    assert!(!network(&b, "shared").managed, "B finds it");
    register(&b, "hold", "hello", "hold");
    let sb = b.create_server(
        r#"{"name":"b1","flavor":"k1.probe","image":"hold","networks":[{"network":"shared"}]}"#,
    );
    let sb = b.wait_status(&sb.id, ServerStatus::Active, T);
    let tb = sb.nics[0].tap.clone();
    assert!(on_bridge(&ns, &tb));
    let mark = ns.alias(&tb).expect("B's tap is marked");
    let b_instance = mark.split(':').nth(1).unwrap().to_owned();

    // B's tap on A's bridge: refused, naming the tap, B's instance and
    // server; B's VMM runs on with its tap on the bridge.
    let msg = refused(
        &a,
        &ns,
        bridge_index,
        &tb,
        &["another kilnd", &b_instance, &sb.id],
    );
    assert!(msg.contains("1 port(s)"), "{msg}");
    assert!(alive(sb.pid.unwrap()), "B's VMM runs on");
    let sb2 = b.server(&sb.id);
    assert_eq!((sb2.status, sb2.pid), (ServerStatus::Active, sb.pid));

    // B's server goes; a veth an admin put on the bridge: refused the
    // same, naming the veth (no kiln mark) and nothing else.
    b.delete_server(&sb.id);
    assert!(ns.link(&tb).is_none());
    ip(ns.name(), &["link", "set", "veth0", "master", BRIDGE, "up"]);
    let msg = refused(&a, &ns, bridge_index, "veth0", &["veth, no kiln mark"]);
    assert!(!msg.contains(&tb) && msg.contains("1 port(s)"), "{msg}");

    // An interrupted delete (its first step, then kill -9) is rolled back
    // at start: the network is active again, the bridge and the veth
    // stay, the log says why; the next start has nothing left to do.
    a.kill9();
    {
        let store = kiln_manager::store::Store::open(&a.state_path("kiln.db")).unwrap();
        store.begin_delete_network("lan").unwrap();
    }
    a.spawn();
    let net: Network = a.req("GET", "/v1/networks/lan", None).json().unwrap();
    assert_eq!(net.bridge, BRIDGE);
    assert_eq!(index_of(&ns, BRIDGE), bridge_index);
    assert!(on_bridge(&ns, "veth0"));
    let log = a.log();
    assert!(
        log.contains("not finishing an interrupted network delete") && log.contains("veth0"),
        "{log}"
    );
    a.kill9();
    let a_instance = {
        let store = kiln_manager::store::Store::open(&a.state_path("kiln.db")).unwrap();
        let all = store.all_networks().unwrap();
        assert_eq!(all.len(), 1);
        assert!(!all[0].1, "not left deleting");
        store.instance_id().unwrap()
    };
    a.spawn();
    assert_eq!(a.req("GET", "/v1/networks/lan", None).status, 200);

    // With only A's own tap on the bridge (a leftover with A's mark): the
    // bridge is deleted as before, and B's network row is B's business.
    ip(ns.name(), &["link", "set", "veth0", "nomaster"]);
    ip(
        ns.name(),
        &["tuntap", "add", "dev", "kt0badc0de0", "mode", "tap"],
    );
    ip(
        ns.name(),
        &[
            "link",
            "set",
            "kt0badc0de0",
            "alias",
            &format!("kiln:{a_instance}:0badc0de-0000-4000-8000-000000000000:0"),
        ],
    );
    ip(ns.name(), &["link", "set", "kt0badc0de0", "master", BRIDGE]);
    let r = a.req("DELETE", "/v1/networks/lan", None);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(ns.link(BRIDGE).is_none(), "managed bridge deleted");
    assert_eq!(a.req("GET", "/v1/networks/lan", None).status, 404);
    // kilnd saw its delete's own link event (how it would see a port that
    // joined between its check and the delete), and no such port.
    let log = a.log();
    assert!(
        !log.contains("did not see the bridge's delete event")
            && !log.contains("joined the bridge"),
        "{log}"
    );
    assert!(
        ns.link("veth0").is_some(),
        "the veth itself was never touched"
    );
    assert_eq!(b.req("DELETE", "/v1/networks/shared", None).status, 204);
    assert_nothing_left(&a);
    assert_nothing_left(&b);
}

/// The race, made to happen: a veth joins the bridge after kilnd's port
/// check and before its delete. The kernel takes it off with the bridge
/// (nothing kilnd can prevent); kilnd sees it in the link events and
/// names it, and the veth itself is kept.
#[test]
fn a_port_joining_during_the_delete_is_reported() {
    use kiln_manager::net::teardown::{delete_bridge_between, Teardown};
    let ns = NetNs::with_peer("kndrace");
    ip(ns.name(), &["link", "add", BRIDGE, "type", "bridge"]);
    let name = ns.name().to_owned();
    let instance = "0123456789abcdef0123456789abcdef";
    let got = ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(delete_bridge_between(instance, BRIDGE, async move {
            ip(&name, &["link", "set", "veth0", "master", BRIDGE]);
        }))
        .unwrap()
    });
    let Teardown::Deleted { late } = got else {
        panic!("{got:?}")
    };
    let names: Vec<&str> = late.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["veth0"], "{late:?}");
    assert!(ns.link(BRIDGE).is_none(), "the bridge is deleted");
    let veth = ns.link("veth0").expect("the veth is kept");
    assert!(!veth.contains("master"), "{veth}");

    // Without a late port: nothing reported.
    ip(ns.name(), &["link", "add", BRIDGE, "type", "bridge"]);
    let got = ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(delete_bridge_between(instance, BRIDGE, async {}))
            .unwrap()
    });
    assert_eq!(got, Teardown::Deleted { late: Vec::new() });
    assert!(ns.link(BRIDGE).is_none());
}
