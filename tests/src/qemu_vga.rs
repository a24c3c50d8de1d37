//! QEMU 7.2 with its standard VGA (`-device VGA`, the device kiln-vmm's
//! display models) as the reference for the display tests and benchmark:
//! started on the display probe's disk with the same SeaBIOS, driven
//! through QMP (`screendump` to a PPM, read back).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::guest_file;
use crate::screen::Shot;

/// A running QEMU with the display probe's disk.
pub struct QemuVga {
    pub child: Child,
    qmp: BufReader<UnixStream>,
    serial: std::path::PathBuf,
}

impl Drop for QemuVga {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl QemuVga {
    /// Start QEMU in `dir` on `disk` (virtio-blk), SeaBIOS from the guest
    /// cache, `-device VGA`, QMP on `dir/qmp.sock`; `extra` arguments
    /// after (e.g. `-vnc unix:PATH`).
    pub fn start(dir: &Path, disk: &Path, extra: &[&str]) -> QemuVga {
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
            .args(extra)
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
        let mut q = QemuVga {
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

    /// Run a QMP command (JSON); panics on an error answer.
    pub fn execute(&mut self, cmd: &str) {
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

    /// Wait until the serial output holds `needle`.
    pub fn wait_serial(&self, needle: &str) {
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
    pub fn screendump(&mut self, file: &Path) -> Shot {
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
