//! The display probe (images/mbr/vga.s) on the reference, QEMU 7.2 with
//! `-device VGA` (its standard VGA, the device kiln-vmm models) and the
//! same SeaBIOS, against kiln-vmm with `--display vga`: QEMU's screendump
//! (through QMP, a PPM) and kiln-vmm's screenshot agree on the SeaBIOS
//! banner's row of the text screen (QEMU widens the DAC's 6-bit values a
//! little differently, so within 3 per channel; its cursor blinks, so the
//! banner row, not the cursor's) and, exactly, on the 1024x768x32 VBE
//! pattern.

use std::time::Duration;

use kiln_tests::disk::{vga_probe_disk, vga_probe_go};
use kiln_tests::qemu_vga::QemuVga;
use kiln_tests::screen::screenshot;
use kiln_tests::{kvm_available, ScratchDir, Vm, VmSpec};

#[test]
fn the_probe_looks_the_same_on_qemu_vga() {
    if !kvm_available("the_probe_looks_the_same_on_qemu_vga") {
        return;
    }
    let dir = ScratchDir::new("vga-qemu").unwrap();
    let disk = vga_probe_disk(dir.path());
    let mut qemu = QemuVga::start(dir.path(), &disk, &[]);
    qemu.wait_serial("KILNVGA TEXT");
    let q_text = qemu.screendump(&dir.path().join("text.ppm"));
    vga_probe_go(&disk);
    qemu.wait_serial("KILNVGA VBE");
    let q_vbe = qemu.screendump(&dir.path().join("vbe.ppm"));
    drop(qemu);

    // A fresh disk: the first one has its go already.
    let kdir = ScratchDir::new("vga-kiln").unwrap();
    let disk = vga_probe_disk(kdir.path());
    let spec = VmSpec::seabios().args([
        "--display".to_string(),
        "vga".to_string(),
        "--disk".to_string(),
        format!("path={},format=raw", disk.display()),
    ]);
    let mut vm = Vm::start(&spec);
    vm.wait_serial_line("KILNVGA TEXT", Duration::from_secs(120));
    let (k_text, _) = screenshot(&vm);
    vga_probe_go(&disk);
    vm.wait_serial_line("KILNVGA VBE", Duration::from_secs(60));
    let (k_vbe, _) = screenshot(&vm);

    assert_eq!((q_text.width, q_text.height), (720, 400));
    assert_eq!((k_text.width, k_text.height), (720, 400));
    let mut lit = 0;
    for y in 0..16 {
        for x in 0..720 {
            let (q, k) = (q_text.pixel(x, y), k_text.pixel(x, y));
            for c in 0..3 {
                assert!(
                    q[c].abs_diff(k[c]) <= 3,
                    "banner row pixel ({x}, {y}): QEMU {q:?}, kiln-vmm {k:?}"
                );
            }
            lit += usize::from(k != [0, 0, 0]);
        }
    }
    assert!(lit > 300, "the banner is drawn ({lit} lit pixels)");
    assert_eq!((q_vbe.width, q_vbe.height), (1024, 768));
    assert!(
        q_vbe.rgb == k_vbe.rgb,
        "the VBE pattern is the same picture on QEMU"
    );
}
