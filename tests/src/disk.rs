//! Disks for the probe guests that write a pattern to sector 1
//! (`virtio_pci`, `virtio_legacy`): a blank raw file, the pattern, and the
//! check that the host file holds it there and nowhere else; and the disk
//! that firmware boots, holding the MBR probe.

use std::fs;
use std::path::{Path, PathBuf};

/// The size of the blank disks: 4096 sectors.
pub const BLANK_DISK_BYTES: u64 = 2 << 20;

/// A zero-filled raw disk `dir/name` of [`BLANK_DISK_BYTES`].
pub fn blank_raw(dir: &Path, name: &str) -> PathBuf {
    let img = dir.join(name);
    fs::File::create(&img)
        .and_then(|f| f.set_len(BLANK_DISK_BYTES))
        .unwrap_or_else(|e| panic!("create {}: {e}", img.display()));
    img
}

/// An 8 MiB raw disk `dir/mbr.raw` whose first sector is the MBR probe
/// (images/mbr/poweroff.s, assembled in `dir`): it prints a line on COM1
/// and powers off.
pub fn mbr_disk(dir: &Path) -> PathBuf {
    boot_sector_disk(dir, "poweroff", "mbr.raw")
}

/// An 8 MiB raw disk whose boot sector is the SMBIOS probe
/// (images/mbr/smbios.s): it prints `SMBIOS SM3 UUID <hex>`, the type 1
/// UUID bytes in table order (see [`smbios_uuid_hex`]), and powers off.
pub fn smbios_probe_disk(dir: &Path) -> PathBuf {
    boot_sector_disk(dir, "smbios", "smbios.raw")
}

/// An 8 MiB raw disk whose boot sector is the display probe
/// (images/mbr/vga.s): text through int 10h, then a 1024x768x32 VBE
/// pattern (see the source for what it draws and prints).
pub fn vga_probe_disk(dir: &Path) -> PathBuf {
    boot_sector_disk(dir, "vga", "vga.raw")
}

/// An 8 MiB raw disk whose boot sector is the keyboard probe
/// (images/mbr/kbd.s): `KILNKBD READY`, then `KEY ss cc` on COM1 for each
/// key the BIOS reads (int 16h AH=10h: scan code, character).
pub fn kbd_probe_disk(dir: &Path) -> PathBuf {
    boot_sector_disk(dir, "kbd", "kbd.raw")
}

/// Tell the display probe on `disk` (from [`vga_probe_disk`]) to leave
/// text mode: `GO!!` at the start of sector 1, which it polls.
pub fn vga_probe_go(disk: &Path) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .unwrap_or_else(|e| panic!("open {}: {e}", disk.display()));
    f.write_all_at(b"GO!!", 512)
        .unwrap_or_else(|e| panic!("write {}: {e}", disk.display()));
}

/// An 8 MiB raw disk whose boot sector is the config drive probe
/// (images/mbr/config_drive.s): it reads the ISO's primary volume
/// descriptor from the second disk, prints `KILNCD-PVD <volume id>` and
/// whether the disk refused a write (`KILNCD-RO`), and powers off.
pub fn config_drive_probe_disk(dir: &Path) -> PathBuf {
    boot_sector_disk(dir, "config_drive", "config_drive.raw")
}

/// How the SMBIOS probe prints `uuid` (text form): SMBIOS stores the
/// first three fields little-endian.
pub fn smbios_uuid_hex(uuid: &str) -> String {
    let g: Vec<&str> = uuid.split('-').collect();
    let swap = |s: &str| -> String {
        let bytes: Vec<&str> = (0..s.len()).step_by(2).map(|i| &s[i..i + 2]).collect();
        bytes.into_iter().rev().collect()
    };
    format!("{}{}{}{}{}", swap(g[0]), swap(g[1]), swap(g[2]), g[3], g[4]).to_lowercase()
}

/// images/mbr/`name`.s assembled as the boot sector of an 8 MiB raw disk
/// `file` in `dir`.
fn boot_sector_disk(dir: &Path, name: &str, file: &str) -> PathBuf {
    let src = crate::repo_root().join(format!("images/mbr/{name}.s"));
    let mut disk = crate::asm::assemble_flat(&src, 0x7c00, dir);
    assert_eq!(disk.len(), 512, "the MBR is one sector");
    assert_eq!(disk[510..], [0x55, 0xaa]);
    disk.resize(8 << 20, 0);
    let img = dir.join(file);
    fs::write(&img, &disk).unwrap_or_else(|e| panic!("write {}: {e}", img.display()));
    img
}

/// A probe's 512-byte pattern: byte i is `mul * i + add` (mod 256).
pub fn sector_pattern(mul: u32, add: u32) -> Vec<u8> {
    (0..512u32).map(|i| (i * mul + add) as u8).collect()
}

/// `data` (a whole disk) holds `pattern` in sector 1 and zeros elsewhere.
pub fn assert_only_sector_1(data: &[u8], pattern: &[u8]) {
    assert_eq!(&data[512..1024], pattern, "sector 1 on the host");
    assert!(data[..512].iter().all(|&b| b == 0), "sector 0 untouched");
    assert!(data[1024..].iter().all(|&b| b == 0), "the rest untouched");
}

