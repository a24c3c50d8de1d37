//! The standard VGA display (`--display vga`) end to end, with the
//! default seccomp filters: Debian's SeaBIOS runs Debian's VGA BIOS
//! (`vgabios-stdvga.bin`, found beside bios.bin, reaching SeaBIOS as the
//! fw_cfg file `pci1234,1111.rom`), whose banner is then on the text
//! screen; a boot sector probe (images/mbr/vga.s) writes text through
//! int 10h, then switches to a 1024x768x32 VBE mode and draws a pattern.
//! The control API's `GET /v1/vm/screen` gives text mode's characters
//! and `GET /v1/vm/screenshot` a PNG, which the test decodes and checks
//! pixel by pixel. `--last-screenshot` keeps the picture of a VM that
//! ends on a guest fault, and only then.

use std::time::Duration;

use kiln_tests::disk::{vga_probe_disk, vga_probe_go};
use kiln_tests::screen::{screen, screenshot};
use kiln_tests::{api, kvm_available, ScratchDir, Vm, VmSpec};

#[test]
fn seabios_banner_and_a_vbe_probe_reach_the_screen() {
    if !kvm_available("seabios_banner_and_a_vbe_probe_reach_the_screen") {
        return;
    }
    let dir = ScratchDir::new("display").unwrap();
    let img = vga_probe_disk(dir.path());
    let spec = VmSpec::seabios().args([
        "--display".to_string(),
        "vga".to_string(),
        "--disk".to_string(),
        format!("path={},format=raw", img.display()),
    ]);
    let mut vm = Vm::start(&spec);
    vm.wait_serial_line("KILNVGA TEXT", Duration::from_secs(120));
    let text = screen(&vm);
    assert_eq!(text.mode, "text", "{text:?}");
    assert_eq!((text.width, text.height), (720, 400));
    let rows = text.text.clone().expect("text rows");
    assert_eq!(rows.len(), 25);
    assert!(
        rows[0].starts_with("SeaBIOS (version "),
        "banner on the first row: {rows:#?}\n{}",
        vm.describe()
    );
    assert!(
        rows.iter().any(|r| r.contains("KILN VGA PROBE")),
        "{rows:#?}"
    );
    // The picture of the same screen: 9x16 cells, light grey glyphs of
    // the BIOS's font on black; the banner's row has lit pixels, a blank
    // row none.
    let (shot, took) = screenshot(&vm);
    eprintln!("text-mode screenshot: {took:?}");
    assert_eq!((shot.width, shot.height), (720, 400));
    let lit = |y0: usize| {
        (y0..y0 + 16)
            .flat_map(|y| (0..720).map(move |x| (x, y)))
            .filter(|&(x, y)| shot.pixel(x, y) != [0, 0, 0])
            .count()
    };
    let colours: std::collections::BTreeSet<[u8; 3]> =
        shot.rgb.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
    assert!(
        colours
            .iter()
            .all(|c| *c == [0, 0, 0] || *c == [0xaa, 0xaa, 0xaa]),
        "{colours:?}"
    );
    assert!(lit(0) > 300, "the banner's row is drawn: {}", lit(0));
    assert_eq!(lit(20 * 16), 0, "row 20 is blank");

    vga_probe_go(&img);
    vm.wait_serial_line("KILNVGA VBE", Duration::from_secs(60));
    let vbe = screen(&vm);
    assert_eq!(
        (vbe.mode.as_str(), vbe.width, vbe.height, vbe.bpp, vbe.text),
        ("vbe", 1024, 768, Some(32), None)
    );
    let (shot, took) = screenshot(&vm);
    eprintln!("1024x768x32 screenshot: {took:?}");
    assert_eq!((shot.width, shot.height), (1024, 768));
    for (x, y) in [(0, 0), (255, 0), (0, 255), (17, 200), (255, 255), (128, 64)] {
        assert_eq!(
            shot.pixel(x, y),
            [x as u8, y as u8, 0x80],
            "pixel ({x}, {y})"
        );
    }
    for (x, y) in [(0, 400), (1023, 409), (500, 405)] {
        assert_eq!(shot.pixel(x, y), [0xff, 0, 0], "pixel ({x}, {y})");
    }
    for (x, y) in [(256, 0), (0, 256), (1023, 767), (600, 399), (600, 410)] {
        assert_eq!(shot.pixel(x, y), [0, 0, 0], "pixel ({x}, {y})");
    }
}

#[test]
fn no_display_no_screenshot() {
    if !kvm_available("no_display_no_screenshot") {
        return;
    }
    let mut vm = Vm::start(&VmSpec::seabios());
    vm.wait_api(Duration::from_secs(20));
    let sock = vm.api_socket.clone().unwrap();
    for path in ["/v1/vm/screenshot", "/v1/vm/screen"] {
        let (status, body) = api::request(&sock, "GET", path).unwrap();
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("--display vga"), "{body}");
        let (status, _) = api::request(&sock, "PUT", path).unwrap();
        assert_eq!(status, 405);
    }
}

/// `--last-screenshot PATH`: the screen when the VM ends on a guest fault
/// (the probe draws its pattern, then triple-faults: `DIE!` after `GO!!`),
/// written under the default seccomp filters from the main thread; a
/// guest that powers off leaves none.
#[test]
fn a_fault_keeps_the_last_screenshot_a_power_off_does_not() {
    if !kvm_available("a_fault_keeps_the_last_screenshot_a_power_off_does_not") {
        return;
    }
    let dir = ScratchDir::new("display-last").unwrap();
    let img = vga_probe_disk(dir.path());
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new().write(true).open(&img).unwrap(),
        b"GO!!DIE!",
        512,
    )
    .unwrap();
    let last = dir.path().join("last.png");
    let with_last = |disk: &std::path::Path| {
        VmSpec::seabios().args([
            "--display".to_string(),
            "vga".to_string(),
            "--last-screenshot".to_string(),
            last.display().to_string(),
            "--disk".to_string(),
            format!("path={},format=raw", disk.display()),
        ])
    };
    let mut vm = Vm::start(&with_last(&img));
    let code = vm.wait_exit_code(Duration::from_secs(180));
    // A triple fault, or an emulation failure on a nested KVM whose
    // emulator lacks what the fault needs.
    assert!(code == 11 || code == 12, "exit {code}\n{}", vm.describe());
    let shot = kiln_tests::screen::decode_png(&std::fs::read(&last).unwrap());
    assert_eq!((shot.width, shot.height), (1024, 768));
    for (x, y) in [(0, 0), (255, 0), (17, 200), (255, 255)] {
        assert_eq!(shot.pixel(x, y), [x as u8, y as u8, 0x80], "({x}, {y})");
    }
    assert_eq!(shot.pixel(0, 400), [0xff, 0, 0]);
    assert!(!dir.path().join("last.png.tmp").exists());

    std::fs::remove_file(&last).unwrap();
    let mut vm = Vm::start(&with_last(&kiln_tests::disk::mbr_disk(dir.path())));
    assert_eq!(
        vm.wait_exit_code(Duration::from_secs(120)),
        0,
        "{}",
        vm.describe()
    );
    assert!(!last.exists(), "no picture after a power off");
}
