//! The guest agent channel: kilnd's client against the real `qemu-ga`
//! (Debian's qemu-guest-agent, from the cache, run by the test on a socket
//! of its own and answering for this host), and through kilnd end to end
//! with real kiln-vmm processes:
//!
//! - the client resyncs past a half-sent request of an earlier client, and
//!   what qemu-ga reports (OS, kernel, hostname, interfaces and MACs) is
//!   what this host itself says;
//! - `agent` on images (on by default for windows) and servers, in vm.json
//!   as the server's `agent.sock`;
//! - `GET /v1/servers/{id}/guest`: 409 without an agent or when not
//!   running, 504 when nothing answers, 504 after the time-out for a
//!   stalled agent while kilnd serves other requests, 200 with qemu-ga's
//!   answer on the server's socket, and `kiln server guest`;
//! - `ready: {"agent": true}` waits for `guest-ping`; stop sends
//!   `guest-shutdown` (`powerdown`) to an agent that answers.
//!
//! Every qemu-ga here runs with all but the read-only commands kilnd uses
//! blocked: a `guest-shutdown` would power off this host.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::vm::{register, start_kilnd, wait_until, T};
use common::Kilnd;
use kiln_api::compute::{GuestInfo, ServerStatus};
use kiln_manager::agent::{AgentError, Agents};

/// The commands a test's qemu-ga may run: kilnd's, all read-only.
const ALLOWED: &[&str] = &[
    "guest-sync-delimited",
    "guest-sync",
    "guest-ping",
    "guest-info",
    "guest-get-osinfo",
    "guest-get-host-name",
    "guest-network-get-interfaces",
];

fn qemu_ga_bin() -> PathBuf {
    let p = kiln_tests::cache_dir().join("debs/qemu-guest-agent/usr/sbin/qemu-ga");
    assert!(p.exists(), "{} missing: run scripts/setup.sh", p.display());
    p
}

/// A qemu-ga listening on `sock`, ended on drop.
struct QemuGa {
    child: Child,
    _state: tempfile::TempDir,
}

impl QemuGa {
    fn start(sock: &Path) -> QemuGa {
        let bin = qemu_ga_bin();
        let help = Command::new(&bin).args(["-b", "help"]).output().unwrap();
        let all = String::from_utf8_lossy(&help.stdout).into_owned()
            + &String::from_utf8_lossy(&help.stderr);
        let blocked: Vec<&str> = all
            .split_whitespace()
            .filter(|c| c.starts_with("guest-") && !ALLOWED.contains(c))
            .collect();
        assert!(blocked.contains(&"guest-shutdown"), "{all}");
        let state = tempfile::tempdir().unwrap();
        let _ = std::fs::remove_file(sock);
        let child = Command::new(&bin)
            .args(["-m", "unix-listen", "-p"])
            .arg(sock)
            .arg("-t")
            .arg(state.path())
            .arg("-f")
            .arg(state.path().join("qemu-ga.pid"))
            .arg("-b")
            .arg(blocked.join(","))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Its file, not a connection: qemu-ga serves one client at a time
        // and its backlog is short.
        wait_until("qemu-ga's socket", T, || sock.exists());
        QemuGa {
            child,
            _state: state,
        }
    }
}

impl Drop for QemuGa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_file(p: &str) -> String {
    std::fs::read_to_string(p).unwrap().trim().to_owned()
}

/// The host's interfaces and MACs now, from sysfs.
fn host_macs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(mac) = std::fs::read_to_string(e.path().join("address")) {
            out.push((name, mac.trim().to_owned()));
        }
    }
    out
}

