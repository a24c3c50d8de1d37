//! The probe guests on the reference VMM, QEMU 7.2 with KVM (`-M pc`,
//! SeaBIOS, PVH boot), so that a probe test failing on kiln-vmm points at
//! kiln-vmm and not at the probe. QEMU comes from scripts/setup.sh.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::disk::{assert_only_sector_1, blank_raw, sector_pattern};
use kiln_tests::{assert_lines, kvm_available, probe, rtc, ScratchDir};

/// Boot `name` under QEMU (it must end by itself, within `timeout`); returns
/// the serial output.
fn run_qemu(name: &str, extra: &[&str], timeout: Duration) -> String {
    let dir = ScratchDir::new("qemu").unwrap();
    let log = dir.path().join("serial.log");
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-enable-kvm", "-M", "pc", "-cpu", "host,-arch-capabilities"])
        .args([
            "-m",
            "64",
            "-display",
            "none",
            "-nodefaults",
            "-monitor",
            "none",
        ])
        .args(["-no-reboot", "-serial"])
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(probe(name))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 not found: run scripts/setup.sh");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{name} under QEMU did not end within {timeout:?}: {}",
                String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let serial = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    assert!(status.success(), "qemu {name}: {status}\n{serial}");
    serial
}

const TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn qemu_hello() {
    if !kvm_available("qemu_hello") {
        return;
    }
    let out = run_qemu("hello", &[], TIMEOUT);
    assert!(out.starts_with('*'), "{out}");
    assert!(
        out.contains("hello from a kiln probe\nhello: powering off\n"),
        "{out}"
    );
}

#[test]
fn qemu_smp_four_cpus() {
    if !kvm_available("qemu_smp_four_cpus") {
        return;
    }
    let out = run_qemu("smp", &["-smp", "4"], TIMEOUT);
    assert!(out.contains("smp: MADT lists 4 cpus\n"), "{out}");
    for id in 1..4 {
        assert!(out.contains(&format!("cpu {id} up\n")), "{out}");
    }
    assert!(out.contains("cpus 4\n"), "{out}");
}

#[test]
fn qemu_rtc_binary_12h() {
    if !kvm_available("qemu_rtc_binary_12h") {
        return;
    }
    let out = run_qemu("rtc", &["-append", "binary 12h"], TIMEOUT);
    let host = rtc::host_seconds();
    let guest = rtc::line_seconds(&out).unwrap_or_else(|| panic!("no RTC line: {out}"));
    // QEMU's clock starts from the host's at start-up; the probe ran during
    // the last few seconds (SeaBIOS first).
    assert!(
        (host - guest).abs() <= 5,
        "guest {guest} host {host}: {out}"
    );
    assert!(out.contains("RTC regB 0x04"), "{out}");
}

#[test]
fn qemu_rtc_update_interrupt() {
    if !kvm_available("qemu_rtc_update_interrupt") {
        return;
    }
    let out = run_qemu("rtcirq", &[], TIMEOUT);
    let c = out
        .lines()
        .find_map(|l| l.strip_prefix("rtcirq: vector 0x48 pending, register C "))
        .and_then(|v| v.trim().parse::<u8>().ok())
        .unwrap_or_else(|| panic!("no interrupt seen: {out}"));
    assert_eq!(c & 0x90, 0x90, "IRQF and UF in register C {c:#x}: {out}");
}

#[test]
fn qemu_crash_and_reset_end_the_run() {
    if !kvm_available("qemu_crash_and_reset_end_the_run") {
        return;
    }
    // With -no-reboot, QEMU exits on a triple fault and on a reset.
    let out = run_qemu("crash", &[], TIMEOUT);
    assert_eq!(out, "!", "crash ran on: {out}");
    let out = run_qemu("reset", &[], TIMEOUT);
    assert!(out.contains("reset: through the i8042"), "{out}");
    assert!(!out.contains("still running"), "{out}");
}

/// Probe `name` under QEMU with a blank raw disk on QEMU's own
/// virtio-blk-pci (transitional, the default on `-M pc`): its output has
/// `lines` and no FAIL, and the disk holds the probe's pattern in sector 1
/// only.
fn qemu_virtio_legacy(name: &str, lines: &[&str]) {
    let dir = ScratchDir::new(name).unwrap();
    let img = blank_raw(dir.path(), "disk.raw");
    let drive = format!("file={},format=raw,if=none,id=d0", img.display());
    let out = run_qemu(
        name,
        &["-drive", &drive, "-device", "virtio-blk-pci,drive=d0"],
        TIMEOUT,
    );
    assert_lines(&out, lines, &out);
    assert_only_sector_1(&std::fs::read(&img).unwrap(), &sector_pattern(5, 11));
}

/// The legacy virtio probe against QEMU's own transitional virtio-blk:
/// the same lines, the same bytes on the disk.
#[test]
fn qemu_virtio_legacy_on_a_transitional_disk() {
    if !kvm_available("qemu_virtio_legacy_on_a_transitional_disk") {
        return;
    }
    qemu_virtio_legacy(
        "virtio_legacy",
        &[
            "virtio-legacy: I/O BAR moved to 0xd000",
            "virtio-legacy: ISR queue bit set, cleared by the read",
            "left vector 0x50 pending in the LAPIC",
            "virtio-legacy: read back and verified 512 bytes",
            "virtio-legacy: done",
        ],
    );
}

/// The level/active-low variant of the legacy probe on QEMU (whose
/// in-kernel IOAPIC is KVM's too): the INTx arrives and the entry's remote
/// IRR is set, as on kiln-vmm.
#[test]
fn qemu_virtio_legacy_level_on_a_transitional_disk() {
    if !kvm_available("qemu_virtio_legacy_level_on_a_transitional_disk") {
        return;
    }
    qemu_virtio_legacy(
        "virtio_legacy_level",
        &[
            "virtio-legacy: level active-low entry delivered, remote IRR set",
            "left vector 0x50 pending in the LAPIC",
            "virtio-legacy: done",
        ],
    );
}
