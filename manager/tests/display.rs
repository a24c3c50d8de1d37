//! Servers' displays through kilnd, with real kilnd and real kiln-vmm on
//! KVM (default seccomp filters): a disk image holding the display probe
//! (images/mbr/vga.s) with firmware bios and `display: vga`, which its
//! server inherits (another server turns it off).
//!
//! - vm.json has the VGA adapter, Debian's VGA BIOS (beside bios.bin) and
//!   the server's `vnc.sock` (root's only: kiln-vmm runs under umask 077);
//! - `GET /v1/servers/{id}/screenshot` answers `image/png` whose pixels
//!   are what the probe drew: SeaBIOS's banner in text mode, then its
//!   1024x768x32 VBE pattern; `kiln server screenshot` writes the same
//!   PNG, and vncdotool on `vnc.sock` captures the same picture;
//! - a server with `display: none` answers 409; `display: "svga"` is a 400
//!   (naming `none` and `vga` for a server);
//! - when the TTL ends the server is deleted and its last picture is kept:
//!   `GET /v1/servers/{id}/screenshot?last=true` answers it (a second
//!   server, whose probe finds GO!! at once, with a TTL a few times the
//!   first one's boot: seconds, not a fixed worst case).

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

use common::firmware::{import_disk_fw, start_fw_kilnd};
use common::screen::{assert_pattern, get_raw};
use common::vm::{console, wait_until};
use common::Kilnd;
use kiln_api::compute::{Display, ServerStatus};
use kiln_api::vm::{DisplayDevice, VmConfig};
use kiln_tests::disk::{kbd_probe_disk, vga_probe_disk};
use kiln_tests::screen::{decode_png, Shot};
use kiln_tests::{cache_dir, guest_file};

/// SeaBIOS and the probe take a few seconds here; much more under load.
const BOOT: Duration = Duration::from_secs(180);

