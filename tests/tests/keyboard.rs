//! The PS/2 keyboard end to end, default seccomp filters on: SeaBIOS and
//! a boot sector probe (images/mbr/kbd.s) that reads keys through int 16h
//! and prints each one's scan code and character on COM1. Keys come from
//! the control API (`POST /v1/vm/keys`: names, combos with Shift, an
//! arrow, typed text), from a real VNC client (vncdotool's `key` and
//! `type`, keysyms) and from QEMU's extended key event (XT codes, as
//! noVNC sends them once the server acknowledges pseudo-encoding -258).
//! Bad bodies get a 400 naming what is wrong, and type nothing.

use std::process::Command;
use std::time::{Duration, Instant};

use kiln_tests::disk::kbd_probe_disk;
use kiln_tests::rfb::{Viewer, ENC_QEMU_EXT_KEY, ENC_RAW};
use kiln_tests::{api, cache_dir, kvm_available, ScratchDir, Vm, VmSpec};

/// The probe's `KEY ss cc` lines so far.
fn key_lines(vm: &Vm) -> Vec<String> {
    vm.serial()
        .lines()
        .filter(|l| l.starts_with("KEY ") && l.trim_end().len() == 9)
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// Wait until the probe printed `want` after the `skip` lines before.
fn expect_keys(vm: &mut Vm, skip: usize, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = key_lines(vm);
        let new: Vec<&str> = got.iter().skip(skip).map(String::as_str).collect();
        if new.len() >= want.len() {
            assert_eq!(new, want, "{}", vm.describe());
            return;
        }
        assert!(
            Instant::now() < deadline && vm.try_status().is_none(),
            "keys {want:?}: only {new:?}\n{}",
            vm.describe()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn vncdo(sock: &std::path::Path, args: &[&str]) {
    let out = Command::new(cache_dir().join("venv/bin/vncdo"))
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .expect("vncdo (vncdotool in cache/venv: scripts/setup.sh)");
    assert!(
        out.status.success(),
        "vncdo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn keys_from_the_api_and_vnc_reach_int_16h() {
    if !kvm_available("keys_from_the_api_and_vnc_reach_int_16h") {
        return;
    }
    let dir = ScratchDir::new("kbd").unwrap();
    let img = kbd_probe_disk(dir.path());
    let vnc = dir.path().join("vnc.sock");
    let spec = VmSpec::seabios().args([
        "--display".to_string(),
        "vga".to_string(),
        "--vnc".to_string(),
        vnc.display().to_string(),
        "--disk".to_string(),
        format!("path={},format=raw", img.display()),
    ]);
    let mut vm = Vm::start(&spec);
    vm.wait_serial_line("KILNKBD READY", Duration::from_secs(120));
    let sock = vm.api_socket.clone().unwrap();

    // Bad input first: refused whole, nothing typed.
    let (status, body) =
        api::post_json(&sock, "/v1/vm/keys", r#"{"keys":["a","ctrl-frob"]}"#).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\\\"frob\\\""), "{body}");
    let (status, body) = api::post_json(&sock, "/v1/vm/keys", r#"{"text":"caf\u00e9"}"#).unwrap();
    assert_eq!(status, 400, "{body}");
    let many = format!(r#"{{"text":"{}"}}"#, "a".repeat(300));
    let (status, body) = api::post_json(&sock, "/v1/vm/keys", &many).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("too many"), "{body}");
    let (status, _) = api::request(&sock, "PUT", "/v1/vm/keys").unwrap();
    assert_eq!(status, 405);

    // Names, a Shift combo, an extended key; then text (Shift added).
    let t = Instant::now();
    let (status, body) = api::post_json(
        &sock,
        "/v1/vm/keys",
        r#"{"keys":["a","shift-b","up","ret"],"hold_ms":50}"#,
    )
    .unwrap();
    assert_eq!(status, 204, "{body}");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "held and released"
    );
    let (status, body) = api::post_json(&sock, "/v1/vm/keys", r#"{"text":"hi!\n"}"#).unwrap();
    assert_eq!(status, 204, "{body}");
    assert!(
        key_lines(&vm).is_empty() || key_lines(&vm)[0] == "KEY 1E 61",
        "the refused requests typed nothing: {:?}",
        key_lines(&vm)
    );
    expect_keys(
        &mut vm,
        0,
        &[
            "KEY 1E 61",
            "KEY 30 42",
            "KEY 48 E0",
            "KEY 1C 0D",
            "KEY 23 68",
            "KEY 17 69",
            "KEY 02 21",
            "KEY 1C 0D",
        ],
    );

    // A real VNC client: keysyms.
    vncdo(&vnc, &["key", "a"]);
    vncdo(&vnc, &["type", "hello"]);
    vncdo(&vnc, &["key", "shift-z", "key", "down"]);
    expect_keys(
        &mut vm,
        8,
        &[
            "KEY 1E 61",
            "KEY 23 68",
            "KEY 12 65",
            "KEY 26 6C",
            "KEY 26 6C",
            "KEY 18 6F",
            "KEY 2C 5A",
            "KEY 50 E0",
        ],
    );

    // QEMU's extended key event, once the server acknowledged -258.
    let mut v = Viewer::connect(&vnc, &[ENC_RAW, ENC_QEMU_EXT_KEY]).unwrap();
    v.read_update().unwrap();
    assert_eq!(v.last_encodings, [ENC_QEMU_EXT_KEY]);
    for code in [0x2c, 0xcb] {
        v.ext_key(code, true).unwrap();
        v.ext_key(code, false).unwrap();
    }
    expect_keys(&mut vm, 16, &["KEY 2C 7A", "KEY 4B E0"]);

    // The probe echoed the characters on the screen too.
    let screen = kiln_tests::screen::screen(&vm);
    let rows = screen.text.expect("text mode");
    assert!(
        rows.iter().any(|r| r.contains("aBhi!ahelloZz")),
        "{rows:#?}"
    );
}
