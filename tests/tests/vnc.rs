//! kiln-vmm's VNC server (`--vnc PATH`) end to end, default seccomp
//! filters on: SeaBIOS and the display probe (images/mbr/vga.s) under two
//! viewers at once (`kiln_tests::rfb`, one raw, one zlib) and a real
//! client (vncdotool, from PyPI in the test venv). Every viewer's picture
//! equals the control API's screenshot; the probe's switch from text to
//! 1024x768x32 reaches the connected viewers as a DesktopSize; an
//! unchanging screen with viewers waiting costs the VMM almost no CPU.

use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use kiln_tests::disk::{vga_probe_disk, vga_probe_go};
use kiln_tests::rfb::{Viewer, ENC_DESKTOP_SIZE, ENC_RAW, ENC_ZLIB};
use kiln_tests::screen::{decode_png, screenshot};
use kiln_tests::{cache_dir, kvm_available, ScratchDir, Vm, VmSpec};

/// The process's user + system CPU time, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn probe_pattern_ok(v: &Viewer) -> bool {
    (v.width, v.height) == (1024, 768)
        && [(0, 0), (255, 0), (17, 200), (255, 255)]
            .iter()
            .all(|&(x, y)| v.pixel(x, y) == [x as u8, y as u8, 0x80])
        && v.pixel(500, 405) == [0xff, 0, 0]
        && v.pixel(1023, 767) == [0, 0, 0]
}

#[test]
fn viewers_follow_the_screen_from_text_to_a_vbe_mode() {
    if !kvm_available("viewers_follow_the_screen_from_text_to_a_vbe_mode") {
        return;
    }
    let dir = ScratchDir::new("vnc").unwrap();
    let img = vga_probe_disk(dir.path());
    let sock = dir.path().join("vnc.sock");
    let spec = VmSpec::seabios().args([
        "--display".to_string(),
        "vga".to_string(),
        "--vnc".to_string(),
        sock.display().to_string(),
        "--disk".to_string(),
        format!("path={},format=raw", img.display()),
    ]);
    let mut vm = Vm::start(&spec);
    vm.wait_serial_line("KILNVGA TEXT", Duration::from_secs(120));

    let mut raw = Viewer::connect(&sock, &[ENC_RAW, ENC_DESKTOP_SIZE]).unwrap();
    let mut zlib = Viewer::connect(&sock, &[ENC_ZLIB, ENC_RAW, ENC_DESKTOP_SIZE]).unwrap();
    // A viewer that cannot resize.
    let mut fixed = Viewer::connect(&sock, &[ENC_RAW]).unwrap();
    fixed.update(false).unwrap();
    assert_eq!(raw.name, "kiln-vmm");
    assert_eq!((raw.width, raw.height), (720, 400), "text mode");
    raw.update(false).unwrap();
    zlib.update(false).unwrap();
    assert_eq!(raw.last_encodings, [ENC_RAW]);
    assert_eq!(zlib.last_encodings, [ENC_ZLIB]);
    let (api, _) = screenshot(&vm);
    assert!(raw.rgb == api.rgb, "the raw viewer sees the screenshot");
    assert!(zlib.rgb == api.rgb, "the zlib viewer sees the screenshot");
    eprintln!(
        "720x400 text screen: raw {} bytes, zlib {} bytes",
        raw.last_update_bytes, zlib.last_update_bytes
    );

    // A real client, connected beside the two.
    let png = dir.path().join("vncdo.png");
    let out = Command::new(cache_dir().join("venv/bin/vncdo"))
        .arg("-s")
        .arg(&sock)
        .arg("capture")
        .arg(&png)
        .output()
        .expect("vncdo (vncdotool in cache/venv: scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let real = decode_png(&std::fs::read(&png).unwrap());
    assert_eq!((real.width, real.height), (720, 400));
    assert!(
        real.rgb == api.rgb,
        "vncdotool's capture equals the screenshot"
    );

    // The probe switches to 1024x768x32: the connected viewers get a
    // DesktopSize, then the pattern.
    vga_probe_go(&img);
    vm.wait_serial_line("KILNVGA VBE", Duration::from_secs(60));
    for v in [&mut raw, &mut zlib] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !probe_pattern_ok(v) {
            assert!(Instant::now() < deadline, "no VBE pattern in the viewer");
            v.update(true).unwrap();
        }
        assert_eq!(v.resizes, 1, "one DesktopSize");
    }
    let (api, _) = screenshot(&vm);
    assert_eq!((api.width, api.height), (1024, 768));
    assert!(raw.rgb == api.rgb && zlib.rgb == api.rgb);
    // The viewer without DesktopSize keeps 720x400 and sees what fits.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fixed.pixel(255, 255) != [255, 255, 0x80] {
        assert!(
            Instant::now() < deadline,
            "the fixed-size viewer saw no change"
        );
        fixed.update(true).unwrap();
    }
    assert_eq!((fixed.width, fixed.height, fixed.resizes), (720, 400, 0));
    for (x, y) in [(0, 0), (719, 399), (100, 300)] {
        assert_eq!(fixed.pixel(x, y), api.pixel(x, y), "({x}, {y})");
    }

    // A full 1024x768 update in each encoding.
    let t = Instant::now();
    raw.update(false).unwrap();
    let raw_time = t.elapsed();
    let t = Instant::now();
    zlib.update(false).unwrap();
    let zlib_time = t.elapsed();
    eprintln!(
        "full 1024x768 update: raw {} bytes in {raw_time:?}, zlib {} bytes in {zlib_time:?}",
        raw.last_update_bytes, zlib.last_update_bytes
    );
    assert_eq!(raw.last_update_bytes, 4 + 12 + 1024 * 768 * 4);
    assert!(zlib.last_update_bytes < raw.last_update_bytes / 20);
    assert!(raw.rgb == api.rgb && zlib.rgb == api.rgb);

    // Both wait for a change that does not come: the screen is still,
    // and watching it costs (almost) nothing.
    raw.request(true).unwrap();
    zlib.request(true).unwrap();
    sleep(Duration::from_millis(500));
    let before = cpu_ticks(vm.pid());
    let t = Instant::now();
    sleep(Duration::from_secs(5));
    let used = cpu_ticks(vm.pid()) - before;
    let percent = used as f64 / 100.0 / t.elapsed().as_secs_f64() * 100.0;
    eprintln!("VMM CPU with two viewers on a still screen: {percent:.2}% of a core");
    assert!(percent < 2.0, "{percent:.2}% of a core");
}
