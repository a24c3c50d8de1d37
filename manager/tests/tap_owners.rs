//! Tap ownership end to end: two kilnds (own state dirs and sockets) in one
//! network namespace the test creates, with networks on one existing
//! bridge. Each marks its taps with its instance id (the tap's alias) and
//! deletes only links with its own mark: a restart after `kill -9` sweeps
//! its own stale taps and leaves the other kilnd's live taps, other
//! kilnds' stale ones and hand-made `kt…` links alone; a tap name taken by
//! a link it did not make is a server fault, not a delete.

mod common;

use common::vm::*;
use common::{alive, Kilnd};
use kiln_api::compute::{Network, Server, ServerStatus};
use kiln_tests::netns::{ip, NetNs};

const BRIDGE: &str = "shbr";

/// A network on the shared bridge (which exists: so not managed).
fn shared_network(k: &Kilnd) {
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(&format!(r#"{{"name":"shared","bridge":"{BRIDGE}"}}"#)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let net: Network = r.json().unwrap();
    assert!(!net.managed, "{net:?}");
}

/// A running `hold` server with one NIC on the shared network.
fn holder(k: &Kilnd, name: &str) -> Server {
    let s = k.create_server(&format!(
        r#"{{"name":"{name}","flavor":"k1.probe","image":"hold","networks":[{{"network":"shared"}}]}}"#
    ));
    k.wait_status(&s.id, ServerStatus::Active, T)
}

/// The instance id in the mark of `server`'s tap (checking the mark's
/// form: `kiln:<32 hex>:<server id>:0`).
fn instance_of(ns: &NetNs, server: &Server) -> String {
    let tap = &server.nics[0].tap;
    let mark = ns
        .alias(tap)
        .unwrap_or_else(|| panic!("{tap} has no alias"));
    let parts: Vec<&str> = mark.split(':').collect();
    assert_eq!(parts.len(), 4, "{mark}");
    assert_eq!(parts[0], "kiln", "{mark}");
    assert!(
        parts[1].len() == 32 && parts[1].bytes().all(|b| b.is_ascii_hexdigit()),
        "{mark}"
    );
    assert_eq!((parts[2], parts[3]), (server.id.as_str(), "0"), "{mark}");
    parts[1].to_owned()
}

/// A persistent tap `name` on the shared bridge, with `alias` if given
/// (as a kilnd, another program or an admin could leave one).
fn hand_made_tap(ns: &NetNs, name: &str, alias: Option<&str>) {
    ip(ns.name(), &["tuntap", "add", "dev", name, "mode", "tap"]);
    if let Some(a) = alias {
        ip(ns.name(), &["link", "set", name, "alias", a]);
    }
    ip(ns.name(), &["link", "set", name, "master", BRIDGE, "up"]);
}

/// The ifindex of link `dev`.
fn index_of(ns: &NetNs, dev: &str) -> u32 {
    let out = ip(ns.name(), &["-o", "link", "show", "dev", dev]);
    out.split(':').next().unwrap().trim().parse().unwrap()
}

fn on_bridge(ns: &NetNs, dev: &str) -> bool {
    ns.link(dev)
        .is_some_and(|l| l.contains(&format!("master {BRIDGE}")))
}

#[test]
fn kilnds_sharing_a_bridge_delete_only_their_own_taps() {
    let ns = NetNs::with_peer("kown");
    ip(ns.name(), &["link", "add", BRIDGE, "type", "bridge"]);
    ip(ns.name(), &["link", "set", BRIDGE, "up"]);
    let mut a = start_kilnd_in(Some(ns.name()), "");
    let mut b = start_kilnd_in(Some(ns.name()), "");
    for k in [&a, &b] {
        register(k, "hold", "hello", "hold");
        shared_network(k);
    }
    let sa = holder(&a, "a1");
    let sb = holder(&b, "b1");
    let (ta, tb) = (sa.nics[0].tap.clone(), sb.nics[0].tap.clone());
    assert!(on_bridge(&ns, &ta) && on_bridge(&ns, &tb));
    let (ia, ib) = (instance_of(&ns, &sa), instance_of(&ns, &sb));
    assert_ne!(ia, ib, "each kilnd has its own instance id");

    // kill -9 B. Meanwhile on the shared bridge: a stale tap with B's mark
    // (no live server of B), a stale one with A's mark, and a hand-made
    // unmarked one, all with kiln-shaped names.
    b.kill9();
    let stale_b = "kt0badc0de0";
    let stale_a = "kt0badf00d0";
    let hand = "ktc0ffee000";
    hand_made_tap(
        &ns,
        stale_b,
        Some(&format!("kiln:{ib}:0badc0de-0000-4000-8000-000000000000:0")),
    );
    hand_made_tap(
        &ns,
        stale_a,
        Some(&format!("kiln:{ia}:0badf00d-0000-4000-8000-000000000000:0")),
    );
    hand_made_tap(&ns, hand, None);
    b.spawn();
    // B re-adopted its server, whose tap stayed; it swept its own stale
    // tap and nothing else.
    let sb2 = b.server(&sb.id);
    assert_eq!((sb2.status, sb2.pid), (ServerStatus::Active, sb.pid));
    assert!(on_bridge(&ns, &tb), "B's live tap");
    assert!(ns.link(stale_b).is_none(), "B's stale tap swept");
    // A's live tap, its VMM and A's stale tap: untouched.
    assert!(on_bridge(&ns, &ta), "A's live tap left alone");
    assert!(alive(sa.pid.unwrap()), "A's VMM runs on");
    assert_eq!(a.server(&sa.id).status, ServerStatus::Active);
    assert!(on_bridge(&ns, stale_a), "A's stale tap is not B's to sweep");
    assert!(on_bridge(&ns, hand), "an unmarked link is left alone");
    assert!(b.log().contains(hand), "B logs the link it leaves alone");

    // The same from A's side: A's restart sweeps its own stale tap only.
    a.kill9();
    a.spawn();
    let sa2 = a.server(&sa.id);
    assert_eq!((sa2.status, sa2.pid), (ServerStatus::Active, sa.pid));
    assert!(ns.link(stale_a).is_none(), "A's stale tap swept by A");
    assert!(on_bridge(&ns, &ta) && on_bridge(&ns, &tb) && on_bridge(&ns, hand));
    assert!(alive(sb.pid.unwrap()));

    // Deleting servers deletes no link another kilnd or an admin made.
    a.delete_server(&sa.id);
    b.delete_server(&sb.id);
    assert!(ns.link(&ta).is_none() && ns.link(&tb).is_none());
    assert!(on_bridge(&ns, hand));
    assert_nothing_left(&a);
    assert_nothing_left(&b);
}

/// The collision case: the tap name a NIC needs is held by another
/// kilnd's tap (32 bits of server id collide) or by an unmarked link.
/// Starting the server fails with a fault naming it, and the link stays;
/// a leftover with this kilnd's own mark is replaced.
#[test]
fn a_tap_name_held_by_a_link_kilnd_did_not_make_is_a_fault_not_a_delete() {
    let ns = NetNs::with_peer("kcoll");
    ip(ns.name(), &["link", "add", BRIDGE, "type", "bridge"]);
    ip(ns.name(), &["link", "set", BRIDGE, "up"]);
    let k = start_kilnd_in(Some(ns.name()), "");
    register(&k, "hold", "hello", "hold");
    shared_network(&k);
    let s = holder(&k, "s");
    let tap = s.nics[0].tap.clone();
    let me = instance_of(&ns, &s);
    action(&k, &s.id, r#"{"action":"stop"}"#);
    k.wait_status(&s.id, ServerStatus::Shutoff, T);
    wait_until("tap gone after stop", T, || ns.link(&tap).is_none());

    // Another kilnd's tap of the same name: its server's id shares the
    // first 8 hex digits.
    let other = "e".repeat(32);
    let other_mark = format!("kiln:{other}:{}-ffff-4fff-8fff-ffffffffffff:0", &s.id[..8]);
    hand_made_tap(&ns, &tap, Some(&other_mark));
    let other_index = index_of(&ns, &tap);
    action(&k, &s.id, r#"{"action":"start"}"#);
    let e = k.wait_status(&s.id, ServerStatus::Error, T);
    let fault = e.fault.map(|f| f.message).unwrap_or_default();
    assert!(
        fault.contains(&format!(
            "tap name {tap} is taken by a tap of another kilnd"
        )) && fault.contains(&other),
        "{fault}"
    );
    assert_eq!(index_of(&ns, &tap), other_index, "the other tap is kept");
    assert_eq!(ns.alias(&tap).as_deref(), Some(other_mark.as_str()));

    // An unmarked link (not even a tap: one end of a veth pair) of that
    // name: the same.
    ip(ns.name(), &["link", "del", &tap]);
    ip(
        ns.name(),
        &[
            "link", "add", &tap, "type", "veth", "peer", "name", "kpeer0",
        ],
    );
    action(&k, &s.id, r#"{"action":"start"}"#);
    wait_until("a second fault", T, || {
        let s = k.server(&s.id);
        s.status == ServerStatus::Error
            && s.task_state.is_none()
            && s.fault
                .as_ref()
                .is_some_and(|f| f.message.contains("did not make"))
    });
    let fault = k.server(&s.id).fault.unwrap().message;
    assert!(
        fault.contains(&tap) && fault.contains("kind veth"),
        "{fault}"
    );
    assert!(ns.link(&tap).unwrap().contains("veth"), "kept");

    // A leftover with this kilnd's own mark: deleted, and the server gets
    // a new tap of that name.
    ip(ns.name(), &["link", "del", &tap]);
    hand_made_tap(&ns, &tap, Some(&format!("kiln:{me}:{}:0", s.id)));
    let leftover = index_of(&ns, &tap);
    action(&k, &s.id, r#"{"action":"start"}"#);
    let s2 = k.wait_status(&s.id, ServerStatus::Active, T);
    assert!(s2.fault.is_none(), "{:?}", s2.fault);
    assert_ne!(index_of(&ns, &tap), leftover, "a new tap");
    assert!(on_bridge(&ns, &tap));
    assert_eq!(instance_of(&ns, &s2), me);
    // Stopped, and the name taken by another kilnd's tap meanwhile:
    // deleting the server leaves that tap alone.
    action(&k, &s.id, r#"{"action":"stop"}"#);
    k.wait_status(&s.id, ServerStatus::Shutoff, T);
    wait_until("tap gone after stop", T, || ns.link(&tap).is_none());
    hand_made_tap(&ns, &tap, Some(&other_mark));
    k.delete_server(&s.id);
    assert_eq!(ns.alias(&tap).as_deref(), Some(other_mark.as_str()));
    assert_nothing_left(&k);
}

/// `TUNSETIFF` with `IFF_TUN_EXCL`: kilnd's tap creation makes a new tap
/// or fails; it never takes a queue of a (multi-queue) tap that exists.
#[test]
fn tap_create_never_attaches_to_an_existing_tap() {
    let ns = NetNs::with_peer("kexcl");
    let path = format!("/var/run/netns/{}", ns.name());
    let made = std::thread::spawn(move || {
        // Only this thread enters the namespace.
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on an open netns fd; affects this thread only.
        let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        use kiln_manager::net::tap;
        let first = tap::create("kt0e0c10000", 2).expect("a new 2-queue tap");
        assert_eq!(first.len(), 2);
        for queues in [1, 2] {
            let e = tap::create("kt0e0c10000", queues).expect_err("the name is taken");
            assert_eq!(e.raw_os_error(), Some(libc::EBUSY), "{e}");
        }
        drop(first);
    });
    made.join().unwrap();
    // The fds are closed: the (non-persistent) tap is gone.
    assert!(ns.link("kt0e0c10000").is_none());
}
