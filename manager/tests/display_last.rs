//! The last screenshot of a server that ends badly, with real kilnd and
//! real kiln-vmm on KVM (default seccomp filters), from the display probe
//! (images/mbr/vga.s) on a disk image with firmware bios and `display:
//! vga`. Its disk's sector 1 says what the probe does once it has drawn
//! its 1024x768 pattern: `GO!!` halts, `GO!!DIE!` triple-faults.
//!
//! - A guest that triple-faults: the server goes to ERROR and kiln-vmm
//!   wrote the screen before it exited (kilnd cannot ask a VMM that is
//!   gone): `GET /v1/servers/{id}/screenshot?last=true` and `kiln server
//!   screenshot --last` answer the probe's pattern; after the delete it is
//!   beside the archived console log and still answered.
//! - A server not ready within its `ready.timeout_s`: kilnd takes the
//!   picture, ends the VMM, ERROR naming the time-out; bad timeouts are
//!   400s.
//! - A stop that times out (the probe ignores the power button): kilnd
//!   takes the picture before it kills the VMM; SHUTOFF.
//! - A server without a display keeps none: `?last=true` is a 409 that
//!   says why, and no file is left.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::firmware::start_fw_kilnd;
use common::screen::{assert_pattern, get_raw};
use common::vm::{action, console, wait_until};
use common::Kilnd;
use kiln_api::compute::ServerStatus;
use kiln_tests::disk::vga_probe_disk;
use kiln_tests::screen::decode_png;

/// SeaBIOS and the probe take a few seconds here; much more under load.
const BOOT: Duration = Duration::from_secs(180);

/// A copy of the display probe's disk as `name`, `sector1` at its sector 1.
fn probe_disk(k: &Kilnd, name: &str, sector1: &[u8]) -> PathBuf {
    let dir = k.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let disk = vga_probe_disk(&dir);
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(sector1, 512).unwrap();
    disk
}

