//! Malformed guest images and guests that break themselves: `kiln-vmm`
//! must end with a clear error and the right exit status, never a panic,
//! a hang or a death by signal.

use std::fs;
use std::path::Path;
use std::time::Duration;

use kiln_tests::{kvm_available, probe, ScratchDir, Vm, VmSpec};

const EXIT_HOST_ERROR: i32 = 1;
const EXIT_TRIPLE_FAULT: i32 = 11;
const EXIT_EMULATION_FAILURE: i32 = 12;
/// Generous: the machine is shared and often loaded; a passing run is fast.
const SHORT: Duration = Duration::from_secs(60);

/// ELF64 program header fields (offsets inside one header).
const P_OFFSET: usize = 8;
const P_PADDR: usize = 24;
const P_FILESZ: usize = 32;
const P_MEMSZ: usize = 40;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;

fn u16_at(b: &[u8], off: usize) -> usize {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap()) as usize
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// File offset of the first program header of type `ty`.
fn phdr(elf: &[u8], ty: u32) -> usize {
    let phoff = u64_at(elf, 0x20) as usize;
    let size = u16_at(elf, 0x36);
    let num = u16_at(elf, 0x38);
    (0..num)
        .map(|i| phoff + i * size)
        .find(|&h| u32::from_le_bytes(elf[h..h + 4].try_into().unwrap()) == ty) // p_type
        .expect("program header present")
}

fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Run kiln-vmm on `image`; it must exit (not be killed by a signal) with
/// one of `codes`, and its log must not show a panic.
fn expect_exit(image: &Path, what: &str, codes: &[i32]) -> Vm {
    let mut vm = Vm::start(&VmSpec::new(image).memory_mib(32));
    let status = vm.wait_exit(SHORT);
    let log = vm.vmm_log();
    assert!(
        !log.contains("panicked"),
        "{what}: kiln-vmm panicked\n{}",
        vm.describe()
    );
    let code = status
        .code()
        .unwrap_or_else(|| panic!("{what}: died by a signal ({status})\n{}", vm.describe()));
    assert!(
        codes.contains(&code),
        "{what}: exit {code}, wanted one of {codes:?}\n{}",
        vm.describe()
    );
    vm
}

#[test]
fn malformed_kernel_images_are_clear_errors() {
    if !kvm_available("malformed_kernel_images_are_clear_errors") {
        return;
    }
    let dir = ScratchDir::new("bad").unwrap();
    let good = fs::read(probe("hello")).unwrap();
    let load = phdr(&good, PT_LOAD);
    let note = phdr(&good, PT_NOTE);

    let junk: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty file", Vec::new()),
        ("truncated ELF header", good[..40].to_vec()),
        ("headers only", good[..0x200.min(good.len())].to_vec()),
        ("junk", junk),
    ];
    let mut e = good.clone();
    put_u64(&mut e, load + P_PADDR, 0x7f00_0000_0000);
    cases.push(("segment far beyond guest RAM", e));
    let mut e = good.clone();
    put_u64(&mut e, load + P_FILESZ, u64::MAX / 2);
    put_u64(&mut e, load + P_MEMSZ, u64::MAX / 2);
    cases.push(("segment with a huge size", e));
    let mut e = good.clone();
    put_u64(&mut e, load + P_OFFSET, 1 << 40);
    cases.push(("segment data past the end of the file", e));
    let mut e = good.clone();
    put_u64(&mut e, note + P_OFFSET, 1 << 40);
    cases.push(("note past the end of the file", e));

    for (what, bytes) in cases {
        let path = dir.path().join("kernel");
        fs::write(&path, &bytes).unwrap();
        let vm = expect_exit(&path, what, &[EXIT_HOST_ERROR]);
        assert!(
            vm.vmm_log().to_lowercase().contains("kernel"),
            "{what}: the error does not say what failed\n{}",
            vm.describe()
        );
    }

    // A PVH note whose name size runs off the segment is no PVH note: the
    // image may then boot through its plain ELF entry (in 64-bit mode,
    // where this probe's 32-bit entry code faults) or be refused.
    let mut e = good.clone();
    let note_off = u64_at(&good, note + P_OFFSET) as usize;
    e[note_off..note_off + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes()); // n_namesz
    let path = dir.path().join("kernel");
    fs::write(&path, &e).unwrap();
    expect_exit(
        &path,
        "note with a huge name size",
        &[EXIT_HOST_ERROR, EXIT_TRIPLE_FAULT, EXIT_EMULATION_FAILURE],
    );
}

