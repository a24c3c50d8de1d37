//! End-to-end tests of what survives kilnd: restarts, kill -9 in the middle
//! of work, VMMs that die while kilnd is away, console log retention.

mod common;

use std::path::Path;
use std::time::Duration;

use common::alive;
use common::vm::*;
use kiln_api::compute::{HostInfo, Server, ServerList, ServerStatus};

#[test]
fn kilnd_restart_readopts_running_vmms() {
    let mut k = start_kilnd("");
    register(&k, "hold", "hello", "hold");
    let ids: Vec<String> = (0..3)
        .map(|i| create(&k, &format!("r{i}"), "hold").id)
        .collect();
    let before: Vec<Server> = ids
        .iter()
        .map(|id| k.wait_status(id, ServerStatus::Active, T))
        .collect();
    action(&k, &ids[2], r#"{"action":"pause"}"#);
    k.wait_status(&ids[2], ServerStatus::Paused, T);

    // kill -9 kilnd: the VMMs keep running.
    k.kill9();
    for s in &before {
        assert!(alive(s.pid.unwrap()));
    }
    // One VMM dies while kilnd is down; a leftover directory appears.
    let dead = before[1].pid.unwrap();
    // SAFETY: kill(2) of a VMM the test's kilnd started.
    unsafe { libc::kill(dead as i32, libc::SIGKILL) };
    wait_until("VMM gone", T, || !alive(dead));
    let stray = k.state_path("servers/00000000-0000-0000-0000-000000000001");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("serial.log"), "stray\n").unwrap();

    k.spawn();
    // Re-adopted: same pid, still answering, status as before.
    let s0 = k.server(&ids[0]);
    assert_eq!((s0.status, s0.pid), (ServerStatus::Active, before[0].pid));
    assert_eq!(vm_info(&k, &ids[0]).pid, before[0].pid.unwrap());
    let s2 = k.server(&ids[2]);
    assert_eq!((s2.status, s2.pid), (ServerStatus::Paused, before[2].pid));
    // The one that died is ERROR and says why.
    let s1 = k.server(&ids[1]);
    assert_eq!(s1.status, ServerStatus::Error);
    assert!(s1
        .fault
        .unwrap()
        .message
        .contains("while kilnd was not running"));
    assert!(!stray.exists(), "leftover directory not removed");
    assert!(
        Path::new(&k.state_path("console-archive/00000000-0000-0000-0000-000000000001.log"))
            .exists()
    );

    // The re-adopted VMMs are still supervised: actions work, and an
    // outside kill is noticed.
    action(&k, &ids[2], r#"{"action":"resume"}"#);
    k.wait_status(&ids[2], ServerStatus::Active, T);
    action(&k, &ids[2], r#"{"action":"stop"}"#);
    k.wait_status(&ids[2], ServerStatus::Shutoff, T);
    // SAFETY: as above.
    unsafe { libc::kill(before[0].pid.unwrap() as i32, libc::SIGKILL) };
    let s = k.wait_status(&ids[0], ServerStatus::Error, T);
    assert!(s.fault.unwrap().message.contains("exit status unknown"));

    for id in &ids {
        k.delete_server(id);
    }
    assert_nothing_left(&k);
}

/// A re-adopted VMM is not kilnd's child, so its exit status goes to init;
/// the VMM's exit record still tells kilnd how the guest ended: a guest
/// power-off after a kilnd restart is SHUTOFF, not ERROR.
#[test]
fn readopted_vmm_guest_power_off_is_shutoff() {
    let mut k = start_kilnd("");
    register(&k, "button", "powerbutton", "");
    let s = create(&k, "b", "button");
    let before = k.wait_status(&s.id, ServerStatus::Active, T);
    k.kill9();
    k.spawn();
    assert_eq!(k.server(&s.id).pid, before.pid, "re-adopted");
    // Press the button through the VMM's own control socket, as a guest
    // event kilnd did not ask for.
    let sock = k.state_path(&format!("servers/{}/api.sock", s.id));
    let r = kiln_api::client::control(
        &sock,
        &kiln_api::control::Request::PowerButton,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 204);
    let after = k.wait_status(&s.id, ServerStatus::Shutoff, T);
    assert!(after.fault.is_none(), "{:?}", after.fault);
    k.delete_server(&s.id);
    assert_nothing_left(&k);
}

#[test]
fn kill9_during_creates_and_deletes_leaves_definite_states() {
    let k = std::sync::Arc::new(start_kilnd("[placement]\ntotal_vcpus = 8\n"));
    register(&k, "hold", "hello", "hold");
    let first: Vec<String> = (0..4)
        .map(|i| create(&k, &format!("old{i}"), "hold").id)
        .collect();
    for id in &first {
        k.wait_status(id, ServerStatus::Active, T);
    }
    // Creates and deletes in flight when kilnd dies.
    let mut threads = Vec::new();
    for i in 0..8 {
        let k = k.clone();
        threads.push(std::thread::spawn(move || {
            let r = k.try_req(
                "POST",
                "/v1/servers",
                Some(&format!(
                    r#"{{"name":"new{i}","flavor":"k1.probe","image":"hold"}}"#
                )),
            );
            r.map(|r| r.status).unwrap_or(0)
        }));
    }
    for id in &first[..2] {
        let k = k.clone();
        let id = id.clone();
        threads.push(std::thread::spawn(move || {
            k.try_req("DELETE", &format!("/v1/servers/{id}"), None)
                .map(|r| r.status)
                .unwrap_or(0)
        }));
    }
    std::thread::sleep(Duration::from_millis(5));
    // SAFETY: SIGKILL to the kilnd this test started.
    unsafe { libc::kill(k.pid() as i32, libc::SIGKILL) };
    let answered = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|s| *s != 0)
        .count();
    eprintln!("{answered} of 10 requests answered before kill -9");
    let mut k = std::sync::Arc::into_inner(k).unwrap();
    k.kill9();
    k.spawn();
    // Every server settles: ACTIVE (re-adopted or booted again), nothing
    // stuck in BUILD or half deleted.
    wait_until("every server settled", T, || {
        let l: ServerList = k.req("GET", "/v1/servers", None).json().unwrap();
        l.servers
            .iter()
            .all(|s| s.status == ServerStatus::Active && s.task_state.is_none())
    });
    let l: ServerList = k.req("GET", "/v1/servers", None).json().unwrap();
    // Each VMM process belongs to exactly one listed server and vice versa.
    let mut procs: Vec<u32> = common::procs_under(&k.state_path("servers"))
        .into_iter()
        .map(|p| p.0)
        .collect();
    let mut pids: Vec<u32> = l.servers.iter().map(|s| s.pid.unwrap()).collect();
    procs.sort();
    pids.sort();
    assert_eq!(procs, pids);
    let h: HostInfo = k.req("GET", "/v1/host", None).json().unwrap();
    assert_eq!(h.servers as usize, l.servers.len());
    for s in &l.servers {
        k.delete_server(&s.id);
    }
    assert_nothing_left(&k);
}

/// A deleted server's console log stays readable for the retention time,
/// then goes (with its DELETED record).
#[test]
fn console_log_is_kept_for_the_retention_time() {
    let mut k = start_kilnd("console_retention_s = 2\n");
    register(&k, "hold", "hello", "hold");
    let s = create(&k, "c", "hold");
    k.wait_status(&s.id, ServerStatus::Active, T);
    wait_until("console", T, || {
        console(&k, &s.id).contains("hello: holding")
    });
    k.delete_server(&s.id);
    assert!(console(&k, &s.id).contains("hello: holding"));
    let deleted: ServerList = k
        .req("GET", "/v1/servers?status=DELETED", None)
        .json()
        .unwrap();
    assert_eq!(deleted.servers.len(), 1);
    std::thread::sleep(Duration::from_millis(3100));
    // Expiry runs at start and every minute: restart to run it now.
    k.stop();
    k.spawn();
    let r = k.req("GET", &format!("/v1/servers/{}/console", s.id), None);
    assert_eq!(r.status, 404, "{}", r.text());
    let deleted: ServerList = k
        .req("GET", "/v1/servers?status=DELETED", None)
        .json()
        .unwrap();
    assert!(deleted.servers.is_empty());
}