fn screenshot(k: &Kilnd, id: &str) -> (Vec<u8>, Shot) {
    let (status, ctype, body) = get_raw(k, &format!("/v1/servers/{id}/screenshot"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ctype, "image/png");
    let shot = decode_png(&body);
    (body, shot)
}

#[test]
fn a_vga_server_shows_its_screen_and_keeps_the_last_one() {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "needs KVM (/dev/kvm)"
    );
    let k = start_fw_kilnd();
    let disk = vga_probe_disk(k.dir.path());
    // Bad input: an unknown display on an image.
    let r = k.req(
        "POST",
        "/v1/images",
        Some(&format!(
            r#"{{"type":"disk","name":"bad","path":"{}","format":"raw","display":"svga"}}"#,
            disk.display()
        )),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("svga"), "{}", r.text());
    // The image's servers get a VGA unless they say otherwise.
    let img = k.import_disk_with("vga", &disk, "raw", r#","firmware":"bios","display":"vga""#);
    assert_eq!(img.display, Display::Vga);

    // Bad input: an unknown display.
    let r = k.req(
        "POST",
        "/v1/servers",
        Some(r#"{"name":"bad","flavor":"fw.small","image":"vga","display":"svga"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("svga") && r.text().contains("none") && r.text().contains("vga"),
        "{}",
        r.text()
    );

    // Without a display (the server's own choice over the image's): 409.
    let plain =
        k.create_server(r#"{"name":"plain","flavor":"fw.small","image":"vga","display":"none"}"#);
    assert_eq!(plain.display, Display::None);
    let (status, _, body) = get_raw(&k, &format!("/v1/servers/{}/screenshot", plain.id));
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("no display"), "{body}");
    k.delete_server(&plain.id);

    let booted = std::time::Instant::now();
    let s = k.create_server(r#"{"name":"screen","flavor":"fw.small","image":"vga"}"#);
    assert_eq!(s.display, Display::Vga);
    assert_eq!(k.server(&s.id).display, Display::Vga, "stored");
    let (ok, shown, err) = k.cli(&["server", "show", "screen"]);
    assert!(ok && shown.contains("display: vga"), "{shown}{err}");

    k.wait_status(&s.id, kiln_api::compute::ServerStatus::Active, BOOT);
    // vm.json: the adapter, Debian's VGA BIOS and the VNC socket.
    let cfg: VmConfig = serde_json::from_slice(
        &std::fs::read(k.state_path(&format!("servers/{}/vm.json", s.id))).unwrap(),
    )
    .unwrap();
    let d = cfg.display.expect("display in vm.json");
    assert_eq!(d.device, DisplayDevice::Vga);
    let rom = guest_file("vgabios-stdvga.bin").display().to_string();
    assert_eq!(d.rom.as_deref(), Some(rom.as_str()));
    let vnc = k.state_path(&format!("servers/{}/vnc.sock", s.id));
    assert_eq!(d.vnc.as_deref(), Some(vnc.to_str().unwrap()));
    // Where kiln-vmm writes the screen if it ends on a guest fault.
    let last = k.state_path(&format!("servers/{}/last-screenshot.png", s.id));
    assert_eq!(d.last_screenshot.as_deref(), Some(last.to_str().unwrap()));

    // Text mode: SeaBIOS's banner row is lit, row 20 blank.
    wait_until("the probe's text line", BOOT, || {
        console(&k, &s.id).contains("KILNVGA TEXT")
    });
    let boot = booted.elapsed();
    let (_, text) = screenshot(&k, &s.id);
    assert_eq!((text.width, text.height), (720, 400));
    let lit = |y0: usize| {
        (y0..y0 + 16)
            .flat_map(|y| (0..720).map(move |x| (x, y)))
            .filter(|&(x, y)| text.pixel(x, y) != [0, 0, 0])
            .count()
    };
    assert!(lit(0) > 300, "the banner's row: {}", lit(0));
    assert_eq!(lit(20 * 16), 0, "row 20 is blank");

    // The probe polls its disk's sector 1 for GO!!: written into the
    // image under the server's overlay, which the guest never wrote.
    let (base, _, _) = common::disk_of(&img);
    kiln_tests::disk::vga_probe_go(std::path::Path::new(base));
    wait_until("the probe's VBE line", BOOT, || {
        console(&k, &s.id).contains("KILNVGA VBE")
    });
    let (png, shot) = screenshot(&k, &s.id);
    assert_pattern(&shot);

    // The CLI writes the same PNG to stdout.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--socket")
        .arg(&k.socket)
        .args(["server", "screenshot", "screen"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(decode_png(&out.stdout).rgb, shot.rgb, "the CLI's PNG");
    assert!(png.starts_with(b"\x89PNG"));

    // A VNC client on the server's socket (root only) sees the same.
    let meta = std::fs::metadata(&vnc).unwrap();
    assert!(meta.file_type().is_socket());
    // Bound under umask 077: its owner's (root's) only.
    assert_eq!(meta.permissions().mode() & 0o077, 0, "vnc.sock's mode");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0, "root's");
    let cap = k.dir.path().join("vncdo.png");
    let out = Command::new(cache_dir().join("venv/bin/vncdo"))
        .arg("-s")
        .arg(&vnc)
        .arg("capture")
        .arg(&cap)
        .output()
        .expect("vncdo (vncdotool in cache/venv: scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        decode_png(&std::fs::read(&cap).unwrap()).rgb == shot.rgb,
        "vncdotool's capture equals the screenshot"
    );

    // A server whose TTL ends on the pattern: its probe finds GO!! at
    // once, so it shows it about `boot` after its create; the TTL leaves
    // twice that and ten seconds more.
    k.delete_server(&s.id);
    let ttl = (2 * boot.as_secs() + 10).max(15);
    let s = k.create_server(&format!(
        r#"{{"name":"last","flavor":"fw.small","image":"vga","ttl_s":{ttl}}}"#
    ));
    // No picture kept while it runs; its TTL ends: deleted, picture kept.
    let (status, _, _) = get_raw(&k, &format!("/v1/servers/{}/screenshot?last=true", s.id));
    assert_eq!(status, 404);
    wait_until("the probe's VBE line", BOOT, || {
        console(&k, &s.id).contains("KILNVGA VBE")
    });
    wait_until("the TTL's delete", Duration::from_secs(ttl + 60), || {
        k.req("GET", &format!("/v1/servers/{}", s.id), None).status == 404
    });
    let (status, ctype, last) = get_raw(&k, &format!("/v1/servers/{}/screenshot?last=true", s.id));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&last));
    assert_eq!(ctype, "image/png");
    assert_pattern(&decode_png(&last));
    let (status, _, _) = get_raw(&k, &format!("/v1/servers/{}/screenshot", s.id));
    assert_eq!(status, 404, "no live picture of a deleted server");
}

#[test]
fn keys_typed_through_kilnd_reach_the_guest() {
    let k = start_fw_kilnd();
    let disk = kbd_probe_disk(k.dir.path());
    import_disk_fw(&k, "kbd", &disk, "raw", Some("bios"));
    // As on a PC: the probe echoes what it reads on the screen too.
    let s =
        k.create_server(r#"{"name":"typist","flavor":"fw.small","image":"kbd","display":"vga"}"#);
    let s = k.wait_status(&s.id, ServerStatus::Active, Duration::from_secs(60));
    let t0 = std::time::Instant::now();
    while !console(&k, &s.id).contains("KILNKBD READY") {
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "no prompt from the probe:\n{}",
            console(&k, &s.id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let path = format!("/v1/servers/{}/keys", s.id);
    // Bad bodies: 400 naming what is wrong, and nothing typed.
    for (body, why) in [
        (r#"{"keys":["frob"]}"#, "frob"),
        (r#"{}"#, "nothing to type"),
        (r#"{"keys":["a"],"hold_ms":0}"#, "hold_ms"),
        (r#"{"keys":["a"],"speed":1}"#, "speed"),
    ] {
        let r = k.req("POST", &path, Some(body));
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(why), "{body}: {}", r.text());
    }
    assert!(
        !console(&k, &s.id).contains("KEY "),
        "a refused request typed"
    );
    // A key, a combo and an extended key, then text through the CLI.
    let r = k.req(
        "POST",
        &path,
        Some(r#"{"keys":["a","shift-b","up"],"hold_ms":30}"#),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let (ok, _, err) = k.cli(&["server", "keys", "typist", "ret", "--text", "hi"]);
    assert!(ok, "{err}");
    let want = [
        "KEY 1E 61",
        "KEY 30 42",
        "KEY 48 E0",
        "KEY 1C 0D",
        "KEY 23 68",
        "KEY 17 69",
    ];
    wait_until("the keys on the console", Duration::from_secs(30), || {
        let out = console(&k, &s.id);
        want.iter().all(|w| out.contains(w))
    });
    let out = console(&k, &s.id);
    let got: Vec<&str> = out.lines().filter(|l| l.starts_with("KEY ")).collect();
    assert_eq!(got, want, "{out}");
    // A server that is not running has no keyboard.
    let r = k.req(
        "POST",
        &format!("/v1/servers/{}/action", s.id),
        Some(r#"{"action":"stop"}"#),
    );
    assert!(r.status < 300, "{}", r.text());
    k.wait_status(&s.id, ServerStatus::Shutoff, Duration::from_secs(60));
    let r = k.req("POST", &path, Some(r#"{"keys":["a"]}"#));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("not running"), "{}", r.text());
    assert_eq!(
        k.req("POST", "/v1/servers/nope/keys", Some(r#"{"keys":["a"]}"#))
            .status,
        404
    );
}
