//! Third-party guest code on our virtio-blk: SeaBIOS (the Debian build the
//! project fetches into cache/guest/bios.bin) enumerates PCI, moves the
//! disk's BAR to where it allocates (top down below the IOAPIC), drives
//! virtio-blk in modern mode and boots an MBR from a raw and a qcow2 image;
//! the MBR prints a line and powers off. A transitional disk
//! (`transitional=on`) boots too: SeaBIOS binds to its legacy ID and,
//! finding the modern capabilities, picks the modern interface.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::disk::mbr_disk;
use kiln_tests::{guest_file, kiln_vmm, kvm_available, ScratchDir};

/// Boot SeaBIOS with `disk` (`--disk` value); returns (serial, vmm log).
fn boot(dir: &Path, disk: &str) -> (String, String) {
    let serial = dir.join("serial.log");
    let log = dir.join("vmm.log");
    let mut child = Command::new(kiln_vmm())
        .arg("--firmware")
        .arg(guest_file("bios.bin"))
        .args(["--memory", "128M", "--log-level", "debug", "--disk", disk])
        .arg("--serial-log")
        .arg(&serial)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn kiln-vmm");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = String::from_utf8_lossy(&fs::read(&serial).unwrap_or_default()).into_owned();
    let log = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "kiln-vmm: {status:?}\n--- serial ---\n{out}\n--- log ---\n{log}"
    );
    (out, log)
}

/// Boot SeaBIOS from the MBR disk as a raw image with the `--disk`
/// options `options` (`,key=value...`); returns (serial, vmm log).
fn boot_raw_mbr(tag: &str, options: &str) -> (String, String) {
    let dir = ScratchDir::new(tag).unwrap();
    let img = mbr_disk(dir.path());
    boot(
        dir.path(),
        &format!("path={},format=raw{options}", img.display()),
    )
}

fn check(out: &str, log: &str) {
    assert!(
        out.contains("kiln MBR booted from virtio-blk"),
        "--- serial ---\n{out}\n--- log ---\n{log}"
    );
    assert!(log.contains("using modern (1.0) virtio mode"), "{log}");
    // SeaBIOS moved the BAR; the VMM followed.
    assert!(log.contains("BAR 0 now at"), "{log}");
}

#[test]
fn seabios_boots_an_mbr_from_a_raw_virtio_disk() {
    if !kvm_available("seabios_boots_an_mbr_from_a_raw_virtio_disk") {
        return;
    }
    let (out, log) = boot_raw_mbr("sbraw", "");
    check(&out, &log);
}

#[test]
fn seabios_boots_an_mbr_from_a_qcow2_virtio_disk() {
    if !kvm_available("seabios_boots_an_mbr_from_a_qcow2_virtio_disk") {
        return;
    }
    let dir = ScratchDir::new("sbqcow").unwrap();
    let raw = mbr_disk(dir.path());
    let img = dir.path().join("disk.qcow2");
    let st = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&img)
        .status()
        .expect("run qemu-img (scripts/setup.sh installs it)");
    assert!(st.success());
    let (out, log) = boot(dir.path(), &format!("path={},format=qcow2", img.display()));
    check(&out, &log);
}

#[test]
fn seabios_boots_an_mbr_from_a_transitional_virtio_disk() {
    if !kvm_available("seabios_boots_an_mbr_from_a_transitional_virtio_disk") {
        return;
    }
    let (out, log) = boot_raw_mbr("sbtrans", ",transitional=on");
    assert!(
        out.contains("kiln MBR booted from virtio-blk"),
        "--- serial ---\n{out}\n--- log ---\n{log}"
    );
    // SeaBIOS found 1af4:1001 and chose the modern interface (it prefers
    // it whenever the capabilities are there), in BAR 2.
    assert!(log.contains("id=1af4:1001"), "{log}");
    assert!(log.contains("using modern (1.0) virtio mode"), "{log}");
    assert!(log.contains("uses the Modern interface"), "{log}");
    assert!(!log.contains("uses the Legacy interface"), "{log}");
    // It placed both BARs: the memory BAR moved (the VMM followed), the
    // I/O BAR landed where the VMM had put it (SeaBIOS starts at 0xc000).
    assert!(log.contains("BAR 2 now at"), "{log}");
    assert!(
        log.contains("bar 0, addr 0000c000, size 00000100 [io]"),
        "{log}"
    );
}