/// `info` is what this host says about itself. Other tests may add and
/// remove links meanwhile: every link there before and after the call is
/// reported, and every reported link still there has its MAC.
fn assert_is_this_host(info: &GuestInfo, before: &[(String, String)]) {
    assert_eq!(
        info.hostname.as_deref(),
        Some(host_file("/proc/sys/kernel/hostname").as_str())
    );
    assert_eq!(
        info.os.kernel_release.as_deref(),
        Some(host_file("/proc/sys/kernel/osrelease").as_str())
    );
    let os_release = host_file("/etc/os-release");
    let id = os_release
        .lines()
        .find_map(|l| l.strip_prefix("ID="))
        .unwrap()
        .trim_matches('"');
    assert_eq!(info.os.id.as_deref(), Some(id));
    assert!(info
        .agent_version
        .as_deref()
        .is_some_and(|v| v.starts_with("7.")));
    let after = host_macs();
    for (name, mac) in before.iter().filter(|b| after.contains(b)) {
        let i = info
            .interfaces
            .iter()
            .find(|i| &i.name == name)
            .unwrap_or_else(|| panic!("{name} not reported: {info:?}"));
        assert_eq!(i.mac.as_deref(), Some(mac.as_str()), "{name}");
    }
    for i in &info.interfaces {
        if let Some((_, mac)) = after.iter().find(|(n, _)| n == &i.name) {
            assert_eq!(i.mac.as_deref(), Some(mac.as_str()), "{}", i.name);
        }
    }
    let lo = info.interfaces.iter().find(|i| i.name == "lo").unwrap();
    assert!(lo
        .addresses
        .iter()
        .any(|a| a.ip.to_string() == "127.0.0.1" && a.prefix == 8));
}

#[test]
fn real_qemu_ga_answers_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qga.sock");
    let _ga = QemuGa::start(&sock);
    // An earlier client that left half a request behind.
    let mut early = UnixStream::connect(&sock).unwrap();
    early.write_all(b"{\"execute\": \"guest-pi").unwrap();
    drop(early);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agents = Agents::default();
    let t = Duration::from_secs(5);
    rt.block_on(async {
        agents.ping("s", &sock, t).await.unwrap();
        let before = host_macs();
        let start = Instant::now();
        let info = agents.info("s", &sock, t).await.unwrap();
        eprintln!("guest info in {:?}: {info:?}", start.elapsed());
        assert_is_this_host(&info, &before);
        // Blocked here, so refused: the refusal comes back as the guest's.
        let e = agents
            .shutdown("s", &sock, t, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, AgentError::Guest { command, .. } if command == "guest-shutdown"),
            "{e}"
        );
        // Sessions one after another each resync.
        for _ in 0..20 {
            agents.ping("s", &sock, t).await.unwrap();
        }
    });
}

/// A fake agent on `sock` that syncs and answers `guest-ping`, records
/// every request, and stalls on anything else when `stall`.
fn fake_agent(sock: &Path, stall: bool) -> Arc<Mutex<Vec<String>>> {
    let _ = std::fs::remove_file(sock);
    let listener = UnixListener::bind(sock).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let seen = seen2.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                for line in BufReader::new(conn).split(b'\n') {
                    let Ok(line) = line else { return };
                    let text: Vec<u8> = line.into_iter().filter(|&b| b != 0xFF).collect();
                    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&text) else {
                        continue;
                    };
                    seen.lock().unwrap().push(req.to_string());
                    let out = match req["execute"].as_str() {
                        Some("guest-sync-delimited") => {
                            format!("\u{0}{{\"return\": {}}}\n", req["arguments"]["id"])
                        }
                        Some("guest-ping") if !stall => "{\"return\": {}}\n".into(),
                        _ => continue,
                    };
                    let mut bytes = out.into_bytes();
                    if bytes[0] == 0 {
                        bytes[0] = 0xFF;
                    }
                    if w.write_all(&bytes).is_err() {
                        return;
                    }
                }
            });
        }
    });
    seen
}

fn guest(k: &Kilnd, id: &str) -> (u16, String) {
    let r = k.req("GET", &format!("/v1/servers/{id}/guest"), None);
    (r.status, r.text())
}