#[test]
fn pvh_entry_outside_ram_does_not_hang_or_panic() {
    if !kvm_available("pvh_entry_outside_ram_does_not_hang_or_panic") {
        return;
    }
    let dir = ScratchDir::new("entry").unwrap();
    let mut e = fs::read(probe("hello")).unwrap();
    let note = phdr(&e, PT_NOTE);
    let desc = u64_at(&e, note + P_OFFSET) as usize + 16;
    put_u64(&mut e, desc, 0xffff_fff0);
    let path = dir.path().join("kernel");
    fs::write(&path, &e).unwrap();
    // A clear refusal, or the guest faulting at once: never a hang.
    expect_exit(
        &path,
        "PVH entry outside RAM",
        &[EXIT_HOST_ERROR, EXIT_TRIPLE_FAULT, EXIT_EMULATION_FAILURE],
    );
}

#[test]
fn ring0_int3_ends_in_emulation_failure_here() {
    if !kvm_available("ring0_int3_ends_in_emulation_failure_here") {
        return;
    }
    let mut vm = expect_exit(
        &probe("emufail"),
        "int3 in ring 0",
        &[EXIT_EMULATION_FAILURE, EXIT_TRIPLE_FAULT],
    );
    let code = vm.wait_exit_code(SHORT);
    // testbed.md: on this nested KVM (kvm_pvm) ring 0 is emulated and the
    // emulator lacks int3; with hardware virtualization it triple-faults.
    let nested_pvm = Path::new("/sys/module/kvm_pvm").exists();
    let want = if nested_pvm {
        EXIT_EMULATION_FAILURE
    } else {
        EXIT_TRIPLE_FAULT
    };
    assert_eq!(code, want, "{}", vm.describe());
    assert!(vm.serial().starts_with('!'), "{}", vm.describe());
    if code == EXIT_EMULATION_FAILURE {
        let log = vm.vmm_log();
        assert!(
            log.contains("emulation failure") && log.contains("rip="),
            "the log should name the failure and the registers\n{}",
            vm.describe()
        );
    }
}

/// kiln-vmm opens a qcow2 disk's backing file only when `--disk` names it
/// (`backing=`, `backing_format=`) and the header names the same file: an
/// overlay whose header alone names `/etc/shadow`, or names another file
/// than the flag, is a clear host error before the guest runs.
#[test]
fn disk_backing_files_only_when_named() {
    if !kvm_available("disk_backing_files_only_when_named") {
        return;
    }
    let dir = ScratchDir::new("backing").expect("scratch dir");
    let base = dir.path().join("base.raw");
    fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let other = dir.path().join("other.raw");
    fs::write(&other, vec![0u8; 1 << 20]).unwrap();
    let qemu_img = |backing: &Path, img: &Path| {
        let st = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b"])
            .arg(backing)
            .arg(img)
            .arg("1M")
            .status()
            .expect("qemu-img (scripts/setup.sh installs it)");
        assert!(st.success());
    };
    let shadow = dir.path().join("shadow.qcow2");
    qemu_img(Path::new("/etc/shadow"), &shadow);
    let top = dir.path().join("top.qcow2");
    qemu_img(&base, &top);
    let run = |disk: String, codes: &[i32]| {
        let mut vm = Vm::start(
            &VmSpec::new(probe("hello"))
                .memory_mib(32)
                .args(["--disk", &disk]),
        );
        let status = vm.wait_exit(SHORT);
        let log = vm.vmm_log();
        assert!(!log.contains("panicked"), "{}", vm.describe());
        let code = status.code().expect("an exit, not a signal");
        assert!(
            codes.contains(&code),
            "{disk}: exit {code}\n{}",
            vm.describe()
        );
        log
    };
    let s = |p: &Path| p.display().to_string();
    for (disk, why) in [
        (
            format!("path={},format=qcow2", s(&shadow)),
            "which the caller did not give",
        ),
        (
            format!("path={},format=qcow2", s(&top)),
            "which the caller did not give",
        ),
        (
            format!(
                "path={},format=qcow2,backing={},backing_format=raw",
                s(&top),
                s(&other)
            ),
            "as the caller says",
        ),
    ] {
        let log = run(disk.clone(), &[EXIT_HOST_ERROR]);
        assert!(log.contains(why), "{disk}: {log}");
    }
    // Named as its header names it: the VM runs (hello powers off).
    let log = run(
        format!(
            "path={},format=qcow2,backing={},backing_format=raw",
            s(&top),
            s(&base)
        ),
        &[0],
    );
    assert!(log.contains("virtio-blk0:"), "{log}");
}

