//! Networks end to end: kilnd runs inside a network namespace the test
//! creates (`ip netns exec`), makes a bridge for a network, and gives
//! servers virtio-net NICs on taps on it. The `virtio_pci` probe guest
//! ARPs for a peer (10.9.0.1 on a veth on the same bridge) and prints the
//! reply, so frames crossing both ways show in its console and in the
//! peer's neighbour table.

mod common;

use common::vm::*;
use common::{alive, names};
use kiln_api::compute::{Network, Server, ServerStatus};
use kiln_tests::netns::{ip, NetNs};

fn create_with_nics(k: &common::Kilnd, name: &str, image: &str, nets: &str) -> Server {
    k.create_server(&format!(
        r#"{{"name":"{name}","flavor":"k1.probe","image":"{image}","networks":{nets}}}"#
    ))
}

/// Waits for the probe to power off after its run, and checks it got the
/// peer's ARP reply through the tap and the bridge.
fn assert_probe_talked(k: &common::Kilnd, ns: &NetNs, id: &str, mac: &str, runs: usize) {
    wait_until("the probe's run", T, || {
        console(k, id).matches("virtio: done").count() >= runs
    });
    let s = k.wait_status(id, ServerStatus::Shutoff, T);
    assert!(s.fault.is_none(), "{:?}", s.fault);
    let out = console(k, id);
    assert!(!out.contains("FAIL"), "{out}");
    let peer = ns.mac_of("veth1");
    assert_eq!(
        out.matches(&format!("virtio-net: MAC {mac}, link up"))
            .count(),
        runs,
        "{out}"
    );
    assert_eq!(
        out.matches(&format!("virtio-net: ARP reply from 10.9.0.1 at {peer}"))
            .count(),
        runs,
        "{out}"
    );
    // The peer learned the guest's MAC from its request.
    let neigh = ip(ns.name(), &["neigh", "show", "10.9.0.2"]);
    assert!(neigh.contains(mac), "peer's neighbour table: {neigh:?}");
}

