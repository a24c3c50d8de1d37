//! The guest agent end to end through kiln-vmm's real virtio-console: the
//! `agent` probe guest (`images/probes/agent.s`) answers qemu-ga's
//! protocol on the `org.qemu.guest_agent.0` port, and kilnd (in a network
//! namespace the test makes, its VMMs under their default seccomp
//! filters) is its client:
//!
//! - `ready: {"agent": true}` becomes ready once the probe answers
//!   `guest-ping`; `GET /v1/servers/{id}/guest` and `kiln server guest`
//!   return the probe's OS, hostname and interfaces, eth0 with the MAC
//!   kilnd gave the server's NIC (read by the probe from virtio-net's
//!   configuration space) and that MAC's EUI-64 link-local address;
//! - stop ends it through `guest-shutdown`: the probe ignores the ACPI
//!   power button, and its console says it powered off for the agent;
//! - a probe whose agent answers garbage is a 502 at once, one that stays
//!   silent after the sync a 504 after kilnd's 5 s, while kilnd serves
//!   other requests; stop then falls back to the button and the kill.

mod common;

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use common::vm::{action, console, register, start_kilnd_in, wait_until, T};
use common::Kilnd;
use kiln_api::compute::{GuestInfo, ServerStatus};
use kiln_tests::netns::{ip, NetNs};

/// kilnd's bound on `GET .../guest` (`agent::INFO_TIMEOUT`).
const INFO_TIMEOUT: Duration = Duration::from_secs(5);

fn guest(k: &Kilnd, id: &str) -> (u16, String) {
    let r = k.req("GET", &format!("/v1/servers/{id}/guest"), None);
    (r.status, r.text())
}

/// The EUI-64 link-local address of `mac` (`aa:bb:cc:dd:ee:ff`).
fn eui64(mac: &str) -> IpAddr {
    let b: Vec<u16> = mac
        .split(':')
        .map(|x| u16::from_str_radix(x, 16).unwrap())
        .collect();
    IpAddr::V6(Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        ((b[0] ^ 2) << 8) | b[1],
        (b[2] << 8) | 0xff,
        0xfe00 | b[3],
        (b[4] << 8) | b[5],
    ))
}

fn wait_console(k: &Kilnd, id: &str, needle: &str) {
    wait_until(needle, T, || console(k, id).contains(needle));
}

