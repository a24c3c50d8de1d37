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
//! an IOPS limit (the worker's rate-limit waits); and an overlay on a SATA
//! disk, whose commands run on the vCPU thread. About 3 s a boot here.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_tests::disk::{backing_args, qcow2_overlay, raw_to_qcow2};
use kiln_tests::{kvm_available, repo_root, ScratchDir, Vm, VmSpec};

const CLUSTER: usize = 64 << 10;

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
    raw_to_qcow2(&raw, &base, &["-c", "-o", &opt]);
    let base_s = base.to_str().unwrap();
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
    qcow2_overlay(&ov, backing, "qcow2");
    ov
}

/// Boot SeaBIOS from the qcow2 `disk` (with `,options`) under the default
/// seccomp filters; the boot sector must report its writes read back and
/// the VMM must exit through the guest's power-off.
fn boot_rw_check(disk: &Path, options: &str) {
    let disk_arg = format!(
        "path={},format=qcow2{}{options}",
        disk.display(),
        backing_args(disk)
    );
    let spec = VmSpec::seabios().args(["--disk", &disk_arg]);
    // The shipped filters: no --seccomp flag at all.
    assert!(!spec.extra_args.iter().any(|a| a == "--seccomp"));
    let mut vm = Vm::start(&spec);
    let status = vm.wait_exit(Duration::from_secs(180));
    assert_ne!(
        status.signal(),
        Some(libc::SIGSYS),
        "kiln-vmm was killed by its seccomp filter\n{}",
        vm.describe()
    );
    assert!(status.success(), "kiln-vmm: {status:?}\n{}", vm.describe());
    vm.assert_serial_lines(&["KILNRW-OK"]);
    assert!(!vm.serial().contains("KILNRW-FAIL"), "{}", vm.describe());
}

#[test]
fn write_over_a_zlib_compressed_backing_image() {
    if !kvm_available("write_over_a_zlib_compressed_backing_image") {
        return;
    }
    let dir = ScratchDir::new("scz").unwrap();
    let base = compressed_base(dir.path(), "zlib");
    let ov = overlay(dir.path(), &base, "ov.qcow2");
    boot_rw_check(&ov, "");
}

#[test]
fn write_over_a_zstd_compressed_backing_image() {
    if !kvm_available("write_over_a_zstd_compressed_backing_image") {
        return;
    }
    let dir = ScratchDir::new("scs").unwrap();
    let base = compressed_base(dir.path(), "zstd");
    let ov = overlay(dir.path(), &base, "ov.qcow2");
    boot_rw_check(&ov, "");
}

/// The same overlay on the AHCI controller (`bus=sata`): there the vCPU
/// thread that issues the command reads, inflates and writes the clusters,
/// under the vCPU filter.
#[test]
fn write_over_a_compressed_backing_image_on_a_sata_disk() {
    if !kvm_available("write_over_a_compressed_backing_image_on_a_sata_disk") {
        return;
    }
    let dir = ScratchDir::new("scsata").unwrap();
    let base = compressed_base(dir.path(), "zstd");
    let ov = overlay(dir.path(), &base, "ov.qcow2");
    boot_rw_check(&ov, ",bus=sata");
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
    boot_rw_check(&top, ",direct=on");
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
    boot_rw_check(&base, ",poll_us=200,iops=4");
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
    let disk_arg = format!(
        "path={},format=qcow2,direct=on{}",
        ov.display(),
        backing_args(&ov)
    );
    let mut vm = Vm::start(&VmSpec::seabios().args(["--disk", &disk_arg]));
    let wait_oks = |vm: &mut Vm, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let out = vm.wait_serial("KILNRW-OK", Duration::from_secs(180));
            if out.matches("KILNRW-OK").count() >= n {
                return;
            }
            assert!(!out.contains("KILNRW-FAIL"), "{}", vm.describe());
            assert!(
                Instant::now() < deadline,
                "no KILNRW-OK #{n}\n{}",
                vm.describe()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_oks(&mut vm, 1);
    assert_eq!(vm.put("reset").expect("reset"), 204, "{}", vm.describe());
    wait_oks(&mut vm, 2);
    assert!(
        vm.try_status().is_none(),
        "kiln-vmm ended\n{}",
        vm.describe()
    );
    let log = vm.vmm_log();
    assert!(log.contains("restarting the VMM in place"), "{log}");
}

/// Every thread of a running kiln-vmm runs under a filter, in kill mode:
/// the main thread (control loop), the vCPU, the RTC timer, the legacy
/// INTx resampler, the disk's worker (started from the vCPU thread when
/// SeaBIOS activated the disk, so it carries the vCPU filter and its own)
/// and the guest agent's virtio-console worker.
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
    let disk_arg = format!("path={},format=raw,transitional=on", img.display());
    let vnc = dir.path().join("vnc.sock");
    let vnc = vnc.to_str().unwrap();
    let agent = dir.path().join("qga.sock");
    let agent = agent.to_str().unwrap();
    let mut vm = Vm::start(&VmSpec::seabios().args([
        "--disk",
        &disk_arg,
        "--display",
        "vga",
        "--vnc",
        vnc,
        "--agent",
        agent,
    ]));
    let out = vm.wait_serial("KILNHOLD", Duration::from_secs(120));
    let pid = vm.pid();
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
    drop(vm);
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
    assert_eq!(filters("vnc"), "1", "{ctx}");
    // The virtio-console's worker starts with the device, from the main
    // thread: its own filter only (a vCPU's would forbid accept4). Its
    // paths (accept, the client's bytes both ways, a full socket) run
    // under it in `virtio_console.rs`.
    assert_eq!(filters("virtio-console"), "1", "{ctx}");
}
