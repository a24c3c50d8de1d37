//! The VMM survives, under its shipped seccomp filters (the default
//! `--seccomp kill`), the disk paths a guest drives through compressed
//! qcow2 images (issue #11: the first write over a compressed image killed
//! kiln-vmm with SIGSYS, glibc's heap shrink in the disk worker reaching
//! `openat`).
//!
//! SeaBIOS (cache/guest/bios.bin) boots the boot sector
//! images/mbr/rw_check.s, which writes a sector in each of the disk's first
//! two 64 KiB clusters through int 13h, reads each back and compares; both
//! clusters are compressed in the image at the bottom of the chain, so each
//! write makes the disk worker inflate a compressed cluster for
//! copy-on-write. Disks: an overlay (`qemu-img create -b -F qcow2`) over a
//! zlib- and over a zstd-compressed image; a chain of two overlays, opened
//! with O_DIRECT; and a compressed image written in place, with polling and
//! an IOPS limit (the worker's rate-limit waits). About 3 s a boot here.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::disk::backing_args;
use kiln_tests::{guest_file, kiln_vmm, kvm_available, repo_root, ScratchDir};

const CLUSTER: usize = 64 << 10;

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img (scripts/setup.sh installs it)");
    assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
}

/// A raw disk holding the rw_check boot sector, and data in its second
/// cluster too (so that `qemu-img convert -c` compresses both clusters the
/// boot sector writes into). `hold`: the boot sector halts after its check
/// instead of powering off.
fn raw_boot_disk(dir: &Path, hold: bool) -> PathBuf {
    let src = repo_root().join("images/mbr/rw_check.s");
    let mut disk = kiln_tests::asm::assemble_flat(&src, 0x7c00, dir);
    assert_eq!(disk.len(), 512, "the boot sector is one sector");
    disk[509] = u8::from(hold);
    disk.resize(4 << 20, 0);
    for (i, b) in disk[CLUSTER..2 * CLUSTER].iter_mut().enumerate() {
        *b = b"kiln compressed cluster filler "[i % 31];
    }
    let img = dir.join("boot.raw");
    fs::write(&img, &disk).unwrap();
    img
}

/// `boot.raw` converted to a compressed qcow2 (`compression`: zlib or
/// zstd), checked to really hold compressed clusters.
fn compressed_base(dir: &Path, compression: &str) -> PathBuf {
    compressed_base_with(dir, compression, false)
}

fn compressed_base_with(dir: &Path, compression: &str, hold: bool) -> PathBuf {
    let raw = raw_boot_disk(dir, hold);
    let base = dir.join(format!("base-{compression}.qcow2"));
    let opt = format!("compression_type={compression}");
    let (raw_s, base_s) = (raw.to_str().unwrap(), base.to_str().unwrap());
    qemu_img(&[
        "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", &opt, raw_s, base_s,
    ]);
    let check = Command::new("qemu-img")
        .args(["check", "--output=json", "-f", "qcow2", base_s])
        .output()
        .unwrap();
    let check = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.contains("\"compressed-clusters\": 2,"),
        "qemu-img did not compress both clusters: {check}"
    );
    base
}

/// A qcow2 overlay `name` over the qcow2 `backing`.
fn overlay(dir: &Path, backing: &Path, name: &str) -> PathBuf {
    let ov = dir.join(name);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        backing.to_str().unwrap(),
        "-F",
        "qcow2",
        ov.to_str().unwrap(),
    ]);
    ov
}

