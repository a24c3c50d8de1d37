//! A config drive as kiln-vmm gets it from kilnd: an ISO 9660 image
//! labelled `config-2` (built here with genisoimage and Nova's arguments)
//! as the second virtio-blk disk with `readonly=on`. SeaBIOS boots the
//! config drive probe (images/mbr/config_drive.s) from the first disk; it
//! counts two hard disks, reads the ISO's primary volume descriptor (block
//! 16) from BIOS drive 0x81 and prints its volume id, and its write back is
//! refused. The same image attached writable takes the write, so the
//! refusal is `readonly=on`'s doing; the read-only image is unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kiln_tests::disk::config_drive_probe_disk;
use kiln_tests::{kvm_available, ScratchDir, Vm, VmSpec};

/// A small config drive in `dir`, as kilnd's `config_drive::build` makes it.
fn config_drive(dir: &Path) -> PathBuf {
    let tree = dir.join("tree/openstack/latest");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("meta_data.json"), r#"{"uuid":"u","name":"n"}"#).unwrap();
    let iso = dir.join("disk.config");
    let st = Command::new("genisoimage")
        .arg("-o")
        .arg(&iso)
        .args(["-ldots", "-allow-lowercase", "-allow-multidot", "-l"])
        .args([
            "-publisher",
            "Kiln tests",
            "-quiet",
            "-J",
            "-r",
            "-V",
            "config-2",
        ])
        .arg(dir.join("tree"))
        .status()
        .expect("run genisoimage (scripts/setup.sh installs it)");
    assert!(st.success());
    iso
}

fn boot(probe: &Path, iso: &Path, readonly: bool) -> String {
    let ro = if readonly { ",readonly=on" } else { "" };
    let spec = VmSpec::seabios().args([
        "--disk".to_string(),
        format!("path={},format=raw", probe.display()),
        "--disk".to_string(),
        format!("path={},format=raw{ro}", iso.display()),
    ]);
    let vm = Vm::run_to_poweroff(&spec, Duration::from_secs(120));
    let out = vm.serial();
    for want in ["KILNCD-DISKS 2", "KILNCD-PVD config-2"] {
        assert!(out.contains(want), "{want}: {}", vm.describe());
    }
    assert!(!out.contains("KILNCD-FAIL"), "{}", vm.describe());
    out
}

#[test]
fn seabios_reads_a_read_only_config_drive_as_the_second_disk() {
    if !kvm_available("seabios_reads_a_read_only_config_drive_as_the_second_disk") {
        return;
    }
    let dir = ScratchDir::new("config-drive-seabios").unwrap();
    let probe = config_drive_probe_disk(dir.path());
    let iso = config_drive(dir.path());
    let bytes = std::fs::read(&iso).unwrap();
    assert_eq!(&bytes[16 * 2048 + 1..16 * 2048 + 6], b"CD001");

    let out = boot(&probe, &iso, true);
    assert!(
        out.contains("KILNCD-RO") && !out.contains("KILNCD-WRITABLE"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&iso).unwrap(),
        bytes,
        "the read-only image changed"
    );

    let out = boot(&probe, &iso, false);
    assert!(out.contains("KILNCD-WRITABLE"), "{out}");
}