/// A disk or NIC that cannot work fails before KVM is touched: kiln-vmm
/// runs in a mount namespace where `/dev/kvm` is `/dev/null` (so the first
/// KVM ioctl fails, with a KVM error), and each bad configuration still
/// ends with its own error. A missing disk or backing file, or a NIC that
/// a `--config` file gets wrong, is a bad configuration (exit 2); a disk
/// that exists but cannot be opened as configured is a host error (exit 1)
/// found before KVM too. A good configuration reaches KVM and fails there,
/// which shows the masking works.
#[test]
fn bad_disks_and_nics_fail_before_kvm() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP bad_disks_and_nics_fail_before_kvm: needs root (unshare -m, mount --bind)");
        return;
    }
    let dir = ScratchDir::new("before-kvm").expect("scratch dir");
    let kernel = probe("hello");
    let run = |args: &[String]| {
        let out = std::process::Command::new("unshare")
            .args(["-m", "sh", "-c"])
            .arg(r#"mount --bind /dev/null /dev/kvm && exec "$0" "$@""#)
            .arg(kiln_tests::kiln_vmm())
            .args(args)
            .output()
            .expect("unshare (util-linux)");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (out.status.code().expect("an exit, not a signal"), stderr)
    };
    let flags = |extra: &[&str]| {
        let mut v: Vec<String> = ["--kernel", kernel.to_str().unwrap(), "--memory", "32M"]
            .map(String::from)
            .to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let (code, err) = run(&flags(&[]));
    assert_eq!(code, EXIT_HOST_ERROR, "{err}");
    assert!(err.contains("KVM"), "a good config fails at KVM: {err}");

    let missing = dir.path().join("missing.raw");
    let missing = missing.to_str().unwrap();
    let (code, err) = run(&flags(&["--disk", &format!("path={missing}")]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("disk 0: image {missing}")), "{err}");
    assert!(!err.contains("KVM"), "{err}");

    let raw = dir.path().join("d.raw");
    fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let raw = raw.to_str().unwrap();
    let (code, err) = run(&flags(&[
        "--disk",
        &format!("path={raw},format=qcow2,backing={missing},backing_format=raw"),
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("disk 0: backing file {missing}")),
        "{err}"
    );

    // Exists, but is no qcow2 image: opened before KVM, a host error.
    let (code, err) = run(&flags(&["--disk", &format!("path={raw},format=qcow2")]));
    assert_eq!(code, EXIT_HOST_ERROR, "{err}");
    assert!(err.contains(&format!("opening disk {raw}")), "{err}");
    assert!(!err.contains("KVM"), "{err}");

    let config = dir.path().join("vm.json");
    let json = |nets: &str| {
        format!(
            r#"{{"cpus":{{"count":1}},"memory":{{"size_mib":32}},"kernel":{{"path":{:?}}},"nets":{nets}}}"#,
            kernel.to_str().unwrap()
        )
    };
    for (nets, want) in [
        (
            r#"[{"tap":"kt-bad0","queues":17}]"#,
            "NIC 0: queues must be",
        ),
        (
            r#"[{"tap":"kt-bad0","fd":3}]"#,
            "NIC 0: give exactly one of",
        ),
        (r#"[{"tap":"kt-bad0","mac":"zz"}]"#, "NIC 0: MAC address"),
    ] {
        fs::write(&config, json(nets)).unwrap();
        let (code, err) = run(&["--config".into(), config.to_str().unwrap().into()]);
        assert_eq!(code, 2, "{nets}: {err}");
        assert!(err.contains(want) && !err.contains("KVM"), "{nets}: {err}");
    }

    // SMBIOS values: a malformed UUID, an overlong or NUL-holding string.
    let long = format!("product={}", "p".repeat(65));
    for (smbios, want) in [
        ("uuid=not-a-uuid", "smbios: uuid \"not-a-uuid\""),
        (long.as_str(), "smbios: product is 65 bytes"),
    ] {
        let (code, err) = run(&flags(&["--smbios", smbios]));
        assert_eq!(code, 2, "{smbios}: {err}");
        assert!(
            err.contains(want) && !err.contains("KVM"),
            "{smbios}: {err}"
        );
    }
    fs::write(
        &config,
        format!(
            r#"{{"cpus":{{"count":1}},"memory":{{"size_mib":32}},"kernel":{{"path":{:?}}},"smbios":{{"serial":"a\u0000b"}}}}"#,
            kernel.to_str().unwrap()
        ),
    )
    .unwrap();
    let (code, err) = run(&["--config".into(), config.to_str().unwrap().into()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("smbios: serial contains a NUL"), "{err}");
}

/// SATA disks and CD-ROMs that cannot work end before KVM is opened
/// (`/dev/kvm` masked as above): a CD-ROM image that is missing, not a
/// file, or not ISO 9660; more SATA disks and CD-ROMs than the AHCI
/// controller's six ports; a virtio-only option on a SATA disk; a SATA
/// disk that is missing or not the format named; an unknown bus.
#[test]
fn bad_sata_disks_and_cdroms_fail_before_kvm() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP bad_sata_disks_and_cdroms_fail_before_kvm: needs root (unshare -m)");
        return;
    }
    let dir = ScratchDir::new("ahci-before-kvm").expect("scratch dir");
    let kernel = probe("hello");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new("unshare")
            .args(["-m", "sh", "-c"])
            .arg(r#"mount --bind /dev/null /dev/kvm && exec "$0" "$@""#)
            .arg(kiln_tests::kiln_vmm())
            .args(["--kernel", kernel.to_str().unwrap(), "--memory", "32M"])
            .args(extra)
            .output()
            .expect("unshare (util-linux)");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (out.status.code().expect("an exit, not a signal"), stderr)
    };
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (raw, iso, missing) = (p("d.raw"), p("cd.iso"), p("missing.iso"));
    fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let mut image = vec![0u8; 0x9000];
    image[0x8001..0x8006].copy_from_slice(b"CD001");
    fs::write(&iso, &image).unwrap();
    let sata = format!("path={raw},bus=sata");

    // A good config gets as far as KVM.
    let (code, err) = run(&["--disk", &sata, "--cdrom", &iso]);
    assert_eq!(code, EXIT_HOST_ERROR, "{err}");
    assert!(err.contains("KVM"), "a good config fails at KVM: {err}");

    let six: Vec<&str> = ["--disk", &sata, "--disk", &sata, "--disk", &sata]
        .into_iter()
        .chain(["--cdrom", &iso, "--cdrom", &iso, "--cdrom", &iso])
        .collect();
    let seven: Vec<&str> = six.iter().copied().chain(["--cdrom", &iso]).collect();
    let (code, err) = run(&six);
    assert!(
        err.contains("KVM") && code == EXIT_HOST_ERROR,
        "six fit: {err}"
    );
    let dir_path = dir.path().to_str().unwrap().to_owned();
    let too_small = p("small.iso");
    fs::write(&too_small, vec![0u8; 4096]).unwrap();
    let sata_bw = format!("{sata},bw=1000000");
    let sata_missing = format!("path={missing},bus=sata");
    let sata_qcow2 = format!("path={raw},format=qcow2,bus=sata");
    let cases: [(&[&str], i32, String); 8] = [
        (&["--cdrom", &missing], 2, format!("CD-ROM 0: {missing}")),
        (
            &["--cdrom", &dir_path],
            2,
            "not a file or block device".into(),
        ),
        (&["--cdrom", &raw], 2, "not an ISO 9660 image".into()),
        (&["--cdrom", &too_small], 2, "not an ISO 9660 image".into()),
        (&seven, 2, "need 7 ports: the AHCI controller has 6".into()),
        (
            &["--disk", &sata_bw],
            2,
            "is for virtio disks, not bus=sata".into(),
        ),
        (
            &["--disk", &sata_missing],
            2,
            format!("disk 0: image {missing}"),
        ),
        (
            &["--disk", &sata_qcow2],
            EXIT_HOST_ERROR,
            format!("opening SATA disk {raw}"),
        ),
    ];
    for (args, want_code, want) in cases {
        let (code, err) = run(args);
        assert_eq!(code, want_code, "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: want {want:?} in {err}");
        assert!(!err.contains("KVM"), "{args:?}: {err}");
    }
    let (code, err) = run(&["--disk", &format!("path={raw},bus=scsi")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bus=scsi"), "{err}");
}

/// Display options that cannot work end before KVM is opened (`/dev/kvm`
/// masked as in `bad_disks_and_nics_fail_before_kvm`), with a message
/// that names the problem: a display flag without a display, an unknown
/// display, huge pages with the VGA window, a VGA BIOS that is missing
/// or no option ROM, a VNC socket that cannot be bound, a last screenshot
/// path that is empty or whose folder is missing.
#[test]
fn bad_display_options_fail_before_kvm() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP bad_display_options_fail_before_kvm: needs root (unshare -m)");
        return;
    }
    let dir = ScratchDir::new("display-before-kvm").expect("scratch dir");
    let kernel = probe("hello");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new("unshare")
            .args(["-m", "sh", "-c"])
            .arg(r#"mount --bind /dev/null /dev/kvm && exec "$0" "$@""#)
            .arg(kiln_tests::kiln_vmm())
            .args(["--kernel", kernel.to_str().unwrap(), "--memory", "32M"])
            .args(extra)
            .output()
            .expect("unshare (util-linux)");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (out.status.code().expect("an exit, not a signal"), stderr)
    };
    let small = dir.path().join("small.rom");
    fs::write(&small, [0u8; 100]).unwrap();
    let small = small.to_str().unwrap();
    let missing = dir.path().join("missing.rom");
    let missing = missing.to_str().unwrap();
    let no_dir = dir.path().join("no/such/dir/vnc.sock");
    let no_dir = no_dir.to_str().unwrap();
    let no_dir_png = dir.path().join("no/such/dir/last.png");
    let no_dir_png = no_dir_png.to_str().unwrap();
    for (args, code, want) in [
        (&["--vnc", "/tmp/x.sock"][..], 2, "--display"),
        (&["--last-screenshot", "/tmp/x.png"][..], 2, "--display"),
        (
            &["--display", "vga", "--last-screenshot", ""][..],
            2,
            "last_screenshot is empty",
        ),
        (
            &["--display", "vga", "--last-screenshot", no_dir_png][..],
            2,
            "is not a directory",
        ),
        (&["--vga-rom", small][..], 2, "--display"),
        (
            &["--display", "cirrus"][..],
            2,
            "unknown display \"cirrus\"",
        ),
        (&["--display", "vga", "--hugepages"][..], 2, "huge pages"),
        (
            &["--display", "vga", "--vga-rom", missing][..],
            2,
            "VGA BIOS",
        ),
        (
            &["--display", "vga", "--vga-rom", small][..],
            EXIT_HOST_ERROR,
            "is 100 bytes",
        ),
        (
            &["--display", "vga", "--vnc", no_dir][..],
            EXIT_HOST_ERROR,
            "VNC socket",
        ),
    ] {
        let (got, err) = run(args);
        assert_eq!(got, code, "{args:?}: {err}");
        assert!(
            err.contains(want) && !err.contains("KVM"),
            "{args:?}: {err}"
        );
    }
    // A good display configuration gets as far as KVM.
    let (got, err) = run(&["--display", "vga"]);
    assert_eq!(got, EXIT_HOST_ERROR, "{err}");
    assert!(err.contains("KVM"), "{err}");
}
