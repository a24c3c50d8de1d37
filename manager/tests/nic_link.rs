//! A server NIC's link (`PUT /v1/servers/{id}/nics/{index}`, `kiln
//! server link`) end to end: kilnd runs inside a network namespace the
//! test creates, with real kiln-vmm processes and taps on a bridge. The
//! link is checked where it takes effect: each VMM's own control socket
//! (`GET /v1/vm` reports each NIC's link), the `vm.json` kilnd hands it,
//! and the `virtio_pci` probe guest, which reads the NIC's status and
//! says `link down` or ARPs through it.

mod common;

use common::vm::*;
use kiln_api::compute::{LinkState, Nic, NicList, Server, ServerStatus};
use kiln_tests::netns::{ip, NetNs};

/// The links of the server's running VMM, from its control socket.
fn vmm_links(k: &common::Kilnd, id: &str) -> Vec<LinkState> {
    vm_info(k, id).nets.into_iter().map(|n| n.link).collect()
}

/// The links kilnd stores and shows for the server.
fn shown_links(k: &common::Kilnd, id: &str) -> Vec<LinkState> {
    k.server(id).nics.into_iter().map(|n| n.link).collect()
}

/// `PUT /v1/servers/{id}/nics/{index}` with `body`: (status, text).
fn put_nic(k: &common::Kilnd, id: &str, index: &str, body: &str) -> (u16, String) {
    let r = k.req("PUT", &format!("/v1/servers/{id}/nics/{index}"), Some(body));
    (r.status, r.text())
}