fn import(k: &Kilnd, name: &str, disk: &Path) {
    k.import_disk_with(name, disk, "raw", r#","firmware":"bios","display":"vga""#);
}

/// `?last=true` answers a PNG with the probe's pattern; its bytes.
fn last_shows_the_pattern(k: &Kilnd, id: &str) -> Vec<u8> {
    let (status, ctype, png) = get_raw(k, &format!("/v1/servers/{id}/screenshot?last=true"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    assert_eq!(ctype, "image/png");
    assert_pattern(&decode_png(&png));
    png
}

fn fault(k: &Kilnd, id: &str) -> String {
    k.server(id).fault.map(|f| f.message).unwrap_or_default()
}

#[test]
fn servers_that_end_badly_keep_their_last_screenshot() {
    assert!(Path::new("/dev/kvm").exists(), "needs KVM (/dev/kvm)");
    let k = start_fw_kilnd();
    import(&k, "crash", &probe_disk(&k, "crash", b"GO!!DIE!"));
    import(&k, "draw", &probe_disk(&k, "draw", b"GO!!"));

    // A guest fault: kiln-vmm keeps the picture as it exits.
    let t0 = Instant::now();
    let s = k.create_server(r#"{"name":"crash","flavor":"fw.small","image":"crash"}"#);
    let s = k.wait_status(&s.id, ServerStatus::Error, BOOT);
    let crashed = t0.elapsed();
    let why = fault(&k, &s.id);
    // A triple fault; an emulation failure where the emulator lacks
    // what the guest's fault needs (this nested KVM).
    assert!(
        why.contains("triple fault") || why.contains("emulation failure"),
        "{why}"
    );
    assert!(
        console(&k, &s.id).contains("KILNVGA DIE"),
        "the probe drew, then died"
    );
    let kept = k.state_path(&format!("servers/{}/last-screenshot.png", s.id));
    assert!(kept.exists(), "kiln-vmm wrote {}", kept.display());
    assert!(
        !kept.with_extension("png.tmp").exists(),
        "no temporary file left"
    );
    let png = last_shows_the_pattern(&k, &s.id);
    // No live picture of a server that is not running.
    let (status, _, body) = get_raw(&k, &format!("/v1/servers/{}/screenshot", s.id));
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    // The CLI's `--last` writes the same PNG.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--socket")
        .arg(&k.socket)
        .args(["server", "screenshot", "crash", "--last"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, png, "the CLI's PNG");
    // Deleted: kept beside the archived console log, still answered.
    k.delete_server(&s.id);
    assert!(k
        .state_path(&format!("console-archive/{}.png", s.id))
        .exists());
    assert_eq!(last_shows_the_pattern(&k, &s.id), png);

    // Bad ready time-outs: 400s naming the field, nothing made.
    for (body, says) in [
        (
            r#""ready":{"console":"x","timeout_s":0}"#,
            "ready.timeout_s",
        ),
        (
            r#""ready":{"console":"x","timeout_s":86401}"#,
            "ready.timeout_s",
        ),
        (r#""ready":{"timeout_s":5}"#, "exactly one"),
    ] {
        let r = k.req(
            "POST",
            "/v1/servers",
            Some(&format!(
                r#"{{"name":"bad","flavor":"fw.small","image":"draw",{body}}}"#
            )),
        );
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(says), "{body}: {}", r.text());
    }
    let (ok, _, err) = k.cli(&[
        "server",
        "create",
        "bad",
        "--flavor",
        "fw.small",
        "--image",
        "draw",
        "--ready-console",
        "x",
        "--ready-timeout",
        "0",
    ]);
    assert!(!ok && err.contains("ready.timeout_s"), "{err}");
    assert_eq!(
        k.json("GET", "/v1/servers", None)["servers"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Never ready: past its time-out kilnd keeps the picture, ends the
    // VMM, ERROR. The probe draws about as fast as the crash's did; the
    // time-out leaves twice that and ten seconds more.
    let timeout = (2 * crashed.as_secs() + 10).max(15);
    let s = k.create_server(&format!(
        r#"{{"name":"slow","flavor":"fw.small","image":"draw","ready":{{"console":"NEVER READY","timeout_s":{timeout}}}}}"#
    ));
    wait_until("the probe's VBE line", BOOT, || {
        console(&k, &s.id).contains("KILNVGA VBE")
    });
    let pid = k.server(&s.id).pid.expect("running");
    let s = k.wait_status(
        &s.id,
        ServerStatus::Error,
        Duration::from_secs(timeout + 60),
    );
    let why = fault(&k, &s.id);
    assert!(
        why.contains("ready.timeout_s") && why.contains(&format!("{timeout} s")),
        "{why}"
    );
    assert!(!s.ready);
    last_shows_the_pattern(&k, &s.id);
    assert!(!common::alive(pid), "its kiln-vmm ended");
    k.delete_server(&s.id);

    // A stop the guest ignores (interrupts off): kilnd keeps the picture,
    // then kills the VMM after the stop timeout; SHUTOFF.
    let s = k.create_server(r#"{"name":"stubborn","flavor":"fw.small","image":"draw"}"#);
    wait_until("the probe's VBE line", BOOT, || {
        console(&k, &s.id).contains("KILNVGA VBE")
    });
    let (status, _, _) = get_raw(&k, &format!("/v1/servers/{}/screenshot?last=true", s.id));
    assert_eq!(status, 404, "nothing kept while it runs");
    action(&k, &s.id, r#"{"action":"stop"}"#);
    k.wait_status(&s.id, ServerStatus::Shutoff, Duration::from_secs(60));
    last_shows_the_pattern(&k, &s.id);
    k.delete_server(&s.id);
}

#[test]
fn a_server_without_a_display_keeps_no_screenshot() {
    assert!(Path::new("/dev/kvm").exists(), "needs KVM (/dev/kvm)");
    let k = start_fw_kilnd();
    import(&k, "crash", &probe_disk(&k, "crash", b"GO!!DIE!"));
    // No VGA: the probe finds no adapter and halts; never ready.
    let s = k.create_server(
        r#"{"name":"blind","flavor":"fw.small","image":"crash","display":"none","ready":{"console":"NEVER READY","timeout_s":5}}"#,
    );
    let s = k.wait_status(&s.id, ServerStatus::Error, BOOT);
    let why = fault(&k, &s.id);
    assert!(
        why.contains("ready.timeout_s") && !why.contains("screenshot"),
        "{why}"
    );
    let (status, _, body) = get_raw(&k, &format!("/v1/servers/{}/screenshot?last=true", s.id));
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("no display"), "{body}");
    let dir = k.state_path(&format!("servers/{}", s.id));
    assert!(!dir.join("last-screenshot.png").exists());
    k.delete_server(&s.id);
    assert!(!k
        .state_path(&format!("console-archive/{}.png", s.id))
        .exists());
    let (status, _, body) = get_raw(&k, &format!("/v1/servers/{}/screenshot?last=true", s.id));
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no kept screenshot"), "{body}");
}
