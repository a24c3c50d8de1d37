//! Third-party guest code on our AHCI controller: SeaBIOS (cache/guest/
//! bios.bin) finds the ICH9 AHCI function, moves its ABAR, probes the
//! ports (IDENTIFY PACKET DEVICE, aborted on a disk, then IDENTIFY DEVICE),
//! and boots
//! - from a SATA disk (raw and qcow2): the boot sector images/mbr/
//!   rw_check.s writes LBA 1 and 130 through int 13h (WRITE DMA on the
//!   port), reads them back and powers off; the test then finds the
//!   sectors in the file (the qcow2 after `qemu-img check`);
//! - from an ATAPI CD-ROM: an El Torito no-emulation image
//!   (images/mbr/cdboot.s) in an ISO that `genisoimage` builds here; it
//!   reads the ISO's volume descriptor through int 13h (ATAPI READ(10)).
//!
//! All under the shipped seccomp filters (the commands run on the vCPU
//! thread).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_tests::disk::{qemu_img, raw_to_qcow2};
use kiln_tests::{kvm_available, repo_root, ScratchDir, Vm, VmSpec};

const SECTOR: usize = 512;

/// A 4 MiB raw disk whose boot sector is rw_check.
fn rw_check_disk(dir: &Path) -> PathBuf {
    let src = repo_root().join("images/mbr/rw_check.s");
    let mut disk = kiln_tests::asm::assemble_flat(&src, 0x7c00, dir);
    assert_eq!(disk.len(), SECTOR);
    disk.resize(4 << 20, 0);
    let img = dir.join("boot.raw");
    fs::write(&img, &disk).unwrap();
    img
}

/// The sector rw_check writes: byte i is i ^ 0xa5.
fn pattern() -> Vec<u8> {
    (0..SECTOR).map(|i| (i as u8) ^ 0xa5).collect()
}

fn assert_written(data: &[u8]) {
    for lba in [1, 130] {
        assert_eq!(
            &data[lba * SECTOR..(lba + 1) * SECTOR],
            &pattern()[..],
            "LBA {lba} holds what the guest wrote"
        );
    }
    assert!(data[2 * SECTOR..130 * SECTOR].iter().all(|&b| b == 0));
}

fn boot(args: &[&str]) -> Vm {
    let spec = VmSpec::seabios().args(args.iter().copied());
    Vm::run_to_poweroff(&spec, Duration::from_secs(180))
}

fn check_ahci_log(vm: &Vm) {
    let log = vm.vmm_log();
    assert!(log.contains("ahci: ICH9 AHCI at PCI"), "{}", vm.describe());
    // SeaBIOS placed the ABAR; the VMM followed.
    assert!(log.contains("AHCI ABAR now at"), "{}", vm.describe());
}

#[test]
fn seabios_boots_and_writes_a_raw_sata_disk() {
    if !kvm_available("seabios_boots_and_writes_a_raw_sata_disk") {
        return;
    }
    let dir = ScratchDir::new("ahciraw").unwrap();
    let img = rw_check_disk(dir.path());
    let disk = format!("path={},format=raw,bus=sata", img.display());
    let vm = boot(&["--disk", &disk]);
    vm.assert_serial_lines(&["KILNRW-OK"]);
    check_ahci_log(&vm);
    assert_written(&fs::read(&img).unwrap());
}

#[test]
fn seabios_boots_and_writes_a_qcow2_sata_disk() {
    if !kvm_available("seabios_boots_and_writes_a_qcow2_sata_disk") {
        return;
    }
    let dir = ScratchDir::new("ahciq").unwrap();
    let raw = rw_check_disk(dir.path());
    let img = dir.path().join("boot.qcow2");
    raw_to_qcow2(&raw, &img, &[]);
    let disk = format!("path={},format=qcow2,bus=sata", img.display());
    let vm = boot(&["--disk", &disk]);
    vm.assert_serial_lines(&["KILNRW-OK"]);
    check_ahci_log(&vm);
    // The image is whole (metadata written back at the end) and holds
    // the sectors.
    qemu_img(&["check", "-q", "-f", "qcow2", img.to_str().unwrap()]);
    let out = dir.path().join("out.raw");
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "qcow2",
        "-O",
        "raw",
        img.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_written(&fs::read(&out).unwrap());
}

#[test]
fn seabios_boots_an_el_torito_iso_from_the_atapi_cdrom() {
    if !kvm_available("seabios_boots_an_el_torito_iso_from_the_atapi_cdrom") {
        return;
    }
    let dir = ScratchDir::new("ahcicd").unwrap();
    let iso = kiln_tests::disk::el_torito_iso(dir.path());
    let iso = iso.to_str().unwrap();
    let vm = boot(&["--cdrom", iso]);
    vm.assert_serial_lines(&["KILN-CD-BOOT", "KILN-CD-PVD-OK"]);
    check_ahci_log(&vm);
    assert!(
        vm.vmm_log().contains("ahci port 0: CD-ROM"),
        "{}",
        vm.describe()
    );
}

/// A SATA disk without a boot sector on port 0 and the CD-ROM on port 1:
/// SeaBIOS skips the disk (no 0xAA55) and boots the CD; the disk is not
/// written.
#[test]
fn seabios_boots_the_cdrom_after_a_blank_sata_disk() {
    if !kvm_available("seabios_boots_the_cdrom_after_a_blank_sata_disk") {
        return;
    }
    let dir = ScratchDir::new("ahcimix").unwrap();
    let iso = kiln_tests::disk::el_torito_iso(dir.path());
    let blank = kiln_tests::disk::blank_raw(dir.path(), "blank.raw");
    let disk = format!("path={},format=raw,bus=sata", blank.display());
    let vm = boot(&["--disk", &disk, "--cdrom", iso.to_str().unwrap()]);
    vm.assert_serial_lines(&["KILN-CD-BOOT", "KILN-CD-PVD-OK"]);
    assert!(
        vm.vmm_log().contains("ahci port 1: CD-ROM"),
        "{}",
        vm.describe()
    );
    assert!(fs::read(&blank).unwrap().iter().all(|&b| b == 0));
}
