//! Helpers shared by the integration tests: running the real `qemu-img`
//! (tests FAIL when it is missing), deterministic data, and reference files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

// Each test file uses some of these (as with `dead_code` above).
#[allow(unused_imports)]
pub use kiln_tests::disk::{
    qcow2_naming_backing, qcow2_overlay, qcow2_with_data_file, qemu_img, raw_to_qcow2,
};

/// Runs qemu-io on a qcow2 image with one command.
pub fn qemu_io(img: &Path, fmt: &str, cmd: &str) {
    let out = Command::new("qemu-io")
        .args(["-f", fmt, "-c", cmd])
        .arg(img)
        .output()
        .expect("qemu-io must be installed (package qemu-utils)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !stdout.contains("failed"),
        "qemu-io {cmd:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `qemu-img check` must report no errors (leaks are allowed when `allow_leaks`).
pub fn check_clean(img: &Path, allow_leaks: bool) {
    let out = Command::new("qemu-img")
        .args(["check", "-f", "qcow2", "--output=json"])
        .arg(img)
        .output()
        .expect("qemu-img must be installed");
    let s = String::from_utf8_lossy(&out.stdout);
    // Exit codes: 0 clean, 1 check failed to run, 2 corruptions, 3 leaks only.
    let code = out.status.code().unwrap_or(-1);
    let ok = code == 0 || (allow_leaks && code == 3);
    assert!(
        ok,
        "qemu-img check {} exit {code}: {s}{}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !s.contains("\"corruptions\": ") || s.contains("\"corruptions\": 0"),
        "corruptions: {s}"
    );
}

/// `qemu-img compare` must find the image equal to a raw reference file.
pub fn compare_raw(img: &Path, fmt: &str, raw: &Path) {
    let out = Command::new("qemu-img")
        .args(["compare", "-f", fmt, "-F", "raw"])
        .arg(img)
        .arg(raw)
        .output()
        .expect("qemu-img must be installed");
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {}{}",
        img.display(),
        raw.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A small deterministic PRNG for offsets and lengths.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kiln-block-")
        .tempdir()
        .expect("tempdir")
}

pub fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Opens an image over the backing chain its own headers name: these tests
/// trust their files (kiln-block itself opens only a chain named to it).
pub fn open_trusted(
    path: &Path,
    format: kiln_block::DiskFormat,
    opts: kiln_block::OpenOptions,
) -> kiln_block::Result<Box<dyn kiln_block::Disk>> {
    let chain = kiln_block::header_chain(path, format)?;
    kiln_block::open_disk_chain(path, format, opts, &chain)
}
