//! End-to-end tests of readiness conditions, time to live, root disks, the
//! interactive console and the `kiln` CLI, with real kilnd and kiln-vmm.

mod common;

use std::time::{Duration, Instant};

use common::vm::*;
use common::{qemu_img_create, qemu_img_info};
use kiln_api::compute::{HostInfo, Server, ServerStatus};

#[test]
fn readiness_and_time_to_live() {
    let k = start_kilnd("");
    register(&k, "hold", "hello", "hold");
    let mk = |name: &str, extra: &str| -> Server {
        k.create_server(&format!(
            r#"{{"name":"{name}","flavor":"k1.probe","image":"hold"{extra}}}"#
        ))
    };
    let by_console = mk("c", r#","ready":{"console":"hello: hol+ding"}"#);
    let by_code = mk("d", r#","ready":{"debug_code":3}"#);
    let never = mk("n", r#","ready":{"console":"no such line"}"#);
    let plain = mk("p", "");
    for s in [&by_console, &by_code, &plain] {
        wait_until("ready", T, || k.server(&s.id).ready);
        let s = k.server(&s.id);
        eprintln!("{}: ready after {:?} ms", s.name, s.ready_after_ms);
        assert!(s.ready_after_ms.unwrap() < 30_000);
    }
    let n = k.wait_status(&never.id, ServerStatus::Active, T);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!k.server(&n.id).ready && n.ready_after_ms.is_none());
    // Bad conditions are refused.
    for bad in [
        r#","ready":{}"#,
        r#","ready":{"console":"(","debug_code":1}"#,
        r#","ready":{"console":"("}"#,
        r#","ttl_s":0"#,
    ] {
        let r = k.req(
            "POST",
            "/v1/servers",
            Some(&format!(
                r#"{{"name":"bad","flavor":"k1.probe","image":"hold"{bad}}}"#
            )),
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    // A server with a time to live is deleted by itself.
    let ttl = mk("ttl", r#","ttl_s":1"#);
    assert!(ttl.expires_at.is_some());
    wait_until("ttl delete", T, || {
        k.req("GET", &format!("/v1/servers/{}", ttl.id), None)
            .status
            == 404
    });
    for s in [&by_console, &by_code, &never, &plain] {
        k.delete_server(&s.id);
    }
    assert_nothing_left(&k);
}

#[test]
fn cli_drives_kilnd() {
    let k = start_kilnd("");
    let kiln = |args: &[&str]| k.cli(args);
    let hello = common::probe("hello");
    let (ok, out, err) = kiln(&[
        "image",
        "kernel",
        "hold",
        "--kernel",
        hello.to_str().unwrap(),
        "--cmdline",
        "hold",
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("ID ") && out.contains("hold"), "{out}");
    let disk = k.dir.path().join("cli-disk.raw");
    std::fs::write(&disk, vec![1u8; 4 << 20]).unwrap();
    let (ok, out, err) = kiln(&[
        "image",
        "import",
        "cli-disk",
        "--path",
        disk.to_str().unwrap(),
        "--format",
        "raw",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("cli-disk") && l.contains("active") && l.contains("sha256:")),
        "{out}"
    );
    assert!(err.contains("100%") && err.contains("4/4 MiB"), "{err}");
    let (ok, out, _) = kiln(&["flavor", "list"]);
    assert!(
        ok && out
            .lines()
            .any(|l| l.contains("m1.small") && l.contains("2048")),
        "{out}"
    );
    let (ok, out, err) = kiln(&[
        "--json",
        "server",
        "create",
        "web",
        "--flavor",
        "k1.probe",
        "--image",
        "hold",
        "--ready-console",
        "holding",
        "--wait",
        "ready",
    ]);
    assert!(ok, "{err}");
    let s: Server = serde_json::from_str(&out).unwrap();
    assert!(s.status == ServerStatus::Active && s.ready, "{s:?}");
    let (ok, out, _) = kiln(&["server", "list"]);
    assert!(
        ok && out.lines().nth(1).unwrap().contains("ACTIVE"),
        "{out}"
    );
    let (ok, out, _) = kiln(&["server", "console", "web", "--tail", "1"]);
    assert!(ok && out.contains("hello: holding"), "{out}");
    let (ok, _, _) = kiln(&["server", "stop", "web"]);
    assert!(ok);
    k.wait_status(&s.id, ServerStatus::Shutoff, T);
    let (ok, _, err) = kiln(&["server", "stop", "web"]);
    assert!(
        !ok && err.contains("409") && err.contains("SHUTOFF"),
        "{err}"
    );
    let (ok, out, _) = kiln(&["--json", "host"]);
    assert!(ok);
    let h: HostInfo = serde_json::from_str(&out).unwrap();
    assert_eq!(h.ram_mb.used, 64);
    let (ok, _, err) = kiln(&["server", "delete", "web"]);
    assert!(ok, "{err}");
    let (ok, _, err) = kiln(&["server", "show", "web"]);
    assert!(!ok && err.contains("no server"), "{err}");
    assert_nothing_left(&k);
}

/// Root disks: a qcow2 overlay on the disk image, of the flavor's size,
/// made at boot, kept across stop/start, removed on delete.
#[test]
fn root_disk_is_an_overlay_on_the_image() {
    let k = start_kilnd("");
    register(&k, "hold", "hello", "hold");
    let base = k.dir.path().join("base.qcow2");
    qemu_img_create(&base, "64M");
    let big = k.dir.path().join("big.qcow2");
    qemu_img_create(&big, "2G");
    for (name, path) in [("base", &base), ("big", &big)] {
        k.import_disk(name, path, "qcow2");
    }
    let mk = |name: &str, disk: &str| {
        k.req(
            "POST",
            "/v1/servers",
            Some(&format!(
                r#"{{"name":"{name}","flavor":"k1.probe","image":"hold","disk_image":"{disk}"}}"#
            )),
        )
    };
    // 2 GiB image, 1 GB flavor disk.
    let r = mk("big", "big");
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("larger than the flavor's disk of 1 GiB"),
        "{}",
        r.text()
    );
    assert_eq!(mk("x", "hold").status, 400, "a kernel image is not a disk");

    let r = mk("d", "base");
    assert_eq!(r.status, 202, "{}", r.text());
    let s: Server = r.json().unwrap();
    k.wait_status(&s.id, ServerStatus::Active, T);
    let root = k.state_path(&format!("servers/{}/root.qcow2", s.id));
    let info = qemu_img_info(&root);
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"].as_u64(), Some(1 << 30));
    let img = k.json("GET", "/v1/images/base", None);
    assert_eq!(info["backing-filename"].as_str(), img["path"].as_str());
    assert_eq!(info["backing-filename-format"], "qcow2");
    assert!(std::fs::metadata(&root).unwrap().len() < 1 << 20);
    // In use as a root disk: cannot be deleted.
    assert_eq!(k.req("DELETE", "/v1/images/base", None).status, 409);
    // Stop/start keeps the same disk file.
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&root).unwrap());
    action(&k, &s.id, r#"{"action":"stop"}"#);
    k.wait_status(&s.id, ServerStatus::Shutoff, T);
    action(&k, &s.id, r#"{"action":"start"}"#);
    k.wait_status(&s.id, ServerStatus::Active, T);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&root).unwrap()),
        inode
    );
    k.delete_server(&s.id);
    assert!(!root.exists());
    assert_eq!(k.req("DELETE", "/v1/images/base", None).status, 204);
    assert_nothing_left(&k);
}

/// The interactive console: through kilnd's HTTP upgrade, with the
/// library client and with `kiln console` (stdin piped), against the echo
/// probe (upper-cases a line, then powers off).
#[test]
fn interactive_console() {
    use std::io::{Read, Write};
    let k = start_kilnd("");
    register(&k, "echo", "echo", "");
    let mk = |name: &str| -> Server {
        let r = k.req(
            "POST",
            "/v1/servers",
            Some(&format!(r#"{{"name":"{name}","flavor":"k1.probe","image":"echo","ready":{{"console":"echo: ready"}}}}"#)),
        );
        assert_eq!(r.status, 202, "{}", r.text());
        let s: Server = r.json().unwrap();
        wait_until("ready", T, || k.server(&s.id).ready);
        s
    };
    let a = mk("a");
    let mut c = kiln_api::client::attach_console(&k.socket, &a.id).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(b"hello kiln\n").unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&out).contains("echo: done") {
        let n = c.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "console closed early: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&out).contains("HELLO KILN"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    k.wait_status(&a.id, ServerStatus::Shutoff, T);
    // No console on a stopped server; a plain GET without upgrade is refused.
    let r = k.req("GET", &format!("/v1/servers/{}/console/attach", a.id), None);
    assert_eq!(r.status, 426, "{}", r.text());
    let e = kiln_api::client::attach_console(&k.socket, &a.id)
        .unwrap_err()
        .to_string();
    assert!(e.contains("SHUTOFF"), "{e}");

    let b = mk("b");
    let t0 = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--socket")
        .arg(&k.socket)
        .args(["console", "b"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from the cli\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    eprintln!("kiln console ran {:?}", t0.elapsed());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("FROM THE CLI") && text.contains("echo: done"),
        "{text}"
    );
    k.wait_status(&b.id, ServerStatus::Shutoff, T);
    for s in [&a, &b] {
        k.delete_server(&s.id);
    }
    assert_nothing_left(&k);
}