/// Sets a link, which must succeed; answers the NIC.
fn set_link(k: &common::Kilnd, id: &str, index: u32, link: &str) -> Nic {
    let (status, text) = put_nic(
        k,
        id,
        &index.to_string(),
        &format!(r#"{{"link":"{link}"}}"#),
    );
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// The `nets` of the vm.json kilnd wrote for the server's last VMM.
fn config_links(k: &common::Kilnd, id: &str) -> Vec<String> {
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(k.state_path(&format!("servers/{id}/vm.json"))).unwrap(),
    )
    .unwrap();
    cfg["nets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["link"].as_str().unwrap_or("up").to_owned())
        .collect()
}

fn lan(k: &common::Kilnd, ns: &NetNs, bridge: &str) {
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(&format!(r#"{{"name":"lan","bridge":"{bridge}"}}"#)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    ip(ns.name(), &["link", "set", "veth0", "master", bridge, "up"]);
}

#[test]
fn nic_link_is_applied_kept_and_readopted() {
    use LinkState::{Down, Up};
    let ns = NetNs::with_peer("klink");
    let mut k = start_kilnd_in(Some(ns.name()), "");
    register(&k, "hold", "hello", "hold");
    lan(&k, &ns, "kbl0");

    // Two NICs, the second down from the create on.
    let s = k.create_server(
        r#"{"name":"h","flavor":"k1.probe","image":"hold",
            "networks":[{"network":"lan"},{"network":"lan","link":"down"}]}"#,
    );
    assert_eq!(shown_links(&k, &s.id), [Up, Down]);
    let s = k.wait_status(&s.id, ServerStatus::Active, T);
    assert_eq!((s.nics[0].index, s.nics[1].index), (0, 1));
    assert_eq!(vmm_links(&k, &s.id), [Up, Down]);
    assert_eq!(config_links(&k, &s.id), ["up", "down"]);

    // Down at once in the running VMM, and shown.
    let nic = set_link(&k, &s.id, 0, "down");
    assert_eq!((nic.index, nic.link, &nic.tap), (0, Down, &s.nics[0].tap));
    assert_eq!(vmm_links(&k, &s.id), [Down, Down]);
    assert_eq!(shown_links(&k, &s.id), [Down, Down]);
    let one: Nic = k
        .req("GET", &format!("/v1/servers/{}/nics/0", s.id), None)
        .json()
        .unwrap();
    assert_eq!(one.link, Down);
    let list: NicList = k
        .req("GET", &format!("/v1/servers/{}/nics", s.id), None)
        .json()
        .unwrap();
    assert_eq!(list.nics, k.server(&s.id).nics);
    let vmm_log = k.state_path(&format!("servers/{}/vmm.log", s.id));
    assert!(std::fs::read_to_string(&vmm_log)
        .unwrap()
        .contains("NIC 0: link down"));

    // Bad input: a clear 4xx, and nothing changes.
    for (index, body, status, says) in [
        ("9", r#"{"link":"up"}"#, 404, "has no NIC 9 (it has 2"),
        ("x", r#"{"link":"up"}"#, 400, "not a number"),
        ("-1", r#"{"link":"up"}"#, 400, "not a number"),
        ("0", r#"{"link":"sideways"}"#, 400, "unknown variant"),
        ("0", r#"{}"#, 400, "missing field `link`"),
        ("0", r#"{"link":"up","mtu":9000}"#, 400, "unknown field"),
        ("0", "not json", 400, ""),
    ] {
        let (st, text) = put_nic(&k, &s.id, index, body);
        assert_eq!(st, status, "{index} {body}: {text}");
        assert!(text.contains(says), "{index} {body}: {text}");
        assert!(text.starts_with(r#"{"error":"#), "{text}");
    }
    let (st, text) = put_nic(&k, "no-such-server", "0", r#"{"link":"up"}"#);
    assert_eq!(st, 404, "{text}");
    assert_eq!(
        k.req("GET", &format!("/v1/servers/{}/nics/2", s.id), None)
            .status,
        404
    );
    assert_eq!(vmm_links(&k, &s.id), [Down, Down]);

    // Stopped: the change is stored; the next VMM starts with it. While
    // the stop runs (the probe ignores the power button, so it takes the
    // stop timeout) the server is busy: 409, as for actions.
    action(&k, &s.id, r#"{"action":"stop"}"#);
    let (st, text) = put_nic(&k, &s.id, "1", r#"{"link":"up"}"#);
    assert_eq!(st, 409, "{text}");
    assert!(text.contains("busy"), "{text}");
    k.wait_status(&s.id, ServerStatus::Shutoff, T);
    assert_eq!(
        shown_links(&k, &s.id),
        [Down, Down],
        "the busy PUT changed nothing"
    );
    assert_eq!(set_link(&k, &s.id, 1, "up").link, Up);
    action(&k, &s.id, r#"{"action":"start"}"#);
    let s2 = k.wait_status(&s.id, ServerStatus::Active, T);
    assert_ne!(s2.pid, s.pid);
    assert_eq!(vmm_links(&k, &s.id), [Down, Up]);
    assert_eq!(config_links(&k, &s.id), ["down", "up"]);

    // A hard reboot is a new VMM: the same links.
    action(&k, &s.id, r#"{"action":"reboot","type":"hard"}"#);
    wait_until("rebooted", T, || {
        let x = k.server(&s.id);
        x.status == ServerStatus::Active && x.task_state.is_none() && x.pid != s2.pid
    });
    assert_eq!(vmm_links(&k, &s.id), [Down, Up]);

    // kill -9 kilnd, and a change stored whose control request the crash
    // cut off: the restarted kilnd re-adopts the VMM and applies it.
    let pid = k.server(&s.id).pid;
    k.kill9();
    {
        let store = kiln_manager::store::Store::open(&k.state_path("kiln.db")).unwrap();
        store.set_nic_link(&s.id, 1, Down).unwrap();
    }
    assert_eq!(vmm_links(&k, &s.id), [Down, Up], "the VMM is as it was");
    k.spawn();
    let s3 = k.server(&s.id);
    assert_eq!(
        (s3.status, s3.pid),
        (ServerStatus::Active, pid),
        "re-adopted"
    );
    wait_until("links synced after re-adoption", T, || {
        vmm_links(&k, &s.id) == [Down, Down]
    });
    assert!(k.log().contains("NIC link set as stored"));

    // The CLI: up again, shown in `server show`; a NIC it lacks refused.
    let (ok, out, err) = k.cli(&["server", "link", "h", "0", "up"]);
    assert!(ok, "{err}");
    assert!(out.contains("LINK") && out.contains(" up"), "{out}");
    assert_eq!(vmm_links(&k, &s.id), [Up, Down]);
    let (ok, out, _) = k.cli(&["server", "show", "h"]);
    assert!(ok && out.contains("LINK"), "{out}");
    let (ok, _, err) = k.cli(&["server", "link", "h", "5", "down"]);
    assert!(!ok && err.contains("has no NIC 5"), "{err}");
    let (ok, _, err) = k.cli(&["server", "link", "h", "0", "sideways"]);
    assert!(!ok && err.contains("up or down"), "{err}");
    let (ok, out, err) = k.cli(&["--json", "server", "link", "h", "1", "up"]);
    assert!(ok, "{err}");
    let nic: Nic = serde_json::from_str(&out).unwrap();
    assert_eq!((nic.index, nic.link), (1, Up));
    assert_eq!(vmm_links(&k, &s.id), [Up, Up]);

    // Paused: the VMM still takes it (the guest sees it when it runs).
    action(&k, &s.id, r#"{"action":"pause"}"#);
    k.wait_status(&s.id, ServerStatus::Paused, T);
    set_link(&k, &s.id, 1, "down");
    assert_eq!(vmm_links(&k, &s.id), [Up, Down]);
    action(&k, &s.id, r#"{"action":"resume"}"#);
    k.wait_status(&s.id, ServerStatus::Active, T);
    assert_eq!(vmm_links(&k, &s.id), [Up, Down]);

    k.delete_server(&s.id);
    let (st, _) = put_nic(&k, &s.id, "0", r#"{"link":"up"}"#);
    assert_eq!(st, 404, "a deleted server has no NICs to change");
    assert_nothing_left(&k);
}

/// What the guest sees: the `virtio_pci` probe reads the NIC's status
/// field. Created with its link down it says so (and gives up); set up
/// while stopped, the next boot sees the link up and ARPs through it.
/// A guest reboot (a new VMM each time) keeps a link down.
#[test]
fn the_guest_sees_the_stored_link() {
    let ns = NetNs::with_peer("klink2");
    let k = start_kilnd_in(Some(ns.name()), "");
    register(&k, "vnet", "virtio_pci", "");
    register(&k, "reset", "reset", "");
    lan(&k, &ns, "kbl1");

    let mac = "52:54:00:4c:4e:4b";
    let s: Server = k.create_server(&format!(
        r#"{{"name":"p","flavor":"k1.probe","image":"vnet",
             "networks":[{{"network":"lan","mac":"{mac}","link":"down"}}]}}"#
    ));
    wait_until("the probe's first run", T, || {
        console(&k, &s.id).contains("virtio: FAIL")
    });
    k.wait_status(&s.id, ServerStatus::Shutoff, T);
    let out = console(&k, &s.id);
    assert!(out.contains(&format!("virtio-net: MAC {mac}")), "{out}");
    assert!(out.contains("virtio: FAIL virtio-net: link down"), "{out}");
    assert!(!out.contains("ARP reply"), "{out}");

    set_link(&k, &s.id, 0, "up");
    action(&k, &s.id, r#"{"action":"start"}"#);
    wait_until("the probe's second run", T, || {
        console(&k, &s.id).contains("virtio: done")
    });
    k.wait_status(&s.id, ServerStatus::Shutoff, T);
    let out = console(&k, &s.id);
    assert!(
        out.contains(&format!("virtio-net: MAC {mac}, link up")),
        "{out}"
    );
    assert!(out.contains("virtio-net: ARP reply from 10.9.0.1"), "{out}");

    // A guest that reboots again and again: each reboot is a new VMM
    // (kilnd's), and each starts with the link down.
    let r = k.create_server(
        r#"{"name":"r","flavor":"k1.probe","image":"reset",
            "networks":[{"network":"lan","link":"down"}]}"#,
    );
    let vmm_log = k.state_path(&format!("servers/{}/vmm.log", r.id));
    let count = |what: &str| {
        std::fs::read_to_string(&vmm_log)
            .unwrap_or_default()
            .matches(what)
            .count()
    };
    wait_until("three guest reboots", T, || {
        count("guest asked for a reboot") >= 3
    });
    let (reboots, downs) = (
        count("guest asked for a reboot"),
        count("virtio-net0: link down"),
    );
    assert!(
        downs >= reboots,
        "{downs} VMMs started down for {reboots} reboots"
    );
    assert_eq!(config_links(&k, &r.id), ["down"]);
    for id in [&s.id, &r.id] {
        k.delete_server(id);
    }
    assert_nothing_left(&k);
}