/// Boot SeaBIOS from the qcow2 `disk` (with `,options`) under the default
/// seccomp filters; the boot sector must report its writes read back and
/// the VMM must exit through the guest's power-off.
fn boot_rw_check(dir: &Path, disk: &Path, options: &str) {
    let serial = dir.join("serial.log");
    let log = dir.join("vmm.log");
    let disk_arg = format!(
        "path={},format=qcow2{}{options}",
        disk.display(),
        backing_args(disk)
    );
    let mut cmd = Command::new(kiln_vmm());
    cmd.arg("--firmware")
        .arg(guest_file("bios.bin"))
        .args([
            "--memory",
            "128M",
            "--log-level",
            "info",
            "--disk",
            &disk_arg,
        ])
        .arg("--serial-log")
        .arg(&serial);
    // The shipped filters: no --seccomp flag at all.
    assert!(!cmd.get_args().any(|a| a == "--seccomp"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn kiln-vmm");
    let deadline = Instant::now() + Duration::from_secs(180);
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
    let context = format!("--- serial ---\n{out}\n--- vmm log ---\n{log}");
    let status = status.unwrap_or_else(|| panic!("kiln-vmm did not end in 180 s\n{context}"));
    assert_ne!(
        status.signal(),
        Some(libc::SIGSYS),
        "kiln-vmm was killed by its seccomp filter\n{context}"
    );
    assert!(status.success(), "kiln-vmm: {status:?}\n{context}");
    assert!(out.contains("KILNRW-OK"), "{context}");
    assert!(!out.contains("KILNRW-FAIL"), "{context}");
}

#[test]
fn write_over_a_zlib_compressed_backing_image() {
    if !kvm_available("write_over_a_zlib_compressed_backing_image") {
        return;
    }
    let dir = ScratchDir::new("scz").unwrap();
    let base = compressed_base(dir.path(), "zlib");
    let ov = overlay(dir.path(), &base, "ov.qcow2");
    boot_rw_check(dir.path(), &ov, "");
}

#[test]
fn write_over_a_zstd_compressed_backing_image() {
    if !kvm_available("write_over_a_zstd_compressed_backing_image") {
        return;
    }
    let dir = ScratchDir::new("scs").unwrap();
    let base = compressed_base(dir.path(), "zstd");
    let ov = overlay(dir.path(), &base, "ov.qcow2");
    boot_rw_check(dir.path(), &ov, "");
}

/// Two overlays deep, every file opened with O_DIRECT (kiln-block's
/// io_uring or AIO path in the worker).
#[test]
fn write_through_a_two_deep_chain_with_o_direct() {
    if !kvm_available("write_through_a_two_deep_chain_with_o_direct") {
        return;
    }
    let dir = ScratchDir::new("scd").unwrap();
    let base = compressed_base(dir.path(), "zstd");
    let mid = overlay(dir.path(), &base, "mid.qcow2");
    let top = overlay(dir.path(), &mid, "top.qcow2");
    boot_rw_check(dir.path(), &top, ",direct=on");
}

/// The compressed image itself, written in place (copy-on-write out of its
/// own compressed clusters), with the worker polling its queue and waiting
/// on an IOPS limit.
#[test]
fn write_into_a_compressed_image_with_polling_and_a_rate_limit() {
    if !kvm_available("write_into_a_compressed_image_with_polling_and_a_rate_limit") {
        return;
    }
    let dir = ScratchDir::new("scp").unwrap();
    let base = compressed_base(dir.path(), "zlib");
    boot_rw_check(dir.path(), &base, ",poll_us=200,iops=4");
}

/// A reset from the control API re-executes kiln-vmm in place, under the
/// main thread's filter, which opens the chain again (O_DIRECT) and boots
/// SeaBIOS again; the boot sector writes over the same clusters again.
#[test]
fn write_again_after_a_reset_in_place() {
    if !kvm_available("write_again_after_a_reset_in_place") {
        return;
    }
    let dir = ScratchDir::new("scr").unwrap();
    let base = compressed_base_with(dir.path(), "zstd", true);
    let ov = overlay(dir.path(), &base, "ov.qcow2");
    let serial = dir.path().join("serial.log");
    let sock = dir.path().join("api.sock");
    let log = dir.path().join("vmm.log");
    let disk_arg = format!(
        "path={},format=qcow2,direct=on{}",
        ov.display(),
        backing_args(&ov)
    );
    let mut child = Command::new(kiln_vmm())
        .arg("--firmware")
        .arg(guest_file("bios.bin"))
        .args([
            "--memory",
            "128M",
            "--log-level",
            "info",
            "--disk",
            &disk_arg,
        ])
        .arg("--serial-log")
        .arg(&serial)
        .arg("--api-socket")
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn kiln-vmm");
    let wait_oks = |child: &mut std::process::Child, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let out = String::from_utf8_lossy(&fs::read(&serial).unwrap_or_default()).into_owned();
            if out.matches("KILNRW-OK").count() >= n {
                return;
            }
            let ended = child.try_wait().unwrap();
            if Instant::now() > deadline || ended.is_some() || out.contains("KILNRW-FAIL") {
                let _ = child.kill();
                let status = ended.or_else(|| child.wait().ok());
                let log = fs::read_to_string(&log).unwrap_or_default();
                panic!("waiting for KILNRW-OK #{n}: kiln-vmm {status:?}\n{out}\n--- vmm log ---\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_oks(&mut child, 1);
    let (code, body) = kiln_tests::api::request(&sock, "PUT", "/v1/vm/reset").expect("reset");
    assert_eq!(code, 204, "{body}");
    wait_oks(&mut child, 2);
    assert!(child.try_wait().unwrap().is_none(), "kiln-vmm ended");
    let _ = child.kill();
    let _ = child.wait();
    let log = fs::read_to_string(&log).unwrap_or_default();
    assert!(log.contains("restarting the VMM in place"), "{log}");
}

/// Every thread of a running kiln-vmm runs under a filter, in kill mode:
/// the main thread (control loop), the vCPU, the RTC timer, the legacy
/// INTx resampler and the disk's worker (started from the vCPU thread when
/// SeaBIOS activated the disk, so it carries the vCPU filter and its own).
/// With `seccomp::tests` showing that each filter kills on a call outside
/// it (openat among them), every thread kind dies on a forbidden call.
#[test]
fn every_thread_of_a_running_vmm_is_filtered() {
    if !kvm_available("every_thread_of_a_running_vmm_is_filtered") {
        return;
    }
    let dir = ScratchDir::new("scthr").unwrap();
    let src = repo_root().join("images/mbr/hold.s");
    let mut disk = kiln_tests::asm::assemble_flat(&src, 0x7c00, dir.path());
    disk.resize(1 << 20, 0);
    let img = dir.path().join("hold.raw");
    fs::write(&img, &disk).unwrap();
    let serial = dir.path().join("serial.log");
    let disk_arg = format!("path={},format=raw,transitional=on", img.display());
    let mut child = Command::new(kiln_vmm())
        .arg("--firmware")
        .arg(guest_file("bios.bin"))
        .args(["--memory", "128M", "--disk", &disk_arg])
        .arg("--serial-log")
        .arg(&serial)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kiln-vmm");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    let out = loop {
        let out = String::from_utf8_lossy(&fs::read(&serial).unwrap_or_default()).into_owned();
        if out.contains("KILNHOLD") {
            break out;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "the boot sector never said KILNHOLD: {:?}\n{out}",
                child.wait()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut threads = Vec::new();
    for e in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let status = fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        threads.push((
            comm.trim().to_owned(),
            field("Seccomp:"),
            field("Seccomp_filters:"),
        ));
    }
    let _ = child.kill();
    let _ = child.wait();
    let ctx = format!("{threads:?}\n{out}");
    for (comm, mode, _) in &threads {
        assert_eq!(
            mode, "2",
            "thread {comm} runs without a seccomp filter: {ctx}"
        );
    }
    let filters = |name: &str| {
        threads
            .iter()
            .find(|t| t.0 == name)
            .map(|t| t.2.clone())
            .unwrap_or_else(|| panic!("no thread {name}: {ctx}"))
    };
    assert_eq!(filters("vcpu0"), "1", "{ctx}");
    assert_eq!(filters("rtc"), "1", "{ctx}");
    assert_eq!(filters("intx-resample"), "1", "{ctx}");
    assert_eq!(filters("virtio-blk0-io"), "2", "{ctx}");
}
