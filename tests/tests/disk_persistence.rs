//! A guest write that completed before the VMM ended in an orderly way is
//! in the image afterwards (issue #11), on real KVM with the default
//! seccomp filters (`--seccomp kill`).
//!
//! SeaBIOS boots images/mbr/persist.s, which writes sector 2 through int
//! 13h (virtio-blk underneath), reads it back and prints `KILN-WRITE-OK n`.
//! Then the VMM ends in one of the orderly ways: the guest powers off, the
//! guest reboots (exit 10), the control API's kill, SIGTERM, or the control
//! API's reset (a re-exec; the second boot must find the first boot's
//! write, and writes its own, before a SIGTERM). The disk is raw, a qcow2
//! image, a zlib-compressed qcow2 image written in place, a qcow2 overlay
//! on a raw base (the case), a qcow2 overlay on a zlib-compressed
//! qcow2 base, or the top of a three-deep qcow2 chain; a few cases again
//! with the disk on the AHCI controller (`bus=sata`).
//! Afterwards `qemu-img compare` finds the image equal to the expected
//! disk, `qemu-img check` finds it clean (no errors, no leaks), and every
//! base is as it was.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_tests::disk::{
    backing_args, persist_disk, persist_sector, qcow2_overlay, qemu_img, raw_to_qcow2, PersistEnd,
};
use kiln_tests::{kvm_available, try_run, ScratchDir, Vm, VmSpec};

/// SeaBIOS takes a few seconds here; much more under load.
const BOOT: Duration = Duration::from_secs(180);
/// An orderly end writes the disks back in at most 8 s.
const END: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum Image {
    Raw,
    /// A standalone qcow2 image with 512-byte clusters (sector 2 is an
    /// unallocated cluster of its own: the write allocates).
    Qcow2,
    /// A zlib-compressed qcow2 image, written in place: the write copies
    /// the compressed cluster to a new one and drops the old one's
    /// reference (written back only at the end: no leak allowed).
    Compressed,
    /// A qcow2 overlay on the raw disk.
    OverlayOnRaw,
    /// A qcow2 overlay on a zlib-compressed qcow2 base.
    OverlayOnCompressed,
    /// top.qcow2 -> mid.qcow2 -> base.qcow2.
    Chain3,
}

#[derive(Clone, Copy, Debug)]
enum End {
    PowerOff,
    GuestReboot,
    ApiKill,
    Sigterm,
    /// The control API's reset, a second boot, then SIGTERM.
    Reset,
}

/// The disk the VM boots: (image, its format, the bases below it).
fn make_image(dir: &Path, raw: &Path, kind: Image) -> (PathBuf, &'static str, Vec<PathBuf>) {
    let qcow2 = |name: &str| dir.join(name);
    match kind {
        Image::Raw => (raw.to_owned(), "raw", vec![]),
        Image::Qcow2 => {
            let img = qcow2("disk.qcow2");
            raw_to_qcow2(
                raw,
                &img,
                // Sparse down to a sector: zeros stay unallocated.
                &["-o", "cluster_size=512", "-S", "512"],
            );
            (img, "qcow2", vec![])
        }
        Image::Compressed => {
            let img = qcow2("disk.qcow2");
            compress(raw, &img);
            (img, "qcow2", vec![])
        }
        Image::OverlayOnRaw => {
            let top = qcow2("top.qcow2");
            qcow2_overlay(&top, raw, "raw");
            (top, "qcow2", vec![raw.to_owned()])
        }
        Image::OverlayOnCompressed => {
            let base = qcow2("base.qcow2");
            compress(raw, &base);
            let top = qcow2("top.qcow2");
            qcow2_overlay(&top, &base, "qcow2");
            (top, "qcow2", vec![base])
        }
        Image::Chain3 => {
            let base = qcow2("base.qcow2");
            raw_to_qcow2(raw, &base, &[]);
            let mid = qcow2("mid.qcow2");
            qcow2_overlay(&mid, &base, "qcow2");
            let top = qcow2("top.qcow2");
            qcow2_overlay(&top, &mid, "qcow2");
            (top, "qcow2", vec![mid, base])
        }
    }
}