/// The disk file at `img` is still all zeros.
pub fn assert_untouched(img: &Path) {
    let data = fs::read(img).unwrap_or_else(|e| panic!("read {}: {e}", img.display()));
    assert!(
        data.iter().all(|&b| b == 0),
        "{} was written",
        img.display()
    );
}

/// Runs the real `qemu-img` with `args`; panics with its output if it fails.
pub fn qemu_img(args: &[&str]) -> String {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img (scripts/setup.sh installs qemu-utils)");
    assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `path` as the `&str` that `qemu-img` takes.
fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Creates the qcow2 overlay `top` over `backing`, whose format is
/// `backing_fmt`, with the real `qemu-img`.
pub fn qcow2_overlay(top: &Path, backing: &Path, backing_fmt: &str) {
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        arg(backing),
        "-F",
        backing_fmt,
        arg(top),
    ]);
}

/// Creates a 1 MiB qcow2 `image` whose header names `backing` (any name:
/// `-u`, qemu-img does not open it) as a backing file in `backing_fmt`.
pub fn qcow2_naming_backing(image: &Path, backing: &str, backing_fmt: &str) {
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        backing,
        "-F",
        backing_fmt,
        arg(image),
        "1M",
    ]);
}

/// Creates a 1 MiB qcow2 `image` whose data lives in the external file
/// `data`.
pub fn qcow2_with_data_file(image: &Path, data: &Path) {
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", arg(data)),
        arg(image),
        "1M",
    ]);
}

/// Converts the raw disk `raw` to the qcow2 image `qcow2`, with `extra`
/// `qemu-img convert` options (`-c`, `-o ...`, `-S ...`).
pub fn raw_to_qcow2(raw: &Path, qcow2: &Path, extra: &[&str]) {
    let mut args = vec!["convert", "-q", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(extra);
    args.extend([arg(raw), arg(qcow2)]);
    qemu_img(&args);
}

/// The `,backing=FILE,backing_format=FMT` options that name `image`'s
/// whole backing chain to kiln-vmm's `--disk` (which opens only the backing
/// files it is given), as `qemu-img info --backing-chain` reads it.
pub fn backing_args(image: &Path) -> String {
    let info = qemu_img(&[
        "info",
        "-U",
        "--backing-chain",
        "--output=json",
        image.to_str().unwrap(),
    ]);
    let chain: Vec<serde_json::Value> = serde_json::from_str(&info).unwrap();
    chain[1..]
        .iter()
        .map(|i| {
            format!(
                ",backing={},backing_format={}",
                i["filename"].as_str().unwrap(),
                i["format"].as_str().unwrap()
            )
        })
        .collect()
}

/// What the persistence boot sector (images/mbr/persist.s) does after its
/// write: its `mode` byte, at offset 440 of the sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersistEnd {
    /// Halt with interrupts off (ignores the ACPI power button).
    Halt = 0,
    /// Power off through ACPI S5.
    PowerOff = 1,
    /// Reboot through port 0xcf9.
    Reboot = 2,
}

/// An 8 MiB raw disk `dir/persist.raw` whose first sector is the
/// persistence probe (images/mbr/persist.s, assembled in `dir`) set to end
/// as `end`: it writes sector 2 through int 13h, reads it back and prints
/// `KILN-WRITE-OK n` (n: how many boots wrote it).
pub fn persist_disk(dir: &Path, end: PersistEnd) -> PathBuf {
    let src = crate::repo_root().join("images/mbr/persist.s");
    let mut disk = crate::asm::assemble_flat(&src, 0x7c00, dir);
    assert_eq!(disk.len(), 512, "the MBR is one sector");
    assert_eq!(disk[510..], [0x55, 0xaa]);
    disk[440] = end as u8;
    disk.resize(8 << 20, 0);
    let img = dir.join("persist.raw");
    fs::write(&img, &disk).unwrap_or_else(|e| panic!("write {}: {e}", img.display()));
    img
}

/// Sector 2 as the persistence probe writes it on its `count`th boot.
pub fn persist_sector(count: u8) -> Vec<u8> {
    let mut s = b"KILNPERS".to_vec();
    s.push(count);
    s.extend((9..512u32).map(|i| (i as u8) ^ 0xa5));
    s
}

/// `dir/cd.iso`: an ISO 9660 image whose El Torito no-emulation boot
/// image (four 512-byte sectors loaded at 0x7c00) is the CD-ROM probe
/// (images/mbr/cdboot.s): it prints `KILN-CD-BOOT`, reads the volume
/// descriptor through int 13h and prints `KILN-CD-PVD-OK`.
pub fn el_torito_iso(dir: &Path) -> PathBuf {
    let src = crate::repo_root().join("images/mbr/cdboot.s");
    let boot = crate::asm::assemble_flat(&src, 0x7c00, dir);
    assert_eq!(boot.len(), 2048);
    let root = dir.join("iso");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("boot.img"), &boot).unwrap();
    fs::write(root.join("README.TXT"), "kiln CD-ROM test\n").unwrap();
    let iso = dir.join("cd.iso");
    let st = std::process::Command::new("genisoimage")
        .args(["-quiet", "-V", "KILNCD", "-b", "boot.img", "-c", "boot.cat"])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-o"])
        .arg(&iso)
        .arg(&root)
        .status()
        .expect("genisoimage (scripts/setup.sh installs it)");
    assert!(st.success());
    iso
}