#[test]
fn guest_route_and_stop_through_kilnd() {
    let k = start_kilnd("");
    register(&k, "hold", "hello", "hold");
    let mk = |name: &str, extra: &str| {
        k.create_server(&format!(
            r#"{{"name":"{name}","flavor":"k1.probe","image":"hold"{extra}}}"#
        ))
    };
    // Bad input first: nothing is made.
    let r = k.req(
        "POST",
        "/v1/servers",
        Some(r#"{"name":"bad","flavor":"k1.probe","image":"hold","ready":{"agent":true}}"#),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("needs a guest agent channel"),
        "{}",
        r.text()
    );
    let r = k.req(
        "POST",
        "/v1/servers",
        Some(r#"{"name":"bad","flavor":"k1.probe","image":"hold","agent":true,"ready":{"agent":true,"debug_code":1}}"#),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        k.json("GET", "/v1/servers", None)["servers"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let plain = mk("plain", "");
    let ag = mk("ag", r#","agent":true"#);
    let rd = mk("rd", r#","agent":true,"ready":{"agent":true}"#);
    for s in [&plain, &ag, &rd] {
        k.wait_status(&s.id, ServerStatus::Active, T);
    }
    assert!(!plain.agent && ag.agent && rd.agent);
    let vm_json: kiln_api::vm::VmConfig = serde_json::from_str(
        &std::fs::read_to_string(k.state_path(&format!("servers/{}/vm.json", ag.id))).unwrap(),
    )
    .unwrap();
    let sock = k.state_path(&format!("servers/{}/agent.sock", ag.id));
    assert_eq!(vm_json.agent.unwrap().socket, sock.display().to_string());

    let (status, body) = guest(&k, &plain.id);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("no guest agent channel"), "{body}");
    // Nothing answers on its channel (the hello probe has no driver for
    // the virtio-console; `agent_probe.rs` runs a guest that does).
    let start = Instant::now();
    let (status, body) = guest(&k, &ag.id);
    assert_eq!(status, 504, "{body}");
    assert!(
        start.elapsed() < Duration::from_secs(7),
        "{:?}",
        start.elapsed()
    );

    // Not ready until the agent answers guest-ping; then ready.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!k.server(&rd.id).ready);
    let rd_sock = k.state_path(&format!("servers/{}/agent.sock", rd.id));
    let _ = fake_agent(&rd_sock, false);
    wait_until("ready by guest-ping", T, || k.server(&rd.id).ready);

    // The real qemu-ga on the server's socket: 200, and the CLI.
    {
        let _ga = QemuGa::start(&sock);
        let before = host_macs();
        let r = k.req("GET", &format!("/v1/servers/{}/guest", ag.id), None);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_is_this_host(&r.json::<GuestInfo>().unwrap(), &before);
        let (ok, out, err) = k.cli(&["server", "guest", "ag"]);
        assert!(ok, "{err}");
        let host = host_file("/proc/sys/kernel/hostname");
        assert!(out.contains(&format!("hostname: {host}")), "{out}");
        assert!(out.contains("127.0.0.1/8"), "{out}");
    }

    // A stalled agent: 504 after the time-out, and kilnd serves other
    // requests meanwhile.
    let _stalled = fake_agent(&sock, true);
    let (k2, id) = (k.socket.clone(), ag.id.clone());
    let slow = std::thread::spawn(move || {
        let start = Instant::now();
        let path = format!("/v1/servers/{id}/guest");
        let r = kiln_api::client::request(&k2, "GET", &path, None, Duration::from_secs(60));
        (r.unwrap().status, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    assert_eq!(k.req("GET", "/v1/servers", None).status, 200);
    assert_eq!(guest(&k, &plain.id).0, 409);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let (status, took) = slow.join().unwrap();
    assert_eq!(status, 504);
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(7),
        "{took:?}"
    );

    // Stop asks an agent that answers for a powerdown first.
    let seen = fake_agent(&sock, false);
    k.req(
        "POST",
        &format!("/v1/servers/{}/action", ag.id),
        Some(r#"{"action":"stop"}"#),
    );
    k.wait_status(&ag.id, ServerStatus::Shutoff, T);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|r| r.contains("guest-shutdown") && r.contains("powerdown")),
        "{seen:?}"
    );
    let (status, body) = guest(&k, &ag.id);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("not running"), "{body}");
    for s in [&plain, &ag, &rd] {
        k.delete_server(&s.id);
    }
}