/// `raw` as a zlib-compressed qcow2 image `img`.
fn compress(raw: &Path, img: &Path) {
    raw_to_qcow2(raw, img, &["-c", "-o", "compression_type=zlib"]);
}

fn sigterm(vm: &Vm) {
    // SAFETY: kill() with a child's pid and a signal number; no pointers.
    let r = unsafe { libc::kill(vm.pid() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(r, 0, "kill -TERM");
}

/// Ends `vm` as `end` says (the first boot has printed its line); returns
/// the exit code, the time from the request to the exit, and the number of
/// boots that wrote.
fn end_vm(vm: &mut Vm, end: End) -> (i32, Duration, u8) {
    let t = Instant::now();
    let (code, boots) = match end {
        End::PowerOff | End::GuestReboot => (vm.wait_exit_code(END), 1),
        End::ApiKill => {
            let st = vm.put("kill").expect("PUT /v1/vm/kill");
            assert!((200..300).contains(&st), "kill: {st}\n{}", vm.describe());
            (vm.wait_exit_code(END), 1)
        }
        End::Sigterm => {
            sigterm(vm);
            (vm.wait_exit_code(END), 1)
        }
        End::Reset => {
            let st = vm.put("reset").expect("PUT /v1/vm/reset");
            assert!((200..300).contains(&st), "reset: {st}\n{}", vm.describe());
            // The second boot found the first one's write.
            vm.wait_serial("KILN-WRITE-OK 2", BOOT);
            let t = Instant::now();
            sigterm(vm);
            return (vm.wait_exit_code(END), t.elapsed(), 2);
        }
    };
    (code, t.elapsed(), boots)
}

/// Boots `kind` (with `--disk` options `opts`), ends the VM as `end`
/// says, and checks the image.
fn persists(tag: &str, kind: Image, end: End, opts: &str) {
    if !kvm_available(tag) {
        return;
    }
    let dir = ScratchDir::new(tag).unwrap();
    let mode = match end {
        End::PowerOff => PersistEnd::PowerOff,
        End::GuestReboot => PersistEnd::Reboot,
        _ => PersistEnd::Halt,
    };
    let raw = persist_disk(dir.path(), mode);
    let pristine = dir.path().join("pristine.raw");
    fs::copy(&raw, &pristine).unwrap();
    let (img, fmt, bases) = make_image(dir.path(), &raw, kind);
    let originals: Vec<(PathBuf, PathBuf)> = bases
        .iter()
        .map(|b| {
            let keep = b.with_extension("orig");
            fs::copy(b, &keep).unwrap();
            (b.clone(), keep)
        })
        .collect();

    let spec = VmSpec::seabios().args([
        "--seccomp".to_owned(),
        "kill".to_owned(),
        "--disk".to_owned(),
        format!(
            "path={},format={fmt}{}{opts}",
            img.display(),
            backing_args(&img)
        ),
    ]);
    let mut vm = Vm::start(&spec);
    vm.wait_api(BOOT);
    vm.wait_serial("KILN-WRITE-OK 1", BOOT);
    let (code, took, boots) = end_vm(&mut vm, end);
    let want = match end {
        End::PowerOff => 0,
        End::GuestReboot => 10,
        _ => 13,
    };
    assert_eq!(code, want, "exit code\n{}", vm.describe());
    assert!(
        !vm.serial().contains("KILN-WRITE-FAIL"),
        "{}",
        vm.describe()
    );
    eprintln!("{tag}: {end:?} -> exit {code} in {} ms", took.as_millis());

    // The image is the pristine disk with the last boot's sector 2.
    let mut expected = fs::read(&pristine).unwrap();
    expected[1024..1536].copy_from_slice(&persist_sector(boots));
    let exp = dir.path().join("expected.raw");
    fs::write(&exp, &expected).unwrap();
    let cmp = try_run(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", fmt])
            .arg(&exp)
            .arg(&img),
    );
    if let Err(e) = cmp {
        let got = dir.path().join("got.raw");
        qemu_img(&[
            "convert",
            "-f",
            fmt,
            "-O",
            "raw",
            img.to_str().unwrap(),
            got.to_str().unwrap(),
        ]);
        let got = fs::read(&got).unwrap();
        panic!(
            "{tag}: the image is not the expected disk: {e}\nsector 2 now starts {:02x?}\n{}",
            &got[1024..1040],
            vm.describe()
        );
    }
    if fmt == "qcow2" {
        // Exit status 0: no corruption, no leaked cluster.
        let check = Command::new("qemu-img")
            .arg("check")
            .arg(&img)
            .output()
            .expect("qemu-img check");
        assert!(
            check.status.success(),
            "{tag}: qemu-img check: {}\n{}{}",
            check.status,
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let log = vm.vmm_log();
    let disk = if opts.contains("bus=sata") {
        "sata0"
    } else {
        "virtio-blk0"
    };
    assert!(log.contains(&format!("{disk}: written back in")), "{log}");
    for (base, orig) in &originals {
        assert_eq!(
            fs::read(base).unwrap(),
            fs::read(orig).unwrap(),
            "{tag}: {} changed",
            base.display()
        );
    }
}

macro_rules! matrix {
    ($($name:ident: $kind:ident, $end:ident;)*) => {
        $(
            #[test]
            fn $name() {
                persists(stringify!($name), Image::$kind, End::$end, "");
            }
        )*
    };
}

matrix! {
    raw_poweroff: Raw, PowerOff;
    raw_guest_reboot: Raw, GuestReboot;
    raw_api_kill: Raw, ApiKill;
    raw_sigterm: Raw, Sigterm;
    raw_reset: Raw, Reset;
    qcow2_poweroff: Qcow2, PowerOff;
    qcow2_guest_reboot: Qcow2, GuestReboot;
    qcow2_api_kill: Qcow2, ApiKill;
    qcow2_sigterm: Qcow2, Sigterm;
    qcow2_reset: Qcow2, Reset;
    compressed_poweroff: Compressed, PowerOff;
    compressed_guest_reboot: Compressed, GuestReboot;
    compressed_api_kill: Compressed, ApiKill;
    compressed_sigterm: Compressed, Sigterm;
    compressed_reset: Compressed, Reset;
    overlay_poweroff: OverlayOnRaw, PowerOff;
    overlay_guest_reboot: OverlayOnRaw, GuestReboot;
    overlay_api_kill: OverlayOnRaw, ApiKill;
    overlay_sigterm: OverlayOnRaw, Sigterm;
    overlay_reset: OverlayOnRaw, Reset;
    compressed_base_poweroff: OverlayOnCompressed, PowerOff;
    compressed_base_guest_reboot: OverlayOnCompressed, GuestReboot;
    compressed_base_api_kill: OverlayOnCompressed, ApiKill;
    compressed_base_sigterm: OverlayOnCompressed, Sigterm;
    compressed_base_reset: OverlayOnCompressed, Reset;
    chain3_poweroff: Chain3, PowerOff;
    chain3_guest_reboot: Chain3, GuestReboot;
    chain3_api_kill: Chain3, ApiKill;
    chain3_sigterm: Chain3, Sigterm;
    chain3_reset: Chain3, Reset;
}

/// The disk's worker polls its queue and is rate limited: the end does not
/// depend on reaching it.
#[test]
fn overlay_polling_rate_limited_sigterm() {
    persists(
        "overlay_polling_rate_limited_sigterm",
        Image::OverlayOnRaw,
        End::Sigterm,
        ",poll_us=1000,iops=20",
    );
}

/// A SATA disk on the AHCI controller (its writes done on the vCPU
/// thread) is written back at the end as a virtio disk is.
#[test]
fn sata_overlay_on_compressed_sigterm() {
    persists(
        "sata_overlay_on_compressed_sigterm",
        Image::OverlayOnCompressed,
        End::Sigterm,
        ",bus=sata",
    );
}

#[test]
fn sata_qcow2_api_kill() {
    persists(
        "sata_qcow2_api_kill",
        Image::Qcow2,
        End::ApiKill,
        ",bus=sata",
    );
}

#[test]
fn sata_chain3_reset() {
    persists("sata_chain3_reset", Image::Chain3, End::Reset, ",bus=sata");
}
