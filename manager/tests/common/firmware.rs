//! Helpers of the firmware-boot tests: the firmware files fetched into
//! cache/guest (scripts/fetch-guest.sh), a kilnd configured with them, and
//! a disk image holding the MBR probe (images/mbr/poweroff.s).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_api::compute::Image;

use super::Kilnd;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `cache/guest/NAME`, which must exist.
pub fn guest_file(name: &str) -> PathBuf {
    let p = repo_root().join("cache/guest").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-guest.sh",
        p.display()
    );
    p
}

/// A `[firmware]` section naming the fetched copies in cache/guest.
pub fn firmware_config() -> String {
    format!(
        "[firmware]\nbios = \"{}\"\nuefi_code = \"{}\"\nuefi_vars_template = \"{}\"\n",
        guest_file("bios.bin").display(),
        guest_file("OVMF_CODE.fd").display(),
        guest_file("OVMF_VARS.fd").display()
    )
}

/// Assembles the MBR probe into `dir` and writes an 8 MiB raw disk with it
/// as sector 0; answers the disk's path.
pub fn mbr_disk(dir: &Path) -> PathBuf {
    let src = repo_root().join("images/mbr/poweroff.s");
    let o = dir.join("mbr.o");
    let bin = dir.join("mbr.bin");
    super::run(Command::new("as").args(["--32", "-o"]).arg(&o).arg(&src));
    super::run(
        Command::new("ld")
            .args(["-m", "elf_i386", "-Ttext", "0x7c00", "--oformat", "binary"])
            .arg("-o")
            .arg(&bin)
            .arg(&o),
    );
    let mut disk = std::fs::read(&bin).unwrap();
    assert_eq!(disk.len(), 512, "the MBR is one sector");
    assert_eq!(disk[510..], [0x55, 0xaa]);
    disk.resize(8 << 20, 0);
    let path = dir.join("mbr.raw");
    std::fs::write(&path, &disk).unwrap();
    path
}

/// Imports a disk image with a firmware property (`None`: left out) and
/// waits until it is active.
pub fn import_disk_fw(
    k: &Kilnd,
    name: &str,
    path: &Path,
    format: &str,
    firmware: Option<&str>,
) -> Image {
    let fw = firmware
        .map(|f| format!(r#","firmware":"{f}""#))
        .unwrap_or_default();
    k.import_disk_with(name, path, format, &fw)
}