#[test]
fn the_probe_agent_answers_kilnd_and_powers_off_for_it() {
    let t0 = Instant::now();
    let ns = NetNs::with_peer("kagent");
    let k = start_kilnd_in(Some(ns.name()), "");
    register(&k, "agent", "agent", "");
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(r#"{"name":"lan","bridge":"kag0"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    ip(ns.name(), &["link", "set", "veth0", "master", "kag0", "up"]);

    let created = Instant::now();
    let s = k.create_server(
        r#"{"name":"a","flavor":"k1.probe","image":"agent","agent":true,
            "ready":{"agent":true},"networks":[{"network":"lan"}]}"#,
    );
    wait_until("ready by the probe's guest-ping", T, || {
        k.server(&s.id).ready
    });
    eprintln!("create to ready by the agent: {:?}", created.elapsed());
    let s = k.wait_status(&s.id, ServerStatus::Active, T);
    let mac = s.nics[0].mac.clone();
    wait_console(&k, &s.id, &format!("agent: eth0 {mac}"));

    let asked = Instant::now();
    let r = k.req("GET", &format!("/v1/servers/{}/guest", s.id), None);
    assert_eq!(r.status, 200, "{}", r.text());
    eprintln!("GET guest: {:?}", asked.elapsed());
    let info: GuestInfo = r.json().unwrap();
    assert_eq!(info.agent_version.as_deref(), Some("1.0-kiln-probe"));
    assert_eq!(info.os.name.as_deref(), Some("Kiln probe"));
    assert_eq!(info.os.id.as_deref(), Some("kiln-probe"));
    assert_eq!(info.os.version.as_deref(), Some("1"));
    assert_eq!(info.hostname.as_deref(), Some("kiln-probe"));
    let names: Vec<&str> = info.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["lo", "eth0"], "{info:?}");
    let lo = &info.interfaces[0];
    assert_eq!(lo.addresses.len(), 1, "{lo:?}");
    assert_eq!(
        (lo.addresses[0].ip.to_string(), lo.addresses[0].prefix),
        ("127.0.0.1".to_owned(), 8)
    );
    let eth0 = &info.interfaces[1];
    assert_eq!(eth0.mac.as_deref(), Some(mac.as_str()));
    assert_eq!(eth0.addresses.len(), 1, "{eth0:?}");
    assert_eq!(eth0.addresses[0].ip, eui64(&mac), "{eth0:?}");
    assert_eq!(eth0.addresses[0].prefix, 64);
    // Each call was its own session, synced with a fresh id the probe
    // echoed.
    let out = console(&k, &s.id);
    let syncs: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("guest-sync-delimited"))
        .collect();
    assert!(syncs.len() >= 2, "{out}");
    assert!(
        syncs.windows(2).all(|w| w[0] != w[1]),
        "the same sync id twice: {syncs:?}"
    );
    let (ok, cli, err) = k.cli(&["server", "guest", "a"]);
    assert!(ok, "{err}");
    assert!(cli.contains("hostname: kiln-probe"), "{cli}");
    assert!(cli.contains(&mac), "{cli}");

    // Stop: the agent's guest-shutdown, not the button (which the probe
    // ignores: that path would end in the kill after stop_timeout_s).
    let stopping = Instant::now();
    action(&k, &s.id, r#"{"action":"stop"}"#);
    let stopped = k.wait_status(&s.id, ServerStatus::Shutoff, T);
    let took = stopping.elapsed();
    eprintln!("stop through guest-shutdown: {took:?}");
    assert!(stopped.fault.is_none(), "{stopped:?}");
    let out = console(&k, &s.id);
    assert!(
        out.lines().any(|l| l.starts_with("agent: got ")
            && l.contains(r#""execute":"guest-shutdown""#)
            && l.contains(r#""mode":"powerdown""#)),
        "{out}"
    );
    assert!(out.contains("agent: guest-shutdown, powering off"), "{out}");
    assert!(k.log().contains("guest-shutdown sent"), "{}", k.log());
    assert!(!k.log().contains("guest agent shutdown not sent"));
    assert!(took < Duration::from_secs(2), "{took:?}");
    k.delete_server(&s.id);
    common::vm::assert_nothing_left(&k);
    eprintln!("test took {:?}", t0.elapsed());
}

#[test]
fn a_garbage_or_silent_probe_agent_costs_only_its_callers() {
    let t0 = Instant::now();
    let k = common::vm::start_kilnd("");
    register(&k, "garbage", "agent", "garbage");
    register(&k, "silent", "agent", "silent");
    let mk = |name: &str, image: &str| {
        let s = k.create_server(&format!(
            r#"{{"name":"{name}","flavor":"k1.probe","image":"{image}","agent":true}}"#
        ));
        k.wait_status(&s.id, ServerStatus::Active, T)
    };
    let g = mk("g", "garbage");
    let q = mk("q", "silent");
    for s in [&g, &q] {
        wait_console(&k, &s.id, "virtio-console: opened port 1");
    }

    // Garbage after a good sync: a 502 at once.
    let asked = Instant::now();
    let (status, body) = guest(&k, &g.id);
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("not the protocol"), "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert!(console(&k, &g.id).contains(r#"agent: got {"execute":"guest-info"}"#));

    // Silence after the sync: a 504 once the time-out is over; kilnd
    // answers others meanwhile, the garbage guest's 502 too.
    let (sock, id) = (k.socket.clone(), q.id.clone());
    let slow = std::thread::spawn(move || {
        let start = Instant::now();
        let path = format!("/v1/servers/{id}/guest");
        let r = kiln_api::client::request(&sock, "GET", &path, None, Duration::from_secs(60));
        let r = r.unwrap();
        (r.status, r.text(), start.elapsed())
    });
    wait_console(&k, &q.id, r#"agent: got {"execute":"guest-info"}"#);
    let meanwhile = Instant::now();
    assert_eq!(k.req("GET", "/v1/servers", None).status, 200);
    assert_eq!(guest(&k, &g.id).0, 502);
    assert!(
        meanwhile.elapsed() < Duration::from_secs(2),
        "{:?}",
        meanwhile.elapsed()
    );
    let (status, body, took) = slow.join().unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("did not answer in time"), "{body}");
    eprintln!("silent agent: 504 after {took:?}");
    assert!(
        took >= INFO_TIMEOUT - Duration::from_millis(500) && took < INFO_TIMEOUT * 2,
        "{took:?}"
    );

    // Stop: its ping goes unanswered, so no guest-shutdown; the button
    // (ignored by the probe), then the kill.
    action(&k, &q.id, r#"{"action":"stop"}"#);
    k.wait_status(&q.id, ServerStatus::Shutoff, T);
    let out = console(&k, &q.id);
    assert!(!out.contains("guest-shutdown"), "{out}");
    assert!(
        k.log().contains("guest agent shutdown not sent"),
        "{}",
        k.log()
    );
    for s in [&g, &q] {
        k.delete_server(&s.id);
    }
    common::vm::assert_nothing_left(&k);
    eprintln!("test took {:?}", t0.elapsed());
}
