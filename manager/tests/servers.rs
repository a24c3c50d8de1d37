//! End-to-end tests of server supervision: real kilnd, real kiln-vmm, real
//! probe guests on KVM (`hello.elf` with `hold` stays running; without it
//! powers off; `crash.elf` triple-faults; `reset.elf` reboots;
//! `powerbutton.elf` handles the ACPI power button).

mod common;

use std::time::{Duration, Instant};

use common::vm::*;
use common::{alive, percentile, Kilnd};
use kiln_api::compute::{HostInfo, Server, ServerList, ServerStatus};

#[test]
fn lifecycle_of_one_server() {
    let k = start_kilnd("");
    register(&k, "hold", "hello", "hold");
    let t0 = Instant::now();
    let s = create(&k, "one", "hold");
    assert_eq!(s.status, ServerStatus::Build);
    let s = k.wait_status(&s.id, ServerStatus::Active, T);
    eprintln!("create -> ACTIVE in {:?}", t0.elapsed());
    let pid = s.pid.unwrap();
    assert!(alive(pid));
    // Its own session: it survives kilnd.
    // SAFETY: getsid of a pid.
    assert_eq!(unsafe { libc::getsid(pid as i32) }, pid as i32);
    let info = vm_info(&k, &s.id);
    assert_eq!(
        (
            info.pid,
            info.config.cpus.count,
            info.config.memory.size_mib
        ),
        (pid, 1, 64)
    );
    wait_until("console output", T, || {
        console(&k, &s.id).contains("hello: holding")
    });

    action(&k, &s.id, r#"{"action":"pause"}"#);
    k.wait_status(&s.id, ServerStatus::Paused, T);
    assert_eq!(vm_info(&k, &s.id).state, kiln_api::control::VmState::Paused);
    // Only one action at a time, and only those the status allows.
    let r = k.req(
        "POST",
        &format!("/v1/servers/{}/action", s.id),
        Some(r#"{"action":"pause"}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    action(&k, &s.id, r#"{"action":"resume"}"#);
    k.wait_status(&s.id, ServerStatus::Active, T);

    action(&k, &s.id, r#"{"action":"stop"}"#);
    let off = k.wait_status(&s.id, ServerStatus::Shutoff, T);
    assert_eq!(off.pid, None);
    wait_until("VMM gone", T, || !alive(pid));
    let r = k.req(
        "POST",
        &format!("/v1/servers/{}/action", s.id),
        Some(r#"{"action":"stop"}"#),
    );
    assert_eq!(r.status, 409);
    assert!(r.text().contains("SHUTOFF"), "{}", r.text());
    // SHUTOFF still holds the allocation.
    let h: HostInfo = k.req("GET", "/v1/host", None).json().unwrap();
    assert_eq!(h.ram_mb.used, 64);

    action(&k, &s.id, r#"{"action":"start"}"#);
    let s2 = k.wait_status(&s.id, ServerStatus::Active, T);
    let pid2 = s2.pid.unwrap();
    assert_ne!(pid2, pid);

    action(&k, &s.id, r#"{"action":"reboot","type":"hard"}"#);
    wait_until("hard reboot", T, || {
        let s = k.server(&s.id);
        s.status == ServerStatus::Active && s.pid.is_some_and(|p| p != pid2)
    });
    let pid3 = k.server(&s.id).pid.unwrap();
    assert!(!alive(pid2));
    action(&k, &s.id, r#"{"action":"reboot"}"#);
    wait_until("soft reboot", T, || {
        let s = k.server(&s.id);
        s.status == ServerStatus::Active && s.pid.is_some_and(|p| p != pid3)
    });
    let last = k.server(&s.id).pid.unwrap();

    let r = k.req("GET", &format!("/v1/servers/{}/console?tail=1", s.id), None);
    let out: kiln_api::compute::ConsoleOutput = r.json().unwrap();
    assert_eq!(out.output.lines().count(), 1, "{:?}", out.output);

    k.delete_server(&s.id);
    assert!(!alive(last));
    assert_eq!(
        k.req("GET", &format!("/v1/servers/{}", s.id), None).status,
        404
    );
    // The console log is kept after delete.
    assert!(console(&k, &s.id).contains("hello from a kiln probe"));
    assert_nothing_left(&k);
}

#[test]
fn guest_events_map_to_statuses() {
    let k = start_kilnd("");
    register(&k, "off", "hello", "");
    register(&k, "crash", "crash", "");
    register(&k, "reset", "reset", "");
    register(&k, "hold", "hello", "hold");

    // Guest power-off -> SHUTOFF.
    let off = create(&k, "off", "off");
    let s = k.wait_status(&off.id, ServerStatus::Shutoff, T);
    assert!(s.fault.is_none());
    assert!(console(&k, &off.id).contains("hello: powering off"));

    // Triple fault -> ERROR with a fault that says so.
    let crash = create(&k, "crash", "crash");
    let s = k.wait_status(&crash.id, ServerStatus::Error, T);
    let fault = s.fault.unwrap().message;
    assert!(
        fault.contains("code 11") && fault.contains("triple fault"),
        "{fault}"
    );

    // Guest reboot -> a new VMM, again and again; the server stays up.
    let reset = create(&k, "reset", "reset");
    let vmm_log = k.state_path(&format!("servers/{}/vmm.log", reset.id));
    wait_until("three guest reboots", T, || {
        std::fs::read_to_string(&vmm_log)
            .unwrap_or_default()
            .matches("guest asked for a reboot")
            .count()
            >= 3
    });
    let s = k.server(&reset.id);
    assert!(
        matches!(
            s.status,
            ServerStatus::Active | ServerStatus::Reboot | ServerStatus::Build
        ),
        "{s:?}"
    );

    // A VMM killed from outside -> ERROR with a fault message.
    let hold = create(&k, "hold", "hold");
    let pid = k
        .wait_status(&hold.id, ServerStatus::Active, T)
        .pid
        .unwrap();
    // SAFETY: kill(2) of the VMM this test's kilnd started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let s = k.wait_status(&hold.id, ServerStatus::Error, T);
    let fault = s.fault.unwrap().message;
    assert!(fault.contains("killed by signal 9"), "{fault}");
    // ERROR can be started again.
    action(&k, &hold.id, r#"{"action":"start"}"#);
    k.wait_status(&hold.id, ServerStatus::Active, T);

    for id in [&off.id, &crash.id, &reset.id, &hold.id] {
        k.delete_server(id);
    }
    assert_nothing_left(&k);
}

#[test]
fn twenty_servers_concurrently() {
    // 20 x 1 vCPU needs more than the host's 2 x 4.0.
    let k = std::sync::Arc::new(start_kilnd("[placement]\ntotal_vcpus = 8\n"));
    register(&k, "hold", "hello", "hold");
    let t0 = Instant::now();
    let ids: Vec<String> = (0..20)
        .map(|i| {
            let k = k.clone();
            std::thread::spawn(move || create(&k, &format!("s{i:02}"), "hold").id)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    for id in &ids {
        k.wait_status(id, ServerStatus::Active, T);
    }
    eprintln!("20 concurrent creates -> all ACTIVE in {:?}", t0.elapsed());
    let l: ServerList = k
        .req("GET", "/v1/servers?status=ACTIVE", None)
        .json()
        .unwrap();
    assert_eq!(l.servers.len(), 20);
    let pids: Vec<u32> = l.servers.iter().map(|s| s.pid.unwrap()).collect();
    assert!(pids.iter().all(|p| alive(*p)));

    let all = |body: &str, to: ServerStatus| {
        for id in &ids {
            action(&k, id, body);
        }
        for id in &ids {
            k.wait_status(id, to, T);
        }
    };
    all(r#"{"action":"stop"}"#, ServerStatus::Shutoff);
    assert!(pids.iter().all(|p| !alive(*p)));
    all(r#"{"action":"start"}"#, ServerStatus::Active);
    all(r#"{"action":"reboot","type":"hard"}"#, ServerStatus::Active);
    let threads: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let k = k.clone();
            std::thread::spawn(move || k.req("DELETE", &format!("/v1/servers/{id}"), None).status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 204);
    }
    assert_nothing_left(&k);
    // Console logs of all 20 are archived.
    assert_eq!(
        std::fs::read_dir(k.state_path("console-archive"))
            .unwrap()
            .count(),
        20
    );
}

/// 100 probe-guest servers created from 10 client threads: create->ACTIVE
/// latency p50/p99 and creates per second to ACTIVE (printed). A
/// measurement that loads the machine for half a minute: run it with
/// `cargo test -p kiln-manager --release --test servers -- --ignored`.
#[test]
#[ignore = "measurement; run with --ignored"]
fn hundred_creates_latency() {
    let k = std::sync::Arc::new(start_kilnd("[placement]\ntotal_vcpus = 25\n"));
    register(&k, "hold", "hello", "hold");
    let t0 = Instant::now();
    let threads: Vec<_> = (0..10)
        .map(|t| {
            let k = k.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in 0..10 {
                    let start = Instant::now();
                    let s = create(&k, &format!("b{t}-{i}"), "hold");
                    wait_until("ACTIVE", T, || {
                        k.server(&s.id).status == ServerStatus::Active
                    });
                    out.push((s.id, start.elapsed()));
                }
                out
            })
        })
        .collect();
    let results: Vec<(String, Duration)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let total = t0.elapsed();
    let mut lat: Vec<Duration> = results.iter().map(|r| r.1).collect();
    lat.sort();
    eprintln!(
        "100 servers ACTIVE in {total:?} ({:.1} creates/s); create->ACTIVE p50 {:?}, p99 {:?}",
        100.0 / total.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    assert_eq!(common::procs_under(&k.state_path("servers")).len(), 100);
    let threads: Vec<_> = results
        .chunks(10)
        .map(|c| {
            let k = k.clone();
            let ids: Vec<String> = c.iter().map(|r| r.0.clone()).collect();
            std::thread::spawn(move || {
                for id in ids {
                    k.delete_server(&id);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_nothing_left(&k);
}

/// Stop and soft reboot go through the ACPI power button: a guest that
/// handles it powers off by itself, well before the stop timeout.
#[test]
fn stop_and_soft_reboot_are_graceful() {
    let k = Kilnd::start(&format!(
        "[vmm]\nbinary = \"{}\"\nstop_timeout_s = 20\n",
        common::vmm_bin().display()
    ));
    register(&k, "pb", "powerbutton", "");
    let r = k.req(
        "POST",
        "/v1/servers",
        Some(r#"{"name":"pb","flavor":"k1.probe","image":"pb","ready":{"console":"powerbutton: waiting"}}"#),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let s: Server = r.json().unwrap();
    wait_until("ready", T, || k.server(&s.id).ready);
    let t0 = Instant::now();
    action(&k, &s.id, r#"{"action":"stop"}"#);
    k.wait_status(&s.id, ServerStatus::Shutoff, T);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        t0.elapsed()
    );
    assert!(console(&k, &s.id).contains("powerbutton: pressed"));
    let vmm_log = k.state_path(&format!("servers/{}/vmm.log", s.id));
    let log = std::fs::read_to_string(&vmm_log).unwrap();
    assert!(
        log.contains("guest powered off") && !log.contains("killed"),
        "{log}"
    );

    action(&k, &s.id, r#"{"action":"start"}"#);
    wait_until("ready again", T, || k.server(&s.id).ready);
    let pid = k.server(&s.id).pid.unwrap();
    let t0 = Instant::now();
    action(&k, &s.id, r#"{"action":"reboot","type":"soft"}"#);
    wait_until("soft reboot", T, || {
        let s = k.server(&s.id);
        s.status == ServerStatus::Active && s.pid.is_some_and(|p| p != pid) && s.ready
    });
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "soft reboot took {:?}",
        t0.elapsed()
    );
    let log = std::fs::read_to_string(&vmm_log).unwrap();
    assert_eq!(log.matches("guest powered off").count(), 2, "{log}");
    k.delete_server(&s.id);
    assert_nothing_left(&k);
}
