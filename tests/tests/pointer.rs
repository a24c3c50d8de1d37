//! The pointing devices end to end, default seccomp filters on: the
//! `pointer` probe (images/probes/pointer.s) sets up the PS/2 mouse on the
//! i8042's AUX port (IntelliMouse knock included) and the virtio-input
//! tablet, then prints every mouse packet and tablet event. Pointer
//! events come from a real RFB connection (`kiln_tests::rfb::Viewer`):
//! the mouse must report the motion since the last event (y up), the
//! buttons and the wheel, split into packets of at most 255 counts; the
//! tablet the position scaled to 0..=32767 (x * 32767 / (width - 1)),
//! button changes and wheel notches, each report ended by SYN_REPORT.

use std::time::{Duration, Instant};

use kiln_tests::rfb::{Viewer, ENC_RAW};
use kiln_tests::{api, kvm_available, probe, ScratchDir, Vm, VmSpec};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The probe's whole lines (not the one it is still printing) that
/// start with `prefix`, without it.
fn lines(vm: &Vm, prefix: &str) -> Vec<String> {
    let serial = vm.serial();
    let whole = serial.rsplit_once('\n').map_or("", |(done, _)| done);
    whole
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// Wait until the probe printed `want` after the first `skip` lines of
/// `prefix`; returns the new count.
fn expect(vm: &mut Vm, prefix: &str, skip: usize, want: &[String]) -> usize {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = lines(vm, prefix);
        let new: Vec<String> = got.iter().skip(skip).cloned().collect();
        if new.len() >= want.len() {
            assert_eq!(new, want, "{prefix}\n{}", vm.describe());
            return skip + want.len();
        }
        assert!(
            Instant::now() < deadline && vm.try_status().is_none(),
            "{prefix} {want:?}: only {new:?}\n{}",
            vm.describe()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn packets(p: &[[u8; 4]]) -> Vec<String> {
    p.iter()
        .map(|b| format!("{:02x} {:02x} {:02x} {:02x}", b[0], b[1], b[2], b[3]))
        .collect()
}

/// The tablet's events for one report: position, then `extra` (type,
/// code, value), then SYN_REPORT.
fn report(x: u32, y: u32, extra: &[(u16, u16, u32)]) -> Vec<String> {
    let mut v = vec![format!("3 0 {x}"), format!("3 1 {y}")];
    v.extend(extra.iter().map(|(t, c, val)| format!("{t} {c} {val}")));
    v.push("0 0 0".into());
    v
}

fn spec(dir: &ScratchDir, extra: &[&str]) -> VmSpec {
    let vnc = dir.path().join("vnc.sock");
    let mut args = vec![
        "--display".to_string(),
        "vga".to_string(),
        "--vnc".to_string(),
        vnc.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    VmSpec::new(probe("pointer")).args(args)
}

#[test]
fn vnc_pointer_events_reach_the_ps2_mouse_and_the_tablet() {
    if !kvm_available("vnc_pointer_events_reach_the_ps2_mouse_and_the_tablet") {
        return;
    }
    let dir = ScratchDir::new("pointer").unwrap();
    let mut vm = Vm::start(&spec(&dir, &[]));
    vm.wait_serial_line("pointer: ready", TIMEOUT);
    vm.assert_serial_lines(&[
        "mouse: aux test 00",
        "mouse: reset fa aa 00",
        "mouse: id 03",
        "tablet: name Kiln Tablet",
        "tablet: abs bits 03",
        "tablet: x 0..32767",
        "tablet: y 0..32767",
    ]);
    // The tablet's worker runs under its seccomp filter (mode 2).
    let worker = std::fs::read_dir(format!("/proc/{}/task", vm.pid()))
        .unwrap()
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).unwrap_or_default() == "virtio-input\n"
        })
        .expect("a virtio-input worker thread");
    let status = std::fs::read_to_string(worker.path().join("status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Seccomp:") && l.ends_with('2')),
        "{status}"
    );
    let mut v = Viewer::connect(&dir.path().join("vnc.sock"), &[ENC_RAW]).unwrap();
    let (w, h) = (v.width as u32, v.height as u32);
    assert!(w > 300 && h > 300, "{w}x{h}");
    let sx = |x: u32| x * 32767 / (w - 1);
    let sy = |y: u32| y * 32767 / (h - 1);
    let (mut m, mut t) = (0, 0);
    const KEY: u16 = 1;
    const REL: u16 = 2;

    // The viewer's first event: a position for the tablet, no motion.
    v.pointer(100, 50, 0).unwrap();
    t = expect(&mut vm, "tablet: event ", t, &report(sx(100), sy(50), &[]));
    // Left button down while moving right 30 and up 10.
    v.pointer(130, 40, 1).unwrap();
    m = expect(&mut vm, "mouse: packet ", m, &packets(&[[0x09, 30, 10, 0]]));
    t = expect(
        &mut vm,
        "tablet: event ",
        t,
        &report(sx(130), sy(40), &[(KEY, 0x110, 1)]),
    );
    v.pointer(130, 40, 0).unwrap();
    m = expect(&mut vm, "mouse: packet ", m, &packets(&[[0x08, 0, 0, 0]]));
    t = expect(
        &mut vm,
        "tablet: event ",
        t,
        &report(sx(130), sy(40), &[(KEY, 0x110, 0)]),
    );
    // The wheel up (button 4 pressed, released): one notch.
    v.pointer(130, 40, 8).unwrap();
    v.pointer(130, 40, 0).unwrap();
    m = expect(
        &mut vm,
        "mouse: packet ",
        m,
        &packets(&[[0x08, 0, 0, 0x0f]]),
    );
    let mut want = report(sx(130), sy(40), &[(REL, 8, 1)]);
    want.extend(report(sx(130), sy(40), &[]));
    t = expect(&mut vm, "tablet: event ", t, &want);
    // Right button, moving left and down: sign bits.
    v.pointer(0, 200, 4).unwrap();
    m = expect(
        &mut vm,
        "mouse: packet ",
        m,
        &packets(&[[0x3a, (-130i32) as u8, (-160i32) as u8, 0]]),
    );
    t = expect(
        &mut vm,
        "tablet: event ",
        t,
        &report(0, sy(200), &[(KEY, 0x111, 1)]),
    );
    // Across the whole screen: packets of at most 255 counts.
    v.pointer((w - 1) as u16, 200, 4).unwrap();
    let mut want = Vec::new();
    let mut left = w - 1;
    while left > 0 {
        let d = left.min(255);
        want.push([0x0a, d as u8, 0, 0]);
        left -= d;
    }
    m = expect(&mut vm, "mouse: packet ", m, &packets(&want));
    t = expect(&mut vm, "tablet: event ", t, &report(32767, sy(200), &[]));

    // The control API's pointer: bad bodies refused whole, nothing moved.
    let sock = vm.api_socket.clone().unwrap();
    for (body, why) in [
        (r#"{"x":1,"y":2,"buttons":99}"#, "button mask"),
        (r#"{"x":-1,"y":2}"#, "body must be"),
        (r#"{"x":70000,"y":2}"#, "body must be"),
        (r#"{"x":1,"y":2,"z":3}"#, "unknown field"),
        (r#"{"y":2}"#, "missing field"),
    ] {
        let (status, answer) = api::post_json(&sock, "/v1/vm/pointer", body).unwrap();
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.contains(why), "{body}: {answer}");
    }
    let (status, _) = api::request(&sock, "GET", "/v1/vm/pointer").unwrap();
    assert_eq!(status, 405);
    // Its own last position: the first request moves nothing.
    let (status, answer) = api::post_json(&sock, "/v1/vm/pointer", r#"{"x":10,"y":20}"#).unwrap();
    assert_eq!(status, 204, "{answer}");
    let (status, answer) =
        api::post_json(&sock, "/v1/vm/pointer", r#"{"x":20,"y":10,"buttons":1}"#).unwrap();
    assert_eq!(status, 204, "{answer}");
    expect(
        &mut vm,
        "mouse: packet ",
        m,
        &packets(&[[0x08, 0, 0, 0], [0x09, 10, 10, 0]]),
    );
    let mut want = report(sx(10), sy(20), &[(KEY, 0x111, 0)]);
    want.extend(report(sx(20), sy(10), &[(KEY, 0x110, 1)]));
    expect(&mut vm, "tablet: event ", t, &want);
}

#[test]
fn no_tablet_leaves_the_ps2_mouse() {
    if !kvm_available("no_tablet_leaves_the_ps2_mouse") {
        return;
    }
    let dir = ScratchDir::new("pointer-nt").unwrap();
    let mut vm = Vm::start(&spec(&dir, &["--no-tablet"]));
    vm.wait_serial_line("pointer: ready", TIMEOUT);
    vm.assert_serial_lines(&["mouse: id 03", "tablet: none"]);
    let mut v = Viewer::connect(&dir.path().join("vnc.sock"), &[ENC_RAW]).unwrap();
    v.pointer(10, 10, 0).unwrap();
    v.pointer(15, 12, 2).unwrap();
    expect(
        &mut vm,
        "mouse: packet ",
        0,
        &packets(&[[0x2c, 5, 0xfe, 0]]),
    );
}