#[test]
fn server_nics_cross_a_bridge_and_taps_are_accounted_for() {
    let ns = NetNs::with_peer("knet");
    let mut k = start_kilnd_in(Some(ns.name()), "");
    register(&k, "vnet", "virtio_pci", "");
    register(&k, "hold", "hello", "hold");

    // A network whose bridge kilnd makes (and so owns).
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(r#"{"name":"lan","bridge":"kbr0","mtu":1400}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let net: Network = r.json().unwrap();
    assert!(net.managed);
    assert_eq!((net.bridge.as_str(), net.mtu), ("kbr0", 1400));
    let br = ns.link("kbr0").expect("bridge made");
    assert!(br.contains("bridge") && br.contains("mtu 1400"), "{br}");
    let r = k.req("POST", "/v1/networks", Some(r#"{"name":"lan"}"#));
    assert_eq!(r.status, 409, "{}", r.text());
    ip(ns.name(), &["link", "set", "veth0", "master", "kbr0", "up"]);

    // The probe ARPs for the peer through its NIC and powers off.
    let mac = "52:54:00:4b:69:6c";
    let s = create_with_nics(
        &k,
        "talker",
        "vnet",
        &format!(r#"[{{"network":"lan","mac":"{mac}"}}]"#),
    );
    assert_eq!(s.nics.len(), 1);
    let tap = s.nics[0].tap.clone();
    assert_eq!(tap, format!("kt{}0", &s.id[..8]));
    assert_eq!(
        (s.nics[0].mac.as_str(), s.nics[0].network.as_str()),
        (mac, "lan")
    );
    assert_probe_talked(&k, &ns, &s.id, mac, 1);
    // Its VMM is gone, and so is its (non-persistent) tap.
    wait_until("tap of a SHUTOFF server gone", T, || {
        ns.link(&tap).is_none()
    });
    // Started again, it talks again on a new tap of the same name.
    ip(ns.name(), &["neigh", "flush", "dev", "veth1"]);
    action(&k, &s.id, r#"{"action":"start"}"#);
    assert_probe_talked(&k, &ns, &s.id, mac, 2);

    // A server that keeps running: its tap is on the bridge, up, with the
    // bridge's MTU; its MAC was generated (locally administered, stored).
    let h = create_with_nics(&k, "holder", "hold", r#"[{"network":"lan"}]"#);
    let h = k.wait_status(&h.id, ServerStatus::Active, T);
    let htap = h.nics[0].tap.clone();
    let gen_mac = h.nics[0].mac.clone();
    assert_eq!(
        u8::from_str_radix(&gen_mac[..2], 16).unwrap() & 3,
        2,
        "{gen_mac}"
    );
    assert_eq!(k.server(&h.id).nics, h.nics, "stable");
    let l = ns.link(&htap).expect("tap exists while the server runs");
    assert!(
        l.contains("master kbr0") && l.contains("mtu 1400") && l.contains("tun"),
        "{l}"
    );
    let net: Network = k.req("GET", "/v1/networks/lan", None).json().unwrap();
    assert_eq!(net.servers.len(), 2, "{net:?}");
    assert!(net.servers.contains(&h.id) && net.servers.contains(&s.id));

    // In use: refused, and nothing changes.
    let r = k.req("DELETE", "/v1/networks/lan", None);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("in use by 2 server(s)"), "{}", r.text());
    assert!(ns.link("kbr0").is_some());

    // Each tap carries this kilnd's mark: kiln:<instance>:<server>:<nic>.
    let mark = ns.alias(&htap).expect("the tap has an alias");
    let instance = mark.split(':').nth(1).unwrap().to_owned();
    assert_eq!(mark, format!("kiln:{instance}:{}:0", h.id));
    // kill -9 kilnd. A tap with a kiln name, this kilnd's mark and no
    // server is left on the bridge meanwhile (persistent, as a tap still
    // held by some process would stay).
    k.kill9();
    let stray = "kt0badc0de0";
    ip(ns.name(), &["tuntap", "add", "dev", stray, "mode", "tap"]);
    let stray_mark = format!("kiln:{instance}:0badc0de-0000-4000-8000-000000000000:0");
    ip(ns.name(), &["link", "set", stray, "alias", &stray_mark]);
    ip(ns.name(), &["link", "set", stray, "master", "kbr0"]);
    assert!(alive(h.pid.unwrap()));
    assert!(ns.link(&htap).is_some(), "the VMM holds its tap");
    k.spawn();
    let h2 = k.server(&h.id);
    assert_eq!(
        (h2.status, h2.pid),
        (ServerStatus::Active, h.pid),
        "re-adopted"
    );
    assert!(ns.link(&htap).unwrap().contains("master kbr0"));
    assert!(ns.link(stray).is_none(), "reconcile removed the stray tap");

    // Stop and start: the tap goes with the VMM and comes back on the
    // bridge with the next one.
    action(&k, &h.id, r#"{"action":"stop"}"#);
    k.wait_status(&h.id, ServerStatus::Shutoff, T);
    wait_until("tap gone after stop", T, || ns.link(&htap).is_none());
    action(&k, &h.id, r#"{"action":"start"}"#);
    let h3 = k.wait_status(&h.id, ServerStatus::Active, T);
    assert_ne!(h3.pid, h.pid);
    assert!(ns.link(&htap).unwrap().contains("master kbr0"));
    assert_eq!(h3.nics, h.nics);
    // A hard reboot is a new VMM: a new tap of the same name.
    action(&k, &h.id, r#"{"action":"reboot","type":"hard"}"#);
    wait_until("rebooted", T, || {
        let s = k.server(&h.id);
        s.status == ServerStatus::Active && s.task_state.is_none() && s.pid != h3.pid
    });
    assert!(ns.link(&htap).unwrap().contains("master kbr0"));

    // Delete: no tap left; then the network can go, with its bridge.
    for id in [&s.id, &h.id] {
        k.delete_server(id);
    }
    assert!(ns.link(&htap).is_none() && ns.link(&tap).is_none());
    let left = ip(ns.name(), &["-o", "link", "show"]);
    assert!(!left.contains(": kt"), "taps left: {left}");
    // The peer's veth, which kilnd did not put there, keeps the bridge
    // (network_delete.rs tests this in depth); taken off, the bridge goes.
    let r = k.req("DELETE", "/v1/networks/lan", None);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("veth0"), "{}", r.text());
    ip(ns.name(), &["link", "set", "veth0", "nomaster"]);
    let r = k.req("DELETE", "/v1/networks/lan", None);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(ns.link("kbr0").is_none(), "managed bridge deleted");
    assert_eq!(k.req("GET", "/v1/networks/lan", None).status, 404);
    assert_nothing_left(&k);
}

#[test]
fn existing_bridges_are_used_not_owned() {
    let ns = NetNs::with_peer("knet2");
    let k = start_kilnd_in(Some(ns.name()), "");
    ip(ns.name(), &["link", "add", "ext0", "type", "bridge"]);
    ip(ns.name(), &["link", "set", "ext0", "mtu", "1450"]);
    // Not a bridge: refused.
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(r#"{"name":"v","bridge":"veth0"}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("is not a bridge"), "{}", r.text());
    // An MTU that differs from the bridge's: refused.
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(r#"{"name":"ext","bridge":"ext0","mtu":1500}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("MTU 1450"), "{}", r.text());
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(r#"{"name":"ext","bridge":"ext0"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let net: Network = r.json().unwrap();
    assert_eq!((net.managed, net.mtu), (false, 1450));
    // One bridge, one network.
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(r#"{"name":"ext2","bridge":"ext0"}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let list: serde_json::Value = k.json("GET", "/v1/networks", None);
    assert_eq!(list["networks"].as_array().unwrap().len(), 1);
    // Deleting the network leaves a bridge kilnd did not make.
    assert_eq!(k.req("DELETE", "/v1/networks/ext", None).status, 204);
    assert!(ns.link("ext0").is_some(), "an existing bridge is kept");
    // A network named like its bridge (the default).
    let r = k.req("POST", "/v1/networks", Some(r#"{"name":"mine"}"#));
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(ns.link("mine").unwrap().contains("mtu 1500"));
    assert_eq!(k.req("DELETE", "/v1/networks/mine", None).status, 204);
    assert!(ns.link("mine").is_none());
}

#[test]
fn cli_manages_networks_and_nics() {
    let ns = NetNs::with_peer("knet3");
    let k = start_kilnd_in(Some(ns.name()), "");
    register(&k, "hold", "hello", "hold");
    let kiln = |args: &[&str]| k.cli(args);
    // `kiln --json server create h --flavor k1.probe --image hold ARGS`.
    let create_h = |args: &[&str]| {
        let base = [
            "--json", "server", "create", "h", "--flavor", "k1.probe", "--image", "hold",
        ];
        kiln(&[&base[..], args].concat())
    };
    let (ok, out, err) = kiln(&[
        "network", "create", "lan", "--bridge", "kbr1", "--mtu", "1400",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("ID ") && out.contains("kbr1") && out.contains("1400"),
        "{out}"
    );
    assert!(ns.link("kbr1").is_some());
    let (ok, out, _) = kiln(&["--json", "network", "list"]);
    assert!(ok);
    let l: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(l["networks"][0]["bridge"], "kbr1");
    let (ok, _, err) = create_h(&["--network", "lan,color=red"]);
    assert!(!ok && err.contains("unknown option"), "{err}");
    let (ok, out, err) = create_h(&[
        "--network",
        "lan",
        "--network",
        "lan,mac=52:54:00:00:00:09",
        "--wait",
        "active",
    ]);
    assert!(ok, "{err}");
    let s: Server = serde_json::from_str(&out).unwrap();
    assert_eq!(s.nics.len(), 2);
    assert_eq!(s.nics[1].mac, "52:54:00:00:00:09");
    for nic in &s.nics {
        assert!(ns.link(&nic.tap).unwrap().contains("master kbr1"));
    }
    let (ok, out, _) = kiln(&["server", "show", "h"]);
    assert!(ok);
    assert!(out.contains("TAP") && out.contains(&s.nics[1].tap), "{out}");
    let (ok, out, _) = kiln(&["network", "show", "lan"]);
    assert!(ok && out.contains(&s.id), "{out}");
    let (ok, _, err) = kiln(&["network", "delete", "lan"]);
    assert!(!ok && err.contains("in use"), "{err}");
    let (ok, _, err) = kiln(&["server", "delete", "h"]);
    assert!(ok, "{err}");
    let (ok, _, err) = kiln(&["network", "delete", "lan"]);
    assert!(ok, "{err}");
    assert!(ns.link("kbr1").is_none());
    assert_nothing_left(&k);
}

/// What kilnd finds at start after a crash: a managed bridge that vanished
/// (as after a host reboot) is made again; a network delete that stopped
/// between its two steps is finished, bridge and row.
#[test]
fn restart_repairs_bridges_and_finishes_deletes() {
    let ns = NetNs::with_peer("knet4");
    let mut k = start_kilnd_in(Some(ns.name()), "");
    for body in [
        r#"{"name":"a","bridge":"kba","mtu":1380}"#,
        r#"{"name":"b","bridge":"kbb"}"#,
    ] {
        let r = k.req("POST", "/v1/networks", Some(body));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    k.kill9();
    ip(ns.name(), &["link", "del", "kba"]);
    {
        // The first step of `DELETE /v1/networks/b`, then the crash.
        let store = kiln_manager::store::Store::open(&k.state_path("kiln.db")).unwrap();
        store.begin_delete_network("b").unwrap();
    }
    assert!(ns.link("kbb").is_some());
    k.spawn();
    let a = ns.link("kba").expect("managed bridge recreated");
    assert!(a.contains("mtu 1380") && a.contains("bridge"), "{a}");
    assert!(ns.link("kbb").is_none(), "interrupted delete finished");
    assert_eq!(
        names(&k.json("GET", "/v1/networks", None), "networks"),
        ["a"]
    );
    assert_eq!(k.req("DELETE", "/v1/networks/a", None).status, 204);
    assert!(ns.link("kba").is_none());
}

/// `/sys/class/net/DEV/tun_flags` inside the namespace.
fn tun_flags(ns: &NetNs, dev: &str) -> u32 {
    let text = ns.exec(&["cat", &format!("/sys/class/net/{dev}/tun_flags")]);
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).unwrap()
}

/// How many `/dev/net/tun` fds (tap queues) process `pid` holds.
fn tun_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l == std::path::Path::new("/dev/net/tun"))
        })
        .count()
}

/// Multi-queue NICs (Nova's `hw_vif_multiqueue_enabled`): a server with 2
/// vCPUs gets a 2-queue tap (IFF_MULTI_QUEUE, both queues held by its VMM,
/// which offers 2 queue pairs) and still passes frames both ways; a
/// 1-vCPU server's tap stays single-queue.
#[test]
fn multi_vcpu_servers_get_multi_queue_taps() {
    const IFF_MULTI_QUEUE: u32 = 0x0100;
    let ns = NetNs::with_peer("kmq");
    let k = start_kilnd_in(Some(ns.name()), "");
    register(&k, "vnet", "virtio_pci", "");
    register(&k, "hold", "hello", "hold");
    let r = k.req(
        "POST",
        "/v1/flavors",
        Some(r#"{"name":"k2.probe","vcpus":2,"ram_mb":64,"disk_gb":1}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(r#"{"name":"lan","bridge":"kbr1"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    ip(ns.name(), &["link", "set", "veth0", "master", "kbr1", "up"]);
    let create = |name: &str, flavor: &str, image: &str, nets: &str| -> Server {
        let r = k.req(
            "POST",
            "/v1/servers",
            Some(&format!(
                r#"{{"name":"{name}","flavor":"{flavor}","image":"{image}","networks":{nets}}}"#
            )),
        );
        assert_eq!(r.status, 202, "{}", r.text());
        r.json().unwrap()
    };

    let two = create("two", "k2.probe", "hold", r#"[{"network":"lan"}]"#);
    let two = k.wait_status(&two.id, ServerStatus::Active, T);
    let one = create("one", "k1.probe", "hold", r#"[{"network":"lan"}]"#);
    let one = k.wait_status(&one.id, ServerStatus::Active, T);
    let (tap2, tap1) = (&two.nics[0].tap, &one.nics[0].tap);
    assert_ne!(tun_flags(&ns, tap2) & IFF_MULTI_QUEUE, 0, "{tap2}");
    assert_eq!(tun_flags(&ns, tap1) & IFF_MULTI_QUEUE, 0, "{tap1}");
    assert_eq!(tun_fds(two.pid.unwrap()), 2, "queues of {tap2}");
    assert_eq!(tun_fds(one.pid.unwrap()), 1, "queues of {tap1}");
    let log =
        std::fs::read_to_string(k.state_path(&format!("servers/{}/vmm.log", two.id))).unwrap();
    assert!(log.contains("2 queue pair(s)"), "{log}");

    // The probe ARPs for the peer through a 2-queue NIC and gets the reply.
    let mac = "52:54:00:4b:6d:71";
    let talker = create(
        "talker",
        "k2.probe",
        "vnet",
        &format!(r#"[{{"network":"lan","mac":"{mac}"}}]"#),
    );
    assert_probe_talked(&k, &ns, &talker.id, mac, 1);
    let log =
        std::fs::read_to_string(k.state_path(&format!("servers/{}/vmm.log", talker.id))).unwrap();
    assert!(log.contains("2 queue pair(s)"), "{log}");

    for s in [&two, &one, &talker] {
        k.delete_server(&s.id);
    }
    let left = ip(ns.name(), &["-o", "link", "show"]);
    assert!(!left.contains(": kt"), "taps left: {left}");
    assert_nothing_left(&k);
}
