//! The display probe (images/mbr/vga.s) on the reference, QEMU 7.2 with
//! `-device VGA` (its standard VGA, the device kiln-vmm models) and the
//! same SeaBIOS, against kiln-vmm with `--display vga`: QEMU's screendump
//! (through QMP, a PPM) and kiln-vmm's screenshot agree on the SeaBIOS
//! banner's row of the text screen (QEMU widens the DAC's 6-bit values a
//! little differently, so within 3 per channel; its cursor blinks, so the
//! banner row, not the cursor's) and, exactly, on the 1024x768x32 VBE
//! pattern.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use kiln_tests::disk::{vga_probe_disk, vga_probe_go};
use kiln_tests::screen::{screenshot, Shot};
use kiln_tests::{guest_file, kvm_available, ScratchDir, Vm, VmSpec};

struct Qemu {
    child: Child,
    qmp: BufReader<UnixStream>,
    serial: std::path::PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Qemu {
    fn start(dir: &Path, disk: &Path) -> Qemu {
        let serial = dir.join("qemu-serial.log");
        let qmp = dir.join("qmp.sock");
        let child = Command::new("qemu-system-x86_64")
            .args(["-enable-kvm", "-M", "pc", "-cpu", "host,-arch-capabilities"])
            .args([
                "-m",
                "128",
                "-display",
                "none",
                "-nodefaults",
                "-device",
                "VGA",
            ])
            .arg("-bios")
            .arg(guest_file("bios.bin"))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 (scripts/setup.sh)");
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match UnixStream::connect(&qmp) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("QMP socket: {e}"),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut q = Qemu {
            child,
            qmp: BufReader::new(stream),
            serial,
        };
        let mut greeting = String::new();
        q.qmp.read_line(&mut greeting).unwrap();
        assert!(greeting.contains("QMP"), "{greeting}");
        q.execute(r#"{"execute":"qmp_capabilities"}"#);
        q
    }

    fn execute(&mut self, cmd: &str) {
        self.qmp.get_mut().write_all(cmd.as_bytes()).unwrap();
        loop {
            let mut line = String::new();
            self.qmp.read_line(&mut line).unwrap();
            assert!(!line.contains("\"error\""), "{cmd}: {line}");
            if line.contains("\"return\"") {
                return;
            }
        }
    }

    fn wait_serial(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = std::fs::read_to_string(&self.serial).unwrap_or_default();
            if out.contains(needle) {
                return;
            }
            assert!(Instant::now() < deadline, "QEMU: no {needle:?}: {out}");
            sleep(Duration::from_millis(20));
        }
    }

    /// QMP `screendump`, read back from its PPM.
    fn screendump(&mut self, file: &Path) -> Shot {
        self.execute(&format!(
            r#"{{"execute":"screendump","arguments":{{"filename":"{}"}}}}"#,
            file.display()
        ));
        let ppm = std::fs::read(file).unwrap();
        let mut fields = Vec::new();
        let mut at = 0;
        while fields.len() < 4 {
            while ppm[at].is_ascii_whitespace() {
                at += 1;
            }
            let start = at;
            while !ppm[at].is_ascii_whitespace() {
                at += 1;
            }
            fields.push(String::from_utf8_lossy(&ppm[start..at]).into_owned());
        }
        assert_eq!((fields[0].as_str(), fields[3].as_str()), ("P6", "255"));
        let (width, height) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
        let rgb = ppm[at + 1..].to_vec();
        assert_eq!(rgb.len(), width * height * 3);
        Shot { width, height, rgb }
    }
}

#[test]
fn the_probe_looks_the_same_on_qemu_vga() {
    if !kvm_available("the_probe_looks_the_same_on_qemu_vga") {
        return;
    }
    let dir = ScratchDir::new("vga-qemu").unwrap();
    let disk = vga_probe_disk(dir.path());
    let mut qemu = Qemu::start(dir.path(), &disk);
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
